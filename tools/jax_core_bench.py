#!/usr/bin/env python3
"""JAX's figures for the measurements of `cargo bench --bench core`.

Prints one JSON object: jax_version, trivial_call_us (median wall time of one
call of a jitted `x + 1` on a 1-element device array, until ready),
matmul_gflops (1024^3 f32 matmul, median of 15) and transformer_compile_s
(compile time of the same pre-LN transformer layer, forward + backward).
Exits with status 1 and a message on stderr when JAX is not installed.
"""
import json
import math
import statistics
import sys
import time

try:
    import jax
    import jax.numpy as jnp
except ImportError as e:  # the Rust bench reports the skip
    print(f"JAX is not installed: {e}", file=sys.stderr)
    sys.exit(1)


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def trivial_call_us():
    f = jax.jit(lambda x: x + 1.0)
    x = jnp.ones((1,), jnp.float32)
    for _ in range(200):
        f(x).block_until_ready()
    return median_seconds(lambda: f(x).block_until_ready(), 5000) * 1e6


def matmul_gflops(n=1024):
    f = jax.jit(jnp.matmul)
    a = jax.random.uniform(jax.random.PRNGKey(1), (n, n), jnp.float32, -1, 1)
    b = jax.random.uniform(jax.random.PRNGKey(2), (n, n), jnp.float32, -1, 1)
    f(a, b).block_until_ready()
    t = median_seconds(lambda: f(a, b).block_until_ready(), 15)
    return 2 * n**3 / t / 1e9


def transformer_compile_s(b=8, s=64, d=256, heads=8):
    hd = d // heads

    def norm(t):
        c = t - t.mean(-1, keepdims=True)
        return c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + 1e-5)

    def split(t):
        return t.reshape(b, s, heads, hd).transpose(0, 2, 1, 3)

    def layer(params, x):
        wq, wk, wv, wo, w1, w2 = params
        h = norm(x)
        q, k, v = split(h @ wq), split(h @ wk), split(h @ wv)
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(hd)
        attn = (jax.nn.softmax(scores, -1) @ v).transpose(0, 2, 1, 3).reshape(b, s, d)
        x = x + attn @ wo
        h = norm(x) @ w1
        gelu = 0.5 * h * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        y = x + gelu @ w2
        return (y * y).mean()

    shapes = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]
    params = [jnp.zeros(sh, jnp.float32) for sh in shapes]
    x = jnp.zeros((b, s, d), jnp.float32)
    lowered = jax.jit(jax.value_and_grad(layer)).lower(params, x)
    t = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - t


if __name__ == "__main__":
    print(json.dumps({
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "trivial_call_us": trivial_call_us(),
        "matmul_gflops": matmul_gflops(),
        "transformer_compile_s": transformer_compile_s(),
    }))
