"""constraints.txt agrees with pyproject.toml's pins, so `make install` cannot ask pip for two versions of one package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised project name of 'Name[extra]==1.0' (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0]).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    return {_name(line): line.split("==", 1)[1].strip() for line in lines if "==" in line}


def test_constraints_pin_every_installed_requirement_at_pyproject_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["test"]
    wanted = _pins(requirements)
    assert len(wanted) == len(requirements), "every requirement in pyproject.toml is pinned with =="
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if not line.startswith("#")]
    constrained = _pins(lines)
    assert len(constrained) == len(lines), "every line of constraints.txt is name==version"
    differing = {name: (version, constrained.get(name)) for name, version in wanted.items()
                 if constrained.get(name) != version}
    assert not differing, f"pyproject.toml and constraints.txt disagree (run `make lock`): {differing}"
