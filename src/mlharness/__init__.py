"""mlharness: machine-learning experiments from a validated config to a readable run directory."""

__version__ = "0.1.0"
