#!/usr/bin/env python3
"""Step time of dalle-mini 0.1.5's own flax `DalleBart` training update, for
comparison with `cargo bench --bench train -- <config>` (and with the plain-jax
reimplementation in tools/jax_dallebart_bench.py).

Not part of the product: a reference point. Needs the reference packages of
tools/make_dallebart_fixture.py (jax 0.4.13, flax 0.6.11, optax, dalle-mini 0.1.5).

    python3 tools/dalle_mini_bench.py configs/small.yaml [--steps 20] [--batch N]
        [--optimizer adamw|adafactor] [--set model.encoder_vocab_size=50264 ...] [--bf16] [--params-only]

It reads the `model:` section of one of our YAML configs (plus `optimizer:` and
`train.batch_size`/`train.seed`/`train.dtype`), builds `dalle_mini.model.DalleBart`
with the same sizes, and times the train step of dalle-mini's tools/train/train.py
on synthetic batches: logits from `model(**batch, params=..., dropout_rng=...,
train=True)`, `optax.softmax_cross_entropy` against one-hot labels, gradients
by `jax.value_and_grad`, the optimizer update (adamw, or adafactor with optax's
defaults) with train.py's learning-rate schedule, the whole state donated.

Model flags. dalle-mini's `DalleBartConfig` defaults are what our model
implements (src/models/dallebart): ln_type layernorm, ln_positions normformer
(LayerNorm without scale before attention / GLU / final, with scale after the
attention output and on the embeddings), use_glu (gelu), no biases (use_bias
False, lm_head without bias), tie_word_embeddings False, no head scale, no
cosine attention, no swin/alibi positions, no deepnet/subln init,
sinkhorn_iters 1, use_final_ln_encoder/decoder as in our config. Set here
explicitly: dropout, attention_dropout and activation_dropout 0 (our model has
no dropout; DalleBartConfig's default dropout is 0.1); use_scan from our
`model.scan_layers` (DalleBartConfig would default it to True); and
gradient_checkpointing (nn.remat per layer) from `model.remat_layers` or
`model.scan_layers` (our scan implies per-layer rematerialisation; train.py
sets it from --gradient_checkpointing, default False).

Parameter count: the same as ours. tiny: 59,584 both (`dalle info --config
configs/tiny.yaml --params-only`); small: 22,123,520 both. The tree is the same
(parameter names follow dalle-mini's flax tree); with use_scan the per-layer
parameters are stacked under FlaxBartEncoderLayers/FlaxBartDecoderLayers.

Remaining differences from our step, small for timing:
- clipping: our trainer clips the global gradient norm at optimizer.max_grad_norm
  (default 1.0, 0 disables) for every optimizer. train.py does not (its adafactor
  only gets `clipping_threshold=max_grad_norm`, the per-update RMS clipping that
  optax's default 1.0 and ours already do). So that the two benches time the same
  update this script chains `optax.clip_by_global_norm` when max_grad_norm > 0;
  `--set optimizer.max_grad_norm=0` gives train.py's unclipped step.
- masks: dalle-mini adds -inf to masked attention scores, we add -1e9; its flax
  LayerNorm and softmax cross-entropy run in the compute dtype (bf16 with --bf16)
  where ours upcast to f32; its token embeddings stay f32 in bf16 mode.
- train.py's "vmap trick" (grad_fn vmapped over a leading data-parallel axis) is
  off by default here: on one device it is a vmap of size 1 (`--vmap-trick` turns
  it on). Its logging of gradient/parameter norms every log_norm_steps (under
  lax.cond) is left out, as are train_time/train_samples in the state.
- learning rate: train.py's schedule (warmup from 0 over warmup_steps + 1, then
  constant, linear to 0 over transition_steps, or exponential) is computed inside
  the step by optax; ours is fed as a scalar each step.
"""
import argparse, copy, sys, time, warnings
from functools import partial

import numpy as np
import yaml

import jax, jax.numpy as jnp

jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini 0.1.5 predates the move
import flax, optax
from flax import struct, traverse_util
from flax.core.frozen_dict import freeze, unfreeze
from flax.training.common_utils import onehot

from bench_config import apply_overrides
import dalle_mini
from dalle_mini.model import DalleBart, DalleBartConfig

# Donation is a no-op on CPU; jax warns once per call signature.
warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

# Defaults of our OptimizerConfig / Schedule (src/optim/mod.rs, src/optim/schedule.rs).
OPTIMIZER_DEFAULTS = {"kind": "adafactor", "learning_rate": 0.005, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.999,
                      "eps": 1e-8, "max_grad_norm": 1.0}
SCHEDULE_DEFAULTS = {"warmup_steps": 0, "decay": "constant", "transition_steps": 1000, "decay_rate": 0.5, "staircase": False}


def shift_tokens_right(input_ids, decoder_start_token_id):
    """dalle_mini.data.shift_tokens_right (that module needs braceexpand and datasets, not installed here)."""
    shifted_input_ids = np.zeros(input_ids.shape)
    shifted_input_ids[:, 1:] = input_ids[:, :-1]
    shifted_input_ids[:, 0] = decoder_start_token_id
    return shifted_input_ids


def load_average():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "unknown"


def dalle_config(m):
    known = {"d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
             "encoder_ffn_dim", "decoder_ffn_dim", "encoder_vocab_size", "image_vocab_size", "max_text_length",
             "image_length", "init_std", "scale_embedding", "use_final_ln_encoder", "use_final_ln_decoder",
             "init_from", "scan_layers", "remat_layers"}
    unknown = set(m) - known
    if unknown:
        sys.exit(f"unknown model keys: {', '.join(sorted(unknown))}")
    if m.get("init_from"):
        print(f"note: model.init_from ({m['init_from']}) ignored, the benchmark starts from random weights", file=sys.stderr)
    scan = bool(m.get("scan_layers", False))
    return DalleBartConfig(
        d_model=m["d_model"],
        encoder_layers=m["encoder_layers"], decoder_layers=m["decoder_layers"],
        encoder_attention_heads=m["encoder_attention_heads"], decoder_attention_heads=m["decoder_attention_heads"],
        encoder_ffn_dim=m["encoder_ffn_dim"], decoder_ffn_dim=m["decoder_ffn_dim"],
        encoder_vocab_size=m["encoder_vocab_size"], image_vocab_size=m["image_vocab_size"],
        max_text_length=m["max_text_length"], image_length=m["image_length"],
        init_std=m.get("init_std", 0.02),
        scale_embedding=bool(m.get("scale_embedding", False)),
        use_final_ln_encoder=bool(m.get("use_final_ln_encoder", True)),
        use_final_ln_decoder=bool(m.get("use_final_ln_decoder", True)),
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        use_scan=scan,
        gradient_checkpointing=scan or bool(m.get("remat_layers", False)),
        # dalle-mini's defaults, which our model implements; spelled out for the reader.
        ln_type="layernorm", ln_positions="normformer", use_glu=True, use_bias=False, tie_word_embeddings=False,
        use_head_scale=False, use_cosine_attention=False, use_absolute_position_embeddings=True,
        use_swin_position_embeddings=False, use_deepnet_scaling=False, use_subln_init=False, sinkhorn_iters=1,
        force_ln_scale=False, activation_function="gelu",
    )


def learning_rate_fn(o, s):
    """train.py's create_learning_rate_fn, with our schedule keys."""
    lr, warmup = o["learning_rate"], int(s["warmup_steps"])
    warmup_fn = optax.linear_schedule(init_value=0.0, end_value=lr, transition_steps=warmup + 1)
    if s["decay"] == "constant":
        return warmup_fn
    if s["decay"] == "linear":
        decay_fn = optax.linear_schedule(init_value=lr, end_value=0, transition_steps=int(s["transition_steps"]))
    elif s["decay"] == "exponential":
        decay_fn = optax.exponential_decay(init_value=lr, transition_steps=int(s["transition_steps"]),
                                           decay_rate=s["decay_rate"], staircase=bool(s["staircase"]))
    else:
        sys.exit(f"optimizer.schedule.decay '{s['decay']}' is not one of: constant, linear, exponential")
    return optax.join_schedules(schedules=[warmup_fn, decay_fn], boundaries=[warmup])


def make_optimizer(o, lr_fn):
    if o["kind"] == "adamw":
        opt = optax.adamw(learning_rate=lr_fn, b1=o["beta1"], b2=o["beta2"], eps=o["eps"], weight_decay=o["weight_decay"])
    elif o["kind"] == "adafactor":
        # optax defaults (decay 0.8, factored from 128, clipping_threshold 1, parameter scale), as train.py.
        opt = optax.adafactor(learning_rate=lr_fn, weight_decay_rate=o["weight_decay"] or None)
    else:
        sys.exit(f"optimizer '{o['kind']}' is not one of: adamw, adafactor (shampoo is not benchmarked here)")
    if o["max_grad_norm"] > 0:
        opt = optax.chain(optax.clip_by_global_norm(o["max_grad_norm"]), opt)
    return opt


# train.py keeps scanned layers apart so the optimizer is vmapped over the layer axis.
def split_params(data):
    flat = traverse_util.flatten_dict(unfreeze(data))
    split = {"standard": {}, "scanned_encoder": {}, "scanned_decoder": {}}
    for k, v in flat.items():
        if "FlaxBartEncoderLayers" in k:
            split["scanned_encoder"][k] = v
        elif "FlaxBartDecoderLayers" in k:
            split["scanned_decoder"][k] = v
        else:
            split["standard"][k] = v
    return {k: freeze(traverse_util.unflatten_dict(v)) for k, v in split.items() if v}


def unsplit_params(data):
    flat = {}
    for v in data.values():
        flat.update(traverse_util.flatten_dict(unfreeze(v)))
    return freeze(traverse_util.unflatten_dict(flat))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, help="batch size (default: the config's train.batch_size)")
    ap.add_argument("--optimizer", choices=["adamw", "adafactor"], help="default: the config's optimizer.kind")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. model.encoder_vocab_size=50264")
    ap.add_argument("--bf16", action="store_true", help="compute in bfloat16 (also when the config's train.dtype is bf16)")
    ap.add_argument("--vmap-trick", action="store_true", help="train.py's use_vmap_trick (a size-1 vmap on one device)")
    ap.add_argument("--params-only", action="store_true", help="build the model, print its parameter count, run nothing")
    args = ap.parse_args()

    full = apply_overrides(yaml.safe_load(open(args.config)), args.set)
    train = full.get("train", {})
    o = {**OPTIMIZER_DEFAULTS, **{k: v for k, v in full.get("optimizer", {}).items() if k != "schedule"}}
    if args.optimizer:
        o["kind"] = args.optimizer
    sched = {**SCHEDULE_DEFAULTS, **full.get("optimizer", {}).get("schedule", {})}
    batch = args.batch or train.get("batch_size", 8)
    bf16 = args.bf16 or str(train.get("dtype", "f32")) in ("bf16", "bfloat16")
    dtype = jnp.bfloat16 if bf16 else jnp.float32
    m = full["model"]
    config = dalle_config(m)
    seed = int(train.get("seed", 0))

    # As train.py: no init in the constructor, parameters made inside the jitted state creation.
    model = DalleBart(config, seed=seed, dtype=dtype, _do_init=False)
    params_shape = model.params_shape_tree
    num_params = model.num_params(params_shape)
    print(f"dalle-mini {dalle_mini.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}; load average {load_average()}")
    flags = "".join([" scan" if config.use_scan else "", " remat" if config.gradient_checkpointing else ""])
    if args.params_only:
        print(f"{args.config}: {num_params / 1e6:.2f}M params ({num_params:,}){flags}")
        return

    lr_fn = learning_rate_fn(o, sched)
    tx = make_optimizer(o, lr_fn)

    class TrainState(struct.PyTreeNode):
        step: int
        params: flax.core.FrozenDict
        opt_state: dict
        dropout_rng: jnp.ndarray

        def apply_gradients(self, *, grads, **kwargs):
            grads, params = split_params(grads), split_params(self.params)
            opt_state = {}
            for k, param in params.items():
                update_fn = tx.update
                if "scanned" in k:
                    update_fn = jax.vmap(update_fn, in_axes=(0, 0, 0), out_axes=(0, 0))
                updates, opt_state[k] = update_fn(grads[k], self.opt_state[k], param)
                params[k] = optax.apply_updates(param, updates)
            return self.replace(step=self.step + 1, params=unsplit_params(params), opt_state=freeze(opt_state), **kwargs)

    def init_state():
        params = model.init_weights(model.key, model.input_shape)
        opt_state = {k: (jax.vmap(tx.init) if "scanned" in k else tx.init)(p) for k, p in split_params(params).items()}
        return TrainState(step=0, params=freeze(params), opt_state=freeze(opt_state), dropout_rng=jax.random.PRNGKey(seed))

    def loss_fn(logits, labels):
        return optax.softmax_cross_entropy(logits, onehot(labels, logits.shape[-1])).mean()

    def compute_loss(params, minibatch, dropout_rng):
        minibatch, labels = minibatch.pop("labels")
        logits = model(**minibatch, params=params, dropout_rng=dropout_rng, train=True)[0]
        return loss_fn(logits, labels)

    grad_fn = jax.value_and_grad(compute_loss)

    # Donated like train.py's pjit(train_step, donate_argnums=(0,)).
    @partial(jax.jit, donate_argnums=(0,))
    def train_step(state, batch):
        dropout_rng, _ = jax.random.split(state.dropout_rng)
        if args.vmap_trick:
            batch = jax.tree_util.tree_map(lambda x: x[None], batch)
            loss, grads = jax.vmap(grad_fn, in_axes=(None, 0, None), out_axes=(0, 0))(state.params, batch, dropout_rng)
            loss, grads = jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), (loss, grads))
        else:
            loss, grads = grad_fn(state.params, batch, dropout_rng)
        state = state.apply_gradients(grads=grads, dropout_rng=dropout_rng)
        return state, {"loss": loss, "learning_rate": lr_fn(state.step)}

    t0 = time.perf_counter()
    state = jax.jit(init_state)()
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    labels = rng.integers(0, m["image_vocab_size"], (batch, m["image_length"]))
    batch_data = freeze({
        "input_ids": jnp.asarray(rng.integers(1, m["encoder_vocab_size"], (batch, m["max_text_length"])), jnp.int32),
        "attention_mask": jnp.ones((batch, m["max_text_length"]), jnp.int32),
        "labels": jnp.asarray(labels, jnp.int32),
        "decoder_input_ids": jnp.asarray(shift_tokens_right(labels, config.decoder_start_token_id), jnp.int32),
    })

    t0 = time.perf_counter()
    state, metrics = train_step(state, batch_data)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    for _ in range(2):
        state, metrics = train_step(state, batch_data)
    jax.block_until_ready((state, metrics))
    load_before = load_average()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = train_step(state, batch_data)
    jax.block_until_ready((state, metrics))
    per_step = (time.perf_counter() - t0) / args.steps
    clip = f", clip {o['max_grad_norm']:g}" if o["max_grad_norm"] > 0 else ""
    print(f"{args.config}: {num_params / 1e6:.2f}M params ({num_params:,}), batch {batch}, {o['kind']} "
          f"{'bf16' if bf16 else 'f32'}{flags}{clip}: {per_step * 1e3:.1f} ms/step, {batch / per_step:.1f} samples/s, "
          f"compile {compile_s:.1f} s (first step), init {init_s:.1f} s, loss {float(metrics['loss']):.4f}")
    print(f"load average before the timed steps {load_before}, after {load_average()}")


if __name__ == "__main__":
    main()
