"""`headstart registry ...`: versioned models, aliases, promotion and rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from headstart.cli.app import app, console
from headstart.errors import HeadstartError
from headstart.registry import ALIASES
from headstart.registry.fingerprint import same_test_data

registry_app = typer.Typer(no_args_is_help=True, help="Versioned models: push, list, show, diff, promote, rollback.")
app.add_typer(registry_app, name="registry")
REGISTRY_OPTION = typer.Option(None, "--registry", help="Registry folder. Default: $HEADSTART_REGISTRY or "
                                                        "~/.headstart/registry.")


def _registry(path: Optional[Path]):
    from headstart.registry import Registry

    return Registry(path)


def _version_line(version, aliases: dict) -> list[str]:
    marks = [alias for alias, number in aliases.items() if number == version.number]
    test = version.meta["metrics"].get("test.test_acc")
    return [str(version.number), ", ".join(marks), version.meta["created"], str(version.meta["parent"] or ""),
            "" if test is None else f"{test:.4f}", ", ".join(v["name"] for v in version.meta["variants"]),
            version.meta["source"]]


@registry_app.command("push")
def registry_push(
    run_dir: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    name: str = typer.Option(..., "--name", help="Model name in the registry (letters, digits, . _ -)."),
    parent: Optional[int] = typer.Option(None, help="Version this one derives from. Default: the production version."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Register a run's model as a new immutable version."""
    version = _registry(registry).push(run_dir, name, parent=parent)
    console.print(f"Registered {version.spec} ({version.path}). Promote it with "
                  f"`headstart registry promote {name} {version.number} --to production`.")
    if version.meta["same_model_as"] is not None:
        console.print(f"Its model files are identical to {name}@{version.meta['same_model_as']}'s: that model was "
                      "registered before (the same run pushed again?).")


@registry_app.command("list")
def registry_list(registry: Optional[Path] = REGISTRY_OPTION) -> None:
    """Every registered model with its versions and aliases."""
    reg = _registry(registry)
    table = Table(title=f"Registry {reg.root}")
    for column in ("model", "versions", "production", "candidate", "latest created"):
        table.add_column(column)
    problems = []
    for name in reg.names():
        numbers = reg.numbers(name)
        try:  # one damaged model must not hide the others
            aliases, missing = reg.aliases(name)["aliases"], reg.dangling(name)
            created = reg.version(name, numbers[-1]).meta["created"] if numbers else ""
        except HeadstartError as exc:
            problems.append(str(exc))
            table.add_row(name, str(len(numbers)), "?", "?", "(damaged: see below)")
            continue
        marks = [f"{aliases[a]} (missing)" if a in missing else str(aliases.get(a, "")) for a in ALIASES]
        table.add_row(name, str(len(numbers)), *marks, created)
    console.print(table)
    for problem in problems:
        console.print(f"[bold red]Damaged:[/] {escape(problem)}", highlight=False)


@registry_app.command("show")
def registry_show(
    spec: str = typer.Argument(..., help="NAME (all versions), or NAME@VERSION / NAME@production / NAME@latest."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """A model's versions, or one version's details (labels, preprocessing, data fingerprint, metrics)."""
    reg = _registry(registry)
    if "@" in spec:
        version = reg.resolve(spec)
        print(json.dumps({k: v for k, v in version.meta.items() if k != "files"}, indent=2))
        return
    aliases = reg.aliases(spec)["aliases"]
    table = Table(title=spec)
    for column in ("version", "aliases", "created", "parent", "test acc", "variants", "source run"):
        table.add_column(column)
    for version in reg.versions(spec):
        table.add_row(*_version_line(version, aliases))
    if not table.rows:
        reg.resolve(spec + "@latest")  # explains that there is no such model
    console.print(table)
    for alias, number in reg.dangling(spec).items():
        console.print(f"[bold red]{spec}@{alias} points at version {number}, whose folder is missing[/] (removed by "
                      f"hand): promote an existing version with `headstart registry promote {spec} N --to {alias}`.",
                      highlight=False)


@registry_app.command("diff")
def registry_diff(
    name: str = typer.Argument(..., help="Model name."),
    a: str = typer.Argument(..., help="First version: a number, 'latest' or an alias."),
    b: str = typer.Argument(..., help="Second version."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Metrics of two versions side by side."""
    reg = _registry(registry)
    va, vb = reg.resolve(f"{name}@{a}"), reg.resolve(f"{name}@{b}")
    table = Table(title=f"{name}: version {va.number} against {vb.number}")
    for column in ("metric", f"v{va.number}", f"v{vb.number}", "change"):
        table.add_column(column)
    for key, x, y in reg.diff(name, a, b):
        change = "" if x is None or y is None else f"{y - x:+.4f}"
        table.add_row(escape(key), "" if x is None else f"{x:.4f}", "" if y is None else f"{y:.4f}", change)
    console.print(table)
    la, lb = va.meta["labels"], vb.meta["labels"]
    if la != lb:
        only = [f"only in v{v.number}: {', '.join(extra)}" for v, extra in
                ((va, [x for x in la if x not in lb]), (vb, [x for x in lb if x not in la])) if extra]
        console.print(f"The versions have different labels ({'; '.join(only) or 'in another order'}): their "
                      "metrics are not measured on the same classes.", highlight=False)
    if same_test_data(va.meta, vb.meta) is False:  # None: a version pushed before it could be told
        console.print("The versions were tested on different examples (their runs' test splits differ): test.* and "
                      "overall.* do not compare them on the same data. To compare them on one set, `headstart "
                      "evaluate` each run with --data on the same table.", highlight=False)


@registry_app.command("promote")
def registry_promote(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to promote: a number, 'latest' or the other alias."),
    to: str = typer.Option("production", "--to", help="production or candidate."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Point the production or candidate alias at a version."""
    reg = _registry(registry)
    promoted = reg.promote(name, reg.resolve(f"{name}@{version}").number, to)
    console.print(f"{promoted.spec} is now {to}.")


@registry_app.command("rollback")
def registry_rollback(
    name: str = typer.Argument(..., help="Model name."),
    registry: Optional[Path] = REGISTRY_OPTION,
) -> None:
    """Point production back at the previous production version."""
    version = _registry(registry).rollback(name)
    console.print(f"{name}@production is now version {version.number}.")
