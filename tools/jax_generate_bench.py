#!/usr/bin/env python3
"""Generation time of dalle-mini 0.1.5's own `DalleBart.generate` (JAX), for
comparison with `cargo bench --bench generate` (which runs this script beside
itself when given `--python`).

Not part of the product: a reference point. Needs the reference packages of
tools/make_dallebart_fixture.py (jax 0.4.13, flax 0.6.11, dalle-mini 0.1.5).

    python3 tools/jax_generate_bench.py configs/small.yaml [--batch 8] [--text-vocab 50264] [--repeats 2] [--dtype bf16]

Modes, as the Rust benchmark: greedy; top-k 50; top-k 50 with condition
scale 10 (super-conditioning on the empty caption). Compile time is excluded:
each mode runs once to compile, then the best of `--repeats` timed runs.
"""
import argparse, sys, time
import numpy as np
import yaml

import jax, jax.numpy as jnp

jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini 0.1.5 predates the move
from dalle_mini.model import DalleBart, DalleBartConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-vocab", type=int, default=50264)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--modes", default="greedy,top-k,scale")
    a = ap.parse_args()
    m = yaml.safe_load(open(a.config))["model"]
    dtype = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16}[a.dtype]
    config = DalleBartConfig(
        encoder_vocab_size=a.text_vocab, image_vocab_size=m["image_vocab_size"],
        image_length=m["image_length"], max_text_length=m["max_text_length"],
        encoder_layers=m["encoder_layers"], decoder_layers=m["decoder_layers"],
        encoder_ffn_dim=m["encoder_ffn_dim"], decoder_ffn_dim=m["decoder_ffn_dim"],
        encoder_attention_heads=m["encoder_attention_heads"], decoder_attention_heads=m["decoder_attention_heads"],
        d_model=m["d_model"], dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        init_std=m.get("init_std", 0.02), gradient_checkpointing=False, use_scan=False,
    )
    model = DalleBart(config, seed=0, dtype=dtype)
    params = model.params
    b, t = a.batch, m["max_text_length"]
    rng = np.random.default_rng(0)
    ids = np.ones((b, t), np.int32)
    ids[:, :12] = rng.integers(3, a.text_vocab, (b, 12))
    mask = (ids != 1).astype(np.int32)
    uncond = np.ones((b, t), np.int32)
    uncond[:, 0], uncond[:, 1] = 0, 2
    uncond_mask = (uncond != 1).astype(np.int32)
    max_length = m["image_length"] + 1

    # Jitted once per mode, as the inference notebook's pmapped generate: timed runs measure sampling, not tracing.
    def make(mode):
        def generate(ids, mask, uncond, uncond_mask, params, key):
            kwargs = dict(input_ids=ids, attention_mask=mask, max_length=max_length, params=params)
            if mode == "greedy":
                return model.generate(do_sample=False, **kwargs).sequences
            if mode == "top-k 50":
                return model.generate(do_sample=True, top_k=50, prng_key=key, **kwargs).sequences
            return model.generate(do_sample=True, top_k=50, condition_scale=10.0, input_ids_uncond=uncond,
                                  attention_mask_uncond=uncond_mask, prng_key=key, **kwargs).sequences
        return jax.jit(generate)

    def run(fn, key):
        return np.asarray(fn(ids, mask, uncond, uncond_mask, params, key))

    tokens = b * m["image_length"]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} device(s), batch {b}, {a.dtype}")
    names = {"greedy": "greedy", "top-k": "top-k 50", "scale": "top-k 50 + condition scale 10"}
    for mode in [names[k] for k in a.modes.split(",")]:
        fn = make(mode)
        t0 = time.perf_counter()
        run(fn, jax.random.PRNGKey(0))
        first = time.perf_counter() - t0
        best = float("inf")
        for r in range(a.repeats):
            t0 = time.perf_counter()
            run(fn, jax.random.PRNGKey(r + 1))
            best = min(best, time.perf_counter() - t0)
        print(f"jax  {mode:<32} {best:>8.3f} s  {tokens / best:>9.1f} tokens/s  (first call incl. compile {first:.2f} s)")


if __name__ == "__main__":
    main()
