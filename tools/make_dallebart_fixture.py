#!/usr/bin/env python3
"""Writes the DalleBart reference fixture used by tests/dallebart_fixture.rs.

Run by hand (never by CI) in an environment with the reference implementation:

    pip install jax==0.4.13 jaxlib==0.4.13 flax==0.6.11 optax==0.1.7 chex==0.1.82 ml_dtypes==0.2.0 \
        orbax-checkpoint==0.2.3 tensorstore==0.1.45 transformers==4.25.1 tokenizers==0.13.3 \
        numpy==1.26.4 scipy==1.11.4 wandb==0.15.12 einops unidecode ftfy emoji pillow safetensors pyyaml
    pip install --no-deps dalle-mini==0.1.5
    python3 tools/make_dallebart_fixture.py configs/tiny.yaml tests/fixtures/dallebart_tiny

It initialises dalle-mini's own DalleBart with the model section of the config,
and saves its parameters under their flax names (params.safetensors), a batch,
and the logits, loss and parameter gradients the reference computes for it
(expected.safetensors).
"""
import sys, os
import numpy as np
import yaml
import jax, jax.numpy as jnp

jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini 0.1.5 predates the move
from dalle_mini.model import DalleBart, DalleBartConfig
from flax.traverse_util import flatten_dict
from safetensors.numpy import save_file


def main(config_path, out_dir):
    m = yaml.safe_load(open(config_path))["model"]
    config = DalleBartConfig(
        encoder_vocab_size=m["encoder_vocab_size"], image_vocab_size=m["image_vocab_size"],
        image_length=m["image_length"], max_text_length=m["max_text_length"],
        encoder_layers=m["encoder_layers"], decoder_layers=m["decoder_layers"],
        encoder_ffn_dim=m["encoder_ffn_dim"], decoder_ffn_dim=m["decoder_ffn_dim"],
        encoder_attention_heads=m["encoder_attention_heads"], decoder_attention_heads=m["decoder_attention_heads"],
        d_model=m["d_model"], dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        init_std=m.get("init_std", 0.02), gradient_checkpointing=False, use_scan=False,
    )
    model = DalleBart(config, seed=0, dtype=jnp.float32)
    # Perturb the layer-norm parameters so that scales and biases matter in the comparison.
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(lambda p: p + rng.normal(0, 0.1, p.shape).astype(np.float32), model.params)

    batch, t_text, t_img = 2, m["max_text_length"], m["image_length"]
    input_ids = rng.integers(1, m["encoder_vocab_size"], (batch, t_text)).astype(np.int32)
    attention_mask = np.ones((batch, t_text), np.int32)
    attention_mask[1, t_text // 2:] = 0  # the second caption is padded
    labels = rng.integers(0, m["image_vocab_size"], (batch, t_img)).astype(np.int32)
    decoder_input_ids = np.concatenate([np.full((batch, 1), m["image_vocab_size"], np.int32), labels[:, :-1]], 1)

    def loss_fn(p):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, params=p, train=False).logits
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        return -jnp.take_along_axis(logp, labels[..., None], -1).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    name = lambda k: ".".join(k)
    os.makedirs(out_dir, exist_ok=True)
    save_file({name(k): np.asarray(v) for k, v in flatten_dict(params).items()}, os.path.join(out_dir, "params.safetensors"))
    expected = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "logits": np.asarray(logits, np.float32), "loss": np.asarray(loss, np.float32).reshape(())}
    expected.update({"grad/" + name(k): np.asarray(v) for k, v in flatten_dict(grads).items()})
    save_file(expected, os.path.join(out_dir, "expected.safetensors"))
    print(f"loss {float(loss):.6f}, {len(flatten_dict(params))} parameter tensors -> {out_dir}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
