"""Online metrics and their Prometheus export.

rtml records metrics in the C++ core (lock-free histograms and counters, see
``core/include/rtml/metrics.h``) and exports them through ``prometheus_client``
with a custom collector, :class:`RtmlCollector`, that reads *stats providers*:
any object with a ``stats()`` method returning the dict below (``rtml.Scorer``
is one), or a list of such dicts (one per A/B arm or shadow model).

Stats schema
------------
Every key but ``name`` is optional; a missing key exports nothing. Counts are
monotonic since the provider was created (Prometheus counters)::

    {
        "name": "fraud",                 # str: the scorer, label scorer="fraud"
        "variant": "a",                  # str: A/B arm or "shadow", label variant="a"
        "model_version": "v1",           # str: rtml_model_info{version="v1"} 1
        "requests": 10,                  # int: score/score_many calls
        "errors": 0,                     # int: calls that raised or returned an error
        "rows": 120,                     # int: rows scored (1 per score call)
        "latency": {                     # per operation, nanoseconds
            "score": <latency snapshot>,
            "score_many": <latency snapshot>,
        },
        "missing": {"amount": 3},        # int per model feature: read as missing
        "feature_age": {"avg_amount_30d": <latency snapshot>},  # age at read, ns
        "window_events": {"late": 2, "dropped": 0},             # ints
        "scores": <value snapshot>,      # the model's outputs
        "psi": {"amount": 0.02, "__score__": 0.01},  # floats; "__score__": the score's
        "variants": [<stats dict>, ...],  # per A/B arm / shadow, each with "variant";
                                          # exported too: they must not repeat the
                                          # top level's counts (no double counting)
    }

A *latency snapshot* is ``LatencyHistogram.snapshot()`` (integers in ns)::

    {"count": int, "sum": int, "min": int | None, "max": int | None,
     "mean": float | None, "p50": int | None, "p95": ..., "p99": ..., "p999": ...,
     "overflow": int,    # values above LatencyHistogram.max_value (2**42 - 1 ns), clamped
     "negative": int,    # rejected negative values
     "buckets": [(upper_bound_ns, cumulative_count), ..., (inf, count)]}

A *value snapshot* is ``ValueHistogram.snapshot()``::

    {"count": int,       # non-NaN values, under- and overflow included
     "sum": float, "mean": float | None, "p50": float | None, ..., "p999": ...,
     "nan": int, "underflow": int, "overflow": int,
     "edges": [float, ...], "counts": [int, ...],  # bin 0 is [e0, e1], bin i (e_i, e_i+1]
     "buckets": [(edge, cumulative_count) for edges[1:]] + [(inf, count)]}

Quantiles and min/max are None while a histogram is empty. Latency quantiles are
within 1/128 (0.8%) of the exact nearest-rank quantile (the buckets are at most
1/64 wide); value quantiles are interpolated inside one bin.

Exported metrics
----------------
All carry ``scorer`` (and ``variant`` when some provider sets one):

- ``rtml_score_latency_seconds{op}``: histogram of ``latency`` (ns -> seconds)
- ``rtml_requests_total``, ``rtml_errors_total``, ``rtml_rows_total``: counters
- ``rtml_missing_features_total{feature}``: counter of ``missing``
- ``rtml_feature_age_seconds{feature}``: histogram of ``feature_age`` (ns -> seconds)
- ``rtml_window_events_total{kind}``: counter of ``window_events`` (late, dropped)
- ``rtml_score``: histogram of ``scores``; ``rtml_score_nan_total``: its NaN count
- ``rtml_feature_psi{feature}``: gauge of ``psi`` but ``__score__``
- ``rtml_score_psi``: gauge of ``psi["__score__"]``
- ``rtml_model_info{version}``: info (value 1) from ``model_version``
- ``rtml_exporter_errors_total`` (no labels): providers whose stats() failed

Examples
--------
>>> import numpy as np
>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from rtml.metrics import LatencyHistogram, register
>>> latency = LatencyHistogram()
>>> latency.record_many(np.array([1_200, 1_500, 90_000]))
>>> class Provider:
...     def stats(self):
...         return {"name": "fraud", "requests": 3, "latency": {"score": latency.snapshot()}}
>>> registry = CollectorRegistry()
>>> _ = register(Provider(), registry=registry)
>>> text = generate_latest(registry).decode()
>>> [line for line in text.splitlines() if line.startswith("rtml_requests_total")]
['rtml_requests_total{scorer="fraud"} 3.0']
>>> 'rtml_score_latency_seconds_count{op="score",scorer="fraud"} 3.0' in text
True
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from rtml._core import LatencyHistogram, ValueHistogram

__all__ = [
    "LatencyHistogram",
    "MetricsServer",
    "RtmlCollector",
    "StatsProvider",
    "ValueHistogram",
    "register",
    "serve",
    "unregister",
]

_log = logging.getLogger(__name__)

_NS_PER_S = 1e9
_SCORE_PSI_KEY = "__score__"


class StatsProvider(Protocol):
    """Anything whose ``stats()`` returns a stats dict (or a list of them)."""

    def stats(self) -> Mapping[str, Any] | Sequence[Mapping[str, Any]]: ...


# Every family: (kind, name, help, extra label names). The order is the export order.
_FAMILIES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "latency": (
        "histogram",
        "rtml_score_latency_seconds",
        "Time spent in a scorer operation, seconds.",
        ("op",),
    ),
    "requests": ("counter", "rtml_requests", "Scorer calls.", ()),
    "errors": ("counter", "rtml_errors", "Scorer calls that failed.", ()),
    "rows": ("counter", "rtml_rows", "Rows scored.", ()),
    "missing": (
        "counter",
        "rtml_missing_features",
        "Model inputs read as missing (absent or expired), per feature.",
        ("feature",),
    ),
    "feature_age": (
        "histogram",
        "rtml_feature_age_seconds",
        "Age of a stored feature value when read, seconds.",
        ("feature",),
    ),
    "window_events": (
        "counter",
        "rtml_window_events",
        "Window events stored late or dropped as too old.",
        ("kind",),
    ),
    "scores": ("histogram", "rtml_score", "Distribution of the model's outputs.", ()),
    "score_nan": ("counter", "rtml_score_nan", "Model outputs that were NaN.", ()),
    "psi": (
        "gauge",
        "rtml_feature_psi",
        "Population stability index of a feature against its reference.",
        ("feature",),
    ),
    "score_psi": (
        "gauge",
        "rtml_score_psi",
        "Population stability index of the score against its reference.",
        (),
    ),
    "model": ("info", "rtml_model", "The model a scorer serves.", ("version",)),
}


@dataclass
class _Sample:
    family: str
    labels: dict[str, str]
    value: Any  # a number, or (buckets, sum) for a histogram


@dataclass
class _Scrape:
    samples: list[_Sample] = field(default_factory=list)
    variant: bool = False


def _histogram(snapshot: Mapping[str, Any], scale: float) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets (le strings, cumulative counts) and sum, scaled."""
    buckets = []
    for upper, cumulative in snapshot["buckets"]:
        le = "+Inf" if math.isinf(upper) else floatToGoString(upper / scale)
        buckets.append((le, float(cumulative)))
    if not buckets or buckets[-1][0] != "+Inf":
        raise ValueError("histogram snapshot: the last bucket must be (inf, count)")
    return buckets, float(snapshot["sum"]) / scale


def _samples_of(stats: Mapping[str, Any]) -> Iterator[_Sample]:
    """The samples of one stats dict (see the module docstring)."""
    base = {"scorer": str(stats["name"])}
    if stats.get("variant") is not None:
        base["variant"] = str(stats["variant"])

    def sample(family: str, value: Any, **extra: str) -> _Sample:
        return _Sample(family, {**base, **extra}, value)

    for key in ("requests", "errors", "rows"):
        if stats.get(key) is not None:
            yield sample(key, float(stats[key]))
    for op, snap in (stats.get("latency") or {}).items():
        yield sample("latency", _histogram(snap, _NS_PER_S), op=str(op))
    for feature, n in (stats.get("missing") or {}).items():
        yield sample("missing", float(n), feature=str(feature))
    for feature, snap in (stats.get("feature_age") or {}).items():
        yield sample("feature_age", _histogram(snap, _NS_PER_S), feature=str(feature))
    for kind, n in (stats.get("window_events") or {}).items():
        yield sample("window_events", float(n), kind=str(kind))
    scores = stats.get("scores")
    if scores is not None:
        yield sample("scores", _histogram(scores, 1.0))
        yield sample("score_nan", float(scores.get("nan", 0)))
    for feature, psi in (stats.get("psi") or {}).items():
        if feature == _SCORE_PSI_KEY:
            yield sample("score_psi", float(psi))
        else:
            yield sample("psi", float(psi), feature=str(feature))
    if stats.get("model_version") is not None:
        yield sample("model", {"version": str(stats["model_version"])})


def _family(key: str, labelnames: list[str]) -> Metric:
    kind, name, doc, extra = _FAMILIES[key]
    names = [*labelnames, *extra]
    if kind == "histogram":
        return HistogramMetricFamily(name, doc, labels=names)
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=names)
    if kind == "gauge":
        return GaugeMetricFamily(name, doc, labels=names)
    return InfoMetricFamily(name, doc, labels=labelnames)


class RtmlCollector:
    """A prometheus_client collector over rtml stats providers.

    One collector serves every provider of a registry, so that two scorers
    export one ``rtml_requests_total`` family with two label sets (a registry
    refuses two collectors exporting the same name). Use :func:`register`,
    which creates it on first use. Thread-safe: providers may be added and
    removed while a scrape runs.

    A provider whose ``stats()`` raises, or returns a dict that does not follow
    the schema, is left out of that scrape (logged, and counted in
    ``rtml_exporter_errors_total``); the other providers are still exported.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> class Fixed:
    ...     def stats(self):
    ...         return {"name": "pricing", "model_version": "2024-06", "errors": 1}
    >>> registry = CollectorRegistry()
    >>> collector = RtmlCollector()
    >>> collector.add(Fixed())
    >>> registry.register(collector)
    >>> text = generate_latest(registry).decode()
    >>> 'rtml_model_info{scorer="pricing",version="2024-06"} 1.0' in text
    True
    >>> 'rtml_errors_total{scorer="pricing"} 1.0' in text
    True
    """

    def __init__(self, providers: Iterable[StatsProvider] = ()) -> None:
        self._lock = threading.Lock()
        self._providers: list[StatsProvider] = list(providers)
        self._errors = 0

    def add(self, provider: StatsProvider) -> None:
        """Export ``provider`` from now on (no-op if it already is)."""
        if not callable(getattr(provider, "stats", None)):
            raise TypeError(f"stats provider: {type(provider).__name__} has no stats() method")
        with self._lock:
            if not any(p is provider for p in self._providers):
                self._providers.append(provider)

    def remove(self, provider: StatsProvider) -> bool:
        """Stop exporting ``provider``; returns whether it was exported."""
        with self._lock:
            kept = [p for p in self._providers if p is not provider]
            found = len(kept) != len(self._providers)
            self._providers = kept
            return found

    @property
    def providers(self) -> list[StatsProvider]:
        with self._lock:
            return list(self._providers)

    def describe(self) -> list[Metric]:
        """The families this collector may export (lets a registry check names
        without calling every provider's stats())."""
        families = [_family(key, ["scorer"]) for key in _FAMILIES]
        return [*families, CounterMetricFamily("rtml_exporter_errors", "")]

    def collect(self) -> Iterator[Metric]:
        scrape = _Scrape()
        for provider in self.providers:
            try:
                stats = provider.stats()
                dicts = [stats] if isinstance(stats, Mapping) else list(stats)
                # A provider's per-variant dicts (A/B arms, shadow) ride along.
                dicts += [v for d in list(dicts) for v in d.get("variants", ())]
                samples = [s for d in dicts for s in _samples_of(d)]
            except Exception:
                _log.exception(
                    "rtml metrics: stats() of %r failed; left out of this scrape", provider
                )
                with self._lock:
                    self._errors += 1
                continue
            scrape.samples.extend(samples)
        scrape.variant = any("variant" in s.labels for s in scrape.samples)
        labelnames = ["scorer", "variant"] if scrape.variant else ["scorer"]
        families: dict[str, Metric] = {}
        for s in scrape.samples:
            family = families.get(s.family)
            if family is None:
                family = families[s.family] = _family(s.family, labelnames)
            kind, _, _, extra = _FAMILIES[s.family]
            values = [s.labels.get(n, "") for n in labelnames]
            if kind == "info":
                family.add_metric(values, s.value)
            elif kind == "histogram":
                buckets, total = s.value
                family.add_metric([*values, *(s.labels[n] for n in extra)], buckets, total)
            else:
                family.add_metric([*values, *(s.labels[n] for n in extra)], s.value)
        yield from (families[key] for key in _FAMILIES if key in families)
        with self._lock:
            errors = self._errors
        yield CounterMetricFamily(
            "rtml_exporter_errors",
            "Stats providers whose stats() failed during a scrape.",
            value=errors,
        )


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, RtmlCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def _collector_of(registry: CollectorRegistry, create: bool) -> RtmlCollector | None:
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None and create:
            collector = _collectors[registry] = RtmlCollector()
            registry.register(collector)
        return collector


def register(
    provider: StatsProvider, *, registry: CollectorRegistry | None = None
) -> RtmlCollector:
    """Export ``provider``'s stats from ``registry`` (prometheus_client's
    default registry when None); returns the registry's :class:`RtmlCollector`.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> class Empty:
    ...     def stats(self):
    ...         return {"name": "empty"}
    >>> registry = CollectorRegistry()
    >>> provider = Empty()
    >>> collector = register(provider, registry=registry)
    >>> register(Empty(), registry=registry) is collector  # one collector per registry
    True
    >>> unregister(provider, registry=registry)
    True
    """
    collector = _collector_of(REGISTRY if registry is None else registry, create=True)
    assert collector is not None
    collector.add(provider)
    return collector


def unregister(provider: StatsProvider, *, registry: CollectorRegistry | None = None) -> bool:
    """Stop exporting ``provider`` from ``registry``; returns whether it was exported."""
    collector = _collector_of(REGISTRY if registry is None else registry, create=False)
    return collector is not None and collector.remove(provider)


class MetricsServer:
    """The HTTP endpoint :func:`serve` started; ``close()`` (or leaving a
    ``with`` block) stops it and frees the port."""

    def __init__(self, httpd: Any, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def addr(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when serve() was given 0)."""
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and wait for the server thread; idempotent."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    port: int, *, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (prometheus_client's default when None) for Prometheus
    to scrape, from a daemon thread, on ``addr:port`` (port 0: any free port).

    Binds loopback by default: metrics name models and features, so exposing
    them beyond the host is a deliberate choice (``addr="0.0.0.0"``).

    Examples
    --------
    >>> import urllib.request
    >>> from prometheus_client import CollectorRegistry
    >>> class One:
    ...     def stats(self):
    ...         return {"name": "fraud", "rows": 1}
    >>> registry = CollectorRegistry()
    >>> _ = register(One(), registry=registry)
    >>> with serve(0, registry=registry) as server:
    ...     body = urllib.request.urlopen(server.url, timeout=10).read().decode()
    >>> 'rtml_rows_total{scorer="fraud"} 1.0' in body
    True
    """
    httpd, thread = start_http_server(
        port, addr=addr, registry=REGISTRY if registry is None else registry
    )
    return MetricsServer(httpd, thread)
