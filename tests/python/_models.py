"""Shared helpers for the parity and error suites.

Everything here is deterministic: datasets come from fixed seeds, and every
builder is cached so that a model is trained at most once per test session.

The central pieces are

* small datasets (``regression_data``, ``categorical_data``, ...),
* ``Case``: one trained native model plus the native scoring call that rtml
  has to reproduce,
* ``probe_rows``: the rows a parity test scores, i.e. training rows, fresh
  rows, extreme values, NaNs, and rows whose values sit exactly on a split
  threshold of the trained model or one float step either side of it,
* ``assert_parity``: the comparison, with a failure message that names the
  offending rows, the value rtml returned and the value the native library
  returned.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

# rtml has to agree with the native library to 1e-5 relative.  The absolute
# floor covers outputs that are sums of a few dozen float32 leaf values: the
# native libraries accumulate in float32 (XGBoost) or float64 (LightGBM,
# scikit-learn), so two correct evaluators can differ by a few float32 ulps of
# values of order one, i.e. well below 1e-6.  A wrong branch anywhere moves
# the output by a whole leaf value, which is orders of magnitude larger.
RTOL = 1e-5
ATOL = 1e-6

N_TRAIN = 600
N_FEATURES = 6
SEED = 20240611

# Values that are awkward for a tree evaluator: signed zeros, values LightGBM
# treats as zero (|x| <= 1e-35), float32 subnormals, and large magnitudes that
# still fit float32 (XGBoost and scikit-learn reject values that overflow it).
EXTREME_VALUES = (
    0.0,
    -0.0,
    1e-36,
    -1e-36,
    1e-40,
    -1e-40,
    1e-30,
    1e30,
    -1e30,
    3.0e38,
    -3.0e38,
)

# Values to try in an integer-coded categorical feature besides the observed
# categories: missing, negative, fractional, unseen and huge codes.  The native
# library defines what each of them means; rtml has to agree.
ODD_CATEGORY_VALUES = (np.nan, -1.0, -0.5, 0.5, 1.5, 2.999, 30.0, 1000.0, 1e6)


# ---------------------------------------------------------------------------
# datasets


@dataclasses.dataclass(frozen=True)
class Data:
    X: np.ndarray
    y: np.ndarray
    cat_features: tuple[int, ...] = ()
    n_categories: int = 0


def _base_features(rng: np.random.Generator, n: int) -> np.ndarray:
    X = np.empty((n, N_FEATURES), dtype=np.float64)
    X[:, 0] = rng.normal(size=n)
    X[:, 1] = rng.uniform(-3.0, 3.0, size=n)
    # Heavy ties: thresholds fall between repeated values, and probe rows that
    # reuse training values land right next to them.
    X[:, 2] = np.round(rng.normal(scale=2.0, size=n), 1)
    X[:, 3] = rng.exponential(scale=100.0, size=n)
    X[:, 4] = rng.integers(0, 5, size=n).astype(np.float64)
    # Values not representable in float32, so that float32 and float64 inputs
    # genuinely differ.
    X[:, 5] = rng.normal(size=n) * 1e-3 + 0.1
    return X


def _signal(X: np.ndarray) -> np.ndarray:
    Z = np.nan_to_num(X)
    return (
        np.sin(Z[:, 0] * 2.0)
        + 0.6 * Z[:, 1]
        + 0.3 * np.abs(Z[:, 2])
        + 0.004 * Z[:, 3]
        - 0.4 * Z[:, 4]
        + 300.0 * (Z[:, 5] - 0.1)
    )


@functools.cache
def regression_data(nan_fraction: float = 0.0) -> Data:
    rng = np.random.default_rng(SEED)
    X = _base_features(rng, N_TRAIN)
    y = _signal(X) + rng.normal(scale=0.1, size=N_TRAIN)
    if nan_fraction:
        mask = rng.random(X.shape) < nan_fraction
        mask[:, 4] = False  # keep one feature without missing values
        X[mask] = np.nan
    X.setflags(write=False)
    y.setflags(write=False)
    return Data(X, y)


@functools.cache
def binary_data(nan_fraction: float = 0.0) -> Data:
    d = regression_data(nan_fraction)
    y = (d.y > np.median(d.y)).astype(np.int64)
    y.setflags(write=False)
    return Data(d.X, y)


@functools.cache
def multiclass_data(nan_fraction: float = 0.0, n_classes: int = 3) -> Data:
    d = regression_data(nan_fraction)
    edges = np.quantile(d.y, np.linspace(0, 1, n_classes + 1)[1:-1])
    y = np.digitize(d.y, edges).astype(np.int64)
    y.setflags(write=False)
    return Data(d.X, y)


@functools.cache
def count_data() -> Data:
    d = regression_data()
    rng = np.random.default_rng(SEED + 1)
    y = rng.poisson(np.exp(0.3 * d.y / np.std(d.y))).astype(np.float64)
    y.setflags(write=False)
    return Data(d.X, y)


@functools.cache
def positive_data() -> Data:
    d = regression_data()
    y = np.exp(0.3 * d.y / np.std(d.y)) + 0.05
    y.setflags(write=False)
    return Data(d.X, y)


@functools.cache
def multi_target_data() -> Data:
    d = regression_data()
    Y = np.column_stack([d.y, np.cos(d.X[:, 0]) * 3.0 + d.X[:, 4]])
    Y.setflags(write=False)
    return Data(d.X, Y)


@functools.cache
def ranking_data() -> tuple[Data, np.ndarray]:
    """Relevance labels 0..3 and query ids for groups of 20 rows."""
    d = regression_data()
    edges = np.quantile(d.y, [0.25, 0.5, 0.75])
    y = np.digitize(d.y, edges).astype(np.float64)
    qid = np.repeat(np.arange(N_TRAIN // 20), 20)
    y.setflags(write=False)
    return Data(d.X, y), qid


N_CATEGORIES = 9


@functools.cache
def categorical_data(nan_fraction: float = 0.05) -> Data:
    """Features 1 and 4 are integer-coded categories 0..N_CATEGORIES-1.

    The category effects are not monotone in the code, so good splits need a
    real partition of the categories rather than a threshold.
    """
    rng = np.random.default_rng(SEED + 2)
    X = _base_features(rng, N_TRAIN)
    X[:, 1] = rng.integers(0, N_CATEGORIES, size=N_TRAIN)
    X[:, 4] = rng.integers(0, 4, size=N_TRAIN)
    effect1 = np.array([0.0, 2.0, -1.5, 0.5, 3.0, -2.5, 1.0, -0.5, 2.5])
    effect4 = np.array([1.0, -1.0, 0.0, 2.0])
    y = (
        effect1[X[:, 1].astype(int)]
        + effect4[X[:, 4].astype(int)]
        + np.sin(X[:, 0] * 2.0)
        + 0.3 * X[:, 2]
        + rng.normal(scale=0.1, size=N_TRAIN)
    )
    if nan_fraction:
        mask = rng.random(X.shape) < nan_fraction
        X[mask] = np.nan
    X.setflags(write=False)
    y.setflags(write=False)
    return Data(X, y, cat_features=(1, 4), n_categories=N_CATEGORIES)


@functools.cache
def categorical_binary_data() -> Data:
    d = categorical_data()
    y = (d.y > np.median(d.y)).astype(np.int64)
    y.setflags(write=False)
    return Data(d.X, y, d.cat_features, d.n_categories)


CATEGORY_NAMES = ("red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "grey")
COLUMN_NAMES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")


def as_frame(X: np.ndarray, cat_features: Sequence[int] = ()) -> Any:
    """A DataFrame with named columns; categorical columns get category dtype."""
    import pandas as pd

    cols = {}
    for j, name in enumerate(COLUMN_NAMES[: X.shape[1]]):
        if j in cat_features:
            codes = X[:, j]
            labels = [None if np.isnan(v) else CATEGORY_NAMES[int(v)] for v in codes]
            cols[name] = pd.Categorical(labels, categories=list(CATEGORY_NAMES))
        else:
            cols[name] = X[:, j]
    return pd.DataFrame(cols)


# ---------------------------------------------------------------------------
# cases


@dataclasses.dataclass
class Case:
    """A trained native model and the scoring call rtml must reproduce.

    ``predict(X)`` and ``raw(X)`` call the native library on exactly the
    array (or frame) rtml is given.  ``splits`` lists (feature, threshold) of
    every numerical split, ``cat_features`` the integer-coded categorical
    features, both used to build probe rows.
    """

    name: str
    source: Any
    predict: Callable[[Any], np.ndarray]
    X: np.ndarray
    splits: list[tuple[int, float]]
    raw: Callable[[Any], np.ndarray] | None = None
    cat_features: tuple[int, ...] = ()
    num_trees: int | None = None
    num_outputs: int | None = None
    feature_names: list[str] | None = None
    # Probe NaN rows only where the native model accepts NaN.
    allow_nan: bool = True
    _rtml: Any = dataclasses.field(default=None, repr=False)

    def rtml_model(self) -> Any:
        """rtml.Model.load(source), loaded once per case."""
        if self._rtml is None:
            import rtml

            self._rtml = rtml.Model.load(self.source)
        return self._rtml

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """The probe rows (float64, C order); see probe_rows."""
        rows = probe_rows(self)
        rows.setflags(write=False)
        return rows


# ---------------------------------------------------------------------------
# probe rows


def neighbours(t: float) -> list[float]:
    """t itself and its float32 and float64 neighbours, as float64 values."""
    t64 = np.float64(t)
    t32 = np.float32(t)
    out = [
        t64,
        np.nextafter(t64, np.inf),
        np.nextafter(t64, -np.inf),
        np.float64(t32),
        np.float64(np.nextafter(t32, np.float32(np.inf))),
        np.float64(np.nextafter(t32, np.float32(-np.inf))),
    ]
    return [float(v) for v in out if np.isfinite(v) and abs(v) <= 3.0e38]


def boundary_groups(
    X: np.ndarray,
    splits: Sequence[tuple[int, float]],
    *,
    max_splits: int = 250,
    seed: int = 0,
) -> list[np.ndarray]:
    """For each split, groups of rows that differ only in the split feature,
    which takes the threshold and its float32/float64 neighbours.

    Each split gets two base rows: the training row whose value in that
    feature is nearest the threshold (likely to reach the split node), and a
    random training row.
    """
    rng = np.random.default_rng(seed)
    uniq = sorted({(int(f), float(t)) for f, t in splits})
    if len(uniq) > max_splits:
        keep = rng.choice(len(uniq), size=max_splits, replace=False)
        uniq = [uniq[i] for i in sorted(keep)]
    groups = []
    for f, t in uniq:
        values = neighbours(t)
        if not values:
            continue
        distance = np.abs(X[:, f] - t)
        distance[np.isnan(distance)] = np.inf
        for base in (int(np.argmin(distance)), int(rng.integers(len(X)))):
            group = np.repeat(X[base : base + 1], len(values), axis=0)
            group[:, f] = values
            groups.append(group)
    return groups


def boundary_rows(
    X: np.ndarray,
    splits: Sequence[tuple[int, float]],
    *,
    max_splits: int = 250,
    seed: int = 0,
) -> np.ndarray:
    """Rows whose value in a split feature is on, or one float step beside,
    that split's threshold (see boundary_groups)."""
    groups = boundary_groups(X, splits, max_splits=max_splits, seed=seed)
    if not groups:
        return np.empty((0, X.shape[1]))
    return np.concatenate(groups, axis=0).astype(np.float64)


def extreme_rows(X: np.ndarray, *, skip: Sequence[int] = (), seed: int = 1) -> np.ndarray:
    """EXTREME_VALUES in each feature (except ``skip``) and constant rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(X.shape[1]):
        if f in skip:
            continue
        for v in EXTREME_VALUES:
            row = X[rng.integers(len(X))].copy()
            row[f] = v
            rows.append(row)
    for v in (0.0, -0.0, 1e30, -1e30):
        row = np.full(X.shape[1], v)
        row[list(skip)] = 0.0
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def nan_rows(X: np.ndarray, *, seed: int = 2) -> np.ndarray:
    """Each feature missing alone, pairs missing, and an all-missing row."""
    rng = np.random.default_rng(seed)
    rows = []
    p = X.shape[1]
    for f in range(p):
        for _ in range(4):
            row = X[rng.integers(len(X))].copy()
            row[f] = np.nan
            rows.append(row)
    for f in range(p - 1):
        row = X[rng.integers(len(X))].copy()
        row[f] = row[f + 1] = np.nan
        rows.append(row)
    rows.append(np.full(p, np.nan))
    return np.asarray(rows, dtype=np.float64)


def category_rows(
    X: np.ndarray, cat_features: Sequence[int], *, odd: bool = False, seed: int = 3
) -> np.ndarray:
    """Every observed category of each categorical feature, or with odd=True
    the ODD_CATEGORY_VALUES (missing, negative, fractional, unseen codes)."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in cat_features:
        observed = np.unique(X[:, f][~np.isnan(X[:, f])])
        values = ODD_CATEGORY_VALUES if odd else observed
        for v in values:
            for _ in range(3):
                row = X[rng.integers(len(X))].copy()
                row[f] = v
                rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(-1, X.shape[1])


def fresh_rows(
    X: np.ndarray, n: int = 200, *, skip: Sequence[int] = (), seed: int = 4
) -> np.ndarray:
    """Rows drawn column-wise from the training values plus some jitter
    (no jitter in the ``skip`` features, which hold category codes)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, X.shape[1]))
    for f in range(X.shape[1]):
        col = X[:, f]
        out[:, f] = rng.choice(col, size=n)
        if f in skip:
            continue
        jitter = rng.random(n) < 0.5
        out[jitter, f] = out[jitter, f] + rng.normal(scale=0.05, size=jitter.sum()) * (
            1.0 + np.abs(out[jitter, f])
        )
    return out


def probe_rows(case: Case) -> np.ndarray:
    """All probe rows for a case, as float64 (cast as needed by the test)."""
    X = case.X
    parts = [
        X[:150],
        fresh_rows(X, skip=case.cat_features),
        boundary_rows(X, case.splits),
        extreme_rows(X, skip=case.cat_features),
    ]
    if case.cat_features:
        parts.append(category_rows(X, case.cat_features))
    if case.allow_nan:
        parts.append(nan_rows(X))
    rows = np.concatenate(parts, axis=0)
    if not case.allow_nan:
        rows = rows[~np.isnan(rows).any(axis=1)]
    return rows


# ---------------------------------------------------------------------------
# comparison


def _fmt_row(row: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(v)) if row.dtype.kind == "f" else repr(v) for v in row) + "]"


def assert_parity(
    got: Any,
    want: Any,
    X: Any = None,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    what: str = "",
) -> None:
    """Shape must match exactly, values to rtol/atol on every element.

    On failure the message lists up to eight offending rows with their input
    values (repr of the exact floats), rtml's output and the native output.
    """
    got_a = np.asarray(got)
    want_a = np.asarray(want)
    label = f"{what}: " if what else ""
    if got_a.shape != want_a.shape:
        raise AssertionError(
            f"{label}rtml returned shape {got_a.shape}, native returned {want_a.shape}"
        )
    if got_a.size == 0:
        return
    if got_a.dtype.kind not in "fiub":
        raise AssertionError(f"{label}rtml returned non-numeric dtype {got_a.dtype}")
    got_f = got_a.astype(np.float64)
    want_f = want_a.astype(np.float64)
    ok = np.isclose(got_f, want_f, rtol=rtol, atol=atol, equal_nan=True)
    if ok.all():
        return
    bad = ~ok
    if bad.ndim == 0:
        raise AssertionError(f"{label}rtml {got_f!r} != native {want_f!r}")
    bad_rows = np.nonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]
    lines = [
        (
            f"{label}{len(bad_rows)} of {got_a.shape[0]} rows differ "
            f"(rtol={rtol}, atol={atol}); first ones:"
        )
    ]
    Xa = None
    if X is not None:
        try:
            Xa = np.asarray(X)
        except Exception:  # only used for the failure message
            Xa = None
    for i in bad_rows[:8]:
        row = ""
        if Xa is not None and Xa.ndim == 2 and i < len(Xa):
            row = f" X={_fmt_row(Xa[i])} ({Xa.dtype})"
        lines.append(f"  row {i}:{row}\n    rtml={got_f[i]!r}\n    native={want_f[i]!r}")
    raise AssertionError("\n".join(lines))


# ---------------------------------------------------------------------------
# the checks every numpy-fed case goes through


class ParityChecks:
    """Mixin of parity tests; a test class supplies a ``case`` fixture.

    The ``model`` fixture (conftest) is ``case.rtml_model()``.
    """

    def test_float64(self, case: Case, model: Any) -> None:
        rows = np.ascontiguousarray(case.rows, dtype=np.float64)
        assert_parity(model.predict(rows), case.predict(rows), rows, what=f"{case.name} float64")

    def test_float32(self, case: Case, model: Any) -> None:
        rows = np.ascontiguousarray(case.rows, dtype=np.float32)
        assert_parity(model.predict(rows), case.predict(rows), rows, what=f"{case.name} float32")

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_fortran_order(self, case: Case, model: Any, dtype: type) -> None:
        rows = np.asfortranarray(case.rows, dtype=dtype)
        assert rows.flags.f_contiguous and not rows.flags.c_contiguous
        assert_parity(
            model.predict(rows),
            case.predict(np.ascontiguousarray(rows)),
            rows,
            what=f"{case.name} Fortran {np.dtype(dtype).name}",
        )

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_strided_view(self, case: Case, model: Any, dtype: type) -> None:
        # Every other row and every other column of a wider buffer.
        n, p = case.rows.shape
        buf = np.zeros((2 * n, 2 * p), dtype=dtype)
        buf[::2, ::2] = case.rows
        view = buf[::2, ::2]
        assert not view.flags.c_contiguous and not view.flags.f_contiguous
        dense = np.ascontiguousarray(view)
        assert_parity(model.predict(view), case.predict(dense), dense, what=f"{case.name} strided")

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_raw_score(self, case: Case, model: Any, dtype: type) -> None:
        if case.raw is None:
            pytest.skip(f"{case.name}: the native library defines no raw score")
        rows = np.ascontiguousarray(case.rows, dtype=dtype)
        assert_parity(
            model.predict(rows, raw_score=True),
            case.raw(rows),
            rows,
            what=f"{case.name} raw_score {np.dtype(dtype).name}",
        )

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_single_row(self, case: Case, model: Any, dtype: type) -> None:
        rows = case.rows.astype(dtype)
        picks = list(range(0, len(rows), max(1, len(rows) // 12)))
        if case.allow_nan:
            picks.append(len(rows) - 1)  # the all-NaN row
        for i in picks:
            row = rows[i]
            want = np.asarray(case.predict(row[None, :]))[0]
            got = model.predict(row)
            if np.ndim(want) == 0:
                assert isinstance(got, float), (
                    f"{case.name}: 1-D input to a single-output model must give a "
                    f"float, got {type(got).__name__}"
                )
            else:
                assert isinstance(got, np.ndarray) and got.shape == want.shape, (
                    f"{case.name}: 1-D input must give shape {want.shape}, got "
                    f"{getattr(got, 'shape', type(got).__name__)}"
                )
            assert_parity(
                np.atleast_1d(got), np.atleast_1d(want), row[None, :], what=f"{case.name} row {i}"
            )

    def test_boundary_rows_cross_splits(self, case: Case, model: Any) -> None:
        """Guards the probe design: for some splits, moving the value by one
        float step across the threshold changes the native output, i.e. the
        probe rows sit where evaluation precision matters.  rtml must follow
        the native library through every such group."""
        groups = boundary_groups(case.X, case.splits)
        if not groups:
            pytest.skip(f"{case.name}: no numerical splits")
        rows = np.concatenate(groups, axis=0)
        want = np.asarray(case.predict(rows)).reshape(len(rows), -1)
        crossing = 0
        start = 0
        for group in groups:
            block = want[start : start + len(group)]
            start += len(group)
            crossing += bool(np.ptp(block, axis=0).max() > 0)
        assert crossing >= min(5, len(groups) // 10), (
            f"{case.name}: only {crossing} of {len(groups)} threshold groups change the "
            "native output; threshold extraction is probably wrong"
        )
        assert_parity(model.predict(rows), case.predict(rows), rows, what=f"{case.name} groups")

    def test_properties(self, case: Case, model: Any) -> None:
        assert model.num_features == case.X.shape[1]
        if case.num_trees is not None:
            assert model.num_trees == case.num_trees
        # num_outputs is the number of columns predict returns (1: a 1-D result).
        want = np.asarray(case.predict(case.X[:3]))
        assert model.num_outputs == (1 if want.ndim == 1 else want.shape[1])
        if case.num_outputs is not None:
            assert model.num_outputs == case.num_outputs
        names = model.feature_names
        if case.feature_names is not None:
            assert names == case.feature_names
        else:
            assert names is None or (
                isinstance(names, list)
                and len(names) == case.X.shape[1]
                and all(isinstance(n, str) for n in names)
            )
        text = repr(model)
        assert f"{model.num_trees} tree" in text, text
        assert f"{model.num_features} feature" in text, text

    def test_save_load(self, case: Case, model: Any, tmp_path: Any) -> None:
        import rtml

        path = tmp_path / f"{case.name}.rtml"
        model.save(path)
        again = rtml.Model.load(path)
        again_str = rtml.Model.load(str(path))
        rows = case.rows
        want = model.predict(rows)
        np.testing.assert_array_equal(again.predict(rows), want)
        np.testing.assert_array_equal(
            again_str.predict(rows.astype(np.float32)), model.predict(rows.astype(np.float32))
        )
        if case.raw is not None:
            np.testing.assert_array_equal(
                again.predict(rows, raw_score=True), model.predict(rows, raw_score=True)
            )
        for attr in ("num_features", "num_trees", "num_outputs", "feature_names"):
            assert getattr(again, attr) == getattr(model, attr), attr
        # And the reloaded model still matches the native library.
        assert_parity(again.predict(rows), case.predict(rows), rows, what=f"{case.name} reloaded")

    def test_threads_agree(self, case: Case, tmp_path: Any) -> None:
        import rtml

        rows = np.tile(case.rows, (4, 1))
        one = rtml.Model.load(case.source, n_threads=1).predict(rows)
        two = rtml.Model.load(case.source, n_threads=2).predict(rows)
        default = rtml.Model.load(case.source).predict(rows)
        np.testing.assert_array_equal(two, one)
        np.testing.assert_array_equal(default, one)


class CategoryChecks:
    """Extra checks for cases with integer-coded categorical features."""

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_odd_category_codes(self, case: Case, model: Any, dtype: type) -> None:
        rows = category_rows(case.X, case.cat_features, odd=True).astype(dtype)
        if not case.allow_nan:
            rows = rows[~np.isnan(rows).any(axis=1)]
        assert_parity(model.predict(rows), case.predict(rows), rows, what=f"{case.name} odd codes")
