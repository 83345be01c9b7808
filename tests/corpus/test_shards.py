"""Shard planning, deterministic WebDataset tars, atomic writes, the per-version index."""
from __future__ import annotations

import hashlib
import json
import os
import tarfile

import pytest
import webdataset

from catalog.schema import Shard
from catalog.store import Store
from stages.corpus.shards import (
    plan_shards,
    read_index,
    safe_key,
    shard_name,
    verify_shard,
    write_index,
    write_tar_shard,
)


def _samples(n: int = 3) -> list[tuple[str, dict[str, bytes]]]:
    return [
        (
            f"rec-{i:03d}",
            {
                "user.flac": bytes([i]) * (100 + i),
                "ai.flac": b"ai" * (300 + 7 * i),
                "json": json.dumps({"i": i}).encode(),
            },
        )
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "corpus"))


def test_shard_name():
    assert shard_name("pairs", 0) == "pairs-000000.tar"
    assert shard_name("codec", 1234) == "codec-001234.tar"


def test_plan_shards_packs_greedily_in_order():
    sizes = [("a", 40), ("b", 40), ("c", 40), ("d", 150), ("e", 10), ("f", 90)]
    assert plan_shards(sizes, 100) == [["a", "b"], ["c"], ["d"], ["e", "f"]]
    assert plan_shards(sizes, 1000) == [["a", "b", "c", "d", "e", "f"]]
    assert plan_shards([], 100) == []
    assert plan_shards([("x", 100), ("y", 100)], 100) == [["x"], ["y"]]
    with pytest.raises(ValueError):
        plan_shards(sizes, 0)


def test_safe_key_removes_dots_and_slashes():
    assert safe_key("podcast-ep.12/part 3") == "podcast-ep_12_part_3"
    assert safe_key("fisher-fe_03_00001-p0001") == "fisher-fe_03_00001-p0001"


def test_tar_is_deterministic_with_fixed_headers(store):
    a = write_tar_shard(store, "shards/v1/pairs-000000.tar", _samples(), "pairs", "v1")
    b = write_tar_shard(store, "shards/v1/pairs-000001.tar", iter(_samples()), "pairs", "v1")
    data_a = store.read_bytes(a.path)
    data_b = store.read_bytes(b.path)
    assert data_a == data_b
    assert a.sha256 == b.sha256 == hashlib.sha256(data_a).hexdigest()
    assert a.num_bytes == len(data_a) == store.size(a.path)
    assert len(data_a) % 10240 == 0  # tar record padding
    assert (a.num_samples, a.kind, a.version, a.path) == (3, "pairs", "v1", "shards/v1/pairs-000000.tar")

    with tarfile.open(store.path(a.path)) as tar:
        members = tar.getmembers()
        assert tar.pax_headers == {}
    assert [m.name for m in members] == [
        f"rec-{i:03d}.{ext}" for i in range(3) for ext in ("ai.flac", "json", "user.flac")
    ]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o444)
        assert m.pax_headers == {}
        assert m.isreg()


def test_webdataset_reads_shard_back(store):
    samples = _samples(4)
    shard = write_tar_shard(store, "shards/v1/pairs-000000.tar", samples, "pairs", "v1")
    ds = webdataset.WebDataset(store.path(shard.path), shardshuffle=False)
    got = list(ds)
    assert [s["__key__"] for s in got] == [k for k, _ in samples]
    for s, (_, fields) in zip(got, samples):
        assert {k: s[k] for k in fields} == fields
        assert set(s) - {"__key__", "__url__", "__local_path__"} == set(fields)


def test_long_key_roundtrips_deterministically(store):
    key = "podcast-" + "x" * 150  # longer than a ustar name: stored through a PAX path record
    samples = [(key, {"flac": b"abc", "json": b"{}"})]
    a = write_tar_shard(store, "s/a.tar", samples, "codec", "v1")
    b = write_tar_shard(store, "s/b.tar", samples, "codec", "v1")
    assert a.sha256 == b.sha256
    got = list(webdataset.WebDataset(store.path(a.path), shardshuffle=False))
    assert [(s["__key__"], s["flac"]) for s in got] == [(key, b"abc")]


def test_failing_iterator_leaves_no_file(store):
    def gen():
        yield from _samples(2)
        raise RuntimeError("audio decode failed mid-shard")

    with pytest.raises(RuntimeError):
        write_tar_shard(store, "shards/v1/pairs-000000.tar", gen(), "pairs", "v1")
    assert not store.exists("shards/v1/pairs-000000.tar")
    assert os.listdir(store.path("shards/v1")) == []  # no temporary left behind either


@pytest.mark.parametrize(
    "samples",
    [
        [("rec.1", {"json": b"{}"})],  # dot in key
        [("", {"json": b"{}"})],
        [("a/b", {"json": b"{}"})],
        [("ok", {})],  # empty sample
        [("ok", {"json": "not bytes"})],
        [("ok", {"json": b"{}"}), ("ok", {"json": b"{}"})],  # duplicate key
    ],
)
def test_invalid_samples_raise_and_write_nothing(store, samples):
    with pytest.raises(ValueError):
        write_tar_shard(store, "shards/v1/bad.tar", samples, "pairs", "v1")
    assert not store.exists("shards/v1/bad.tar")


def test_index_roundtrip_and_verify(store):
    shards = [
        write_tar_shard(store, f"shards/v2/{shard_name('pairs', i)}", _samples(2 + i), "pairs", "v2")
        for i in range(2)
    ]
    shards.append(write_tar_shard(store, "shards/v2/codec-000000.tar", _samples(5), "codec", "v2"))
    write_index(store, "shards/v2/index.json", "v2", shards)

    assert read_index(store, "shards/v2/index.json") == shards
    raw = store.read_json("shards/v2/index.json")
    assert raw["version"] == "v2"
    assert raw["totals"] == {
        "pairs": {"shards": 2, "samples": 5, "bytes": shards[0].num_bytes + shards[1].num_bytes},
        "codec": {"shards": 1, "samples": 5, "bytes": shards[2].num_bytes},
    }
    assert all(verify_shard(store, s) for s in shards)

    # One flipped byte, or a missing file, fails verification.
    path = store.path(shards[0].path)
    data = bytearray(open(path, "rb").read())
    data[600] ^= 0xFF
    open(path, "wb").write(bytes(data))
    assert not verify_shard(store, shards[0])
    assert not verify_shard(store, Shard("shards/v2/nope.tar", "pairs", "v2", 0, 0, "0" * 64))
