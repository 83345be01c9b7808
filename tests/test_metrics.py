"""Scoring functions on hand-built references with known answers."""
from __future__ import annotations

import math

import pytest
from pyannote.core import Annotation, Segment

from stages.metrics import (
    annotation_from_segments,
    diarization_metrics,
    match_times,
    normalize_text,
    read_rttm,
    read_stm,
    turn_metrics,
    wer_cer,
    write_rttm,
)

REF = [("A", 0.0, 4.0), ("B", 4.5, 8.0), ("A", 8.2, 12.0), ("B", 12.5, 15.0)]


def ann(segments, uri="m1"):
    return annotation_from_segments(uri, segments)


def test_perfect_hypothesis_with_other_labels_scores_zero():
    hyp = ann([("spk7" if s == "A" else "spk3", a, b) for s, a, b in REF])
    for collar in (0.0, 0.25):
        d = diarization_metrics(ann(REF), hyp, collar=collar)
        assert d["der"] == 0 and d["missed_s"] == d["false_alarm_s"] == d["confusion_s"] == 0
    assert diarization_metrics(ann(REF), hyp, collar=0.0)["total_s"] == pytest.approx(13.8)


def test_one_swapped_segment_is_confusion_and_collar_is_per_side():
    hyp = ann([("x", 0.0, 4.0), ("y", 4.5, 8.0), ("y", 8.2, 12.0), ("y", 12.5, 15.0)])
    d0 = diarization_metrics(ann(REF), hyp, collar=0.0)
    assert d0["confusion_s"] == pytest.approx(3.8) and d0["total_s"] == pytest.approx(13.8)
    assert d0["der"] == pytest.approx(3.8 / 13.8) and d0["missed"] == 0 and d0["false_alarm"] == 0
    # ±0.25 s around each of the 8 reference boundaries: every segment loses 0.5 s.
    d = diarization_metrics(ann(REF), hyp, collar=0.25)
    assert d["total_s"] == pytest.approx(11.8) and d["confusion_s"] == pytest.approx(3.3)
    assert d["der"] == pytest.approx(3.3 / 11.8) and d["confusion"] == pytest.approx(3.3 / 11.8)


def test_missed_and_false_alarm_seconds():
    # B's last segment missed entirely, and a false alarm in 15.5-16.5.
    hyp = ann([("x", 0.0, 4.0), ("y", 4.5, 8.0), ("x", 8.2, 12.0), ("x", 15.5, 16.5)])
    d = diarization_metrics(ann(REF), hyp, collar=0.0, uem=Segment(0, 17))
    assert d["missed_s"] == pytest.approx(2.5) and d["false_alarm_s"] == pytest.approx(1.0)
    assert d["confusion_s"] == pytest.approx(0.0, abs=1e-9)
    assert d["der"] == pytest.approx(3.5 / 13.8)
    empty = diarization_metrics(ann(REF), Annotation(uri="m1"), collar=0.0)
    assert empty["der"] == pytest.approx(1.0) and empty["missed"] == pytest.approx(1.0)


def test_overlap_scoring_and_skip_overlap():
    ref = ann([("A", 0, 4), ("B", 3, 6)])
    hyp = ann([("x", 0, 4), ("y", 4, 6)])  # misses B's overlapped second
    d = diarization_metrics(ref, hyp, collar=0.0)
    assert d["total_s"] == pytest.approx(7.0) and d["missed_s"] == pytest.approx(1.0)
    skipped = diarization_metrics(ref, hyp, collar=0.0, skip_overlap=True)
    assert skipped["der"] == 0 and skipped["total_s"] == pytest.approx(5.0)


def test_same_speaker_overlaps_in_a_hypothesis_count_once():
    hyp = ann([("x", 0, 4), ("x", 2, 4), ("y", 4.5, 8), ("x", 8.2, 12), ("y", 12.5, 15)])
    assert diarization_metrics(ann(REF), hyp, collar=0.0)["der"] == 0


def test_rttm_round_trip_and_malformed_line(tmp_path):
    path = tmp_path / "a.rttm"
    write_rttm({"m2": ann([("B", 1, 2)], "m2"), "m1": ann(REF)}, str(path))
    lines = path.read_text().splitlines()
    assert lines[0] == "SPEAKER m1 1 0.000 4.000 <NA> <NA> A <NA> <NA>" and len(lines) == 5
    back = read_rttm(str(path))
    assert sorted(back) == ["m1", "m2"]
    assert sorted((s.start, s.end, lbl) for s, _, lbl in back["m1"].itertracks(yield_label=True)) == \
        sorted((a, b, s) for s, a, b in REF)
    # two speakers on exactly the same time span both survive
    (tmp_path / "b.rttm").write_text("SPEAKER x 1 0 1 <NA> <NA> A <NA> <NA>\nSPEAKER x 1 0 1 <NA> <NA> B <NA> <NA>\n"
                                     "SPKR-INFO x 1 <NA> <NA> <NA> unknown A <NA> <NA>\n")
    assert sorted(read_rttm(str(tmp_path / "b.rttm"))["x"].labels()) == ["A", "B"]
    (tmp_path / "c.rttm").write_text("SPEAKER x 1 0 1 <NA> <NA> A <NA> <NA>\nSPEAKER x 1 zero 1 <NA> <NA> A\n")
    with pytest.raises(ValueError, match=r"c.rttm:2: malformed RTTM"):
        read_rttm(str(tmp_path / "c.rttm"))


def test_read_stm(tmp_path):
    path = tmp_path / "a.stm"
    path.write_text(
        ";; comment\n"
        "m1 1 B 4.5 8.0 <o,f0,male> yes it is\n"
        "m1 1 A 0.0 4.0 hello there, is it?\n"
        "m1 1 inter_segment_gap 4.0 4.5\n"
        "m2 A 1 0.5 1.0\n"
    )
    got = read_stm(str(path))
    assert got["m1"] == [("A", 0.0, 4.0, "hello there, is it?"), ("B", 4.5, 8.0, "yes it is")]
    assert got["m2"] == [("1", 0.5, 1.0, "")]
    path.write_text("m1 1 A 3.0 2.0 backwards\n")
    with pytest.raises(ValueError, match="a.stm:1"):
        read_stm(str(path))


def test_normalization_keeps_indic_scripts():
    assert normalize_text("  Hello, World!  It's   mm-hmm.") == "hello world it s mm hmm"
    assert normalize_text("नमस्ते, दुनिया।") == "नमस्ते दुनिया"
    assert normalize_text("అవును. సరే!") == "అవును సరే"


def test_wer_cer_known_values():
    r = wer_cer(["The cat sat on the mat."], ["the cat sit on mat"])
    assert (r["substitutions"], r["deletions"], r["insertions"], r["hits"]) == (1, 1, 0, 4)
    assert r["wer"] == pytest.approx(2 / 6) and r["ref_words"] == 6
    # "sat"→"sit" is one character, "the " four deleted ones (the space counts): 5 of 22
    assert r["cer"] == pytest.approx(5 / 22) and r["ref_chars"] == 22
    two = wer_cer(["a b c", "d e"], ["a x c", "d e f"])
    assert two["wer"] == pytest.approx(2 / 5) and two["insertions"] == 1
    assert wer_cer(["नमस्ते दुनिया।"], ["नमस्ते दुनिया"])["wer"] == 0
    assert wer_cer(["అవును"], ["అవును సరే"])["wer"] == pytest.approx(1.0)
    none = wer_cer(["..."], ["something"])
    assert none["wer"] is None and none["insertions"] == 1
    with pytest.raises(ValueError):
        wer_cer(["a"], [])


def test_turn_metrics_matching():
    r = turn_metrics([1.0, 5.0, 9.0], [1.2, 5.5, 20.0])
    assert r["matched"] == 2 and r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3) and r["mean_abs_time_error_s"] == pytest.approx(0.35)
    # one-to-one: two hypotheses near one reference transfer match once
    r = turn_metrics([3.0], [2.9, 3.1])
    assert r["matched"] == 1 and r["precision"] == 0.5 and r["recall"] == 1.0
    # greedy nearest-first would pair 0.55 with 0.3 and match only once; the optimum matches twice
    assert match_times([0.0, 0.55], [0.3, 0.9], 0.35) == [(0, 0), (1, 1)]
    # gap errors over matched transfers
    r = turn_metrics([1.0, 4.0], [1.1, 4.2], 0.5, ref_gaps=[0.3, -0.5], hyp_gaps=[0.4, None])
    assert r["mean_abs_gap_error_s"] == pytest.approx(0.1)


def test_turn_metrics_edge_cases():
    both = turn_metrics([], [])
    assert both["precision"] is None and both["recall"] is None and both["f1"] is None
    only_hyp = turn_metrics([], [2.0])
    assert only_hyp["precision"] == 0 and only_hyp["recall"] is None and only_hyp["f1"] == 0
    only_ref = turn_metrics([2.0], [])
    assert only_ref["precision"] is None and only_ref["recall"] == 0 and only_ref["f1"] == 0
    edge = turn_metrics([1.0], [1.5], tolerance_s=0.5)
    assert edge["matched"] == 1
    assert turn_metrics([1.0], [1.51], tolerance_s=0.5)["matched"] == 0
    assert turn_metrics([1.0], [1.0], tolerance_s=0)["f1"] == 1.0
    with pytest.raises(ValueError):
        turn_metrics([1.0], [1.0], tolerance_s=-1)
    assert math.isclose(turn_metrics([1, 2], [1])["f1"], 2 / 3)
