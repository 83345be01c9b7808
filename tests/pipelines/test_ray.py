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


def test_one_microphone_build_is_the_same_on_ray_and_inline(tmp_path_factory, tmp_path):
    """The same recordings through VAD, Whisper and the diarizer give the same bytes under the
    same version name on either engine: the thread counts that change float sums (Whisper's, BLAS)
    are pinned from `engine.cpus_per_recording`, not left to each engine's defaults."""
    import io
    import shutil

    from rich.console import Console

    from catalog.compare import compare
    from pipelines.config import load_build_config
    from pipelines.progress import Reporter
    from pipelines.run import run_build
    from stages.sources.demo.conversations import standard_test_set

    root = tmp_path_factory.mktemp("mono")
    folder = tmp_path / "recordings"
    folder.mkdir()
    for c in standard_test_set(str(root)):
        if c.uri in ("synth_two_clean", "synth_two_overlap"):
            shutil.copy(c.audio_path, folder / f"{c.uri}.wav")

    def run(engine):
        cfg = load_build_config(source="local", out=str(tmp_path / engine),
                                source_options={"audio": [str(folder)], "lang": "en"},
                                overrides=["shard.target_shard_mb=1"], engine={"kind": engine, "num_cpus": 2})
        return run_build(cfg, Reporter(Console(file=io.StringIO(), width=200)))

    inline, on_ray = run("inline"), run("ray")
    assert inline["new"]["recordings"] == 2 and inline["new"]["pairs"] > 0
    assert on_ray["version"] == inline["version"]
    assert _shard_files(tmp_path / "ray") == _shard_files(tmp_path / "inline")
    assert compare(str(tmp_path / "ray"), str(tmp_path / "inline")) == []
