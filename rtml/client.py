"""Clients of an rtml server: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both speak the binary protocol of docs/protocol.md through the core codec
(``rtml._core.wire``) and offer the same operations: ``ping``, ``score``,
``score_many``, ``predict``, ``get_features``, ``put_features``, ``ingest``, ``stats``,
``load_model`` and ``swap_model``. An operation is written once, as a sans-I/O generator
(``_Ops``, in ``rtml._client_ops``) that checks its arguments, encodes request frames and
decodes the answers; each client only moves bytes. Arguments are checked before anything
is sent, and an error answered by the server raises the class the same mistake raises
in-process (:class:`rtml.InputError`, :class:`rtml.ModelFormatError`), or
:class:`ServerError`, ``ProtocolError`` and :class:`ServerConnectionError` for what only
a server can do; every one names the status and carries it as ``.code`` (int) and
``.status`` (its name; the code itself on a ``ProtocolError``, as the codec defines it).

Thread-safety: a :class:`Client` serves one thread at a time (one request at a time);
give each thread its own. An :class:`AsyncClient` serves any number of coroutines of
its event loop at once, pipelining their requests on one connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from rtml._client_ops import (
    _DECODERS,
    _OK,
    _OPCODE_NAMES,
    ProtocolError,
    ServerConnectionError,
    ServerError,
    ServerTimeoutError,
    T,
    _describe,
    _Op,
    _Ops,
    _score_result,
)
from rtml._client_ops import error_for as error_for
from rtml._client_ops import status_name as status_name
from rtml._core import RtmlError, wire
from rtml.store import Batch

__all__ = [
    "DEFAULT_PORT",
    "AsyncClient",
    "Client",
    "ProtocolError",
    "ServerConnectionError",
    "ServerError",
    "ServerTimeoutError",
]

DEFAULT_PORT = 7311
"""The TCP port ``rtml serve`` listens on unless told otherwise."""

# Largest response payload a client reads: a bound on what a corrupted length makes
# it wait for, far above any answer to a request the server accepted.
_MAX_RESPONSE = 1 << 30
# Codec lookups of the blocking client's per-call path, bound once.
_HEADER = wire.HEADER_SIZE
_split_frames = wire.split_frames


class Client(_Ops):
    """A blocking connection to an rtml server: one request at a time, answered before
    the call returns.

    It connects with ``TCP_NODELAY``, says HELLO (with ``token`` when given) and keeps
    the server's limits (:attr:`server_info`). Scorer and table layouts are read once
    per name with STATS and cached. Not thread-safe: use one client per thread (or an
    :class:`AsyncClient` to have many requests in flight).

    Parameters
    ----------
    host, port
        The server's address.
    token
        The server's auth token, if it has one.
    timeout
        Seconds any one send or receive may wait (also for connecting); a request that
        times out closes the connection (:class:`ServerTimeoutError`).

    Examples
    --------
    >>> import numpy as np, xgboost as xgb, rtml
    >>> from rtml.client import Client
    >>> from rtml.server import Server
    >>> X = np.random.default_rng(0).random((200, 3))
    >>> model = rtml.Model.load(xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(X, X[:, 0]))
    >>> with Server(models={"m": model}, port=0).start_in_thread() as srv:
    ...     with Client("127.0.0.1", srv.port) as client:
    ...         client.ping(b"hi"), bool((client.predict("m", X) == model.predict(X)).all())
    (b'hi', True)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        timeout: float | None = 10.0,
    ) -> None:
        super().__init__(host, port)
        self.timeout = timeout
        self._buf = bytearray(1 << 16)  # one receive buffer, reused by every answer
        self._view = memoryview(self._buf)  # released and remade when the buffer grows
        self._extra = (0, 0)  # bytes received past the last answer: the next one's start
        self._sock: socket.socket | None = None
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise ServerTimeoutError(
                f"cannot connect to {self._where()}: no answer within {timeout} s"
            ) from None
        except OSError as e:
            raise ServerConnectionError(f"cannot connect to {self._where()}: {e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _kernel_timeouts(self._sock, timeout)
        try:
            self._run(self._hello_op(token))
        except BaseException:
            self.close()
            raise

    # -- operations ----------------------------------------------------------------------

    def ping(self, payload: bytes = b"") -> bytes:
        """Sends ``payload`` and returns the server's echo of it."""
        return bytes(self._call(*self._ping_request(payload)))

    def score(
        self, scorer: str, request: Mapping[str, Any], *, now: Any = None
    ) -> float | np.ndarray:
        """Scores one request with the server's scorer ``scorer``, as
        :meth:`rtml.Scorer.score` does in-process (same numbers, same shapes).

        ``request`` holds the scorer's keys and request fields (None: a missing value);
        a lacking or mistyped one raises :class:`rtml.InputError` before anything is
        sent. ``now`` (seconds, datetime or datetime64; default: the server's clock) is
        the time stored features and windows are read at.
        """
        spec = self._scorers.get(scorer)
        if spec is None:  # the first score of this scorer reads its layout first
            return self._run(self._score_op(scorer, request, now))
        return _score_result(self._call(*self._score_request(spec, scorer, request, now)))

    def score_many(self, scorer: str, data: Any, *, now: Any = None) -> np.ndarray:
        """Scores many requests given as a DataFrame or a dict of equal-length columns,
        as :meth:`rtml.Scorer.score_many` does. Batches longer than the server takes in
        one request are sent in parts; a row the server fails raises
        :class:`rtml.InputError` naming the row and its status."""
        return self._run(self._score_many_op(scorer, data, now))

    def predict(self, model: str, X: Any) -> float | np.ndarray:
        """Scores feature rows with the server's model ``model``, shaped as
        :meth:`rtml.Model.predict` returns them: a 2-D ``X`` gives ``(n,)`` for one output
        per row, else ``(n, k)``; a 1-D row gives a float, else a 1-D array. Columns are
        the model's features in order (a DataFrame is refused: its names cannot be
        checked over the wire)."""
        return self._run(self._predict_op(model, X))

    def get_features(self, table: str, keys: Any, *, now: Any = None) -> Batch:
        """Reads many records of the server's table ``table``: an :class:`rtml.Batch` as
        :meth:`rtml.Table.get_many` returns (``age_seconds`` is measured from ``now``, or
        from this machine's clock when ``now`` is None)."""
        return self._run(self._get_features_op(table, keys, now))

    def put_features(self, table: str, keys: Any, values: Any, *, ts: Any = None) -> int:
        """Stores many records in the server's table ``table``, as
        :meth:`rtml.Table.put_many` does; returns how many were ignored as older than
        what is stored. ``values`` is a 2-D array ``[n, fields]`` in the table's field
        order, a DataFrame or a dict of columns named by field. A row the server refuses
        (e.g. ``TABLE_FULL``) raises :class:`rtml.InputError` naming it."""
        return self._run(self._put_features_op(table, keys, values, ts))

    def ingest(self, window_set: str, keys: Any, values: Any, ts: Any = None) -> int:
        """Adds events to the server's window set ``window_set``, as
        :meth:`rtml.Windows.ingest` does; returns how many were dropped as too old."""
        return self._run(self._ingest_op(window_set, keys, values, ts))

    def stats(self, name: str = "") -> dict[str, Any]:
        """The server's metrics: ``scorers``, ``tables``, ``windows``, ``models`` and
        ``server`` sections, or only what concerns ``name``."""
        return self._run(self._stats_op(name))

    def load_model(self, name: str, *, path: Any = None, data: Any = None) -> str:
        """Loads a model into the server under ``name`` from ``path`` (a file on the
        server) or ``data`` (an :class:`rtml.Model`, or the bytes of a saved one);
        returns its version. Needs a server started with admin enabled."""
        return self._run(self._load_model_op(name, path, data))

    def swap_model(
        self, scorer: str, model: str, *, role: str = "primary", arm: str | None = None
    ) -> str:
        """Makes the loaded model ``model`` the ``role`` (``"primary"`` or ``"shadow"``)
        model of ``scorer`` (of its A/B ``arm``, when given), atomically; returns the
        version it replaced."""
        return self._run(self._swap_model_op(scorer, model, role, arm))

    # -- connection ----------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; later calls raise :class:`ServerConnectionError`."""
        if self._closed is None:
            self._closed = "closed by the client"
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _run(self, op: _Op[T]) -> T:
        try:
            step = next(op)
            while True:
                step = op.send(self._call(*step))
        except StopIteration as done:
            return done.value

    def _call(self, op: int, rid: int, frame: bytes) -> Any:
        sock = self._sock
        if self._closed is not None or sock is None:
            raise self._closed_error()
        try:
            sock.sendall(frame)
            header = self._read_frame(sock)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: see _kernel_timeouts
            self._closed = (
                f"closed: no answer within {self.timeout} s to request {rid} "
                f"({_OPCODE_NAMES.get(op)})"
            )
            self.close()
            raise ServerTimeoutError(f"{self._where()}: {self._closed}") from None
        except OSError as e:
            self._closed = f"lost: {e}"
            self.close()
            raise self._closed_error() from None
        except BaseException as e:  # a framing error, or interrupted inside a frame
            self._closed = (
                f"closed: {_describe(e)}" if isinstance(e, RtmlError) else "closed: interrupted"
            )
            self.close()
            raise
        if header[2] != _OK or header[0] != op or header[3] != rid:
            try:
                self._check(op, rid, header, self._buf)  # raises what went wrong
            except RtmlError:
                if self._closed is not None:
                    self.close()
                raise
        return _DECODERS[op](self._buf, header[4], header[5])

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, int, int, int, int]:
        """Receives one frame to the front of the receive buffer: usually with one
        ``recv_into``, which may also take bytes past it (kept for the next call)."""
        start, end = self._extra
        if end:
            end -= start
            self._buf[:end] = self._buf[start : start + end]
            self._extra = (0, 0)
        want = _HEADER  # bytes to have before the frame can be cut
        while True:
            while end < want:
                if len(self._buf) < want:
                    self._view.release()
                    self._buf.extend(bytes(want - len(self._buf)))
                    self._view = memoryview(self._buf)
                got = sock.recv_into(self._view[end:])
                if not got:
                    raise ConnectionResetError("the server closed the connection")
                end += got
            frames, _ = _split_frames(self._view[:end], _MAX_RESPONSE)
            if frames:
                header = frames[0]
                stop = header[4] + header[5]
                if end > stop:
                    self._extra = (stop, end)
                return header
            # split_frames judged the header sound; its last field is the payload length.
            want += int.from_bytes(self._buf[want - 4 : want], "little")


def _kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Makes ``sock`` blocking, its ``timeout`` kept by the kernel for each send and
    receive (SO_SNDTIMEO, SO_RCVTIMEO): a socket with a Python timeout polls before each
    of them, two more system calls per request (about 1 µs of a 15 µs round trip). A call
    that times out then raises BlockingIOError rather than TimeoutError. Sockets stay as
    they are without a positive timeout, on Windows (whose options take milliseconds) and
    where the options are refused."""
    if timeout is None or timeout <= 0 or sys.platform == "win32":
        return
    seconds = int(timeout)
    micros = int((timeout - seconds) * 1e6)
    timeval = struct.pack("@ll", seconds, micros if seconds or micros else 1)  # 0 = forever
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except OSError:
        return
    sock.settimeout(None)


class _Protocol(asyncio.BufferedProtocol):
    """An AsyncClient's connection: cuts answers out of one growing receive buffer and
    hands each, in order, to the request at the head of the client's FIFO."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._buf = bytearray(1 << 16)
        self._start = 0  # the first byte not yet cut into a frame
        self._end = 0  # the end of the bytes received

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # not TCP (a test's socket pair): nothing to tune
                pass
        self._client._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        # The transport holds no view of the buffer here, so it may move and grow.
        buf = self._buf
        want = max(sizehint, 1 << 14)
        if len(buf) - self._end < want:
            live = self._end - self._start
            buf[:live] = buf[self._start : self._end]
            self._start, self._end = 0, live
            if len(buf) - live < want:
                buf.extend(bytes(max(len(buf), want)))
        return memoryview(buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        with memoryview(self._buf) as view:
            start = self._start
            try:
                frames, used = wire.split_frames(view[start : self._end], _MAX_RESPONSE)
            except RtmlError as e:
                self._client._fail(e)
                return
            self._start += used
            for opcode, flags, status, rid, offset, length in frames:
                payload = bytes(view[start + offset : start + offset + length])
                if not self._client._deliver((opcode, flags, status, rid, 0, length), payload):
                    return

    def pause_writing(self) -> None:
        self._client._writable.clear()

    def resume_writing(self) -> None:
        self._client._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._lost(exc)


class _Slots:
    """A counting semaphore whose release hands the slot to the oldest waiter, in O(1)
    (asyncio.Semaphore's release scans all its waiters before Python 3.12: with thousands
    of callers waiting for a request slot, that was most of a pipelined request's cost)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # given a slot, then cancelled
                self.release()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # skips the cancelled
                waiter.set_result(None)
                return
        self._free += 1


class AsyncClient(_Ops):
    """An asyncio connection to an rtml server that pipelines: any number of coroutines
    may call at once, each request is written at once, and the answers (which come back
    in order) are matched to their requests. At most the server's ``max_in_flight``
    requests are outstanding; further callers wait for a slot.

    Create one with :meth:`connect`. The methods are those of :class:`Client`, as
    coroutines. If the connection drops, every request in flight fails with
    :class:`ServerConnectionError`. Use it from the event loop it was made on.

    Examples
    --------
    >>> import asyncio
    >>> from rtml.client import AsyncClient
    >>> from rtml.server import Server
    >>> async def main(port):
    ...     async with await AsyncClient.connect("127.0.0.1", port) as client:
    ...         return await asyncio.gather(*(client.ping(b"%d" % i) for i in range(3)))
    >>> with Server(port=0).start_in_thread() as srv:
    ...     asyncio.run(main(srv.port))
    [b'0', b'1', b'2']
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        super().__init__(host, port)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[tuple[asyncio.Future[bytes], int, int]] = deque()
        self._slots = _Slots(1)  # until HELLO says max_in_flight
        self._writable = asyncio.Event()
        self._writable.set()
        self._gone: asyncio.Future[None] | None = None

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        timeout: float | None = 10.0,
    ) -> AsyncClient:
        """Connects (``TCP_NODELAY``), says HELLO (with ``token`` when given) and keeps the
        server's limits; ``timeout`` bounds both steps."""
        self = cls(host, port)
        loop = asyncio.get_running_loop()
        self._gone = loop.create_future()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), host, port), timeout
            )
        except asyncio.TimeoutError:
            raise ServerTimeoutError(
                f"cannot connect to {self._where()}: no answer within {timeout} s"
            ) from None
        except OSError as e:
            raise ServerConnectionError(f"cannot connect to {self._where()}: {e}") from None
        try:
            hello = await asyncio.wait_for(self._run(self._hello_op(token)), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise ServerTimeoutError(
                f"{self._where()}: no answer to HELLO within {timeout} s"
            ) from None
        except BaseException:
            await self.close()
            raise
        self._slots = _Slots(max(1, int(hello["max_in_flight"])))
        return self

    # -- operations ----------------------------------------------------------------------

    async def ping(self, payload: bytes = b"") -> bytes:
        """:meth:`Client.ping`, as a coroutine."""
        return await self._run(self._ping_op(payload))

    async def score(
        self, scorer: str, request: Mapping[str, Any], *, now: Any = None
    ) -> float | np.ndarray:
        """:meth:`Client.score`, as a coroutine."""
        return await self._run(self._score_op(scorer, request, now))

    async def score_many(self, scorer: str, data: Any, *, now: Any = None) -> np.ndarray:
        """:meth:`Client.score_many`, as a coroutine."""
        return await self._run(self._score_many_op(scorer, data, now))

    async def predict(self, model: str, X: Any) -> float | np.ndarray:
        """:meth:`Client.predict`, as a coroutine."""
        return await self._run(self._predict_op(model, X))

    async def get_features(self, table: str, keys: Any, *, now: Any = None) -> Batch:
        """:meth:`Client.get_features`, as a coroutine."""
        return await self._run(self._get_features_op(table, keys, now))

    async def put_features(self, table: str, keys: Any, values: Any, *, ts: Any = None) -> int:
        """:meth:`Client.put_features`, as a coroutine."""
        return await self._run(self._put_features_op(table, keys, values, ts))

    async def ingest(self, window_set: str, keys: Any, values: Any, ts: Any = None) -> int:
        """:meth:`Client.ingest`, as a coroutine."""
        return await self._run(self._ingest_op(window_set, keys, values, ts))

    async def stats(self, name: str = "") -> dict[str, Any]:
        """:meth:`Client.stats`, as a coroutine."""
        return await self._run(self._stats_op(name))

    async def load_model(self, name: str, *, path: Any = None, data: Any = None) -> str:
        """:meth:`Client.load_model`, as a coroutine."""
        return await self._run(self._load_model_op(name, path, data))

    async def swap_model(
        self, scorer: str, model: str, *, role: str = "primary", arm: str | None = None
    ) -> str:
        """:meth:`Client.swap_model`, as a coroutine."""
        return await self._run(self._swap_model_op(scorer, model, role, arm))

    # -- connection ----------------------------------------------------------------------

    async def close(self) -> None:
        """Closes the connection; requests still in flight fail with
        :class:`ServerConnectionError`."""
        if self._closed is None:
            self._closed = "closed by the client"
        self._fail_pending()  # aborts the transport; connection_lost follows
        if self._transport is not None and self._gone is not None:
            await self._gone

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ------------------------------------------------------------------------

    async def _run(self, op: _Op[T]) -> T:
        try:
            step = next(op)
            while True:
                step = op.send(await self._call(*step))
        except StopIteration as done:
            return done.value

    async def _call(self, op: int, rid: int, frame: bytes) -> Any:
        if self._closed is not None:
            raise self._closed_error()
        await self._slots.acquire()
        try:
            if not self._writable.is_set():
                await self._writable.wait()
            if self._closed is not None or self._transport is None:
                raise self._closed_error()
        except BaseException:
            self._slots.release()
            raise
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # The FIFO and the socket take requests in the same order: nothing awaits between.
        self._pending.append((future, op, rid))
        self._transport.write(frame)
        payload = await future
        return _DECODERS[op](payload, 0, len(payload))

    def _deliver(self, header: tuple[int, int, int, int, int, int], payload: bytes) -> bool:
        """Hands one answer to the oldest request; False once the connection is closed."""
        if not self._pending:
            try:
                self._check(-1, -1, header, payload)  # always raises: nothing was asked
            except Exception as e:
                self._closed = self._closed or f"closed: an answer to no request: {_describe(e)}"
            self._fail_pending()
            return False
        future, op, rid = self._pending.popleft()
        self._slots.release()
        try:
            self._check(op, rid, header, payload)
        except Exception as e:
            if not future.done():
                future.set_exception(e)
            if self._closed is not None:
                self._fail_pending()
                return False
            return True
        if not future.done():
            future.set_result(payload)
        return True

    def _fail(self, error: Exception) -> None:
        """A framing error in the answers: the oldest request gets it, the rest fail."""
        self._closed = f"closed: {_describe(error)}"
        if self._pending:
            future, _, _ = self._pending.popleft()
            self._slots.release()
            if not future.done():
                future.set_exception(error)
        self._fail_pending()

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, deque()
        for future, _, _ in pending:
            self._slots.release()
            if not future.done():
                future.set_exception(self._closed_error())
        self._writable.set()  # wake writers: they see the connection closed
        if self._closed is not None and self._transport is not None:
            self._transport.abort()

    def _lost(self, exc: Exception | None) -> None:
        if self._closed is None:
            self._closed = f"lost: {exc}" if exc else "closed by the server"
        self._fail_pending()
        self._transport = None
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)
