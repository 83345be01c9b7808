"""Per-recording work (ingest → standardize → transcript → segment → plan samples) and
per-shard work (cut samples → tar), as plain callables that an engine maps over items.

Each recording's results are cached under the corpus root, keyed by its input fingerprint and
the config of the stages that made them, so a rerun or a resumed build redoes nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
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
    to_json,
)
from catalog.store import Store
from stages.audio.decode import read_audio_range, read_flac
from stages.config import PipelineConfig, ShardConfig
from stages.corpus.samples import codec_sample, pair_sample, plan_codec_chunks, plan_windows, window_sample
from stages.corpus.segment import segment
from stages.corpus.shards import write_tar_shard
from stages.sources.base import RecordingTask
from stages.errors import RejectError
from stages.audio.standardize import standardize
from stages.audio.standardize_stream import open_analysis_audio, standardize_file

# Recordings up to this long are read whole for cutting samples; longer ones span by span.
WHOLE_READ_MAX_S = 1800.0
# Bump when a stage's code changes what it produces: cached results then no longer match.
INGEST_CODE_VERSION = 1
SEGMENT_CODE_VERSION = 1


def _hash(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def ingest_key(task: RecordingTask, cfg: PipelineConfig) -> str:
    analysis = cfg.analyze.fingerprint() if task.needs_analysis else "-"
    return _hash(task.fingerprint(), cfg.standardize.fingerprint(), analysis, INGEST_CODE_VERSION)


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
        self.analyzer: Optional[Any] = None  # created on first use, then reused by this worker

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
            if task.needs_analysis:
                conv, rejects = self._ingest_analyzed(task)
            else:
                conv, rejects = self._ingest_transcribed(task)
            doc = {"key": key, "conversation": conv.to_dict(), "rejects": [to_dict(r) for r in rejects]}
        except Exception as e:  # a bad recording is a reject, never the end of the build
            doc = {"key": key, "reject": to_dict(_reject_from(task, "ingest", e))}
        self.store.write_json(conversation_rel(task.recording_id), doc)
        return doc

    def _recording(self, task: RecordingTask, **audio_facts: Any) -> Recording:
        return Recording(
            recording_id=task.recording_id,
            source=task.source,
            origin_id=task.origin_id,
            # Where it came from for people: a podcast's enclosure or page, else the file read.
            origin=task.metadata.get("audio_url") or task.metadata.get("page_url") or task.audio_path,
            license=task.license,
            lang=task.lang,
            audio_path=audio_rel(task.recording_id, task.source),
            sample_rate=self.cfg.standardize.sample_rate,
            metadata_json=json.dumps(task.metadata, sort_keys=True, ensure_ascii=False),
            **audio_facts,
        )

    def _ingest_transcribed(self, task: RecordingTask) -> tuple[Conversation, list[Reject]]:
        """Sources with transcripts (LDC): decode, standardize, read the transcript."""
        decoded = self.source.read_audio(task)
        std = standardize(decoded, self.cfg.standardize)
        recording = self._recording(
            task,
            native_sample_rate=std.native_sample_rate,
            num_channels=int(std.samples.shape[0]),
            duration_s=round(std.duration_s, 3),
            encoding=decoded.encoding,
            audio_sha256=decoded.sha256,
            bandwidth=std.bandwidth,
            effective_bandwidth_hz=std.effective_bandwidth_hz,
        )
        self.store.write_bytes(recording.audio_path, std.flac())
        transcript = self.source.read_transcript(task, recording)
        return Conversation(recording, transcript.speakers, transcript.utterances), transcript.rejects

    def _ingest_analyzed(self, task: RecordingTask) -> tuple[Conversation, list[Reject]]:
        """One-microphone sources: stream-standardize, then VAD → diarize → ASR → align."""
        acfg = self.cfg.analyze
        with tempfile.TemporaryDirectory(prefix="convcorpus-") as tmp:
            std = standardize_file(
                task.audio_path, self.cfg.standardize, acfg.analysis_sample_rate, tmp,
                analysis_mono=acfg.diarize.backend != "channels",
            )
            recording = self._recording(
                task,
                native_sample_rate=std.native_sample_rate,
                num_channels=std.num_channels,
                duration_s=std.duration_s,
                encoding=std.encoding,
                audio_sha256=std.sha256,
                bandwidth=std.bandwidth,
                effective_bandwidth_hz=std.effective_bandwidth_hz,
            )
            audio, sr = open_analysis_audio(std.analysis_path)
            analysis = self._analyzer()(recording, audio, sr)
            del audio
            with open(std.flac_path, "rb") as src, self.store.atomic_writer(recording.audio_path) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        if analysis.lang and recording.lang in ("", "auto"):
            recording.lang = analysis.lang
        assign_roles = getattr(self.source, "assign_roles", None)
        if assign_roles is not None:
            assign_roles(task, analysis.speakers, analysis.utterances)
        return Conversation(recording, analysis.speakers, analysis.utterances), analysis.rejects

    def _analyzer(self) -> Any:
        if self.analyzer is None:
            from stages.analysis.analyzer import ConversationAnalyzer  # loads models: only when needed

            self.analyzer = ConversationAnalyzer(self.cfg.analyze)
        return self.analyzer

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
            speakers: dict[str, Speaker] = {s.speaker_id: s for s in conv.speakers}
            records = _records_by_id(job.kind, result)
            audio_of = _AudioSpans(self.store, conv.recording)
            for sid in wanted:
                rec = records[sid]
                rec.shard = job.rel_path
                t0, t1 = _sample_span(job.kind, rec, self.cfg.include_context_audio)
                audio, sr, offset = audio_of(t0, t1)
                shifted = _shift(rec, offset)
                turns = [_shift(t, offset) for t in result.turns] if offset else result.turns
                if job.kind == "pairs":
                    sample = pair_sample(shifted, audio, sr, speakers, turns, self.cfg.include_context_audio)
                elif job.kind == "dialogues":
                    sample = window_sample(shifted, audio, sr, speakers, turns)
                else:
                    sample = codec_sample(shifted, audio, sr, speakers, turns)
                sample["json"] = to_json(rec).encode()  # the record's own (unshifted) times
                yield sid, sample


def _records_by_id(kind: str, result: RecordingResult) -> dict[str, Any]:
    if kind == "pairs":
        return {p.pair_id: p for p in result.pairs}
    if kind == "dialogues":
        return {w.window_id: w for w in result.windows}
    return {c.chunk_id: c for c in result.codec_chunks}


_TIME_FIELDS = ("start_s", "end_s", "user_start_s", "user_end_s", "ai_start_s", "ai_end_s", "context_start_s")


def _shift(record: Any, offset: float) -> Any:
    if not offset:
        return record
    changes = {f: getattr(record, f) - offset for f in _TIME_FIELDS
               if hasattr(record, f) and getattr(record, f) is not None}
    return dataclasses.replace(record, **changes)


def _sample_span(kind: str, rec: Any, include_context: bool) -> tuple[float, float]:
    if kind == "pairs":
        start = rec.context_start_s if include_context and rec.context_start_s is not None else rec.user_start_s
        return min(start, rec.user_start_s, rec.ai_start_s), max(rec.user_end_s, rec.ai_end_s)
    return rec.start_s, rec.end_s


class _AudioSpans:
    """A recording's standardized audio for sample cutting: read whole once when it is short
    (telephone calls), read span by span when it is long (hours-long episodes stay on disk)."""

    def __init__(self, store: Store, recording: Recording):
        self.store = store
        self.recording = recording
        self.whole: Optional[tuple[Any, int]] = None

    def __call__(self, start_s: float, end_s: float) -> tuple[Any, int, float]:
        if self.recording.duration_s <= WHOLE_READ_MAX_S:
            if self.whole is None:
                with self.store.open(self.recording.audio_path) as f:
                    self.whole = read_flac(f)
            return self.whole[0], self.whole[1], 0.0
        sr = self.recording.sample_rate
        start = round(max(0.0, start_s) * sr) / sr  # frame-aligned, so cuts match a whole read
        with self.store.open(self.recording.audio_path) as f:
            audio, sr = read_audio_range(f, start, end_s)
        return audio, sr, start
