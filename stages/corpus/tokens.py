"""Tokenize pair shards with a trained codec, so S2S training never re-encodes audio.

Each ``pairs-*.tar`` becomes one ``tokens-*.tar`` whose samples keep the pair's key and hold
``user.npy``, ``ai.npy`` and (when the pair has context) ``context.npy``: int16 codes shaped
``[n_codebooks, frames]``, plus the pair's JSON extended with a ``codec`` entry. Token shards are
named by the source shard's sha256, so a scheduled rebuild only tokenizes shards it has not seen.
A sample that cannot be decoded or encoded is left out and reported with its reason.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

import numpy as np

from catalog.schema import Reject, Shard
from catalog.store import Store
from stages.audio.decode import read_flac, resample
from stages.corpus.shards import read_tar_samples, write_tar_shard
from stages.errors import RejectError

AUDIO_MEMBERS = ("user", "ai", "context")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def codec_id_for(sha256: str) -> str:
    """The id of a codec whose checkpoint file has this sha256."""
    return "codec-" + sha256[:12]


def codec_id(checkpoint_path: str) -> str:
    """Content id of a codec checkpoint: token shards from different codecs never mix."""
    return codec_id_for(file_sha256(checkpoint_path))


def tokens_shard_path(pairs_shard: Shard) -> str:
    return f"shards/data/tokens-{pairs_shard.sha256[:16]}.tar"


def _npy(codes: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, codes.astype(np.int16), allow_pickle=False)
    return buf.getvalue()


@dataclass
class TokenizeResult:
    shard: Optional[Shard]
    rejects: list[Reject] = field(default_factory=list)
    reused: bool = False
    codec: dict = field(default_factory=dict)  # n_codebooks, codebook_size, frame_rate, ...


class ShardTokenizer:
    """Loads the codec once (a Ray actor holds one), then tokenizes whole pair shards."""

    def __init__(
        self,
        checkpoint: str,
        corpus: str,
        tokens_root: str,
        version: str,
        storage_options: Optional[dict] = None,
        device: str = "auto",
    ):
        import torch

        from model.codec import load_codec

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.codec = load_codec(checkpoint).to(self.device).eval()
        cfg = self.codec.cfg
        self.sample_rate = int(cfg.sample_rate)
        sha256 = file_sha256(checkpoint)
        self.info = {
            "id": codec_id_for(sha256),
            "sha256": sha256,
            "n_codebooks": int(cfg.n_codebooks),
            "codebook_size": int(cfg.codebook_size),
            "frame_rate": float(cfg.frame_rate),
            "sample_rate": self.sample_rate,
        }
        self.corpus = Store(corpus, storage_options)
        self.out = Store(tokens_root, storage_options)
        self.version = version

    def encode(self, audio: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None].to(self.device)
            codes = self.codec.encode(wav)[0]
        return codes.to("cpu", torch.int16).numpy()

    def tokenize_sample(self, key: str, fields: dict[str, bytes]) -> dict[str, bytes]:
        if "json" not in fields or "user.flac" not in fields or "ai.flac" not in fields:
            raise RejectError("missing_member", f"members: {sorted(fields)}")
        try:
            meta = json.loads(fields["json"])
        except ValueError as e:
            raise RejectError("bad_json", str(e)) from e
        out: dict[str, bytes] = {}
        for name in AUDIO_MEMBERS:
            data = fields.get(f"{name}.flac")
            if data is None:
                continue
            try:
                audio, sr = read_flac(io.BytesIO(data))
            except Exception as e:  # libsndfile raises several types on garbage
                raise RejectError("undecodable_audio", f"{name}.flac: {e}") from e
            mono = resample(audio.mean(axis=0, keepdims=True), sr, self.sample_rate)[0]
            if mono.size == 0 or not np.isfinite(mono).all():
                raise RejectError("bad_audio", f"{name}.flac is empty or not finite")
            out[f"{name}.npy"] = _npy(self.encode(mono))
        meta["codec"] = self.info
        out["json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return out

    def __call__(self, pairs_shard: Shard) -> TokenizeResult:
        rel = tokens_shard_path(pairs_shard)
        rejects: list[Reject] = []

        def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
            try:
                with self.corpus.open(pairs_shard.path, "rb") as f:
                    for key, fields in read_tar_samples(f):
                        try:
                            yield key, self.tokenize_sample(key, fields)
                        except RejectError as e:
                            rejects.append(Reject("tokens", "tokenize", key, e.reason, e.detail))
            except (OSError, EOFError, tarfile.TarError) as e:
                rejects.append(Reject("tokens", "tokenize", pairs_shard.path, "unreadable_shard", str(e)))

        record = rel + ".json"
        if self.out.exists(record):  # written after its tar: the shard is complete
            done = self.out.read_json(record)
            return TokenizeResult(Shard(**done["shard"]), [Reject(**r) for r in done["rejects"]], True, self.info)
        shard = write_tar_shard(self.out, rel, samples(), kind="tokens", version=self.version)
        self.out.write_json(record, {"shard": asdict(shard), "rejects": [asdict(r) for r in rejects]})
        return TokenizeResult(shard, rejects, False, self.info)
