"""Instruction tokens and the two text encoders: byte tokens trained with the policy, and a local pretrained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robopolicy.datasets.text import instruction_texts, instruction_tokens, token_length
from robopolicy.policies.encoders.config import TextEncoderConfig
from robopolicy.policies.encoders.text import ByteTextEncoder, PretrainedTextEncoder
from robopolicy.policies.registry import make_policy
from tests.policies.test_policies import SHAPE_METAS, TINY, build, synthetic_store

INSTRUCTIONS = ["open the drawer", "close the drawer", "öffne die Schublade"]


def test_byte_tokens_round_trip_utf8_and_pad_with_zero():
    tokens = instruction_tokens(INSTRUCTIONS, 32)
    assert tokens.shape == (3, 32) and tokens.dtype == np.uint8
    assert instruction_texts(tokens) == INSTRUCTIONS
    assert (tokens[0, len("open the drawer"):] == 0).all() and tokens[2, :20].all()  # ö is two bytes
    assert token_length(INSTRUCTIONS) == 96 and token_length(["x" * 97]) == 112


@pytest.mark.parametrize("text, message", [("x" * 33, "33 bytes, longer than the 32"), ("", "non-empty"),
                                           ("a\0b", "NUL")])
def test_instructions_that_do_not_fit_are_refused_by_name(text, message):
    with pytest.raises(ValueError, match=message):
        instruction_tokens([text], 32)


def test_learned_encoder_ignores_padding_and_tells_instructions_apart():
    torch.manual_seed(0)
    encoder = ByteTextEncoder(48, TextEncoderConfig(feature_dim=16, width=32, layers=2, heads=4)).eval()
    short, long = (torch.from_numpy(instruction_tokens(INSTRUCTIONS, n)) for n in (32, 48))
    with torch.no_grad():
        features = encoder(short)
        torch.testing.assert_close(encoder(long), features, rtol=1e-5, atol=1e-5)  # padding is masked out
    assert features.shape == (3, 16) and torch.cdist(features, features)[~torch.eye(3, dtype=bool)].min() > 1e-2


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A randomly initialised 2-layer BERT and a word-level tokenizer, saved as a user's local model would be."""
    transformers = pytest.importorskip("transformers", reason="the text extra (pip install 'robopolicy[text]')")
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({word for text in INSTRUCTIONS for word in text.split()})
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[PAD]", "[UNK]", *words])}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(
        vocab_size=2 + len(words), hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_pretrained_encoder_is_frozen_cached_and_kept_out_of_the_checkpoint(tiny_bert):
    config = TextEncoderConfig(kind="pretrained", pretrained_path=str(tiny_bert), feature_dim=16)
    encoder = PretrainedTextEncoder(config)
    calls = []
    encoder.frozen.model.register_forward_hook(lambda *args: calls.append(1))
    tokens = torch.from_numpy(instruction_tokens(INSTRUCTIONS * 2, 32))
    features = encoder(tokens)
    encoder(tokens)
    assert len(calls) == 1, "each distinct instruction is embedded once"
    torch.testing.assert_close(features[:3], features[3:])
    assert torch.cdist(features[:3], features[:3])[~torch.eye(3, dtype=bool)].min() > 1e-3
    assert set(encoder.state_dict()) == {"project.weight", "project.bias"}


def test_a_policy_trains_through_a_pretrained_text_encoder(tiny_bert):
    store = synthetic_store()
    text = {"kind": "pretrained", "pretrained_path": str(tiny_bert), "feature_dim": 16}
    policy, batch = build("diffusion_unet", "text", store, encoder={"text": text})
    policy.compute_loss(batch).backward()
    projection = policy.obs_encoder.encoders["instruction"].project
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0


def test_a_missing_pretrained_directory_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder.text.pretrained_path"):
        make_policy("diffusion_unet", SHAPE_METAS["text"], {**TINY["diffusion_unet"], "encoder": {
            "text": {"kind": "pretrained", "pretrained_path": str(tmp_path / "none")}}})
