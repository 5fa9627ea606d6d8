//! Scoring images against prompts with a CLIP checkpoint: `logits_per_image`
//! (cosine similarity times `exp(logit_scale)`) as transformers computes it.
//! Embeddings are computed on device in fixed-size batches (a short last batch
//! is padded and its padding dropped); large image batches are split over the
//! devices, each holding a copy of the vision weights.

use super::{load_checkpoint, Clip, ClipConfig, ClipTokenizer, Preprocessor};
use crate::error::{Error, Result};
use crate::graph::{Graph, Tensor};
use crate::host::HostTensor;
use crate::models::vqgan::select_params;
use crate::nn::VarBuilder;
use crate::pjrt::{Buffer, Client};
use crate::runtime::{download, Program, ProgramOptions};
use crate::DType;
use image::RgbImage;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct ScorerOptions {
    /// Images per device per program call.
    pub images_per_device: usize,
    /// Devices to split large image batches over; 0 = all of the client's.
    pub devices: usize,
    /// Prompts per text program call.
    pub prompts_per_call: usize,
}

impl Default for ScorerOptions {
    fn default() -> Self {
        ScorerOptions { images_per_device: 8, devices: 0, prompts_per_call: 8 }
    }
}

/// A program and, per device, the weights it takes after its input.
struct Compiled {
    program: Program,
    weights: Vec<Vec<Buffer>>,
    /// Rows per device per call.
    rows: usize,
}

impl Compiled {
    fn new(
        client: &Client,
        name: &str,
        input: (DType, Vec<i64>),
        replicas: usize,
        weights: &BTreeMap<String, HostTensor>,
        f: &dyn Fn(&VarBuilder, &Tensor) -> crate::graph::Result<Tensor>,
    ) -> Result<Compiled> {
        let g = Graph::new(name);
        let x = g.param("input", input.0, &input.1);
        let vb = VarBuilder::new(&g, DType::F32);
        let out = f(&vb, &x)?;
        let program = Program::compile(client, &g, &[&out], &ProgramOptions::replicated(replicas))?;
        let values = select_params(weights, &vb.specs(), "the CLIP weights")?;
        let refs: Vec<&HostTensor> = values.iter().collect();
        let weights = (0..replicas).map(|d| program.upload(d, &refs)).collect::<Result<_>>()?;
        Ok(Compiled { program, weights, rows: input.1[0] as usize })
    }

    /// Runs `rows` rows of `row_len` f32/i32 values each (as raw bytes) through the program, in calls.
    fn run(&self, input: &HostTensor) -> Result<Vec<Vec<f32>>> {
        let replicas = self.weights.len();
        let want = &self.program.inputs[0];
        let n = input.shape[0] as usize;
        let row_bytes = input.data.len() / n.max(1);
        let per_call = self.rows * replicas;
        let mut out = Vec::with_capacity(n);
        for chunk in input.data.chunks((per_call * row_bytes).max(1)) {
            let rows = chunk.len() / row_bytes.max(1);
            let mut padded = chunk.to_vec();
            padded.resize(per_call * row_bytes, 0);
            let mut args = Vec::with_capacity(replicas);
            for d in 0..replicas {
                let part = HostTensor { dtype: want.dtype, shape: want.shape.clone(), data: padded[d * self.rows * row_bytes..(d + 1) * self.rows * row_bytes].to_vec() };
                args.push(self.program.upload(d, &[&part])?);
            }
            let refs: Vec<Vec<&Buffer>> = args.iter().zip(&self.weights).map(|(a, w)| a.iter().chain(w).collect()).collect();
            let results = self.program.execute(&refs)?;
            let mut got = Vec::with_capacity(per_call);
            for device in &results {
                let t = download(&device[0])?;
                let dim = t.shape[1] as usize;
                let values = t.to_vec::<f32>()?;
                got.extend(values.chunks(dim).map(|r| r.to_vec()));
            }
            out.extend(got.into_iter().take(rows));
        }
        Ok(out)
    }
}

pub struct Scorer {
    pub config: ClipConfig,
    pub tokenizer: ClipTokenizer,
    pub preprocessor: Preprocessor,
    /// `exp(logit_scale)`.
    pub scale: f32,
    text: Compiled,
    /// One device, for batches that fit it.
    images_one: Compiled,
    /// Every device, for larger batches (absent with one device).
    images_all: Option<Compiled>,
}

impl Scorer {
    /// Loads a Hugging Face CLIP directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json` or `vocab.json` + `merges.txt`, optionally
    /// `preprocessor_config.json`) and compiles the scoring programs.
    pub fn load(dir: &Path, client: &Client, options: &ScorerOptions) -> Result<Scorer> {
        let (config, weights) = load_checkpoint(dir)?;
        let tokenizer = ClipTokenizer::load(dir, config.text.max_position_embeddings as usize)?;
        let pre = dir.join("preprocessor_config.json");
        let preprocessor = if pre.exists() { Preprocessor::load(&pre, config.vision.image_size as u32)? } else { Preprocessor::clip_default(config.vision.image_size as u32) };
        Self::new(client, config, &weights, tokenizer, preprocessor, options)
    }

    /// A scorer for weights already in memory (e.g. a model being trained).
    pub fn new(
        client: &Client,
        config: ClipConfig,
        weights: &BTreeMap<String, HostTensor>,
        tokenizer: ClipTokenizer,
        preprocessor: Preprocessor,
        options: &ScorerOptions,
    ) -> Result<Scorer> {
        config.validate().map_err(Error::Invalid)?;
        if preprocessor.crop as i64 != config.vision.image_size {
            return Err(Error::Invalid(format!(
                "the preprocessor crops to {} pixels but the model's vision_config.image_size is {}",
                preprocessor.crop, config.vision.image_size
            )));
        }
        if tokenizer.vocab_size() as i64 > config.text.vocab_size {
            return Err(Error::Invalid(format!("the tokenizer has {} tokens but text_config.vocab_size is {}", tokenizer.vocab_size(), config.text.vocab_size)));
        }
        if options.images_per_device == 0 || options.prompts_per_call == 0 {
            return Err(Error::Invalid("the CLIP scorer needs at least one image per device and one prompt per call".into()));
        }
        let replicas = if options.devices == 0 { client.device_count() } else { options.devices };
        if replicas > client.device_count() {
            return Err(Error::Invalid(format!("the scorer was asked for {replicas} devices but the {} client has {}", client.platform(), client.device_count())));
        }
        let model = Clip::new(config.clone());
        let (s, c, l) = (config.vision.image_size, config.vision.num_channels, config.text.max_position_embeddings);
        let text = Compiled::new(client, "clip_text", (DType::I32, vec![options.prompts_per_call as i64, l]), 1, weights, &|vb, x| {
            super::l2_normalize(&model.text_features(vb, x)?)
        })?;
        let image_fn = |vb: &VarBuilder, x: &Tensor| super::l2_normalize(&model.image_features(vb, x)?);
        let pixels = (DType::F32, vec![options.images_per_device as i64, s, s, c]);
        let images_one = Compiled::new(client, "clip_images", pixels.clone(), 1, weights, &image_fn)?;
        let images_all = if replicas > 1 { Some(Compiled::new(client, "clip_images_dp", pixels, replicas, weights, &image_fn)?) } else { None };
        let logit_scale = weights.get("logit_scale").ok_or_else(|| Error::Invalid("the CLIP weights have no 'logit_scale'".into()))?;
        let scale = (logit_scale.to_f64_vec()[0]).exp() as f32;
        Ok(Scorer { config, tokenizer, preprocessor, scale, text, images_one, images_all })
    }

    /// Unit-length text embeddings, one per prompt (longer prompts are truncated to the context length).
    pub fn text_embeds(&self, prompts: &[String]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenizer.encode_batch(prompts)?;
        let t = HostTensor::new(&[prompts.len() as i64, self.tokenizer.context_length as i64], &ids)?;
        self.text.run(&t)
    }

    /// Unit-length image embeddings for preprocessed pixels `[N, S, S, 3]`.
    pub fn image_embeds_from_pixels(&self, pixels: &HostTensor) -> Result<Vec<Vec<f32>>> {
        let s = self.config.vision.image_size;
        if pixels.dtype != DType::F32 || pixels.shape.len() != 4 || pixels.shape[1..] != [s, s, self.config.vision.num_channels] {
            return Err(Error::Invalid(format!("pixels must be f32[N, {s}, {s}, {}], got {}{:?}", self.config.vision.num_channels, pixels.dtype, pixels.shape)));
        }
        let n = pixels.shape[0] as usize;
        match &self.images_all {
            Some(all) if n > self.images_one.rows => all.run(pixels),
            _ => self.images_one.run(pixels),
        }
    }

    /// Unit-length image embeddings (each image preprocessed as the reference does).
    pub fn image_embeds(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        self.image_embeds_from_pixels(&self.preprocessor.batch(images))
    }

    /// `logits_per_image` for one prompt: one score per image.
    pub fn score(&self, prompt: &str, images: &[RgbImage]) -> Result<Vec<f32>> {
        Ok(self.score_many(&[prompt.to_string()], images)?.into_iter().map(|row| row[0]).collect())
    }

    /// `logits_per_image [images][prompts]`.
    pub fn score_many(&self, prompts: &[String], images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Err(Error::Invalid("no images to score".into()));
        }
        if prompts.is_empty() {
            return Err(Error::Invalid("no prompt to score the images against".into()));
        }
        let texts = self.text_embeds(prompts)?;
        let images = self.image_embeds(images)?;
        Ok(images.iter().map(|i| texts.iter().map(|t| self.scale * dot(i, t)).collect()).collect())
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>() as f32
}
