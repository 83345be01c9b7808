"""The corpus root: a local directory or an object-store prefix, reached through fsspec.

Writes are atomic: a reader never sees a half-written file. On a local disk a file is written
under a temporary name and renamed; on object storage a single PUT at close publishes it whole.
Credentials come from the usual environment (AWS_* variables, ~/.aws) and are never stored.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem


TMP_DIR = ".tmp"


class Store:
    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.url = root.rstrip("/") or "/"
        options = dict(storage_options or {})
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if self.url.startswith("s3://") and endpoint and "client_kwargs" not in options:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        self.storage_options = options
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            self.root = os.path.abspath(self.root)
            os.makedirs(self.root, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """Filesystem path (no protocol) of a path relative to the root."""
        return posixpath.join(self.root, rel) if rel else self.root

    def uri(self, rel: str) -> str:
        """Full URI of a relative path, as a user or DuckDB would name it."""
        if self.is_local:
            return self.path(rel)
        protocol = self.url.split("://", 1)[0]
        return f"{protocol}://{self.path(rel)}"

    # -- reads ---------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self.path(rel), "rb") as f:
            return f.read()

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.path(rel), mode)

    def list(self, rel: str) -> list[str]:
        """Relative paths of the files directly under a folder (empty if it does not exist)."""
        base = self.path(rel)
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        prefix = self.root.rstrip("/") + "/"
        return sorted(e[len(prefix):] if e.startswith(prefix) else e for e in entries)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    # -- writes --------------------------------------------------------------------------------
    @contextmanager
    def atomic_writer(self, rel: str) -> Iterator[Any]:
        """A binary file object whose content appears at ``rel`` only when the block succeeds."""
        final = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            # Temporary files live in one folder, so a build killed mid-write leaves nothing
            # beside published files, and the next build clears them in one sweep.
            tmp_dir = os.path.join(self.root, TMP_DIR)
            os.makedirs(tmp_dir, exist_ok=True)
            tmp = os.path.join(tmp_dir, uuid.uuid4().hex)
            try:
                with open(tmp, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            # Object stores publish an object only when its upload completes.
            f = self.fs.open(final, "wb")
            try:
                yield f
            except BaseException:
                # Drop the buffered data (s3fs also aborts a started multipart upload) and mark
                # the file closed so garbage collection cannot publish it after all.
                f.discard()
                f.closed = True
                raise
            f.close()

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_writer(rel) as f:
            f.write(data)

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False).encode())

    def clear_temporary(self) -> None:
        """Remove what killed writers left behind; only call while holding the build lock."""
        if self.is_local:
            self.remove(TMP_DIR)

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm(self.path(rel), recursive=True)
        except FileNotFoundError:
            pass
