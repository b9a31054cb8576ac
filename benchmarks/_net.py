"""Network benchmark plumbing for benchmarks/server.py: the C++ load generator, peer
processes, and the minimal uvloop echo server.

    python -m benchmarks._net echo     # runs the echo server; prints "PORT <n>"

The load generator (benchmarks/cpp/rtt_client.cc) is compiled on first use with
``c++ -O2 -std=c++17`` into build/bench-bin/, named by a hash of its source, so an
edited client is rebuilt and a fresh checkout needs only g++.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
CLIENT_SOURCE = ROOT / "benchmarks" / "cpp" / "rtt_client.cc"


class BenchError(RuntimeError):
    """A peer that would not start, or a client run that failed (message says which)."""


def client_binary(cache: Path | None = None) -> Path:
    """The compiled load generator, built now if its source changed since the last build."""
    source = CLIENT_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = cache or ROOT / "build" / "bench-bin"
    exe = cache / f"rtt_client-{digest}"
    if exe.exists():
        return exe
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise BenchError("no C++ compiler (c++ or g++) on PATH to build the load generator")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_name(f"{exe.name}.tmp.{os.getpid()}")
    cmd = [cxx, "-O2", "-std=c++17", "-Wall", "-Wextra", str(CLIENT_SOURCE), "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"building the load generator failed: {' '.join(cmd)}\n{done.stderr}")
    tmp.replace(exe)  # atomic: a concurrent build of the same source is harmless
    return exe


@dataclass
class Target:
    """One request a peer answers, and what its answer must be.

    ``expect`` is compared in full for the first ``check_full`` responses of each
    connection (None: all of them) and by its first ``check_prefix`` bytes after that.
    """

    port: int
    request: bytes
    response_len: int
    expect: bytes | None = None
    check_full: int | None = None
    check_prefix: int = 0
    host: str = "127.0.0.1"


@dataclass
class Client:
    """Runs the compiled load generator against a Target and returns its JSON result."""

    exe: Path = field(default_factory=client_binary)
    stall_ms: int = 5000  # a run with no reply for this long fails

    def rtt(self, target: Target, *, count: int, warmup: int) -> dict[str, Any]:
        return self._run(target, ["rtt", "--count", str(count), "--warmup", str(warmup)])

    def pipe(
        self, target: Target, *, conns: int, depth: int, seconds: float, warmup: float
    ) -> dict[str, Any]:
        args = ["pipe", "--conns", str(conns), "--depth", str(depth)]
        args += ["--seconds", str(seconds), "--warmup-seconds", str(warmup)]
        return self._run(target, args)

    def _run(self, target: Target, mode_args: list[str]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="rtml-bench-") as tmp:
            req = Path(tmp) / "request.bin"
            req.write_bytes(target.request)
            cmd = [str(self.exe), "--host", target.host, "--port", str(target.port)]
            cmd += ["--stall-ms", str(self.stall_ms)]
            cmd += ["--request", str(req), "--response-len", str(target.response_len)]
            if target.expect is not None:
                exp = Path(tmp) / "expect.bin"
                exp.write_bytes(target.expect)
                cmd += ["--expect", str(exp)]
                if target.check_full is not None:
                    cmd += ["--check-full", str(target.check_full)]
                cmd += ["--check-prefix", str(target.check_prefix)]
            done = subprocess.run(
                [*cmd, *mode_args], capture_output=True, text=True, timeout=600, check=False
            )
        lines = done.stdout.strip().splitlines()
        try:
            result: dict[str, Any] = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            raise BenchError(
                f"load generator exited {done.returncode} without a result: {done.stderr.strip()}"
            ) from None
        if "error" in result:
            raise BenchError(f"load generator: {result['error']}")
        return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_port(proc: subprocess.Popen[bytes], what: str, timeout: float) -> int:
    """Waits for the ``PORT <n>`` line a peer process prints once it listens."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline().decode(errors="replace").strip()
            if line.startswith("PORT "):
                return int(line.split()[1])
            if not line and proc.poll() is not None:
                break
    stop(proc)
    raise BenchError(f"{what} did not start (exit code {proc.returncode}); see its stderr above")


def spawn(
    args: list[str], what: str, *, timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], int]:
    """Starts ``python -m <args>`` from the repository root; returns it and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, preexec_fn=_die_with_parent
    )
    return proc, read_port(proc, what, timeout)


def _die_with_parent() -> None:
    """In the child before exec: on Linux, SIGTERM it when the benchmark process dies
    (however it dies), so no peer server outlives a killed run."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def wait_listening(port: int, timeout: float = 30.0) -> None:
    """Returns once a TCP connect to the loopback port succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout} s") from e
            time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (servers drain), then SIGKILL if it has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def resp(*parts: bytes) -> bytes:
    """A Redis command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


def exchange(port: int, request: bytes, response_len: int, *, timeout: float = 10.0) -> bytes:
    """Sends one request and reads exactly response_len bytes back (setup and checks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        got = b""
        while len(got) < response_len:
            chunk = s.recv(response_len - len(got))
            if not chunk:
                break
            got += chunk
    return got


# -- the echo peer ------------------------------------------------------------------------


class _Echo(asyncio.Protocol):
    """Writes back whatever arrives: the floor any request/response server stands on."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def _serve_echo() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, done.set_result, None)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    await done
    server.close()


def run_echo() -> None:
    import uvloop

    uvloop.run(_serve_echo())


if __name__ == "__main__":
    if sys.argv[1:] != ["echo"]:
        sys.exit("usage: python -m benchmarks._net echo")
    run_echo()
