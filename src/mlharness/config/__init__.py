"""Config loading shared by every engine: files, defaults, overrides, validation, paths."""

from mlharness.config.loading import (
    ConfigWarning,
    apply_overrides,
    deep_merge,
    flatten,
    load_config,
    load_raw,
    parse_set_items,
    read_config_file,
    validate,
)
from mlharness.config.paths import ensure_within_workspace, resolve_path, workspace_root

__all__ = [
    "ConfigWarning",
    "apply_overrides",
    "deep_merge",
    "ensure_within_workspace",
    "flatten",
    "load_config",
    "load_raw",
    "parse_set_items",
    "read_config_file",
    "resolve_path",
    "validate",
    "workspace_root",
]
