"""What every source recipe provides (`Source`): discovery of recording tasks, optional
per-recording preparation on a worker, and reading one task's audio and transcript."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence

from catalog.schema import Recording, Reject, Speaker, Utterance
from stages.audio.decode import DecodedAudio
from stages.errors import RejectError


_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class RecordingTask:
    """One conversation to ingest, as discovery found it. Picklable, small, Ray-friendly."""

    source: str
    origin_id: str
    audio_path: str
    transcript_path: Optional[str]
    lang: str
    license: str
    # Extra per-recording facts from the source's metadata tables (speaker genders, topic, ...).
    metadata: dict[str, Any] = field(default_factory=dict)
    # No transcript: speakers and words come from VAD, diarization and ASR (stages/analysis/analyzer.py).
    needs_analysis: bool = False
    # The inputs' identity when the source knows it better than the files' stat (a synthetic
    # dialogue, identified by its request and script before its audio exists).
    content_key: Optional[str] = None
    # The source makes the recording on a worker first (`Source.prepare`: a synthetic dialogue).
    needs_prepare: bool = False

    @property
    def recording_id(self) -> str:
        # Ids become file names and WebDataset keys, where a "." would split the key.
        return _UNSAFE_ID.sub("_", f"{self.source}-{self.origin_id}")

    def fingerprint(self) -> str:
        """Cheap identity of the inputs (path, size, mtime): a changed file is reprocessed."""
        h = hashlib.sha256()
        if self.content_key is not None:
            h.update(f"content:{self.content_key}".encode())
        for p in () if self.content_key is not None else (self.audio_path, self.transcript_path):
            if p is None:
                h.update(b"-")
                continue
            try:
                st = os.stat(p)
                h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{p}|missing".encode())
        h.update(repr(sorted(self.metadata.items())).encode())
        h.update(f"{self.lang}|{self.license}".encode())
        return h.hexdigest()[:16]


@dataclass
class Discovery:
    tasks: list[RecordingTask]
    rejects: list[Reject]  # e.g. a transcript without audio, found before any decoding
    # Found but not fetched in time (the podcasts discovery budget): reported, never recorded as
    # rejects, fetched by the next build.
    deferred: list[Reject] = field(default_factory=list)


@dataclass
class Transcript:
    """One recording's transcript as records, plus the per-line rejects found on the way."""

    speakers: list[Speaker]
    utterances: list[Utterance]
    rejects: list[Reject]


class Source(Protocol):
    """Everything the pipeline calls on a source. `discover` runs once, in the driver; the
    rest runs on recording workers (a copy of the source per worker, so it may hold models)."""

    name: str

    def discover(self) -> Discovery: ...

    def prepare_fingerprint(self) -> str:
        """The settings of `prepare` that are not part of a task's own identity."""
        ...

    def prepare(self, task: RecordingTask) -> bool:
        """Per-recording work before ingest (rendering a synthetic dialogue). Returns whether
        there was work to do; raises RejectError for a recording that cannot be made."""
        ...

    def read_audio(self, task: RecordingTask) -> DecodedAudio: ...

    def read_transcript(self, task: RecordingTask, recording: Recording) -> Transcript: ...

    def assign_roles(self, task: RecordingTask, speakers: Sequence[Speaker], utterances: Sequence[Utterance]) -> None:
        """Role hints (host, guest) on an analyzed recording's speakers."""
        ...


class SourceBase:
    """Defaults for the optional parts of `Source`: nothing to prepare, audio decoded from the
    task's file, no transcript (tasks are `needs_analysis`), no role hints."""

    name = "source"

    def discover(self) -> Discovery:
        raise NotImplementedError

    def prepare_fingerprint(self) -> str:
        return "-"

    def prepare(self, task: RecordingTask) -> bool:
        return False

    def read_audio(self, task: RecordingTask) -> DecodedAudio:
        from stages.audio.load import decode_file

        return decode_file(task.audio_path)

    def read_transcript(self, task: RecordingTask, recording: Recording) -> Transcript:
        raise RejectError("audio_without_transcript", f"source {self.name} has no transcripts for {task.audio_path}")

    def assign_roles(self, task: RecordingTask, speakers: Sequence[Speaker], utterances: Sequence[Utterance]) -> None:
        return None
