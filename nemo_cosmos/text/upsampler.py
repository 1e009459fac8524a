"""Prompt upsampler: Cosmos-1.0-Prompt-Upsampler-12B-Text2World (a Mistral-NeMo-12B fine-tune)
through transformers, turning a short prompt into the detailed caption the DiT was trained on.

As NVIDIA's Text2World upsampler: one user turn "Upsample the short caption to a long caption:
{prompt}" in the tokenizer's chat template, up to 512 new tokens, near-greedy (the reference samples
at temperature 0.01; we decode greedily), then the reference's clean-up of the answer. Prompts of
more than 250 words are left as they are.

The published repository holds NVIDIA's native checkpoint (``model.pt``: ``tok_embeddings``,
``layers.N.attention.wq``, ``feed_forward.w1`` ...); it is mapped by name onto transformers'
``MistralForCausalLM`` (both rotate halves of the head dimension, so no permutation is needed). A
folder already in transformers' format (``config.json``) loads directly.
"""

from __future__ import annotations

import os
import re
from typing import Dict

import torch

from ..errors import BadInputError, MissingFileError, first_line
from ..presets import UPSAMPLER_REPO

INSTRUCTION = "Upsample the short caption to a long caption: "
MAX_WORDS = 250


def mistral_nemo_12b_config(**overrides):
    from transformers import MistralConfig

    params = dict(vocab_size=131072, hidden_size=5120, intermediate_size=14336, num_hidden_layers=40,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                  rope_theta=1e6, max_position_embeddings=1024, tie_word_embeddings=False)
    params.update(overrides)
    return MistralConfig(**params)


def native_to_hf(state_dict: Dict[str, torch.Tensor], num_layers: int, q_size: int, kv_size: int) -> Dict[str, torch.Tensor]:
    """NVIDIA's native language-model names -> transformers' Mistral names (fused wqkv is split)."""
    sd = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state_dict.items()}
    out = {"model.embed_tokens.weight": sd.pop("tok_embeddings.weight"), "model.norm.weight": sd.pop("norm.weight"),
           "lm_head.weight": sd.pop("output.weight")}
    for i in range(num_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        if src + "attention.wqkv.weight" in sd:
            q, k, v = sd.pop(src + "attention.wqkv.weight").split([q_size, kv_size, kv_size])
            sd[src + "attention.wq.weight"], sd[src + "attention.wk.weight"], sd[src + "attention.wv.weight"] = q, k, v
        for a, b in (("attention.wq", "self_attn.q_proj"), ("attention.wk", "self_attn.k_proj"),
                     ("attention.wv", "self_attn.v_proj"), ("attention.wo", "self_attn.o_proj"),
                     ("feed_forward.w1", "mlp.gate_proj"), ("feed_forward.w3", "mlp.up_proj"),
                     ("feed_forward.w2", "mlp.down_proj"), ("attention_norm", "input_layernorm"),
                     ("ffn_norm", "post_attention_layernorm")):
            out[f"{dst}{b}.weight"] = sd.pop(f"{src}{a}.weight")
    if sd:
        raise KeyError(f"upsampler checkpoint has {len(sd)} tensor(s) the model does not use, first: {sorted(sd)[0]!r}")
    return out


def clean_text(text: str) -> str:
    """The reference's clean-up: one line; "- **header**" bullets of fewer than 10 words dropped;
    one leading "Caption:", "#####", "####", "- ", "* " or "," (checked in that order) removed;
    whitespace collapsed; outer spaces, dashes, commas, stars, colons and quotes stripped."""
    text = text.replace("\n", " ").replace("\r", " ")
    text = re.sub(r"- \*\*(.*?)\*\*", lambda m: m.group(0) if len(re.findall(r"\w+", m.group(1))) >= 10 else "", text)
    for prefix in ("Caption:", "#####", "####", "- ", "* ", ","):
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip()
    return " ".join(text.split()).strip(" -,*:\"'“”")


class PromptUpsampler:
    def __init__(self, model, tokenizer, device):
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, torch.device(device)

    @classmethod
    def from_pretrained(cls, folder: str, device="cpu", dtype=torch.bfloat16, config=None) -> "PromptUpsampler":
        """``folder``: the upsampler repository snapshot (model.pt + tokenizer files) or a folder in
        transformers' format. ``config``: the Mistral config of a native checkpoint (12B by default)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer, MistralForCausalLM

        if not os.path.isdir(folder):
            raise MissingFileError(f"prompt upsampler folder not found: {folder}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise MissingFileError(f"prompt upsampler tokenizer missing in {folder}: {first_line(e)}") from None
        if os.path.isfile(os.path.join(folder, "config.json")):
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        else:
            path = os.path.join(folder, "model.pt")
            if not os.path.isfile(path):
                raise MissingFileError(f"prompt upsampler weights missing: {path}")
            config = config or mistral_nemo_12b_config()
            try:
                raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:
                raise BadInputError(f"cannot read {path} as weights: {first_line(e)}") from None
            raw = raw.get("model", raw)
            q = config.num_attention_heads * config.head_dim
            kv = config.num_key_value_heads * config.head_dim
            with torch.device("meta"):
                model = MistralForCausalLM(config)
            model.load_state_dict(native_to_hf(raw, config.num_hidden_layers, q, kv), strict=True, assign=True)
            # the rotary frequencies are a computed (not stored) buffer: build them for real
            model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
            model = model.to(dtype)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = 10  # the reference's pad id for tokenizers without one
        return cls(model.to(device), tokenizer, device)

    @torch.no_grad()
    def upsample(self, prompt: str, max_new_tokens: int = 512) -> str:
        if len(prompt.split()) > MAX_WORDS:
            return prompt
        messages = [{"role": "user", "content": INSTRUCTION + prompt}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        ids = {k: v.to(self.device) for k, v in ids.items()}
        out = self.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return clean_text(self.tokenizer.decode(out[0][ids["input_ids"].shape[-1]:], skip_special_tokens=True))

    def to(self, device) -> "PromptUpsampler":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self
