"""Public façade of evaluation (seed API: ``from mlharness.evaluation import Evaluator``)."""

from mlharness.tabular.evaluation import (
    Evaluator,
    classification_metrics,
    regression_metrics,
)

__all__ = ["Evaluator", "classification_metrics", "regression_metrics"]
