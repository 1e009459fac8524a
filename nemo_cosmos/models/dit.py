"""The Cosmos-1.0 diffusion transformer (NVIDIA's "GeneralDIT") as a Megatron-Core module.

    x [B, 16, T, H, W] latent, timesteps [B] (c_noise), crossattn_emb [B, L, 1024] T5 embeddings
      -> [B, 16, T, H, W]

Layers come from a ModuleSpec (`specs.get_layer_spec`), so the same model runs on plain PyTorch or
Transformer Engine.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from torch import nn
from torch.nn import functional as F

from .config import CosmosDiTConfig
from .embeddings import LearnablePosEmb, RMSNorm, RoPE3D, TimestepEmbedding, patchify, timestep_sinusoid, unpatchify
from .layers import FinalLayer
from .specs import get_layer_spec


class CosmosDiT(MegatronModule):
    def __init__(self, config: CosmosDiTConfig, layer_spec: Optional[ModuleSpec] = None):
        super().__init__(config)
        d = config.hidden_size
        dtype = config.params_dtype
        patch_in = (config.in_channels + int(config.condition_mask_channel) + int(config.concat_padding_mask)
                    ) * math.prod(config.patch_size)
        self.patch_embed = nn.Linear(patch_in, d, bias=False, dtype=dtype)
        self.rope = RoPE3D(config)
        self.extra_pos_emb = LearnablePosEmb(config).to(dtype) if config.extra_pos_emb else None
        self.t_embedder = TimestepEmbedding(d).to(dtype)
        self.t_norm = RMSNorm(d, config.layernorm_epsilon, dtype=dtype)
        spec = layer_spec if layer_spec is not None else get_layer_spec()
        self.layers = nn.ModuleList(
            build_module(spec, config=config, layer_number=i + 1) for i in range(config.num_layers)
        )
        self.final_layer = FinalLayer(config).to(dtype)
        # set by parallel.apply_context_parallel: splits the tokens across ranks, gathers the output
        self.token_sharding = None

    def check_inputs(self, x: torch.Tensor, timesteps: torch.Tensor, crossattn_emb: torch.Tensor) -> None:
        """ValueError naming the expected shape for anything the network cannot take."""
        c = self.config
        pt, ph, pw = c.patch_size
        mt, mh, mw = c.max_latent_size
        expected = f"[B, {c.in_channels}, T, H, W] with T a multiple of {pt}, H and W multiples of {ph}"
        if x.dim() != 5 or x.shape[1] != c.in_channels:
            raise ValueError(f"latent must have shape {expected}; got {list(x.shape)}")
        b, _, t, h, w = x.shape
        if t % pt or h % ph or w % pw or t == 0 or h == 0 or w == 0:
            raise ValueError(f"latent must have shape {expected}; got {list(x.shape)}")
        if t > mt or h > mh or w > mw:
            raise ValueError(f"latent {list(x.shape)} exceeds the model's largest latent T, H, W = {mt}, {mh}, {mw}")
        if crossattn_emb.dim() != 3 or crossattn_emb.shape[0] != b or crossattn_emb.shape[2] != c.crossattn_dim:
            raise ValueError(
                f"crossattn_emb must have shape [{b}, L, {c.crossattn_dim}]; got {list(crossattn_emb.shape)}"
            )
        if timesteps.shape != (b,):
            raise ValueError(f"timesteps must have shape [{b}]; got {list(timesteps.shape)}")

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        crossattn_emb: torch.Tensor,
        fps: Optional[float] = None,
        padding_mask: Optional[torch.Tensor] = None,
        condition_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """fps drives RoPE's temporal scale (None: image, positions 0..T-1); padding_mask
        [B, 1, H_any, W_any] is resized (nearest) to the latent and defaults to zeros, as at inference.
        condition_mask [B, 1, T, H, W] (Video2World models only): 1 on the latent frames given as
        condition; zeros (nothing given) when left out."""
        self.check_inputs(x, timesteps, crossattn_emb)
        c = self.config
        dtype = self.patch_embed.weight.dtype
        b, _, t, h, w = x.shape
        pt, ph, pw = c.patch_size
        grid = (t // pt, h // ph, w // pw)
        x = x.to(dtype)
        if c.condition_mask_channel:
            if condition_mask is None:
                condition_mask = x.new_zeros(b, 1, t, h, w)
            elif condition_mask.shape[0] not in (1, b) or tuple(condition_mask.shape[1:]) != (1, t, h, w):
                raise ValueError(f"condition_mask must have shape [{b}, 1, {t}, {h}, {w}]; "
                                 f"got {list(condition_mask.shape)}")
            x = torch.cat([x, condition_mask.to(dtype).expand(b, 1, t, h, w)], dim=1)
        elif condition_mask is not None:
            raise ValueError("condition_mask is for Video2World models (condition_mask_channel); this one takes none")
        if c.concat_padding_mask:
            if padding_mask is None:
                mask = x.new_zeros(b, 1, t, h, w)
            else:
                mask = F.interpolate(padding_mask.to(dtype), size=(h, w), mode="nearest")
                mask = mask.expand(b, 1, h, w)[:, :, None].expand(b, 1, t, h, w)
            x = torch.cat([x, mask], dim=1)
        hidden = self.patch_embed(patchify(x, c.patch_size))

        sinusoid = timestep_sinusoid(timesteps, c.hidden_size).to(dtype)
        lora = self.t_embedder(sinusoid)
        emb = self.t_norm(sinusoid)

        rope_dtype = dtype if c.rope_in_model_dtype else torch.float32
        rope = self.rope(grid, fps, rope_dtype, x.device)
        extra_pos = self.extra_pos_emb(grid, dtype) if self.extra_pos_emb is not None else None
        if self.token_sharding is not None:
            hidden, rope, extra_pos = self.token_sharding.shard(hidden, rope, extra_pos)
        context = crossattn_emb.to(dtype)
        for layer in self.layers:
            hidden = layer(hidden, context, emb, lora, rope, extra_pos)
        out = self.final_layer(hidden, emb, lora)
        if self.token_sharding is not None:
            out = self.token_sharding.gather(out)
        return unpatchify(out, grid, c.patch_size)


def with_condition_mask_channel(dit: CosmosDiT) -> CosmosDiT:
    """A Video2World DiT made from a Text2World one: the same weights, the condition-mask
    channel's patch-embedding inputs added as zeros (so it starts out computing what the Text2World
    model does, whatever the mask)."""
    c = dit.config
    if c.condition_mask_channel:
        return dit
    new = dataclasses.replace(c, condition_mask_channel=True)
    with torch.device("meta"):
        out = CosmosDiT(new)
    sd = dit.state_dict()
    w = sd["patch_embed.weight"]
    at = c.in_channels * math.prod(c.patch_size)  # features are channel-major: the mask's come after the latent's
    sd["patch_embed.weight"] = torch.cat([w[:, :at], w.new_zeros(w.shape[0], math.prod(c.patch_size)), w[:, at:]], 1)
    out.load_state_dict(sd, assign=True)
    return out
