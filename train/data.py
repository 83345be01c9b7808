"""Training data: the corpus's WebDataset shards streamed into padded, masked batches.

Three loaders, all ``torch.utils.data.DataLoader(batch_size=None)`` over a ``ShardStream``
(train/shards.py: shard lists, DDP/worker split, shuffle buffer, length buckets, exact resume):

- ``codec_loader``: ``codec-*.tar`` -> random crops for codec training.
- ``token_loader``: ``tokens-*.tar`` -> the S2SModel batch (codes, masks, voice ids, text).
- ``pair_audio_loader``: ``pairs-*.tar`` -> user/AI/context waveforms (tokenizing, evaluation).

Conventions: masks are bool, True = real; padded audio is 0.0; padded codes and text tokens
are ``PAD_ID`` (-1), which no model may read unmasked. A sample that cannot be used is
skipped and counted by reason (``n_corrupt``/``corrupt_reasons`` on every batch):
``missing_member``, ``bad_json``, ``undecodable_audio``, ``audio_empty``, ``audio_not_mono``,
``audio_not_finite``, ``undecodable_npy``, ``codes_bad_dtype``, ``codes_bad_shape``,
``codes_out_of_range``; whole shards: ``shard_missing``, ``shard_corrupt`` (a truncated tar
keeps the samples before the damage).
"""
from __future__ import annotations

import io
import math
from typing import Any, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from stages.audio.decode import resample
from train.shards import (
    CorruptSample,
    DataState,
    LoaderConfig,
    Measured,
    Resume,
    ShardStream,
    shard_urls,
    stable_hash,
)

__all__ = [
    "PAD_ID",
    "DataState",
    "LoaderConfig",
    "ShardStream",
    "codec_loader",
    "pair_audio_loader",
    "shard_urls",
    "token_loader",
    "voice_id",
]

PAD_ID = -1
Urls = Union[str, Sequence[str]]


# --- shared decoding helpers ------------------------------------------------------------------


def _check_audio(x: np.ndarray, what: str) -> np.ndarray:
    if x.size == 0:
        raise CorruptSample("audio_empty", f"{what} has no samples")
    if not np.isfinite(x).all():
        raise CorruptSample("audio_not_finite", f"{what} holds NaN or inf")
    return x


def decode_mono(data: bytes, sample_rate: int, what: str = "audio") -> np.ndarray:
    """Whole mono audio (FLAC or anything libsndfile reads) as float32 at ``sample_rate``."""
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types on garbage
        raise CorruptSample("undecodable_audio", f"{what}: {e}") from e
    if x.shape[1] != 1:
        raise CorruptSample("audio_not_mono", f"{what} has {x.shape[1]} channels")
    x = _check_audio(np.ascontiguousarray(x[:, 0]), what)
    return resample(x, sr, sample_rate)[0] if sr != sample_rate else x


def _audio_seconds(meta: dict[str, Any], field: str, data: bytes, what: str) -> float:
    """Length from the JSON (cheap); the audio header when the JSON lacks it."""
    value = meta.get(field)
    if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return float(value)
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:
        raise CorruptSample("undecodable_audio", f"{what}: {e}") from e
    return info.frames / float(info.samplerate or 1)


def _padded_length(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple) if multiple > 1 else n


def _pad_audio(arrays: list[np.ndarray], multiple: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B,1,T] float audio, [B,T] mask and [B] lengths; T may be 0."""
    lengths = [int(a.shape[0]) for a in arrays]
    t = _padded_length(max(lengths, default=0), multiple)
    audio = torch.zeros(len(arrays), 1, t)
    mask = torch.zeros(len(arrays), t, dtype=torch.bool)
    for i, a in enumerate(arrays):
        audio[i, 0, : a.shape[0]] = torch.from_numpy(a)
        mask[i, : a.shape[0]] = True
    return audio, mask, torch.tensor(lengths, dtype=torch.long)


def _pad_codes(arrays: list[np.ndarray], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B,K,T] long codes padded with PAD_ID and the [B,T] mask; T may be 0."""
    t = max((int(a.shape[1]) for a in arrays), default=0)
    codes = np.full((len(arrays), k, t), PAD_ID, dtype=np.int64)  # numpy fills faster than torch.full
    mask = np.zeros((len(arrays), t), dtype=bool)
    for i, a in enumerate(arrays):
        codes[i, :, : a.shape[1]] = a
        mask[i, : a.shape[1]] = True
    return torch.from_numpy(codes), torch.from_numpy(mask)


def _pad_tokens(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), t), PAD_ID, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(s.astype(np.int64))
        mask[i, : len(s)] = True
    return out, mask


def voice_id(speaker_id: str, n_voices: int) -> int:
    """The AI speaker's voice bucket: a stable hash (same in every process and run)."""
    return stable_hash(str(speaker_id)) % n_voices


# --- codec chunks -----------------------------------------------------------------------------


class CodecSpec:
    """``codec-*.tar``: ``flac`` + ``json`` (CodecChunk) -> a crop of ``crop_seconds``.

    The crop start is drawn from (seed, epoch, key), so a sample's crop is reproducible and
    differs between epochs. At the corpus rate only the crop is decoded (FLAC seeks).
    """

    required = ("flac",)

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg
        self.crop = max(1, int(round(cfg.crop_seconds * cfg.sample_rate)))

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[float, tuple[float, ...]]:
        start, end = meta.get("start_s"), meta.get("end_s")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)) and math.isfinite(end - start):
            meta = {**meta, "duration_s": max(0.0, float(end) - float(start))}
        seconds = _audio_seconds(meta, "duration_s", sample["flac"], "flac")
        return seconds, (min(seconds, self.cfg.crop_seconds),)

    def decode(self, item: Measured, seed: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, stable_hash(item.sample["__key__"])])
        try:
            with sf.SoundFile(io.BytesIO(item.sample["flac"])) as f:
                if f.channels != 1:
                    raise CorruptSample("audio_not_mono", f"flac has {f.channels} channels")
                if f.samplerate == self.cfg.sample_rate and f.frames > self.crop:
                    f.seek(int(rng.integers(0, f.frames - self.crop + 1)))
                    return _check_audio(f.read(self.crop, dtype="float32"), "flac")
                x, sr = f.read(dtype="float32"), f.samplerate
        except CorruptSample:
            raise
        except Exception as e:
            raise CorruptSample("undecodable_audio", f"flac: {e}") from e
        x = _check_audio(x, "flac")
        if sr != self.cfg.sample_rate:
            x = resample(x, sr, self.cfg.sample_rate)[0]
        if x.shape[0] > self.crop:
            start = int(rng.integers(0, x.shape[0] - self.crop + 1))
            x = x[start : start + self.crop]
        return np.ascontiguousarray(x)

    def collate(self, decoded: list[np.ndarray]) -> dict[str, Any]:
        audio, mask, lengths = _pad_audio(decoded, self.cfg.pad_to_multiple)
        return {"audio": audio, "mask": mask, "lengths": lengths}


# --- pairs (audio) ----------------------------------------------------------------------------


_STREAMS = ("user", "context", "ai")


def _context_seconds(meta: dict[str, Any]) -> Optional[float]:
    start, user = meta.get("context_start_s"), meta.get("user_start_s")
    if isinstance(start, (int, float)) and isinstance(user, (int, float)) and user >= start:
        return float(user) - float(start)
    return None


class PairAudioSpec:
    """``pairs-*.tar``: ``user.flac``, ``ai.flac``, optional ``context.flac``, ``json`` (Pair)
    -> whole waveforms (no truncation), padded per stream."""

    required = ("user.flac", "ai.flac")

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[float, tuple[float, ...]]:
        u = _audio_seconds(meta, "user_duration_s", sample["user.flac"], "user.flac")
        a = _audio_seconds(meta, "ai_duration_s", sample["ai.flac"], "ai.flac")
        c = 0.0
        if "context.flac" in sample:
            c = _audio_seconds({"c": _context_seconds(meta)}, "c", sample["context.flac"], "context.flac")
        return u + c + a, (u, c, a)

    def decode(self, item: Measured, seed: int, epoch: int) -> dict[str, Any]:
        sr = self.cfg.sample_rate
        out: dict[str, Any] = {"meta": item.meta, "pair_id": str(item.meta.get("pair_id", item.sample["__key__"]))}
        for name in _STREAMS:
            data = item.sample.get(f"{name}.flac")
            out[name] = decode_mono(data, sr, f"{name}.flac") if data is not None else np.zeros(0, np.float32)
        return out

    def collate(self, decoded: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {}
        for name in _STREAMS:
            audio, mask, lengths = _pad_audio([d[name] for d in decoded], self.cfg.pad_to_multiple)
            batch[f"{name}_audio"], batch[f"{name}_mask"], batch[f"{name}_len"] = audio, mask, lengths
        batch["pairs"] = [d["meta"] for d in decoded]
        batch["pair_id"] = [d["pair_id"] for d in decoded]
        return batch


# --- tokens -----------------------------------------------------------------------------------


def _npy_header(data: bytes, what: str) -> tuple[tuple[int, ...], np.dtype]:
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except Exception as e:
        raise CorruptSample("undecodable_npy", f"{what}: {e}") from e
    return tuple(shape), np.dtype(dtype)


def _check_codes_layout(shape: tuple[int, ...], dtype: np.dtype, k: int, what: str) -> None:
    if dtype.kind not in "iu":
        raise CorruptSample("codes_bad_dtype", f"{what} is {dtype}, not integer")
    if len(shape) != 2 or shape[0] < k:
        raise CorruptSample("codes_bad_shape", f"{what} is shaped {shape}, want [>={k}, frames]")


class TokenSpec:
    """``tokens-*.tar``: ``user.npy``, ``ai.npy``, optional ``context.npy`` (int16
    [n_codebooks, frames]) + ``json`` (Pair + ``codec``) -> the S2SModel batch.

    Truncation: the user turn keeps its first ``max_user_frames`` frames, the AI turn its first
    ``max_ai_frames``, the context its *last* ``max_context_frames`` (the turns nearest the
    user's). Codes with more codebooks than ``n_codebooks`` keep the first ones (RVQ order:
    coarse first); fewer is ``codes_bad_shape``. Lengths for bucketing come from the npy
    headers (exact, no array is read); seconds use the JSON's ``codec.frame_rate``.
    Text (``cfg.text``): the turns' UTF-8 bytes (0..255), first ``max_text_bytes``.
    """

    required = ("user.npy", "ai.npy")

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg
        self.limits = {"user": cfg.max_user_frames, "context": cfg.max_context_frames, "ai": cfg.max_ai_frames}

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[float, tuple[float, ...]]:
        codec = meta.get("codec")
        rate = codec.get("frame_rate") if isinstance(codec, dict) else None
        if not isinstance(rate, (int, float)) or not rate > 0:
            raise CorruptSample("bad_json", "no codec.frame_rate")
        if not isinstance(meta.get("ai_speaker_id"), str):
            raise CorruptSample("bad_json", "no ai_speaker_id")
        frames = []
        for name in _STREAMS:
            data = sample.get(f"{name}.npy")
            if data is None:
                frames.append(0)
                continue
            shape, dtype = _npy_header(data, f"{name}.npy")
            _check_codes_layout(shape, dtype, self.cfg.n_codebooks, f"{name}.npy")
            frames.append(min(shape[1], self.limits[name]))
        return sum(frames) / float(rate), tuple(float(f) for f in frames)

    def _codes(self, data: Optional[bytes], name: str) -> np.ndarray:
        k = self.cfg.n_codebooks
        if data is None:
            return np.zeros((k, 0), np.int16)
        try:
            codes = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise CorruptSample("undecodable_npy", f"{name}.npy: {e}") from e
        _check_codes_layout(codes.shape, codes.dtype, k, f"{name}.npy")
        if name != "context" and codes.shape[1] == 0:
            raise CorruptSample("codes_bad_shape", f"{name}.npy has no frames")
        codes = codes[:k]
        limit = self.limits[name]
        codes = codes[:, max(0, codes.shape[1] - limit) :] if name == "context" else codes[:, :limit]
        size = self.cfg.codebook_size
        if codes.size and (codes.min() < 0 or (size is not None and codes.max() >= size)):
            raise CorruptSample("codes_out_of_range", f"{name}.npy holds {codes.min()}..{codes.max()}")
        return codes

    def decode(self, item: Measured, seed: int, epoch: int) -> dict[str, Any]:
        meta = item.meta
        out: dict[str, Any] = {name: self._codes(item.sample.get(f"{name}.npy"), name) for name in _STREAMS}
        out["voice"] = voice_id(meta["ai_speaker_id"], self.cfg.n_voices)
        out["pair_id"] = str(meta.get("pair_id", item.sample["__key__"]))
        if self.cfg.text:
            for name in ("user", "ai"):
                text = meta.get(f"{name}_text")
                raw = text.encode("utf-8")[: self.cfg.max_text_bytes] if isinstance(text, str) else b""
                out[f"{name}_text"] = np.frombuffer(raw, dtype=np.uint8)
        return out

    def collate(self, decoded: list[dict[str, Any]]) -> dict[str, Any]:
        k = self.cfg.n_codebooks
        batch: dict[str, Any] = {}
        for name in _STREAMS:
            batch[f"{name}_codes"], batch[f"{name}_mask"] = _pad_codes([d[name] for d in decoded], k)
        batch["ai_voice"] = torch.tensor([d["voice"] for d in decoded], dtype=torch.long)
        if self.cfg.text:
            for name in ("user", "ai"):
                batch[f"{name}_text"], batch[f"{name}_text_mask"] = _pad_tokens([d[f"{name}_text"] for d in decoded])
        batch["pair_id"] = [d["pair_id"] for d in decoded]
        return batch


# --- loaders ----------------------------------------------------------------------------------


def _loader(stream: ShardStream, cfg: LoaderConfig) -> DataLoader:
    kwargs: dict[str, Any] = {
        "batch_size": None,
        "num_workers": cfg.num_workers,
        "pin_memory": bool(cfg.pin_memory and torch.cuda.is_available()),
    }
    if cfg.num_workers > 0:
        kwargs.update(persistent_workers=cfg.persistent_workers, prefetch_factor=cfg.prefetch_factor)
    return DataLoader(stream, **kwargs)


def codec_loader(
    urls: Urls,
    cfg: LoaderConfig,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    epochs: Optional[int] = None,
    resume: Resume = None,
) -> DataLoader:
    """Batches ``{"audio": float [B,1,T], "mask": bool [B,T], "lengths": long [B], ...}``:
    crops of ``cfg.crop_seconds``; shorter chunks are zero-padded (mask False). T is the
    batch's longest crop rounded up to ``cfg.pad_to_multiple``. Budget: ``max_batch_seconds``."""
    stream = ShardStream(urls, CodecSpec(cfg), cfg, rank, world_size, epochs, resume, max_cost=cfg.max_batch_seconds)
    return _loader(stream, cfg)


def token_loader(
    urls: Urls,
    cfg: LoaderConfig,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    epochs: Optional[int] = None,
    resume: Resume = None,
    keep: Optional[set[str]] = None,
) -> DataLoader:
    """S2SModel batches: ``user_codes``/``context_codes``/``ai_codes`` long [B,K,T] padded with
    ``PAD_ID`` (-1) and bool masks ``user_mask``/``context_mask``/``ai_mask`` [B,T] (context T
    may be 0), ``ai_voice`` long [B] (``voice_id`` of the JSON's ai_speaker_id modulo
    ``cfg.n_voices``), with ``cfg.text`` ``user_text``/``ai_text`` long [B,L] UTF-8 bytes padded
    with -1 plus ``*_text_mask``, and ``pair_id`` (list). Truncation: see ``TokenSpec``. Budget:
    ``max_batch_frames`` (padded frames of the three streams). ``keep``: pair ids to keep."""
    spec = TokenSpec(cfg)
    stream = ShardStream(urls, spec, cfg, rank, world_size, epochs, resume, keep, max_cost=cfg.max_batch_frames)
    return _loader(stream, cfg)


def pair_audio_loader(
    urls: Urls,
    cfg: LoaderConfig,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    epochs: Optional[int] = None,
    resume: Resume = None,
    keep: Optional[set[str]] = None,
) -> DataLoader:
    """Whole pair waveforms: ``user_audio``/``context_audio``/``ai_audio`` float [B,1,T]
    (zero-padded; context T may be 0), ``*_mask`` bool [B,T], ``*_len`` long [B], ``pairs``
    (the JSON dicts) and ``pair_id``. Budget: ``max_batch_seconds``. For a single ordered pass
    (tokenizing, evaluation) use ``epochs=1`` with ``shuffle_shards=False, shuffle_buffer=0``."""
    stream = ShardStream(urls, PairAudioSpec(cfg), cfg, rank, world_size, epochs, resume, keep, max_cost=cfg.max_batch_seconds)
    return _loader(stream, cfg)
