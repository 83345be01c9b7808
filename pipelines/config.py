"""The build's configuration: a YAML manifest and command-line flags, validated into typed
objects before any work starts."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stages.config import PipelineConfig
from stages.sources.fetch import redact_url
from stages.sources import SOURCES, source_config_class


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["ray", "inline"] = "ray"
    address: Optional[str] = Field(None, description="Ray cluster address; None starts a local Ray")
    num_cpus: Optional[int] = Field(None, gt=0, le=4096, description="CPUs for a local Ray (default: all)")
    cpus_per_recording: float = Field(1.0, gt=0, le=256)
    gpus_per_recording: float = Field(
        0.0, ge=0, le=16, description="GPUs each recording worker holds (ASR and diarization models run there)"
    )
    cpus_per_shard: float = Field(1.0, gt=0, le=256)
    transient_retries: int = Field(1, ge=0, le=10, description="a recording whose phase fails for reasons of the "
                                   "environment (disk full, a tool missing, a killed subprocess) is tried again this "
                                   "many times in the same build")
    commit_on_failure: bool = Field(False, description="commit what succeeded although some recordings failed for "
                                    "reasons of the environment (they are not cached and the next build does them); "
                                    "by default such a build commits nothing and exits with an error")


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str
    source_options: dict[str, Any] = Field(default_factory=dict)
    out: str
    pipeline: PipelineConfig = PipelineConfig()
    engine: EngineConfig = EngineConfig()
    storage_options: dict[str, Any] = Field(default_factory=dict, exclude=True)

    def run_source_options(self) -> dict[str, Any]:
        """Source options plus what the build itself knows: a synthetic source draws its
        turn-taking gaps from the corpus it is adding to."""
        options = dict(self.source_options)
        if "gap_stats_from" in source_config_class(self.source).model_fields:
            options.setdefault("gap_stats_from", self.out)
        return options

    def validated_source_options(self) -> BaseModel:
        return source_config_class(self.source).model_validate(self.source_options)

    def record(self) -> dict[str, Any]:
        """What goes into build records: everything but secrets and machine-local engine bits.
        URLs lose their user info and query (where feed tokens live)."""
        return _redact_urls({
            "source": self.source,
            "source_options": self.validated_source_options().model_dump(mode="json"),
            "pipeline": self.pipeline.model_dump(mode="json"),
        })

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:16]


def _redact_urls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_urls(v) for v in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return redact_url(value)
    return value


class ConfigError(ValueError):
    """A user mistake in the manifest or flags; the message is one line naming it."""


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """tree[a][b][c] = value for "a.b.c"; refuses to descend into something that is not a
    section (`--set segment=5` then `--set segment.context_turns=2`) or to replace a section
    with a value."""
    keys = dotted.split(".")
    if any(not k.strip() for k in keys):
        raise ConfigError(f"setting name {dotted!r} has an empty part")
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(keys[:i + 1])} is set to {child!r}, not a section, so {dotted} cannot be set")
        node = child
    if isinstance(node.get(keys[-1]), dict) and node[keys[-1]] and not isinstance(value, dict):
        raise ConfigError(f"{dotted} is a section; set one of its keys ({dotted}.KEY=VALUE)")
    node[keys[-1]] = value


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# The build command's flags that fill source options, for messages.
OPTION_FLAGS = {"audio": "--input", "transcripts": "--transcripts", "lang": "--lang", "license": "--license"}


def _describe(e: ValidationError, prefix: str = "") -> str:
    """A ValidationError as one line: `dotted.name: message (got value)` per problem."""
    problems = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "pipeline")
        name = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "configuration"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown setting"
            if prefix and loc in OPTION_FLAGS:
                msg += f" (source {prefix.rstrip('.')} takes no {OPTION_FLAGS[loc]})"
        got = err.get("input")
        shown = "" if err.get("type") in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        problems.append(f"{name}: {msg}{shown}")
    return _one_line("; ".join(problems))[:2000]


def _parse_value(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r} has no setting name")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({_one_line(getattr(e, 'problem', '') or e)})") from None


def load_build_config(
    *,
    source: Optional[str],
    out: str,
    manifest: Optional[str] = None,
    source_options: Optional[dict[str, Any]] = None,
    overrides: Optional[list[str]] = None,
    engine: Optional[dict[str, Any]] = None,
) -> BuildConfig:
    """Merge a manifest (YAML) with flags; flags win. Overrides are `KEY=VALUE` with a YAML
    value: a pipeline setting (`segment.context_turns=2`, `shard.target_shard_mb=64`), a source
    option under the source's name, as in a manifest (`local.speakers=2`,
    `podcasts.fetch.timeout_s=10`), or an engine setting (`engine.cpus_per_recording=2`).
    Every mistake is a ConfigError with a one-line message."""
    tree: dict[str, Any] = {}
    if manifest:
        try:
            with open(manifest) as f:
                tree = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read manifest {manifest}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"manifest {manifest} is not valid YAML: {_one_line(e)}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"manifest {manifest} must be a mapping")
    name = source or tree.get("source")
    if not name:
        raise ConfigError("no source: give --source or 'source:' in the manifest")
    if not isinstance(name, str) or name not in SOURCES:
        raise ConfigError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
    for section in ("pipeline", "engine", name, "source_options"):
        if tree.get(section) is not None and not isinstance(tree.get(section), dict):
            raise ConfigError(f"manifest {manifest}: '{section}' must be a mapping")
    options = copy.deepcopy(dict(tree.get(name) or tree.get("source_options") or {}))
    options.update({k: v for k, v in (source_options or {}).items() if v not in (None, [], "")})
    pipeline = copy.deepcopy(dict(tree.get("pipeline") or {}))
    engine_tree = dict(tree.get("engine") or {})
    engine_tree.update({k: v for k, v in (engine or {}).items() if v is not None})
    sections = set(PipelineConfig.model_fields)
    source_fields = set(source_config_class(name).model_fields)
    for item in overrides or []:
        key, value = _parse_value(item)
        head, _, rest = key.partition(".")
        if head == name and rest:
            set_dotted(options, rest, value)
        elif head == "engine" and rest:
            set_dotted(engine_tree, rest, value)
        elif head in sections:
            set_dotted(pipeline, key, value)
        elif head in source_fields:
            raise ConfigError(f"--set {key}: {head!r} is an option of source {name}; write --set {name}.{key}=...")
        else:
            raise ConfigError(f"--set {key}: unknown setting; KEY starts with a pipeline section "
                              f"({', '.join(sorted(sections))}), '{name}.' for source options or 'engine.'")
    try:
        cfg = BuildConfig(source=name, source_options=options, out=out, pipeline=pipeline, engine=engine_tree)
    except ValidationError as e:
        raise ConfigError(f"invalid setting: {_describe(e)}") from None
    try:
        cfg.validated_source_options()
    except ValidationError as e:
        raise ConfigError(f"invalid {name} option: {_describe(e, name + '.')}") from None
    return cfg


# Source options that name input files or folders: they must exist before a build starts.
INPUT_OPTIONS = {k: OPTION_FLAGS[k] for k in ("audio", "transcripts")}


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def check_paths(cfg: BuildConfig) -> None:
    """Before anything is created: every input named in the source options exists, and a
    local --out is a writable directory or can be made one. Raises ConfigError."""
    for option, flag in INPUT_OPTIONS.items():
        values = cfg.source_options.get(option) or []
        for given in [values] if isinstance(values, str) else values:
            path = os.path.expanduser(str(given))
            if not os.path.exists(path):
                raise ConfigError(f"{flag} {given}: no such file or directory")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{flag} {given}: not readable")
    if not _is_local(cfg.out):
        return
    out = os.path.abspath(os.path.expanduser(cfg.out[len("file://"):] if cfg.out.startswith("file://") else cfg.out))
    probe = out
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"--out {cfg.out}: {probe} is not a directory")
    # os.access says yes to root on a read-only or special file system: try a real write.
    try:
        with tempfile.TemporaryDirectory(prefix=".convcorpus-probe-", dir=probe):
            pass
    except OSError as e:
        where = "" if probe == out else f" (in {probe})"
        raise ConfigError(f"--out {cfg.out}: cannot write{where}: {e.strerror or e}") from None
