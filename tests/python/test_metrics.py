"""rtml.metrics: histogram accuracy against numpy, concurrent recording, and the
Prometheus export scraped over HTTP and parsed with prometheus_client's parser."""

from __future__ import annotations

import math
import threading
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rtml
from rtml.metrics import LatencyHistogram, RtmlCollector, ValueHistogram, register, serve

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "p999": 0.999}


def distributions(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = 200_000
    bimodal = np.where(
        rng.random(n) < 0.05, rng.normal(200_000, 20_000, n), rng.normal(2_000, 200, n)
    )
    return {
        "lognormal": rng.lognormal(np.log(20_000), 1.0, n).astype(np.int64),
        "uniform": rng.integers(0, 1_000_000, n),
        "bimodal": np.maximum(bimodal, 0).astype(np.int64),
    }


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal"])
def test_latency_quantiles_match_numpy(kind: str) -> None:
    values = distributions(np.random.default_rng(7))[kind]
    h = LatencyHistogram()
    h.record_many(values)
    s = h.snapshot()
    assert s["count"] == len(values)
    assert s["sum"] == int(values.sum())
    assert s["mean"] == pytest.approx(values.mean(), rel=1e-9)
    for key, q in QUANTILES.items():
        exact = np.quantile(values, q, method="inverted_cdf")
        assert s[key] == pytest.approx(exact, rel=0.02), (key, s[key], exact)
    assert values.min() * (1 - 1 / 64) <= s["min"] <= values.min()
    assert values.max() <= s["max"] <= values.max() * (1 + 1 / 64)


def test_latency_edge_values() -> None:
    h = LatencyHistogram()
    empty = h.snapshot()
    assert empty["count"] == 0 and empty["p50"] is None and empty["min"] is None
    assert empty["buckets"][-1] == (math.inf, 0)

    h.record(0)
    h.record(1)
    h.record(-5)  # rejected, counted
    h.record(2**62)  # clamped into the top bucket, counted
    s = h.snapshot()
    assert (s["count"], s["negative"], s["overflow"]) == (3, 1, 1)
    assert s["min"] == 0 and s["max"] == LatencyHistogram.max_value
    assert s["sum"] == 1 + LatencyHistogram.max_value
    h.reset()
    assert h.snapshot()["count"] == 0


def test_latency_buckets_are_cumulative() -> None:
    h = LatencyHistogram()
    h.record_many(np.array([50, 99, 100, 101, 150, 990_000, 5_000_000]))
    assert h.snapshot(bounds_ns=[100, 1_000, 1_000_000])["buckets"] == [
        (100, 3),
        (1_000, 5),
        (1_000_000, 6),
        (math.inf, 7),
    ]
    default = h.snapshot()["buckets"]
    bounds = [b for b, _ in default]
    counts = [c for _, c in default]
    assert bounds[:-1] == LatencyHistogram.default_bounds_ns and bounds[-1] == math.inf
    assert counts == sorted(counts) and counts[-1] == 7


def test_value_histogram() -> None:
    rng = np.random.default_rng(3)
    scores = rng.beta(2, 5, 100_000)
    h = ValueHistogram.uniform(0.0, 1.0, 100)
    h.record_many(scores)
    h.record_many(np.array([np.nan, -0.5, 1.5, -np.inf]))
    s = h.snapshot()
    assert (s["nan"], s["underflow"], s["overflow"]) == (1, 2, 1)
    assert s["count"] == len(scores) + 3
    assert s["sum"] == pytest.approx(scores.sum() + 1.0)
    assert len(s["edges"]) == 101 and len(s["counts"]) == 100
    assert [b for b, _ in s["buckets"]] == [*s["edges"][1:], math.inf]
    cumulative = [c for _, c in s["buckets"]]
    assert cumulative == sorted(cumulative) and cumulative[-1] == s["count"]
    # Nearest rank, interpolated in its bin: within one bin width of numpy.
    clean = ValueHistogram.uniform(0.0, 1.0, 100)
    clean.record_many(scores)
    c = clean.snapshot()
    for key, q in QUANTILES.items():
        assert abs(c[key] - np.quantile(scores, q, method="inverted_cdf")) <= 0.01
    # Bins are (e_i, e_i+1], bin 0 also holding e_0: they match Prometheus' "le".
    edges = ValueHistogram([-1.0, 0.0, 0.5, 10.0])
    edges.record_many(np.array([-1.0, 0.0, 0.25, 0.5, 0.75, 10.0]))
    assert edges.snapshot()["counts"] == [2, 2, 2]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ValueHistogram([1.0]),
        lambda: ValueHistogram([0.0, 0.0]),
        lambda: ValueHistogram([0.0, math.inf]),
        lambda: ValueHistogram.uniform(1.0, 0.0, 10),
    ],
)
def test_value_histogram_rejects_bad_edges(make) -> None:
    with pytest.raises(rtml.InputError, match="value histogram"):
        make()


def test_concurrent_recording_sums_exactly() -> None:
    latency, values = LatencyHistogram(), ValueHistogram.uniform(0.0, 1.0, 8)
    chunk = np.arange(100_000, dtype=np.int64) * 37 % 3_000_000
    fractions = (np.arange(100_000) % 8) * 0.125  # exact in binary
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(5):
            latency.record_many(chunk)  # GIL released: the threads overlap in C++
            values.record_many(fractions)
        for v in chunk[:1000]:
            latency.record(int(v))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = latency.snapshot()
    assert s["count"] == 4 * (5 * len(chunk) + 1000)
    assert s["sum"] == 4 * (5 * int(chunk.sum()) + int(chunk[:1000].sum()))
    v = values.snapshot()
    assert v["count"] == 4 * 5 * len(fractions)
    assert v["sum"] == 4 * 5 * fractions.sum()


# ------------------------------------------------------------------ export


class FakeScorer:
    """A stats provider with every key of the schema."""

    def __init__(self, name: str, version: str = "v1") -> None:
        self.name, self.version = name, version
        self.latency = {"score": LatencyHistogram(), "score_many": LatencyHistogram()}
        self.age = LatencyHistogram()
        self.scores = ValueHistogram.uniform(0.0, 1.0, 10)
        self.requests = 0

    def stats(self) -> dict:
        return {
            "name": self.name,
            "model_version": self.version,
            "requests": self.requests,
            "errors": 2,
            "rows": 1234,
            "latency": {op: h.snapshot() for op, h in self.latency.items()},
            "missing": {"amount": 3, "avg_amount_30d": 0},
            "feature_age": {"avg_amount_30d": self.age.snapshot()},
            "window_events": {"late": 5, "dropped": 1},
            "scores": self.scores.snapshot(),
            "psi": {"amount": 0.05, "avg_amount_30d": 0.3, "__score__": 0.12},
        }


def scrape(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def check_histogram(family, labels: dict[str, str], count: int, total: float) -> None:
    """Buckets ascend in le, are cumulative, end at +Inf == _count; _sum as given."""
    key = tuple(sorted(labels.items()))
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in family.samples
        if s.name.endswith("_bucket") and {k: v for k, v in s.labels.items() if k != "le"} == labels
    )
    assert buckets, labels
    counts = [c for _, c in buckets]
    assert counts == sorted(counts)
    assert buckets[-1] == (math.inf, count)
    assert samples(family, family.name + "_count")[key] == count
    assert samples(family, family.name + "_sum")[key] == pytest.approx(total)


def test_scrape_over_http() -> None:
    fraud, pricing = FakeScorer("fraud"), FakeScorer("pricing", version="2024-06")
    rng = np.random.default_rng(11)
    lat = rng.lognormal(np.log(5_000), 0.5, 10_000).astype(np.int64)
    fraud.latency["score"].record_many(lat)
    fraud.latency["score_many"].record_many(np.array([2_000_000, 3_000_000]))
    fraud.age.record_many(np.array([1, 60, 3600]) * 1_000_000_000)
    fraud.scores.record_many(rng.random(1_000))
    fraud.requests = 10_002

    registry = CollectorRegistry()
    collector = register(fraud, registry=registry)
    assert register(pricing, registry=registry) is collector
    with serve(0, registry=registry) as server:
        assert server.addr == "127.0.0.1" and server.port > 0
        families = scrape(server.url)
    with pytest.raises(OSError):  # closed: the port no longer answers
        urllib.request.urlopen(server.url, timeout=2)

    assert samples(families["rtml_requests"], "rtml_requests_total") == {
        (("scorer", "fraud"),): 10_002.0,
        (("scorer", "pricing"),): 0.0,
    }
    assert families["rtml_requests"].type == "counter"
    assert samples(families["rtml_errors"], "rtml_errors_total")[(("scorer", "fraud"),)] == 2
    assert samples(families["rtml_rows"], "rtml_rows_total")[(("scorer", "fraud"),)] == 1234
    missing = samples(families["rtml_missing_features"], "rtml_missing_features_total")
    assert missing[(("feature", "amount"), ("scorer", "fraud"))] == 3
    assert missing[(("feature", "avg_amount_30d"), ("scorer", "pricing"))] == 0
    events = samples(families["rtml_window_events"], "rtml_window_events_total")
    assert events[(("kind", "late"), ("scorer", "fraud"))] == 5
    assert events[(("kind", "dropped"), ("scorer", "fraud"))] == 1
    psi = samples(families["rtml_feature_psi"], "rtml_feature_psi")
    assert psi == {(("feature", "amount"), ("scorer", s)): 0.05 for s in ("fraud", "pricing")} | {
        (("feature", "avg_amount_30d"), ("scorer", s)): 0.3 for s in ("fraud", "pricing")
    }
    assert families["rtml_feature_psi"].type == "gauge"
    assert samples(families["rtml_score_psi"], "rtml_score_psi")[(("scorer", "fraud"),)] == 0.12
    info = samples(families["rtml_model_info"], "rtml_model_info")
    assert info == {
        (("scorer", "fraud"), ("version", "v1")): 1.0,
        (("scorer", "pricing"), ("version", "2024-06")): 1.0,
    }

    latency = families["rtml_score_latency_seconds"]
    assert latency.type == "histogram"
    check_histogram(latency, {"scorer": "fraud", "op": "score"}, len(lat), lat.sum() / 1e9)
    check_histogram(latency, {"scorer": "fraud", "op": "score_many"}, 2, 5e-3)
    check_histogram(latency, {"scorer": "pricing", "op": "score"}, 0, 0.0)
    # Bounds in seconds, 1-2-5 steps; a bucket's count agrees with numpy's within
    # the values one fine bucket (1/64) above the bound.
    fraud_score = {
        float(s.labels["le"]): s.value
        for s in latency.samples
        if s.name.endswith("_bucket")
        and s.labels["scorer"] == "fraud"
        and s.labels["op"] == "score"
    }
    assert 1e-06 in fraud_score and 1e-05 in fraud_score
    for le, count in fraud_score.items():
        if not math.isinf(le):
            ns = le * 1e9
            assert (lat <= ns * (1 - 1 / 64)).sum() <= count <= (lat <= ns).sum()
    check_histogram(
        families["rtml_feature_age_seconds"],
        {"scorer": "fraud", "feature": "avg_amount_30d"},
        3,
        3661,
    )
    check_histogram(
        families["rtml_score"], {"scorer": "fraud"}, 1_000, fraud.scores.snapshot()["sum"]
    )
    assert samples(families["rtml_score_nan"], "rtml_score_nan_total")[(("scorer", "fraud"),)] == 0
    assert samples(families["rtml_exporter_errors"], "rtml_exporter_errors_total") == {(): 0}


def test_variants_and_a_failing_provider(caplog: pytest.LogCaptureFixture) -> None:
    class Arms:
        def stats(self):
            return [{"name": "fraud", "variant": a, "requests": n} for a, n in (("a", 9), ("b", 1))]

    class Broken:
        def stats(self):
            raise RuntimeError("store closed")

    class Malformed:
        def stats(self):
            return {"name": "bad", "latency": {"score": {"buckets": [(1, 1)], "sum": 0}}}

    registry = CollectorRegistry()
    for provider in (Arms(), Broken(), Malformed()):
        register(provider, registry=registry)
    with pytest.raises(TypeError, match="no stats"):
        register(object(), registry=registry)  # type: ignore[arg-type]
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert samples(families["rtml_requests"], "rtml_requests_total") == {
        (("scorer", "fraud"), ("variant", "a")): 9.0,
        (("scorer", "fraud"), ("variant", "b")): 1.0,
    }
    assert samples(families["rtml_exporter_errors"], "rtml_exporter_errors_total") == {(): 2.0}
    assert "store closed" in caplog.text


def test_collector_is_thread_safe_while_recording() -> None:
    scorer = FakeScorer("fraud")
    collector = RtmlCollector([scorer])
    registry = CollectorRegistry()
    registry.register(collector)
    stop = threading.Event()

    def record() -> None:
        chunk = np.arange(1, 10_001, dtype=np.int64)
        while not stop.is_set():
            scorer.latency["score"].record_many(chunk)

    writers = [threading.Thread(target=record) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        for _ in range(20):
            text = generate_latest(registry).decode()
            family = {f.name: f for f in text_string_to_metric_families(text)}[
                "rtml_score_latency_seconds"
            ]
            labels = {"scorer": "fraud", "op": "score"}
            buckets = [
                s.value
                for s in family.samples
                if s.name.endswith("_bucket") and s.labels["op"] == "score"
            ]
            assert buckets == sorted(buckets)  # consistent within one snapshot
            count = samples(family, family.name + "_count")[tuple(sorted(labels.items()))]
            assert count == buckets[-1]
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert scorer.latency["score"].snapshot()["count"] % 10_000 == 0
