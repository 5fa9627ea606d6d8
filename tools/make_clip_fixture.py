"""Makes tests/fixtures/clip_tiny: a tiny random CLIP in Hugging Face's layout
(config.json, model.safetensors with PyTorch parameter names, tokenizer.json,
vocab.json, merges.txt, preprocessor_config.json) and what transformers
computes with it (expected.safetensors, expected.json).

transformers' FlaxCLIPModel computes the same function as the PyTorch
CLIPModel; its parameters are written under the PyTorch names and layouts
(Linear [out, in], patch embedding OIHW) with the rule transformers itself
uses to convert between the two (kernel -> weight transposed, scale ->
weight, embedding -> weight).

Run by hand (not in CI):
    python3.11 -m venv ~/venvs/clip
    ~/venvs/clip/bin/pip install jax==0.4.13 jaxlib==0.4.13 flax==0.6.11 \
        transformers==4.25.1 tokenizers==0.13.3 numpy==1.26.4 safetensors pillow
    ~/venvs/clip/bin/python tools/make_clip_fixture.py tests/fixtures/clip_tiny
"""
import collections
import json
import os
import sys

import jax
import numpy as np
from flax.traverse_util import flatten_dict
from PIL import Image
from safetensors.numpy import save_file
from transformers import CLIPConfig, CLIPFeatureExtractor, CLIPTokenizer, CLIPTokenizerFast, FlaxCLIPModel
from transformers.models.clip.tokenization_clip import bytes_to_unicode

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/clip_tiny"
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)

# --- a tiny byte-level BPE vocabulary in CLIP's format ----------------------
corpus = (
    "a photo of a red circle on the left . a blue square at the top right ! two green triangles "
    "below a yellow star , the small purple circle and the large orange square above it"
).split()
byte_chars = list(bytes_to_unicode().values())
vocab = byte_chars + [c + "</w>" for c in byte_chars]
words = collections.Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in corpus)
merges = []
while len(merges) < 60:
    pairs = collections.Counter()
    for w, n in words.items():
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += n
    if not pairs:
        break
    (a, b), _ = pairs.most_common(1)[0]
    merges.append((a, b))
    vocab.append(a + b)
    merged = collections.Counter()
    for w, n in words.items():
        i, new = 0, []
        while i < len(w):
            if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                new.append(a + b)
                i += 2
            else:
                new.append(w[i])
                i += 1
        merged[tuple(new)] += n
    words = merged
vocab += ["<|startoftext|>", "<|endoftext|>"]
with open(f"{out}/vocab.json", "w") as f:
    json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
with open(f"{out}/merges.txt", "w") as f:
    f.write("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")

fast = CLIPTokenizerFast(vocab_file=f"{out}/vocab.json", merges_file=f"{out}/merges.txt")
fast.save_pretrained(out)
for extra in ["added_tokens.json"]:
    if os.path.exists(f"{out}/{extra}"):
        os.remove(f"{out}/{extra}")
slow = CLIPTokenizer(vocab_file=f"{out}/vocab.json", merges_file=f"{out}/merges.txt")

prompts = [
    "A photo of a red circle",
    "two GREEN triangles, below a yellow star!",
    "the  small purple\tcircle and the large orange square above it",
    " ".join(["a blue square at the top right"] * 14),  # over 77 tokens: truncated
]
enc = fast(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="np")
slow_ids = slow(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="np")["input_ids"]
print("slow and fast tokenizers agree:", bool((slow_ids == enc["input_ids"]).all()))
input_ids = enc["input_ids"].astype(np.int32)

# --- the model ----------------------------------------------------------------
config = CLIPConfig(
    text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=24, intermediate_size=29, num_hidden_layers=2, num_attention_heads=3,
                       image_size=32, patch_size=8, hidden_act="gelu"),
    projection_dim=16,
)
model = FlaxCLIPModel(config, seed=0)
# Random biases and norms too, so every tensor's loading is tested.
params = jax.tree_util.tree_map(lambda p: np.asarray(p) + rng.normal(0, 0.05, p.shape).astype(np.float32), model.params)
params["logit_scale"] = np.asarray(np.log(20.0), np.float32)
config.save_pretrained(out)

# --- images and preprocessing ------------------------------------------------
fe = CLIPFeatureExtractor(size=32, crop_size=32, do_resize=True, do_center_crop=True)
fe.save_pretrained(out)
images = []
for i, (w, h) in enumerate([(48, 40), (37, 64), (32, 32)]):
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / (3 + i) + c) * np.cos(y / (4 + c)) for c in range(3)], -1)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(f"{out}/image_{i}.png")
    images.append(Image.open(f"{out}/image_{i}.png").convert("RGB"))
pixel_values = fe(images=images, return_tensors="np")["pixel_values"].astype(np.float32)  # NCHW

res = model(input_ids=input_ids, pixel_values=pixel_values, params=params)

# --- weights under PyTorch names ---------------------------------------------
torch_params = {}
for path, value in flatten_dict(params).items():
    value = np.asarray(value, np.float32)
    *head, leaf = path
    if leaf == "kernel" and value.ndim == 4:
        leaf, value = "weight", value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    elif leaf == "kernel":
        leaf, value = "weight", value.T  # [in, out] -> [out, in]
    elif leaf in ("scale", "embedding"):
        leaf = "weight"
    torch_params[".".join(list(head) + [leaf])] = np.array(value, order="C")  # keeps 0-d logit_scale 0-d
names = sorted(torch_params)
# transformers before 4.31 also saved the position_ids buffers; loaders must skip them.
tensors = dict(torch_params)
tensors["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
tensors["vision_model.embeddings.position_ids"] = np.arange(config.vision_config.num_positions if hasattr(config.vision_config, "num_positions") else 17, dtype=np.int64)[None]
save_file(tensors, f"{out}/model.safetensors", metadata={"format": "pt"})

save_file(
    {
        "input_ids": input_ids,
        "pixel_values": np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1)),  # NHWC
        "text_embeds": np.asarray(res.text_embeds, np.float32),
        "image_embeds": np.asarray(res.image_embeds, np.float32),
        "logits_per_image": np.asarray(res.logits_per_image, np.float32),
    },
    f"{out}/expected.safetensors",
)
with open(f"{out}/expected.json", "w") as f:
    json.dump({"prompts": prompts, "images": [f"image_{i}.png" for i in range(3)], "parameter_names": names}, f, indent=1)
print("parameters:", len(names), "logits_per_image:", np.asarray(res.logits_per_image))
