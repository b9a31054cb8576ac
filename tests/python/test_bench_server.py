"""Smoke test of benchmarks/server.py: its C++ load generator and its peers answer, and
a wrong answer is caught. Correctness only: no timing is asserted."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest

# --import-mode=importlib puts nothing on sys.path: make ``benchmarks`` importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import _net, server  # noqa: E402
from benchmarks._net import BenchError, Target  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler"
)


@pytest.fixture(scope="module")
def client() -> _net.Client:
    return _net.Client()


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    proc, port = _net.spawn(["benchmarks._net", "echo"], "the echo server", timeout=30)
    yield port
    _net.stop(proc)


def check_rtt(got: dict[str, Any], count: int, warmup: int) -> None:
    assert got["mode"] == "rtt"
    assert got["count"] == count
    assert 0 < got["min_us"] <= got["p50_us"] <= got["p90_us"] <= got["p99_us"]
    assert got["p99_us"] <= got["p999_us"] <= got["max_us"]
    assert got["checked_full"] == count + warmup


def check_pipe(got: dict[str, Any], conns: int, depth: int) -> None:
    assert (got["mode"], got["conns"], got["depth"]) == ("pipe", conns, depth)
    assert got["responses"] > 0 and got["rps"] > 0 and got["seconds"] > 0
    assert got["checked_full"] >= got["responses"]


def run_both(client: _net.Client, target: Target) -> None:
    check_rtt(client.rtt(target, count=300, warmup=20), 300, 20)
    check_pipe(client.pipe(target, conns=2, depth=8, seconds=0.1, warmup=0.05), 2, 8)


def test_echo_round_trips_and_pipelines(client: _net.Client, echo_port: int) -> None:
    request = bytes(range(200))
    run_both(client, Target(echo_port, request, len(request), request))


def test_a_wrong_response_is_caught(client: _net.Client, echo_port: int) -> None:
    request = b"RTML" + bytes(60)
    wrong = request[:-1] + b"\x01"
    with pytest.raises(BenchError, match=r"response 0 on connection 0 differs .* at byte 63"):
        client.rtt(Target(echo_port, request, len(request), wrong), count=10, warmup=0)
    with pytest.raises(BenchError, match="differs from the expected"):
        client.pipe(
            Target(echo_port, request, len(request), wrong),
            conns=1,
            depth=4,
            seconds=0.1,
            warmup=0.0,
        )


def test_only_the_prefix_is_checked_after_check_full(client: _net.Client, echo_port: int) -> None:
    request = bytes(range(64))
    wrong_tail = request[:-1] + b"\xff"
    target = Target(echo_port, request, len(request), wrong_tail, check_full=0, check_prefix=32)
    assert client.rtt(target, count=50, warmup=0)["checked_full"] == 0
    target.check_full = 1
    with pytest.raises(BenchError, match="at byte 63"):
        client.rtt(target, count=50, warmup=0)


def test_a_stalled_server_fails_the_run() -> None:
    # A listener that never accepts: connects succeed (backlog), no byte ever comes back.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        target = Target(listener.getsockname()[1], b"ping", 4, b"pong")
        quick = _net.Client(stall_ms=200)
        with pytest.raises(BenchError, match=r"no reply for --stall-ms; .* 0 of 4 bytes"):
            quick.rtt(target, count=1, warmup=0)
        with pytest.raises(BenchError, match="no reply for --stall-ms"):
            quick.pipe(target, conns=2, depth=2, seconds=0.1, warmup=0.0)


def test_redis_ping_and_get(client: _net.Client) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    rows, cleanups = server.redis_rows(42)
    try:
        for row in rows:
            assert row.target is not None, row.note
            run_both(client, row.target)
    finally:
        for cleanup in cleanups:
            cleanup()


def test_rtml_score_and_predict(client: _net.Client, tmp_path: Any) -> None:
    rows, cleanups = server.rtml_rows(tmp_path, n_trees=5)
    try:
        for row in rows:
            if row.target is None and "not built here" in row.note:
                pytest.skip(row.note)
            assert row.target is not None, row.note
            run_both(client, row.target)
    finally:
        for cleanup in cleanups:
            cleanup()


def test_the_table_and_goals() -> None:
    echo = server.Row("echo (uvloop)", Target(1, b"x" * 80, 80))
    score = server.Row("rtml SCORE", Target(1, b"y" * 80, 42))
    echo.runs = [
        {"p50": 10.0, "p99": 20.0, "rps1": 1e6, "rps4": 2e6},
        {"p50": 10.0, "p99": 40.0, "rps1": 1e6, "rps4": 1e6},
        {"p50": 10.0, "p99": 20.0, "rps1": 1e6, "rps4": 2e6},
    ]
    score.runs = [
        {"p50": 11.0, "p99": 24.0, "rps1": 5e5, "rps4": 6e5},
        {"p50": 12.0, "p99": 44.0, "rps1": 4e5, "rps4": 5e5},
        {"p50": 13.0, "p99": 30.0, "rps1": 4e5, "rps4": 5e5},
    ]
    missing = server.Row("redis PING", note="n/a (not installed)")
    table = server.render([echo, missing, score])
    assert (
        table[2]
        == "| echo (uvloop) | 80 / 80 | 10.0 | 20.0 | 1.00x | 1.00 M/s | 2.00 M/s | 1.00x |"
    )
    assert table[3] == "| redis PING | n/a (not installed) | - | - | - | - | - | - |"
    # Ratios pair each round: p99 24/20, 44/40, 30/20 -> median 1.2, not 30/20.
    assert (
        table[4] == "| rtml SCORE | 80 / 42 | 12.0 | 30.0 | 1.20x | 400.0 k/s | 500.0 k/s | 0.30x |"
    )
    goals = "\n".join(server.goal_lines([echo, score]))
    assert "30.0 vs 20.0 µs (medians); paired ratio 1.20x | yes |" in goals
    assert "500.0 k/s (best of 1 and 4 conns) | yes |" in goals
