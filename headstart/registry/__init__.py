"""Model registry: immutable numbered versions with production / candidate aliases, promote and rollback.
See README, "Registry and serving"."""

from headstart.registry.store import ALIASES, Registry, Version, default_root, parse_spec

__all__ = ["ALIASES", "Registry", "Version", "default_root", "parse_spec"]
