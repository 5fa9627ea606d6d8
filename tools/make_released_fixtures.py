#!/usr/bin/env python3
"""Writes tests/fixtures/released/: tiny checkpoints in the layout of the
released models, saved by the reference packages' own serializers, for
tests/released_weights.rs.

Run by hand (never by CI) in a virtual environment outside the project:

    python3 -m venv ~/venvs/ref
    ~/venvs/ref/bin/pip install jax==0.4.13 jaxlib==0.4.13 flax==0.6.11 optax==0.1.7 chex==0.1.82 \\
        ml_dtypes==0.2.0 orbax-checkpoint==0.2.3 tensorstore==0.1.45 transformers==4.25.1 tokenizers==0.13.3 \\
        numpy==1.26.4 scipy==1.11.4 einops unidecode ftfy emoji pillow safetensors msgpack
    ~/venvs/ref/bin/pip install --no-deps dalle-mini==0.1.5
    ~/venvs/ref/bin/python tools/make_released_fixtures.py

Directories written (each like a released model: config.json, flax_model.msgpack, tokenizer files):
- dallebart_f32, dallebart_f32_scan, dallebart_f16, dallebart_f16_scan: dalle-mini's DalleBart on a
  tiny config (use_scan off / on; weights f32 / float16), saved with `save_pretrained` (flax's
  msgpack serializer). Each has expected.safetensors: a batch (`input_ids`, `attention_mask`,
  `labels`), the reference `logits` (f32 compute on the stored weights) and `loss`; and the
  fine-tuning batch (`ft/input_ids`, `ft/attention_mask`, `ft/labels`, `ft/loss`) made by
  dalle-mini's processor from finetune.jsonl's captions.
- vqgan: the taming-made VQGAN of tests/fixtures/vqgan_tiny in vqgan-jax's layout and config.json,
  saved with flax.serialization.to_bytes (bfloat16, as the source fixture holds bfloat16 values).
- clip: transformers' FlaxCLIPModel on a tiny config (`save_pretrained`), with expected_pt.safetensors:
  the same weights under transformers' PyTorch names and layouts (made here with numpy), and
  expected.safetensors: `input_ids`, `pixel_values` (NCHW) and the reference `text_embeds`,
  `image_embeds`, `logits_per_image`.
- words.txt: a small word-frequency table (dalle-mini's enwiki-words-frequency.txt format) for the
  hashtag rule; dalle-mini's normaliser is pointed at it instead of the hub file.
"""

import json
import os
import shutil
import sys

import numpy as np

import jax
import jax.numpy as jnp

jax.experimental.PartitionSpec = jax.sharding.PartitionSpec  # dalle-mini 0.1.5 predates the move
import dalle_mini.model.text as dm_text

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "released")
WORDS = os.path.join(OUT, "words.txt")
# dalle-mini downloads its word-frequency table from the hub; use ours.
dm_text.hf_hub_download = lambda *a, **k: WORDS

from dalle_mini.model import DalleBart, DalleBartConfig, DalleBartProcessor, DalleBartTokenizer
from flax.serialization import to_bytes
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file
from tokenizers import ByteLevelBPETokenizer

CAPTIONS = [
    "a red square on a blue background",
    "two green circles next to a yellow triangle",
    "a small white star above a large black square",
    "an orange circle and a purple square",
    "three blue triangles in a row",
    "a photo of a cat sitting on a red chair",
    "a painting of mountains at sunset",
    "a drawing of a tree with green leaves",
] * 4
WORD_COUNTS = [("the", 1000), ("a", 900), ("sunset", 50), ("beach", 60), ("red", 80), ("car", 70), ("happy", 40),
               ("new", 90), ("year", 85), ("love", 75), ("cat", 65), ("dog", 66), ("blue", 55), ("sky", 45),
               ("summer", 35), ("time", 95), ("art", 30), ("work", 88), ("day", 92), ("night", 77)]
FT_CAPTIONS = ["a red square", "two blue circles", "a green triangle on a white background", "a yellow star"]


def make_tokenizer(out_dir, vocab_size):
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CAPTIONS, vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tmp = os.path.join(out_dir, "_bpe")
    os.makedirs(tmp, exist_ok=True)
    bpe.save_model(tmp)
    tok = DalleBartTokenizer(vocab_file=os.path.join(tmp, "vocab.json"), merges_file=os.path.join(tmp, "merges.txt"))
    shutil.rmtree(tmp)
    tok.save_pretrained(out_dir)
    # save_pretrained also writes added_tokens.json; released models do not have it.
    for extra in ("added_tokens.json",):
        p = os.path.join(out_dir, extra)
        if os.path.exists(p):
            os.remove(p)
    return tok


def dallebart(name, use_scan, dtype):
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    tok = make_tokenizer(out, 300)
    vocab = len(tok)
    config = DalleBartConfig(
        normalize_text=True, encoder_vocab_size=vocab, image_vocab_size=64, image_length=16, max_text_length=16,
        encoder_layers=2, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=4,
        decoder_attention_heads=4, d_model=32, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        init_std=0.02, gradient_checkpointing=False, use_scan=use_scan)
    model = DalleBart(config, seed=0, dtype=jnp.float32, _do_init=True)
    rng = np.random.default_rng(1)
    # Perturb every parameter so that layer-norm scales and biases matter in the comparison.
    params = jax.tree_util.tree_map(lambda p: (np.asarray(p) + rng.normal(0, 0.1, p.shape)).astype(dtype), model.params)
    model.save_pretrained(out, params=params)

    compute = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    b, t_text, t_img = 2, 16, 16
    input_ids = rng.integers(4, vocab, (b, t_text)).astype(np.int32)
    attention_mask = np.ones((b, t_text), np.int32)
    attention_mask[1, t_text // 2:] = 0
    labels = rng.integers(0, 64, (b, t_img)).astype(np.int32)

    def loss_of(ids, mask, labels):
        dec = np.concatenate([np.full((labels.shape[0], 1), 64, np.int32), labels[:, :-1]], 1)
        logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, params=compute, train=False).logits
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        return float(-jnp.take_along_axis(logp, labels[..., None], -1).mean()), np.asarray(logits, np.float32)

    loss, logits = loss_of(input_ids, attention_mask, labels)
    processor = DalleBartProcessor(tok, normalize_text=True, max_text_length=16)
    enc = processor(FT_CAPTIONS)
    ft_labels = np.random.default_rng(2).integers(0, 64, (len(FT_CAPTIONS), t_img)).astype(np.int32)
    ft_loss, _ = loss_of(np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32), ft_labels)
    with open(os.path.join(out, "finetune.jsonl"), "w") as f:
        for c, l in zip(FT_CAPTIONS, ft_labels):
            f.write(json.dumps({"caption": c, "encoding": [int(x) for x in l]}) + "\n")
    save_file({
        "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "logits": logits,
        "loss": np.asarray(loss, np.float32).reshape(()),
        "ft/input_ids": np.asarray(enc["input_ids"], np.int32), "ft/attention_mask": np.asarray(enc["attention_mask"], np.int32),
        "ft/labels": ft_labels, "ft/loss": np.asarray(ft_loss, np.float32).reshape(()),
    }, os.path.join(out, "expected.safetensors"))
    n = len(flatten_dict(params))
    print(f"{name}: {n} arrays, use_scan={use_scan}, {np.dtype(dtype).name}, loss {loss:.6f}, fine-tune loss {ft_loss:.6f}")


def vqgan():
    src = os.path.join(ROOT, "tests", "fixtures", "vqgan_tiny")
    import yaml
    cfg = yaml.safe_load(open(os.path.join(src, "config.yaml")))
    cfg = cfg.get("model", cfg)
    # The taming weights are bfloat16 values: stored as bfloat16 (exactly), which also exercises that dtype.
    params = {k: np.asarray(jnp.asarray(v, jnp.bfloat16)) for k, v in load_file(os.path.join(src, "params.safetensors")).items()}
    out = os.path.join(OUT, "vqgan")
    os.makedirs(out, exist_ok=True)
    tree = unflatten_dict({tuple(k.split(".")): v for k, v in params.items()})
    with open(os.path.join(out, "flax_model.msgpack"), "wb") as f:
        f.write(to_bytes(tree))
    config = {"architectures": ["VQModel"], "ch": cfg["ch"], "out_ch": 3, "in_channels": 3,
              "num_res_blocks": cfg["num_res_blocks"], "resolution": cfg["resolution"], "z_channels": cfg["z_channels"],
              "ch_mult": cfg["ch_mult"], "attn_resolutions": cfg["attn_resolutions"], "n_embed": cfg["n_embed"],
              "embed_dim": cfg["embed_dim"], "dropout": 0.0, "double_z": False, "resamp_with_conv": True,
              "give_pre_end": False, "transformers_version": "4.25.1"}
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=2)
    print(f"vqgan: {len(params)} arrays")


def clip():
    from transformers import CLIPConfig, FlaxCLIPModel
    out = os.path.join(OUT, "clip")
    os.makedirs(out, exist_ok=True)
    tok = make_tokenizer(out, 300)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=16)
    model = FlaxCLIPModel(config, seed=0)
    model.save_pretrained(out)
    flat = {".".join(k): np.asarray(v) for k, v in flatten_dict(model.params).items()}
    pt = {}
    for k, v in flat.items():
        base, leaf = k.rsplit(".", 1) if "." in k else ("", k)
        if leaf == "kernel" and v.ndim == 4:
            pt[base + ".weight"] = np.ascontiguousarray(v.transpose(3, 2, 0, 1))
        elif leaf == "kernel":
            pt[base + ".weight"] = np.ascontiguousarray(v.T)
        elif leaf in ("embedding", "scale"):
            pt[base + ".weight"] = v
        else:
            pt[k] = v
    save_file(pt, os.path.join(out, "expected_pt.safetensors"))
    rng = np.random.default_rng(3)
    ids = rng.integers(4, len(tok), (2, 16)).astype(np.int32)
    pixels = rng.normal(0, 1, (2, 3, 32, 32)).astype(np.float32)
    o = model(input_ids=ids, pixel_values=pixels)
    save_file({"input_ids": ids, "pixel_values": pixels, "text_embeds": np.asarray(o.text_embeds),
               "image_embeds": np.asarray(o.image_embeds), "logits_per_image": np.asarray(o.logits_per_image)},
              os.path.join(out, "expected.safetensors"))
    print(f"clip: {len(flat)} arrays")


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(WORDS, "w") as f:
        f.writelines(f"{w} {c}\n" for w, c in WORD_COUNTS)
    dallebart("dallebart_f32", False, np.float32)
    dallebart("dallebart_f32_scan", True, np.float32)
    dallebart("dallebart_f16", False, np.float16)
    dallebart("dallebart_f16_scan", True, np.float16)
    vqgan()
    clip()


if __name__ == "__main__":
    sys.exit(main())
