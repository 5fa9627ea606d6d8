#!/usr/bin/env python3
"""transformers' figure for `cargo bench --bench clip`: images/s embedding
224x224 images with a ViT-B/32 CLIP (random weights, the
openai/clip-vit-base-patch32 config) on the CPU, through FlaxCLIPModel
(jitted get_image_features) or, when torch is importable, CLIPModel.

Prints one JSON object: {"framework", "versions", "batch", "images_per_s",
"compile_s"}. Exits 1 with a message on stderr when transformers is missing.
Usage: clip_bench.py BATCH ITERS
"""
import json
import statistics
import sys
import time

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 5

try:
    import numpy as np
    import transformers
    from transformers import CLIPConfig
except ImportError as e:
    print(f"transformers is not installed: {e}", file=sys.stderr)
    sys.exit(1)

config = CLIPConfig(
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                     max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu"),
    projection_dim=512,
)
pixels = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)


def timed(fn):
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


try:
    import torch
    from transformers import CLIPModel

    model = CLIPModel(config).eval()
    x = torch.from_numpy(pixels)
    with torch.no_grad():
        t = time.perf_counter()
        model.get_image_features(pixel_values=x)
        first = time.perf_counter() - t
        secs = timed(lambda: model.get_image_features(pixel_values=x))
    framework, versions = "pytorch", {"torch": torch.__version__, "threads": torch.get_num_threads()}
except ImportError:
    import jax
    from transformers import FlaxCLIPModel

    model = FlaxCLIPModel(config, seed=0)
    fn = jax.jit(lambda p, x: model.get_image_features(pixel_values=x, params=p))
    t = time.perf_counter()
    fn(model.params, pixels).block_until_ready()
    first = time.perf_counter() - t
    secs = timed(lambda: fn(model.params, pixels).block_until_ready())
    framework, versions = "flax", {"jax": jax.__version__}

versions["transformers"] = transformers.__version__
print(json.dumps({"framework": framework, "versions": versions, "batch": batch, "images_per_s": batch / secs, "compile_s": first}))
