"""Public façade of metrics writing (seed API: ``from mlharness.metrics import MetricsWriter``)."""

from mlharness.runs.metrics import MetricsWriter

__all__ = ["MetricsWriter"]
