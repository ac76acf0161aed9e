"""The preparers users add: one per experiment, each with the config defaults it brings.

Its own module, importing neither the config nor the preparing code, because the config
loader needs an experiment's defaults (``experiment_defaults``) and the preparing code needs
the config: kept here, the two stay a line instead of a circle. A preparer is a function
``(PrepareContext) -> Source`` (see :mod:`mlharness.lm.prepare`); adding an experiment is
adding one module to :mod:`mlharness.lm.experiments` that calls :func:`register`.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlharness.errors import ConfigError

PrepareFn = Callable[[Any], Any]
"""``(PrepareContext) -> Source``; typed loosely here so this module imports neither."""


@dataclass(frozen=True)
class Preparer:
    name: str
    fn: PrepareFn
    defaults: dict[str, Any]
    description: str


_REGISTRY: dict[str, Preparer] = {}
_discovered = False


def register(
    name: str, *, defaults: dict[str, Any] | None = None, description: str = ""
) -> Callable[[PrepareFn], PrepareFn]:
    """Register ``fn`` as the preparer ``name``; ``defaults`` are the experiment's config
    defaults (merged under the user's file by ``load_lm_config``)."""

    def decorate(fn: PrepareFn) -> PrepareFn:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn.__module__ != fn.__module__:
            raise ValueError(
                f"Preparer '{name}' is registered twice ({existing.fn.__module__} and "
                f"{fn.__module__}): rename one of them."
            )
        _REGISTRY[name] = Preparer(name, fn, copy.deepcopy(defaults or {}), description)
        return fn

    return decorate


def _discover() -> None:
    """Import every module of :mod:`mlharness.lm.experiments`, so a new experiment is one file."""
    global _discovered
    if _discovered:
        return
    package = importlib.import_module("mlharness.lm.experiments")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _discovered = True


def available() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> Preparer:
    _discover()
    if name not in _REGISTRY:
        raise ConfigError(
            f"No preparer named '{name}' is registered (without prepare.preparer, the "
            f"experiment name is used). Available preparers: {', '.join(available())}. Set "
            'prepare.preparer to one of them, for example "text" for your own text file.'
        )
    return _REGISTRY[name]


def experiment_defaults(name: str) -> dict[str, Any]:
    """The config defaults packaged with preparer ``name``; ``{}`` for an unknown name."""
    _discover()
    preparer = _REGISTRY.get(name)
    return copy.deepcopy(preparer.defaults) if preparer else {}
