"""Clients of an rtml server: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both speak the binary protocol of docs/protocol.md through the core codec
(``rtml._core.wire``) and offer the same operations: ``ping``, ``score``,
``score_many``, ``predict``, ``get_features``, ``put_features``, ``ingest``, ``stats``,
``load_model`` and ``swap_model``. An operation is written once, as a sans-I/O generator
(``_Ops``) that checks its arguments, encodes request frames and decodes the answers;
each client only moves bytes. Arguments are checked before anything is sent, and an
error answered by the server raises the class the same mistake raises in-process
(:class:`rtml.InputError`, :class:`rtml.ModelFormatError`), or :class:`ServerError`,
``ProtocolError`` and :class:`ServerConnectionError` for what only a server can do;
every one names the status and carries it as ``.code`` (int) and ``.status`` (its name;
the code itself on a ``ProtocolError``, as the codec defines it).

Thread-safety: a :class:`Client` serves one thread at a time (one request at a time);
give each thread its own. An :class:`AsyncClient` serves any number of coroutines of
its event loop at once, pipelining their requests on one connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from rtml._core import InputError, ModelFormatError, RtmlError, wire
from rtml.model import Model
from rtml.store import Batch, _times_ns, to_ns

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

ProtocolError = wire.ProtocolError


class ServerError(RtmlError):
    """The server could not serve a well-formed request: it sheds load (``OVERLOADED``),
    is draining (``SHUTTING_DOWN``) or hit a bug (``INTERNAL``). ``.status`` and ``.code``
    say which."""

    status: str
    code: int


class ServerConnectionError(RtmlError, ConnectionError):
    """The connection to the server could not be made, broke, or was closed (by the
    server after a fatal error, or by :meth:`Client.close`); the message names
    ``host:port`` and why. Requests in flight on it fail with this error."""


class ServerTimeoutError(ServerConnectionError, TimeoutError):
    """The server did not answer in time; the connection is closed, since a late answer
    would be out of step with the next request."""


# What each status raises: request-range codes are the caller's mistakes and raise
# what the same mistake raises in-process. Names come from the codec's STATUS table,
# whose completeness against this table is tested.
_ERROR_CLASSES: dict[str, type[Exception]] = {
    "BAD_MAGIC": ProtocolError,
    "UNSUPPORTED_VERSION": ProtocolError,
    "FRAME_TOO_LARGE": ProtocolError,
    "UNKNOWN_OPCODE": ProtocolError,
    "BAD_FLAGS": ProtocolError,
    "MALFORMED": ProtocolError,
    "STRING_TOO_LONG": ProtocolError,
    "TOO_MANY": ProtocolError,
    "UNAUTHORIZED": ProtocolError,
    "NOT_FOUND": InputError,
    "BAD_SHAPE": InputError,
    "BAD_DTYPE": InputError,
    "BAD_KEY_KIND": InputError,
    "BAD_VALUE": InputError,
    "UNSUPPORTED": InputError,
    "MODEL_ERROR": ModelFormatError,
    "TABLE_FULL": InputError,
    "OVERLOADED": ServerError,
    "SHUTTING_DOWN": ServerError,
    "INTERNAL": ServerError,
}

_STATUS_NAMES: dict[int, str] = {code: name for name, code in wire.STATUS.items()}
_OK = wire.STATUS["OK"]
_MALFORMED = wire.STATUS["MALFORMED"]
_OP = wire.OPCODES
_OPCODE_NAMES: dict[int, str] = {code: name for name, code in wire.OPCODES.items()}
_ROLES = ("primary", "shadow")  # MODEL_SWAP's role byte is the index

# Rows (keys, events) per batch request the server takes; longer batches are split.
MAX_ROWS = 65536
# Largest response payload a client reads: a bound on what a corrupted length makes
# it wait for, far above any answer to a request the server accepted.
_MAX_RESPONSE = 1 << 30
# Whether this build's SCORE encoders can ask for scores "as of" a time.
_SCORE_HAS_NOW = "now_ns" in (getattr(wire.encode_score, "__doc__", None) or "")

T = TypeVar("T")
# A request ready to send: its opcode, its request id, and the whole frame. An operation
# yields these and is sent back each answer decoded (by _DECODERS).
_Step = tuple[int, int, bytes]
_Op = Generator[_Step, Any, T]
# Each OK answer's decoder by opcode: decode_<name> (HELLO's is decode_hello_response).
_DECODERS: dict[int, Callable[[Any, int, int], Any]] = {
    code: getattr(wire, "decode_hello_response" if name == "HELLO" else f"decode_{name.lower()}")
    for name, code in wire.OPCODES.items()
}


def status_name(code: int) -> str:
    """The protocol's name of a status code (``"status N"`` for a code this client does
    not know, from a newer server).

    Examples
    --------
    >>> status_name(64), status_name(999)
    ('NOT_FOUND', 'status 999')
    """
    return _STATUS_NAMES.get(code, f"status {code}")


def error_for(code: int, message: str) -> Exception:
    """The exception a response with status ``code`` and error ``message`` raises: its
    class per status (one table for both clients), its text ``"NAME: message"``, ``.code``
    the code and ``.status`` the name (a ``ProtocolError`` keeps the codec's ``.status``,
    the code). Unknown codes raise by range: 1-63 ``ProtocolError``, else
    :class:`ServerError`.

    Examples
    --------
    >>> e = error_for(64, "no scorer 'fraud'")
    >>> type(e).__name__, e.status, e.code, str(e)
    ('InputError', 'NOT_FOUND', 64, "NOT_FOUND: no scorer 'fraud'")
    """
    name = status_name(code)
    cls = _ERROR_CLASSES.get(name) or (ProtocolError if 0 < code < 64 else ServerError)
    text = f"{name}: {message}"
    err = cls(code, text) if cls is ProtocolError else cls(text)
    for attr, value in (("status", name), ("code", code)):
        try:
            setattr(err, attr, value)
        except AttributeError:  # a class that keeps them as read-only properties
            pass
    return err


def _describe(err: BaseException) -> str:
    """An error's text: "NAME: message" for a ProtocolError (whose args are the code and
    the message), str(err) for the others."""
    if isinstance(err, ProtocolError) and len(err.args) == 2:
        code, message = err.args
        name = status_name(int(code))
        return str(message) if str(message).startswith(name) else f"{name}: {message}"
    return str(err)


def _row_error(what: str, row: int, code: int) -> InputError:
    """A failed row of a batch: the rows fail for their data, as in-process."""
    name = status_name(code)
    err = InputError(f"{what}: row {row} failed with {name}")
    err.status, err.code = name, code  # type: ignore[attr-defined]
    return err


@dataclass(frozen=True)
class _ScorerSpec:
    """A scorer's request layout (from STATS): key and field names in wire order."""

    keys: tuple[str, ...]
    fields: tuple[str, ...]
    n_outputs: int

    def row(self, request: Mapping[str, Any]) -> tuple[list[Any], np.ndarray]:
        """The keys and the float64 field vector of one request, checked as in-process."""
        keys: list[Any] = []
        for name in self.keys:
            if name not in request:
                raise InputError(f"request lacks the key '{name}'")
            keys.append(_key(request[name], f"request key '{name}'"))
        fields = np.empty(len(self.fields), dtype=np.float64)
        for i, name in enumerate(self.fields):
            if name not in request:
                raise InputError(
                    f"request lacks the field '{name}' (pass None for a missing value)"
                )
            fields[i] = _number(request[name], f"request field '{name}'")
        return keys, fields


def _key(value: Any, what: str) -> Any:
    if type(value) is str or type(value) is int:
        return value
    if isinstance(value, str):  # numpy's str_ too
        return str(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    raise InputError(f"{what}: expected a str or an int64, got {value!r}")


def _number(value: Any, what: str) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, (str, bytes)):
        raise InputError(f"{what}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected a number, got {value!r}") from None


def _keys(keys: Any, what: str) -> list[Any]:
    """A batch's keys as the list the encoders take (str and int items)."""
    if isinstance(keys, np.ndarray):
        if keys.ndim != 1:
            raise InputError(f"{what}: keys must be 1-D, got shape {keys.shape}")
        return keys.tolist()
    if hasattr(keys, "to_numpy"):  # a pandas Series or Index
        return _keys(keys.to_numpy(), what)
    if isinstance(keys, (str, bytes)) or not hasattr(keys, "__iter__"):
        raise InputError(f"{what}: keys must be a sequence of keys, got {keys!r}")
    return keys if type(keys) is list else list(keys)


def _columns(data: Any, names: tuple[str, ...], what: str) -> dict[str, Any]:
    """The named columns of a DataFrame or a dict of columns, all of one length."""
    cols = data if isinstance(data, Mapping) else {c: data[c] for c in data.columns}
    missing = [c for c in names if c not in cols]
    if missing:
        raise InputError(f"{what}: the data lacks column(s) {missing}")
    out = {c: cols[c].to_numpy() if hasattr(cols[c], "to_numpy") else cols[c] for c in names}
    lengths = {c: len(v) for c, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"{what}: columns differ in length: {lengths}")
    return out


def _float_matrix(columns: list[Any], n: int, what: str) -> np.ndarray:
    if not columns:
        return np.empty((n, 0), dtype=np.float64)
    try:
        return np.ascontiguousarray(
            np.column_stack([np.asarray(c, dtype=np.float64).reshape(-1) for c in columns])
        )
    except (TypeError, ValueError):
        raise InputError(f"{what}: values must be numbers") from None


class _Ops:
    """The operations, shared by both clients: each is a generator that yields the
    requests it needs, one at a time, and is sent back each answer decoded; the client
    that moves the bytes raises what an answer says went wrong (see ``_check``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._next_id = 0
        self._max_payload = wire.DEFAULT_MAX_PAYLOAD
        self._hello: dict[str, Any] = {}
        self._scorers: dict[str, _ScorerSpec] = {}
        self._tables: dict[str, tuple[str, ...]] = {}
        self._closed: str | None = None  # why the connection is unusable

    @property
    def server_info(self) -> dict[str, Any]:
        """The server's HELLO: ``major``, ``minor``, ``max_payload``, ``max_in_flight``
        and ``server`` (its name and version)."""
        return dict(self._hello)

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by :meth:`close`, the server or an error)."""
        return self._closed is not None

    def __repr__(self) -> str:
        state = f"closed: {self._closed}" if self._closed else self._hello.get("server", "")
        return f"{type(self).__name__}('{self.host}:{self.port}', {state})"

    # -- plumbing ------------------------------------------------------------------------

    def _rid(self) -> int:
        self._next_id += 1
        return self._next_id

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _closed_error(self) -> ServerConnectionError:
        return ServerConnectionError(f"connection to {self._where()} {self._closed}")

    def _fits(self, frame: bytes, what: str) -> bytes:
        size = len(frame) - wire.HEADER_SIZE
        if size > self._max_payload:
            raise InputError(
                f"{what}: the request takes {size} bytes, above the server's max_payload "
                f"{self._max_payload}; nothing was sent"
            )
        return frame

    def _chunks(
        self, n: int, encode: Callable[[int, int, int], bytes], what: str
    ) -> Iterator[tuple[int, int, int, bytes]]:
        """(start, stop, request id, frame) of the batch requests for rows [0, n): at most
        MAX_ROWS rows and the server's max_payload each; none for zero rows."""
        step = max(1, min(n, MAX_ROWS))
        start = 0
        while start < n:
            stop = min(n, start + step)
            rid = self._rid()
            frame = encode(rid, start, stop)
            while len(frame) - wire.HEADER_SIZE > self._max_payload and stop - start > 1:
                step = max(1, (stop - start) // 2)
                stop = start + step
                frame = encode(rid, start, stop)
            yield start, stop, rid, self._fits(frame, f"{what}, row {start}")
            start = stop

    def _event_chunks(
        self,
        encode: Callable[..., bytes],
        target: str,
        keys: list[Any],
        values: np.ndarray,
        event_ns: np.ndarray,
    ) -> Iterator[tuple[int, int, int, bytes]]:
        """The batch requests of rows (key, values, event time): PUT_FEATURES, INGEST."""
        return self._chunks(
            len(keys),
            lambda rid, a, b: encode(rid, target, keys[a:b], values[a:b], event_ns[a:b]),
            f"{encode.__name__[7:]} '{target}'",
        )

    def _check(
        self,
        op: int,
        rid: int,
        frame: tuple[int, int, int, int, int, int],
        buf: Any,
    ) -> None:
        """Raises what a response says went wrong, after marking the connection closed
        when the error is fatal, the server closes, or the answer is out of step."""
        opcode, flags, status, got_rid, offset, length = frame
        in_step = (opcode == op and got_rid == rid) or (status != _OK and opcode == 0)
        if status == _OK and in_step:
            return
        if not in_step:
            err: Exception = ProtocolError(
                _MALFORMED,
                f"MALFORMED: the answer to request {rid} ({_OPCODE_NAMES.get(op)}) came with "
                f"request id {got_rid} and opcode {opcode}: the responses are out of step",
            )
        else:
            try:
                message = wire.decode_error(buf, offset, length)
            except Exception:
                message = f"(an unreadable error message of {length} bytes)"
            err = error_for(status, message)
        if not in_step or status in wire.FATAL or flags & wire.FLAG_CLOSING:
            text = _describe(err)
            self._closed = f"closed by the server: {text}" if in_step else f"closed: {text}"
        raise err

    # -- operations ----------------------------------------------------------------------

    def _hello_op(self, token: str | None) -> _Op[dict[str, Any]]:
        rid = self._rid()
        hello = dict((yield _OP["HELLO"], rid, wire.encode_hello(rid, token or "")))
        self._hello = hello
        self._max_payload = int(hello["max_payload"]) or self._max_payload
        return hello

    def _ping_op(self, payload: bytes) -> _Op[bytes]:
        rid = self._rid()
        frame = self._fits(wire.encode_ping(rid, bytes(payload)), "ping")
        return bytes((yield _OP["PING"], rid, frame))

    def _stats_op(self, name: str) -> _Op[dict[str, Any]]:
        rid = self._rid()
        return orjson.loads((yield _OP["STATS"], rid, wire.encode_stats(rid, name)))

    def _section(self, section: str, name: str, what: str) -> _Op[dict[str, Any]]:
        doc = yield from self._stats_op(name)
        entry = doc.get(section, {}).get(name)
        if entry is None:
            raise error_for(wire.STATUS["NOT_FOUND"], f"no {what} '{name}' on {self._where()}")
        return entry

    def _scorer_spec(self, scorer: str) -> _Op[_ScorerSpec]:
        spec = self._scorers.get(scorer)
        if spec is None:
            entry = yield from self._section("scorers", scorer, "scorer")
            spec = _ScorerSpec(
                tuple(entry["keys"]), tuple(entry["fields"]), int(entry["n_outputs"])
            )
            self._scorers[scorer] = spec
        return spec

    def _table_fields(self, table: str) -> _Op[tuple[str, ...]]:
        fields = self._tables.get(table)
        if fields is None:
            entry = yield from self._section("tables", table, "table")
            fields = self._tables[table] = tuple(entry["fields"])
        return fields

    def _score_op(self, scorer: str, request: Mapping[str, Any], now: Any) -> _Op[Any]:
        spec = self._scorers.get(scorer)
        if spec is None:
            spec = yield from self._scorer_spec(scorer)
        keys, fields = spec.row(request)
        rid = self._rid()
        if now is None:
            frame = wire.encode_score(rid, scorer, keys, fields)
        else:
            frame = wire.encode_score(rid, scorer, keys, fields, now_ns=_now_ns(now))
        out = yield _OP["SCORE"], rid, self._fits(frame, "score")
        return float(out[0]) if len(out) == 1 else out

    def _score_many_op(self, scorer: str, data: Any, now: Any) -> _Op[np.ndarray]:
        spec = yield from self._scorer_spec(scorer)
        what = f"score_many '{scorer}'"
        cols = _columns(data, spec.keys + spec.fields, what)
        keys = [_key_column(cols[k]) for k in spec.keys]
        n = len(next(iter(cols.values()))) if cols else 0
        fields = _float_matrix([cols[f] for f in spec.fields], n, what)
        extra = {} if now is None else {"now_ns": _now_ns(now)}

        def encode(rid: int, a: int, b: int) -> bytes:
            return wire.encode_score_batch(
                rid, scorer, [k[a:b] for k in keys], fields[a:b], **extra
            )

        parts = []
        for start, _, rid, frame in self._chunks(n, encode, what):
            values, status = yield _OP["SCORE_BATCH"], rid, frame
            failed = np.flatnonzero(status)
            if failed.size:
                row = int(failed[0])
                raise _row_error(what, start + row, int(status[row]))
            parts.append(values)
        out = _stack(parts, spec.n_outputs)
        return out.reshape(-1) if out.shape[1] == 1 else out

    def _predict_op(self, model: str, X: Any) -> _Op[Any]:
        if hasattr(X, "columns"):
            raise InputError(
                f"predict '{model}': pass a numpy array in the model's feature order "
                "(a DataFrame's column names cannot be checked over the wire)"
            )
        arr = np.asarray(X)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"predict '{model}': X has dtype {arr.dtype}, expected numbers")
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (4, 8):
            arr = arr.astype(np.float64)
        one_row = arr.ndim == 1
        if one_row:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise InputError(f"predict '{model}': X must be 1-D (one row) or 2-D, got {arr.ndim}-D")
        arr = np.ascontiguousarray(arr)
        parts = []
        for _, _, rid, frame in self._chunks(
            len(arr),
            lambda rid, a, b: wire.encode_predict(rid, model, arr[a:b]),
            f"predict '{model}'",
        ):
            parts.append((yield _OP["PREDICT"], rid, frame))
        if not parts:  # no rows: the width is the model's
            entry = yield from self._section("models", model, "model")
        out = _stack(parts, int(entry["num_outputs"]) if not parts else 0)
        if out.shape[1] == 1:  # shapes as Model.predict returns them
            out = out.reshape(-1)
            return float(out[0]) if one_row else out
        return out[0] if one_row else out

    def _get_features_op(self, table: str, keys: Any, now: Any) -> _Op[Batch]:
        columns = yield from self._table_fields(table)
        what = f"get_features '{table}'"
        key_list = _keys(keys, what)
        now_ns = 0 if now is None else _now_ns(now)
        values, found, event_ns = [], [], []
        for _, _, rid, frame in self._chunks(
            len(key_list),
            lambda rid, a, b: wire.encode_get_features(rid, table, key_list[a:b], now_ns),
            what,
        ):
            v, f, e = yield _OP["GET_FEATURES"], rid, frame
            values.append(v)
            found.append(f)
            event_ns.append(e)
        at = now_ns or time.time_ns()
        hit = np.concatenate([np.empty(0, bool), *found]).astype(bool)
        age = np.where(hit, (at - np.concatenate([np.empty(0, np.int64), *event_ns])) / 1e9, np.nan)
        matrix = _stack(values, len(columns)).astype(np.float32)
        return Batch(matrix, hit, age, list(columns))

    def _put_features_op(self, table: str, keys: Any, values: Any, ts: Any) -> _Op[int]:
        fields = yield from self._table_fields(table)
        what = f"put_features '{table}'"
        key_list = _keys(keys, what)
        n = len(key_list)
        matrix = _put_matrix(values, fields, n, what)
        event_ns = _times_ns(ts, n)
        stale = 0
        chunks = self._event_chunks(wire.encode_put_features, table, key_list, matrix, event_ns)
        for start, _, rid, frame in chunks:
            status = yield _OP["PUT_FEATURES"], rid, frame
            failed = np.flatnonzero(status > 1)
            if failed.size:
                row = int(failed[0])
                raise _row_error(what, start + row, int(status[row]))
            stale += int(np.count_nonzero(status == 1))
        return stale

    def _ingest_op(self, window_set: str, keys: Any, values: Any, ts: Any) -> _Op[int]:
        what = f"ingest '{window_set}'"
        if isinstance(keys, (str, int, np.integer)):
            keys, values = [keys], [values]
        key_list = _keys(keys, what)
        n = len(key_list)
        vals = _float_matrix([values], n, what).reshape(-1)
        if vals.shape != (n,):
            raise InputError(f"{what}: {n} keys but {vals.size} values; expected one per key")
        event_ns = _times_ns(ts, n)
        dropped = 0
        for _, _, rid, frame in self._event_chunks(
            wire.encode_ingest, window_set, key_list, vals, event_ns
        ):
            _, late = yield _OP["INGEST"], rid, frame
            dropped += int(late)
        return dropped

    def _load_model_op(self, name: str, path: Any, data: Any) -> _Op[str]:
        if (path is None) == (data is None):
            raise InputError(
                f"load_model '{name}': give exactly one of path= (a file on the server) "
                "or data= (an rtml.Model or the bytes of a saved one)"
            )
        if isinstance(data, Model):
            data = data._forest.to_bytes()
        elif data is not None:
            data = bytes(data)
        rid = self._rid()
        frame = wire.encode_model_load(
            rid, name, path=None if path is None else os.fspath(path), data=data
        )
        frame = self._fits(frame, f"load_model '{name}'")
        return str((yield _OP["MODEL_LOAD"], rid, frame))

    def _swap_model_op(self, scorer: str, model: str, role: str, arm: str | None) -> _Op[str]:
        if role not in _ROLES:
            raise InputError(f"swap_model: role must be one of {list(_ROLES)}, got {role!r}")
        rid = self._rid()
        frame = wire.encode_model_swap(rid, scorer, model, _ROLES.index(role), arm or "")
        return str((yield _OP["MODEL_SWAP"], rid, frame))


def _now_ns(now: Any) -> int:
    if not _SCORE_HAS_NOW:
        raise RtmlError(
            "now=: this build's wire codec cannot ask for scores as of a time (its "
            "encode_score takes no now_ns); leave now=None to score at the server's clock"
        )
    return to_ns(now, what="now")


def _stack(parts: list[np.ndarray], width: int) -> np.ndarray:
    """The row blocks of a batch's answers as one [n, width] array (width: for no rows)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty((0, width), dtype=np.float64)


def _key_column(col: Any) -> Any:
    arr = np.asarray(col)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    return arr.tolist() if isinstance(col, np.ndarray) else list(col)


def _put_matrix(values: Any, fields: tuple[str, ...], n: int, what: str) -> np.ndarray:
    """Rows of field values in the table's field order, float64 [n, fields]."""
    if isinstance(values, Mapping):
        unknown = [k for k in values if k not in fields]
        if unknown:
            raise InputError(f"{what}: unknown field(s) {unknown}; fields are {list(fields)}")
    if isinstance(values, Mapping) or hasattr(values, "columns"):
        cols = _columns(values, fields, what)
        rows = len(cols[fields[0]])
        if rows != n:
            raise InputError(f"{what}: {n} keys but {rows} rows of values")
        return _float_matrix([cols[f] for f in fields], n, what)
    try:
        m = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: values must be numbers (fields {list(fields)})") from None
    if m.shape != (n, len(fields)):
        raise InputError(
            f"{what}: values have shape {m.shape}, expected ({n}, {len(fields)}) "
            f"(fields {list(fields)})"
        )
    return np.ascontiguousarray(m)


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
        try:
            self._run(self._hello_op(token))
        except BaseException:
            self.close()
            raise

    # -- operations ----------------------------------------------------------------------

    def ping(self, payload: bytes = b"") -> bytes:
        """Sends ``payload`` and returns the server's echo of it."""
        return self._run(self._ping_op(payload))

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
        return self._run(self._score_op(scorer, request, now))

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
        except TimeoutError:
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
        try:
            self._check(op, rid, header, self._buf)
        except RtmlError:
            if self._closed is not None:
                self.close()
            raise
        return _DECODERS[op](self._buf, header[4], header[5])

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, int, int, int, int]:
        """Reads exactly one frame into the receive buffer: the header, then its payload."""
        size = wire.HEADER_SIZE
        self._recv_into(sock, 0, size)
        frames = self._split(size)
        if not frames:
            # split_frames judged the header sound; its last field is the payload length.
            size += int.from_bytes(self._buf[size - 4 : size], "little")
            self._recv_into(sock, wire.HEADER_SIZE, size)
            frames = self._split(size)
        return frames[0]

    def _split(self, end: int) -> list[tuple[int, int, int, int, int, int]]:
        with memoryview(self._buf) as view:
            frames, _ = wire.split_frames(view[:end], _MAX_RESPONSE)
        return frames

    def _recv_into(self, sock: socket.socket, start: int, end: int) -> None:
        if len(self._buf) < end:
            self._buf.extend(bytes(end - len(self._buf)))
        with memoryview(self._buf) as view:
            while start < end:
                got = sock.recv_into(view[start:end])
                if not got:
                    raise ConnectionResetError("the server closed the connection")
                start += got


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
