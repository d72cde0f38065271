"""headstart: production transfer learning.

    run = headstart.fit("configs/bbc.yaml")     # train: head first, then gradual unfreezing
    model = headstart.load(run.model_dir)        # the best model, self-contained
    model.predict(["Shares rose sharply ..."])
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["fit", "load", "Run", "HeadstartError", "is_worker"]

from headstart.errors import HeadstartError


def __getattr__(name: str):
    # heavy modules (lightning, transformers) load only when used, so `import headstart` stays fast
    if name == "fit":
        from headstart.train.fit import fit

        return fit
    if name == "is_worker":
        from headstart.train.processes import is_worker

        return is_worker
    if name == "load":
        from headstart.predict import load

        return load
    if name == "Run":
        from headstart.run import Run

        return Run
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
