"""rtml.FeatureStore: in-process feature tables updated by events while predictions read them.

Each table is a fixed-capacity, lock-free C++ table (core/include/rtml/feature_table.h):
readers never block and never see a half-written record; writes keep the latest event
time, so duplicated or out-of-order events are harmless; expired records read as missing.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rtml._core import FeatureTable as _CoreTable
from rtml._core import InputError
from rtml._core import SnapshotGate as _SnapshotGate

if TYPE_CHECKING:
    from rtml.windows import Windows

_FIELD_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64}
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, what: str = "duration") -> float:
    """Seconds in a duration: a number of seconds, a timedelta, or text like "30d" or "10m".

    Examples
    --------
    >>> parse_duration("10m"), parse_duration("1.5h"), parse_duration(90)
    (600.0, 5400.0, 90.0)
    """
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise InputError(
        f"{what} {value!r}: expected seconds (>= 0), a timedelta, or text like '500ms', '10s', "
        "'5m', '1h', '30d'"
    )


def to_ns(t: Any, *, what: str = "time") -> int:
    """Nanoseconds since the Unix epoch from seconds (float), datetime or numpy datetime64.

    Examples
    --------
    >>> to_ns(1.5)
    1500000000
    >>> to_ns(np.datetime64("1970-01-01T00:00:02"))
    2000000000
    """
    if t is None:
        return time.time_ns()
    if type(t) is float or type(t) is int:  # the common case, without numpy
        if not math.isfinite(t):
            raise InputError(f"{what} {t!r}: expected a finite number of seconds since the epoch")
        return round(t * 1e9)
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            raise InputError(f"{what} {t!r}: a naive datetime is ambiguous; give it a tzinfo")
        return round(t.timestamp() * 1e9)
    if isinstance(t, np.datetime64):
        return int(t.astype("datetime64[ns]").astype(np.int64))
    if isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool):
        if not np.isfinite(t):
            raise InputError(f"{what} {t!r}: expected a finite number of seconds since the epoch")
        return round(float(t) * 1e9)
    raise InputError(f"{what} {t!r}: expected seconds since the epoch, a datetime or datetime64")


def _times_ns(ts: Any, n: int) -> np.ndarray:
    if ts is None or np.isscalar(ts) or isinstance(ts, (_dt.datetime, np.datetime64)):
        return np.full(n, to_ns(ts, what="ts"), dtype=np.int64)
    arr = np.asarray(ts)
    if arr.shape != (n,):
        raise InputError(f"ts has shape {arr.shape}: expected one event time per key ({n},)")
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").astype(np.int64)
    if arr.dtype.kind in "iuf":
        f = arr.astype(np.float64)
        if not np.isfinite(f).all():
            raise InputError("ts holds NaN or infinite event times")
        return np.round(f * 1e9).astype(np.int64)
    raise InputError(f"ts has dtype {arr.dtype}: expected seconds or datetime64")


def _check_future(event_ns: np.ndarray, max_future_seconds: float, where: str) -> None:
    """Refuses a batch (before anything is written) whose event times lie more than
    max_future_seconds ahead of the clock; ``where`` names a row, e.g. "table 't', row"."""
    limit = time.time_ns() + int(max_future_seconds * 1e9)
    if len(event_ns) and event_ns.max() > limit:
        row = int(np.argmax(event_ns > limit))
        raise InputError(
            f"{where} {row}: event time {event_ns[row] / 1e9:.3f} is more than "
            f"{max_future_seconds:g} s in the future (max_future); nothing was written"
        )


@dataclass(frozen=True)
class Batch:
    """Result of :meth:`Table.get_many`: values ``float32 [n, fields]`` (NaN when
    missing), ``found`` ``bool [n]``, ``age_seconds`` ``float64 [n]`` (NaN when missing)."""

    values: np.ndarray
    found: np.ndarray
    age_seconds: np.ndarray
    columns: list[str]


class Table:
    """A feature table: one record of typed fields per entity key.

    Examples
    --------
    >>> import rtml
    >>> store = rtml.FeatureStore()
    >>> cards = store.table("card", key=str, fields={"avg_amount_30d": "float32",
    ...                                                 "n_chargebacks": "int32"},
    ...                     ttl="30d", capacity=1000)
    >>> cards.put("c1", {"avg_amount_30d": 42.0, "n_chargebacks": 0}, ts=1_000.0)
    >>> cards.get("c1", now=1_001.0)
    {'avg_amount_30d': 42.0, 'n_chargebacks': 0}
    >>> cards.get("c1", now=1_000.0 + 31 * 86400) is None   # expired reads as missing
    True
    >>> batch = cards.get_many(["c1", "c2"], now=1_001.0)
    >>> batch.found.tolist(), float(batch.age_seconds[0])
    ([True, False], 1.0)
    """

    def __init__(
        self,
        name: str,
        *,
        key: type,
        fields: Mapping[str, str],
        ttl: Any = None,
        capacity: int = 1_000_000,
        max_key_bytes: int = 64,
        max_future: Any = "5m",
    ) -> None:
        if key not in (str, int):
            raise InputError(f"table '{name}': key must be str or int, got {key!r}")
        if not fields:
            raise InputError(f"table '{name}': needs at least one field")
        for field, dtype in fields.items():
            if dtype not in _FIELD_DTYPES:
                raise InputError(
                    f"table '{name}', field '{field}': dtype {dtype!r} is not one of "
                    f"{sorted(_FIELD_DTYPES)}"
                )
        if not isinstance(capacity, int) or capacity < 1:
            raise InputError(f"table '{name}': capacity must be a positive int, got {capacity!r}")
        self.name = name
        self.key_type = key
        self.fields: dict[str, str] = dict(fields)
        self.columns = list(self.fields)
        self.ttl_seconds = None if ttl is None else parse_duration(ttl, what="ttl")
        self.capacity = capacity
        self.max_future_seconds = parse_duration(max_future, what="max_future")
        self._ints = [i for i, d in enumerate(self.fields.values()) if d.startswith("int")]
        self._f32 = [i for i, d in enumerate(self.fields.values()) if d == "float32"]
        # get() builds its dict with these; float32 fields are stored already rounded.
        self._convs = [int if d.startswith("int") else float for d in self.fields.values()]
        self._core = _CoreTable(
            "str" if key is str else "int",
            len(self.fields),
            capacity,
            0 if self.ttl_seconds is None else int(self.ttl_seconds * 1e9),
            max_key_bytes,
        )
        # What a snapshot needs to build the same table again.
        self._spec = {
            "key": "str" if key is str else "int",
            "fields": self.fields,
            "ttl": self.ttl_seconds,
            "capacity": capacity,
            "max_key_bytes": max_key_bytes,
            "max_future": self.max_future_seconds,
        }

    # -- writes -------------------------------------------------------------------------

    def put(self, key: Any, values: Mapping[str, Any] | Sequence[Any], *, ts: Any = None) -> None:
        """Stores one record (all fields), unless the stored one has a later event time."""
        self.put_many([key], [self._row(values)], ts=ts)

    def put_many(self, keys: Any, values: Any, *, ts: Any = None) -> int:
        """Stores many records; returns how many were ignored as older than what is stored.

        ``values`` is a 2-D array ``[n, fields]`` (columns in field order) or a DataFrame
        (columns matched by field name). ``ts`` is one time for all rows or one per row.
        Input errors (shape, dtype, keys, event times beyond ``max_future``) are found
        before anything is written: the batch is all-or-nothing. A row the table refuses
        while writing (capacity reached) raises ``InputError`` naming that row: the rows
        before it are stored, the rows from it on are not.
        """
        key_list = self._keys(keys)
        n = len(key_list)
        matrix = self._matrix(values, n)
        event_ns = _times_ns(ts, n)
        _check_future(event_ns, self.max_future_seconds, f"table '{self.name}', row")
        status = self._core.put_many(key_list, matrix, event_ns)
        return int(np.count_nonzero(status == 2))

    def delete(self, key: Any) -> bool:
        """Deletes a key; returns whether it was there."""
        return self._core.delete(key)

    def sweep(self, *, now: Any = None) -> int:
        """Frees the slots of records expired at ``now``; returns how many."""
        return self._core.sweep(to_ns(now, what="now"))

    # -- reads --------------------------------------------------------------------------

    def get(self, key: Any, *, now: Any = None) -> dict[str, Any] | None:
        """The record as a dict, or None when missing or expired at ``now``."""
        got = self._core.get(key, time.time_ns() if now is None else to_ns(now, what="now"))
        if got is None:
            return None
        return {
            name: conv(v) for name, conv, v in zip(self.columns, self._convs, got[0], strict=True)
        }

    def get_many(self, keys: Any, *, now: Any = None) -> Batch:
        """Many records at once (GIL released while reading)."""
        key_list = self._keys(keys)
        n = len(key_list)
        out = np.empty((n, len(self.fields)), dtype=np.float32)
        found = np.empty(n, dtype=bool)
        age = np.empty(n, dtype=np.float64)
        self._core.get_many_into(key_list, to_ns(now, what="now"), out, found, age)
        return Batch(out, found, age, self.columns)

    def get_many_into(
        self,
        keys: Any,
        out: np.ndarray,
        *,
        now: Any = None,
        found: np.ndarray | None = None,
        age_seconds: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fills ``out`` (C-contiguous float32 ``[n, fields]``) in place; returns ``found``."""
        key_list = self._keys(keys)
        n = len(key_list)
        if found is None:
            found = np.empty(n, dtype=bool)
        if age_seconds is None:
            age_seconds = np.empty(n, dtype=np.float64)
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous):
            raise InputError("out must be a C-contiguous float32 numpy array")
        self._core.get_many_into(key_list, to_ns(now, what="now"), out, found, age_seconds)
        return found

    def items(self, *, now: Any = None) -> list[tuple[Any, dict[str, Any], float]]:
        """Every live record as (key, values, event time in seconds) (a consistent copy of each)."""
        return [
            (k, dict(zip(self.columns, v, strict=True)), ev / 1e9)
            for k, v, ev in self._core.items(to_ns(now, what="now"))
        ]

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        ttl = "none" if self.ttl_seconds is None else f"{self.ttl_seconds:g} s"
        return (
            f"Table('{self.name}', key={self.key_type.__name__}, fields={self.columns}, "
            f"ttl={ttl}, {len(self)}/{self.capacity} records)"
        )

    # -- helpers ------------------------------------------------------------------------

    def _row(self, values: Mapping[str, Any] | Sequence[Any]) -> list[Any]:
        if isinstance(values, Mapping):
            unknown = [k for k in values if k not in self.fields]
            if unknown:
                raise InputError(
                    f"table '{self.name}': unknown field(s) {unknown}; fields are {self.columns}"
                )
            missing = [k for k in self.fields if k not in values]
            if missing:
                raise InputError(f"table '{self.name}': missing field(s) {missing}")
            return [values[k] for k in self.fields]
        return list(values)

    def _matrix(self, values: Any, n: int) -> np.ndarray:
        if type(values).__name__ == "DataFrame":
            missing = [c for c in self.columns if c not in values.columns]
            if missing:
                raise InputError(f"table '{self.name}': DataFrame lacks field column(s) {missing}")
            values = values[self.columns].to_numpy()
        try:
            m = np.asarray(values)
            if m.dtype.kind not in "biuf":
                m = m.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"table '{self.name}': values must be numbers (fields {self.fields})"
            ) from None
        if m.dtype.kind not in "biuf":
            raise InputError(f"table '{self.name}': values have dtype {m.dtype}, expected numbers")
        if m.shape != (n, len(self.fields)):
            raise InputError(
                f"table '{self.name}': values have shape {m.shape}, "
                f"expected ({n}, {len(self.fields)})"
            )
        m = m.astype(np.float64)
        for i in self._ints:
            col = m[:, i]
            if not (np.isfinite(col).all() and (col == np.round(col)).all()):
                raise InputError(
                    f"table '{self.name}', field '{self.columns[i]}': expected integers, got "
                    f"{col[~(np.isfinite(col) & (col == np.round(col)))][:3].tolist()}"
                )
        if self._f32:  # store float32 fields as the float32 value they are
            m[:, self._f32] = m[:, self._f32].astype(np.float32)
        return np.ascontiguousarray(m)

    def _keys(self, keys: Any) -> Any:
        if type(keys) is list:  # the common case: skips the Iterable ABC check (~1 µs)
            return keys
        if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu" and self.key_type is int:
            return keys
        if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
            raise InputError(f"table '{self.name}': keys must be a sequence of keys, got {keys!r}")
        return list(keys) if not isinstance(keys, list) else keys


class FeatureStore:
    """A set of named feature tables in this process.

    Examples
    --------
    >>> import rtml
    >>> store = rtml.FeatureStore()
    >>> t = store.table("merchant", key=int, fields={"risk": "float64"})
    >>> store["merchant"] is t
    True
    """

    def __init__(self) -> None:
        self._tables: dict[str, Table] = {}
        self._windows: dict[str, Windows] = {}
        self._gate = _SnapshotGate()

    def table(self, name: str, **kwargs: Any) -> Table:
        """Creates the table ``name`` (see :class:`Table` for the arguments)."""
        self._check_new(name)
        t = Table(name, **kwargs)
        self._gate.attach(t._core)
        self._tables[name] = t
        return t

    def windows(self, name: str, **kwargs: Any) -> Windows:
        """Creates the window set ``name`` (see :class:`rtml.Windows` for the arguments)."""
        from rtml.windows import Windows

        self._check_new(name)
        w = Windows(name, **kwargs)
        self._gate.attach(w._core)
        self._windows[name] = w
        return w

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a snapshot of every table and window set to ``path``.

        The snapshot is one point-in-time cut across all of them, taken while writers
        continue (copy-on-write per record: no global pause). It is written to a temporary
        file in the same directory, flushed to disk, then renamed over ``path``, so
        ``path`` always holds either the old snapshot or the complete new one. The file
        carries a BLAKE2b checksum. Window ingest counters are read at the cut.
        """
        from rtml import _snapshot

        _snapshot.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureStore:
        """Reads a snapshot written by :meth:`save` into a new store.

        The whole file is checked (header, length, checksum, every section) while the new
        store is built; any problem raises :class:`rtml.SnapshotError` and no store is
        returned, so a damaged snapshot is never half-loaded.

        Examples
        --------
        >>> import os, tempfile, rtml
        >>> store = rtml.FeatureStore()
        >>> t = store.table("merchant", key=int, fields={"risk": "float64"})
        >>> t.put(7, {"risk": 0.25}, ts=100.0)
        >>> path = os.path.join(tempfile.mkdtemp(), "store.snap")
        >>> store.save(path)
        >>> rtml.FeatureStore.load(path)["merchant"].get(7, now=101.0)
        {'risk': 0.25}
        """
        from rtml import _snapshot

        return _snapshot.load(cls, path)

    def __getitem__(self, name: str) -> Table | Windows:
        if name in self._tables:
            return self._tables[name]
        if name in self._windows:
            return self._windows[name]
        raise InputError(
            f"no table or window set '{name}'; there are {sorted([*self._tables, *self._windows])}"
        )

    @property
    def tables(self) -> dict[str, Table]:
        """The tables by name."""
        return dict(self._tables)

    @property
    def window_sets(self) -> dict[str, Windows]:
        """The window sets by name."""
        return dict(self._windows)

    def _check_new(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InputError(f"a table or window set needs a non-empty str name, got {name!r}")
        if name in self._tables or name in self._windows:
            raise InputError(f"'{name}' already exists in this store")
