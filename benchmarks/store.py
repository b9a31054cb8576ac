"""Feature tables: rtml against a Python dict of numpy rows and Redis on loopback.

    python -m benchmarks.store [--keys N] [--quick]

Each engine holds the same records (string keys, 8 float32 fields). Redis stores
each record as the 32 bytes of its float32 row (GET/MGET/MSET through redis-py
with the hiredis parser), and is started here on a free loopback port, with
persistence off, and stopped by its pid at the end. Latencies are medians over
repeated calls timed one by one with perf_counter_ns (timer cost included).
Window aggregates are not measured yet (not implemented).
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

    proc, port, why = start_redis()
    r = results["redis"]
    if proc is None:
        for op in ("get", "get_many(1000)", "get_many_into(1000)", "put_many(1000)"):
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
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    ops = ["get", "get_many(1000)", "get_many_into(1000)", "put_many(1000)"]
    print(f"# Feature table: {n:,} string keys x {FIELDS} float32 fields\n")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
