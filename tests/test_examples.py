"""The examples and the README's Python lines run as written (CPU, the built-in demo model, offline)."""

import os
import re
import subprocess
import sys

import imageio.v3 as iio
import pytest

from nemo_cosmos import demo
from nemo_cosmos.demo.world import analyse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not demo.available(), reason="demo weights not shipped in this checkout")


def _env(tmp_path):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_pipeline_api_example(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "pipeline_api.py")], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert analyse(iio.imread(tmp_path / "example_0.mp4")) == ("red", "circle", "up")
    assert analyse(iio.imread(tmp_path / "example_1.mp4")) == ("blue", "square", "left")
    assert (tmp_path / "example_1.json").exists()


def test_readme_python_lines(tmp_path):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(from nemo_cosmos import Text2WorldPipeline\n.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) == 3
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mp4s = [f for f in os.listdir(tmp_path) if f.endswith(".mp4")]
    assert len(mp4s) == 1 and analyse(iio.imread(tmp_path / mp4s[0])) == ("red", "circle", "up")


def test_7b_example_says_what_to_download_when_the_weights_are_missing(tmp_path):
    proc = subprocess.run(["bash", os.path.join(ROOT, "examples", "text2world_7b.sh")], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "python -m nemo_cosmos.recipes.download --model " \
                                          "Cosmos-1.0-Diffusion-7B-Text2World" in last


def test_module_entry_point_lists_and_runs_the_commands(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nemo_cosmos"], capture_output=True, text=True, env=_env(tmp_path))
    assert proc.returncode == 2 and "infer" in proc.stderr and "posttrain" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "nemo_cosmos", "download", "--help"], capture_output=True, text=True,
                          env=_env(tmp_path))
    assert proc.returncode == 0 and "--skip_upsampler" in proc.stdout


@pytest.mark.skipif(not demo.video2world_available(), reason="Video2World demo weights not shipped")
def test_video2world_example_and_readme_lines(tmp_path):
    import numpy as np

    from nemo_cosmos.demo.world import object_centroids

    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "video2world.py")], cwd=tmp_path,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    start, more = iio.imread(tmp_path / "start.mp4"), iio.imread(tmp_path / "continued.mp4")
    assert analyse(more[9:]) == ("red", "circle", "up")
    # the continuation starts where the first clip ends (its first frames are that clip's last ones,
    # through the tokenizer and the mp4 encoder), then keeps moving up
    a, b = object_centroids(start[-9:]), object_centroids(more[:9])
    assert np.abs(a - b).max() < 1.5, (a, b)
    assert object_centroids(more)[-1, 1] < b[-1, 1] - 3
    # the README's Video2World lines, on that clip
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"```python\n(from nemo_cosmos import Video2WorldPipeline\n.*?)```", readme, re.S).group(1)
    (tmp_path / "clip.mp4").write_bytes((tmp_path / "start.mp4").read_bytes())
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert analyse(iio.imread(tmp_path / "more.mp4")[9:]) == ("red", "circle", "up")
