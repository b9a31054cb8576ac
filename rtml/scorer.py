"""rtml.Scorer: a model bound to its inputs (request fields, stored features, windows).

One call gathers every model feature, scores, and records metrics, in C++ (see
core/include/rtml/scorer.h). Missing or expired stored features become NaN, which the
model sends down its default (missing-value) branch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtml._config import read_config
from rtml._core import InputError
from rtml._core import Scorer as _CoreScorer
from rtml.model import Model
from rtml.store import FeatureStore, Table, to_ns
from rtml.windows import Windows


@dataclass(frozen=True)
class RequestInput:
    """A model feature taken from the request itself."""

    field: str


@dataclass(frozen=True)
class TableInput:
    """A model feature read from a feature table, looked up by a request key."""

    table: str
    field: str
    key: str


@dataclass(frozen=True)
class WindowInput:
    """A model feature read from a window set (column ``{value}_{op}_{window}``)."""

    windows: str
    column: str
    key: str


Input = RequestInput | TableInput | WindowInput


def request(field: str) -> RequestInput:
    """A feature given by the request's field ``field``."""
    return RequestInput(field)


def table(name: str, field: str, *, key: str) -> TableInput:
    """A feature stored in table ``name``, field ``field``, keyed by the request's ``key``."""
    return TableInput(name, field, key)


def window(name: str, column: str, *, key: str) -> WindowInput:
    """A window aggregate of window set ``name`` (a column such as ``amount_count_10m``)."""
    return WindowInput(name, column, key)


def _score_edges(model: Model) -> list[float]:
    """Bins of the score histogram: 100 over [0, 1] for probabilities, else a symmetric
    grid of quarter decades from 1e-3 to 1e6 in magnitude."""
    if model._forest.postprocessor in ("sigmoid", "softmax", "multiclass_ova"):
        return np.linspace(0.0, 1.0, 101).tolist()
    mags = 10.0 ** (np.arange(-12, 25) / 4.0)
    return [*(-mags[::-1]).tolist(), 0.0, *mags.tolist()]


def _version_of(model: Model, given: str | None, default: str) -> str:
    if given is not None:
        return given
    return str(model._meta.get("version", default))


class Scorer:
    """Scores requests with one model (or A/B variants) over stored features.

    Examples
    --------
    >>> import numpy as np, rtml, xgboost as xgb
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((200, 3)); y = X[:, 0] + X[:, 2]
    >>> model = rtml.Model.load(xgb.XGBRegressor(n_estimators=5, max_depth=2).fit(X, y))
    >>> store = rtml.FeatureStore()
    >>> cards = store.table("card", key=str, fields={"avg_amount": "float32"})
    >>> txn = store.windows("card_txn", key=str, value="amount", ops=["count"], windows=["10m"])
    >>> cards.put("c1", {"avg_amount": 0.9}, ts=100.0)
    >>> txn.ingest(["c1", "c1"], [5.0, 7.0], ts=[90.0, 95.0])
    0
    >>> scorer = rtml.Scorer(model, store, inputs={
    ...     "f0": rtml.request("amount"),
    ...     "f1": rtml.table("card", "avg_amount", key="card_id"),
    ...     "f2": rtml.window("card_txn", "amount_count_10m", key="card_id"),
    ... })
    >>> p = scorer.score({"card_id": "c1", "amount": 0.5}, now=100.0)
    >>> p == float(model.predict(np.array([[0.5, 0.9, 2.0]]))[0])
    True
    >>> scorer.explain({"card_id": "c1", "amount": 0.5}, now=100.0)["features"]["f2"]["value"]
    2.0
    """

    def __init__(
        self,
        model: Model | None = None,
        store: FeatureStore | None = None,
        inputs: Mapping[str, Input] | None = None,
        *,
        variants: Mapping[str, Model] | None = None,
        split: Mapping[str, float] | None = None,
        route_by: str | None = None,
        shadow: Model | None = None,
        name: str = "default",
        version: str | None = None,
    ) -> None:
        if inputs is None or not inputs:
            raise InputError("Scorer needs inputs: {feature name: rtml.request/table/window(...)}")
        if (model is None) == (variants is None):
            raise InputError("Scorer needs either a model or variants={name: model} (not both)")
        self.name = name
        self.store = store if store is not None else FeatureStore()
        arms = self._arms(model, variants, split, version)
        first = arms[0][1]
        order = self._feature_order(first, inputs)
        for arm_name, m, _, _ in arms[1:]:
            self._feature_order(m, inputs, what=f"variant '{arm_name}'")
        self.features = order
        self.inputs = {f: inputs[f] for f in order}
        key_names: list[str] = []
        key_kinds: list[str] = []
        fields: list[str] = []
        tables: list[Table] = []
        windows: list[Windows] = []
        plan: list[tuple[int, int, int, int]] = []
        for feature in order:
            src = inputs[feature]
            if isinstance(src, RequestInput):
                if src.field not in fields:
                    fields.append(src.field)
                plan.append((0, fields.index(src.field), 0, 0))
                continue
            if not isinstance(src, (TableInput, WindowInput)):
                raise InputError(
                    f"feature '{feature}': expected rtml.request/table/window(...), got {src!r}"
                )
            if isinstance(src, TableInput):
                kind, pool, cls, label, part = 1, tables, Table, "table", "field"
                name, column_name = src.table, src.field
            else:
                kind, pool, cls, label, part = 2, windows, Windows, "window set", "column"
                name, column_name = src.windows, src.column
            obj = self.store[name]
            if not isinstance(obj, cls):
                raise InputError(f"feature '{feature}': '{name}' is not a {label}")
            if column_name not in obj.columns:
                raise InputError(
                    f"feature '{feature}': {label} '{name}' has no {part} '{column_name}'; "
                    f"{part}s are {obj.columns}"
                )
            key_kind = "str" if obj.key_type is str else "int"
            if src.key not in key_names:
                key_names.append(src.key)
                key_kinds.append(key_kind)
            elif key_kinds[key_names.index(src.key)] != key_kind:
                raise InputError(
                    f"feature '{feature}': key '{src.key}' looks up both str- and int-keyed sources"
                )
            index = next((i for i, o in enumerate(pool) if o is obj), len(pool))
            if index == len(pool):
                pool.append(obj)
            column = obj.columns.index(column_name)
            plan.append((kind, index, column, key_names.index(src.key)))
        for f in fields:
            if f in key_names:
                raise InputError(f"'{f}' is used both as a key and as a request field")
        if route_by is not None and route_by not in key_names:
            raise InputError(f"route_by '{route_by}' is not one of the request keys {key_names}")
        if len(arms) > 1 and route_by is None:
            if not key_names:
                raise InputError("A/B variants are routed by a request key; the inputs use none")
            route_by = key_names[0]
        self.key_names = key_names
        self.request_fields = fields
        self.route_by = route_by
        self._route_key = key_names.index(route_by) if route_by is not None else 0
        self._arms_py = arms
        self._shadow: tuple[Model, str] | None = None
        if shadow is not None:
            self._feature_order(shadow, inputs, what="shadow model")
            self._shadow = (shadow, _version_of(shadow, None, "shadow"))
        # Feature age: one histogram per (table, key) lookup, read by its features.
        groups: list[tuple[int, int]] = []
        age_of: list[int] = []
        age_from: list[int] = []
        for f, (kind, index, _, key) in enumerate(plan):
            if kind != 1:
                age_of.append(-1)
                continue
            if (index, key) not in groups:
                groups.append((index, key))
                age_from.append(f)
            age_of.append(groups.index((index, key)))
        self._windows = windows
        self._drift: Any = None
        self._core = _CoreScorer(
            plan,
            key_names,
            key_kinds,
            fields,
            [t._core for t in tables],
            [w._core for w in windows],
            [(n, m._forest, v, c) for n, m, v, c in arms],
            None if shadow is None else shadow._forest,
            "" if self._shadow is None else self._shadow[1],
            self._route_key,
            order,
            age_of,
            age_from,
            _score_edges(first),
            1 if first.num_outputs == 2 else 0,
        )

    @classmethod
    def from_config(
        cls, config: str | os.PathLike[str] | Mapping[str, Any], store: FeatureStore | None = None
    ) -> Scorer:
        """Builds a scorer from a TOML or JSON file (or the same as a dict), e.g.::

            name = "fraud"
            model = "fraud.rtml"            # or [variants] a = "...", b = "..." + [split]
            version = "v1"                  # optional
            route_by = "card_id"            # optional (A/B)
            shadow = "candidate.rtml"       # optional

            [inputs]
            amount = { request = "amount" }
            avg_amount_30d = { table = "card", field = "avg_amount_30d", key = "card_id" }
            txn_count_10m = { window = "card_txn", column = "amount_count_10m", key = "card_id" }

        Model paths are relative to the file. Every problem raises ``InputError`` naming
        the entry.
        """
        base = "."
        if isinstance(config, Mapping):
            cfg: Mapping[str, Any] = config
        else:
            base = os.path.dirname(os.path.abspath(os.fspath(config)))
            cfg = read_config(config, what="scorer config")
        known = {"name", "model", "version", "variants", "split", "route_by", "shadow", "inputs"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise InputError(f"scorer config: unknown entries {unknown}; known are {sorted(known)}")

        def load(entry: Any, what: str) -> Model:
            if not isinstance(entry, str):
                raise InputError(f"scorer config: {what} must be a model file path, got {entry!r}")
            return Model.load(entry if os.path.isabs(entry) else os.path.join(base, entry))

        inputs: dict[str, Input] = {}
        for feature, src in dict(cfg.get("inputs") or {}).items():
            if not isinstance(src, Mapping):
                raise InputError(f"scorer config: input '{feature}' must be a table, got {src!r}")
            kinds = [k for k in ("request", "table", "window") if k in src]
            try:
                if kinds == ["request"] and set(src) == {"request"}:
                    inputs[feature] = request(str(src["request"]))
                elif kinds == ["table"] and set(src) == {"table", "field", "key"}:
                    inputs[feature] = table(
                        str(src["table"]), str(src["field"]), key=str(src["key"])
                    )
                elif kinds == ["window"] and set(src) == {"window", "column", "key"}:
                    inputs[feature] = window(
                        str(src["window"]), str(src["column"]), key=str(src["key"])
                    )
                else:
                    raise KeyError
            except KeyError:
                raise InputError(
                    f"scorer config: input '{feature}' = {dict(src)!r}; expected "
                    "{request = ...}, {table, field, key} or {window, column, key}"
                ) from None
        variants = cfg.get("variants")
        return cls(
            None if variants else load(cfg.get("model"), "model"),
            store,
            inputs,
            variants={k: load(v, f"variant '{k}'") for k, v in variants.items()}
            if variants
            else None,
            split=dict(cfg["split"]) if "split" in cfg else None,
            route_by=cfg.get("route_by"),
            shadow=load(cfg["shadow"], "shadow") if "shadow" in cfg else None,
            name=str(cfg.get("name", "default")),
            version=cfg.get("version"),
        )

    # -- scoring -------------------------------------------------------------------------

    def score(self, request: Mapping[str, Any], *, now: Any = None) -> float | np.ndarray:
        """Scores one request: a dict with the key fields and the request fields.

        Returns the model's output (a float, or an array for multi-output models).
        ``now`` (default: the clock) is the time stored features and windows are read at.
        """
        return self._core.score(
            request if type(request) is dict else dict(request),
            time.time_ns() if now is None else to_ns(now, what="now"),
        )

    def score_many(self, data: Any, *, now: Any = None) -> np.ndarray:
        """Scores many requests given as a DataFrame or a dict of equal-length columns
        (key columns and request fields). Runs in C++ with the GIL released."""
        cols = data if isinstance(data, Mapping) else {c: data[c] for c in data.columns}
        missing = [c for c in [*self.key_names, *self.request_fields] if c not in cols]
        if missing:
            raise InputError(f"score_many: the data lacks column(s) {missing}")
        keys = [self._key_column(cols[k]) for k in self.key_names]
        n = len(keys[0]) if keys else None
        if self.request_fields:
            fields = np.column_stack(
                [np.asarray(cols[f], dtype=np.float64).reshape(-1) for f in self.request_fields]
            )
        else:
            fields = np.empty((n or 0, 0))
        return self._core.score_many(keys, fields, to_ns(now, what="now"))

    def explain(self, request: Mapping[str, Any], *, now: Any = None) -> dict[str, Any]:
        """The assembled feature vector of one request with each feature's source, value,
        whether it was found, and its age; plus the score and the arm that gave it."""
        row, age, found, arm, shadow, out = self._core.explain(
            dict(request), to_ns(now, what="now")
        )
        features = {}
        for i, f in enumerate(self.features):
            features[f] = {
                "source": self.inputs[f],
                "value": row[i],
                "found": found[i],
                "age_seconds": None if np.isnan(age[i]) else age[i],
            }
        score = out[0] if len(out) == 1 else np.asarray(out)
        return {
            "features": features,
            "score": score,
            "arm": self._arms_py[arm][0],
            "shadow_score": None if np.isnan(shadow) else shadow,
        }

    # -- monitoring ----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Online metrics since the scorer was built, in the schema of :mod:`rtml.metrics`:
        requests, errors, rows, latency per operation (ns, with p50/p95/p99/p999), missing
        features per feature, feature age at read, late/dropped window events, the score
        histogram, PSI (after :meth:`set_reference`), and per A/B arm (score histograms,
        then not at the top level) and shadow under ``variants`` (the shadow's dict also
        holds ``divergence``, a histogram of |primary - shadow| of the score).
        ``rtml.metrics.register(scorer)`` exports it to Prometheus.

        The score is the model's output, or its second column for two-column outputs
        (the positive class's probability).
        """
        raw = self._core.stats()
        versions = self.versions
        out: dict[str, Any] = {
            "name": self.name,
            "model_version": versions["arms"][0][1],
            "requests": raw["requests"],
            "errors": raw["errors"],
            "rows": raw["rows"],
            "latency": raw["latency"],
            "missing": raw["missing"],
            "feature_age": raw["feature_age"],
            "window_events": {
                "late": sum(w.stats()["late"] for w in self._windows),
                "dropped": sum(w.stats()["dropped"] for w in self._windows),
            },
        }
        # With A/B arms the score histograms are per arm only (under variants), so that
        # summing over the variant label in Prometheus never counts a row twice.
        if len(self._arms_py) == 1:
            out["scores"] = raw["arms"][0]["scores"]
        if self._drift is not None:
            out["psi"] = {k: v["psi"] for k, v in self._drift.psi().items()}
        variants = []
        if len(self._arms_py) > 1:
            for (arm_name, _, version, _), arm in zip(self._arms_py, raw["arms"], strict=True):
                variants.append(
                    {
                        "name": self.name,
                        "variant": arm_name,
                        "model_version": version,
                        "scores": arm["scores"],
                    }
                )
        if self._shadow is not None:
            variants.append(
                {
                    "name": self.name,
                    "variant": "shadow",
                    "model_version": self._shadow[1],
                    "scores": raw["shadow"]["scores"],
                    "divergence": raw["shadow"]["divergence"],
                }
            )
        if variants:
            out["variants"] = variants
        return out

    def set_reference(
        self, X_train: Any, scores: Any = None, *, bins: int = 10, sample_every: int = 1
    ) -> None:
        """Captures reference distributions (quantile bins) of every model feature and of
        the score from training data; from then on every scored row is counted against
        them (in C++, lock-free; ``sample_every=k`` counts every k-th row) and
        :meth:`drift` reports PSI. ``X_train`` has the model's features (a DataFrame with
        those columns, or an array in model order); ``scores`` default to the model's own
        predictions on it. Calling it again starts over with the new reference."""
        from rtml.drift import DriftMonitor, reference_from

        if hasattr(X_train, "columns"):
            missing = [f for f in self.features if f not in X_train.columns]
            if missing:
                raise InputError(f"set_reference: X_train lacks feature column(s) {missing}")
            X = np.asarray(X_train[self.features], dtype=np.float64)
        else:
            X = np.asarray(X_train, dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != len(self.features):
                raise InputError(
                    f"set_reference: X_train has shape {X.shape}; "
                    f"expected (n, {len(self.features)})"
                )
        if scores is None:
            pred = np.asarray(self._arms_py[0][1].predict(X))
            scores = (
                pred[:, 1]
                if pred.ndim == 2 and pred.shape[1] == 2
                else pred.reshape(len(X), -1)[:, 0]
            )
        monitor = DriftMonitor(
            reference_from(
                X, np.asarray(scores, dtype=np.float64), bins=bins, feature_names=self.features
            ),
            sample_every=sample_every,
        )
        self._core.set_drift(monitor._core)
        self._drift = monitor

    def drift(self) -> dict[str, dict[str, Any]]:
        """PSI of every feature and of the score (``"__score__"``) since
        :meth:`set_reference`, each with its level: ``none`` (< 0.1), ``moderate``
        (0.1 to 0.25) or ``significant`` (>= 0.25)."""
        if self._drift is None:
            raise InputError("drift() needs a reference: call set_reference(X_train) first")
        return self._drift.psi()

    def enable_log(self, capacity: int = 10_000, *, max_key_bytes: int = 64) -> None:
        """Keeps the last ``capacity`` scored rows (request keys, time, assembled features,
        score, arm) in a lock-free ring, so training data can match serving exactly.
        ``capacity=0`` turns it off. Calling it again starts a new, empty log."""
        if not isinstance(capacity, int) or capacity < 0:
            raise InputError(f"enable_log: capacity must be an int >= 0, got {capacity!r}")
        self._core.enable_log(capacity, max_key_bytes)

    def serving_log(self) -> dict[str, Any]:
        """The logged rows, oldest first: ``position`` (count of rows logged before),
        ``time`` (seconds), each key column, ``features`` ``[n, num_features]`` with
        ``feature_names``, ``score`` and ``arm`` (names)."""
        got = self._core.log()
        if got is None:
            raise InputError("no serving log: call enable_log(capacity) first")
        pos, now_ns, arm, score, keys, feats = got
        names = [a[0] for a in self._arms_py]
        out: dict[str, Any] = {"position": pos, "time": now_ns / 1e9}
        for name, col in zip(self.key_names, keys, strict=True):
            out[name] = np.asarray(col) if not isinstance(col, np.ndarray) else col
        out["features"] = feats
        out["feature_names"] = list(self.features)
        out["score"] = score
        out["arm"] = np.asarray([names[a] if 0 <= a < len(names) else "" for a in arm])
        return out

    def dump_log(self, path: str | os.PathLike[str]) -> None:
        """Writes the serving log to ``path``: ``.npz`` (numpy) or ``.parquet`` (one
        column per key, feature, score, arm and time; needs pandas with pyarrow)."""
        log = self.serving_log()
        path = os.fspath(path)
        if path.endswith(".parquet"):
            import pandas as pd

            frame = pd.DataFrame(log["features"], columns=log["feature_names"])
            for k in self.key_names:
                frame.insert(0, k, log[k])
            frame["time"] = log["time"]
            frame["score"] = log["score"]
            frame["arm"] = log["arm"]
            frame.to_parquet(path)
        elif path.endswith(".npz"):
            arrays = {k: np.asarray(v) for k, v in log.items() if k != "feature_names"}
            np.savez(path, feature_names=np.asarray(log["feature_names"]), **arrays)
        else:
            raise InputError(f"dump_log: {path!r} must end in .npz or .parquet")

    # -- models --------------------------------------------------------------------------

    def swap_model(
        self, model: Model, *, version: str | None = None, arm: str | None = None
    ) -> None:
        """Replaces the model (or one A/B arm's) atomically while other threads score.

        The new model is validated first (feature names and count, outputs); on error the
        old one stays. The old model is freed once its last in-flight request finishes.
        """
        target = arm if arm is not None else self._arms_py[0][0]
        names = [a[0] for a in self._arms_py]
        if target not in names:
            raise InputError(f"no arm '{target}'; arms are {names}")
        self._feature_order(model, self.inputs, what="new model")
        arms = [
            (n, model, _version_of(model, version, f"{v}+1"), c) if n == target else (n, m, v, c)
            for n, m, v, c in self._arms_py
        ]
        self._publish(arms, self._shadow)

    def set_shadow(self, model: Model | None, *, version: str | None = None) -> None:
        """Scores every request with ``model`` too (its answers are recorded, never
        returned); ``None`` removes the shadow."""
        shadow = None
        if model is not None:
            self._feature_order(model, self.inputs, what="shadow model")
            shadow = (model, _version_of(model, version, "shadow"))
        self._publish(self._arms_py, shadow)

    @property
    def versions(self) -> dict[str, Any]:
        """The arms (name, version, cumulative weight) and the shadow's version."""
        return self._core.versions()

    # -- helpers -------------------------------------------------------------------------

    def _publish(
        self, arms: list[tuple[str, Model, str, float]], shadow: tuple[Model, str] | None
    ) -> None:
        self._core.set_config(
            [(n, m._forest, v, c) for n, m, v, c in arms],
            None if shadow is None else shadow[0]._forest,
            "" if shadow is None else shadow[1],
            self._route_key,
        )
        self._arms_py = arms
        self._shadow = shadow

    @staticmethod
    def _arms(
        model: Model | None,
        variants: Mapping[str, Model] | None,
        split: Mapping[str, float] | None,
        version: str | None,
    ) -> list[tuple[str, Model, str, float]]:
        if model is not None:
            if split is not None:
                raise InputError("split= needs variants=")
            return [("main", model, _version_of(model, version, "v1"), 1.0)]
        assert variants is not None
        if split is None or set(split) != set(variants):
            raise InputError(f"variants {sorted(variants)} need a split with the same names")
        total = float(sum(split.values()))
        if any(w <= 0 for w in split.values()) or abs(total - 1.0) > 1e-9:
            raise InputError(f"split weights must be positive and sum to 1, got {dict(split)}")
        arms, acc = [], 0.0
        for arm_name, m in variants.items():
            acc += split[arm_name]
            arms.append((arm_name, m, _version_of(m, None, arm_name), acc))
        last = arms[-1]
        arms[-1] = (last[0], last[1], last[2], 1.0)
        return arms

    @staticmethod
    def _feature_order(
        model: Model, inputs: Mapping[str, Input], *, what: str = "model"
    ) -> list[str]:
        if not isinstance(model, Model):
            raise InputError(f"{what}: expected an rtml.Model, got {type(model).__name__}")
        names = model.feature_names
        if names:
            unmatched = [f for f in names if f not in inputs]
            extra = [f for f in inputs if f not in names]
            if unmatched or extra:
                raise InputError(
                    f"{what}'s features and the inputs differ: model features without an input "
                    f"{unmatched}; inputs the model does not take {extra}"
                )
            return list(names)
        if len(inputs) != model.num_features:
            raise InputError(
                f"{what} takes {model.num_features} features (no names); got {len(inputs)} inputs"
            )
        return list(inputs)

    @staticmethod
    def _key_column(col: Any) -> Any:
        if isinstance(col, np.ndarray) and col.dtype.kind in "iu":
            return col
        if hasattr(col, "to_numpy"):
            col = col.to_numpy()
        return col if isinstance(col, (list, np.ndarray)) else list(col)

    def __repr__(self) -> str:
        return (
            f"Scorer('{self.name}', {len(self.features)} features, keys={self.key_names}, "
            f"request fields={self.request_fields}, versions={self.versions})"
        )
