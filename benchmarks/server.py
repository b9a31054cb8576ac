"""The rtml server over TCP against a minimal uvloop echo server and redis-server.

    python -m benchmarks.server [--quick] [--rounds N] [--peers echo,redis,rtml]

Every peer runs in its own process on loopback and is driven by the same C++ load
generator (benchmarks/cpp/rtt_client.cc, built on first use), which checks every
response byte for byte against the expected one:

* echo: an asyncio.Protocol on uvloop that writes back what it reads, fed the bytes of
  the rtml SCORE request: the floor under any Python-hosted request/response server.
* redis PING and GET (RESP) of a value as long as the SCORE response; redis-server is
  started here on a free port without persistence (skipped, with a note, if missing).
* rtml SCORE (the 100-tree depth-6 XGBoost scorer of benchmarks/scorer.py: 30 inputs,
  2 tables, 1 window set) and PREDICT (one float32 row of its 30 features into the same
  model), served by ``rtml.server.Server`` in a child process.

Measured per peer: single-connection round trips (closed loop, one request in flight,
timed by the client with CLOCK_MONOTONIC), p50 and p99; and pipelined throughput,
responses/s with 32 requests in flight per connection on 1 and 4 connections (all from
one client thread). The peers take turns in --rounds rounds (each round: every peer's
round trips, then every peer's pipelines); the table shows each figure's median over
the rounds, and each ratio to echo as the median of the per-round ratios. Client and
server share the machine's cores: on a 2-core machine the client takes one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvloop

import rtml
from benchmarks import _net
from benchmarks._net import BenchError, Target
from benchmarks.trees import _fmt_rate, _fmt_us

if TYPE_CHECKING:
    from benchmarks.scorer import Bench

DEPTH = 32  # requests in flight per connection in the pipelined test
CONNS = (1, 4)
SCORER = MODEL = "fraud"
REQUEST_ID = 7
# Window events of the served store are spread over the HISTORY seconds before start,
# so none leaves the 10-minute window (nor the 1-hour one) in the 8 minutes after: the
# expected score stays exact (compared byte for byte) for a run that long.
HISTORY = 120.0


@dataclass
class Row:
    """One line of the table: a peer's request, or why it was skipped."""

    name: str
    target: Target | None = None
    note: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)
    reference: dict[str, float] = field(default_factory=dict)  # in-process timings

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)


@dataclass
class Settings:
    rtt_count: int
    rtt_warmup: int
    seconds: float
    warmup_seconds: float
    rounds: int


# -- the rtml peer (child process) --------------------------------------------------------


def _response(request: bytes, payload: bytes) -> bytes:
    """The OK response to a request, laid out from docs/protocol.md (an oracle that does
    not share the server's encoder): the request's magic, version and opcode, flags
    RESPONSE, status OK, its request id, then the payload."""
    from rtml._core import wire

    flags_status = struct.pack("<HH", wire.FLAG_RESPONSE, wire.STATUS["OK"])
    return request[:8] + flags_status + request[12:20] + struct.pack("<I", len(payload)) + payload


def serve_rtml(out: Path, n_trees: int) -> None:
    """Builds the benchmark scorer, writes the SCORE and PREDICT requests, their expected
    responses and in-process reference timings into ``out``, then serves until SIGTERM."""
    import numpy as np

    from benchmarks.scorer import build, make_requests
    from rtml.server import Server

    rng = np.random.default_rng(0)
    bench = build(rng, now=time.time(), history=HISTORY, n_trees=n_trees, name=SCORER)
    req = make_requests(bench, rng, 1)[0]
    _write_requests(bench, req, out)
    _write_reference(bench, req, make_requests(bench, rng, 10_000), out)
    port = _net.free_port()
    server = Server(
        bench.store,
        scorers={SCORER: bench.scorer},
        models={MODEL: bench.model},
        host="127.0.0.1",
        port=port,
    )
    print(f"PORT {port}", flush=True)
    server.serve_forever()


def _write_requests(bench: Bench, req: dict[str, Any], out: Path) -> None:
    import numpy as np

    from rtml._core import wire

    scorer = bench.scorer
    keys = [req[k] for k in scorer.key_names]
    fields = np.array([req[f] for f in scorer.request_fields], dtype=np.float64)
    score = np.atleast_1d(np.asarray(scorer.score(req), dtype=np.float64))
    score_req = wire.encode_score(REQUEST_ID, SCORER, keys, fields)
    score_payload = struct.pack("<H", score.size) + score.astype("<f8").tobytes()
    predict_req = wire.encode_predict(REQUEST_ID, MODEL, _feature_row(bench, req))
    pred = np.asarray(bench.model.predict(_feature_row(bench, req)), dtype=np.float64)
    pred = pred.reshape(1, -1)
    predict_payload = struct.pack("<II", *pred.shape) + pred.astype("<f8").tobytes()
    for name, data in (
        ("score.req", score_req),
        ("score.resp", _response(score_req, score_payload)),
        ("predict.req", predict_req),
        ("predict.resp", _response(predict_req, predict_payload)),
    ):
        (out / name).write_bytes(bytes(data))


def _feature_row(bench: Bench, req: dict[str, Any]) -> Any:
    """The request's assembled 30 features as a (1, 30) float32 array."""
    import numpy as np

    feats = bench.scorer.explain(req, now=time.time())["features"]
    return np.array([[feats[f]["value"] for f in bench.scorer.features]], dtype=np.float32)


def _write_reference(
    bench: Bench, req: dict[str, Any], many: list[dict[str, Any]], out: Path
) -> None:
    """The same work in process, without the network: what the server's figures are
    measured against (single calls through the Python API; batches in C++)."""
    import numpy as np

    from benchmarks.scorer import timed

    scorer, X = bench.scorer, _feature_row(bench, req)
    cols = {c: [r[c] for r in many] for c in many[0]}
    batch = timed(lambda: scorer.score_many(cols), 5)
    ref = {
        "score_p50_us": float(np.median(timed(lambda: scorer.score(req), 5000))),
        "score_many_rps": len(many) / float(np.median(batch)) * 1e6,
        "predict_p50_us": float(np.median(timed(lambda: bench.model.predict(X), 5000))),
    }
    (out / "reference.json").write_text(json.dumps(ref))


def _rtml_missing(why: str) -> tuple[list[Row], list[Callable[[], None]]]:
    return [Row("rtml SCORE", note=f"n/a ({why})"), Row("rtml PREDICT", note=f"n/a ({why})")], []


def rtml_rows(tmp: Path, n_trees: int) -> tuple[list[Row], list[Callable[[], None]]]:
    """Starts the rtml server; its SCORE and PREDICT rows (or why they are missing)."""
    try:
        from rtml._core import wire
        from rtml.server import Server  # noqa: F401

        wire.encode_score  # noqa: B018
    except (ImportError, AttributeError) as e:
        return _rtml_missing(f"the rtml server or wire codec is not built here: {e}")
    args = ["benchmarks.server", "--serve-rtml", str(tmp), "--trees", str(n_trees)]
    try:
        proc, port = _net.spawn(args, "the rtml server")
    except BenchError as e:
        return _rtml_missing(str(e))
    try:
        _net.wait_listening(port)
    except BenchError as e:
        _net.stop(proc)
        return _rtml_missing(str(e))
    rows = []
    reference = json.loads((tmp / "reference.json").read_text())
    for name, stem in (("rtml SCORE", "score"), ("rtml PREDICT", "predict")):
        request, expect = (tmp / f"{stem}.req").read_bytes(), (tmp / f"{stem}.resp").read_bytes()
        rows.append(Row(name, Target(port, request, len(expect), expect), reference=reference))
    return rows, [lambda: _net.stop(proc)]


# -- the echo and redis peers -------------------------------------------------------------


def echo_row(request: bytes) -> tuple[Row, list[Callable[[], None]]]:
    try:
        proc, port = _net.spawn(["benchmarks._net", "echo"], "the echo server")
    except BenchError as e:
        return Row("echo (uvloop)", note=f"n/a ({e})"), []
    return Row("echo (uvloop)", Target(port, request, len(request), request)), [
        lambda: _net.stop(proc)
    ]


def redis_rows(value_len: int) -> tuple[list[Row], list[Callable[[], None]]]:
    from benchmarks.store import start_redis

    proc, port, why = start_redis()
    if proc is None:
        return [Row("redis PING", note=f"n/a ({why})"), Row("redis GET", note=f"n/a ({why})")], []
    value = bytes(range(256))[:value_len].ljust(value_len, b"v")
    if _net.exchange(port, _net.resp(b"SET", b"bench:value", value), 5) != b"+OK\r\n":
        _net.stop(proc)
        raise BenchError("redis-server did not accept SET")
    got = b"$%d\r\n%s\r\n" % (value_len, value)
    rows = [
        Row("redis PING", Target(port, _net.resp(b"PING"), 7, b"+PONG\r\n")),
        Row("redis GET", Target(port, _net.resp(b"GET", b"bench:value"), len(got), got)),
    ]
    return rows, [lambda: _net.stop(proc)]


# -- measuring and reporting --------------------------------------------------------------


def measure_round(client: _net.Client, rows: list[Row], s: Settings) -> None:
    """One round: every peer's round trips back to back, then every peer's pipelines, so
    the figures a ratio pairs were taken close in time (this machine's load drifts)."""
    live = [r for r in rows if r.target is not None]
    for row in live:
        assert row.target is not None
        rtt = client.rtt(row.target, count=s.rtt_count, warmup=s.rtt_warmup)
        row.runs.append({"p50": rtt["p50_us"], "p99": rtt["p99_us"], "p999": rtt["p999_us"]})
    for conns in CONNS:
        for row in live:
            assert row.target is not None
            got = client.pipe(
                row.target, conns=conns, depth=DEPTH, seconds=s.seconds, warmup=s.warmup_seconds
            )
            row.runs[-1][f"rps{conns}"] = got["rps"]


def paired_ratio(row: Row, base: Row, key: str) -> float:
    """The median over rounds of row/base, each round's figures paired."""
    pairs = zip(row.runs, base.runs, strict=True)
    return statistics.median(mine[key] / theirs[key] for mine, theirs in pairs)


def _vs(row: Row, base: Row | None, key: str) -> str:
    return f"{paired_ratio(row, base, key):.2f}x" if base is not None else "-"


def render(rows: list[Row]) -> list[str]:
    head = ["peer", "request / response bytes", "RTT p50 µs", "RTT p99 µs", "p99 vs echo"]
    head += [f"pipelined {c} conn{'s' if c > 1 else ''}" for c in CONNS]
    head += [f"{CONNS[-1]} conns vs echo"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    echo = next((r for r in rows if r.name.startswith("echo") and r.runs), None)
    for r in rows:
        if not r.runs or r.target is None:
            lines.append(f"| {r.name} | {r.note} |" + " - |" * (len(head) - 2))
            continue
        cells = [r.name, f"{len(r.target.request)} / {r.target.response_len}"]
        cells += [_fmt_us(r.median("p50")), _fmt_us(r.median("p99")), _vs(r, echo, "p99")]
        cells += [f"{_fmt_rate(r.median(f'rps{c}'))}/s" for c in CONNS]
        cells.append(_vs(r, echo, f"rps{CONNS[-1]}"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def goal_lines(rows: list[Row]) -> list[str]:
    by = {r.name: r for r in rows if r.runs}
    score, echo = by.get("rtml SCORE"), by.get("echo (uvloop)")
    if score is None or echo is None:
        return ["Goals: not evaluated (the rtml or the echo peer did not run)."]
    p99 = paired_ratio(score, echo, "p99")
    best = max(score.median(f"rps{c}") for c in CONNS)
    return [
        "| goal | measured (this run) | met? |",
        "|---|---|---|",
        f"| SCORE RTT p99 <= 1.3x echo p99 | {score.median('p99'):.1f} vs "
        f"{echo.median('p99'):.1f} µs (medians); paired ratio {p99:.2f}x | "
        f"{'yes' if p99 <= 1.3 else 'no'} |",
        f"| pipelined >= 500k scores/s, one server process | {_fmt_rate(best)}/s "
        f"(best of 1 and 4 conns) | {'yes' if best >= 500_000 else 'no'} |",
    ]


def machine_line() -> str:
    redis = shutil.which("redis-server")
    redis_v = "not installed"
    if redis:
        out = subprocess.run([redis, "--version"], capture_output=True, text=True, check=False)
        redis_v = out.stdout.split()[2] if out.stdout.count(" ") > 2 else out.stdout.strip()
    return (
        f"{os.cpu_count()} CPUs shared by client and servers; 1-min load average at start "
        f"{os.getloadavg()[0]:.2f}; {platform.system()} {platform.release()}; Python "
        f"{platform.python_version()}; rtml {rtml.__version__}, uvloop {uvloop.__version__}, "
        f"redis-server {redis_v.removeprefix('v=')}"
    )


PEERS = ("echo", "redis", "rtml")


def start_peers(
    peers: set[str], tmp: Path, n_trees: int, cleanups: list[Callable[[], None]]
) -> list[Row]:
    """Starts the chosen peers (adding how to stop each to cleanups); their rows."""
    unknown = peers.difference(PEERS)
    if unknown:
        raise BenchError(f"unknown peer(s) {sorted(unknown)}; choose from {list(PEERS)}")
    rtml_: list[Row] = []
    if "rtml" in peers:
        rtml_, stop = rtml_rows(tmp, n_trees)
        cleanups += stop
    score = rtml_[0].target if rtml_ else None
    echo: list[Row] = []
    if "echo" in peers:
        # Without rtml: a stand-in of an rtml request's size.
        row, stop = echo_row(score.request if score else b"RTML" + bytes(144))
        echo = [row]
        cleanups += stop
    redis: list[Row] = []
    if "redis" in peers:
        redis, stop = redis_rows(score.response_len if score else 42)
        cleanups += stop
    return [*echo, *redis, *rtml_]


def run(args: argparse.Namespace, command: str) -> int:
    if args.quick:
        s = Settings(rtt_count=5_000, rtt_warmup=500, seconds=0.5, warmup_seconds=0.2, rounds=1)
    else:
        s = Settings(rtt_count=20_000, rtt_warmup=2_000, seconds=2.0, warmup_seconds=0.5, rounds=5)
    if args.rounds:
        s.rounds = args.rounds
    header = machine_line()
    client = _net.Client()
    cleanups: list[Callable[[], None]] = []
    with tempfile.TemporaryDirectory(prefix="rtml-bench-server-") as tmp:
        try:
            rows = start_peers(set(args.peers.split(",")), Path(tmp), args.trees, cleanups)
            for _ in range(s.rounds):
                measure_round(client, rows, s)
        finally:
            for cleanup in cleanups:
                cleanup()
    print(f"# Server: round trips and pipelined throughput on loopback\n\nCommand: `{command}`\n")
    print(f"- {header}")
    print(
        f"- RTT: {s.rtt_count:,} timed round trips after {s.rtt_warmup:,} untimed, one "
        f"connection, one request in flight. Pipelined: {DEPTH} in flight per connection, "
        f"{s.seconds:g} s counted after {s.warmup_seconds:g} s. Medians over {s.rounds} "
        f"round(s); ratios: the median of per-round ratios. Every response checked byte for "
        f"byte.\n"
    )
    print("\n".join(render(rows)))
    print()
    print("\n".join(goal_lines(rows)))
    ref = next((r.reference for r in rows if r.reference), None)
    if ref:
        print(
            f"\nThe same work in the server's process before it serves, no network: "
            f"Scorer.score p50 {ref['score_p50_us']:.2f} µs and Model.predict (1 row) p50 "
            f"{ref['predict_p50_us']:.2f} µs through the Python API; Scorer.score_many of "
            f"10,000 requests {_fmt_rate(ref['score_many_rps'])} rows/s (one thread)."
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a second or so per peer: a smoke run")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 5, quick 1)")
    p.add_argument("--trees", type=int, default=100, help="trees of the served model")
    p.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}"
    )
    p.add_argument("--serve-rtml", metavar="DIR", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_rtml:
        serve_rtml(Path(args.serve_rtml), args.trees)
        return 0
    command = " ".join(["python -m benchmarks.server", *(argv or sys.argv[1:])])
    try:
        return run(args, command)
    except BenchError as e:
        print(f"benchmarks.server: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
