"""The operations of rtml's clients, shared by :class:`rtml.Client` and
:class:`rtml.AsyncClient` (in :mod:`rtml.client`, which is where to import them from).

Each operation is written once, as a sans-I/O generator (methods of ``_Ops``): it checks
its arguments, encodes request frames with the core codec (``rtml._core.wire``), yields
them one at a time and is sent back each answer decoded; a client only moves bytes. The
table of what each error status raises (``_ERROR_CLASSES``, :func:`error_for`) lives
here too, with the client exceptions it names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from rtml._core import InputError, ModelFormatError, RtmlError, wire
from rtml.model import Model
from rtml.store import Batch, _times_ns, to_ns

ProtocolError = wire.ProtocolError


class ServerError(RtmlError):
    """The server could not serve a well-formed request: it sheds load (``OVERLOADED``),
    is draining (``SHUTTING_DOWN``) or hit a bug (``INTERNAL``). ``.status`` and ``.code``
    say which."""

    __module__ = "rtml.client"  # where it is imported from (and named in tracebacks)

    status: str
    code: int


class ServerConnectionError(RtmlError, ConnectionError):
    """The connection to the server could not be made, broke, or was closed (by the
    server after a fatal error, or by :meth:`Client.close`); the message names
    ``host:port`` and why. Requests in flight on it fail with this error."""

    __module__ = "rtml.client"


class ServerTimeoutError(ServerConnectionError, TimeoutError):
    """The server did not answer in time; the connection is closed, since a late answer
    would be out of step with the next request."""

    __module__ = "rtml.client"


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
_PING, _SCORE = _OP["PING"], _OP["SCORE"]
_OPCODE_NAMES: dict[int, str] = {code: name for name, code in wire.OPCODES.items()}
_ROLES = ("primary", "shadow")  # MODEL_SWAP's role byte is the index

# Rows (keys, events) per batch request the server takes; longer batches are split.
MAX_ROWS = 65536
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

    def row(self, request: Mapping[str, Any]) -> tuple[list[Any], list[float]]:
        """The keys and the field values (floats, NaN for None) of one request, checked as
        in-process; both lists go to the codec as they are."""
        # Called once per score: the common types pass without a call, and the names of
        # what failed are only formatted on the way to an error.
        keys: list[Any] = []
        for name in self.keys:
            if name not in request:
                raise InputError(f"request lacks the key '{name}'")
            value = request[name]
            if type(value) is not str and type(value) is not int:
                value = _key(value, f"request key '{name}'")
            keys.append(value)
        fields: list[float] = []
        for name in self.fields:
            if name not in request:
                raise InputError(
                    f"request lacks the field '{name}' (pass None for a missing value)"
                )
            value = request[name]
            if type(value) is not float:
                value = _number(value, f"request field '{name}'")
            fields.append(value)
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

    # PING and SCORE (once its scorer's layout is known) take one request: their request
    # and answer halves are methods too, so the blocking client calls them without
    # running a generator (about 0.8 µs a call, a quarter of the client's cost of a ping).

    def _ping_request(self, payload: bytes) -> _Step:
        rid = self._rid()
        return _PING, rid, self._fits(wire.encode_ping(rid, bytes(payload)), "ping")

    def _ping_op(self, payload: bytes) -> _Op[bytes]:
        return bytes((yield self._ping_request(payload)))

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

    def _score_op(
        self, scorer: str, request: Mapping[str, Any], now: Any
    ) -> _Op[float | np.ndarray]:
        spec = self._scorers.get(scorer)
        if spec is None:
            spec = yield from self._scorer_spec(scorer)
        return _score_result((yield self._score_request(spec, scorer, request, now)))

    def _score_request(
        self, spec: _ScorerSpec, scorer: str, request: Mapping[str, Any], now: Any
    ) -> _Step:
        keys, fields = spec.row(request)
        rid = self._rid()
        if now is None:
            frame = wire.encode_score(rid, scorer, keys, fields)
        else:
            frame = wire.encode_score(rid, scorer, keys, fields, now_ns=_now_ns(now))
        return _SCORE, rid, self._fits(frame, "score")

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


def _score_result(out: np.ndarray) -> float | np.ndarray:
    """A SCORE answer as :meth:`rtml.Scorer.score` returns it: a float for one output."""
    return float(out[0]) if len(out) == 1 else out


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
