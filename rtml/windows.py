"""Sliding event-time window aggregates per entity (``FeatureStore.windows``).

Each window set keeps, per entity, rings of time buckets in a lock-free C++ table
(core/include/rtml/window.h): an event updates one bucket per ring and a query reads the
buckets of its windows, so both cost O(buckets), never O(events). See docs/store.md for
the exact semantics (resolution, late and dropped events, "as of" reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtml._core import InputError
from rtml._core import WindowTable as _CoreWindows
from rtml.store import _check_future, _times_ns, parse_duration, to_ns

OPS = ("count", "sum", "mean", "min", "max", "stddev", "last")


@dataclass(frozen=True)
class WindowBatch:
    """Result of :meth:`Windows.get_many`: ``values`` float64 ``[n, columns]``, ``found``
    bool ``[n]`` (whether the entity has any event in the store) and the column names."""

    values: np.ndarray
    found: np.ndarray
    columns: list[str]


def _label(window: Any) -> str:
    if isinstance(window, str):
        return window.strip()
    return f"{parse_duration(window, what='window'):g}s"


class Windows:
    """Window aggregates of one numeric value per entity, over several windows at once.

    Columns are named ``{value}_{op}_{window}`` (ops outer, windows inner). A window with
    no events reads count 0, sum 0 and NaN for the other ops. Each window's resolution
    (bucket width) is in :attr:`resolution`; an "as of" read so far behind an entity's
    newest event that a window needs buckets no longer held answers NaN for that window.

    Examples
    --------
    >>> import rtml
    >>> store = rtml.FeatureStore()
    >>> txn = store.windows("card_txn", key=str, value="amount",
    ...                     ops=["count", "sum", "max"], windows=["1m", "1h"], bucket="10s")
    >>> txn.ingest(["c1", "c1", "c2"], [10.0, 30.0, 5.0], ts=[1000.0, 1030.0, 1010.0])
    0
    >>> txn.columns[:3]
    ['amount_count_1m', 'amount_count_1h', 'amount_sum_1m']
    >>> got = txn.get("c1", now=1040.0)
    >>> got["amount_count_1m"], got["amount_sum_1h"], got["amount_max_1m"]
    (2.0, 40.0, 30.0)
    >>> txn.get("c1", now=1080.0)["amount_count_1m"]   # the 1000 s event left the minute
    1.0
    >>> txn.get_many(["c2", "nobody"], now=1040.0).values[:, 0].tolist()
    [1.0, 0.0]
    """

    def __init__(
        self,
        name: str,
        *,
        key: type,
        value: str,
        ops: Sequence[str],
        windows: Sequence[Any],
        bucket: Any = "10s",
        capacity: int = 1_000_000,
        max_buckets: int = 60,
        history: Any = 0,
        max_key_bytes: int = 64,
        max_future: Any = "5m",
    ) -> None:
        if key not in (str, int):
            raise InputError(f"windows '{name}': key must be str or int, got {key!r}")
        if isinstance(ops, str) or not ops:
            raise InputError(f"windows '{name}': ops must be a non-empty list of {list(OPS)}")
        bad = [op for op in ops if op not in OPS]
        if bad:
            raise InputError(f"windows '{name}': unknown op(s) {bad}; ops are {list(OPS)}")
        if isinstance(windows, str) or not windows:
            raise InputError(
                f"windows '{name}': windows must be a non-empty list like ['1m', '1h']"
            )
        if not isinstance(capacity, int) or capacity < 1:
            raise InputError(f"windows '{name}': capacity must be a positive int, got {capacity!r}")
        self.name = name
        self.key_type = key
        self.value = value
        self.ops = list(ops)
        self.windows = [_label(w) for w in windows]
        self.capacity = capacity
        self.max_future_seconds = parse_duration(max_future, what="max_future")
        self.columns = [f"{value}_{op}_{w}" for op in self.ops for w in self.windows]
        # What the core is built from, and what a snapshot needs to build it again.
        self._spec = {
            "key": "str" if key is str else "int",
            "value": value,
            "ops": self.ops,
            "windows": self.windows,
            "windows_ns": [round(parse_duration(w, what="window") * 1e9) for w in windows],
            "bucket_ns": round(parse_duration(bucket, what="bucket") * 1e9),
            "capacity": capacity,
            "max_buckets": max_buckets,
            "history_ns": round(parse_duration(history, what="history") * 1e9),
            "max_key_bytes": max_key_bytes,
            "max_future": self.max_future_seconds,
        }
        spec = self._spec
        try:
            self._core = _CoreWindows(
                spec["key"],
                self.ops,
                spec["windows_ns"],
                spec["bucket_ns"],
                max_buckets,
                spec["history_ns"],
                capacity,
                max_key_bytes,
            )
        except InputError as e:
            raise InputError(f"windows '{name}': {e}") from None

    @property
    def resolution(self) -> dict[str, float]:
        """Bucket width in seconds chosen for each window."""
        return {
            w: b / 1e9 for w, (_, b, _, _) in zip(self.windows, self._core.layout(), strict=True)
        }

    @property
    def layout(self) -> list[dict[str, Any]]:
        """Per window: its bucket width (s), buckets per window, and buckets its ring holds
        (ending at an entity's newest event; "as of" reads need their buckets in there)."""
        return [
            {"window": w, "bucket_seconds": b / 1e9, "buckets": k, "ring_buckets": ring}
            for w, (_, b, k, ring) in zip(self.windows, self._core.layout(), strict=True)
        ]

    @property
    def bytes_per_entity(self) -> int:
        """Memory of one entity's record, rings included."""
        return self._core.record_bytes

    # -- writes -------------------------------------------------------------------------

    def ingest(self, keys: Any, values: Any, ts: Any = None) -> int:
        """Adds events (one key, value and event time each); returns how many were dropped
        as older than every window can hold (also counted in :meth:`stats`).

        ``keys`` is one key or a sequence / numpy array of keys, ``values`` the matching
        number(s), ``ts`` one event time for all or one per event (seconds since the epoch,
        datetime or datetime64; default: now). Input errors (key types, key length,
        non-finite values, event times beyond ``max_future``) are found before anything is
        stored: such a batch is all-or-nothing. Capacity running out mid-batch raises
        naming the event: events before it are stored, events from it on are not.
        """
        if isinstance(keys, (str, int, np.integer)):
            keys, values = [keys], [values]
        elif not isinstance(keys, (list, tuple, np.ndarray)):
            keys = list(keys)
        n = len(keys)
        try:
            vals = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"windows '{self.name}': values must be numbers") from None
        if vals.shape != (n,):
            raise InputError(
                f"windows '{self.name}': {n} keys but {vals.size} values; "
                "expected one value per key"
            )
        if not np.isfinite(vals).all():
            row = int(np.argmin(np.isfinite(vals)))
            raise InputError(
                f"windows '{self.name}', event {row}: value {vals[row]} is not finite; "
                "nothing was stored"
            )
        event_ns = _times_ns(ts, n)
        _check_future(event_ns, self.max_future_seconds, f"windows '{self.name}', event")
        return self._core.ingest(keys, vals, event_ns)

    def sweep(self, *, now: Any = None) -> int:
        """Frees the records of entities without an event in any ring's span; returns how many."""
        return self._core.sweep(to_ns(now, what="now"))

    # -- reads --------------------------------------------------------------------------

    def get(self, key: Any, *, now: Any = None) -> dict[str, float]:
        """The aggregates of one entity as of ``now`` (default: the clock)."""
        out = np.empty((1, len(self.columns)), dtype=np.float64)
        found = np.empty(1, dtype=bool)
        self._core.get_many_into([key], to_ns(now, what="now"), out, found)
        return dict(zip(self.columns, out[0].tolist(), strict=True))

    def get_many(self, keys: Any, *, now: Any = None) -> WindowBatch:
        """The aggregates of many entities as of ``now`` (GIL released while reading)."""
        n = len(keys)
        out = np.empty((n, len(self.columns)), dtype=np.float64)
        found = np.empty(n, dtype=bool)
        self._core.get_many_into(keys, to_ns(now, what="now"), out, found)
        return WindowBatch(out, found, self.columns)

    def get_many_into(self, keys: Any, out: np.ndarray, *, now: Any = None) -> np.ndarray:
        """Fills ``out`` (C-contiguous float64 ``[n, columns]``) in place; returns ``found``."""
        if not (isinstance(out, np.ndarray) and out.dtype == np.float64 and out.flags.c_contiguous):
            raise InputError("out must be a C-contiguous float64 numpy array")
        found = np.empty(len(keys), dtype=bool)
        self._core.get_many_into(keys, to_ns(now, what="now"), out, found)
        return found

    def stats(self) -> dict[str, int]:
        """Events stored, stored late (older than their entity's newest event), and dropped
        (older than every ring holds)."""
        return self._core.counters()

    def __len__(self) -> int:
        return len(self._core)

    def __repr__(self) -> str:
        return (
            f"Windows('{self.name}', key={self.key_type.__name__}, value='{self.value}', "
            f"ops={self.ops}, windows={self.windows}, {len(self)}/{self.capacity} entities)"
        )
