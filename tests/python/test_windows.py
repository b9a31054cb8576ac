"""rtml.Windows against a plain-Python reference (lists of events), bad input, threads."""

from __future__ import annotations

import datetime as dt
import math
import threading

import numpy as np
import pytest

import rtml

OPS = ["count", "sum", "mean", "min", "max", "stddev", "last"]


def reference(
    txn: rtml.Windows, events: list[tuple[int, float, int]], now_ns: int
) -> dict[str, float]:
    """The documented semantics from the events an entity's rings hold.

    events: (ts_ns, value, arrival order). Window w (bucket r, k buckets) holds the events
    of buckets floor(now/r)-k+1 .. floor(now/r); NaN when the ring, which ends at the
    entity's newest event, no longer holds the window's oldest bucket.
    """
    out: dict[str, float] = {}
    newest = max((e[0] for e in events), default=None)
    for layout in txn.layout:
        w = layout["window"]
        r = round(layout["bucket_seconds"] * 1e9)
        cur = now_ns // r
        first = cur - layout["buckets"] + 1
        if newest is not None and first <= newest // r - layout["ring_buckets"]:
            for op in txn.ops:
                out[f"{txn.value}_{op}_{w}"] = math.nan
            continue
        inside = [e for e in events if first <= e[0] // r <= cur]
        vals = [v for _, v, _ in inside]
        n = len(vals)
        mean = math.fsum(vals) / n if n else math.nan
        agg = {
            "count": float(n),
            "sum": math.fsum(vals),
            "mean": mean,
            "min": min(vals) if n else math.nan,
            "max": max(vals) if n else math.nan,
            "stddev": math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / n) if n else math.nan,
            "last": max(inside, key=lambda e: (e[0], e[2]))[1] if n else math.nan,
        }
        for op in txn.ops:
            out[f"{txn.value}_{op}_{w}"] = agg[op]
    return {c: out[c] for c in txn.columns}


def assert_matches(got: dict[str, float], want: dict[str, float], where: str) -> None:
    assert list(got) == list(want), where
    for name in want:
        g, w = got[name], want[name]
        if math.isnan(w):
            assert math.isnan(g), (where, name, g, w)
        elif "_count_" in name or "_min_" in name or "_max_" in name or "_last_" in name:
            assert g == w, (where, name, g, w)
        else:
            assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (where, name, g, w)


@pytest.mark.parametrize(
    ("seed", "key", "bucket", "max_buckets", "history"),
    [
        (0, str, "5s", 60, 0),
        (1, int, "5s", 12, "2m"),
        (2, str, "10s", 6, "30s"),
        (3, int, 1.0, 200, 0),
    ],
)
def test_random_streams_match_reference(seed, key, bucket, max_buckets, history) -> None:
    """Out-of-order, duplicate-time, late and far-too-old events; as-of queries."""
    rng = np.random.default_rng(seed)
    store = rtml.FeatureStore()
    txn = store.windows(
        "txn",
        key=key,
        value="amount",
        ops=OPS,
        windows=["30s", "2m", "10m", "1h"],
        bucket=bucket,
        max_buckets=max_buckets,
        history=history,
        capacity=100,
        max_future="100000d",
    )
    keys = [f"card-{i}" if key is str else i * 1000003 for i in range(5)]
    kept: dict[object, list[tuple[int, float, int]]] = {k: [] for k in keys}
    clock = 1_700_000_000.0
    dropped = 0
    lost = answered = 0
    for step in range(1500):
        clock += float(rng.exponential(3.0))
        n = int(rng.integers(1, 5))
        batch_keys = [keys[int(i)] for i in rng.integers(0, len(keys), n)]
        lag = rng.choice([0.0, 5.0, 60.0, 900.0, 20000.0], size=n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
        ts = clock - lag * rng.random(n)
        ts[rng.random(n) < 0.1] = np.floor(clock)  # duplicate event times
        values = np.round(rng.normal(50, 30, n), 2)
        dropped += txn.ingest(batch_keys, values, ts)
        # An event is dropped when it is older than every ring's span, which ends at
        # its entity's newest event at arrival: replay that decision.
        for j, k in enumerate(batch_keys):
            t_ns = round(float(ts[j]) * 1e9)
            newest = max((e[0] for e in kept[k]), default=None)
            too_old = newest is not None and all(
                t_ns // round(lay["bucket_seconds"] * 1e9)
                <= newest // round(lay["bucket_seconds"] * 1e9) - lay["ring_buckets"]
                for lay in txn.layout
            )
            if not too_old:
                kept[k].append((t_ns, float(values[j]), step * 10 + j))
        if step % 50 == 0:
            for back in (0.0, 2.0, 40.0, 700.0):
                now = clock - back
                now_ns = round(now * 1e9)
                batch = txn.get_many(keys, now=now)
                for i, k in enumerate(keys):
                    want = reference(txn, kept[k], now_ns)
                    counts = [v for c, v in want.items() if "_count_" in c]
                    lost += sum(math.isnan(v) for v in counts)
                    answered += sum(v > 0 for v in counts)
                    assert_matches(txn.get(k, now=now), want, f"step {step} key {k} now-{back}")
                    assert_matches(
                        dict(zip(batch.columns, batch.values[i].tolist(), strict=True)),
                        want,
                        f"batch step {step} key {k}",
                    )
    assert lost > 0 and answered > 0  # both sides of the as-of rule were exercised
    stats = txn.stats()
    assert stats["dropped"] == dropped > 0
    assert stats["late"] > 0
    assert stats["events"] == sum(len(v) for v in kept.values())


def make(**kw) -> rtml.Windows:
    args = {
        "key": str,
        "value": "amount",
        "ops": ["count", "sum", "last"],
        "windows": ["1m", "10m"],
        "bucket": "10s",
        "capacity": 10,
        "max_future": "1000d",
    }
    args.update(kw)
    return rtml.FeatureStore().windows("txn", **args)


def test_one_event_numpy_keys_and_time_types() -> None:
    txn = make(key=int)
    assert txn.ingest(7, 2.5, ts=100.0) == 0
    assert (
        txn.ingest(
            np.array([7, 8], dtype=np.int64), np.array([1.0, 4.0]), ts=np.array([101.0, 102.0])
        )
        == 0
    )
    txn.ingest([7], [3.0], ts=np.datetime64("1970-01-01T00:01:43"))
    txn.ingest([7], [5.0], ts=dt.datetime(1970, 1, 1, 0, 1, 44, tzinfo=dt.timezone.utc))
    got = txn.get(7, now=np.datetime64("1970-01-01T00:01:45"))
    assert got == {
        "amount_count_1m": 4.0,
        "amount_count_10m": 4.0,
        "amount_sum_1m": 11.5,
        "amount_sum_10m": 11.5,
        "amount_last_1m": 5.0,
        "amount_last_10m": 5.0,
    }
    strs = make()
    strs.ingest(np.array(["a", "b", "a"]), [1.0, 2.0, 3.0], ts=50.0)
    batch = strs.get_many(np.array(["a", "b", "zz"]), now=55.0)
    assert batch.values[:, 0].tolist() == [2.0, 1.0, 0.0]
    assert batch.found.tolist() == [True, True, False]
    assert np.isnan(batch.values[2, 4])  # last of an empty window
    out = np.empty((2, 6))
    assert strs.get_many_into(["b", "a"], out, now=55.0).all()
    assert out[:, 2].tolist() == [2.0, 4.0]


def test_resolution_layout_and_memory() -> None:
    txn = make(windows=["1m", "10m", "1h", "24h"], ops=["count", "mean"], max_buckets=60)
    assert txn.resolution == {"1m": 10.0, "10m": 10.0, "1h": 60.0, "24h": 1440.0}
    assert [lay["buckets"] for lay in txn.layout] == [6, 60, 60, 60]
    assert txn.bytes_per_entity > 0
    assert "24h" in repr(txn)


def test_bad_input_is_refused_whole_and_nothing_stored_changes() -> None:
    txn = make(capacity=2, max_key_bytes=8)
    txn.ingest("ok", 1.0, ts=100.0)
    before = txn.get("ok", now=101.0)
    cases = [
        (lambda: txn.ingest(["ok", "ok"], [1.0, float("nan")], ts=100.0), "not finite"),
        (
            lambda: txn.ingest(["ok", "way-too-long-key"], [1.0, 1.0], ts=100.0),
            "too long .* nothing was stored",
        ),
        (lambda: txn.ingest(["ok", None], [1.0, 1.0], ts=100.0), "expected str"),
        (lambda: txn.ingest(["ok", 5], [1.0, 1.0], ts=100.0), "expected str"),
        (lambda: txn.ingest(["ok", "ok"], [1.0], ts=100.0), "one value per key"),
        (lambda: txn.ingest(["ok"], ["x"], ts=100.0), "numbers"),
        (lambda: txn.ingest(["ok", "ok"], [1.0, 1.0], ts=[100.0, 5e9]), "future"),
        (lambda: txn.ingest(["ok"], [1.0], ts=float("nan")), "finite"),
        (lambda: txn.get(float("nan"), now=101.0), "expected str"),
    ]
    for call, message in cases:
        with pytest.raises(rtml.InputError, match=message):
            call()
    assert txn.get("ok", now=101.0) == before
    assert txn.stats() == {"events": 1, "late": 0, "dropped": 0}
    # Capacity runs out while writing: the events before are stored, the rest not.
    with pytest.raises(rtml.InputError, match=r"event 2 \(key 'c3'\): table full"):
        txn.ingest(["ok", "c2", "c3", "ok"], [1.0, 1.0, 1.0, 1.0], ts=100.0)
    assert txn.get("ok", now=101.0)["amount_count_1m"] == 2.0
    assert txn.get("c2", now=101.0)["amount_count_1m"] == 1.0
    assert txn.get("c3", now=101.0)["amount_count_1m"] == 0.0


def test_spec_errors() -> None:
    store = rtml.FeatureStore()
    with pytest.raises(rtml.InputError, match="unknown op"):
        store.windows("w", key=str, value="v", ops=["median"], windows=["1m"])
    with pytest.raises(rtml.InputError, match="not a positive multiple of the bucket"):
        store.windows("w", key=str, value="v", ops=["sum"], windows=["65s"], bucket="10s")
    with pytest.raises(rtml.InputError, match="distinct"):
        store.windows("w", key=str, value="v", ops=["sum"], windows=["1m", "60s"])
    with pytest.raises(rtml.InputError, match="lower max_buckets"):
        store.windows(
            "w", key=str, value="v", ops=OPS, windows=["24h"], bucket="1s", max_buckets=86400
        )
    with pytest.raises(rtml.InputError, match="window"):
        store.windows("w", key=str, value="v", ops=["sum"], windows=["soon"])
    store.table("t", key=str, fields={"a": "float32"})
    with pytest.raises(rtml.InputError, match="already exists"):
        store.windows("t", key=str, value="v", ops=["sum"], windows=["1m"])


def test_sweep_frees_entities_after_the_ring_span() -> None:
    txn = make(capacity=2)
    txn.ingest(["a", "b"], [1.0, 1.0], ts=100.0)
    with pytest.raises(rtml.InputError, match="table full"):
        txn.ingest("c", 1.0, ts=100.0)
    assert txn.sweep(now=200.0) == 0
    assert txn.sweep(now=100.0 + 700.0) == 2  # the 10m ring spans 61 buckets of 10 s
    txn.ingest("c", 1.0, ts=800.0)
    assert len(txn) == 1


def test_threads_never_read_a_torn_window() -> None:
    """Writers ingest value 1.0; in any consistent view sum == count and last == 1."""
    txn = make(key=int, capacity=256, ops=["count", "sum", "last"])
    keys = np.arange(256, dtype=np.int64)
    stop = threading.Event()
    bad: list[str] = []
    reads = [0]
    clock = [1000.0]

    def writer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        t = 1000.0
        while not stop.is_set():
            t += 0.5
            clock[0] = t
            k = rng.integers(0, 256, 512)
            txn.ingest(k, np.ones(512), ts=t - rng.random(512) * 30)

    def reader() -> None:
        out = np.empty((256, 6))
        for _ in range(2000):
            txn.get_many_into(keys, out, now=clock[0])
            count, total, last = out[:, 0:2], out[:, 2:4], out[:, 4:6]
            lost = np.isnan(count) & np.isnan(total) & np.isnan(last)  # as of behind a writer
            ok = lost | ((count == total) & ((count == 0) | (last == 1.0)))
            if not ok.all():
                bad.append(repr(out[~ok.all(axis=1)][:2]))
            reads[0] += 256

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads + readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    for t in threads:
        t.join()
    assert not bad, bad[:3]
    assert txn.stats()["events"] > 0 and reads[0] == 2 * 2000 * 256
