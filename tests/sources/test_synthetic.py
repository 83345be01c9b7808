"""The synthetic source end to end: LLM scripts over HTTP on loopback, espeak-ng voices, the
Whisper round trip, timelines, and builds whose pairs and windows come out as for real data;
plus the failures: an unsupported language, the LLM server down, an unknown voice, a round
trip above its threshold."""
from __future__ import annotations

import io
import json
import os

import duckdb
import pytest
from rich.console import Console

from pipelines.config import ConfigError, load_build_config
from pipelines.progress import Reporter
from pipelines.run import run_build
from stages.sources import SOURCES
from stages.sources.synthetic import SyntheticConfig, plan_requests
from tests.llm_server import Answer, FakeLlm, free_port, llm_server  # noqa: F401 - fixture

EN_SCRIPT = (
    " Can you help me plan a weekend trip to the hills?\n"
    "AI: Of course! How many days do you have, and do you like walking?\n"
    "USER: Two days, and yes, I love long walks in the forest.\n"
    "AI: Then take the early train on Saturday and walk the lake trail in the afternoon.\n"
    "<end>\n"
)
HI_SCRIPT = (
    " मुझे नया फ़ोन लेना है, बजट दस हज़ार है।\n"
    "AI: दस हज़ार में कई अच्छे फ़ोन मिल जाते हैं। आपको कैमरा चाहिए या बैटरी?\n"
    "USER: बैटरी ज़्यादा ज़रूरी है, दिन भर बाहर रहता हूँ।\n"
    "AI: तो बड़ी बैटरी वाला फ़ोन लीजिए, पूरा दिन आराम से चलेगा।\n"
    "<end>\n"
)


def test_recipe_is_registered():
    assert SOURCES["synthetic"].target == "stages.sources.synthetic:SyntheticSource"


# More English dialogues for builds of several, by topic (the validator refuses near-duplicates).
EN_SCRIPTS_BY_TOPIC = {
    "cooking dinner": (
        " What can I cook tonight with rice, eggs and a few tomatoes?\n"
        "AI: Fried rice works well. Scramble the eggs first, then add the rice and tomatoes.\n"
        "USER: Should I add any spices or sauce to it?\n"
        "AI: A little soy sauce and black pepper are enough, and spring onions if you have them.\n"
        "<end>\n"),
    "a train ticket": (
        " My train ticket booking failed but the money left my account.\n"
        "AI: That happens sometimes. The refund usually comes back within three working days.\n"
        "USER: What if it does not come back by Friday?\n"
        "AI: Then call the booking helpline with your transaction number and they will trace it.\n"
        "<end>\n"),
}


def _answer(i: int, req: dict) -> Answer:
    # The completion prompt ends with the new conversation's header, which names its language.
    tail = req.get("prompt", "")[-400:]
    if "Hindi" in tail:
        return Answer(text=HI_SCRIPT)
    return Answer(text=next((t for topic, t in EN_SCRIPTS_BY_TOPIC.items() if topic in tail), EN_SCRIPT))


def options(out_dir, base_url, **kw):
    opts = {
        "languages": ["en", "hi"],
        "topics": ["planning a weekend trip"],
        "dialogues": 1,
        "turns": [4, 4],
        "seed": 3,
        "llm": {"base_url": base_url, "model": "gemma-3-270m", "retries": 0, "timeout_s": 20},
        "asr": {"device": "cpu"},
        "output_dir": str(out_dir),
    }
    opts.update(kw)
    return opts


def build(out, opts):
    cfg = load_build_config(
        source="synthetic", out=str(out), source_options=opts,
        overrides=["shard.target_shard_mb=0.5", "shard.window_s=10", "shard.window_min_speech_s=1",
                   "segment.role_policy.mode=fixed", "segment.role_policy.ai_role=ai"],
        engine={"kind": "inline"},
    )
    return run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))


def catalog(out):
    return duckdb.connect(os.path.join(str(out), "catalog.duckdb"), read_only=True)


# ------------------------------------------------------------------------------ config


def test_unsupported_language_is_a_config_error_before_any_work(tmp_path):
    gen = tmp_path / "gen"
    with pytest.raises(ConfigError, match="unsupported language.*'fr'"):
        load_build_config(source="synthetic", out=str(tmp_path / "corpus"),
                          source_options=options(gen, "http://127.0.0.1:1/v1", languages=["en", "fr"]))
    assert not gen.exists() and not (tmp_path / "corpus").exists()
    with pytest.raises(ConfigError, match="roundtrip_cer_max"):
        load_build_config(source="synthetic", out=str(tmp_path / "corpus"),
                          source_options=options(gen, "http://127.0.0.1:1/v1", roundtrip_cer_max={"de": 0.3}))


def test_example_manifest_validates_and_plans_deterministically():
    cfg = load_build_config(source=None, out="/tmp/unused", manifest="manifests/synthetic.yaml")
    opts = cfg.validated_source_options()
    assert isinstance(opts, SyntheticConfig) and opts.languages == ["hi", "te", "en", "hinglish"]
    plan = plan_requests(opts)
    assert len(plan) == 8 and [p.request.lang for p in plan] == ["hi", "hi", "te", "te", "en", "en", "hinglish", "hinglish"]
    assert len({p.dialogue_id for p in plan}) == 8 and len({p.request.seed for p in plan}) == 8
    again = plan_requests(SyntheticConfig.model_validate(opts.model_dump()))
    assert [(p.dialogue_id, p.fingerprint) for p in again] == [(p.dialogue_id, p.fingerprint) for p in plan]
    other = plan_requests(opts.model_copy(update={"seed": 1}))
    assert {p.dialogue_id for p in other}.isdisjoint(p.dialogue_id for p in plan)
    assert cfg.pipeline.segment.role_policy.ai_role == "ai"


# -------------------------------------------------------------- builds (LLM on loopback)


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLlm(_answer) as fake:
        yield fake


@pytest.fixture(scope="module")
def built(fake_llm, tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    out, gen = root / "corpus", root / "gen"
    summary = build(out, options(gen, fake_llm.base_url))
    return out, gen, summary


def test_build_gives_user_to_ai_pairs_with_voices(built):
    out, gen, s = built
    assert s["status"] == "committed" and s["new"]["recordings"] == 2, s
    con = catalog(out)
    recs = dict(con.execute("select lang, num_channels from recordings").fetchall())
    assert recs == {"en": 2, "hi": 2}
    assert con.execute("select distinct source, license from recordings").fetchall() == [
        ("synthetic", "synthetic (LLM gemma-3-270m + TTS espeak)")]
    meta = [json.loads(m) for (m,) in con.execute("select metadata_json from recordings").fetchall()]
    assert {m["topic"] for m in meta} == {"planning a weekend trip"} and {m["tts_backend"] for m in meta} == {"espeak"}
    speakers = con.execute("select recording_id, label, channel, role, metadata_json from speakers order by all").fetchall()
    assert [(lab, ch, role) for _, lab, ch, role, _ in speakers] == [("AI", 1, "ai"), ("USER", 0, "user")] * 2
    voice_ids = [json.loads(m)["voice_id"] for *_, m in speakers]
    assert all(v.startswith("espeak:") for v in voice_ids) and len(set(voice_ids[:2])) == 2
    # 4 turns USER, AI, USER, AI → 2 pairs per dialogue, all answered by the AI
    pairs = con.execute("select lang, user_channel, ai_channel, ai_text, gap_s from pairs order by pair_id").fetchall()
    assert len(pairs) == 4 and {(u, a) for _, u, a, _, _ in pairs} == {(0, 1)}
    assert any("lake trail" in t for *_, t, _ in pairs) and any("बैटरी" in t for *_, t, _ in pairs)
    assert all(-1.0 <= g <= 2.0 for *_, g in pairs)
    assert con.execute("select count(*) from windows").fetchone()[0] >= 2
    conf = con.execute("select min(confidence) from utterances u join speakers s using (speaker_id) where s.recording_id like 'synthetic-en%' and not u.text in ('yeah','okay','right','uh huh')").fetchone()[0]
    assert conf is not None and conf > 0.5  # 1 - CER of espeak English through Whisper base
    assert s["totals"]["rejects"] == 0


def test_sidecar_records_script_voices_timeline_and_cers(built):
    out, gen, s = built
    docs = [json.load(open(p)) for p in sorted(gen.glob("*.json")) if not p.name.endswith(".script.json")]
    assert sorted(d["lang"] for d in docs) == ["en", "hi"]
    for d in docs:
        assert [t["speaker"] for t in d["script"]] == ["USER", "AI", "USER", "AI"]
        assert len(d["cers"]) == 4 and all(isinstance(c, float) for c in d["cers"])
        floor = [p for p in d["timeline"]["placements"] if not p["is_backchannel"]]
        assert [p["text"] for p in sorted(floor, key=lambda p: p["turn_index"])] == [t["text"] for t in d["script"]]
        assert d["gaps"]["origin"] == "default" and d["voices"]["USER"]["voice_id"] != d["voices"]["AI"]["voice_id"]
        assert os.path.exists(gen / f"{d['dialogue_id']}.wav") and os.path.exists(gen / f"{d['dialogue_id']}.mono.wav")
    en = next(d for d in docs if d["lang"] == "en")
    assert max(en["cers"]) < 0.5


def test_rebuild_reuses_generated_dialogues_and_thresholds_apply_to_them(built, fake_llm, tmp_path):
    out, gen, _ = built
    wavs = {p: p.stat().st_mtime_ns for p in gen.glob("*.wav")}
    asked = len(fake_llm.requests)
    again = build(out, options(gen, fake_llm.base_url))
    assert again["status"] == "unchanged" and len(fake_llm.requests) == asked
    assert {p: p.stat().st_mtime_ns for p in gen.glob("*.wav")} == wavs
    # A stricter Hindi threshold rejects the cached Hindi dialogue (Whisper base reads espeak's
    # Hindi badly), naming the turns, without generating anything again.
    strict = build(tmp_path / "corpus2", options(gen, fake_llm.base_url, roundtrip_cer_max={"hi": 0.5}))
    assert len(fake_llm.requests) == asked
    assert strict["new"]["recordings"] == 1 and strict["rejects_by_reason"] == {"tts_roundtrip_cer": 1}
    detail = catalog(tmp_path / "corpus2").execute("select stage, item_id, detail from rejects").fetchone()
    assert detail[0] == "render" and detail[1].startswith("synthetic-hi-") and "turn 0: CER" in detail[2]


def test_llm_server_down_rejects_every_dialogue_and_the_build_completes(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    s = build(tmp_path / "corpus", options(tmp_path / "gen", dead, languages=["en", "hi", "te"]))
    assert s["status"] == "committed" and s["totals"]["recordings"] == 0
    assert s["rejects_by_reason"] == {"llm_unavailable": 3}
    rows = catalog(tmp_path / "corpus").execute("select source, stage, item_id, detail from rejects order by item_id").fetchall()
    assert [r[:2] for r in rows] == [("synthetic", "script")] * 3
    assert [r[2].split("-")[1] for r in rows] == ["en", "hi", "te"] and all("connection" in r[3] for r in rows)
    assert not list((tmp_path / "gen").glob("*.wav"))


def test_unknown_voice_rejects_the_dialogue(fake_llm, tmp_path):
    s = build(tmp_path / "corpus", options(tmp_path / "gen", fake_llm.base_url, languages=["en"],
                                          tts={"voices": {"en": ["espeak:en+nosuchvoice", "espeak:en+m3"]}}))
    assert s["status"] == "committed" and s["rejects_by_reason"] == {"tts_unknown_voice": 1}
    stage, detail = catalog(tmp_path / "corpus").execute("select stage, detail from rejects").fetchone()
    assert stage == "render" and "nosuchvoice" in detail


def test_unchecked_languages_can_skip_the_round_trip(fake_llm, tmp_path):
    from stages.sources.synthetic import SyntheticSource

    src = SyntheticSource(SyntheticConfig.model_validate(
        options(tmp_path / "gen", fake_llm.base_url, languages=["hi"], roundtrip_unchecked=False)))
    (task,) = src.discover().tasks
    assert src.prepare(task) is True and src.prepare(task) is False  # made once, then found
    doc = json.load(open(task.transcript_path))
    assert doc["cers"] == [None] * 4 and doc["asr_model"] is None
    assert src._asr is None  # Whisper was never loaded


def test_a_local_server_that_cannot_start_rejects_every_dialogue(tmp_path):
    missing = tmp_path / "missing.gguf"
    s = build(tmp_path / "corpus", options(tmp_path / "gen", "http://127.0.0.1:1/v1", serve={"model_path": str(missing)}))
    assert s["status"] == "committed" and s["rejects_by_reason"] == {"llm_unavailable": 2}
    details = [d for (d,) in catalog(tmp_path / "corpus").execute("select detail from rejects").fetchall()]
    assert all("could not start the local llama.cpp server" in d and str(missing) in d for d in details)


# ------------------------------------------------------------ the real model, on loopback


def test_real_llm_server_end_to_end(llm_server, tmp_path):  # noqa: F811 - fixture
    s = build(tmp_path / "corpus", options(tmp_path / "gen", llm_server.base_url,
                                           llm={"base_url": llm_server.base_url, "model": llm_server.model,
                                                "max_tokens": 160, "timeout_s": 180, "retries": 0, "max_concurrency": 1},
                                           script={"max_attempts": 2}, turns=[4, 6]))
    assert s["status"] == "committed"
    con = catalog(tmp_path / "corpus")
    accepted = {lang for (lang,) in con.execute("select lang from recordings").fetchall()}
    rejected = con.execute("select item_id, reason, detail from rejects where stage in ('script', 'tts', 'roundtrip')").fetchall()
    # Every dialogue is accounted for: a recording, or a reject with a reason and detail.
    assert len(accepted) + len(rejected) == 2
    assert all(reason and detail for _, reason, detail in rejected)
    print("real LLM:", sorted(accepted), [(i, r) for i, r, _ in rejected])
    if accepted:
        assert con.execute("select count(*) from pairs").fetchone()[0] >= 1
        assert con.execute("select count(*) from speakers where json_extract_string(metadata_json, '$.voice_id') like 'espeak:%'").fetchone()[0] == 2 * len(accepted)


# ------------------------------------------------------------------- rendering on Ray


@pytest.mark.ray
def test_dialogues_render_on_ray_workers_and_phase_runs_say_where(fake_llm, tmp_path):
    """Scripts are written in the driver; TTS, the round trip and the timeline run per dialogue
    on the engine's workers (here two Ray actors), and `phase_runs` names the worker of each."""
    cfg = load_build_config(
        source="synthetic", out=str(tmp_path / "corpus"),
        source_options=options(tmp_path / "gen", fake_llm.base_url, languages=["en"], dialogues=3,
                               topics=["planning a weekend trip", "cooking dinner", "a train ticket"]),
        overrides=["segment.role_policy.mode=fixed", "segment.role_policy.ai_role=ai"],
        engine={"kind": "ray", "num_cpus": 2},
    )
    s = run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))
    assert s["status"] == "committed" and s["new"]["recordings"] == 3, s
    con = catalog(tmp_path / "corpus")
    renders = con.execute("select worker, cached, status from phase_runs where phase = 'render'").fetchall()
    assert len(renders) == 3 and all(not cached and status == "ok" for _, cached, status in renders)
    workers = {w for w, _, _ in renders}
    assert len(workers) >= 2, workers
    # Every recording went through render → ingest → segment, each phase timed.
    by_phase = dict(con.execute("select phase, count(*) from phase_runs group by all").fetchall())
    assert by_phase == {"render": 3, "ingest": 3, "segment": 3}
    assert con.execute("select min(seconds) from phase_runs where phase = 'render'").fetchone()[0] > 0
