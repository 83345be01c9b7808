"""Per-recording work (the phases of pipelines/phases.py) and per-shard work (cut samples → tar),
as plain callables that an engine maps over items.

Each recording's phase results are cached under the corpus root, keyed by its input
fingerprint and the config of the phases that made them, so a rerun or a resumed build redoes
nothing. What a recording worker returns says, per phase, how long it took, whether its result
was cached, and which worker ran it: the build writes that to the `phase_runs` table.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from catalog.schema import CodecChunk, Conversation, DialogueWindow, Pair, Recording, Reject, Speaker, Turn, from_dict, to_json
from catalog.store import Store
from pipelines.phases import PhaseContext, Worker, phase_keys, phases_for, run_phase
from pipelines.sample_kinds import KIND_BY_NAME, SampleKind
from stages.audio.decode import read_audio_range, read_flac
from stages.config import PipelineConfig, ShardConfig
from stages.corpus.shards import write_tar_shard
from stages.errors import failure_kind
from stages.sources.base import RecordingTask, Source

# A shard job reads the stretch of a recording its samples need in one go, up to this long;
# longer stretches (samples spread over an hours-long episode) are read in pieces of this size.
MAX_READ_S = 1800.0


@dataclass(frozen=True)
class ProcessOptions:
    """How recordings are run, beyond what shapes their content."""

    retry_rejects: Optional[tuple[str, ...]] = None  # reasons to run again; () = every reason
    transient_retries: int = 1  # attempts after an environment failure, within this build
    retry_wait_s: float = 2.0
    threads: int = 1  # BLAS/OpenMP threads of a worker (ASR threads are a pipeline setting)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def limit_threads(n: int) -> Any:
    """The same thread counts in every engine, so that float sums (and the bytes) agree."""
    from threadpoolctl import threadpool_limits

    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return threadpool_limits(limits=n)


class RecordingProcessor:
    """Runs a recording's phases in order; stops at the first reject or failure."""

    def __init__(self, source: Source, out: str, storage_options: dict[str, Any], cfg: PipelineConfig,
                 options: ProcessOptions = ProcessOptions()):
        self.source = source
        self.store = Store(out, storage_options)
        self.cfg = cfg
        self.options = options
        self.worker = Worker(cfg)
        self._limits = limit_threads(options.threads)

    def __call__(self, task: RecordingTask) -> dict[str, Any]:
        keys = phase_keys(task, self.cfg, self.source)
        ctx = PhaseContext(task, self.cfg, self.store, self.source, self.worker)
        runs: list[dict[str, Any]] = []
        out: dict[str, Any] = {"recording_id": task.recording_id, "source": task.source, "worker": worker_name(),
                               "phases": runs, "status": "ok"}
        for phase in phases_for(task):
            for attempt in range(self.options.transient_retries + 1):
                res = run_phase(phase, ctx, keys[phase.name], self.options.retry_rejects)
                if res.status != "failed" or attempt == self.options.transient_retries:
                    break
                time.sleep(self.options.retry_wait_s * (attempt + 1))
            runs.append({"phase": phase.name, "seconds": round(res.seconds, 4), "cached": res.cached,
                         "status": res.status})
            if res.status == "failed":
                err = res.error
                assert err is not None
                out.update(status="failed", phase=phase.name, failure=failure_kind(err),
                           detail=traceback.format_exception_only(type(err), err)[-1].strip()[:2000])
                return out
            if res.status == "rejected":
                out.update(status="rejected", phase=phase.name, reason=res.doc["reject"]["reason"])
                return out
            ctx.docs[phase.name] = res.doc
        out["pairs"] = len(ctx.docs["segment"]["pairs"])
        out["duration_s"] = ctx.docs["ingest"]["conversation"]["recording"]["duration_s"]
        return out


# --- reading back a processed recording -----------------------------------------------------


@dataclass
class RecordingResult:
    """What one recording contributes to the catalog (read back from the cache)."""

    recording_id: str
    conversation: Optional[Conversation]
    turns: list[Turn] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    windows: list[DialogueWindow] = field(default_factory=list)
    codec_chunks: list[CodecChunk] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def samples(self, kind: SampleKind) -> list[Any]:
        return getattr(self, kind.results_field)


def load_result(store: Store, task: RecordingTask) -> RecordingResult:
    """A processed recording's records, from its phases' cached documents."""
    rid = task.recording_id
    rejects: list[Reject] = []
    docs: dict[str, dict[str, Any]] = {}
    for phase in phases_for(task):
        doc = store.read_json(phase.rel(rid))
        rejects.extend(from_dict(Reject, r) for r in doc.get("rejects", []))
        if doc.get("reject"):
            return RecordingResult(rid, None, rejects=rejects + [from_dict(Reject, doc["reject"])])
        docs[phase.name] = doc
    seg = docs["segment"]
    return RecordingResult(
        rid,
        Conversation.from_dict(docs["ingest"]["conversation"]),
        [from_dict(Turn, t) for t in seg["turns"]],
        [from_dict(Pair, p) for p in seg["pairs"]],
        [from_dict(DialogueWindow, w) for w in seg["windows"]],
        [from_dict(CodecChunk, c) for c in seg["codec_chunks"]],
        rejects,
    )


# --- shards -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardJob:
    kind: str  # a SampleKind name
    rel_path: str
    version: str
    items: tuple[tuple[RecordingTask, tuple[str, ...]], ...]  # per recording, its sample ids in shard order


class ShardProcessor:
    """Cut one shard's samples from the standardized audio and write the tar. Each recording's
    audio is read once per job: the stretch its samples in this shard cover."""

    def __init__(self, out: str, storage_options: dict[str, Any], cfg: ShardConfig):
        self.store = Store(out, storage_options)
        self.cfg = cfg

    def __call__(self, job: ShardJob) -> dict[str, Any]:
        kind = KIND_BY_NAME[job.kind]
        shard = write_tar_shard(self.store, job.rel_path, self._samples(kind, job), job.kind, job.version)
        return {"shard": dataclasses.asdict(shard)}

    def _samples(self, kind: SampleKind, job: ShardJob) -> Iterator[tuple[str, dict[str, bytes]]]:
        for task, wanted in job.items:
            result = load_result(self.store, task)
            conv = result.conversation
            assert conv is not None, f"shard planned for rejected recording {task.recording_id}"
            speakers: dict[str, Speaker] = {s.speaker_id: s for s in conv.speakers}
            records = {kind.sample_id(r): r for r in result.samples(kind)}
            spans = {sid: kind.span(records[sid], self.cfg) for sid in wanted}
            audio = _AudioReader(self.store, conv.recording, list(spans.values()))
            for sid in wanted:
                rec = dataclasses.replace(records[sid], shard=job.rel_path)
                samples, sr, offset = audio.covering(*spans[sid])
                shifted = _shift(rec, offset)
                turns = [_shift(t, offset) for t in result.turns] if offset else result.turns
                sample = kind.make(shifted, samples, sr, speakers, turns, self.cfg)
                sample["json"] = to_json(rec).encode()  # the record's own (unshifted) times
                yield sid, sample


_TIME_FIELDS = ("start_s", "end_s", "user_start_s", "user_end_s", "ai_start_s", "ai_end_s", "context_start_s",
                "user_clip_start_s", "user_clip_end_s", "ai_clip_start_s", "ai_clip_end_s")


def _shift(record: Any, offset: float) -> Any:
    if not offset:
        return record
    changes = {f: getattr(record, f) - offset for f in _TIME_FIELDS
               if hasattr(record, f) and getattr(record, f) is not None}
    return dataclasses.replace(record, **changes)


class _AudioReader:
    """The stretches of a recording's standardized audio that a shard job needs, each read once:
    the samples' spans merged into stretches of at most MAX_READ_S (a telephone call is one read;
    an hours-long episode stays on disk but for the stretches its samples in this shard need)."""

    def __init__(self, store: Store, recording: Recording, spans: list[tuple[float, float]]):
        self.store = store
        self.recording = recording
        self.stretches = _stretches(spans, MAX_READ_S)
        self._loaded: Optional[tuple[int, np.ndarray, int, float]] = None  # index, audio, sr, offset

    def covering(self, start_s: float, end_s: float) -> tuple[np.ndarray, int, float]:
        i = next(k for k, (s, e) in enumerate(self.stretches) if s <= start_s and end_s <= e)
        if self._loaded is None or self._loaded[0] != i:
            self._loaded = (i, *self._read(*self.stretches[i]))
        _, audio, sr, offset = self._loaded
        return audio, sr, offset

    def _read(self, start_s: float, end_s: float) -> tuple[np.ndarray, int, float]:
        if len(self.stretches) == 1 and self.recording.duration_s <= MAX_READ_S:
            with self.store.open(self.recording.audio_path) as f:
                audio, sr = read_flac(f)
            return audio, sr, 0.0
        sr = self.recording.sample_rate
        start = round(max(0.0, start_s) * sr) / sr  # frame-aligned, so cuts match a whole read
        with self.store.open(self.recording.audio_path) as f:
            audio, sr = read_audio_range(f, start, end_s)
        return audio, sr, start


def _stretches(spans: list[tuple[float, float]], max_s: float) -> list[tuple[float, float]]:
    """Spans merged, in time order, into stretches no longer than max_s (a span longer than
    that gets a stretch of its own)."""
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and max(out[-1][1], e) - out[-1][0] <= max_s:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]
