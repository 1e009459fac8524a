"""Text2World from Python: the same steps as `python -m nemo_cosmos.recipes.infer`.

    python examples/pipeline_api.py                                         # the built-in demo model, CPU or GPU
    python examples/pipeline_api.py Cosmos-1.0-Diffusion-7B-Text2World "A robot arm stacks red cubes."

The model can be a name (weights from the Hugging Face cache, downloaded when missing), a NeMo
checkpoint or nemo_experiments tree, a model.pt, or a save_pretrained folder.
"""

import sys

from nemo_cosmos import Text2WorldPipeline

model = sys.argv[1] if len(sys.argv) > 1 else "cosmos-demo"
prompts = sys.argv[2:] or ["a red circle moving up", "a blue square moving left"]

pipe = Text2WorldPipeline.from_pretrained(model, offload_text_encoder=model != "cosmos-demo")
for i, video in enumerate(pipe(prompts, seed=1)):
    video.save(f"example_{i}.mp4")  # and example_{i}.json: settings, final prompt, timings
    print(video.prompt, video.timings)
