"""rtml.Model must reproduce scikit-learn's own predictions exactly.

The oracle is ``predict_proba`` for classifiers, ``predict`` for regressors
and ``score_samples`` for IsolationForest; for ``raw_score=True`` it is
``decision_function`` for the gradient-boosting classifiers and the plain
averaged tree values for forests (``predict_proba`` / ``predict``).

scikit-learn's tree ensembles compare in float32 (they cast X to float32
first) while HistGradientBoosting compares in float64, so probe rows sit on
every threshold (``tree_.threshold``, the HGB predictors' ``num_threshold``)
and one float32/float64 step either side, and are scored as float32 and as
float64.  ``treelite.Model`` sources are checked against treelite's own
reference predictor (``treelite.gtil``).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pytest
import treelite
import treelite.sklearn
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
    regression_data,
)
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    IsolationForest,
    RandomForestClassifier,
    RandomForestRegressor,
)

import rtml

N_TREES = 20


def tree_splits(tree: Any, features: np.ndarray | None = None) -> list[tuple[int, float]]:
    t = tree.tree_
    internal = t.children_left != -1
    feats = t.feature[internal]
    if features is not None:  # trees fitted on a feature subset (IsolationForest)
        feats = np.asarray(features)[feats]
    return [(int(f), float(v)) for f, v in zip(feats, t.threshold[internal], strict=True)]


def hgb_feature_order(est: Any) -> np.ndarray:
    """Original column of each feature the HGB predictors index.

    With categorical features, HistGradientBoosting runs X through a
    ColumnTransformer (categorical columns first, ordinal-encoded), so the
    predictors' feature_idx refers to the transformed column order.
    """
    n = est.n_features_in_
    pre = getattr(est, "_preprocessor", None)
    if pre is None:
        return np.arange(n)
    order = []
    for _, transformer, columns in pre.transformers_:
        if transformer == "drop":
            continue
        cols = np.asarray(columns)
        order.extend(np.flatnonzero(cols) if cols.dtype == bool else cols.tolist())
    assert sorted(order) == list(range(n)), order
    return np.asarray(order)


def sk_splits(est: Any) -> list[tuple[int, float]]:
    """Numerical splits of any of the supported scikit-learn ensembles."""
    out: list[tuple[int, float]] = []
    if hasattr(est, "_predictors"):  # HistGradientBoosting*
        original = hgb_feature_order(est)
        for per_iteration in est._predictors:
            for predictor in per_iteration:
                nodes = predictor.nodes
                keep = (nodes["is_leaf"] == 0) & (nodes["is_categorical"] == 0)
                out += [
                    (int(original[f]), float(v))
                    for f, v in zip(
                        nodes["feature_idx"][keep], nodes["num_threshold"][keep], strict=True
                    )
                ]
        return out
    estimators = np.asarray(est.estimators_, dtype=object).ravel()
    subsets = getattr(est, "estimators_features_", None)
    for i, tree in enumerate(estimators):
        out += tree_splits(tree, None if subsets is None else subsets[i])
    return out


def sk_num_trees(est: Any) -> int:
    if hasattr(est, "_predictors"):
        return sum(len(p) for p in est._predictors)
    return int(np.asarray(est.estimators_, dtype=object).size)


def sk_case(
    name: str,
    est: Any,
    X: np.ndarray,
    *,
    raw: Any = "auto",
    allow_nan: bool = True,
    cat_features: tuple[int, ...] = (),
) -> Case:
    if isinstance(est, IsolationForest):
        predict = est.score_samples
    elif hasattr(est, "predict_proba"):
        predict = est.predict_proba
    else:
        predict = est.predict
    if raw == "auto":
        raw = est.decision_function if hasattr(est, "decision_function") else predict
    return Case(
        name=name,
        source=est,
        predict=predict,
        raw=raw,
        X=np.asarray(X),
        splits=sk_splits(est),
        cat_features=cat_features,
        num_trees=sk_num_trees(est),
        allow_nan=allow_nan,
    )


# --- forests --------------------------------------------------------------------


def _rf_classifier_binary() -> Case:
    d = binary_data(0.1)  # RandomForest supports NaN since scikit-learn 1.4
    est = RandomForestClassifier(n_estimators=N_TREES, max_depth=8, random_state=0)
    return sk_case("RandomForestClassifier_binary", est.fit(d.X, d.y), d.X)


def _rf_classifier_multi() -> Case:
    d = multiclass_data(0.1)
    est = RandomForestClassifier(n_estimators=N_TREES, min_samples_leaf=3, random_state=0)
    return sk_case("RandomForestClassifier_multiclass", est.fit(d.X, d.y), d.X)


def _rf_regressor() -> Case:
    d = regression_data(0.1)
    est = RandomForestRegressor(n_estimators=N_TREES, max_depth=10, random_state=0)
    return sk_case("RandomForestRegressor", est.fit(d.X, d.y), d.X)


def _rf_regressor_no_nan() -> Case:
    # Trained without NaN: a NaN at predict time follows scikit-learn's rule
    # for unseen missing values.
    d = regression_data()
    est = RandomForestRegressor(n_estimators=N_TREES, max_depth=10, random_state=0)
    return sk_case("RandomForestRegressor_no_nan", est.fit(d.X, d.y), d.X)


def _rf_regressor_multi_output() -> Case:
    d = multi_target_data()
    est = RandomForestRegressor(n_estimators=N_TREES, max_depth=8, random_state=0)
    return sk_case("RandomForestRegressor_2_outputs", est.fit(d.X, d.y), d.X)


def _et_classifier() -> Case:
    d = multiclass_data(0.1)
    est = ExtraTreesClassifier(n_estimators=N_TREES, max_depth=10, random_state=0)
    return sk_case("ExtraTreesClassifier", est.fit(d.X, d.y), d.X)


def _et_regressor() -> Case:
    d = regression_data(0.1)
    est = ExtraTreesRegressor(n_estimators=N_TREES, max_depth=10, random_state=0)
    return sk_case("ExtraTreesRegressor", est.fit(d.X, d.y), d.X)


# --- gradient boosting ---------------------------------------------------------------


def _gb_classifier_binary() -> Case:
    d = binary_data()  # GradientBoosting* rejects NaN
    est = GradientBoostingClassifier(n_estimators=N_TREES, max_depth=3, random_state=0)
    return sk_case("GradientBoostingClassifier_binary", est.fit(d.X, d.y), d.X, allow_nan=False)


def _gb_classifier_multi() -> Case:
    d = multiclass_data()
    est = GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)
    return sk_case("GradientBoostingClassifier_multiclass", est.fit(d.X, d.y), d.X, allow_nan=False)


def _gb_regressor() -> Case:
    d = regression_data()
    est = GradientBoostingRegressor(n_estimators=N_TREES, max_depth=3, random_state=0)
    return sk_case("GradientBoostingRegressor", est.fit(d.X, d.y), d.X, allow_nan=False)


def _gb_regressor_huber() -> Case:
    # Huber's initial estimate is the median, not the mean; subsampling too.
    d = regression_data()
    est = GradientBoostingRegressor(
        n_estimators=N_TREES, max_depth=3, loss="huber", subsample=0.8, random_state=0
    )
    return sk_case("GradientBoostingRegressor_huber", est.fit(d.X, d.y), d.X, allow_nan=False)


def _hgb_classifier_binary() -> Case:
    d = binary_data(0.1)
    est = HistGradientBoostingClassifier(max_iter=N_TREES, max_leaf_nodes=15, random_state=0)
    return sk_case("HistGradientBoostingClassifier_binary", est.fit(d.X, d.y), d.X)


def _hgb_classifier_multi() -> Case:
    d = multiclass_data(0.1)
    est = HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=15, random_state=0)
    return sk_case("HistGradientBoostingClassifier_multiclass", est.fit(d.X, d.y), d.X)


def _hgb_regressor() -> Case:
    d = regression_data(0.1)
    est = HistGradientBoostingRegressor(max_iter=N_TREES, max_leaf_nodes=15, random_state=0)
    return sk_case("HistGradientBoostingRegressor", est.fit(d.X, d.y), d.X)


def _hgb_regressor_no_nan() -> Case:
    # No NaN in training: HGB sends predict-time NaN to the child with more
    # training samples; rtml has to know that too.
    d = regression_data()
    est = HistGradientBoostingRegressor(max_iter=N_TREES, max_leaf_nodes=15, random_state=0)
    return sk_case("HistGradientBoostingRegressor_no_nan", est.fit(d.X, d.y), d.X)


def _hgb_regressor_poisson() -> Case:
    # predict is exp(raw); scikit-learn has no public raw-score call here.
    d = count_data()
    est = HistGradientBoostingRegressor(
        loss="poisson", max_iter=N_TREES, max_leaf_nodes=15, random_state=0
    )
    return sk_case("HistGradientBoostingRegressor_poisson", est.fit(d.X, d.y), d.X, raw=None)


def _isolation_forest() -> Case:
    d = regression_data(0.1)
    est = IsolationForest(n_estimators=N_TREES, random_state=0).fit(d.X)
    return sk_case("IsolationForest", est, d.X, raw=None)


def _isolation_forest_subsampled() -> Case:
    # Trees grown on 64 samples and half the features (estimators_features_).
    d = regression_data()
    est = IsolationForest(n_estimators=N_TREES, max_samples=64, max_features=0.5, random_state=0)
    return sk_case("IsolationForest_subsampled", est.fit(d.X), d.X, raw=None)


NUMERIC_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (
        _rf_classifier_binary,
        _rf_classifier_multi,
        _rf_regressor,
        _rf_regressor_no_nan,
        _rf_regressor_multi_output,
        _et_classifier,
        _et_regressor,
        _gb_classifier_binary,
        _gb_classifier_multi,
        _gb_regressor,
        _gb_regressor_huber,
        _hgb_classifier_binary,
        _hgb_classifier_multi,
        _hgb_regressor,
        _hgb_regressor_no_nan,
        _hgb_regressor_poisson,
        _isolation_forest,
        _isolation_forest_subsampled,
    )
}


# --- HistGradientBoosting with categorical features -----------------------------------


def _hgb_cat_regressor() -> Case:
    d = categorical_data()
    est = HistGradientBoostingRegressor(
        max_iter=N_TREES,
        max_leaf_nodes=15,
        categorical_features=list(d.cat_features),
        random_state=0,
    )
    return sk_case(
        "HistGradientBoostingRegressor_categorical",
        est.fit(d.X, d.y),
        d.X,
        cat_features=d.cat_features,
    )


def _hgb_cat_classifier() -> Case:
    d = categorical_binary_data()
    est = HistGradientBoostingClassifier(
        max_iter=N_TREES,
        max_leaf_nodes=15,
        categorical_features=list(d.cat_features),
        random_state=0,
    )
    return sk_case(
        "HistGradientBoostingClassifier_categorical",
        est.fit(d.X, d.y),
        d.X,
        cat_features=d.cat_features,
    )


SPARSE_CODES = np.array([0, 3, 5, 10, 11, 20, 42, 50, 99], dtype=np.float64)


def _hgb_cat_sparse_codes() -> Case:
    # Category codes with gaps: HGB's ordinal encoder maps 0,3,5,10,... to
    # 0,1,2,3,..., so the trees' bitsets are over encoded values.
    d = categorical_data()
    X = np.array(d.X)
    ok = ~np.isnan(X[:, 1])
    X[ok, 1] = SPARSE_CODES[X[ok, 1].astype(int)]
    est = HistGradientBoostingRegressor(
        max_iter=N_TREES, max_leaf_nodes=15, categorical_features=[1, 4], random_state=0
    )
    return sk_case(
        "HistGradientBoostingRegressor_sparse_codes",
        est.fit(X, d.y),
        X,
        cat_features=d.cat_features,
    )


CATEGORICAL_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (_hgb_cat_regressor, _hgb_cat_classifier, _hgb_cat_sparse_codes)
}


# --- treelite.Model sources, checked against treelite's reference predictor ------------


def _gtil(model: Any, *, pred_margin: bool = False):
    def predict(A: np.ndarray) -> np.ndarray:
        out = treelite.gtil.predict(model, np.asarray(A), pred_margin=pred_margin)
        out = out.reshape(out.shape[0], -1)
        return out[:, 0] if out.shape[1] == 1 else out

    return predict


def treelite_splits(tl: Any) -> list[tuple[int, float]]:
    """Numerical splits from treelite's JSON dump (thresholds round-trip exactly)."""
    out = []
    for tree in json.loads(tl.dump_as_json(pretty_print=False))["trees"]:
        for node in tree["nodes"]:
            if node.get("node_type") == "numerical_test_node":
                out.append((int(node["split_feature_id"]), float(node["threshold"])))
    return out


def treelite_case(name: str, tl: Any, X: np.ndarray, *, allow_nan: bool = True) -> Case:
    return Case(
        name=name,
        source=tl,
        predict=_gtil(tl),
        raw=_gtil(tl, pred_margin=True),
        X=np.asarray(X),
        splits=treelite_splits(tl),
        num_trees=tl.num_tree,
        allow_nan=allow_nan,
    )


def _treelite_rf() -> Case:
    d = multiclass_data()
    est = RandomForestClassifier(n_estimators=10, max_depth=8, random_state=1).fit(d.X, d.y)
    tl = treelite.sklearn.import_model(est)
    return treelite_case("treelite_RandomForestClassifier", tl, d.X)


def _treelite_gb() -> Case:
    d = binary_data()
    est = GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=1).fit(d.X, d.y)
    tl = treelite.sklearn.import_model(est)
    return treelite_case("treelite_GradientBoostingClassifier", tl, d.X, allow_nan=False)


def _treelite_xgboost() -> Case:
    import xgboost as xgb

    d = multiclass_data(0.1)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(d.X, d.y), 6)
    tl = treelite.frontend.from_xgboost(booster)
    return treelite_case("treelite_from_xgboost", tl, d.X)


TREELITE_CASES = {
    f.__name__.lstrip("_"): functools.cache(f)
    for f in (_treelite_rf, _treelite_gb, _treelite_xgboost)
}


class TestSklearn(ParityChecks):
    @pytest.fixture(params=sorted(NUMERIC_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return NUMERIC_CASES[request.param]()


class TestSklearnCategorical(ParityChecks, CategoryChecks):
    @pytest.fixture(params=sorted(CATEGORICAL_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return CATEGORICAL_CASES[request.param]()


class TestTreelite(ParityChecks):
    @pytest.fixture(params=sorted(TREELITE_CASES))
    def case(self, request: pytest.FixtureRequest) -> Case:
        return TREELITE_CASES[request.param]()


def test_float32_compare_matters() -> None:
    """scikit-learn trees cast float64 input to float32 before comparing; the
    probe rows include float64 values that land on the other side of a
    threshold once cast, and rtml must follow scikit-learn there."""
    case = NUMERIC_CASES["rf_regressor"]()
    rows = case.rows
    cast = rows.astype(np.float32).astype(np.float64)
    # Rows whose float64 values sit strictly between float32 neighbours.
    moved = (rows != cast) & ~np.isnan(rows)
    assert moved.any()
    est = case.source
    tl = treelite.sklearn.import_model(est)
    as_float64 = _gtil(tl)(rows)  # a float64-comparing evaluator
    sk = est.predict(rows)
    differ = ~np.isclose(as_float64, sk, rtol=1e-9)
    assert differ.any(), "no probe row separates float32 from float64 comparison"
    assert_parity(case.rtml_model().predict(rows[differ]), sk[differ], rows[differ])


def test_gradient_boosting_binary_decision_function_shape() -> None:
    case = NUMERIC_CASES["gb_classifier_binary"]()
    raw = case.rtml_model().predict(case.X[:7], raw_score=True)
    assert raw.shape == (7,)
    assert case.rtml_model().predict(case.X[:7]).shape == (7, 2)


# --- pandas DataFrames ---------------------------------------------------------------


@functools.cache
def _frame_forest() -> tuple[Any, np.ndarray]:
    d = regression_data(0.1)
    est = RandomForestRegressor(n_estimators=10, max_depth=8, random_state=0)
    return est.fit(as_frame(d.X), d.y), d.X


@functools.cache
def _frame_hgb() -> tuple[Any, np.ndarray]:
    d = binary_data(0.1)
    est = HistGradientBoostingClassifier(max_iter=10, random_state=0)
    return est.fit(as_frame(d.X), d.y), d.X


FRAME_CASES = {"forest": _frame_forest, "hgb": _frame_hgb}


@pytest.mark.parametrize("kind", sorted(FRAME_CASES))
def test_dataframe(kind: str) -> None:
    est, X = FRAME_CASES[kind]()
    model = rtml.Model.load(est)
    assert model.feature_names == list(COLUMN_NAMES)
    frame = as_frame(X)
    want = est.predict_proba(frame) if hasattr(est, "predict_proba") else est.predict(frame)
    assert_parity(model.predict(frame), want, X, what=kind)
    # scikit-learn insists on the training column order; rtml matches by name.
    shuffled = frame[[frame.columns[i] for i in (5, 3, 1, 0, 2, 4)]]
    assert_parity(model.predict(shuffled), want, X, what=f"{kind} reordered")
    assert_parity(model.predict(frame.astype(np.float32)), _native_f32(est, frame), X)


def _native_f32(est: Any, frame: Any) -> np.ndarray:
    f32 = frame.astype(np.float32)
    return est.predict_proba(f32) if hasattr(est, "predict_proba") else est.predict(f32)
