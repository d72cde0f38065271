"""Which arm answers a request: production alone, an A/B split with the candidate, or production answering while
the candidate runs in its shadow. Arms are swapped atomically on the event loop when the registry changes."""

from __future__ import annotations

import random

from headstart.serve.models import Arm

MODES = ("ab", "shadow")


class Router:
    """Holds the production arm and the optional candidate arm; `route()` picks who answers and who shadows."""

    def __init__(self, production: Arm, candidate: Arm | None = None, mode: str = "ab", split: float = 0.1,
                 seed: int | None = None):
        self.production, self.candidate, self.mode, self.split = production, candidate, mode, split
        self.random = random.Random(seed)

    def route(self) -> tuple[Arm, str, Arm | None]:
        """(arm that answers, its role, arm that shadows it or None)."""
        candidate = self.candidate
        if candidate is None:
            return self.production, "production", None
        if self.mode == "shadow":
            return self.production, "production", candidate
        if self.random.random() < self.split:
            return candidate, "candidate", None
        return self.production, "production", None

    def label(self, role: str) -> str:
        """The arm a role's predictions are logged and counted as: the candidate runs as `shadow` in shadow mode."""
        return "shadow" if role == "candidate" and self.mode == "shadow" else role

    def arms(self) -> dict[str, Arm]:
        return {role: arm for role, arm in (("production", self.production), ("candidate", self.candidate)) if arm}

    def replace(self, role: str, arm: Arm | None) -> None:
        """Serve `arm` in `role` from now on (None removes the candidate); the old arm finishes its requests."""
        old = getattr(self, role)
        setattr(self, role, arm)
        if old is not None and old is not arm:
            old.retire()
