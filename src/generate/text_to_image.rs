//! Prompts to images: tokenise as training does, sample token grids with the
//! [`Sampler`], decode them with the VQGAN. What `dalle generate`, the demo
//! server and the pipeline share.

use super::sampler::{Flow, Progress, Request, RunOptions, Sampler};
use super::settings::SamplingSettings;
use crate::data::images::hwc_to_rgb;
use crate::data::{EncodedText, TextEncoder};
use crate::error::{Error, Result};
use crate::host::HostTensor;
use crate::models::vqgan::VqganCodec;
use image::RgbImage;

/// The images of one prompt.
pub struct PromptImages {
    pub prompt: String,
    /// Image tokens per candidate.
    pub tokens: Vec<Vec<i32>>,
    pub images: Vec<RgbImage>,
    /// Caption tokens cut because the caption was longer than the model reads.
    pub tokens_cut: usize,
}

/// Timing of one call, in seconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timing {
    pub compile_secs: f64,
    pub sample_secs: f64,
    pub decode_secs: f64,
}

/// The sampler, the caption encoder and the VQGAN of one model.
pub struct TextToImage {
    pub sampler: Sampler,
    pub text: TextEncoder,
    pub vqgan: VqganCodec,
}

impl TextToImage {
    /// Checks that the three parts fit together: the tokenizer's vocabulary
    /// and length, the VQGAN's codebook and token grid.
    pub fn new(sampler: Sampler, text: TextEncoder, vqgan: VqganCodec) -> Result<TextToImage> {
        let c = sampler.config();
        if vqgan.config.n_embed != c.image_vocab_size {
            return Err(Error::Invalid(format!(
                "the VQGAN's codebook has {} entries but the model writes {} image tokens (model.image_vocab_size); use the VQGAN the model was trained with",
                vqgan.config.n_embed, c.image_vocab_size
            )));
        }
        if vqgan.config.image_length() != c.image_length {
            return Err(Error::Invalid(format!(
                "the VQGAN decodes grids of {} tokens but the model writes {} (model.image_length)",
                vqgan.config.image_length(),
                c.image_length
            )));
        }
        if text.vocab_size() as i64 > c.encoder_vocab_size {
            return Err(Error::Invalid(format!(
                "the tokenizer has {} tokens but the model's text vocabulary has {}; use the model's own tokenizer",
                text.vocab_size(),
                c.encoder_vocab_size
            )));
        }
        if text.max_length() as i64 != c.max_text_length {
            return Err(Error::Invalid(format!("the caption encoder pads to {} but the model reads {}", text.max_length(), c.max_text_length)));
        }
        Ok(TextToImage { sampler, text, vqgan })
    }

    /// The caption as the model reads it and how many tokens were cut; an empty prompt is an error.
    pub fn encode_prompt(&self, prompt: &str) -> Result<(EncodedText, usize)> {
        if prompt.trim().is_empty() {
            return Err(Error::Invalid("a prompt is empty; write what the image should show".into()));
        }
        self.text.encode_counting_cut(prompt)
    }

    /// `n` images for each prompt; prompt `i`'s candidates use key index `first_key + i`.
    pub fn generate(
        &self,
        prompts: &[String],
        n: usize,
        seed: u64,
        first_key: u64,
        settings: &SamplingSettings,
        run: &RunOptions,
        progress: impl FnMut(&Progress) -> Flow,
    ) -> Result<(Vec<PromptImages>, Timing)> {
        let mut requests = Vec::with_capacity(prompts.len());
        let mut cuts = Vec::with_capacity(prompts.len());
        for (i, p) in prompts.iter().enumerate() {
            let (text, cut) = self.encode_prompt(p).map_err(|e| Error::Invalid(format!("prompt {i}: {e}")))?;
            if cut > 0 {
                tracing::warn!("prompt {i} is {cut} token(s) longer than the model reads ({}); the end was cut", self.text.max_length());
            }
            requests.push(Request { text, n, key_index: first_key + i as u64 });
            cuts.push(cut);
        }
        // The unconditional caption is the empty string, encoded like any caption.
        let uncond = self.text.encode("")?;
        let generated = self.sampler.generate(&requests, &uncond, seed, settings, run, progress)?;
        let t = std::time::Instant::now();
        let mut out = Vec::with_capacity(prompts.len());
        for ((prompt, tokens), tokens_cut) in prompts.iter().zip(generated.tokens).zip(cuts) {
            let images = self.decode(&tokens)?;
            out.push(PromptImages { prompt: prompt.clone(), tokens, images, tokens_cut });
        }
        let timing = Timing { compile_secs: generated.compile_secs, sample_secs: generated.sample_secs, decode_secs: t.elapsed().as_secs_f64() };
        Ok((out, timing))
    }

    /// Token grids to RGB images.
    pub fn decode(&self, tokens: &[Vec<i32>]) -> Result<Vec<RgbImage>> {
        let l = self.vqgan.config.image_length();
        let flat: Vec<i32> = tokens.iter().flatten().copied().collect();
        let pixels = self.vqgan.decode(&HostTensor::new(&[tokens.len() as i64, l], &flat)?)?;
        let r = self.vqgan.config.resolution;
        let per = pixels.data.len() / tokens.len().max(1);
        (0..tokens.len())
            .map(|i| hwc_to_rgb(&HostTensor { dtype: pixels.dtype, shape: vec![r, r, 3], data: pixels.data[i * per..(i + 1) * per].to_vec() }))
            .collect()
    }
}
