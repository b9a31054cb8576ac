"""Shared fixtures for rtml's Python tests.

Models are small (tens of trees, a few hundred rows) and trained at most once
per session: the builders in ``_models`` are cached, and the fixtures here are
session-scoped wrappers around them.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

# The helper module sits next to this file; make it importable whatever
# pytest's import mode is.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _models


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_oracles():
    """Run the native libraries' OpenMP code on one thread.

    scikit-learn, XGBoost and LightGBM each load an OpenMP runtime; on a
    2-core machine their spinning workers starve each other (a tiny
    HistGradientBoosting fit took 25 s instead of 0.2 s).  rtml's own worker
    threads are plain std::threads and are not affected.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="session")
def rng() -> np.random.Generator:
    return np.random.default_rng(_models.SEED)


@pytest.fixture(scope="session")
def regression_data() -> _models.Data:
    return _models.regression_data()


@pytest.fixture(scope="session")
def regression_data_nan() -> _models.Data:
    return _models.regression_data(0.1)


@pytest.fixture(scope="session")
def binary_data() -> _models.Data:
    return _models.binary_data()


@pytest.fixture(scope="session")
def multiclass_data() -> _models.Data:
    return _models.multiclass_data()


@pytest.fixture(scope="session")
def categorical_data() -> _models.Data:
    return _models.categorical_data()


@pytest.fixture
def model(case: _models.Case):
    """The rtml model for the ``case`` fixture of the requesting test."""
    return case.rtml_model()
