"""Run directories, the run index, metrics files, plots and TensorBoard scalars.

Nothing here knows about models: engines hand in dicts of numbers and files to write.
"""
