"""What every source recipe provides: discovery of recording tasks, and loading one task into
a Conversation (with its standardized audio) or a reject."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from catalog.schema import Reject


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

    @property
    def recording_id(self) -> str:
        # Ids become file names and WebDataset keys, where a "." would split the key.
        return _UNSAFE_ID.sub("_", f"{self.source}-{self.origin_id}")

    def fingerprint(self) -> str:
        """Cheap identity of the inputs (path, size, mtime): a changed file is reprocessed."""
        h = hashlib.sha256()
        for p in (self.audio_path, self.transcript_path):
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


class Source(Protocol):
    name: str

    def discover(self) -> Discovery: ...
