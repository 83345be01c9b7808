"""Every record type of the corpus and its Arrow schema, defined once.

Records are plain dataclasses; the Arrow schema of each catalog table is derived from the
dataclass fields, so a column exists in exactly one place. Stages build these records, the
catalog writes them as Parquet, shards embed them as JSON.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import pyarrow as pa

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: Optional[float] = None
    overlap: bool = False  # spoken while another speaker was talking


@dataclass
class Speaker:
    """A participant of one recording (LDC call side, podcast host, synthetic voice)."""

    table: ClassVar[str] = "speakers"
    speaker_id: str  # unique in the corpus: f"{recording_id}-{label}" unless a source knows better
    recording_id: str
    source: str
    label: str  # as the source names it: "A", "B", "SPEAKER_00", "host"
    channel: Optional[int] = None  # dedicated channel of this speaker, None when mixed
    role: Optional[str] = None  # role hint used by the role policy ("host", "guest", "caller")
    gender: Optional[str] = None
    lang: Optional[str] = None
    metadata_json: str = "{}"


@dataclass
class Recording:
    """One conversation's audio and where it came from."""

    table: ClassVar[str] = "recordings"
    recording_id: str  # f"{source}-{origin_id}"
    source: str
    origin_id: str  # the source's own id (fe_03_00001, en_4065, an episode GUID)
    origin: str  # where the original audio was read from
    license: str
    lang: str
    native_sample_rate: int
    num_channels: int
    duration_s: float
    encoding: str  # as decoded: "pcm_s16le", "ulaw", "shorten", "flac", ...
    audio_sha256: str  # of the original file's bytes
    audio_path: str  # standardized FLAC, relative to the corpus root
    sample_rate: int  # of the standardized audio
    bandwidth: str  # "narrowband" (telephone) or "wideband"
    effective_bandwidth_hz: float
    metadata_json: str = "{}"


@dataclass
class Utterance:
    table: ClassVar[str] = "utterances"
    utterance_id: str
    recording_id: str
    source: str
    speaker_id: str
    channel: Optional[int]
    start_s: float
    end_s: float
    text_raw: str  # as transcribed, markup included
    text: str  # normalized
    lang: str
    confidence: Optional[float] = None
    words: list[Word] = field(default_factory=list)


@dataclass
class Turn:
    """A speaker's stretch of speech: consecutive utterances merged across short pauses."""

    table: ClassVar[str] = "turns"
    turn_id: str
    recording_id: str
    source: str
    lang: str
    index: int  # order in the conversation, by start time
    speaker_id: str
    channel: Optional[int]
    start_s: float
    end_s: float
    duration_s: float
    text: str
    utterance_ids: list[str]
    is_backchannel: bool
    # Only for turns that take the floor from another speaker:
    is_floor_transfer: bool
    gap_s: Optional[float]  # start minus the previous floor holder's end; negative = overlap
    is_interruption: bool
    # Spoken inside another speaker's speech and over before it (whatever the words): never takes
    # the floor. Interjections are also is_backchannel (every turn that does not take the floor is).
    is_interjection: bool = False


@dataclass
class Pair:
    """One training sample: a user turn, the AI turn answering it, and the turns before."""

    table: ClassVar[str] = "pairs"
    pair_id: str
    recording_id: str
    source: str
    lang: str
    license: str
    bandwidth: str
    user_turn_id: str
    ai_turn_id: str
    user_speaker_id: str
    ai_speaker_id: str
    user_channel: Optional[int]
    ai_channel: Optional[int]
    user_start_s: float
    user_end_s: float
    ai_start_s: float
    ai_end_s: float
    user_duration_s: float
    ai_duration_s: float
    gap_s: float
    is_interruption: bool
    user_text: str
    ai_text: str
    context_turn_ids: list[str]
    context_speaker_ids: list[str]
    context_texts: list[str]
    context_start_s: Optional[float]  # start of the first context turn, None without context
    shard: Optional[str] = None  # path of the pairs shard holding it, relative to the corpus root
    # Seconds of the two turns in which two or more speakers speak at once.
    overlap_s: float = 0.0
    # A side has no channel of its own: its clip is cut from a mix, others' speech masked out.
    mixed_source: bool = False
    # Where user.flac and ai.flac begin and end: the turns with margins (SegmentConfig.clip_pad_s);
    # on a mixed source the margins stop at others' speech and the user clip at the AI's start.
    # None (records from before margins): the turn's own bounds.
    user_clip_start_s: Optional[float] = None
    user_clip_end_s: Optional[float] = None
    ai_clip_start_s: Optional[float] = None
    ai_clip_end_s: Optional[float] = None


@dataclass
class DialogueWindow:
    """A fixed-length two-channel excerpt (user channel 0, AI channel 1) for full-duplex training."""

    table: ClassVar[str] = "windows"
    window_id: str
    recording_id: str
    source: str
    lang: str
    license: str
    bandwidth: str
    user_speaker_id: str
    ai_speaker_id: str
    start_s: float
    end_s: float
    user_speech_s: float
    ai_speech_s: float
    shard: Optional[str] = None
    overlap_s: float = 0.0  # seconds in which two or more speakers speak at once
    # A side has no channel of its own: each channel is the mix masked to its side's speech, so
    # overlapped speech is silent on both channels (never the same audio on both).
    mixed_source: bool = False


@dataclass
class CodecChunk:
    """A mono chunk of one speaker's speech for codec training."""

    table: ClassVar[str] = "codec_chunks"
    chunk_id: str
    recording_id: str
    source: str
    lang: str
    bandwidth: str
    speaker_id: str
    start_s: float
    end_s: float
    shard: Optional[str] = None


@dataclass
class Shard:
    table: ClassVar[str] = "shards"
    path: str  # relative to the corpus root
    kind: str  # "pairs", "dialogues", "codec"
    version: str  # corpus version that wrote it
    num_samples: int
    num_bytes: int
    sha256: str


@dataclass
class Reject:
    table: ClassVar[str] = "rejects"
    source: str
    stage: str
    item_id: str  # recording id, origin path or pair id
    reason: str  # stable reason code, e.g. "sphere_truncated"
    detail: str


@dataclass
class Build:
    table: ClassVar[str] = "builds"
    build_id: str
    version: str
    parent_version: Optional[str]
    status: str  # "committed" or "unchanged"
    started_at: str
    finished_at: str
    sources: list[str]
    manifest_json: str  # the validated config, secrets removed
    config_hash: str
    code_version: str
    counts_json: str


@dataclass
class PhaseRun:
    """One phase of one recording in one build: where a build spent its time."""

    table: ClassVar[str] = "phase_runs"
    build_id: str
    recording_id: str
    source: str
    phase: str  # "render", "ingest", "segment", ...
    seconds: float
    cached: bool  # the phase's result was already there (no work done)
    status: str  # "ok", "rejected" or "failed" (an environment failure, retried by the next build)
    worker: str  # "host:pid" of the process that ran it


CATALOG_RECORDS: tuple[type, ...] = (
    Recording,
    Speaker,
    Utterance,
    Turn,
    Pair,
    DialogueWindow,
    CodecChunk,
    Shard,
    Reject,
    Build,
    PhaseRun,
)
TABLES: dict[str, type] = {cls.table: cls for cls in CATALOG_RECORDS}


class Conversation:
    """The one currency between sources and everything downstream: a recording with its
    speakers and utterances. Not a table itself; its parts are."""

    def __init__(self, recording: Recording, speakers: list[Speaker], utterances: list[Utterance]):
        self.recording = recording
        self.speakers = speakers
        self.utterances = sorted(utterances, key=lambda u: (u.start_s, u.end_s, u.speaker_id))

    def speaker(self, speaker_id: str) -> Speaker:
        for s in self.speakers:
            if s.speaker_id == speaker_id:
                return s
        raise KeyError(speaker_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "recording": to_dict(self.recording),
            "speakers": [to_dict(s) for s in self.speakers],
            "utterances": [to_dict(u) for u in self.utterances],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Conversation":
        return cls(
            from_dict(Recording, d["recording"]),
            [from_dict(Speaker, s) for s in d["speakers"]],
            [from_dict(Utterance, u) for u in d["utterances"]],
        )


# --- dataclass <-> dict / Arrow -------------------------------------------------------------


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def to_json(record: Any) -> str:
    return json.dumps(to_dict(record), ensure_ascii=False, sort_keys=True)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        if f.name == "words" and value is not None:
            value = [w if isinstance(w, Word) else Word(**w) for w in value]
        elif _is_list(hints[f.name]) and value is not None:
            value = list(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list


def _arrow_type(tp: Any) -> tuple[pa.DataType, bool]:
    """Arrow type of a field annotation, and whether it is nullable."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner, _ = _arrow_type(args[0])
        return inner, True
    if origin is list:
        (item,) = typing.get_args(tp)
        inner, _ = _arrow_type(item)
        return pa.list_(inner), False
    if dataclasses.is_dataclass(tp):
        return arrow_struct(tp), False
    simple = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    return simple[tp], False


def arrow_struct(cls: type) -> pa.StructType:
    return pa.struct(list(arrow_schema(cls)))


def arrow_schema(cls: type) -> pa.Schema:
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        dtype, nullable = _arrow_type(hints[f.name])
        fields.append(pa.field(f.name, dtype, nullable=nullable))
    return pa.schema(fields)


def to_arrow(cls: type, records: list[Any]) -> pa.Table:
    schema = arrow_schema(cls)
    rows = [to_dict(r) for r in records]
    return pa.Table.from_pylist(rows, schema=schema)


def from_arrow(cls: type, table: pa.Table) -> list[Any]:
    return [from_dict(cls, row) for row in table.to_pylist()]
