"""Hugging Face text encoders (BERT-like): mean-pooled token states, one layer group per transformer block."""

from __future__ import annotations

import inspect
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone, State
from headstart.errors import HeadstartError

# A long text is tokenized from a span of its start of max_length * CHARS_PER_TOKEN characters (more if that span
# holds fewer than max_length tokens), so a huge text is not tokenized whole only to be truncated.
CHARS_PER_TOKEN = 32


def _blocks_prefix(model: nn.Module) -> str:
    """Name of the ModuleList holding the transformer blocks: the one with the most parameters."""
    lists = [(sum(p.numel() for p in m.parameters()), name) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise HeadstartError(f"{type(model).__name__} has no list of blocks headstart can group into layers.")
    return max(lists)[1]


def _offline() -> bool:
    """headstart's default is offline: only HF_HUB_OFFLINE set to 0 (or false, off, no) lets a hub name download.
    Passed to each load, and set in huggingface_hub's constants rather than the environment, which it reads once,
    when first imported (importing lightning does that): offline, its calls reach no server, not even the one that
    fetches its list of agents for a name missing from the cache."""
    offline = os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in {"0", "false", "off", "no"}
    if offline:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    return offline


def _why(source: str, exc: Exception) -> str:
    """Why loading `source` failed: Hugging Face's reason for a folder that exists; for one that does not, that it
    does not, and, for a name that could be a hub model, that hub models are not downloaded offline."""
    folder = Path(source).expanduser()
    if folder.is_file():
        return f"{folder.resolve()} is a file: give the folder that holds it ({folder.resolve().parent})."
    if "ignore_mismatched_sizes" in str(exc):  # an option headstart users never set
        return ("the shapes of its weights differ from those its config.json describes (transformers' report above "
                "lists them): config.json and the weights come from two different models.")
    if not isinstance(exc, (OSError, ValueError)):  # damaged weights, in a folder or in the cache
        return f"{type(exc).__name__}: {exc}"
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            return f"the folder {folder.resolve()} has no config.json, so it holds no saved Hugging Face model."
        config = (folder / "config.json").read_text(errors="replace")
        if '"headstart-model"' in config:
            return (f"{folder.resolve()} is a headstart model folder, not a Hugging Face one: predict with it "
                    "(`headstart predict`, headstart.load()), or fine-tune from the backbone it was trained from.")
        if '"auto_map"' in config:
            return (f"{folder.resolve()} holds a model that needs its own code (auto_map in config.json), and "
                    "headstart never runs code that comes with a model. Use an encoder transformers has built in.")
    if folder.exists():
        return str(exc)
    missing = f"there is no folder {folder.resolve()}"
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", source):  # not a hub name either (`org/model`)
        return f"{missing}."
    if _offline():
        return (f"{missing}, and the hub model '{source}' is not in the local Hugging Face cache; with "
                f"HF_HUB_OFFLINE=1 (headstart's default) nothing is downloaded. Download it first (hf download "
                f"{source}), or set HF_HUB_OFFLINE=0.")
    return f"{missing}, and the hub could not give '{source}': {exc}"


class HFTextEncoder(Backbone):
    """An encoder from `transformers` (AutoModel) and its tokenizer, loaded from a local folder."""

    modality = "text"

    def __init__(self, model: nn.Module, tokenizer, max_length: int, source: str):
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # features are mean-pooled token states; the pooler would be dead weight
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self.feature_size = model.config.hidden_size
        self.staged  # decided now, by running a probe text: not later inside an export or compile, which trace it

    @classmethod
    def from_pretrained(cls, source: str, max_length: int) -> HFTextEncoder:
        """Load weights and tokenizer from a local folder (or the local Hugging Face cache for a hub name)."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if Path(source).expanduser().exists():  # transformers takes `~/...` for a hub name
            source = str(Path(source).expanduser())
        fix = "Give a local folder holding config.json, the weights and the tokenizer files (backbone: hf:<folder>)."
        try:  # never a model's own code (trust_remote_code): transformers would ask, or run it
            # float32 whatever the weights were saved in: training and the head run in float32 (or autocast)
            model = AutoModel.from_pretrained(source, local_files_only=_offline(), dtype=torch.float32,
                                              trust_remote_code=False)
        except Exception as exc:  # damaged weights, weights of another size than config.json says, a pickle...
            raise HeadstartError(f"Could not load a Hugging Face encoder from '{source}': {_why(source, exc)}\n{fix}"
                                 ) from None
        _check_encoder(model, source, fix)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=_offline(), trust_remote_code=False)
        except Exception as exc:
            raise HeadstartError(f"Could not load the tokenizer of '{source}' ({exc}). {fix}") from None
        _check_tokenizer(model, tokenizer, source, fix)
        return cls(model, tokenizer, min(max_length, _limit(model, tokenizer)), source)

    @classmethod
    def rebuild(cls, spec: dict[str, Any], folder: Path) -> HFTextEncoder:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        assets = folder / spec["assets"]
        fix = "Write the model folder again from its run (`headstart fit`), or restore the folder."
        if not assets.is_dir():
            raise HeadstartError(f"{folder} has no {spec['assets']}/ folder, which holds the encoder's config and "
                                 f"tokenizer. {fix}")
        try:  # a model folder is local: never the hub, whatever HF_HUB_OFFLINE says
            model = AutoModel.from_config(AutoConfig.from_pretrained(assets, local_files_only=True,
                                                                     trust_remote_code=False))
            tokenizer = AutoTokenizer.from_pretrained(assets, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # transformers raises many types for a config edited by hand
            raise HeadstartError(f"{assets} does not hold the encoder's config and tokenizer ({type(exc).__name__}: "
                                 f"{exc}). {fix}") from None
        # without its files, transformers makes a tokenizer of a few special tokens: every word would be unknown
        if spec.get("vocabulary", len(tokenizer)) != len(tokenizer):
            raise HeadstartError(f"The tokenizer in {assets} knows {len(tokenizer)} tokens, but the model was trained "
                                 f"with one of {spec['vocabulary']}: its files are missing or were replaced. {fix}")
        length, limit = spec["max_length"], _limit(model, tokenizer)
        if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= limit:
            raise HeadstartError(f"{folder / 'config.json'}: the encoder reads 1 to {limit} tokens, not max_length "
                                 f"{length!r}. {fix}")
        return cls(model, tokenizer, length, spec["source"])

    @cached_property
    def _blocks(self) -> str:
        return _blocks_prefix(self.model)

    def group_prefixes(self) -> list[tuple[str, list[str]]]:
        blocks = self._blocks
        names = [name for name, _ in self.named_parameters()]
        block_param = f"model.{blocks}."
        first = next(i for i, name in enumerate(names) if name.startswith(block_param))
        last = max(i for i, name in enumerate(names) if name.startswith(block_param))
        groups = [("embeddings", names[:first])]
        groups += [(f"block{i}", [f"model.{blocks}.{i}"]) for i in range(len(self.model.get_submodule(blocks)))]
        if names[last + 1:]:
            groups.append(("final", names[last + 1:]))
        return groups

    def _head(self, text: str) -> str:
        """The start of `text` that gives the same first max_length tokens as the whole text: cut before a
        whitespace (so no word is split), and grown until it holds more than max_length tokens."""
        span = self.max_length * CHARS_PER_TOKEN
        while span < len(text):
            end = next((i for i in range(span, span // 2, -1) if text[i].isspace()), None)
            if end is not None:
                head = text[:end]
                # verbose=False: this count is meant to run past the model's limit; nothing longer reaches the model
                if len(self.tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"]) > self.max_length:
                    return head
            span *= 4
        return text

    def prepare(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        # pad to the longest text of the batch, not to max_length: short batches cost less
        encoded = self.tokenizer([self._head(text) for text in inputs], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    @cached_property
    def staged(self) -> bool:
        """BERT-like encoders (embeddings, then a list of blocks, nothing between or after) run group by group, when
        doing so gives what the encoder gives. Others run whole: ELECTRA and ALBERT project the embeddings before
        the blocks, DeBERTa's blocks take relative positions, for instance."""
        groups = self.group_prefixes()
        return (hasattr(self.model, "embeddings") and groups[-1][0] != "final"
                and all(name.startswith("model.embeddings.") for name in groups[0][1]) and self._stages_agree())

    def _stages_agree(self) -> bool:
        """Whether running the groups one by one on a probe text gives the encoder's own output."""
        parameter = next(self.model.parameters())
        if parameter.is_meta:  # built for its preprocessing only: it never runs
            return True
        batch = {k: v.to(parameter.device) for k, v in self.prepare(["a probe, of a few words."]).items()}
        modes = {module: module.training for module in self.model.modules()}  # frozen groups stay in eval mode
        self.model.eval()
        try:
            with torch.no_grad(), torch.autocast(parameter.device.type, enabled=False):
                expected = self.model(**batch).last_hidden_state
                state = self.begin(**batch)
                for index in range(self.n_groups):
                    state = self.run_group(index, state)
            got = state["hidden"]
            return torch.is_tensor(got) and got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)
        except Exception:  # a block that takes or returns other things than a BERT block does
            return False
        finally:
            for module, training in modes.items():
                module.training = training

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.staged:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask)
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.finish({"hidden": states, "attention_mask": attention_mask})

    def run_group(self, index: int, state: State) -> State:
        mask = state["attention_mask"]
        if index == 0:
            return {"hidden": self.model.embeddings(input_ids=state["input_ids"]), "attention_mask": mask}
        from transformers.masking_utils import create_bidirectional_mask

        hidden = state["hidden"]
        block_mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)
        block = self.model.get_submodule(self._blocks)[index - 1]
        return {"hidden": block(hidden, block_mask), "attention_mask": mask}

    def finish(self, state: State) -> torch.Tensor:
        states, mask = state["hidden"], state["attention_mask"].unsqueeze(-1).to(state["hidden"].dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1)

    def split_state(self, state: State) -> list[State]:
        """Per text, without its padding tokens."""
        if "attention_mask" not in state:
            return super().split_state(state)
        keep = state["attention_mask"].bool()  # a tokenizer may pad on the left: keep the tokens, wherever they are
        return [{key: value[i][keep[i]] for key, value in state.items()} for i in range(len(keep))]

    def spec(self) -> dict[str, Any]:
        if type(self) is not HFTextEncoder:  # a user's subclass: rebuilt by its factory
            return super().spec()
        return {"type": "hf_text", "source": self.source, "max_length": self.max_length, "assets": "backbone",
                "vocabulary": len(self.tokenizer)}

    def save_assets(self, folder: Path) -> None:
        self.model.config.save_pretrained(folder / "backbone")
        self.tokenizer.save_pretrained(folder / "backbone")


def _check_encoder(model: nn.Module, source: str, fix: str) -> None:
    """Refuse a model that loads but is no text encoder headstart can fine-tune."""
    name, hidden = type(model).__name__, getattr(model.config, "hidden_size", None)
    problem = None
    if getattr(model.config, "is_encoder_decoder", False):
        problem = f"it is an encoder-decoder model ({name}, like T5 or BART): headstart reads text encoders"
    elif "input_ids" not in inspect.signature(model.forward).parameters:
        problem = f"its model ({name}) takes no token ids: it does not read texts"
    elif isinstance(hidden, bool) or not isinstance(hidden, int):
        problem = f"its config has no hidden_size ({name}, a model of several parts?): headstart reads text encoders"
    if problem:
        raise HeadstartError(f"Could not use '{source}' as a text backbone: {problem}. {fix}")


def _check_tokenizer(model: nn.Module, tokenizer, source: str, fix: str) -> None:
    """Refuse a tokenizer that does not go with the model (without its files, transformers makes one of a few
    special tokens); a decoder's missing padding token becomes its end-of-text token (the attention mask hides it)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows or 2 * len(tokenizer) < rows:
        raise HeadstartError(f"Could not use '{source}' as a text backbone: its tokenizer knows {len(tokenizer)} "
                             f"tokens but the encoder embeds {rows}: the tokenizer's files (tokenizer.json, vocab.txt, "
                             f"...) are missing, or belong to another model. {fix}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise HeadstartError(f"The tokenizer of '{source}' has no padding token, nor an end-of-text token to pad "
                                 f"with: texts of one batch could not be padded to one length. {fix}")
        tokenizer.pad_token = tokenizer.eos_token


def _limit(model, tokenizer) -> int:
    """The tokens an encoder reads: its tokenizer's limit and its position embeddings' (a tokenizer saved without
    its limit reports a huge one; one may claim more positions than the encoder has, which fails on long texts)."""
    return min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 10**9)
