"""Fisher English (LDC2004S13/LDC2005S13 audio, LDC2004T19/LDC2005T19 transcripts).

Layout (found recursively, so copies with other parents work too):
    fe_03_p1_sph1/audio/000/fe_03_00001.sph      two channels, 8 kHz mu-law; A = channel 0
    fe_03_p1_tran/data/trans/000/fe_03_00001.txt `start end A: text` lines
    fe_03_p1_tran/doc/fe_03_p1_calldata.tbl      call metadata (CSV with a header row)
The `bbn_orig` folder of the transcript release holds BBN's original files and is skipped.
"""
from __future__ import annotations

import csv
import io
import os
import re
from typing import Any, Optional

from pydantic import Field

from stages.config import StageConfig
from stages.sources.base import Discovery, RecordingTask
from stages.sources.ldc import LdcSource, SideInfo, index_by_id, pair_discovery, require_dirs, walk_files

_FISHER_ID = re.compile(r"^(fe_\d{2}_\d{5})$", re.I)
_PHONE_SET = {"1": "speaker-phone", "2": "headset", "3": "ear-bud", "4": "hand-held"}
_PHONE_TYPE = {"1": "cell", "2": "cordless", "3": "land-line"}
_SEX = {"m": "male", "f": "female"}
_DIALECT = {"a": "american", "o": "other"}
# calldata.tbl columns as documented in doc_calldata_tbl.txt, by position when names differ.
_CALLDATA_COLUMNS = [
    "CALL_ID", "DATE_TIME", "TOPICID", "SIG_GRADE", "CNV_GRADE",
    "APIN", "ASX.DL", "APHNUM", "APHSET", "APHTYP",
    "BPIN", "BSX.DL", "BPHNUM", "BPHSET", "BPHTYP",
]


class FisherConfig(StageConfig):
    audio: list[str] = Field(min_length=1, description="folders holding the .sph audio releases")
    transcripts: list[str] = Field(
        default_factory=list, description="folders holding the transcript releases (default: the audio folders)"
    )
    lang: str = "en"
    license: str = "LDC User Agreement (LDC2004S13/LDC2004T19, LDC2005S13/LDC2005T19)"


def fisher_id(path: str) -> Optional[str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _FISHER_ID.match(stem)
    return m.group(1).lower() if m else None


def _call_id(value: str) -> Optional[str]:
    """Origin id of a CALL_ID cell: LDC writes the number ("00001"); a full id is accepted too."""
    value = value.strip()
    if value.isdigit():
        return f"fe_03_{value.zfill(5)}"
    m = _FISHER_ID.match(value)
    return m.group(1).lower() if m else None


def _float_or_none(value: str) -> Optional[float]:
    try:
        return float(value)
    except ValueError:
        return None


def _side(row: dict[str, str], side: str) -> dict[str, Any]:
    pin = row.get(f"{side}PIN", "").strip()
    sex, _, dialect = row.get(f"{side}SX.DL", "").strip().lower().partition(".")
    info: dict[str, Any] = {
        "pin": pin if pin.isdigit() and int(pin) > 0 else None,
        "gender": _SEX.get(sex),
        "dialect": _DIALECT.get(dialect),
        "phone_set": _PHONE_SET.get(row.get(f"{side}PHSET", "").strip()),
        "phone_type": _PHONE_TYPE.get(row.get(f"{side}PHTYP", "").strip()),
    }
    return {k: v for k, v in info.items() if v is not None}


def parse_calldata(text: str) -> dict[str, dict[str, Any]]:
    """Call metadata by origin id (fe_03_NNNNN) from a calldata.tbl; bad rows are skipped.

    Encrypted phone numbers (APHNUM/BPHNUM) are deliberately not carried over."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return {}
    names = [h.strip().upper() for h in rows[0]]
    if any(n.replace("_", "") == "CALLID" for n in names):
        names = ["CALL_ID" if n.replace("_", "") == "CALLID" else n for n in names]
        body = rows[1:]
    else:  # no header row: the documented column order
        names, body = _CALLDATA_COLUMNS, rows
    out: dict[str, dict[str, Any]] = {}
    for values in body:
        row = {n: v for n, v in zip(names, values)}
        call = _call_id(row.get("CALL_ID", ""))
        if call is None:
            continue
        meta: dict[str, Any] = {
            "topic_id": row.get("TOPICID", "").strip() or None,
            "date_time": row.get("DATE_TIME", "").strip() or None,
            "signal_grade": _float_or_none(row.get("SIG_GRADE", "").strip()),
            "conversation_grade": _float_or_none(row.get("CNV_GRADE", "").strip()),
        }
        meta = {k: v for k, v in meta.items() if v is not None}
        meta["sides"] = {"A": _side(row, "A"), "B": _side(row, "B")}
        out[call] = meta
    return out


class FisherSource(LdcSource):
    name = "fisher"

    def __init__(self, config: FisherConfig):
        self.config = config

    def discover(self) -> Discovery:
        audio_roots = require_dirs(self.config.audio, "Fisher audio")
        tran_roots = require_dirs(self.config.transcripts or self.config.audio, "Fisher transcript")
        audio = walk_files(audio_roots, [".sph"])[".sph"]
        found = walk_files(tran_roots, [".txt", "calldata.tbl"], skip_dirs={"bbn_orig"})
        calls: dict[str, dict[str, Any]] = {}
        for table in found["calldata.tbl"]:
            with open(table, encoding="utf-8", errors="replace") as f:
                calls.update(parse_calldata(f.read()))

        def metadata(oid: str, audio_path: str, transcript_path: str) -> dict[str, Any]:
            return dict(calls.get(oid, {}))

        return pair_discovery(
            self.name,
            index_by_id(audio, fisher_id),
            index_by_id(found[".txt"], fisher_id),
            self.config.lang,
            self.config.license,
            metadata,
        )

    def sides(self, task: RecordingTask) -> dict[str, SideInfo]:
        """Speaker A/B from the calldata table: the PIN names the person across calls."""
        out = {}
        for label, info in (task.metadata.get("sides") or {}).items():
            pin = info.get("pin")
            out[label] = SideInfo(
                speaker_id=f"{self.name}-spk-{pin}" if pin else None,
                gender=info.get("gender"),
                metadata={k: v for k, v in info.items() if k != "gender"},
            )
        return out
