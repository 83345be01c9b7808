"""WebDataset tar shards: size-targeted planning, byte-deterministic writing, a per-version index.

A shard is a plain (uncompressed) tar whose members are ``<key>.<ext>``, one sample's members
adjacent and in sorted extension order, which is what ``webdataset`` groups into samples. Every
header field that could vary between runs is fixed (mtime 0, uid/gid 0, empty user and group,
mode 0o444, no PAX time records), so the same samples always give the same bytes and sha256.
"""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
from typing import Any, BinaryIO, Iterable, Iterator, Optional

from catalog.schema import Shard
from catalog.store import Store

INDEX_FORMAT = 1
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


def shard_name(kind: str, index: int) -> str:
    return f"{kind}-{index:06d}.tar"


def safe_key(text: str) -> str:
    """A sample key made from an id: everything but letters, digits, '_' and '-' becomes '_'.

    webdataset splits a member name at its first dot, so a dot in a key would corrupt samples.
    """
    return _UNSAFE_KEY_CHARS.sub("_", text)


def plan_shards(sizes: list[tuple[str, int]], target_bytes: int) -> list[list[str]]:
    """Pack keys, in the given order, into consecutive shards of at most ``target_bytes``.

    A sample larger than the target gets a shard of its own.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    shards: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for key, size in sizes:
        if current and current_bytes + size > target_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(key)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


class _HashingWriter:
    """Forwards writes to a file while counting bytes and hashing them."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.num_bytes = 0

    def write(self, data: bytes) -> int:
        self._f.write(data)
        self.sha256.update(data)
        self.num_bytes += len(data)
        return len(data)


def _validate_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"sample key must be a non-empty string, got {key!r}")
    if "." in key:
        raise ValueError(f"sample key {key!r} contains '.', which webdataset splits on")
    if key.startswith("_") or "/" in key or any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError(f"sample key {key!r} has a leading '_', a '/', or a blank/control char")


def _validate_ext(key: str, ext: str, data: Any) -> None:
    if not isinstance(ext, str) or not ext or ext.startswith(".") or "/" in ext or ext.startswith("_"):
        raise ValueError(f"sample {key!r}: bad member extension {ext!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"sample {key!r}: member {ext!r} is {type(data).__name__}, not bytes")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0  # an int: a float mtime would add a PAX record
    ti.mode = 0o444
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def write_tar_shard(
    store: Store,
    rel_path: str,
    samples: Iterable[tuple[str, dict[str, bytes]]],
    kind: str,
    version: str,
) -> Shard:
    """Write samples ``(key, {ext: bytes})`` as a deterministic WebDataset tar at ``rel_path``.

    Streams to the store through its atomic writer: on any error (a bad key, an exception from
    the ``samples`` iterator) nothing appears under ``rel_path``. Raises ValueError on keys with
    a dot, duplicate keys, empty samples or non-bytes members.
    """
    seen: set[str] = set()
    count = 0
    with store.atomic_writer(rel_path) as f:
        out = _HashingWriter(f)
        # "w|" streams through fixed-size blocks and never seeks; PAX only for long/non-ASCII names.
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            for key, fields in samples:
                _validate_key(key)
                if key in seen:
                    raise ValueError(f"duplicate sample key {key!r} in shard {rel_path}")
                if not fields:
                    raise ValueError(f"sample {key!r} has no members")
                seen.add(key)
                for ext in sorted(fields):
                    data = fields[ext]
                    _validate_ext(key, ext, data)
                    tar.addfile(_tarinfo(f"{key}.{ext}", len(data)), io.BytesIO(bytes(data)))
                count += 1
    return Shard(
        path=rel_path,
        kind=kind,
        version=version,
        num_samples=count,
        num_bytes=out.num_bytes,
        sha256=out.sha256.hexdigest(),
    )


def read_tar_samples(fileobj: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream ``(key, {ext: bytes})`` samples from a shard, the way webdataset groups members:
    consecutive members sharing the name before the first dot form one sample.

    Reads in stream mode (no seeks), so it works on fsspec files from object storage. A
    truncated or corrupt tar raises ``tarfile.TarError`` after the samples before the damage.
    """
    key: Optional[str] = None
    fields: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if "." not in base:
                continue
            k, ext = base.split(".", 1)
            if k != key:
                if key is not None and fields:
                    yield key, fields
                key, fields = k, {}
            fields[ext] = tar.extractfile(member).read()
    if key is not None and fields:
        yield key, fields


def _file_sha256(store: Store, rel_path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with store.open(rel_path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def verify_shard(store: Store, shard: Shard) -> bool:
    """True when the file at ``shard.path`` exists with the recorded size and sha256."""
    try:
        digest, size = _file_sha256(store, shard.path)
    except FileNotFoundError:
        return False
    return size == shard.num_bytes and digest == shard.sha256


def write_index(store: Store, rel_path: str, version: str, shards: list[Shard]) -> None:
    """Write the JSON index of a corpus version: every shard plus totals per kind."""
    totals: dict[str, dict[str, int]] = {}
    for s in shards:
        t = totals.setdefault(s.kind, {"shards": 0, "samples": 0, "bytes": 0})
        t["shards"] += 1
        t["samples"] += s.num_samples
        t["bytes"] += s.num_bytes
    store.write_json(
        rel_path,
        {
            "format": INDEX_FORMAT,
            "version": version,
            "shards": [
                {
                    "path": s.path,
                    "kind": s.kind,
                    "num_samples": s.num_samples,
                    "num_bytes": s.num_bytes,
                    "sha256": s.sha256,
                }
                for s in shards
            ],
            "totals": totals,
        },
    )


def read_index(store: Store, rel_path: str) -> list[Shard]:
    index = store.read_json(rel_path)
    version = index["version"]
    return [
        Shard(
            path=s["path"],
            kind=s["kind"],
            version=version,
            num_samples=int(s["num_samples"]),
            num_bytes=int(s["num_bytes"]),
            sha256=s["sha256"],
        )
        for s in index["shards"]
    ]
