"""Source recipes by name (stages/registry.py). Each recipe module defines a pydantic config and
a source class implementing `stages.sources.base.Source`; they are imported lazily so a build
only loads what it uses."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from stages.registry import Implementation, Registry

SOURCES = Registry("source", [
    Implementation("fisher", "stages.sources.fisher:FisherSource", config="stages.sources.fisher:FisherConfig"),
    Implementation("callhome", "stages.sources.callhome:CallHomeSource", config="stages.sources.callhome:CallHomeConfig"),
    Implementation("demo", "stages.sources.demo.source:DemoSource", config="stages.sources.demo.source:DemoConfig"),
    Implementation("podcasts", "stages.sources.podcasts:PodcastsSource", ("feedparser", "yt_dlp"),
                   "pip install feedparser yt-dlp", config="stages.sources.podcasts:PodcastsConfig"),
    Implementation("local", "stages.sources.local:LocalSource", config="stages.sources.local:LocalConfig"),
    Implementation("synthetic", "stages.sources.synthetic:SyntheticSource", ("openai",), "pip install openai",
                   config="stages.sources.synthetic:SyntheticConfig"),
])


def source_config_class(name: str) -> type[BaseModel]:
    return SOURCES[name].load_config()


def make_source(name: str, options: dict[str, Any]) -> Any:
    config = source_config_class(name).model_validate(options)
    return SOURCES.load(name)(config)
