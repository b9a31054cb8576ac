"""rtml.Model: a compiled tree ensemble that scores exactly as its native library does."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from rtml._core import Forest, InputError

_NUMERIC_KINDS = frozenset("biuf")


class Model:
    """A tree ensemble compiled by rtml.

    Load one with :meth:`Model.load` from an XGBoost, LightGBM or scikit-learn model,
    a treelite model, or a file; :meth:`predict` then returns what the native
    library's own scoring call returns, with the same values and the same shape.

    Examples
    --------
    >>> import numpy as np, xgboost as xgb, rtml
    >>> X = np.random.default_rng(0).random((200, 4), dtype=np.float32)
    >>> y = (X[:, 0] > 0.5).astype(int)
    >>> booster = xgb.train({"max_depth": 3, "objective": "binary:logistic"},
    ...                     xgb.DMatrix(X, y), num_boost_round=10)
    >>> model = rtml.Model.load(booster)
    >>> model
    Model(Booster from xgboost: 10 trees, 4 features, 1 output, float32 compare)
    >>> bool(np.allclose(model.predict(X), booster.predict(xgb.DMatrix(X)), rtol=1e-5))
    True
    >>> isinstance(model.predict(X[0]), float)  # one 1-D row: the single-row fast path
    True
    """

    __slots__ = ("_forest", "_meta", "_n_threads", "_predict_batch", "_predict_row")

    def __init__(self, forest: Forest, *, n_threads: int | None = None) -> None:
        self._forest = forest
        self._meta: dict[str, Any] = json.loads(forest.metadata) if forest.metadata else {}
        if n_threads is None:
            n_threads = os.cpu_count() or 1
        if not isinstance(n_threads, int) or n_threads < 1:
            raise InputError(f"n_threads must be a positive int or None, got {n_threads!r}")
        self._n_threads = n_threads
        # Bound once: the single-row path is one attribute load and one call.
        self._predict_row = forest.predict_row
        self._predict_batch = forest.predict

    @classmethod
    def load(cls, source: Any, *, n_threads: int | None = None) -> Model:
        """Compiles (or reads) a model.

        Parameters
        ----------
        source
            An ``xgboost.Booster``, ``XGBClassifier``/``XGBRegressor``/``XGBRanker``; a
            ``lightgbm.Booster``, ``LGBMClassifier``/``LGBMRegressor``; a fitted
            scikit-learn RandomForest*, ExtraTrees*, GradientBoosting*,
            HistGradientBoosting* or IsolationForest; a ``treelite.Model``; or a path to
            an XGBoost ``.json``/``.ubj`` file, a LightGBM text model or a file written by
            :meth:`save` (which loads without treelite).
        n_threads
            Threads for large batches; ``None`` means every core.

        Raises
        ------
        ModelFormatError
            The file is unknown, unreadable, truncated, corrupted or from a newer rtml.
        UnsupportedModelError
            The model uses something rtml cannot evaluate exactly.
        """
        if isinstance(source, Model):
            return cls(source._forest, n_threads=n_threads)
        from rtml._importers import load_forest

        return cls(load_forest(source), n_threads=n_threads)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes rtml's compiled file (versioned header, checksum), atomically.

        Examples
        --------
        >>> import tempfile, pathlib, numpy as np, xgboost as xgb, rtml
        >>> X = np.random.default_rng(1).random((100, 3))
        >>> booster = xgb.train({"max_depth": 2}, xgb.DMatrix(X, X[:, 0]), 5)
        >>> model = rtml.Model.load(booster)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.rtml"
        >>> model.save(path)
        >>> bool((rtml.Model.load(path).predict(X) == model.predict(X)).all())
        True
        """
        self._forest.save(os.fspath(path))

    def predict(self, X: Any, *, raw_score: bool = False) -> Any:
        """Scores rows as the native library's own scoring call does.

        Parameters
        ----------
        X
            A 2-D array (float32 or float64, any memory order, not copied when it need
            not be), a pandas DataFrame (columns matched to the model's feature names),
            or a 1-D array holding one row.
        raw_score
            Return margins (before the sigmoid/softmax/exp transform) instead.

        Returns
        -------
        float or numpy.ndarray
            For a 2-D input: shape ``(n,)`` for one output per row, else ``(n, k)``.
            For a 1-D row: a float for one output, else a 1-D array.
        """
        if type(X) is np.ndarray:
            if X.ndim == 1:
                return self._predict_row(X, raw_score)
            if X.ndim == 2 and X.dtype.kind == "f":
                return self._predict_batch(X, raw_score, self._n_threads)
        return self._predict_any(X, raw_score)

    def _predict_any(self, X: Any, raw_score: bool) -> Any:
        if _is_dataframe(X):
            X = self._frame_to_array(X)
        else:
            X = np.asarray(X)
        if X.dtype.kind not in _NUMERIC_KINDS:
            raise InputError(
                f"X has dtype {X.dtype}: expected a numeric array (float32 or float64)"
            )
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        if X.ndim == 1:
            return self._predict_row(X, raw_score)
        if X.ndim != 2:
            raise InputError(f"X must be 1-D (one row) or 2-D (rows x features), got {X.ndim}-D")
        return self._predict_batch(X, raw_score, self._n_threads)

    def _frame_to_array(self, df: Any) -> np.ndarray:
        names = self.feature_names
        if names is not None:
            missing = [n for n in names if n not in df.columns]
            if missing:
                raise InputError(
                    f"DataFrame lacks the model's feature column(s) {missing[:5]}"
                    f"{' ...' if len(missing) > 5 else ''}; expected columns {names[:10]}"
                )
            df = df[names]
        elif df.shape[1] != self.num_features:
            raise InputError(
                f"DataFrame has {df.shape[1]} columns, the model expects {self.num_features}"
            )
        cols = []
        trained = self._meta.get("categories") or [None] * df.shape[1]
        for name, categories in zip(df.columns, trained, strict=False):
            col = df[name]
            if str(col.dtype) == "category":
                if categories is not None:  # re-code by value, as the native library does
                    recoded = col.cat.set_categories(categories)
                    unseen = recoded.isna() & col.notna()
                    if unseen.any() and self._meta.get("library") == "xgboost":
                        raise InputError(
                            f"feature '{name}': category {col[unseen].iloc[0]!r} was not seen in "
                            f"training (XGBoost refuses it); expected one of {categories[:10]}"
                        )
                    col = recoded
                codes = col.cat.codes.to_numpy().astype(np.float64)
                codes[codes < 0] = np.nan
                cols.append(codes)
                continue
            values = col.to_numpy()
            if values.dtype.kind not in _NUMERIC_KINDS:
                try:
                    values = col.to_numpy(dtype=np.float64, na_value=np.nan)
                except (TypeError, ValueError):
                    raise InputError(
                        f"feature '{name}': expected a numeric column, got dtype {col.dtype}"
                    ) from None
            cols.append(values.astype(np.float64, copy=False))
        return np.column_stack(cols) if cols else np.empty((len(df), 0))

    @property
    def num_features(self) -> int:
        """Number of input features per row."""
        return self._forest.num_features

    @property
    def feature_names(self) -> list[str] | None:
        """The model's feature names, when it was trained with them."""
        return self._meta.get("feature_names")

    @property
    def num_trees(self) -> int:
        """Number of trees."""
        return self._forest.num_trees

    @property
    def num_outputs(self) -> int:
        """Columns :meth:`predict` returns per row (1 means a 1-D result)."""
        return self._forest.num_columns(False)

    @property
    def n_threads(self) -> int:
        """Threads used for large batches."""
        return self._n_threads

    def __repr__(self) -> str:
        kind = self._meta.get("kind", "model")
        lib = self._meta.get("library", "rtml")
        outs = self.num_outputs
        return (
            f"Model({kind} from {lib}: {self.num_trees} trees, {self.num_features} features, "
            f"{outs} output{'s' if outs != 1 else ''}, {self._forest.precision} compare)"
        )


def _is_dataframe(X: Any) -> bool:
    return type(X).__name__ == "DataFrame" and hasattr(X, "columns")
