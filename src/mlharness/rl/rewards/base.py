"""The reward protocol, its registry, user reward loading, and the weighted reward set.

A reward turns one completion (with its prompt, reference and metadata) into a number in
[0, 1]; GRPO compares those numbers within each prompt's group of completions. Rewards are
classes registered under a name so a config file can pick them, weight them and pass each
its own options, and so users can add rewards in their own files without touching ours.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import logging
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pydantic

from mlharness.config.loading import describe_errors
from mlharness.errors import ConfigError, ConfigValidationError
from mlharness.rl.config import RewardSpec, RLConfig

logger = logging.getLogger(__name__)

RewardT = TypeVar("RewardT", bound="type[BaseReward]")


@dataclass(frozen=True)
class RewardContext:
    """One completion to score, with everything a reward may compare it against.

    ``meta`` carries the dataset row's other fields (``steps``, ``answer``, ``choices``...).
    """

    generated_text: str
    prompt: str = ""
    reference_completion: str | None = None
    test_cases: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    think_start_tag: str = "<think>"
    think_end_tag: str = "</think>"


class BaseReward(ABC):
    """A reward function: ``compute(context)`` returns at least ``{"reward": float}``.

    Subclasses list their options and defaults in ``defaults`` and read them in
    ``__init__`` with :meth:`number`, :meth:`integer`, :meth:`flag` and :meth:`choice`,
    which check them there, once (the rl schema leaves a reward's options to the reward): a
    bad value stops the run before any model is loaded rather than at the first rollout.
    Keys not in ``defaults`` are warned about (with a "did you mean"); a class without
    ``defaults`` accepts anything. That ``config`` is a mapping is the schema's rule
    (``RewardSpec``), checked before a reward is made.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    name: str = ""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        if self.defaults:
            for key in self.config:
                if key not in self.defaults:
                    close = difflib.get_close_matches(key, list(self.defaults), n=1)
                    hint = f" Did you mean '{close[0]}'?" if close else ""
                    logger.warning(
                        "Unknown option '%s' for reward '%s' is ignored.%s Known options: %s.",
                        key,
                        self._label(),
                        hint,
                        ", ".join(sorted(self.defaults)),
                    )

    @abstractmethod
    def compute(self, context: RewardContext) -> dict[str, Any]:
        """Score one completion: ``{"reward": float, ...details}``."""

    def compute_batch(self, contexts: Sequence[RewardContext]) -> list[dict[str, Any]]:
        """Score many; override when a batch is cheaper than its parts (processes, models)."""
        return [self.compute(c) for c in contexts]

    def validate_inputs(self, context: RewardContext) -> None:
        """Reject what is not a completion at all (a wrong type is a bug in the caller)."""
        if not isinstance(context, RewardContext):
            raise TypeError(f"Expected a RewardContext, got {type(context).__name__}.")
        if not isinstance(context.generated_text, str):
            raise TypeError(
                f"RewardContext.generated_text must be str, "
                f"got {type(context.generated_text).__name__}."
            )

    # -------------------------------------------------------------------- option checking

    def number(
        self, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        """The option ``key`` (or its default), checked to be a number in range."""
        return float(self._number(key, minimum, maximum, integer=False))

    def integer(
        self, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> int:
        """The option ``key`` (or its default), checked to be an integer in range."""
        return int(self._number(key, minimum, maximum, integer=True))

    def _number(
        self, key: str, minimum: float | None, maximum: float | None, *, integer: bool
    ) -> float:
        value: Any = self.config.get(key, self.defaults.get(key))
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and integer and isinstance(value, float):
            ok = value.is_integer()
        ok = ok and math.isfinite(value)
        ok = ok and (minimum is None or value >= minimum)
        ok = ok and (maximum is None or value <= maximum)
        if not ok:
            kind = "an integer" if integer else "a number"
            bounds = []
            if minimum is not None:
                bounds.append(f">= {minimum:g}")
            if maximum is not None:
                bounds.append(f"<= {maximum:g}")
            where = f" {' and '.join(bounds)}" if bounds else ""
            raise ConfigError(
                f"The '{key}' option of reward '{self._label()}' must be {kind}{where}. "
                f"Got {value!r} instead. Fix rewards[].config.{key} in the config "
                f"(default: {self.defaults.get(key)!r})."
            )
        return float(value)

    def flag(self, key: str) -> bool:
        """The option ``key`` (or its default), checked to be true or false."""
        value = self.config.get(key, self.defaults.get(key))
        if not isinstance(value, bool):
            raise ConfigError(
                f"The '{key}' option of reward '{self._label()}' must be true or false. "
                f"Got {value!r} instead."
            )
        return value

    def choice(self, key: str, options: Sequence[str]) -> str:
        """The option ``key`` (or its default), checked to be one of ``options``."""
        value = self.config.get(key, self.defaults.get(key))
        if value not in options:
            raise ConfigError(
                f"The '{key}' option of reward '{self._label()}' must be one of "
                f"{', '.join(repr(o) for o in options)}. Got {value!r} instead."
            )
        return str(value)

    def ordered(self, low_key: str, low: float, high_key: str, high: float) -> None:
        """Check that option ``low_key`` is not above ``high_key``."""
        if low > high:
            raise ConfigError(
                f"The '{low_key}' option of reward '{self._label()}' ({low:g}) must not "
                f"exceed '{high_key}' ({high:g}). Lower the first or raise the second."
            )

    def _label(self) -> str:
        return self.name or type(self).__name__


class RewardRegistry:
    """Reward classes by name, filled by ``@RewardRegistry.register("name")``.

    Importing :mod:`mlharness.rl.rewards` registers the built-ins; user files listed in
    ``reward_sources`` register theirs through :func:`load_reward_sources`.
    """

    _rewards: ClassVar[dict[str, type[BaseReward]]] = {}

    @classmethod
    def register(cls, name: str) -> Callable[[RewardT], RewardT]:
        """Class decorator: make the reward available under ``name`` (stackable for aliases)."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"A reward name must be a non-empty string, got {name!r}.")

        def decorator(reward_cls: RewardT) -> RewardT:
            if not (isinstance(reward_cls, type) and issubclass(reward_cls, BaseReward)):
                raise ConfigError(
                    f"@RewardRegistry.register({name!r}) must decorate a subclass of "
                    f"BaseReward, not {reward_cls!r}."
                )
            existing = cls._rewards.get(name)
            if existing is not None and not _same_class(existing, reward_cls):
                raise ConfigError(
                    f"A reward named '{name}' is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}; "
                    f"{reward_cls.__module__}.{reward_cls.__qualname__} cannot take it. "
                    "Register yours under another name."
                )
            if not reward_cls.__dict__.get("name"):  # its first name; aliases share the class
                reward_cls.name = name
            cls._rewards[name] = reward_cls
            return reward_cls

        return decorator

    @classmethod
    def get(cls, name: str) -> type[BaseReward]:
        """The class registered as ``name``; an unknown name says which ones exist."""
        try:
            return cls._rewards[name]
        except (KeyError, TypeError):
            pass
        names = cls.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"Unknown reward '{name}'.{hint} Available rewards: {', '.join(names)}. "
            "A reward of your own must be registered with @RewardRegistry.register and "
            "its file or module listed in reward_sources."
        ) from None

    @classmethod
    def names(cls) -> list[str]:
        return sorted(cls._rewards)

    @classmethod
    def create(cls, name: str, config: Mapping[str, Any] | None = None) -> BaseReward:
        """A configured instance of reward ``name``, for Python callers: the spec is checked
        by the rl schema's ``RewardSpec`` rules, the options by the reward itself."""
        try:
            spec = RewardSpec.model_validate({"name": name, "config": config or {}})
        except pydantic.ValidationError as exc:
            raise ConfigValidationError(describe_errors(RewardSpec, exc)) from None
        return cls.get(spec.name)(spec.config)


def _same_class(a: type, b: type) -> bool:
    """The same class, or the same class defined again (a reward file loaded twice)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def load_reward_sources(sources: Sequence[str], base_dir: Path | None = None) -> list[str]:
    """Import user reward files (``*.py``, relative to ``base_dir``) or dotted modules.

    Importing is what registers them: their ``@RewardRegistry.register`` decorators run.
    Returns the reward names that the sources added. Loading a file twice is harmless.
    """
    before = set(RewardRegistry.names())
    for source in sources:
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(
                f"Each entry of reward_sources must be a .py file path or a module name, "
                f"got {source!r}."
            )
        if source.endswith(".py") or "/" in source or "\\" in source:
            module = _load_file(source, base_dir)
        else:
            module = _load_module(source)
        if not any(
            getattr(c, "__module__", None) == module for c in RewardRegistry._rewards.values()
        ):
            logger.warning("Reward source '%s' registered no reward.", source)
    return sorted(set(RewardRegistry.names()) - before)


def _load_file(source: str, base_dir: Path | None) -> str:
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(
            f"Reward source '{source}' was not found (looked for {path}). Fix the path in "
            "reward_sources; relative paths are resolved against the config file's directory."
        )
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"mlharness_user_rewards.{path.stem}_{digest}"
    if module_name in sys.modules:
        return module_name
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Reward source '{source}' ({path}) cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(
            f"Importing reward source '{source}' ({path}) failed with "
            f"{type(exc).__name__}: {exc}. Fix that file, or remove it from reward_sources."
        ) from exc
    return module_name


def _load_module(source: str) -> str:
    try:
        importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name is not None and source.startswith(exc.name):
            raise ConfigError(
                f"Reward module '{source}' cannot be imported: {exc}. Install it or put its "
                "directory on PYTHONPATH, or list the path of its .py file in reward_sources."
            ) from exc
        raise ConfigError(
            f"Importing reward module '{source}' failed: {exc}. Install what it needs."
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"Importing reward module '{source}' failed with {type(exc).__name__}: {exc}. "
            "Fix that module, or remove it from reward_sources."
        ) from exc
    return source


# --------------------------------------------------------------------------- reward set


@dataclass(frozen=True)
class RewardScores:
    """Scores of one batch: the weighted ``total`` and each reward's own values.

    ``per_reward`` holds unweighted values; ``details`` each reward's extra keys per
    sample; ``failures`` how many samples each reward failed on in this batch (scored 0).
    """

    total: np.ndarray
    per_reward: dict[str, np.ndarray]
    details: dict[str, list[dict[str, Any]]]
    failures: dict[str, int]

    def means(self) -> dict[str, float]:
        """Batch means, keyed ``reward/total`` and ``reward/<name>``, for metric logs."""
        out = {"reward/total": float(self.total.mean()) if self.total.size else 0.0}
        for name, values in self.per_reward.items():
            out[f"reward/{name}"] = float(values.mean()) if values.size else 0.0
        return out


class RewardSet:
    """The configured rewards and their weights: ``score(contexts)`` for each batch.

    Built from specs ``{"name": ..., "weight": ..., "config": {...}}`` (or objects with
    those attributes, like the rl config's ``RewardSpec``). A reward that raises scores 0.0
    for that sample, is counted in :attr:`failures` and warned about once: one bad sample
    or one buggy user reward must not stop a training run hours in.
    """

    def __init__(self, specs: Sequence[Any]) -> None:
        self.rewards: dict[str, BaseReward] = {}
        self.weights: dict[str, float] = {}
        self.failures: dict[str, int] = {}
        self._warned: set[str] = set()
        for spec in checked_specs(specs):
            key, n = spec.name, 2
            while key in self.rewards:  # the same reward twice, with different options
                key, n = f"{spec.name}_{n}", n + 1
            self.rewards[key] = RewardRegistry.get(spec.name)(spec.config)
            self.weights[key] = spec.weight
            self.failures[key] = 0

    @property
    def names(self) -> list[str]:
        return list(self.rewards)

    def __len__(self) -> int:
        return len(self.rewards)

    def score(self, contexts: Sequence[RewardContext]) -> RewardScores:
        n = len(contexts)
        total = np.zeros(n, dtype=np.float64)
        per_reward: dict[str, np.ndarray] = {}
        details: dict[str, list[dict[str, Any]]] = {}
        failures: dict[str, int] = {}
        for key, reward in self.rewards.items():
            values, extra, failed = self._score_one(key, reward, contexts)
            per_reward[key], details[key], failures[key] = values, extra, failed
            total += self.weights[key] * values
        return RewardScores(total, per_reward, details, failures)

    def _score_one(
        self, key: str, reward: BaseReward, contexts: Sequence[RewardContext]
    ) -> tuple[np.ndarray, list[dict[str, Any]], int]:
        n = len(contexts)
        try:
            results: list[Any] = list(reward.compute_batch(contexts))
            if len(results) != n:
                raise ValueError(f"compute_batch returned {len(results)} results for {n} inputs")
        except Exception as exc:  # a batch failure: retry sample by sample
            self._warn(key, exc)
            results = []
            for context in contexts:
                try:
                    results.append(reward.compute(context))
                except Exception as inner:
                    results.append(inner)
        values = np.zeros(n, dtype=np.float64)
        extra: list[dict[str, Any]] = []
        failed = 0
        for i, result in enumerate(results):
            try:
                if isinstance(result, Exception):
                    raise result
                value = float(result["reward"])
                if not math.isfinite(value):
                    raise ValueError(f"reward is {value}")
                values[i] = value
                extra.append({k: v for k, v in result.items() if k != "reward"})
            except Exception as exc:
                failed += 1
                self._warn(key, exc)
                extra.append({"error": f"{type(exc).__name__}: {exc}"})
        self.failures[key] += failed
        return values, extra, failed

    def _warn(self, key: str, exc: BaseException) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "Reward '%s' failed (%s: %s); such samples score 0.0 for it and training "
                "goes on. Later failures are only counted (RewardSet.failures).",
                key,
                type(exc).__name__,
                exc,
            )


def checked_specs(specs: Any) -> list[RewardSpec]:
    """``specs`` as the rl config's ``rewards`` field holds them.

    A loaded config's specs passed the schema already and are used as they are. Anything
    else (mappings, objects with ``name``, ``weight`` and ``config``) is checked by that same
    field's rules, so a Python caller meets the errors a config file would, worded alike.
    """
    if isinstance(specs, Sequence) and specs and all(isinstance(s, RewardSpec) for s in specs):
        return list(specs)
    if isinstance(specs, Sequence) and not isinstance(specs, str):
        specs = [s if isinstance(s, Mapping) else _attributes(s) for s in specs]
    # An unvalidated RLConfig whose assignment (validate_assignment) checks one field.
    holder = RLConfig.model_construct()  # type: ignore[call-arg]
    try:
        holder.rewards = specs  # pyright: ignore[reportAttributeAccessIssue]
    except pydantic.ValidationError as exc:
        raise ConfigValidationError(describe_errors(RLConfig, exc)) from None
    return holder.rewards


def _attributes(spec: Any) -> dict[str, Any]:
    names = ("name", "weight", "config")
    return {n: getattr(spec, n) for n in names if getattr(spec, n, None) is not None}
