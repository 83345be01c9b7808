"""`--out s3://...` end to end against a real S3 endpoint on loopback (moto's server mode),
reached through s3fs; credentials come from the environment and are never written out."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import boto3
import pytest

from catalog.store import Store
from tests.conftest import S3_SECRET
from tests.pipelines.test_build import build

pytestmark = pytest.mark.s3
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _all_objects(endpoint, bucket):
    s3 = boto3.client("s3", endpoint_url=endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            yield obj["Key"], s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()


def test_build_to_object_storage(demo_copy, s3_endpoint, s3_bucket):
    out = f"s3://{s3_bucket}/corpus"
    summary = build(demo_copy, out)
    assert summary["status"] == "committed" and summary["totals"]["pairs"] > 5

    objects = dict(_all_objects(s3_endpoint, s3_bucket))
    keys = sorted(objects)
    assert "corpus/CURRENT.json" in keys and "corpus/catalog.duckdb" in keys
    assert not any(k.endswith(".build.lock") for k in keys), "lock must be released"
    secret = S3_SECRET.encode()
    access_key = os.environ["AWS_ACCESS_KEY_ID"].encode()
    for key, body in objects.items():
        assert secret not in body and access_key not in body, key

    version = json.loads(objects["corpus/CURRENT.json"])["version"]
    index = json.loads(objects[f"corpus/shards/{version}/index.json"])
    pair_shards = [s for s in index["shards"] if s["kind"] == "pairs"]
    members = []
    for s in pair_shards:
        with tarfile.open(fileobj=io.BytesIO(objects[f"corpus/{s['path']}"])) as tar:
            members += tar.getnames()
    assert sum(m.endswith(".ai.flac") for m in members) == summary["totals"]["pairs"]

    # The project's own query command reads the catalog through fsspec.
    proc = subprocess.run(
        [sys.executable, "-m", "catalog.query", "--out", out, "select count(*) as n from pairs"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(summary["totals"]["pairs"]) in proc.stdout
    assert S3_SECRET not in proc.stdout + proc.stderr

    again = build(demo_copy, out)
    assert again["status"] == "unchanged"


def test_store_atomic_write_on_s3(s3_endpoint, s3_bucket):
    store = Store(f"s3://{s3_bucket}/x")
    with pytest.raises(RuntimeError):
        with store.atomic_writer("a/b.bin") as f:
            f.write(b"partial")
            raise RuntimeError("writer died")
    assert not store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"whole")
    assert Store(f"s3://{s3_bucket}/x").read_bytes("a/b.bin") == b"whole"
