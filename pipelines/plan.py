"""What a build has to do, given what the current version already holds.

A part of the current version is kept when none of its recordings is wanted by this build
with a different key (input fingerprint + stage configs). Recordings that are not covered by a
kept part are processed (their stage caches make unchanged work free) into one new part.
Recordings that vanished from the input stay: sources grow, and a corpus does not lose data
because a mount was missing.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from catalog.schema import Reject
from catalog.versions import Part, Version, version_id
from pipelines.process import INGEST_CODE_VERSION, SEGMENT_CODE_VERSION, segment_key
from stages.config import PipelineConfig
from stages.sources.base import Discovery, RecordingTask


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_key(cfg: PipelineConfig, analyzed: bool) -> str:
    """The settings a part's content depends on (analysis settings only for analyzed sources)."""
    parts = [cfg.standardize.fingerprint(), cfg.segment.fingerprint(), cfg.shard.fingerprint()]
    if analyzed:
        parts.append(cfg.analyze.fingerprint())
    return _digest("|".join(parts) + f"|{INGEST_CODE_VERSION}|{SEGMENT_CODE_VERSION}")


def discovery_key(rejects: list[Reject]) -> str:
    return _digest("|".join(sorted(f"{r.stage}:{r.item_id}:{r.reason}:{r.detail}" for r in rejects)))


@dataclass
class BuildPlan:
    source: str
    parent: Optional[Version]
    kept: list[Part]
    new_tasks: list[RecordingTask]
    new_items: dict[str, str]  # recording id -> key, for the new part
    discovery_rejects: list[Reject]
    discovery_key: str
    config_key: str
    version: str

    @property
    def unchanged(self) -> bool:
        return (
            self.parent is not None
            and not self.new_items
            and len(self.kept) == len(self.parent.parts)
            and self.parent.discovery.get(self.source, {}).get("key") == self.discovery_key
        )


def plan_build(parent: Optional[Version], source: str, discovery: Discovery, cfg: PipelineConfig) -> BuildPlan:
    ckey = config_key(cfg, any(t.needs_analysis for t in discovery.tasks))
    wanted: dict[str, str] = {t.recording_id: segment_key(t, cfg) for t in discovery.tasks}

    kept: list[Part] = []
    for part in parent.parts if parent else []:
        overlaps = [i for i in part.items if i in wanted]
        if not overlaps or (part.config_key == ckey and all(wanted[i] == part.items[i] for i in overlaps)):
            kept.append(part)

    covered = {i for p in kept for i in p.items}
    new_tasks = sorted((t for t in discovery.tasks if t.recording_id not in covered), key=lambda t: t.recording_id)
    new_items = {t.recording_id: wanted[t.recording_id] for t in new_tasks}
    part_key = _digest(ckey + "|" + "|".join(f"{k}={v}" for k, v in sorted(new_items.items())))
    dkey = discovery_key(discovery.rejects)
    return BuildPlan(
        source=source,
        parent=parent,
        kept=kept,
        new_tasks=new_tasks,
        new_items=new_items,
        discovery_rejects=discovery.rejects,
        discovery_key=dkey,
        config_key=ckey,
        version=version_id(parent.version if parent else None, [p.part_id for p in kept], part_key if new_items else "-", f"{source}:{dkey}"),
    )
