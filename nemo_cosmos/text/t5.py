"""T5 text encoder (google-t5/t5-11b for the published models) as Cosmos-1.0 uses it: prompts
padded/truncated to 512 tokens, the encoder run with the real attention mask, and the embeddings
past each prompt's length (EOS included in the length) set to zero. The DiT attends to all 512
positions; the zeros are what the model was trained with."""

from __future__ import annotations

import os
from typing import List, Optional

import torch

T5_NAME = "google-t5/t5-11b"
MAX_TOKENS = 512


class T5TextEncoder:
    def __init__(self, tokenizer, model, max_length: int = MAX_TOKENS):
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
        except (OSError, ValueError) as e:
            where = name_or_path if os.path.isdir(name_or_path) else f"{name_or_path} (Hugging Face cache)"
            raise FileNotFoundError(
                f"cannot load the T5 text encoder from {where}: {str(e).splitlines()[0]}; "
                f"download it with: hf download {T5_NAME} --exclude '*.h5'"
            ) from None
        # the reference runs T5 in float32; set the dtype after loading (transformers 5 loads "auto")
        return cls(tokenizer, model.to(device=device, dtype=dtype))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "T5TextEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode(self, prompts: List[str]) -> torch.Tensor:
        """[len(prompts), 512, d_model] float32, zero past each prompt's tokens."""
        batch = self.tokenizer(
            prompts, truncation=True, padding="max_length", max_length=self.max_length, return_tensors="pt"
        )
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        lengths = mask.sum(dim=1)
        keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden * keep[..., None]
