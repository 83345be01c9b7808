"""Answer a user's audio with the S2S model: user audio (+ optional history) in, AI turn out.

    python -m train.respond --model runs/s2s --input question.wav --out reply.wav [--codec runs/codec]

The input is decoded by ffmpeg (any format), mixed to mono and resampled to the codec's rate,
tokenized by the codec encoder, answered by the S2S model, and decoded back by the codec. The
codec must be the file the model's token corpus was made with (``s2s.pt`` records its sha256);
by default it is the copy that token corpus keeps. Inputs are shaped as in training: the user
turn and the context keep their last ``max_user_s`` / ``max_context_s``, the transcript (when
given) is encoded as the loader encodes it.
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


def _codes(codec, path: str, device: torch.device, keep_s: Optional[float] = None) -> torch.Tensor:
    """The codec's codes of an audio file; with ``keep_s`` only its last seconds (the loader
    keeps the end of a user turn and of the context the same way)."""
    decoded = decode_file(path)
    mono = resample(decoded.samples.mean(axis=0, keepdims=True), decoded.sample_rate, codec.cfg.sample_rate)
    wav = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))[None].to(device)
    with torch.inference_mode():
        codes = codec.encode(wav)
    if keep_s is not None:
        from train.data import frames_for

        codes = codes[:, :, max(0, codes.shape[-1] - frames_for(keep_s, codec.cfg.frame_rate)):]
    return codes


def check_codec(info: dict, codec_file: str, codec) -> None:
    """The codec must be the one the model's token corpus was written with (same file bytes);
    models exported before codec identities were recorded are checked on shapes only."""
    from stages.corpus.tokens import codec_id_for, file_sha256

    want = info.get("codec") or {}
    model_cfg = info["config"]
    if want.get("sha256"):
        got = file_sha256(codec_file)
        if got != want["sha256"]:
            where = f" (the token corpus keeps it at {want['path']})" if want.get("path") else ""
            raise ValueError(
                f"codec mismatch: the S2S model was trained on tokens of codec {want.get('id')} "
                f"(sha256 {want['sha256'][:16]}...); {codec_file} is codec {codec_id_for(got)}. "
                f"Pass --codec with the model's codec{where}"
            )
    if model_cfg["n_codebooks"] > codec.cfg.n_codebooks or model_cfg["codebook_size"] != codec.cfg.codebook_size:
        raise ValueError(
            f"the S2S model expects {model_cfg['n_codebooks']} codebooks of {model_cfg['codebook_size']} entries, "
            f"the codec gives {codec.cfg.n_codebooks} of {codec.cfg.codebook_size}"
        )


def inference_inputs(info: dict, user: torch.Tensor, context: torch.Tensor, user_text: Optional[str],
                     voice: str) -> dict[str, torch.Tensor]:
    """The encoder and voice inputs ``generate`` gets, built the way the loader builds a
    training batch: the same text bytes (``text_bytes``, the user text keeping its end, none
    without a transcript: training leaves it out of a share of samples for this), the same
    voice table."""
    from model.s2s import text_tokens
    from train.voices import VoiceTable

    dev = user.device
    data = info.get("data") or {}
    out = {
        "user_codes": user,
        "user_mask": torch.ones(1, user.shape[-1], dtype=torch.bool, device=dev),
        "context_codes": context,
        "context_mask": torch.ones(1, context.shape[-1], dtype=torch.bool, device=dev),
    }
    try:
        index = VoiceTable.from_dict(info.get("voices")).index(voice)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    out["ai_voice"] = torch.tensor([index], device=dev)
    if info["config"].get("text_vocab") and user_text:
        tokens, mask = text_tokens([user_text], int(data.get("max_text_bytes", 512)), keep_end=True)
        out["user_text"], out["user_text_mask"] = tokens.to(dev), mask.to(dev)
    elif user_text:
        raise ValueError("this S2S model has no text stream: --user-text cannot be used")
    return out


def respond(
    model_path: str,
    codec_path: Optional[str],
    input_path: str,
    out_path: str,
    context_path: Optional[str] = None,
    voice: str = "",
    seconds: Optional[float] = None,
    temperature: float = 0.8,
    top_k: int = 50,
    seed: int = 0,
    device: str = "auto",
    stop_at_eos: bool = True,
    user_text: Optional[str] = None,
) -> float:
    """Write the AI turn to ``out_path``; returns its duration in seconds. ``codec_path``
    None: the codec the model's token corpus keeps. ``seconds`` None: the training AI limit."""
    from model.codec import load_codec
    from model.s2s import load_s2s
    from pipelines.tokenize import resolve_codec_file
    from train.s2s import read_export

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    info = read_export(model_path)
    codec_path = codec_path or (info.get("codec") or {}).get("path")
    if not codec_path:
        raise ValueError("the model does not say where its codec is: pass --codec")
    codec_file = resolve_codec_file(codec_path)
    codec = load_codec(codec_file).to(dev).eval()
    check_codec(info, codec_file, codec)
    model = load_s2s(info).to(dev).eval()
    data = info.get("data") or {}
    k_model = model.cfg.n_codebooks
    user = _codes(codec, input_path, dev, data.get("max_user_s"))[:, :k_model]
    k = user.shape[1]
    context = (_codes(codec, context_path, dev, data.get("max_context_s"))[:, :k_model] if context_path
               else torch.zeros(1, k, 0, dtype=torch.long, device=dev))
    seconds = seconds if seconds is not None else float(data.get("max_ai_s", 10.0))
    max_frames = max(1, int(round(seconds * codec.cfg.frame_rate)))
    inputs = inference_inputs(info, user, context, user_text, voice)
    generator = torch.Generator(device=dev).manual_seed(seed)
    with torch.inference_mode():
        codes, lengths = model.generate(
            **inputs,
            max_frames=max_frames,
            temperature=temperature,
            top_k=top_k,
            stop_at_eos=stop_at_eos,
            generator=generator,
            return_lengths=True,
        )
        frames = int(lengths[0])
        audio = codec.decode(codes[:, :, :frames])[0, 0].float().cpu().numpy() if frames else np.zeros(0, np.float32)
    sf.write(out_path, np.clip(audio, -1.0, 1.0), int(codec.cfg.sample_rate), subtype="PCM_16")
    return len(audio) / codec.cfg.sample_rate


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.respond", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="S2S run folder (with s2s.pt) or an s2s.pt file")
    p.add_argument("--codec", help="the codec the model's tokens were made with: a codec file, a codec run folder "
                                   "or a token corpus (default: the token corpus's copy the model names); "
                                   "another codec is refused")
    p.add_argument("--input", required=True, help="the user's turn: any audio file ffmpeg reads")
    p.add_argument("--context", help="the conversation so far, as audio (optional)")
    p.add_argument("--user-text", help="the user turn's transcript, for a model with a text stream (optional: "
                                       "training leaves it out of a share of samples)")
    p.add_argument("--voice", default="", help="AI voice: a voice key or speaker id of the model's voice table "
                                               "(default: the unknown voice)")
    p.add_argument("--out", required=True, help="output WAV")
    p.add_argument("--seconds", type=float, default=None, help="longest reply (default: the training AI-turn limit)")
    p.add_argument("--no-stop", action="store_true", help="ignore end-of-turn: always generate --seconds")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        seconds = respond(args.model, args.codec, args.input, args.out, args.context, args.voice,
                          args.seconds, args.temperature, args.top_k, args.seed, args.device, not args.no_stop,
                          args.user_text)
    except (FileNotFoundError, ValueError, RejectError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({seconds:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
