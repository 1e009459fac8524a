"""What eager T5 attention costs: the T5-11B encoder on one 512-token prompt, eager (what NVIDIA's
pinned transformers 4.48 runs, and what nemo_cosmos.text.T5TextEncoder uses) against SDPA
(transformers 5's default), in float32 as the reference runs it.

    python benchmarks/t5_attention.py [--runs 5]   # T5-11B's shape on the GPU, random weights
    python benchmarks/t5_attention.py --tiny       # a 2-layer T5 on the CPU: checks the script runs

Random weights (the published ones cannot be downloaded here; time does not depend on the values),
one model switched between the two kernels. The prompt is 40 tokens padded to 512, as in a real
prompt; the reference encodes the prompt and the negative prompt in separate calls of batch 1.
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

warnings.filterwarnings("ignore")

from common import fill_random_, timed  # noqa: E402
from nemo_cosmos.text import MAX_TOKENS  # noqa: E402

# google-t5/t5-11b's config.json (encoder side)
T5_11B = dict(vocab_size=32128, d_model=1024, d_kv=128, d_ff=65536, num_layers=24, num_heads=128,
              feed_forward_proj="relu", layer_norm_epsilon=1e-6)
TINY = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
PROMPT_TOKENS = 40


def build(tiny: bool):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(**(TINY if tiny else T5_11B))
    if tiny:
        return T5EncoderModel(cfg).eval(), "cpu"
    with torch.device("meta"):
        model = T5EncoderModel(cfg)
    return fill_random_(model.to_empty(device="cuda")).eval(), "cuda"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer T5 on the CPU (a smoke run)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    model, device = build(args.tiny)
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(1, MAX_TOKENS, dtype=torch.long)
    ids[0, :PROMPT_TOKENS] = torch.randint(3, model.config.vocab_size, (PROMPT_TOKENS,), generator=g)
    mask = (torch.arange(MAX_TOKENS) < PROMPT_TOKENS).long()[None]
    ids, mask = ids.to(device), mask.to(device)

    results, outputs = {}, {}
    for impl in ("sdpa", "eager"):
        model.set_attn_implementation(impl)

        @torch.no_grad()
        def encode():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

        out, results[f"{impl}_s"], results[f"{impl}_peak_gib"] = timed(encode, args.runs)
        outputs[impl] = out[0, :PROMPT_TOKENS].double()
    eager, sdpa = outputs["eager"], outputs["sdpa"]
    results.update(
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        config="tiny" if args.tiny else "t5-11b encoder, float32",
        tokens=MAX_TOKENS,
        eager_over_sdpa=results["eager_s"] / results["sdpa_s"],
        eager_extra_s=results["eager_s"] - results["sdpa_s"],
        output_rel_diff=((eager - sdpa).norm() / eager.norm()).item(),
    )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
