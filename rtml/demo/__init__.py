"""``rtml demo``: a synthetic card-transaction stream scored for fraud by rtml.

- :mod:`rtml.demo.stream` generates the seeded stream (cards, merchants, fraud incidents,
  labels that arrive later);
- :mod:`rtml.demo.pipeline` is the one definition of the store, the scorer and the
  training features;
- ``fraud.rtml`` is the model shipped with the package, trained by
  scripts/train_demo_model.py.
"""
