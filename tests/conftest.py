"""Known, documented gaps against the native libraries (issue 2's note lists them).

Each entry is a strict xfail: the test still runs, and the day rtml matches the
native library the run fails until the entry is removed. Nothing here hides a
crash: these are cases where the native library *rejects* an input that rtml
scores, or a category edge case rtml does not yet reproduce.
"""

from __future__ import annotations

import pytest

KNOWN_GAPS: dict[str, str] = {
    "test_errors.py::test_unseen_pandas_category": (
        "XGBoost 3 raises on a DataFrame category unseen in training; rtml scores it as missing"
    ),
    "test_errors.py::test_truncated_native_files": (
        "a LightGBM text file cut inside its trailer is accepted by treelite's parser"
    ),
    "test_parity_lightgbm.py::test_dataframe_category_order_differs": (
        "LightGBM re-codes DataFrame categories by its pandas_categorical list; rtml uses codes"
    ),
    "test_parity_xgboost.py::test_dataframe_booster_and_file": (
        "XGBoost .ubj files that carry a category encoder are refused by treelite"
    ),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        nodeid = item.nodeid.split("tests/python/", 1)[-1]
        for prefix, reason in KNOWN_GAPS.items():
            if (
                nodeid == prefix
                or nodeid.startswith(prefix + "[")
                or nodeid.startswith(prefix + "::")
            ):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
