"""Training data: the corpus's WebDataset shards streamed into padded, masked batches.

Three loaders, all ``torch.utils.data.DataLoader(batch_size=None)`` over a ``ShardStream``
(train/shards.py: shard lists, DDP/worker split, shuffle buffer, length buckets, exact resume):

- ``codec_loader``: ``codec-*.tar`` -> random crops for codec training.
- ``token_loader``: ``tokens-*.tar`` -> the S2SModel batch (codes, masks, voice ids, text).
- ``pair_audio_loader``: ``pairs-*.tar`` -> user/AI/context waveforms (tokenizing, evaluation).

Conventions: masks are bool, True = real; padded audio is 0.0; padded codes and text tokens
are ``PAD_ID`` (-1), which no model may read unmasked. Every audio member is decoded whole and
verified before its sample enters a batch (``decode_verified``: FLAC's MD5 of the audio and
its sample count, and the length against the JSON's duration). A sample that cannot be used is
skipped and counted by reason (``n_corrupt``/``corrupt_reasons`` on every batch):
``missing_member``, ``bad_json``, ``undecodable_audio``, ``audio_checksum_mismatch``,
``audio_length_mismatch``, ``audio_empty``, ``audio_not_mono``, ``audio_not_finite``,
``undecodable_npy``, ``codes_bad_dtype``, ``codes_bad_shape``, ``codes_out_of_range``; whole
shards: ``shard_missing``, ``shard_corrupt`` (a truncated tar keeps the samples before the
damage), ``shard_checksum`` (sha256 differs from the index; see train/shards.py for what that
can and cannot drop). Sound samples a setting leaves out are counted apart
(``skipped_reasons``): ``ai_turn_too_long``.
"""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from model.s2s import text_bytes
from stages.audio.decode import resample
from train.shards import (
    CorruptSample,
    DataState,
    LoaderConfig,
    Measured,
    Resume,
    ShardRef,
    ShardStream,
    shard_refs,
    shard_urls,
    stable_hash,
)

__all__ = [
    "PAD_ID",
    "DataState",
    "LoaderConfig",
    "ShardRef",
    "ShardStream",
    "codec_loader",
    "decode_verified",
    "padding_stats",
    "pair_audio_loader",
    "shard_refs",
    "shard_urls",
    "token_loader",
]

PAD_ID = -1
Urls = Union[str, ShardRef, Sequence[Union[str, ShardRef]]]


# --- verified audio decoding ------------------------------------------------------------------


@dataclass(frozen=True)
class FlacInfo:
    """FLAC's STREAMINFO block: what the encoder says the audio is."""

    sample_rate: int
    channels: int
    bits: int
    frames: int  # 0 = unknown
    md5: bytes  # of the interleaved little-endian samples; all zero = not computed


def flac_info(data: bytes) -> Optional[FlacInfo]:
    """STREAMINFO of FLAC bytes; None for other formats (WAV...)."""
    if data[:4] != b"fLaC":
        return None
    if len(data) < 42 or data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        raise CorruptSample("undecodable_audio", "FLAC without a STREAMINFO block first")
    x = int.from_bytes(data[18:26], "big")
    return FlacInfo(sample_rate=x >> 44, channels=((x >> 41) & 7) + 1, bits=((x >> 36) & 31) + 1,
                    frames=x & ((1 << 36) - 1), md5=bytes(data[26:42]))


def _pcm_md5(raw: np.ndarray, bits: int) -> Optional[bytes]:
    """FLAC's MD5 over the decoded samples (libsndfile returns them left-aligned in int16/int32)."""
    if bits == 16:
        return hashlib.md5(raw.astype("<i2").tobytes()).digest()
    if bits == 8:
        return hashlib.md5((raw >> 8).astype("i1").tobytes()).digest()
    if bits == 24:
        packed = (raw >> 8).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        return hashlib.md5(packed.tobytes()).digest()
    return None


def decode_verified(data: bytes, what: str, expected_s: Optional[float] = None,
                    tolerance_s: float = 0.05) -> tuple[np.ndarray, int]:
    """The whole audio of a member as float32 ``[frames, channels]`` and its rate, verified.

    FLAC is decoded to integers so that its own MD5 of the audio (STREAMINFO) can be checked,
    together with its sample count; any format's length is checked against ``expected_s`` (the
    JSON's duration) within ``tolerance_s``. Raises CorruptSample: ``undecodable_audio``
    (libsndfile refuses it: FLAC's frame CRCs catch most damage), ``audio_checksum_mismatch``,
    ``audio_length_mismatch``, ``audio_empty``, ``audio_not_finite``."""
    info = flac_info(data)
    try:
        if info is not None and info.bits <= 16:
            raw, sr = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
            x = raw.astype(np.float32) / 32768.0  # exactly libsndfile's float conversion
        elif info is not None:
            raw, sr = sf.read(io.BytesIO(data), dtype="int32", always_2d=True)
            x = raw.astype(np.float32) / 2147483648.0
        else:
            raw, (x, sr) = None, sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types on garbage
        raise CorruptSample("undecodable_audio", f"{what}: {e}") from e
    if info is not None:
        if info.frames and raw.shape[0] != info.frames:
            raise CorruptSample("audio_length_mismatch", f"{what}: decoded {raw.shape[0]} samples, "
                                                         f"its header says {info.frames}")
        if any(info.md5):
            digest = _pcm_md5(raw, info.bits)
            if digest is not None and digest != info.md5:
                raise CorruptSample("audio_checksum_mismatch", f"{what}: the audio's MD5 differs from its header's")
    if x.shape[0] == 0:
        raise CorruptSample("audio_empty", f"{what} has no samples")
    if expected_s is not None and abs(x.shape[0] / sr - expected_s) > tolerance_s:
        raise CorruptSample("audio_length_mismatch", f"{what}: {x.shape[0] / sr:.3f} s, its JSON says {expected_s:.3f} s")
    if not np.isfinite(x).all():
        raise CorruptSample("audio_not_finite", f"{what} holds NaN or inf")
    return x, int(sr)


def decode_mono(data: bytes, sample_rate: int, what: str = "audio", expected_s: Optional[float] = None,
                tolerance_s: float = 0.05) -> np.ndarray:
    """Whole mono audio (FLAC or anything libsndfile reads), verified, as float32 at ``sample_rate``."""
    x, sr = decode_verified(data, what, expected_s, tolerance_s)
    if x.shape[1] != 1:
        raise CorruptSample("audio_not_mono", f"{what} has {x.shape[1]} channels")
    x = np.ascontiguousarray(x[:, 0])
    return resample(x, sr, sample_rate)[0] if sr != sample_rate else x


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def clip_seconds(meta: dict[str, Any], name: str) -> Optional[float]:
    """The expected length of member ``<name>.flac`` of a pair: its clip bounds
    (``<name>_clip_start_s``/``<name>_clip_end_s``, clips cut with margins) when the JSON has
    them, else the turn's duration (the context: ``context_start_s`` to ``user_start_s``)."""
    start, end = _number(meta.get(f"{name}_clip_start_s")), _number(meta.get(f"{name}_clip_end_s"))
    if start is not None and end is not None and end >= start:
        return end - start
    if name == "context":
        start, user = _number(meta.get("context_start_s")), _number(meta.get("user_start_s"))
        return user - start if start is not None and user is not None and user >= start else None
    value = _number(meta.get(f"{name}_duration_s"))
    return value if value is not None and value >= 0 else None


def _audio_seconds(value: Optional[float], data: bytes, what: str) -> float:
    """Length from the JSON (cheap); the audio header when the JSON lacks it."""
    if value is not None and value >= 0:
        return float(value)
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:
        raise CorruptSample("undecodable_audio", f"{what}: {e}") from e
    return info.frames / float(info.samplerate or 1)


def _chunk_seconds(meta: dict[str, Any]) -> Optional[float]:
    start, end = _number(meta.get("start_s")), _number(meta.get("end_s"))
    if start is not None and end is not None:
        return max(0.0, end - start)
    return _number(meta.get("duration_s"))


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


# --- codec chunks -----------------------------------------------------------------------------


class CodecSpec:
    """``codec-*.tar``: ``flac`` + ``json`` (CodecChunk) -> a crop of ``crop_seconds``.

    The crop start is drawn from (seed, epoch, key), so a sample's crop is reproducible and
    differs between epochs. The whole chunk is decoded and verified before it is cropped.
    """

    required = ("flac",)

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg
        self.crop = max(1, int(round(cfg.crop_seconds * cfg.sample_rate)))

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[float, tuple[float, ...]]:
        seconds = _audio_seconds(_chunk_seconds(meta), sample["flac"], "flac")
        return seconds, (min(seconds, self.cfg.crop_seconds),)

    def decode(self, item: Measured, seed: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, stable_hash(item.sample["__key__"])])
        x = decode_mono(item.sample["flac"], self.cfg.sample_rate, "flac", _chunk_seconds(item.meta),
                        self.cfg.length_tolerance_s)
        if x.shape[0] > self.crop:
            start = int(rng.integers(0, x.shape[0] - self.crop + 1))
            x = x[start : start + self.crop]
        return np.ascontiguousarray(x)

    def collate(self, decoded: list[np.ndarray]) -> dict[str, Any]:
        audio, mask, lengths = _pad_audio(decoded, self.cfg.pad_to_multiple)
        return {"audio": audio, "mask": mask, "lengths": lengths}


# --- pairs (audio) ----------------------------------------------------------------------------


_STREAMS = ("user", "context", "ai")


class PairAudioSpec:
    """``pairs-*.tar``: ``user.flac``, ``ai.flac``, optional ``context.flac``, ``json`` (Pair)
    -> whole waveforms (no truncation), verified, padded per stream."""

    required = ("user.flac", "ai.flac")

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[float, tuple[float, ...]]:
        lengths = [
            _audio_seconds(clip_seconds(meta, name), sample[f"{name}.flac"], f"{name}.flac")
            if f"{name}.flac" in sample else 0.0
            for name in _STREAMS
        ]
        return sum(lengths), tuple(lengths)

    def decode(self, item: Measured, seed: int, epoch: int) -> dict[str, Any]:
        sr = self.cfg.sample_rate
        out: dict[str, Any] = {"meta": item.meta, "pair_id": str(item.meta.get("pair_id", item.sample["__key__"]))}
        for name in _STREAMS:
            data = item.sample.get(f"{name}.flac")
            out[name] = (decode_mono(data, sr, f"{name}.flac", clip_seconds(item.meta, name), self.cfg.length_tolerance_s)
                         if data is not None else np.zeros(0, np.float32))
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


def frames_for(seconds: float, frame_rate: float) -> int:
    """The frame limit a limit in seconds gives at a codec's frame rate (750 at 12.5 Hz = 60 s)."""
    return int(math.floor(seconds * frame_rate + 1e-6))


class TokenSpec:
    """``tokens-*.tar``: ``user.npy``, ``ai.npy``, optional ``context.npy`` (int16
    [n_codebooks, frames]) + ``json`` (Pair + ``codec``) -> the S2SModel batch.

    Limits are in seconds, turned into frames with the sample's ``codec.frame_rate``: the user
    turn keeps its last ``max_user_s`` (its end is what the answer replies to), the context its
    last ``max_context_s`` (the turns nearest the user's). An AI turn longer than ``max_ai_s``
    is skipped and counted as ``ai_turn_too_long`` (``long_ai="skip"``), or with
    ``long_ai="no_eos"`` kept to its first ``max_ai_s`` with ``ai_eos`` False: the model then
    learns no end-of-turn for it, never a false one. Codes with more codebooks than
    ``n_codebooks`` keep the first ones (RVQ order: coarse first); fewer is ``codes_bad_shape``.
    Lengths for bucketing come from the npy headers (exact, no array is read).

    Text (``cfg.text``): ``model.s2s.text_bytes`` of the turns. The user text keeps its end
    (like the audio) and is left out of a share ``user_text_dropout`` of samples, drawn from
    (seed, epoch, key), so the model also learns to answer without it, as ``train.respond``
    does when given no transcript. The AI text is a CTC target only when it is whole
    (``ai_text_ok``): not for a cropped turn, nor when longer than ``max_text_bytes``.
    Voices: ``cfg.voices`` maps the JSON's ``ai_speaker_id`` to a voice index (0: unknown).
    """

    required = ("user.npy", "ai.npy")

    def __init__(self, cfg: LoaderConfig):
        self.cfg = cfg
        self.limits = {"user": cfg.max_user_s, "context": cfg.max_context_s, "ai": cfg.max_ai_s}

    @staticmethod
    def frame_rate(meta: dict[str, Any]) -> float:
        codec = meta.get("codec")
        rate = codec.get("frame_rate") if isinstance(codec, dict) else None
        if not isinstance(rate, (int, float)) or not rate > 0:
            raise CorruptSample("bad_json", "no codec.frame_rate")
        return float(rate)

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[tuple[float, float], tuple[float, ...]]:
        rate = self.frame_rate(meta)
        if not isinstance(meta.get("ai_speaker_id"), str):
            raise CorruptSample("bad_json", "no ai_speaker_id")
        frames = {}
        for name in _STREAMS:
            data = sample.get(f"{name}.npy")
            if data is None:
                frames[name] = 0
                continue
            shape, dtype = _npy_header(data, f"{name}.npy")
            _check_codes_layout(shape, dtype, self.cfg.n_codebooks, f"{name}.npy")
            limit = frames_for(self.limits[name], rate)
            if name == "ai" and shape[1] > limit and self.cfg.long_ai == "skip":
                raise CorruptSample("ai_turn_too_long", f"{shape[1] / rate:.1f} s > max_ai_s {self.cfg.max_ai_s:g}",
                                    corrupt=False)
            frames[name] = min(shape[1], limit)
        # Two bucket axes: the encoder's length (context + user) and the decoder's (AI turn).
        seconds = ((frames["user"] + frames["context"]) / rate, frames["ai"] / rate)
        return seconds, tuple(float(frames[name]) for name in _STREAMS)

    def _codes(self, data: Optional[bytes], name: str, rate: float) -> tuple[np.ndarray, bool]:
        """(codes, whole): the stream's kept codes and whether nothing was cut."""
        k = self.cfg.n_codebooks
        if data is None:
            return np.zeros((k, 0), np.int16), True
        try:
            codes = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise CorruptSample("undecodable_npy", f"{name}.npy: {e}") from e
        _check_codes_layout(codes.shape, codes.dtype, k, f"{name}.npy")
        if name != "context" and codes.shape[1] == 0:
            raise CorruptSample("codes_bad_shape", f"{name}.npy has no frames")
        codes = codes[:k]
        limit = frames_for(self.limits[name], rate)
        whole = codes.shape[1] <= limit
        # The user turn and the context keep their ends; the AI turn its start.
        codes = codes[:, :limit] if name == "ai" else codes[:, max(0, codes.shape[1] - limit) :]
        size = self.cfg.codebook_size
        if codes.size and (codes.min() < 0 or (size is not None and codes.max() >= size)):
            raise CorruptSample("codes_out_of_range", f"{name}.npy holds {codes.min()}..{codes.max()}")
        return codes, whole

    def decode(self, item: Measured, seed: int, epoch: int) -> dict[str, Any]:
        meta = item.meta
        rate = self.frame_rate(meta)
        out: dict[str, Any] = {}
        for name in _STREAMS:
            out[name], whole = self._codes(item.sample.get(f"{name}.npy"), name, rate)
            if name == "ai":
                out["eos"] = whole
        voices = self.cfg.voices
        out["voice"] = int(voices.get(meta["ai_speaker_id"], 0)) if voices else 0
        out["pair_id"] = str(meta.get("pair_id", item.sample["__key__"]))
        if self.cfg.text:
            limit = self.cfg.max_text_bytes
            user = meta.get("user_text") if isinstance(meta.get("user_text"), str) else ""
            p = self.cfg.user_text_dropout
            if p > 0 and np.random.default_rng([seed, epoch, stable_hash(item.sample["__key__"]), 0x7478]).random() < p:
                user = ""
            out["user_text"] = np.frombuffer(text_bytes(user, limit, keep_end=True), dtype=np.uint8)
            ai = meta.get("ai_text") if isinstance(meta.get("ai_text"), str) else ""
            raw = ai.encode("utf-8")
            out["ai_text_ok"] = bool(out["eos"] and 0 < len(raw) <= limit)
            out["ai_text"] = np.frombuffer(raw if out["ai_text_ok"] else b"", dtype=np.uint8)
        return out

    def collate(self, decoded: list[dict[str, Any]]) -> dict[str, Any]:
        k = self.cfg.n_codebooks
        batch: dict[str, Any] = {}
        for name in _STREAMS:
            batch[f"{name}_codes"], batch[f"{name}_mask"] = _pad_codes([d[name] for d in decoded], k)
        batch["ai_eos"] = torch.tensor([d["eos"] for d in decoded], dtype=torch.bool)
        batch["ai_voice"] = torch.tensor([d["voice"] for d in decoded], dtype=torch.long)
        if self.cfg.text:
            for name in ("user", "ai"):
                batch[f"{name}_text"], batch[f"{name}_text_mask"] = _pad_tokens([d[f"{name}_text"] for d in decoded])
            batch["ai_text_ok"] = torch.tensor([d["ai_text_ok"] for d in decoded], dtype=torch.bool)
        batch["pair_id"] = [d["pair_id"] for d in decoded]
        return batch


def padding_stats(batch: dict[str, Any]) -> dict[str, int]:
    """Real and padded token counts of an S2S batch, as the model lays it out: encoder =
    context + separator + user frames (+ user text bytes), packed per sample to the longest
    sample's total; decoder = AI frames + K (the end-of-turn frame and the delay pattern's K-1
    steps), padded to the longest AI turn."""
    B, K, Ta = batch["ai_codes"].shape
    enc = batch["user_mask"].sum(1) + batch["context_mask"].sum(1) + 1
    if "user_text_mask" in batch:
        enc = enc + batch["user_text_mask"].sum(1)
    return {"enc_real": int(enc.sum()), "enc_total": B * int(enc.max()) if B else 0,
            "dec_real": int(batch["ai_mask"].sum()) + B * K, "dec_total": B * (Ta + K)}


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
    may be 0), ``ai_eos`` bool [B] (False: a cropped AI turn, no end-of-turn target),
    ``ai_voice`` long [B] (``cfg.voices`` index of the JSON's ai_speaker_id, 0 = unknown), with
    ``cfg.text`` ``user_text``/``ai_text`` long [B,L] UTF-8 bytes padded with -1 plus
    ``*_text_mask`` and ``ai_text_ok`` bool [B], and ``pair_id`` (list). Limits: see
    ``TokenSpec``. Buckets on (encoder s, AI s); budget: ``max_batch_frames`` (padded frames of
    the three streams). ``keep``: pair ids to keep."""
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
