"""rtml.Model must reproduce LightGBM's own predictions exactly.

The oracle is ``Booster.predict(X)`` for boosters and .txt files,
``predict_proba`` for LGBMClassifier and ``predict`` for LGBMRegressor;
``raw_score=True`` on both sides for margins.  LightGBM keeps float64
thresholds, so every model here is trained on float64 data (with values that
float32 cannot represent) and scored with float32 and float64 inputs; probe
rows sit on every threshold read from ``dump_model`` and one float32/float64
step either side, plus NaNs, zeros, values LightGBM treats as zero, and every
category code, including negative, fractional and unseen ones.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from _models import (
    COLUMN_NAMES,
    Case,
    CategoryChecks,
    ParityChecks,
    as_frame,
    assert_parity,
    binary_data,
    categorical_binary_data,
    categorical_data,
    count_data,
    extreme_rows,
    multiclass_data,
    nan_rows,
    regression_data,
)

import rtml

ROUNDS = 15
BASE = {
    "num_leaves": 15,
    "min_data_in_leaf": 5,
    "learning_rate": 0.2,
    "verbose": -1,
    "seed": 11,
    "num_threads": 1,
    "deterministic": True,
}
CAT_PARAMS = {"min_data_per_group": 5, "cat_smooth": 1.0, "cat_l2": 1.0}


@functools.cache
def _tmpdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rtml-lgb-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def lgb_splits(booster: lgb.Booster) -> list[tuple[int, float]]:
    """(feature, threshold) of every numerical split; thresholds are the
    float64 values LightGBM compares against."""
    out: list[tuple[int, float]] = []

    def walk(node: dict) -> None:
        if "split_feature" not in node:
            return
        if node["decision_type"] == "<=":
            out.append((int(node["split_feature"]), float(node["threshold"])))
        walk(node["left_child"])
        walk(node["right_child"])

    for info in booster.dump_model()["tree_info"]:
        walk(info["tree_structure"])
    return out


def booster_case(
    name: str,
    booster: lgb.Booster,
    X: np.ndarray,
    *,
    cat_features: tuple[int, ...] = (),
    source: Any = None,
) -> Case:
    native = booster if source is None else lgb.Booster(model_file=str(source))
    return Case(
        name=name,
        source=booster if source is None else source,
        predict=native.predict,
        raw=lambda A: native.predict(A, raw_score=True),
        X=np.asarray(X),
        splits=lgb_splits(booster),
        cat_features=cat_features,
        num_trees=booster.num_trees(),
    )


def wrapper_case(name: str, est: Any, X: np.ndarray, *, cat_features=()) -> Case:
    is_classifier = isinstance(est, lgb.LGBMClassifier)
    return Case(
        name=name,
        source=est,
        predict=est.predict_proba if is_classifier else est.predict,
        raw=lambda A: est.predict(A, raw_score=True),
        X=np.asarray(X),
        splits=lgb_splits(est.booster_),
        cat_features=tuple(cat_features),
        num_trees=est.booster_.num_trees(),
    )


def _train(params: dict, X, y, *, rounds: int = ROUNDS, categorical=()) -> lgb.Booster:
    ds = lgb.Dataset(X, y, categorical_feature=list(categorical) or "auto", params={"verbose": -1})
    return lgb.train({**BASE, **params}, ds, rounds)


# --- numerical cases --------------------------------------------------------


def _binary() -> Case:
    d = binary_data(0.1)
    return booster_case("binary", _train({"objective": "binary"}, d.X, d.y), d.X)


def _multiclass() -> Case:
    d = multiclass_data(0.1)
    b = _train({"objective": "multiclass", "num_class": 3}, d.X, d.y, rounds=8)
    return booster_case("multiclass", b, d.X)


def _regression() -> Case:
    d = regression_data(0.1)
    return booster_case("regression", _train({"objective": "regression"}, d.X, d.y), d.X)


def _regression_no_nan() -> Case:
    # No missing values in training: missing_type is None everywhere, so a
    # NaN at predict time is scored as 0.0.
    d = regression_data()
    return booster_case("regression_no_nan", _train({"objective": "regression"}, d.X, d.y), d.X)


def _poisson() -> Case:
    d = count_data()
    return booster_case("poisson", _train({"objective": "poisson"}, d.X, d.y), d.X)


def _random_forest() -> Case:
    d = regression_data(0.1)
    params = {
        "objective": "regression",
        "boosting": "rf",
        "bagging_fraction": 0.7,
        "bagging_freq": 1,
        "feature_fraction": 0.8,
    }
    return booster_case("random_forest", _train(params, d.X, d.y, rounds=12), d.X)


def _random_forest_binary() -> Case:
    d = binary_data()
    params = {
        "objective": "binary",
        "boosting": "rf",
        "bagging_fraction": 0.6,
        "bagging_freq": 1,
    }
    return booster_case("random_forest_binary", _train(params, d.X, d.y, rounds=12), d.X)


def _txt_file() -> Case:
    d = multiclass_data(0.1)
    b = _train({"objective": "multiclass", "num_class": 3}, d.X, d.y, rounds=6)
    path = _tmpdir() / "multiclass.txt"
    b.save_model(str(path))
    return booster_case("file_txt", b, d.X, source=str(path))


def _lgbm_classifier() -> Case:
    d = binary_data(0.1)
    est = lgb.LGBMClassifier(n_estimators=ROUNDS, **_sk(BASE)).fit(d.X, d.y)
    return wrapper_case("LGBMClassifier_binary", est, d.X)


def _lgbm_classifier_multi() -> Case:
    d = multiclass_data()
    est = lgb.LGBMClassifier(n_estimators=8, **_sk(BASE)).fit(d.X, d.y)
    return wrapper_case("LGBMClassifier_multiclass", est, d.X)


def _lgbm_regressor() -> Case:
    d = regression_data(0.1)
    est = lgb.LGBMRegressor(n_estimators=ROUNDS, **_sk(BASE)).fit(d.X, d.y)
    return wrapper_case("LGBMRegressor", est, d.X)


def _sk(params: dict) -> dict:
    """BASE with the scikit-learn wrapper's parameter names."""
    out = dict(params)
    out["random_state"] = out.pop("seed")
    out["n_jobs"] = out.pop("num_threads")
    out["min_child_samples"] = out.pop("min_data_in_leaf")
    return out


NUMERIC_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (
        _binary,
        _multiclass,
        _regression,
        _regression_no_nan,
        _poisson,
        _random_forest,
        _random_forest_binary,
        _txt_file,
        _lgbm_classifier,
        _lgbm_classifier_multi,
        _lgbm_regressor,
    )
}


# --- categorical cases ----------------------------------------------------------


def _cat_regression() -> Case:
    # 9 categories > max_cat_to_onehot: many-vs-many (bitset) splits.
    d = categorical_data()
    b = _train({"objective": "regression", **CAT_PARAMS}, d.X, d.y, categorical=d.cat_features)
    return booster_case("categorical_regression", b, d.X, cat_features=d.cat_features)


def _cat_onehot_binary() -> Case:
    d = categorical_binary_data()
    b = _train(
        {"objective": "binary", "max_cat_to_onehot": 16, **CAT_PARAMS},
        d.X,
        d.y,
        categorical=d.cat_features,
    )
    return booster_case("categorical_onehot_binary", b, d.X, cat_features=d.cat_features)


def _cat_txt_file() -> Case:
    d = categorical_data()
    b = _train({"objective": "regression", **CAT_PARAMS}, d.X, d.y, categorical=d.cat_features)
    path = _tmpdir() / "categorical.txt"
    b.save_model(str(path))
    return booster_case(
        "categorical_file_txt", b, d.X, cat_features=d.cat_features, source=str(path)
    )


def _cat_lgbm_classifier() -> Case:
    d = categorical_binary_data()
    est = lgb.LGBMClassifier(n_estimators=ROUNDS, **_sk(BASE), **CAT_PARAMS)
    est.fit(d.X, d.y, categorical_feature=list(d.cat_features))
    return wrapper_case("categorical_LGBMClassifier", est, d.X, cat_features=d.cat_features)


CATEGORICAL_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (_cat_regression, _cat_onehot_binary, _cat_txt_file, _cat_lgbm_classifier)
}


class TestLightGBM(ParityChecks):
    @pytest.fixture(params=sorted(NUMERIC_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return NUMERIC_CASES[request.param]()


class TestLightGBMCategorical(ParityChecks, CategoryChecks):
    @pytest.fixture(params=sorted(CATEGORICAL_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return CATEGORICAL_CASES[request.param]()


def test_float64_thresholds_matter() -> None:
    """The probe rows really separate float32 from float64 evaluation: some
    rows score differently as float32 and as float64 in LightGBM itself, and
    rtml follows each."""
    case = NUMERIC_CASES["regression"]()
    rows = case.rows
    native64 = case.predict(rows)
    native32 = case.predict(rows.astype(np.float32))
    differ = native64 != native32
    assert differ.any(), "probe rows never hit a float64-only threshold gap"
    model = case.rtml_model()
    assert_parity(model.predict(rows[differ]), native64[differ], rows[differ], what="f64")
    rows32 = rows[differ].astype(np.float32)
    assert_parity(model.predict(rows32), native32[differ], rows32, what="f32")


# --- zero_as_missing: exact parity, or an explicit UnsupportedModelError -------


@functools.cache
def _zero_as_missing() -> tuple[lgb.Booster, np.ndarray]:
    d = regression_data(0.05)
    X = np.array(d.X)
    rng = np.random.default_rng(5)
    X[rng.random(X.shape) < 0.15] = 0.0
    b = _train({"objective": "regression", "zero_as_missing": True}, X, d.y)
    return b, X


def test_zero_as_missing() -> None:
    booster, X = _zero_as_missing()
    try:
        model = rtml.Model.load(booster)
    except rtml.UnsupportedModelError as exc:
        assert "zero" in str(exc).lower() or "missing" in str(exc).lower(), str(exc)
        return
    case = booster_case("zero_as_missing", booster, X)
    rows = np.concatenate([case.rows, extreme_rows(X), nan_rows(X)])
    for dtype in (np.float64, np.float32):
        A = rows.astype(dtype)
        assert_parity(model.predict(A), booster.predict(A), A, what=f"zero_as_missing {dtype}")


# --- pandas DataFrames ----------------------------------------------------------


@functools.cache
def _frame_regressor() -> tuple[lgb.LGBMRegressor, Case]:
    d = regression_data(0.1)
    est = lgb.LGBMRegressor(n_estimators=ROUNDS, **_sk(BASE)).fit(as_frame(d.X), d.y)
    case = Case(
        name="frame_regressor",
        source=est,
        predict=lambda A: est.predict(as_frame(A)),
        X=d.X,
        splits=lgb_splits(est.booster_),
        feature_names=list(COLUMN_NAMES),
    )
    return est, case


@functools.cache
def _frame_categorical() -> tuple[lgb.LGBMRegressor, Case]:
    """pandas category columns: LightGBM stores the training categories
    (``pandas_categorical``) and re-codes test frames by category name."""
    d = categorical_data()
    est = lgb.LGBMRegressor(n_estimators=ROUNDS, **_sk(BASE), **CAT_PARAMS)
    est.fit(as_frame(d.X, d.cat_features), d.y)
    case = Case(
        name="frame_categorical",
        source=est,
        predict=lambda A: est.predict(as_frame(A, d.cat_features)),
        X=d.X,
        splits=lgb_splits(est.booster_),
        cat_features=d.cat_features,
        feature_names=list(COLUMN_NAMES),
    )
    return est, case


FRAME_CASES = {"numeric": _frame_regressor, "categorical": _frame_categorical}


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe(kind: str) -> None:
    est, case = FRAME_CASES[kind]()
    model = rtml.Model.load(est)
    assert model.feature_names == list(COLUMN_NAMES)
    frame = as_frame(case.rows, case.cat_features)
    assert_parity(model.predict(frame), est.predict(frame), case.rows, what=kind)
    assert_parity(
        model.predict(frame, raw_score=True),
        est.predict(frame, raw_score=True),
        case.rows,
        what=f"{kind} raw",
    )


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe_reordered_columns(kind: str) -> None:
    # LightGBM itself takes columns by position, so the oracle gets the frame
    # in training order and rtml a shuffled copy.
    est, case = FRAME_CASES[kind]()
    model = rtml.Model.load(est)
    frame = as_frame(case.rows, case.cat_features)
    shuffled = frame[[frame.columns[i] for i in (3, 0, 5, 1, 4, 2)]]
    assert_parity(model.predict(shuffled), est.predict(frame), case.rows, what=kind)


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe_booster_and_file(kind: str, tmp_path: Path) -> None:
    est, case = FRAME_CASES[kind]()
    frame = as_frame(case.rows, case.cat_features)
    want = est.booster_.predict(frame)
    assert_parity(rtml.Model.load(est.booster_).predict(frame), want, case.rows, what="booster")
    path = tmp_path / "frame.txt"
    est.booster_.save_model(str(path))
    native = lgb.Booster(model_file=str(path))
    model = rtml.Model.load(path)
    assert model.feature_names == list(COLUMN_NAMES)
    assert_parity(model.predict(frame), native.predict(frame), case.rows, what=f"{kind} .txt")


def test_dataframe_category_order_differs() -> None:
    est, case = _frame_categorical()
    model = rtml.Model.load(est)
    rows = case.rows
    frame = as_frame(rows, case.cat_features)
    name = COLUMN_NAMES[case.cat_features[0]]
    reordered = frame.copy()
    reordered[name] = reordered[name].cat.reorder_categories(
        list(reversed(reordered[name].cat.categories))
    )
    want = est.predict(frame)
    assert_parity(est.predict(reordered), want, rows, what="LightGBM itself re-codes")
    assert_parity(model.predict(reordered), want, rows, what="reversed categories")

    subset = frame.copy()
    present = [c for c in subset[name].cat.categories if c in set(subset[name].dropna())]
    subset[name] = subset[name].cat.set_categories(present[::-1])
    assert_parity(model.predict(subset), est.predict(subset), rows, what="subset")


def test_dataframe_float32_columns() -> None:
    est, case = _frame_regressor()
    model = rtml.Model.load(est)
    frame = as_frame(case.rows).astype(np.float32)
    assert_parity(model.predict(frame), est.predict(frame), case.rows, what="float32 frame")
