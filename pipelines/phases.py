"""The phases a recording goes through, each cached under the corpus root.

A phase has a name, a code version (taken from the stage modules whose code it runs), the
settings it depends on, and a `run`. Its cache key chains the previous phase's key with its own
settings and code version, so changing a setting redoes exactly the phases at and after the one
that uses it. `run_phase` is the one cached-run helper: it returns the cached document when the
key matches and otherwise runs the phase and caches what it made, a reject included. An
environment failure (`TransientError`, or any exception that is not a `RejectError`) is never
cached: the next build runs that phase again.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from catalog.schema import Conversation, Recording, Reject, to_dict
from catalog.store import Store
from stages.analysis import analyzer as analysis_code
from stages.audio import standardize as standardize_code
from stages.audio.standardize import standardize
from stages.audio.standardize_stream import open_analysis_audio, standardize_file
from stages.config import PipelineConfig
from stages.corpus import samples as samples_code
from stages.corpus import segment as segment_code
from stages.corpus.samples import plan_codec_chunks, plan_windows
from stages.corpus.segment import segment
from stages.errors import RejectError
from stages.sources.base import RecordingTask, Source

# The glue in this module: bump when it changes what a phase produces.
INGEST_GLUE_VERSION = 1
SEGMENT_GLUE_VERSION = 1


def digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def audio_rel(recording_id: str, source: str) -> str:
    return f"recordings/{source}/{recording_id}.flac"


class Worker:
    """What a worker process keeps between recordings: models are loaded on first use."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self._analyzer: Optional[Any] = None

    def analyzer(self) -> Any:
        if self._analyzer is None:
            from stages.analysis.analyzer import ConversationAnalyzer  # loads models: only when needed

            self._analyzer = ConversationAnalyzer(self.cfg.analyze)
        return self._analyzer


@dataclass
class PhaseContext:
    task: RecordingTask
    cfg: PipelineConfig
    store: Store
    source: Source
    worker: Worker
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)  # earlier phases' documents


class Phase:
    name: str = ""
    code_version: str = ""

    def applies(self, task: RecordingTask) -> bool:
        return True

    def settings(self, task: RecordingTask, cfg: PipelineConfig, source: Source) -> str:
        """Fingerprint of the settings this phase's output depends on."""
        return "-"

    def rel(self, recording_id: str) -> str:
        return f"work/{self.name}/{recording_id}.json"

    def valid(self, ctx: PhaseContext, doc: dict[str, Any]) -> bool:
        """Is a cached document still usable (its files still there)?"""
        return True

    def run(self, ctx: PhaseContext) -> dict[str, Any]:
        raise NotImplementedError


class RenderPhase(Phase):
    """The source makes the recording (a synthetic dialogue's TTS, round trip and timeline)."""

    name = "render"
    code_version = "1"

    def applies(self, task: RecordingTask) -> bool:
        return task.needs_prepare

    def settings(self, task: RecordingTask, cfg: PipelineConfig, source: Source) -> str:
        return source.prepare_fingerprint()

    def valid(self, ctx: PhaseContext, doc: dict[str, Any]) -> bool:
        import os

        return os.path.exists(ctx.task.audio_path)

    def run(self, ctx: PhaseContext) -> dict[str, Any]:
        return {"rendered": ctx.source.prepare(ctx.task)}


class IngestPhase(Phase):
    """Decode and standardize the audio; transcript from the source, or VAD → ASR → diarization
    → alignment for one-microphone recordings. The standardized FLAC goes to recordings/."""

    name = "ingest"

    @property
    def code_version(self) -> str:  # type: ignore[override]
        return f"{INGEST_GLUE_VERSION}.{standardize_code.CODE_VERSION}.{analysis_code.CODE_VERSION}"

    def settings(self, task: RecordingTask, cfg: PipelineConfig, source: Source) -> str:
        analysis = cfg.analyze.fingerprint() if task.needs_analysis else "-"
        return digest(cfg.standardize.fingerprint(), analysis)

    def rel(self, recording_id: str) -> str:
        return f"work/conversations/{recording_id}.json"

    def valid(self, ctx: PhaseContext, doc: dict[str, Any]) -> bool:
        return "reject" in doc or ctx.store.exists(doc["conversation"]["recording"]["audio_path"])

    def run(self, ctx: PhaseContext) -> dict[str, Any]:
        task = ctx.task
        conv, rejects = _ingest_analyzed(ctx) if task.needs_analysis else _ingest_transcribed(ctx)
        return {"conversation": conv.to_dict(), "rejects": [to_dict(r) for r in rejects]}


def _recording(ctx: PhaseContext, repair: Any = None, **audio_facts: Any) -> Recording:
    """`repair`: the NaN/Inf/denormal samples decoding zeroed, if any (kept in the metadata)."""
    task = ctx.task
    metadata = {**task.metadata, **({"sample_repair": repair.metadata()} if repair else {})}
    return Recording(
        recording_id=task.recording_id,
        source=task.source,
        origin_id=task.origin_id,
        # Where it came from for people: a podcast's enclosure or page, else the file read.
        origin=task.metadata.get("audio_url") or task.metadata.get("page_url") or task.audio_path,
        license=task.license,
        lang=task.lang,
        audio_path=audio_rel(task.recording_id, task.source),
        sample_rate=ctx.cfg.standardize.sample_rate,
        metadata_json=json.dumps(metadata, sort_keys=True, ensure_ascii=False),
        **audio_facts,
    )


def _ingest_transcribed(ctx: PhaseContext) -> tuple[Conversation, list[Reject]]:
    """Sources with transcripts (LDC, synthetic): decode, standardize, read the transcript."""
    task = ctx.task
    decoded = ctx.source.read_audio(task)
    std = standardize(decoded, ctx.cfg.standardize)
    recording = _recording(
        ctx,
        repair=std.repair,
        native_sample_rate=std.native_sample_rate,
        num_channels=int(std.samples.shape[0]),
        duration_s=round(std.duration_s, 3),
        encoding=decoded.encoding,
        audio_sha256=decoded.sha256,
        bandwidth=std.bandwidth,
        effective_bandwidth_hz=std.effective_bandwidth_hz,
    )
    ctx.store.write_bytes(recording.audio_path, std.flac())
    transcript = ctx.source.read_transcript(task, recording)
    return Conversation(recording, transcript.speakers, transcript.utterances), transcript.rejects


def _ingest_analyzed(ctx: PhaseContext) -> tuple[Conversation, list[Reject]]:
    """One-microphone sources: stream-standardize, then VAD → diarize → ASR → align."""
    task, acfg = ctx.task, ctx.cfg.analyze
    with tempfile.TemporaryDirectory(prefix="convcorpus-") as tmp:
        std = standardize_file(
            task.audio_path, ctx.cfg.standardize, acfg.analysis_sample_rate, tmp,
            analysis_mono=acfg.diarize.backend != "channels",
        )
        recording = _recording(
            ctx,
            repair=std.repair,
            native_sample_rate=std.native_sample_rate,
            num_channels=std.num_channels,
            duration_s=std.duration_s,
            encoding=std.encoding,
            audio_sha256=std.sha256,
            bandwidth=std.bandwidth,
            effective_bandwidth_hz=std.effective_bandwidth_hz,
        )
        audio, sr = open_analysis_audio(std.analysis_path)
        analysis = ctx.worker.analyzer()(recording, audio, sr)
        del audio
        with open(std.flac_path, "rb") as src, ctx.store.atomic_writer(recording.audio_path) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    if analysis.lang and recording.lang in ("", "auto"):
        recording.lang = analysis.lang
    ctx.source.assign_roles(task, analysis.speakers, analysis.utterances)
    return Conversation(recording, analysis.speakers, analysis.utterances), analysis.rejects


class SegmentPhase(Phase):
    """Turns and pairs (stages/corpus/segment.py), dialogue windows and codec chunks planned
    (stages/corpus/samples.py); the audio is cut later, per shard."""

    name = "segment"

    @property
    def code_version(self) -> str:  # type: ignore[override]
        return f"{SEGMENT_GLUE_VERSION}.{segment_code.CODE_VERSION}.{samples_code.CODE_VERSION}"

    def settings(self, task: RecordingTask, cfg: PipelineConfig, source: Source) -> str:
        return digest(cfg.segment.fingerprint(), cfg.shard.fingerprint())

    def rel(self, recording_id: str) -> str:
        return f"work/segments/{recording_id}.json"

    def run(self, ctx: PhaseContext) -> dict[str, Any]:
        conv = Conversation.from_dict(ctx.docs["ingest"]["conversation"])
        cfg = ctx.cfg
        seg = segment(conv, cfg.segment)
        if not seg.turns:
            raise RejectError("empty_conversation", "no speech turns")
        windows = plan_windows(conv.recording, conv.speakers, seg.turns, cfg.shard, cfg.segment.role_policy)
        chunks = plan_codec_chunks(conv.recording, seg.turns, cfg.shard)
        return {
            "turns": [to_dict(t) for t in seg.turns],
            "pairs": [to_dict(p) for p in seg.pairs],
            "windows": [to_dict(w) for w in windows],
            "codec_chunks": [to_dict(c) for c in chunks],
            "rejects": [to_dict(r) for r in seg.rejects],
        }


PHASES: tuple[Phase, ...] = (RenderPhase(), IngestPhase(), SegmentPhase())


def phases_for(task: RecordingTask) -> list[Phase]:
    return [p for p in PHASES if p.applies(task)]


def phase_keys(task: RecordingTask, cfg: PipelineConfig, source: Source) -> dict[str, str]:
    """Each applicable phase's cache key: the previous key + its settings + its code version."""
    keys: dict[str, str] = {}
    key = task.fingerprint()
    for phase in phases_for(task):
        key = digest(key, phase.name, phase.settings(task, cfg, source), phase.code_version)
        keys[phase.name] = key
    return keys


def recording_key(task: RecordingTask, cfg: PipelineConfig, source: Source) -> str:
    """The key of a recording's last phase: what a corpus part records it was built from."""
    return list(phase_keys(task, cfg, source).values())[-1]


def phase_code_versions() -> dict[str, str]:
    return {p.name: p.code_version for p in PHASES}


@dataclass
class PhaseResult:
    doc: dict[str, Any]
    cached: bool
    seconds: float
    status: str  # "ok", "rejected", "failed"
    error: Optional[BaseException] = None


def reject_of(task: RecordingTask, stage: str, err: RejectError) -> Reject:
    return Reject(task.source, stage, task.recording_id, err.reason, err.detail[:2000])


def run_phase(
    phase: Phase,
    ctx: PhaseContext,
    key: str,
    retry_rejects: Optional[Sequence[str]] = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PhaseResult:
    """The cached-run helper. `retry_rejects`: reject reasons to run again instead of reusing
    (an empty list means every reason; None means none)."""
    t0 = clock()
    rel = phase.rel(ctx.task.recording_id)
    doc = _read_cached(ctx.store, rel, key)
    if doc is not None and phase.valid(ctx, doc) and not _retry(doc, retry_rejects):
        return PhaseResult(doc, True, clock() - t0, "rejected" if "reject" in doc else "ok")
    try:
        try:
            doc = {"key": key, **phase.run(ctx)}
        except RejectError as e:
            doc = {"key": key, "reject": to_dict(reject_of(ctx.task, phase.name, e))}
        ctx.store.write_json(rel, doc)
    except Exception as e:  # the environment or our code, not the input: never cached
        return PhaseResult({}, False, clock() - t0, "failed", e)
    return PhaseResult(doc, False, clock() - t0, "rejected" if "reject" in doc else "ok")


def _read_cached(store: Store, rel: str, key: str) -> Optional[dict[str, Any]]:
    try:
        doc = store.read_json(rel)
    except (FileNotFoundError, ValueError):
        return None
    return doc if doc.get("key") == key else None


def _retry(doc: dict[str, Any], reasons: Optional[Sequence[str]]) -> bool:
    if reasons is None or "reject" not in doc:
        return False
    return not reasons or doc["reject"]["reason"] in reasons

