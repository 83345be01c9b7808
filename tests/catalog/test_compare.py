"""catalog.compare: two builds of the same input are the same data, whatever their version names;
a changed byte in a shard or a changed row is found."""
from __future__ import annotations

import os
import shutil
import tarfile

from catalog.compare import compare, main
from catalog.store import Store
from catalog.versions import current
from tests.pipelines.test_build import build


def test_same_input_rewritten_is_identical_and_a_changed_shard_is_not(demo_copy, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    build(demo_copy, a)
    # The same input with new modification times: a new version name, the same data.
    for dirpath, _, files in os.walk(demo_copy):
        for f in files:
            os.utime(os.path.join(dirpath, f))
    build(demo_copy, b)
    assert current(Store(str(a))).version != current(Store(str(b))).version
    assert compare(str(a), str(b)) == []
    assert main([str(a), str(b)]) == 0 and "identical" in capsys.readouterr().out

    # One FLAC member of one pairs shard rewritten in place (same size): found.
    shard = next(p for p in current(Store(str(b))).shard_paths() if "pairs" in p)
    path = os.path.join(str(b), shard)
    with tarfile.open(path) as tar:
        flac = next(m for m in tar.getmembers() if m.name.endswith(".flac"))
    with open(path, "r+b") as f:
        f.seek(flac.offset_data + flac.size // 2)
        f.write(b"\x00" * 16)
    problems = compare(str(a), str(b))
    assert len(problems) == 1 and problems[0].startswith("shards differ")
    assert main([str(a), str(b)]) == 1

    # A catalog row that differs is named by its table.
    c = tmp_path / "c"
    shutil.copytree(demo_copy, tmp_path / "ldc2")
    build(tmp_path / "ldc2", c, "segment.context_turns=1")
    assert any(p.startswith("pairs:") for p in compare(str(a), str(c)))
