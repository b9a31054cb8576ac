"""``rtml serve --config FILE``: a server (store, models, scorers) from one TOML or JSON file.

The layout (docs/serve.md has the annotated example, ``docs/rtml.example.toml``)::

    [server]
    host = "127.0.0.1"       # a non-loopback host needs a token
    port = 7311
    token = "..."            # optional; or the environment variable RTML_TOKEN
    admin = false            # allow MODEL_LOAD / MODEL_SWAP
    snapshot = "store.snap"  # optional: load the store from FeatureStore.save's file

    [tables.card]            # FeatureStore.table(name, ...) keyword arguments
    key = "str"
    fields = { avg_amount_30d = "float32", n_chargebacks = "int32" }
    ttl = "30d"

    [windows.card_txn]       # FeatureStore.windows(name, ...) keyword arguments
    key = "str"
    value = "amount"
    ops = ["count", "mean"]
    windows = ["10m", "1h"]

    [models]                 # PREDICT targets: name = model file
    fraud = "fraud.rtml"

    [scorers.fraud]          # rtml.Scorer.from_config entries
    model = "fraud.rtml"
    inputs = { amount = { request = "amount" } }

Paths are relative to the file. Every problem raises ``InputError`` naming the entry.

Example
-------
>>> server = server_from_config({"tables": {"t": {"key": "int", "fields": {"x": "float64"}}}},
...                             port=0)
>>> sorted(server.store.tables)
['t']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rtml._config import read_config
from rtml._core import InputError
from rtml.model import Model
from rtml.scorer import Scorer
from rtml.server import Server
from rtml.store import FeatureStore

__all__ = ["server_from_config"]

_SECTIONS = {"server", "tables", "windows", "models", "scorers"}
_SERVER_KEYS = {
    "host",
    "port",
    "token",
    "admin",
    "snapshot",
    "loop",
    "max_in_flight",
    "max_payload",
    "drain_timeout",
}
_KEY_TYPES = {"str": str, "int": int}


def _section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = cfg.get(name) or {}
    if not isinstance(value, Mapping):
        raise InputError(f"server config: [{name}] must be a table, got {value!r}")
    return dict(value)


def _build(make: Any, where: str, name: str, kwargs: dict[str, Any]) -> None:
    """Calls store.table / store.windows with a config entry's keyword arguments."""
    try:
        kwargs["key"] = _KEY_TYPES[kwargs.get("key", "str")]
    except (KeyError, TypeError):
        raise InputError(f"server config: [{where}] key must be 'str' or 'int'") from None
    try:
        make(name, **kwargs)
    except TypeError as e:
        raise InputError(f"server config: [{where}]: {e}") from None


def server_from_config(
    config: str | os.PathLike[str] | Mapping[str, Any], **overrides: Any
) -> Server:
    """Builds a :class:`Server` from a config file or dict; ``overrides`` (e.g. ``port=``)
    win over the file's ``[server]`` entries."""
    base = "."
    if isinstance(config, Mapping):
        cfg = dict(config)
    else:
        cfg = read_config(config, what="server config")
        base = os.path.dirname(os.path.abspath(os.fspath(config)))
    unknown = sorted(set(cfg) - _SECTIONS)
    if unknown:
        raise InputError(
            f"server config: unknown sections {unknown}; known are {sorted(_SECTIONS)}"
        )

    def path_of(entry: Any, what: str) -> str:
        if not isinstance(entry, str):
            raise InputError(f"server config: {what} must be a file path, got {entry!r}")
        return entry if os.path.isabs(entry) else os.path.join(base, entry)

    opts = _section(cfg, "server")
    bad = sorted(set(opts) - _SERVER_KEYS)
    if bad:
        raise InputError(
            f"server config: unknown [server] entries {bad}; known are {sorted(_SERVER_KEYS)}"
        )
    snapshot = opts.pop("snapshot", None)
    store = (
        FeatureStore.load(path_of(snapshot, "[server] snapshot"))
        if snapshot is not None
        else FeatureStore()
    )
    for name, spec in _section(cfg, "tables").items():
        kwargs = dict(spec) if isinstance(spec, Mapping) else {}
        if name in store.tables:
            continue  # restored from the snapshot
        _build(store.table, f"tables.{name}", name, kwargs)
    for name, spec in _section(cfg, "windows").items():
        kwargs = dict(spec) if isinstance(spec, Mapping) else {}
        if name in store.window_sets:
            continue
        _build(store.windows, f"windows.{name}", name, kwargs)
    models = {
        name: Model.load(path_of(entry, f"[models] {name}"), n_threads=1)
        for name, entry in _section(cfg, "models").items()
    }
    scorers: dict[str, Scorer] = {}
    for name, spec in _section(cfg, "scorers").items():
        if not isinstance(spec, Mapping):
            raise InputError(f"server config: [scorers.{name}] must be a table")
        entry = {"name": name, **spec}
        for k in ("model", "shadow"):
            if isinstance(entry.get(k), str):
                entry[k] = path_of(entry[k], f"[scorers.{name}] {k}")
        if isinstance(entry.get("variants"), Mapping):
            entry["variants"] = {
                arm: path_of(p, f"[scorers.{name}.variants] {arm}")
                for arm, p in entry["variants"].items()
            }
        scorers[name] = Scorer.from_config(entry, store)
    token = opts.pop("token", None) or os.environ.get("RTML_TOKEN") or None
    return Server(store, scorers=scorers, models=models, **{**opts, "token": token, **overrides})
