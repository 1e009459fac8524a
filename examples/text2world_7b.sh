#!/usr/bin/env bash
# Generate one 121-frame 1280x704 video with Cosmos-1.0-Diffusion-7B-Text2World on one GPU.
# Weights come from the Hugging Face cache (HF_HOME); set HF_TOKEN after accepting the models' license.
# Add --offload_text_encoder --offload_tokenizer to lower peak GPU memory from 40.8 to 22.6 GiB (docs/performance.md).
set -euo pipefail
python -m nemo_cosmos.recipes.infer \
    --model Cosmos-1.0-Diffusion-7B-Text2World \
    --prompt "${PROMPT:-A robot arm in a bright warehouse picks up red cubes and stacks them on a pallet.}" \
    --guidance 7 --seed 1 \
    --video_save_path "${OUT:-Cosmos-1.0-Diffusion-7B-Text2World.mp4}"
