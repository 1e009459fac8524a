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
from ..errors import BadInputError, MissingFileError, first_line

LAYOUTS = ("diffusers", "original")

# Keys in an original model.pt that carry no weights our network needs: the RoPE position buffer
# (recomputed), the training-time log-variance head, and Transformer Engine's FP8 bookkeeping.
_ORIGINAL_IGNORED_PREFIXES = ("net.pos_embedder.", "logvar.")


# our key -> (diffusers source keys, original source keys); several sources are concatenated.
_GLOBAL_KEYS = {
    "patch_embed.weight": (["patch_embed.proj.weight"], ["net.x_embedder.proj.1.weight"]),
    "t_embedder.linear_1.weight": (["time_embed.t_embedder.linear_1.weight"], ["net.t_embedder.1.linear_1.weight"]),
    "t_embedder.linear_2.weight": (["time_embed.t_embedder.linear_2.weight"], ["net.t_embedder.1.linear_2.weight"]),
    "t_norm.weight": (["time_embed.norm.weight"], ["net.affline_norm.weight"]),
    "final_layer.adaln.linear_1.weight": (["norm_out.linear_1.weight"], ["net.final_layer.adaLN_modulation.1.weight"]),
    "final_layer.adaln.linear_2.weight": (["norm_out.linear_2.weight"], ["net.final_layer.adaLN_modulation.2.weight"]),
    "final_layer.linear.weight": (["proj_out.weight"], ["net.final_layer.linear.weight"]),
}
_POS_EMB_KEYS = {
    f"extra_pos_emb.pos_emb_{axis}": ([f"learnable_pos_embed.pos_emb_{axis}"], [f"net.extra_pos_embedder.pos_emb_{axis}"])
    for axis in "thw"
}
# Per layer, relative to the prefixes below. In the original, sub-block 0 is self-attention,
# 1 cross-attention, 2 the MLP; to_q.1 / to_k.1 are the q/k RMSNorms.
_LAYER_PREFIXES = ("transformer_blocks.{i}.", "net.blocks.block{i}.blocks.")
_LAYER_KEYS = {
    "adaln_self.linear_1.weight": (["norm1.linear_1.weight"], ["0.adaLN_modulation.1.weight"]),
    "adaln_self.linear_2.weight": (["norm1.linear_2.weight"], ["0.adaLN_modulation.2.weight"]),
    "adaln_cross.linear_1.weight": (["norm2.linear_1.weight"], ["1.adaLN_modulation.1.weight"]),
    "adaln_cross.linear_2.weight": (["norm2.linear_2.weight"], ["1.adaLN_modulation.2.weight"]),
    "adaln_mlp.linear_1.weight": (["norm3.linear_1.weight"], ["2.adaLN_modulation.1.weight"]),
    "adaln_mlp.linear_2.weight": (["norm3.linear_2.weight"], ["2.adaLN_modulation.2.weight"]),
    "self_attention.linear_qkv.weight": (
        ["attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight"],
        ["0.block.attn.to_q.0.weight", "0.block.attn.to_k.0.weight", "0.block.attn.to_v.0.weight"],
    ),
    "self_attention.q_layernorm.weight": (["attn1.norm_q.weight"], ["0.block.attn.to_q.1.weight"]),
    "self_attention.k_layernorm.weight": (["attn1.norm_k.weight"], ["0.block.attn.to_k.1.weight"]),
    "self_attention.linear_proj.weight": (["attn1.to_out.0.weight"], ["0.block.attn.to_out.0.weight"]),
    "cross_attention.linear_q.weight": (["attn2.to_q.weight"], ["1.block.attn.to_q.0.weight"]),
    "cross_attention.linear_kv.weight": (
        ["attn2.to_k.weight", "attn2.to_v.weight"],
        ["1.block.attn.to_k.0.weight", "1.block.attn.to_v.0.weight"],
    ),
    "cross_attention.q_layernorm.weight": (["attn2.norm_q.weight"], ["1.block.attn.to_q.1.weight"]),
    "cross_attention.k_layernorm.weight": (["attn2.norm_k.weight"], ["1.block.attn.to_k.1.weight"]),
    "cross_attention.linear_proj.weight": (["attn2.to_out.0.weight"], ["1.block.attn.to_out.0.weight"]),
    "mlp.linear_fc1.weight": (["ff.net.0.proj.weight"], ["2.block.layer1.weight"]),
    "mlp.linear_fc2.weight": (["ff.net.2.weight"], ["2.block.layer2.weight"]),
}


def key_map(layout: str, config: CosmosDiTConfig) -> Dict[str, List[str]]:
    """our key -> the source keys whose dim-0 concatenation it is."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {LAYOUTS}")
    col = LAYOUTS.index(layout)
    m = {ours: srcs[col] for ours, srcs in _GLOBAL_KEYS.items()}
    if config.extra_pos_emb:
        m.update({ours: srcs[col] for ours, srcs in _POS_EMB_KEYS.items()})
    for i in range(config.num_layers):
        prefix = _LAYER_PREFIXES[col].format(i=i)
        m.update({f"layers.{i}.{ours}": [prefix + s for s in srcs[col]] for ours, srcs in _LAYER_KEYS.items()})
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
        raise BadInputError(f"{layout} checkpoint lacks {len(missing)} tensor(s), first: {missing[0]!r}")
    unexpected = sorted(k for k in state_dict if k not in needed and not _ignored(layout, k))
    if unexpected:
        raise BadInputError(
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
        raise BadInputError(f"checkpoint lacks tensor {missing[0]!r} ({len(missing)} missing)")
    extra = sorted(state_dict.keys() - own.keys())
    if extra:
        raise BadInputError(f"checkpoint has tensor {extra[0]!r} that the model does not have ({len(extra)} extra)")
    for name, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise BadInputError(
                f"tensor {name!r} has shape {list(tensor.shape)} but the model config expects {list(own[name].shape)}"
            )
    model.load_state_dict(state_dict, strict=True, assign=assign)


def read_model_pt(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """NVIDIA's model.pt as a raw state dict, read safely (weights_only) and memory-mapped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint file not found: {path}")
    try:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            # files saved before torch's zip format cannot be memory-mapped
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, or a pickle asking for code
        raise BadInputError(f"cannot read {path} as a weights-only torch checkpoint: {first_line(e)}") from None
    if not isinstance(state_dict, Mapping) or not any(isinstance(k, str) and k.startswith("net.") for k in state_dict):
        raise BadInputError(f"{path} does not hold a Cosmos network state dict (no 'net.' keys)")
    return state_dict


def load_original_model_pt(path: str | os.PathLike, config: CosmosDiTConfig) -> Dict[str, torch.Tensor]:
    """Read NVIDIA's model.pt (read_model_pt) and convert it to our layout."""
    state_dict = read_model_pt(path)
    check_tensors({k: v for k, v in state_dict.items() if not _ignored("original", k)}, os.fspath(path))
    return to_ours(state_dict, config, "original")


def load_ours_safetensors(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """Our own state dict from a safetensors file (no pickle involved), as float32."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint file not found: {path}")
    try:
        state_dict = load_file(path)
    except Exception as e:  # a truncated or oversized header, not a safetensors file
        raise BadInputError(f"cannot read {path} as safetensors: {first_line(e)}") from None
    check_tensors(state_dict, path)
    # copies, not views of the file's buffer: its tensors sit at any byte offset, and CPU matmul
    # kernels round differently on misaligned data, so the same weights would give other results
    return {k: v.to(torch.float32, copy=True) for k, v in state_dict.items()}


def check_tensors(state_dict: Mapping, where: str) -> None:
    """BadInputError unless every value is a floating-point tensor (integer weights, or a pickled
    number where a tensor belongs, would otherwise surface later as a confusing shape or dtype error)."""
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise BadInputError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        if not v.is_floating_point():
            raise BadInputError(f"{where}: tensor {k!r} has dtype {v.dtype}; weights must be floating point")
