"""Reading TOML / JSON config files (scorer configs, server configs)."""

from __future__ import annotations

import os
from typing import Any

from rtml._core import InputError


def read_config(path: str | os.PathLike[str], *, what: str = "config") -> dict[str, Any]:
    """Parses a TOML file (JSON when it ends in ``.json``) into a dict.

    Raises ``InputError`` naming ``what`` and the path when it cannot be read or parsed.

    >>> read_config("/nonexistent.toml", what="server config")
    Traceback (most recent call last):
    ...
    rtml._core.InputError: server config '/nonexistent.toml': cannot read: No such file or directory
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputError(f"{what} {p!r}: cannot read: {e.strerror}") from None
    try:
        if p.endswith(".json"):
            import json

            cfg = json.loads(raw)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            cfg = tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {p!r}: not valid TOML/JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{what} {p!r}: expected a table of entries, got {type(cfg).__name__}")
    return cfg
