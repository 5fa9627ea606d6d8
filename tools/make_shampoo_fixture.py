#!/usr/bin/env python3
"""Writes tests/fixtures/shampoo/steps.safetensors: 20 updates of optax-shampoo
0.0.6 `distributed_shampoo` with DALL·E mini's settings (sharded mode,
moving-average momentum, rmsprop_normalized grafting, no Nesterov), shrunk so
that 20 steps cover statistics, several preconditioner refreshes, blocking,
small-dim merging and the skip threshold.

    /work/venvs/ref/bin/pip install optax-shampoo==0.0.6
    /work/venvs/ref/bin/python tools/make_shampoo_fixture.py

Stored: `<p>/init`, `<p>/grads` [steps, ...], `<p>/params` [steps, ...] (the
parameter after each step), and the final state: `<p>/stat<i>` and
`<p>/precond<i>` (blocks in the reference's order), `<p>/diag`,
`<p>/diag_momentum`, `<p>/momentum`. The settings are in the metadata.
"""
import inspect
import json
import os

import numpy as np
import jax
import jax.numpy as jnp
from jax.experimental import pjit
from jax.sharding import Mesh, PartitionSpec

pjit.PartitionSpec = PartitionSpec  # optax-shampoo 0.0.6 predates the move
import optax_shampoo.distributed_shampoo as ds

# Under jax 0.4.13 the Newton iteration's loop refuses its initial error ratio
# `True` (a bool carry that the body replaces by a float). 1.0 reads the same
# in both places it is compared (`< 1.2`), so the algorithm is unchanged.
_src = inspect.getsource(ds).replace("new_mat_h_0, new_error, True])", "new_mat_h_0, new_error, 1.0])")
exec(compile(_src, ds.__file__, "exec"), ds.__dict__)
GraftingType, distributed_shampoo = ds.GraftingType, ds.distributed_shampoo
from safetensors.numpy import save_file

STEPS = 20
SETTINGS = dict(
    learning_rate=0.01,
    block_size=4,
    beta1=0.9,
    beta2=0.99,
    weight_decay=0.01,
    start_preconditioning_step=3,
    preconditioning_compute_steps=2,
    skip_preconditioning_dim_size_gt=12,
    merge_small_dims_block_size=16,
)
# Names sort in the order jax flattens the dict, which the state follows.
SHAPES = {
    "a_matrix": (6, 10),  # blocks [4,2] x [4,4,2]
    "b_merged": (2, 3, 10),  # merges to [6, 10]
    "c_skipped": (3, 16),  # 16 > 12: grafting only
    "d_vector": (7,),  # rank 1: one statistic per block, exponent 2
    "e_scalar": (),  # rank 0: grafting only
}


def main():
    rng = np.random.default_rng(7)
    params = {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in SHAPES.items()}
    # A fixed direction plus noise, so the statistics are far from isotropic.
    bias = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    grads = [{k: (bias[k] + 0.5 * rng.normal(size=s)).astype(np.float32) * (1 + 0.1 * t) for k, s in SHAPES.items()} for t in range(STEPS)]

    s = SETTINGS
    opt = distributed_shampoo(
        learning_rate=s["learning_rate"],
        block_size=s["block_size"],
        beta1=s["beta1"],
        beta2=s["beta2"],
        diagonal_epsilon=1e-10,
        matrix_epsilon=1e-6,
        weight_decay=s["weight_decay"],
        start_preconditioning_step=s["start_preconditioning_step"],
        preconditioning_compute_steps=s["preconditioning_compute_steps"],
        statistics_compute_steps=1,
        best_effort_shape_interpretation=True,
        graft_type=GraftingType.RMSPROP_NORMALIZED,
        nesterov=False,
        exponent_override=0,
        statistics_partition_spec=PartitionSpec(None, "dp", None),
        preconditioner_partition_spec=PartitionSpec("dp", None, None),
        num_devices_for_pjit=1,
        shard_optimizer_states=True,
        inverse_failure_threshold=0.1,
        moving_average_for_momentum=True,
        skip_preconditioning_dim_size_gt=s["skip_preconditioning_dim_size_gt"],
        clip_by_scaled_gradient_norm=None,
        precision=jax.lax.Precision.HIGHEST,
        merge_small_dims_block_size=s["merge_small_dims_block_size"],
    )
    fns = opt.init(None)
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("dp", "mp"))
    with mesh:
        state = jax.jit(fns.init_fn)(params)
        update = jax.jit(opt.update)
        history = {k: [] for k in SHAPES}
        p = {k: jnp.asarray(v) for k, v in params.items()}
        for t in range(STEPS):
            updates, state = update(grads[t], state, p)
            p = jax.tree_util.tree_map(lambda a, u: a + u, p, updates)
            for k in SHAPES:
                history[k].append(np.asarray(p[k]))

    out = {}
    for k in SHAPES:
        out[f"{k}/init"] = params[k]
        out[f"{k}/grads"] = np.stack([g[k] for g in grads])
        out[f"{k}/params"] = np.stack(history[k])
        local = state.stats.local_stats[k]
        for i, size in enumerate(local.sizes):
            j = int(local.index_start) + i
            out[f"{k}/stat{i}"] = np.asarray(state.stats.global_stats.statistics[j][:size, :size])
            out[f"{k}/precond{i}"] = np.asarray(state.stats.global_stats.preconditioners[j][:size, :size])
        out[f"{k}/diag"] = np.asarray(local.diagonal_statistics.quantized)
        out[f"{k}/diag_momentum"] = np.asarray(local.diagonal_momentum.quantized)
        out[f"{k}/momentum"] = np.asarray(local.momentum.quantized)
    out = {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "shampoo", "steps.safetensors")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    meta = dict(SETTINGS, steps=STEPS, reference="optax-shampoo 0.0.6, jax " + jax.__version__)
    save_file(out, path, metadata={"settings": json.dumps(meta)})
    print(f"wrote {path}: {sum(v.nbytes for v in out.values())} bytes of tensors")


if __name__ == "__main__":
    main()
