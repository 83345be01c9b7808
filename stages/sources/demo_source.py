"""The `demo` source: synthesizes a small Fisher-layout sample (stages/sources/demo.py) once,
then reads it with the Fisher recipe, so the demo exercises the real LDC path end to end."""
from __future__ import annotations

import os
from typing import Optional

from pydantic import Field

from stages.config import StageConfig
from stages.sources.base import Discovery
from stages.sources.demo import generate_demo_fisher
from stages.sources.fisher import FisherConfig, FisherSource


def default_workdir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "convcorpus", "demo")


class DemoConfig(StageConfig):
    num_calls: int = Field(6, ge=1, le=200)
    seed: int = 0
    workdir: Optional[str] = Field(None, description="where the sample is synthesized (default: ~/.cache/convcorpus/demo)")
    lang: str = "en"
    license: str = "CC0-1.0 (synthesized by convcorpus with espeak-ng)"


class DemoSource(FisherSource):
    name = "demo"

    def __init__(self, config: DemoConfig):
        self.demo = config
        root = os.path.join(config.workdir or default_workdir(), f"seed{config.seed}-n{config.num_calls}")
        super().__init__(FisherConfig(audio=[root], transcripts=[root], lang=config.lang, license=config.license))
        self.root = root

    def discover(self) -> Discovery:
        generate_demo_fisher(self.root, num_calls=self.demo.num_calls, seed=self.demo.seed)
        return super().discover()
