"""Training throughput of the codec and S2S trainers, and whether data loading keeps up.

    .venv/bin/python -m benchmarks.bench_train [--s2s tiny,small] [--codec tiny,50hz] [--steps 6]
        [--batch 4] [--user-s 5] [--context-s 10] [--ai-s 5] [--crop-s 1] [--workers 0,2]

For each preset: the median time of a full optimizer step (forward, backward, clipping, AdamW;
bf16 autocast on GPU) on a fixed batch after a warm-up step, as samples/s, audio frames/s and
model FLOP/s; on a GPU also model FLOPs utilization (MFU) against the card's dense bf16 peak.
Then the loaders alone (token shards and FLAC codec shards written to a temporary corpus, the
same batch shape) in batches/s, with the ratio loader/step: above 1 the loader outruns training.
Times are medians over --steps (noisy shared machines: trust ratios, not absolutes).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import statistics
import tempfile
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from benchmarks.common import machine, spread
from catalog.store import Store
from model.codec import CODEC_PRESETS, Codec
from model.codec_losses import (discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss,
                                multiscale_mel_stft_loss)
from model.discriminator import MultiScaleSTFTDiscriminator
from model.s2s import S2S_PRESETS, S2SModel
from stages.audio.decode import encode_flac
from stages.corpus.shards import write_index, write_tar_shard
from train.common import autocast
from train.data import LoaderConfig, codec_loader, token_loader

FRAME_RATE = 50.0  # the S2S presets model 50 Hz codec frames
SAMPLE_RATE = 24000
# Dense bf16 tensor-core peaks (FLOP/s) of the cards the trainers target.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], n: int, device: torch.device) -> list[float]:
    step()  # warm-up: allocator, kernels, lazy init
    sync(device)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def s2s_batch(model: S2SModel, b: int, tu: int, tc: int, ta: int, device: torch.device) -> dict:
    k, n = model.cfg.n_codebooks, model.cfg.codebook_size
    g = torch.Generator().manual_seed(0)
    ones = lambda t: torch.ones(b, t, dtype=torch.bool)  # noqa: E731
    batch = {
        "user_codes": torch.randint(0, n, (b, k, tu), generator=g), "user_mask": ones(tu),
        "context_codes": torch.randint(0, n, (b, k, tc), generator=g), "context_mask": ones(tc),
        "ai_codes": torch.randint(0, n, (b, k, ta), generator=g), "ai_mask": ones(ta),
        "ai_voice": torch.zeros(b, dtype=torch.long),
    }
    return {key: v.to(device) for key, v in batch.items()}


def bench_s2s(preset: str, args, device: torch.device) -> dict:
    tu, tc, ta = (int(s * FRAME_RATE) for s in (args.user_s, args.context_s, args.ai_s))
    cfg = replace(S2S_PRESETS[preset], dropout=0.0, max_frames=max(ta + 8, S2S_PRESETS[preset].max_frames))
    torch.manual_seed(0)
    model = S2SModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch = s2s_batch(model, args.batch, tu, tc, ta, device)

    def step() -> None:
        with autocast(device, "auto"):
            out = model(batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = time_steps(step, args.steps, device)
    enc_len, dec_len = tc + 1 + tu, ta + cfg.n_codebooks  # separator; delay pattern + end of turn
    flops = model.flops_per_sample(enc_len, dec_len) * args.batch
    med = statistics.median(times)
    peak = peak_flops(device)
    return {"what": f"S2S {preset} ({model.num_params() / 1e6:.1f} M)", "times": times,
            "samples_s": args.batch / med, "frames_s": args.batch * (tu + tc + ta) / med,
            "tflops": flops / med / 1e12, "mfu": flops / med / peak if peak else None}


def bench_codec(preset: str, args, device: torch.device, adversarial: bool = True) -> dict:
    cfg = CODEC_PRESETS[preset]
    torch.manual_seed(0)
    codec = Codec(cfg).to(device)
    disc = MultiScaleSTFTDiscriminator().to(device)
    opt_g = torch.optim.AdamW(codec.parameters(), lr=3e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=3e-4, betas=(0.5, 0.9))
    n = int(args.crop_s * cfg.sample_rate)
    audio = (0.1 * torch.randn(args.batch, 1, n, generator=torch.Generator().manual_seed(0))).to(device)

    def step() -> None:
        with autocast(device, "auto"):
            out = codec(audio)
            recon = multiscale_mel_stft_loss(out.audio.float(), audio.float(), cfg.sample_rate)
            loss = recon + out.commit_loss
            if adversarial:
                real_logits, real_maps = disc(audio)
                fake_logits, _ = disc(out.audio.detach())
                d_loss = discriminator_hinge_loss(real_logits, fake_logits)
        if adversarial:
            d_loss.backward()
            disc.requires_grad_(False)
            with autocast(device, "auto"):
                gen_logits, gen_maps = disc(out.audio)
                loss = loss + generator_hinge_loss(gen_logits) + 2 * feature_matching_loss(real_maps, gen_maps)
        loss.backward()
        disc.requires_grad_(True)
        for o in (opt_g, opt_d):
            o.step()
            o.zero_grad(set_to_none=True)

    times = time_steps(step, args.steps, device)
    med = statistics.median(times)
    phase = "+ MS-STFT GAN" if adversarial else "recon. only"
    return {"what": f"codec {preset} ({sum(p.numel() for p in codec.parameters()) / 1e6:.1f} M), {phase}",
            "times": times, "samples_s": args.batch / med, "frames_s": args.batch * args.crop_s * cfg.frame_rate / med,
            "audio_s": args.batch * args.crop_s / med, "tflops": None, "mfu": None}


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def write_corpus(root: str, args, n: int = 96) -> tuple[list[str], list[str]]:
    """Token shards and codec shards (real FLAC) of the benchmark's batch shape, as a corpus."""
    rng = np.random.default_rng(0)
    tu, tc, ta = (int(s * FRAME_RATE) for s in (args.user_s, args.context_s, args.ai_s))
    store = Store(root)

    def token(i: int):
        fields = {name: _npy(rng.integers(0, 1024, (8, t)).astype(np.int16))
                  for name, t in (("user.npy", tu), ("context.npy", tc), ("ai.npy", ta)) if t}
        meta = {"pair_id": f"p{i:05d}", "ai_speaker_id": f"s{i % 7}", "user_text": "", "ai_text": "",
                "codec": {"n_codebooks": 8, "codebook_size": 1024, "frame_rate": FRAME_RATE}}
        fields["json"] = json.dumps(meta).encode()
        return f"p{i:05d}", fields

    def chunk(i: int):
        seconds = 4.0
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        x = 0.2 * np.sin(2 * np.pi * (120 + 10 * (i % 9)) * t) + 0.02 * rng.standard_normal(t.size)
        meta = {"chunk_id": f"c{i:05d}", "start_s": 0.0, "end_s": seconds}
        return f"c{i:05d}", {"flac": encode_flac(x.astype(np.float32), SAMPLE_RATE), "json": json.dumps(meta).encode()}

    shards = []
    for s in range(4):
        shards.append(write_tar_shard(store, f"shards/data/tokens-{s}.tar", (token(s * n // 4 + i) for i in range(n // 4)), "tokens", "v"))
        shards.append(write_tar_shard(store, f"shards/data/codec-{s}.tar", (chunk(s * n // 4 + i) for i in range(n // 4)), "codec", "v"))
    write_index(store, "shards/v/index.json", "v", shards)
    urls = lambda kind: [store.uri(s.path) for s in shards if s.kind == kind]  # noqa: E731
    return urls("tokens"), urls("codec")


def loader_rate(make, n_batches: int, repeats: int = 3) -> list[float]:
    """Batches per second of a fresh loader (worker start-up included), per repeat."""
    rates = []
    for _ in range(repeats):
        it = iter(make())
        next(it)  # the first batch pays for worker start-up; rate is steady-state
        t0 = time.perf_counter()
        for _ in range(n_batches):
            next(it)
        rates.append(n_batches / (time.perf_counter() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--s2s", default="tiny,small", help="S2S presets (tiny, small, base, large)")
    ap.add_argument("--codec", default="tiny,50hz", help="codec presets (tiny, 50hz, 12.5hz)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--user-s", type=float, default=5.0)
    ap.add_argument("--context-s", type=float, default=10.0)
    ap.add_argument("--ai-s", type=float, default=5.0)
    ap.add_argument("--crop-s", type=float, default=1.0)
    ap.add_argument("--workers", default="0,2", help="loader worker counts to measure")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"bench_train  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine(('torch',))}; device {device} ({gpu}); torch threads {torch.get_num_threads()}")
    print(f"batch {args.batch}: S2S user {args.user_s:g} s + context {args.context_s:g} s -> AI {args.ai_s:g} s "
          f"at {FRAME_RATE:g} Hz x 8 codebooks; codec crops {args.crop_s:g} s; {args.steps} timed steps each\n")
    rows = [bench_s2s(p, args, device) for p in args.s2s.split(",") if p] + \
           [bench_codec(p, args, device, adv) for p in args.codec.split(",") if p for adv in (False, True)]
    print(f"{'training step':<44} {'s/step median (min-max)':>26} {'samples/s':>10} {'frames/s':>10} {'TFLOP/s':>8} {'MFU':>6}")
    for r in rows:
        tf = f"{r['tflops']:.3f}" if r["tflops"] is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"{r['what']:<44} {spread(r['times'], '.3f'):>26} {r['samples_s']:>10.2f} {r['frames_s']:>10.0f} {tf:>8} {mfu:>6}")
    with tempfile.TemporaryDirectory() as root:
        token_urls, codec_urls = write_corpus(root, args)
        print(f"\n{'loader alone':<40} {'batches/s median (min-max)':>26} {'vs slowest step':>16} {'vs fastest':>11}")
        s2s_steps = [1 / statistics.median(r["times"]) for r in rows if r["what"].startswith("S2S")]
        codec_steps = [1 / statistics.median(r["times"]) for r in rows if r["what"].startswith("codec")]
        for workers in (int(w) for w in args.workers.split(",")):
            cfg = LoaderConfig(batch_size=args.batch, num_workers=workers, shuffle_buffer=32, pin_memory=False,
                               max_user_frames=10**6, max_context_frames=10**6, max_ai_frames=10**6,
                               crop_seconds=args.crop_s)
            for name, make, steps in (
                ("tokens", lambda: token_loader(token_urls, cfg), s2s_steps),
                ("codec FLAC crops", lambda: codec_loader(codec_urls, cfg), codec_steps),
            ):
                rates = loader_rate(make, n_batches=12)
                med = statistics.median(rates)
                vs = lambda s: f"{med / s:.1f}x" if s else "-"  # noqa: E731
                print(f"{name + f', {workers} workers':<40} {spread(rates, '.1f'):>26} "
                      f"{vs(min(steps) if steps else 0):>16} {vs(max(steps) if steps else 0):>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
