"""The build's configuration: a YAML manifest and command-line flags, validated into typed
objects before any work starts."""
from __future__ import annotations

import hashlib
import json
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
    num_cpus: Optional[int] = Field(None, gt=0, description="CPUs for a local Ray (default: all)")
    cpus_per_recording: float = Field(1.0, gt=0)
    gpus_per_recording: float = Field(
        0.0, ge=0, description="GPUs each recording worker holds (ASR and diarization models run there)"
    )
    cpus_per_shard: float = Field(1.0, gt=0)


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
    pass


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def load_build_config(
    *,
    source: Optional[str],
    out: str,
    manifest: Optional[str] = None,
    source_options: Optional[dict[str, Any]] = None,
    overrides: Optional[list[str]] = None,
    engine: Optional[dict[str, Any]] = None,
) -> BuildConfig:
    """Merge a manifest (YAML) with flags; flags win. Overrides are `section.key=value` with a
    YAML value, e.g. `segment.context_turns=2` or `shard.target_shard_mb=64`."""
    tree: dict[str, Any] = {}
    if manifest:
        try:
            with open(manifest) as f:
                tree = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read manifest {manifest}: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"manifest {manifest} must be a mapping")
    name = source or tree.get("source")
    if not name:
        raise ConfigError("no source: give --source or 'source:' in the manifest")
    if name not in SOURCES:
        raise ConfigError(f"unknown source {name!r}; known: {', '.join(sorted(SOURCES))}")
    options = dict(tree.get(name) or tree.get("source_options") or {})
    options.update({k: v for k, v in (source_options or {}).items() if v not in (None, [], "")})
    pipeline = dict(tree.get("pipeline") or {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        set_dotted(pipeline, key.strip(), yaml.safe_load(value))
    engine_tree = dict(tree.get("engine") or {})
    engine_tree.update({k: v for k, v in (engine or {}).items() if v is not None})
    try:
        cfg = BuildConfig(source=name, source_options=options, out=out, pipeline=pipeline, engine=engine_tree)
        cfg.validated_source_options()
    except ValidationError as e:
        raise ConfigError(f"invalid configuration:\n{e}") from e
    return cfg
