"""User mistakes at the build command's edge: each exits 2 with one line on stderr naming the
problem, and creates nothing (no --out folder, no lock file, no download or work folder).

Every case runs the real command in a subprocess, in a fresh folder whose tree is compared
before and after.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tree(root) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.relpath(os.path.join(dirpath, n), root) for n in dirnames + filenames]
    return sorted(found)


def _build(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))  # a source's default caches land here
    return subprocess.run([sys.executable, "-m", "pipelines.build", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def audio(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    (d / "a.wav").write_bytes(b"RIFF")
    return d


def _refused(tmp_path, args, *expected: str) -> str:
    before = _tree(tmp_path)
    proc = _build(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert proc.stdout == ""
    assert _tree(tmp_path) == before  # nothing created: no --out, no lock, no cache
    return lines[0]


def test_missing_input_folder_creates_nothing(tmp_path):
    out = tmp_path / "corpus"
    _refused(tmp_path, ["--source", "local", "--input", str(tmp_path / "no-such-folder"), "--out", str(out)],
             "--input", "no-such-folder", "no such file or directory")
    assert not out.exists()


def test_missing_transcripts_folder(tmp_path, audio):
    _refused(tmp_path, ["--source", "fisher", "--input", str(audio), "--transcripts", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "corpus")], "--transcripts", "nope")


def test_nonsense_sample_rate(tmp_path, audio):
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(tmp_path / "corpus"),
                        "--set", "standardize.sample_rate=7"], "standardize.sample_rate", "8000", "got 7")


@pytest.mark.parametrize("setting, words", [
    ("standardize.sample_rate=96000", ["standardize.sample_rate", "48000"]),
    ("standardize.max_duration_s=-1", ["standardize.max_duration_s"]),
    ("segment.context_turns=100000", ["segment.context_turns"]),
    ("segment.min_turn_s=40", ["min_turn_s", "max_turn_s"]),
    ("shard.target_shard_mb=0", ["shard.target_shard_mb"]),
    ("analyze.asr.cpu_threads=100000", ["analyze.asr.cpu_threads"]),
    ("analyze.asr.beam_size=0", ["analyze.asr.beam_size"]),
    ("analyze.analysis_sample_rate=8000", ["analyze.analysis_sample_rate"]),
    ("engine.cpus_per_recording=0", ["engine.cpus_per_recording"]),
    ("segment.contxt_turns=2", ["segment.contxt_turns", "unknown setting"]),
])
def test_out_of_range_and_unknown_settings(tmp_path, audio, setting, words):
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(tmp_path / "corpus"), "--set", setting], *words)


def test_malformed_set_values(tmp_path, audio):
    base = ["--source", "local", "--input", str(audio), "--out", str(tmp_path / "corpus")]
    _refused(tmp_path, base + ["--set", "segment.context_turns=[1,"], "segment.context_turns", "not valid YAML")
    _refused(tmp_path, base + ["--set", "segment.context_turns"], "not KEY=VALUE")
    _refused(tmp_path, base + ["--set", "=3"], "no setting name")
    _refused(tmp_path, base + ["--set", "segment..context_turns=3"], "empty part")
    _refused(tmp_path, base + ["--set", "segment.context_turns=two"], "segment.context_turns", "integer")


def test_value_then_section(tmp_path, audio):
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(tmp_path / "corpus"),
                        "--set", "segment=5", "--set", "segment.context_turns=2"],
             "segment is set to 5, not a section")
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(tmp_path / "corpus"),
                        "--set", "segment=5"], "segment")


def test_source_options_through_set(tmp_path, audio):
    base = ["--source", "local", "--input", str(audio), "--out", str(tmp_path / "corpus")]
    # an option of the source without its prefix: the message says how to write it
    _refused(tmp_path, base + ["--set", "speakers=2"], "option of source local", "local.speakers")
    # with its prefix it reaches the source's own validation
    _refused(tmp_path, base + ["--set", "local.speakers=0"], "local.speakers", "greater than or equal to 1")
    _refused(tmp_path, base + ["--set", "local.no_such_option=1"], "local.no_such_option", "unknown setting")
    _refused(tmp_path, ["--source", "podcasts", "--input", str(audio), "--out", str(tmp_path / "corpus")],
             "takes no --input")


def test_set_reaches_source_options(tmp_path, audio):
    from pipelines.config import load_build_config

    cfg = load_build_config(source="local", out=str(tmp_path / "corpus"), source_options={"audio": [str(audio)]},
                            overrides=["local.speakers=2", "local.extensions=[wav]", "segment.context_turns=2",
                                       "engine.cpus_per_recording=2"])
    opts = cfg.validated_source_options()
    assert opts.speakers == 2 and opts.extensions == ["wav"]
    assert cfg.pipeline.segment.context_turns == 2 and cfg.engine.cpus_per_recording == 2
    manifest = tmp_path / "podcasts.yaml"
    manifest.write_text("source: podcasts\npodcasts:\n  feeds: [{url: 'https://example.org/feed.xml'}]\n"
                        "  fetch: {retries: 1}\n")
    cfg = load_build_config(source=None, out=str(tmp_path / "corpus"), manifest=str(manifest),
                            overrides=["podcasts.fetch.timeout_s=5", "podcasts.fetch.budget_s=600"])
    fetch = cfg.validated_source_options().fetch
    assert (fetch.retries, fetch.timeout_s, fetch.budget_s) == (1, 5, 600)


def test_unwritable_out(tmp_path, audio):
    plain = tmp_path / "a-file"
    plain.write_text("x")
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(plain)], "--out", "not a directory")
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(plain / "corpus")], "not a directory")
    # /proc takes no new files, even for root (for whom permission bits do not count)
    _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", "/proc/convcorpus-test-out"],
             "--out", "cannot write")
    assert not os.path.exists("/proc/convcorpus-test-out")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            _refused(tmp_path, ["--source", "local", "--input", str(audio), "--out", str(locked / "corpus")],
                     "cannot write")
        finally:
            locked.chmod(0o700)


def test_manifest_mistakes(tmp_path, audio):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("source: local\nlocal: [unclosed\n")
    _refused(tmp_path, ["--manifest", str(bad_yaml), "--out", str(tmp_path / "corpus")], "not valid YAML")
    _refused(tmp_path, ["--manifest", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "corpus")],
             "cannot read manifest")
    not_map = tmp_path / "list.yaml"
    not_map.write_text(f"source: local\nlocal:\n  audio: [{str(audio)!r}]\npipeline: [1, 2]\n")
    _refused(tmp_path, ["--manifest", str(not_map), "--out", str(tmp_path / "corpus")], "'pipeline' must be a mapping")


def test_usage_mistakes_are_one_line_too(tmp_path):
    _refused(tmp_path, ["--source", "nope", "--out", str(tmp_path / "corpus")], "invalid choice")
    _refused(tmp_path, ["--source", "local"], "--out")
    _refused(tmp_path, ["--source", "local", "--out", str(tmp_path / "corpus"), "--num-cpus", "many"], "--num-cpus")
    _refused(tmp_path, ["--source", "local", "--out", str(tmp_path / "corpus"), "--num-cpus", "0"], "engine.num_cpus")
