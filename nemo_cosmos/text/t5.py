"""T5 text encoder (google-t5/t5-11b for the published models) as Cosmos-1.0 uses it: prompts
padded/truncated to 512 tokens, the encoder run with the real attention mask, and the embeddings
past each prompt's length (EOS included in the length) set to zero. The DiT attends to all 512
positions; the zeros are what the model was trained with.

Attention runs eagerly, as in the transformers 4.48 NVIDIA pins: transformers 5's default (SDPA)
changes a few embedding elements after bf16 rounding and, through them, the video."""

from __future__ import annotations

import os
import pickle
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch

from ..errors import MissingFileError, first_line
from ..presets import T5_NAME

MAX_TOKENS = 512
ATTENTION = "eager"


class T5TextEncoder:
    def __init__(self, tokenizer, model, max_length: int = MAX_TOKENS):
        # however the model was built or loaded: transformers 5 gives T5 SDPA by default
        if getattr(model.config, "_attn_implementation", ATTENTION) != ATTENTION:
            model.set_attn_implementation(ATTENTION)
        self.tokenizer, self.model, self.max_length = tokenizer, model.eval(), max_length

    @classmethod
    def from_pretrained(
        cls, name_or_path: str = T5_NAME, device="cpu", dtype: torch.dtype = torch.float32, cache_dir: Optional[str] = None
    ) -> "T5TextEncoder":
        """A local folder, or a Hub name looked up in the Hugging Face cache (HF_HOME)."""
        from transformers import AutoTokenizer, T5EncoderModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, cache_dir=cache_dir)
            model = T5EncoderModel.from_pretrained(name_or_path, cache_dir=cache_dir)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:  # missing, or not weights
            where = name_or_path if os.path.isdir(name_or_path) else f"{name_or_path} (Hugging Face cache)"
            raise MissingFileError(
                f"cannot load the T5 text encoder from {where}: {first_line(e)}; "
                "download it with: python -m nemo_cosmos.recipes.download"
            ) from None
        # the reference runs T5 in float32; set the dtype after loading (transformers 5 loads "auto")
        return cls(tokenizer, model.to(device=device, dtype=dtype))

    def save_pretrained(self, folder: str) -> None:
        """The tokenizer and encoder in transformers' folder format (what from_pretrained reads)."""
        self.tokenizer.save_pretrained(folder)
        self.model.save_pretrained(folder)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "T5TextEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: List[str], device=None) -> torch.Tensor:
        """[len(prompts), 512, d_model] float32, zero past each prompt's tokens. With `device` (and
        the model elsewhere, e.g. on the CPU), its weights visit `device` one layer at a time: the
        GPU holds at most one of T5-11B's matrices (0.25 GiB) instead of all 18 GiB."""
        batch = self.tokenizer(
            prompts, truncation=True, padding="max_length", max_length=self.max_length, return_tensors="pt"
        )
        run_on = torch.device(device) if device is not None else self.device
        ids = batch["input_ids"].to(run_on)
        mask = batch["attention_mask"].to(run_on)
        with streamed(self.model, run_on):
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        lengths = mask.sum(dim=1)
        keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden * keep[..., None]


@contextmanager
def streamed(model: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """While in the block, every parameter-holding leaf module (a linear, a norm, an embedding) is
    copied to `device` just before it runs and the copy dropped right after; the model itself
    never moves, so nothing is copied back."""
    home = next(model.parameters()).device
    if home == device:
        yield
        return

    def swap_in(module, args):
        module._streamed = [(p, p.data) for p in module.parameters()]
        for p, data in module._streamed:
            p.data = data.to(device, non_blocking=True)

    def swap_out(module, args, output):
        for p, data in module._streamed:
            p.data = data
        del module._streamed

    units = [m for m in model.modules() if next(m.children(), None) is None and next(m.parameters(), None) is not None]
    hooks = [h for m in units for h in (m.register_forward_pre_hook(swap_in), m.register_forward_hook(swap_out))]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
