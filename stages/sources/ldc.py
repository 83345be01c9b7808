"""What the LDC telephone recipes (Fisher, CallHome) share: finding and pairing files,
parsing `start end A: text` transcripts, and turning them into speakers and utterances.

A two-channel LDC call has one speaker per channel: label A is channel 0, label B channel 1
(CallHome's A1/B1 style labels name further speakers on the same channel).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Optional, Sequence

from catalog.schema import Recording, Reject, Speaker, Utterance
from stages.audio.decode import DecodedAudio
from stages.sources.base import Discovery, RecordingTask, SourceBase, Transcript
from stages.errors import RejectError
from stages.audio.sphere import decode_sphere
from stages.sources.ldc_text import normalize_ldc_text

TRANSCRIPT_STAGE = "transcript"
DISCOVER_STAGE = "discover"
_LABEL = re.compile(r"^([AB])(\d*)$")
# A line that looks timed (a number in the first or second field, or a "X:" label as the
# third) is an utterance line, good or malformed; anything else, in corpora with wrapped lines
# (CallHome), continues the utterance above it.
_NUMBER = re.compile(r"^[-+]?(\d[\d.]*|\.\d[\d.]*)$")
_LABEL_FIELD = re.compile(r"^[A-Za-z]\d*:$")


@dataclass(frozen=True)
class TranscriptLine:
    lineno: int  # 1-based line number of the timed line in the file
    start_s: float
    end_s: float
    label: str  # "A", "B", "A1", ...
    channel: int  # A -> 0, B -> 1
    text: str  # raw utterance text, markup included, continuation lines joined by one space


@dataclass(frozen=True)
class SideInfo:
    """What a source knows about the speaker behind one label (from its metadata tables)."""

    speaker_id: Optional[str] = None  # corpus-wide id (e.g. from an LDC PIN); None: per recording
    gender: Optional[str] = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


# --- transcript text -------------------------------------------------------------------------


def read_text_file(path: str) -> str:
    """Read a transcript, UTF-8 or else Latin-1 (1990s LDC text); unreadable -> RejectError."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise RejectError("transcript_unreadable", f"{path}: {e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.lstrip("\ufeff")


def _parse_time(token: str) -> Optional[float]:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _parse_timed_line(line: str) -> tuple[Optional[tuple[float, float, str, int, str]], str]:
    """(start, end, label, channel, text) of a timed line, or None and why it is malformed."""
    parts = line.strip().split(None, 2)
    if len(parts) < 3:
        return None, "missing_fields"
    start, end = _parse_time(parts[0]), _parse_time(parts[1])
    if start is None or end is None:
        return None, "bad_number"
    if end <= start:
        return None, "end_not_after_start"
    head, sep, text = parts[2].partition(":")
    if not sep or not head or any(c.isspace() for c in head):
        return None, "missing_colon"
    m = _LABEL.match(head.strip().upper())
    if m is None:
        return None, "unknown_speaker_label"
    return (start, end, m.group(0), ord(m.group(1)) - ord("A"), text.strip()), ""


def _looks_timed(line: str) -> bool:
    f = line.split(None, 3)
    return bool(
        _NUMBER.match(f[0])
        or (len(f) > 1 and _NUMBER.match(f[1]))
        or (len(f) > 2 and _LABEL_FIELD.match(f[2]))
    )


def parse_transcript(
    text: str, continuation: bool = False
) -> tuple[list[TranscriptLine], list[tuple[int, str, str]]]:
    """Parse `start end LABEL: text` lines; `#` comments and blank lines are skipped.

    Returns the good lines in file order and the malformed ones as (lineno, line, why). With
    `continuation`, a line that does not look timed is appended to the utterance above it.
    """
    good: list[list[Any]] = []
    malformed: list[tuple[int, str, str]] = []
    last_ok: Optional[bool] = None  # did the last timed line parse? (None: none seen yet)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if continuation and not _looks_timed(line):
            if last_ok:
                good[-1][5] = f"{good[-1][5]} {line}".strip()
            else:
                why = "continues_malformed_line" if last_ok is False else "continuation_without_utterance"
                malformed.append((lineno, raw, why))
            continue
        parsed, why = _parse_timed_line(line)
        if parsed is None:
            malformed.append((lineno, raw, why))
            last_ok = False
            continue
        good.append([lineno, *parsed])
        last_ok = True
    return [TranscriptLine(*g) for g in good], malformed


def malformed_rejects(
    source: str, recording_id: str, malformed: Sequence[tuple[int, str, str]]
) -> list[Reject]:
    return [
        Reject(
            source=source,
            stage=TRANSCRIPT_STAGE,
            item_id=f"{recording_id}:{lineno}",
            reason="transcript_malformed_line",
            detail=f"line {lineno} ({why}): {line.strip()!r}",
        )
        for lineno, line, why in malformed
    ]


# --- utterances and speakers -----------------------------------------------------------------


def to_utterances(
    task: RecordingTask,
    recording: Recording,
    lines: Sequence[TranscriptLine],
    normalize: Callable[[str], str],
    sides: Optional[Mapping[str, SideInfo]] = None,
) -> Transcript:
    """Utterances in time order with ids f"{recording_id}-{index:05d}", one Speaker per label.

    Checked against the audio: a label without its channel raises `missing_channel`; an
    utterance starting at or after the audio's end is rejected (`utterance_past_audio_end`),
    one ending after it is clipped; more than half past the end raises
    `transcript_audio_mismatch`; noise-only text is rejected (`utterance_empty_text`); nothing
    left raises `empty_conversation`.
    """
    rid = recording.recording_id
    if not lines:
        raise RejectError("empty_conversation", "the transcript has no utterance lines")
    missing = sorted({ln.label for ln in lines if ln.channel >= recording.num_channels})
    if missing:
        raise RejectError(
            "missing_channel",
            f"labels {missing} need channel(s) the audio lacks ({recording.num_channels} channel(s))",
        )
    duration = recording.duration_s
    past = {ln.lineno for ln in lines if ln.start_s >= duration}
    if 2 * len(past) > len(lines):
        raise RejectError(
            "transcript_audio_mismatch",
            f"{len(past)} of {len(lines)} utterances start past the audio's end ({duration:.2f}s)",
        )

    rejects: list[Reject] = []
    kept: list[tuple[TranscriptLine, str]] = []
    for ln in sorted(lines, key=lambda x: (x.start_s, x.end_s, x.channel, x.lineno)):
        item = f"{rid}:{ln.lineno}"
        if ln.lineno in past:
            rejects.append(_reject(task, item, "utterance_past_audio_end",
                                   f"starts at {ln.start_s:.2f}s, audio ends at {duration:.2f}s"))
            continue
        norm = normalize(ln.text)
        if not norm:
            rejects.append(_reject(task, item, "utterance_empty_text", f"no words in {ln.text!r}"))
            continue
        kept.append((ln, norm))
    if not kept:
        raise RejectError(
            "empty_conversation",
            f"no utterance with words ({len(lines)} lines, {len(past)} past the audio's end)",
        )

    speakers = _speakers(task, rid, sorted({ln.label for ln, _ in kept}), sides or {})
    by_label = {s.label: s for s in speakers}
    utterances = [
        Utterance(
            utterance_id=f"{rid}-{i:05d}",
            recording_id=rid,
            source=task.source,
            speaker_id=by_label[ln.label].speaker_id,
            channel=ln.channel,
            start_s=ln.start_s,
            end_s=min(ln.end_s, duration),
            text_raw=ln.text,
            text=norm,
            lang=task.lang,
            confidence=None,
            words=[],
        )
        for i, (ln, norm) in enumerate(kept)
    ]
    return Transcript(speakers=speakers, utterances=utterances, rejects=rejects)


def _speakers(
    task: RecordingTask, rid: str, labels: list[str], sides: Mapping[str, SideInfo]
) -> list[Speaker]:
    ids = {label: (sides[label].speaker_id if label in sides else None) or f"{rid}-{label}" for label in labels}
    # One corpus-wide id on two sides of a call is a metadata error, not one person talking
    # to themself: fall back to per-recording ids there.
    shared = {sid for sid in ids.values() if list(ids.values()).count(sid) > 1}
    ids = {label: (f"{rid}-{label}" if sid in shared else sid) for label, sid in ids.items()}
    out = []
    for label in labels:
        side = sides.get(label, SideInfo())
        out.append(
            Speaker(
                speaker_id=ids[label],
                recording_id=rid,
                source=task.source,
                label=label,
                channel=ord(label[0]) - ord("A"),
                role=label[0],
                gender=side.gender,
                lang=task.lang,
                metadata_json=json.dumps(dict(side.metadata), sort_keys=True, ensure_ascii=False),
            )
        )
    return out


def _reject(task: RecordingTask, item_id: str, reason: str, detail: str) -> Reject:
    return Reject(source=task.source, stage=TRANSCRIPT_STAGE, item_id=item_id, reason=reason, detail=detail)


# --- discovery -------------------------------------------------------------------------------


def require_dirs(roots: Sequence[str], what: str) -> list[str]:
    """The roots as absolute paths; a missing one is a usage error, raised at once."""
    out = []
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"{what} directory not found: {root}")
        out.append(os.path.abspath(root))
    return list(dict.fromkeys(out))


def walk_files(
    roots: Sequence[str], suffixes: Sequence[str], skip_dirs: Collection[str] = ()
) -> dict[str, list[str]]:
    """Files under the roots (symlinks followed, loops avoided) whose lower-cased name ends with
    one of the suffixes, sorted, per suffix."""
    found: dict[str, set[str]] = {s: set() for s in suffixes}
    seen_dirs: set[str] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(d for d in dirnames if d.lower() not in skip_dirs)
            for name in filenames:
                low = name.lower()
                for s in suffixes:
                    if low.endswith(s):
                        found[s].add(os.path.join(dirpath, name))
    return {s: sorted(paths) for s, paths in found.items()}


def index_by_id(paths: Sequence[str], id_of: Callable[[str], Optional[str]]) -> dict[str, list[str]]:
    """Group paths by the origin id their file name gives; names without one are ignored."""
    out: dict[str, list[str]] = {}
    for p in paths:
        oid = id_of(p)
        if oid is not None:
            out.setdefault(oid, []).append(p)
    return out


def pair_discovery(
    source: str,
    audio: Mapping[str, list[str]],
    transcripts: Mapping[str, list[str]],
    lang: str,
    license: str,
    metadata: Callable[[str, str, str], dict[str, Any]] = lambda oid, a, t: {},
) -> Discovery:
    """Pair audio and transcripts by origin id. Unpaired files and duplicates become rejects;
    `metadata(origin_id, audio_path, transcript_path)` fills each task's metadata."""
    tasks: list[RecordingTask] = []
    rejects: list[Reject] = []

    def reject(oid: str, reason: str, path: str) -> None:
        rejects.append(Reject(source=source, stage=DISCOVER_STAGE, item_id=oid, reason=reason, detail=path))

    for oid in sorted(set(audio) | set(transcripts)):
        a_paths, t_paths = audio.get(oid, []), transcripts.get(oid, [])
        for extra in a_paths[1:]:
            reject(oid, "duplicate_audio", f"{extra} (using {a_paths[0]})")
        for extra in t_paths[1:]:
            reject(oid, "duplicate_transcript", f"{extra} (using {t_paths[0]})")
        if not a_paths:
            reject(oid, "transcript_without_audio", t_paths[0])
        elif not t_paths:
            reject(oid, "audio_without_transcript", a_paths[0])
        else:
            tasks.append(
                RecordingTask(
                    source=source,
                    origin_id=oid,
                    audio_path=a_paths[0],
                    transcript_path=t_paths[0],
                    lang=lang,
                    license=license,
                    metadata=metadata(oid, a_paths[0], t_paths[0]),
                )
            )
    return Discovery(tasks=tasks, rejects=rejects)


# --- the shared source behaviour -------------------------------------------------------------


class LdcSource(SourceBase):
    """read_audio / read_transcript of a two-channel LDC telephone corpus; subclasses discover."""

    name = "ldc"
    wrapped_lines = False  # transcripts continue an utterance on untimed lines (CallHome)

    def read_audio(self, task: RecordingTask) -> DecodedAudio:
        """Both channels as decoded; a missing one is judged against the transcript's labels."""
        return decode_sphere(task.audio_path)

    def sides(self, task: RecordingTask) -> dict[str, SideInfo]:
        """Per-label speaker facts from the task's metadata; none by default."""
        return {}

    def read_transcript(self, task: RecordingTask, recording: Recording) -> Transcript:
        if task.transcript_path is None:
            raise RejectError("audio_without_transcript", task.audio_path)
        text = read_text_file(task.transcript_path)
        lines, malformed = parse_transcript(text, continuation=self.wrapped_lines)
        transcript = to_utterances(task, recording, lines, normalize_ldc_text, self.sides(task))
        transcript.rejects[:0] = malformed_rejects(task.source, recording.recording_id, malformed)
        return transcript
