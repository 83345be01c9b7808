"""What a build has to do, given what the current version already holds.

A part of the current version is kept when none of its recordings is wanted by this build
with a different key (input fingerprint + phase settings + code versions). Recordings that are
not covered by a kept part are processed (their phase caches make unchanged work free) into one
new part. Recordings that vanished from the input stay: sources grow, and a corpus does not
lose data because a mount was missing. The version's name is settled after processing, from
the recordings that really went in (an environment failure leaves one out, to be done next
time), so the same content always has the same name.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Collection, Optional

from catalog.schema import Reject
from catalog.versions import Part, Version, version_id
from pipelines.phases import phase_code_versions, recording_key
from stages.config import PipelineConfig
from stages.sources.base import Discovery, RecordingTask, Source


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_key(cfg: PipelineConfig, analyzed: bool) -> str:
    """The settings a part's content depends on (analysis settings only for analyzed sources)."""
    parts = [cfg.standardize.fingerprint(), cfg.segment.fingerprint(), cfg.shard.fingerprint()]
    if analyzed:
        parts.append(cfg.analyze.fingerprint())
    versions = ",".join(f"{k}={v}" for k, v in sorted(phase_code_versions().items()))
    return _digest("|".join(parts) + "|" + versions)


def discovery_key(rejects: list[Reject]) -> str:
    return _digest("|".join(sorted(f"{r.stage}:{r.item_id}:{r.reason}:{r.detail}" for r in rejects)))


@dataclass
class BuildPlan:
    source: str
    parent: Optional[Version]
    kept: list[Part]
    new_tasks: list[RecordingTask]
    wanted: dict[str, str]  # recording id -> key, for every task of the new part
    discovery_rejects: list[Reject]
    discovery_key: str
    config_key: str

    @property
    def unchanged(self) -> bool:
        return (
            self.parent is not None
            and not self.new_tasks
            and len(self.kept) == len(self.parent.parts)
            and self.parent.discovery.get(self.source, {}).get("key") == self.discovery_key
        )

    def new_items(self, left_out: Collection[str] = ()) -> dict[str, str]:
        return {t.recording_id: self.wanted[t.recording_id] for t in self.new_tasks if t.recording_id not in left_out}

    def version(self, left_out: Collection[str] = ()) -> str:
        items = self.new_items(left_out)
        part_key = _digest(self.config_key + "|" + "|".join(f"{k}={v}" for k, v in sorted(items.items())))
        return version_id(self.parent.version if self.parent else None, [p.part_id for p in self.kept],
                          part_key if items else "-", f"{self.source}:{self.discovery_key}")


def plan_build(
    parent: Optional[Version],
    source_name: str,
    source: Source,
    discovery: Discovery,
    cfg: PipelineConfig,
    redo: Collection[str] = (),
) -> BuildPlan:
    """`redo`: recording ids to process again even where a kept part holds them (cached
    rejects asked to be retried)."""
    ckey = config_key(cfg, any(t.needs_analysis for t in discovery.tasks))
    wanted: dict[str, str] = {t.recording_id: recording_key(t, cfg, source) for t in discovery.tasks}

    kept: list[Part] = []
    for part in parent.parts if parent else []:
        overlaps = [i for i in part.items if i in wanted]
        if any(i in redo for i in overlaps):
            continue
        if not overlaps or (part.config_key == ckey and all(wanted[i] == part.items[i] for i in overlaps)):
            kept.append(part)

    covered = {i for p in kept for i in p.items}
    new_tasks = sorted((t for t in discovery.tasks if t.recording_id not in covered), key=lambda t: t.recording_id)
    return BuildPlan(
        source=source_name,
        parent=parent,
        kept=kept,
        new_tasks=new_tasks,
        wanted={t.recording_id: wanted[t.recording_id] for t in new_tasks},
        discovery_rejects=discovery.rejects,
        discovery_key=discovery_key(discovery.rejects),
        config_key=ckey,
    )
