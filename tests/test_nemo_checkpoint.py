"""NeMo distributed checkpoints: NeMo's tensor names and layouts, written the way NeMo/Megatron write
them (per-layer tensors on a stacked axis, tensor-parallel shards), read back exactly; our own saves
round-trip under other process counts; damaged or mismatched checkpoints give clear errors."""

import dataclasses
import os
import pickle

import pytest
import torch
import torch.distributed as dist
from distributed import run_ranks
from helpers import PUBLISHED_SIZES, published_state_dict, randomize_

from nemo_cosmos.checkpoint import NEMO, inspect_checkpoint, load_dit
from nemo_cosmos.checkpoint import nemo_dist as nd
from nemo_cosmos.checkpoint.loading import resolve_config
from nemo_cosmos.models import CosmosDiT
from nemo_cosmos.models.config import tiny_config

COLUMN_PARALLEL = ("linear_qkv.", "linear_q.", "linear_kv.", "linear_fc1.")
ROW_PARALLEL = ("linear_proj.", "linear_fc2.")


def tiny_state(cfg=None, seed=0):
    torch.manual_seed(seed)
    return randomize_(CosmosDiT(cfg or tiny_config())).state_dict()


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def write_like_nemo(rank, world, tensors, out_dir):
    """What a NeMo run with tensor-parallel size `world` writes: each layer's tensor as a slice of the
    stacked global tensor, column-/row-parallel weights split across ranks, TE extra-state objects."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    sharded = {}
    for key, t in tensors.items():
        if not key.startswith(nd.LAYERS):
            sharded[key] = ShardedTensor.from_rank_offsets(key, t.clone(), replica_id=rank)
            continue
        n = t.shape[0]
        axis = 0 if any(c in key for c in COLUMN_PARALLEL) else 1 if any(c in key for c in ROW_PARALLEL) else None
        for i in range(n):
            if axis is None:
                sharded[f"{key}/{i}"] = ShardedTensor.from_rank_offsets(
                    key, t[i].clone(), (0, i, n), replica_id=rank, prepend_axis_num=1)
                continue
            local = t[i].chunk(world, axis)[rank].clone()
            sharded[f"{key}/{i}"] = ShardedTensor.from_rank_offsets(
                key, local, (0, i, n), (axis + 1, rank, world), replica_id=0, prepend_axis_num=1)
            extra = key[: -len("weight")] + "_extra_state"
            sharded[f"{extra}/{i}"] = ShardedObject(extra, None, (n,), (i,), replica_id=rank)
    if rank == 0:
        os.makedirs(out_dir)
    dist.barrier()
    with nd._cpu_torch_cuda():
        dist_checkpointing.save(sharded, out_dir)


def test_fused_projections_match_megatron_attention():
    """Our qkv / kv tensors, converted, give Megatron-Core's own attention modules the same q, k, v."""
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import (CrossAttention, CrossAttentionSubmodules, SelfAttention,
                                                     SelfAttentionSubmodules)
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.identity_op import IdentityOp

    # Megatron-Core's CrossAttention projects context of the model's own width
    cfg = tiny_config(crossattn_dim=64, use_cpu_initialization=True)
    model = randomize_(CosmosDiT(cfg))
    nemo = nd.to_nemo(model.state_dict(), cfg)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        parallel_state.initialize_model_parallel()
        self_attn = SelfAttention(cfg, SelfAttentionSubmodules(ColumnParallelLinear, IdentityOp, RowParallelLinear),
                                  layer_number=1, attn_mask_type=AttnMaskType.no_mask)
        cross_attn = CrossAttention(
            cfg, CrossAttentionSubmodules(ColumnParallelLinear, ColumnParallelLinear, IdentityOp, RowParallelLinear),
            layer_number=1, attn_mask_type=AttnMaskType.no_mask)
        x, ctx = torch.randn(7, 1, cfg.hidden_size), torch.randn(5, 1, cfg.crossattn_dim)
        for i, layer in enumerate(model.layers):
            with torch.no_grad():
                self_attn.linear_qkv.weight.copy_(nemo[nd.LAYERS + "full_self_attention.linear_qkv.weight"][i])
                cross_attn.linear_q.weight.copy_(nemo[nd.LAYERS + "cross_attention.linear_q.weight"][i])
                cross_attn.linear_kv.weight.copy_(nemo[nd.LAYERS + "cross_attention.linear_kv.weight"][i])
                theirs = self_attn.get_query_key_value_tensors(x)[:3]
                ours = layer.self_attention.linear_qkv(x).view(7, 1, 3, cfg.num_attention_heads, -1).unbind(2)
                for a, b in zip(ours, theirs):
                    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
                _, k, v = cross_attn.get_query_key_value_tensors(x, ctx)[:3]
                ok, ov = layer.cross_attention.linear_kv(ctx).view(5, 1, 2, cfg.num_attention_heads, -1).unbind(2)
                torch.testing.assert_close(ok, k, rtol=0, atol=1e-6)
                torch.testing.assert_close(ov, v, rtol=0, atol=1e-6)
    finally:
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()


def test_fused_adaln_computes_the_same():
    cfg = tiny_config()
    split = randomize_(CosmosDiT(cfg)).eval()
    fused_cfg = dataclasses.replace(cfg, adaln_fused=True)
    fused = CosmosDiT(fused_cfg).eval()
    fused.load_state_dict(nd.from_nemo(nd.to_nemo(split.state_dict(), cfg), fused_cfg))
    x = torch.randn(1, 16, 3, 8, 8)
    args = (x, torch.tensor([0.3]), torch.randn(1, 6, cfg.crossattn_dim))
    kw = dict(fps=torch.tensor([24.0]), padding_mask=torch.zeros(1, 1, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(fused(*args, **kw), split(*args, **kw), rtol=1e-5, atol=1e-6)
    # and back to the reference's three projections, exactly
    assert_same(nd.from_nemo(nd.to_nemo(fused.state_dict(), fused_cfg), cfg), split.state_dict())


def test_tensor_parallel_nemo_checkpoint_loads_exactly(tmp_path):
    cfg = tiny_config()
    sd = tiny_state(cfg)
    run_ranks(write_like_nemo, 2, nd.to_nemo(sd, cfg), str(tmp_path / "ckpt" / "weights"))
    assert os.path.isfile(tmp_path / "ckpt" / "weights" / "metadata.json")
    for path in (tmp_path / "ckpt", tmp_path / "ckpt" / "weights"):  # the weights folder or its parent
        loaded, loaded_cfg = nd.load_nemo_checkpoint(str(path), cfg)
        assert not loaded_cfg.adaln_fused
        assert_same(loaded, sd)
    model = CosmosDiT(cfg)
    model.load_state_dict(loaded, strict=True)


@pytest.mark.parametrize("video2world", [False, True], ids=["text2world", "video2world"])
def test_checkpoint_loads_as_its_family(tmp_path, video2world):
    """Our save records its config: load_dit builds the family it holds, whatever the caller assumes.
    NeMo's own layout (layer slices, Transformer Engine extra state, no config) loads with the
    caller's config, and the other family's config is refused. Both compute the source's forward."""
    cfg = tiny_config(condition_mask_channel=video2world)
    other = tiny_config(condition_mask_channel=not video2world)
    source = randomize_(CosmosDiT(cfg)).eval()
    sd = source.state_dict()
    ours = str(tmp_path / "ours")
    nd.save_nemo_checkpoint(sd, cfg, ours)
    theirs = tmp_path / "nemo" / "weights"
    with nd._process_group(), nd._writer_results_queue():
        write_like_nemo(0, 1, nd.to_nemo(sd, cfg), str(theirs))
    for path in (ours, str(theirs)):
        embed = nd.nemo_tensor_shapes(path)[nd.PREFIX + "x_embedder.proj.1.weight"]
        assert embed == (cfg.hidden_size, 72 if video2world else 68)

    loaded = {"ours": load_dit(ours), "ours, other config given": load_dit(ours, other),
              "NeMo's": load_dit(str(theirs.parent), cfg)}
    x, t, text = torch.randn(2, 16, 3, 4, 6), torch.tensor([0.2, 1.5]), torch.randn(2, 5, cfg.crossattn_dim)
    mask = None
    if video2world:
        mask = torch.zeros(2, 1, 3, 4, 6)
        mask[:, :, :2] = 1
    with torch.no_grad():
        want = source(x, t, text, fps=24, condition_mask=mask)
        for what, dit in loaded.items():
            assert dit.config.condition_mask_channel is video2world, what
            assert_same(dit.state_dict(), sd)
            assert torch.equal(dit.eval()(x, t, text, fps=24, condition_mask=mask), want), what
        if video2world:
            assert not torch.allclose(loaded["NeMo's"](x, t, text, fps=24), want, atol=1e-3)

    have, expect = (72, 68) if video2world else (68, 72)
    refused = rf"x_embedder.proj.1.weight' has shape \[64, {have}\] .* expects \[64, {expect}\]"
    with pytest.raises(ValueError, match=refused):
        load_dit(str(theirs.parent), other)


def write_index_only(tensors, weights_dir):
    """A torch_dist folder's metadata.json and the index (``.metadata``) that DCP's own planner makes
    for `tensors` (meta tensors may stand in: only their shapes go in), without shard files."""
    import json

    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    planner = DefaultSavePlanner()
    planner.set_up_planner(dict(tensors), is_coordinator=True)
    _, metadata = planner.create_global_plan([planner.create_local_plan()])
    metadata.storage_data = {}  # where each item lies in the shards: no shards here
    os.makedirs(weights_dir)
    with open(os.path.join(weights_dir, ".metadata"), "wb") as f:
        pickle.dump(metadata, f)
    with open(os.path.join(weights_dir, "metadata.json"), "w") as f:
        json.dump({"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
                   "common_backend_version": 1}, f)


@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_published_nemo_checkpoint_is_matched_to_its_model_by_shapes(tmp_path, name):
    """NeMo's checkpoints of the published models record no config of ours: the shapes in the index
    pick the model, Video2World (its wider patch embedding) apart from its Text2World twin."""
    layers, width, patch_in = PUBLISHED_SIZES[name]
    sd, cfg = published_state_dict(name)
    write_index_only(nd.to_nemo(sd, cfg), str(tmp_path / "nemo"))
    shapes = nd.nemo_tensor_shapes(str(tmp_path / "nemo"))
    assert shapes[nd.PREFIX + "x_embedder.proj.1.weight"] == (width, patch_in)
    assert shapes[nd.LAYERS + "full_self_attention.linear_proj.weight"] == (layers, width, width)

    info = inspect_checkpoint(str(tmp_path))  # a Hub snapshot, the checkpoint in its nemo/
    assert (info.kind, info.path, info.config, info.model) == (NEMO, str(tmp_path / "nemo"), None, name)
    found = resolve_config(info, None)
    assert (found.num_layers, found.hidden_size) == (layers, width)
    assert found.condition_mask_channel is name.endswith("Video2World")


def test_nemo_checkpoint_of_no_published_size_needs_a_model_name(tmp_path):
    sd, cfg = published_state_dict("Cosmos-1.0-Diffusion-14B-Video2World", in_channels=17)
    write_index_only(nd.to_nemo(sd, cfg), str(tmp_path / "weights"))
    assert nd.nemo_tensor_shapes(str(tmp_path))[nd.PREFIX + "x_embedder.proj.1.weight"] == (5120, 76)
    info = inspect_checkpoint(str(tmp_path))
    assert info.model is None
    with pytest.raises(ValueError, match="does not say which model it holds"):
        resolve_config(info, None)


def test_nemo_trained_adaln_is_loaded_fused(tmp_path):
    cfg = tiny_config()
    fused_cfg = dataclasses.replace(cfg, adaln_fused=True)
    sd = tiny_state(fused_cfg)  # a dense fused AdaLN, as after training in NeMo
    nd.save_nemo_checkpoint(sd, fused_cfg, str(tmp_path / "ckpt"))
    loaded, loaded_cfg = nd.load_nemo_checkpoint(str(tmp_path / "ckpt"), cfg)
    assert loaded_cfg.adaln_fused
    assert_same(loaded, sd)
    with pytest.raises(ValueError, match="not block-diagonal"):
        nd.from_nemo(nd.to_nemo(sd, fused_cfg), cfg)


def _save_on_ranks(rank, world, sd, cfg, path):
    nd.save_nemo_checkpoint(sd, cfg, path)


def _load_on_ranks(rank, world, sd, cfg, path):
    loaded, _ = nd.load_nemo_checkpoint(path, cfg)
    assert_same(loaded, sd)


def test_save_round_trips_across_process_counts(tmp_path):
    cfg = tiny_config()
    sd = tiny_state(cfg)
    two = str(tmp_path / "saved_by_2")
    run_ranks(_save_on_ranks, 2, sd, cfg, two)
    assert sorted(os.listdir(tmp_path)) == ["saved_by_2"]  # no temporary folder left behind
    assert_same(nd.load_nemo_checkpoint(two, cfg)[0], sd)
    assert nd.read_saved_context(two)["config"]["num_layers"] == cfg.num_layers

    one = str(tmp_path / "saved_by_1")
    nd.save_nemo_checkpoint(sd, cfg, one)
    run_ranks(_load_on_ranks, 2, sd, cfg, one)
    with pytest.raises(FileExistsError):
        nd.save_nemo_checkpoint(sd, cfg, one)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = tiny_config()
    path = tmp_path_factory.mktemp("nemo") / "ckpt"
    nd.save_nemo_checkpoint(tiny_state(cfg), cfg, str(path))
    return path, cfg


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_shard_is_named(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "c")
    shard = sorted(f for f in os.listdir(path / "weights") if f.endswith(".distcp"))[0]
    os.remove(path / "weights" / shard)
    with pytest.raises(FileNotFoundError, match=f"checkpoint shard missing: .*{shard}"):
        nd.load_nemo_checkpoint(str(path), saved[1])


def test_truncated_shard_fails_cleanly(saved, tmp_path):
    path = _copy(saved[0], tmp_path / "c")
    for f in os.listdir(path / "weights"):
        if f.endswith(".distcp"):
            data = (path / "weights" / f).read_bytes()
            (path / "weights" / f).write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"checkpoint shard .*\.distcp is truncated"):
        nd.load_nemo_checkpoint(str(path), saved[1])


def test_config_that_does_not_match_names_the_tensor(saved):
    with pytest.raises(ValueError, match=r"adaLN_modulation.1.weight' has shape \[2, 48, 64\] .* expects \[3, 48, 64\]"):
        nd.load_nemo_checkpoint(str(saved[0]), tiny_config(num_layers=3))
    with pytest.raises(ValueError, match="x_embedder.proj.1.weight"):
        nd.load_nemo_checkpoint(str(saved[0]), tiny_config(hidden_size=128, ffn_hidden_size=256, kv_channels=32))
    with pytest.raises(ValueError, match="has tensor .*extra_pos_embedder.* this model does not have"):
        nd.load_nemo_checkpoint(str(saved[0]), tiny_config(extra_pos_emb=False))
    with pytest.raises(FileNotFoundError, match="no NeMo distributed checkpoint"):
        nd.load_nemo_checkpoint(str(saved[0] / "context"), saved[1])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_index_that_would_run_code_is_refused(saved, tmp_path, monkeypatch):
    path = _copy(saved[0], tmp_path / "c")
    (path / "weights" / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="refusing to load"):
        nd.load_nemo_checkpoint(str(path), saved[1])
    assert not (tmp_path / "pwned").exists()


def test_common_pickle_never_runs_even_when_the_environment_allows_pickles(saved, tmp_path, monkeypatch):
    # many users set this for older projects; our weights-only promise must not depend on it
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = _copy(saved[0], tmp_path / "c")
    torch.save({"payload": _RunsCode()}, path / "weights" / "common.pt")
    monkeypatch.chdir(tmp_path)
    loaded, _ = nd.load_nemo_checkpoint(str(path), saved[1])
    assert not (tmp_path / "pwned").exists()
    assert_same(loaded, nd.load_nemo_checkpoint(str(saved[0]), saved[1])[0])
    nd.read_nemo_extras(str(path))
    assert not (tmp_path / "pwned").exists()


SAVING_SCRIPT = """
import os, sys
from nemo_cosmos.checkpoint.nemo_dist import save_nemo_checkpoint
from nemo_cosmos.models import CosmosDiT, tiny_config
cfg = tiny_config(); sd = CosmosDiT(cfg).state_dict()
for i in range(int(sys.argv[2])):
    save_nemo_checkpoint(sd, cfg, os.path.join(sys.argv[1], f"c{i}"))
    kids = [c for t in os.listdir("/proc/self/task") for c in open(f"/proc/self/task/{t}/children").read().split()]
    print("saved", i, "children", len(kids), flush=True)
"""


def _session_members(sid):
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # session id; zombies are gone already
            members.append(int(pid))
    return members


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_saving_leaves_no_process_behind(tmp_path):
    """A plain script (no main guard) saves twice; no helper process outlives a save, nor a SIGKILL."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "save.py"
    script.write_text(SAVING_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), "2"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [x for x in done.stdout.splitlines() if x.startswith("saved")] == ["saved 0 children 0", "saved 1 children 0"]

    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "b"), "1000"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        while line and not line.startswith("saved 0"):
            line = proc.stdout.readline()
        assert line.startswith("saved 0")
        time.sleep(0.3)  # most likely inside the next save
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 30
    while _session_members(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    survivors = {pid: open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:200] for pid in _session_members(proc.pid)}
    assert survivors == {}
