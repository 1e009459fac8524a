"""How fast each command line answers --help (heavy imports come after parsing), against a bare
Python start: one run prints the seconds of each and the ratio.

    python benchmarks/cli_help.py [--repeats 5]
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = ["nemo_cosmos.recipes.infer", "nemo_cosmos.recipes.download", "nemo_cosmos.recipes.prepare_data",
            "nemo_cosmos.recipes.posttrain"]


def seconds(args, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    bare = seconds(["-c", "pass"], args.repeats)
    print(f"{'python -c pass':45s} {bare:6.3f} s")
    for module in COMMANDS:
        t = seconds(["-m", module, "--help"], args.repeats)
        print(f"{'python -m ' + module + ' --help':45s} {t:6.3f} s  ({t / bare:.1f}x a bare start)")


if __name__ == "__main__":
    main()
