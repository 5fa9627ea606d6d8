#!/usr/bin/env python3
"""Step time of the same DalleBart training update in JAX, for comparison with
`cargo bench --bench train -- <config> --set optimizer.kind=adamw`.

Not part of the product: a reference point. It reads the model section of one of
our YAML configs, builds the same NormFormer/GLU encoder-decoder in plain
jax.numpy (no flax), and times jit-compiled AdamW updates on synthetic batches.

    python3 tools/jax_dallebart_bench.py configs/small.yaml [--steps 20] [--bf16] [--batch N] [--set key.path=value]
"""
import argparse, math, time, sys
from functools import partial
import numpy as np

try:
    import jax, jax.numpy as jnp
except ImportError:
    sys.exit("JAX is not installed: pip install jax")
import yaml
from bench_config import apply_overrides


def layer_norm(x, scale=None, bias=None, eps=1e-5):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    if scale is not None:
        y = y * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def init(cfg, key):
    d, std = cfg["d_model"], cfg.get("init_std", 0.02)
    params = {}
    def normal(shape):
        nonlocal key
        key, sub = jax.random.split(key)
        return jax.random.normal(sub, shape, jnp.float32) * std
    def attn():
        return {n: normal((d, d)) for n in ("q", "k", "v", "o")}
    def glu(ffn):
        return {"ln0": jnp.zeros(d), "w0": normal((d, ffn)), "w1": normal((d, ffn)), "ln1": jnp.zeros(ffn), "w2": normal((ffn, d))}
    def embed(vocab, length):
        return {"tok": normal((vocab, d)), "pos": normal((length, d)), "ln_s": jnp.ones(d), "ln_b": jnp.zeros(d)}
    params["enc_embed"] = embed(cfg["encoder_vocab_size"], cfg["max_text_length"])
    params["dec_embed"] = embed(cfg["image_vocab_size"] + 1, cfg["image_length"])
    params["enc"] = [{"ln0": jnp.zeros(d), "attn": attn(), "ln1_s": jnp.ones(d), "ln1_b": jnp.zeros(d), "glu": glu(cfg["encoder_ffn_dim"])} for _ in range(cfg["encoder_layers"])]
    params["dec"] = [{"ln0": jnp.zeros(d), "self": attn(), "ln1_s": jnp.ones(d), "ln1_b": jnp.zeros(d), "ln2": jnp.zeros(d), "cross": attn(),
                      "ln3_s": jnp.ones(d), "ln3_b": jnp.zeros(d), "glu": glu(cfg["decoder_ffn_dim"])} for _ in range(cfg["decoder_layers"])]
    params["enc_final"] = jnp.zeros(d)
    params["dec_final"] = jnp.zeros(d)
    params["lm_head"] = normal((d, cfg["image_vocab_size"] + 1))
    return params


def forward(p, cfg, ids, mask, labels, dtype):
    d = cfg["d_model"]
    c = lambda w: w.astype(dtype)
    def attention(a, x, kv, bias, heads):
        b, tq, tk, dh = x.shape[0], x.shape[1], kv.shape[1], d // heads
        split = lambda t, n: t.reshape(b, n, heads, dh).transpose(0, 2, 1, 3)
        q, k, v = split(x @ c(a["q"]), tq), split(kv @ c(a["k"]), tk), split(kv @ c(a["v"]), tk)
        s = jnp.einsum("bhqd,bhkd->bhqk", q / math.sqrt(dh), k).astype(jnp.float32) + bias
        w = jax.nn.softmax(s, -1).astype(dtype)
        o = jnp.einsum("bhqk,bhkd->bhqd", w, v).transpose(0, 2, 1, 3).reshape(b, tq, d)
        return o @ c(a["o"])
    def glu(g, x):
        x = layer_norm(x, bias=g["ln0"])
        h = jax.nn.gelu(x @ c(g["w0"]), approximate=False) * (x @ c(g["w1"]))
        return layer_norm(h, bias=g["ln1"]) @ c(g["w2"])
    def embed(e, tokens):
        x = c(e["tok"])[tokens] + c(e["pos"])[: tokens.shape[1]]
        return layer_norm(x, e["ln_s"], e["ln_b"])
    pad_bias = jnp.where(mask[:, None, None, :] != 0, 0.0, -1e9)
    h = embed(p["enc_embed"], ids)
    for l in p["enc"]:
        x = layer_norm(h, bias=l["ln0"])
        h = h + layer_norm(attention(l["attn"], x, x, pad_bias, cfg["encoder_attention_heads"]), l["ln1_s"], l["ln1_b"])
        h = h + glu(l["glu"], h)
    enc = layer_norm(h, bias=p["enc_final"])
    t = labels.shape[1]
    dec_in = jnp.concatenate([jnp.full((labels.shape[0], 1), cfg["image_vocab_size"]), labels[:, :-1]], 1)
    causal = jnp.where(jnp.tril(jnp.ones((t, t), bool)), 0.0, -1e9)[None, None]
    h = embed(p["dec_embed"], dec_in)
    for l in p["dec"]:
        x = layer_norm(h, bias=l["ln0"])
        h = h + layer_norm(attention(l["self"], x, x, causal, cfg["decoder_attention_heads"]), l["ln1_s"], l["ln1_b"])
        x = layer_norm(h, bias=l["ln2"])
        h = h + layer_norm(attention(l["cross"], x, enc, pad_bias, cfg["decoder_attention_heads"]), l["ln3_s"], l["ln3_b"])
        h = h + glu(l["glu"], h)
    h = layer_norm(h, bias=p["dec_final"])
    logits = (h @ c(p["lm_head"])).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, -1)
    return -jnp.take_along_axis(logp, labels[..., None], -1).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--batch", type=int, help="batch size (default: the config's train.batch_size)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. model.encoder_vocab_size=50264")
    args = ap.parse_args()
    full = apply_overrides(yaml.safe_load(open(args.config)), args.set)
    cfg = full["model"]
    batch = args.batch or full["train"]["batch_size"]
    lr = full.get("optimizer", {}).get("learning_rate", 1e-3)
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32
    params = init(cfg, jax.random.PRNGKey(0))
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v = jax.tree_util.tree_map(jnp.zeros_like, params)

    # Donated like dalle-mini's train step, so the update reuses the old buffers.
    @partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, m, v, count, ids, mask, labels):
        loss, g = jax.value_and_grad(forward)(params, cfg, ids, mask, labels, dtype)
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(g)))
        scale = jnp.minimum(1.0, 1.0 / (norm + 1e-6))
        g = jax.tree_util.tree_map(lambda x: x * scale, g)
        m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g)
        bc1, bc2 = 1 - 0.9 ** count, 1 - 0.999 ** count
        params = jax.tree_util.tree_map(lambda p, a, b: p - lr * (a / bc1) / (jnp.sqrt(b / bc2) + 1e-8), params, m, v)
        return params, m, v, loss

    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(1, cfg["encoder_vocab_size"], (batch, cfg["max_text_length"])), jnp.int32)
    mask = jnp.ones((batch, cfg["max_text_length"]), jnp.int32)
    labels = jnp.asarray(rng.integers(0, cfg["image_vocab_size"], (batch, cfg["image_length"])), jnp.int32)
    t0 = time.perf_counter()
    params, m, v, loss = step(params, m, v, 1.0, ids, mask, labels)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    for i in range(2):
        params, m, v, loss = step(params, m, v, float(i + 2), ids, mask, labels)
    loss.block_until_ready()
    t0 = time.perf_counter()
    for i in range(args.steps):
        params, m, v, loss = step(params, m, v, float(i + 4), ids, mask, labels)
    loss.block_until_ready()
    per_step = (time.perf_counter() - t0) / args.steps
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}: {args.config} batch {batch} {'bf16' if args.bf16 else 'f32'}: "
          f"{per_step * 1e3:.1f} ms/step, {batch / per_step:.1f} samples/s, compile {compile_s:.1f} s, loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
