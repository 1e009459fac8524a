"""State-dict converters between our DiT layout and the two published ones:

* ``"diffusers"``: diffusers' ``CosmosTransformer3DModel`` (``transformer_blocks.N.attn1.to_q`` ...)
* ``"original"``: NVIDIA's ``model.pt`` of Cosmos-1.0-Diffusion-*-Text2World
  (``net.blocks.blockN.blocks.{0,1,2}...``; 0 = self-attention, 1 = cross-attention, 2 = MLP)

Each of our tensors is the concatenation (along dim 0) of one or more source tensors, e.g. our
fused ``linear_qkv`` is ``[to_q; to_k; to_v]``; so one table per layout drives both directions.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping

import torch

from ..models.config import CosmosDiTConfig

LAYOUTS = ("diffusers", "original")

# Keys in an original model.pt that carry no weights our network needs: the RoPE position buffer
# (recomputed), the training-time log-variance head, and Transformer Engine's FP8 bookkeeping.
_ORIGINAL_IGNORED_PREFIXES = ("net.pos_embedder.", "logvar.")


def _global_map(layout: str, config: CosmosDiTConfig) -> Dict[str, List[str]]:
    if layout == "diffusers":
        m = {
            "patch_embed.weight": ["patch_embed.proj.weight"],
            "t_embedder.linear_1.weight": ["time_embed.t_embedder.linear_1.weight"],
            "t_embedder.linear_2.weight": ["time_embed.t_embedder.linear_2.weight"],
            "t_norm.weight": ["time_embed.norm.weight"],
            "final_layer.adaln.linear_1.weight": ["norm_out.linear_1.weight"],
            "final_layer.adaln.linear_2.weight": ["norm_out.linear_2.weight"],
            "final_layer.linear.weight": ["proj_out.weight"],
        }
        pos = "learnable_pos_embed."
    else:
        m = {
            "patch_embed.weight": ["net.x_embedder.proj.1.weight"],
            "t_embedder.linear_1.weight": ["net.t_embedder.1.linear_1.weight"],
            "t_embedder.linear_2.weight": ["net.t_embedder.1.linear_2.weight"],
            "t_norm.weight": ["net.affline_norm.weight"],
            "final_layer.adaln.linear_1.weight": ["net.final_layer.adaLN_modulation.1.weight"],
            "final_layer.adaln.linear_2.weight": ["net.final_layer.adaLN_modulation.2.weight"],
            "final_layer.linear.weight": ["net.final_layer.linear.weight"],
        }
        pos = "net.extra_pos_embedder."
    if config.extra_pos_emb:
        for axis in "thw":
            m[f"extra_pos_emb.pos_emb_{axis}"] = [f"{pos}pos_emb_{axis}"]
    return m


def _layer_map(layout: str, i: int) -> Dict[str, List[str]]:
    o = f"layers.{i}."
    if layout == "diffusers":
        p = f"transformer_blocks.{i}."
        adaln = {"adaln_self": "norm1", "adaln_cross": "norm2", "adaln_mlp": "norm3"}
        m = {
            f"{o}{ours}.linear_{j}.weight": [f"{p}{theirs}.linear_{j}.weight"]
            for ours, theirs in adaln.items()
            for j in (1, 2)
        }
        sa, ca = p + "attn1.", p + "attn2."
        m.update({
            o + "self_attention.linear_qkv.weight": [sa + "to_q.weight", sa + "to_k.weight", sa + "to_v.weight"],
            o + "self_attention.q_layernorm.weight": [sa + "norm_q.weight"],
            o + "self_attention.k_layernorm.weight": [sa + "norm_k.weight"],
            o + "self_attention.linear_proj.weight": [sa + "to_out.0.weight"],
            o + "cross_attention.linear_q.weight": [ca + "to_q.weight"],
            o + "cross_attention.linear_kv.weight": [ca + "to_k.weight", ca + "to_v.weight"],
            o + "cross_attention.q_layernorm.weight": [ca + "norm_q.weight"],
            o + "cross_attention.k_layernorm.weight": [ca + "norm_k.weight"],
            o + "cross_attention.linear_proj.weight": [ca + "to_out.0.weight"],
            o + "mlp.linear_fc1.weight": [p + "ff.net.0.proj.weight"],
            o + "mlp.linear_fc2.weight": [p + "ff.net.2.weight"],
        })
        return m
    p = f"net.blocks.block{i}.blocks."
    adaln = {"adaln_self": "0", "adaln_cross": "1", "adaln_mlp": "2"}
    m = {
        f"{o}{ours}.linear_{j}.weight": [f"{p}{sub}.adaLN_modulation.{j}.weight"]
        for ours, sub in adaln.items()
        for j in (1, 2)
    }
    sa, ca = p + "0.block.attn.", p + "1.block.attn."
    m.update({
        o + "self_attention.linear_qkv.weight": [sa + "to_q.0.weight", sa + "to_k.0.weight", sa + "to_v.0.weight"],
        o + "self_attention.q_layernorm.weight": [sa + "to_q.1.weight"],
        o + "self_attention.k_layernorm.weight": [sa + "to_k.1.weight"],
        o + "self_attention.linear_proj.weight": [sa + "to_out.0.weight"],
        o + "cross_attention.linear_q.weight": [ca + "to_q.0.weight"],
        o + "cross_attention.linear_kv.weight": [ca + "to_k.0.weight", ca + "to_v.0.weight"],
        o + "cross_attention.q_layernorm.weight": [ca + "to_q.1.weight"],
        o + "cross_attention.k_layernorm.weight": [ca + "to_k.1.weight"],
        o + "cross_attention.linear_proj.weight": [ca + "to_out.0.weight"],
        o + "mlp.linear_fc1.weight": [p + "2.block.layer1.weight"],
        o + "mlp.linear_fc2.weight": [p + "2.block.layer2.weight"],
    })
    return m


def key_map(layout: str, config: CosmosDiTConfig) -> Dict[str, List[str]]:
    """our key -> the source keys whose dim-0 concatenation it is."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {LAYOUTS}")
    m = _global_map(layout, config)
    for i in range(config.num_layers):
        m.update(_layer_map(layout, i))
    return m


def _ignored(layout: str, key: str) -> bool:
    return layout == "original" and (key.startswith(_ORIGINAL_IGNORED_PREFIXES) or "_extra_state" in key)


def to_ours(state_dict: Mapping[str, torch.Tensor], config: CosmosDiTConfig, layout: str) -> Dict[str, torch.Tensor]:
    """Convert a diffusers or original state dict into ours. Missing or unexpected keys raise a
    KeyError naming them: a silently partial load (as the reference's non-strict load allows) is
    never what a user wants."""
    mapping = key_map(layout, config)
    needed = {k for srcs in mapping.values() for k in srcs}
    missing = sorted(needed - state_dict.keys())
    if missing:
        raise KeyError(f"{layout} checkpoint lacks {len(missing)} tensor(s), first: {missing[0]!r}")
    unexpected = sorted(k for k in state_dict if k not in needed and not _ignored(layout, k))
    if unexpected:
        raise KeyError(
            f"{layout} checkpoint has {len(unexpected)} tensor(s) this {config.num_layers}-layer model "
            f"does not use, first: {unexpected[0]!r}"
        )
    return {
        ours: torch.cat([state_dict[s] for s in srcs], dim=0) if len(srcs) > 1 else state_dict[srcs[0]]
        for ours, srcs in mapping.items()
    }


def from_ours(state_dict: Mapping[str, torch.Tensor], config: CosmosDiTConfig, layout: str) -> Dict[str, torch.Tensor]:
    """Convert our state dict into the diffusers or original layout (fused tensors are split)."""
    out: Dict[str, torch.Tensor] = {}
    for ours, srcs in key_map(layout, config).items():
        if ours not in state_dict:
            raise KeyError(f"state dict lacks {ours!r}")
        for name, part in zip(srcs, state_dict[ours].chunk(len(srcs), dim=0)):
            out[name] = part.contiguous()
    return out


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], assign: bool = False) -> None:
    """load_state_dict(strict) with a one-line error naming the first tensor that does not fit.
    assign=True adopts the given tensors (for a model built on the meta device: no second copy)."""
    own = model.state_dict()
    missing = sorted(own.keys() - state_dict.keys())
    if missing:
        raise ValueError(f"checkpoint lacks tensor {missing[0]!r} ({len(missing)} missing)")
    extra = sorted(state_dict.keys() - own.keys())
    if extra:
        raise ValueError(f"checkpoint has tensor {extra[0]!r} that the model does not have ({len(extra)} extra)")
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(
                f"tensor {name!r} has shape {list(tensor.shape)} but the model config expects {list(own[name].shape)}"
            )
    model.load_state_dict(state_dict, strict=True, assign=assign)


def load_original_model_pt(path: str | os.PathLike, config: CosmosDiTConfig) -> Dict[str, torch.Tensor]:
    """Read NVIDIA's model.pt (safely: weights_only, memory-mapped) and convert it to our layout."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # files saved before torch's zip format cannot be memory-mapped
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, or a pickle asking for code
        raise ValueError(f"cannot read {path} as a weights-only torch checkpoint: {str(e).splitlines()[0]}") from None
    if not isinstance(state_dict, Mapping) or not any(k.startswith("net.") for k in state_dict):
        raise ValueError(f"{path} does not hold a Cosmos network state dict (no 'net.' keys)")
    return to_ours(state_dict, config, "original")
