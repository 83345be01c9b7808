"""Corpus versions: what a committed build consists of, and the single commit point.

A version is a list of *parts*. A part is the immutable output of one build for a batch of
recordings under one config key: its Parquet files (one per catalog table and source) and its
shards. A new build keeps every part of the current version whose config key still matches
and whose recordings did not change, and adds one new part for everything else. Nothing a
build writes is visible until `commit` writes the version manifest and then moves CURRENT.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

from catalog.store import Store

CURRENT = "CURRENT.json"


@dataclass
class Part:
    part_id: str
    config_key: str
    items: dict[str, str]  # recording id (or "reject:<item>") -> the task key it was built from
    files: dict[str, list[str]] = field(default_factory=dict)  # table -> parquet paths
    shards: list[str] = field(default_factory=list)  # shard paths

    def to_dict(self) -> dict[str, Any]:
        return {
            "part_id": self.part_id,
            "config_key": self.config_key,
            "items": self.items,
            "files": self.files,
            "shards": self.shards,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Part":
        return cls(d["part_id"], d["config_key"], dict(d["items"]), dict(d["files"]), list(d["shards"]))


@dataclass
class Version:
    version: str
    parent: Optional[str]
    parts: list[Part]
    # Per source: the rejects found by discovery (a transcript without audio, ...). They are
    # recomputed by every build of that source, so they live beside the parts, not in them.
    discovery: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> {key, file}

    def files(self, table: str) -> list[str]:
        files = [f for p in self.parts for f in p.files.get(table, [])]
        if table == "rejects":
            files += [d["file"] for _, d in sorted(self.discovery.items())]
        return files

    def shard_paths(self) -> list[str]:
        return [s for p in self.parts for s in p.shards]

    def items(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for p in self.parts:
            merged.update(p.items)
        return merged

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "parent": self.parent,
            "parts": [p.to_dict() for p in self.parts],
            "discovery": self.discovery,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Version":
        return cls(d["version"], d.get("parent"), [Part.from_dict(p) for p in d["parts"]], dict(d.get("discovery", {})))


def version_id(parent: Optional[str], kept_parts: list[str], new_part_key: str, discovery_key: str) -> str:
    """Deterministic: the same parent and the same new work give the same version name, so a
    killed build that is run again writes to the same places."""
    blob = "|".join([parent or "-", ",".join(sorted(kept_parts)), new_part_key, discovery_key]).encode()
    return "v-" + hashlib.sha256(blob).hexdigest()[:12]


def current(store: Store) -> Optional[Version]:
    if not store.exists(CURRENT):
        return None
    name = store.read_json(CURRENT)["version"]
    return Version.from_dict(store.read_json(f"versions/{name}.json"))


def commit(store: Store, version: Version) -> None:
    """Publish a version: its manifest first, then CURRENT, the one record that makes it live."""
    store.write_json(f"versions/{version.version}.json", version.to_dict())
    store.write_json(CURRENT, {"version": version.version})
