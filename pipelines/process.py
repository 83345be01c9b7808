"""Per-recording work (ingest → standardize → transcript → segment → plan samples) and
per-shard work (cut samples → tar), as plain callables that an engine maps over items.

Each recording's results are cached under the corpus root, keyed by its input fingerprint and
the config of the stages that made them, so a rerun or a resumed build redoes nothing.
"""
from __future__ import annotations

import hashlib
import json
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional

from catalog.schema import (
    CodecChunk,
    Conversation,
    DialogueWindow,
    Pair,
    Recording,
    Reject,
    Speaker,
    Turn,
    from_dict,
    to_dict,
)
from catalog.store import Store
from stages.audio import read_flac
from stages.config import PipelineConfig, ShardConfig
from stages.samples import codec_sample, pair_sample, plan_codec_chunks, plan_windows, window_sample
from stages.segment import segment
from stages.shard import write_tar_shard
from stages.sources.base import RecordingTask, RejectError
from stages.standardize import standardize

# Bump when a stage's code changes what it produces: cached results then no longer match.
INGEST_CODE_VERSION = 1
SEGMENT_CODE_VERSION = 1


def _hash(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def ingest_key(task: RecordingTask, cfg: PipelineConfig) -> str:
    return _hash(task.fingerprint(), cfg.standardize.fingerprint(), INGEST_CODE_VERSION)


def segment_key(task: RecordingTask, cfg: PipelineConfig) -> str:
    return _hash(ingest_key(task, cfg), cfg.segment.fingerprint(), cfg.shard.fingerprint(), SEGMENT_CODE_VERSION)


def audio_rel(recording_id: str, source: str) -> str:
    return f"recordings/{source}/{recording_id}.flac"


def conversation_rel(recording_id: str) -> str:
    return f"work/conversations/{recording_id}.json"


def segments_rel(recording_id: str) -> str:
    return f"work/segments/{recording_id}.json"


def _reject_from(task: RecordingTask, stage: str, err: BaseException) -> Reject:
    if isinstance(err, RejectError):
        return Reject(task.source, stage, task.recording_id, err.reason, err.detail[:2000])
    tb = traceback.format_exception_only(type(err), err)[-1].strip()
    return Reject(task.source, stage, task.recording_id, "internal_error", tb[:2000])


@dataclass
class RecordingResult:
    """What one recording contributes to the catalog (read back from the cache)."""

    recording_id: str
    conversation: Optional[Conversation]
    turns: list[Turn]
    pairs: list[Pair]
    windows: list[DialogueWindow]
    codec_chunks: list[CodecChunk]
    rejects: list[Reject]


class RecordingProcessor:
    """Ingest, standardize and segment one recording; results go to the cache."""

    def __init__(self, source: Any, out: str, storage_options: dict[str, Any], cfg: PipelineConfig):
        self.source = source
        self.store = Store(out, storage_options)
        self.cfg = cfg

    def __call__(self, task: RecordingTask) -> dict[str, Any]:
        cached = True
        conv_doc = self._cached(conversation_rel(task.recording_id), ingest_key(task, self.cfg))
        if conv_doc is None:
            cached = False
            conv_doc = self._ingest(task)
        if conv_doc.get("reject"):
            return {"recording_id": task.recording_id, "status": "rejected", "reason": conv_doc["reject"]["reason"], "cached": cached}
        seg_doc = self._cached(segments_rel(task.recording_id), segment_key(task, self.cfg))
        if seg_doc is None:
            cached = False
            seg_doc = self._segment(task, Conversation.from_dict(conv_doc["conversation"]))
        if seg_doc.get("reject"):
            return {"recording_id": task.recording_id, "status": "rejected", "reason": seg_doc["reject"]["reason"], "cached": cached}
        return {
            "recording_id": task.recording_id,
            "status": "ok",
            "cached": cached,
            "pairs": len(seg_doc["pairs"]),
            "duration_s": conv_doc["conversation"]["recording"]["duration_s"],
        }

    def _cached(self, rel: str, key: str) -> Optional[dict[str, Any]]:
        try:
            doc = self.store.read_json(rel)
        except (FileNotFoundError, ValueError):
            return None
        return doc if doc.get("key") == key else None

    def _ingest(self, task: RecordingTask) -> dict[str, Any]:
        key = ingest_key(task, self.cfg)
        try:
            decoded = self.source.read_audio(task)
            std = standardize(decoded, self.cfg.standardize)
            rel = audio_rel(task.recording_id, task.source)
            self.store.write_bytes(rel, std.flac())
            recording = Recording(
                recording_id=task.recording_id,
                source=task.source,
                origin_id=task.origin_id,
                origin=task.audio_path,
                license=task.license,
                lang=task.lang,
                native_sample_rate=std.native_sample_rate,
                num_channels=int(std.samples.shape[0]),
                duration_s=round(std.duration_s, 3),
                encoding=decoded.encoding,
                audio_sha256=decoded.sha256,
                audio_path=rel,
                sample_rate=std.sample_rate,
                bandwidth=std.bandwidth,
                effective_bandwidth_hz=std.effective_bandwidth_hz,
                metadata_json=json.dumps(task.metadata, sort_keys=True, ensure_ascii=False),
            )
            transcript = self.source.read_transcript(task, recording)
            conv = Conversation(recording, transcript.speakers, transcript.utterances)
            doc = {"key": key, "conversation": conv.to_dict(), "rejects": [to_dict(r) for r in transcript.rejects]}
        except Exception as e:  # a bad recording is a reject, never the end of the build
            doc = {"key": key, "reject": to_dict(_reject_from(task, "ingest", e))}
        self.store.write_json(conversation_rel(task.recording_id), doc)
        return doc

    def _segment(self, task: RecordingTask, conv: Conversation) -> dict[str, Any]:
        key = segment_key(task, self.cfg)
        try:
            seg = segment(conv, self.cfg.segment)
            if not seg.turns:
                raise RejectError("empty_conversation", "no speech turns")
            windows = plan_windows(conv.recording, conv.speakers, seg.turns, self.cfg.shard, self.cfg.segment.role_policy)
            chunks = plan_codec_chunks(conv.recording, seg.turns, self.cfg.shard)
            doc = {
                "key": key,
                "turns": [to_dict(t) for t in seg.turns],
                "pairs": [to_dict(p) for p in seg.pairs],
                "windows": [to_dict(w) for w in windows],
                "codec_chunks": [to_dict(c) for c in chunks],
                "rejects": [to_dict(r) for r in seg.rejects],
            }
        except Exception as e:
            doc = {"key": key, "reject": to_dict(_reject_from(task, "segment", e))}
        self.store.write_json(segments_rel(task.recording_id), doc)
        return doc


def load_result(store: Store, recording_id: str) -> RecordingResult:
    conv_doc = store.read_json(conversation_rel(recording_id))
    if conv_doc.get("reject"):
        return RecordingResult(recording_id, None, [], [], [], [], [from_dict(Reject, conv_doc["reject"])])
    conv = Conversation.from_dict(conv_doc["conversation"])
    rejects = [from_dict(Reject, r) for r in conv_doc.get("rejects", [])]
    seg_doc = store.read_json(segments_rel(recording_id))
    if seg_doc.get("reject"):
        return RecordingResult(recording_id, None, [], [], [], [], rejects + [from_dict(Reject, seg_doc["reject"])])
    return RecordingResult(
        recording_id,
        conv,
        [from_dict(Turn, t) for t in seg_doc["turns"]],
        [from_dict(Pair, p) for p in seg_doc["pairs"]],
        [from_dict(DialogueWindow, w) for w in seg_doc["windows"]],
        [from_dict(CodecChunk, c) for c in seg_doc["codec_chunks"]],
        rejects + [from_dict(Reject, r) for r in seg_doc.get("rejects", [])],
    )


@dataclass(frozen=True)
class ShardJob:
    kind: str  # "pairs" | "dialogues" | "codec"
    rel_path: str
    version: str
    items: tuple[tuple[str, str], ...]  # (recording id, sample id) in shard order


class ShardProcessor:
    """Cut one shard's samples from the standardized audio and write the tar."""

    def __init__(self, out: str, storage_options: dict[str, Any], cfg: ShardConfig):
        self.store = Store(out, storage_options)
        self.cfg = cfg

    def __call__(self, job: ShardJob) -> dict[str, Any]:
        by_recording: dict[str, list[str]] = defaultdict(list)
        for rid, sid in job.items:
            by_recording[rid].append(sid)
        shard = write_tar_shard(self.store, job.rel_path, self._samples(job, by_recording), job.kind, job.version)
        return {"shard": to_dict(shard)}

    def _samples(self, job: ShardJob, by_recording: dict[str, list[str]]):
        for rid, wanted in by_recording.items():
            result = load_result(self.store, rid)
            conv = result.conversation
            assert conv is not None, f"shard planned for rejected recording {rid}"
            with self.store.open(conv.recording.audio_path) as f:
                audio, sr = read_flac(f)
            speakers: dict[str, Speaker] = {s.speaker_id: s for s in conv.speakers}
            if job.kind == "pairs":
                records = {p.pair_id: p for p in result.pairs}
                for sid in wanted:
                    rec = records[sid]
                    rec.shard = job.rel_path
                    yield sid, pair_sample(rec, audio, sr, speakers, result.turns, self.cfg.include_context_audio)
            elif job.kind == "dialogues":
                records = {w.window_id: w for w in result.windows}
                for sid in wanted:
                    rec = records[sid]
                    rec.shard = job.rel_path
                    yield sid, window_sample(rec, audio, sr, speakers, result.turns)
            else:
                records = {c.chunk_id: c for c in result.codec_chunks}
                for sid in wanted:
                    rec = records[sid]
                    rec.shard = job.rel_path
                    yield sid, codec_sample(rec, audio, sr, speakers, result.turns)
