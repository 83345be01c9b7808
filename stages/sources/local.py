"""The `local` source: folders of the user's own recordings (any format ffmpeg decodes, mono
or multi-channel), searched recursively and handed on as one-microphone recordings
(`needs_analysis`: speakers and words come from VAD, diarization and ASR).

origin_id = <slug>-<hash>: the slug is the file's path relative to its folder with every
character outside [A-Za-z0-9._-] replaced by "_" (at most 60 characters, readable in the
catalog); the hash is sha256 of the file's absolute path, first 10 hex digits, which keeps ids
unique across folders and across names that slug alike. The id is stable as long as the file
stays where it is (the task's fingerprint depends on the path anyway).

Discovery only lists files by extension; a file that is not audio (or is empty) is found when
it is decoded (`audio_decode_failed`, `audio_empty`) and becomes that recording's reject.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Optional

from pydantic import Field, field_validator

from stages.config import StageConfig
from stages.sources.base import Discovery, RecordingTask, SourceBase
from stages.sources.ldc import walk_files

SOURCE = "local"
DEFAULT_EXTENSIONS = ["wav", "flac", "mp3", "m4a", "opus", "ogg", "webm", "aac"]
_SLUG_BAD = re.compile(r"[^A-Za-z0-9_-]+")  # no ".": ids become WebDataset keys


class LocalConfig(StageConfig):
    audio: list[str] = Field(min_length=1, description="folders (searched recursively) or single files")
    lang: str = Field("auto", description="language code of the recordings; 'auto' lets ASR decide")
    license: str = "unknown (local recordings)"
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS), min_length=1)
    speakers: Optional[int] = Field(None, ge=1, le=32, description="known speaker count of every recording "
                                    "(a diarization hint; 1 keeps monologues)")

    @field_validator("extensions")
    @classmethod
    def _normalize(cls, v: list[str]) -> list[str]:
        out = []
        for ext in v:
            ext = ext.strip().lstrip(".").lower()
            if not ext or not re.fullmatch(r"[a-z0-9]+", ext):
                raise ValueError(f"bad extension {ext!r}")
            out.append(ext)
        return sorted(set(out))


def local_origin_id(rel_path: str, abs_path: str) -> str:
    slug = _SLUG_BAD.sub("_", rel_path.replace(os.sep, "_")).strip("._-")[:60].rstrip("._-") or "audio"
    return f"{slug}-{hashlib.sha256(abs_path.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


class LocalSource(SourceBase):
    name = SOURCE

    def __init__(self, config: LocalConfig):
        self.config = config

    def _files(self) -> list[tuple[str, str]]:
        """(absolute path, path relative to its folder) of every matching file, sorted."""
        suffixes = [f".{e}" for e in self.config.extensions]
        found: dict[str, str] = {}
        for given in self.config.audio:
            root = os.path.abspath(os.path.expanduser(given))
            if os.path.isfile(root):
                found.setdefault(root, os.path.basename(root))
                continue
            if not os.path.isdir(root):
                raise FileNotFoundError(f"local audio folder not found: {given}")
            for paths in walk_files([root], suffixes).values():
                for p in paths:
                    found.setdefault(p, os.path.relpath(p, root))
        return sorted(found.items())

    def discover(self) -> Discovery:
        tasks = []
        for path, rel in self._files():
            try:
                size = os.path.getsize(path)
            except OSError:
                continue  # vanished between listing and stat
            tasks.append(
                RecordingTask(
                    source=self.name,
                    origin_id=local_origin_id(rel, path),
                    audio_path=path,
                    transcript_path=None,
                    lang=self.config.lang,
                    license=self.config.license,
                    metadata={"relative_path": rel, "size_bytes": size,
                              **({"speakers": self.config.speakers} if self.config.speakers else {})},
                    needs_analysis=True,
                )
            )
        return Discovery(tasks=tasks, rejects=[])

    # read_audio decodes the file (SourceBase); no read_transcript: tasks are `needs_analysis`, the
    # analysis stage (stages/analysis/analyzer.py) produces their speakers and words.

