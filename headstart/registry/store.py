"""The model registry: a folder of immutable, numbered model versions per name, and aliases that point at them.

    <registry>/<name>/versions/<n>/version.json   what the version is (see `Registry.push`)
    <registry>/<name>/versions/<n>/model/         the model folder, compressed variants included
    <registry>/<name>/versions/<n>/run/           config.yaml, results.json and metrics.json of the run
    <registry>/<name>/aliases.json                {"production": n, "candidate": m} and the production history
    <registry>/<name>/last-version                the highest number ever given (numbers are never reused)
    <registry>/<name>/.lock                       held by the one writer at a time

A version is staged in a hidden folder and renamed into place only when complete, and aliases.json is replaced by
a rename: a writer that dies at any point leaves the registry as it was (its staging folder is removed by the next
writer). Files of a version are read-only and their sha256 recorded, so a changed file is detected on load.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from headstart.errors import HeadstartError
from headstart.registry.fingerprint import data_fingerprint, file_digest, folder_digests
from headstart.files import fsync_path, locked, read_json_object, remove_temporary, sync_tree, write_atomic

ALIASES = ("production", "candidate")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# what a model folder may hold: weights only as safetensors or ONNX, never a pickle-capable format
# (.codes and .tokenizer: text vocabularies some Hugging Face tokenizers save)
ALLOWED_SUFFIXES = {".json", ".safetensors", ".onnx", ".txt", ".model", ".md", ".html", ".csv", ".yaml", ".codes",
                    ".tokenizer"}
RUN_FILES = ("config.yaml", "results.json", "metrics.json")
FORMAT = "headstart-registry-version"
COMPRESS_WAIT = 60.0  # seconds push waits for a `headstart compress` of the run's model to finish


def _is_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _version_number(value: Any, what: str) -> int:
    """`value` if it is a version number (an int: a string would be written to aliases.json as one)."""
    if not _is_number(value):
        raise HeadstartError(f"{what} {value!r}: a version is given by its number, an int (int('3') for text).")
    return value


# version.json fields that commands read: (type, what it holds)
TEXT, LIST, OBJECT = (str, "text"), (list, "list"), (dict, "JSON object")
META_FIELDS = {"created": TEXT, "source": TEXT, "modality": TEXT, "labels": LIST, "metrics": OBJECT, "files": OBJECT,
               "variants": LIST, "parent": ((int, type(None)), "version number or null")}


def _check_meta(path: Path, meta: dict) -> None:
    """Refuse a version.json lacking a field that commands read, or holding one of another type."""
    wrong = [key for key, (kind, _) in META_FIELDS.items() if not isinstance(meta.get(key, ...), kind)]
    if not wrong and not all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in meta["variants"]):
        wrong = ["variants"]
    if wrong:
        raise HeadstartError(f"{path} is damaged: its field {wrong[0]!r} is missing or not a "
                             f"{META_FIELDS[wrong[0]][1]}. The registry was modified by hand: restore the file, or "
                             "push the version's run again.")


def is_version_model(model_dir: Path) -> bool:
    """True if `model_dir` is the model folder of a registered version (which must never change)."""
    meta = Path(model_dir).parent / "version.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def default_root() -> Path:
    """$HEADSTART_REGISTRY, or ~/.headstart/registry."""
    return Path(os.environ.get("HEADSTART_REGISTRY") or "~/.headstart/registry").expanduser()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Version:
    """One registered version: `meta` is its version.json."""

    name: str
    number: int
    path: Path
    meta: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.number}"

    def verify(self) -> None:
        """Raise if a file of the version changed, went missing or was added since it was pushed."""
        for rel, digest in self.meta["files"].items():
            path = self.path / rel
            if not path.is_file() or file_digest(path) != digest:
                raise HeadstartError(f"{path} differs from the file registered in {self.spec} (or is missing): the "
                                     "registry was modified by hand. Push the run again as a new version.")
        listed = set(self.meta["files"]) | {"version.json"}
        added = [p for p in sorted(self.path.rglob("*")) if p.is_file() and str(p.relative_to(self.path)) not in listed]
        if added:
            raise HeadstartError(f"{added[0]} was added to {self.spec} after it was registered: the registry was "
                                 "modified by hand. Remove it, or push the run (with it) again as a new version.")


def check_name(name: str) -> str:
    """`name` if it is a valid model name; refused in words else."""
    if not NAME.match(name):
        raise HeadstartError(f"'{name}' is not a valid model name: use letters, digits, '.', '_' and '-' "
                             "(at most 64, starting with a letter or digit).")
    return name


def parse_spec(spec: str) -> tuple[str, str]:
    """'name', 'name@3', 'name@production', 'name@latest' -> (name, reference); a bare name means production."""
    name, at, ref = spec.partition("@")
    check_name(name)
    if at and not ref:
        raise HeadstartError(f"'{spec}' has nothing after '@': give a version number, latest, "
                             f"{' or '.join(ALIASES)} (or the bare name for production).")
    return name, ref or "production"


# numbers in results.json and metrics.json that describe how a figure was measured (examples per class, bins,
# timing runs, threads, the machine's load), not the model: a version's metrics and `registry diff` leave them out.
# Only numbers are: a class may be named 'support', and its metrics are kept.
SETTINGS = {"support", "n_bins", "batch1_runs", "batch32_runs", "batch32_batch_size", "threads", "load_average"}


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, (int, float)):
        if prefix.rpartition(".")[2] not in SETTINGS:
            out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)


def headline_metrics(run_dir: Path) -> dict[str, float]:
    """Test metrics of results.json, and the overall metrics and latency of metrics.json when evaluated."""
    out: dict[str, float] = {}
    fix = "Push a run whose files `headstart fit` / `headstart evaluate` wrote, or write them again."
    results = read_json_object(run_dir / "results.json", fix)
    _flatten("test", results.get("test", {}), out)
    if (run_dir / "metrics.json").is_file():
        evaluation = read_json_object(run_dir / "metrics.json", fix)
        _flatten("overall", evaluation.get("overall", {}), out)
        _flatten("latency", evaluation.get("latency") or {}, out)
    return out


def _check_model_files(source: Path, shown: Path | None = None) -> None:
    """Refuse a model folder holding files a version may not hold; hidden ones (a compress call's lock and staging)
    are not copied, so not checked. `shown`: the folder to name, when `source` is its copy."""
    kept = [p for p in source.rglob("*") if not any(part.startswith(".") for part in p.relative_to(source).parts)]
    broken = [p for p in kept if p.is_symlink() and not p.exists()]
    if broken:
        raise HeadstartError(f"{shown or source}: {broken[0].relative_to(source)} is a link to a file that does not "
                             "exist. Remove the link, or put the file it names back.")
    refused = [p for p in kept if p.is_file() and p.suffix.lower() not in ALLOWED_SUFFIXES]
    if refused:
        names = ", ".join(str(p.relative_to(source)) for p in refused[:5])
        raise HeadstartError(f"{shown or source} holds files the registry does not accept: {names}. A registered "
                             "model holds weights only as safetensors or ONNX (never pickles) plus JSON / text "
                             "assets; remove them, or re-save the model with `headstart fit`.")


def _model_files(files: Any) -> dict[str, str]:
    """{path: sha256} of the model folder's files in a version's file list (empty for a damaged list)."""
    if not isinstance(files, dict):
        return {}
    return {path: digest for path, digest in files.items() if path.startswith("model/")}


def _read_only(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


class Registry:
    """A registry folder (default: `default_root()`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise HeadstartError(f"The registry {self.root} is a file. A registry is a folder (created by the first "
                                 "push): give a folder's path, or move the file away.")

    def __repr__(self) -> str:
        return f"Registry('{self.root}')"

    def _folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def _lock(self, name: str):
        return locked(self._folder(name) / ".lock")

    def names(self) -> list[str]:
        """Registered model names."""
        if not self.root.is_dir():
            return []
        # a name with no version folder is not one (a refused first push leaves an empty folder)
        return sorted(p.name for p in self.root.iterdir() if NAME.match(p.name) and self.numbers(p.name))

    def numbers(self, name: str) -> list[int]:
        folder = self._folder(name) / "versions"
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdecimal()) if folder.is_dir() else []

    def version(self, name: str, number: int) -> Version:
        path = self._folder(name) / "versions" / str(number)
        if path.is_dir() and not (path / "version.json").is_file():
            raise HeadstartError(f"{path} has no version.json: the version was partly removed or damaged by hand. "
                                 "Remove the folder, or restore it from a backup.")
        if not path.is_dir():
            known = ", ".join(map(str, self.numbers(name))) or "none"
            raise HeadstartError(f"{name} has no version {number} in {self.root} (versions: {known}).")
        meta = read_json_object(path / "version.json", "The registered version is damaged: push its run again.")
        _check_meta(path / "version.json", meta)
        return Version(name, number, path, meta)

    def versions(self, name: str) -> list[Version]:
        return [self.version(name, n) for n in self.numbers(name)]

    def aliases(self, name: str) -> dict[str, Any]:
        """{"aliases": {alias: version}, "history": {"production": [earlier production versions]}, "events": [...]}"""
        path = self._folder(name) / "aliases.json"
        if not path.is_file():
            return {"aliases": {}, "history": {"production": []}, "events": []}
        fix = (f"Restore it from a backup, or delete it and promote again (`headstart registry promote {name} N "
               "--to production`).")
        state = read_json_object(path, fix)
        aliases, history = state.get("aliases"), state.get("history")
        if not (isinstance(aliases, dict) and all(a in ALIASES and _is_number(n) for a, n in aliases.items())
                and isinstance(history, dict) and isinstance(history.get("production"), list)
                and all(map(_is_number, history["production"])) and isinstance(state.get("events"), list)):
            raise HeadstartError(f'{path} is damaged: it needs "aliases" ({{"production": N, "candidate": N}}), '
                                 f'"history" ({{"production": [N, ...]}}) and "events" ([...]). {fix}')
        return state

    def dangling(self, name: str) -> dict[str, int]:
        """{alias: version} for the aliases pointing at a version whose folder is missing."""
        numbers = self.numbers(name)
        return {alias: n for alias, n in self.aliases(name)["aliases"].items() if n not in numbers}

    def _existing(self, name: str) -> list[int]:
        """The version numbers of `name`; refused if nothing is registered under that name."""
        numbers = self.numbers(name)
        if not numbers:
            known = ", ".join(self.names()) or "none"
            raise HeadstartError(f"No model named '{name}' in the registry {self.root} (models: {known}). Register "
                                 f"one with `headstart registry push RUN_DIR --name {name}`.")
        return numbers

    def resolve(self, spec: str) -> Version:
        """The version that 'name', 'name@3', 'name@latest' or 'name@<alias>' means now."""
        name, ref = parse_spec(spec)
        numbers = self._existing(name)
        if ref.isdecimal():  # not isdigit: int() refuses "²"
            return self.version(name, int(ref))
        if ref == "latest":
            return self.version(name, numbers[-1])
        number = self.aliases(name)["aliases"].get(ref)
        hint = f"Promote a version first: `headstart registry promote {name} {numbers[-1]} --to {ref}`."
        if number is None:
            hint = hint if ref in ALIASES else f"Use a version number, 'latest', or an alias ({', '.join(ALIASES)})."
            raise HeadstartError(f"{name} has no version marked '{ref}'. {hint}")
        if number not in numbers:
            raise HeadstartError(f"{name}@{ref} points at version {number}, whose folder is missing from "
                                 f"{self.root / name / 'versions'} (removed by hand). {hint}")
        return self.version(name, number)

    def _readable(self, name: str) -> list[Version]:
        """The versions of `name` whose version.json reads (a damaged version must not block every later push)."""
        out = []
        for number in self.numbers(name):
            try:
                out.append(self.version(name, number))
            except HeadstartError:
                continue
        return out

    def _last_number(self, name: str) -> int:
        """The highest version number ever given to `name` (its folder may have been removed since)."""
        path = self._folder(name) / "last-version"
        text = path.read_text(errors="replace").strip() if path.is_file() else "0"
        if not text.isdecimal():
            raise HeadstartError(f"{path} is damaged: it should hold the highest version number {name} ever had. "
                                 "Write that number into it (at least the highest folder in versions/).")
        return int(text)

    def push(self, run_dir: str | Path, name: str, parent: int | None = None) -> Version:
        """Register a finished run's model as the next version of `name`: model folder (with compressed variants),
        run config, results and metrics, the data fingerprint of its split manifest, and its parent version
        (default: the production version at the time of the push). Numbers are never reused, even of a version
        whose folder was removed; a push of a model already registered makes a new version too, whose
        `same_model_as` names the latest earlier version with the same model files. The model folder is read under
        `headstart compress`'s lock, so its variants are one whole set (see `headstart.compress.pipeline.settled`)."""
        run_dir = Path(run_dir)
        model_dir = run_dir / "model"
        if parent is not None:
            _version_number(parent, "--parent")
        if not run_dir.is_dir():
            raise HeadstartError(f"{run_dir} {'is a file' if run_dir.exists() else 'does not exist'}: give a run "
                                 "folder written by `headstart fit` (runs/<name>).")
        if (run_dir / "model.safetensors").is_file() and (run_dir.parent / "config.yaml").is_file():
            raise HeadstartError(f"{run_dir} is a run's model folder: push its run folder, {run_dir.parent}, whose "
                                 "config, results and split the version records too.")
        for required in (run_dir / "config.yaml", run_dir / "results.json", run_dir / "split.csv", model_dir,
                         model_dir / "config.json", model_dir / "model.safetensors"):
            if not (required.is_dir() if required == model_dir else required.is_file()):
                raise HeadstartError(f"{run_dir} is not a finished run folder: {required.relative_to(run_dir)} is "
                                     "missing. Give a folder written by `headstart fit` (runs/<name>).")
        from headstart.compress.pipeline import settled
        from headstart.compress.variants import list_variants
        from headstart.model.folder import load_model, read_model_config

        model_config = read_model_config(model_dir)
        with settled(model_dir, COMPRESS_WAIT):  # compress's lock: no swap of its variants, nor half of one
            _check_model_files(model_dir)  # before the first write: a refused push leaves the registry as it was
            # weights that do not load would make a version nobody can serve
            modality = load_model(model_dir).backbone.modality
            data = data_fingerprint(run_dir / "split.csv")
            metrics = headline_metrics(run_dir)
            folder = self._folder(name)
            try:
                (folder / "versions").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HeadstartError(f"Cannot create the registry folder {folder} ({exc.strerror}): give a writable "
                                     "--registry (or $HEADSTART_REGISTRY).") from None
            with self._lock(name):
                for stale in folder.glob(".staging-*"):  # left by a writer that died (we hold the lock)
                    shutil.rmtree(stale, ignore_errors=True)
                remove_temporary(folder)
                numbers, earlier = self.numbers(name), self._readable(name)
                modalities = {v.meta["modality"] for v in earlier} - {modality}
                if modalities:
                    raise HeadstartError(f"{run_dir} holds a model of {modality}s, but the versions "
                                         f"of {name} classify {', '.join(sorted(modalities))}s: push it under another "
                                         "name.")
                number = max(self._last_number(name), *numbers, 0) + 1
                if parent is None:
                    parent = self.aliases(name)["aliases"].get("production")
                elif parent not in numbers:
                    raise HeadstartError(f"--parent {parent}: {name} has no such version (versions: "
                                         f"{', '.join(map(str, numbers)) or 'none'}).")
                staging = folder / f".staging-{number}-{os.getpid()}"
                shutil.copytree(model_dir, staging / "model", ignore=shutil.ignore_patterns(".*"))
                try:  # again on what was copied: a linked folder's files are copied, and were not listed before
                    _check_model_files(staging / "model", model_dir)
                except HeadstartError:
                    shutil.rmtree(staging)
                    raise
                (staging / "run").mkdir()
                for file in RUN_FILES:
                    if (run_dir / file).is_file():
                        shutil.copy2(run_dir / file, staging / "run" / file)
                files = folder_digests(staging)
                model_files = _model_files(files)
                same = [v.number for v in earlier if _model_files(v.meta.get("files")) == model_files]
                meta = {
                    "format": FORMAT, "version": 1, "name": name, "number": number, "created": now(),
                    "source": str(run_dir.resolve()), "parent": parent,
                    "modality": modality, "labels": model_config["labels"],
                    "backbone": model_config["backbone"], "preprocessing": model_config.get("preprocessing"),
                    "metrics": metrics, "data": data,
                    "variants": [{k: v.get(k) for k in ("name", "runtime", "precision", "accepted")}
                                 for v in list_variants(staging / "model")],
                    "same_model_as": same[-1] if same else None,
                    "files": files,
                }
                write_atomic(staging / "version.json", json.dumps(meta, indent=2))
                _read_only(staging)
                sync_tree(staging)
                os.rename(staging, folder / "versions" / str(number))
                fsync_path(folder / "versions")  # the rename itself
                write_atomic(folder / "last-version", f"{number}\n")  # until written, the folder itself counts
        return self.version(name, number)

    def _set_alias(self, name: str, number: int, alias: str, action: str, state: dict) -> Version:
        """Point `alias` at version `number` (checked against its digests) in `state`, and write it."""
        version = self.version(name, number)
        version.verify()  # a version whose files changed is never promoted
        current = state["aliases"].get(alias)
        state["aliases"][alias] = number
        if alias == "production" and state["aliases"].get("candidate") == number:  # nothing left to compare
            del state["aliases"]["candidate"]
        state["events"].append({"time": now(), "action": action, "alias": alias, "from": current, "to": number})
        write_atomic(self._folder(name) / "aliases.json", json.dumps(state, indent=2))
        return version

    def promote(self, name: str, number: int, alias: str = "production") -> Version:
        """Point `alias` at version `number`. Promoting to production remembers the version it replaces (for
        rollback) and clears the candidate alias if it pointed at the promoted version; the production version
        cannot be the candidate."""
        if alias not in ALIASES:
            raise HeadstartError(f"--to {alias}: aliases are {', '.join(ALIASES)}.")
        _version_number(number, "Version")
        self._existing(name)  # before the lock, whose file would create the model's folder
        with self._lock(name):
            state = self.aliases(name)
            current = state["aliases"].get(alias)
            if alias == "production" and current is not None and current != number:
                state["history"]["production"].append(current)
            if alias == "candidate" and state["aliases"].get("production") == number:
                raise HeadstartError(f"{name} version {number} is the production version: a candidate is compared "
                                     "with production, so it must be another version. Push or promote another one.")
            return self._set_alias(name, number, alias, "promote", state)

    def change_aliases(self, name: str, change: Callable[[], Any]) -> tuple[dict, dict]:
        """Run `change` (a promote or rollback of `name`) under the lock: the aliases just before and just after it,
        with no other writer's change in between (what `restore_aliases` needs to undo it alone)."""
        self._existing(name)
        with self._lock(name):  # re-entrant: the change takes it again
            before = self.aliases(name)
            change()
            return before, self.aliases(name)

    def restore_aliases(self, name: str, state: dict, changed: dict) -> bool:
        """Put back the aliases (and their history) as `aliases(name)` returned them, undoing a change that could
        not be served, unless they are no longer as that change left them (`changed`): another writer's later
        change is kept. Returns whether they were put back."""
        with self._lock(name):
            if self.aliases(name) != changed:
                return False
            write_atomic(self._folder(name) / "aliases.json", json.dumps(state, indent=2))
            return True

    @staticmethod
    def _pop_rollback(name: str, state: dict, numbers: list[int]) -> int:
        """Pop from `state`'s production history the version a rollback goes back to: the last one whose folder
        exists and that is not production now (later ones, removed by hand or the current one, are dropped)."""
        history = state["history"]["production"]
        while history and (history[-1] not in numbers or history[-1] == state["aliases"].get("production")):
            history.pop()
        if not history:
            raise HeadstartError(f"{name} has no earlier production version to roll back to.")
        return history.pop()

    def rollback_target(self, name: str) -> int:
        """The version `rollback(name)` would point production at now; nothing is written."""
        numbers = self._existing(name)
        return self._pop_rollback(name, self.aliases(name), numbers)

    def rollback(self, name: str) -> Version:
        """Point production back at the version that was production before the current one (skipping versions
        whose folders were removed by hand); a candidate alias on that version is cleared, as by a promotion."""
        numbers = self._existing(name)
        with self._lock(name):
            state = self.aliases(name)
            return self._set_alias(name, self._pop_rollback(name, state, numbers), "production", "rollback", state)

    def diff(self, name: str, a: str, b: str) -> list[tuple[str, float | None, float | None]]:
        """(metric, value in A, value in B) for every metric either version has; A and B are version references."""
        va, vb = self.resolve(f"{name}@{a}"), self.resolve(f"{name}@{b}")
        keys = sorted(set(va.meta["metrics"]) | set(vb.meta["metrics"]))
        return [(key, va.meta["metrics"].get(key), vb.meta["metrics"].get(key)) for key in keys]
