//! Caption normalisation, tokenizer training, and encoding with BOS/EOS and padding.

mod data_fixtures;

use dalle_xla::data::{normalize_caption, train_tokenizer, TextEncoder};
use data_fixtures::{caption, scratch, tokenizer};

/// Expected outputs computed with dalle-mini's `TextNormalizer` rules (for
/// inputs on which ftfy and unidecode change nothing).
#[test]
fn normalisation_matches_dalle_mini_rules() {
    let cases = [
        ("  A Photo of a CAT!!   on the  Sofa.  ", " a photo of a cat, on the sofa"),
        ("Tom &amp;amp; Jerry &quot;cartoon&quot;", " tom & jerry \" cartoon \""),
        ("<person> and <person> at the beach", " people at the beach"),
        ("[12] The Eiffel Tower, Paris [3]", " the eiffel tower, paris"),
        ("<b>Bold</b> text http://example.com/x.jpg here", " bold text here"),
        ("Population 1,234,567 in 2021", " population 1234567 in 2021"),
        ("version 2.5 of the app", " version 2.5 of the app"),
        ("it's the dog's bone, they'll see", " it's the dog's bone, they'll see"),
        ("on 12/25 we meet", " on 12/25 we meet"),
        ("well-known 50% off & more", " well known 50 % off & more"),
        ("a #sunset_beach\\photo", " a sunset beach photo"),
        ("\"quoted\" `text` 'here'", " \" quoted \" text \" here \""),
        ("sooooo goooood viii", " so god viii"),
        ("(a) [b] {c} d|e: f; g? h! i=j+k~l", " a, b, c, d, e, f, g, h, i, j, k, l"),
        (",leading and trailing,", " leading and trailing"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalize_caption(input), expected, "input {input:?}");
    }
}

/// Unicode inputs: what unidecode would give for accents, typographic
/// punctuation and compatibility forms.
#[test]
fn normalisation_simplifies_unicode() {
    assert_eq!(normalize_caption("Café Déjà Vu"), " cafe deja vu");
    assert_eq!(normalize_caption("\u{201C}Smart\u{201D} quotes \u{2014} dash"), " \" smart \" quotes, dash");
    assert_eq!(normalize_caption("wait\u{2026} what"), " wait, what");
    assert_eq!(normalize_caption("ｆｕｌｌｗｉｄｔｈ ＡＢＣ"), " fullwidth abc");
    assert_eq!(normalize_caption("no\u{00A0}break"), " no break");
    // Other scripts are transliterated as unidecode does (dalle-mini gives the same).
    assert_eq!(normalize_caption("一只猫"), " yi zhi mao");
    // Emoji become their names.
    assert_eq!(normalize_caption("a dog 🐶"), " a dog, dog face");
}

#[test]
fn normalisation_is_idempotent_on_its_output() {
    for i in 0..50 {
        let once = normalize_caption(&caption(i * 37));
        assert_eq!(normalize_caption(&once), once);
    }
}

#[test]
fn trained_tokenizer_encodes_with_bos_eos_and_padding() {
    let encoder = TextEncoder::load(&tokenizer().display().to_string(), 16).expect("load tokenizer");
    assert!(encoder.vocab_size() <= 500 && encoder.vocab_size() > 261, "vocab {}", encoder.vocab_size());
    assert_eq!(encoder.pad_id(), 1);

    let short = encoder.encode("A red cat").expect("encode");
    assert_eq!(short.input_ids.len(), 16);
    assert_eq!(short.attention_mask.len(), 16);
    let used = short.attention_mask.iter().filter(|&&m| m == 1).count();
    // Mask is a prefix of ones, then zeros, matching the ids: <s> tokens </s> <pad>...
    assert!(short.attention_mask[..used].iter().all(|&m| m == 1) && short.attention_mask[used..].iter().all(|&m| m == 0));
    assert_eq!(short.input_ids[0], 0, "<s> first");
    assert_eq!(short.input_ids[used - 1], 2, "</s> last");
    assert!(short.input_ids[used..].iter().all(|&t| t == 1), "padding with <pad>");
    assert!(used >= 4, "at least one token per word: {:?}", short.input_ids);
    // The tokens decode back to the normalised caption.
    assert_eq!(encoder.decode(&short.input_ids).expect("decode"), normalize_caption("A red cat"));

    // A long caption is truncated to the length and still ends with </s>.
    let long = encoder.encode(&(0..40).map(caption).collect::<Vec<_>>().join(" ")).expect("encode");
    assert_eq!(long.input_ids.len(), 16);
    assert!(long.attention_mask.iter().all(|&m| m == 1));
    assert_eq!((long.input_ids[0], long.input_ids[15]), (0, 2));
}

#[test]
fn tokenizer_merges_frequent_words() {
    // "kitchen" appears in many training captions, so BPE learns it as few tokens.
    let encoder = TextEncoder::load(&tokenizer().display().to_string(), 64).expect("load tokenizer");
    let frequent = encoder.encode("kitchen").expect("encode");
    let rare = encoder.encode("zqxjv").expect("encode");
    let len = |e: &dalle_xla::data::EncodedText| e.attention_mask.iter().sum::<i32>();
    assert!(len(&frequent) < len(&rare), "frequent {:?} rare {:?}", frequent.input_ids, rare.input_ids);
}

#[test]
fn tokenizer_training_reports_and_rejects_bad_input() {
    let dir = scratch("tokenizer-errors");
    let captions = dir.join("captions.txt");
    std::fs::write(&captions, "a cat\n\n   \na dog\n").expect("write");
    let info = train_tokenizer(&captions, 300, &dir.join("out/tok.json")).expect("train");
    assert_eq!((info.captions, info.skipped_blank), (2, 2));
    assert!(dir.join("out/tok.json").is_file());

    let err = train_tokenizer(&captions, 100, &dir.join("small.json")).expect_err("vocab too small").to_string();
    assert!(err.contains("at least 261"), "{err}");
    let err = train_tokenizer(&dir.join("missing.txt"), 300, &dir.join("x.json")).expect_err("missing file").to_string();
    assert!(err.contains("missing.txt"), "{err}");
    std::fs::write(dir.join("blank.txt"), "\n \n").expect("write");
    let err = train_tokenizer(&dir.join("blank.txt"), 300, &dir.join("x.json")).expect_err("blank file").to_string();
    assert!(err.contains("no non-blank lines"), "{err}");
}

#[test]
fn tokenizer_without_bart_tokens_is_rejected() {
    let dir = scratch("tokenizer-not-bart");
    let path = dir.join("tok.json");
    std::fs::write(&path, "not json").expect("write");
    let err = TextEncoder::load(&path.display().to_string(), 16).err().expect("invalid json").to_string();
    assert!(err.contains("tok.json") && err.contains("not a valid tokenizer.json"), "{err}");
    let err = TextEncoder::load(&tokenizer().display().to_string(), 1).err().expect("length 1").to_string();
    assert!(err.contains("at least 2"), "{err}");
}
