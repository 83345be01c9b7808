"""espeak-ng (Debian) as the offline TTS for English, Hindi and Telugu.

Voice id: "espeak:<lang>+<variant>:p<pitch 0-99>:s<words per minute 80-450>", e.g.
"espeak:hi+f3:p62:s160"; the variant is one of espeak-ng's voice variants (`!v/` in its data).
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from typing import Optional

import numpy as np
import soundfile as sf

from stages.synth.tts.base import DEFAULT_ESPEAK_VOICES, BaseTts, TtsConfig, Voice

# Our language code → espeak-ng's voice name.
ESPEAK_LANG = {"en": "en-us", "hi": "hi", "te": "te"}
_ID = re.compile(r"espeak:(?P<lang>[a-z]{2,3}(?:-[a-z]+)?)\+(?P<variant>[A-Za-z0-9_]+)"
                 r"(?::p(?P<pitch>\d{1,2}))?(?::s(?P<speed>\d{2,3}))?")


@functools.lru_cache(maxsize=1)
def espeak_data_dir() -> str:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30).stdout
    except FileNotFoundError as e:
        raise RuntimeError("the espeak TTS backend needs espeak-ng (apt-get install espeak-ng)") from e
    m = re.search(r"Data at:\s*(\S+)", out)
    if not m:
        raise RuntimeError(f"cannot find espeak-ng's data directory in {out!r}")
    return m.group(1)


@functools.lru_cache(maxsize=1)
def espeak_variants() -> frozenset[str]:
    return frozenset(os.listdir(os.path.join(espeak_data_dir(), "voices", "!v")))


@functools.lru_cache(maxsize=1)
def espeak_languages() -> frozenset[str]:
    out = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, timeout=30).stdout
    return frozenset(line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1)


class EspeakTts(BaseTts):
    name = "espeak"

    def __init__(self, cfg: TtsConfig):
        super().__init__(cfg)
        espeak_data_dir()  # fails early, clearly, without espeak-ng

    def languages(self) -> list[str]:
        return sorted(set(ESPEAK_LANG) | {l for l in self.cfg.voices if self._espeak_lang(l)})

    def _espeak_lang(self, lang: str) -> Optional[str]:
        name = ESPEAK_LANG.get(lang, lang)
        return name if name in espeak_languages() else None

    def _default_voice_ids(self, lang: str) -> list[str]:
        return DEFAULT_ESPEAK_VOICES.get(lang, [])

    def _parse_voice(self, voice_id: str) -> Optional[Voice]:
        m = _ID.fullmatch(voice_id)
        if not m or m.group("variant") not in espeak_variants() or not self._espeak_lang(m.group("lang")):
            return None
        pitch = int(m.group("pitch") or 50)
        speed = int(m.group("speed") or 160)
        if not 80 <= speed <= 450:
            return None
        return Voice(voice_id, m.group("lang"), self.name,
                     {"espeak_voice": f"{self._espeak_lang(m.group('lang'))}+{m.group('variant')}",
                      "pitch": pitch, "speed": speed})

    def _synthesize_raw(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        p = voice.params
        fd, wav = tempfile.mkstemp(suffix=".wav", prefix="espeak-")
        os.close(fd)
        try:
            # Text on stdin (never argv: a turn starting with "-" is not an option), UTF-8 (-b 1).
            cmd = ["espeak-ng", "-v", p["espeak_voice"], "-p", str(p["pitch"]), "-s", str(p["speed"]),
                   "-b", "1", "-w", wav, "--stdin"]
            r = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=self.cfg.timeout_s)
            if r.returncode != 0:
                raise RuntimeError(f"espeak-ng exited {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
            if os.path.getsize(wav) == 0:  # nothing to say (empty text): no WAV at all
                return np.zeros(0, dtype=np.float32), 22050
            audio, sr = sf.read(wav, dtype="float32", always_2d=False)
        finally:
            os.unlink(wav)
        return audio, sr
