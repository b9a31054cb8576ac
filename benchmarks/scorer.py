"""End-to-end scoring: rtml.Scorer against the same pipeline written by hand.

    python -m benchmarks.scorer [--quick]

The model: XGBoost, 100 trees of depth 6, 30 inputs: 10 request fields, 8 fields of a
card table (str keys), 6 of a merchant table (int keys), 6 window aggregates of the
card's transactions (count/sum/max over 10m and 1h). The hand-written pipeline is what
a team would otherwise write: dict lookups of the stored features (a dict of numpy rows
per table, the window aggregates precomputed per card in a dict, which flatters it:
it does no window work at all), a feature vector, and xgboost's own inplace_predict.
Both must give the same scores (checked first). Single requests are timed one by one
(perf_counter_ns); p50/p99 in µs. Batches: rows per second of score_many(10000) vs the
hand pipeline over the same rows. One thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

import rtml

N_REQ, N_CARD, N_MERCH = 10, 8, 6
N_CARDS, N_MERCHANTS = 10_000, 1_000
WINDOW_COLS = [f"amount_{op}_{w}" for op in ("count", "sum", "max") for w in ("10m", "1h")]


def timed(fn: Callable[[], object], calls: int) -> np.ndarray:
    fn()
    t = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        t[i] = time.perf_counter_ns() - t0
    return t / 1e3


@dataclass
class Bench:
    """The benchmark's model, store and scorer (also served by benchmarks/server.py)."""

    names: list[str]
    clf: xgb.XGBClassifier
    model: rtml.Model
    store: rtml.FeatureStore
    txn: rtml.Windows
    scorer: rtml.Scorer
    card_ids: list[str]
    card_rows: np.ndarray
    merch_rows: np.ndarray


def build(
    rng: np.random.Generator,
    *,
    now: float,
    history: float = 3600.0,
    n_trees: int = 100,
    name: str = "default",
) -> Bench:
    """Trains the model and fills the store: tables written at now - 10 s, 200k window
    events spread over the ``history`` seconds before ``now``."""
    names = (
        [f"req_{i}" for i in range(N_REQ)]
        + [f"card_{i}" for i in range(N_CARD)]
        + [f"merch_{i}" for i in range(N_MERCH)]
        + WINDOW_COLS
    )
    X = pd.DataFrame(rng.normal(size=(20_000, len(names))), columns=names)
    y = (X.iloc[:, :5].sum(axis=1) + X["amount_count_10m"] > 0).astype(int)
    clf = xgb.XGBClassifier(n_estimators=n_trees, max_depth=6, random_state=0).fit(X, y)
    model = rtml.Model.load(clf)

    store = rtml.FeatureStore()
    cards = store.table(
        "card",
        key=str,
        fields={f"card_{i}": "float32" for i in range(N_CARD)},
        capacity=N_CARDS,
        max_future="1000d",
    )
    merch = store.table(
        "merchant",
        key=int,
        fields={f"merch_{i}": "float32" for i in range(N_MERCH)},
        capacity=N_MERCHANTS,
        max_future="1000d",
    )
    txn = store.windows(
        "card_txn",
        key=str,
        value="amount",
        ops=["count", "sum", "max"],
        windows=["10m", "1h"],
        capacity=N_CARDS,
        max_future="1000d",
    )
    card_ids = [f"card-{i:06d}" for i in range(N_CARDS)]
    card_rows = rng.normal(size=(N_CARDS, N_CARD)).astype(np.float32)
    merch_rows = rng.normal(size=(N_MERCHANTS, N_MERCH)).astype(np.float32)
    cards.put_many(card_ids, card_rows, ts=now - 10)
    merch.put_many(np.arange(N_MERCHANTS, dtype=np.int64), merch_rows, ts=now - 10)
    ev = 200_000
    txn.ingest(
        [card_ids[i] for i in rng.integers(0, N_CARDS, ev)],
        np.round(rng.gamma(2, 30, ev), 2),
        now - rng.random(ev) * history,
    )
    inputs = {n: rtml.request(n) for n in names[:N_REQ]}
    inputs |= {n: rtml.table("card", n, key="card_id") for n in names[N_REQ : N_REQ + N_CARD]}
    inputs |= {
        n: rtml.table("merchant", n, key="merchant_id")
        for n in names[N_REQ + N_CARD : N_REQ + N_CARD + N_MERCH]
    }
    inputs |= {n: rtml.window("card_txn", n, key="card_id") for n in WINDOW_COLS}
    scorer = rtml.Scorer(model, store, inputs, name=name)
    return Bench(names, clf, model, store, txn, scorer, card_ids, card_rows, merch_rows)


def make_requests(bench: Bench, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """n requests: a card id, a merchant id and the request fields."""
    return [
        {
            "card_id": bench.card_ids[int(rng.integers(0, N_CARDS))],
            "merchant_id": int(rng.integers(0, N_MERCHANTS)),
            **{
                f: float(v)
                for f, v in zip(bench.names[:N_REQ], rng.normal(size=N_REQ), strict=True)
            },
        }
        for _ in range(n)
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scorer", description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    calls = 2000 if args.quick else 20000
    rng = np.random.default_rng(0)
    now = 1_800_000_000.0
    bench = build(rng, now=now)
    names, scorer, txn, card_ids = bench.names, bench.scorer, bench.txn, bench.card_ids
    card_rows, merch_rows = bench.card_rows, bench.merch_rows
    booster = bench.clf.get_booster()
    booster.set_param({"nthread": 1})  # one thread, as rtml here

    # The hand-written pipeline's state: dicts of numpy rows, windows precomputed.
    card_d = {k: card_rows[i] for i, k in enumerate(card_ids)}
    merch_d = {i: merch_rows[i] for i in range(N_MERCHANTS)}
    win = txn.get_many(card_ids, now=now)
    win_d = {k: win.values[i] for i, k in enumerate(card_ids)}
    nan_card, nan_merch = np.full(N_CARD, np.nan, np.float32), np.full(N_MERCH, np.nan, np.float32)

    def by_hand(req: dict[str, Any]) -> float:
        row = np.concatenate(
            [
                [req[n] for n in names[:N_REQ]],
                card_d.get(req["card_id"], nan_card),
                merch_d.get(req["merchant_id"], nan_merch),
                win_d[req["card_id"]],
            ]
        ).astype(np.float32)
        return float(booster.inplace_predict(row[None, :])[0])

    reqs = make_requests(bench, rng, 1000)
    got = np.array([scorer.score(r, now=now)[1] for r in reqs])
    want = np.array([by_hand(r) for r in reqs])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    i = [0]

    def next_req() -> dict[str, Any]:
        i[0] = (i[0] + 1) % len(reqs)
        return reqs[i[0]]

    t_rtml = timed(lambda: scorer.score(next_req(), now=now), calls)
    t_hand = timed(lambda: by_hand(next_req()), calls // 4)

    frame = pd.DataFrame([reqs[j % len(reqs)] for j in range(10_000)])
    cols = {c: frame[c].to_numpy() for c in frame.columns}
    b_rtml = timed(lambda: scorer.score_many(cols, now=now), 20 if not args.quick else 5)

    def hand_batch() -> np.ndarray:
        rows = np.empty((len(frame), len(names)), dtype=np.float32)
        rows[:, :N_REQ] = frame[names[:N_REQ]].to_numpy()
        rows[:, N_REQ : N_REQ + N_CARD] = np.stack(
            [card_d.get(k, nan_card) for k in cols["card_id"]]
        )
        rows[:, N_REQ + N_CARD : N_REQ + N_CARD + N_MERCH] = np.stack(
            [merch_d.get(k, nan_merch) for k in cols["merchant_id"]]
        )
        rows[:, N_REQ + N_CARD + N_MERCH :] = np.stack([win_d[k] for k in cols["card_id"]])
        return booster.inplace_predict(rows)

    np.testing.assert_allclose(
        scorer.score_many(cols, now=now)[:, 1], hand_batch(), rtol=1e-5, atol=1e-6
    )
    b_hand = timed(hand_batch, 5)

    def q(t: np.ndarray, p: float) -> float:
        return float(np.percentile(t, p))

    command = " ".join(["python -m benchmarks.scorer", *(argv or sys.argv[1:])])
    print("# Scorer: 100 trees x depth 6, 30 inputs (10 request, 2 tables, 1 window set)\n")
    print(f"Command: `{command}`; {os.cpu_count()} CPUs; 1 thread; rtml {rtml.__version__}\n")
    print("| | rtml.Scorer | dicts + xgboost inplace_predict | ratio |")
    print("|---|---|---|---|")
    print(
        f"| score(request) p50 / p99 µs | {q(t_rtml, 50):.2f} / {q(t_rtml, 99):.2f} | "
        f"{q(t_hand, 50):.2f} / {q(t_hand, 99):.2f} | {q(t_hand, 50) / q(t_rtml, 50):.1f}x (p50) |"
    )
    r_rows, h_rows = 10_000 / np.median(b_rtml) * 1e6, 10_000 / np.median(b_hand) * 1e6
    print(
        f"| score_many(10000) rows/s | {r_rows / 1e6:.2f} M | {h_rows / 1e6:.2f} M | "
        f"{r_rows / h_rows:.1f}x |"
    )
    print(
        "\nThe hand pipeline reads precomputed window aggregates (no window work); rtml "
        "computes them from the buckets on every request."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
