"""Named implementations (sources, diarization, ASR and TTS backends), one idiom for all.

A `Registry` maps a name to an `Implementation`: where its class lives ("module:Attribute",
imported only when chosen, so heavy optional packages stay optional), which optional modules it
needs, and what to install when one is missing. Loading a name whose packages are absent raises
`MissingDependency` naming the package and the install command, before anything is imported.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional


class MissingDependency(RuntimeError):
    """An implementation's optional package is not installed; the message says what to install."""


@dataclass(frozen=True)
class Implementation:
    name: str
    target: str  # "package.module:Attribute"
    requires: tuple[str, ...] = ()  # importable module names it needs beyond the core install
    install: str = ""  # how to get them, e.g. "pip install convcorpus[pyannote]"
    config: Optional[str] = None  # "package.module:ConfigClass" where the implementation has one

    def missing(self) -> list[str]:
        """The required modules that are not importable here."""
        out = []
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a parent package that is absent
                found = False
            if not found:
                out.append(module)
        return out

    def load(self) -> Any:
        missing = self.missing()
        if missing:
            hint = f": {self.install}" if self.install else ""
            raise MissingDependency(f"{self.name} needs {', '.join(missing)}, which is not installed{hint}")
        return _attribute(self.target)

    def load_config(self) -> Any:
        if self.config is None:
            raise TypeError(f"{self.name} has no config class")
        return _attribute(self.config)


class Registry(Mapping[str, Implementation]):
    def __init__(self, kind: str, entries: Iterable[Implementation]):
        self.kind = kind
        self._entries = {e.name: e for e in entries}

    def __getitem__(self, name: str) -> Implementation:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def load(self, name: str) -> Any:
        """The implementation's class (or function), its optional packages checked first."""
        return self[name].load()


def _attribute(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
