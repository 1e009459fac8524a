"""T5 encoding as the reference: 512 positions, zeros past each prompt's tokens (EOS included)."""

import pytest
import torch
from helpers import make_tiny_t5

from nemo_cosmos.text import T5TextEncoder


def test_padding_positions_are_zero_and_prompt_positions_match_unpadded(tmp_path):
    make_tiny_t5(tmp_path)
    enc = T5TextEncoder.from_pretrained(str(tmp_path))
    out = enc.encode(["a red cube moves left", "the robot"])
    assert out.shape == (2, 512, 32) and out.dtype == torch.float32
    lengths = [6, 3]  # words + EOS
    for row, n in zip(out, lengths):
        assert row[:n].abs().sum(-1).min() > 0
        assert torch.count_nonzero(row[n:]) == 0
    # the real attention mask is used: padding does not change the prompt's own embeddings
    ids = enc.tokenizer(["the robot"], return_tensors="pt")["input_ids"]
    alone = enc.model(input_ids=ids).last_hidden_state[0]
    assert torch.allclose(out[1, :3], alone, atol=1e-5)


def test_missing_model_names_the_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot load the T5 text encoder from .*python -m nemo_cosmos.recipes.download"):
        T5TextEncoder.from_pretrained(str(tmp_path / "nothing"))


def _hidden(model, enc, prompts):
    batch = enc.tokenizer(prompts, truncation=True, padding="max_length", max_length=512, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return out * batch["attention_mask"][..., None]


def test_attention_is_eager_as_in_the_references_transformers(tmp_path):
    """NVIDIA pins transformers 4.48, whose T5 attention is eager; transformers 5 defaults to SDPA,
    which rounds differently. Loaded or handed in, the encoder runs eager, bit for bit."""
    from transformers import T5EncoderModel

    make_tiny_t5(tmp_path)
    prompts = ["a red cube moves left", "the robot"]
    enc = T5TextEncoder.from_pretrained(str(tmp_path))
    assert enc.model.config._attn_implementation == "eager"
    eager = _hidden(T5EncoderModel.from_pretrained(str(tmp_path), attn_implementation="eager"), enc, prompts)
    sdpa_model = T5EncoderModel.from_pretrained(str(tmp_path), attn_implementation="sdpa")
    sdpa = _hidden(sdpa_model, enc, prompts)
    assert not torch.equal(sdpa, eager)  # the two kernels really differ on this input
    assert torch.equal(enc.encode(prompts), eager)
    handed_in = T5TextEncoder(enc.tokenizer, sdpa_model)
    assert torch.equal(handed_in.encode(prompts), eager)
