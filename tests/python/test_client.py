"""rtml.Client and rtml.AsyncClient: error mapping, argument checks before sending, the
connection rules (out-of-step answers, fatal errors, timeouts, drops, pipelining and its
bound) against a scripted server, and every operation against a live rtml server,
whose scores must equal the in-process scorer's exactly."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvloop
import xgboost as xgb
from test_scorer import build, requests

import rtml
from rtml import _client_ops as ops
from rtml import client as rc
from rtml._core import wire
from rtml.server import Server

OPS = wire.OPCODES
STATUS = wire.STATUS
# The header of docs/protocol.md, written here independently of the codec (an oracle).
HEAD = struct.Struct("<4sBBHHHQI")


def frame(op: int, rid: int, payload: bytes = b"", *, status: int = 0, flags: int = 0) -> bytes:
    """A response frame (the RESPONSE flag is always set)."""
    flags |= wire.FLAG_RESPONSE
    return HEAD.pack(b"RTML", 1, 0, op, flags, status, rid, len(payload)) + payload


def str16(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<H", len(data)) + data


def error(op: int, rid: int, name: str, message: str, *, closing: bool = False) -> bytes:
    flags = wire.FLAG_CLOSING if closing else 0
    return frame(op, rid, str16(message), status=STATUS[name], flags=flags)


def stats_answer(rid: int, doc: str) -> bytes:
    data = doc.encode()
    return frame(OPS["STATS"], rid, struct.pack("<I", len(data)) + data)


Answer = Callable[[int, int, bytes], "bytes | list[bytes] | None"]


class Scripted:
    """A server for one connection, on a thread: it answers HELLO itself and every other
    request with ``answer(opcode, request_id, payload)``: bytes to send (b"" for nothing
    yet; a list: pieces sent a moment apart), or None to close the connection. ``seen``
    lists the opcodes received."""

    def __init__(self, answer: Answer, *, max_in_flight: int = 64, max_payload: int = 1 << 20):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.answer = answer
        self.hello = struct.pack("<BBHII", 1, 0, 0, max_payload, max_in_flight) + str16("test/1")
        self.seen: list[int] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # closed before anyone connected
            return
        with conn:
            buf = b""
            while data := self._recv(conn):
                buf += data
                frames, used = wire.split_frames(buf)
                for op, _, _, rid, offset, length in frames:
                    self.seen.append(op)
                    if op == OPS["HELLO"]:
                        out: bytes | None = frame(op, rid, self.hello)
                    else:
                        out = self.answer(op, rid, buf[offset : offset + length])
                    if out is None:
                        return
                    for piece in [out] if isinstance(out, bytes) else out:
                        conn.sendall(piece)
                        if not isinstance(out, bytes):
                            time.sleep(0.005)  # separate reads for the client
                buf = buf[used:]

    @staticmethod
    def _recv(conn: socket.socket) -> bytes:
        try:
            return conn.recv(1 << 16)
        except OSError:  # the client reset the connection
            return b""

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(answer: Answer, **kwargs: Any) -> Scripted:
        servers.append(Scripted(answer, **kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, Any]], Any]]:
    """Runs a coroutine to completion on a fresh asyncio or uvloop event loop."""
    loop = asyncio.new_event_loop() if request.param == "asyncio" else uvloop.new_event_loop()
    yield loop.run_until_complete
    loop.close()


def echo(op: int, rid: int, payload: bytes) -> bytes:
    return frame(op, rid, payload)


# -- the error table ---------------------------------------------------------------------


def expected_class(name: str, code: int) -> type[Exception]:
    """docs/protocol.md's ranges and the client's promise: in-process classes for the
    caller's mistakes, ServerError for the server's state."""
    if code < 64:
        return rc.ProtocolError
    if name == "MODEL_ERROR":
        return rtml.ModelFormatError
    if code < 128 or name == "TABLE_FULL":
        return rtml.InputError
    return rc.ServerError


@pytest.mark.parametrize("name", sorted(n for n in STATUS if n != "OK"))
def test_every_status_raises_its_class_with_name_code_and_message(name: str) -> None:
    code = STATUS[name]
    err = rc.error_for(code, "scorer 'fraud': the details")
    assert type(err) is expected_class(name, code)
    assert isinstance(err, rtml.RtmlError)
    assert err.code == code  # type: ignore[attr-defined]
    # ProtocolError keeps the codec's meaning of .status: the code itself.
    assert err.status == (code if type(err) is rc.ProtocolError else name)  # type: ignore[attr-defined]
    assert name in str(err) and "scorer 'fraud': the details" in str(err)


def test_the_table_names_every_status_and_only_those() -> None:
    assert set(ops._ERROR_CLASSES) == set(STATUS) - {"OK"}
    assert all(ops._ERROR_CLASSES[rc.status_name(c)] is rc.ProtocolError for c in wire.FATAL)


def test_unknown_status_codes_raise_by_range() -> None:
    assert type(rc.error_for(42, "x")) is rc.ProtocolError
    err = rc.error_for(200, "x")
    assert type(err) is rc.ServerError and err.status == "status 200" and err.code == 200


def test_connection_errors_are_builtin_and_rtml_errors() -> None:
    assert issubclass(rc.ServerConnectionError, ConnectionError)
    assert issubclass(rc.ServerConnectionError, rtml.RtmlError)
    assert issubclass(rc.ServerTimeoutError, TimeoutError)
    assert issubclass(rc.ServerTimeoutError, rc.ServerConnectionError)


def test_the_public_names_live_in_rtml_client() -> None:
    for name in rc.__all__:
        assert getattr(rtml, name, getattr(rc, name)) is getattr(rc, name)
    for cls in (rc.ServerError, rc.ServerConnectionError, rc.ServerTimeoutError):
        assert cls.__module__ == "rtml.client"
    assert rc.error_for is ops.error_for and rc.status_name is ops.status_name


# -- the connection, against a scripted server ---------------------------------------------


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def test_refused_connections_name_the_address(run: Callable[..., Any]) -> None:
    port = free_port()
    with pytest.raises(rc.ServerConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
        rc.Client("127.0.0.1", port)
    with pytest.raises(rc.ServerConnectionError, match=f"127.0.0.1:{port}"):
        run(rc.AsyncClient.connect("127.0.0.1", port))


SPEC = (
    '{"scorers": {"s": {"keys": ["card", "shop"], "fields": ["amount", "hour"], '
    '"n_outputs": 1}}, "tables": {"t": {"key": "str", "fields": ["a", "b"]}}}'
)


def test_arguments_are_checked_before_anything_is_sent(scripted: Callable[..., Scripted]) -> None:
    server = scripted(lambda op, rid, p: stats_answer(rid, SPEC))
    with rc.Client("127.0.0.1", server.port) as client:
        ok = {"card": "c1", "shop": 3, "amount": 1.5, "hour": None}
        client._run(client._scorer_spec("s"))
        client._run(client._table_fields("t"))
        sent = list(server.seen)
        bad_calls: list[tuple[Callable[[], Any], str]] = [
            (lambda: client.score("s", {**ok, "shop": None}), "'shop': expected a str or"),
            (lambda: client.score("s", {k: v for k, v in ok.items() if k != "card"}), "key 'card'"),
            (lambda: client.score("s", {k: v for k, v in ok.items() if k != "hour"}), "'hour'"),
            (lambda: client.score("s", {**ok, "amount": "12"}), "'amount': expected a number"),
            (lambda: client.score("s", {**ok, "shop": True}), "'shop': expected a str or"),
            (lambda: client.score_many("s", {"card": ["c1"], "amount": [1.0]}), "lacks column"),
            (
                lambda: client.score_many(
                    "s", {"card": ["a"], "shop": [1, 2], "amount": [1.0], "hour": [1.0]}
                ),
                "differ in length",
            ),
            (lambda: client.predict("m", pd.DataFrame({"x": [1.0]})), "numpy array"),
            (lambda: client.predict("m", np.zeros((2, 2, 2))), "1-D .one row. or 2-D"),
            (lambda: client.predict("m", np.array(["a"])), "expected numbers"),
            (lambda: client.put_features("t", ["k"], np.zeros((1, 3))), r"expected \(1, 2\)"),
            (lambda: client.put_features("t", ["k"], {"a": [1], "c": [2]}), "unknown field"),
            (lambda: client.put_features("t", ["k"], {"a": [1]}), r"lacks column\(s\) \['b'\]"),
            (lambda: client.put_features("t", "k", np.zeros((1, 2))), "sequence of keys"),
            (lambda: client.get_features("t", 5), "sequence of keys"),
            (lambda: client.ingest("w", ["a", "b"], [1.0]), "2 keys but 1 values"),
            (lambda: client.load_model("m"), "exactly one of path= .* or data="),
            (lambda: client.load_model("m", path="x", data=b"y"), "exactly one of"),
            (lambda: client.swap_model("s", "m", role="canary"), "role must be one of"),
        ]
        for call, message in bad_calls:
            with pytest.raises(rtml.InputError, match=message):
                call()
    assert server.seen == sent


def test_a_fatal_error_closes_the_connection_and_later_calls_say_why(
    scripted: Callable[..., Scripted],
) -> None:
    server = scripted(
        lambda op, rid, p: error(op, rid, "UNAUTHORIZED", "wrong token", closing=True)
    )
    client = rc.Client("127.0.0.1", server.port)
    with pytest.raises(rc.ProtocolError, match="UNAUTHORIZED: wrong token") as info:
        client.ping()
    assert info.value.code == STATUS["UNAUTHORIZED"] and client.closed
    with pytest.raises(rc.ServerConnectionError, match="closed by the server: UNAUTHORIZED"):
        client.ping()
    client.close()


def test_request_errors_keep_the_connection(scripted: Callable[..., Scripted]) -> None:
    def answer(op: int, rid: int, payload: bytes) -> bytes:
        if payload == b"busy":
            return error(op, rid, "OVERLOADED", "1000 requests queued")
        if payload == b"bug":
            return error(op, rid, "INTERNAL", "engine.cc:12")
        return frame(op, rid, payload)

    server = scripted(answer)
    with rc.Client("127.0.0.1", server.port) as client:
        with pytest.raises(rc.ServerError, match="OVERLOADED: 1000 requests queued"):
            client.ping(b"busy")
        with pytest.raises(rc.ServerError, match="INTERNAL") as info:
            client.ping(b"bug")
        assert info.value.code == STATUS["INTERNAL"]
        assert client.ping(b"fine") == b"fine" and not client.closed


@pytest.mark.parametrize("mistake", ["request id", "opcode", "bad magic"])
def test_an_answer_out_of_step_closes_the_connection(
    scripted: Callable[..., Scripted], mistake: str
) -> None:
    def answer(op: int, rid: int, payload: bytes) -> bytes:
        if mistake == "request id":
            return frame(op, rid + 1, payload)
        if mistake == "opcode":
            return frame(OPS["STATS"], rid, payload)
        return b"HTTP/1.1 400 Bad Request\r\n\r\n"

    server = scripted(answer)
    client = rc.Client("127.0.0.1", server.port)
    with pytest.raises(rc.ProtocolError):
        client.ping(b"x")
    assert client.closed
    with pytest.raises(rc.ServerConnectionError, match="closed"):
        client.ping(b"x")
    client.close()


def test_no_answer_in_time_raises_a_timeout_and_closes(scripted: Callable[..., Scripted]) -> None:
    server = scripted(lambda op, rid, p: b"")
    client = rc.Client("127.0.0.1", server.port, timeout=0.2)
    with pytest.raises(rc.ServerTimeoutError, match=r"127.0.0.1:\d+: closed: no answer within"):
        client.ping()
    with pytest.raises(rc.ServerConnectionError, match="no answer within"):
        client.ping()
    client.close()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows keeps Python's socket timeout")
@pytest.mark.parametrize("timeout", [None, 0.25, 3])
def test_a_timeout_bounds_each_wait_and_none_waits_forever(
    scripted: Callable[..., Scripted], timeout: float | None
) -> None:
    # The kernel keeps the timeout (SO_RCVTIMEO, no poll per call); an answer that takes
    # a moment is fine.
    server = scripted(lambda op, rid, p: [b"", frame(op, rid, p)])
    with rc.Client("127.0.0.1", server.port, timeout=timeout) as client:
        assert client.ping(b"after 5 ms") == b"after 5 ms"
        sock = client._sock
        assert sock is not None and sock.gettimeout() is None
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.calcsize("@ll"))
        seconds, micros = struct.unpack("@ll", got)
        assert seconds + micros / 1e6 == pytest.approx(timeout or 0, abs=0.01)


def test_a_dropped_connection_raises_connection_error(scripted: Callable[..., Scripted]) -> None:
    server = scripted(lambda op, rid, p: None)
    client = rc.Client("127.0.0.1", server.port)
    with pytest.raises(rc.ServerConnectionError, match="lost: the server closed"):
        client.ping()
    client.close()


def test_answers_arriving_in_pieces_are_put_together(scripted: Callable[..., Scripted]) -> None:
    def answer(op: int, rid: int, payload: bytes) -> list[bytes]:
        whole = frame(op, rid, payload)
        return [whole[:5], whole[5:23], whole[23:30], whole[30:]]

    server = scripted(answer)
    with rc.Client("127.0.0.1", server.port) as client:
        assert client.ping(b"in four pieces") == b"in four pieces"
        assert client.ping(b"x" * 70_000) == b"x" * 70_000  # above the first buffer


def test_bytes_past_an_answer_are_read_as_the_next_answer(
    scripted: Callable[..., Scripted],
) -> None:
    # One read may take more than the answer; what follows it is not dropped: a stray
    # frame is the next call's answer, out of step, and closes the connection.
    server = scripted(lambda op, rid, p: frame(op, rid, p) + frame(op, rid + 100, b"stray"))
    client = rc.Client("127.0.0.1", server.port)
    assert client.ping(b"first") == b"first"
    with pytest.raises(rc.ProtocolError, match=r"request 3 \(PING\) came with request id 102"):
        client.ping(b"second")
    assert client.closed
    client.close()


def test_failed_batch_rows_raise_input_error_naming_the_row(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops, "MAX_ROWS", 3)
    batches: list[int] = []

    def answer(op: int, rid: int, payload: bytes) -> bytes:
        if op == OPS["STATS"]:
            return stats_answer(rid, SPEC)
        n = 3 if not batches else 2  # 5 rows in batches of 3 and 2
        batches.append(n)
        status = bytes([0] * n) if len(batches) == 1 else bytes([0, STATUS["BAD_VALUE"]])
        values = np.arange(n, dtype="<f8").tobytes()
        return frame(op, rid, struct.pack("<IHH", n, 1, 0) + values + status)

    server = scripted(answer)
    data = {"card": list("abcde"), "shop": np.arange(5), "amount": np.ones(5), "hour": np.ones(5)}
    with rc.Client("127.0.0.1", server.port) as client:
        with pytest.raises(rtml.InputError, match="score_many 's': row 4 failed with BAD_VALUE"):
            client.score_many("s", data)
    assert batches == [3, 2]


def test_async_requests_are_pipelined_and_matched_in_order(
    scripted: Callable[..., Scripted], run: Callable[..., Any]
) -> None:
    held: list[bytes] = []

    def answer(op: int, rid: int, payload: bytes) -> bytes:
        held.append(frame(op, rid, payload))  # answers only once all 20 are in
        if len(held) < 20:
            return b""
        return b"".join(held)

    server = scripted(answer)

    async def main() -> list[bytes]:
        async with await rc.AsyncClient.connect("127.0.0.1", server.port) as client:
            calls = [client.ping(b"%d" % i) for i in range(20)]
            return await asyncio.wait_for(asyncio.gather(*calls), 10)

    assert run(main()) == [b"%d" % i for i in range(20)]


def test_async_requests_in_flight_stay_within_max_in_flight(
    scripted: Callable[..., Scripted], run: Callable[..., Any]
) -> None:
    server = scripted(echo, max_in_flight=4)

    async def main() -> tuple[list[bytes], int]:
        async with await rc.AsyncClient.connect("127.0.0.1", server.port) as client:
            most = 0
            calls = asyncio.gather(*(client.ping(b"%d" % i) for i in range(50)))
            while not calls.done():
                most = max(most, len(client._pending))
                await asyncio.sleep(0)
            return await calls, most

    got, most = run(main())
    assert got == [b"%d" % i for i in range(50)]
    assert 1 < most <= 4


def test_async_drop_fails_every_request_in_flight(
    scripted: Callable[..., Scripted], run: Callable[..., Any]
) -> None:
    seen: list[int] = []

    def answer(op: int, rid: int, payload: bytes) -> bytes | None:
        seen.append(rid)
        return b"" if len(seen) < 5 else None  # holds 4, then closes on the 5th

    server = scripted(answer)

    async def main() -> list[Any]:
        client = await rc.AsyncClient.connect("127.0.0.1", server.port)
        got = await asyncio.gather(*(client.ping() for _ in range(8)), return_exceptions=True)
        later = await asyncio.gather(client.ping(), return_exceptions=True)
        await client.close()
        return got + later

    got = run(main())
    assert all(isinstance(e, rc.ServerConnectionError) for e in got), got
    for e in got:  # the close shows as the peer's EOF, or as a reset or broken pipe
        assert re.search(r"connection to 127.0.0.1:\d+ (closed by the server|lost)", str(e))


def test_async_fatal_error_goes_to_its_request_and_closes_the_rest(
    scripted: Callable[..., Scripted], run: Callable[..., Any]
) -> None:
    def answer(op: int, rid: int, payload: bytes) -> bytes:
        if payload == b"bad":
            return error(op, rid, "FRAME_TOO_LARGE", "payload 99 above 98", closing=True)
        return b""  # the others wait: they are still in flight when the error comes

    server = scripted(answer)

    async def main() -> list[Any]:
        async with await rc.AsyncClient.connect("127.0.0.1", server.port) as client:
            calls = [client.ping(b"bad"), client.ping(b"a"), client.ping(b"b")]
            return await asyncio.gather(*calls, return_exceptions=True)

    first, *rest = run(main())
    assert type(first) is rc.ProtocolError and first.code == STATUS["FRAME_TOO_LARGE"]
    for e in rest:
        assert isinstance(e, rc.ServerConnectionError)
        assert "closed by the server: FRAME_TOO_LARGE" in str(e)


def test_async_cancelled_callers_leave_the_others_in_step(
    scripted: Callable[..., Scripted], run: Callable[..., Any]
) -> None:
    server = scripted(echo)

    async def main() -> list[bytes]:
        async with await rc.AsyncClient.connect("127.0.0.1", server.port) as client:
            doomed = asyncio.ensure_future(client.ping(b"cancelled"))
            others = [asyncio.ensure_future(client.ping(b"%d" % i)) for i in range(5)]
            await asyncio.sleep(0)
            doomed.cancel()
            return await asyncio.gather(*others)

    assert run(main()) == [b"%d" % i for i in range(5)]


def test_async_callers_cancelled_waiting_for_a_slot_leak_none(
    scripted: Callable[..., Scripted], run: Callable[..., Any]
) -> None:
    server = scripted(echo, max_in_flight=1)

    async def main() -> list[bytes]:
        async with await rc.AsyncClient.connect("127.0.0.1", server.port) as client:
            calls = [asyncio.ensure_future(client.ping(b"%d" % i)) for i in range(6)]
            await asyncio.sleep(0)  # the first holds the only slot; the others wait
            calls[2].cancel()
            calls[4].cancel()
            done = await asyncio.gather(*calls, return_exceptions=True)
            assert [type(d) for d in done].count(asyncio.CancelledError) == 2
            return [await client.ping(b"after %d" % i) for i in range(3)]

    assert run(main()) == [b"after 0", b"after 1", b"after 2"]


# -- a live server -------------------------------------------------------------------------

NOW = 2500.0


class Live:
    """A server over test_scorer's store and scorer, with scratch tables, a second scorer
    to swap models in, and a single-output model."""

    def __init__(self) -> None:
        self.model, self.store, inputs, _ = build()
        self.model_b, *_ = build(seed=5)
        self.scorer = rtml.Scorer(self.model, self.store, inputs, name="fraud")
        self.swappable = rtml.Scorer(self.model, self.store, inputs, name="swappable")
        rng = np.random.default_rng(3)
        X = rng.random((300, 4))
        self.regressor = rtml.Model.load(
            xgb.XGBRegressor(n_estimators=5, max_depth=3).fit(X, X[:, 0] + X[:, 1])
        )
        self.reg_scorer = rtml.Scorer(
            self.regressor, self.store, {f"f{i}": rtml.request(f"x{i}") for i in range(4)}
        )
        self.scratch = self.store.table(
            "scratch", key=int, fields={"x": "float64", "n": "int32"}, capacity=64
        )
        self.tiny = self.store.table("tiny", key=int, fields={"x": "float64"}, capacity=4)
        self.events = self.store.windows(
            "scratch_txn", key=str, value="v", ops=["count", "sum"], windows=["1h"]
        )
        self.server = Server(
            self.store,
            scorers={"fraud": self.scorer, "swappable": self.swappable, "reg": self.reg_scorer},
            models={"fraud_model": self.model, "reg": self.regressor},
            port=0,
            admin=True,
        )

    def client(self) -> rc.Client:
        return rc.Client("127.0.0.1", self.server.port)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    env = Live()
    with env.server.start_in_thread():
        yield env


@pytest.fixture
def client(live: Live) -> Iterator[rc.Client]:
    with live.client() as c:
        yield c


def test_hello_and_ping(client: rc.Client) -> None:
    info = client.server_info
    assert info["major"] == 1 and info["max_in_flight"] >= 1 and info["server"].startswith("rtml/")
    assert client.ping() == b""
    assert client.ping(b"x" * 100_000) == b"x" * 100_000


@pytest.mark.parametrize("now", [NOW, 3100.0, 1000.0 + 31 * 86400, None])
def test_scores_equal_the_in_process_scorer_exactly(
    live: Live, client: rc.Client, now: Any
) -> None:
    reqs = requests(np.random.default_rng(1), 200)
    want = np.array([live.scorer.score(r, now=now) for r in reqs])
    got = np.array([client.score("fraud", r, now=now) for r in reqs])
    np.testing.assert_array_equal(got, want)
    frame_ = pd.DataFrame(reqs)
    np.testing.assert_array_equal(client.score_many("fraud", frame_, now=now), want)
    cols = {c: frame_[c].to_numpy() for c in frame_.columns}
    np.testing.assert_array_equal(client.score_many("fraud", cols, now=now), want)


def test_a_single_output_scorer_without_keys_returns_floats(live: Live, client: rc.Client) -> None:
    X = np.random.default_rng(13).random((20, 4))
    cols = {f"x{i}": X[:, i] for i in range(4)}
    reqs = [{f"x{i}": float(v) for i, v in enumerate(row)} for row in X]
    got = [client.score("reg", r) for r in reqs]
    assert all(type(g) is float for g in got)
    assert got == [live.reg_scorer.score(r) for r in reqs]
    many = client.score_many("reg", cols)
    assert many.shape == (20,)
    np.testing.assert_array_equal(many, live.reg_scorer.score_many(cols))


def test_score_many_splits_long_batches(
    live: Live, client: rc.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops, "MAX_ROWS", 7)
    frame_ = pd.DataFrame(requests(np.random.default_rng(4), 50))
    want = live.scorer.score_many(frame_, now=NOW)
    np.testing.assert_array_equal(client.score_many("fraud", frame_, now=NOW), want)
    empty = client.score_many("fraud", frame_.iloc[:0], now=NOW)
    assert empty.shape == (0, 2)


def test_predict_returns_what_model_predict_returns(live: Live, client: rc.Client) -> None:
    X = np.random.default_rng(5).normal(size=(64, 10))
    np.testing.assert_array_equal(client.predict("fraud_model", X), live.model.predict(X))
    np.testing.assert_array_equal(
        client.predict("fraud_model", X.astype(np.float32)),
        live.model.predict(X.astype(np.float32)),
    )
    np.testing.assert_array_equal(client.predict("fraud_model", X[3]), live.model.predict(X[3]))
    R = np.random.default_rng(6).random((20, 4))
    got = client.predict("reg", R)
    assert got.shape == (20,)
    np.testing.assert_array_equal(got, live.regressor.predict(R))
    one = client.predict("reg", R[0])
    assert isinstance(one, float) and one == live.regressor.predict(R[0])


def test_get_features_returns_the_tables_batch(live: Live, client: rc.Client) -> None:
    keys = [f"c{i}" for i in range(45)]
    for now in (1010.0, 1000.0 + 31 * 86400):
        got = client.get_features("card", keys, now=now)
        want = live.store["card"].get_many(keys, now=now)
        assert isinstance(got, rtml.Batch) and got.columns == want.columns
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.found, want.found)
        np.testing.assert_allclose(got.age_seconds, want.age_seconds, atol=1e-9)
    ints = client.get_features("merchant", np.arange(25), now=1010.0)
    assert ints.found.sum() == 20


def test_put_features_stores_rows_and_counts_stale_ones(live: Live, client: rc.Client) -> None:
    assert client.put_features("scratch", [1, 2], np.array([[1.5, 3], [2.5, 4]]), ts=100.0) == 0
    assert client.put_features("scratch", [3], {"n": [7], "x": [0.25]}, ts=100.0) == 0
    frame_ = pd.DataFrame({"x": [9.0, 8.0], "n": [1, 2], "extra": ["a", "b"]})
    assert client.put_features("scratch", np.array([1, 4]), frame_, ts=[50.0, 100.0]) == 1
    assert live.scratch.get(1, now=101.0) == {"x": 1.5, "n": 3}  # the older write was stale
    assert live.scratch.get(3, now=101.0) == {"x": 0.25, "n": 7}
    assert live.scratch.get(4, now=101.0) == {"x": 8.0, "n": 2}


def test_a_full_table_raises_input_error_naming_the_row(live: Live, client: rc.Client) -> None:
    keys = list(range(live.tiny.capacity + 1))
    with pytest.raises(rtml.InputError, match=r"'tiny': row \d+ failed with TABLE_FULL") as info:
        client.put_features("tiny", keys, np.ones((len(keys), 1)), ts=100.0)
    assert info.value.status == "TABLE_FULL"


def test_ingest_adds_events_and_counts_the_dropped(live: Live, client: rc.Client) -> None:
    now = 1_000_000.0
    assert (
        client.ingest("scratch_txn", ["a", "a", "b"], [1.0, 2.0, 5.0], [now - 5, now - 4, now]) == 0
    )
    assert client.ingest("scratch_txn", "a", 10.0, now - 3) == 0
    assert client.ingest("scratch_txn", ["a"], [1.0], now - 10 * 86400) == 1
    assert live.events.get("a", now=now) == {"v_count_1h": 3.0, "v_sum_1h": 13.0}


def test_stats_describe_what_is_served(live: Live, client: rc.Client) -> None:
    client.score("fraud", requests(np.random.default_rng(7), 1)[0], now=NOW)
    doc = client.stats()
    assert {"scorers", "tables", "windows", "models", "server"} <= set(doc)
    fraud = client.stats("fraud")["scorers"]["fraud"]
    assert fraud["keys"] == live.scorer.key_names and fraud["fields"] == live.scorer.request_fields
    assert fraud["requests"] >= 1
    assert client.stats("card")["tables"]["card"]["fields"] == ["avg", "chargebacks", "age"]


def test_load_and_swap_models(live: Live, client: rc.Client, tmp_path: Any) -> None:
    reqs = pd.DataFrame(requests(np.random.default_rng(8), 40))
    before = client.score_many("swappable", reqs, now=NOW)
    version_b = client.load_model("b", data=live.model_b)
    path = tmp_path / "b.rtml"
    live.model_b.save(path)
    assert client.load_model("b_file", path=path) == version_b
    with open(path, "rb") as f:
        assert client.load_model("b_bytes", data=f.read()) == version_b
    previous = client.swap_model("swappable", "b")
    assert previous != version_b
    want_b = rtml.Scorer(live.model_b, live.store, live.swappable.inputs).score_many(reqs, now=NOW)
    np.testing.assert_array_equal(client.score_many("swappable", reqs, now=NOW), want_b)
    assert client.swap_model("swappable", "fraud_model") == version_b
    np.testing.assert_array_equal(client.score_many("swappable", reqs, now=NOW), before)
    client.swap_model("swappable", "b", role="shadow")
    assert live.swappable.versions["shadow"] == version_b


def test_server_errors_raise_the_in_process_classes(client: rc.Client) -> None:
    req = requests(np.random.default_rng(9), 1)[0]
    with pytest.raises(rtml.InputError, match="NOT_FOUND") as info:
        client.score("nope", req)
    assert info.value.status == "NOT_FOUND" and info.value.code == STATUS["NOT_FOUND"]
    with pytest.raises(rtml.InputError, match="NOT_FOUND"):
        client.predict("nope", np.zeros((1, 4)))
    with pytest.raises(rtml.InputError, match="BAD_SHAPE"):
        client.predict("reg", np.zeros((2, 3)))
    with pytest.raises(rtml.InputError, match="BAD_KEY_KIND"):
        client.score("fraud", {**req, "card_id": 5})
    with pytest.raises(rtml.InputError, match="BAD_KEY_KIND"):
        client.get_features("card", [1, 2])
    with pytest.raises(rtml.ModelFormatError, match="MODEL_ERROR"):
        client.load_model("junk", data=b"not a model")
    assert client.ping(b"after the errors") == b"after the errors"


def test_a_token_server_refuses_a_client_without_it(live: Live) -> None:
    server = Server(live.store, port=0, token="s3cret")
    with server.start_in_thread():
        with pytest.raises(rc.ProtocolError, match="UNAUTHORIZED"):
            rc.Client("127.0.0.1", server.port, token="wrong")
        with rc.Client("127.0.0.1", server.port, token="s3cret") as ok:
            assert ok.ping(b"in") == b"in"


def test_a_stopped_server_closes_its_clients(live: Live, run: Callable[..., Any]) -> None:
    server = Server(live.store, port=0, drain_timeout=0.5, idle_close=0.01)
    server.start_in_thread()
    sync = rc.Client("127.0.0.1", server.port)

    async def main() -> Any:
        client = await rc.AsyncClient.connect("127.0.0.1", server.port)
        await client.ping()
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        try:
            return await asyncio.gather(client.ping(), return_exceptions=True)
        finally:
            await client.close()

    (err,) = run(main())
    assert isinstance(err, rc.ServerConnectionError) and "127.0.0.1" in str(err)
    with pytest.raises(rc.ServerConnectionError):
        sync.ping()
    sync.close()


def test_async_many_concurrent_scores_equal_in_process(live: Live, run: Callable[..., Any]) -> None:
    reqs = requests(np.random.default_rng(10), 1000)
    want = np.array([live.scorer.score(r, now=NOW) for r in reqs])

    async def main() -> Any:
        async with await rc.AsyncClient.connect("127.0.0.1", live.server.port) as client:
            return await asyncio.gather(*(client.score("fraud", r, now=NOW) for r in reqs))

    np.testing.assert_array_equal(np.array(run(main())), want)


def test_async_every_operation_at_once(live: Live, run: Callable[..., Any]) -> None:
    frame_ = pd.DataFrame(requests(np.random.default_rng(11), 30))
    X = np.random.default_rng(12).random((10, 4))

    async def main() -> list[Any]:
        async with await rc.AsyncClient.connect("127.0.0.1", live.server.port) as client:
            return await asyncio.gather(
                client.ping(b"p"),
                client.score_many("fraud", frame_, now=NOW),
                client.predict("reg", X),
                client.get_features("card", ["c1", "c2"], now=1010.0),
                client.put_features("scratch", [500], np.array([[1.0, 2.0]]), ts=100.0),
                client.ingest("scratch_txn", ["z"], [1.0], 1_000_000.0),
                client.stats("reg"),
                client.score("nope", {}),
                return_exceptions=True,
            )

    ping, many, pred, feats, put, ingest, stats, missing = run(main())
    assert ping == b"p" and put == 0 and ingest == 0
    np.testing.assert_array_equal(many, live.scorer.score_many(frame_, now=NOW))
    np.testing.assert_array_equal(pred, live.regressor.predict(X))
    np.testing.assert_array_equal(
        feats.values, live.store["card"].get_many(["c1", "c2"], now=1010.0).values
    )
    assert stats["models"]["reg"]["num_features"] == 4
    assert isinstance(missing, rtml.InputError) and missing.status == "NOT_FOUND"
