"""Answer a user's audio with the S2S model: user audio (+ optional history) in, AI turn out.

    python -m train.respond --model runs/s2s --codec runs/codec --input question.wav --out reply.wav

The input is decoded by ffmpeg (any format), mixed to mono and resampled to the codec's rate,
tokenized by the codec encoder, answered by the S2S model, and decoded back by the codec.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np
import soundfile as sf
import torch

from stages.audio.decode import resample
from stages.audio.load import decode_file
from stages.errors import RejectError


def _codes(codec, path: str, device: torch.device) -> torch.Tensor:
    decoded = decode_file(path)
    mono = resample(decoded.samples.mean(axis=0, keepdims=True), decoded.sample_rate, codec.cfg.sample_rate)
    wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None].to(device)
    with torch.inference_mode():
        return codec.encode(wav)


def respond(
    model_path: str,
    codec_path: str,
    input_path: str,
    out_path: str,
    context_path: Optional[str] = None,
    voice: str = "",
    seconds: float = 5.0,
    temperature: float = 0.8,
    top_k: int = 50,
    seed: int = 0,
    device: str = "auto",
    stop_at_eos: bool = True,
) -> float:
    """Write the AI turn to ``out_path``; returns its duration in seconds."""
    from model.codec import load_codec
    from pipelines.tokenize import resolve_codec_file
    from train.data import voice_id
    from train.s2s import load_exported

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    codec = load_codec(resolve_codec_file(codec_path)).to(dev).eval()
    model = load_exported(model_path, dev)
    if model.cfg.n_codebooks > codec.cfg.n_codebooks or model.cfg.codebook_size != codec.cfg.codebook_size:
        raise ValueError(
            f"the S2S model expects {model.cfg.n_codebooks} codebooks of {model.cfg.codebook_size} entries, "
            f"the codec gives {codec.cfg.n_codebooks} of {codec.cfg.codebook_size}"
        )
    k_model = model.cfg.n_codebooks
    user = _codes(codec, input_path, dev)[:, :k_model]
    k = user.shape[1]
    context = _codes(codec, context_path, dev)[:, :k_model] if context_path else torch.zeros(1, k, 0, dtype=torch.long, device=dev)
    max_frames = max(1, int(round(seconds * codec.cfg.frame_rate)))
    generator = torch.Generator(device=dev).manual_seed(seed)
    with torch.inference_mode():
        codes = model.generate(
            user_codes=user,
            user_mask=torch.ones(1, user.shape[-1], dtype=torch.bool, device=dev),
            context_codes=context,
            context_mask=torch.ones(1, context.shape[-1], dtype=torch.bool, device=dev),
            ai_voice=torch.tensor([voice_id(voice, model.cfg.n_voices)], device=dev),
            max_frames=max_frames,
            temperature=temperature,
            top_k=top_k,
            stop_at_eos=stop_at_eos,
            generator=generator,
            return_lengths=True,
        )
        codes, lengths = codes
        frames = int(lengths[0])
        audio = codec.decode(codes[:, :, :frames])[0, 0].float().cpu().numpy() if frames else np.zeros(0, np.float32)
    sf.write(out_path, np.clip(audio, -1.0, 1.0), int(codec.cfg.sample_rate), subtype="PCM_16")
    return len(audio) / codec.cfg.sample_rate


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.respond", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="S2S run folder (with s2s.pt) or an s2s.pt file")
    p.add_argument("--codec", required=True, help="codec run folder (with codec.pt) or a codec.pt file")
    p.add_argument("--input", required=True, help="the user's turn: any audio file ffmpeg reads")
    p.add_argument("--context", help="the conversation so far, as audio (optional)")
    p.add_argument("--voice", default="", help="AI voice: a speaker id seen in training (hashed as the loader does)")
    p.add_argument("--out", required=True, help="output WAV")
    p.add_argument("--seconds", type=float, default=10.0, help="longest reply to generate")
    p.add_argument("--no-stop", action="store_true", help="ignore end-of-turn: always generate --seconds")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        seconds = respond(args.model, args.codec, args.input, args.out, args.context, args.voice,
                          args.seconds, args.temperature, args.top_k, args.seed, args.device, not args.no_stop)
    except (FileNotFoundError, ValueError, RejectError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
