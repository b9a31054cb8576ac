"""Turns a trained model (native object, treelite model or file) into a compiled Forest.

Every format is imported through treelite; this module adds what treelite does not
know about the native library's *scoring call*: the precision it compares in, the
shape of what it returns, and the feature names and types. Where treelite cannot
represent a model exactly, it raises UnsupportedModelError instead of returning a
silently different score.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtml._core import Forest, ModelFormatError, UnsupportedModelError

_TREE_FIELDS = (
    "node_type",
    "cleft",
    "cright",
    "split_index",
    "threshold",
    "cmp",
    "default_left",
    "category_list_right_child",
    "leaf_value",
    "leaf_vector",
    "leaf_vector_begin",
    "leaf_vector_end",
    "category_list",
    "category_list_begin",
    "category_list_end",
)

RTML_MAGIC = b"RTMLFRST"


@dataclass
class Native:
    """What rtml needs to know about the native scoring call it mirrors."""

    library: str  # "xgboost", "lightgbm", "sklearn", "treelite"
    kind: str  # class name of the source, for repr
    precision: str = "float32"  # what the native library compares in
    output_kind: str = "plain"
    feature_names: list[str] | None = None
    categorical: list[int] = field(default_factory=list)  # feature indices
    # Per feature, the category values the model was trained with (in code order),
    # for libraries that re-code a DataFrame's categories by value (XGBoost 3.x).
    categories: list[list[Any] | None] | None = None
    # LightGBM input semantics (see ForestSpec in core/include/rtml/forest.h).
    nan_as_zero: list[int] | None = None
    # HistGradientBoosting: per categorical feature, the category values seen in
    # training; any other value reads as missing, as scikit-learn's encoder does.
    known_categories: dict[int, list[int]] | None = None
    reject: int = 0  # rtml RejectFlags: 1 NaN, 2 non-finite / beyond float32
    # LightGBM's rf mode averages its trees for predict() but returns their sum for
    # raw_score=True.
    raw_sums_trees: bool = False
    binary: bool = False  # one output per row


def _module_of(obj: Any) -> str:
    return type(obj).__module__.split(".", 1)[0]


def load_forest(source: Any) -> Forest:
    """Compiles *source* (see Model.load) into a Forest."""
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source))
    mod = _module_of(source)
    if mod == "treelite":
        return _compile(
            source,
            Native(
                library="treelite", kind="treelite.Model", precision=_treelite_precision(source)
            ),
        )
    if mod == "xgboost":
        return _from_xgboost(source)
    if mod == "lightgbm":
        return _from_lightgbm(source)
    if mod == "sklearn":
        return _from_sklearn(source)
    raise ModelFormatError(
        f"cannot load a model from {type(source).__module__}.{type(source).__name__}: expected "
        "an xgboost/lightgbm Booster or sklearn-API model, a fitted scikit-learn forest, a "
        "treelite.Model, or a path to a .json/.ubj/.txt/.rtml file"
    )


def _from_path(path: Path) -> Forest:
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise ModelFormatError(f"cannot open model file '{path}': {e.strerror}") from None
    if head.startswith(RTML_MAGIC):
        return Forest.load(str(path))
    import treelite

    text = head.lstrip()
    try:
        if text.startswith(b"{") and path.suffix.lower() != ".ubj":
            return _xgboost_json_file(path)
        if path.suffix.lower() == ".ubj" or text.startswith(b"{U") or text.startswith(b"{$"):
            return _xgboost_ubj_file(path)
        if text.startswith(b"tree\n") or text.startswith(b"tree\r\n"):
            # treelite's parser first: it rejects damaged files, where LightGBM's
            # own parser can abort the process.
            return _lightgbm_file(path, treelite.frontend.load_lightgbm_model(str(path)))
    except treelite.TreeliteError as e:
        raise ModelFormatError(f"cannot read model file '{path}': {_first_line(e)}") from None
    raise ModelFormatError(
        f"unknown model file type '{path}': expected an rtml compiled model, an XGBoost .json or "
        ".ubj file, or a LightGBM text model"
    )


def _lightgbm_file(path: Path, tl: Any) -> Forest:
    text = path.read_text(encoding="utf-8", errors="replace")
    return _compile(tl, _lightgbm_native(text, "LightGBM text file"))


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def _xgboost_json_file(path: Path) -> Forest:
    import treelite

    try:
        raw = json.loads(path.read_bytes())
        learner = raw["learner"]
    except (ValueError, KeyError, TypeError):
        raise ModelFormatError(f"'{path}' is JSON but not an XGBoost model") from None
    native = Native(library="xgboost", kind="XGBoost model file")
    native.feature_names = learner.get("feature_names") or None
    native.categorical = [i for i, t in enumerate(learner.get("feature_types") or []) if t == "c"]
    if learner.get("objective", {}).get("name") == "multi:softmax":
        native.output_kind = "argmax"
    native.categories = _take_xgboost_category_encoder(raw)
    return _compile(treelite.frontend.from_xgboost_json(json.dumps(raw)), native)


def _xgboost_ubj_file(path: Path) -> Forest:
    import treelite

    # treelite's reader vets the file first; XGBoost's own reader (when installed)
    # then gives the feature names and the category encoder that treelite's
    # UBJSON loader drops or refuses.
    try:
        tl = treelite.frontend.load_xgboost_model(str(path), format_choice="ubjson")
    except treelite.TreeliteError as e:
        if "categorical encoder" not in str(e):
            raise
        tl = None
    try:
        import xgboost
    except ImportError:
        if tl is None:
            raise UnsupportedModelError(
                f"'{path}' carries XGBoost's category encoder; loading it needs the xgboost "
                "package (or save the model as .json)"
            ) from None
        return _xgboost_file(tl)
    try:
        booster = xgboost.Booster(model_file=str(path))
    except (xgboost.core.XGBoostError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"cannot read XGBoost model '{path}': {_first_line(e)}") from None
    return _from_xgboost(booster, kind="XGBoost model file")


def _xgboost_file(tl: Any) -> Forest:
    native = Native(library="xgboost", kind="XGBoost model file")
    return _compile(tl, native)


def _treelite_precision(tl: Any) -> str:
    ttype = int(tl.get_header_accessor().get_field("threshold_type")[0])
    return "float64" if ttype == 3 else "float32"  # treelite TypeInfo: 2 float32, 3 float64


# --- XGBoost -------------------------------------------------------------------------------


def _from_xgboost(source: Any, *, kind: str | None = None) -> Forest:
    import treelite
    import xgboost

    booster = source.get_booster() if hasattr(source, "get_booster") else source
    if not isinstance(booster, xgboost.Booster):
        raise ModelFormatError(f"unsupported XGBoost object {type(source).__name__}")
    config = json.loads(booster.save_config())
    learner = config["learner"]
    objective = learner["objective"]["name"]
    native = Native(library="xgboost", kind=kind or type(source).__name__)
    native.feature_names = list(booster.feature_names) if booster.feature_names else None
    types = booster.feature_types or []
    native.categorical = [i for i, t in enumerate(types) if t == "c"]
    n_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
    is_classifier = isinstance(source, xgboost.XGBClassifier)
    if is_classifier and n_class <= 1 and objective.startswith("binary:"):
        native.output_kind = "binary_proba"
    elif objective == "multi:softmax" and not is_classifier:
        native.output_kind = "argmax"
    raw = json.loads(booster.save_raw(raw_format="json"))
    native.categories = _take_xgboost_category_encoder(raw)
    try:
        if native.categories is None:
            tl = treelite.frontend.from_xgboost(booster)
        else:
            tl = treelite.frontend.from_xgboost_json(json.dumps(raw))
    except treelite.TreeliteError as e:
        raise UnsupportedModelError(
            f"treelite cannot import this XGBoost model: {_first_line(e)}"
        ) from None
    return _compile(tl, native)


def _take_xgboost_category_encoder(raw: dict[str, Any]) -> list[list[Any] | None] | None:
    """Removes XGBoost 3.x's category encoder from a JSON model and returns it.

    The trees split on category *codes*: positions in the training categories. XGBoost
    re-codes a DataFrame's categories by value before predicting; treelite refuses
    models that carry the encoder, so rtml keeps the categories itself and re-codes
    DataFrame columns the same way (rtml.Model._frame_to_array). Arrays are taken as
    codes, as XGBoost does.
    """
    booster = raw["learner"]["gradient_booster"]
    model = booster.get("model") or booster.get("gbtree", {}).get("model", {})
    cats = model.get("cats")
    if not cats or not any(e.get("values") for e in cats.get("enc", [])):
        return None
    out: list[list[Any] | None] = []
    for enc in cats["enc"]:
        values, offsets = enc.get("values", []), enc.get("offsets", [])
        if not values:
            out.append(None)
        elif offsets:  # strings: UTF-8 bytes cut at the offsets
            data = bytes(values)
            out.append([data[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets)])
        else:
            out.append(list(values))
    model["cats"] = {"enc": [], "feature_segments": [], "sorted_idx": []}
    return out


# --- LightGBM ------------------------------------------------------------------------------


def _from_lightgbm(source: Any) -> Forest:
    import lightgbm
    import treelite

    booster = source.booster_ if hasattr(source, "booster_") else source
    if not isinstance(booster, lightgbm.Booster):
        raise ModelFormatError(f"unsupported LightGBM object {type(source).__name__}")
    native = _lightgbm_native(booster.model_to_string(num_iteration=-1), type(source).__name__)
    if isinstance(source, lightgbm.LGBMClassifier) and native.binary:
        native.output_kind = "binary_proba"
    try:
        tl = treelite.frontend.from_lightgbm(booster)
    except treelite.TreeliteError as e:
        raise UnsupportedModelError(
            f"treelite cannot import this LightGBM model: {_first_line(e)}"
        ) from None
    return _compile(tl, native)


def _lightgbm_native(model_text: str, kind: str) -> Native:
    """Reads what exact scoring needs from LightGBM's text format (never through
    LightGBM's own parser, which can abort the process on a damaged file)."""
    native = Native(library="lightgbm", kind=kind, precision="float64")
    header: dict[str, str] = {}
    nan_as_zero: list[int] = []
    n_trees = 0
    feature: list[str] = []
    ended = False
    lines = model_text.splitlines()
    for line in lines:
        key, eq, value = line.partition("=")
        if not eq:
            if line.strip() == "average_output":
                header["average_output"] = "1"
            elif line.startswith("end of trees"):
                ended = True
                break
            continue
        if key == "Tree":
            n_trees += 1
        elif key == "split_feature":
            feature = value.split()
        elif key == "decision_type":
            for f, d in zip(feature, value.split(), strict=False):
                missing = (int(d) >> 2) & 3  # 0 None, 1 Zero, 2 NaN
                if missing == 1:
                    raise UnsupportedModelError(
                        "LightGBM model uses zero_as_missing (missing_type=Zero), which rtml "
                        "cannot evaluate exactly yet; retrain with zero_as_missing=false"
                    )
                if missing == 0 and int(f) < len(nan_as_zero):
                    nan_as_zero[int(f)] = 1
        elif n_trees == 0:
            header[key] = value
            if key == "max_feature_idx":
                nan_as_zero = [0] * (int(value) + 1)
            elif key == "feature_names":
                native.feature_names = value.split()
    promised = len(header.get("tree_sizes", "").split())
    if not ended or n_trees != promised:
        raise ModelFormatError(
            f"truncated LightGBM model: {n_trees} of {promised} trees"
            f"{'' if ended else ', no end-of-trees marker'}"
        )
    native.categories = _lightgbm_pandas_categories(lines, header.get("feature_infos", ""))
    if "average_output" in header:
        # rf mode averages its trees in predict() but sums them for raw_score=True.
        native.raw_sums_trees = True
    native.binary = int(header.get("num_class", "1")) == 1
    native.nan_as_zero = nan_as_zero
    return native


def _lightgbm_pandas_categories(lines: list[str], feature_infos: str) -> list[Any] | None:
    """LightGBM re-codes a DataFrame's categories by the lists it stored at training
    (pandas_categorical, one per categorical column in order); rtml does the same."""
    for line in reversed(lines):
        if line.startswith("pandas_categorical:"):
            stored = json.loads(line.partition(":")[2] or "null")
            break
    else:
        return None
    if not stored:
        return None
    infos = feature_infos.split()
    cat_features = [
        f for f, info in enumerate(infos) if info != "none" and not info.startswith("[")
    ]
    if len(cat_features) != len(stored):
        raise ModelFormatError(
            f"LightGBM model lists {len(stored)} pandas category columns but has "
            f"{len(cat_features)} categorical features"
        )
    out: list[Any] = [None] * len(infos)
    for f, cats in zip(cat_features, stored, strict=True):
        out[f] = cats
    return out


# --- scikit-learn --------------------------------------------------------------------------


def _from_sklearn(est: Any) -> Forest:
    import treelite

    name = type(est).__name__
    native = Native(library="sklearn", kind=name)
    if hasattr(est, "feature_names_in_"):
        native.feature_names = [str(c) for c in est.feature_names_in_]
    if name.startswith("HistGradientBoosting"):
        native.precision = "float64"
        cats = getattr(est, "is_categorical_", None)
        if cats is not None:
            native.categorical = [int(i) for i in np.flatnonzero(cats)]
            native.known_categories = _hgb_known_categories(est, native.categorical)
    elif name != "IsolationForest":
        # Classic scikit-learn trees run check_array: +-inf and values beyond float32
        # are errors, and so is NaN where the estimator has no missing-value support.
        # (IsolationForest takes both.)
        native.reject = 2
        if name.startswith("GradientBoosting"):
            native.reject |= 1
    if name == "IsolationForest":
        native.output_kind = "negate"
    try:
        # treelite casts HistGradientBoosting's unused NaN thresholds of categorical
        # nodes to integers; numpy's warning about it is noise.
        with np.errstate(invalid="ignore"):
            tl = treelite.sklearn.import_model(est)
    except treelite.TreeliteError as e:
        raise UnsupportedModelError(f"treelite cannot import {name}: {_first_line(e)}") from None
    except Exception as e:  # the sklearn importer raises plain Python errors
        raise UnsupportedModelError(f"treelite cannot import {name}: {e}") from None
    header = tl.get_header_accessor()
    post = header.get_field("postprocessor")
    n_class = header.get_field("num_class")
    if name.endswith("Classifier") and post == "sigmoid" and int(n_class[0]) == 1:
        native.output_kind = "binary_proba"
    return _compile(tl, native)


def _hgb_known_categories(est: Any, categorical: list[int]) -> dict[int, list[int]]:
    """The raw category values each categorical feature saw in training."""
    known = getattr(est, "_preprocessor", None)
    out: dict[int, list[int]] = {}
    if known is not None:  # scikit-learn >= 1.4 encodes categories with an OrdinalEncoder
        encoder = known.named_transformers_["encoder"]
        for f, cats in zip(categorical, encoder.categories_, strict=True):
            out[f] = [int(c) for c in cats if np.isfinite(c)]
    else:
        for f, cats in zip(categorical, est._bin_mapper.bin_thresholds_, strict=False):
            out[f] = [int(c) for c in cats]
    for f, values in out.items():
        if any(v < 0 or v > 255 for v in values):
            raise UnsupportedModelError(
                f"feature {f}: HistGradientBoosting categories outside 0..255 are not supported"
            )
    return out


# --- treelite -> Forest --------------------------------------------------------------------


def _compile(tl: Any, native: Native) -> Forest:
    h = tl.get_header_accessor()

    def scalar(name: str) -> Any:
        return h.get_field(name)[0].item()

    num_feature = int(scalar("num_feature"))
    header = {
        "num_feature": num_feature,
        "num_target": int(scalar("num_target")),
        "num_class": [int(c) for c in h.get_field("num_class")],
        "leaf_vector_shape": [int(c) for c in h.get_field("leaf_vector_shape")],
        "average_tree_output": bool(scalar("average_tree_output")),
        "postprocessor": str(h.get_field("postprocessor")),
        "sigmoid_alpha": float(scalar("sigmoid_alpha")),
        "ratio_c": float(scalar("ratio_c")),
        "base_scores": [float(v) for v in h.get_field("base_scores")],
        "precision": native.precision,
        "output_kind": native.output_kind,
        "flush_tiny_to_zero": native.library == "lightgbm",
        "raw_sums_trees": native.raw_sums_trees,
        "truncate_categories": native.library == "lightgbm",
    }
    rules = [0] * num_feature
    if native.nan_as_zero is not None:
        for f, flag in enumerate(native.nan_as_zero[:num_feature]):
            rules[f] = 1 if flag else 0
    if native.known_categories:
        words = np.zeros((num_feature, 8), dtype=np.uint32)
        for f, values in native.known_categories.items():
            rules[f] = 2
            for v in values:
                words[f, v // 32] |= np.uint32(1 << (v % 32))
        header["known_categories"] = words.ravel().tolist()
    if any(rules):
        header["feature_rule"] = rules
    header["reject"] = native.reject
    target_id = h.get_field("target_id")
    class_id = h.get_field("class_id")
    names = native.feature_names
    if names is not None and len(names) != num_feature:
        names = None
    header["metadata"] = json.dumps(
        {
            "library": native.library,
            "kind": native.kind,
            "feature_names": names,
            "categorical": native.categorical,
            "categories": native.categories,
        }
    )
    trees = []
    for i in range(tl.num_tree):
        acc = tl.get_tree_accessor(i)
        tree = {f: acc.get_field(f) for f in _TREE_FIELDS}
        tree["target_id"] = int(target_id[i])
        tree["class_id"] = int(class_id[i])
        trees.append(tree)
    return Forest.build(header, trees)
