#!/usr/bin/env python3
"""Writes the generation fixture used by tests/generate_fixture.rs.

Run by hand (never by CI) with the reference implementation installed as
described in tools/make_dallebart_fixture.py:

    python3 tools/make_generate_fixture.py configs/tiny.yaml tests/fixtures/generate_tiny

It initialises dalle-mini 0.1.5's DalleBart with the model section of the
config (weights spread wide so the logits are far from ties), and saves the
parameters under their flax names, three captions, the empty caption, and the
token sequences `DalleBart.generate` returns for them:
greedy, and top_k=1 sampling with condition_scale=10 (super-conditioning).
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
    rng = np.random.default_rng(2)
    params = jax.tree_util.tree_map(lambda p: p + rng.normal(0, 0.3, p.shape).astype(np.float32), model.params)

    batch, t_text = 3, m["max_text_length"]
    input_ids = rng.integers(3, m["encoder_vocab_size"], (batch, t_text)).astype(np.int32)
    attention_mask = np.ones((batch, t_text), np.int32)
    for i, used in enumerate([t_text, 9, 4]):
        attention_mask[i, used:] = 0
        input_ids[i, used:] = 1
    # The empty caption as dalle-mini's processor makes it: <s> </s> then padding.
    uncond_ids = np.ones((batch, t_text), np.int32)
    uncond_ids[:, 0], uncond_ids[:, 1] = 0, 2
    uncond_mask = np.zeros((batch, t_text), np.int32)
    uncond_mask[:, :2] = 1

    max_length = m["image_length"] + 1
    greedy = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                            max_length=max_length, params=params).sequences
    top1 = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, top_k=1,
                          condition_scale=10.0, input_ids_uncond=uncond_ids, attention_mask_uncond=uncond_mask,
                          max_length=max_length, params=params, prng_key=jax.random.PRNGKey(0)).sequences
    greedy, top1 = np.asarray(greedy)[:, 1:], np.asarray(top1)[:, 1:]  # drop the decoder start token
    assert (greedy < m["image_vocab_size"]).all() and (top1 < m["image_vocab_size"]).all()
    assert not (greedy == top1).all(), "super-conditioning should change the sequences"

    os.makedirs(out_dir, exist_ok=True)
    save_file({".".join(k): np.asarray(v) for k, v in flatten_dict(params).items()}, os.path.join(out_dir, "params.safetensors"))
    save_file({"input_ids": input_ids, "attention_mask": attention_mask, "uncond_ids": uncond_ids[:1], "uncond_mask": uncond_mask[:1],
               "greedy": greedy.astype(np.int32), "top1_scale10": top1.astype(np.int32)},
              os.path.join(out_dir, "expected.safetensors"))
    print("greedy:", greedy.tolist())
    print("top_k=1, condition_scale=10:", top1.tolist())


if __name__ == "__main__":
    main(*sys.argv[1:3])
