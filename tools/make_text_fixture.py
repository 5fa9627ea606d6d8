#!/usr/bin/env python3
"""Writes tests/fixtures/text_normalizer/: 200 varied captions run through
dalle-mini's `DalleBartProcessor` (its TextNormalizer, then the tokenizer), for
tests/text_normalizer.rs.

Run by hand in the reference environment described in tools/make_released_fixtures.py:

    ~/venvs/ref/bin/python tools/make_text_fixture.py

Files: captions.jsonl (`category`, `caption`, dalle-mini's `normalized` text and `input_ids` padded to 64),
tokenizer.json + the other tokenizer files (a byte-level BPE trained on the normalised captions),
and words.txt, the word-frequency table used for hashtags (dalle-mini's hub file is replaced by it).
"""
import json
import os
import shutil

import jax

jax.experimental.PartitionSpec = jax.sharding.PartitionSpec
import dalle_mini.model.text as dm_text

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "text_normalizer")
WORDS = os.path.join(OUT, "words.txt")
dm_text.hf_hub_download = lambda *a, **k: WORDS

from dalle_mini.model import DalleBartProcessor, DalleBartTokenizer
from dalle_mini.model.text import TextNormalizer
from tokenizers import ByteLevelBPETokenizer

# Word-frequency table, most frequent first (dalle-mini's file has counts in a second column).
WORDS_BY_FREQUENCY = """the of and in to a is was for on as with by he at from his an it were are which this be or
also had first one their its new after but who not they have has her she two been other when there all
time during into school more may years over only year most would world city some where between later three
state such then national used made known under many university united while part season team these american
than film second born south became states war through being including both before north high however people
family early history album area them series against until since district county name work life group
music following number company several four called played released career league game government house
city new york love beach sunset summer happy birthday day night sky blue red green dog cat car photo art
travel food nature flower flowers tree trees sea ocean mountain mountains sun moon star stars water fire
life style fashion beauty black white golden hour best friend friends good morning vibes weekend fun
throwback thursday instagood photooftheday cute me selfie like follow repost tbt""".split()


def captions():
    c = []
    add = lambda cat, items: c.extend((cat, x) for x in items)
    add("plain", ["a red square on a blue background", "A Painting Of A Cat Wearing A Hat", "two dogs playing in the snow",
                  "an astronaut riding a horse on the moon", "a bowl of fruit on a wooden table", "a city skyline at night",
                  "a watercolor of a lighthouse", "sunflowers in a field under a cloudy sky", "a close up of a bee on a flower",
                  "a castle on a hill surrounded by fog", "a bicycle leaning against a brick wall", "a cup of coffee and a croissant",
                  "Portrait of an old man with a beard", "a small boat on a calm lake", "three birds on a wire",
                  "a robot reading a book in a library", "a snowy mountain village", "an owl sitting on a branch at dusk",
                  "a vintage car parked on a street", "a plate of spaghetti with meatballs"])
    add("accents", ["café au lait on a terrace", "the Ærø island ferry", "crème brûlée with raspberries", "a señor in a sombrero",
                    "Zürich old town in winter", "naïve art of a façade", "Ångström units diagram", "a piñata at a party",
                    "São Paulo street market", "Dvořák concert poster", "smörgåsbord on a table", "Île-de-France map",
                    "Łódź city center", "a jalapeño pepper", "Björk on stage", "an œuvre by Monet"])
    add("non-latin", ["東京の夜景", "一只猫在睡觉", "Москва зимой", "Ελληνικό χωριό", "مدينة في الليل", "서울 타워", "富士山と桜",
                      "красная площадь", "शहर की सड़क", "ท้องฟ้าสีฟ้า", "a cat 猫 sleeping", "Ｆｕｌｌｗｉｄｔｈ text"])
    add("emoji", ["a happy dog 🐶", "sunset 🌅 at the beach 🏖️", "I ❤️ pizza 🍕", "party time 🎉🎉🎉", "thumbs up 👍🏽",
                  "rocket 🚀 to the moon 🌕", "a cat 😺 and a dog 🐕", "coffee ☕ and a book 📚", "rainbow 🌈 over a field",
                  "fire 🔥 in the night", "flag 🇫🇷 on a building", "smiling face 😊 with hearts", "family 👨‍👩‍👧 at the park",
                  "a heart ♥ shape", "star ⭐ in the sky", "laughing 😂😂", "sparkles ✨ everywhere", "ok 👌"])
    add("urls", ["a photo from https://example.com/image.jpg of a cat", "see http://www.test.org for details",
                 "https://t.co/abc123 new album cover", "logo of www.google.com", "download at http://x.y/z?a=1&b=2 now",
                 "image https://cdn.site.io/pics/12345.png", "visit example.com today", "a link http://foo.bar/baz, and more text"])
    add("numbers", ["a house built in 1,250,000 bricks", "3.5 inch floppy disk", "12/25/2020 christmas party", "room 404",
                    "a 1,000 piece puzzle", "version 2.0.1 release", "50% off sale", "$100 bill on a table", "the year 1999",
                    "temperature 36.6 degrees", "iPhone 12 pro max", "3/4 cup of sugar", "route 66 sign", "top 10 beaches",
                    "a 4x4 truck", "1st place trophy", "covid-19 mask", "score 3-2 final", "pi is 3.14159", "24/7 store"])
    add("hashtags", ["#sunset at the #beach", "#happybirthday to me", "#love #life #happy", "my #dog is the #best",
                     "#throwbackthursday photo", "#newyork city lights", "#summervibes #beachday", "#tbt to last summer",
                     "#photooftheday #nature", "#instagood selfie", "#blackandwhite portrait", "#goodmorning world",
                     "#art #painting", "#2020 was a year", "#flowers_of_instagram", "#redcar on the road"])
    add("quotes", ["the dog's ball", "it's a sunny day", "I'm happy, aren't you?", "\"a quote\" on a wall", "'single quotes' here",
                   "they'll come, we've seen", "you're the best", "the 90's style", "`backticks` in text", "she said \"hello\"",
                   "don't stop", "l'amour de paris", "rock 'n' roll band", "“curly quotes” and ‘single’", "I'd like that"])
    add("html", ["Tom &amp; Jerry cartoon", "a &lt;b&gt;bold&lt;/b&gt; sign", "<b>bold</b> text in html", "fish &amp;amp; chips",
                 "caf&eacute; sign", "quote &quot;hi&quot;", "&#169; copyright logo", "<a href='x'>link</a> text",
                 "line<br>break", "5 &gt; 3 math"])
    add("punctuation", ["wow!!!!! amazing", "what?? really...", "hello... world", "a-b-c blocks", "left/right arrows",
                        "sooooo cute", "ahhhhh scary", "item: value; other", "(parenthesis) and [brackets]", "a+b=c",
                        "tilde ~ sign", "x*y product", "snake_case_name", "back\\slash path", "pipe | separated",
                        "{curly} braces", "multiple,,, commas", "  extra   spaces  ", "tab\tseparated\ttext", "new\nline caption",
                        "well-known author", "e-mail address", "self-portrait in oil", "ice-cream cone", "up-to-date news",
                        ",leading comma", "trailing comma,", "VIII roman numeral", "zzzz sleeping", "!!!"])
    add("wiki", ["[1] the first reference", "a fact [23]", "text with [4] reference inside"])
    add("mojibake", ["cafÃ© au lait", "donâ€™t stop", "SÃ£o Paulo", "naÃ¯ve art"])
    add("mixed", ["Café #sunset 🌅 at https://x.com, 1,000 likes!!!", "I'm in Zürich 🇨🇭 — it's 25°C", "<i>Art</i> &amp; design #2021",
                  "Ｔｏｋｙｏ 東京 🗼 night", "price: $1,299.99 (was $1,499)", "“Hello”—she said…", "5'11\" tall man",
                  "#MondayMotivation: don't give up!!", "temp: -5°C ❄️", "A+ grade 📚"])
    while len(c) < 200:
        c.append(("plain", f"a picture of {len(c)} red balloons over the sea"))
    return c[:200]


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(WORDS, "w") as f:
        f.writelines(f"{w} {1000000 // (i + 1)}\n" for i, w in enumerate(dict.fromkeys(WORDS_BY_FREQUENCY)))
    items = captions()
    normalizer = TextNormalizer()
    normalized = [normalizer(c) for _, c in items]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(normalized * 3, vocab_size=1200, min_frequency=2,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tmp = os.path.join(OUT, "_bpe")
    os.makedirs(tmp, exist_ok=True)
    bpe.save_model(tmp)
    tok = DalleBartTokenizer(vocab_file=os.path.join(tmp, "vocab.json"), merges_file=os.path.join(tmp, "merges.txt"))
    shutil.rmtree(tmp)
    tok.save_pretrained(OUT)
    for extra in ("added_tokens.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        p = os.path.join(OUT, extra)
        if os.path.exists(p):
            os.remove(p)
    processor = DalleBartProcessor(tok, normalize_text=True, max_text_length=64)
    enc = processor([c for _, c in items])
    with open(os.path.join(OUT, "captions.jsonl"), "w") as f:
        for (cat, cap), norm, ids in zip(items, normalized, enc["input_ids"]):
            f.write(json.dumps({"category": cat, "caption": cap, "normalized": norm, "input_ids": [int(i) for i in ids]}, ensure_ascii=False) + "\n")
    print(f"{len(items)} captions, vocabulary {len(tok)}")


if __name__ == "__main__":
    main()
