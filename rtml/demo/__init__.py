"""``rtml demo``: a synthetic card-transaction stream scored for fraud by rtml, live.

- :mod:`rtml.demo.stream` generates the seeded stream (cards, merchants, fraud incidents,
  labels that arrive later);
- :mod:`rtml.demo.pipeline` is the one definition of the store, the scorer and the
  training features;
- :mod:`rtml.demo.run` streams it through the scorer (in-process or over the server)
  and reports detection rate, false-positive rate, throughput and latency;
- ``fraud.rtml`` is the model shipped with the package, trained by
  scripts/train_demo_model.py.
"""

from rtml.demo.run import DEFAULT_EVENTS, DemoReport, run_demo

__all__ = ["DEFAULT_EVENTS", "DemoReport", "run_demo"]
