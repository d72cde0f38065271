"""The HTTP service: predictions from registered models, every one logged; A/B and shadow; hot promote and
rollback. See README, "Registry and serving"."""

from headstart.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
