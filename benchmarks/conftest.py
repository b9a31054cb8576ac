"""Fixtures for the pytest-benchmark micro-benchmarks in bench_trees.py.

Run explicitly (benchmarks/ is not part of the test run)::

    python -m pytest benchmarks/bench_trees.py --benchmark-only

The models are the ones ``python -m benchmarks.trees`` uses and share its cache,
so whichever runs first pays for training.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

# pytest runs with --import-mode=importlib, which puts nothing on sys.path:
# make the repository root importable so ``benchmarks._models`` resolves.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from benchmarks import _models  # noqa: E402

TRAIN_ROWS = 200_000  # same as the full trees.py run, so the cache is shared
BATCH_ROWS = 100_000


@pytest.fixture(scope="session")
def eval_X() -> np.ndarray:
    X, _ = _models.make_data(BATCH_ROWS, _models.EVAL_SEED)
    return X


@pytest.fixture(scope="session", params=_models.SPECS, ids=lambda s: f"{s.library}-{s.rounds}")
def trained(request) -> _models.Trained:
    pytest.importorskip(request.param.library)
    return _models.train(request.param, TRAIN_ROWS)
