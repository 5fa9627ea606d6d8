//! CLIP's text side: byte-level BPE with `</w>` word ends, lowercasing and
//! whitespace cleanup, `<|startoftext|> ... <|endoftext|>` and padding or
//! truncation to the context length (77), as transformers' `CLIPTokenizerFast`
//! with `padding="max_length", truncation=True`.

use crate::error::{Error, Result};
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::Tokenizer;

pub const BOS: &str = "<|startoftext|>";
pub const EOS: &str = "<|endoftext|>";

pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    pub bos: i32,
    pub eos: i32,
    pub pad: i32,
    /// Ids per prompt after padding or truncation.
    pub context_length: usize,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// The `tokenizer.json` transformers writes for a CLIP vocabulary and merge list.
fn clip_tokenizer_json(vocab: Value, merges: Vec<String>) -> Value {
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": EOS, "continuing_subword_prefix": "", "end_of_word_suffix": "</w>",
            "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": merges
        }
    })
}

/// The pad token named by `tokenizer_config.json` or `special_tokens_map.json` in `dir`, if any.
fn pad_token(dir: &Path) -> Result<Option<String>> {
    for file in ["special_tokens_map.json", "tokenizer_config.json"] {
        let path = dir.join(file);
        if !path.exists() {
            continue;
        }
        let v: Value = serde_json::from_str(&read(&path)?).map_err(|e| Error::Invalid(format!("{} is not valid JSON: {e}", path.display())))?;
        match v.get("pad_token") {
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            Some(Value::Object(o)) => {
                if let Some(Value::String(s)) = o.get("content") {
                    return Ok(Some(s.clone()));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

impl ClipTokenizer {
    /// Loads `tokenizer.json` from `path` (a file, or a checkpoint directory
    /// holding `tokenizer.json` or `vocab.json` + `merges.txt`).
    pub fn load(path: &Path, context_length: usize) -> Result<ClipTokenizer> {
        let (tokenizer, dir) = if path.is_dir() {
            let file = path.join("tokenizer.json");
            let tokenizer = if file.exists() {
                Self::from_tokenizer_json(&file)?
            } else if path.join("vocab.json").exists() && path.join("merges.txt").exists() {
                Self::from_vocab_merges(&path.join("vocab.json"), &path.join("merges.txt"))?
            } else {
                return Err(Error::Invalid(format!("{} holds neither tokenizer.json nor vocab.json + merges.txt", path.display())));
            };
            (tokenizer, Some(path.to_path_buf()))
        } else {
            (Self::from_tokenizer_json(path)?, path.parent().map(Path::to_path_buf))
        };
        let pad = match &dir {
            Some(d) => pad_token(d)?,
            None => None,
        };
        Self::new(tokenizer, pad.as_deref().unwrap_or(EOS), context_length, &path.display().to_string())
    }

    fn from_tokenizer_json(path: &Path) -> Result<Tokenizer> {
        Tokenizer::from_file(path).map_err(|e| Error::Invalid(format!("{} is not a valid tokenizer.json: {e}", path.display())))
    }

    /// Builds the tokenizer from OpenAI-style `vocab.json` and `merges.txt`
    /// (whose first line is a `#version` header).
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
        let vocab_json: Value = serde_json::from_str(&read(vocab)?).map_err(|e| Error::Invalid(format!("{} is not valid JSON: {e}", vocab.display())))?;
        if !vocab_json.is_object() {
            return Err(Error::Invalid(format!("{} must map tokens to ids", vocab.display())));
        }
        let text = read(merges)?;
        let mut merge_list = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if (i == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                continue;
            }
            if line.split(' ').count() != 2 {
                return Err(Error::Invalid(format!("{} line {}: a merge must be two tokens separated by one space, got '{line}'", merges.display(), i + 1)));
            }
            merge_list.push(line.to_string());
        }
        let json = clip_tokenizer_json(vocab_json, merge_list).to_string();
        json.parse::<Tokenizer>().map_err(|e| Error::Invalid(format!("{} and {} do not make a tokenizer: {e}", vocab.display(), merges.display())))
    }

    /// Wraps a CLIP tokenizer; `name` is used in messages.
    pub fn new(tokenizer: Tokenizer, pad: &str, context_length: usize, name: &str) -> Result<ClipTokenizer> {
        if context_length < 2 {
            return Err(Error::Invalid(format!("the context length must be at least 2 to hold {BOS} and {EOS}, got {context_length}")));
        }
        let id = |token: &str| -> Result<i32> {
            let id = tokenizer
                .token_to_id(token)
                .ok_or_else(|| Error::Invalid(format!("tokenizer '{name}' has no '{token}' token; a CLIP tokenizer needs {BOS} and {EOS}")))?;
            i32::try_from(id).map_err(|_| Error::Invalid(format!("tokenizer '{name}': id {id} of '{token}' does not fit in i32")))
        };
        Ok(ClipTokenizer { bos: id(BOS)?, eos: id(EOS)?, pad: id(pad)?, tokenizer, context_length })
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.tokenizer.to_string(false).map_err(|e| Error::Invalid(format!("serialising the tokenizer: {e}")))
    }

    /// Number of ids the tokenizer can produce.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// `context_length` ids: BOS, the prompt's tokens (truncated so EOS fits), EOS, then padding.
    pub fn encode(&self, prompt: &str) -> Result<Vec<i32>> {
        let enc = self.tokenizer.encode(prompt, false).map_err(|e| Error::Invalid(format!("tokenizing '{prompt}': {e}")))?;
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(self.bos);
        ids.extend(enc.get_ids().iter().take(self.context_length - 2).map(|&i| i as i32));
        ids.push(self.eos);
        ids.resize(self.context_length, self.pad);
        Ok(ids)
    }

    /// Ids of several prompts, row after row (`[prompts, context_length]`).
    pub fn encode_batch(&self, prompts: &[String]) -> Result<Vec<i32>> {
        let mut all = Vec::with_capacity(prompts.len() * self.context_length);
        for p in prompts {
            all.extend(self.encode(p)?);
        }
        Ok(all)
    }
}

/// Byte-level alphabet in OpenAI's order: every byte, then every byte ending a word.
fn base_vocab() -> Vec<String> {
    let mut bytes: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    // OpenAI's `bytes_to_unicode` order: printable ranges first, then the remapped rest.
    bytes.sort_by_key(|c| {
        let u = *c as u32;
        let printable = (0x21..=0x7E).contains(&u) || (0xA1..=0xAC).contains(&u) || (0xAE..=0xFF).contains(&u);
        (!printable, u)
    });
    let mut v: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    v.extend(bytes.iter().map(|c| format!("{c}</w>")));
    v
}

/// Trains a CLIP-format byte-level BPE of at most `vocab_size` tokens on
/// `captions` (same normalisation, word split and `</w>` word ends as OpenAI's;
/// the special tokens come last, so `<|endoftext|>` has the largest id).
/// Returns the `tokenizer.json` text.
pub fn train_clip_tokenizer(captions: &[String], vocab_size: usize) -> Result<String> {
    let base = base_vocab();
    let minimum = base.len() + 2;
    if vocab_size < minimum {
        return Err(Error::Invalid(format!("a CLIP tokenizer needs at least {minimum} tokens (512 byte tokens + 2 special), got {vocab_size}")));
    }
    if captions.is_empty() {
        return Err(Error::Invalid("no captions to train the tokenizer on".into()));
    }
    let vocab_of = |tokens: &[String]| Value::Object(tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect());
    let mut tokenizer: Tokenizer = clip_tokenizer_json(vocab_of(&base), vec![]).to_string().parse().map_err(|e| Error::Invalid(format!("building the base tokenizer: {e}")))?;
    let trainer = tokenizers::models::bpe::BpeTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .initial_alphabet(tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect())
        .end_of_word_suffix("</w>".to_string())
        .build();
    let mut trainer: tokenizers::models::TrainerWrapper = trainer.into();
    tokenizer.train(&mut trainer, captions.iter()).map_err(|e| Error::Invalid(format!("training the CLIP tokenizer: {e}")))?;
    let trained: Value = serde_json::from_str(&tokenizer.to_string(false).map_err(|e| Error::Invalid(format!("{e}")))?)
        .map_err(|e| Error::Invalid(format!("reading the trained tokenizer: {e}")))?;
    // Merges are "a b" strings or ["a", "b"] pairs depending on the format version.
    let merges: Vec<(String, String)> = trained["model"]["merges"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                    Value::Array(p) if p.len() == 2 => Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut tokens = base;
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();
    let mut kept = Vec::new();
    for (a, b) in merges {
        if tokens.len() + 2 >= vocab_size {
            break;
        }
        let merged = format!("{a}{b}");
        if seen.insert(merged.clone()) {
            tokens.push(merged);
        }
        kept.push(format!("{a} {b}"));
    }
    tokens.push(BOS.to_string());
    tokens.push(EOS.to_string());
    Ok(clip_tokenizer_json(vocab_of(&tokens), kept).to_string())
}
