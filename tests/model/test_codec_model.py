"""The codec model on CPU (tiny preset): shapes, causality, RVQ behaviour (EMA, dead-code
restarts, DDP all-reduce), overfitting one batch of espeak-ng speech with the GAN path, metrics,
and checkpoint round trips."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import soxr
import torch

from model.codec import CODEC_PRESETS, Codec, CodecConfig, codec_config, load_codec, num_parameters
from model.codec_losses import (discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss,
                                multiscale_mel_stft_loss)
from model.codec_metrics import (CodebookUsage, MetricAverager, mel_distance, pesq_wb,
                                 reconstruction_metrics, si_sdr, stoi)
from model.discriminator import MultiScaleSTFTDiscriminator
from model.quantizer import ResidualVectorQuantizer, codebook_stats
from stages.sources.demo.fisher_calls import SPEAKERS, synthesize

SR = 24000


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Two shared cores: one intra-op thread is faster than two fighting other processes.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~4 s of espeak-ng English at 24 kHz."""
    with tempfile.TemporaryDirectory() as d:
        x = synthesize("The quick brown fox jumps over the lazy dog, and then it runs far away.",
                       SPEAKERS[0], d, sample_rate=SR)
    assert len(x) > 2 * SR
    return x.astype(np.float32)


def tiny(**kw) -> Codec:
    torch.manual_seed(0)
    return Codec(codec_config("tiny", **kw))


# ---------------------------------------------------------------- shapes and presets

def test_presets_rates_and_sizes():
    assert CODEC_PRESETS["50hz"].hop_length == 480 and CODEC_PRESETS["50hz"].frame_rate == 50.0
    assert CODEC_PRESETS["12.5hz"].hop_length == 1920 and CODEC_PRESETS["12.5hz"].frame_rate == 12.5
    assert CODEC_PRESETS["50hz"].n_codebooks == 8 and CODEC_PRESETS["50hz"].codebook_size == 1024
    assert CODEC_PRESETS["tiny"].frame_rate == 200.0
    assert 5_000 < num_parameters(tiny()) < 100_000
    assert codec_config("tiny", n_codebooks=3).n_codebooks == 3
    with pytest.raises(KeyError):
        codec_config("nope")


def test_50hz_preset_shapes():
    torch.manual_seed(0)
    codec = Codec(CODEC_PRESETS["50hz"]).eval()
    wav = torch.randn(1, 1, 4800) * 0.1
    codes = codec.encode(wav)
    assert codes.shape == (1, 8, 10) and codes.max() < 1024
    assert codec.decode(codes).shape == (1, 1, 4800)


@pytest.mark.parametrize("num_samples", [1, 119, 120, 121, 2400, 5000])
def test_frame_counts_and_code_range(num_samples):
    codec = tiny().eval()
    wav = torch.randn(2, 1, num_samples) * 0.1
    frames = codec.num_frames(num_samples)
    assert frames == -(-num_samples // 120)
    codes = codec.encode(wav)
    assert codes.dtype == torch.long and codes.shape == (2, 8, frames)
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    assert codec.decode(codes).shape == (2, 1, frames * 120)
    out = codec(wav)
    assert out.audio.shape == wav.shape and torch.equal(out.codes, codes)
    assert codec.encode(wav, n_q=3).shape == (2, 3, frames)
    assert codec.decode(codes[:, :3]).shape == (2, 1, frames * 120)


def test_bad_input_shapes_raise():
    codec = tiny().eval()
    with pytest.raises(ValueError):
        codec.encode(torch.zeros(2, 24000))
    with pytest.raises(ValueError):
        codec.decode(torch.zeros(8, 10, dtype=torch.long))
    with pytest.raises(ValueError):
        codec.decode(torch.zeros(1, 9, 10, dtype=torch.long))


# ---------------------------------------------------------------- causality

def test_encoder_and_decoder_are_causal():
    codec = tiny().eval()
    torch.manual_seed(1)
    wav = torch.randn(1, 1, 40 * 120) * 0.1
    n = 17
    changed = wav.clone()
    changed[..., n * 120:] = torch.randn(1, 1, wav.shape[-1] - n * 120)
    z1, z2 = codec.encoder(wav), codec.encoder(changed)
    assert torch.allclose(z1[..., :n], z2[..., :n], atol=1e-6)
    assert not torch.allclose(z1[..., n:], z2[..., n:])
    c1, c2 = codec.encode(wav), codec.encode(changed)
    assert torch.equal(c1[..., :n], c2[..., :n])
    # Streaming: encoding only the first n frames' samples gives the same first n frames.
    assert torch.equal(codec.encode(wav[..., : n * 120]), c1[..., :n])
    # Decoder: samples before frame n do not depend on codes of frames >= n.
    c3 = c1.clone()
    c3[..., n:] = (c3[..., n:] + 7) % 64
    y1, y3 = codec.decode(c1), codec.decode(c3)
    assert torch.allclose(y1[..., : n * 120], y3[..., : n * 120], atol=1e-6)
    assert not torch.allclose(y1[..., n * 120:], y3[..., n * 120:])


def test_noncausal_variant_sees_the_future():
    codec = tiny(causal=False).eval()
    wav = torch.randn(1, 1, 2400) * 0.1
    changed = wav.clone()
    changed[..., 1200:] = 0
    z1, z2 = codec.encoder(wav), codec.encoder(changed)
    assert z1.shape[-1] == 20
    assert not torch.allclose(z1[..., 9], z2[..., 9])  # frame 9 ends at sample 1200


# ---------------------------------------------------------------- residual vector quantizer

CENTERS = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])


def _clusters(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = CENTERS.repeat(n // 4, 1) + 0.1 * torch.randn(n, 2, generator=g)
    return pts.t()[None]  # [1, 2, n] as latents [B, D, F]


def _set_codebook(rvq: ResidualVectorQuantizer, embed: torch.Tensor) -> None:
    cb = rvq.codebooks[0]
    cb.embed.copy_(embed)
    cb.cluster_size.fill_(1.0)
    cb.embed_sum.copy_(embed)
    cb.initialized.fill_(True)


def test_ema_moves_codebook_to_the_data():
    rvq = ResidualVectorQuantizer(2, n_codebooks=1, codebook_size=4, decay=0.8, dead_code_threshold=0.0).train()
    assert list(rvq.parameters()) == []  # codebooks are buffers: no gradient, no optimizer state
    _set_codebook(rvq, CENTERS + 1.5)
    start = (rvq.codebooks[0].embed - CENTERS).norm(dim=1).max().item()
    for step in range(30):
        out = rvq(_clusters(400, step))
    end = (rvq.codebooks[0].embed - CENTERS).norm(dim=1).max().item()
    assert start > 2.0 and end < 0.05
    assert out.stats["n_restarted"] == 0
    assert torch.allclose(out.stats["usage"], torch.tensor([1.0]))
    assert abs(out.stats["perplexity"].item() - 4.0) < 0.05


def test_first_batch_initialises_codebooks_from_data():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(2, n_codebooks=1, codebook_size=8, dead_code_threshold=0.0).train()
    z = _clusters(400, 0)
    rvq(z)
    cb = rvq.codebooks[0]
    assert bool(cb.initialized)
    # Each code is one of the batch vectors (then one EMA step), so all lie near a centre.
    assert (torch.cdist(cb.embed, CENTERS).min(dim=1).values < 1.0).all()


def test_dead_code_is_restarted_from_batch_vectors():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, n_codebooks=2, codebook_size=16, dead_code_threshold=0.1).train()
    z = torch.randn(2, 4, 200)
    rvq(z)  # initialise
    cb = rvq.codebooks[0]
    cb.embed[3] = 1e3
    cb.embed_sum[3] = 1e3
    cb.cluster_size[3] = 0.0
    z2 = torch.randn(2, 4, 200)
    out = rvq(z2)
    assert out.stats["n_restarted"] >= 1
    batch = z2.transpose(1, 2).reshape(-1, 4)
    assert (batch - cb.embed[3]).abs().max(dim=1).values.min() < 1e-6  # replaced by a vector of this batch
    share = cb.cluster_size.sum() / 16
    assert torch.isclose(cb.cluster_size[3], 0.1 * share, rtol=0.05)  # starts at the threshold
    # The EMA sum was reset with it, so the next update does not drag the code back to 1e3.
    rvq(torch.randn(2, 4, 200))
    assert cb.embed[3].abs().max() < 10


def test_commitment_loss_and_straight_through_gradient():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, n_codebooks=3, codebook_size=8).train()
    z = torch.randn(2, 4, 50, requires_grad=True)
    out = rvq(z)
    assert out.commit_loss.item() > 0
    (g_commit,) = torch.autograd.grad(out.commit_loss, z, retain_graph=True)
    assert g_commit.abs().sum() > 0
    (g_st,) = torch.autograd.grad(out.quantized.sum(), z)
    assert torch.allclose(g_st, torch.ones_like(g_st))  # straight-through: identity gradient
    # Eval: no EMA change, and decode(encode(z)) is exactly the quantized latents.
    rvq.eval()
    before = rvq.codebooks[0].embed.clone()
    out = rvq(z.detach())
    assert torch.equal(before, rvq.codebooks[0].embed)
    codes = rvq.encode(z.detach())
    assert torch.equal(codes, out.codes)
    assert torch.allclose(rvq.decode(codes), out.quantized, atol=1e-5)


def test_quantizer_dropout_uses_fewer_codebooks_in_training_only():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(4, n_codebooks=4, codebook_size=8, quantizer_dropout=1.0).train()
    z = torch.randn(64, 4, 5)
    n_q = rvq(z).stats["n_q"]
    assert n_q.min() >= 1 and n_q.max() <= 4 and len(set(n_q.tolist())) > 1
    # An item rebuilt from one codebook equals its first codebook entry.
    rvq.eval()
    assert (rvq(z).stats["n_q"] == 4).all()


def test_codebook_stats_uniform_and_collapsed():
    uniform = torch.arange(64).repeat(3)[None, None, :].expand(2, 2, -1)
    usage, ppl = codebook_stats(uniform, 64)
    assert torch.allclose(usage, torch.ones(2)) and torch.allclose(ppl, torch.full((2,), 64.0), rtol=1e-4)
    usage, ppl = codebook_stats(torch.zeros(2, 3, 10, dtype=torch.long), 64)
    assert torch.allclose(usage, torch.full((3,), 1 / 64)) and torch.allclose(ppl, torch.ones(3))


def test_codebook_usage_accumulator_respects_mask():
    acc = CodebookUsage(2, 16)
    codes = torch.zeros(2, 2, 8, dtype=torch.long)
    codes[0, :, :4] = torch.arange(4)
    codes[1] = 15  # all padding below
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, :4] = True
    acc.update(codes, mask)
    acc.update(torch.arange(16).view(1, 1, 16).expand(1, 2, 16)[:, :1])  # only codebook 0
    s = acc.summary()
    assert s["frames"] == 20
    assert s["usage"] == [1.0, 4 / 16]
    assert abs(s["perplexity"][1] - 4.0) < 1e-6


def _ddp_worker(rank: int, world: int, init_file: str, result_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rvq = ResidualVectorQuantizer(2, n_codebooks=1, codebook_size=4, decay=0.8, dead_code_threshold=0.0).train()
    _set_codebook(rvq, CENTERS + 1.5)
    for step in range(3):
        z = _clusters(400, step)
        rvq(z[..., rank * 200:(rank + 1) * 200])  # each rank sees half of the batch
    torch.save(rvq.codebooks[0].embed, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_all_reduce_equals_one_process_on_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children inherit the imported torch (spawn re-imports it: ~10 s on 2 busy cores).
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    single = ResidualVectorQuantizer(2, n_codebooks=1, codebook_size=4, decay=0.8, dead_code_threshold=0.0).train()
    _set_codebook(single, CENTERS + 1.5)
    for step in range(3):
        single(_clusters(400, step))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0, r1)
    assert torch.allclose(r0, single.codebooks[0].embed, atol=1e-5)


# ---------------------------------------------------------------- losses, discriminator, overfit

def test_reconstruction_and_feature_losses_vanish_for_identical_input():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4800) * 0.1
    assert multiscale_mel_stft_loss(x, x, SR).item() == 0.0
    assert multiscale_mel_stft_loss(x * 0.5, x, SR).item() > 0.1
    fm = [[torch.randn(2, 3, 4, 5)], [torch.randn(2, 3, 2, 2), torch.randn(2, 1, 2, 2)]]
    assert feature_matching_loss(fm, fm).item() == 0.0
    logits = [torch.full((2, 1, 4, 4), 2.0)]
    assert discriminator_hinge_loss(logits, [-l for l in logits]).item() == 0.0
    assert generator_hinge_loss(logits).item() == 0.0
    assert generator_hinge_loss([-l for l in logits]).item() == 3.0


def test_discriminator_outputs_per_scale():
    torch.manual_seed(0)
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(256, 512, 128))
    logits, fmaps = disc(torch.randn(2, 1, 2400))
    assert len(logits) == len(fmaps) == 3
    assert all(lg.shape[0] == 2 and lg.shape[1] == 1 for lg in logits)
    assert all(len(f) == 5 for f in fmaps)
    # Short input is padded up to the largest window rather than failing.
    logits, _ = disc(torch.randn(1, 1, 100))
    assert all(torch.isfinite(lg).all() for lg in logits)


def test_codec_overfits_one_batch_of_speech_and_gan_step_runs(speech):
    torch.manual_seed(0)
    codec = tiny().train()
    wav = torch.from_numpy(np.stack([speech[:9600], speech[9600:19200]]))[:, None]
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3, betas=(0.5, 0.9))
    losses = []
    for _ in range(60):
        out = codec(wav)
        rec = multiscale_mel_stft_loss(out.audio, wav, SR)
        opt.zero_grad()
        (rec + out.commit_loss).backward()
        opt.step()
        losses.append(rec.item())
    assert losses[-1] < 0.6 * losses[0], losses[::10]
    assert out.quantizer_stats["perplexity"].mean() > 2.0

    # One adversarial step: the discriminator on detached fakes, then the generator.
    disc = MultiScaleSTFTDiscriminator(filters=4, n_ffts=(256, 512, 128))
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-4)
    out = codec(wav)
    real_logits, _ = disc(wav)
    fake_logits, _ = disc(out.audio.detach())
    d_loss = discriminator_hinge_loss(real_logits, fake_logits)
    d_opt.zero_grad()
    opt.zero_grad()
    d_loss.backward()
    d_grads = [p.grad for p in disc.parameters()]
    assert torch.isfinite(d_loss) and all(g is not None and torch.isfinite(g).all() for g in d_grads)
    assert sum(g.abs().sum() for g in d_grads) > 0
    assert all(p.grad is None for p in codec.parameters())  # detached fakes
    d_opt.step()

    fake_logits, fake_fmaps = disc(out.audio)
    _, real_fmaps = disc(wav)
    g_adv = generator_hinge_loss(fake_logits)
    g_feat = feature_matching_loss(real_fmaps, fake_fmaps)
    g_loss = multiscale_mel_stft_loss(out.audio, wav, SR) + g_adv + 2 * g_feat + out.commit_loss
    assert all(torch.isfinite(t) for t in (g_adv, g_feat, g_loss))
    g_loss.backward()
    for part in (codec.encoder, codec.decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
    opt.step()


# ---------------------------------------------------------------- metrics

def test_metrics_on_identical_and_noisy_speech(speech):
    rng = np.random.default_rng(0)
    noisy = speech + 0.3 * rng.standard_normal(len(speech)).astype(np.float32)
    assert si_sdr(speech, speech) > 80
    assert si_sdr(speech, noisy) < 0
    assert si_sdr(torch.from_numpy(speech)[None, None], 0.5 * speech) > 80  # scale-invariant
    assert mel_distance(speech, speech, SR) == 0.0
    assert mel_distance(speech, noisy, SR) > 1.0
    assert stoi(speech, speech, SR) > 0.99
    assert stoi(speech, noisy, SR) < 0.8
    s16 = soxr.resample(speech, SR, 16000)
    score, reason = pesq_wb(s16, s16, 16000)
    assert reason is None and score > 4.0
    score, _ = pesq_wb(speech, noisy, SR)
    assert score < 2.0


def test_pesq_refusals_give_none_with_reason(speech):
    assert pesq_wb(np.zeros(SR), np.zeros(SR), SR) == (None, "pesq_no_utterances")
    assert pesq_wb(speech[:2000], speech[:2000], SR) == (None, "pesq_too_short")
    m = reconstruction_metrics(speech[:2000], speech[:2000], SR, with_stoi=False)
    assert m["pesq"] is None and m["pesq_error"] == "pesq_too_short"
    avg = MetricAverager()
    avg.update(m)
    avg.update({"si_sdr": 10.0, "pesq": 3.0, "mel_distance": 1.0})
    s = avg.summary()
    assert s["pesq"] == 3.0 and s["pesq_missing"] == 1 and s["errors"] == {"pesq_too_short": 1}
    assert s["mel_distance"] == 0.5


# ---------------------------------------------------------------- checkpoints

def test_save_load_round_trip(tmp_path):
    codec = tiny(n_codebooks=4).train()
    wav = torch.randn(2, 1, 2400) * 0.1
    codec(wav)  # initialises codebooks, moves EMA state
    codec.eval()
    codes = codec.encode(wav)
    codec.save(str(tmp_path / "codec.pt"))
    for path in (tmp_path, tmp_path / "codec.pt"):
        loaded = load_codec(str(path))
        assert not loaded.training
        assert loaded.cfg == codec.cfg and loaded.cfg.strides == (4, 5, 6)
        assert torch.equal(loaded.encode(wav), codes)
        assert torch.allclose(loaded.decode(codes), codec.decode(codes))
    ckpt = torch.load(tmp_path / "codec.pt", weights_only=True)
    assert set(ckpt) == {"config", "model"} and ckpt["config"]["n_codebooks"] == 4
    assert CodecConfig.from_dict(ckpt["config"]) == codec.cfg


def test_load_codec_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="codec checkpoint not found"):
        load_codec(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_codec(str(tmp_path / "missing.pt"))
    bad = tmp_path / "codec.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_codec(str(tmp_path))
    torch.save({"weights": {}}, bad)
    with pytest.raises(ValueError, match="not a codec checkpoint"):
        load_codec(str(bad))
    cfg = tiny().config_dict()
    torch.save({"config": cfg, "model": {}}, bad)
    with pytest.raises(ValueError, match="does not match"):
        load_codec(str(bad))
    torch.save({"config": {**cfg, "bogus": 1}, "model": {}}, bad)
    with pytest.raises(ValueError, match="unknown codec config"):
        load_codec(str(bad))
