"""train/data.py: streaming shard loaders on real tars (real FLAC/npy bytes), local and on a
loopback S3 server: shard lists, splitting across ranks and workers, determinism, bucketing,
corrupt data, exact resume and a real two-process gloo DDP run."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from catalog.store import Store
from stages.audio.decode import encode_flac
from stages.corpus.shards import write_index, write_tar_shard
from train.data import (
    PAD_ID,
    DataState,
    LoaderConfig,
    codec_loader,
    pair_audio_loader,
    shard_urls,
    token_loader,
)
from train.shards import ShardStream

SR = 24000
VERSION = "v-test"


# --- corpus builders --------------------------------------------------------------------------


def ramp(n: int, offset: float = 0.0) -> np.ndarray:
    """A strictly increasing signal: every 16-bit sample value is unique, so a crop can be located."""
    return (np.linspace(-0.9, 0.9, n) + offset).astype(np.float32).clip(-0.95, 0.95)


def codec_sample(key: str, seconds: float, sr: int = SR) -> tuple[str, dict[str, bytes]]:
    n = int(round(seconds * sr))
    meta = {"chunk_id": key, "start_s": 10.0, "end_s": 10.0 + seconds, "speaker_id": "s1"}
    return key, {"flac": encode_flac(ramp(n), sr), "json": json.dumps(meta).encode()}


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def codes(k: int, frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, size=(k, frames)).astype(np.int16)


def pair_meta(key: str, speaker: str = "spk-a", **extra) -> dict:
    return {
        "pair_id": key, "ai_speaker_id": speaker, "user_text": f"hello {key}", "ai_text": "ok ok",
        "user_start_s": 5.0, "context_start_s": 2.0, "user_duration_s": 1.0, "ai_duration_s": 1.0,
        "codec": {"n_codebooks": 8, "frame_rate": 50.0, "codebook_size": 1024, "checkpoint": "x"}, **extra,
    }


def token_sample(key: str, tu: int, ta: int, tc: int = 0, k: int = 8, seed: int = 0, **extra):
    fields = {"user.npy": npy(codes(k, tu, seed)), "ai.npy": npy(codes(k, ta, seed + 1))}
    if tc:
        fields["context.npy"] = npy(codes(k, tc, seed + 2))
    fields["json"] = json.dumps(pair_meta(key, **extra)).encode()
    return key, fields


def make_corpus(root: str, shards: list[tuple[str, list]], extra_index: list | None = None) -> Store:
    """A corpus version with the given (kind, samples) shards, its index and CURRENT.json."""
    store = Store(root)
    written = [
        write_tar_shard(store, f"shards/{VERSION}/{kind}-{i:06d}.tar", samples, kind, VERSION)
        for i, (kind, samples) in enumerate(shards)
    ]
    write_index(store, f"shards/{VERSION}/index.json", VERSION, written + (extra_index or []))
    store.write_json("CURRENT.json", {"version": VERSION})
    return store


def codec_corpus(root: str, n_shards: int, per_shard: int, seconds=lambda i: 0.3 + 0.1 * (i % 5)) -> list[str]:
    shards = [
        ("codec", [codec_sample(f"c{s:02d}_{j}", seconds(s * per_shard + j)) for j in range(per_shard)])
        for s in range(n_shards)
    ]
    make_corpus(root, shards)
    return shard_urls(root, "codec")


def batches(loader, n: int | None = None) -> list[dict]:
    out = []
    for b in loader:
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def all_keys(bs: list[dict]) -> list[str]:
    return [k for b in bs for k in b["keys"]]


def assert_same(a: list[dict], b: list[dict], tensor_keys=("audio", "mask")) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"]
        for k in tensor_keys:
            assert torch.equal(x[k], y[k]), k


CFG = dict(batch_size=4, shuffle_buffer=8, seed=3, crop_seconds=0.5)


# --- shard lists ------------------------------------------------------------------------------


def test_shard_urls_from_corpus_index(tmp_path):
    root = str(tmp_path / "corpus")
    make_corpus(root, [("codec", [codec_sample("a", 0.2)]), ("pairs", []), ("codec", [codec_sample("b", 0.2)])])
    urls = shard_urls(root, "codec")
    assert urls == [f"{root}/shards/{VERSION}/codec-000000.tar", f"{root}/shards/{VERSION}/codec-000002.tar"]
    assert all(os.path.exists(u) for u in urls)
    assert shard_urls(root + "/", "codec", version=VERSION) == urls
    with pytest.raises(ValueError, match="no 'tokens' shards .*codec.*pairs"):
        shard_urls(root, "tokens")
    with pytest.raises(FileNotFoundError, match="no version 'v-nope'"):
        shard_urls(root, "codec", version="v-nope")
    with pytest.raises(FileNotFoundError, match="CURRENT.json is missing"):
        shard_urls(str(tmp_path / "empty"), "codec")
    assert shard_urls("/d/codec-{000000..000002}.tar", "codec") == [f"/d/codec-00000{i}.tar" for i in range(3)]
    assert shard_urls(["/x/a.tar", "/x/b-{1..2}.tar"], "codec") == ["/x/a.tar", "/x/b-1.tar", "/x/b-2.tar"]


@pytest.mark.s3
def test_s3_shard_urls_and_streaming_match_local(tmp_path, s3_endpoint, s3_bucket):
    shards = [("codec", [codec_sample(f"k{s}_{j}", 0.3 + 0.2 * j) for j in range(3)]) for s in range(3)]
    s3_root = f"s3://{s3_bucket}/corpus"
    make_corpus(s3_root, shards)
    make_corpus(str(tmp_path / "local"), shards)
    urls = shard_urls(s3_root, "codec", storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    assert urls == [f"{s3_root}/shards/{VERSION}/codec-{i:06d}.tar" for i in range(3)]
    cfg = LoaderConfig(**CFG, num_workers=2, storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    from_s3 = batches(codec_loader(urls, cfg, epochs=1))
    local = batches(codec_loader(shard_urls(str(tmp_path / "local"), "codec"), cfg, epochs=1))
    assert sorted(all_keys(from_s3)) == sorted(f"k{s}_{j}" for s in range(3) for j in range(3))
    assert_same(from_s3, local)
    assert all(b["n_corrupt"] == 0 for b in from_s3)


# --- codec batches ----------------------------------------------------------------------------


def test_codec_batches_crops_and_determinism(tmp_path):
    urls = codec_corpus(str(tmp_path / "c"), n_shards=3, per_shard=5)
    cfg = LoaderConfig(**CFG)
    run1 = batches(codec_loader(urls, cfg, epochs=1))
    crop = int(0.5 * SR)
    assert sorted(all_keys(run1)) == sorted(f"c{s:02d}_{j}" for s in range(3) for j in range(5))
    seen_cropped = seen_padded = 0
    for b in run1:
        B, _, T = b["audio"].shape
        assert b["audio"].dtype == torch.float32 and b["mask"].dtype == torch.bool
        assert 1 <= B <= 4 and T <= crop and b["mask"].shape == (B, T)
        for i, key in enumerate(b["keys"]):
            s, j = (int(x) for x in key[1:].split("_"))
            n = int(round((0.3 + 0.1 * ((s * 5 + j) % 5)) * SR))
            length = int(b["mask"][i].sum())
            assert length == min(n, crop) and bool(b["mask"][i, :length].all())
            assert float(b["audio"][i, 0, length:].abs().sum()) == 0.0
            src = sf.read(io.BytesIO(encode_flac(ramp(n), SR)), dtype="float32")[0]
            got = b["audio"][i, 0, :length].numpy()
            start = int(np.searchsorted(src, got[0]))
            np.testing.assert_array_equal(got, src[start : start + length])  # a real window of the clip
            seen_cropped += n > crop
            seen_padded += n < crop
    assert seen_cropped and seen_padded

    assert_same(run1, batches(codec_loader(urls, cfg, epochs=1)))
    other_seed = batches(codec_loader(urls, LoaderConfig(**{**CFG, "seed": 4}), epochs=1))
    other_epoch = batches(codec_loader(urls, LoaderConfig(**CFG, epoch=1), epochs=1))
    for other in (other_seed, other_epoch):
        assert sorted(all_keys(other)) == sorted(all_keys(run1)) and all_keys(other) != all_keys(run1)
    # Cycling forever: the second epoch's batches are the epoch=1 loader's.
    forever = batches(codec_loader(urls, cfg), len(run1) + len(other_epoch))
    assert_same(forever[len(run1):], other_epoch)
    assert [b["epoch"] for b in forever] == [0] * len(run1) + [1] * len(other_epoch)


# --- DDP / worker split -----------------------------------------------------------------------


def _split_keys(urls, num_workers: int, world: int) -> list[list[str]]:
    cfg = LoaderConfig(**CFG, num_workers=num_workers)
    return [all_keys(batches(codec_loader(urls, cfg, rank=r, world_size=world, epochs=1))) for r in range(world)]


@pytest.mark.parametrize("n_shards,per_shard", [(9, 2), (2, 7)], ids=["shard-level", "sample-level"])
def test_split_across_ranks_and_workers_is_disjoint_and_complete(tmp_path, n_shards, per_shard, caplog):
    urls = codec_corpus(str(tmp_path / "c"), n_shards, per_shard)
    expected = {f"c{s:02d}_{j}" for s in range(n_shards) for j in range(per_shard)}
    per_rank = _split_keys(urls, num_workers=2, world=2)
    flat = [k for keys in per_rank for k in keys]
    assert len(flat) == len(set(flat)) == len(expected) and set(flat) == expected
    assert all(per_rank)
    with caplog.at_level(logging.INFO, logger="train.shards"):
        batches(codec_loader(urls, LoaderConfig(**CFG), rank=1, world_size=4, epochs=1))
    fallback = "every worker reads all shards" in caplog.text
    assert fallback == (n_shards < 4)


def _ddp_worker(rank: int, world: int, port: int, urls: list[str], out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = LoaderConfig(batch_size=2, shuffle_buffer=4, seed=1, num_workers=0)
        ids = [p for b in token_loader(urls, cfg, epochs=1) for p in b["pair_id"]]  # rank from dist
        gathered: list = [None] * world
        dist.all_gather_object(gathered, ids)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"ids": ids, "gathered": gathered}, f)
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_see_disjoint_pairs(tmp_path):
    shards = [("tokens", [token_sample(f"p{s}_{j}", 10 + j, 8, seed=j) for j in range(3)]) for s in range(4)]
    make_corpus(str(tmp_path / "t"), shards)
    urls = shard_urls(str(tmp_path / "t"), "tokens")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork, not spawn: the children start in milliseconds instead of re-importing torch
    torch.multiprocessing.start_processes(
        _ddp_worker, args=(2, port, urls, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    results = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    ids0, ids1 = results[0]["ids"], results[1]["ids"]
    assert ids0 and ids1 and not set(ids0) & set(ids1)
    assert sorted(ids0 + ids1) == sorted(f"p{s}_{j}" for s in range(4) for j in range(3))
    assert results[0]["gathered"] == [ids0, ids1]


# --- corrupt data -----------------------------------------------------------------------------


def _wav_bytes(x: np.ndarray, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype=subtype)
    return buf.getvalue()


def test_corrupt_samples_and_shards_are_skipped_and_counted(tmp_path):
    root = str(tmp_path / "c")
    good = [codec_sample(f"good{i}", 0.4) for i in range(4)]
    nan = np.full(4800, np.nan, dtype=np.float32)
    bad = [
        ("garbage", {"flac": b"not a flac at all" * 10, "json": b'{"start_s": 0, "end_s": 0.2}'}),
        ("badjson", {"flac": good[0][1]["flac"], "json": b"{nope"}),
        ("nojson", {"flac": good[0][1]["flac"]}),
        ("noflac", {"json": b'{"start_s": 0, "end_s": 0.2}'}),
        ("nan", {"flac": _wav_bytes(nan), "json": b'{"start_s": 0, "end_s": 0.2}'}),
        ("stereo", {"flac": encode_flac(np.zeros((2, 4800)), SR), "json": b'{"start_s": 0, "end_s": 0.2}'}),
        ("listjson", {"flac": good[0][1]["flac"], "json": b"[1, 2]"}),
    ]
    make_corpus(root, [("codec", good[:2] + bad), ("codec", good[2:])])
    urls = shard_urls(root, "codec")
    # A truncated copy of the good shard: its first sample survives, the damaged tail is lost.
    with tarfile.open(urls[1]) as tar:
        cut = next(m for m in tar.getmembers() if m.name == "good3.flac").offset_data + 700
    truncated = str(tmp_path / "codec-truncated.tar")
    open(truncated, "wb").write(open(urls[1], "rb").read()[:cut])
    missing = str(tmp_path / "codec-missing.tar")
    duplicate = str(tmp_path / "codec-duplicate.tar")  # written by hand: write_tar_shard refuses this
    with tarfile.open(duplicate, "w") as tar:
        for name, data in [("dup.flac", good[0][1]["flac"]), ("dup.flac", good[0][1]["flac"]), ("dup.json", b"{}")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    cfg = LoaderConfig(**{**CFG, "shuffle_buffer": 0}, shuffle_shards=False)
    out = batches(codec_loader([missing, truncated, duplicate] + urls, cfg, epochs=1))
    keys = all_keys(out)
    assert sorted(keys) == ["good0", "good1", "good2", "good2", "good3"]
    last = out[-1]
    assert last["corrupt_reasons"] == {
        "undecodable_audio": 1, "bad_json": 2, "missing_member": 2, "audio_not_finite": 1,
        "audio_not_mono": 1, "shard_corrupt": 1, "shard_missing": 1, "duplicate_member": 1,
    }
    assert last["n_corrupt"] == 10
    counts = [b["n_corrupt"] for b in out]
    assert counts == sorted(counts)  # running totals

    # Token shards: undecodable npy, float codes, 1-D codes, out-of-range codes, too few codebooks.
    troot = str(tmp_path / "t")
    ok = token_sample("ok", 5, 5)
    tbad = [
        ("npygarbage", {**ok[1], "user.npy": b"\x93NUMPY garbage"}),
        ("floatcodes", {**ok[1], "ai.npy": npy(np.zeros((8, 5), np.float32))}),
        ("flat", {**ok[1], "user.npy": npy(np.zeros(5, np.int16))}),
        ("negative", {**ok[1], "ai.npy": npy(np.full((8, 5), -3, np.int16))}),
        ("fewk", {**ok[1], "user.npy": npy(np.zeros((4, 5), np.int16))}),
        ("nospeaker", {**ok[1], "json": json.dumps({**pair_meta("x"), "ai_speaker_id": None}).encode()}),
    ]
    make_corpus(troot, [("tokens", [ok] + tbad)])
    tout = batches(token_loader(shard_urls(troot, "tokens"), LoaderConfig(batch_size=8, codebook_size=1024), epochs=1))
    assert [p for b in tout for p in b["pair_id"]] == ["ok"]
    assert tout[-1]["corrupt_reasons"] == {
        "undecodable_npy": 1, "codes_bad_dtype": 1, "codes_bad_shape": 2, "codes_out_of_range": 1, "bad_json": 1,
    }


# --- tokens: bucketing, padding, truncation ---------------------------------------------------


def test_token_batches_bucketing_padding_and_limits_in_seconds(tmp_path):
    root = str(tmp_path / "t")
    rng = np.random.default_rng(0)
    lengths = {}
    samples = []
    for i in range(24):
        tu = int(rng.integers(5, 80))
        ta = int(rng.integers(5, 60))
        tc = int(rng.integers(0, 90)) if i % 3 else 0
        key = f"p{i:02d}"
        lengths[key] = (tu, tc, ta)
        samples.append(token_sample(key, tu, ta, tc, k=9 if i == 5 else 8, seed=i * 10, speaker=f"spk{i % 4}"))
    make_corpus(root, [("tokens", samples[:12]), ("tokens", samples[12:])])
    urls = shard_urls(root, "tokens")
    # 50 Hz frames (pair_meta's codec): 0.8 s = 40 frames, 0.6 s = 30, 0.7 s = 35.
    limits = dict(max_user_s=0.8, max_context_s=0.6, max_ai_s=0.7)
    voices = {"spk0": 3, "spk1": 1, "spk2": 2}  # spk3 is not in the table: the unknown voice
    cfg = LoaderConfig(batch_size=6, max_batch_frames=400, bucket_boundaries=(1.0, 2.0), shuffle_buffer=6,
                       voices=voices, text=True, max_text_bytes=6, long_ai="no_eos", **limits)
    out = batches(token_loader(urls, cfg, epochs=1))
    assert sorted(p for b in out for p in b["pair_id"]) == sorted(lengths)
    by_key = dict(samples)
    for b in out:
        B = len(b["pair_id"])
        frames = {k: [min(lengths[p][i], cfg_limit) for p in b["pair_id"]]
                  for i, (k, cfg_limit) in enumerate(zip(("user", "context", "ai"), (40, 30, 35)))}
        enc_s = [(frames["user"][i] + frames["context"][i]) / 50.0 for i in range(B)]
        ai_s = [frames["ai"][i] / 50.0 for i in range(B)]
        buckets = {(int(np.searchsorted([1.0, 2.0], e, side="right")), int(np.searchsorted([1.0, 2.0], a, side="right")))
                   for e, a in zip(enc_s, ai_s)}
        assert len(buckets) == 1, (enc_s, ai_s)  # one bucket on both axes per batch
        assert B <= 6 and (B == 1 or B * sum(max(frames[k]) for k in frames) <= 400)
        for name in ("user", "context", "ai"):
            c, m = b[f"{name}_codes"], b[f"{name}_mask"]
            assert c.dtype == torch.long and m.dtype == torch.bool
            assert c.shape == (B, 8, max(frames[name])) and m.shape == (B, max(frames[name]))
            assert m.sum(1).tolist() == frames[name]
            assert bool((c[~m.unsqueeze(1).expand_as(c)] == PAD_ID).all())
            assert bool((c[m.unsqueeze(1).expand_as(c)] >= 0).all())
        for i, p in enumerate(b["pair_id"]):
            f = by_key[p]
            u = np.load(io.BytesIO(f["user.npy"]))  # the user turn keeps its end
            np.testing.assert_array_equal(b["user_codes"][i, :, : frames["user"][i]].numpy(), u[:8, -40:])
            a = np.load(io.BytesIO(f["ai.npy"]))  # the AI turn its start
            np.testing.assert_array_equal(b["ai_codes"][i, :, : frames["ai"][i]].numpy(), a[:8, :35])
            assert bool(b["ai_eos"][i]) == (lengths[p][2] <= 35)  # a cropped turn has no end-of-turn
            if "context.npy" in f:  # the context keeps its end
                ctx = np.load(io.BytesIO(f["context.npy"]))
                np.testing.assert_array_equal(b["context_codes"][i, :, : frames["context"][i]].numpy(), ctx[:8, -30:])
            meta = json.loads(f["json"])
            assert int(b["ai_voice"][i]) == voices.get(meta["ai_speaker_id"], 0)
            text = meta["user_text"].encode()[-6:]  # the user text keeps its end too
            assert b["user_text"][i, : len(text)].tolist() == list(text)
            assert b["user_text_mask"][i].sum() == len(text)
            # "ok ok" fits 6 bytes: a CTC target unless the turn was cropped
            assert bool(b["ai_text_ok"][i]) == (lengths[p][2] <= 35)
            assert int(b["ai_text_mask"][i].sum()) == (5 if lengths[p][2] <= 35 else 0)
    # keep: a fine-tuning subset
    kept = batches(token_loader(urls, cfg, epochs=1, keep={"p01", "p07", "p20"}))
    assert sorted(p for b in kept for p in b["pair_id"]) == ["p01", "p07", "p20"]

    # The default for an AI turn over the limit: skipped and counted apart from corrupt data.
    skip = batches(token_loader(urls, LoaderConfig(**{**cfg.__dict__, "long_ai": "skip"}), epochs=1))
    long_ai = sorted(p for p, (_, _, ta) in lengths.items() if ta > 35)
    assert long_ai and sorted(p for b in skip for p in b["pair_id"]) == sorted(set(lengths) - set(long_ai))
    assert skip[-1]["skipped_reasons"] == {"ai_turn_too_long": len(long_ai)} and skip[-1]["n_corrupt"] == 0
    assert all(bool(b["ai_eos"].all()) for b in skip)


def test_limits_follow_the_frame_rate(tmp_path):
    """The same limit in seconds keeps 4x the frames at 50 Hz as at 12.5 Hz."""
    root = str(tmp_path / "t")
    slow = token_sample("slow", 200, 5)
    meta = json.loads(slow[1]["json"])
    meta["codec"]["frame_rate"] = 12.5
    slow[1]["json"] = json.dumps(meta).encode()
    make_corpus(root, [("tokens", [token_sample("fast", 200, 5), slow])])
    cfg = LoaderConfig(batch_size=1, shuffle_buffer=0, shuffle_shards=False, max_user_s=2.0)
    got = {b["pair_id"][0]: int(b["user_mask"].sum()) for b in batches(token_loader(shard_urls(root, "tokens"), cfg, epochs=1))}
    assert got == {"fast": 100, "slow": 25}


def test_user_text_dropout_is_deterministic_and_matches_inference(tmp_path):
    from model.s2s import TEXT_VOCAB
    from train.data import padding_stats
    from train.respond import inference_inputs

    root = str(tmp_path / "t")
    samples = [token_sample(f"p{i:02d}", 6, 4, user_text=f"user turn number {i} ends here") for i in range(40)]
    make_corpus(root, [("tokens", samples)])
    urls = shard_urls(root, "tokens")

    def texts(p: float, epoch: int = 0) -> dict[str, list[int]]:
        cfg = LoaderConfig(batch_size=8, shuffle_buffer=0, text=True, max_text_bytes=12, user_text_dropout=p, epoch=epoch)
        return {pid: b["user_text"][i][b["user_text_mask"][i]].tolist()
                for b in batches(token_loader(urls, cfg, epochs=1)) for i, pid in enumerate(b["pair_id"])}

    always, never, half = texts(0.0), texts(1.0), texts(0.5)
    assert all(always.values()) and not any(never.values())
    dropped = [p for p, t in half.items() if not t]
    assert 10 <= len(dropped) <= 30 and half == texts(0.5)  # about half, the same every run
    assert dropped != [p for p, t in texts(0.5, epoch=1).items() if not t]  # redrawn each epoch
    # Inference builds the encoder's text exactly as training does (no transcript = a dropped one).
    info = {"config": {"text_vocab": TEXT_VOCAB}, "data": {"max_text_bytes": 12}, "voices": {}}
    user, ctx = torch.zeros(1, 8, 6, dtype=torch.long), torch.zeros(1, 8, 0, dtype=torch.long)
    with_text = inference_inputs(info, user, ctx, "user turn number 3 ends here", "")
    assert with_text["user_text"][0][with_text["user_text_mask"][0]].tolist() == always["p03"]
    assert bytes(always["p03"]) == b"user turn number 3 ends here"[-12:]  # the end of the turn
    assert "user_text" not in inference_inputs(info, user, ctx, None, "")
    # Padding accounting of a batch, as the model lays it out.
    b = next(iter(token_loader(urls, LoaderConfig(batch_size=4, shuffle_buffer=0, text=True, max_text_bytes=12), epochs=1)))
    stats = padding_stats(b)
    assert stats["dec_real"] == 4 * (4 + 8) == stats["dec_total"]
    assert stats["enc_real"] == 4 * (6 + 1 + 12) == stats["enc_total"]


def test_held_out_recordings_and_the_split_column(tmp_path):
    root = str(tmp_path / "t")
    samples = [token_sample(f"r{r}_p{j}", 5, 5, recording_id=f"rec-{r}") for r in range(20) for j in range(3)]
    samples += [token_sample(f"s_{j}", 5, 5, recording_id="rec-x", split=split)
                for j, split in enumerate(["train", "valid", "test"])]
    make_corpus(root, [("tokens", samples[:30]), ("tokens", samples[30:])])
    urls = shard_urls(root, "tokens")

    def ids(split: str) -> set[str]:
        cfg = LoaderConfig(batch_size=8, split=split, holdout=0.3)
        return {p for b in batches(token_loader(urls, cfg, epochs=1)) for p in b["pair_id"]}

    train, valid, test = ids("train"), ids("valid"), ids("test")
    assert train and valid and not train & valid
    assert train | valid | test == {k for k, _ in samples}
    assert {"s_0"} <= train and {"s_1"} <= valid and test == {"s_2"}  # the column wins over the hash
    held = {p.split("_")[0] for p in valid if p.startswith("r")}
    assert all({f"{r}_p{j}" for j in range(3)} <= {p for p in valid} for r in held)  # whole recordings
    assert 2 <= len(held) <= 12  # about 30 % of 20 recordings


# --- verified reading -------------------------------------------------------------------------


def flac_frames_offset(data: bytes) -> int:
    """Where a FLAC's audio frames start (after its metadata blocks)."""
    pos = 4
    while True:
        last, size = data[pos] >> 7, int.from_bytes(data[pos + 1 : pos + 4], "big")
        pos += 4 + size
        if last:
            return pos


def test_verified_decode_catches_damage_anywhere_in_the_audio():
    from train.data import CorruptSample, decode_verified

    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    data = encode_flac(x, sr)
    ok, got_sr = decode_verified(data, "x", 1.5)
    assert got_sr == sr and ok.shape == (x.size, 1)
    np.testing.assert_array_equal(ok[:, 0], sf.read(io.BytesIO(data), dtype="float32")[0])
    rng = np.random.default_rng(1)
    start = flac_frames_offset(data)
    reasons = {}
    for _ in range(60):  # random bytes anywhere in the frames
        d = bytearray(data)
        off = int(rng.integers(start, len(d) - 8))
        for i in range(int(rng.integers(1, 8))):
            d[off + i] ^= int(rng.integers(1, 256))
        with pytest.raises(CorruptSample) as e:
            decode_verified(bytes(d), "x", 1.5)
        reasons[e.value.reason] = reasons.get(e.value.reason, 0) + 1
    assert set(reasons) <= {"undecodable_audio", "audio_checksum_mismatch", "audio_length_mismatch"}
    # The header's MD5 (audio intact, checksum not) and its sample rate (length no longer the JSON's).
    for off, reason in ((30, "audio_checksum_mismatch"), (18, "audio_length_mismatch")):
        d = bytearray(data)
        d[off] ^= 0x5A
        with pytest.raises(CorruptSample, match=reason):
            decode_verified(bytes(d), "x", 1.5)
    with pytest.raises(CorruptSample, match="audio_length_mismatch"):
        decode_verified(data, "x", 1.2)  # the JSON says another length


# --- pair audio -------------------------------------------------------------------------------


def test_pair_audio_loader_pads_masks_and_resamples(tmp_path):
    root = str(tmp_path / "p")
    samples = []
    for i, (u, a, c, sr) in enumerate([(0.3, 0.5, 0.0, SR), (0.6, 0.2, 0.4, SR), (0.4, 0.4, 0.0, 16000)]):
        fields = {"user.flac": encode_flac(ramp(int(u * sr)), sr), "ai.flac": encode_flac(ramp(int(a * sr)), sr)}
        if c:
            fields["context.flac"] = encode_flac(ramp(int(c * sr)), sr)
        meta = pair_meta(f"q{i}", user_duration_s=u, ai_duration_s=a, user_start_s=5.0,
                         context_start_s=5.0 - c if c else None)
        samples.append((f"q{i}", {**fields, "json": json.dumps(meta).encode()}))
    make_corpus(root, [("pairs", samples)])
    cfg = LoaderConfig(batch_size=8, shuffle_buffer=0, shuffle_shards=False, pad_to_multiple=480)
    (b,) = batches(pair_audio_loader(shard_urls(root, "pairs"), cfg, epochs=1))
    assert b["pair_id"] == ["q0", "q1", "q2"] and [p["pair_id"] for p in b["pairs"]] == ["q0", "q1", "q2"]
    assert b["user_len"].tolist() == [7200, 14400, 9600]  # q2 resampled 16 kHz -> 24 kHz
    assert b["ai_len"].tolist() == [12000, 4800, 9600]
    assert b["context_len"].tolist() == [0, 9600, 0]
    assert b["user_audio"].shape == (3, 1, 14400) and b["context_audio"].shape == (3, 1, 9600)
    assert b["ai_audio"].shape[-1] == 12000 and b["ai_audio"].shape[-1] % 480 == 0
    for name in ("user", "ai", "context"):
        assert b[f"{name}_mask"].sum(1).tolist() == b[f"{name}_len"].tolist()
    np.testing.assert_allclose(b["user_audio"][0, 0, :7200].numpy(), ramp(7200), atol=1e-4)


# --- exact resume -----------------------------------------------------------------------------


class _CountingSpec:
    """Wraps a spec and counts decodes (to show fast-forwarding decodes nothing)."""

    def __init__(self, spec):
        self.spec, self.required, self.decoded = spec, spec.required, 0

    def measure(self, sample, meta):
        return self.spec.measure(sample, meta)

    def decode(self, item, seed, epoch):
        self.decoded += 1
        return self.spec.decode(item, seed, epoch)

    def collate(self, decoded):
        return self.spec.collate(decoded)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_with_exactly_the_next_batches(tmp_path, num_workers):
    urls = codec_corpus(str(tmp_path / "c"), n_shards=5, per_shard=3)
    cfg = LoaderConfig(**CFG, num_workers=num_workers, bucket_boundaries=(0.45,))
    total, n = 16, 7  # 15 samples: the run crosses several epochs
    full = batches(codec_loader(urls, cfg), total)
    assert len({b["epoch"] for b in full}) >= 2
    state = DataState()
    for b in full[:n]:
        state.update(b)
    saved = json.loads(json.dumps(state.state_dict()))  # as a checkpoint would store it
    by_state = batches(codec_loader(urls, cfg, resume=saved), total - n)
    by_count = batches(codec_loader(urls, cfg, resume=n), total - n)
    assert_same(by_state, full[n:])
    assert_same(by_count, full[n:])
    if num_workers == 2:
        with pytest.raises(ValueError, match="same number"):
            next(iter(codec_loader(urls, LoaderConfig(**CFG, num_workers=0), resume=saved)))
    else:  # in-process: fast-forwarding decodes nothing
        from train.data import CodecSpec

        spec = _CountingSpec(CodecSpec(cfg))
        stream = ShardStream(urls, spec, cfg, resume=saved)
        first = next(iter(stream))
        assert first["keys"] == full[n]["keys"] and spec.decoded == len(first["keys"])


def test_shard_checksum_is_verified_while_streaming(tmp_path):
    """The sha256 is computed over the bytes as they stream: an index that disagrees with the
    shard is counted (``shard_checksum``) once the shard was read; intact samples still pass,
    as the per-member verification is what keeps damage out of batches."""
    from train.data import ShardRef, shard_refs

    root = str(tmp_path / "c")
    make_corpus(root, [("codec", [codec_sample(f"k{s}_{j}", 0.3) for j in range(3)]) for s in range(2)])
    refs = shard_refs(root, "codec")
    assert all(r.sha256 and r.num_bytes for r in refs)
    cfg = LoaderConfig(batch_size=8, shuffle_buffer=0, shuffle_shards=False)
    clean = codec_loader(refs, cfg, epochs=1)
    assert len(all_keys(batches(clean))) == 6 and clean.dataset.counter.reasons == {}
    wrong = [refs[0], ShardRef(refs[1].url, "0" * 64, refs[1].num_bytes)]
    loader = codec_loader(wrong, cfg, epochs=1)
    assert len(all_keys(batches(loader))) == 6
    assert loader.dataset.counter.reasons == {"shard_checksum": 1}
    # Plain URLs carry no checksum: nothing to verify, nothing counted.
    plain = codec_loader([r.url for r in wrong], cfg, epochs=1)
    batches(plain)
    assert plain.dataset.counter.reasons == {}
