"""Input and score drift: the population stability index (PSI) of live traffic against
the training data, per feature and for the score.

:func:`reference_from` cuts each training feature (and the training scores) into quantile
bins and records the share of rows in each; a :class:`DriftMonitor` counts live rows into
the same bins in C++ (core/include/rtml/drift.h: lock-free, a few ns per feature) and
reports, on demand, the PSI of the live window against the reference:

``PSI = sum_i (a_i - r_i) * ln(a_i / r_i)``, with live proportions ``a_i`` and reference
proportions ``r_i`` each floored at :data:`EPSILON` (1e-4) so that empty bins stay finite.
PSI < 0.1 is no drift, 0.1 to 0.25 moderate, >= 0.25 significant. See docs/drift.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtml._core import DriftMonitor as _CoreDrift
from rtml._core import InputError

EPSILON = 1e-4
"""Floor of every live and reference bin proportion in the PSI sum."""
MODERATE = 0.1
"""PSI from which drift is "moderate"."""
SIGNIFICANT = 0.25
"""PSI from which drift is "significant"."""
SCORE = "__score__"
"""Key of the score in :meth:`DriftMonitor.psi` and :meth:`DriftMonitor.counts`."""


def level(psi: float) -> str:
    """The drift level of a PSI value: ``"none"``, ``"moderate"`` or ``"significant"``.

    NaN (nothing observed yet) reads as ``"none"``.

    Examples
    --------
    >>> from rtml.drift import level
    >>> level(0.05), level(0.1), level(0.3), level(float("nan"))
    ('none', 'moderate', 'significant', 'none')
    """
    if psi >= SIGNIFICANT:
        return "significant"
    if psi >= MODERATE:
        return "moderate"
    return "none"


@dataclass(frozen=True)
class Reference:
    """Reference (training) distributions: quantile bins and the share of rows in each.

    For feature ``f``, ``edges[f]`` holds the inner bin edges (float32, strictly
    increasing); a value ``x`` falls in bin ``numpy.searchsorted(edges[f], x, "right")``
    and NaN in a last, "missing" bin, so ``proportions[f]`` has ``len(edges[f]) + 2``
    entries that sum to 1. The score is binned the same way in float64.
    Build one with :func:`reference_from`.
    """

    feature_names: tuple[str, ...]
    edges: tuple[np.ndarray, ...]
    proportions: tuple[np.ndarray, ...]
    score_edges: np.ndarray | None
    score_proportions: np.ndarray | None
    n_rows: int


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Deduplicated inner quantile edges of the non-NaN values (same dtype as values)."""
    dtype = values.dtype.type
    present = values[~np.isnan(values)]
    if present.size == 0:
        return np.empty(0, dtype=values.dtype)
    # Edge k is the value of rank ceil(k * n / bins) (0-based), so that about k / bins
    # of the values fall below it (a bin holds [edge, next edge)); edges are data values,
    # exact in the data's dtype, and ties (a value spanning several ranks) merge.
    n = present.size
    ranks = np.minimum((np.arange(1, bins) * n + bins - 1) // bins, n - 1)
    edges = np.unique(np.partition(present, ranks)[ranks])
    top = present.max()
    if edges.size == 0 or edges[-1] == top:
        # The top bin would start at the maximum (always for a constant feature):
        # give values above the training range a bin of their own.
        edges = np.append(edges, np.nextafter(dtype(top), dtype(np.inf)))
    return edges[np.isfinite(edges)]


def _proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    bins = np.searchsorted(edges, values[~missing], side="right")
    counts = np.bincount(bins, minlength=edges.size + 1).astype(np.float64)
    return np.append(counts, float(missing.sum())) / values.size


def _names(X_train: Any, n_features: int, feature_names: Sequence[str] | None) -> tuple[str, ...]:
    if feature_names is None:
        columns = getattr(X_train, "columns", None)
        feature_names = [str(c) for c in columns] if columns is not None else None
    if feature_names is None:
        return tuple(f"f{i}" for i in range(n_features))
    names = tuple(str(n) for n in feature_names)
    if len(names) != n_features:
        raise InputError(f"feature_names: {len(names)} names for {n_features} features")
    if len(set(names)) != len(names) or SCORE in names:
        raise InputError(f"feature_names must be unique and not {SCORE!r}, got {list(names)}")
    return names


def reference_from(
    X_train: Any,
    scores: Any = None,
    *,
    bins: int = 10,
    feature_names: Sequence[str] | None = None,
) -> Reference:
    """Reference distributions of training features (and scores) in quantile bins.

    Parameters
    ----------
    X_train : array-like or DataFrame, shape (n_rows, n_features)
        Training inputs. Values are binned as float32, as live rows are; NaN is
        "missing" and gets its own bin.
    scores : array-like, shape (n_rows,), optional
        The model's scores on ``X_train`` (float64); omit to monitor inputs only.
    bins : int, default 10
        Quantile bins per feature before ties are merged (>= 2). Edge ``k`` is the
        non-missing value of rank ``ceil(k * n / bins)`` (0-based, a data value, not an
        interpolation), so about ``k / bins`` of the values fall below it; repeated
        edges are merged, and when the top edge is the training maximum (a constant or
        point-mass feature) one more edge just above it separates values beyond the
        training range.
    feature_names : sequence of str, optional
        Defaults to the DataFrame's columns, else ``f0, f1, ...``.

    Returns
    -------
    Reference

    Examples
    --------
    >>> import numpy as np
    >>> from rtml.drift import reference_from
    >>> amount = np.arange(1.0, 9.0)                 # 1, 2, ..., 8
    >>> flag = np.array([5.0] * 7 + [np.nan])        # constant, one missing
    >>> ref = reference_from(np.column_stack([amount, flag]), bins=4,
    ...                      feature_names=["amount", "flag"])
    >>> ref.edges[0]                                 # bins <3, [3,5), [5,7), >=7
    array([3., 5., 7.], dtype=float32)
    >>> ref.proportions[0]                           # ... then missing
    array([0.25, 0.25, 0.25, 0.25, 0.  ])
    >>> ref.edges[1]                                 # one bin for 5.0, one above it
    array([5.       , 5.0000005], dtype=float32)
    >>> ref.proportions[1]                           # below 5, 5, above, missing
    array([0.   , 0.875, 0.   , 0.125])
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise InputError(f"bins: expected an int >= 2, got {bins!r}")
    try:
        X = np.asarray(X_train, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"X_train: expected a 2-D array of numbers ({e})") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(
            f"X_train: expected a 2-D array with at least one row, got shape {X.shape}"
        )
    names = _names(X_train, X.shape[1], feature_names)
    edges = tuple(_quantile_edges(X[:, f], bins) for f in range(X.shape[1]))
    proportions = tuple(_proportions(X[:, f], edges[f]) for f in range(X.shape[1]))
    score_edges = score_proportions = None
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != (X.shape[0],):
            raise InputError(f"scores: expected shape ({X.shape[0]},), one per row, got {s.shape}")
        score_edges = _quantile_edges(s, bins)
        score_proportions = _proportions(s, score_edges)
    return Reference(names, edges, proportions, score_edges, score_proportions, X.shape[0])


class DriftMonitor:
    """Live PSI of every input and of the score against a :class:`Reference`.

    Built once, fed with every scored batch (from any number of threads; the counting
    runs in C++ without the GIL, lock-free), asked for :meth:`psi` on demand.
    :meth:`reset` starts a new live window.

    Parameters
    ----------
    reference : Reference
        From :func:`reference_from`.
    sample_every : int, default 1
        Count every k-th row only (per counting stripe; exactly rows 0, k, 2k, ... from
        one thread), to bound the cost on very hot paths.

    Examples
    --------
    >>> import numpy as np
    >>> from rtml.drift import DriftMonitor, reference_from
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(20_000, 2))
    >>> monitor = DriftMonitor(reference_from(X, X[:, 0], feature_names=["amount", "age"]))
    >>> live = rng.normal(size=(20_000, 2))
    >>> live[:, 0] += 1.0                       # amount moved by one standard deviation
    >>> monitor.observe_many(live, live[:, 0])  # the score follows amount
    >>> drift = monitor.psi()
    >>> drift["amount"]["level"], drift["age"]["level"], drift["__score__"]["level"]
    ('significant', 'none', 'significant')
    >>> monitor.rows_observed
    20000
    >>> monitor.reset()
    >>> monitor.psi()["age"]
    {'psi': nan, 'level': 'none'}
    """

    def __init__(self, reference: Reference, *, sample_every: int = 1) -> None:
        if isinstance(sample_every, bool) or not isinstance(sample_every, (int, np.integer)):
            raise InputError(f"sample_every: expected an int >= 1, got {sample_every!r}")
        if sample_every < 1:
            raise InputError(f"sample_every: expected an int >= 1, got {sample_every}")
        self._reference = reference
        self._names = reference.feature_names
        self._core = _CoreDrift(
            [np.asarray(e, dtype=np.float64) for e in reference.edges],
            [np.asarray(p, dtype=np.float64) for p in reference.proportions],
            reference.score_edges,
            reference.score_proportions,
            sample_every=int(sample_every),
        )

    @property
    def reference(self) -> Reference:
        return self._reference

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def sample_every(self) -> int:
        return int(self._core.sample_every)

    @property
    def rows_seen(self) -> int:
        """Rows offered since the last :meth:`reset` (before sampling)."""
        return int(self._core.psi()["rows_seen"])

    @property
    def rows_observed(self) -> int:
        """Rows counted since the last :meth:`reset` (after sampling)."""
        return int(self._core.psi()["rows_observed"])

    def observe_many(self, X: Any, scores: Any = None) -> None:
        """Count a batch of live rows (and their scores) into the current window.

        Parameters
        ----------
        X : array-like, shape (n_rows, n_features)
            Read in place when it is float32 with contiguous rows (any row stride);
            otherwise converted to float32 first. NaN counts as missing.
        scores : array-like, shape (n_rows,), optional
            Counted when the reference has a score distribution; omitted, the score
            bins are left as they are.
        """
        if scores is not None:
            if self._reference.score_edges is None:
                raise InputError("observe_many: scores given, but the reference has no scores")
            scores = np.ascontiguousarray(scores, dtype=np.float64)
        if not isinstance(X, np.ndarray):
            X = np.asarray(X, dtype=np.float32)
        self._core.observe_many(X, scores)

    def psi(self) -> dict[str, dict[str, Any]]:
        """PSI and level of each feature (by name) and of the score (``"__score__"``).

        Returns
        -------
        dict
            ``{name: {"psi": float, "level": "none" | "moderate" | "significant"}}``;
            PSI is NaN (level ``"none"``) before any row of the window was counted.
        """
        r = self._core.psi()
        out = {
            n: {"psi": p, "level": level(p)}
            for n, p in zip(self._names, r["feature_psi"], strict=True)
        }
        if r["score_counts"] is not None:
            out[SCORE] = {"psi": r["score_psi"], "level": level(r["score_psi"])}
        return out

    def counts(self) -> dict[str, np.ndarray]:
        """Live counts per bin (value bins in order, missing last) of each feature and
        of the score, aligned with the reference's proportions."""
        r = self._core.psi()
        out = dict(zip(self._names, r["feature_counts"], strict=True))
        if r["score_counts"] is not None:
            out[SCORE] = r["score_counts"]
        return out

    def reset(self) -> None:
        """Start a new live window (rows counted so far are forgotten)."""
        self._core.reset()

    def report(self) -> str:
        """A plain-text table of PSI and level per input, most drifted first.

        Examples
        --------
        >>> import numpy as np
        >>> from rtml.drift import DriftMonitor, reference_from
        >>> rng = np.random.default_rng(1)
        >>> monitor = DriftMonitor(reference_from(rng.normal(size=(10_000, 2))))
        >>> live = rng.normal(size=(10_000, 2))
        >>> live[:, 1] *= 1.5
        >>> monitor.observe_many(live)
        >>> print(monitor.report())  # doctest: +NORMALIZE_WHITESPACE
        drift over 10000 rows (PSI: < 0.1 none, 0.1-0.25 moderate, >= 0.25 significant)
        input      psi  level
        f1      0.1946  moderate
        f0      0.0011  none
        """
        r = self._core.psi()
        rows = sorted(
            self.psi().items(),
            key=lambda kv: (np.isnan(kv[1]["psi"]), -np.nan_to_num(kv[1]["psi"])),
        )
        width = max(len("input"), *(len(name) for name, _ in rows))
        lines = [
            f"drift over {r['rows_observed']} rows "
            f"(PSI: < {MODERATE:g} none, {MODERATE:g}-{SIGNIFICANT:g} moderate, "
            f">= {SIGNIFICANT:g} significant)",
            f"{'input':<{width}}  {'psi':>6}  level",
        ]
        lines += [f"{name:<{width}}  {d['psi']:6.4f}  {d['level']}" for name, d in rows]
        return "\n".join(lines)
