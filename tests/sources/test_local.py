"""The local source: recursive discovery of real audio files of mixed formats, stable ids,
and files that are not audio becoming rejects when they are read."""
from __future__ import annotations

import os
import re
import shutil

import pytest
from pydantic import ValidationError

from stages.errors import RejectError
from stages.sources.local import LocalConfig, LocalSource, local_origin_id
from tests.sources.test_fetch import make_audio

# relative path -> (channels, sample rate, expected encoding); None: not audio
LAYOUT = {
    "top.wav": (1, 16000, "pcm_s16le"),
    "2024/jan/interview one.flac": (2, 22050, "flac"),
    "2024/jan/call.mp3": (1, 16000, "mp3"),
    "2024/feb/deep/panel.ogg": (1, 16000, "vorbis"),
    "2024/feb/voice-note.opus": (1, 48000, "opus"),
    "2024/feb/clip.m4a": (1, 16000, "aac"),
    "mixed/UPPER.WAV": (1, 8000, "pcm_s16le"),
    "mixed/हिंदी बातचीत.wav": (1, 16000, "pcm_s16le"),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("recordings")
    for rel, (channels, rate, _) in LAYOUT.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        make_audio(str(path), seconds=0.5, rate=rate, channels=channels)
    (root / "mixed" / "fake.wav").write_text("this is a text file with an audio name\n")
    (root / "mixed" / "empty.flac").write_bytes(b"")
    (root / "mixed" / "notes.txt").write_text("not listed")
    (root / "2024" / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    return root


def _by_rel(tasks):
    return {t.metadata["relative_path"]: t for t in tasks}


def test_discovers_nested_mixed_formats(library):
    d = LocalSource(LocalConfig(audio=[str(library)], lang="hi")).discover()
    tasks = _by_rel(d.tasks)
    assert sorted(tasks) == sorted([*LAYOUT, "mixed/fake.wav", "mixed/empty.flac"])
    assert not d.rejects
    for rel, t in tasks.items():
        assert t.source == "local" and t.needs_analysis and t.transcript_path is None
        assert t.lang == "hi" and t.license == "unknown (local recordings)"
        assert t.audio_path == str(library / rel)
        assert t.metadata["size_bytes"] == os.path.getsize(library / rel)
        assert re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{10}", t.origin_id), t.origin_id
    assert tasks["2024/jan/interview one.flac"].origin_id.startswith("2024_jan_interview_one_flac-")
    assert len({t.origin_id for t in d.tasks}) == len(d.tasks)


def test_read_audio_decodes_every_format(library):
    src = LocalSource(LocalConfig(audio=[str(library)]))
    tasks = _by_rel(src.discover().tasks)
    for rel, (channels, rate, encoding) in LAYOUT.items():
        audio = src.read_audio(tasks[rel])
        assert (audio.num_channels, audio.sample_rate, audio.encoding) == (channels, rate, encoding), rel
        assert 0.45 < audio.duration_s < 0.6, rel


def test_non_audio_files_become_rejects_when_read(library):
    src = LocalSource(LocalConfig(audio=[str(library)]))
    tasks = _by_rel(src.discover().tasks)
    with pytest.raises(RejectError) as e:
        src.read_audio(tasks["mixed/fake.wav"])
    assert e.value.reason == "audio_decode_failed"
    with pytest.raises(RejectError) as e:
        src.read_audio(tasks["mixed/empty.flac"])
    assert e.value.reason == "audio_empty"


def test_ids_are_stable_and_distinct_across_folders(library, tmp_path):
    a = LocalSource(LocalConfig(audio=[str(library)])).discover().tasks
    b = LocalSource(LocalConfig(audio=[str(library) + "/"])).discover().tasks
    assert [t.origin_id for t in a] == [t.origin_id for t in b]
    assert [t.fingerprint() for t in a] == [t.fingerprint() for t in b]
    # a copy elsewhere has the same slugs but other ids
    copy = tmp_path / "copy"
    shutil.copytree(library / "2024", copy / "2024")
    c = LocalSource(LocalConfig(audio=[str(library), str(copy)])).discover().tasks
    assert len(c) == len(a) + 5
    assert len({t.origin_id for t in c}) == len(c)


def test_extensions_filter_and_single_files(library):
    d = LocalSource(LocalConfig(audio=[str(library)], extensions=[".FLAC", "opus"])).discover()
    assert sorted(_by_rel(d.tasks)) == ["2024/feb/voice-note.opus", "2024/jan/interview one.flac", "mixed/empty.flac"]
    single = str(library / "2024" / "jan" / "call.mp3")
    (t,) = LocalSource(LocalConfig(audio=[single])).discover().tasks
    assert t.audio_path == single and t.metadata["relative_path"] == "call.mp3"


def test_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        LocalSource(LocalConfig(audio=[str(tmp_path / "missing")])).discover()
    with pytest.raises(ValidationError):
        LocalConfig(audio=[])
    with pytest.raises(ValidationError):
        LocalConfig(audio=["x"], extensions=["../wav"])
    with pytest.raises(ValidationError):
        LocalConfig(audio=["x"], transcripts=["y"])
    assert LocalSource(LocalConfig(audio=[str(tmp_path)])).discover().tasks == []


def test_origin_id_slug_rules():
    assert local_origin_id("../../etc/passwd", "/x").startswith("etc_passwd-")
    assert local_origin_id("...", "/x").startswith("audio-")
    long = local_origin_id("a" * 200 + ".wav", "/y")
    assert len(long) == 60 + 1 + 10
    assert local_origin_id("a b.wav", "/r/a b.wav") != local_origin_id("a_b.wav", "/r/a_b.wav")
