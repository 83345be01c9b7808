"""Turn the cached per-recording results of a build into one new part: shard plans, then the
catalog tables streamed into Parquet files.

Two passes over the recordings' cached results, in recording-id order (deterministic), so the
driver never holds a part's records: the first plans the shards from each sample's estimated
size (keeping only sample ids), the second streams every record, its shard filled in, into one
Parquet writer per table and source.
"""
from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

import pyarrow.parquet as pq

from catalog.schema import (
    CodecChunk,
    DialogueWindow,
    Pair,
    PhaseRun,
    Recording,
    Reject,
    Shard,
    Speaker,
    Turn,
    Utterance,
    arrow_schema,
    to_arrow,
)
from catalog.store import Store
from pipelines.process import RecordingResult, ShardJob, load_result
from pipelines.sample_kinds import SAMPLE_KINDS
from stages.config import PipelineConfig
from stages.corpus.shards import shard_name
from stages.sources.base import RecordingTask

ROW_GROUP = 10_000  # records buffered per table before they are written


def results(store: Store, tasks: Iterable[RecordingTask]) -> Iterator[tuple[RecordingTask, RecordingResult]]:
    for task in sorted(tasks, key=lambda t: t.recording_id):
        yield task, load_result(store, task)


@dataclass
class ShardPlan:
    jobs: list[ShardJob] = field(default_factory=list)
    shard_of: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, sample id) -> shard path


def plan_shard_jobs(store: Store, tasks: list[RecordingTask], version: str, cfg: PipelineConfig) -> ShardPlan:
    """Pack samples, in recording order, into consecutive size-targeted shards per kind (a
    sample larger than the target gets a shard of its own)."""
    sr = cfg.standardize.sample_rate
    target = int(cfg.shard.target_shard_mb * 1_000_000)
    plan = ShardPlan()
    open_items: dict[str, list[tuple[RecordingTask, list[str]]]] = {k.name: [] for k in SAMPLE_KINDS}
    open_bytes: dict[str, int] = {k.name: 0 for k in SAMPLE_KINDS}
    counts: Counter[str] = Counter()

    def close(kind: str) -> None:
        items = open_items[kind]
        if not items:
            return
        rel = f"shards/{version}/{shard_name(kind, counts[kind])}"
        counts[kind] += 1
        for _, sids in items:
            for sid in sids:
                plan.shard_of[(kind, sid)] = rel
        plan.jobs.append(ShardJob(kind, rel, version, tuple((t, tuple(s)) for t, s in items)))
        open_items[kind], open_bytes[kind] = [], 0

    for task, result in results(store, tasks):
        if result.conversation is None:
            continue
        for kind in SAMPLE_KINDS:
            for record in result.samples(kind):
                size = kind.estimate_bytes(record, cfg.shard, sr)
                if open_items[kind.name] and open_bytes[kind.name] + size > target:
                    close(kind.name)
                items = open_items[kind.name]
                if not items or items[-1][0] is not task:
                    items.append((task, []))
                items[-1][1].append(kind.sample_id(record))
                open_bytes[kind.name] += size
    for kind in SAMPLE_KINDS:
        close(kind.name)
    return plan


class _TableWriter:
    """One Parquet file per (table, source), written as records stream in."""

    def __init__(self, store: Store, stack: ExitStack, cls: type, part_id: str):
        self.store, self.stack, self.cls, self.part_id = store, stack, cls, part_id
        self.schema = arrow_schema(cls)
        self.has_source = "source" in cls.__dataclass_fields__
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.buffers: dict[str, list[Any]] = {}
        self.paths: dict[str, str] = {}
        self.count = 0

    def _open(self, src: str) -> None:
        folder = f"catalog/{self.cls.table}/source={src}" if self.has_source else f"catalog/{self.cls.table}"
        rel = f"{folder}/part-{self.part_id}.parquet"
        f = self.stack.enter_context(self.store.atomic_writer(rel))
        self.writers[src] = self.stack.enter_context(pq.ParquetWriter(f, self.schema, compression="zstd"))
        self.buffers[src] = []
        self.paths[src] = rel

    def add(self, records: Iterable[Any]) -> None:
        for r in records:
            src = r.source if self.has_source else ""
            if src not in self.writers:
                self._open(src)
            buf = self.buffers[src]
            buf.append(r)
            self.count += 1
            if len(buf) >= ROW_GROUP:
                self._flush(src)

    def _flush(self, src: str) -> None:
        if self.buffers[src]:
            self.writers[src].write_table(to_arrow(self.cls, self.buffers[src]))
            self.buffers[src] = []

    def finish(self, default_source: str) -> list[str]:
        """Flush; a table with no records still gets one (empty) file, so its view has a type."""
        if not self.writers:
            self._open(default_source if self.has_source else "")
        for src in self.writers:
            self._flush(src)
        return [self.paths[s] for s in sorted(self.paths)]


@dataclass
class PartFiles:
    files: dict[str, list[str]]
    counts: dict[str, int]


PART_TABLES: tuple[type, ...] = (Recording, Speaker, Utterance, Turn, Pair, DialogueWindow, CodecChunk, Reject, Shard)


def write_part_tables(
    store: Store,
    tasks: list[RecordingTask],
    plan: ShardPlan,
    shards: list[Shard],
    extra_rejects: list[Reject],
    part_id: str,
    default_source: str,
) -> PartFiles:
    """Stream the part's records into Parquet: one file per table and source."""
    with ExitStack() as stack:
        writers = {cls: _TableWriter(store, stack, cls, part_id) for cls in PART_TABLES}
        for _, result in results(store, tasks):
            writers[Reject].add(result.rejects)
            conv = result.conversation
            if conv is None:
                continue
            writers[Recording].add([conv.recording])
            writers[Speaker].add(conv.speakers)
            writers[Utterance].add(conv.utterances)
            writers[Turn].add(result.turns)
            for kind in SAMPLE_KINDS:
                records = result.samples(kind)
                for r in records:
                    r.shard = plan.shard_of.get((kind.name, kind.sample_id(r)))
                writers[kind.record].add(records)
        writers[Reject].add(extra_rejects)
        writers[Shard].add(sorted(shards, key=lambda s: s.path))
        files = {cls.table: w.finish(default_source) for cls, w in writers.items()}
        counts = {cls.table: w.count for cls, w in writers.items()}
    return PartFiles(files, counts)


def phase_run_records(build_id: str, processed: list[dict[str, Any]]) -> list[PhaseRun]:
    runs = []
    for res in sorted(processed, key=lambda r: r["recording_id"]):
        for p in res.get("phases", []):
            runs.append(PhaseRun(build_id, res["recording_id"], res["source"], p["phase"], p["seconds"],
                                 p["cached"], p["status"], res["worker"]))
    return runs


def phase_summary(runs: list[PhaseRun], top: Optional[int] = None) -> list[tuple[str, float, int, int]]:
    """(phase, seconds, runs, cached runs), the costliest first."""
    totals: dict[str, list[float]] = {}
    for r in runs:
        t = totals.setdefault(r.phase, [0.0, 0, 0])
        t[0] += r.seconds
        t[1] += 1
        t[2] += int(r.cached)
    rows = sorted(((k, round(v[0], 2), int(v[1]), int(v[2])) for k, v in totals.items()), key=lambda x: -x[1])
    return rows[:top] if top else rows
