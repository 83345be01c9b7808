"""python -m pipelines.evaluate --reference refs/ --out ./corpus [--collar 0.25] [--tolerance 0.5] [--json report.json]

Scores a built corpus against reference RTTM (who spoke when) and STM (who said what) files:
DER with missed speech, false alarm and speaker confusion, DER outside overlapped speech and
JER (pyannote.metrics), the speaker-count error, WER and CER (jiwer), and floor transfers
(precision/recall/F1 within a tolerance, time and gap errors). A reference whose recording was
rejected (e.g. `single_speaker`) is listed with the reason.

Matching: every `*.rttm` and `*.stm` file under --reference is read (a file may hold several
uris). A recording of the corpus matches a reference uri when, first to last, the file stem of
its `origin` (a path or URL: "/data/ep1.wav" and "http://host/audio/ep1.wav?x=1" both give
"ep1"), its `origin_id`, the file stem of the `audio_url` in its metadata (a podcast episode's
enclosure; podcasts keep the download under a hashed name as `origin`) or the episode `guid` in
its metadata equals the uri. Recordings without a reference are ignored.

Per recording: the hypothesis speakers are the `utterances`' speaker_id, its transcript their
text in time order, its floor transfers the start times of `turns` with is_floor_transfer. The
reference's floor transfers come from its STM lines run through the same turn segmentation as
the build (the committed build's `segment` settings; defaults if none are recorded), so the
backchannel and pause rules are the same on both sides. Without an STM, the RTTM segments are
used and no backchannel can be recognised. Scoring covers [0, recording duration].
Collar is per side of each reference boundary, as in NIST md-eval (see stages/metrics.py).
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from pyannote.core import Segment

from catalog.schema import Utterance
from catalog.store import Store
from catalog.versions import current
from catalog.views import connect
from stages.config import SegmentConfig
from stages.metrics import (
    StmEntry, annotation_from_segments, diarization_metrics, jaccard_error_rate, read_rttm, read_stm, turn_metrics,
    wer_cer,
)
from stages.corpus.segment import build_turns


class EvaluationError(Exception):
    """A clear, user-facing reason why nothing can be scored."""


@dataclass
class Reference:
    uri: str
    rttm: Optional[Any] = None  # pyannote Annotation
    stm: list[StmEntry] = field(default_factory=list)

    def annotation(self):
        if self.rttm is not None:
            return self.rttm
        return annotation_from_segments(self.uri, ((s, a, b) for s, a, b, _ in self.stm))

    def speakers(self) -> set[str]:
        return set(self.annotation().labels())

    def turn_utterances(self) -> list[Utterance]:
        if self.stm:
            rows = self.stm
        else:
            # No words: a placeholder text that is never a backchannel word.
            rows = [(lbl, seg.start, seg.end, "speech") for seg, _, lbl in self.rttm.itertracks(yield_label=True)]
        return [Utterance(f"ref-{i}", self.uri, "reference", spk, None, a, b, text, text, "")
                for i, (spk, a, b, text) in enumerate(rows)]


def load_references(ref_dir: str) -> dict[str, Reference]:
    if not os.path.isdir(ref_dir):
        raise EvaluationError(f"reference folder {ref_dir} does not exist")
    refs: dict[str, Reference] = {}
    for dirpath, _, files in sorted(os.walk(ref_dir)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            ext = os.path.splitext(name)[1].lower()
            if ext == ".rttm":
                for uri, ann in read_rttm(path).items():
                    ref = refs.setdefault(uri, Reference(uri))
                    if ref.rttm is None:
                        ref.rttm = ann
                    else:
                        for seg, track, label in ann.itertracks(yield_label=True):
                            ref.rttm[seg, f"{path}:{track}"] = label
            elif ext == ".stm":
                for uri, entries in read_stm(path).items():
                    ref = refs.setdefault(uri, Reference(uri))
                    ref.stm = sorted(ref.stm + entries, key=lambda e: (e[1], e[2], e[0]))
    if not refs:
        raise EvaluationError(f"no RTTM or STM references under {ref_dir}")
    return refs


def origin_stem(origin: str) -> str:
    """File stem of a recording's origin, a local path or a URL."""
    path = urllib.parse.urlparse(origin).path if "://" in origin else origin.replace(os.sep, "/")
    name = posixpath.basename(urllib.parse.unquote(path).rstrip("/"))
    return os.path.splitext(name)[0]


def recording_keys(origin: str, origin_id: str, metadata_json: str) -> list[str]:
    """The names a recording answers to, in matching order (see the module docstring)."""
    keys = [origin_stem(origin or ""), origin_id]
    try:
        meta = json.loads(metadata_json or "{}")
    except ValueError:
        meta = {}
    if isinstance(meta, dict):
        if isinstance(meta.get("audio_url"), str):
            keys.append(origin_stem(meta["audio_url"]))
        if isinstance(meta.get("guid"), str):
            keys.append(meta["guid"])
    return [k for k in keys if k]


def segment_config(con) -> SegmentConfig:
    """The `segment` settings of the build that committed the current version, else defaults."""
    try:
        rows = con.execute(
            "select manifest_json from builds where status = 'committed' order by finished_at desc limit 1"
        ).fetchall()
        if rows:
            return SegmentConfig.model_validate(json.loads(rows[0][0])["pipeline"]["segment"])
    except (KeyError, ValueError, TypeError):
        pass
    return SegmentConfig()


def _transfers(utts: list[Utterance], cfg: SegmentConfig) -> tuple[list[float], list[Optional[float]]]:
    turns = [t for t in build_turns(utts, cfg) if t.is_floor_transfer]
    return [t.start_s for t in turns], [t.gap_s for t in turns]


def evaluate(out: str, ref_dir: str, collar: float = 0.25, tolerance_s: float = 0.5,
             skip_overlap: bool = False) -> dict[str, Any]:
    """The report: per matched recording and in total. Raises EvaluationError when there is
    nothing to score."""
    refs = load_references(ref_dir)
    if "://" not in out and not os.path.isdir(out):
        raise EvaluationError(f"corpus {out} does not exist")
    store = Store(out)
    if current(store) is None:
        raise EvaluationError(f"{out} holds no committed corpus version")
    con = connect(store)
    recs = con.execute("select recording_id, origin, origin_id, duration_s, metadata_json from recordings "
                       "order by recording_id").fetchall()
    matches = []
    for rid, origin, origin_id, duration, meta in recs:
        uri = next((k for k in recording_keys(origin, origin_id, meta) if k in refs), None)
        if uri is not None:
            matches.append((uri, rid, origin, float(duration)))
    if not matches:
        names = sorted({k for r in recs for k in recording_keys(r[1], r[2], r[4])})
        raise EvaluationError(
            f"no recording of {out} matches a reference: reference uris {sorted(refs)[:10]}, "
            f"recording origin stems, ids, enclosure stems and GUIDs {names[:10]} ({len(recs)} recordings)"
        )
    cfg = segment_config(con)
    rows = []
    for uri, rid, origin, duration in sorted(matches):
        ref = refs[uri]
        utts = con.execute(
            "select utterance_id, speaker_id, start_s, end_s, text from utterances where recording_id = ? "
            "order by start_s, end_s, speaker_id", [rid]).fetchall()
        hyp_ann = annotation_from_segments(uri, ((spk, a, b) for _, spk, a, b, _ in utts))
        ref_ann = ref.annotation()
        end = max([duration] + [s.end for s in ref_ann.itersegments()])
        der = diarization_metrics(ref_ann, hyp_ann, collar=collar, skip_overlap=skip_overlap, uem=Segment(0, end))
        der_no_overlap = diarization_metrics(ref_ann, hyp_ann, collar=collar, skip_overlap=True, uem=Segment(0, end))
        der["der_no_overlap"] = der_no_overlap["der"]
        der["no_overlap_errors_s"] = der_no_overlap["missed_s"] + der_no_overlap["false_alarm_s"] + der_no_overlap["confusion_s"]
        der["no_overlap_total_s"] = der_no_overlap["total_s"]
        der["jer"] = jaccard_error_rate(ref_ann, hyp_ann, collar=collar, uem=Segment(0, end))
        transcript = None
        if ref.stm:
            transcript = wer_cer([" ".join(e[3] for e in ref.stm)], [" ".join(u[4] or "" for u in utts)])
        hyp_turns = con.execute(
            "select start_s, gap_s from turns where recording_id = ? and is_floor_transfer order by start_s", [rid]).fetchall()
        ref_times, ref_gaps = _transfers(ref.turn_utterances(), cfg)
        turns = turn_metrics(ref_times, [t[0] for t in hyp_turns], tolerance_s,
                             ref_gaps=ref_gaps, hyp_gaps=[t[1] for t in hyp_turns])
        rows.append({
            "uri": uri, "recording_id": rid, "origin": origin, "duration_s": duration,
            "ref_speakers": len(ref.speakers()), "hyp_speakers": len(set(hyp_ann.labels())),
            "diarization": der, "transcript": transcript, "turns": turns,
        })
    matched_uris = {r["uri"] for r in rows}
    rejected = {}
    for item_id, reason, detail in con.execute("select item_id, reason, detail from rejects order by item_id").fetchall():
        for uri in set(refs) - matched_uris:
            if origin_stem(item_id) == uri or uri in item_id:
                rejected[uri] = {"reason": reason, "detail": detail}
    return {
        "corpus": out, "reference": ref_dir, "collar_s": collar, "tolerance_s": tolerance_s,
        "skip_overlap": skip_overlap, "segment_config": cfg.model_dump(mode="json"),
        "recordings": rows, "total": _totals(rows),
        "unmatched_references": sorted(set(refs) - matched_uris - set(rejected)),
        "rejected_references": rejected,
        "unmatched_recordings": len(recs) - len(rows),
    }


def _ratio(num: float, den: float) -> Optional[float]:
    return num / den if den else None


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    d = {k: sum(r["diarization"][k] for r in rows) for k in ("missed_s", "false_alarm_s", "confusion_s", "total_s")}
    errors = d["missed_s"] + d["false_alarm_s"] + d["confusion_s"]
    d.update(der=_ratio(errors, d["total_s"]), missed=_ratio(d["missed_s"], d["total_s"]),
             false_alarm=_ratio(d["false_alarm_s"], d["total_s"]), confusion=_ratio(d["confusion_s"], d["total_s"]))
    d["der_no_overlap"] = _ratio(sum(r["diarization"]["no_overlap_errors_s"] for r in rows),
                                 sum(r["diarization"]["no_overlap_total_s"] for r in rows))
    d["jer"] = _ratio(sum(r["diarization"]["jer"] for r in rows), len(rows))  # mean over recordings
    count_errors = [r["hyp_speakers"] - r["ref_speakers"] for r in rows]
    speakers = {"count_accuracy": _ratio(sum(e == 0 for e in count_errors), len(rows)),
                "mean_abs_count_error": _ratio(sum(abs(e) for e in count_errors), len(rows))}
    ts = [r["transcript"] for r in rows if r["transcript"]]
    t = {k: sum(x[k] for x in ts) for k in ("substitutions", "deletions", "insertions", "hits", "ref_words", "char_errors", "ref_chars")}
    t.update(wer=_ratio(t["substitutions"] + t["deletions"] + t["insertions"], t["ref_words"]),
             cer=_ratio(t["char_errors"], t["ref_chars"]))
    tm = [r["turns"] for r in rows]
    m, n_ref, n_hyp = (sum(x[k] for x in tm) for k in ("matched", "n_ref", "n_hyp"))
    p, rc = _ratio(m, n_hyp), _ratio(m, n_ref)
    f1 = None if p is None and rc is None else (2 * p * rc / (p + rc) if p and rc else 0.0)

    def weighted(key: str) -> Optional[float]:
        pairs = [(x[key], x["matched"]) for x in tm if x[key] is not None]
        return _ratio(sum(v * w for v, w in pairs), sum(w for _, w in pairs))

    turns = {"precision": p, "recall": rc, "f1": f1, "matched": m, "n_ref": n_ref, "n_hyp": n_hyp,
             "mean_abs_time_error_s": weighted("mean_abs_time_error_s"),
             "mean_abs_gap_error_s": weighted("mean_abs_gap_error_s")}
    return {"recordings": len(rows), "diarization": d, "speakers": speakers, "transcript": t if ts else None,
            "turns": turns}


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float], fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


HEADER = ("recording", "spk ref/hyp", "DER", "DER no ovl", "JER", "miss", "FA", "conf", "scored s", "WER", "CER",
          "turn P", "turn R", "turn F1", "|dt| s")


def format_report(report: dict[str, Any]) -> str:
    def line(name: str, spk: str, r: dict[str, Any]) -> tuple[str, ...]:
        d, t, tr = r["diarization"], r["transcript"] or {}, r["turns"]
        return (name, spk, _pct(d["der"]), _pct(d["der_no_overlap"]), _pct(d["jer"]), _pct(d["missed"]),
                _pct(d["false_alarm"]), _pct(d["confusion"]),
                f"{d['total_s']:.1f}", _pct(t.get("wer")), _pct(t.get("cer")), _num(tr["precision"]),
                _num(tr["recall"]), _num(tr["f1"]), _num(tr["mean_abs_time_error_s"]))

    table = [HEADER] + [line(r["uri"], f"{r['ref_speakers']}/{r['hyp_speakers']}", r) for r in report["recordings"]]
    sp = report["total"]["speakers"]
    table.append(line("TOTAL", f"{_pct(sp['count_accuracy'])} ok" if sp["count_accuracy"] is not None else "", report["total"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in table]
    text.insert(1, "-" * len(text[0]))
    text.insert(len(text) - 1, "-" * len(text[0]))
    notes = [f"collar ±{report['collar_s']} s, transfer tolerance {report['tolerance_s']} s"
             + (", overlap skipped" if report["skip_overlap"] else "")]
    for uri, r in sorted(report.get("rejected_references", {}).items()):
        notes.append(f"{uri}: rejected {r['reason']} ({r['detail']})")
    if report["unmatched_references"]:
        notes.append(f"references without a recording: {', '.join(report['unmatched_references'])}")
    if report["unmatched_recordings"]:
        notes.append(f"recordings without a reference (ignored): {report['unmatched_recordings']}")
    return "\n".join(text + notes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="folder of reference .rttm and .stm files")
    p.add_argument("--out", required=True, help="corpus root (local directory or s3://bucket/prefix)")
    p.add_argument("--collar", type=float, default=0.25, help="seconds ignored on each side of reference boundaries")
    p.add_argument("--tolerance", type=float, default=0.5, help="floor-transfer match tolerance in seconds")
    p.add_argument("--skip-overlap", action="store_true", help="do not score overlapped reference speech")
    p.add_argument("--json", help="also write the full report here")
    args = p.parse_args(argv)
    if args.collar < 0 or args.tolerance < 0:
        p.error("--collar and --tolerance must be >= 0")
    try:
        report = evaluate(args.out, args.reference, args.collar, args.tolerance, args.skip_overlap)
    except (EvaluationError, ValueError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
