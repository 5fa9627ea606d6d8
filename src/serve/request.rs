//! What a client may ask for: the JSON body of `POST /generate` (dalle-mini's
//! `{"prompt": ...}` plus our options), checked into a [`JobSpec`] or refused
//! with an [`ApiError`] naming the field.

use super::error::ApiError;
use super::ServeOptions;
use crate::generate::SamplingSettings;
use serde::Deserialize;

/// The request body. Every field but `prompt` is optional; unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub prompt: String,
    /// Images to generate (default: the server's `default_images`).
    #[serde(default)]
    pub n: Option<u64>,
    /// Reproduces the same images whatever else the server is doing (default: random).
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub condition_scale: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Take the most likely token at every position instead of sampling.
    #[serde(default)]
    pub greedy: Option<bool>,
}

/// A checked request, ready for the queue.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub prompt: String,
    pub n: usize,
    pub seed: u64,
    pub settings: SamplingSettings,
}

/// Largest accepted condition scale and temperature: beyond these the
/// logits are meaningless and the request is a mistake.
const MAX_CONDITION_SCALE: f64 = 100.0;
const MAX_TEMPERATURE: f64 = 100.0;

/// Parses and checks a body; `image_vocab` bounds top-k.
pub fn parse(body: &[u8], options: &ServeOptions, image_vocab: i64) -> Result<JobSpec, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() && e.column() > 1 && e.to_string().starts_with("trailing characters") {
            ApiError::bad_request(format!("the body has data after the JSON object: {e}"))
        } else {
            ApiError::bad_request(format!("the body is not valid JSON: {e}"))
        }
    })?;
    // Structs would also accept an array of their fields in order; only an object is the protocol.
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object like {\"prompt\": \"...\"}".into()));
    }
    let request: GenerateRequest = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            // Errors about the object itself: a missing or unknown field (serde names it).
            ApiError::bad_request(format!("{inner}"))
        } else {
            ApiError::bad_request(format!("field '{path}': {inner}"))
        }
    })?;
    check(request, options, image_vocab)
}

fn check(r: GenerateRequest, options: &ServeOptions, image_vocab: i64) -> Result<JobSpec, ApiError> {
    if r.prompt.trim().is_empty() {
        return Err(ApiError::bad_request("field 'prompt' is empty; write what the image should show".into()));
    }
    let n = r.n.unwrap_or(options.default_images as u64);
    if n < 1 || n > options.max_images as u64 {
        return Err(ApiError::bad_request(format!("field 'n' must be in 1..={}, got {n}", options.max_images)));
    }
    let greedy = r.greedy.unwrap_or(false);
    let defaults = SamplingSettings::default();
    let condition_scale = r.condition_scale.unwrap_or(defaults.condition_scale as f64);
    if !(0.0..=MAX_CONDITION_SCALE).contains(&condition_scale) {
        return Err(ApiError::bad_request(format!("field 'condition_scale' must be in 0..={MAX_CONDITION_SCALE}, got {condition_scale}")));
    }
    let temperature = r.temperature.unwrap_or(defaults.temperature as f64);
    if !(temperature > 0.0 && temperature <= MAX_TEMPERATURE) {
        return Err(ApiError::bad_request(format!("field 'temperature' must be in (0, {MAX_TEMPERATURE}], got {temperature}")));
    }
    if let Some(k) = r.top_k {
        if k < 1 || k as i64 > image_vocab {
            return Err(ApiError::bad_request(format!("field 'top_k' must be in 1..={image_vocab} (the image vocabulary), got {k}")));
        }
    }
    if let Some(p) = r.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::bad_request(format!("field 'top_p' must be in (0, 1], got {p}")));
        }
    }
    if greedy && (r.top_k.is_some() || r.top_p.is_some()) {
        return Err(ApiError::bad_request("fields 'top_k' and 'top_p' apply to sampling; they cannot be combined with 'greedy'".into()));
    }
    let settings = SamplingSettings {
        sample: !greedy,
        temperature: temperature as f32,
        top_k: r.top_k.map(|k| k as usize),
        top_p: r.top_p.map(|p| p as f32),
        condition_scale: condition_scale as f32,
    };
    settings.validate(image_vocab).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let seed = r.seed.unwrap_or_else(rand::random);
    Ok(JobSpec { prompt: r.prompt, n: n as usize, seed, settings })
}
