"""Fisher and CallHome recipes on small LDC-shaped trees of real SPHERE files and transcripts."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from pydantic import ValidationError

from catalog.schema import Recording
from stages.sources.base import RecordingTask
from stages.errors import RejectError
from stages.sources.callhome import CallHomeConfig, CallHomeSource
from stages.sources.fisher import FisherConfig, FisherSource, parse_calldata
from stages.audio.sphere import write_sphere
from tests.fixtures.shorten import write_shorten_sphere

SR = 8000
AUDIO_S = 4.0


def tone(channels: int, seconds: float = AUDIO_S) -> np.ndarray:
    """A different tone per channel, int16 (channels, frames)."""
    t = np.arange(int(SR * seconds)) / SR
    return np.stack(
        [(0.3 * 32767 * np.sin(2 * np.pi * (300 + 250 * c) * t)).astype(np.int16) for c in range(channels)]
    )


def put(path: str, content: str | None = None, channels: int = 2, coding: str = "ulaw") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if content is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
    elif coding.endswith("embedded-shorten-v2.00"):
        write_shorten_sphere(path, tone(channels), SR, coding=coding)
    else:
        write_sphere(path, tone(channels), SR, coding=coding)
    return path


def recording_for(task: RecordingTask, audio) -> Recording:
    """The Recording the pipeline would make from the decoded audio (standardization aside)."""
    return Recording(
        recording_id=task.recording_id, source=task.source, origin_id=task.origin_id,
        origin=task.audio_path, license=task.license, lang=task.lang,
        native_sample_rate=audio.sample_rate, num_channels=audio.num_channels,
        duration_s=audio.duration_s, encoding=audio.encoding, audio_sha256=audio.sha256,
        audio_path="", sample_rate=24000, bandwidth="narrowband", effective_bandwidth_hz=4000.0,
    )


def load(source, task: RecordingTask):
    audio = source.read_audio(task)
    recording = recording_for(task, audio)
    return recording, source.read_transcript(task, recording)


# --- Fisher ----------------------------------------------------------------------------------

CALLDATA = """CALL_ID,DATE_TIME,TOPICID,SIG_GRADE,CNV_GRADE,APIN,ASX.DL,APHNUM,APHSET,APHTYP,BPIN,BSX.DL,BPHNUM,BPHSET,BPHTYP
00001,20021210_18:36:07,ENG01,3.5,4,12345,f.a,no_APHNUM,4,1,67890,m.o,ph4411,1,3
00006,20021211_10:00:00,ENG02,2,3.5,12345,f.a,no_APHNUM,4,1,0,m.a,no_BPHNUM,2,2
not,a,row
"""

FISHER_00001 = """# fe_03_00001.sph
# Transcribed at the LDC

0.20 1.10 A: hi my name is (( )) [laughter]

1.30 2.00 B: oh hi i'm andy 

2.10 2.60 A: [noise]
bad line here and there
2.70 4.40 B: so what do you- what do you think
3.00 3.80 A: ((yeah))
4.80 5.50 A: way past the end
"""


@pytest.fixture(scope="module")
def fisher_tree(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fisher")
    audio = root / "LDC2004S13" / "fe_03_p1_sph1" / "audio" / "000"
    trans = root / "LDC2004T19" / "fe_03_p1_tran" / "data" / "trans" / "000"
    paths = {"root": str(root), "audio": str(root / "LDC2004S13"), "trans": str(root / "LDC2004T19")}
    for n in ("00001", "00002", "00003", "00005", "00006", "00007"):
        paths[f"sph{n}"] = put(str(audio / f"fe_03_{n}.sph"))
    paths["sph00004"] = put(str(audio / "fe_03_00004.sph"), channels=1)
    # A second copy of one call on another disc folder.
    paths["dup00006"] = put(str(root / "LDC2004S13" / "fe_03_p1_sph2" / "audio" / "000" / "fe_03_00006.sph"))
    paths["txt00001"] = put(str(trans / "fe_03_00001.txt"), FISHER_00001)
    put(str(trans / "fe_03_00002.txt"),
        "0.5 1.5 A: hello there\n10.0 11.0 B: far away\n12.0 13.0 A: further\n14.0 15.0 B: furthest\n")
    put(str(trans / "fe_03_00004.txt"), "0.5 1.0 A: hi\n1.2 1.8 B: hello\n")
    put(str(trans / "fe_03_00005.txt"), "# fe_03_00005.sph\n\n0.5 1.0 A: [laughter]\n\n1.2 1.8 B: (( ))\n")
    put(str(trans / "fe_03_00006.txt"), "0.5 1.0 A: hello\n1.2 1.8 B: hi how are you\n")
    put(str(trans / "fe_03_00007.txt"), "# fe_03_00007.sph\n# Transcribed at the LDC\n\n")
    paths["txt00009"] = put(str(trans / "fe_03_00009.txt"), "0.5 1.0 A: nobody recorded me\n")
    # BBN's original files are not the LDC-format transcripts and must not count as duplicates.
    put(str(root / "LDC2004T19" / "fe_03_p1_tran" / "data" / "bbn_orig" / "000" / "auto-segmented"
            / "fe_03_00001.txt"), "L: Hi, my name's Candy.\n")
    put(str(root / "LDC2004T19" / "fe_03_p1_tran" / "doc" / "fe_03_p1_calldata.tbl"), CALLDATA)
    return paths


@pytest.fixture(scope="module")
def fisher(fisher_tree):
    source = FisherSource(FisherConfig(audio=[fisher_tree["audio"]], transcripts=[fisher_tree["trans"]]))
    return source, source.discover()


def task_of(discovery, origin_id: str) -> RecordingTask:
    return next(t for t in discovery.tasks if t.origin_id == origin_id)


def test_fisher_discover_pairs_and_rejects(fisher, fisher_tree) -> None:
    _, d = fisher
    assert [t.origin_id for t in d.tasks] == [
        "fe_03_00001", "fe_03_00002", "fe_03_00004", "fe_03_00005", "fe_03_00006", "fe_03_00007"
    ]
    rejects = sorted((r.stage, r.item_id, r.reason) for r in d.rejects)
    assert rejects == [
        ("discover", "fe_03_00003", "audio_without_transcript"),
        ("discover", "fe_03_00006", "duplicate_audio"),
        ("discover", "fe_03_00009", "transcript_without_audio"),
    ]
    by_reason = {r.reason: r for r in d.rejects}
    assert by_reason["audio_without_transcript"].detail == fisher_tree["sph00003"]
    assert by_reason["transcript_without_audio"].detail == fisher_tree["txt00009"]
    t1 = task_of(d, "fe_03_00001")
    assert (t1.audio_path, t1.transcript_path) == (fisher_tree["sph00001"], fisher_tree["txt00001"])
    assert (t1.source, t1.lang, t1.recording_id) == ("fisher", "en", "fisher-fe_03_00001")
    assert t1.metadata == {
        "topic_id": "ENG01", "date_time": "20021210_18:36:07", "signal_grade": 3.5, "conversation_grade": 4.0,
        "sides": {
            "A": {"pin": "12345", "gender": "female", "dialect": "american", "phone_set": "hand-held", "phone_type": "cell"},
            "B": {"pin": "67890", "gender": "male", "dialect": "other", "phone_set": "speaker-phone", "phone_type": "land-line"},
        },
    }
    assert task_of(d, "fe_03_00002").metadata == {}  # no calldata row


def test_fisher_transcript_utterances_speakers_and_line_rejects(fisher) -> None:
    source, d = fisher
    recording, tr = load(source, task_of(d, "fe_03_00001"))
    assert recording.num_channels == 2 and recording.duration_s == pytest.approx(AUDIO_S)
    assert [(u.utterance_id, u.channel, u.start_s, u.end_s, u.text) for u in tr.utterances] == [
        ("fisher-fe_03_00001-00000", 0, 0.2, 1.1, "hi my name is"),
        ("fisher-fe_03_00001-00001", 1, 1.3, 2.0, "oh hi i'm andy"),
        ("fisher-fe_03_00001-00002", 1, 2.7, AUDIO_S, "so what do you- what do you think"),  # end clipped
        ("fisher-fe_03_00001-00003", 0, 3.0, 3.8, "yeah"),
    ]
    assert [u.text_raw for u in tr.utterances] == [
        "hi my name is (( )) [laughter]", "oh hi i'm andy", "so what do you- what do you think", "((yeah))"
    ]
    u0 = tr.utterances[0]
    assert (u0.speaker_id, u0.lang, u0.source, u0.confidence, u0.words) == ("fisher-spk-12345", "en", "fisher", None, [])
    assert [u.speaker_id for u in tr.utterances] == [
        "fisher-spk-12345", "fisher-spk-67890", "fisher-spk-67890", "fisher-spk-12345"
    ]
    a, b = tr.speakers
    assert (a.speaker_id, a.label, a.channel, a.role, a.gender) == ("fisher-spk-12345", "A", 0, "A", "female")
    assert (b.speaker_id, b.label, b.channel, b.role, b.gender) == ("fisher-spk-67890", "B", 1, "B", "male")
    assert json.loads(a.metadata_json) == {"pin": "12345", "dialect": "american", "phone_set": "hand-held", "phone_type": "cell"}
    assert a.recording_id == "fisher-fe_03_00001"
    assert sorted((r.stage, r.item_id, r.reason) for r in tr.rejects) == [
        ("transcript", "fisher-fe_03_00001:12", "utterance_past_audio_end"),
        ("transcript", "fisher-fe_03_00001:8", "utterance_empty_text"),
        ("transcript", "fisher-fe_03_00001:9", "transcript_malformed_line"),
    ]
    malformed = next(r for r in tr.rejects if r.reason == "transcript_malformed_line")
    assert "bad line here and there" in malformed.detail


def test_fisher_pin_names_the_speaker_across_calls(fisher) -> None:
    source, d = fisher
    _, tr = load(source, task_of(d, "fe_03_00006"))
    # A's PIN 12345 is the speaker of fe_03_00001's side A; B's PIN 0 is unknown.
    assert [s.speaker_id for s in tr.speakers] == ["fisher-spk-12345", "fisher-fe_03_00006-B"]
    assert [s.gender for s in tr.speakers] == ["female", "male"]
    # Without a calldata row, ids are per recording.
    t2 = task_of(d, "fe_03_00002")
    assert FisherSource.sides(source, t2) == {}


@pytest.mark.parametrize(
    "origin_id,reason",
    [
        ("fe_03_00002", "transcript_audio_mismatch"),  # 3 of 4 utterances start after the 4 s audio
        ("fe_03_00004", "missing_channel"),  # mono audio, transcript has a B side
        ("fe_03_00005", "empty_conversation"),  # noise markers only
        ("fe_03_00007", "empty_conversation"),  # comments only
    ],
)
def test_fisher_whole_recording_rejects(fisher, origin_id: str, reason: str) -> None:
    source, d = fisher
    with pytest.raises(RejectError) as e:
        load(source, task_of(d, origin_id))
    assert e.value.reason == reason


def test_fisher_transcripts_default_to_audio_dirs_and_source_pickles(fisher_tree) -> None:
    source = FisherSource(FisherConfig(audio=[fisher_tree["root"]]))
    source = pickle.loads(pickle.dumps(source))
    d = source.discover()
    assert len(d.tasks) == 6
    assert pickle.loads(pickle.dumps(d.tasks)) == d.tasks
    assert task_of(d, "fe_03_00001").metadata["topic_id"] == "ENG01"


def test_parse_calldata_without_header_uses_documented_columns() -> None:
    calls = parse_calldata(
        "1,20030101_00:00:00,ENG03,1.5,2,55,m.a,x,9,9,56,f.o,y,3,2\n"
        "fe_03_00002,20030101_00:00:00,ENG04,1,1,57,f.a,x,1,1,58,m.a,y,1,1\n"
    )
    assert sorted(calls) == ["fe_03_00001", "fe_03_00002"]  # a full id in CALL_ID is accepted too
    assert calls["fe_03_00001"]["topic_id"] == "ENG03"
    assert calls["fe_03_00001"]["sides"] == {
        "A": {"pin": "55", "gender": "male", "dialect": "american"},
        "B": {"pin": "56", "gender": "female", "dialect": "other", "phone_set": "ear-bud", "phone_type": "cordless"},
    }


def test_configs_are_strict(tmp_path) -> None:
    with pytest.raises(ValidationError):
        FisherConfig(audio=[str(tmp_path)], bogus=1)
    with pytest.raises(ValidationError):
        FisherConfig(audio=[])
    with pytest.raises(ValidationError):
        CallHomeConfig(audio=[str(tmp_path)], transcript=[str(tmp_path)])
    with pytest.raises(FileNotFoundError):
        FisherSource(FisherConfig(audio=[str(tmp_path / "nope")])).discover()


# --- CallHome --------------------------------------------------------------------------------

CALLHOME_4065 = """
0.50 1.40 A: %um {laugh} hello &Mary, how are you?
1.50 2.60 B: <English ((going)) to California> --
wrapped onto a second line
2.70 3.20 A1: it's +probably+ fine [[whispered]]
3.30 3.90 B: {breath}
"""


@pytest.fixture(scope="module")
def callhome_tree(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("callhome")
    audio, trans = root / "LDC97S42" / "data", root / "LDC97T14" / "transcrpt"
    paths = {"root": str(root), "audio": str(root / "LDC97S42"), "trans": str(root / "LDC97T14")}
    paths["sph4065"] = put(str(audio / "train" / "en_4065.sph"), coding="pcm,embedded-shorten-v2.00")
    paths["sph6467"] = put(str(audio / "evltest" / "en_6467.sph"), coding="ulaw")
    paths["sph5001"] = put(str(audio / "devtest" / "en_5001.sph"), coding="pcm")
    paths["txt4065"] = put(str(trans / "train" / "en_4065.txt"), CALLHOME_4065)
    paths["txt6467"] = put(str(trans / "evaltest" / "6467.txt"), "0.10 1.00 A: hello\n1.10 2.00 B: %mm hi\n")
    paths["txt5000"] = put(str(trans / "devtest" / "en_5000.txt"), "0.10 1.00 A: hello\n")
    put(str(root / "LDC97T14" / "doc" / "readme.txt"), "not a transcript\n")
    return paths


@pytest.fixture(scope="module")
def callhome(callhome_tree):
    source = CallHomeSource(CallHomeConfig(audio=[callhome_tree["audio"]], transcripts=[callhome_tree["trans"]]))
    return source, source.discover()


def test_callhome_discover_both_naming_styles(callhome, callhome_tree) -> None:
    _, d = callhome
    assert [(t.origin_id, t.metadata) for t in d.tasks] == [
        ("en_4065", {"split": "train"}),
        ("en_6467", {"split": "evaltest"}),  # the audio release spells it "evltest"
    ]
    assert task_of(d, "en_6467").transcript_path == callhome_tree["txt6467"]
    assert sorted((r.item_id, r.reason, r.detail) for r in d.rejects) == [
        ("en_5000", "transcript_without_audio", callhome_tree["txt5000"]),
        ("en_5001", "audio_without_transcript", callhome_tree["sph5001"]),
    ]
    assert task_of(d, "en_4065").license == "LDC User Agreement (LDC97S42/LDC97T14)"


def test_callhome_shorten_audio_markup_and_wrapped_lines(callhome) -> None:
    source, d = callhome
    recording, tr = load(source, task_of(d, "en_4065"))
    assert recording.num_channels == 2 and recording.duration_s == pytest.approx(AUDIO_S)
    assert recording.encoding == "shorten"
    assert [(u.speaker_id, u.channel, u.text) for u in tr.utterances] == [
        ("callhome-en_4065-A", 0, "um hello Mary, how are you?"),
        ("callhome-en_4065-B", 1, "going to California wrapped onto a second line"),
        ("callhome-en_4065-A1", 0, "it's probably fine"),
    ]
    assert tr.utterances[1].text_raw == "<English ((going)) to California> -- wrapped onto a second line"
    assert [(s.speaker_id, s.label, s.channel, s.role) for s in tr.speakers] == [
        ("callhome-en_4065-A", "A", 0, "A"),
        ("callhome-en_4065-A1", "A1", 0, "A"),
        ("callhome-en_4065-B", "B", 1, "B"),
    ]
    assert [(r.item_id, r.reason) for r in tr.rejects] == [("callhome-en_4065:6", "utterance_empty_text")]


def test_callhome_mulaw_file_and_default_transcript_dirs(callhome_tree) -> None:
    source = CallHomeSource(CallHomeConfig(audio=[callhome_tree["root"]]))
    d = source.discover()
    assert [t.origin_id for t in d.tasks] == ["en_4065", "en_6467"]
    recording, tr = load(source, task_of(d, "en_6467"))
    assert recording.encoding == "ulaw"
    assert [u.text for u in tr.utterances] == ["hello", "mm hi"]
    assert tr.rejects == []
