"""Public façade of the training pipeline (seed API: ``from mlharness.training import ...``)."""

from mlharness.runs.output import OutputManager
from mlharness.tabular.loop import TrainingLoop

__all__ = ["OutputManager", "TrainingLoop"]
