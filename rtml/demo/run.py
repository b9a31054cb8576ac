"""``rtml demo``: the fraud model scoring a synthetic card-transaction stream, live.

Every transaction, in event-time order, is scored first (from the features of all
earlier transactions) and then fed to the store: its card's and merchant's window
aggregates and its card-merchant pair count. Labels (fraud or not) arrive later, as
chargebacks and confirmations would, and keep the live detection and false-positive
rates up to date. With ``transport="server"`` the scores and the store updates go
through the rtml server over TCP loopback, as a payment service would call it; with
``"inprocess"`` they are direct calls into the same scorer and store.

Examples
--------
>>> import io
>>> from rtml.demo.run import run_demo
>>> report = run_demo(5_000, transport="inprocess", out=io.StringIO())
>>> report.n_events, report.detection_rate > 10 * report.false_positive_rate
(5000, True)
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from rtml import FeatureStore, Model, Scorer
from rtml.demo import pipeline
from rtml.demo.stream import PATTERNS, Events, Stream, make_stream

DEFAULT_EVENTS = 200_000
"""Transactions ``rtml demo`` streams by default: about 25 s over the server on a busy
2-core machine (one loopback round trip per score, ~50 µs), about 4 s in-process."""

TRANSPORTS = ("server", "inprocess")

_ScoreFn = Callable[..., Any]
_ApplyFn = Callable[[pipeline.Updates], None]


@dataclass(frozen=True)
class DemoReport:
    """What a demo run measured.

    Rates are over all labelled transactions at the end of the run (every label has
    arrived by then): ``detection_rate`` is the share of fraudulent transactions whose
    score reached ``threshold``, ``false_positive_rate`` the share of legitimate ones
    that did, ``precision`` the share of flagged ones that were fraudulent;
    ``incidents_detected`` the share of fraud incidents with at least one flagged
    transaction, ``detection_by_pattern`` the detection rate per fraud pattern.
    ``throughput_eps`` counts transactions scored and fed to the store per second of
    ``wall_s`` (the streaming loop), and the latencies are those of one score call as
    its caller sees it. ``scores`` holds every transaction's score, in stream order.
    """

    n_events: int
    n_fraud: int
    n_incidents: int
    n_flagged: int
    detection_rate: float
    false_positive_rate: float
    precision: float
    incidents_detected: float
    detection_by_pattern: dict[str, float]
    throughput_eps: float
    latency_p50_us: float
    latency_p99_us: float
    wall_s: float
    threshold: float
    transport: str
    seed: int
    scores: np.ndarray = field(repr=False, compare=False)


def run_demo(
    n_events: int = DEFAULT_EVENTS,
    *,
    seed: int = 7,
    transport: str = "server",
    out: TextIO | None = None,
    progress: bool | None = None,
) -> DemoReport:
    """Streams ``n_events`` synthetic transactions through the fraud model and prints
    the detection rate, false-positive rate, throughput and score latency.

    Parameters
    ----------
    n_events
        Transactions to generate and score.
    seed
        The stream's seed (the shipped model was trained on other seeds).
    transport
        ``"server"``: an rtml server in a background thread, called over TCP loopback by
        a client; ``"inprocess"``: direct calls to the scorer and the store.
    out
        Where to print (default: ``sys.stdout``).
    progress
        Show progress: one updating line on a terminal, else a line every 10%.
        ``None``: yes; ``False``: only the summary.
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r}: expected one of {TRANSPORTS}")
    out = sys.stdout if out is None else out
    stream = make_stream(n_events, seed=seed)
    store, handles = pipeline.build_store()
    pipeline.preload(handles, stream.profiles, ts=stream.start)
    model = pipeline.load_model()
    scorer = pipeline.build_scorer(store, model)
    _print_intro(out, stream, model.num_trees)
    live = _Live(stream.events, pipeline.THRESHOLD, out, progress)
    with contextlib.ExitStack() as stack:
        if transport == "inprocess":
            score: _ScoreFn = scorer.score
            apply: _ApplyFn = functools.partial(pipeline.apply_updates, handles)
            where = "in this process: direct calls into the scorer and the store"
        else:
            score, apply, where = _connect(stack, store, scorer, model)
        print(f"  scoring   {where}\n", file=out)
        scores, latency_ns, wall = _stream(stream, score, apply, live)
    live.finish()
    report = _report(stream, scores, latency_ns, wall, transport)
    _print_summary(out, report)
    return report


def _connect(
    stack: contextlib.ExitStack, store: FeatureStore, scorer: Scorer, model: Model
) -> tuple[_ScoreFn, _ApplyFn, str]:
    """Starts the server in a thread and connects a client; both are closed by ``stack``."""
    from rtml.client import Client
    from rtml.server import Server

    server = Server(
        store, scorers={"fraud": scorer}, models={"fraud": model}, host="127.0.0.1", port=0
    )
    srv = stack.enter_context(server.start_in_thread())
    client = Client("127.0.0.1", srv.port)
    stack.callback(client.close)

    def apply(updates: pipeline.Updates) -> None:
        client.ingest("card_txn", *updates.card_txn)
        client.ingest("merchant_txn", *updates.merchant_txn)
        keys, counts, ts = updates.card_merchant
        client.put_features("card_merchant", keys, counts, ts=ts)

    where = f"rtml server on 127.0.0.1:{srv.port} over TCP loopback (store updates too)"
    return functools.partial(client.score, "fraud"), apply, where


def _stream(
    stream: Stream, score: _ScoreFn, apply: _ApplyFn, live: _Live
) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores every event, then feeds its block to the store (see pipeline.blocks);
    returns the scores, each score call's latency (ns) and the loop's wall time (s)."""
    events = stream.events
    n = len(events)
    scores = np.empty(n, dtype=np.float64)
    latency = np.empty(n, dtype=np.int64)
    feeder = pipeline.Feeder(events, stream.profiles)
    requests = pipeline.requests(events)
    ts = events.ts.tolist()
    blocks = pipeline.blocks(events)  # known up front here; a live feeder cuts them as it goes
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for start, stop in blocks:
        for i in range(start, stop):
            request = next(requests)
            now = ts[i]
            t = clock()
            s = score(request, now=now)
            latency[i] = clock() - t
            scores[i] = s
        apply(feeder.updates(start, stop))
        if stop >= live.next_at:
            live.update(stop, scores, latency, time.perf_counter() - t0)
    return scores, latency, time.perf_counter() - t0


class _Live:
    """Labels as they arrive (by simulated time) and the progress display."""

    def __init__(self, events: Events, threshold: float, out: TextIO, progress: bool | None):
        self.events = events
        self.threshold = threshold
        self.out = out
        self.n = len(events)
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.show = progress is not False
        self.order = np.argsort(events.label_ts, kind="stable")
        self.arrival = events.label_ts[self.order]
        self.arrived = 0
        self.counts = np.zeros(4, dtype=np.int64)  # tp, fraud known, fp, legit known
        self.next_at = self._next(0)
        self.drawn_at = 0.0

    def _next(self, done: int) -> int:
        if not self.show:
            return self.n + 1
        if self.tty:
            return min(done + 2_000, self.n)
        tenth = done * 10 // self.n + 1  # the next tenth of the stream
        return -(-self.n * tenth // 10)

    def update(self, done: int, scores: np.ndarray, latency: np.ndarray, elapsed: float) -> None:
        """Takes the labels known at the simulated time of event ``done - 1``; prints."""
        upto = int(np.searchsorted(self.arrival, self.events.ts[done - 1], side="right"))
        idx = self.order[self.arrived : upto]
        self.arrived = upto
        flagged = scores[idx] >= self.threshold
        fraud = self.events.is_fraud[idx]
        legit = ~fraud
        self.counts += [(flagged & fraud).sum(), fraud.sum(), (flagged & legit).sum(), legit.sum()]
        self.next_at = self._next(done)
        if self.tty and elapsed - self.drawn_at < 0.2 and done < self.n:
            return
        self.drawn_at = elapsed
        tp, n_fraud, fp, n_legit = self.counts.tolist()
        det = f"{tp / n_fraud:6.1%}" if n_fraud else "     -"
        fpr = f"{fp / n_legit:6.3%}" if n_legit else "     -"
        p99 = np.percentile(latency[:done], 99) / 1e3
        line = (
            f"  {done / self.n:4.0%} {done:>9,} txns {done / elapsed:>8,.0f}/s  p99 {p99:5.1f} µs"
            f"  detection {det}  FPR {fpr}"
        )
        if self.tty:
            print(f"\r{line}", end="", file=self.out)
        else:
            print(line, file=self.out)
        self.out.flush()

    def finish(self) -> None:
        """Ends the updating line; every remaining label arrives."""
        if self.tty and self.show:
            print(file=self.out)


def _report(
    stream: Stream, scores: np.ndarray, latency_ns: np.ndarray, wall: float, transport: str
) -> DemoReport:
    e = stream.events
    threshold = pipeline.THRESHOLD
    flagged = scores >= threshold
    fraud = e.is_fraud
    tp, fp = int((flagged & fraud).sum()), int((flagged & ~fraud).sum())
    n_fraud = int(fraud.sum())
    incidents = np.unique(e.incident[fraud])
    caught = np.unique(e.incident[fraud & flagged])
    by_pattern = {
        PATTERNS[k]: float(flagged[e.pattern == k].mean())
        for k in range(1, len(PATTERNS))
        if (e.pattern == k).any()
    }
    p50, p99 = np.percentile(latency_ns, [50, 99]) / 1e3
    return DemoReport(
        n_events=len(e),
        n_fraud=n_fraud,
        n_incidents=len(incidents),
        n_flagged=int(flagged.sum()),
        detection_rate=tp / max(1, n_fraud),
        false_positive_rate=fp / max(1, len(e) - n_fraud),
        precision=tp / max(1, tp + fp),
        incidents_detected=len(caught) / max(1, len(incidents)),
        detection_by_pattern=by_pattern,
        throughput_eps=len(e) / wall,
        latency_p50_us=float(p50),
        latency_p99_us=float(p99),
        wall_s=wall,
        threshold=threshold,
        transport=transport,
        seed=stream.seed,
        scores=scores,
    )


def _print_intro(out: TextIO, stream: Stream, n_trees: int) -> None:
    e = stream.events
    n_fraud = int(e.is_fraud.sum())
    n_incidents = len(np.unique(e.incident[e.is_fraud]))
    minutes = (e.ts[-1] - e.ts[0]) / 60.0
    delays = (e.label_ts - e.ts) / 60.0
    lines = [
        "rtml demo: fraud scoring of a synthetic card-transaction stream, live",
        f"stream    {len(e):,} transactions, {minutes:.0f} simulated minutes (seed {stream.seed}), "
        f"{n_fraud / len(e):.2%} fraud:",
        f"          {n_fraud:,} fraudulent transactions in {n_incidents:,} incidents "
        "(bursts, card testing, unusual amounts)",
        f"model     {n_trees} trees over {len(pipeline.FEATURES)} features: card and merchant "
        "windows (1m to 1h),",
        "          card, merchant and card-merchant tables, the request itself",
        f"labels    arrive {delays.min():.0f} to {delays.max():.0f} simulated minutes after "
        "their transaction;",
        "          the live rates below count the labels that have arrived",
    ]
    print("\n  ".join(lines), file=out)


def _print_summary(out: TextIO, r: DemoReport) -> None:
    rows = [
        ("detection rate", f"{r.detection_rate:.1%}", "of fraudulent transactions were flagged"),
        ("false-positive rate", f"{r.false_positive_rate:.3%}", "of legitimate ones were flagged"),
        ("precision", f"{r.precision:.1%}", "of flagged transactions were fraudulent"),
        (
            "incidents caught",
            f"{r.incidents_detected:.1%}",
            "of fraud incidents had a transaction flagged",
        ),
        ("throughput", f"{r.throughput_eps:,.0f}/s", "transactions scored, then fed to the store"),
        ("latency p50", f"{r.latency_p50_us:.1f} µs", "of one score call, request in, score out"),
        ("latency p99", f"{r.latency_p99_us:.1f} µs", "99% of score calls took at most this"),
        ("wall time", f"{r.wall_s:.1f} s", f"to stream {r.n_events:,} transactions"),
    ]
    print(f"\nresults, all labels in (flagged: score >= {r.threshold:g})", file=out)
    for name, value, meaning in rows:
        print(f"  {name:<20}{value:>10}   {meaning}", file=out)
    patterns = "  ".join(
        f"{k.replace('_', ' ')} {v:.1%}" for k, v in r.detection_by_pattern.items()
    )
    print(f"  {'by fraud pattern':<20}{patterns:>10}", file=out)
