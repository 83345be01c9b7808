"""A small Fisher-layout sample corpus made offline: espeak-ng voices, two-channel 8 kHz mu-law
SPHERE files, LDC-format transcripts and a call-data table, from hand-written dialogue scripts.

The pipeline reads the result with the Fisher source recipe, exactly as it reads LDC's release.
Demo call ids start at fe_03_90001 (real Fisher ends at fe_03_11699) so they never pass for real
data; as in LDC's layout, a call's folder is the first three digits of its number (audio/900/).
Timelines are deterministic given the seed: turns of 1-4 utterances with short same-speaker
pauses, gaps and small overlaps at floor transfers, one interruption per call, backchannels on
the listener's channel over the other's speech, and `[laughter]` markup.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import soundfile as sf
import soxr

from stages.audio.signal import telephone_band, trim_silence
from stages.audio.sphere import write_sphere

DEMO_VERSION = 1
FIRST_CALL_NUMBER = 90001
SAMPLE_RATE = 8000
AUDIO_SUBDIR = "fe_03_p1_sph1"
TRAN_SUBDIR = "fe_03_p1_tran"
STAMP_NAME = "demo.json"
CALLDATA_HEADER = (
    "CALL_ID,DATE_TIME,TOPICID,SIG_GRADE,CNV_GRADE,APIN,ASX.DL,APHNUM,APHSET,APHTYP,"
    "BPIN,BSX.DL,BPHNUM,BPHSET,BPHTYP"
)


@dataclass(frozen=True)
class DemoLayout:
    """Where the generated sample lies. `audio_dir` and `transcript_dir` play the roles of the
    LDC2004S13 and LDC2004T19 roots: they hold `fe_03_p1_sph1/` and `fe_03_p1_tran/`."""

    root: str
    audio_dir: str
    transcript_dir: str
    calldata_path: str
    call_ids: tuple[str, ...]

    def audio_path(self, call_id: str) -> str:
        return os.path.join(self.root, AUDIO_SUBDIR, "audio", _bucket(call_id), f"{call_id}.sph")

    def transcript_path(self, call_id: str) -> str:
        return os.path.join(self.root, TRAN_SUBDIR, "data", "trans", _bucket(call_id), f"{call_id}.txt")


@dataclass(frozen=True)
class Voice:
    """A demo participant: Fisher PIN and sex, and the espeak-ng settings that are their voice."""

    pin: int
    sex: str  # "f" / "m", as in the call-data table
    name: str
    variant: str  # espeak-ng voice variant (en-us+<variant>)
    pitch: int  # espeak-ng -p, 0-99
    speed: int  # espeak-ng -s, words per minute
    gain: float  # peak level of this speaker's clips, full scale = 1


SPEAKERS: tuple[Voice, ...] = (
    Voice(90101, "f", "karen", "f2", 62, 165, 0.55),
    Voice(90102, "m", "andy", "m3", 40, 160, 0.60),
    Voice(90103, "f", "linda", "f4", 72, 175, 0.45),
    Voice(90104, "m", "mike", "m1", 30, 150, 0.50),
    Voice(90105, "f", "susan", "f5", 50, 158, 0.60),
    Voice(90106, "m", "dave", "m6", 55, 170, 0.45),
    Voice(90107, "f", "maria", "f3", 45, 162, 0.50),
    Voice(90108, "m", "tom", "m7", 35, 168, 0.55),
)

# (transcript text, what espeak-ng is given): espeak spells "mm-hmm" out letter by letter.
BACKCHANNELS: tuple[tuple[str, str], ...] = (
    ("yeah", "yeah"),
    ("uh-huh", "uh huh"),
    ("mm-hmm", "hmm hmm"),
    ("right", "right"),
    ("oh really", "oh really?"),
    ("okay", "okay"),
    ("yeah yeah", "yeah yeah"),
)

# One script per topic. A line is a turn: "x:" or "y:" (the two participants; x opens the call),
# utterances separated by "|", a leading "!" marks a turn that interrupts the previous one.
# {x} and {y} are the participants' first names. Punctuation guides espeak's prosody and is
# dropped from the transcripts, which are lower case as Fisher's are.
TOPICS: tuple[tuple[str, str, str], ...] = (
    ("ENG91", "pets", """
x: hello? | hi, my name is {x}.
y: hi {x}, i'm {y}. | so i guess we're talking about pets today.
x: yeah, that's the topic. | do you have any pets at home?
y: i do, i have two dogs and an old cat. | the dogs are both rescues from the shelter down the road.
x: oh that's nice. | what kind of dogs are they?
y: one is a beagle mix and the other is some kind of shepherd, we're not really sure. | the beagle howls at everything, the mail truck, the neighbors, even the vacuum cleaner.
x: [laughter] that sounds loud.
y: it is very loud. | what about you, do you have any animals?
x: right now we just have a fish tank, | but when i was growing up we always had cats, three or four of them at a time, because my mother fed every stray in the neighborhood.
!y: wait, three or four cats at once?
x: yeah, [laughter] it was a little crazy. | i'd like to get a dog someday, but my building doesn't allow them.
y: that's too bad. | a lot of places are like that now.
x: definitely. | so how old is your cat?
y: she's fifteen. | she mostly sleeps on the couch all day.
x: honestly that sounds like a good life.
"""),
    ("ENG92", "holidays", """
x: hi, this is {x}.
y: hey {x}, i'm {y}. | how are you doing?
x: good, good. | so the topic is holidays, what's your favorite one?
y: oh, thanksgiving, no question. | the whole family comes over and we cook for two days straight.
x: that's a lot of cooking. | who does most of it?
y: my mom does the turkey, and i do the pies, usually pumpkin and apple. | last year i tried a pecan pie and it completely fell apart in the oven.
x: [laughter] oh no.
y: yeah, we ate it with spoons. | what about you?
x: i like the fourth of july the most, | we go out to the lake with some friends and grill all afternoon and then watch the fireworks over the water when it gets dark.
!y: oh that sounds great, which lake?
x: it's a small one up north, about two hours from here. | it gets pretty crowded though.
y: i bet. | do you travel for the winter holidays too?
x: not really, we stay home. | the airports are just too much that time of year.
y: i agree, | we drove once in a snowstorm and never again.
x: [laughter] yeah, i don't blame you.
"""),
    ("ENG93", "food", """
x: hello, my name's {x}.
y: hi {x}, this is {y}.
x: so, food. | do you like to cook, or do you eat out more?
y: i cook most nights, actually. | it's cheaper, and i kind of enjoy it after work.
x: what do you usually make?
y: a lot of pasta, stir fry, soups in the winter. | nothing fancy, just stuff that comes together in half an hour.
x: that's smart. | i'm terrible in the kitchen.
y: [laughter] everybody says that.
x: no, really, i once set off the smoke alarm making toast, | and my roommate still brings it up every single time we have people over for dinner.
!y: okay, toast is pretty hard to mess up.
x: i know, i know. | so mostly i get takeout, like thai food or pizza.
y: thai food is my favorite. | there's a little place near my office with amazing curry.
x: is it spicy?
y: you can pick, one to five. | i usually go with a three.
x: i'd probably stop at two. | i'm not great with spicy food.
y: [laughter] two is still pretty good.
"""),
    ("ENG94", "sports", """
x: hi, i'm {x}.
y: hello {x}, i'm {y}. | so we're supposed to talk about sports.
x: right. | do you watch much sports on tv?
y: mostly football in the fall. | i watch every game on sunday with my brother.
x: who do you root for?
y: oh, the home team, even though they lose a lot. | last season they won four games the whole year.
x: [laughter] that's rough.
y: it really is. | do you follow any teams?
x: i'm more into basketball, | i played in high school and i still go to a pickup game at the gym on saturday mornings with a bunch of guys from work.
!y: wait, you still play? that's impressive.
x: well, we're pretty slow now. | mostly we just argue about fouls.
y: [laughter] that sounds about right.
x: do you play anything yourself?
y: i ride my bike a lot. | on weekends i do about thirty miles along the river.
x: wow, that's a lot of miles.
y: it's flat, so it's not as hard as it sounds.
"""),
    ("ENG95", "work", """
x: hello? | hi, i'm {x}.
y: hi, this is {y}. | the topic is about work, right?
x: yeah, what kind of work you do. | so what do you do?
y: i'm a nurse at a hospital downtown. | i work nights, twelve hour shifts, three days a week.
x: wow, nights must be hard.
y: you get used to it. | the hardest part is sleeping during the day when the neighbors are mowing their lawns.
x: [laughter] i can imagine.
y: what about you?
x: i work in an office, i do accounting for a small company that makes furniture, | it's mostly spreadsheets and invoices and phone calls with vendors who forgot to send their bills.
!y: oh, so you're the person chasing everybody for receipts.
x: [laughter] exactly, that's me. | everyone hides when i walk by.
y: do you like it, though?
x: i do, actually. | the people are nice, and i can leave at five.
y: that's the dream. | i haven't left anywhere at five in years.
x: well, maybe someday you can switch to days.
y: maybe. | my manager keeps promising.
"""),
    ("ENG96", "movies", """
x: hi, my name is {x}.
y: hey, i'm {y}. | so, movies.
x: yeah. | have you seen anything good lately?
y: i saw a space movie last weekend, | it was really long, almost three hours, but the effects were amazing.
x: did you see it in the theater?
y: yeah, on the big screen. | my popcorn was gone before the opening credits ended.
x: [laughter] that always happens to me.
y: do you go to the theater much?
x: not anymore, we mostly stream at home, | it's just easier with the kids, and we can pause it when somebody needs a snack or falls asleep halfway through.
!y: right, and it's way cheaper too.
x: so much cheaper. | tickets are like fifteen dollars here now.
y: that's crazy. | what do you like to watch at home?
x: mostly comedies. | my wife likes mysteries though.
y: mysteries are fun. | i always try to guess the ending.
x: and are you usually right?
y: [laughter] almost never.
"""),
)


@dataclass(frozen=True)
class Line:
    side: str  # "x" or "y"
    utterances: tuple[str, ...]
    interrupt: bool


@dataclass(frozen=True)
class Placed:
    channel: int  # 0 = A, 1 = B
    start_s: float
    end_s: float
    text: str  # transcript text
    key: tuple  # clip key (voice pin, spoken text)


def _bucket(call_id: str) -> str:
    return call_id.rsplit("_", 1)[1][:3]


def call_ids_for(num_calls: int) -> tuple[str, ...]:
    return tuple(f"fe_03_{FIRST_CALL_NUMBER + i:05d}" for i in range(num_calls))


def parse_script(text: str, names: dict[str, str]) -> list[Line]:
    """Script text → turns; raises ValueError on a malformed script (a bug, not bad input)."""
    lines: list[Line] = []
    for raw in text.strip().splitlines():
        m = re.fullmatch(r"(!?)([xy]):\s*(.+)", raw.strip())
        if not m:
            raise ValueError(f"bad script line: {raw!r}")
        utts = tuple(u.strip().format(**names) for u in m.group(3).split("|") if u.strip())
        if not 1 <= len(utts) <= 4:
            raise ValueError(f"a turn has 1-4 utterances: {raw!r}")
        if lines and lines[-1].side == m.group(2):
            raise ValueError(f"two consecutive turns by {m.group(2)}: {raw!r}")
        lines.append(Line(m.group(2), utts, bool(m.group(1))))
    return lines


def transcript_text(utterance: str) -> str:
    """Fisher style: lower case, no punctuation, markup such as [laughter] kept."""
    words = []
    for tok in utterance.lower().split():
        if re.fullmatch(r"\[[a-z]+\]", tok):
            words.append(tok)
            continue
        tok = re.sub(r"[^a-z0-9'\-]", "", tok)
        if tok:
            words.append(tok)
    return " ".join(words)


def spoken_text(utterance: str) -> str:
    """What espeak-ng says: markup becomes sound ("[laughter]" → a laugh) or is dropped."""
    text = utterance.replace("[laughter]", "ha ha,")
    return re.sub(r"\[[^\]]*\]", " ", text).strip()


def synthesize(
    text: str, voice: Voice, workdir: str, sample_rate: int = SAMPLE_RATE, lang: str = "en-us"
) -> np.ndarray:
    """One utterance through espeak-ng (voice `lang`, e.g. en-us, hi, te) → trimmed float clip
    at `sample_rate` (8 kHz for the telephone demo) peaking at `voice.gain`."""
    fd, wav = tempfile.mkstemp(suffix=".wav", dir=workdir)
    os.close(fd)
    try:
        cmd = ["espeak-ng", "-v", f"{lang}+{voice.variant}", "-p", str(voice.pitch),
               "-s", str(voice.speed), "-w", wav, text]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except FileNotFoundError as e:
            raise RuntimeError("the demo source needs espeak-ng (apt-get install espeak-ng)") from e
        audio, sr = sf.read(wav, dtype="float64", always_2d=False)
    finally:
        os.unlink(wav)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    clip = soxr.resample(trim_silence(audio, sr), sr, sample_rate, quality="HQ")
    peak = float(np.max(np.abs(clip))) if len(clip) else 0.0
    if peak <= 0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    return clip * (voice.gain / peak)


@dataclass
class _CallPlan:
    call_id: str
    topic_id: str
    rng: random.Random
    voices: tuple[Voice, Voice]  # by channel: (A, B)
    side_channel: dict[str, int]
    lines: list[Line]


def _plan_call(index: int, seed: int) -> _CallPlan:
    rng = random.Random(f"demo-fisher:{seed}:{index}")
    topic_id, _, script = TOPICS[(seed + index) % len(TOPICS)]
    x, y = rng.sample(SPEAKERS, 2)
    lines = parse_script(script, {"x": x.name, "y": y.name})
    # The one who opens the call is on channel A in every other call (either can be, in Fisher).
    if (seed + index) % 2 == 0:
        voices, side_channel = (x, y), {"x": 0, "y": 1}
    else:
        voices, side_channel = (y, x), {"x": 1, "y": 0}
    call_id = f"fe_03_{FIRST_CALL_NUMBER + index:05d}"
    return _CallPlan(call_id, topic_id, rng, voices, side_channel, lines)


def _clip_keys(plan: _CallPlan) -> set[tuple]:
    keys = set()
    for line in plan.lines:
        voice = plan.voices[plan.side_channel[line.side]]
        keys.update((voice.pin, spoken_text(u)) for u in line.utterances)
    for voice in plan.voices:
        keys.update((voice.pin, spoken) for _, spoken in BACKCHANNELS)
    return keys


def _dur(clips: dict[tuple, np.ndarray], key: tuple) -> float:
    return len(clips[key]) / SAMPLE_RATE


def layout_call(plan: _CallPlan, clips: dict[tuple, np.ndarray]) -> list[Placed]:
    """Place every utterance on the timeline (10 ms grid); returns them in start order."""
    rng = plan.rng
    placed: list[Placed] = []
    busy = [0.0, 0.0]  # end of the last utterance on each channel
    last: Optional[Placed] = None  # last floor utterance
    backchannels = 0

    def put(ch: int, start: float, text: str, key: tuple) -> Placed:
        p = Placed(ch, start, start + _dur(clips, key), text, key)
        placed.append(p)
        busy[ch] = p.end_s
        return p

    for n_line, line in enumerate(plan.lines):
        ch = plan.side_channel[line.side]
        pin = plan.voices[ch].pin
        if last is None:
            start = rng.uniform(0.4, 1.2)
        elif line.interrupt:
            overlap = min(rng.uniform(0.65, 0.95), (last.end_s - last.start_s) - 0.3)
            if overlap < 0.62:
                raise ValueError(f"interrupted utterance too short: {last.text!r}")
            start = last.end_s - overlap
        elif rng.random() < 0.2 and last.end_s - last.start_s > 1.2:
            start = last.end_s - rng.uniform(0.1, 0.4)  # a small overlap at the transfer
        else:
            start = last.end_s + rng.uniform(0.1, 1.5)
        start = round(max(start, busy[ch] + 0.2), 2)
        turn: list[Placed] = []
        for j, utt in enumerate(line.utterances):
            if j:
                start = round(turn[-1].end_s + rng.uniform(0.2, 0.8), 2)
            turn.append(put(ch, start, transcript_text(utt), (pin, spoken_text(utt))))
        last = turn[-1]

        # A backchannel from the listener over one of this turn's longer utterances (not during
        # the greetings), ending at least 1.2 s before the turn does so that the listener's own
        # next turn never collides with it.
        listener = 1 - ch
        if n_line < 2 or (backchannels and rng.random() >= 0.5):
            continue
        text, spoken = BACKCHANNELS[rng.randrange(len(BACKCHANNELS))]
        key = (plan.voices[listener].pin, spoken)
        d = _dur(clips, key)
        windows = []
        for u, raw in zip(turn, line.utterances):
            if u.end_s - u.start_s < 2.0 or raw.endswith("?"):
                continue
            lo = max(u.start_s + 0.5, busy[listener] + 0.3)
            hi = min(u.end_s - 0.3, last.end_s - 1.2 - d)
            if hi > lo:
                windows.append((lo, hi))
        if windows:
            lo, hi = windows[rng.randrange(len(windows))]
            put(listener, round(rng.uniform(lo, hi), 2), text, key)
            backchannels += 1
    if not backchannels:
        raise ValueError(f"script for {plan.topic_id} leaves no room for a backchannel")
    return sorted(placed, key=lambda p: (p.start_s, p.channel))


def render(placed: list[Placed], clips: dict[tuple, np.ndarray], duration_s: float,
           noise_seed: int) -> np.ndarray:
    """(2, n) int16: each channel holds only its speaker, telephone band, a faint noise floor."""
    n = int(round(duration_s * SAMPLE_RATE))
    noise = np.random.default_rng(noise_seed)
    out = np.zeros((2, n), dtype=np.int16)
    for ch in (0, 1):
        x = noise.normal(0.0, 0.0015, n)
        for p in placed:
            if p.channel == ch:
                clip = clips[p.key]
                i = int(round(p.start_s * SAMPLE_RATE))
                x[i : i + len(clip)] += clip[: n - i]
        x = telephone_band(x, SAMPLE_RATE)
        out[ch] = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
    return out


def format_transcript(call_id: str, placed: list[Placed]) -> str:
    """LDC's Fisher transcript format: two comment lines, then `start end A: text ` lines, each
    followed by a blank line (LDC's own files end utterance lines with a space, too)."""
    out = [f"# {call_id}.sph", "# synthetic demo conversation (espeak-ng voices), not LDC data", ""]
    for p in placed:
        out += [f"{p.start_s:.2f} {p.end_s:.2f} {'AB'[p.channel]}: {p.text} ", ""]
    return "\n".join(out) + "\n"


def _calldata_row(plan: _CallPlan) -> str:
    rng = random.Random(f"demo-fisher-calldata:{plan.call_id}")
    when = f"2004{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}_{rng.randint(8, 22):02d}" \
           f"{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
    fields = [plan.call_id, when, plan.topic_id, str(rng.randint(3, 4)), str(rng.randint(3, 4))]
    for voice in plan.voices:
        phone = hashlib.sha256(f"demo-phone:{voice.pin}".encode()).hexdigest()[:8]
        fields += [str(voice.pin), f"{voice.sex}.a", phone, str(rng.randint(1, 3)), str(rng.randint(1, 3))]
    return ",".join(fields)


def _fingerprint() -> str:
    h = hashlib.sha256(repr((DEMO_VERSION, SPEAKERS, BACKCHANNELS, TOPICS)).encode())
    return h.hexdigest()[:16]


def _atomic_write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _layout(root: str, num_calls: int) -> DemoLayout:
    return DemoLayout(
        root=root,
        audio_dir=root,
        transcript_dir=root,
        calldata_path=os.path.join(root, TRAN_SUBDIR, "doc", "fe_03_p1_calldata.tbl"),
        call_ids=call_ids_for(num_calls),
    )


def _prepare_root(root: str, stamp: dict) -> bool:
    """True when `root` already holds exactly this sample; otherwise clears what an earlier demo
    wrote (never anything it did not write) and returns False."""
    stamp_path = os.path.join(root, STAMP_NAME)
    owned = [os.path.join(root, d) for d in (AUDIO_SUBDIR, TRAN_SUBDIR)]
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            old = json.load(f)
        if old == stamp:
            return True
        for d in owned:
            shutil.rmtree(d, ignore_errors=True)
    elif any(os.path.exists(d) for d in owned):
        raise FileExistsError(f"{root} holds Fisher folders the demo did not write; not touching them")
    return False


def generate_demo_fisher(root: str, *, num_calls: int = 6, seed: int = 0, workers: int = 2) -> DemoLayout:
    """Write `num_calls` demo calls under `root` in LDC's Fisher layout and return where they are.
    Idempotent: a root stamped with the same seed, call count and scripts is left untouched."""
    if num_calls < 1:
        raise ValueError("num_calls must be at least 1")
    root = os.path.abspath(root)
    layout = _layout(root, num_calls)
    stamp = {"generator": "stages.sources.demo", "layout": "fisher", "version": DEMO_VERSION,
             "fingerprint": _fingerprint(), "seed": seed, "num_calls": num_calls,
             "call_ids": list(layout.call_ids), "complete": True}
    os.makedirs(root, exist_ok=True)
    files = [layout.calldata_path] + [p for c in layout.call_ids
                                      for p in (layout.audio_path(c), layout.transcript_path(c))]
    if _prepare_root(root, stamp) and all(os.path.exists(p) for p in files):
        return layout
    # Claim the root first, so an interrupted run is recognised (and redone) next time.
    _atomic_write(os.path.join(root, STAMP_NAME), json.dumps({**stamp, "complete": False}, indent=1).encode())

    plans = [_plan_call(i, seed) for i in range(num_calls)]
    voices = {v.pin: v for v in SPEAKERS}
    keys = sorted(set().union(*(_clip_keys(p) for p in plans)))
    with tempfile.TemporaryDirectory(prefix="demo-tts-") as workdir, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda k: synthesize(k[1], voices[k[0]], workdir), keys)
        clips = dict(zip(keys, results))

    rows = [CALLDATA_HEADER]
    for i, plan in enumerate(plans):
        placed = layout_call(plan, clips)
        duration = max(p.end_s for p in placed) + plan.rng.uniform(0.5, 1.5)
        noise_seed = int.from_bytes(hashlib.sha256(f"demo-noise:{seed}:{i}".encode()).digest()[:8], "little")
        audio = render(placed, clips, duration, noise_seed)
        sph = layout.audio_path(plan.call_id)
        os.makedirs(os.path.dirname(sph), exist_ok=True)
        write_sphere(sph + ".tmp", audio, SAMPLE_RATE, coding="ulaw")
        os.replace(sph + ".tmp", sph)
        _atomic_write(layout.transcript_path(plan.call_id), format_transcript(plan.call_id, placed).encode())
        rows.append(_calldata_row(plan))
    _atomic_write(layout.calldata_path, ("\n".join(rows) + "\n").encode())
    _atomic_write(os.path.join(root, STAMP_NAME), json.dumps(stamp, indent=1).encode())
    return layout
