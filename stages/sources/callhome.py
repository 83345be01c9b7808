"""CallHome American English (LDC97S42 audio, LDC97T14 transcripts).

Layout (found recursively):
    data/{train,devtest,evltest}/en_NNNN.sph        two channels, 8 kHz, usually shorten-packed
    transcrpt/{train,devtest,evaltest}/en_NNNN.txt  `start end A: text`; NNNN.txt also accepted
The LDC spells the audio split "evltest"; it is reported as "evaltest". Long turns wrap onto
untimed lines, which continue the utterance above them. Markup: see stages/sources/ldc_text.py.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from pydantic import Field

from stages.config import StageConfig
from stages.sources.base import Discovery
from stages.sources.ldc import LdcSource, index_by_id, pair_discovery, require_dirs, walk_files

_CALLHOME_ID = re.compile(r"^(?:en_)?(\d{4})$", re.I)
_SPLITS = {"train": "train", "devtest": "devtest", "evaltest": "evaltest", "evltest": "evaltest"}


class CallHomeConfig(StageConfig):
    audio: list[str] = Field(min_length=1, description="folders holding the LDC97S42 audio")
    transcripts: list[str] = Field(
        default_factory=list, description="folders holding LDC97T14 (default: the audio folders)"
    )
    lang: str = "en"
    license: str = "LDC User Agreement (LDC97S42/LDC97T14)"


def callhome_id(path: str) -> Optional[str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _CALLHOME_ID.match(stem)
    return f"en_{m.group(1)}" if m else None


def callhome_split(path: str) -> Optional[str]:
    return _SPLITS.get(os.path.basename(os.path.dirname(path)).lower())


class CallHomeSource(LdcSource):
    name = "callhome"
    wrapped_lines = True

    def __init__(self, config: CallHomeConfig):
        self.config = config

    def discover(self) -> Discovery:
        audio_roots = require_dirs(self.config.audio, "CallHome audio")
        tran_roots = require_dirs(self.config.transcripts or self.config.audio, "CallHome transcript")
        audio = walk_files(audio_roots, [".sph"])[".sph"]
        transcripts = walk_files(tran_roots, [".txt"])[".txt"]

        def metadata(oid: str, audio_path: str, transcript_path: str) -> dict[str, Any]:
            split = callhome_split(audio_path) or callhome_split(transcript_path)
            return {"split": split} if split else {}

        return pair_discovery(
            self.name,
            index_by_id(audio, callhome_id),
            index_by_id(transcripts, callhome_id),
            self.config.lang,
            self.config.license,
            metadata,
        )
