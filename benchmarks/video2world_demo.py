"""What Video2World post-training bought the demo: cosmos-demo-video2world against cosmos-demo
widened with a zero mask channel and not post-trained, on the same held-out clips and seeds
(each caption's clip continued from 1 and from 9 frames; detector accuracy on the generated frames,
the object's distance from the true clip's). Runs on a CPU (about 11 minutes at --seeds 2).

    python benchmarks/video2world_demo.py [--seeds 2] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

from nemo_cosmos import Text2WorldPipeline, Video2WorldPipeline
from nemo_cosmos.demo.train import evaluate_video2world
from nemo_cosmos.models.dit import with_condition_mask_channel
from nemo_cosmos.presets import DEMO_MODEL, DEMO_V2W_MODEL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    args = ap.parse_args()
    t2w = Text2WorldPipeline.from_pretrained(DEMO_MODEL, device=args.device)
    widened = Video2WorldPipeline(with_condition_mask_channel(t2w.dit), t2w.tokenizer, t2w.text_encoder,
                                  device=args.device, check_prompt=t2w.check_prompt, defaults=t2w.defaults,
                                  name=f"{DEMO_MODEL} widened")
    trained = Video2WorldPipeline.from_pretrained(DEMO_V2W_MODEL, device=args.device)
    report = {}
    for name, pipe in ((widened.name, widened), (DEMO_V2W_MODEL, trained)):
        t0 = time.perf_counter()
        report[name] = {f"{n}_input_frames": evaluate_video2world(pipe, n, seeds=range(args.seeds)) for n in (1, 9)}
        report[name]["seconds"] = time.perf_counter() - t0
        print(name, json.dumps(report[name]), flush=True)
    for n in (1, 9):
        key = f"{n}_input_frames"
        a, b = report[widened.name][key], report[DEMO_V2W_MODEL][key]
        print(f"{n} input frame(s): all three right {a['all']:.1%} -> {b['all']:.1%}; centroid error "
              f"{a['mean_centroid_error_px']:.2f} -> {b['mean_centroid_error_px']:.2f} px "
              f"({a['mean_centroid_error_px'] / b['mean_centroid_error_px']:.2f}x smaller)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
