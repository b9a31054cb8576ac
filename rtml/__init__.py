"""rtml: real-time machine-learning inference with a compiled C++ core.

Examples
--------
>>> import rtml
>>> issubclass(rtml.InputError, rtml.RtmlError)
True
"""

from rtml._core import InputError, ModelFormatError, RtmlError, UnsupportedModelError
from rtml.model import Model

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "Model",
    "ModelFormatError",
    "RtmlError",
    "UnsupportedModelError",
    "__version__",
]
