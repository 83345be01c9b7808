"""Shared fixtures: a real S3 endpoint on loopback (moto's server mode, its own process) and a
small demo sample in the LDC Fisher layout."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

S3_SECRET = "test-secret-key-that-must-never-be-written-out"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """Start `moto_server` on 127.0.0.1 and point the AWS environment at it."""
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="test-access-key-id",
        AWS_SECRET_ACCESS_KEY=S3_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=url,
    )
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint):
    import boto3

    name = f"corpus-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def demo_sample(tmp_path_factory):
    """Three synthesized Fisher-layout calls, made once per test session."""
    from stages.sources.demo.fisher_calls import generate_demo_fisher

    root = tmp_path_factory.mktemp("demo-sample")
    return generate_demo_fisher(str(root), num_calls=3, seed=7)


@pytest.fixture
def demo_copy(demo_sample, tmp_path):
    """A private, writable copy of the demo sample (for tests that add or break files)."""
    root = tmp_path / "ldc"
    shutil.copytree(demo_sample.root, root)
    return root


def pytest_collection_modifyitems(config, items):
    """Tests that need the real llama.cpp server (the `llm_server` fixture) carry the `llm`
    marker: `./run test` runs them with the rest, `./run test-llm` (`pytest -m llm`) only them."""
    for item in items:
        if {"llm_server", "real_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.llm)
