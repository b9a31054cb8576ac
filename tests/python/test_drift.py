"""rtml.drift: reference bins, live PSI against a numpy reimplementation, and the
detection of a synthetic shift (and the silence on a stream without one)."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from rtml import InputError
from rtml.drift import SCORE, DriftMonitor, Reference, level, reference_from

N = 50_000
NAMES = ["shifted", "nan_up", "income", "count", "flag", "constant", "steady"]


def _data(seed: int, *, shift: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows of NAMES's features and their scores; with shift, "shifted" moves by one
    standard deviation and "nan_up" goes from 2% to 25% missing."""
    rng = np.random.default_rng(seed)
    x = np.empty((N, len(NAMES)))
    x[:, 0] = rng.normal(size=N) + (1.0 if shift else 0.0)
    x[:, 1] = rng.normal(3.0, 2.0, size=N)
    x[:, 1][rng.random(N) < (0.25 if shift else 0.02)] = np.nan
    x[:, 2] = rng.lognormal(10.0, 1.0, size=N)  # wide range, heavy tail
    x[:, 3] = rng.poisson(2.0, size=N)  # ties: few distinct values
    x[:, 4] = rng.random(N) < 0.3  # binary
    x[:, 5] = 7.0
    x[:, 6] = rng.uniform(-1.0, 1.0, size=N)
    x[:, 6][rng.random(N) < 0.05] = np.nan
    scores = 1.0 / (1.0 + np.exp(-(x[:, 0] + 0.3 * x[:, 3])))
    return x, scores


def numpy_psi(ref: Reference, X: np.ndarray, scores: np.ndarray | None = None) -> dict[str, float]:
    """PSI straight from the definition: bin by searchsorted(right) with NaN last,
    floor both proportions at 1e-4, sum (a - r) ln(a / r)."""

    def psi(values: np.ndarray, edges: np.ndarray, reference: np.ndarray) -> float:
        missing = np.isnan(values)
        bins = np.searchsorted(edges, values[~missing], side="right")
        counts = np.append(np.bincount(bins, minlength=edges.size + 1), missing.sum())
        a = np.maximum(counts / counts.sum(), 1e-4)
        r = np.maximum(reference, 1e-4)
        return float(np.sum((a - r) * np.log(a / r)))

    X32 = np.asarray(X, dtype=np.float32)
    out = {
        name: psi(X32[:, f], ref.edges[f], ref.proportions[f])
        for f, name in enumerate(ref.feature_names)
    }
    if scores is not None:
        out[SCORE] = psi(
            np.asarray(scores, dtype=np.float64), ref.score_edges, ref.score_proportions
        )
    return out


@pytest.fixture(scope="module")
def reference() -> Reference:
    X, scores = _data(0, shift=False)
    return reference_from(X, scores, feature_names=NAMES)


def _psi(monitor: DriftMonitor) -> dict[str, float]:
    return {name: d["psi"] for name, d in monitor.psi().items()}


def test_shift_is_detected(reference: Reference) -> None:
    X, scores = _data(1, shift=True)
    monitor = DriftMonitor(reference)
    monitor.observe_many(X, scores)
    got = monitor.psi()
    assert got["shifted"]["psi"] >= 0.25 and got["shifted"]["level"] == "significant"
    assert got["nan_up"]["psi"] >= 0.25 and got["nan_up"]["level"] == "significant"
    assert got[SCORE]["level"] == "significant"
    for name in ["income", "count", "flag", "constant", "steady"]:
        assert got[name]["psi"] < 0.1 and got[name]["level"] == "none", (name, got[name])


def test_no_shift_is_not_detected(reference: Reference) -> None:
    X, scores = _data(2, shift=False)
    monitor = DriftMonitor(reference)
    monitor.observe_many(X, scores)
    got = _psi(monitor)
    assert set(got) == {*NAMES, SCORE}
    assert max(got.values()) < 0.1, got
    # Far below the threshold, not just under it: the result is stable.
    assert max(got.values()) < 0.01, got


@pytest.mark.parametrize("shift", [False, True])
def test_psi_matches_numpy(reference: Reference, shift: bool) -> None:
    X, scores = _data(3, shift=shift)
    X[::97, 2] = np.inf
    X[::89, 6] = -np.inf
    X[::20, 5] = 7.5  # the constant feature leaves its value
    monitor = DriftMonitor(reference)
    monitor.observe_many(X, scores)
    got = _psi(monitor)
    want = numpy_psi(reference, X, scores)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12, rel=0), name
    assert got["constant"] >= 0.25  # 5% of rows above a constant's value


def test_sampling_counts_every_kth_row(reference: Reference) -> None:
    X, scores = _data(4, shift=True)
    monitor = DriftMonitor(reference, sample_every=7)
    for start in range(0, N, 1000):  # batch boundaries do not move the sample
        monitor.observe_many(X[start : start + 1000], scores[start : start + 1000])
    assert monitor.rows_seen == N
    assert monitor.rows_observed == len(range(0, N, 7))
    want = numpy_psi(reference, X[::7], scores[::7])
    for name, psi in _psi(monitor).items():
        assert psi == pytest.approx(want[name], abs=1e-12, rel=0), name


def test_batches_views_and_dtypes_count_the_same(reference: Reference) -> None:
    X, scores = _data(5, shift=True)
    whole = DriftMonitor(reference)
    whole.observe_many(X.astype(np.float32), scores)
    # float64 rows, converted to float32 as the scorer's rows are
    converted = DriftMonitor(reference)
    converted.observe_many(X, scores)
    # a column window of a wider float32 matrix, read in place with its row stride
    wide = np.zeros((N, len(NAMES) + 3), dtype=np.float32)
    wide[:, 2 : 2 + len(NAMES)] = X
    strided = DriftMonitor(reference)
    for start in range(0, N, 4096):
        strided.observe_many(wide[start : start + 4096, 2 : 2 + len(NAMES)], scores[start:][:4096])
    # every other row: a view whose rows are two rows apart
    halves = DriftMonitor(reference)
    halves.observe_many(X.astype(np.float32)[0::2], scores[0::2])
    halves.observe_many(X.astype(np.float32)[1::2], scores[1::2])
    want = whole.counts()
    for other in (converted, strided, halves):
        got = other.counts()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_threads_count_exactly(reference: Reference) -> None:
    X, scores = _data(6, shift=False)
    X32 = X.astype(np.float32)
    one = DriftMonitor(reference)
    one.observe_many(X32, scores)
    many = DriftMonitor(reference)
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        for start in range(0, N, 500):
            many.observe_many(X32[start : start + 500], scores[start : start + 500])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert many.rows_observed == 4 * N
    want = one.counts()
    for name, counts in many.counts().items():
        np.testing.assert_array_equal(counts, 4 * want[name], err_msg=name)


def test_reset_starts_a_new_window(reference: Reference) -> None:
    monitor = DriftMonitor(reference)
    X, scores = _data(7, shift=True)
    monitor.observe_many(X, scores)
    monitor.reset()
    assert monitor.rows_observed == 0
    assert all(np.isnan(d["psi"]) and d["level"] == "none" for d in monitor.psi().values())
    X, scores = _data(8, shift=False)
    monitor.observe_many(X, scores)
    assert max(_psi(monitor).values()) < 0.1


def test_reference_bins() -> None:
    X, scores = _data(9, shift=False)
    X[:, 6] = np.nan  # always missing
    X[:100, 2] = np.inf
    ref = reference_from(X, scores, bins=10, feature_names=NAMES)
    for f, name in enumerate(NAMES):
        e, p = ref.edges[f], ref.proportions[f]
        assert e.dtype == np.float32 and np.all(np.isfinite(e)) and np.all(np.diff(e) > 0), name
        assert p.shape == (e.size + 2,) and p.sum() == pytest.approx(1.0, abs=1e-12), name
    # a continuous feature: ten bins of a tenth each, nothing missing
    np.testing.assert_allclose(ref.proportions[0], [0.1] * 10 + [0.0], atol=2e-4)
    assert ref.proportions[1][-1] == pytest.approx(0.02, abs=3e-3)
    # ties: one edge per distinct value reached, never a repeated edge
    assert set(ref.edges[3]) <= set(np.unique(X[:, 3]).astype(np.float32))
    above = np.nextafter(np.float32(1.0), np.float32(2.0))
    # binary: below 0, 0, 1, above 1 (the outer bins catch values outside the training range)
    np.testing.assert_array_equal(ref.edges[4], np.array([0.0, 1.0, above], np.float32))
    np.testing.assert_allclose(ref.proportions[4], [0.0, 0.7, 0.3, 0.0, 0.0], atol=5e-3)
    # constant: its value, and just above it
    np.testing.assert_array_equal(
        ref.edges[5], np.array([7.0, np.nextafter(np.float32(7.0), np.float32(8.0))], np.float32)
    )
    np.testing.assert_array_equal(ref.proportions[5], [0.0, 1.0, 0.0, 0.0])
    # always missing: one (empty) value bin and the missing bin
    assert ref.edges[6].size == 0
    np.testing.assert_array_equal(ref.proportions[6], [0.0, 1.0])
    assert ref.score_edges is not None and ref.score_edges.dtype == np.float64
    assert ref.n_rows == N


def test_dataframe_names_and_report() -> None:
    rng = np.random.default_rng(10)
    df = pd.DataFrame({"amount": rng.normal(size=2000), "age": rng.normal(size=2000)})
    ref = reference_from(df)
    assert ref.feature_names == ("amount", "age") and ref.score_edges is None
    monitor = DriftMonitor(ref)
    live = df.to_numpy().copy()
    live[:, 1] += 2.0
    monitor.observe_many(live)
    assert SCORE not in monitor.psi()
    lines = monitor.report().splitlines()
    assert lines[0].startswith("drift over 2000 rows")
    assert lines[2].split()[0] == "age" and lines[2].split()[2] == "significant"
    assert lines[3].split()[0] == "amount"


def test_levels() -> None:
    assert [level(p) for p in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        "none",
        "none",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]


def test_errors(reference: Reference) -> None:
    monitor = DriftMonitor(reference)
    with pytest.raises(InputError, match=r"shape \(n, 7\), got \(10, 6\)"):
        monitor.observe_many(np.zeros((10, 6), np.float32))
    with pytest.raises(InputError, match="10 rows but scores of shape"):
        monitor.observe_many(np.zeros((10, 7), np.float32), np.zeros(9))
    no_scores = DriftMonitor(reference_from(np.zeros((10, 2))))
    with pytest.raises(InputError, match="the reference has no scores"):
        no_scores.observe_many(np.zeros((10, 2)), np.zeros(10))
    with pytest.raises(InputError, match="bins: expected an int >= 2, got 1"):
        reference_from(np.zeros((10, 2)), bins=1)
    with pytest.raises(InputError, match="3 names for 2 features"):
        reference_from(np.zeros((10, 2)), feature_names=["a", "b", "c"])
    with pytest.raises(InputError, match="unique"):
        reference_from(np.zeros((10, 2)), feature_names=["a", "a"])
    with pytest.raises(InputError, match=r"at least one row, got shape \(0, 2\)"):
        reference_from(np.zeros((0, 2)))
    with pytest.raises(InputError, match=r"scores: expected shape \(10,\)"):
        reference_from(np.zeros((10, 2)), np.zeros(3))
    with pytest.raises(InputError, match="sample_every"):
        DriftMonitor(reference, sample_every=0)
    assert monitor.rows_seen == 0  # nothing was counted by the refused calls
