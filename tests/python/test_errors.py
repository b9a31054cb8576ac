"""rtml's errors: one hierarchy under rtml.RtmlError, raised for bad input to
predict (InputError), unreadable model files (ModelFormatError) and models rtml
cannot evaluate exactly (UnsupportedModelError), with messages that name what
was wrong and what was expected.  Damaged .rtml files (every prefix, every
single-byte corruption, a future format version) must raise ModelFormatError,
never crash: those loops run in a subprocess so a crash is reported with the
offending offset instead of taking the test session down.
"""

from __future__ import annotations

import functools
import re
import struct
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from _models import (
    COLUMN_NAMES,
    as_frame,
    assert_parity,
    binary_data,
    categorical_data,
    multi_target_data,
    multiclass_data,
    positive_data,
    regression_data,
)
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression

import rtml

XGB = {"max_depth": 3, "nthread": 1, "seed": 1}
LGB = {"num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1, "num_threads": 1, "seed": 1}


# --- small models ------------------------------------------------------------------------


@functools.cache
def xgb_regressor() -> xgb.Booster:
    d = regression_data(0.1)
    return xgb.train(XGB, xgb.DMatrix(d.X, d.y), 5)


@functools.cache
def xgb_softprob() -> xgb.Booster:
    d = multiclass_data()
    params = {**XGB, "objective": "multi:softprob", "num_class": 3}
    return xgb.train(params, xgb.DMatrix(d.X, d.y), 3)


@functools.cache
def xgb_softmax() -> xgb.Booster:
    d = multiclass_data()
    params = {**XGB, "objective": "multi:softmax", "num_class": 3}
    return xgb.train(params, xgb.DMatrix(d.X, d.y), 3)


@functools.cache
def tiny_model() -> Any:
    """The smallest useful model: 3 trees of depth 2 (a short .rtml file)."""
    d = regression_data()
    booster = xgb.train({**XGB, "max_depth": 2}, xgb.DMatrix(d.X[:, :3], d.y), 3)
    return rtml.Model.load(booster), np.ascontiguousarray(d.X[:50, :3])


@functools.cache
def frame_model() -> xgb.XGBRegressor:
    d = regression_data()
    est = xgb.XGBRegressor(n_estimators=5, max_depth=3, n_jobs=1)
    return est.fit(as_frame(d.X), d.y)


@functools.cache
def lgb_multiclass() -> lgb.Booster:
    d = multiclass_data()
    params = {**LGB, "objective": "multiclass", "num_class": 3}
    return lgb.train(params, lgb.Dataset(d.X, d.y), 3)


@functools.cache
def rf_classifier() -> RandomForestClassifier:
    d = binary_data()
    return RandomForestClassifier(n_estimators=5, max_depth=5, random_state=0).fit(d.X, d.y)


@functools.cache
def rf_multi_output() -> RandomForestRegressor:
    d = multi_target_data()
    return RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(d.X, d.y)


# --- the hierarchy -------------------------------------------------------------------------


def test_hierarchy() -> None:
    assert issubclass(rtml.RtmlError, Exception)
    for cls in (rtml.InputError, rtml.ModelFormatError, rtml.UnsupportedModelError):
        assert issubclass(cls, rtml.RtmlError), cls
    assert not issubclass(rtml.InputError, rtml.ModelFormatError)
    assert not issubclass(rtml.ModelFormatError, rtml.InputError)
    assert not issubclass(rtml.UnsupportedModelError, rtml.ModelFormatError)


def test_options_are_keyword_only() -> None:
    model = rtml.Model.load(xgb_regressor())
    X = regression_data().X[:3]
    with pytest.raises(TypeError):
        model.predict(X, True)
    with pytest.raises(TypeError):
        rtml.Model.load(xgb_regressor(), 2)


# --- bad input to predict ---------------------------------------------------------------


def _mentions(message: str, number: int) -> bool:
    return re.search(rf"(?<![\d.]){number}(?![\d.])", message) is not None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_cols", [0, 1, 5, 7, 60])
def test_wrong_feature_count(dtype: type, n_cols: int) -> None:
    model = rtml.Model.load(xgb_regressor())
    assert model.num_features == 6
    X = np.ones((4, n_cols), dtype=dtype)
    with pytest.raises(rtml.InputError) as err:
        model.predict(X)
    msg = str(err.value)
    assert _mentions(msg, 6) and _mentions(msg, n_cols), msg
    with pytest.raises(rtml.InputError) as err:
        model.predict(np.ones(n_cols, dtype=dtype))  # one row, 1-D
    msg = str(err.value)
    assert _mentions(msg, 6) and _mentions(msg, n_cols), msg


def test_wrong_feature_count_fortran_and_raw() -> None:
    model = rtml.Model.load(xgb_softprob())
    X = np.asfortranarray(np.ones((4, 5)))
    with pytest.raises(rtml.InputError):
        model.predict(X)
    with pytest.raises(rtml.InputError):
        model.predict(X, raw_score=True)


def test_wrong_feature_count_empty_batch() -> None:
    model = rtml.Model.load(xgb_regressor())
    with pytest.raises(rtml.InputError):
        model.predict(np.ones((0, 5)))


@pytest.mark.parametrize(
    "X",
    [
        np.ones((2, 3, 6)),
        np.float64(1.0),
    ],
    ids=["3-D", "0-D"],
)
def test_wrong_rank(X: Any) -> None:
    model = rtml.Model.load(xgb_regressor())
    with pytest.raises(rtml.InputError):
        model.predict(X)


def test_object_dtype() -> None:
    model = rtml.Model.load(xgb_regressor())
    X = np.empty((3, 6), dtype=object)
    X[:] = 1.5
    X[1, 2] = "oops"
    with pytest.raises(rtml.InputError) as err:
        model.predict(X)
    assert "object" in str(err.value), str(err.value)
    with pytest.raises(rtml.InputError):
        model.predict(X[0])


@pytest.mark.parametrize("dtype", ["<U8", "S8"])
def test_string_arrays(dtype: str) -> None:
    model = rtml.Model.load(xgb_regressor())
    X = np.full((3, 6), "1.5", dtype=dtype)
    with pytest.raises(rtml.InputError) as err:
        model.predict(X)
    assert str(np.dtype(dtype)) in str(err.value) or "str" in str(err.value), str(err.value)
    with pytest.raises(rtml.InputError):
        model.predict(X[0])


def test_missing_dataframe_column() -> None:
    est = frame_model()
    model = rtml.Model.load(est)
    frame = as_frame(regression_data().X[:10]).drop(columns=["gamma"])
    with pytest.raises(rtml.InputError) as err:
        model.predict(frame)
    assert "gamma" in str(err.value), str(err.value)


def test_renamed_dataframe_column() -> None:
    model = rtml.Model.load(frame_model())
    frame = as_frame(regression_data().X[:10]).rename(columns={"delta": "DELTA"})
    with pytest.raises(rtml.InputError) as err:
        model.predict(frame)
    assert "delta" in str(err.value), str(err.value)


def test_string_dataframe_column() -> None:
    model = rtml.Model.load(frame_model())
    frame = as_frame(regression_data().X[:10])
    frame["beta"] = ["x"] * len(frame)
    with pytest.raises(rtml.InputError) as err:
        model.predict(frame)
    assert "beta" in str(err.value), str(err.value)


def test_dataframe_extra_column_is_ignored_or_rejected() -> None:
    """An extra column is not a missing one: either ignored (scored by name)
    or rejected with InputError, never silently shifting the features."""
    est = frame_model()
    model = rtml.Model.load(est)
    frame = as_frame(regression_data().X[:20])
    extra = frame.assign(unused=np.arange(20.0))
    extra = extra[["unused", *COLUMN_NAMES]]
    try:
        got = model.predict(extra)
    except rtml.InputError:
        return
    assert_parity(got, est.predict(frame), frame.to_numpy(), what="extra column")


# --- empty batches -------------------------------------------------------------------------


def _native_shape(fn: Callable[[np.ndarray], Any], X: np.ndarray) -> tuple[int, ...]:
    return np.asarray(fn(X[:1])).shape[1:]


EMPTY_CASES: dict[str, Callable[[], tuple[Any, Callable[[np.ndarray], Any], np.ndarray]]] = {
    "xgb_regression": lambda: (
        xgb_regressor(),
        lambda A: xgb_regressor().predict(xgb.DMatrix(A)),
        regression_data().X,
    ),
    "xgb_softprob": lambda: (
        xgb_softprob(),
        lambda A: xgb_softprob().predict(xgb.DMatrix(A)),
        multiclass_data().X,
    ),
    "xgb_softmax": lambda: (
        xgb_softmax(),
        lambda A: xgb_softmax().predict(xgb.DMatrix(A)),
        multiclass_data().X,
    ),
    "lgb_multiclass": lambda: (lgb_multiclass(), lgb_multiclass().predict, multiclass_data().X),
    "rf_classifier": lambda: (rf_classifier(), rf_classifier().predict_proba, binary_data().X),
    "rf_multi_output": lambda: (rf_multi_output(), rf_multi_output().predict, binary_data().X),
}


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(EMPTY_CASES))
def test_empty_batch(name: str, dtype: type, order: str) -> None:
    source, native, X = EMPTY_CASES[name]()
    model = rtml.Model.load(source)
    want = (0, *_native_shape(native, X))
    empty = np.zeros((0, X.shape[1]), dtype=dtype, order=order)
    got = model.predict(empty)
    assert isinstance(got, np.ndarray) and got.shape == want, (getattr(got, "shape", got), want)


def test_empty_batch_raw_and_frame() -> None:
    model = rtml.Model.load(xgb_softmax())
    X = multiclass_data().X
    assert model.predict(X[:0]).shape == (0,)
    assert model.predict(X[:0], raw_score=True).shape == (0, 3)
    fm = rtml.Model.load(frame_model())
    assert fm.predict(as_frame(X[:0])).shape == (0,)


# --- values the native library rejects, or accepts ----------------------------------------


def like_native(model: Any, native: Callable[[Any], Any], X: Any, what: str) -> None:
    """rtml raises InputError where the native call raises, else matches it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = native(X)
    except Exception as native_error:
        with pytest.raises(rtml.InputError):
            got = model.predict(X)
            pytest.fail(
                f"{what}: native raised {type(native_error).__name__}: "
                f"{str(native_error).splitlines()[0]!r}; rtml returned {got!r}"
            )
        return
    rows = X if isinstance(X, np.ndarray) else None
    assert_parity(model.predict(X), want, rows, what=what)


@functools.cache
def _categorical_models() -> dict[str, tuple[Any, Callable[[Any], Any], int]]:
    """name -> (source, native call on a float matrix, categorical column)."""
    d = categorical_data()
    types = ["q", "c", "q", "q", "c", "q"]
    booster = xgb.train(
        {**XGB, "max_cat_to_onehot": 1},
        xgb.DMatrix(d.X, d.y, feature_types=types, enable_categorical=True),
        5,
    )
    ds = lgb.Dataset(d.X, d.y, categorical_feature=list(d.cat_features))
    lgbm = lgb.train({**LGB, "min_data_per_group": 5, "cat_smooth": 1.0}, ds, 5)
    hgb = HistGradientBoostingRegressor(
        max_iter=5, categorical_features=list(d.cat_features), random_state=0
    ).fit(d.X, d.y)
    return {
        "xgboost": (
            booster,
            lambda A: booster.predict(xgb.DMatrix(A, feature_types=types, enable_categorical=True)),
            1,
        ),
        "lightgbm": (lgbm, lgbm.predict, 1),
        "sklearn_hgb": (hgb, hgb.predict, 1),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lib", ["xgboost", "lightgbm", "sklearn_hgb"])
def test_nan_in_categorical_feature(lib: str, dtype: type) -> None:
    source, native, col = _categorical_models()[lib]
    X = np.array(categorical_data().X[:40], dtype=dtype)
    X[::3, col] = np.nan
    like_native(rtml.Model.load(source), native, X, f"{lib} NaN category")


@functools.cache
def _frame_categorical() -> xgb.XGBRegressor:
    d = categorical_data()
    est = xgb.XGBRegressor(n_estimators=5, max_depth=3, enable_categorical=True, n_jobs=1)
    return est.fit(as_frame(d.X, d.cat_features), d.y)


def test_nan_in_pandas_category() -> None:
    est = _frame_categorical()
    d = categorical_data()
    frame = as_frame(d.X[:40], d.cat_features)
    frame.loc[::3, "beta"] = None
    like_native(rtml.Model.load(est), est.predict, frame, "pandas NaN category")


def test_unseen_pandas_category() -> None:
    """XGBoost 3 rejects a category it never saw in training; so must rtml."""
    est = _frame_categorical()
    d = categorical_data()
    frame = as_frame(d.X[:10], d.cat_features)
    labels = frame["beta"].astype(str).tolist()
    labels[4] = "zzz_unseen"  # sorts after every training category
    frame["beta"] = pd.Categorical(labels)
    model = rtml.Model.load(est)
    like_native(model, est.predict, frame, "unseen category")
    with pytest.raises(rtml.InputError) as err:
        model.predict(frame)
    msg = str(err.value)
    assert "zzz_unseen" in msg or "beta" in msg, msg


NONFINITE: dict[str, Callable[[], tuple[Any, Callable[[Any], Any]]]] = {
    # scikit-learn's tree ensembles reject inf; HGB and IsolationForest take it.
    "rf_inf": lambda: (rf_classifier(), rf_classifier().predict_proba),
    "hgb_inf": lambda: (_hgb(), _hgb().predict),
    "isolation_forest_inf": lambda: (_iso(), _iso().score_samples),
    # GradientBoosting* rejects NaN.
    "gb_nan": lambda: (_gb(), _gb().predict),
    "lightgbm_inf": lambda: (lgb_multiclass(), lgb_multiclass().predict),
    # The wrappers' predict (inplace_predict) takes inf.
    "xgb_wrapper_inf": lambda: (frame_model(), frame_model().predict),
}


@functools.cache
def _hgb() -> HistGradientBoostingRegressor:
    d = regression_data()
    return HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(d.X, d.y)


@functools.cache
def _iso() -> IsolationForest:
    return IsolationForest(n_estimators=5, random_state=0).fit(regression_data().X)


@functools.cache
def _gb() -> GradientBoostingRegressor:
    d = regression_data()
    return GradientBoostingRegressor(n_estimators=5, random_state=0).fit(d.X, d.y)


@pytest.mark.parametrize("name", sorted(NONFINITE))
def test_nonfinite_values_like_native(name: str) -> None:
    source, native = NONFINITE[name]()
    X = np.array(regression_data().X[:12])
    if name.endswith("_nan"):
        X[2, 3] = np.nan
    else:
        X[2, 3] = np.inf
        X[5, 0] = -np.inf
    model = rtml.Model.load(source)
    if name.startswith("xgb_wrapper"):
        like_native(model, native, as_frame(X), name)
    else:
        like_native(model, native, X, name)


# --- models rtml must evaluate exactly or refuse ---------------------------------------------


def _xgb_exotic(params: dict, data: Any, rounds: int = 5) -> Callable[[], tuple]:
    def build() -> tuple:
        d = data()
        base = {"nthread": 1, "seed": 1}
        if params.get("booster") != "gblinear":
            base["max_depth"] = 3
        b = xgb.train({**base, **params}, xgb.DMatrix(d.X, d.y), rounds)
        return b, lambda A: b.predict(xgb.DMatrix(A)), d.X

    return build


def _lgb_exotic(params: dict, data: Any, rounds: int = 5) -> Callable[[], tuple]:
    def build() -> tuple:
        d = data()
        b = lgb.train({**LGB, **params}, lgb.Dataset(d.X, d.y), rounds)
        return b, b.predict, d.X

    return build


def _gb_init_estimator() -> tuple:
    d = binary_data()
    est = GradientBoostingClassifier(
        n_estimators=5, init=LogisticRegression(max_iter=500), random_state=0
    ).fit(d.X, d.y)
    return est, est.predict_proba, d.X


def _gb_init_zero() -> tuple:
    d = binary_data()
    est = GradientBoostingClassifier(n_estimators=5, init="zero", random_state=0).fit(d.X, d.y)
    return est, est.predict_proba, d.X


EXOTIC = {
    "xgb_gblinear": _xgb_exotic({"booster": "gblinear"}, regression_data),
    "xgb_multi_output_tree": _xgb_exotic(
        {"multi_strategy": "multi_output_tree", "tree_method": "hist"}, multi_target_data
    ),
    "xgb_binary_hinge": _xgb_exotic({"objective": "binary:hinge"}, binary_data),
    "xgb_binary_logitraw": _xgb_exotic({"objective": "binary:logitraw"}, binary_data),
    "xgb_reg_logistic": _xgb_exotic({"objective": "reg:logistic"}, binary_data),
    "xgb_absoluteerror": _xgb_exotic({"objective": "reg:absoluteerror"}, regression_data),
    "xgb_quantiles": _xgb_exotic(
        {"objective": "reg:quantileerror", "quantile_alpha": [0.2, 0.8]}, regression_data
    ),
    "xgb_multi_softprob_trees_per_class": _xgb_exotic(
        {"objective": "multi:softprob", "num_class": 3, "num_parallel_tree": 2}, multiclass_data
    ),
    "lgb_linear_tree": _lgb_exotic(
        {"objective": "regression", "linear_tree": True}, regression_data
    ),
    "lgb_multiclassova": _lgb_exotic(
        {"objective": "multiclassova", "num_class": 3}, multiclass_data
    ),
    "lgb_cross_entropy": _lgb_exotic({"objective": "cross_entropy"}, binary_data),
    "lgb_gamma": _lgb_exotic({"objective": "gamma"}, positive_data),
    "lgb_goss": _lgb_exotic({"objective": "binary", "data_sample_strategy": "goss"}, binary_data),
    "sklearn_gb_init_estimator": _gb_init_estimator,
    "sklearn_gb_init_zero": _gb_init_zero,
}


@pytest.mark.parametrize("name", sorted(EXOTIC))
def test_exact_or_unsupported(name: str) -> None:
    """Any model rtml accepts it scores exactly; otherwise UnsupportedModelError,
    never a silently different score."""
    source, native, X = EXOTIC[name]()
    try:
        model = rtml.Model.load(source)
    except rtml.UnsupportedModelError as exc:
        assert str(exc), "UnsupportedModelError needs a message"
        return
    rows = np.concatenate([X[:200], np.full((1, X.shape[1]), np.nan)])
    if name.startswith("sklearn_gb"):
        rows = rows[:-1]  # GradientBoosting rejects NaN
    for dtype in (np.float64, np.float32):
        A = rows.astype(dtype)
        assert_parity(model.predict(A), native(A), A, what=f"{name} {np.dtype(dtype).name}")


# --- sources rtml cannot load -------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [object(), 42, LogisticRegression(), {"trees": []}, np.zeros(3)],
    ids=["object", "int", "LogisticRegression", "dict", "ndarray"],
)
def test_unloadable_objects(source: Any) -> None:
    with pytest.raises((rtml.RtmlError, TypeError)):
        rtml.Model.load(source)


def test_unfitted_estimator() -> None:
    with pytest.raises((rtml.RtmlError, ValueError, AttributeError)):
        rtml.Model.load(RandomForestRegressor())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises((rtml.ModelFormatError, OSError)) as err:
        rtml.Model.load(tmp_path / "nope.rtml")
    assert "nope.rtml" in str(err.value)
    with pytest.raises((rtml.ModelFormatError, OSError)):
        rtml.Model.load(tmp_path)  # a directory


def _garbage(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("ext", ["rtml", "json", "ubj", "txt", "model", "bin", ""])
@pytest.mark.parametrize("size", [0, 1, 7, 64, 4096])
def test_garbage_file(tmp_path: Path, ext: str, size: int) -> None:
    path = tmp_path / (f"garbage.{ext}" if ext else "garbage")
    path.write_bytes(_garbage(size, seed=size))
    with pytest.raises(rtml.ModelFormatError):
        rtml.Model.load(path)
    with pytest.raises(rtml.ModelFormatError):
        rtml.Model.load(str(path))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("data.csv", b"a,b,c\n1,2,3\n"),
        ("empty.json", b""),
        ("object.json", b'{"hello": "world"}'),
        ("array.json", b"[1, 2, 3]"),
        ("broken.json", b'{"learner": {"gradient_booster": '),
        ("notmodel.txt", b"tree\nthis is not a lightgbm model\n"),
        ("text.txt", b"hello world\n"),
        ("magic_only.rtml", b"RTMLFRST"),
    ],
)
def test_not_a_model_file(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(rtml.ModelFormatError) as err:
        rtml.Model.load(path)
    assert str(err.value)


def test_unknown_file_type_message(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b,c\n1,2,3\n")
    with pytest.raises(rtml.ModelFormatError) as err:
        rtml.Model.load(path)
    msg = str(err.value)
    assert "data.csv" in msg, msg
    assert any(word in msg for word in (".json", ".txt", ".rtml", "xgboost", "XGBoost")), msg


def test_truncated_native_files(tmp_path: Path) -> None:
    """Truncated XGBoost files (which XGBoost rejects) and LightGBM text files
    cut before the end of their trees are ModelFormatError.  (LightGBM itself
    may crash on such files, so it is not run on them.)  A LightGBM file cut
    after "end of trees" keeps every tree: rtml may reject it or load it, and
    then it must score like the intact model."""
    d = multiclass_data()
    booster = xgb_softprob()
    booster.save_model(str(tmp_path / "m.json"))
    booster.save_model(str(tmp_path / "m.ubj"))
    lgb_multiclass().save_model(str(tmp_path / "m.txt"))
    for name in ("m.json", "m.ubj", "m.txt"):
        data = (tmp_path / name).read_bytes()
        end_of_trees = data.find(b"end of trees") if name == "m.txt" else len(data)
        assert end_of_trees > 0
        cuts = {1, 10, len(data) // 3, len(data) // 2, end_of_trees - 1, len(data) - 1}
        for cut in sorted(cuts):
            path = tmp_path / f"cut{cut}_{name}"
            path.write_bytes(data[:cut])
            if cut < end_of_trees:
                try:
                    model = rtml.Model.load(path)
                except rtml.ModelFormatError:
                    continue
                pytest.fail(
                    f"{name} ({len(data)} bytes) cut to {cut} bytes loaded as {model!r}; "
                    "expected ModelFormatError"
                )
            try:
                model = rtml.Model.load(path)
            except rtml.ModelFormatError:
                continue
            want = lgb_multiclass().predict(d.X)
            assert_parity(model.predict(d.X), want, d.X, what=f"{name} cut at {cut}")


# --- damaged .rtml files (run in a subprocess: a crash must not kill the session) -----------

_LOADER = textwrap.dedent(
    """
    import sys
    import rtml

    path = sys.argv[1]
    for line in sys.stdin:
        offset, = line.split()
        try:
            rtml.Model.load(path + "." + offset)
        except rtml.ModelFormatError:
            result = "ModelFormatError"
        except BaseException as exc:
            result = "other:" + type(exc).__name__ + ":" + str(exc).replace("\\n", " ")[:200]
        else:
            result = "loaded"
        print(offset, result, flush=True)
    """
)


def _load_each(base: Path, variants: dict[int, bytes]) -> dict[int, str]:
    """Writes each variant next to ``base`` and loads them all in a fresh
    interpreter; returns offset -> outcome.  A crash fails with the offset."""
    for key, data in variants.items():
        Path(f"{base}.{key}").write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, str(base)],
        input="".join(f"{k}\n" for k in variants),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    results = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line)
    if proc.returncode != 0:
        done = [int(k) for k in results]
        pending = [k for k in variants if k not in done]
        pytest.fail(
            f"loader died with return code {proc.returncode} (signal if negative) at "
            f"variant {pending[:1]} after {len(done)} variants; stderr tail: "
            f"{proc.stderr[-800:]}"
        )
    return {int(k): v for k, v in results.items()}


def _saved_tiny(tmp_path: Path) -> bytes:
    model, _ = tiny_model()
    path = tmp_path / "tiny.rtml"
    model.save(path)
    data = path.read_bytes()
    assert data.startswith(b"RTMLFRST"), data[:16]
    return data


def test_truncated_rtml_every_prefix(tmp_path: Path) -> None:
    data = _saved_tiny(tmp_path)
    assert len(data) < 64 * 1024, "tiny model unexpectedly large"
    outcomes = _load_each(tmp_path / "prefix", {n: data[:n] for n in range(len(data))})
    bad = {k: v for k, v in outcomes.items() if v != "ModelFormatError"}
    assert not bad, (
        f"{len(bad)} of {len(data)} prefixes did not raise ModelFormatError "
        f"(file is {len(data)} bytes); first: {dict(list(sorted(bad.items()))[:8])}"
    )


@pytest.mark.parametrize("mask", [0xFF, 0x01, 0x80])
def test_rtml_single_byte_corruption(tmp_path: Path, mask: int) -> None:
    data = _saved_tiny(tmp_path)
    variants = {}
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= mask
        variants[i] = bytes(damaged)
    outcomes = _load_each(tmp_path / f"flip{mask}", variants)
    bad = {k: v for k, v in outcomes.items() if v != "ModelFormatError"}
    assert not bad, (
        f"{len(bad)} of {len(data)} single-byte corruptions (xor {mask:#x}) did not raise "
        f"ModelFormatError; first: {dict(list(sorted(bad.items()))[:8])}"
    )


def test_rtml_trailing_bytes(tmp_path: Path) -> None:
    data = _saved_tiny(tmp_path)
    outcomes = _load_each(
        tmp_path / "trailing", {1: data + b"\0", 2: data + b"RTMLFRST", 3: data + data}
    )
    bad = {k: v for k, v in outcomes.items() if v != "ModelFormatError"}
    assert not bad, f"appended bytes were accepted: {bad}"


def _version_offset() -> int:
    """Where the format version lives: read from rtml's own file-format notes
    (core/src/forest/serialize.cc) so that a layout change fails loudly here."""
    root = Path(__file__).resolve().parents[2]
    src = (root / "core" / "src" / "forest" / "serialize.cc").read_text()
    m = re.search(r"offset\s+(\d+)\s+u32\s+format version", src)
    assert m, "could not find the format version field in serialize.cc's layout notes"
    return int(m.group(1))


@pytest.mark.parametrize("bump", [1, 1000, 0xFFFFFFFF])
def test_rtml_future_version(tmp_path: Path, bump: int) -> None:
    data = bytearray(_saved_tiny(tmp_path))
    offset = _version_offset()
    (version,) = struct.unpack_from("<I", data, offset)
    assert 1 <= version < 1000, f"implausible version {version} at offset {offset}"
    new = min(version + bump, 0xFFFFFFFF)
    struct.pack_into("<I", data, offset, new)
    path = tmp_path / "future.rtml"
    path.write_bytes(bytes(data))
    with pytest.raises(rtml.ModelFormatError) as err:
        rtml.Model.load(path)
    msg = str(err.value)
    assert "version" in msg.lower() and str(new) in msg, msg


def test_rtml_version_zero(tmp_path: Path) -> None:
    data = bytearray(_saved_tiny(tmp_path))
    struct.pack_into("<I", data, _version_offset(), 0)
    path = tmp_path / "v0.rtml"
    path.write_bytes(bytes(data))
    with pytest.raises(rtml.ModelFormatError):
        rtml.Model.load(path)


def test_rtml_header_flips(tmp_path: Path) -> None:
    """Every single-bit flip in the first 32 bytes (magic, version, sizes,
    checksum) is a ModelFormatError."""
    data = _saved_tiny(tmp_path)
    variants = {}
    for i in range(min(32, len(data))):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            variants[i * 8 + bit] = bytes(damaged)
    outcomes = _load_each(tmp_path / "hdr", variants)
    bad = {k: v for k, v in outcomes.items() if v != "ModelFormatError"}
    assert not bad, f"header bit flips (byte*8+bit) accepted: {dict(list(bad.items())[:8])}"


def test_rtml_loads_without_treelite(tmp_path: Path) -> None:
    model, X = tiny_model()
    path = tmp_path / "tiny.rtml"
    model.save(path)
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["treelite"] = None  # any import of treelite now fails
        import numpy as np
        import rtml
        model = rtml.Model.load({str(path)!r})
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "got.npy")!r}, model.predict(X))
        print(model.num_trees, model.num_features)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.load(tmp_path / "got.npy"), model.predict(X))
    assert proc.stdout.split() == [str(model.num_trees), str(model.num_features)]


def test_save_to_unwritable_path(tmp_path: Path) -> None:
    model, _ = tiny_model()
    with pytest.raises((rtml.RtmlError, OSError)):
        model.save(tmp_path / "no" / "such" / "dir" / "m.rtml")


def test_saved_file_metadata_round_trip(tmp_path: Path) -> None:
    model = rtml.Model.load(frame_model())
    model.save(tmp_path / "f.rtml")
    again = rtml.Model.load(tmp_path / "f.rtml")
    assert again.feature_names == list(COLUMN_NAMES)
    frame = as_frame(regression_data().X[:30])
    np.testing.assert_array_equal(again.predict(frame), model.predict(frame))
    with pytest.raises(rtml.InputError):
        again.predict(frame.drop(columns=["alpha"]))
