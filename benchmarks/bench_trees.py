"""pytest-benchmark micro-benchmarks: rtml against the native library.

For each model of ``benchmarks.trees`` (two xgboost boosters, one LightGBM),
rtml and the library that trained it predict one row (1 thread), a 1,000-row
batch and a 100,000-row batch (all threads). Each benchmark first checks the
output against the native library's ``predict``; timings are only reported,
never asserted. Run with::

    python -m pytest benchmarks/bench_trees.py --benchmark-only

Compare engines within a group (``--benchmark-group-by=group`` is the default).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks._models import Trained

ENGINES = ("rtml", "native")
ATOL = 1e-5  # float32 sums: rtml may add trees in another order
N_THREADS = os.cpu_count() or 1


def _reference(trained: Trained, X: np.ndarray) -> np.ndarray:
    if trained.spec.library == "xgboost":
        import xgboost

        return trained.booster.predict(xgboost.DMatrix(X))
    return trained.booster.predict(X)


def _predictor(engine: str, trained: Trained, n_threads: int):
    """The engine's fastest public call, configured for ``n_threads``."""
    if engine == "rtml":
        rtml = pytest.importorskip("rtml")
        return rtml.Model.load(trained.booster, n_threads=n_threads).predict
    if trained.spec.library == "xgboost":
        booster = trained.booster.copy()
        booster.set_param({"nthread": n_threads})
        return booster.inplace_predict

    booster = trained.booster

    def predict(X):
        return booster.predict(X, num_threads=n_threads)

    return predict


def _row_input(engine: str, X: np.ndarray) -> np.ndarray:
    # rtml takes a 1-D row and returns a float; the libraries want (1, n).
    return np.ascontiguousarray(X[0] if engine == "rtml" else X[:1])


@pytest.mark.parametrize("engine", ENGINES)
def test_single_row(benchmark, engine, trained, eval_X):
    predict = _predictor(engine, trained, 1)
    row = _row_input(engine, eval_X)
    want = _reference(trained, eval_X[:1])
    got = np.asarray(predict(row), dtype=np.float64).reshape(-1)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)

    benchmark.group = f"{trained.spec.name}: 1 row, 1 thread"
    benchmark.extra_info.update(engine=engine, model=trained.spec.name)
    benchmark(predict, row)


@pytest.mark.parametrize("n_rows", [1_000, 100_000], ids=["batch1k", "batch100k"])
@pytest.mark.parametrize("engine", ENGINES)
def test_batch(benchmark, engine, n_rows, trained, eval_X):
    predict = _predictor(engine, trained, N_THREADS)
    X = np.ascontiguousarray(eval_X[:n_rows])
    want = _reference(trained, X)
    got = predict(X)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)

    benchmark.group = f"{trained.spec.name}: {n_rows:,} rows, {N_THREADS} threads"
    benchmark.extra_info.update(engine=engine, model=trained.spec.name, rows=n_rows)
    benchmark(predict, X)
