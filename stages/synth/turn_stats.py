"""Turn-taking statistics for synthetic timelines: the distribution of floor-transfer offsets
(gap_s; negative = overlap) and the backchannel rate, measured on the corpus's real
conversations when it has enough of them, else a documented default.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

# Offsets are kept inside these bounds, measured or not: longer silences are not turn-taking
# (the segmenter's max_gap_s is 5 s), and overlaps longer than a second are rare interruptions.
GAP_MIN_S = -1.0
GAP_MAX_S = 2.0
MIN_TRANSFERS = 50  # fewer measured floor transfers than this: use DEFAULT
# Sources whose timing is itself made up: never learned from.
SYNTHETIC_SOURCES = ("synthetic",)
SYNTHETIC_PREFIXES = ("demo",)  # the demo's espeak calls and podcast episodes


@dataclass(frozen=True)
class GapDistribution:
    """Floor-transfer offsets in seconds: resampled from measured `samples` when given, else a
    normal(`mean_s`, `sd_s`) clipped to [`min_s`, `max_s`]. `backchannel_per_min`: listener
    backchannels per minute of the other speaker's speech."""

    mean_s: float = 0.2
    sd_s: float = 0.45
    min_s: float = GAP_MIN_S
    max_s: float = GAP_MAX_S
    samples: Optional[tuple[float, ...]] = None
    backchannel_per_min: float = 3.0
    origin: str = "default"  # where the figures come from, recorded in each dialogue's sidecar
    info: dict = field(default_factory=dict, compare=False)

    def sample(self, rng: np.random.Generator) -> float:
        """One offset in seconds (negative = overlap)."""
        if self.samples:
            value = self.samples[int(rng.integers(len(self.samples)))]
        else:
            value = float(rng.normal(self.mean_s, self.sd_s))
        return float(min(self.max_s, max(self.min_s, value)))

    def describe(self) -> dict:
        d = {"origin": self.origin, "backchannel_per_min": round(self.backchannel_per_min, 3),
             "min_s": self.min_s, "max_s": self.max_s}
        if self.samples:
            arr = np.asarray(self.samples)
            d.update(n=len(arr), median_s=round(float(np.median(arr)), 3),
                     overlap_fraction=round(float(np.mean(arr < 0)), 3))
        else:
            d.update(mean_s=self.mean_s, sd_s=self.sd_s)
        d.update(self.info)
        return d


# Default from the turn-taking literature. Stivers et al. (2009, PNAS 106:10587, "Universals
# and cultural variation in turn-taking in conversation") find the offsets of answers peaking
# at 0-200 ms in all ten languages studied (English mean ≈ 240 ms); Levinson & Torreira (2015,
# Front. Psychol. 6:731) summarize the modal gap as ≈ 200 ms. Heldner & Edlund (2010, J.
# Phonetics 38:555, "Pauses, gaps and overlaps in conversations") report that ~40 % of
# between-speaker intervals are overlaps and that most gaps and overlaps are under one second.
# A normal with mean 0.2 s and sd 0.45 s, clipped to [-1, 2] s, has that 200 ms median, about
# a third of transfers overlapped (a little under Heldner & Edlund, whose short overlaps include
# backchannel onsets that we place separately) and 95 % of offsets within ±0.9 s of the mean.
# Backchannels: Stolcke et al. (2000, Computational Linguistics 26:339) label 19 % of
# Switchboard's utterances as backchannels; with both sides talking at roughly 10-15 utterances
# a minute that is a few per minute of the other's speech: 3/min is used.
DEFAULT = GapDistribution(mean_s=0.2, sd_s=0.45, backchannel_per_min=3.0, origin="default")


def _excluded(source: str) -> bool:
    return source in SYNTHETIC_SOURCES or source.startswith(SYNTHETIC_PREFIXES)


def from_catalog(out: str, min_transfers: int = MIN_TRANSFERS) -> Optional[GapDistribution]:
    """Measured gap distribution and backchannel rate of the committed corpus at `out` (local
    path or s3://), from real sources only; None when there is no corpus or too few floor
    transfers to trust."""
    from catalog.store import Store
    from catalog.versions import current
    from catalog.views import connect

    if "://" not in out and not os.path.isdir(out):
        return None  # Store() would create it
    store = Store(out)
    if current(store) is None:
        return None
    con = connect(store)
    try:
        rows = con.execute(
            "select source, gap_s from turns where is_floor_transfer and gap_s is not null"
        ).fetchall()
        gaps = [float(g) for s, g in rows if not _excluded(s) and math.isfinite(g)]
        if len(gaps) < min_transfers:
            return None
        per_speaker = con.execute(
            """select source, recording_id, speaker_id,
                      count(*) filter (where is_backchannel) as n_bc,
                      coalesce(sum(duration_s) filter (where not is_backchannel), 0) as floor_s
               from turns group by all"""
        ).fetchall()
    finally:
        con.close()
    rate = _backchannel_rate([r for r in per_speaker if not _excluded(r[0])])
    sources = sorted({s for s, _ in rows if not _excluded(s)})
    clipped = tuple(min(GAP_MAX_S, max(GAP_MIN_S, g)) for g in gaps)
    return GapDistribution(
        samples=clipped,
        backchannel_per_min=DEFAULT.backchannel_per_min if rate is None else rate,
        origin="catalog",
        info={"sources": sources},
    )


def _backchannel_rate(rows: Sequence[tuple[str, str, str, int, float]]) -> Optional[float]:
    """Backchannels per minute of the other speakers' floor speech, over all recordings."""
    floor_by_rec: dict[str, float] = {}
    for _, rec, _, _, floor_s in rows:
        floor_by_rec[rec] = floor_by_rec.get(rec, 0.0) + float(floor_s)
    n_bc = 0
    other_s = 0.0
    for _, rec, _, bc, floor_s in rows:
        n_bc += int(bc)
        other_s += floor_by_rec[rec] - float(floor_s)
    if other_s < 60.0:
        return None  # under a minute of speech says nothing about a rate
    return n_bc / (other_s / 60.0)
