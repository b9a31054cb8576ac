"""rtml.Client and rtml.AsyncClient: error mapping, argument checks before sending, and
the connection rules (out-of-step answers, fatal errors, timeouts, drops, pipelining and
its bound) against a scripted server."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvloop

import rtml
from rtml import client as rc
from rtml._core import wire

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


Answer = Callable[[int, int, bytes], "bytes | None"]


class Scripted:
    """A server for one connection, on a thread: it answers HELLO itself and every other
    request with ``answer(opcode, request_id, payload)``: bytes to send (b"" for nothing
    yet), or None to close the connection. ``seen`` lists the opcodes received."""

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
                    conn.sendall(out)
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
    assert set(rc._ERROR_CLASSES) == set(STATUS) - {"OK"}
    assert all(rc._ERROR_CLASSES[rc.status_name(c)] is rc.ProtocolError for c in wire.FATAL)


def test_unknown_status_codes_raise_by_range() -> None:
    assert type(rc.error_for(42, "x")) is rc.ProtocolError
    err = rc.error_for(200, "x")
    assert type(err) is rc.ServerError and err.status == "status 200" and err.code == 200


def test_connection_errors_are_builtin_and_rtml_errors() -> None:
    assert issubclass(rc.ServerConnectionError, ConnectionError)
    assert issubclass(rc.ServerConnectionError, rtml.RtmlError)
    assert issubclass(rc.ServerTimeoutError, TimeoutError)
    assert issubclass(rc.ServerTimeoutError, rc.ServerConnectionError)


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


def test_a_dropped_connection_raises_connection_error(scripted: Callable[..., Scripted]) -> None:
    server = scripted(lambda op, rid, p: None)
    client = rc.Client("127.0.0.1", server.port)
    with pytest.raises(rc.ServerConnectionError, match="lost: the server closed"):
        client.ping()
    client.close()


def test_failed_batch_rows_raise_input_error_naming_the_row(
    scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc, "MAX_ROWS", 3)
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
