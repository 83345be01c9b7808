"""The build on a real local Ray (Ray Data actor pools) gives the same corpus as inline."""
from __future__ import annotations

import pytest

from tests.pipelines.test_build_resume import _shard_files, _snapshot
from tests.pipelines.test_build import build

pytestmark = pytest.mark.ray


def test_ray_build_matches_inline_build(demo_copy, tmp_path):
    inline = build(demo_copy, tmp_path / "inline", engine="inline")
    on_ray = build(demo_copy, tmp_path / "ray", engine="ray")
    assert on_ray["status"] == "committed" and on_ray["version"] == inline["version"]
    assert on_ray["totals"] == inline["totals"]
    assert _snapshot(tmp_path / "ray") == _snapshot(tmp_path / "inline")
    assert _shard_files(tmp_path / "ray") == _shard_files(tmp_path / "inline")
