"""Timelines of synthesized turns: gaps drawn from the distribution, bounded overlaps, one voice
per channel, the mono mix, determinism, backchannels inside the other's turns, and the
segmenter reading the result back as the same floor transfers."""
from __future__ import annotations

import numpy as np
import pytest

from catalog.schema import Conversation, Recording, Speaker, Utterance
from stages.config import SegmentConfig
from stages.corpus.segment import segment
from stages.synth.timeline import BC_MARGIN_S, assemble
from stages.synth.turn_stats import DEFAULT, GapDistribution

SR = 1000  # the timeline is rate-agnostic; a low rate keeps long tests small


def tone(seconds: float, level: float, sr: int = SR) -> np.ndarray:
    n = int(round(seconds * sr))
    return (level * (0.6 + 0.4 * np.sin(np.arange(n) / 7.0))).astype(np.float32)


def alternating(n: int, rng: np.random.Generator, lo: float = 2.0, hi: float = 4.0):
    return [(i % 2, tone(float(rng.uniform(lo, hi)), 0.3 + 0.1 * (i % 2)), f"turn {i}") for i in range(n)]


def test_gaps_follow_the_distribution():
    turns = alternating(600, np.random.default_rng(1))
    tl = assemble(turns, SR, DEFAULT, np.random.default_rng(2), bc_rate=0)
    placed = np.array(tl.gaps())
    assert len(placed) == 599
    drawn = np.array([DEFAULT.sample(np.random.default_rng(99 + k)) for k in range(5000)])
    qs = [0.1, 0.25, 0.5, 0.75, 0.9]
    assert np.allclose(np.quantile(placed, qs), np.quantile(drawn, qs), atol=0.08)
    assert abs(np.median(placed) - 0.2) < 0.06
    # about a third overlapped (normal(0.2, 0.45): P(x < 0) = 0.33), none beyond the clip bounds
    assert 0.27 < np.mean(placed < 0) < 0.39
    assert placed.min() >= -1.0 - 1e-9 and placed.max() <= 2.0 + 1e-9


def test_empirical_samples_are_resampled():
    measured = GapDistribution(samples=(-0.3, 0.1, 0.25, 0.7), origin="catalog")
    tl = assemble(alternating(200, np.random.default_rng(3)), SR, measured, np.random.default_rng(4), bc_rate=0)
    placed = np.round(tl.gaps(), 3)
    assert set(placed) == {-0.3, 0.1, 0.25, 0.7}
    assert measured.describe()["n"] == 4 and measured.describe()["overlap_fraction"] == 0.25


def test_overlaps_are_bounded_and_speakers_never_overlap_themselves():
    heavy = GapDistribution(mean_s=-0.9, sd_s=0.2)  # nearly always a long overlap
    rng = np.random.default_rng(5)
    turns = [(int(rng.integers(3)), tone(float(rng.uniform(0.3, 3.0)), 0.2), "") for _ in range(300)]
    tl = assemble(turns, SR, heavy, np.random.default_rng(6), bc_rate=0)
    floor = [p for p in tl.placements if not p.is_backchannel]
    assert [p.turn_index for p in sorted(floor, key=lambda p: p.turn_index)] == list(range(300))
    by_index = sorted(floor, key=lambda p: p.turn_index)
    overlaps = 0
    for a, b in zip(by_index, by_index[1:]):
        overlap = a.end_s - b.start_s
        half = 0.5 * min(a.end_s - a.start_s, b.end_s - b.start_s)
        assert overlap <= half + 1.0 / SR
        overlaps += overlap > 0
        assert b.start_s >= a.start_s  # the script's order is the floor order
    assert overlaps > 100
    for spk in range(3):
        own = sorted((p for p in floor if p.speaker == spk), key=lambda p: p.start_s)
        assert all(x.end_s <= y.start_s + 1e-9 for x, y in zip(own, own[1:]))


def test_channels_carry_only_their_speaker_and_mono_is_the_mix():
    turns = [(0, tone(1.5, 0.7), "a"), (1, tone(2.0, 0.8), "b"), (0, tone(1.0, 0.9), "c"), (1, tone(1.2, 0.6), "d")]
    overlapping = GapDistribution(mean_s=-0.4, sd_s=0.0)
    tl = assemble(turns, SR, overlapping, np.random.default_rng(7), bc_rate=0)
    assert tl.two_channel.shape[0] == 2 and tl.mono.shape == (tl.two_channel.shape[1],)
    for p in tl.placements:
        a, b = round(p.start_s * SR), round(p.end_s * SR)
        assert np.array_equal(tl.two_channel[p.speaker, a:b], turns[p.turn_index][1])
    for spk in (0, 1):
        mask = np.zeros(tl.two_channel.shape[1], dtype=bool)
        for p in tl.placements:
            if p.speaker == spk:
                mask[round(p.start_s * SR):round(p.end_s * SR)] = True
        assert not np.any(tl.two_channel[spk, ~mask])
    mix = tl.two_channel.sum(axis=0)
    assert mix.max() > 1.0 and tl.mix_gain < 1.0  # the overlaps sum past full scale...
    assert np.allclose(tl.mono, mix * tl.mix_gain, atol=1e-6)
    assert np.max(np.abs(tl.mono)) <= 0.99 + 1e-6  # ...and the mix is scaled, not clipped
    assert tl.placements[0].start_s == pytest.approx(0.3) and tl.duration_s == pytest.approx(tl.placements[-1].end_s + 0.3, abs=2e-3)


def test_same_seed_same_timeline():
    turns = alternating(20, np.random.default_rng(8))
    bcs = [[(tone(0.4, 0.2), "yeah")], [(tone(0.5, 0.2), "mm hmm")]]
    a = assemble(turns, SR, DEFAULT, np.random.default_rng(9), bcs, bc_rate=20)
    b = assemble(turns, SR, DEFAULT, np.random.default_rng(9), bcs, bc_rate=20)
    c = assemble(turns, SR, DEFAULT, np.random.default_rng(10), bcs, bc_rate=20)
    assert a.placements == b.placements and np.array_equal(a.two_channel, b.two_channel)
    assert a.placements != c.placements


def test_backchannels_fall_inside_the_others_long_turns():
    rng = np.random.default_rng(11)
    turns = [(i % 2, tone(float(rng.uniform(5, 9)) if i % 2 else float(rng.uniform(1, 2)), 0.3), f"t{i}") for i in range(20)]
    bcs = [[(tone(0.5, 0.1), "yeah"), (tone(0.7, 0.1), "uh huh")], [(tone(0.4, 0.1), "right")]]
    tl = assemble(turns, SR, DEFAULT, np.random.default_rng(12), bcs, bc_rate=12)
    placed = [p for p in tl.placements if p.is_backchannel]
    floor = [p for p in tl.placements if not p.is_backchannel]
    assert len(placed) >= 10
    for bc in placed:
        holder = [f for f in floor if f.speaker != bc.speaker
                  and f.start_s + BC_MARGIN_S - 1e-9 <= bc.start_s and bc.end_s <= f.end_s - BC_MARGIN_S + 1e-9]
        assert holder and holder[0].end_s - holder[0].start_s >= 3.0
        assert bc.text in ("yeah", "uh huh") and bc.speaker == 0  # only speaker 1's turns are long
        own = [f for f in floor if f.speaker == bc.speaker]
        assert all(bc.end_s <= f.start_s or bc.start_s >= f.end_s for f in own)
        a = round(bc.start_s * SR)
        assert np.any(tl.two_channel[bc.speaker, a:a + 100]) and not np.any(tl.two_channel[bc.speaker, a - 5:a])
    none = assemble(turns, SR, DEFAULT, np.random.default_rng(12), bcs, bc_rate=0)
    assert not any(p.is_backchannel for p in none.placements)


def _conversation(tl) -> Conversation:
    rec = Recording("synthetic-x", "synthetic", "x", "x", "synthetic", "en", SR, 2, tl.duration_s,
                    "pcm_f32le", "0" * 64, "recordings/x.flac", SR, "wideband", SR / 2)
    speakers = [Speaker(f"synthetic-x-{lab}", "synthetic-x", "synthetic", lab, ch, lab.lower()) for ch, lab in ((0, "USER"), (1, "AI"))]
    utts = [Utterance(f"synthetic-x-{i:05d}", "synthetic-x", "synthetic", speakers[p.speaker].speaker_id, p.speaker,
                      round(p.start_s, 3), round(p.end_s, 3), p.text, p.text, "en")
            for i, p in enumerate(tl.placements)]
    return Conversation(rec, speakers, utts)


def test_segmenter_reads_back_the_placed_timing():
    rng = np.random.default_rng(13)
    turns = [(i % 2, tone(float(rng.uniform(3.5, 6)), 0.3), f"this is a full sentence number {i}") for i in range(12)]
    bcs = [[(tone(0.5, 0.1), "yeah")], [(tone(0.6, 0.1), "okay")]]
    tl = assemble(turns, SR, DEFAULT, np.random.default_rng(14), bcs, bc_rate=10)
    seg = segment(_conversation(tl), SegmentConfig(merge_pause_s=0.2))
    floor = [t for t in seg.turns if not t.is_backchannel]
    assert len(floor) == 12
    assert sum(t.is_backchannel for t in seg.turns) == sum(p.is_backchannel for p in tl.placements) > 0
    assert [t.gap_s for t in floor[1:]] == pytest.approx(tl.gaps(), abs=2e-3)
    assert len(seg.pairs) == 11


def test_gap_statistics_from_a_real_corpus(demo_copy, tmp_path):
    from tests.pipelines.test_build import build

    from stages.synth.turn_stats import from_catalog

    assert from_catalog(str(tmp_path / "missing")) is None and not (tmp_path / "missing").exists()
    out = tmp_path / "corpus"
    build(demo_copy, out)
    import duckdb

    con = duckdb.connect(str(out / "catalog.duckdb"), read_only=True)
    gaps = sorted(g for (g,) in con.execute("select gap_s from turns where is_floor_transfer").fetchall())
    n_bc = con.execute("select count(*) from turns where is_backchannel").fetchone()[0]
    measured = from_catalog(str(out), min_transfers=10)
    assert measured is not None and measured.origin == "catalog" and measured.info["sources"] == ["fisher"]
    assert sorted(measured.samples) == pytest.approx([min(2.0, max(-1.0, g)) for g in gaps])
    assert n_bc > 0 and measured.backchannel_per_min > 0
    assert from_catalog(str(out), min_transfers=len(gaps) + 1) is None  # too few to trust
    draws = [measured.sample(np.random.default_rng(k)) for k in range(200)]
    assert set(np.round(draws, 6)) <= set(np.round(measured.samples, 6))
