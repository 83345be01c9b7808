"""Labelled one-microphone test conversations: espeak-ng voices mixed into one mono track, with
the references that score a build of them (RTTM, STM and a JSON timeline) and an RSS feed that
lists them as podcast episodes.

A conversation is written as `out_dir/audio/<uri>.wav` and `out_dir/refs/<uri>.{rttm,stm,json}`;
the uri is the audio's file stem and, in the feed, the episode GUID: `pipelines.evaluate` pairs a
built recording with its reference by either. References are exact: the STM has one segment per
script line, from the first to the last sample of its trimmed clip; the RTTM splits each line at
the pauses inside it (sentence breaks: 10 ms frames more than 40 dB below the clip's loudest
for at least 0.25 s). Speech comes from stages/sources/demo.py's `synthesize` (8 kHz clips,
resampled here to the conversation's rate, so the speech band ends at 4 kHz). Timelines are
deterministic given the spec and seed; the seed drives the noise floor and the optional gap
jitter.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import re
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional, Sequence

import numpy as np
import soundfile as sf

from stages.sources.demo import SPEAKERS, Voice, _atomic_write, synthesize

GENERATOR_VERSION = 1
AUDIO_DIR = "audio"
REFS_DIR = "refs"
FEED_NAME = "feed.xml"
MIN_SELF_PAUSE_S = 0.1  # a speaker's next line starts at least this long after their last ends
SPLIT_PAUSE_S = 0.25  # pauses inside a line at least this long split its RTTM segments
SILENCE_DB = -40.0

_VOICES = {v.name: v for v in SPEAKERS}
_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class SpeakerSpec:
    label: str  # reference speaker name in RTTM/STM, e.g. "host"
    voice: Voice


@dataclass(frozen=True)
class LineSpec:
    """One reference segment. `gap_s`: for a floor line, its start minus the end of the previous
    floor line (negative = overlap; ignored on the first line); for a backchannel, its offset
    into the floor line it is spoken over (which it must end before)."""

    speaker: str
    text: str  # the reference transcript
    gap_s: float = 0.6
    backchannel: bool = False
    spoken: Optional[str] = None  # what espeak-ng is given, when it differs from `text`


@dataclass(frozen=True)
class ConversationSpec:
    uri: str
    speakers: tuple[SpeakerSpec, ...]
    lines: tuple[LineSpec, ...]
    title: str = ""
    lang: str = "en"
    sample_rate: int = 16000
    lead_in_s: float = 0.6
    tail_s: float = 0.8
    jitter_s: float = 0.0  # uniform jitter of floor gaps; never flips a gap's sign
    noise_dbfs: float = -66.0  # RMS of the noise floor


@dataclass(frozen=True)
class RefSegment:
    speaker: str
    start_s: float
    end_s: float
    text: str
    backchannel: bool = False
    speech: tuple[tuple[float, float], ...] = ()  # the line's speech regions (RTTM segments)


@dataclass(frozen=True)
class LabelledConversation:
    uri: str
    title: str
    lang: str
    sample_rate: int
    duration_s: float
    audio_path: str
    rttm_path: str
    stm_path: str
    timeline_path: str
    speakers: tuple[str, ...]
    segments: tuple[RefSegment, ...]

    @property
    def floor_segments(self) -> list[RefSegment]:
        return [s for s in self.segments if not s.backchannel]


def voice(name: str) -> Voice:
    """One of demo.py's voices by name (karen, andy, linda, mike, susan, dave, maria, tom)."""
    return _VOICES[name]


def validate_spec(spec: ConversationSpec) -> None:
    """ValueError for a spec that cannot make a well-formed reference."""
    if not _LABEL.fullmatch(spec.uri):
        raise ValueError(f"uri {spec.uri!r}: letters, digits, '_', '.', '-' only (it is a file stem)")
    if not 1 <= len(spec.speakers) <= 4:
        raise ValueError("a conversation has 1-4 speakers")
    labels = [s.label for s in spec.speakers]
    if len(set(labels)) != len(labels) or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"speaker labels must be unique tokens: {labels}")
    for i, a in enumerate(spec.speakers):
        for b in spec.speakers[i + 1:]:
            if a.voice.variant == b.voice.variant or a.voice.pitch == b.voice.pitch:
                raise ValueError(f"{a.label} and {b.label} need different espeak variants and pitches")
    if spec.lang not in ESPEAK_LANGS:
        raise ValueError(f"lang {spec.lang!r}: espeak-ng voices here are {sorted(ESPEAK_LANGS)}")
    if spec.sample_rate not in (16000, 24000):
        raise ValueError("sample_rate must be 16000 or 24000")
    if not spec.lines or spec.lines[0].backchannel:
        raise ValueError("the first line must be a floor line")
    for line in spec.lines:
        if line.speaker not in labels:
            raise ValueError(f"line by unknown speaker {line.speaker!r}")
        if not normalize_spaces(line.text):
            raise ValueError("a line needs text")
        if line.backchannel and line.gap_s < 0:
            raise ValueError("a backchannel's gap_s is its offset into the floor line (>= 0)")


def normalize_spaces(text: str) -> str:
    return " ".join(text.split())


def _fingerprint(spec: ConversationSpec, seed: int) -> str:
    return hashlib.sha256(repr((GENERATOR_VERSION, spec, seed)).encode()).hexdigest()[:16]


ESPEAK_LANGS = {"en": "en-us", "hi": "hi", "te": "te"}


def _synthesize_clips(spec: ConversationSpec, workers: int) -> dict[tuple[str, str], np.ndarray]:
    """(speaker label, spoken text) → clip at the conversation's rate, peaking at the voice's gain."""
    voices = {s.label: s.voice for s in spec.speakers}
    keys = sorted({(line.speaker, line.spoken or line.text) for line in spec.lines})

    def one(key: tuple[str, str]) -> np.ndarray:
        return synthesize(key[1], voices[key[0]], workdir, sample_rate=spec.sample_rate, lang=ESPEAK_LANGS[spec.lang])

    with tempfile.TemporaryDirectory(prefix="synth-tts-") as workdir, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(keys, pool.map(one, keys)))


def speech_regions(clip: np.ndarray, sr: int, min_pause_s: float = SPLIT_PAUSE_S,
                   threshold_db: float = SILENCE_DB) -> list[tuple[int, int]]:
    """(first, end) sample ranges of a trimmed clip between its pauses of at least `min_pause_s`."""
    frame = max(1, sr // 100)
    n = len(clip) // frame
    if n == 0:
        return [(0, len(clip))]
    rms = np.sqrt(np.mean(clip[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    quiet = rms < rms.max() * 10 ** (threshold_db / 20)
    min_frames = int(round(min_pause_s * 100))
    regions, start, i = [], 0, 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if j - i >= min_frames and i > 0 and j < n:
            regions.append((start, i * frame))
            start = j * frame
        i = j
    regions.append((start, len(clip)))
    return regions


def layout(spec: ConversationSpec, clips: dict[tuple[str, str], np.ndarray], seed: int) -> list[tuple[RefSegment, int]]:
    """Place every line: (reference segment, first sample) in script order. Starts lie on a
    10 ms grid; ends are exact sample times."""
    sr = spec.sample_rate
    rng = random.Random(f"synth-conversation:{seed}:{spec.uri}")
    placed: list[tuple[RefSegment, int]] = []
    floor: Optional[RefSegment] = None
    busy: dict[str, float] = {}
    for n, line in enumerate(spec.lines):
        clip = clips[(line.speaker, line.spoken or line.text)]
        if line.backchannel:
            assert floor is not None
            if line.speaker == floor.speaker:
                raise ValueError(f"line {n}: a backchannel over the speaker's own line")
            start = floor.start_s + line.gap_s
        elif floor is None:
            start = spec.lead_in_s
        else:
            gap = line.gap_s
            if spec.jitter_s > 0:
                jittered = gap + rng.uniform(-spec.jitter_s, spec.jitter_s)
                gap = jittered if (jittered < 0) == (gap < 0) else gap
            start = floor.end_s + gap
        start = round(start, 2)
        if start < busy.get(line.speaker, -1.0) + MIN_SELF_PAUSE_S:
            raise ValueError(f"line {n}: {line.speaker} would talk over themselves")
        first = int(round(start * sr))
        speech = tuple((round((first + a) / sr, 3), round((first + b) / sr, 3)) for a, b in speech_regions(clip, sr))
        seg = RefSegment(line.speaker, first / sr, round((first + len(clip)) / sr, 3),
                         normalize_spaces(line.text), line.backchannel, speech)
        if line.backchannel and seg.end_s > floor.end_s - 0.1:
            raise ValueError(f"line {n}: the backchannel outlasts the line it is spoken over")
        placed.append((seg, first))
        busy[line.speaker] = seg.end_s
        if not line.backchannel:
            floor = seg
    return placed


def render(spec: ConversationSpec, placed: list[tuple[RefSegment, int]], keys: list[tuple[str, str]],
           clips: dict[tuple[str, str], np.ndarray], seed: int) -> np.ndarray:
    """Mono float mix: every clip added at its place over a faint Gaussian noise floor."""
    sr = spec.sample_rate
    end = max(seg.end_s for seg, _ in placed) + spec.tail_s
    n = int(round(end * sr))
    noise_seed = int.from_bytes(hashlib.sha256(f"synth-noise:{seed}:{spec.uri}".encode()).digest()[:8], "little")
    x = np.random.default_rng(noise_seed).normal(0.0, 10 ** (spec.noise_dbfs / 20), n)
    for (seg, first), key in zip(placed, keys):
        clip = clips[key]
        x[first: first + len(clip)] += clip
    peak = float(np.max(np.abs(x)))
    return x * (0.95 / peak) if peak > 0.95 else x  # overlaps can add up past full scale


def rttm_text(uri: str, segments: Sequence[RefSegment]) -> str:
    regions = sorted((a, b, s.speaker) for s in segments for a, b in (s.speech or ((s.start_s, s.end_s),)))
    return "".join(f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {spk} <NA> <NA>\n" for a, b, spk in regions)


def stm_text(uri: str, segments: Sequence[RefSegment]) -> str:
    return "".join(f"{uri} 1 {s.speaker} {s.start_s:.3f} {s.end_s:.3f} {s.text}\n"
                   for s in sorted(segments, key=lambda s: (s.start_s, s.speaker)))


def _paths(out_dir: str, uri: str) -> dict[str, str]:
    refs = os.path.join(out_dir, REFS_DIR)
    return {"audio": os.path.join(out_dir, AUDIO_DIR, f"{uri}.wav"), "rttm": os.path.join(refs, f"{uri}.rttm"),
            "stm": os.path.join(refs, f"{uri}.stm"), "timeline": os.path.join(refs, f"{uri}.json")}


def load_conversation(timeline_path: str) -> LabelledConversation:
    """A conversation back from its JSON timeline (its files are beside it, as written)."""
    with open(timeline_path, encoding="utf-8") as f:
        t = json.load(f)
    out_dir = os.path.dirname(os.path.dirname(os.path.abspath(timeline_path)))
    p = _paths(out_dir, t["uri"])
    return LabelledConversation(
        uri=t["uri"], title=t["title"], lang=t["lang"], sample_rate=t["sample_rate"], duration_s=t["duration_s"],
        audio_path=p["audio"], rttm_path=p["rttm"], stm_path=p["stm"], timeline_path=p["timeline"],
        speakers=tuple(s["label"] for s in t["speakers"]),
        segments=tuple(RefSegment(**{**s, "speech": tuple(tuple(r) for r in s.get("speech", ()))})
                       for s in t["segments"]),
    )


def make_conversation(out_dir: str, spec: ConversationSpec, seed: int, *, workers: int = 2) -> LabelledConversation:
    """Write one conversation's WAV (mono, 16-bit, spec.sample_rate) and its RTTM, STM and JSON
    timeline. Idempotent: files already written for the same spec and seed are reused."""
    validate_spec(spec)
    out_dir = os.path.abspath(out_dir)
    p = _paths(out_dir, spec.uri)
    fingerprint = _fingerprint(spec, seed)
    if all(os.path.exists(x) for x in p.values()):
        with open(p["timeline"], encoding="utf-8") as f:
            if json.load(f).get("fingerprint") == fingerprint:
                return load_conversation(p["timeline"])

    clips = _synthesize_clips(spec, workers)
    keys = [(line.speaker, line.spoken or line.text) for line in spec.lines]
    placed = layout(spec, clips, seed)
    audio = render(spec, placed, keys, clips, seed)
    sr = spec.sample_rate
    segments = [seg for seg, _ in placed]

    os.makedirs(os.path.dirname(p["audio"]), exist_ok=True)
    tmp = f"{p['audio']}.tmp-{os.getpid()}.wav"
    sf.write(tmp, audio, sr, subtype="PCM_16")
    os.replace(tmp, p["audio"])
    _atomic_write(p["rttm"], rttm_text(spec.uri, segments).encode())
    _atomic_write(p["stm"], stm_text(spec.uri, segments).encode())
    timeline = {
        "generator": "stages.sources.synth_conversations", "version": GENERATOR_VERSION,
        "fingerprint": fingerprint, "seed": seed, "uri": spec.uri, "title": spec.title or spec.uri,
        "lang": spec.lang, "sample_rate": sr, "duration_s": round(len(audio) / sr, 3),
        "speakers": [{"label": s.label, "voice": asdict(s.voice)} for s in spec.speakers],
        "segments": [asdict(s) for s in segments],
    }
    # The timeline goes last: its fingerprint marks the conversation complete.
    _atomic_write(p["timeline"], json.dumps(timeline, indent=1, ensure_ascii=False).encode())
    return load_conversation(p["timeline"])


# --- the standard test set -------------------------------------------------------------------


def _spk(label: str, name: str) -> SpeakerSpec:
    return SpeakerSpec(label, voice(name))


def L(speaker: str, text: str, gap_s: float = 0.6, *, spoken: Optional[str] = None) -> LineSpec:  # noqa: N802
    return LineSpec(speaker, text, gap_s, False, spoken)


def B(speaker: str, text: str, offset_s: float, *, spoken: Optional[str] = None) -> LineSpec:  # noqa: N802
    return LineSpec(speaker, text, offset_s, True, spoken)


STANDARD_SPECS: tuple[ConversationSpec, ...] = (
    ConversationSpec(
        uri="synth_two_clean",
        title="Two speakers, clean turns: wooden boats",
        speakers=(_spk("host", "karen"), _spk("guest", "mike")),
        lines=(
            L("host", "Welcome back to the show. Today my guest builds wooden boats by hand."),
            L("guest", "Thanks for having me. It is a slow craft, but I love every part of it.", 0.7),
            L("host", "How long does one boat take you?", 0.8),
            L("guest", "A small rowing boat takes about three months of weekends.", 0.6),
            L("host", "That sounds like a lot of patience.", 0.9),
            L("guest", "It is mostly patience, and a very sharp plane.", 0.5),
            L("host", "Which wood do you like the most?", 1.0),
            L("guest", "Cedar for the planks and oak for the frames.", 0.6),
            L("host", "Thank you, this was lovely.", 0.8),
        ),
    ),
    ConversationSpec(
        uri="synth_two_overlap",
        title="Two speakers with overlap and backchannels: leaving the city",
        speakers=(_spk("host", "maria"), _spk("guest", "andy")),
        lines=(
            L("host", "So you moved to the mountains last year. What made you leave the city?"),
            L("guest", "Honestly, the noise. I could not sleep, and the rent kept going up every single month.", 0.6),
            B("host", "mm-hmm", 2.2, spoken="hmm hmm"),
            L("host", "And do you miss anything about it?", 0.5),
            L("guest", "I miss the food. The little noodle places near my old office were the best in town.", 0.7),
            L("host", "Oh, I know exactly the ones you mean!", -0.8),
            L("guest", "Right, and nothing up here comes close, believe me.", 0.5),
            B("host", "yeah", 0.8),
            L("host", "Well, maybe you should open one yourself.", -0.3),
            L("guest", "Maybe I will.", 0.7),
        ),
    ),
    ConversationSpec(
        uri="synth_panel_three",
        title="Three-speaker panel: city gardens",
        speakers=(_spk("host", "susan"), _spk("guest1", "andy"), _spk("guest2", "linda")),
        lines=(
            L("host", "Welcome to the panel. Today we are talking about gardens in the city."),
            L("guest1", "Thanks. I run a small garden on the roof of a parking garage.", 0.6),
            L("guest2", "And I teach children to grow vegetables at their school.", 0.8),
            L("host", "What grows best on a roof?", 0.7),
            L("guest1", "Tomatoes and beans, as long as the wind does not knock them over.", 0.5),
            B("guest2", "right", 1.2),
            L("guest2", "The children love beans too, because they grow so fast.", -0.4),
            L("host", "Do the children eat what they grow?", 0.6),
            L("guest2", "Every last leaf. Even the ones who say they hate salad.", 0.5),
            L("guest1", "That is the best part of it.", 0.9),
        ),
    ),
    ConversationSpec(
        uri="synth_one_speaker",
        title="One speaker: a short talk about tea",
        speakers=(_spk("narrator", "tom"),),
        lines=(
            L("narrator", "Good morning. This short talk is about tea."),
            L("narrator", "Green tea and black tea come from the same plant.", 0.9),
            L("narrator", "The difference is what happens to the leaves after they are picked.", 0.7),
            L("narrator", "Black tea leaves are left in the air until they turn dark.", 1.1),
            L("narrator", "Green tea leaves are heated right away, so they stay green.", 0.8),
            L("narrator", "Thank you for listening.", 1.0),
        ),
    ),
)


def standard_test_set(out_dir: str, *, seed: int = 0, workers: int = 2) -> list[LabelledConversation]:
    """Four small conversations (about 20-40 s each): two speakers with clean turns, two with
    overlaps and backchannels, a three-speaker panel, one speaker alone."""
    return [make_conversation(out_dir, spec, seed, workers=workers) for spec in STANDARD_SPECS]


# --- a podcast feed of them ------------------------------------------------------------------


def write_feed(out_dir: str, conversations: Sequence[LabelledConversation], base_url: str,
               *, title: str = "convcorpus synthetic conversations") -> str:
    """An RSS 2.0 feed at `out_dir/feed.xml` listing the conversations as episodes: enclosure
    URLs under `base_url` (mirroring their paths under out_dir), the uri as GUID, one
    publication day per episode from 2026-01-01 on. Returns the feed's path."""
    out_dir = os.path.abspath(out_dir)
    base = base_url.rstrip("/")
    ET.register_namespace("itunes", "http://www.itunes.com/dtds/podcast-1.0.dtd")
    itunes = "{http://www.itunes.com/dtds/podcast-1.0.dtd}"
    rss = ET.Element("rss", {"version": "2.0"})
    ch = ET.SubElement(rss, "channel")
    ET.SubElement(ch, "title").text = title
    ET.SubElement(ch, "link").text = base + "/"
    ET.SubElement(ch, "description").text = "Synthetic multi-speaker conversations (espeak-ng voices) with reference labels."
    ET.SubElement(ch, "language").text = conversations[0].lang if conversations else "en"
    day0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)
    for i, conv in enumerate(conversations):
        rel = os.path.relpath(conv.audio_path, out_dir)
        if rel.startswith(".."):
            raise ValueError(f"{conv.audio_path} is not under {out_dir}")
        item = ET.SubElement(ch, "item")
        ET.SubElement(item, "title").text = conv.title
        ET.SubElement(item, "description").text = f"{len(conv.speakers)} speaker(s): {', '.join(conv.speakers)}"
        ET.SubElement(item, "guid", {"isPermaLink": "false"}).text = conv.uri
        ET.SubElement(item, "pubDate").text = email.utils.format_datetime(day0 + timedelta(days=i))
        url = base + "/" + urllib.parse.quote(rel.replace(os.sep, "/"))
        ET.SubElement(item, "enclosure", {"url": url, "length": str(os.path.getsize(conv.audio_path)),
                                          "type": "audio/wav"})
        ET.SubElement(item, f"{itunes}duration").text = str(int(round(conv.duration_s)))
    path = os.path.join(out_dir, FEED_NAME)
    _atomic_write(path, ET.tostring(rss, encoding="utf-8", xml_declaration=True))
    return path
