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
from train.s2s import load_exported
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
    overrides = [
        "preset=tiny", "model.codebook_size=64", f"data.corpus={corpus}", "data.batch_size=4",
        "data.num_workers=0", "data.shuffle_buffer=8", "data.max_user_frames=40",
        "data.max_context_frames=40", "data.max_ai_frames=40", "data.n_voices=16", f"run.out={out}",
        "run.log_every=1", "run.ckpt_every=2", "optim.max_steps=4", "optim.warmup_steps=1",
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
    assert os.path.isfile(os.path.join(run, "codec.pt"))
    assert checkpoint.latest_step(Store(run)) == 6
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == [
        "LATEST.json", "step-000002", "step-000004", "step-000006"]
    assert os.listdir(os.path.join(run, "tensorboard"))
    # The discriminator trains too (its optimizer state is in every checkpoint).
    disc = [checkpoint.read_state(Store(run), s)["models"]["disc"] for s in (2, 6)]
    assert max(float((disc[0][k] - disc[1][k]).abs().max()) for k in disc[0]) > 1e-4


def test_codec_eval_reports_reconstruction_metrics(corpus, tmp_path):
    cfg = codec_cfg(corpus, str(tmp_path / "run"), **{
        "optim.max_steps": 2, "run.eval_every": 2, "run.eval_batches": 1, "eval_data.corpus": corpus,
        "eval_data.batch_size": 2, "eval_data.num_workers": 0, "eval_data.shuffle_buffer": 0,
        "eval_data.crop_seconds": 1.0})
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
                                                      max_user_frames=100000, max_ai_frames=100000,
                                                      max_context_frames=100000), epochs=1)))
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
    model = load_exported(run)
    assert model.cfg.codebook_size == 64 and model.num_params() > 0


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
    assert fs.exists(f"{s3_bucket}/runs/codec/codec.pt")
    assert fs.exists(f"{s3_bucket}/runs/codec/checkpoints/step-000002/state.pt")


def test_respond_writes_the_ai_turn(corpus, trained_codec, tokens, tmp_path):
    from train.respond import main as respond_main

    run = str(tmp_path / "s2s")
    train_s2s(s2s_cfg(corpus, run, **{"optim.max_steps": 2}))
    user = tmp_path / "question.wav"
    t = np.arange(int(0.5 * 8000)) / 8000
    sf.write(user, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 8000)  # any rate, any format
    out = tmp_path / "reply.wav"
    assert respond_main(["--model", run, "--codec", trained_codec[0], "--input", str(user), "--out", str(out),
                         "--seconds", "0.2", "--no-stop"]) == 0
    audio, sr = sf.read(out)
    from model.codec import load_codec

    codec = load_codec(trained_codec[0])
    assert sr == codec.cfg.sample_rate
    assert len(audio) == round(0.2 * codec.cfg.frame_rate) * codec.cfg.hop_length
    assert respond_main(["--model", run, "--codec", trained_codec[0], "--input", str(tmp_path / "missing.wav"),
                         "--out", str(out)]) == 2


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

    tok = ShardTokenizer(os.path.join(trained_codec[0], "codec.pt"), corpus, str(tmp_path / "tokens"), "v")
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
