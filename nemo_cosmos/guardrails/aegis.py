"""Aegis text safety check: LlamaGuard-7b with NVIDIA's Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0
PEFT adapter, through transformers + peft, bf16, greedy generation of at most 100 tokens on a
LlamaGuard prompt that lists the Aegis policy (categories O1-O8, O10-O12). "unsafe" anywhere in
the answer blocks the prompt; the second line names the category.

Unlike NVIDIA's code, an error inside the check is not treated as "safe": it stops the run.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch

from ..errors import MissingFileError, first_line
from ..presets import AEGIS_ADAPTER, AEGIS_BASE

_POLICY_FILE = os.path.join(os.path.dirname(__file__), "aegis_policy.json")


def policy():
    """[(code, name, instruction text)] of the Aegis policy, in prompt order."""
    with open(_POLICY_FILE) as f:
        return [tuple(c) for c in json.load(f)]


def moderation_prompt(user_prompt: str) -> str:
    categories = "".join(text for _, _, text in policy())
    indent = "        "  # the reference's prompt keeps its source indentation; the model saw it
    return (
        "[INST] Task: Check if there is unsafe content in 'User' messages in conversations according our "
        "safety policy with the below categories.\n\n"
        f"{indent}<BEGIN UNSAFE CONTENT CATEGORIES>\n{indent}{categories}\n{indent}<END UNSAFE CONTENT CATEGORIES>\n\n"
        f"{indent}<BEGIN CONVERSATION>\n\n{indent}User: {user_prompt}\n\n<END CONVERSATION>\n\n"
        f"{indent}Provide your safety assessment for User in the above conversation:\n"
        f"{indent}- First line must read 'safe' or 'unsafe'.\n"
        f"{indent}- If unsafe, a second line must include a comma-separated list of violated categories. [/INST]"
    )


class Aegis:
    def __init__(self, model, tokenizer, device):
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, torch.device(device)

    @classmethod
    def from_pretrained(cls, base: str = AEGIS_BASE, adapter: str = AEGIS_ADAPTER, device="cpu",
                        dtype=torch.bfloat16) -> "Aegis":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(base)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
            model = PeftModel.from_pretrained(model, adapter)
        except (OSError, ValueError) as e:
            raise MissingFileError(
                f"cannot load the Aegis guardrail ({base} + {adapter}): {first_line(e)}; "
                "fetch it with: python -m nemo_cosmos.recipes.download"
            ) from None
        return cls(model.to(device), tokenizer, device)

    def to(self, device) -> "Aegis":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @torch.no_grad()
    def blocked(self, prompt: str) -> Optional[str]:
        inputs = self.tokenizer([moderation_prompt(prompt)], add_special_tokens=False, return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=100, do_sample=False,
                                  pad_token_id=self.tokenizer.eos_token_id)
        answer = self.tokenizer.decode(out[0][inputs["input_ids"].shape[-1]:], skip_special_tokens=True)
        if "unsafe" not in answer.lower():
            return None
        return f"Aegis: {self._category(answer)}"

    @staticmethod
    def _category(answer: str) -> str:
        lines = answer.strip().split("\n")
        if len(lines) >= 2:
            code = lines[1].strip().split(",")[0].strip()
            for c, name, _ in policy():
                if c == code:
                    return f"{name} content"
        return "unsafe content"
