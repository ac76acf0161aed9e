"""What a sweep searches: the ``sweep:`` section of a config file, or a file of its own.

The search space names config keys by the dotted paths ``--set`` takes, so a trial is the
base config with a few ``--set`` values changed, and any kind of experiment can be swept.
Only Pydantic is imported here; Optuna's objects are built from the spec by
:mod:`mlharness.runs.sweep.study` when a sweep runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlharness.config.paths import SafeName
from mlharness.errors import ConfigError

Scalar = bool | int | float | str | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Param(_Strict):
    """One searched key: ``choices`` (categorical), or a ``low``..``high`` range."""

    choices: list[Scalar] | None = Field(
        default=None, description="The values to choose from (Optuna's suggest_categorical)."
    )
    low: int | float | None = Field(default=None, description="Lower end of a range (included).")
    high: int | float | None = Field(default=None, description="Upper end of a range (included).")
    log: bool = Field(default=False, description="Sample the range on a log scale (low > 0).")
    step: int | float | None = Field(default=None, description="Only values low + k * step.")
    type: Literal["int", "float"] | None = Field(
        default=None, description="int or float; default: int when low, high and step are integers."
    )

    @model_validator(mode="after")
    def _check(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or a low..high range, not both")
            if not self.choices:
                raise ValueError("choices must list at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices, or both low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not be above high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("a range takes log or step, not both (as Optuna's)")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step:g}")
        return self

    @property
    def is_int(self) -> bool:
        if self.type:
            return self.type == "int"
        bounds = (self.low, self.high, 1 if self.step is None else self.step)
        return all(isinstance(v, int) for v in bounds)


class SweepSpec(_Strict):
    """A sweep's settings; ``params`` maps dotted config keys to what to try for them."""

    name: SafeName | None = Field(
        default=None, description="The study's name (default: the base experiment's name)."
    )
    metric: str = Field(
        ..., description="A key of the trial run's final metrics (summary.json), e.g. val_mse."
    )
    direction: Literal["minimize", "maximize"] = Field(
        default="minimize", description="Optimise how."
    )
    params: dict[str, Param] = Field(..., description="Dotted config key -> what to try.")
    sampler: Literal["tpe", "random", "grid"] = Field(
        default="tpe", description="Optuna's sampler."
    )
    seed: int | None = Field(
        default=0, description="The sampler's seed (null: a different search)."
    )
    n_trials: int | None = Field(
        default=None, ge=1, description="Finished trials (complete or pruned) the study ends with."
    )
    timeout: float | None = Field(
        default=None, gt=0, description="Seconds after which this process starts no new trial."
    )
    pruner: Literal["none", "median", "successive_halving"] = Field(
        default="none", description="Stop trials early on their intermediate metrics (lm, rl)."
    )
    pruner_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of Optuna's pruner, e.g. n_startup_trials: 1.",
    )
    max_retry: int = Field(
        default=3, ge=0, description="Re-runs of a trial whose process was killed or interrupted."
    )
    heartbeat_interval: int = Field(
        default=5, ge=1, description="Seconds between a running trial's heartbeats in the study."
    )
    grace_period: int | None = Field(
        default=None,
        ge=1,
        description="A trial whose heartbeat is older is failed and retried "
        "(default: 4 x heartbeat_interval).",
    )

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        if not self.params:
            raise ValueError("params must name at least one config key to search")
        if self.sampler == "grid":
            for key, param in self.params.items():
                if param.choices is None and param.step is None and not param.is_int:
                    raise ValueError(
                        f"the grid sampler needs choices or a step for '{key}': a float "
                        "range has no grid"
                    )
        elif self.n_trials is None and self.timeout is None:
            raise ValueError("set n_trials and/or timeout: the budget of the sweep")
        return self


def read_spec(config: Path, space: Path | None, set_items: Sequence[str] = ()) -> dict[str, Any]:
    """The sweep settings: ``space`` (the whole file, or its ``sweep:`` section), else the
    ``sweep:`` section of ``config``; ``sweep.*`` keys of MLX_OVERRIDES and ``--set`` apply."""
    from mlharness.config.loading import apply_overrides, read_config_file

    data = read_config_file(space or config)
    if space is not None and isinstance(data, Mapping) and "sweep" not in data:
        data = {"sweep": data}
    data = apply_overrides(data, set_items)
    if isinstance(data, Mapping) and isinstance(data.get("sweep"), Mapping):
        return dict(data["sweep"])
    raise ConfigError(
        f"{config} has no 'sweep:' section: add one (metric, params, n_trials) or pass "
        "--space with a file that holds it."
    )


def load_spec(config: Path, space: Path | None, set_items: Sequence[str] = ()) -> SweepSpec:
    """The validated spec; every problem is reported as a ``sweep.`` key."""
    from mlharness.config.loading import validate
    from mlharness.errors import ConfigValidationError

    try:
        return validate(SweepSpec, read_spec(config, space, set_items), strict=True)
    except ConfigValidationError as exc:
        raise ConfigValidationError([f"sweep section: {p}" for p in exc.problems]) from exc


def check_keys(spec: SweepSpec, resolved: Mapping[str, Any]) -> None:
    """Every searched key must be a key of the base config, as resolved by its engine."""
    for key in spec.params:
        node: Any = resolved
        for i, part in enumerate(key.split(".")):
            if not isinstance(node, Mapping) or part not in node:
                where = ".".join(key.split(".")[:i]) or "the config"
                known = ", ".join(sorted(node)) if isinstance(node, Mapping) else "none"
                raise ConfigError(
                    f"Sweep parameter '{key}' is not a key of the base config ('{part}' is not "
                    f"in {where}; keys there: {known}): use the dotted path --set would take."
                )
            node = node[part]


def nested(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"training.lr": 0.1}`` as ``{"training": {"lr": 0.1}}``, for a deep merge."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
