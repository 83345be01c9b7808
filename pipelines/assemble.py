"""Turn the cached per-recording results of a build into one new part: catalog tables,
shard plans (with every sample's shard recorded), and the Parquet files."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from catalog.parquet import write_table
from catalog.schema import (
    CodecChunk,
    DialogueWindow,
    Pair,
    Recording,
    Reject,
    Shard,
    Speaker,
    Turn,
    Utterance,
    to_arrow,
)
from catalog.store import Store
from pipelines.process import ShardJob, load_result
from stages.config import PipelineConfig
from stages.corpus.samples import estimate_sample_bytes
from stages.corpus.shards import plan_shards, shard_name
from stages.sources.base import RecordingTask


@dataclass
class PartTables:
    recordings: list[Recording] = field(default_factory=list)
    speakers: list[Speaker] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    windows: list[DialogueWindow] = field(default_factory=list)
    codec_chunks: list[CodecChunk] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    shards: list[Shard] = field(default_factory=list)

    def by_class(self) -> dict[type, list[Any]]:
        return {
            Recording: self.recordings,
            Speaker: self.speakers,
            Utterance: self.utterances,
            Turn: self.turns,
            Pair: self.pairs,
            DialogueWindow: self.windows,
            CodecChunk: self.codec_chunks,
            Reject: self.rejects,
            Shard: self.shards,
        }


def collect(store: Store, tasks: list[RecordingTask]) -> PartTables:
    """Read back every processed recording's results, in recording-id order (deterministic)."""
    tables = PartTables()
    for task in sorted(tasks, key=lambda t: t.recording_id):
        result = load_result(store, task.recording_id)
        tables.rejects.extend(result.rejects)
        if result.conversation is None:
            continue
        conv = result.conversation
        tables.recordings.append(conv.recording)
        tables.speakers.extend(conv.speakers)
        tables.utterances.extend(conv.utterances)
        tables.turns.extend(result.turns)
        tables.pairs.extend(result.pairs)
        tables.windows.extend(result.windows)
        tables.codec_chunks.extend(result.codec_chunks)
    return tables


def plan_shard_jobs(tables: PartTables, version: str, cfg: PipelineConfig) -> list[ShardJob]:
    """Pack samples into size-targeted shards and record each sample's shard on its record."""
    sr = cfg.standardize.sample_rate
    target = int(cfg.shard.target_shard_mb * 1_000_000)
    jobs: list[ShardJob] = []

    def pack(kind: str, records: list[Any], id_attr: str, sizes: list[int]) -> None:
        keyed = {getattr(r, id_attr): r for r in records}
        groups = plan_shards([(getattr(r, id_attr), s) for r, s in zip(records, sizes)], target)
        for i, group in enumerate(groups):
            rel = f"shards/{version}/{shard_name(kind, i)}"
            for sid in group:
                keyed[sid].shard = rel
            jobs.append(ShardJob(kind, rel, version, tuple((keyed[sid].recording_id, sid) for sid in group)))

    def pair_bytes(p: Pair) -> int:
        seconds = p.user_duration_s + p.ai_duration_s
        if cfg.shard.include_context_audio and p.context_start_s is not None:
            seconds += max(0.0, p.user_start_s - p.context_start_s)
        return estimate_sample_bytes(seconds, 1, sr)

    pack("pairs", tables.pairs, "pair_id", [pair_bytes(p) for p in tables.pairs])
    pack("dialogues", tables.windows, "window_id", [estimate_sample_bytes(w.end_s - w.start_s, 2, sr) for w in tables.windows])
    pack("codec", tables.codec_chunks, "chunk_id", [estimate_sample_bytes(c.end_s - c.start_s, 1, sr) for c in tables.codec_chunks])
    return jobs


def write_part_tables(store: Store, tables: PartTables, part_id: str, default_source: str) -> dict[str, list[str]]:
    """One Parquet file per table and source; every table gets at least one (possibly empty)."""
    files: dict[str, list[str]] = {}
    for cls, records in tables.by_class().items():
        groups: dict[str, list[Any]] = defaultdict(list)
        has_source = "source" in cls.__dataclass_fields__
        for r in records:
            groups[r.source if has_source else ""].append(r)
        if not groups:
            groups[default_source if has_source else ""] = []
        paths = []
        for src, recs in sorted(groups.items()):
            folder = f"catalog/{cls.table}/source={src}" if has_source else f"catalog/{cls.table}"
            rel = f"{folder}/part-{part_id}.parquet"
            write_table(store, rel, cls, to_arrow(cls, recs) if recs else None)
            paths.append(rel)
        files[cls.table] = paths
    return files
