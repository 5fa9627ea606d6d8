#!/usr/bin/env python3
"""Writes tests/fixtures/vqgan_tiny/: a tiny VQGAN run through
taming-transformers (the reference PyTorch implementation), for the parity
test in tests/vqgan_fixture.rs.

Run by hand, not in CI, from a virtual environment outside the project:

    python3 -m venv /root/tamingenv
    /root/tamingenv/bin/pip install torch numpy safetensors einops
    /root/tamingenv/bin/pip install --no-deps taming-transformers-rom1504
    /root/tamingenv/bin/python tools/make_vqgan_fixture.py

Files written:
- config.yaml: the model config (our `VqganConfig` fields);
- params.safetensors: every weight under vqgan-jax's flax name, kernels HWIO.
  Weights are rounded to bfloat16 values and stored as bf16 (exactly), which
  halves the file; the reference ran with those same rounded values in f32;
- expected.safetensors: `images` [N,R,R,3] in [-1,1], `latents` (encoder +
  quant_conv output, NHWC), `indices` [N, g*g], `codebook_loss` (scalar),
  `decoded` [N,R,R,3].
"""

import os
import re

import numpy as np
import torch
from safetensors.numpy import save_file
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import VectorQuantizer2

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vqgan_tiny")

CONFIG = dict(
    ch=32,
    ch_mult=[1, 1],
    num_res_blocks=1,
    attn_resolutions=[8],
    z_channels=32,
    embed_dim=16,
    n_embed=64,
    resolution=16,
)
BATCH = 2


def flax_name(torch_name: str, tensor: torch.Tensor):
    """Our (vqgan-jax) name and layout for one taming parameter."""
    name = torch_name
    for part in ("down", "up", "block", "attn"):
        name = re.sub(rf"\.{part}\.(\d+)\.", rf".{part}_\1.", name)
    if name == "quantize.embedding.weight":
        return "quantize.embedding.embedding", tensor
    if name.endswith(".weight"):
        base = name[: -len(".weight")]
        if tensor.ndim == 4:  # conv OIHW -> HWIO
            return base + ".kernel", tensor.permute(2, 3, 1, 0)
        return base + ".scale", tensor  # GroupNorm
    return name, tensor


def main():
    torch.manual_seed(0)
    c = CONFIG
    common = dict(
        ch=c["ch"],
        out_ch=3,
        ch_mult=tuple(c["ch_mult"]),
        num_res_blocks=c["num_res_blocks"],
        attn_resolutions=c["attn_resolutions"],
        dropout=0.0,
        resamp_with_conv=True,
        in_channels=3,
        resolution=c["resolution"],
        z_channels=c["z_channels"],
    )
    model = torch.nn.ModuleDict(
        dict(
            encoder=Encoder(double_z=False, **common),
            decoder=Decoder(**common),
            quant_conv=torch.nn.Conv2d(c["z_channels"], c["embed_dim"], 1),
            post_quant_conv=torch.nn.Conv2d(c["embed_dim"], c["z_channels"], 1),
            quantize=VectorQuantizer2(c["n_embed"], c["embed_dim"], beta=0.25, legacy=False),
        )
    ).eval()

    # Non-trivial norms and biases, and a codebook spread like trained latents,
    # all rounded to bf16 values so they can be stored exactly in half the bytes.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif name == "quantize.embedding.weight":
                p.copy_(0.5 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))

    images = torch.rand(BATCH, 3, c["resolution"], c["resolution"]) * 2 - 1
    with torch.no_grad():
        h = model["encoder"](images)
        latents = model["quant_conv"](h)
        z_q, loss, (_, _, indices) = model["quantize"](latents)
        decoded = model["decoder"](model["post_quant_conv"](z_q))

        # The nearest code must win clearly, or float rounding could flip an index.
        flat = latents.permute(0, 2, 3, 1).reshape(-1, c["embed_dim"])
        d = torch.cdist(flat, model["quantize"].embedding.weight) ** 2
        top2 = torch.topk(d, 2, largest=False).values
        margin = (top2[:, 1] - top2[:, 0]).min().item()
        print(f"smallest gap between nearest and second-nearest code distance: {margin:.4g}")
        assert margin > 1e-3, "codebook too ambiguous for a parity fixture; change the seed"

    params = {}
    for name, p in model.named_parameters():
        fname, t = flax_name(name, p.detach())
        params[fname] = t.contiguous().to(torch.bfloat16).view(torch.uint16).numpy()
    os.makedirs(OUT, exist_ok=True)
    # safetensors.numpy has no bf16 type: write the raw bits via torch instead.
    from safetensors.torch import save_file as save_torch

    save_torch(
        {k: torch.from_numpy(v).view(torch.bfloat16) for k, v in params.items()},
        os.path.join(OUT, "params.safetensors"),
    )
    nhwc = lambda t: t.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)
    save_file(
        {
            "images": nhwc(images),
            "latents": nhwc(latents),
            "indices": indices.reshape(BATCH, -1).numpy().astype(np.int32),
            "codebook_loss": np.array(loss.item(), dtype=np.float32),
            "decoded": nhwc(decoded),
        },
        os.path.join(OUT, "expected.safetensors"),
    )
    with open(os.path.join(OUT, "config.yaml"), "w") as f:
        for k, v in CONFIG.items():
            f.write(f"{k}: {v}\n")
    print(f"wrote {len(params)} parameters to {OUT}")


if __name__ == "__main__":
    main()
