"""Window aggregates as a team would build them without rtml, for benchmarks/store.py.

Both peers keep the same tiling rtml uses (the resolutions of ``Windows.layout``), so
every engine answers the same question with the same bucket math:

* ``DictWindows``: per entity and resolution a Python dict {bucket: [count, sum, max]}.
* ``RedisWindows``: per entity and resolution a Redis hash with fields ``<bucket>:c``,
  ``<bucket>:s``, ``<bucket>:x``, updated by one Lua script call per event (pipelined),
  read with one pipelined HGETALL per entity and resolution. Old buckets are never
  deleted, which only helps Redis (smaller scripts, no expiry work).

Only count, sum, mean and max are implemented here: the ops the benchmark uses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

OPS = ("count", "sum", "mean", "max")

_LUA_ADD = """
local k = KEYS[1]
local b = ARGV[1]
local v = tonumber(ARGV[2])
redis.call('HINCRBY', k, b .. ':c', 1)
redis.call('HINCRBYFLOAT', k, b .. ':s', v)
local m = redis.call('HGET', k, b .. ':x')
if (not m) or tonumber(m) < v then redis.call('HSET', k, b .. ':x', v) end
return 0
"""


def _rings(layout: list[dict[str, Any]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Distinct bucket widths (ns) and per window (ring index, buckets)."""
    widths = sorted({round(w["bucket_seconds"] * 1e9) for w in layout})
    return widths, [(widths.index(round(w["bucket_seconds"] * 1e9)), w["buckets"]) for w in layout]


def _aggregate(buckets: list[tuple[float, float, float]]) -> tuple[float, float, float, float]:
    n = sum(b[0] for b in buckets)
    s = sum(b[1] for b in buckets)
    mx = max((b[2] for b in buckets), default=math.nan)
    return n, s, (s / n if n else math.nan), mx


def _fill_row(
    out: np.ndarray,
    i: int,
    rings: list[dict[int, Any]],
    widths: list[int],
    windows: list[tuple[int, int]],
    now_ns: int,
) -> None:
    """Row i of a get_many answer from one entity's rings ({bucket: (count, sum, max)})."""
    nw = len(windows)
    for wi, (r, nb) in enumerate(windows):
        cur = now_ns // widths[r]
        ring = rings[r]
        got = [ring[j] for j in range(cur - nb + 1, cur + 1) if j in ring]
        for o, v in enumerate(_aggregate(got)):
            out[i, o * nw + wi] = v


class DictWindows:
    def __init__(self, layout: list[dict[str, Any]]) -> None:
        self.widths, self.windows = _rings(layout)
        self.data: dict[Any, list[dict[int, list[float]]]] = {}

    def ingest(self, keys: list[Any], values: np.ndarray, ts_ns: np.ndarray) -> None:
        for k, v, t in zip(keys, values.tolist(), ts_ns.tolist(), strict=True):
            rings = self.data.get(k)
            if rings is None:
                rings = self.data[k] = [{} for _ in self.widths]
            for ring, width in zip(rings, self.widths, strict=True):
                b = ring.get(t // width)
                if b is None:
                    ring[t // width] = [1.0, v, v]
                else:
                    b[0] += 1
                    b[1] += v
                    if v > b[2]:
                        b[2] = v

    def get_many(self, keys: list[Any], now_ns: int) -> np.ndarray:
        out = np.empty((len(keys), len(OPS) * len(self.windows)))
        empty: list[dict[int, list[float]]] = [{} for _ in self.widths]
        for i, k in enumerate(keys):
            _fill_row(out, i, self.data.get(k, empty), self.widths, self.windows, now_ns)
        return out


class RedisWindows:
    def __init__(self, client: Any, layout: list[dict[str, Any]]) -> None:
        self.client = client
        self.widths, self.windows = _rings(layout)
        self.add = client.register_script(_LUA_ADD)

    def ingest(self, keys: list[Any], values: np.ndarray, ts_ns: np.ndarray) -> None:
        pipe = self.client.pipeline(transaction=False)
        for k, v, t in zip(keys, values.tolist(), ts_ns.tolist(), strict=True):
            for r, width in enumerate(self.widths):
                self.add(keys=[f"w:{k}:{r}"], args=[t // width, v], client=pipe)
        pipe.execute()

    def get_many(self, keys: list[Any], now_ns: int) -> np.ndarray:
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            for r in range(len(self.widths)):
                pipe.hgetall(f"w:{k}:{r}")
        replies = pipe.execute()
        out = np.empty((len(keys), len(OPS) * len(self.windows)))
        for i in range(len(keys)):
            rings = []
            for r in range(len(self.widths)):
                h = replies[i * len(self.widths) + r]
                buckets: dict[int, list[float]] = {}
                for field, value in h.items():
                    j, _, what = field.partition(b":")
                    buckets.setdefault(int(j), [0.0, 0.0, -math.inf])[
                        "csx".index(what.decode())
                    ] = float(value)
                rings.append(buckets)
            _fill_row(out, i, rings, self.widths, self.windows, now_ns)
        return out
