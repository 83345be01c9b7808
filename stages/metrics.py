"""Scoring a build against references: RTTM/STM files, DER, WER/CER and floor-transfer timing.

Pure functions over pyannote.core Annotations and plain lists. Conventions, stated once:

- `collar` is per side, as NIST's md-eval (`-c 0.25`) and dscore use it: 0.25 removes
  ±0.25 s around every reference boundary. pyannote.metrics' own `collar` is the total width
  of that window, so it receives twice ours.
- Text is compared after `normalize_text`: Unicode NFKC, lower case, every punctuation and
  symbol character (Unicode categories P* and S*: apostrophes, hyphens, the Devanagari danda,
  ...) replaced by a space, whitespace collapsed. Letters and combining marks are kept, so
  Devanagari and Telugu words stay whole (their vowel signs are marks). Numbers are not spelled
  out: "15" and "fifteen" differ. CER counts the spaces between words as characters (jiwer's
  default).
- Floor transfers match one-to-one within the tolerance by an optimal assignment (Hungarian,
  scipy's linear_sum_assignment) that first maximizes the number of matches and then minimizes
  their summed distance; greedy matching can lose a match when transfers are close together.
"""
from __future__ import annotations

import math
import unicodedata
from typing import Iterable, Optional, Sequence

import jiwer
import numpy as np
from pyannote.core import Annotation, Segment, Timeline
from scipy.optimize import linear_sum_assignment

StmEntry = tuple[str, float, float, str]  # speaker, start_s, end_s, transcript


# --- reference files ------------------------------------------------------------------------


def _records(path: str) -> Iterable[tuple[int, list[str]]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith((";;", "#")):
                yield n, line.split()


def read_rttm(path: str) -> dict[str, Annotation]:
    """SPEAKER lines of an RTTM file → one Annotation per uri (other record types are skipped).
    Raises ValueError naming the line on a malformed SPEAKER line."""
    out: dict[str, Annotation] = {}
    for n, f in _records(path):
        if f[0] != "SPEAKER":
            continue
        try:
            if len(f) < 8:
                raise ValueError("fewer than 8 fields")
            uri, start, dur, spk = f[1], float(f[3]), float(f[4]), f[7]
            if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur < 0:
                raise ValueError("bad start or duration")
        except ValueError as e:
            raise ValueError(f"{path}:{n}: malformed RTTM line ({e})") from None
        if dur == 0:
            continue
        ann = out.setdefault(uri, Annotation(uri=uri))
        ann[Segment(start, start + dur), f"t{n}"] = spk  # one track per line: same-time segments stay
    return out


def write_rttm(annotation_by_uri: dict[str, Annotation], path: str) -> None:
    """Annotations → RTTM SPEAKER lines, uris in sorted order, times in milliseconds."""
    lines = []
    for uri in sorted(annotation_by_uri):
        for seg, _, label in annotation_by_uri[uri].itertracks(yield_label=True):
            lines.append(f"SPEAKER {uri} 1 {seg.start:.3f} {seg.duration:.3f} <NA> <NA> {label} <NA> <NA>")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))


def read_stm(path: str) -> dict[str, list[StmEntry]]:
    """STM lines `uri channel speaker start end [<label>] transcript` → entries per uri in time
    order. `inter_segment_gap` lines (non-speech) are skipped; ValueError on a malformed line."""
    out: dict[str, list[StmEntry]] = {}
    for n, f in _records(path):
        try:
            if len(f) < 5:
                raise ValueError("fewer than 5 fields")
            uri, spk, start, end = f[0], f[2], float(f[3]), float(f[4])
            if not (math.isfinite(start) and math.isfinite(end)) or end < start:
                raise ValueError("bad times")
        except ValueError as e:
            raise ValueError(f"{path}:{n}: malformed STM line ({e})") from None
        words = f[5:]
        if words and words[0].startswith("<") and words[0].endswith(">"):
            words = words[1:]
        if spk.lower() == "inter_segment_gap":
            continue
        out.setdefault(uri, []).append((spk, start, end, " ".join(words)))
    for entries in out.values():
        entries.sort(key=lambda e: (e[1], e[2], e[0]))
    return out


def annotation_from_segments(uri: str, segments: Iterable[tuple[str, float, float]]) -> Annotation:
    """(speaker, start, end) triples → an Annotation (empty segments dropped)."""
    ann = Annotation(uri=uri)
    for i, (spk, start, end) in enumerate(segments):
        if end > start:
            ann[Segment(start, end), i] = spk
    return ann


# --- diarization ----------------------------------------------------------------------------


def diarization_metrics(
    reference: Annotation,
    hypothesis: Annotation,
    collar: float = 0.25,
    skip_overlap: bool = False,
    uem: Optional[Timeline | Segment] = None,
) -> dict[str, float]:
    """DER and its components (seconds and rates over the scored reference speech `total_s`).
    `uem` limits scoring to a region; without it, the extent of both annotations is scored.
    Same-speaker overlaps inside one annotation are merged first (they would count twice)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = reference.support(), hypothesis.support()
    if uem is None:
        extent = ref.get_timeline().union(hyp.get_timeline()).extent()
        uem = Timeline([extent]) if extent.duration > 0 else Timeline([Segment(0, 1)])
    elif isinstance(uem, Segment):
        uem = Timeline([uem])
    metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=skip_overlap)
    d = metric(ref, hyp, uem=uem, detailed=True)
    total = float(d["total"])
    miss, fa, conf = float(d["missed detection"]), float(d["false alarm"]), float(d["confusion"])

    def rate(x: float) -> float:
        return x / total if total > 0 else (0.0 if x == 0 else math.inf)

    return {
        "der": rate(miss + fa + conf),
        "missed": rate(miss),
        "false_alarm": rate(fa),
        "confusion": rate(conf),
        "missed_s": miss,
        "false_alarm_s": fa,
        "confusion_s": conf,
        "total_s": total,
    }


def jaccard_error_rate(reference: Annotation, hypothesis: Annotation, collar: float = 0.25,
                      uem: Optional[Timeline | Segment] = None) -> float:
    """JER (DIHARD II): 1 - mean over reference speakers of the Jaccard index of their speech and
    their optimally mapped hypothesis speaker's; every reference speaker weighs the same, so a
    quiet speaker merged into a talkative one costs as much as the reverse."""
    from pyannote.metrics.diarization import JaccardErrorRate

    ref, hyp = reference.support(), hypothesis.support()
    if isinstance(uem, Segment):
        uem = Timeline([uem])
    if not ref.labels():
        return 0.0 if not hyp.labels() else 1.0
    return float(JaccardErrorRate(collar=2 * collar)(ref, hyp, uem=uem))


# --- transcripts ----------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """The normalization WER/CER are computed after (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = (" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return " ".join("".join(kept).split())


def wer_cer(reference_texts: Sequence[str], hypothesis_texts: Sequence[str]) -> dict[str, Optional[float]]:
    """Corpus-level WER and CER of aligned (reference, hypothesis) text pairs, e.g. one
    recording's whole transcript each. Rates are None when the references hold no words."""
    if len(reference_texts) != len(hypothesis_texts):
        raise ValueError("reference and hypothesis lists differ in length")
    refs = [normalize_text(t) for t in reference_texts]
    hyps = [normalize_text(t) for t in hypothesis_texts]
    out: dict[str, Optional[float]] = {}
    if not refs:
        refs, hyps = [""], [""]
    w = jiwer.process_words(refs, hyps)
    c = jiwer.process_characters(refs, hyps)
    ref_words = w.hits + w.substitutions + w.deletions
    ref_chars = c.hits + c.substitutions + c.deletions
    out["wer"] = (w.substitutions + w.deletions + w.insertions) / ref_words if ref_words else None
    out["cer"] = (c.substitutions + c.deletions + c.insertions) / ref_chars if ref_chars else None
    out.update(
        substitutions=w.substitutions, deletions=w.deletions, insertions=w.insertions, hits=w.hits,
        ref_words=ref_words, char_errors=c.substitutions + c.deletions + c.insertions, ref_chars=ref_chars,
    )
    return out


# --- floor transfers ------------------------------------------------------------------------


def match_times(ref: Sequence[float], hyp: Sequence[float], tolerance_s: float) -> list[tuple[int, int]]:
    """Optimal one-to-one matching of times within `tolerance_s`: most matches, then least
    summed distance. Returns (ref index, hyp index) pairs in reference order."""
    if not len(ref) or not len(hyp):
        return []
    dist = np.abs(np.asarray(ref, float)[:, None] - np.asarray(hyp, float)[None, :])
    # A penalty above any sum of admissible distances makes every extra match worth more than
    # any saving in distance, so the assignment maximizes the match count first.
    penalty = tolerance_s * (min(dist.shape) + 1) + 1.0
    cost = np.where(dist <= tolerance_s, dist, penalty)
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols) if dist[r, c] <= tolerance_s)


def turn_metrics(
    ref_transfers: Sequence[float],
    hyp_transfers: Sequence[float],
    tolerance_s: float = 0.5,
    ref_gaps: Optional[Sequence[Optional[float]]] = None,
    hyp_gaps: Optional[Sequence[Optional[float]]] = None,
) -> dict[str, Optional[float]]:
    """Precision/recall/F1 of floor-transfer times matched within `tolerance_s`, the mean
    absolute time error of matched transfers and, given each transfer's gap (start minus the
    previous holder's end), the mean absolute gap error of matched transfers.

    Undefined figures are None: precision without hypothesis transfers, recall without
    reference ones, F1 when both lists are empty (F1 is 0 when only one is)."""
    if tolerance_s < 0:
        raise ValueError("tolerance_s must be >= 0")
    pairs = match_times(ref_transfers, hyp_transfers, tolerance_s)
    n_ref, n_hyp, m = len(ref_transfers), len(hyp_transfers), len(pairs)
    precision = m / n_hyp if n_hyp else None
    recall = m / n_ref if n_ref else None
    if precision is None and recall is None:
        f1 = None
    elif precision is None or recall is None or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    time_err = [abs(ref_transfers[r] - hyp_transfers[h]) for r, h in pairs]
    gap_err = []
    if ref_gaps is not None and hyp_gaps is not None:
        gap_err = [abs(ref_gaps[r] - hyp_gaps[h]) for r, h in pairs
                   if ref_gaps[r] is not None and hyp_gaps[h] is not None]
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "matched": m,
        "n_ref": n_ref,
        "n_hyp": n_hyp,
        "mean_abs_time_error_s": float(np.mean(time_err)) if time_err else None,
        "mean_abs_gap_error_s": float(np.mean(gap_err)) if gap_err else None,
    }
