"""Streaming WebDataset shards for training: shard lists, splitting, shuffling, bucketing, resume.

Samples flow through one deterministic pipeline per (DDP rank, dataloader worker):

    shard order (shuffled per epoch with the seed, the same on every rank and worker)
    -> this worker's shards (shard i to global worker i % total), or, when there are fewer
       shards than workers, every shard with only the samples whose index % total is this worker's
    -> raw samples (``{"__key__", ext: bytes}``) streamed from tars through fsspec, each shard's
       sha256 computed over the bytes as they are read and compared with the corpus index at
       the shard's end (``shard_checksum`` counted on a mismatch)
    -> JSON parsed, required members checked, the split filter (train / valid), length
       measured (cheap: no audio is decoded)
    -> seeded shuffle buffer -> length buckets -> batches of raw samples
    -> decode + verify + collate (skipped while fast-forwarding to a resume position)

What the checksum can and cannot do: a shard is streamed, so its checksum is known only after
its last sample was read, when the samples before have already gone on towards batches.
Buffering whole shards (hundreds of MB) to drop them would cost memory and latency, so the
guarantee is per sample instead: every audio member is fully decoded and verified (FLAC's own
MD5 of the audio, its sample count, and its length against the JSON's duration) before it
enters a batch, and a sample that fails is dropped and counted by reason. A checksum mismatch
is then counted (and logged with the URL) as evidence that the shard needs rebuilding; token
shards (int16 npy) have no inner checksum, so their damage is caught by the npy header and
range checks only.

Batches are formed inside the dataset, so a DataLoader runs with ``batch_size=None`` and returns
the workers' batches round-robin: the trainer's batch n comes from worker n % W. Batch
formation never depends on decoding, which is what lets a resumed loader skip batches exactly
without decoding them.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Protocol, Sequence, Union

import braceexpand
import fsspec
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

log = logging.getLogger(__name__)

CURRENT = "CURRENT.json"


# --- configuration ----------------------------------------------------------------------------


SPLITS = ("train", "valid", "test", "all")


@dataclass
class LoaderConfig:
    """Everything a loader needs besides its shard URLs.

    Batches hold at most ``batch_size`` samples and, when a budget is set, at most
    ``max_batch_seconds`` (audio loaders) or ``max_batch_frames`` (token loader) of *padded*
    length: samples x the sum over streams (user, context, ai) of the longest member.
    ``bucket_boundaries`` (seconds) split samples into length buckets that batch separately
    (token samples are bucketed on two axes: encoder seconds and AI-turn seconds).

    ``split`` keeps one split: the JSON's ``split`` field when it has one, otherwise a held-out
    share ``holdout`` of recordings chosen by a hash of the recording id ("valid"), the rest
    being "train"; "all" keeps everything.
    """

    batch_size: int = 16
    max_batch_seconds: Optional[float] = None
    max_batch_frames: Optional[int] = None
    bucket_boundaries: Sequence[float] = ()
    shuffle_buffer: int = 256
    shuffle_shards: bool = True
    seed: int = 0
    epoch: int = 0  # the first epoch: shard order, shuffle and crops depend on (seed, epoch)
    num_workers: int = 0
    persistent_workers: bool = False
    prefetch_factor: int = 2
    pin_memory: bool = True  # only ever applied when CUDA is available
    storage_options: dict[str, Any] = field(default_factory=dict)
    split: str = "all"
    holdout: float = 0.0
    # audio
    sample_rate: int = 24000
    crop_seconds: float = 1.0  # codec training crops
    pad_to_multiple: int = 1  # audio lengths padded up to a multiple (e.g. the codec hop)
    # decoded length vs the JSON's duration; covers the JSON's rounding and FLAC block edges
    length_tolerance_s: float = 0.05
    # tokens
    n_codebooks: int = 8
    codebook_size: Optional[int] = None  # when set, codes outside [0, codebook_size) are corrupt
    # Turn limits in seconds (frames = seconds x the sample's codec frame rate). The user turn
    # and the context keep their ends; an AI turn over ``max_ai_s`` is skipped and counted
    # (``long_ai="skip"``) or kept cropped and trained without end-of-turn (``"no_eos"``).
    max_user_s: float = 30.0
    max_context_s: float = 60.0
    max_ai_s: float = 30.0
    long_ai: str = "skip"
    voices: Optional[dict[str, int]] = None  # ai_speaker_id -> voice index; missing: 0 (unknown)
    text: bool = False
    max_text_bytes: int = 512
    user_text_dropout: float = 0.0  # share of samples trained without the user transcript

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.long_ai not in ("skip", "no_eos"):
            raise ValueError(f"long_ai must be 'skip' or 'no_eos', got {self.long_ai!r}")
        if not 0.0 <= self.holdout < 1.0 or not 0.0 <= self.user_text_dropout <= 1.0:
            raise ValueError("holdout must be in [0, 1), user_text_dropout in [0, 1]")


# --- shard lists ------------------------------------------------------------------------------


def resolve_storage_options(url: str, storage_options: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """fsspec options for a URL; an ``s3://`` URL picks up ``AWS_ENDPOINT_URL(_S3)`` the way
    ``catalog.store.Store`` does, so MinIO/R2/moto work without extra settings."""
    options = dict(storage_options or {})
    if url.startswith("s3://") and "client_kwargs" not in options and "endpoint_url" not in options:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def expand_urls(urls: Union[str, Iterable[str]]) -> list[str]:
    """A brace pattern (``shards/codec-{000000..000009}.tar``) or a list of them, expanded."""
    items = [urls] if isinstance(urls, str) else list(urls)
    out: list[str] = []
    for u in items:
        out.extend(braceexpand.braceexpand(u) if "{" in u else [u])
    return out


@dataclass(frozen=True)
class ShardRef:
    """A shard URL with the size and sha256 the corpus index records for it."""

    url: str
    sha256: Optional[str] = None
    num_bytes: Optional[int] = None


Urls = Union[str, ShardRef, Sequence[Union[str, ShardRef]]]


def shard_refs(
    root: Union[str, Sequence[str]],
    kind: str,
    version: Optional[str] = None,
    storage_options: Optional[dict[str, Any]] = None,
) -> list[ShardRef]:
    """A corpus version's shards of one kind ("codec", "pairs", "tokens"...) with their checksums.

    ``root`` is a corpus root (local path, ``s3://``, ``gs://``): ``CURRENT.json`` names the
    version unless ``version`` is given, and ``shards/<version>/index.json`` lists the shards.
    A list of URLs, a brace pattern or a single ``.tar`` URL is returned expanded as it is
    (without checksums). Raises FileNotFoundError when there is no corpus/index there,
    ValueError when the version has no shard of that kind.
    """
    if not isinstance(root, str) or "{" in root or root.endswith(".tar"):
        return [ShardRef(u) for u in expand_urls(root)]
    base = root.rstrip("/")
    fs, path = fsspec.core.url_to_fs(base, **resolve_storage_options(base, storage_options))
    if version is None:
        try:
            with fs.open(f"{path}/{CURRENT}", "rb") as f:
                version = json.load(f)["version"]
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no corpus at {root}: {CURRENT} is missing") from e
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{root}/{CURRENT} is not a corpus pointer: {e}") from e
    try:
        with fs.open(f"{path}/shards/{version}/index.json", "rb") as f:
            index = json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"corpus {root} has no version {version!r} (shards/{version}/index.json)") from e
    shards = index.get("shards", [])
    refs = [ShardRef(f"{base}/{s['path']}", s.get("sha256"), s.get("num_bytes")) for s in shards if s.get("kind") == kind]
    if not refs:
        kinds = sorted({s.get("kind") for s in shards})
        raise ValueError(f"corpus {root} version {version} has no {kind!r} shards (it has {kinds or 'none'})")
    return refs


def shard_urls(
    root: Union[str, Sequence[str]],
    kind: str,
    version: Optional[str] = None,
    storage_options: Optional[dict[str, Any]] = None,
) -> list[str]:
    """The URLs of ``shard_refs`` (same arguments); pass the refs to a loader to have each
    shard's checksum verified while it streams."""
    return [r.url for r in shard_refs(root, kind, version, storage_options)]


def as_refs(urls: Urls) -> list[ShardRef]:
    items = [urls] if isinstance(urls, (str, ShardRef)) else list(urls)
    out: list[ShardRef] = []
    for u in items:
        out.extend([u] if isinstance(u, ShardRef) else [ShardRef(x) for x in expand_urls(u)])
    return out


# --- corrupt data -----------------------------------------------------------------------------


class CorruptSample(Exception):
    """A sample that cannot be used; ``reason`` is a stable snake_case code. ``corrupt=False``
    marks a sound sample that a setting leaves out (an AI turn over the length limit): it is
    counted apart from damage."""

    def __init__(self, reason: str, detail: str = "", corrupt: bool = True):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.corrupt = corrupt


class CorruptCounter:
    """Running counts of corrupt samples and shards (``reasons``) and of samples left out by a
    setting (``skipped``), by reason, for one worker."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def add(self, reason: str, detail: str = "", corrupt: bool = True) -> None:
        counts = self.reasons if corrupt else self.skipped
        first = reason not in counts
        counts[reason] = counts.get(reason, 0) + 1
        (log.warning if first and corrupt else log.debug)("skipped (%s): %s", reason, detail)

    def add_error(self, e: CorruptSample, key: str) -> None:
        self.add(e.reason, f"{key}: {e.detail}", e.corrupt)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


# --- stream building blocks -------------------------------------------------------------------


def stable_hash(text: str) -> int:
    """A 63-bit hash of a string that is the same in every process (unlike ``hash()``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def _tar_samples(fileobj: Any, url: str) -> Iterator[dict[str, Any]]:
    """Stream-mode tar reading grouped the way webdataset groups: consecutive members sharing
    the name before the first dot of their base name form a sample. A sample is yielded as soon
    as the next one starts, so damage further on never costs a complete sample."""
    current: Optional[dict[str, Any]] = None
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            if "." not in base or base.startswith("__"):
                continue
            stem, ext = base.split(".", 1)
            key = f"{folder}/{stem}" if folder else stem
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": url}
            data = tar.extractfile(member).read()
            if ext in current:
                current["__duplicate__"] = ext
            current[ext] = data
    if current is not None:
        yield current


class _HashingReader:
    """A read-only file wrapper that hashes and counts the bytes as the tar reader pulls them."""

    def __init__(self, f: Any):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.num_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        self.num_bytes += len(data)
        return data

    def drain(self) -> None:
        """Read what the tar reader left (the end-of-archive blocks) into the hash."""
        while self.read(1 << 20):
            pass


def iter_shard(ref: Union[str, ShardRef], storage_options: dict[str, Any], counter: CorruptCounter) -> Iterator[dict[str, Any]]:
    """Samples ``{"__key__", "__url__", ext: bytes}`` of one tar; a missing or unreadable shard
    is counted and yields nothing, a damaged one yields the complete samples before the damage.

    With a checksum in ``ref`` the bytes are hashed as they stream (no second read); when the
    whole shard was read and its sha256 or size differs from the index, ``shard_checksum`` is
    counted. A consumer that stops early leaves the check undone."""
    ref = ref if isinstance(ref, ShardRef) else ShardRef(ref)
    url = ref.url
    reader: Optional[_HashingReader] = None
    try:
        with fsspec.open(url, "rb", **resolve_storage_options(url, storage_options)) as f:
            reader = _HashingReader(f)
            yield from _tar_samples(reader, url)
            reader.drain()
    except FileNotFoundError as e:
        counter.add("shard_missing", f"{url}: {e}")
        return
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        counter.add("shard_corrupt", f"{url}: {type(e).__name__}: {e}")
        return
    if ref.sha256 and reader is not None:
        digest = reader.sha256.hexdigest()
        if digest != ref.sha256 or (ref.num_bytes is not None and reader.num_bytes != ref.num_bytes):
            counter.add("shard_checksum", f"{url}: sha256 {digest[:16]}.. ({reader.num_bytes} bytes), the index "
                                          f"says {ref.sha256[:16]}.. ({ref.num_bytes} bytes)")


def shuffled(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A shuffle buffer of ``size`` items (0 or 1: order kept), deterministic given ``rng``."""
    if size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        i = int(rng.integers(len(buf)))
        yield buf[i]
        buf[i] = item
    for i in rng.permutation(len(buf)):
        yield buf[int(i)]


@dataclass
class Measured:
    """A raw sample with its parsed JSON and its length, ready for bucketing."""

    sample: dict[str, Any]
    meta: dict[str, Any]
    seconds: Union[float, tuple[float, ...]]  # picks the bucket (one per axis for a tuple)
    cost: tuple[float, ...]  # per-stream padded length, in the budget's unit


class Bucketer:
    """Groups measured samples by length bucket into batches under a count and padded budget.

    A sample whose ``seconds`` is a tuple is bucketed on every axis with the same boundaries
    (token samples: encoder seconds x AI-turn seconds, so both padded lengths stay close)."""

    def __init__(self, boundaries: Sequence[float], batch_size: int, max_cost: Optional[float]):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.boundaries = sorted(float(b) for b in boundaries)
        self.batch_size = batch_size
        self.max_cost = max_cost
        self._buckets: dict[Any, list[Measured]] = {}
        self._maxima: dict[Any, tuple[float, ...]] = {}

    def bucket(self, seconds: Union[float, tuple[float, ...]]) -> Any:
        if isinstance(seconds, tuple):
            return tuple(bisect.bisect_right(self.boundaries, s) for s in seconds)
        return bisect.bisect_right(self.boundaries, seconds)

    def add(self, item: Measured) -> Iterator[list[Measured]]:
        b = self.bucket(item.seconds)
        batch = self._buckets.setdefault(b, [])
        if batch and self.max_cost is not None:
            maxima = tuple(max(x, y) for x, y in zip(self._maxima[b], item.cost))
            if (len(batch) + 1) * sum(maxima) > self.max_cost:
                yield self._take(b)
                batch = self._buckets.setdefault(b, [])
        batch.append(item)
        prev = self._maxima.get(b)
        self._maxima[b] = item.cost if prev is None or len(batch) == 1 else tuple(map(max, prev, item.cost))
        if len(batch) >= self.batch_size:
            yield self._take(b)

    def flush(self) -> Iterator[list[Measured]]:
        for b in sorted(self._buckets):
            if self._buckets[b]:
                yield self._take(b)

    def _take(self, b: Any) -> list[Measured]:
        batch = self._buckets.pop(b)
        self._maxima.pop(b, None)
        return batch


# --- what a loader decodes --------------------------------------------------------------------


class SampleSpec(Protocol):
    """How one shard kind is measured, decoded and collated (see train/data.py)."""

    required: tuple[str, ...]  # members every sample must have (besides "json")

    def measure(self, sample: dict[str, Any], meta: dict[str, Any]) -> tuple[Any, tuple[float, ...]]: ...

    def decode(self, item: Measured, seed: int, epoch: int) -> Any: ...

    def collate(self, decoded: list[Any]) -> dict[str, Any]: ...


# --- resume state -----------------------------------------------------------------------------


@dataclass
class DataState:
    """The data position a trainer saves: batches consumed and each worker's last position.

    Feed every batch to ``update``; save ``state_dict()``; pass it as ``resume`` to a loader
    (same urls, config, rank, world size and num_workers) to continue at exactly the next
    batch, and keep updating ``DataState.from_dict(saved)``. In DDP each rank saves its own
    (or all save only ``batches``: ranks step in lockstep). ``positions[w] = (epoch, batches formed in that epoch)`` of worker
    ``w``'s last batch; a resume with only ``batches`` (an int) replays the streams from the
    first epoch (reads, no decoding), which is exact unless a whole batch was corrupt.
    """

    batches: int = 0
    num_workers: int = 1  # effective workers (a num_workers=0 loader counts as 1)
    world_size: int = 1
    positions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def update(self, batch: dict[str, Any]) -> None:
        self.batches += 1
        self.num_workers = int(batch["num_workers"])
        self.world_size = int(batch["world_size"])
        self.positions[int(batch["worker"])] = (int(batch["position"][0]), int(batch["position"][1]))

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "num_workers": self.num_workers,
            "world_size": self.world_size,
            "positions": {str(w): list(p) for w, p in self.positions.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataState":
        return cls(
            batches=int(d["batches"]),
            num_workers=int(d["num_workers"]),
            world_size=int(d.get("world_size", 1)),
            positions={int(w): (int(p[0]), int(p[1])) for w, p in d.get("positions", {}).items()},
        )


Resume = Union[DataState, dict, int, None]


def _as_state(resume: Resume) -> Optional[DataState]:
    if resume is None:
        return None
    if isinstance(resume, DataState):
        return resume
    if isinstance(resume, int):
        return DataState(batches=resume, num_workers=0, positions={})  # num_workers 0: unchecked
    return DataState.from_dict(resume)


# --- splits -----------------------------------------------------------------------------------


def sample_split(meta: dict[str, Any], key: str, holdout: float) -> str:
    """The sample's split: its JSON ``split`` field when the corpus has one; otherwise "valid"
    for a share ``holdout`` of recordings picked by a hash of the recording id (all pairs of a
    recording fall on one side, the same on every machine and rebuild), else "train"."""
    split = meta.get("split")
    if isinstance(split, str) and split:
        return split
    recording = meta.get("recording_id")
    if holdout > 0 and stable_hash(f"holdout:{recording if isinstance(recording, str) else key}") < holdout * 2.0**63:
        return "valid"
    return "train"


def dist_rank_world(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    """Explicit values, else torch.distributed's when it is initialized, else (0, 1)."""
    if rank is None or world_size is None:
        initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        if rank is None:
            rank = torch.distributed.get_rank() if initialized else 0
        if world_size is None:
            world_size = torch.distributed.get_world_size() if initialized else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return rank, world_size


# --- the dataset ------------------------------------------------------------------------------


class ShardStream(IterableDataset):
    """Batches from shards, deterministic given (seed, epoch, rank, world size, workers).

    ``urls``: URLs or ``ShardRef``s (with a ref's checksum the shard is verified as it streams).
    ``epochs=None`` cycles forever (step-based trainers: ranks never run out unevenly);
    ``epochs=k`` stops after k epochs. ``keep`` keeps only samples whose JSON ``pair_id`` (or
    key) is in the set (fine-tuning subsets); ``cfg.split`` keeps one split. Each batch also
    carries ``keys``, ``epoch``, ``worker``/``position``/``num_workers``/``world_size`` (for
    ``DataState``) and the worker's running ``n_corrupt``, ``corrupt_reasons`` and
    ``skipped_reasons`` (sound samples a setting left out).
    """

    def __init__(
        self,
        urls: Urls,
        spec: SampleSpec,
        cfg: LoaderConfig,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        epochs: Optional[int] = None,
        resume: Resume = None,
        keep: Optional[set[str]] = None,
        max_cost: Optional[float] = None,
    ):
        super().__init__()
        self.refs = as_refs(urls)
        self.urls = [r.url for r in self.refs]
        if not self.urls:
            raise ValueError("no shard URLs to stream")
        self.spec = spec
        self.cfg = cfg
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.epochs = epochs
        self.resume = _as_state(resume)
        self.keep = keep
        self.max_cost = max_cost
        self.counter = CorruptCounter()

    # -- the deterministic plan ----------------------------------------------------------------
    def shard_order(self, epoch: int) -> list[ShardRef]:
        if not self.cfg.shuffle_shards:
            return list(self.refs)
        perm = np.random.default_rng([self.cfg.seed, epoch, 0x5A4D]).permutation(len(self.refs))
        return [self.refs[int(i)] for i in perm]

    def _raw(self, epoch: int, g: int, total: int) -> Iterator[dict[str, Any]]:
        order = self.shard_order(epoch)
        opts = self.cfg.storage_options
        if len(order) >= total:
            for ref in order[g::total]:
                yield from iter_shard(ref, opts, self.counter)
            return
        index = 0
        for ref in order:
            for sample in iter_shard(ref, opts, self.counter):
                if index % total == g:
                    yield sample
                index += 1

    def _measured(self, raw: Iterable[dict[str, Any]]) -> Iterator[Measured]:
        for sample in raw:
            key = sample["__key__"]
            if "__duplicate__" in sample:
                self.counter.add("duplicate_member", f"{key}: two {sample['__duplicate__']} members")
                continue
            missing = [m for m in ("json", *self.spec.required) if m not in sample]
            if missing:
                self.counter.add("missing_member", f"{key}: no {', '.join(missing)}")
                continue
            try:
                meta = json.loads(sample["json"])
                if not isinstance(meta, dict):
                    raise ValueError(f"JSON is a {type(meta).__name__}, not an object")
            except (ValueError, UnicodeDecodeError) as e:
                self.counter.add("bad_json", f"{key}: {e}")
                continue
            if self.keep is not None and str(meta.get("pair_id", key)) not in self.keep:
                continue
            if self.cfg.split != "all" and sample_split(meta, key, self.cfg.holdout) != self.cfg.split:
                continue
            try:
                seconds, cost = self.spec.measure(sample, meta)
            except CorruptSample as e:
                self.counter.add_error(e, key)
                continue
            yield Measured(sample, meta, seconds, cost)

    def formed_batches(self, epoch: int, g: int, total: int) -> Iterator[list[Measured]]:
        """The raw (undecoded) batches of global worker ``g`` of ``total`` in one epoch."""
        rng = np.random.default_rng([self.cfg.seed, epoch, g, 0x5348])
        items = shuffled(self._measured(self._raw(epoch, g, total)), self.cfg.shuffle_buffer, rng)
        bucketer = Bucketer(self.cfg.bucket_boundaries, self.cfg.batch_size, self.max_cost)
        for item in items:
            yield from bucketer.add(item)
        yield from bucketer.flush()

    # -- iteration -----------------------------------------------------------------------------
    def _start(self, n_workers: int, worker: int) -> tuple[int, int, int, int]:
        """(role, first epoch, batches to skip in it, batches to skip overall) for a worker."""
        state = self.resume
        if state is None:
            return worker, self.cfg.epoch, 0, 0
        if state.num_workers and state.num_workers != n_workers:
            raise ValueError(
                f"resume state was saved with {state.num_workers} dataloader workers, this loader has "
                f"{n_workers}: exact resume needs the same number"
            )
        if state.positions and state.world_size != self.world_size:
            raise ValueError(f"resume state was saved with world size {state.world_size}, now {self.world_size}")
        n = state.batches
        # The DataLoader asks worker 0 first; the uninterrupted run's batch n came from n % W.
        role = (worker + n) % n_workers
        if state.positions:
            epoch, k = state.positions.get(role, (self.cfg.epoch, 0))
            return role, epoch, k, 0
        return role, self.cfg.epoch, 0, max(0, (n - role + n_workers - 1) // n_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        role, epoch, skip_in_epoch, skip_total = self._start(n_workers, worker)
        total = self.world_size * n_workers
        g = self.rank * n_workers + role
        if len(self.urls) < total:
            log.info(
                "%d shards for %d workers (%d ranks x %d): every worker reads all shards and keeps "
                "samples whose index %% %d == %d (disjoint, but each reads everything)",
                len(self.urls), total, self.world_size, n_workers, total, g,
            )
        last = None if self.epochs is None else self.cfg.epoch + self.epochs
        while last is None or epoch < last:
            formed = yielded = skipped = 0
            for raw in self.formed_batches(epoch, g, total):
                formed += 1
                if skip_in_epoch > 0 or skip_total > 0:
                    skip_in_epoch = max(0, skip_in_epoch - 1)
                    skip_total = max(0, skip_total - 1)
                    skipped += 1
                    continue
                keys, decoded = [], []
                for item in raw:
                    try:
                        decoded.append(self.spec.decode(item, self.cfg.seed, epoch))
                        keys.append(item.sample["__key__"])
                    except CorruptSample as e:
                        self.counter.add_error(e, item.sample["__key__"])
                if not decoded:
                    continue
                batch = self.spec.collate(decoded)
                batch.update(
                    keys=keys,
                    epoch=epoch,
                    worker=role,
                    position=(epoch, formed),
                    num_workers=n_workers,
                    world_size=self.world_size,
                    n_corrupt=self.counter.total,
                    corrupt_reasons=dict(self.counter.reasons),
                    skipped_reasons=dict(self.counter.skipped),
                )
                yielded += 1
                yield batch
            if last is None and yielded == 0 and skipped == 0:
                split = "" if self.cfg.split == "all" else f" of split {self.cfg.split!r}"
                raise RuntimeError(
                    f"worker {g} of {total} got no usable sample{split} in epoch {epoch} from {len(self.urls)} "
                    f"shards (corrupt: {self.counter.reasons or 'none'}, skipped: {self.counter.skipped or 'none'}); "
                    "more workers than samples, or no recording held out?"
                )
            epoch += 1
            skip_in_epoch = 0
