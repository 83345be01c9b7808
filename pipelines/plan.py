"""What a build has to do, given what the current version already holds."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

from catalog.schema import Reject
from catalog.versions import Part, Version, version_id
from stages.config import PipelineConfig
from stages.sources.base import Discovery, RecordingTask
from pipelines.process import INGEST_CODE_VERSION, SEGMENT_CODE_VERSION, segment_key


def config_key(cfg: PipelineConfig) -> str:
    return hashlib.sha256(f"{cfg.fingerprint()}|{INGEST_CODE_VERSION}|{SEGMENT_CODE_VERSION}".encode()).hexdigest()[:16]


def reject_item(r: Reject) -> tuple[str, str]:
    key = hashlib.sha256(f"{r.stage}|{r.reason}|{r.detail}".encode()).hexdigest()[:16]
    return f"reject:{r.source}:{r.item_id}", key


@dataclass
class BuildPlan:
    parent: Optional[Version]
    kept: list[Part]
    new_tasks: list[RecordingTask]
    new_rejects: list[Reject]  # discovery rejects not yet in the corpus
    new_items: dict[str, str]
    config_key: str
    version: str

    @property
    def unchanged(self) -> bool:
        return not self.new_items and self.parent is not None and len(self.kept) == len(self.parent.parts)


def plan_build(parent: Optional[Version], discovery: Discovery, cfg: PipelineConfig) -> BuildPlan:
    ckey = config_key(cfg)
    wanted: dict[str, str] = {t.recording_id: segment_key(t, cfg) for t in discovery.tasks}
    wanted.update(dict(reject_item(r) for r in discovery.rejects))

    kept: list[Part] = []
    for part in parent.parts if parent else []:
        overlaps = [i for i in part.items if i in wanted]
        if not overlaps:
            kept.append(part)  # another source's or an earlier input's work: untouched
        elif part.config_key == ckey and all(wanted[i] == part.items[i] for i in overlaps):
            kept.append(part)
        # else: config or input changed for something in this part; its wanted items are redone

    covered = {i for p in kept for i in p.items}
    new_tasks = sorted((t for t in discovery.tasks if t.recording_id not in covered), key=lambda t: t.recording_id)
    new_rejects = [r for r in discovery.rejects if reject_item(r)[0] not in covered]
    new_items = {t.recording_id: wanted[t.recording_id] for t in new_tasks}
    new_items.update(dict(reject_item(r) for r in new_rejects))
    part_key = hashlib.sha256(
        (ckey + "|" + "|".join(f"{k}={v}" for k, v in sorted(new_items.items()))).encode()
    ).hexdigest()[:16]
    return BuildPlan(
        parent=parent,
        kept=kept,
        new_tasks=new_tasks,
        new_rejects=new_rejects,
        new_items=new_items,
        config_key=ckey,
        version=version_id(parent.version if parent else None, [p.part_id for p in kept], part_key),
    )
