"""Feature tables: rtml against a Python dict of numpy rows and Redis on loopback.

    python -m benchmarks.store [--keys N] [--quick]

Each engine holds the same records (string keys, 8 float32 fields). Redis stores
each record as the 32 bytes of its float32 row (GET/MGET/MSET through redis-py
with the hiredis parser), and is started here on a free loopback port, with
persistence off, and stopped by its pid at the end. Latencies are medians over
repeated calls timed one by one with perf_counter_ns (timer cost included).
Window aggregates (ops count, sum, mean, max over 1m, 10m, 1h, 24h with 10 s base
buckets) are measured over --entities string keys against the same tiling written with
Python dicts and with Redis hashes updated by a Lua script (benchmarks/_window_peers.py);
every engine's answers are checked against rtml's before timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

import rtml
from benchmarks._window_peers import DictWindows, RedisWindows

FIELDS = 8


def median_us(fn: Callable[[], object], calls: int) -> float:
    fn()  # warm-up
    times = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1e3


def start_redis() -> tuple[subprocess.Popen[bytes] | None, int, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        return None, 0, "redis-server not installed (apt-get install redis-server)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, port, ""
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return None, 0, "redis-server did not start"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.store", description=__doc__)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--entities", type=int, default=10_000, help="window entities")
    p.add_argument("--quick", action="store_true", help="fewer calls: a smoke run")
    args = p.parse_args(argv)
    calls = 300 if args.quick else 3000
    n = args.keys
    rng = np.random.default_rng(0)
    keys = [f"card-{i:08d}" for i in range(n)]
    rows = rng.random((n, FIELDS), dtype=np.float32)
    batch = [keys[i] for i in rng.integers(0, n, 1000)]
    put_rows = rng.random((1000, FIELDS), dtype=np.float32)

    table = rtml.FeatureStore().table(
        "card", key=str, fields={f"f{i}": "float32" for i in range(FIELDS)}, capacity=n
    )
    table.put_many(keys, rows, ts=1.0)
    d = {k: rows[i] for i, k in enumerate(keys)}
    one = keys[n // 2]
    results: dict[str, dict[str, float | str]] = {"rtml": {}, "dict of numpy rows": {}, "redis": {}}

    r = results["rtml"]
    out = np.empty((1000, FIELDS), dtype=np.float32)
    r["get"] = median_us(lambda: table.get(one, now=2.0), calls)
    r["get_many(1000)"] = median_us(lambda: table.get_many(batch, now=2.0), calls // 10)
    r["get_many_into(1000)"] = median_us(
        lambda: table.get_many_into(batch, out, now=2.0), calls // 10
    )
    r["put_many(1000)"] = median_us(lambda: table.put_many(batch, put_rows, ts=3.0), calls // 10)

    r = results["dict of numpy rows"]
    nan_row = np.full(FIELDS, np.nan, dtype=np.float32)
    r["get"] = median_us(lambda: d.get(one), calls)
    r["get_many(1000)"] = median_us(
        lambda: np.stack([d.get(k, nan_row) for k in batch]), calls // 10
    )
    r["get_many_into(1000)"] = "-"

    def dict_put() -> None:
        for k, row in zip(batch, put_rows, strict=True):
            d[k] = row

    r["put_many(1000)"] = median_us(dict_put, calls // 10)

    # -- windows ---------------------------------------------------------------------------
    m = args.entities
    now = 1_800_000_000.0
    ents = [f"card-{i:08d}" for i in range(m)]
    txn = rtml.FeatureStore().windows(
        "txn",
        key=str,
        value="amount",
        ops=["count", "sum", "mean", "max"],
        windows=["1m", "10m", "1h", "24h"],
        bucket="10s",
        capacity=m,
        max_future="1000d",
    )
    history = 20 * m if not args.quick else 2 * m
    h_keys = [ents[i] for i in rng.integers(0, m, history)]
    h_vals = np.round(rng.gamma(2.0, 30.0, history), 2)
    h_ts = now - rng.random(history) * 86400
    txn.ingest(h_keys, h_vals, h_ts)
    peer_dict = DictWindows(txn.layout)
    peer_dict.ingest(h_keys, h_vals, np.round(h_ts * 1e9).astype(np.int64))
    w_batch = [ents[i] for i in rng.integers(0, m, 1000)]
    i_vals = np.round(rng.gamma(2.0, 30.0, 1000), 2)
    i_ts = now + rng.random(1000)
    big = 100_000
    b_keys = [ents[i] for i in rng.integers(0, m, big)]
    b_vals = np.round(rng.gamma(2.0, 30.0, big), 2)
    b_ts = now + rng.random(big)
    now_ns = round((now + 2) * 1e9)
    want = txn.get_many(w_batch, now=now + 2).values
    np.testing.assert_allclose(peer_dict.get_many(w_batch, now_ns), want, rtol=1e-9, equal_nan=True)
    r = results["rtml"]
    r["ingest(1000)"] = median_us(lambda: txn.ingest(w_batch, i_vals, i_ts), calls // 10)
    r["ingest(100000)"] = median_us(lambda: txn.ingest(b_keys, b_vals, b_ts), 5)
    r["window get_many(1000)"] = median_us(lambda: txn.get_many(w_batch, now=now + 2), calls // 10)
    r = results["dict of numpy rows"]
    i_ts_ns = np.round(i_ts * 1e9).astype(np.int64)
    r["ingest(1000)"] = median_us(lambda: peer_dict.ingest(w_batch, i_vals, i_ts_ns), calls // 10)
    r["ingest(100000)"] = "-"
    r["window get_many(1000)"] = median_us(lambda: peer_dict.get_many(w_batch, now_ns), calls // 10)
    window_ops = ["ingest(1000)", "ingest(100000)", "window get_many(1000)"]

    proc, port, why = start_redis()
    r = results["redis"]
    if proc is None:
        for op in ("get", "get_many(1000)", "get_many_into(1000)", "put_many(1000)", *window_ops):
            r[op] = f"n/a ({why})"
    else:
        try:
            import redis

            client = redis.Redis(host="127.0.0.1", port=port)
            pipe = client.pipeline(transaction=False)
            for i, k in enumerate(keys):
                pipe.set(k, rows[i].tobytes())
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            r["get"] = median_us(lambda: np.frombuffer(client.get(one), dtype=np.float32), calls)
            r["get_many(1000)"] = median_us(
                lambda: np.frombuffer(b"".join(client.mget(batch)), dtype=np.float32).reshape(
                    -1, FIELDS
                ),
                calls // 10,
            )
            r["get_many_into(1000)"] = "-"
            payload = {k: put_rows[i].tobytes() for i, k in enumerate(batch)}
            r["put_many(1000)"] = median_us(lambda: client.mset(payload), calls // 10)
            peer_redis = RedisWindows(client, txn.layout)
            h_ts_ns = np.round(h_ts * 1e9).astype(np.int64)
            for lo in range(0, history, 20_000):
                peer_redis.ingest(
                    h_keys[lo : lo + 20_000], h_vals[lo : lo + 20_000], h_ts_ns[lo : lo + 20_000]
                )
            # Bring Redis to the state rtml and the dict are in after their timed ingests.
            for _ in range(calls // 10 + 1):
                peer_redis.ingest(w_batch, i_vals, i_ts_ns)
            for _ in range(6):
                peer_redis.ingest(b_keys, b_vals, np.round(b_ts * 1e9).astype(np.int64))
            np.testing.assert_allclose(
                peer_redis.get_many(w_batch, now_ns),
                txn.get_many(w_batch, now=now + 2).values,
                rtol=1e-9,
                equal_nan=True,
            )
            r["ingest(1000)"] = median_us(lambda: peer_redis.ingest(w_batch, i_vals, i_ts_ns), 10)
            r["ingest(100000)"] = "-"
            r["window get_many(1000)"] = median_us(lambda: peer_redis.get_many(w_batch, now_ns), 10)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    ops = ["get", "get_many(1000)", "get_many_into(1000)", "put_many(1000)", *window_ops]
    print(
        f"# Feature store: tables of {n:,} string keys x {FIELDS} float32 fields; windows of "
        f"{m:,} entities (count/sum/mean/max over 1m/10m/1h/24h)\n"
    )
    command = " ".join(["python -m benchmarks.store", *(argv or sys.argv[1:])])
    print(
        f"Command: `{command}`; median µs per call; {os.cpu_count()} CPUs; "
        f"rtml {rtml.__version__}\n"
    )
    print("| op | " + " | ".join(results) + " | rtml vs dict | rtml vs redis |")
    print("|---" * (len(results) + 3) + "|")
    for op in ops:
        cells = []
        for eng in results:
            v = results[eng][op]
            cells.append(f"{v:.2f}" if isinstance(v, float) else str(v))
        ratios = []
        for peer in ("dict of numpy rows", "redis"):
            a, b = results["rtml"][op], results[peer][op]
            if isinstance(a, float) and isinstance(b, float):
                ratios.append(
                    f"rtml {b / a:.1f}x faster" if b >= a else f"rtml {a / b:.1f}x slower"
                )
            else:
                ratios.append("-")
        print(f"| {op} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    ev = 1e5 / results["rtml"]["ingest(100000)"]
    print(f"\nrtml window ingest from one 100k-event batch: {ev:.2f} M events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
