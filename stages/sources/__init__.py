"""Source recipes by name. Each recipe module defines a pydantic config and a source class;
they are imported lazily so a build only loads what it uses."""
from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

# name -> (module, source class, config class)
RECIPES: dict[str, tuple[str, str, str]] = {
    "fisher": ("stages.sources.fisher", "FisherSource", "FisherConfig"),
    "callhome": ("stages.sources.callhome", "CallHomeSource", "CallHomeConfig"),
    "demo": ("stages.sources.demo_source", "DemoSource", "DemoConfig"),
    "podcasts": ("stages.sources.podcasts", "PodcastsSource", "PodcastsConfig"),
    "local": ("stages.sources.local", "LocalSource", "LocalConfig"),
    "synthetic": ("stages.sources.synthetic", "SyntheticSource", "SyntheticConfig"),
}


def source_config_class(name: str) -> type[BaseModel]:
    if name not in RECIPES:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(sorted(RECIPES))}")
    module, _, config = RECIPES[name]
    return getattr(importlib.import_module(module), config)


def make_source(name: str, options: dict[str, Any]) -> Any:
    module, cls, _ = RECIPES[name]
    config = source_config_class(name).model_validate(options)
    return getattr(importlib.import_module(module), cls)(config)
