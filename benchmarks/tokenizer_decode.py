"""Decoding a whole 121 x 704 x 1280 video (latent 16 x 88 x 160) with the CV8x8x8 tokenizer:
ours vs diffusers' AutoencoderKLCosmos, time and GPU memory above the weights.

    python benchmarks/tokenizer_decode.py

Random weights at the published sizes, bf16 (time and memory do not depend on the values; the
tests check that both decoders give the same frames from the same weights). Median of 3 runs.
"""

from __future__ import annotations

import torch

from common import fill_random_, timed


def measure(decode, z) -> dict:
    with torch.no_grad():
        _, seconds, peak_gib = timed(lambda: decode(z), 3)
    return {"seconds": seconds, "peak_gib": peak_gib}


def main() -> None:
    from diffusers import AutoencoderKLCosmos

    from nemo_cosmos.tokenizer import CV8x8x8Tokenizer, TokenizerConfig

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    z = torch.randn(1, 16, 16, 88, 160, device="cuda", dtype=torch.bfloat16)
    ours = fill_random_(CV8x8x8Tokenizer(TokenizerConfig()).to("cuda", torch.bfloat16).eval())
    res = {"ours": measure(ours.decode_raw, z)}
    print("ours", res["ours"], flush=True)
    del ours
    torch.cuda.empty_cache()
    theirs = fill_random_(AutoencoderKLCosmos().to("cuda", torch.bfloat16).eval())
    try:
        res["diffusers"] = measure(lambda x: theirs.decode(x).sample, z)
    except torch.OutOfMemoryError:
        res["diffusers"] = {"seconds": float("nan"), "peak_gib": float("inf")}
    print("diffusers", res["diffusers"], flush=True)
    print(f"peak memory: ours {res['ours']['peak_gib']:.2f} GiB, diffusers {res['diffusers']['peak_gib']:.2f} GiB "
          f"({res['diffusers']['peak_gib'] / res['ours']['peak_gib']:.2f}x less); time: ours {res['ours']['seconds']:.3f} s, "
          f"diffusers {res['diffusers']['seconds']:.3f} s ({res['diffusers']['seconds'] / res['ours']['seconds']:.2f}x)")


if __name__ == "__main__":
    main()
