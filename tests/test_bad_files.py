"""Corrupt, malformed and hostile files and flags, as a new user or an attacker would try them:
each is one line naming the culprit, exit status 2, nothing written, nothing executed."""

import json
import os
import shutil
import struct
import zipfile

import pytest
import torch
from helpers import infer_args, square_video, write_video

from nemo_cosmos.models import CosmosDiT, tiny_config
from nemo_cosmos.recipes import infer, posttrain, prepare_data

STEP9 = ("nemo_experiments", "tiny_finetune", "default", "2026-01-01_00-00-00", "checkpoints", "epoch=1-step=9")


def _tok_t5(assets):
    return ["--tokenizer_dir", str(assets / "tokenizer"), "--t5_path", str(assets / "t5")]


def model_pt(assets, tmp, content):
    folder = tmp / "dit"
    folder.mkdir()
    if isinstance(content, bytes):
        (folder / "model.pt").write_bytes(content)
    else:
        torch.save(content, folder / "model.pt")
    return ["--checkpoint_dir", str(folder), "--model", "Cosmos-1.0-Diffusion-7B-Text2World", *_tok_t5(assets)]


def int_safetensors(assets, tmp):
    from nemo_cosmos.checkpoint import save_dit_safetensors

    cfg = tiny_config()
    sd = {k: torch.zeros(v.shape, dtype=torch.int64) for k, v in CosmosDiT(cfg).state_dict().items()}
    save_dit_safetensors(sd, cfg, str(tmp / "int.safetensors"))
    return ["--nemo_checkpoint", str(tmp / "int.safetensors"), *_tok_t5(assets)]


def safetensors_file(assets, tmp, damage):
    data = bytearray((assets / "tiny" / "dit.safetensors").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "huge header":
        data[:8] = struct.pack("<Q", 2**62)
    elif damage == "empty":
        data = bytearray()
    path = tmp / "dit.safetensors"
    path.write_bytes(bytes(data))
    return ["--nemo_checkpoint", str(path), *_tok_t5(assets)]


def tokenizer_stats(assets, tmp, stats):
    folder = tmp / "tok"
    shutil.copytree(assets / "tokenizer", folder)
    os.remove(folder / "config.json")  # so the published layout (mean_std.pt + .jit) is read
    torch.save(stats, folder / "mean_std.pt")
    (folder / "config.json").write_text((assets / "tokenizer" / "config.json").read_text())
    return ["--nemo_checkpoint", str(assets / "tiny"), "--tokenizer_dir", str(folder), "--t5_path", str(assets / "t5")]


def jit_with_bad_persistent_id(assets, tmp):
    folder = tmp / "tok"
    shutil.copytree(assets / "tokenizer", folder)
    jit = next(f for f in os.listdir(folder) if f.endswith(".jit"))
    with zipfile.ZipFile(folder / jit) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    # a persistent id the format does not have
    entries[pkl] = b"\x80\x02(X\x07\x00\x00\x00storageq\x00X\x03\x00\x00\x00bad" + b"q\x01tQ."
    with zipfile.ZipFile(folder / jit, "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    return ["--nemo_checkpoint", str(assets / "tiny"), "--tokenizer_dir", str(folder), "--t5_path", str(assets / "t5")]


def t5_bin(assets, tmp):
    folder = tmp / "t5"
    shutil.copytree(assets / "t5", folder)
    for f in os.listdir(folder):
        if f.endswith(".safetensors"):
            os.remove(folder / f)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not a pickle at all")
    return ["--nemo_checkpoint", str(assets / "tiny"), "--tokenizer_dir", str(assets / "tokenizer"),
            "--t5_path", str(folder)]


def nemo_context(assets, tmp, text):
    step = tmp / "ckpt"
    shutil.copytree(assets.joinpath(*STEP9), step)
    (step / "context" / "nemo_cosmos.json").write_text(text)
    return ["--nemo_checkpoint", str(step), *_tok_t5(assets)]


def nemo_shard(assets, tmp, damage):
    step = tmp / "ckpt"
    shutil.copytree(assets.joinpath(*STEP9), step)
    shard = sorted(f for f in os.listdir(step / "weights") if f.endswith(".distcp"))[0]
    path = step / "weights" / shard
    size = path.stat().st_size
    path.write_bytes(b"" if damage == "empty" else os.urandom(size) if damage == "noise" else path.read_bytes()[:64])
    return ["--nemo_checkpoint", str(step), *_tok_t5(assets)]


INFER_CASES = {
    "zero-byte model.pt": (lambda a, t: model_pt(a, t, b""), r"model\.pt"),
    "model.pt of no tensors": (lambda a, t: model_pt(a, t, {"net.x": "hello"}), r"model\.pt"),
    "model.pt that is a list": (lambda a, t: model_pt(a, t, [1, 2, 3]), r"model\.pt"),
    "weights of integer tensors": (int_safetensors, r"int\.safetensors.*int64"),
    "truncated safetensors": (lambda a, t: safetensors_file(a, t, "truncated"), r"dit\.safetensors"),
    "safetensors with a huge header": (lambda a, t: safetensors_file(a, t, "huge header"), r"dit\.safetensors"),
    "empty safetensors": (lambda a, t: safetensors_file(a, t, "empty"), r"dit\.safetensors"),
    "mean_std.pt with one tensor": (lambda a, t: tokenizer_stats(a, t, (torch.zeros(16),)), r"mean_std\.pt"),
    "mean_std.pt of strings": (lambda a, t: tokenizer_stats(a, t, ("mean", "std")), r"mean_std\.pt"),
    "mean_std.pt of the wrong size": (lambda a, t: tokenizer_stats(a, t, (torch.zeros(3), torch.ones(3))),
                                      r"mean_std\.pt"),
    "TorchScript with an unknown persistent id": (jit_with_bad_persistent_id, r"\.jit"),
    "T5 weights that are no pickle": (t5_bin, r"pytorch_model\.bin|t5"),
    "context of an unknown dtype": (lambda a, t: nemo_context(a, t, json.dumps(
        {"config": {**json.loads((a.joinpath(*STEP9) / "context" / "nemo_cosmos.json").read_text())["config"],
                    "params_dtype": "float99"}})), r"nemo_cosmos\.json"),
    "context that is not JSON": (lambda a, t: nemo_context(a, t, "{not json"), r"nemo_cosmos\.json"),
    "zero-byte shard": (lambda a, t: nemo_shard(a, t, "empty"), r"\.distcp"),
    "truncated shard": (lambda a, t: nemo_shard(a, t, "truncated"), r"\.distcp"),
    "shard of noise": (lambda a, t: nemo_shard(a, t, "noise"), r"\.distcp"),
    "missing T5 folder": (lambda a, t: ["--nemo_checkpoint", str(a / "tiny"), "--t5_path", str(t / "no" / "t5")],
                          r"T5 text encoder not found: .*/no/t5"),
    "subject that is not UTF-8": (lambda a, t: ["--nemo_checkpoint", str(a / "tiny"), "--subject_name", "r\udcffbot"],
                                  r"--subject_name is not valid UTF-8"),
    "negative prompt that is not UTF-8": (lambda a, t: ["--nemo_checkpoint", str(a / "tiny"), "--negative_prompt",
                                                        "\udcff"], r"--negative_prompt is not valid UTF-8"),
}


def _one_error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


@pytest.mark.parametrize("case", list(INFER_CASES))
def test_infer_refuses_in_one_line(assets, tmp_path, capsys, monkeypatch, case):
    make, message = INFER_CASES[case]
    work = tmp_path / "in"
    work.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.chdir(out_dir)
    args = make(assets, work)
    rc = infer.main([*infer_args(assets, out_dir / "v.mp4", "--prompt", "a cube")[2:], *args])
    line = _one_error_line(capsys)
    assert rc == 2
    import re

    assert re.search(message, line), line
    assert not list(out_dir.iterdir())


def test_prepare_data_refuses_in_one_line(assets, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", square_video(12))
    common = ["--input_video_dir", str(videos), "--subject_name", "x", "--model", str(assets / "tiny"),
              "--device", "cpu", "--no_progress", "--height", "32", "--width", "48", "--num_frames", "9"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for extra, message in (
        (["--output_dir", str(a_file)], "is a file"),
        (["--output_dir", str(tmp_path / "o1"), "--height", "100000"], "--height 100000"),
        (["--output_dir", str(tmp_path / "o2"), "--num_chunks", "0"], "--num_chunks must be at least 1"),
        (["--output_dir", str(tmp_path / "o3"), "--num_chunks", "-1"], "--num_chunks must be at least 1"),
    ):
        argv = [a for a in common if a not in ("--height", "32")] if "--height" in extra else common
        assert prepare_data.main([*argv, *extra]) == 2, extra
        assert message in _one_error_line(capsys)
    assert sorted(os.listdir(tmp_path)) == ["file", "videos"]

    (videos / "a.txt").write_bytes(b"caption \xff\xfe not utf-8")
    assert prepare_data.main([*common, "--output_dir", str(tmp_path / "o4")]) == 2
    assert "a.txt" in _one_error_line(capsys)
    assert not (tmp_path / "o4").exists()


def test_posttrain_refuses_a_log_dir_that_is_a_file(assets, dataset, tmp_path, capsys):
    log_dir = tmp_path / "logs"
    log_dir.write_text("not a folder")
    rc = posttrain.main(["--recipe", "cosmos_tiny_text2world_finetune", f"data.path={dataset}",
                         f"log.log_dir={log_dir}", f"model.init_from={assets / 'tiny'}"])
    assert rc == 2 and "log.log_dir" in _one_error_line(capsys)
    assert log_dir.read_text() == "not a folder"


def test_a_contradictory_demo_prompt_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = infer.main(["--model", "cosmos-demo", "--prompt", "a red blue circle square moving up down",
                     "--no_progress", "--device", "cpu"])
    assert rc == 2 and "error:" in _one_error_line(capsys)
    assert not list(tmp_path.iterdir())
