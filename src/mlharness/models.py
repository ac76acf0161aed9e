"""The tabular models where the seed's examples import them: ``from mlharness.models import
LinearRegression``. The code lives in :mod:`mlharness.tabular`."""

from __future__ import annotations

from mlharness.tabular.base import BaseModel
from mlharness.tabular.factory import load_model
from mlharness.tabular.linear import LinearRegression
from mlharness.tabular.mlp import MLP
from mlharness.tabular.optim import make_optimizer

__all__ = ["MLP", "BaseModel", "LinearRegression", "load_model", "make_optimizer"]
