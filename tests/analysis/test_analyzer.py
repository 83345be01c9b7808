"""stages/analysis/analyzer.py: a one-microphone recording never ends silently as one speaker; the rejects
`single_speaker` and `diarization_uncertain` carry the diarizer's figures."""
from __future__ import annotations

import json

import pytest

from catalog.schema import Recording
from stages.analysis.analyzer import check_speakers, expected_speakers
from stages.config import DiarizeConfig
from stages.analysis.diarize.base import Diarization, SpeakerTurn
from stages.errors import RejectError


def diarization(*spans: tuple[str, float, float], **stats) -> Diarization:
    turns = [SpeakerTurn(a, b, spk) for spk, a, b in spans]
    return Diarization(turns, {"speakers": len({t.speaker for t in turns}), **stats})


def recording(metadata: dict) -> Recording:
    return Recording(
        recording_id="local-x", source="local", origin_id="x", origin="/x.wav", license="", lang="en",
        native_sample_rate=16000, num_channels=1, duration_s=30.0, encoding="pcm_s16le", audio_sha256="",
        audio_path="recordings/x.flac", sample_rate=24000, bandwidth="wideband", effective_bandwidth_hz=8000.0,
        metadata_json=json.dumps(metadata),
    )


def test_one_speaker_is_a_reject_with_its_figures():
    one = diarization(("SPEAKER_00", 0.0, 20.0), silhouette=0.0, best_split_silhouette=0.18)
    with pytest.raises(RejectError) as e:
        check_speakers(one, None, DiarizeConfig())
    assert e.value.reason == "single_speaker"
    detail = json.loads(e.value.detail)
    assert detail["speakers"] == 1 and detail["best_split_silhouette"] == 0.18 and detail["shares"] == {"SPEAKER_00": 1.0}
    # The source says it is a conversation: rejected even when monologues are kept.
    with pytest.raises(RejectError, match="single_speaker"):
        check_speakers(one, 2, DiarizeConfig(single_speaker="keep"))
    # Kept: by setting, or because the source says it has one speaker.
    check_speakers(one, None, DiarizeConfig(single_speaker="keep"))
    check_speakers(one, 1, DiarizeConfig())


def test_an_implausible_second_speaker_is_diarization_uncertain():
    lopsided = diarization(("SPEAKER_00", 0.0, 29.0), ("SPEAKER_01", 29.0, 29.5))
    with pytest.raises(RejectError) as e:
        check_speakers(lopsided, None, DiarizeConfig())
    assert e.value.reason == "diarization_uncertain"
    assert json.loads(e.value.detail)["shares"]["SPEAKER_01"] < 0.03
    check_speakers(lopsided, 2, DiarizeConfig())  # a known two-speaker recording: kept
    check_speakers(lopsided, None, DiarizeConfig(min_speaker_share=0.01))
    balanced = diarization(("SPEAKER_00", 0.0, 10.0), ("SPEAKER_01", 10.0, 14.0))
    check_speakers(balanced, None, DiarizeConfig())
    panel = diarization(("SPEAKER_00", 0.0, 10.0), ("SPEAKER_01", 10.0, 20.0), ("SPEAKER_02", 20.0, 20.2))
    check_speakers(panel, None, DiarizeConfig())  # a quiet third voice in a panel is plausible


def test_expected_speakers_from_the_source():
    assert expected_speakers(recording({"speakers": 2})) == 2
    assert expected_speakers(recording({})) is None
    assert expected_speakers(recording({"speakers": "two"})) is None
    assert expected_speakers(recording({"speakers": 0})) is None
