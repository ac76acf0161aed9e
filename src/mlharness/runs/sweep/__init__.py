"""Hyper-parameter sweeps of any kind of experiment on Optuna (``mlx sweep``).

* :mod:`~mlharness.runs.sweep.spec`: the search space and settings, as written in a config;
* :mod:`~mlharness.runs.sweep.study`: the Optuna study, claiming, starting and telling trials;
* :mod:`~mlharness.runs.sweep.trials`: one trial as an ``mlx run-experiment`` process;
* :mod:`~mlharness.runs.sweep.loop`: the sweep process, ``--jobs`` trials at once;
* :mod:`~mlharness.runs.sweep.report`: ``mlx sweep show``: tables, importances, plots, export.

Optuna is imported only when a sweep runs or is shown, never by ``mlx --help``.
"""
