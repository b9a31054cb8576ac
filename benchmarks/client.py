"""The blocking rtml.Client's own cost per call, against raw sockets on the same server.

    python -m benchmarks.client [--quick] [--rounds N] [--calls N] [--trees N] [--against REV]

The server (benchmarks/scorer.py's scorer, as benchmarks/server.py serves it) runs in a
child process, so client and server share no GIL. Four cases, each on its own
connection with one request in flight, take turns in every round (their order rotates
from round to round):

* raw PING: ``sendall`` of a pre-encoded PING frame, ``recv_into`` of the exact response
  size, on a blocking socket: the floor of a round trip from Python;
* ``Client.ping()``;
* raw SCORE: the same for a pre-encoded SCORE frame (``wire.encode_score``) of one request;
* ``Client.score(scorer, request)`` with the same request as a dict.

``--against REV`` adds the two Client cases of the rtml/client.py (and
rtml/_client_ops.py) of git revision REV, loaded beside the current ones (with the
current codec and store), for a before/after in the same rounds.

Each call is timed alone (``perf_counter_ns``). The table shows each case's p50 (the
median over the rounds of each round's median) and p99 (over all its calls), and what
the client adds: per round, the client's median minus the raw one's; the median of
those over the rounds.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import rtml
from benchmarks import _net
from benchmarks._net import BenchError
from rtml._core import wire
from rtml.client import Client

SCORER = "fraud"


def serve(out: Path, n_trees: int) -> None:
    """In the child: builds the benchmark scorer, writes one request into ``out`` as JSON,
    prints ``PORT <n>`` once listening and serves until SIGTERM."""
    from benchmarks.scorer import build, make_requests
    from rtml.server import Server

    rng = np.random.default_rng(0)
    bench = build(rng, now=time.time(), n_trees=n_trees, name=SCORER)
    (out / "request.json").write_text(json.dumps(make_requests(bench, rng, 1)[0]))
    server = Server(bench.store, scorers={SCORER: bench.scorer}, host="127.0.0.1", port=0)
    server.serve_forever(on_ready=lambda srv: print(f"PORT {srv.port}", flush=True))


def raw_call(port: int, frame: bytes, size: int) -> tuple[Callable[[], None], socket.socket]:
    """A call that sends ``frame`` on its own blocking connection and reads exactly its
    ``size``-byte answer; and the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    view = memoryview(bytearray(size))
    send, recv_into = sock.sendall, sock.recv_into

    def call() -> None:
        send(frame)
        got = 0
        while got < size:
            n = recv_into(view[got:])
            if not n:
                raise BenchError("the server closed the connection")
            got += n

    return call, sock


def answer(port: int, frame: bytes, size: int) -> bytes:
    """The server's ``size``-byte answer to ``frame``, checked to be OK."""
    got = _net.exchange(port, frame, size)
    if len(got) != size or int.from_bytes(got[10:12], "little") != wire.STATUS["OK"]:
        raise BenchError(f"the server answered {got!r}, expected {size} bytes with status OK")
    return got


def timed(fn: Callable[[], object], calls: int) -> list[int]:
    """Nanoseconds of each of ``calls`` calls of ``fn``."""
    clock = time.perf_counter_ns
    out = [0] * calls
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def measure(
    cases: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int
) -> dict[str, list[list[int]]]:
    """Every case's call times, per round; the cases take turns, in a rotating order."""
    names = list(cases)
    for name in names:
        timed(cases[name], warmup)
    times: dict[str, list[list[int]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(cases[name], calls))
    return times


def render(times: dict[str, list[list[int]]], pairs: tuple[tuple[str, str], ...]) -> list[str]:
    # This machine's load drifts between rounds: a case's p50 is the median of its
    # per-round medians, not of all its calls pooled (which a few slow rounds can skew).
    lines = ["| case | p50 µs | p99 µs |", "|---|---|---|"]
    for name, runs in times.items():
        p50 = statistics.median(statistics.median(r) for r in runs) / 1e3
        p99 = np.percentile(np.concatenate([np.asarray(r) for r in runs]), 99) / 1e3
        lines.append(f"| {name} | {p50:.1f} | {p99:.1f} |")
    lines += ["", "| difference per call | median over rounds of the p50 difference |"]
    lines.append("|---|---|")
    for mine, base in pairs:
        if mine in times and base in times:
            deltas = [
                statistics.median(a) - statistics.median(b)
                for a, b in zip(times[mine], times[base], strict=True)
            ]
            lines.append(f"| {mine} - {base} | {statistics.median(deltas) / 1e3:.2f} µs |")
    return lines


def client_at(rev: str, tmp: Path) -> type[Client]:
    """The Client class of git revision ``rev``: its rtml/client.py (and _client_ops.py,
    if it has one) as a package ``rtml_at_rev`` in ``tmp``, importing the rest of rtml."""
    pkg = tmp / "rtml_at_rev"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("client.py", "_client_ops.py"):
        shown = subprocess.run(
            ["git", "show", f"{rev}:rtml/{name}"], cwd=_net.ROOT, capture_output=True, text=True
        )
        if shown.returncode == 0:
            (pkg / name).write_text(
                shown.stdout.replace("rtml._client_ops", "rtml_at_rev._client_ops")
            )
        elif name == "client.py":
            raise BenchError(f"git show {rev}:rtml/client.py failed: {shown.stderr.strip()}")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("rtml_at_rev.client").Client


def cases_for(
    port: int, request: dict[str, Any], clients: dict[str, type[Client]]
) -> tuple[dict[str, Callable[[], object]], list[Any]]:
    """The raw cases and each client's against the server on ``port``, checked to agree;
    and what to close."""
    probe = Client("127.0.0.1", port)
    spec = probe.stats(SCORER)["scorers"][SCORER]
    keys = [request[k] for k in spec["keys"]]
    fields = np.array([request[f] for f in spec["fields"]], dtype=np.float64)
    ping_frame, score_frame = wire.encode_ping(1), wire.encode_score(1, SCORER, keys, fields)
    score_size = wire.HEADER_SIZE + 2 + 8 * int(spec["n_outputs"])
    answer(port, ping_frame, wire.HEADER_SIZE)
    want = wire.decode_score(answer(port, score_frame, score_size), wire.HEADER_SIZE)
    ping, ping_sock = raw_call(port, ping_frame, wire.HEADER_SIZE)
    score, score_sock = raw_call(port, score_frame, score_size)
    cases: dict[str, Callable[[], object]] = {"raw PING": ping, "raw SCORE": score}
    closers: list[Any] = [probe, ping_sock, score_sock]
    for name, cls in clients.items():
        client = cls("127.0.0.1", port)
        got = np.atleast_1d(client.score(SCORER, request))
        if not np.array_equal(got, want):
            raise BenchError(f"{name}.score gave {got}, the raw SCORE {want}")
        cases[f"{name}.ping()"] = client.ping
        cases[f"{name}.score()"] = functools.partial(client.score, SCORER, request)
        closers.append(client)
    order = ["raw PING", *(c for c in cases if c.endswith("ping()"))]
    order += ["raw SCORE", *(c for c in cases if c.endswith("score()"))]
    return {c: cases[c] for c in order}, closers


def pairs_for(names: list[str]) -> tuple[tuple[str, str], ...]:
    """(client case, what it is compared with): each client against raw, and the
    current client against the others."""
    out = []
    for op, raw in (("ping()", "raw PING"), ("score()", "raw SCORE")):
        mine = [n for n in names if n.endswith(op)]
        out += [(n, raw) for n in mine]
        out += [(mine[0], other) for other in mine[1:]]
    return tuple(out)


def run(args: argparse.Namespace, command: str) -> int:
    rounds = args.rounds or (3 if args.quick else 20)
    calls = args.calls or (300 if args.quick else 2000)
    trees = args.trees or (10 if args.quick else 100)
    with tempfile.TemporaryDirectory(prefix="rtml-bench-client-") as tmp:
        clients: dict[str, type[Client]] = {"Client": Client}
        if args.against:
            clients[f"{args.against} Client"] = client_at(args.against, Path(tmp))
        proc, port = _net.spawn(
            ["benchmarks.client", "--serve", tmp, "--trees", str(trees)], "the rtml server"
        )
        try:
            request = json.loads((Path(tmp) / "request.json").read_text())
            cases, closers = cases_for(port, request, clients)
            load = os.getloadavg()[0]
            times = measure(cases, rounds, calls, warmup=calls // 4)
            for c in closers:
                c.close()
        finally:
            _net.stop(proc)
    print(f"# Client: per-call cost over raw sockets\n\nCommand: `{command}`\n")
    print(
        f"- {os.cpu_count()} CPUs shared by client and server (a child process); 1-min load "
        f"average {load:.2f}; Python {platform.python_version()}; rtml {rtml.__version__}; "
        f"scorer of {trees} trees, {len(request)} request items"
    )
    print(f"- {rounds} rounds of {calls:,} timed calls per case (order rotating)\n")
    print("\n".join(render(times, pairs_for(list(times)))))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.client", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few seconds: a smoke run")
    p.add_argument("--rounds", type=int, default=0, help="rounds (default 20, quick 3)")
    p.add_argument("--calls", type=int, default=0, help="calls per case per round (2000)")
    p.add_argument("--trees", type=int, default=0, help="trees of the model (100, quick 10)")
    p.add_argument("--against", metavar="REV", help="also time the Client of git revision REV")
    p.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(Path(args.serve), args.trees)
        return 0
    command = " ".join(["python -m benchmarks.client", *(argv or sys.argv[1:])])
    try:
        return run(args, command)
    except (BenchError, subprocess.SubprocessError) as e:
        print(f"benchmarks.client: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
