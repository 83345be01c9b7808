"""Offline diarization from models that packages carry: Silero VAD for speech, resemblyzer's
speaker encoder (stages/analysis/speaker_encoder.py) for voices, and clustering judged against the
recording's own distances.

1. **Pieces.** Speech regions (given, or Silero VAD on the mix) are cut at pauses of at least
   `split_pause_s` (Silero's probability dips: VAD regions bridge the short gaps of quick
   turn-taking), then at **speaker-change points**: peaks of the cosine distance between the
   windows just before and just after each step, above the recording's own median + `change_z`
   MADs. A change point moves to the nearest word boundary (when ASR words are given as hints)
   or to the quietest 10 ms frame nearby.
2. **Embeddings.** Windows of `window_s` every `hop_s` inside each piece (never across a pause
   or a change point); a piece shorter than a window is one window of its own.
3. **Speaker count and clusters** (stages/analysis/diarize/clustering.py): pieces of at least
   `cluster_piece_s` (long ones as chunks of `max_piece_s`), each the mean of its windows,
   weighted by duration. Average-linkage partitions for every k; the weighted silhouette picks
   k >= 2, and the split is kept only if it beats `min_silhouette` and its contrast (distance
   between the two main centroids over the spread inside them) beats `min_contrast`: relative
   to this recording, never one absolute threshold. A known count (hints) or
   `min_speakers`/`max_speakers` bound it.
4. **Resegmentation.** Every `hop_s` step of speech scores each speaker's centroid with the
   window centred on it (scaled by the recording's typical margin); a Viterbi pass picks the
   speaker per step, a change costing `switch_cost` inside continuous speech and
   `switch_cost_pause` at a pause or change point. Boundaries land within a step (0.25 s) or
   exactly at a pause.
5. **Overlap.** A step whose window sits as close to a second speaker's centroid as that
   speaker's own windows typically do, while still close to its own speaker, and that borders a
   change to that second speaker, is overlapped speech: the second speaker gets a turn there
   too, so turns may overlap (the aligner flags the words spoken there `overlap`).

The result carries the figures behind the count (`silhouette`, `contrast`, speakers' shares)
so the analyzer can reject a conversation that came out as one speaker, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from stages.config import DiarizeConfig, OfflineDiarizeConfig, VadConfig, resolve_device
from stages.analysis.diarize.base import SAMPLE_RATE, Diarization, DiarizeHints, DiarizerBase, SpeakerTurn, mono_16k, sort_turns
from stages.analysis.diarize.clustering import centroids, estimate_clusters, unit, viterbi
from stages.analysis.speaker_encoder import EMBED, FRAME_S, MEL_HOP, SpeakerEncoder, level_gain
from stages.analysis.vad import SpeechSegment


@dataclass
class _Piece:
    start: int  # 10 ms frames
    end: int
    after_break: bool  # starts after a pause or a change point (not at a region start)

    @property
    def frames(self) -> int:
        return self.end - self.start


class OfflineDiarizer(DiarizerBase):
    """Diarizer backend "offline". Load once, call per recording."""

    def __init__(self, cfg: DiarizeConfig, vad_cfg: Optional[VadConfig] = None, *, threads: int = 1):
        self.cfg = cfg
        self.p: OfflineDiarizeConfig = cfg.offline
        self.vad_cfg = vad_cfg or VadConfig()
        self.encoder = SpeakerEncoder(resolve_device(cfg.device), threads=threads)
        self._vad = None
        self.win = int(round(self.p.window_s / FRAME_S))
        self.hop = max(1, int(round(self.p.hop_s / FRAME_S)))
        self.short_win = int(round(self.p.short_window_s / FRAME_S))
        self.min_win = int(round(self.p.min_window_s / FRAME_S))

    def vad(self):
        if self._vad is None:
            from stages.analysis.vad import SileroVAD

            self._vad = SileroVAD(self.vad_cfg)
        return self._vad

    # -- the pipeline ---------------------------------------------------------------------------

    def diarize(
        self, audio: np.ndarray, sample_rate: int, speech: Optional[list[SpeechSegment]] = None,
        hints: Optional[DiarizeHints] = None,
    ) -> Diarization:
        hints = hints or DiarizeHints()
        mono = mono_16k(audio, sample_rate)
        if speech is None:
            speech = self.vad()(mono, SAMPLE_RATE) if len(mono) else []
        total = len(mono) // MEL_HOP
        regions = [(max(0, int(s.start_s / FRAME_S)), min(total, int(np.ceil(s.end_s / FRAME_S)))) for s in speech]
        regions = [(a, b) for a, b in regions if b - a >= 5]
        if not regions:
            return Diarization([], {"speakers": 0})
        gain = level_gain(mono, regions)
        pieces = self._pause_pieces(mono, regions, hints)
        mels = {id(p): self.encoder.mel(_clean(mono[p.start * MEL_HOP: p.end * MEL_HOP]) * gain)[: p.frames]
                for p in pieces}
        energy = _EnergyAt(mono)
        windows = self._embed_windows(pieces, mels)
        pieces, windows, mels = self._split_at_changes(pieces, windows, mels, energy, hints)
        chunks, chunk_emb, chunk_w = self._cluster_inputs(pieces, windows)
        if not chunks:
            # Speech too short for any embedding: one speaker.
            return self._result(regions, [(p, 0) for p in pieces], [], k=1, stats={"silhouette": 0.0})
        # Embeddings relative to the recording's mean voice (VBx centres its x-vectors likewise):
        # what all the speech shares (channel, noise, the language) drops out, and what tells
        # the speakers apart is left; one voice's pieces then scatter round the origin.
        mean = np.average(chunk_emb, axis=0, weights=chunk_w) if self.p.center else np.zeros(EMBED)
        chunk_emb = unit(chunk_emb - mean)
        lo, hi = self._count_bounds(hints)
        est = estimate_clusters(
            chunk_emb, chunk_w, min_k=lo, max_k=hi, min_silhouette=self.p.min_silhouette,
            min_contrast=self.p.min_contrast, min_cluster_weight=self.p.min_cluster_share,
            min_cluster_size=self.p.min_cluster_pieces, min_cluster_seconds=self.p.min_cluster_s,
            k_penalty=self.p.k_penalty,
        )
        k = max(1, est.k)
        cent = centroids(chunk_emb, est.labels, k, chunk_w)
        steps = self._steps(pieces, windows, self._embed_windows(pieces, mels, self.short_win))
        labels, short_sims = self._resegment(steps, cent, mean)
        overlaps = self._overlaps(steps, labels, short_sims) if self.p.overlap and k > 1 else []
        stats = {"silhouette": round(est.silhouette, 4), "contrast": round(est.contrast, 4),
                 "best_split_silhouette": round(est.best_split_silhouette, 4), "clustered_pieces": len(chunks)}
        return self._result(regions, list(zip([s.piece for s in steps], labels)), overlaps, k, stats, steps)

    def _count_bounds(self, hints: DiarizeHints) -> tuple[int, int]:
        if hints.num_speakers:
            return hints.num_speakers, hints.num_speakers
        return self.cfg.min_speakers or 1, self.cfg.max_speakers or 8

    # -- 1. pieces ------------------------------------------------------------------------------

    def _pause_pieces(self, mono: np.ndarray, regions: list[tuple[int, int]], hints: DiarizeHints) -> list[_Piece]:
        """Speech regions cut at pauses of `split_pause_s` or more (Silero's probability below its
        off threshold; the VAD's own probabilities when the hints carry them)."""
        if self.p.split_pause_s <= 0:
            return [_Piece(a, b, False) for a, b in regions]
        probs = hints.activity.probs if hints.activity is not None else self.vad().frame_probabilities(mono)
        per_frame = np.interp(
            np.arange(len(mono) // MEL_HOP) * FRAME_S, (np.arange(len(probs)) + 0.5) * 512 / SAMPLE_RATE, probs
        )
        quiet = per_frame < max(self.vad_cfg.threshold - 0.15, 0.01)
        min_run = int(round(self.p.split_pause_s / FRAME_S))
        out: list[_Piece] = []
        for a, b in regions:
            start, after = a, False
            q = quiet[a:b]
            edges = np.diff(np.concatenate([[0], q.astype(np.int8), [0]]))
            for qs, qe in zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]):
                if qe - qs >= min_run and qs > 0 and qe < b - a:
                    if a + qs > start:
                        out.append(_Piece(start, a + qs, after))
                    start, after = a + qe, True
            if b > start:
                out.append(_Piece(start, b, after))
        return out

    # -- 2. windows -----------------------------------------------------------------------------

    def _window_starts(self, n: int, win: Optional[int] = None) -> list[tuple[int, int]]:
        """(offset, length) of the windows of `win` frames (default: the long scale) every hop
        over a piece of n frames; a piece shorter than a window is one window of its own."""
        win = win or self.win
        if n < self.min_win:
            return []
        if n <= win:
            return [(0, n)]
        starts = list(range(0, n - win + 1, self.hop))
        if starts[-1] + win < n:
            starts.append(n - win)  # the piece's tail gets a window of its own
        return [(s, win) for s in starts]

    def _embed_windows(self, pieces: list[_Piece], mels: dict[int, np.ndarray],
                       win: Optional[int] = None) -> dict[int, np.ndarray]:
        """Per piece: (windows, 2 + EMBED) rows of [start frame, end frame, embedding...]."""
        spans: list[tuple[int, int, int]] = []  # piece index, offset, length
        for i, p in enumerate(pieces):
            spans.extend((i, o, n) for o, n in self._window_starts(p.frames, win))
        emb = self.encoder.embed([mels[id(pieces[i])][o: o + n] for i, o, n in spans]) if spans else np.zeros((0, EMBED))
        out: dict[int, list] = {id(p): [] for p in pieces}
        for (i, o, n), e in zip(spans, emb):
            p = pieces[i]
            out[id(p)].append(np.concatenate([[p.start + o, p.start + o + n], e]))
        return {key: (np.array(rows) if rows else np.zeros((0, 2 + EMBED))) for key, rows in out.items()}

    # -- 1b. change points ----------------------------------------------------------------------

    def _split_at_changes(self, pieces: list[_Piece], windows: dict[int, np.ndarray], mels: dict[int, np.ndarray],
                          energy: "_EnergyAt", hints: DiarizeHints):
        """Split pieces at peaks of the distance between the windows before and after a step.
        Returns the pieces, their long-scale windows and their mel frames."""
        curves: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for p in pieces:
            w = windows[id(p)]
            if len(w) < 2:
                continue
            starts = w[:, 0].astype(int)
            by_start = {s: j for j, s in enumerate(starts.tolist())}
            pos, dist = [], []
            for j, s in enumerate(starts.tolist()):
                e = int(w[j, 1])
                if e - s != self.win or e not in by_start:
                    continue
                right = by_start[e]
                if int(w[right, 1]) - e != self.win:
                    continue
                pos.append(e)
                dist.append(1.0 - float(w[j, 2:] @ w[right, 2:]))
            if pos:
                curves[id(p)] = (np.array(pos), np.array(dist))
        if not curves:
            return pieces, windows, mels
        all_d = np.concatenate([d for _, d in curves.values()])
        med = float(np.median(all_d))
        mad = float(np.median(np.abs(all_d - med))) * 1.4826
        thr = max(self.p.change_min_distance, med + self.p.change_z * mad)
        word_bounds = _word_boundaries(hints.words)
        out: list[_Piece] = []
        new_windows: dict[int, np.ndarray] = {}
        new_mels: dict[int, np.ndarray] = {}
        min_len = max(self.min_win, int(round(0.3 / FRAME_S)))
        for p in pieces:
            cuts: list[int] = []
            if id(p) in curves:
                pos, dist = curves[id(p)]
                for j in range(len(pos)):
                    lo, hi = max(0, j - 2), min(len(pos), j + 3)
                    if dist[j] > thr and dist[j] >= dist[lo:hi].max():
                        cut = _snap(int(pos[j]), word_bounds, energy, radius=int(round(0.3 / FRAME_S)))
                        if cut - (cuts[-1] if cuts else p.start) >= min_len and p.end - cut >= min_len:
                            cuts.append(cut)
            if not cuts:
                out.append(p)
                new_windows[id(p)] = windows[id(p)]
                new_mels[id(p)] = mels[id(p)]
                continue
            bounds = [p.start, *cuts, p.end]
            for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
                q = _Piece(a, b, p.after_break or n > 0)
                w = windows[id(p)]
                inside = w[(w[:, 0] >= a) & (w[:, 1] <= b)] if len(w) else w
                if not len(inside) and b - a >= self.min_win:
                    mel = mels[id(p)][a - p.start: b - p.start]
                    e = self.encoder.embed([mel])[0]
                    inside = np.concatenate([[a, b], e])[None, :]
                out.append(q)
                new_windows[id(q)] = inside
                new_mels[id(q)] = mels[id(p)][a - p.start: b - p.start]
        return out, new_windows, new_mels

    # -- 3. clustering inputs ---------------------------------------------------------------------

    def _cluster_inputs(self, pieces: list[_Piece], windows: dict[int, np.ndarray]):
        """Chunks of pieces (long pieces in `max_piece_s` chunks) that shape the clusters: the mean
        of their windows, weighted by duration. Short pieces join only when too few long ones."""
        min_f = int(round(self.p.cluster_piece_s / FRAME_S))
        max_f = int(round(self.p.max_piece_s / FRAME_S))
        chunks, emb, weight = [], [], []

        def add(min_frames: int) -> None:
            for p in pieces:
                w = windows[id(p)]
                if not len(w) or p.frames < min_frames:
                    continue
                n = max(1, int(round(p.frames / max_f)))
                edges = np.linspace(p.start, p.end, n + 1)
                centres = (w[:, 0] + w[:, 1]) / 2
                for a, b in zip(edges, edges[1:]):
                    m = (centres >= a) & (centres <= b) if n > 1 else np.ones(len(w), dtype=bool)
                    if not m.any():
                        continue
                    chunks.append((a, b))
                    emb.append(unit(w[m, 2:].mean(axis=0)))
                    weight.append((b - a) * FRAME_S)

        add(min_f)
        if len(chunks) < 2:
            chunks.clear(), emb.clear(), weight.clear()
            add(self.min_win)
        if not chunks:
            return [], np.zeros((0, EMBED)), np.zeros(0)
        emb_a, w_a = np.array(emb), np.array(weight)
        if len(chunks) > self.p.max_cluster_pieces:
            # Average linkage needs all pairwise distances: long episodes cluster an evenly spaced
            # sample; every step is then scored against the sample's centroids.
            keep = np.linspace(0, len(chunks) - 1, self.p.max_cluster_pieces).round().astype(int)
            chunks = [chunks[i] for i in keep]
            emb_a, w_a = emb_a[keep], w_a[keep]
        return chunks, emb_a, w_a

    # -- 4. resegmentation ------------------------------------------------------------------------

    def _steps(self, pieces: list[_Piece], windows: dict[int, np.ndarray], short: dict[int, np.ndarray]) -> list["_Step"]:
        """`hop_s` steps over every piece, each with the long- and short-scale embeddings of the
        windows centred nearest to it (none where the piece is too short for a window)."""

        def nearest(w: np.ndarray, centre: float) -> Optional[np.ndarray]:
            if not len(w):
                return None
            return w[int(np.argmin(np.abs((w[:, 0] + w[:, 1]) / 2 - centre))), 2:]

        steps: list[_Step] = []
        for p in pieces:
            n = max(1, int(round(p.frames / self.hop)))
            edges = np.linspace(p.start, p.end, n + 1).round().astype(int)
            for j, (a, b) in enumerate(zip(edges, edges[1:])):
                if b > a:
                    steps.append(_Step(p, int(a), int(b), nearest(windows[id(p)], (a + b) / 2),
                                       nearest(short[id(p)], (a + b) / 2), j == 0 and p.after_break, j == 0))
        return steps

    def _resegment(self, steps: list["_Step"], cent: np.ndarray,
                   mean: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Viterbi over the steps: (speaker per step, short-scale similarities or None).

        Each step scores every speaker at two scales: its long window against the clusters'
        centroids, and its short window against short-scale centroids made from the short
        windows of steps whose long window is confident, so that short turns (whose embeddings
        all lean one way) are judged against their own kind. Scores are in units of the
        recording's median best-vs-second margin."""
        k = len(cent)
        if k == 1 or not steps:
            return np.zeros(len(steps), dtype=int), None
        has_l = np.array([s.emb is not None for s in steps])
        has_s = np.array([s.emb_short is not None for s in steps])
        long_sims = np.array([cent @ unit(s.emb - mean) if s.emb is not None else np.zeros(k) for s in steps])
        first = np.argmax(long_sims, axis=1)
        margin_l = _median_margin(long_sims[has_l])
        confident = has_l & has_s & (_margins(long_sims) >= margin_l)
        scores = np.where(has_l[:, None], long_sims / margin_l, 0.0)
        short_sims = None
        if confident.any() and len(np.unique(first[confident])) == k:
            short = np.array([s.emb_short if s.emb_short is not None else np.zeros(EMBED) for s in steps])
            if mean.any() and _CENTER_SHORT:
                short = np.where(has_s[:, None], unit(short - short[has_s].mean(axis=0)), 0.0)
            cent_s = centroids(short[confident], first[confident], k)
            short_sims = np.where(has_s[:, None], short @ cent_s.T, np.nan)
            margin_s = _median_margin(short_sims[has_s])
            scores = scores + np.where(has_s[:, None], np.nan_to_num(short_sims) / margin_s, 0.0)
        switch = np.array([self.p.switch_cost_pause if s.first else self.p.switch_cost for s in steps])
        return viterbi(scores, switch), short_sims

    # -- 5. overlap -------------------------------------------------------------------------------

    def _overlaps(self, steps: list["_Step"], labels: np.ndarray,
                  short_sims: Optional[np.ndarray]) -> list[tuple[int, int, int]]:
        """(start frame, end frame, speaker) of overlapped speech, from how close a step's short
        window is to a speaker other than its own, in standard deviations (z) above the mean of
        that similarity over its own speaker's steps:

        - at a change of speaker inside continuous speech (where overlaps mostly happen), the
          steps before it whose z towards the next speaker is at least `overlap_z` / 2 (up to a
          second back) are also the next speaker's, and the steps after it likewise the previous
          speaker's;
        - anywhere else (a backchannel over a turn), a step with z of at least `overlap_z`."""
        if short_sims is None:
            return []
        k = short_sims.shape[1]
        ok = ~np.isnan(short_sims).any(axis=1)
        z = np.zeros_like(short_sims)
        for lab in range(k):
            mine = ok & (labels == lab)
            if mine.sum() >= 8:
                mu, sd = short_sims[mine].mean(axis=0), short_sims[mine].std(axis=0) + 1e-6
                z[mine] = (short_sims[mine] - mu) / sd
        marked: set[tuple[int, int]] = set()
        reach = max(1, int(round(1.0 / (self.hop * FRAME_S))))
        for i in range(1, len(steps)):
            a, b = int(labels[i - 1]), int(labels[i])
            if a == b or steps[i].start - steps[i - 1].end > 1:
                continue
            for j in range(i - 1, max(-1, i - 1 - reach), -1):
                if labels[j] != a or z[j, b] < self.p.overlap_z / 2 or (j < i - 1 and steps[j + 1].start - steps[j].end > 1):
                    break
                marked.add((j, b))
            for j in range(i, min(len(steps), i + reach)):
                if labels[j] != b or z[j, a] < self.p.overlap_z / 2 or (j > i and steps[j].start - steps[j - 1].end > 1):
                    break
                marked.add((j, a))
        for i in np.nonzero(ok)[0]:
            for other in range(k):
                if other != labels[i] and z[i, other] >= self.p.overlap_z:
                    marked.add((int(i), other))
        return [(steps[i].start, steps[i].end, other) for i, other in sorted(marked)]

    # -- turns --------------------------------------------------------------------------------------

    def _result(self, regions, labelled, overlaps, k: int, stats: dict, steps: Optional[list] = None) -> Diarization:
        """Frames of every speech region take the label of the nearest labelled step (pauses inside
        a region too); runs become turns; overlap turns are added; labels are renumbered by first
        appearance."""
        if steps is None:
            marks = [((p.start + p.end) / 2, p.start, p.end, lab) for p, lab in labelled]
        else:
            marks = [((s.start + s.end) / 2, s.start, s.end, lab) for s, (_, lab) in zip(steps, labelled)]
        marks.sort()
        centres = np.array([m[0] for m in marks])
        lab_arr = np.array([m[3] for m in marks], dtype=int)
        turns: list[SpeakerTurn] = []
        for a, b in regions:
            frames = np.arange(a, b) + 0.5
            if len(centres):
                idx = np.searchsorted(centres, frames)
                left = np.clip(idx - 1, 0, len(centres) - 1)
                right = np.clip(idx, 0, len(centres) - 1)
                near = np.where(np.abs(frames - centres[left]) <= np.abs(centres[right] - frames), left, right)
                seq = lab_arr[near]
            else:
                seq = np.zeros(b - a, dtype=int)
            turns.extend(_runs(seq, a))
        for a, b, lab in overlaps:
            turns.append(SpeakerTurn(round(a * FRAME_S, 3), round(b * FRAME_S, 3), f"SPEAKER_{lab:02d}"))
        turns = _renumber(_merge(turns))
        shares: dict[str, float] = {}
        for t in turns:
            shares[t.speaker] = shares.get(t.speaker, 0.0) + t.duration_s
        whole = sum(shares.values()) or 1.0
        stats = {"speakers": len(shares), **stats,
                 "shares": {s: round(v / whole, 4) for s, v in sorted(shares.items())}}
        return Diarization(turns, stats)


import os
_CENTER_SHORT = os.environ.get("CSHORT", "1") == "1"


@dataclass
class _Step:
    piece: _Piece
    start: int
    end: int
    emb: Optional[np.ndarray]  # long scale
    emb_short: Optional[np.ndarray]
    after_break: bool
    first: bool


def _margins(sims: np.ndarray) -> np.ndarray:
    top2 = np.sort(sims, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _median_margin(sims: np.ndarray) -> float:
    """The typical gap between a step's best and second-best speaker: the unit of evidence."""
    return max(float(np.median(_margins(sims))), 0.02) if len(sims) else 1.0


def _clean(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(x, dtype=np.float32))


class _EnergyAt:
    """Frame energies (dB) read from the audio where asked, so a long recording is never copied."""

    def __init__(self, mono: np.ndarray):
        self.mono = mono
        self.frames = len(mono) // MEL_HOP

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, sl: slice) -> np.ndarray:
        lo, hi = sl.start, min(sl.stop, self.frames)
        x = _clean(self.mono[lo * MEL_HOP: hi * MEL_HOP]).astype(np.float64).reshape(hi - lo, MEL_HOP)
        return 10 * np.log10(np.mean(x**2, axis=1) + 1e-10)


def _word_boundaries(words) -> np.ndarray:
    """Frames between consecutive words (the middle of each gap, or the touching point)."""
    spans = sorted(words)
    out = [((a_end + b_start) / 2) / FRAME_S for (_, a_end), (b_start, _) in zip(spans, spans[1:]) if b_start >= a_end - 0.05]
    return np.array(out)


def _snap(frame: int, word_bounds: np.ndarray, energy: "_EnergyAt", radius: int) -> int:
    """A change point moved to the nearest word boundary within `radius` frames, else to the
    quietest frame within half of it."""
    if len(word_bounds):
        d = np.abs(word_bounds - frame)
        j = int(np.argmin(d))
        if d[j] <= radius:
            return int(round(word_bounds[j]))
    half = max(1, radius // 2)
    lo, hi = max(0, frame - half), min(len(energy), frame + half + 1)
    if hi <= lo:
        return frame
    return lo + int(np.argmin(energy[lo:hi]))


def _runs(seq: np.ndarray, offset: int) -> list[SpeakerTurn]:
    """Runs of equal labels (frames from `offset`) → turns."""
    out: list[SpeakerTurn] = []
    bounds = [0, *(np.nonzero(np.diff(seq))[0] + 1).tolist(), len(seq)]
    for i in range(len(bounds) - 1):
        s, e = (offset + bounds[i]) * FRAME_S, (offset + bounds[i + 1]) * FRAME_S
        out.append(SpeakerTurn(round(s, 3), round(e, 3), f"SPEAKER_{int(seq[bounds[i]]):02d}"))
    return out


def _merge(turns: list[SpeakerTurn], max_gap_s: float = 0.0) -> list[SpeakerTurn]:
    """Join turns of one speaker that touch or overlap."""
    out: list[SpeakerTurn] = []
    last: dict[str, int] = {}
    for t in sorted(turns, key=lambda t: (t.start_s, t.end_s)):
        j = last.get(t.speaker)
        if j is not None and t.start_s - out[j].end_s <= max_gap_s:
            out[j] = SpeakerTurn(out[j].start_s, max(out[j].end_s, t.end_s), t.speaker)
        else:
            last[t.speaker] = len(out)
            out.append(t)
    return sort_turns(out)


def _renumber(turns: list[SpeakerTurn]) -> list[SpeakerTurn]:
    order: dict[str, str] = {}
    for t in sort_turns(turns):
        order.setdefault(t.speaker, f"SPEAKER_{len(order):02d}")
    return sort_turns([SpeakerTurn(t.start_s, t.end_s, order[t.speaker]) for t in turns])
