"""The run config: the single, validated source of a run (see README, "The run config")."""

from __future__ import annotations

import difflib
import re
from pathlib import Path, PurePath
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticSerializationError, to_jsonable_python

from headstart.errors import HeadstartError
from headstart.files import write_atomic


def _number_as_text(value):
    """A whole YAML number in a text field as the text a table holds for it (1 -> "1"). A YAML boolean or a decimal
    is refused: 1.10 reads as 1.1, so only the quoted text says what was meant."""
    if isinstance(value, bool):
        raise ValueError("YAML reads an unquoted yes, no, on, off, true or false as true/false, not as text; if you "
                         "mean the word, put it in quotes (e.g. 'yes')")
    if isinstance(value, float):
        raise ValueError("YAML reads an unquoted decimal as a number, not as text; put it in quotes, written as "
                         "your data holds it (e.g. '0.5')")
    return str(value) if isinstance(value, int) else value


Text = Annotated[str, BeforeValidator(_number_as_text)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what NumPy and Lightning accept


class _Loader(yaml.SafeLoader):
    """YAML as a run config needs it: a key given twice is refused (PyYAML keeps the last silently); numbers are
    plain decimals only, so 010, 0x1F, 1_000 and 1:30 stay text instead of becoming 8, 31, 1000 and 90; dates stay
    text (a run named 2024-01-01)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # PyYAML refuses an unhashable key itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"'{key}' is given twice (first on line "
                                                        f"{seen[key] + 1}): keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


# the only numbers a config holds: plain decimals, each also a number to YAML 1.1 (so a saved config, quoted for
# YAML 1.1, reads back the same); 1e-3 stays text here, and a number field reads it
_NUMBERS = [
    ("tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")),
    ("tag:yaml.org,2002:float",
     re.compile(r"^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                r"|\.(?:nan|NaN|NAN))$"),
     list("-+0123456789."))]
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, _regexp, _first in _NUMBERS:
    _Loader.add_implicit_resolver(_tag, _regexp, _first)


def read_yaml(text: str):
    """`text` read with the run config's YAML rules (see `_Loader`)."""
    return yaml.load(text, Loader=_Loader)


def _kinds(annotation) -> set:
    """The types an annotation admits: the members of a union, each without its Annotated constraints."""
    if get_origin(annotation) is Annotated:
        return _kinds(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return set().union(*map(_kinds, get_args(annotation)))
    return {annotation}


def _items(annotation, value) -> list[tuple[set, object]]:
    """(the types an item admits, the item) for each item of a list or value of a mapping that `annotation`
    admits."""
    pairs = []
    for kind in _kinds(annotation):
        if get_origin(kind) is list and isinstance(value, list):
            pairs += [(_kinds(get_args(kind)[0]), item) for item in value]
        elif get_origin(kind) is dict and isinstance(value, dict):
            pairs += [(_kinds(get_args(kind)[1]), item) for item in value.values()]
    return pairs


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_values_for_numbers(cls, value, info: ValidationInfo):
        """pydantic reads true as 1 in a number field: `train.lr: true` would train at a rate of 1, and
        `head.hidden: [true]` would build a layer of width 1."""
        annotation = cls.model_fields[info.field_name].annotation
        for kinds, item in [(_kinds(annotation), value), *_items(annotation, value)]:
            if isinstance(item, bool) and bool not in kinds and kinds & {int, float}:
                raise ValueError(f"give a number, not {str(item).lower()}")
        return value


class SplitConfig(_Section):
    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    seed: Seed = 0

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1, got {total:g}")
        return self


# the columns of headstart's own example tables: a metadata column of the same name would overwrite one
RESERVED_COLUMNS = ("input", "label", "origin", "group", "split", "exact", "near", "rank", "y")


class DataConfig(_Section):
    source: Text = Field(min_length=1)
    text_column: Text | None = "text"
    image_column: Text | None = None
    label_column: Text = "label"
    labels: list[Text] | None = None
    group_column: Text | None = None
    metadata_columns: list[Text] = []
    split: SplitConfig = SplitConfig()
    balance: Literal["none", "class_weights", "oversample"] = "none"
    augment: Literal["default", "symmetric", "none"] = "default"
    bad_inputs: Literal["skip", "refuse"] = "skip"
    leakage: Literal["drop", "report", "refuse"] = "drop"
    max_length: int = Field(256, ge=8, le=8192)
    bucket_by_length: bool = True
    image_size: int | None = Field(None, ge=32, le=1024)

    @field_validator("labels")
    @classmethod
    def _two_or_more(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and len(set(labels)) < 2:
            raise ValueError("a classifier tells two or more classes apart: list at least two labels, or give null "
                             "to take the labels the data holds")
        return labels

    @field_validator("metadata_columns")
    @classmethod
    def _not_reserved(cls, columns: list[str]) -> list[str]:
        taken = [c for c in columns if c in RESERVED_COLUMNS]
        if taken:
            raise ValueError(f"{', '.join(taken)}: headstart names its own columns {', '.join(RESERVED_COLUMNS)}; "
                             "rename that column in the table")
        return columns


class HeadConfig(_Section):
    hidden: list[int] = [256]
    dropout: float = Field(0.4, ge=0, lt=1)

    @field_validator("hidden")
    @classmethod
    def _one_to_three_layers(cls, hidden: list[int]) -> list[int]:
        if len(hidden) > 2:
            raise ValueError("a head has 1 to 3 dense layers: give at most 2 hidden sizes")
        if any(h < 1 for h in hidden):
            raise ValueError("hidden sizes must be positive")
        return hidden


class StrategyConfig(_Section):
    name: Literal["feature_extraction", "gradual", "full"] = "gradual"
    unfreeze: Union[Literal["plateau"], list[int]] = "plateau"
    unfreeze_patience: int = Field(1, ge=1)
    unfreeze_min_improvement: float = Field(0.01, ge=0, lt=1)
    discriminative_factor: float = Field(2.6, ge=1)
    backbone_lr_ratio: float = Field(0.1, gt=0, le=1)
    freeze_batchnorm: bool = False

    @field_validator("unfreeze", mode="before")
    @classmethod
    def _plateau_or_epochs(cls, unfreeze):
        if unfreeze == "plateau" or isinstance(unfreeze, list) and all(type(e) is int for e in unfreeze):
            return unfreeze
        raise ValueError("give plateau, or a list of whole epochs at which to unfreeze the next group, e.g. "
                         "[2, 4, 6]")

    @field_validator("unfreeze")
    @classmethod
    def _ordered_epochs(cls, unfreeze):
        if unfreeze == []:
            raise ValueError("an empty list unfreezes nothing: to train the head alone, set strategy.name: "
                             "feature_extraction")
        if isinstance(unfreeze, list) and (any(e < 1 for e in unfreeze) or unfreeze != sorted(unfreeze)):
            raise ValueError("unfreeze epochs must be 1 or more (epoch 0, the first, trains the head alone) and in "
                             "order, e.g. [2, 4, 6]; an epoch listed twice unfreezes two groups at once")
        return unfreeze


# On a CPU an image costs 0.4 to 0.8 times as much in batches of 8 as in batches of 32 to 64: the activations of a
# small batch stay in cache (BENCHMARKS.md, bench/eval_batch.py). Texts gain nothing from small batches.
CPU_IMAGE_BATCH = 8


class TrainConfig(_Section):
    max_epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    patience: int = Field(5, ge=1)
    reduce_lr_factor: float = Field(0.5, gt=0, lt=1)
    reduce_lr_patience: int = Field(3, ge=1)
    monitor: Literal["val_loss", "val_acc", "val_f1"] = "val_loss"
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    seed: Seed = 0
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Union[int, list[int], Literal["auto"]] = 1
    strategy: Literal["auto", "ddp"] = "auto"
    num_nodes: int = Field(1, ge=1)
    num_workers: int = Field(0, ge=0)
    cache: Literal["auto", "off"] = "auto"
    cache_engine: Literal["auto", "torch", "onnxruntime"] = "auto"
    cache_views: int = Field(4, ge=1, le=64)
    cache_memory_gb: float = Field(4.0, gt=0)
    eval_batch_size: int | None = Field(None, ge=1)

    def eval_batch(self, images_on_cpu: bool) -> int:
        """`eval_batch_size`, or when unset `CPU_IMAGE_BATCH` for images through a backbone on a CPU and 64
        otherwise."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        return CPU_IMAGE_BATCH if images_on_cpu else 64

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value):
        return str(value)

    @model_validator(mode="after")
    def _half_precision_on_cuda(self):
        # Lightning would train in bf16 instead, while config.yaml said 16-mixed
        if self.precision == "16-mixed" and self.accelerator in ("cpu", "mps"):
            raise ValueError(f"precision 16-mixed runs on CUDA GPUs only, not with accelerator {self.accelerator}: "
                             "use bf16-mixed, or 32")
        return self

    @field_validator("devices", mode="before")
    @classmethod
    def _lightning_devices(cls, value, info: ValidationInfo):
        """Lightning's forms: a count (-1: all), GPU indices as a list or as text ("0,1"), or auto."""
        text = value.replace(" ", "") if isinstance(value, str) else ""
        if re.fullmatch(r"-?\d+", text):
            value = int(text)
        elif re.fullmatch(r"(\d+,)+\d*", text):
            value = [int(i) for i in text.split(",") if i]
        if not (value == "auto" or (type(value) is int and (value >= 1 or value == -1))
                or (isinstance(value, list) and value and all(type(i) is int and i >= 0 for i in value))):
            raise ValueError("give a count (1, 2, ...; -1: every GPU), a list of GPU indices ([0, 1] or '0,1'), or auto")
        if info.data.get("accelerator") == "cpu" and not (value == "auto" or type(value) is int and value >= 1):
            raise ValueError("with accelerator cpu, give a number of processes (1, 2, ...) or auto")
        return value

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML reads a bare `off` as false
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value


Cost = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class CostConfig(_Section):
    false_positive: Cost | None = None
    false_negative: Cost | None = None
    per_class: dict[Text, Cost] = {}

    @model_validator(mode="after")
    def _one_kind(self):
        if self.per_class and (self.false_positive is not None or self.false_negative is not None):
            raise ValueError("give either per_class costs or false_positive / false_negative costs, not both")
        if self.false_positive == 0 and self.false_negative == 0:
            raise ValueError("with both errors free no decision is better than another: give one a cost above 0")
        return self


class EvaluateConfig(_Section):
    after_fit: bool = True
    slice_by: list[Text] = []
    min_slice_size: int = Field(10, ge=1)
    positive_label: Text | None = None
    costs: CostConfig = CostConfig()
    bootstrap: int = Field(1000, ge=0)
    seed: Seed = 0
    baselines: bool = True
    robustness: bool = True
    robustness_examples: int = Field(500, ge=10)
    latency: bool = True


class RunConfig(_Section):
    name: Text
    data: DataConfig
    backbone: str = "minilm"
    head: HeadConfig = HeadConfig()
    strategy: StrategyConfig = StrategyConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    output: Text = "runs"

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError("use letters, digits, _, . and -, starting with a letter or digit: the name is the run's "
                             "folder, <output>/<name>")
        return name

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from headstart.backbones.registry import unknown  # imports no torch: the check stays fast

        problem = unknown(name)
        if problem:
            raise ValueError(problem)
        return name

    @model_validator(mode="after")
    def _stops_after_unfreezing(self):
        strategy, patience = self.strategy, self.train.patience
        if strategy.name == "gradual" and strategy.unfreeze == "plateau" and strategy.unfreeze_patience >= patience:
            raise ValueError(f"train.patience ({patience}) must be larger than strategy.unfreeze_patience "
                             f"({strategy.unfreeze_patience}) when groups are unfrozen on plateau: early stopping "
                             "would end the run at the first plateau instead of unfreezing the next group")
        return self

    def run_dir(self) -> Path:
        return Path(self.output).expanduser() / self.name


def _section_at(path: list[str]) -> type[BaseModel] | None:
    """The section of the run config that `path` names (["train"], ["data", "split"]), or None if it names a
    field, a field's value or nothing."""
    model = RunConfig
    for key in path:
        annotation = getattr(model.model_fields.get(key), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _fields_of(path: list[str]) -> list[str]:
    section = _section_at(path)
    return list(section.model_fields) if section else []


def explain(error: ValidationError, what: str, prefix: tuple[str, ...] = ()) -> HeadstartError:
    """One line per invalid field of `error`, with a did-you-mean for unknown fields. `prefix`: where the validated
    section sits in the run config (("evaluate",) for an EvaluateConfig)."""
    lines = []
    for item in error.errors():
        loc = [*prefix, *(str(part) for part in item["loc"])]
        field = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            known = _fields_of(loc[:-1])
            guess = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f" Did you mean '{'.'.join(loc[:-1] + guess)}'?" if guess else ""
            lines.append(f"- {field}: unknown field.{hint} Known fields here: {', '.join(known)}.")
        elif item["type"] == "missing":
            lines.append(f"- {field}: required, but missing.")
        else:
            message = item["msg"].removeprefix("Value error, ")
            # a check across sections names its fields itself, and its input would be the whole config; a check
            # across a section's fields would show the section, the fields given only
            if not loc:
                lines.append(f"- {message}.")
            elif isinstance(item.get("input"), dict):
                lines.append(f"- {field}: {message}.")
            else:
                lines.append(f"- {field}: {message} (got {item.get('input')!r}).")
    return HeadstartError(f"{what} is not valid:\n" + "\n".join(lines)
                          + "\nFix these fields (every field is documented in the README) and run again.")


def override_value(override: str, value: str):
    """The value of a `--set key=value` read as YAML, or a clear error naming the option. A `#` in an unquoted
    value is part of it: on a command line it is never a YAML comment; so is a trailing `:` (`hf:`), which YAML
    would read as a one-key mapping."""
    if re.search(r"(^|\s)#", value.strip()) and value.strip()[:1] not in ("'", '"', "[", "{"):
        return value.strip()
    try:
        parsed = read_yaml(value)
        return value.strip() if isinstance(parsed, dict) and not re.search(r"[\s{]", value.strip()) else parsed
    except yaml.YAMLError as exc:
        why = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise HeadstartError(f"--set '{override}': the value is not valid YAML ({why}). Quote it if it is text, e.g. "
                             "--set 'name=\"my run\"'; a list is written [1, 2].") from None


def apply_override(raw: dict, override: str) -> None:
    """Set the field that `key.sub=value` names in the raw config `raw` (the value read as YAML)."""
    if "=" not in override:
        raise HeadstartError(f"--set '{override}' must look like key.sub=value, e.g. --set train.max_epochs=3")
    key, value = override.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise HeadstartError(f"--set '{override}': the key '{key.strip()}' has an empty part. Name a field by its "
                             "sections, e.g. --set train.max_epochs=3")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise HeadstartError(f"--set {key}: '{part}' is not a section of the config")
    value = override_value(override, value)
    _merge(node, {parts[-1]: value}, parts[:-1])


def _merge(into: dict, given: dict, path: list[str]) -> None:
    """`given` written into `into`, the raw config's section at `path`: a section given as a mapping changes the
    fields it names; any other value (a mapping of per-class costs too) replaces the field's whole."""
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and _section_at([*path, key]):
            _merge(into[key], value, [*path, key])
        else:
            into[key] = value


def _plain(value):
    """A value of a config given as a dict, as YAML would give it: paths as text, NumPy numbers and arrays as
    numbers and lists."""
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    raise ValueError(f"a {type(value).__name__} ({value!r}) is not a config value: give text, a number, a list or a "
                     "mapping")


def _fill_sections(raw: dict, model: type[BaseModel] = RunConfig) -> None:
    """A section written with every line commented out (`train:` alone) reads as null: treat it as empty."""
    for key, field in model.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)) or key not in raw:
            continue
        if raw[key] is None:
            raw[key] = {}
        if isinstance(raw[key], dict):
            _fill_sections(raw[key], section)


def load_config(source: Union[str, Path, dict, RunConfig], overrides: list[str] = ()) -> RunConfig:
    """Read a run config from a YAML file, a dict or a RunConfig, apply `key.sub=value` overrides, validate."""
    if isinstance(source, RunConfig):
        source = source.model_dump()
    if isinstance(source, dict):
        try:
            raw = to_jsonable_python(source, fallback=_plain)
        except (ValueError, PydanticSerializationError) as exc:
            raise HeadstartError(f"The run config given cannot be read: {exc}.") from None
        where = "given"
    elif not isinstance(source, (str, PurePath)):
        raise HeadstartError(f"The run config must be the path of a YAML file, a dict (the YAML's contents) or a "
                             f"RunConfig, not `{type(source).__name__}`.")
    else:
        path = Path(source)
        where = f"in {path}"
        if path.is_dir():
            raise HeadstartError(f"{path} is a folder, not a config file. Give the path of a YAML run config, "
                                 "e.g. configs/bbc.yaml.")
        if not path.is_file():
            raise HeadstartError(f"Config file {path} does not exist. Give the path of a YAML run config, "
                                 "e.g. configs/bbc.yaml.")
        try:
            raw = read_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise HeadstartError(f"Config file {path} is not valid YAML: "
                                 + str(exc).replace('"<unicode string>"', str(path))) from None
        except UnicodeDecodeError as exc:
            raise HeadstartError(f"Config file {path} is not UTF-8 text (byte {exc.start} cannot be read): save it "
                                 "as UTF-8.") from None
        if not isinstance(raw, dict):
            raise HeadstartError(f"Config file {path} must hold a mapping of fields (name:, data:, ...).")
    _fill_sections(raw)
    for override in overrides or ():
        apply_override(raw, override)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise explain(exc, f"The run config {where}") from None


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    write_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))

