"""Built-in experiments: each module registers one preparer (and its config defaults).

:func:`mlharness.lm.registry.available` imports every module here, so adding an experiment
is adding one file.
"""
