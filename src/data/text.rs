//! Captions to token ids: dalle-mini normalisation, a BART byte-level BPE
//! `tokenizer.json`, `<s> ... </s>` and padding to a fixed length.

use super::normalize::{normalize_caption, TextNormalizer};
use std::sync::Arc;
use super::storage_io::read_object;
use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerImpl};

/// BART's special tokens, in BART's id order (the mask token goes last in BART; its id is not used here).
pub const BOS: &str = "<s>";
pub const PAD: &str = "<pad>";
pub const EOS: &str = "</s>";
pub const UNK: &str = "<unk>";
pub const MASK: &str = "<mask>";

/// Encodes captions the way dalle-mini's `DalleBartProcessor` does:
/// normalise, tokenise, then `<s>` + tokens + `</s>` truncated to
/// `max_length` (the `</s>` kept) and right-padded with `<pad>`.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    normalizer: Arc<TextNormalizer>,
    bos: i32,
    eos: i32,
    pad: i32,
    max_length: usize,
}

/// Ids and attention mask of one caption, each `max_length` long.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedText {
    pub input_ids: Vec<i32>,
    pub attention_mask: Vec<i32>,
}

impl TextEncoder {
    /// Loads `tokenizer.json` from a local path or a storage URL.
    pub fn load(path_or_url: &str, max_length: usize) -> Result<TextEncoder> {
        let bytes = read_object(path_or_url)?;
        let tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Invalid(format!("tokenizer '{path_or_url}' is not a valid tokenizer.json: {e}")))?;
        TextEncoder::new(tokenizer, max_length, path_or_url)
    }

    /// Wraps a tokenizer; `name` is used in messages.
    pub fn new(tokenizer: Tokenizer, max_length: usize, name: &str) -> Result<TextEncoder> {
        if max_length < 2 {
            return Err(Error::Invalid(format!("text length must be at least 2 to hold <s> and </s>, got {max_length}")));
        }
        let id = |token: &str| -> Result<i32> {
            let id = tokenizer.token_to_id(token).ok_or_else(|| {
                Error::Invalid(format!("tokenizer '{name}' has no '{token}' token; a BART-style tokenizer needs <s>, </s> and <pad>"))
            })?;
            i32::try_from(id).map_err(|_| Error::Invalid(format!("tokenizer '{name}': id {id} of '{token}' does not fit in i32")))
        };
        let (bos, eos, pad) = (id(BOS)?, id(EOS)?, id(PAD)?);
        Ok(TextEncoder { tokenizer, normalizer: Arc::new(TextNormalizer::default()), bos, eos, pad, max_length })
    }

    /// Uses `normalizer` (e.g. one with dalle-mini's word-frequency table for hashtags).
    pub fn with_normalizer(mut self, normalizer: Arc<TextNormalizer>) -> TextEncoder {
        self.normalizer = normalizer;
        self
    }

    /// Number of token ids, added tokens included; the model's text vocabulary must be at least this.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pad_id(&self) -> i32 {
        self.pad
    }

    /// Normalises and encodes one caption.
    pub fn encode(&self, caption: &str) -> Result<EncodedText> {
        self.encode_normalized(&self.normalizer.normalize(caption))
    }

    /// Encodes a caption that is already normalised.
    pub fn encode_normalized(&self, text: &str) -> Result<EncodedText> {
        Ok(self.encode_normalized_counting(text)?.0)
    }

    /// Normalises and encodes one caption; also returns how many of its
    /// tokens did not fit in `max_length` and were cut.
    pub fn encode_counting_cut(&self, caption: &str) -> Result<(EncodedText, usize)> {
        self.encode_normalized_counting(&normalize_caption(caption))
    }

    fn encode_normalized_counting(&self, text: &str) -> Result<(EncodedText, usize)> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Invalid(format!("cannot tokenise caption '{text}': {e}")))?;
        let body = self.max_length - 2;
        let cut = encoding.get_ids().len().saturating_sub(body);
        let mut input_ids = Vec::with_capacity(self.max_length);
        input_ids.push(self.bos);
        for &id in encoding.get_ids().iter().take(body) {
            input_ids.push(i32::try_from(id).map_err(|_| Error::Invalid(format!("token id {id} does not fit in i32")))?);
        }
        input_ids.push(self.eos);
        let used = input_ids.len();
        input_ids.resize(self.max_length, self.pad);
        let mut attention_mask = vec![1; used];
        attention_mask.resize(self.max_length, 0);
        Ok((EncodedText { input_ids, attention_mask }, cut))
    }

    /// Ids back to text (special tokens dropped), for inspection.
    pub fn decode(&self, ids: &[i32]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
        self.tokenizer.decode(&ids, true).map_err(|e| Error::Invalid(format!("cannot decode ids: {e}")))
    }
}

/// What [`train_tokenizer`] made.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainedInfo {
    /// Final vocabulary size (special tokens included); below the request when the text is too small.
    pub vocab_size: usize,
    /// Captions used (non-empty lines).
    pub captions: usize,
    /// Blank lines skipped.
    pub skipped_blank: usize,
}

/// Trains a BART-style byte-level BPE tokenizer on a file with one caption per
/// line (captions are normalised first, as they will be when encoded) and
/// writes it as `tokenizer.json`. Special tokens get ids `<s>` 0, `<pad>` 1,
/// `</s>` 2, `<unk>` 3, `<mask>` 4.
pub fn train_tokenizer(captions: &Path, vocab_size: usize, out: &Path) -> Result<TrainedInfo> {
    let specials = [BOS, PAD, EOS, UNK, MASK];
    let alphabet = ByteLevel::alphabet();
    // Below this the byte alphabet and special tokens do not fit, and byte-level BPE could not encode every input.
    let minimum = alphabet.len() + specials.len();
    if vocab_size < minimum {
        return Err(Error::Invalid(format!("tokenizer vocab size must be at least {minimum} (256 bytes + 5 special tokens), got {vocab_size}")));
    }
    let text = std::fs::read_to_string(captions).map_err(|e| Error::io(format!("cannot read captions {}", captions.display()), e))?;
    let mut skipped_blank = 0;
    let lines: Vec<String> = text
        .lines()
        .filter(|l| {
            let blank = l.trim().is_empty();
            skipped_blank += blank as usize;
            !blank
        })
        .map(normalize_caption)
        .collect();
    if lines.is_empty() {
        return Err(Error::Invalid(format!("captions file {} has no non-blank lines", captions.display())));
    }

    let mut tokenizer: TokenizerImpl<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper> =
        TokenizerImpl::new(BPE::default());
    // BART's setting: no prefix space (the normaliser already starts captions with one).
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    let mut trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .show_progress(false)
        .special_tokens(specials.iter().map(|t| AddedToken::from(t.to_string(), true)).collect())
        .initial_alphabet(alphabet.into_iter().collect())
        .build();
    tokenizer
        .train(&mut trainer, lines.iter())
        .map_err(|e| Error::Invalid(format!("tokenizer training on {} failed: {e}", captions.display())))?;
    let id = |token: &str| tokenizer.token_to_id(token).ok_or_else(|| Error::Invalid(format!("trained tokenizer lacks '{token}'")));
    let post = RobertaProcessing::new((EOS.to_string(), id(EOS)?), (BOS.to_string(), id(BOS)?));
    tokenizer.with_post_processor(Some(post));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    }
    tokenizer.save(out, false).map_err(|e| Error::Invalid(format!("cannot write tokenizer {}: {e}", out.display())))?;
    Ok(TrainedInfo { vocab_size: tokenizer.get_vocab_size(true), captions: lines.len(), skipped_blank })
}
