"""The trainers end to end on a real (small) corpus: codec training on its codec shards,
tokenizing its pair shards, S2S training on the tokens, a DuckDB-filtered fine-tuning subset,
exact resumption after a stop, two-process DDP on gloo, shards and checkpoints on a loopback S3
server, and ``train.respond`` turning a user's audio file into the AI turn's audio."""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

from catalog.store import Store
from pipelines.config import EngineConfig
from pipelines.tokenize import main as tokenize_main
from pipelines.tokenize import tokenize_corpus
from tests.pipelines.test_build import build
from train import checkpoint
from train.codec import train as train_codec
from train.config import CodecTrainConfig, ConfigError, S2STrainConfig, load_config
from train.s2s import load_exported, read_export
from train.s2s import train as train_s2s


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def corpus(demo_sample, tmp_path_factory):
    """A corpus built by the pipeline from three synthesized calls (pairs + codec shards)."""
    out = tmp_path_factory.mktemp("corpus")
    build(demo_sample.root, out)
    return str(out)


def codec_cfg(corpus: str, out: str, **extra) -> CodecTrainConfig:
    overrides = [
        "preset=tiny", f"data.corpus={corpus}", "data.batch_size=4", "data.num_workers=0",
        "data.shuffle_buffer=8", "data.crop_seconds=0.25", f"run.out={out}", "run.log_every=1",
        "run.ckpt_every=2", "optim.max_steps=4", "optim.warmup_steps=1", "adversarial_start=1",
        "disc_optim.warmup_steps=1",
        "discriminator.filters=4", "discriminator.n_ffts=[256, 128]",
    ]
    return load_config(CodecTrainConfig, None, overrides + [f"{k}={v}" for k, v in extra.items()])


def s2s_cfg(corpus: str, out: str, **extra) -> S2STrainConfig:
    # The tiny codec runs at 200 Hz: 0.2 s limits keep 40 frames per stream. The AI turns are
    # longer, so they train cropped without end-of-turn (long_ai_turns=no_eos).
    overrides = [
        "preset=tiny", f"data.corpus={corpus}", "data.batch_size=4",
        "data.num_workers=0", "data.shuffle_buffer=8", "data.max_user_s=0.2",
        "data.max_context_s=0.2", "data.max_ai_s=0.2", "data.long_ai_turns=no_eos", "min_voice_pairs=1",
        f"run.out={out}", "run.log_every=1", "run.ckpt_every=2", "optim.max_steps=4", "optim.warmup_steps=1",
    ]
    return load_config(S2STrainConfig, None, overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.fixture(scope="module")
def trained_codec(corpus, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("codec-run"))
    result = train_codec(codec_cfg(corpus, run, **{"optim.max_steps": 6}))
    return run, result


@pytest.fixture(scope="module")
def tokens(corpus, trained_codec):
    return tokenize_corpus(corpus, trained_codec[0], engine=EngineConfig(kind="inline"))


def metrics(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- codec ------------------------------------------------------------------------------------


def test_codec_training_logs_losses_checkpoints_and_exports(trained_codec):
    run, result = trained_codec
    assert result["step"] == 6
    rows = [r for r in metrics(run) if r["split"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    adversarial = [r for r in rows if "discriminator" in r]
    assert [r["step"] for r in adversarial] == [2, 3, 4, 5, 6]  # adversarial_start=1
    assert all(np.isfinite(r["reconstruction"]) and r["corrupt_samples"] == 0 for r in rows)
    assert all(0 <= r["pad_share_audio"] < 1 for r in rows)
    # One export per checkpoint, written once (pruned with its checkpoint), codec.json -> the latest.
    assert sorted(os.listdir(os.path.join(run, "exports"))) == [f"codec-step-00000{s}.pt" for s in (2, 4, 6)]
    latest = json.load(open(os.path.join(run, "codec.json")))
    assert latest["path"] == "exports/codec-step-000006.pt" and latest["step"] == 6
    from stages.corpus.tokens import codec_id_for, file_sha256

    assert latest["sha256"] == file_sha256(os.path.join(run, latest["path"])) and latest["id"] == codec_id_for(latest["sha256"])
    assert not os.path.exists(os.path.join(run, "codec.pt"))
    assert checkpoint.latest_step(Store(run)) == 6
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == [
        "LATEST.json", "step-000002", "step-000004", "step-000006"]
    assert os.listdir(os.path.join(run, "tensorboard"))
    # The discriminator trains too (its optimizer state is in every checkpoint).
    disc = [checkpoint.read_state(Store(run), s)["models"]["disc"] for s in (2, 6)]
    assert max(float((disc[0][k] - disc[1][k]).abs().max()) for k in disc[0]) > 1e-4


def test_codec_eval_reports_reconstruction_metrics(corpus, tmp_path):
    # holdout 0.3 holds out one of the three calls (fe_03_90002, by its id's hash)
    cfg = codec_cfg(corpus, str(tmp_path / "run"), **{
        "optim.max_steps": 2, "run.eval_every": 2, "run.eval_batches": 1, "eval_data.corpus": corpus,
        "eval_data.batch_size": 2, "eval_data.num_workers": 0, "eval_data.shuffle_buffer": 0,
        "eval_data.crop_seconds": 1.0, "data.holdout": 0.3, "eval_data.holdout": 0.3})
    train_codec(cfg)
    (row,) = [r for r in metrics(str(tmp_path / "run")) if r["split"] == "eval"]
    for key in ("mel_distance", "si_sdr", "stoi", "pesq", "codebook_usage", "codebook_perplexity"):
        assert np.isfinite(row[key]), key
    assert 0 < row["codebook_usage"] <= 1 and row["codebook_perplexity"] >= 1


def test_codec_resume_after_a_stop_matches_an_uninterrupted_run(corpus, tmp_path):
    from model.codec import load_codec

    train_codec(codec_cfg(corpus, str(tmp_path / "straight")))
    stopped = codec_cfg(corpus, str(tmp_path / "stopped"))
    assert train_codec(stopped, stop_after=2)["step"] == 2
    assert train_codec(stopped)["step"] == 4  # resumes from step 2
    assert_same_params(params(load_codec(str(tmp_path / "straight"))), params(load_codec(str(tmp_path / "stopped"))))
    straight = [r["reconstruction"] for r in metrics(str(tmp_path / "straight")) if r["split"] == "train"]
    resumed = [r["reconstruction"] for r in metrics(str(tmp_path / "stopped")) if r["split"] == "train"]
    assert straight == resumed


# --- tokenize ---------------------------------------------------------------------------------


def test_tokenize_writes_token_shards_and_reuses_them(corpus, trained_codec, tokens, capsys):
    from model.codec import load_codec
    from train.data import LoaderConfig, shard_urls, token_loader

    assert tokens["shards"] >= 1 and tokens["rejects"] == 0 and tokens["reused"] == 0
    con_pairs = sum(s["num_samples"] for s in Store(corpus).read_json(
        f"shards/{tokens['version']}/index.json")["shards"] if s["kind"] == "pairs")
    assert tokens["samples"] == con_pairs
    codec = load_codec(trained_codec[0])
    urls = shard_urls(tokens["tokens_root"], "tokens")
    batch = next(iter(token_loader(urls, LoaderConfig(batch_size=2, n_codebooks=8, codebook_size=64,
                                                      max_user_s=1e4, max_ai_s=1e4, max_context_s=1e4), epochs=1)))
    assert batch["ai_codes"].shape[1] == codec.cfg.n_codebooks
    assert int(batch["ai_codes"].max()) < codec.cfg.codebook_size
    # A rebuild tokenizes nothing again: every shard is reused.
    assert tokenize_main(["--corpus", corpus, "--codec", trained_codec[0], "--engine", "inline"]) == 0
    assert f"reused={tokens['shards']}" in capsys.readouterr().out


def test_tokenize_rejects_a_missing_codec_clearly(corpus, tmp_path, capsys):
    assert tokenize_main(["--corpus", corpus, "--codec", str(tmp_path / "none"), "--engine", "inline"]) == 2
    assert "no codec checkpoint" in capsys.readouterr().err


# --- S2S --------------------------------------------------------------------------------------


def test_s2s_training_on_tokens_learns_and_exports(corpus, tokens, tmp_path):
    run = str(tmp_path / "s2s")
    result = train_s2s(s2s_cfg(corpus, run, **{"optim.max_steps": 8, "optim.lr": 3e-3, "run.ckpt_every": 8}))
    rows = [r for r in metrics(run) if r["split"] == "train"]
    assert len(rows) == 8 and result["step"] == 8
    assert rows[-1]["loss"] < rows[0]["loss"]
    for r in rows:  # padding and real throughput are logged
        assert 0 <= r["pad_share_encoder"] < 1 and 0 <= r["pad_share_decoder"] < 1 and r["real_tokens_per_s"] > 0
        assert r["corrupt_samples"] == 0
    # The codebook geometry came from the token corpus (the config does not set it), and s2s.pt
    # names the codec it was trained with.
    model = load_exported(run)
    assert model.cfg.codebook_size == 64 and model.cfg.n_codebooks == 8 and model.num_params() > 0
    info = read_export(run)
    current = Store(tokens["tokens_root"]).read_json("CURRENT.json")
    assert info["codec"]["id"] == tokens["codec"] == current["codec"]
    assert info["codec"]["sha256"] == current["codec_info"]["sha256"] and info["codec"]["frame_rate"] == 200.0
    assert info["codec"]["path"].endswith(f"tokens/{tokens['codec']}/codec.pt")


def test_s2s_resume_after_a_stop_matches_an_uninterrupted_run(corpus, tokens, tmp_path):
    train_s2s(s2s_cfg(corpus, str(tmp_path / "straight")))
    stopped = s2s_cfg(corpus, str(tmp_path / "stopped"))
    train_s2s(stopped, stop_after=2)
    assert checkpoint.latest_step(Store(str(tmp_path / "stopped"))) == 2
    train_s2s(stopped)
    assert_same_params(params(load_exported(str(tmp_path / "straight"))),
                       params(load_exported(str(tmp_path / "stopped"))))


def test_s2s_finetune_subset_from_a_duckdb_query(corpus, tokens, tmp_path):
    import duckdb

    con = duckdb.connect(os.path.join(corpus, "catalog.duckdb"), read_only=True)
    chosen = con.execute("SELECT pair_id FROM pairs ORDER BY pair_id LIMIT 3").fetchall()
    con.close()
    ids = ", ".join(f"'{r[0]}'" for r in chosen)
    pre = str(tmp_path / "pre")
    train_s2s(s2s_cfg(corpus, pre, **{"optim.max_steps": 2}))
    cfg = s2s_cfg(corpus, str(tmp_path / "ft"), **{
        "init_from": pre, "optim.max_steps": 2, "data.batch_size": 8,
        "data.filter_sql": f'"SELECT pair_id FROM pairs WHERE pair_id IN ({ids})"'})
    from train.common import shard_urls_for

    urls, keep = shard_urls_for(cfg.data, "tokens")
    assert keep == {r[0] for r in chosen} and urls
    from train.common import loader_config
    from train.data import token_loader

    batch = next(iter(token_loader(urls, loader_config(cfg.data, codebook_size=64), epochs=1, keep=keep)))
    assert set(batch["pair_id"]) <= keep
    assert train_s2s(cfg)["step"] == 2


def test_bad_configs_are_clear_errors(corpus, tokens, tmp_path):
    with pytest.raises(ConfigError, match="data needs"):
        load_config(S2STrainConfig, None, [f"run.out={tmp_path}", "data.seed=0"])
    with pytest.raises(ConfigError, match="unknown S2S preset"):
        train_s2s(s2s_cfg(corpus, str(tmp_path / "x"), preset="huge"))
    with pytest.raises(ConfigError, match="token corpus holds 8 codebooks of 64 entries"):
        train_s2s(s2s_cfg(corpus, str(tmp_path / "y"), **{"model.codebook_size": 1024}))
    with pytest.raises(ConfigError, match="held-out recordings would overlap"):
        s2s_cfg(corpus, str(tmp_path / "z"), **{"eval_data.corpus": corpus, "eval_data.holdout": 0.1})
    with pytest.raises(ConfigError, match="needs split valid"):
        s2s_cfg(corpus, str(tmp_path / "z"), **{"eval_data.corpus": corpus, "eval_data.split": "train"})
    with pytest.raises(ConfigError, match="invalid"):
        load_config(CodecTrainConfig, None, [f"data.corpus={corpus}", f"run.out={tmp_path}", "optim.lr=-1"])


# --- DDP, S3, respond ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, world: int, port: int, corpus: str, run: str, strategy: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train_s2s(s2s_cfg(corpus, run, **{"run.device": "cpu", "data.batch_size": 2, "run.strategy": strategy}))
    torch.save(result, os.path.join(run, f"result-{rank}.pt"))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_processes_train_in_lockstep(corpus, tokens, tmp_path, strategy):
    run = str(tmp_path / strategy)
    os.makedirs(run)
    mp.start_processes(_ddp_rank, args=(2, _free_port(), corpus, run, strategy), nprocs=2, join=True,
                       start_method="fork")
    r0, r1 = (torch.load(os.path.join(run, f"result-{r}.pt")) for r in (0, 1))
    assert r0["step"] == r1["step"] == 4
    assert r0["grad_norm"] == r1["grad_norm"]  # gradients were averaged across the ranks
    assert sorted(os.listdir(os.path.join(run, "checkpoints", "step-000004"))) == ["rank-0.pt", "rank-1.pt", "state.pt"]
    assert load_exported(run).num_params() > 0


@pytest.mark.s3
def test_codec_training_streams_from_and_checkpoints_to_s3(corpus, s3_endpoint, s3_bucket):
    import fsspec

    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_endpoint})
    fs.put(corpus.rstrip("/") + "/", f"{s3_bucket}/corpus/", recursive=True)
    # The run folder's Store finds the endpoint in AWS_ENDPOINT_URL (the fixture sets it, as a
    # user's environment would); the data side is told explicitly.
    cfg = codec_cfg(f"s3://{s3_bucket}/corpus", f"s3://{s3_bucket}/runs/codec", **{
        "data.endpoint_url": s3_endpoint, "optim.max_steps": 2})
    assert train_codec(cfg)["step"] == 2
    assert fs.exists(f"{s3_bucket}/runs/codec/codec.json")
    assert fs.exists(f"{s3_bucket}/runs/codec/exports/codec-step-000002.pt")
    assert fs.exists(f"{s3_bucket}/runs/codec/checkpoints/step-000002/state.pt")


def test_respond_writes_the_ai_turn_and_refuses_another_codec(corpus, trained_codec, tokens, tmp_path):
    from train.respond import main as respond_main

    run = str(tmp_path / "s2s")
    train_s2s(s2s_cfg(corpus, run, **{"optim.max_steps": 2}))
    user = tmp_path / "question.wav"
    t = np.arange(int(0.5 * 8000)) / 8000
    sf.write(user, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)  # any rate, any format
    out = tmp_path / "reply.wav"
    voice = read_export(run)["voices"]["keys"][0]
    assert respond_main(["--model", run, "--codec", trained_codec[0], "--input", str(user), "--out", str(out),
                         "--seconds", "0.2", "--no-stop", "--voice", voice]) == 0
    audio, sr = sf.read(out)
    from model.codec import load_codec

    codec = load_codec(trained_codec[0])
    assert sr == codec.cfg.sample_rate
    assert len(audio) == round(0.2 * codec.cfg.frame_rate) * codec.cfg.hop_length
    assert respond_main(["--model", run, "--codec", trained_codec[0], "--input", str(tmp_path / "missing.wav"),
                         "--out", str(out)]) == 2
    # Without --codec: the copy the token corpus keeps (the same file bytes).
    assert respond_main(["--model", run, "--input", str(user), "--out", str(out), "--seconds", "0.1", "--no-stop"]) == 0
    # An earlier export of the same run has the same shapes but other codebooks: refused.
    older = os.path.join(trained_codec[0], "exports", "codec-step-000004.pt")
    assert respond_main(["--model", run, "--codec", older, "--input", str(user), "--out", str(out)]) == 2
    from train.respond import respond

    with pytest.raises(ValueError, match="codec mismatch: .* trained on tokens of codec " + tokens["codec"]):
        respond(run, older, str(user), str(out), seconds=0.1)
    with pytest.raises(ValueError, match="voice 'nobody'"):
        respond(run, None, str(user), str(out), voice="nobody", seconds=0.1)


def test_voice_table_from_stable_speaker_ids(corpus, tokens, tmp_path):
    """LDC PINs are speaker ids across calls: each caller is one voice in every call."""
    from catalog.views import connect
    from train.common import loader_config
    from train.data import token_loader

    run = str(tmp_path / "s2s")
    train_s2s(s2s_cfg(corpus, run, **{"optim.max_steps": 1}))
    voices = read_export(run)["voices"]
    con = connect(Store(corpus))
    by_speaker = dict(con.execute("SELECT ai_speaker_id, count(*) FROM pairs GROUP BY 1").fetchall())
    calls = dict(con.execute("SELECT speaker_id, count(DISTINCT recording_id) FROM speakers GROUP BY 1").fetchall())
    con.close()
    assert sorted(voices["keys"]) == sorted(by_speaker) and max(calls.values()) > 1  # a caller in several calls
    assert voices["pairs"] == by_speaker
    assert voices["keys"] == sorted(by_speaker, key=lambda k: (-by_speaker[k], k))  # most pairs first
    cfg = s2s_cfg(corpus, run)
    lcfg = loader_config(cfg.data, codebook_size=64, voices=voices["speakers"], max_ai_s=1e4)
    from train.common import shard_urls_for

    urls, _ = shard_urls_for(cfg.data, "tokens")
    seen = {}
    for b in token_loader(urls, lcfg, epochs=1):
        for pid, v in zip(b["pair_id"], b["ai_voice"].tolist()):
            seen[pid] = v
    con = connect(Store(corpus))
    speakers = dict(con.execute("SELECT pair_id, ai_speaker_id FROM pairs").fetchall())
    con.close()
    assert seen and all(v == voices["keys"].index(speakers[p]) + 1 for p, v in seen.items())
    # min_voice_pairs above every speaker's count: all share the unknown voice
    rare = str(tmp_path / "rare")
    train_s2s(s2s_cfg(corpus, rare, **{"optim.max_steps": 1, "min_voice_pairs": 100}))
    assert read_export(rare)["voices"]["keys"] == []


def test_eval_reads_only_held_out_recordings(corpus, tokens, tmp_path):
    from train.common import loader_config, shard_urls_for
    from train.data import token_loader

    run = str(tmp_path / "s2s")
    cfg = s2s_cfg(corpus, run, **{"optim.max_steps": 2, "run.eval_every": 2, "run.eval_batches": 2,
                                  "data.holdout": 0.3, "eval_data.corpus": corpus, "eval_data.holdout": 0.3,
                                  "eval_data.batch_size": 2, "eval_data.num_workers": 0, "eval_data.max_ai_s": 0.2,
                                  "eval_data.max_user_s": 0.2, "eval_data.max_context_s": 0.2,
                                  "eval_data.long_ai_turns": "no_eos"})
    train_s2s(cfg)
    (row,) = [r for r in metrics(run) if r["split"] == "eval"]
    assert np.isfinite(row["loss"])

    def recordings(data, role):
        urls, _ = shard_urls_for(data, "tokens")
        lcfg = loader_config(data, role, codebook_size=64, max_ai_s=1e4)
        return {p.rsplit("-p", 1)[0] for b in token_loader(urls, lcfg, epochs=1) for p in b["pair_id"]}

    train, held = recordings(cfg.data, "train"), recordings(cfg.eval_data, "eval")
    assert held == {"fisher-fe_03_90002"} and train == {"fisher-fe_03_90001", "fisher-fe_03_90003"}


def _damage_flac_members(tar_path: str, names: list[str], rng: np.random.Generator) -> None:
    """Random bytes written over each named FLAC member's audio frames, in place: the tar
    headers (and the member's size) stay intact, as a bad disk or a bad copy leaves them."""
    import tarfile

    from tests.train.test_train_data import flac_frames_offset

    with tarfile.open(tar_path) as tar:
        where = {m.name: (m.offset_data, m.size) for m in tar.getmembers()}
    with open(tar_path, "r+b") as f:
        for name in names:
            offset, size = where[name]
            f.seek(offset)
            data = bytearray(f.read(size))
            start = flac_frames_offset(bytes(data))
            at = int(rng.integers(start, size - 16))
            for i in range(int(rng.integers(1, 16))):
                data[at + i] ^= int(rng.integers(1, 256))
            f.seek(offset)
            f.write(bytes(data))


@pytest.mark.parametrize("kind", ["codec", "pairs"])
def test_damaged_flac_members_never_reach_a_batch(corpus, tmp_path, kind):
    """Issue 12, finding 6: random bytes in FLAC members of the pipeline's own shards. Every
    damaged sample is dropped before batching and counted by reason; each damaged shard's
    checksum mismatch is counted once it has been read."""
    import shutil
    import tarfile

    from train.data import LoaderConfig, codec_loader, pair_audio_loader, shard_refs

    copy = str(tmp_path / "corpus")
    shutil.copytree(corpus, copy, ignore=shutil.ignore_patterns("tokens", "work"))
    refs = shard_refs(copy, kind)
    members = []  # (shard path, member name, sample key)
    for ref in refs:
        with tarfile.open(ref.url) as tar:
            members += [(ref.url, m.name, m.name.split(".", 1)[0]) for m in tar.getmembers() if m.name.endswith(".flac")]
    rng = np.random.default_rng(12)
    by_key: dict[str, tuple[str, str]] = {}
    for i in rng.permutation(len(members)):
        url, name, key = members[int(i)]
        by_key.setdefault(key, (url, name))  # one damaged member per sample
    damaged = dict(list(by_key.items())[:11])
    for url in {u for u, _ in damaged.values()}:
        _damage_flac_members(url, [n for k, (u, n) in damaged.items() if u == url], rng)
    all_keys = {m[2] for m in members}
    cfg = LoaderConfig(batch_size=4, shuffle_buffer=0, crop_seconds=0.25)
    make = codec_loader if kind == "codec" else pair_audio_loader
    loader = make(refs, cfg, epochs=1)
    out = [b for b in loader]
    seen = [k for b in out for k in b["keys"]]
    assert not set(seen) & set(damaged)  # no damaged sample in any batch
    assert sorted(seen) == sorted(all_keys - set(damaged))  # and every intact one is there
    # The stream's final counts (the last shard's checksum is known after the last batch left).
    reasons = dict(loader.dataset.counter.reasons)
    assert all(b["n_corrupt"] <= sum(reasons.values()) for b in out)
    assert reasons.pop("shard_checksum") == len({u for u, _ in damaged.values()})
    assert sum(reasons.values()) == len(damaged) == 11
    assert set(reasons) <= {"undecodable_audio", "audio_checksum_mismatch", "audio_length_mismatch"}


@pytest.mark.ray
def test_ray_train_job_runs_the_s2s_loop_on_two_workers(corpus, tokens, tmp_path):
    import ray

    from train.ray_job import launch

    cfg = s2s_cfg(corpus, str(tmp_path / "ray-run"), **{"optim.max_steps": 2, "data.batch_size": 2})
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        metrics = launch("s2s", cfg, num_workers=2, use_gpu=False, storage_path=str(tmp_path / "ray"))
    finally:
        ray.shutdown()
    assert metrics["step"] == 2 and np.isfinite(metrics["loss"])
    assert sorted(os.listdir(tmp_path / "ray-run" / "checkpoints" / "step-000002")) == ["rank-0.pt", "rank-1.pt", "state.pt"]


@pytest.mark.ray
def test_tokenize_on_ray_matches_inline(corpus, trained_codec, tokens, tmp_path):
    import shutil

    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy, ignore=shutil.ignore_patterns("tokens"))
    on_ray = tokenize_corpus(str(copy), trained_codec[0], engine=EngineConfig(kind="ray", num_cpus=2))
    assert (on_ray["shards"], on_ray["samples"], on_ray["reused"]) == (tokens["shards"], tokens["samples"], 0)
    inline_index = Store(tokens["tokens_root"]).read_json(f"shards/{tokens['version']}/index.json")
    ray_index = Store(on_ray["tokens_root"]).read_json(f"shards/{on_ray['version']}/index.json")
    assert [s["sha256"] for s in ray_index["shards"]] == [s["sha256"] for s in inline_index["shards"]]


def test_tokenize_rejects_bad_samples_with_reasons(corpus, trained_codec, tokens, tmp_path):
    from stages.corpus.shards import write_tar_shard
    from stages.errors import RejectError
    from stages.corpus.tokens import ShardTokenizer

    from pipelines.tokenize import resolve_codec_file

    tok = ShardTokenizer(resolve_codec_file(trained_codec[0]), corpus, str(tmp_path / "tokens"), "v")
    good = {"json": b"{}", "user.flac": b"not flac", "ai.flac": b"x"}
    for fields, reason in ((good, "undecodable_audio"), ({"json": b"{}"}, "missing_member"),
                           ({**good, "json": b"{nope"}, "bad_json")):
        with pytest.raises(RejectError) as e:
            tok.tokenize_sample("k", fields)
        assert e.value.reason == reason
    # A whole shard of bad samples: an empty token shard plus one reject per sample, no crash.
    src = Store(str(tmp_path / "src"))
    shard = write_tar_shard(src, "pairs-bad.tar", [("a", good), ("b", {"json": b"{}"})], "pairs", "v")
    tok.corpus = src
    result = tok(shard)
    assert result.shard.num_samples == 0
    assert sorted(r.reason for r in result.rejects) == ["missing_member", "undecodable_audio"]
