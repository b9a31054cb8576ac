"""The feature-store snapshot file (``FeatureStore.save`` / ``FeatureStore.load``).

Layout (little-endian)::

    offset 0   8 bytes   magic b"RTMLSNAP"
    offset 8   u32       format version (1)
    offset 12  u32       header size (48)
    offset 16  u64       manifest size in bytes
    offset 24  u64       body size in bytes
    offset 32  16 bytes  BLAKE2b-128 digest of manifest + body
    offset 48  manifest  JSON: format, created_ns, and per table / window set its kind,
                         name, spec, counters, and the offset and length of its section
    then       body      the sections back to back (layout: core/include/rtml/snapshot.h)
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import time
from typing import TYPE_CHECKING, Any

import orjson

from rtml._core import InputError, SnapshotError, restore_section

if TYPE_CHECKING:
    from rtml.store import FeatureStore

MAGIC = b"RTMLSNAP"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQ16s")  # 48 bytes


def _digest(manifest: bytes, body: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(manifest)
    h.update(body)
    return h.digest()


def save(store: FeatureStore, path: str | os.PathLike[str]) -> None:
    objects = [("table", name, t) for name, t in store._tables.items()]
    objects += [("windows", name, w) for name, w in store._windows.items()]
    sections = store._gate.take([obj._core for _, _, obj in objects])
    entries: list[dict[str, Any]] = []
    offset = 0
    for (kind, name, obj), section in zip(objects, sections, strict=True):
        entry = {"kind": kind, "name": name, "spec": obj._spec, "offset": offset}
        entry["length"] = len(section)
        if kind == "windows":
            entry["counters"] = obj.stats()
        entries.append(entry)
        offset += len(section)
    manifest = orjson.dumps(
        {"format": "rtml-feature-store", "created_ns": time.time_ns(), "objects": entries}
    )
    body = b"".join(sections)
    header = _HEADER.pack(
        MAGIC, VERSION, _HEADER.size, len(manifest), len(body), _digest(manifest, body)
    )
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".rtml-snapshot-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(manifest)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def load(cls: type[FeatureStore], path: str | os.PathLike[str]) -> FeatureStore:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SnapshotError(f"snapshot {os.fspath(path)!r}: cannot read: {e}") from None
    where = f"snapshot {os.fspath(path)!r}"
    if len(data) < _HEADER.size:
        raise SnapshotError(
            f"{where}: {len(data)} bytes, shorter than the {_HEADER.size}-byte header"
        )
    magic, version, header_size, m_len, b_len, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SnapshotError(f"{where}: not an rtml feature-store snapshot (magic {magic!r})")
    if version != VERSION:
        raise SnapshotError(
            f"{where}: format version {version}; this rtml reads version {VERSION}"
            + (" (written by a newer rtml)" if version > VERSION else "")
        )
    if header_size != _HEADER.size or _HEADER.size + m_len + b_len != len(data):
        raise SnapshotError(
            f"{where}: sizes in the header ({header_size} + {m_len} + {b_len}) do not add up "
            f"to the file's {len(data)} bytes (truncated or corrupted)"
        )
    manifest = data[_HEADER.size : _HEADER.size + m_len]
    body = memoryview(data)[_HEADER.size + m_len :]
    if _digest(manifest, body) != digest:
        raise SnapshotError(f"{where}: checksum mismatch (the file is corrupted)")
    try:
        meta = orjson.loads(manifest)
        objects = meta["objects"]
        if meta.get("format") != "rtml-feature-store" or not isinstance(objects, list):
            raise ValueError("not a feature-store manifest")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise SnapshotError(f"{where}: unreadable manifest ({e})") from None
    store = cls()
    for i, entry in enumerate(objects):
        try:
            _restore(store, entry, body)
        except SnapshotError as e:
            raise SnapshotError(f"{where}, object {i}: {e}") from None
        except (InputError, KeyError, TypeError, ValueError) as e:
            raise SnapshotError(
                f"{where}, object {i}: invalid entry ({type(e).__name__}: {e})"
            ) from None
    return store


def _restore(store: FeatureStore, entry: dict[str, Any], body: memoryview) -> None:
    kind, name, spec = entry["kind"], entry["name"], entry["spec"]
    offset, length = int(entry["offset"]), int(entry["length"])
    if offset < 0 or length < 0 or offset + length > len(body):
        raise SnapshotError(f"'{name}': section [{offset}, {offset + length}) is outside the body")
    key = {"str": str, "int": int}[spec["key"]]
    if kind == "table":
        obj: Any = store.table(
            name,
            key=key,
            fields=dict(spec["fields"]),
            ttl=spec["ttl"],
            capacity=int(spec["capacity"]),
            max_key_bytes=int(spec["max_key_bytes"]),
            max_future=float(spec["max_future"]),
        )
    elif kind == "windows":
        obj = store.windows(
            name,
            key=key,
            value=spec["value"],
            ops=list(spec["ops"]),
            windows=list(spec["windows"]),
            bucket=spec["bucket_ns"] / 1e9,
            capacity=int(spec["capacity"]),
            max_buckets=int(spec["max_buckets"]),
            history=spec["history_ns"] / 1e9,
            max_key_bytes=int(spec["max_key_bytes"]),
            max_future=float(spec["max_future"]),
        )
        if (
            obj._spec["windows_ns"] != spec["windows_ns"]
            or obj._spec["bucket_ns"] != spec["bucket_ns"]
        ):
            raise SnapshotError(f"'{name}': window spec does not rebuild to the same windows")
        c = entry["counters"]
        obj._core.set_counters(int(c["events"]), int(c["late"]), int(c["dropped"]))
    else:
        raise SnapshotError(f"'{name}': unknown kind {kind!r}")
    restore_section(obj._core, bytes(body[offset : offset + length]))
