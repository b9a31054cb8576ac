"""The demo's one definition of features: the store, what each event changes in it, the
scorer's inputs, and the training features read back through that same scorer.

Training and serving share everything here, so the model sees in production exactly
the features it was trained on:

- :func:`build_store` creates the tables and window sets; :func:`preload` puts the
  profiles known when the stream starts (cards, merchants, card-merchant pairs);
- :class:`Feeder` turns a block of events into the :class:`Updates` they make (window
  events per card and per merchant, the card-merchant pair counts), which
  :func:`apply_updates` writes into the store (the demo's server path sends the same
  updates over the wire);
- :func:`blocks` cuts a stream into blocks in which no event shares a card or merchant
  with an earlier event of its block: each event is scored before its block is applied,
  so it sees every earlier event and never itself or a later one (no leakage);
- :func:`build_scorer` binds a model to :data:`INPUTS`; :func:`collect_features` replays
  a stream through the same store and scorer and returns the rows the scorer assembled
  (its serving log), which are the training features.

Examples
--------
>>> from rtml.demo import pipeline
>>> from rtml.demo.stream import make_stream
>>> stream = make_stream(2_000, seed=1, n_cards=500)
>>> X = pipeline.collect_features(stream)
>>> X.shape == (2_000, len(pipeline.FEATURES))
True
>>> X[:3, pipeline.FEATURES.index("card_amount_count_1h")].tolist()  # nothing before them
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import numpy as np

import rtml
from rtml.demo.stream import START_TS, Events, Profiles, Stream

MODEL_FILE = "fraud.rtml"
"""The shipped model, package data of ``rtml.demo`` (trained by scripts/train_demo_model.py)."""

THRESHOLD = 0.23
"""Score at or above which a transaction is flagged as fraud: chosen by
scripts/train_demo_model.py on its validation stream (it prints the value to put here)."""

CARD_FIELDS = {
    "avg_amount_90d": "float32",
    "max_amount_90d": "float32",
    "n_txn_90d": "int32",
    "card_age_days": "float32",
}
MERCHANT_FIELDS = {"merchant_age_days": "float32", "merchant_n_txn_30d": "int32"}
CARD_OPS, CARD_WINDOWS = ("count", "sum", "mean", "max"), ("1m", "10m", "1h")
MERCHANT_OPS, MERCHANT_WINDOWS = ("count",), ("10m", "1h")

REQUEST_KEYS = ("card_id", "merchant_id", "card_merchant")
"""Keys of a scoring request (``card_merchant`` is ``"card|merchant"``)."""
REQUEST_FIELDS = ("amount", "local_hour", "is_online")
"""Numeric fields of a scoring request."""

INPUTS: dict[str, rtml.scorer.Input] = {
    **{f: rtml.request(f) for f in REQUEST_FIELDS},
    **{f: rtml.table("card", f, key="card_id") for f in CARD_FIELDS},
    **{f: rtml.table("merchant", f, key="merchant_id") for f in MERCHANT_FIELDS},
    "pair_n_txn": rtml.table("card_merchant", "n_txn", key="card_merchant"),
    **{
        f"card_amount_{op}_{w}": rtml.window("card_txn", f"amount_{op}_{w}", key="card_id")
        for op in CARD_OPS
        for w in CARD_WINDOWS
    },
    **{
        f"merchant_amount_{op}_{w}": rtml.window(
            "merchant_txn", f"amount_{op}_{w}", key="merchant_id"
        )
        for op in MERCHANT_OPS
        for w in MERCHANT_WINDOWS
    },
}
"""Where each model feature comes from (the scorer's inputs)."""

FEATURES = list(INPUTS)
"""The model's features, in its order."""


@dataclass(frozen=True)
class Handles:
    """The demo store's tables and window sets."""

    store: rtml.FeatureStore
    card: rtml.Table
    merchant: rtml.Table
    card_merchant: rtml.Table
    card_txn: rtml.Windows
    merchant_txn: rtml.Windows


@dataclass(frozen=True)
class Updates:
    """What a block of events changes: window events ``(keys, amounts, ts)`` per card
    (``card_txn``) and per merchant (``merchant_txn``), and the new transaction counts
    of their card-merchant pairs ``(keys, counts [n, 1], ts)`` (table ``card_merchant``)."""

    card_txn: tuple[list[str], np.ndarray, np.ndarray]
    merchant_txn: tuple[list[str], np.ndarray, np.ndarray]
    card_merchant: tuple[list[str], np.ndarray, np.ndarray]


def build_store(
    *, n_cards: int = 100_000, n_merchants: int = 20_000
) -> tuple[rtml.FeatureStore, Handles]:
    """A new store with the demo's tables and window sets, sized for ``n_cards`` cards
    and ``n_merchants`` merchants."""
    store = rtml.FeatureStore()
    handles = Handles(
        store=store,
        card=store.table("card", key=str, fields=CARD_FIELDS, capacity=n_cards),
        merchant=store.table("merchant", key=str, fields=MERCHANT_FIELDS, capacity=n_merchants),
        card_merchant=store.table(
            "card_merchant", key=str, fields={"n_txn": "int32"}, capacity=20 * n_cards
        ),
        card_txn=store.windows(
            "card_txn", capacity=n_cards, **_amount_windows(CARD_OPS, CARD_WINDOWS)
        ),
        merchant_txn=store.windows(
            "merchant_txn", capacity=n_merchants, **_amount_windows(MERCHANT_OPS, MERCHANT_WINDOWS)
        ),
    )
    return store, handles


def _amount_windows(ops: tuple[str, ...], windows: tuple[str, ...]) -> dict[str, object]:
    return {"key": str, "value": "amount", "ops": list(ops), "windows": list(windows)}


def preload(handles: Handles, profiles: Profiles, *, ts: float | None = None) -> None:
    """Puts the profiles known at the stream's start (event time ``ts``, default the
    stream's start) into the card, merchant and card-merchant tables."""
    at = START_TS if ts is None else ts
    p = profiles
    cards = np.column_stack([getattr(p, f) for f in CARD_FIELDS])
    handles.card.put_many(p.card_id.tolist(), cards, ts=at)
    merchants = np.column_stack([getattr(p, f) for f in MERCHANT_FIELDS])
    handles.merchant.put_many(p.merchant_id.tolist(), merchants, ts=at)
    handles.card_merchant.put_many(p.pair_key.tolist(), p.pair_n_txn[:, None], ts=at)


def build_scorer(store: rtml.FeatureStore, model: rtml.Model) -> rtml.Scorer:
    """The demo's scorer (named ``"fraud"``): ``model`` over :data:`INPUTS` in ``store``."""
    return rtml.Scorer(model, store, INPUTS, name="fraud")


def load_model() -> rtml.Model:
    """The fraud model shipped in the package (:data:`MODEL_FILE`)."""
    with resources.as_file(resources.files("rtml.demo") / MODEL_FILE) as path:
        return rtml.Model.load(path, n_threads=1)


def pair_keys(events: Events) -> list[str]:
    """The ``card_merchant`` key of every event."""
    return [
        f"{c}|{m}"
        for c, m in zip(events.card_id.tolist(), events.merchant_id.tolist(), strict=True)
    ]


def requests(events: Events) -> Iterator[dict[str, object]]:
    """The scoring request of every event, in order (keys and request fields)."""
    cols = (events.card_id.tolist(), events.merchant_id.tolist(), pair_keys(events))
    fields = (events.amount.tolist(), events.local_hour.tolist(), events.is_online.tolist())
    for card, merchant, pair, amount, hour, online in zip(*cols, *fields, strict=True):
        yield {
            "card_id": card,
            "merchant_id": merchant,
            "card_merchant": pair,
            "amount": amount,
            "local_hour": hour,
            "is_online": online,
        }


def blocks(events: Events, *, max_block: int = 256) -> list[tuple[int, int]]:
    """Cuts the stream into ``[start, stop)`` blocks of at most ``max_block`` events in
    which no event shares its card or merchant with an earlier event of the block.

    Scoring every event of a block, then applying the block, therefore gives each event
    the features of all earlier events and of none from itself on, exactly as applying
    each event right after scoring it would: the state an event reads (its card's and
    merchant's windows, its card-merchant pair) is only changed by events of the same
    card or merchant.

    Examples
    --------
    >>> from rtml.demo.stream import make_stream
    >>> e = make_stream(1_000, seed=2).events
    >>> bs = blocks(e)
    >>> bs[0][0], bs[-1][1], all(a[1] == b[0] for a, b in zip(bs, bs[1:]))
    (0, 1000, True)
    """
    out: list[tuple[int, int]] = []
    start = 0
    cards: set[str] = set()
    merchants: set[str] = set()
    for i, (card, merchant) in enumerate(
        zip(events.card_id.tolist(), events.merchant_id.tolist(), strict=True)
    ):
        if card in cards or merchant in merchants or i - start == max_block:
            out.append((start, i))
            start = i
            cards.clear()
            merchants.clear()
        cards.add(card)
        merchants.add(merchant)
    out.append((start, len(events)))
    return out


class Feeder:
    """Turns blocks of events into the store :class:`Updates` they make.

    It keeps the one piece of stream state the store cannot compute by itself: how many
    transactions each card-merchant pair has had (seeded from the profiles).
    """

    def __init__(self, events: Events, profiles: Profiles) -> None:
        self._events = events
        self._cards = events.card_id.tolist()
        self._merchants = events.merchant_id.tolist()
        self._pairs = pair_keys(events)
        self._pair_n = dict(
            zip(profiles.pair_key.tolist(), profiles.pair_n_txn.tolist(), strict=True)
        )

    def updates(self, start: int, stop: int) -> Updates:
        """The updates of events ``start`` to ``stop - 1`` (a block from :func:`blocks`:
        no pair repeats within it, so each count is the pair's count after its event)."""
        ts = self._events.ts[start:stop]
        amount = self._events.amount[start:stop]
        pairs = self._pairs[start:stop]
        pair_n = self._pair_n
        counts = np.empty((stop - start, 1), dtype=np.int64)
        for j, key in enumerate(pairs):
            pair_n[key] = counts[j, 0] = pair_n.get(key, 0) + 1
        return Updates(
            card_txn=(self._cards[start:stop], amount, ts),
            merchant_txn=(self._merchants[start:stop], amount, ts),
            card_merchant=(pairs, counts, ts),
        )


def apply_updates(handles: Handles, updates: Updates) -> None:
    """Writes a block's updates into the store (window events, then the pair counts)."""
    handles.card_txn.ingest(*updates.card_txn)
    handles.merchant_txn.ingest(*updates.merchant_txn)
    keys, counts, ts = updates.card_merchant
    handles.card_merchant.put_many(keys, counts, ts=ts)


def collect_features(stream: Stream, *, max_block: int = 256) -> np.ndarray:
    """The feature rows ``float64 [n, len(FEATURES)]`` the demo's scorer assembles for
    every event of ``stream``, each read before the
    event itself is applied: the stream is replayed through a new store exactly as
    ``rtml demo`` serves it, and the rows are taken from the scorer's serving log.
    NaN marks a missing stored feature."""
    events = stream.events
    store, handles = build_store()
    preload(handles, stream.profiles, ts=stream.start)
    # A one-leaf model without feature names: the scorer then takes INPUTS in order.
    scorer = rtml.Scorer(_constant_model(len(FEATURES)), store, INPUTS, name="features")
    n = len(events)
    chunk = min(n, 1 << 16)
    scorer.enable_log(chunk)
    feeder = Feeder(events, stream.profiles)
    out = np.empty((n, len(FEATURES)), dtype=np.float64)
    reqs = requests(events)
    ts = events.ts.tolist()
    score = scorer.score
    logged = 0
    for start, stop in blocks(events, max_block=max_block):
        if stop - logged > chunk:  # read the log out before it wraps
            out[logged:start] = scorer.serving_log()["features"][-(start - logged) :]
            logged = start
        for i in range(start, stop):
            score(next(reqs), now=ts[i])
        apply_updates(handles, feeder.updates(start, stop))
    if n > logged:
        out[logged:] = scorer.serving_log()["features"][-(n - logged) :]
    return out


def _constant_model(n_features: int) -> rtml.Model:
    from treelite import model_builder as mb

    builder = mb.ModelBuilder(
        threshold_type="float64",
        leaf_output_type="float64",
        metadata=mb.Metadata(
            num_feature=n_features,
            task_type="kRegressor",
            average_tree_output=False,
            num_target=1,
            num_class=[1],
            leaf_vector_shape=(1, 1),
        ),
        tree_annotation=mb.TreeAnnotation(num_tree=1, target_id=[0], class_id=[0]),
        postprocessor=mb.PostProcessorFunc(name="identity"),
        base_scores=[0.0],
    )
    builder.start_tree()
    builder.start_node(0)
    builder.leaf(0.0)
    builder.end_node()
    builder.end_tree()
    return rtml.Model.load(builder.commit(), n_threads=1)
