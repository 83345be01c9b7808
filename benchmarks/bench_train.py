"""Training throughput of the codec and S2S trainers, and whether data loading keeps up.

    .venv/bin/python -m benchmarks.bench_train [--s2s tiny,small] [--codec tiny,50hz] [--steps 6]
        [--batch 4] [--user-s 5] [--context-s 10] [--ai-s 5] [--crop-s 1] [--workers 0,2]

For each preset: the median time of a full optimizer step (forward, backward, clipping, AdamW;
bf16 autocast on GPU) on a fixed batch after a warm-up step, as samples/s, audio frames/s and
model FLOP/s; on a GPU also model FLOPs utilization (MFU) against the card's dense bf16 peak.
Then the loaders alone (token shards and FLAC codec shards written to a temporary corpus, the
same batch shape) in batches/s, with the ratio loader/step: above 1 the loader outruns training.
Times are medians over --steps (noisy shared machines: trust ratios, not absolutes).

Padding (``--padding-pairs N``, 0 skips it): N token pairs with plausible turn lengths
(lognormal user and AI turns, up to four context turns, segmentation's 30 s turn limit) as a
token corpus, batched by ``train.data.token_loader`` the way the trainer did before length
bucketing reached it (count-only batches of --batch) and the way it does now (two-axis length
buckets, ``DEFAULT_BUCKETS_S``, under a padded-frames budget). It prints the padding share of
encoder tokens and decoder positions (``padding_stats``: as the model lays a batch out) of each,
and, with an S2S preset, real (non-padding) tokens per second of training steps on those batches.
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
from train.config import DEFAULT_BUCKETS_S
from train.data import LoaderConfig, codec_loader, padding_stats, token_loader

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


def plausible_lengths(n: int, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """(user s, context s, AI s) of n pairs: lognormal turns (median 2.5 s user, 3 s AI, heavy
    tail) within segmentation's 0.3-30 s, and 0-4 context turns (none for a call's first pair)."""
    def turn(median: float) -> float:
        return float(np.clip(rng.lognormal(np.log(median), 0.9), 0.3, 30.0))

    out = []
    for _ in range(n):
        n_ctx = int(rng.choice([0, 1, 2, 3, 4], p=[0.15, 0.1, 0.1, 0.1, 0.55]))
        ctx = min(60.0, sum(turn(2.8) for _ in range(n_ctx)))
        out.append((turn(2.5), ctx, turn(3.0)))
    return out


def write_padding_corpus(root: str, n: int) -> list[str]:
    store = Store(root)
    rng = np.random.default_rng(1)
    lengths = plausible_lengths(n, rng)

    def pair(i: int):
        u, c, a = (int(round(x * FRAME_RATE)) for x in lengths[i])
        fields = {"user.npy": _npy(np.zeros((8, u), np.int16)), "ai.npy": _npy(np.zeros((8, a), np.int16))}
        if c:
            fields["context.npy"] = _npy(np.zeros((8, c), np.int16))
        meta = {"pair_id": f"p{i:05d}", "recording_id": f"r{i // 20}", "ai_speaker_id": "s", "user_text": "",
                "ai_text": "", "codec": {"n_codebooks": 8, "codebook_size": 1024, "frame_rate": FRAME_RATE}}
        fields["json"] = json.dumps(meta).encode()
        return f"p{i:05d}", fields

    per = 250
    shards = [write_tar_shard(store, f"shards/data/tokens-{s}.tar", (pair(i) for i in range(s * per, min(n, (s + 1) * per))),
                              "tokens", "v") for s in range((n + per - 1) // per)]
    write_index(store, "shards/v/index.json", "v", shards)
    return [store.uri(x.path) for x in shards]


def padding_rows(urls: list[str], args, device: torch.device) -> list[dict]:
    """Padding share and real tokens/s before (count-only batches) and after (buckets + budget)."""
    mean_frames = FRAME_RATE * sum(sum(x) for x in plausible_lengths(2000, np.random.default_rng(1))) / 2000
    budget = int(args.batch * mean_frames * 1.25)  # about --batch samples of average length, padded
    variants = {
        "before: count-only batches": LoaderConfig(batch_size=args.batch, shuffle_buffer=256, pin_memory=False),
        "after: length buckets + frame budget": LoaderConfig(batch_size=4 * args.batch, shuffle_buffer=256,
                                                             bucket_boundaries=DEFAULT_BUCKETS_S,
                                                             max_batch_frames=budget, pin_memory=False),
    }
    preset = next((p for p in args.s2s.split(",") if p), None)
    rows: list[dict] = []
    for name, cfg in variants.items():
        totals: dict[str, int] = {}
        n_batches = n_samples = 0
        for b in token_loader(urls, cfg, epochs=1):
            for k, v in padding_stats(b).items():
                totals[k] = totals.get(k, 0) + v
            n_batches += 1
            n_samples += len(b["pair_id"])
        # Timed steps on batches spread over the epoch (the loader is deterministic: a second
        # pass gives the same batches), the first one a warm-up.
        picks = set(np.linspace(0, n_batches - 1, args.padding_steps + 1).round().astype(int).tolist()) if preset else set()
        kept = [b for i, b in enumerate(token_loader(urls, cfg, epochs=1)) if i in picks]
        row = {"what": name, "batches": n_batches, "samples_per_batch": n_samples / max(n_batches, 1),
               "pad_enc": 1 - totals["enc_real"] / totals["enc_total"],
               "pad_dec": 1 - totals["dec_real"] / totals["dec_total"], "real_tokens_s": None, "padded_tokens_s": None}
        if preset and kept:
            cfg_m = replace(S2S_PRESETS[preset], dropout=0.0, max_frames=2000)
            torch.manual_seed(0)
            model = S2SModel(cfg_m).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
            real = padded = 0
            elapsed = 0.0
            for i, b in enumerate(kept):
                batch = {k: v.to(device) for k, v in b.items() if torch.is_tensor(v)}
                sync(device)
                t0 = time.perf_counter()
                with autocast(device, "auto"):
                    out = model(batch)
                out.loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                sync(device)
                if i:  # the first step warms up
                    elapsed += time.perf_counter() - t0
                    st = padding_stats(b)
                    real += st["enc_real"] + st["dec_real"]
                    padded += st["enc_total"] + st["dec_total"]
            row["real_tokens_s"], row["padded_tokens_s"] = real / elapsed, padded / elapsed
            row["preset"] = preset
        rows.append(row)
    return rows


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
    ap.add_argument("--padding-pairs", type=int, default=2000, help="pairs of the padding simulation (0: skip it)")
    ap.add_argument("--padding-steps", type=int, default=6, help="timed S2S steps per padding variant")
    ap.add_argument("--padding-only", action="store_true", help="only the padding simulation")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"bench_train  {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine(('torch',))}; device {device} ({gpu}); torch threads {torch.get_num_threads()}")
    print(f"batch {args.batch}: S2S user {args.user_s:g} s + context {args.context_s:g} s -> AI {args.ai_s:g} s "
          f"at {FRAME_RATE:g} Hz x 8 codebooks; codec crops {args.crop_s:g} s; {args.steps} timed steps each\n")
    if args.padding_pairs:
        with tempfile.TemporaryDirectory() as root:
            urls = write_padding_corpus(root, args.padding_pairs)
            prows = padding_rows(urls, args, device)
        print(f"padding: {args.padding_pairs} pairs of plausible turn lengths at {FRAME_RATE:g} Hz "
              f"(first S2S preset for tokens/s)")
        print(f"{'batching':<40} {'batches':>8} {'samples/batch':>14} {'enc padding':>12} {'dec padding':>12} "
              f"{'real tok/s':>11} {'all tok/s':>10}")
        for r in prows:
            rt = f"{r['real_tokens_s']:.0f}" if r["real_tokens_s"] else "-"
            at = f"{r['padded_tokens_s']:.0f}" if r["padded_tokens_s"] else "-"
            print(f"{r['what']:<40} {r['batches']:>8} {r['samples_per_batch']:>14.1f} {100 * r['pad_enc']:>11.1f}% "
                  f"{100 * r['pad_dec']:>11.1f}% {rt:>11} {at:>10}")
        print()
        if args.padding_only:
            return 0
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
                               max_user_s=10**6, max_context_s=10**6, max_ai_s=10**6, crop_seconds=args.crop_s)
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
