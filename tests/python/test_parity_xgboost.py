"""rtml.Model must reproduce XGBoost's own predictions exactly.

The oracle is ``Booster.predict(DMatrix(X))`` for boosters and model files,
``predict_proba`` for the classifier wrappers and ``predict`` for the
regressor and ranker wrappers; ``output_margin=True`` is the oracle for
``raw_score=True``.  Every case is scored on training rows, fresh rows,
extreme values, NaNs, every observed category, and rows sitting exactly on
each split threshold (read from the model JSON, so they are the float32
values XGBoost compares against) or one float32/float64 step either side.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
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
    multi_target_data,
    multiclass_data,
    positive_data,
    ranking_data,
    regression_data,
)

import rtml

ROUNDS = 15
BASE = {"max_depth": 4, "eta": 0.3, "seed": 7, "nthread": 1}
CAT_TYPES = ["q", "c", "q", "q", "c", "q"]


@functools.cache
def _tmpdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rtml-xgb-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _json_trees(booster: xgb.Booster) -> list[dict]:
    learner = json.loads(booster.save_raw("json"))["learner"]
    gb = learner["gradient_booster"]
    model = gb["gbtree"]["model"] if "gbtree" in gb else gb["model"]
    return model["trees"]


def xgb_splits(booster: xgb.Booster) -> list[tuple[int, float]]:
    """(feature, threshold) of every numerical split, thresholds as stored
    (float32) in the model."""
    out = []
    for tree in _json_trees(booster):
        for left, feat, cond, kind in zip(
            tree["left_children"],
            tree["split_indices"],
            tree["split_conditions"],
            tree["split_type"],
            strict=True,
        ):
            if left != -1 and kind == 0:
                out.append((int(feat), float(np.float32(cond))))
    return out


def _dmatrix(X: Any, feature_types: list[str] | None) -> xgb.DMatrix:
    if feature_types is None:
        return xgb.DMatrix(X)
    return xgb.DMatrix(X, feature_types=feature_types, enable_categorical=True)


def booster_case(
    name: str,
    booster: xgb.Booster,
    X: np.ndarray,
    *,
    feature_types: list[str] | None = None,
    num_outputs: int | None = None,
    source: Any = None,
) -> Case:
    # The oracle for a file is a Booster loaded from that same file.
    native = booster if source is None else xgb.Booster(model_file=str(source))
    return Case(
        name=name,
        source=booster if source is None else source,
        predict=lambda A: native.predict(_dmatrix(A, feature_types)),
        raw=lambda A: native.predict(_dmatrix(A, feature_types), output_margin=True),
        X=np.asarray(X),
        splits=xgb_splits(booster),
        cat_features=tuple(i for i, t in enumerate(feature_types or []) if t == "c"),
        num_trees=len(_json_trees(booster)),
        num_outputs=num_outputs,
    )


def wrapper_case(name: str, est: Any, X: np.ndarray, *, num_outputs: int | None = None) -> Case:
    is_classifier = isinstance(est, xgb.XGBClassifier)
    booster = est.get_booster()
    types = booster.feature_types
    cat = tuple(i for i, t in enumerate(types or []) if t == "c")
    return Case(
        name=name,
        source=est,
        predict=est.predict_proba if is_classifier else est.predict,
        raw=lambda A: est.predict(A, output_margin=True),
        X=np.asarray(X),
        splits=xgb_splits(booster),
        cat_features=cat,
        num_trees=len(_json_trees(booster)),
        num_outputs=num_outputs,
    )


def _train(params: dict, X: np.ndarray, y: np.ndarray, *, rounds: int = ROUNDS, **dm: Any):
    return xgb.train({**BASE, **params}, xgb.DMatrix(X, y, **dm), rounds)


# --- numerical cases --------------------------------------------------------


def _binary() -> Case:
    d = binary_data(0.1)
    b = _train({"objective": "binary:logistic"}, d.X, d.y)
    return booster_case("binary_logistic", b, d.X, num_outputs=1)


def _binary_base_score() -> Case:
    d = binary_data()
    b = _train({"objective": "binary:logistic", "base_score": 0.3}, d.X, d.y)
    return booster_case("binary_base_score", b, d.X, num_outputs=1)


def _softprob() -> Case:
    d = multiclass_data(0.1)
    b = _train({"objective": "multi:softprob", "num_class": 3}, d.X, d.y, rounds=8)
    return booster_case("multi_softprob", b, d.X, num_outputs=3)


def _softmax() -> Case:
    # Booster.predict returns the winning class index (as float), shape (n,).
    d = multiclass_data(0.1)
    b = _train({"objective": "multi:softmax", "num_class": 3}, d.X, d.y, rounds=8)
    return booster_case("multi_softmax", b, d.X)


def _squarederror() -> Case:
    d = regression_data(0.1)
    b = _train({"objective": "reg:squarederror"}, d.X, d.y)
    return booster_case("reg_squarederror", b, d.X, num_outputs=1)


def _squarederror_base_score() -> Case:
    d = regression_data()
    b = _train({"objective": "reg:squarederror", "base_score": 12.5}, d.X, d.y)
    return booster_case("reg_base_score", b, d.X, num_outputs=1)


def _poisson() -> Case:
    d = count_data()
    b = _train({"objective": "count:poisson"}, d.X, d.y)
    return booster_case("count_poisson", b, d.X, num_outputs=1)


def _gamma() -> Case:
    d = positive_data()
    b = _train({"objective": "reg:gamma"}, d.X, d.y)
    return booster_case("reg_gamma", b, d.X, num_outputs=1)


def _tweedie() -> Case:
    d = count_data()
    b = _train({"objective": "reg:tweedie", "tweedie_variance_power": 1.4}, d.X, d.y)
    return booster_case("reg_tweedie", b, d.X, num_outputs=1)


def _pairwise() -> Case:
    d, qid = ranking_data()
    b = _train({"objective": "rank:pairwise"}, d.X, d.y, qid=qid)
    return booster_case("rank_pairwise", b, d.X, num_outputs=1)


def _dart() -> Case:
    d = binary_data(0.1)
    params = {
        "objective": "binary:logistic",
        "booster": "dart",
        "rate_drop": 0.3,
        "skip_drop": 0.0,
        "normalize_type": "forest",
    }
    b = _train(params, d.X, d.y, rounds=10)
    return booster_case("dart", b, d.X, num_outputs=1)


def _random_forest() -> Case:
    d = regression_data(0.1)
    params = {
        "objective": "reg:squarederror",
        "num_parallel_tree": 6,
        "subsample": 0.7,
        "colsample_bynode": 0.7,
        "eta": 1.0,
        "max_depth": 5,
    }
    b = _train(params, d.X, d.y, rounds=2)
    return booster_case("random_forest", b, d.X, num_outputs=1)


def _json_file() -> Case:
    d = multiclass_data(0.1)
    b = _train({"objective": "multi:softprob", "num_class": 3}, d.X, d.y, rounds=6)
    path = _tmpdir() / "softprob.json"
    b.save_model(str(path))
    return booster_case("file_json", b, d.X, num_outputs=3, source=str(path))


def _ubj_file() -> Case:
    d = binary_data(0.1)
    b = _train({"objective": "binary:logistic", "base_score": 0.7}, d.X, d.y)
    path = _tmpdir() / "binary.ubj"
    b.save_model(str(path))
    return booster_case("file_ubj", b, d.X, num_outputs=1, source=path)


def _xgb_classifier() -> Case:
    d = binary_data(0.1)
    est = xgb.XGBClassifier(n_estimators=ROUNDS, max_depth=4, random_state=3, n_jobs=1)
    est.fit(d.X, d.y)
    return wrapper_case("XGBClassifier_binary", est, d.X)


def _xgb_classifier_multi() -> Case:
    d = multiclass_data()
    est = xgb.XGBClassifier(n_estimators=8, max_depth=3, random_state=3, n_jobs=1)
    est.fit(d.X, d.y)
    return wrapper_case("XGBClassifier_multiclass", est, d.X, num_outputs=3)


def _xgb_regressor() -> Case:
    d = regression_data(0.1)
    est = xgb.XGBRegressor(n_estimators=ROUNDS, max_depth=4, random_state=3, n_jobs=1)
    est.fit(d.X, d.y)
    return wrapper_case("XGBRegressor", est, d.X, num_outputs=1)


def _xgb_regressor_multi_target() -> Case:
    d = multi_target_data()
    est = xgb.XGBRegressor(n_estimators=10, max_depth=3, random_state=3, n_jobs=1)
    est.fit(d.X, d.y)
    return wrapper_case("XGBRegressor_2_targets", est, d.X, num_outputs=2)


def _xgb_ranker() -> Case:
    d, qid = ranking_data()
    est = xgb.XGBRanker(n_estimators=ROUNDS, max_depth=4, random_state=3, n_jobs=1)
    est.fit(d.X, d.y, qid=qid)
    return wrapper_case("XGBRanker", est, d.X, num_outputs=1)


def _xgb_rf_classifier() -> Case:
    d = binary_data()
    est = xgb.XGBRFClassifier(n_estimators=12, max_depth=5, random_state=3, n_jobs=1)
    est.fit(d.X, d.y)
    return wrapper_case("XGBRFClassifier", est, d.X)


NUMERIC_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (
        _binary,
        _binary_base_score,
        _softprob,
        _softmax,
        _squarederror,
        _squarederror_base_score,
        _poisson,
        _gamma,
        _tweedie,
        _pairwise,
        _dart,
        _random_forest,
        _json_file,
        _ubj_file,
        _xgb_classifier,
        _xgb_classifier_multi,
        _xgb_regressor,
        _xgb_regressor_multi_target,
        _xgb_ranker,
        _xgb_rf_classifier,
    )
}


# --- categorical cases (integer codes in numpy + feature_types) --------------


def _cat_partition() -> Case:
    d = categorical_data()
    b = _train(
        {"objective": "reg:squarederror", "max_cat_to_onehot": 1},
        d.X,
        d.y,
        feature_types=CAT_TYPES,
        enable_categorical=True,
    )
    return booster_case("categorical_partition", b, d.X, feature_types=CAT_TYPES, num_outputs=1)


def _cat_onehot() -> Case:
    d = categorical_data()
    b = _train(
        {"objective": "reg:squarederror", "max_cat_to_onehot": 16},
        d.X,
        d.y,
        feature_types=CAT_TYPES,
        enable_categorical=True,
    )
    return booster_case("categorical_onehot", b, d.X, feature_types=CAT_TYPES, num_outputs=1)


def _cat_classifier() -> Case:
    d = categorical_binary_data()
    est = xgb.XGBClassifier(
        n_estimators=ROUNDS,
        max_depth=4,
        random_state=3,
        n_jobs=1,
        enable_categorical=True,
        feature_types=CAT_TYPES,
        max_cat_to_onehot=1,
    )
    est.fit(d.X, d.y)
    return wrapper_case("categorical_XGBClassifier", est, d.X)


def _cat_file() -> Case:
    d = categorical_data()
    b = _train(
        {"objective": "reg:squarederror", "max_cat_to_onehot": 1},
        d.X,
        d.y,
        feature_types=CAT_TYPES,
        enable_categorical=True,
    )
    path = _tmpdir() / "categorical.json"
    b.save_model(str(path))
    return booster_case(
        "categorical_file_json",
        b,
        d.X,
        feature_types=CAT_TYPES,
        num_outputs=1,
        source=str(path),
    )


CATEGORICAL_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (_cat_partition, _cat_onehot, _cat_classifier, _cat_file)
}


class TestXGBoost(ParityChecks):
    @pytest.fixture(params=sorted(NUMERIC_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return NUMERIC_CASES[request.param]()


class TestXGBoostCategorical(ParityChecks, CategoryChecks):
    @pytest.fixture(params=sorted(CATEGORICAL_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return CATEGORICAL_CASES[request.param]()


def test_softmax_returns_class_index() -> None:
    """multi:softmax follows Booster.predict: one class index per row."""
    case = NUMERIC_CASES["softmax"]()
    got = case.rtml_model().predict(case.X[:50])
    assert got.shape == (50,)
    assert set(np.unique(got)) <= {0.0, 1.0, 2.0}
    margins = case.rtml_model().predict(case.X[:50], raw_score=True)
    assert margins.shape == (50, 3)
    np.testing.assert_array_equal(got, np.argmax(margins, axis=1))


# --- pandas DataFrames --------------------------------------------------------


@functools.cache
def _frame_regressor() -> tuple[xgb.XGBRegressor, Case]:
    """XGBRegressor trained on a numeric DataFrame with named columns."""
    d = regression_data(0.1)
    frame = as_frame(d.X)
    est = xgb.XGBRegressor(n_estimators=ROUNDS, max_depth=4, random_state=3, n_jobs=1)
    est.fit(frame, d.y)
    case = Case(
        name="frame_regressor",
        source=est,
        predict=lambda A: est.predict(as_frame(A)),
        X=d.X,
        splits=xgb_splits(est.get_booster()),
        feature_names=list(COLUMN_NAMES),
    )
    return est, case


@functools.cache
def _frame_categorical() -> tuple[xgb.XGBRegressor, Case]:
    """XGBRegressor on a DataFrame with pandas category columns (string
    categories): XGBoost 3 stores the categories and re-codes at predict."""
    d = categorical_data()
    frame = as_frame(d.X, d.cat_features)
    est = xgb.XGBRegressor(
        n_estimators=ROUNDS,
        max_depth=4,
        random_state=3,
        n_jobs=1,
        enable_categorical=True,
        max_cat_to_onehot=1,
    )
    est.fit(frame, d.y)
    case = Case(
        name="frame_categorical",
        source=est,
        predict=lambda A: est.predict(as_frame(A, d.cat_features)),
        X=d.X,
        splits=xgb_splits(est.get_booster()),
        cat_features=d.cat_features,
        feature_names=list(COLUMN_NAMES),
    )
    return est, case


FRAME_CASES = {"numeric": _frame_regressor, "categorical": _frame_categorical}


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe(kind: str) -> None:
    est, case = FRAME_CASES[kind]()
    model = rtml.Model.load(est)
    frame = as_frame(case.rows, case.cat_features)
    assert_parity(model.predict(frame), est.predict(frame), case.rows, what=kind)
    assert model.feature_names == list(COLUMN_NAMES)


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe_reordered_columns(kind: str) -> None:
    est, case = FRAME_CASES[kind]()
    model = rtml.Model.load(est)
    frame = as_frame(case.rows, case.cat_features)
    shuffled = frame[list(reversed(frame.columns))]
    assert_parity(model.predict(shuffled), est.predict(frame), case.rows, what=kind)


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe_booster_and_file(kind: str, tmp_path: Path) -> None:
    """The same frame model as a bare Booster and as .json/.ubj files."""
    est, case = FRAME_CASES[kind]()
    booster = est.get_booster()
    frame = as_frame(case.rows, case.cat_features)
    want = booster.predict(xgb.DMatrix(frame, enable_categorical=True))
    assert_parity(rtml.Model.load(booster).predict(frame), want, case.rows, what="booster")
    for ext in ("json", "ubj"):
        path = tmp_path / f"frame.{ext}"
        booster.save_model(str(path))
        native = xgb.Booster(model_file=str(path))
        want = native.predict(xgb.DMatrix(frame, enable_categorical=True))
        model = rtml.Model.load(path)
        assert model.feature_names == list(COLUMN_NAMES), f".{ext}: {model.feature_names}"
        assert_parity(model.predict(frame), want, case.rows, what=f"{kind} .{ext}")


def test_dataframe_category_order_differs() -> None:
    """Test frames whose category dtype lists the categories in another order
    (or only a subset of them) are re-coded by name, as XGBoost does."""
    est, case = _frame_categorical()
    model = rtml.Model.load(est)
    rows = case.rows
    frame = as_frame(rows, case.cat_features)
    name = COLUMN_NAMES[case.cat_features[0]]
    reordered = frame.copy()
    reordered[name] = reordered[name].cat.reorder_categories(
        list(reversed(reordered[name].cat.categories))
    )
    assert_parity(model.predict(reordered), est.predict(reordered), rows, what="reversed")
    assert_parity(model.predict(reordered), est.predict(frame), rows, what="reversed vs original")

    subset = frame.copy()
    present = [c for c in subset[name].cat.categories if c in set(subset[name].dropna())]
    subset[name] = subset[name].cat.set_categories(present[::-1])
    assert_parity(model.predict(subset), est.predict(subset), rows, what="subset")


def test_dataframe_float32_columns() -> None:
    est, case = _frame_regressor()
    model = rtml.Model.load(est)
    frame = as_frame(case.rows).astype(np.float32)
    assert_parity(model.predict(frame), est.predict(frame), case.rows, what="float32 frame")


def test_dataframe_mixed_dtypes() -> None:
    """Integer and float columns in one frame."""
    est, case = _frame_regressor()
    model = rtml.Model.load(est)
    rows = case.rows[~np.isnan(case.rows).any(axis=1)]
    rows = rows[np.all(np.abs(rows) < 1e9, axis=1)]
    frame = as_frame(rows)
    frame["epsilon"] = np.round(frame["epsilon"]).astype(np.int64)
    frame["beta"] = frame["beta"].astype(np.float32)
    assert_parity(model.predict(frame), est.predict(frame), rows, what="mixed dtypes")


def test_ubj_and_json_agree(tmp_path: Path) -> None:
    case = NUMERIC_CASES["softprob"]()
    booster = case.source
    booster.save_model(str(tmp_path / "m.json"))
    booster.save_model(str(tmp_path / "m.ubj"))
    rows = case.rows
    a = rtml.Model.load(tmp_path / "m.json").predict(rows)
    b = rtml.Model.load(str(tmp_path / "m.ubj")).predict(rows)
    np.testing.assert_array_equal(a, b)
    assert_parity(a, case.predict(rows), rows, what="file vs booster")
