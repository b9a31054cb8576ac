"""``rtml serve``: the TCP server speaking rtml's binary protocol (docs/protocol.md).

One event loop (uvloop by default) accepts connections; each connection's protocol is
the Cython class in ``rtml._wire``, which hands every read to the C++ engine: it cuts
the complete frames out, scores, reads and writes the store, and returns the responses,
written with one ``write`` per read batch. STATS, MODEL_LOAD and MODEL_SWAP (rare, and
they need Python objects) are answered here, in order with the rest.

Rules: binds 127.0.0.1 by default and refuses a non-loopback address unless a token
is set (clients then present it in HELLO); admin operations (MODEL_LOAD, MODEL_SWAP)
need ``admin=True``. On SIGTERM or SIGINT (``serve_forever``) or :meth:`Server.stop`
the server stops accepting, answers what its connections still send until each has
been quiet for ``idle_close`` seconds (at most ``drain_timeout``), then closes them.

Example
-------
>>> import numpy as np, rtml
>>> from rtml.server import Server
>>> store = rtml.FeatureStore()
>>> cards = store.table("card", key=str, fields={"limit": "float64"})
>>> with Server(store, port=0).start_in_thread() as srv:
...     with rtml.Client("127.0.0.1", srv.port) as client:
...         _ = client.put_features("card", ["c1"], np.array([[500.0]]), ts=1.7e9)
...         float(client.get_features("card", ["c1"], now=1.7e9).values[0, 0])
500.0
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from rtml import _core
from rtml._core import InputError, ModelFormatError, RtmlError, UnsupportedModelError
from rtml._wire import ConnectionCore
from rtml.client import DEFAULT_PORT
from rtml.model import Model
from rtml.scorer import Scorer
from rtml.store import FeatureStore

__all__ = ["DEFAULT_PORT", "Server"]

_wire = _core.wire
_STATUS = _wire.STATUS
_SERVER_NAME = "rtml/0.1.0"


class _Connection(ConnectionCore, asyncio.BufferedProtocol):
    """The protocol asyncio sees: ConnectionCore's C methods, asyncio's type."""


def _is_loopback(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise InputError(f"cannot resolve host {host!r}: {e}") from None
    return all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


class Server:
    """Serves scorers, models and a feature store over TCP.

    Parameters
    ----------
    store
        The feature store whose tables and window sets GET_FEATURES, PUT_FEATURES and
        INGEST reach (by name). ``None``: an empty store.
    scorers, models
        Named :class:`rtml.Scorer` objects (SCORE, SCORE_BATCH) and :class:`rtml.Model`
        objects (PREDICT). A scorer's model is also reachable by MODEL_SWAP.
    host, port
        Where to listen; port 0 picks a free port (see :attr:`port`).
    token
        Shared secret clients present in HELLO; required for a non-loopback ``host``.
    admin
        Allow MODEL_LOAD / MODEL_SWAP.
    max_in_flight
        Frames handled per read before other connections get a turn (advertised in HELLO).
    max_payload
        Largest frame payload accepted; a larger one closes its connection.
    loop
        ``"uvloop"`` (default) or ``"asyncio"``.
    """

    def __init__(
        self,
        store: FeatureStore | None = None,
        *,
        scorers: Mapping[str, Scorer] | None = None,
        models: Mapping[str, Model] | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        admin: bool = False,
        max_in_flight: int = 256,
        max_payload: int = 16 << 20,
        loop: str = "uvloop",
        drain_timeout: float = 5.0,
        idle_close: float = 0.05,
        write_buffer_high: int = 4 << 20,
    ) -> None:
        if loop not in ("uvloop", "asyncio"):
            raise InputError(f"loop must be 'uvloop' or 'asyncio', got {loop!r}")
        if not token and not _is_loopback(host):
            raise InputError(
                f"refusing to listen on non-loopback address {host!r} without a token; "
                "pass token=... (clients then send it in HELLO) or bind 127.0.0.1"
            )
        if not 0 <= port <= 65535:
            raise InputError(f"port must be in [0, 65535], got {port}")
        if not 1 <= max_in_flight <= 1 << 20:
            raise InputError(f"max_in_flight must be in [1, 2^20], got {max_in_flight}")
        if not 1024 <= max_payload <= (1 << 32) - 1:
            raise InputError(f"max_payload must be in [1024, 2^32 - 1], got {max_payload}")
        self.store = store if store is not None else FeatureStore()
        self.scorers: dict[str, Scorer] = dict(scorers or {})
        self.models: dict[str, Model] = dict(models or {})
        self.host = host
        self._port = port
        self.admin = admin
        self.loop_name = loop
        self.max_in_flight = max_in_flight
        self.max_payload = max_payload
        self.drain_timeout = drain_timeout
        self.idle_close = idle_close
        self.write_buffer_high = write_buffer_high
        self._engine = _core.Engine(token or "", admin, max_in_flight, max_payload, _SERVER_NAME)
        for name, table in self.store.tables.items():
            self._engine.set_table(
                name,
                table._core,
                list(table.fields.values()),
                int(table.max_future_seconds * 1e9),
            )
        for name, windows in self.store.window_sets.items():
            self._engine.set_windows(name, windows._core, int(windows.max_future_seconds * 1e9))
        for name, scorer in self.scorers.items():
            self._engine.set_scorer(name, scorer._core)
        for name, model in self.models.items():
            self._engine.set_model(name, model._forest)
        self._versions: dict[str, str] = {}  # model name -> version, computed once
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._on_ready: Callable[[Server], None] | None = None
        self._error: BaseException | None = None
        self._started = time.time()

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port listened on (the real one once started with port 0)."""
        return self._port

    @property
    def connections(self) -> int:
        """Open connections."""
        return len(self._connections)

    async def serve(self) -> None:
        """Listens until :meth:`stop` (or a signal in :meth:`serve_forever`), then drains."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping = asyncio.Event()
        engine_address = self._engine.address()

        def factory() -> _Connection:
            return _Connection(self, engine_address, self.max_in_flight, self.max_payload)

        try:
            self._listener = await loop.create_server(
                factory, self.host, self._port, reuse_address=True, backlog=1024
            )
        except OSError as e:
            raise RtmlError(f"cannot listen on {self.host}:{self._port}: {e.strerror}") from None
        self._port = self._listener.sockets[0].getsockname()[1]
        self._started = time.time()
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(self)
        await self._stopping.wait()
        await self._drain()

    def serve_forever(self, on_ready: Callable[[Server], None] | None = None) -> None:
        """Runs the server in this thread until SIGTERM / SIGINT, then drains and returns.

        ``on_ready(server)`` is called once the port is bound (e.g. to print it).
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._request_stop)
            if on_ready is not None:
                self._on_ready = on_ready
            await self.serve()

        self._run(main())

    def start_in_thread(self) -> Server:
        """Starts serving on a background thread; returns once the port is bound.

        Use as a context manager (``with server.start_in_thread() as srv:``) or call
        :meth:`stop`.
        """
        if self._thread is not None:
            raise RtmlError("this server is already running")
        self._ready.clear()

        def run() -> None:
            try:
                self._run(self.serve())
            except BaseException as e:
                self._error = e
                self._ready.set()

        self._thread = threading.Thread(target=run, name=f"rtml-server-{self._port}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stops accepting, drains the connections and waits for the server to finish."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Any) -> None:
        if self.loop_name == "uvloop":
            import uvloop

            uvloop.run(coro)
        else:
            asyncio.run(coro)

    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _drain(self) -> None:
        assert self._loop is not None and self._listener is not None
        loop = self._loop
        self._listener.close()
        deadline = loop.time() + self.drain_timeout
        while self._connections and loop.time() < deadline:
            now = loop.time()
            for conn in list(self._connections):
                if now - conn.last_activity >= self.idle_close and conn.transport is not None:
                    conn.transport.close()
            await asyncio.sleep(min(0.01, self.idle_close))
        self._engine.begin_drain()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        while self._connections and loop.time() < deadline + 1.0:
            await asyncio.sleep(0.01)
        await self._listener.wait_closed()

    # -- called by the protocol -----------------------------------------------------------

    def _connection_made(self, conn: _Connection) -> None:
        conn.transport.set_write_buffer_limits(high=self.write_buffer_high)
        self._connections.add(conn)

    def _connection_lost(self, conn: _Connection) -> None:
        self._connections.discard(conn)

    def _deferred(self, opcode: int, request_id: int, payload: bytes) -> bytes:
        """Answers STATS, MODEL_LOAD and MODEL_SWAP; never raises (errors become frames)."""
        ops = _wire.OPCODES
        try:
            if opcode == ops["STATS"]:
                name = _wire.decode_stats_request(payload)
                return _wire.encode_stats_response(
                    request_id,
                    orjson.dumps(
                        self.stats(name),
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                    ),
                )
            if opcode == ops["MODEL_LOAD"]:
                name, path, data = _wire.decode_model_load_request(payload)
                return _wire.encode_model_load_response(
                    request_id, self.load_model(name, path=path, data=data)
                )
            if opcode == ops["MODEL_SWAP"]:
                scorer, model, role, arm = _wire.decode_model_swap_request(payload)
                return _wire.encode_model_swap_response(
                    request_id, self.swap_model(scorer, model, role=role, arm=arm or None)
                )
            return _wire.encode_error(opcode, request_id, _STATUS["INTERNAL"], "not deferred")
        except Exception as e:
            return _wire.encode_error(opcode, request_id, _status_of(e), f"{type(e).__name__}: {e}")

    # -- operations answered in Python --------------------------------------------------

    def stats(self, name: str = "") -> dict[str, Any]:
        """The STATS document: scorers, tables, window sets, models and the server.

        ``name`` restricts it to the scorer, table, window set or model of that name;
        an unknown name raises ``InputError``.
        """
        out: dict[str, Any] = {"scorers": {}, "tables": {}, "windows": {}, "models": {}}
        for n, scorer in self.scorers.items():
            if name in ("", n):
                out["scorers"][n] = {
                    **scorer.stats(),
                    "keys": list(scorer.key_names),
                    "fields": list(scorer.request_fields),
                    "n_outputs": scorer._arms_py[0][1].num_outputs,
                }
        for n, table in self.store.tables.items():
            if name in ("", n):
                out["tables"][n] = {
                    "key": "str" if table.key_type is str else "int",
                    "fields": list(table.columns),
                    "dtypes": list(table.fields.values()),
                    "size": len(table),
                    "capacity": table.capacity,
                }
        for n, windows in self.store.window_sets.items():
            if name in ("", n):
                out["windows"][n] = {
                    "key": "str" if windows.key_type is str else "int",
                    "columns": list(windows.columns),
                    **windows.stats(),
                }
        for n, model in self.models.items():
            if name in ("", n):
                if n not in self._versions:
                    self._versions[n] = _model_version(model)
                out["models"][n] = {
                    "version": self._versions[n],
                    "num_features": model.num_features,
                    "num_outputs": model.num_outputs,
                }
        if name and not any(out[k] for k in out):
            raise InputError(f"no scorer, table, window set or model named {name!r}")
        counters = self._engine.counters()
        out["server"] = {
            "version": _SERVER_NAME,
            "uptime_s": time.time() - self._started,
            "connections": len(self._connections),
            **counters,
        }
        return out

    def load_model(self, name: str, *, path: str | None = None, data: bytes | None = None) -> str:
        """Loads a model under ``name`` (for PREDICT and MODEL_SWAP); returns its version."""
        if (path is None) == (data is None):
            raise InputError("load_model needs exactly one of path= and data=")
        # Inline bytes are an rtml compiled model file (docs/protocol.md, MODEL_LOAD).
        model = (
            Model.load(path)
            if path is not None
            else Model(_core.Forest.from_bytes(bytes(data or b"")))
        )
        self._engine.set_model(name, model._forest)
        self.models[name] = model
        self._versions[name] = _model_version(model)
        return self._versions[name]

    def swap_model(self, scorer: str, model: str, *, role: int = 0, arm: str | None = None) -> str:
        """Puts loaded model ``model`` into scorer ``scorer`` (role 0 primary / an arm,
        1 shadow); returns the version it replaced."""
        if scorer not in self.scorers:
            raise InputError(f"no scorer named {scorer!r}; scorers are {sorted(self.scorers)}")
        if model not in self.models:
            raise InputError(f"no model named {model!r}; loaded models are {sorted(self.models)}")
        s = self.scorers[scorer]
        versions = s.versions
        new = self.models[model]
        if role == 0:
            target = arm if arm is not None else versions["arms"][0][0]
            previous = next((v for n, v, _ in versions["arms"] if n == target), "")
            s.swap_model(new, version=_model_version(new), arm=arm)
        elif role == 1:
            previous = versions.get("shadow") or ""
            s.set_shadow(new, version=_model_version(new))
        else:
            raise InputError(f"role must be 0 (primary) or 1 (shadow), got {role}")
        return str(previous)


def _model_version(model: Model) -> str:
    """The model's declared version, else a content id (BLAKE2b of its compiled bytes)."""
    declared = model._meta.get("version")
    if declared:
        return str(declared)
    return "b2:" + hashlib.blake2b(model._forest.to_bytes(), digest_size=8).hexdigest()


def _status_of(e: BaseException) -> int:
    if isinstance(e, (ModelFormatError, UnsupportedModelError)):
        return int(_STATUS["MODEL_ERROR"])
    if isinstance(e, _wire.ProtocolError):
        return int(e.args[0])
    if isinstance(e, InputError):
        msg = str(e)
        return int(_STATUS["NOT_FOUND"] if msg.startswith("no ") else _STATUS["BAD_VALUE"])
    return int(_STATUS["INTERNAL"])
