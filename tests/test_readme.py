"""The README documents every run-config field, and opens with the two set-up commands."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from headstart.config import RunConfig

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += _fields(field.annotation, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def test_every_config_field_is_documented_with_its_default():
    rows = [line.split("|")[1:3] for line in README.splitlines() if line.startswith("| `")]
    documented = {name.strip().strip("`"): default.strip() for name, default in rows}
    missing = [name for name in _fields(RunConfig) if name not in documented]
    assert not missing, f"README lacks rows for: {missing}"
    defaults = RunConfig(name="x", data={"source": "y"}).model_dump()
    wrong = []
    for name in _fields(RunConfig):
        if documented[name] == "(required)":
            continue
        value = defaults
        for key in name.split("."):
            value = value[key]
        written = yaml.safe_load(documented[name].strip("`"))
        if written != value and str(written) != value:  # `32` stands for the string "32" (train.precision)
            wrong.append(f"{name}: README {documented[name]}, code {value!r}")
    assert not wrong, wrong


def test_readme_opens_with_the_two_setup_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
