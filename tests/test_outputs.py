"""Outputs under faults: a full disk while replacing a video, a kill between the renames of a video
and its sidecar, two runs writing the same output. A video and its sidecar always belong together."""

import json
import os
import resource
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
from helpers import infer_args

from nemo_cosmos.utils.io import recover

KILL_AFTER_THE_VIDEO = """
import os, sys
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith(".mp4"):
        os._exit(9)  # killed between the video's rename and the sidecar's
os.replace = replace
from nemo_cosmos.recipes.infer import main
sys.exit(main(sys.argv[1:]))
"""


def infer_process(assets, out, *extra, script=None, limit_bytes=None):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    cmd = [sys.executable, *(["-c", script] if script else ["-m", "nemo_cosmos.recipes.infer"]),
           *infer_args(assets, out, "--prompt", "a cube", "--num_steps", "2", *extra)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit if limit_bytes else None)


def run(assets, out, *extra, **kw):
    proc = infer_process(assets, out, *extra, **kw)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr


def seed_of(video):
    return json.loads(open(os.path.splitext(video)[0] + ".json").read())["settings"]["seed"]


def leftovers(folder):
    return sorted(f for f in os.listdir(folder) if f.startswith("."))


@pytest.fixture(scope="module")
def frames_by_seed(assets, tmp_path_factory):
    """What each seed's video looks like (written alone, nothing in the way)."""
    folder = tmp_path_factory.mktemp("ref")
    out = {}
    for seed in (3, 4):
        path = folder / f"{seed}.mp4"
        assert run(assets, path, "--seed", str(seed))[0] == 0
        out[seed] = iio.imread(path)
    assert not np.array_equal(out[3], out[4])
    return out


def test_a_full_disk_leaves_the_old_video_and_sidecar(assets, tmp_path, frames_by_seed):
    video = tmp_path / "v.mp4"
    assert run(assets, video, "--seed", "3")[0] == 0
    before = video.read_bytes(), (tmp_path / "v.json").read_bytes()
    # every file this run writes may hold 300 bytes at most: the video and the sidecar cannot be written
    rc, err = run(assets, video, "--seed", "4", limit_bytes=300)
    assert rc == 2 and err.strip().splitlines()[-1].startswith("error: cannot write"), err[-2000:]
    assert (video.read_bytes(), (tmp_path / "v.json").read_bytes()) == before
    assert leftovers(tmp_path) == []
    # and the next run, with room, replaces both
    assert run(assets, video, "--seed", "4")[0] == 0
    assert seed_of(video) == 4 and np.array_equal(iio.imread(video), frames_by_seed[4])


def test_a_kill_between_the_renames_is_finished_by_the_next_writer(assets, tmp_path, frames_by_seed):
    video = tmp_path / "v.mp4"
    assert run(assets, video, "--seed", "3")[0] == 0
    rc, _ = run(assets, video, "--seed", "4", script=KILL_AFTER_THE_VIDEO)
    assert rc == 9
    recover(str(video))  # what the next write to this output does first
    assert seed_of(video) == 4 and np.array_equal(iio.imread(video), frames_by_seed[4])
    assert leftovers(tmp_path) == []

    # killed again, then a whole new run: it ends with its own pair
    assert run(assets, video, "--seed", "3", script=KILL_AFTER_THE_VIDEO)[0] == 9
    assert run(assets, video, "--seed", "4")[0] == 0
    assert seed_of(video) == 4 and np.array_equal(iio.imread(video), frames_by_seed[4])
    assert leftovers(tmp_path) == []


def test_two_runs_on_one_output_leave_one_runs_pair(assets, tmp_path, frames_by_seed):
    video = tmp_path / "v.mp4"
    for _ in range(2):
        procs = [infer_process(assets, video, "--seed", str(seed)) for seed in (3, 4)]
        assert [p.wait(timeout=300) for p in procs] == [0, 0]
        seed = seed_of(video)
        assert np.array_equal(iio.imread(video), frames_by_seed[seed])
        assert leftovers(tmp_path) == []
