"""Text2World from Python: the same steps as `python -m nemo_cosmos.recipes.infer`, with your own paths.

    python examples/pipeline_api.py /path/to/Cosmos-1.0-Diffusion-7B-Text2World /path/to/Cosmos-1.0-Tokenizer-CV8x8x8
"""

import sys

import torch

from nemo_cosmos.checkpoint import load_original_model_pt, load_state_dict_checked
from nemo_cosmos.models import CosmosDiT, cosmos_7b_config
from nemo_cosmos.pipeline import Text2WorldPipeline
from nemo_cosmos.text import T5TextEncoder
from nemo_cosmos.tokenizer import CV8x8x8Tokenizer
from nemo_cosmos.utils.video import write_mp4

dit_dir, tokenizer_dir = sys.argv[1], sys.argv[2]
cfg = cosmos_7b_config()
with torch.device("meta"):
    dit = CosmosDiT(cfg)
load_state_dict_checked(dit, load_original_model_pt(f"{dit_dir}/model.pt", cfg), assign=True)
pipe = Text2WorldPipeline(
    dit.to("cuda", torch.bfloat16),
    CV8x8x8Tokenizer.from_pretrained(tokenizer_dir),
    T5TextEncoder.from_pretrained("google-t5/t5-11b"),
    device="cuda",
)
result = pipe("A robot arm in a bright warehouse picks up red cubes.", seed=1)
write_mp4("robot.mp4", result.frames, fps=24)
print(result.timings)
