"""rtml: real-time machine-learning inference with a compiled C++ core.

Examples
--------
>>> import rtml
>>> issubclass(rtml.InputError, rtml.RtmlError)
True
"""

from rtml import drift, metrics
from rtml._core import (
    InputError,
    ModelFormatError,
    RtmlError,
    SnapshotError,
    UnsupportedModelError,
)
from rtml.client import (
    AsyncClient,
    Client,
    ProtocolError,
    ServerConnectionError,
    ServerError,
    ServerTimeoutError,
)
from rtml.model import Model
from rtml.scorer import Scorer, request, table, window
from rtml.store import Batch, FeatureStore, Table
from rtml.windows import WindowBatch, Windows

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Batch",
    "Client",
    "FeatureStore",
    "InputError",
    "Model",
    "ModelFormatError",
    "ProtocolError",
    "RtmlError",
    "Scorer",
    "ServerConnectionError",
    "ServerError",
    "ServerTimeoutError",
    "SnapshotError",
    "Table",
    "UnsupportedModelError",
    "WindowBatch",
    "Windows",
    "__version__",
    "drift",
    "metrics",
    "request",
    "table",
    "window",
]
