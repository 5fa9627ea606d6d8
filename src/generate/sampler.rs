//! The compiled sampler: captions in, image token sequences out.
//!
//! Two programs per (rows per device, settings shape), replicated over the
//! devices:
//! - `generate_start`: the encoder on the captions (and on the empty caption
//!   when super-conditioning), the cross-attention keys and values of every
//!   decoder layer (computed once, not at every step), and an empty
//!   self-attention cache;
//! - `generate_steps`: a `while` loop over image positions `[start, end)`
//!   running the decoder on one position at a time with the KV cache updated
//!   in place, the conditional and unconditional rows in one decoder call.
//!
//! The host calls `generate_steps` once per chunk of positions (all 256 in
//! one call by default; fewer to report progress or decode previews), with
//! the caches and tokens staying on device (donated) between calls.
//!
//! Every row (prompt x candidate) has its own PRNG key derived from the seed,
//! the prompt's index and the candidate's index, so the images do not depend
//! on the device count or on how rows are batched.

use super::next_token::{next_token, super_condition, SamplingInputs};
use super::settings::{SamplingSettings, SettingsShape};
use crate::data::EncodedText;
use crate::error::{Error, Result};
use crate::graph::{while_loop, Function, Graph, Tensor, TensorType};
use crate::host::HostTensor;
use crate::models::dallebart::{CrossAttentionKv, DalleBart, DalleBartConfig, DecoderCache};
use crate::nn::{ParamSpec, Precision, VarBuilder};
use crate::pjrt::{Buffer, Client};
use crate::runtime::{download, Program, ProgramOptions};
use crate::DType;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// How a generation call is carried out (not what it generates).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Rows (prompt x candidate) per device per program call.
    pub rows_per_device: usize,
    /// Image positions per `generate_steps` call; the progress callback runs after each.
    pub chunk: usize,
    /// Hand the partial token grids to the progress callback after each chunk.
    pub partial_tokens: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { rows_per_device: 8, chunk: usize::MAX, partial_tokens: false }
    }
}

/// What the progress callback sees after each chunk of positions.
pub struct Progress<'a> {
    /// Image tokens generated so far over all batches (rows x positions, padding excluded).
    pub tokens_done: u64,
    pub tokens_total: u64,
    /// Index of the first row of the current batch and the rows it holds.
    pub batch_rows: std::ops::Range<usize>,
    /// Positions generated in the current batch.
    pub positions_done: usize,
    /// With `partial_tokens`: the batch's rows so far (`positions_done` valid tokens each).
    pub partial: Option<&'a [Vec<i32>]>,
}

/// The returned signal of a progress callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop as soon as possible; the call returns [`Error::Cancelled`].
    Cancel,
}

/// One caption to generate for: its encoded ids and how many images.
#[derive(Clone, Debug)]
pub struct Request {
    pub text: EncodedText,
    /// Candidates to sample for this caption.
    pub n: usize,
    /// Index used to derive the candidates' PRNG keys (usually the prompt's position).
    pub key_index: u64,
}

struct Programs {
    start: Program,
    steps: Program,
}

/// DalleBart weights on every device and the compiled sampling programs.
pub struct Sampler {
    pub model: DalleBart,
    client: Client,
    replicas: usize,
    specs: Vec<ParamSpec>,
    /// Per device, the parameters in `specs` order.
    weights: Vec<Vec<Buffer>>,
    programs: Mutex<HashMap<(usize, SettingsShape), Arc<Programs>>>,
}

/// The generated tokens and how long it took.
pub struct Generated {
    /// Per request, its candidates' token sequences (`image_length` tokens each).
    pub tokens: Vec<Vec<Vec<i32>>>,
    pub compile_secs: f64,
    pub sample_secs: f64,
}

/// Per-row key words from (seed, key index, candidate): a splitmix mix, so
/// nearby seeds and indices give unrelated keys.
pub fn row_key(seed: u64, key_index: u64, candidate: u64) -> [u32; 2] {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let k = mix(mix(mix(seed) ^ key_index) ^ candidate.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    [(k >> 32) as u32, k as u32]
}

impl Sampler {
    /// Uploads `weights` (by flax name, any float dtype; cast to `compute`) to
    /// the first `replicas` devices of `client`. `origin` names the weights in errors.
    pub fn new(client: &Client, config: DalleBartConfig, weights: &BTreeMap<String, HostTensor>, origin: &str, compute: DType, replicas: usize) -> Result<Sampler> {
        config.validate().map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
        if !matches!(compute, DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::Invalid(format!("inference dtype must be f32, bf16 or f16, got {compute}")));
        }
        if replicas == 0 || replicas > client.device_count() {
            return Err(Error::Invalid(format!("the sampler needs 1..={} devices, got {replicas}", client.device_count())));
        }
        let specs: Vec<ParamSpec> = crate::models::dallebart::parameter_specs(&config)?
            .into_iter()
            .map(|s| ParamSpec { ty: TensorType::new(compute, &s.ty.shape), ..s })
            .collect();
        let values = crate::models::vqgan::select_params(weights, &specs, origin)?;
        let used: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let unused: Vec<&String> = weights.keys().filter(|k| !used.contains(k.as_str())).collect();
        if !unused.is_empty() {
            tracing::warn!("{origin}: {} tensor(s) not used by the model, e.g. '{}'", unused.len(), unused[0]);
        }
        let mut uploaded = Vec::with_capacity(replicas);
        for d in 0..replicas {
            let bufs = values.iter().map(|v| Ok(client.buffer_from_host(&v.data, v.dtype, &v.shape, d)?)).collect::<Result<Vec<_>>>()?;
            uploaded.push(bufs);
        }
        let model = DalleBart::new(config, Precision { compute });
        Ok(Sampler { model, client: client.clone(), replicas, specs, weights: uploaded, programs: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &DalleBartConfig {
        &self.model.config
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Generates `request.n` token sequences for every request.
    pub fn generate(
        &self,
        requests: &[Request],
        uncond: &EncodedText,
        seed: u64,
        settings: &SamplingSettings,
        run: &RunOptions,
        progress: impl FnMut(&Progress) -> Flow,
    ) -> Result<Generated> {
        self.generate_shaped(requests, uncond, seed, settings, settings.shape(), run, progress)
    }

    /// [`Sampler::generate`] with the program's shape chosen by the caller
    /// (e.g. the unconditional pass kept at condition scale 1, to test that it changes nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn generate_shaped(
        &self,
        requests: &[Request],
        uncond: &EncodedText,
        seed: u64,
        settings: &SamplingSettings,
        shape: SettingsShape,
        run: &RunOptions,
        mut progress: impl FnMut(&Progress) -> Flow,
    ) -> Result<Generated> {
        let c = self.config().clone();
        settings.validate(c.image_vocab_size)?;
        if requests.is_empty() {
            return Err(Error::Invalid("nothing to generate: no prompts".into()));
        }
        for (i, r) in requests.iter().enumerate() {
            if r.n == 0 {
                return Err(Error::Invalid(format!("prompt {i} asks for 0 images; the number of images must be at least 1")));
            }
            check_text(&r.text, &c, &format!("prompt {i}"))?;
        }
        check_text(uncond, &c, "the unconditional (empty) caption")?;
        if run.rows_per_device == 0 || run.chunk == 0 {
            return Err(Error::Invalid("rows per device and positions per call must be at least 1".into()));
        }
        // Rows: (request, candidate), request-major.
        let rows: Vec<(usize, usize)> = requests.iter().enumerate().flat_map(|(i, r)| (0..r.n).map(move |j| (i, j))).collect();
        let per_device = run.rows_per_device.min(rows.len().div_ceil(self.replicas)).max(1);
        let t0 = std::time::Instant::now();
        let programs = self.programs(per_device, shape)?;
        let compile_secs = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();

        let batch = per_device * self.replicas;
        let length = c.image_length as usize;
        let total = (rows.len() * length) as u64;
        let mut out: Vec<Vec<Vec<i32>>> = requests.iter().map(|r| Vec::with_capacity(r.n)).collect();
        let mut done = 0u64;
        for (b, chunk) in rows.chunks(batch).enumerate() {
            let first = b * batch;
            let tokens = self.run_batch(&programs, shape, chunk, per_device, requests, uncond, seed, settings, run, |positions, partial| {
                let event = Progress {
                    tokens_done: done + (chunk.len() * positions) as u64,
                    tokens_total: total,
                    batch_rows: first..first + chunk.len(),
                    positions_done: positions,
                    partial,
                };
                progress(&event)
            })?;
            done += (chunk.len() * length) as u64;
            for (&(i, _), t) in chunk.iter().zip(tokens) {
                out[i].push(t);
            }
        }
        Ok(Generated { tokens: out, compile_secs, sample_secs: t1.elapsed().as_secs_f64() })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_batch(
        &self,
        programs: &Programs,
        shape: SettingsShape,
        chunk: &[(usize, usize)],
        per_device: usize,
        requests: &[Request],
        uncond: &EncodedText,
        seed: u64,
        settings: &SamplingSettings,
        run: &RunOptions,
        mut progress: impl FnMut(usize, Option<&[Vec<i32>]>) -> Flow,
    ) -> Result<Vec<Vec<i32>>> {
        let c = self.config();
        let (t_text, length) = (c.max_text_length, c.image_length as usize);
        // Padding rows repeat the first row; their results are dropped.
        let row = |k: usize| chunk.get(k).copied().unwrap_or(chunk[0]);
        let mut inputs: Vec<Vec<Buffer>> = Vec::with_capacity(self.replicas);
        let mut fixed: Vec<Vec<Buffer>> = Vec::with_capacity(self.replicas);
        for d in 0..self.replicas {
            let mine: Vec<(usize, usize)> = (0..per_device).map(|k| row(d * per_device + k)).collect();
            let mut ids: Vec<i32> = mine.iter().flat_map(|&(i, _)| requests[i].text.input_ids.clone()).collect();
            let mut mask: Vec<i32> = mine.iter().flat_map(|&(i, _)| requests[i].text.attention_mask.clone()).collect();
            let rows = if shape.super_conditioning {
                for _ in 0..per_device {
                    ids.extend(&uncond.input_ids);
                    mask.extend(&uncond.attention_mask);
                }
                2 * per_device
            } else {
                per_device
            };
            let ids = HostTensor::new(&[rows as i64, t_text], &ids)?;
            let mask = HostTensor::new(&[rows as i64, t_text], &mask)?;
            let keys: Vec<u32> = mine.iter().flat_map(|&(i, j)| row_key(seed, requests[i].key_index, j as u64)).collect();
            let keys = HostTensor::new(&[per_device as i64, 2], &keys)?;
            let scalars = [
                HostTensor::scalar(settings.temperature),
                HostTensor::scalar(settings.condition_scale),
                HostTensor::scalar(settings.top_p.unwrap_or(1.0)),
            ];
            inputs.push(programs.start.upload(d, &[&ids, &mask])?);
            fixed.push(programs.steps.upload(d, &[&keys, &scalars[0], &scalars[1], &scalars[2]])?);
        }
        let args: Vec<Vec<&Buffer>> = (0..self.replicas).map(|d| inputs[d].iter().chain(&self.weights[d]).collect()).collect();
        let started = programs.start.execute(&args)?;
        drop(args);
        // start's outputs: tokens, previous, caches (the state), then cross keys/values and bias (fixed).
        let mut state: Vec<Vec<Buffer>> = Vec::with_capacity(self.replicas);
        for (outs, f) in started.into_iter().zip(fixed.iter_mut()) {
            let mut outs = outs.into_iter();
            state.push(outs.by_ref().take(2 + 2 * c.decoder_layers).collect());
            f.extend(outs);
        }
        let mut position = 0usize;
        while position < length {
            let end = position.saturating_add(run.chunk).min(length);
            let mut next_state = Vec::with_capacity(self.replicas);
            let mut bounds = Vec::with_capacity(self.replicas);
            for d in 0..self.replicas {
                bounds.push(programs.steps.upload(d, &[&HostTensor::scalar(position as i32), &HostTensor::scalar(end as i32)])?);
            }
            let args: Vec<Vec<&Buffer>> = (0..self.replicas)
                .map(|d| bounds[d].iter().chain(&state[d]).chain(&fixed[d]).chain(&self.weights[d]).collect())
                .collect();
            for outs in programs.steps.execute(&args)? {
                next_state.push(outs);
            }
            drop(args);
            state = next_state;
            position = end;
            let partial = if run.partial_tokens && position < length { Some(self.download_tokens(&state, chunk.len(), per_device)?) } else { None };
            if progress(position, partial.as_deref()) == Flow::Cancel {
                return Err(Error::Cancelled);
            }
        }
        self.download_tokens(&state, chunk.len(), per_device)
    }

    /// The first `rows` token rows, gathered from the devices in order.
    fn download_tokens(&self, state: &[Vec<Buffer>], rows: usize, per_device: usize) -> Result<Vec<Vec<i32>>> {
        let length = self.config().image_length as usize;
        let mut all = Vec::with_capacity(rows);
        for s in state {
            let t: Vec<i32> = download(&s[0])?.to_vec()?;
            all.extend(t.chunks(length).take(per_device).map(|r| r.to_vec()));
        }
        all.truncate(rows);
        Ok(all)
    }

    fn programs(&self, per_device: usize, shape: SettingsShape) -> Result<Arc<Programs>> {
        let mut cache = self.programs.lock().map_err(|_| Error::Invalid("the sampler's program cache was poisoned by a panic".into()))?;
        if let Some(p) = cache.get(&(per_device, shape)) {
            return Ok(p.clone());
        }
        let programs = Arc::new(self.compile(per_device, shape)?);
        cache.insert((per_device, shape), programs.clone());
        Ok(programs)
    }

    fn weight_params(&self, g: &Graph) -> Vec<Tensor> {
        self.specs.iter().map(|s| g.param(&s.name, s.ty.dtype, &s.ty.shape)).collect()
    }

    fn compile(&self, per_device: usize, shape: SettingsShape) -> Result<Programs> {
        let c = self.config();
        let model = &self.model;
        let compute = model.precision.compute;
        let b = per_device as i64;
        let rows = if shape.super_conditioning { 2 * b } else { b };
        let layers = c.decoder_layers;
        let opts = ProgramOptions::replicated(self.replicas);

        // generate_start
        let g = Graph::new("generate_start");
        let ids = g.param("input_ids", DType::I32, &[rows, c.max_text_length]);
        let mask = g.param("attention_mask", DType::I32, &[rows, c.max_text_length]);
        let weights = self.weight_params(&g);
        let vb = self.bound(&g, &weights);
        let states = model.encode(&vb, &ids, &mask)?;
        let cross = model.cross_attention_kv(&vb, &states, &mask)?;
        let cache = model.empty_cache(&g, rows);
        let tokens = g.zeros(DType::I32, &[b, c.image_length]);
        let prev = g.full(c.bos_token() as f64, DType::I32, &[b]);
        let mut outs: Vec<&Tensor> = vec![&tokens, &prev];
        outs.extend(cache.keys.iter().chain(&cache.values));
        outs.extend(cross.keys.iter().chain(&cross.values));
        outs.push(&cross.bias);
        let start = Program::compile(&self.client, &g, &outs, &opts)?;

        // generate_steps: (start, end, tokens, prev, caches, keys, temperature, scale, top_p, cross, bias, weights)
        let g = Graph::new("generate_steps");
        let scalar = |name: &str, dtype| g.param(name, dtype, &[]);
        let position = scalar("start", DType::I32);
        let end = scalar("end", DType::I32);
        let tokens = g.param("tokens", DType::I32, &[b, c.image_length]);
        let prev = g.param("previous", DType::I32, &[b]);
        let cache_ty = cache_type(c, rows, compute);
        let caches: Vec<Tensor> = (0..2 * layers).map(|i| g.param(&format!("cache_{i}"), cache_ty.dtype, &cache_ty.shape)).collect();
        let keys = g.param("keys", DType::U32, &[b, 2]);
        let temperature = scalar("temperature", DType::F32);
        let scale = scalar("condition_scale", DType::F32);
        let top_p = scalar("top_p", DType::F32);
        let cross_ty = TensorType::new(compute, &[rows, c.decoder_attention_heads, c.max_text_length, c.d_model / c.decoder_attention_heads]);
        let cross: Vec<Tensor> = (0..2 * layers).map(|i| g.param(&format!("cross_{i}"), cross_ty.dtype, &cross_ty.shape)).collect();
        let bias = g.param("cross_bias", DType::F32, &[rows, 1, 1, c.max_text_length]);
        let weights = self.weight_params(&g);

        let mut carries: Vec<&Tensor> = vec![&position, &end, &tokens, &prev];
        carries.extend(&caches);
        carries.extend([&keys, &temperature, &scale, &top_p]);
        carries.extend(&cross);
        carries.push(&bias);
        carries.extend(&weights);
        let types: Vec<TensorType> = carries.iter().map(|t| t.ty().clone()).collect();
        let cond = Function::build("generate_cond", &types, |a| Ok(vec![a[0].lt(&a[1])?]))?;
        let body = Function::build("generate_step", &types, |a| self.step_body(a, shape, b as usize))?;
        let looped = while_loop(&cond, &body, &carries)?;
        let mut outs: Vec<&Tensor> = vec![&looped[2], &looped[3]];
        outs.extend(&looped[4..4 + 2 * layers]);
        // The state (tokens, previous, caches) is consumed and rewritten in place.
        let opts = opts.donating(2..4 + 2 * layers);
        let steps = Program::compile(&self.client, &g, &outs, &opts)?;
        Ok(Programs { start, steps })
    }

    /// One position of the loop: the carries of `compile` in, the same out.
    fn step_body(&self, a: &[Tensor], shape: SettingsShape, b: usize) -> crate::graph::Result<Vec<Tensor>> {
        let c = self.config();
        let layers = c.decoder_layers;
        let (position, tokens, prev) = (&a[0], &a[2], &a[3]);
        let caches = &a[4..4 + 2 * layers];
        let k = 4 + 2 * layers;
        let (keys, temperature, scale, top_p) = (&a[k], &a[k + 1], &a[k + 2], &a[k + 3]);
        let cross = &a[k + 4..k + 4 + 2 * layers];
        let bias = &a[k + 4 + 2 * layers];
        let weights = &a[k + 5 + 2 * layers..];
        let vb = self.bound(position.graph(), weights);

        let mut cache = DecoderCache { keys: caches[..layers].to_vec(), values: caches[layers..].to_vec() };
        let cross = CrossAttentionKv { keys: cross[..layers].to_vec(), values: cross[layers..].to_vec(), bias: bias.clone() };
        let input = if shape.super_conditioning { Tensor::concat(&[prev, prev], 0)? } else { prev.clone() };
        let logits = self.model.decode_step(&vb, &input, position, &mut cache, &cross)?;
        let logits = if shape.super_conditioning { super_condition(&logits.cast(DType::F32)?, scale)? } else { logits };
        // The decoder-start column is not an image token: never sampled.
        let logits = logits.narrow(-1, 0, c.image_vocab_size)?;
        let sampling = SamplingInputs { keys, position, temperature, condition_scale: scale, top_p };
        let next = next_token(&logits, shape, &sampling)?;
        let zero = position.zeros_like()?;
        let tokens = tokens.dynamic_update_slice(&next.reshape(&[b as i64, 1])?, &[&zero, position])?;

        let mut out = vec![position.add_scalar(1.0)?, a[1].clone(), tokens, next];
        out.extend(cache.keys);
        out.extend(cache.values);
        out.extend(a[k..].iter().cloned());
        Ok(out)
    }

    /// A builder handing out `weights` (graph tensors in `specs` order) by name.
    fn bound(&self, g: &Graph, weights: &[Tensor]) -> VarBuilder {
        let named = self.specs.iter().zip(weights).map(|(s, t)| (s.name.clone(), t.clone()));
        VarBuilder::from_tensors(g, self.model.precision.compute, named).forward_only()
    }
}

fn cache_type(c: &DalleBartConfig, rows: i64, dtype: DType) -> TensorType {
    TensorType::new(dtype, &[rows, c.decoder_attention_heads, c.image_length, c.d_model / c.decoder_attention_heads])
}

fn check_text(text: &EncodedText, c: &DalleBartConfig, what: &str) -> Result<()> {
    let t = c.max_text_length as usize;
    if text.input_ids.len() != t || text.attention_mask.len() != t {
        return Err(Error::Invalid(format!(
            "{what} has {} ids and {} mask entries; the model reads exactly {t} (model.max_text_length)",
            text.input_ids.len(),
            text.attention_mask.len()
        )));
    }
    if let Some(id) = text.input_ids.iter().find(|&&id| id < 0 || id as i64 >= c.encoder_vocab_size) {
        return Err(Error::Invalid(format!("{what} has token id {id} outside the model's text vocabulary of {}", c.encoder_vocab_size)));
    }
    Ok(())
}
