#!/usr/bin/env python3
"""Checks that a directory written by `dalle export` loads in dalle-mini and
gives the reference logits of a fixture (tests/fixtures/released/*).

    dalle export tests/fixtures/released/dallebart_f16_scan /tmp/exported
    ~/venvs/ref/bin/python tools/check_export.py /tmp/exported tests/fixtures/released/dallebart_f16_scan

Run by hand in the environment of tools/make_released_fixtures.py.
"""
import sys

import numpy as np
import jax
import jax.numpy as jnp

jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini 0.1.5 predates the move
from dalle_mini.model import DalleBart
from safetensors.numpy import load_file


def main(exported, fixture):
    model, params = DalleBart.from_pretrained(exported, _do_init=False, dtype=jnp.float32)
    dtypes = sorted({str(p.dtype) for p in jax.tree_util.tree_leaves(params)})
    e = load_file(fixture + "/expected.safetensors")
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    start = model.config.decoder_start_token_id
    dec = np.concatenate([np.full((e["labels"].shape[0], 1), start, np.int32), e["labels"][:, :-1]], 1)
    logits = model(input_ids=e["input_ids"], attention_mask=e["attention_mask"], decoder_input_ids=dec, params=params, train=False).logits
    diff = float(np.abs(np.asarray(logits) - e["logits"]).max())
    print(f"{exported}: weights {dtypes}, max |logits - reference| = {diff:.3g}")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
