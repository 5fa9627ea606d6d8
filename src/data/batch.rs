//! A training batch: tokenised captions and their image tokens.

use crate::error::{Error, Result};
use crate::host::HostTensor;

/// One example: caption tokens (already padded/truncated) and image tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input_ids: Vec<i32>,
    pub attention_mask: Vec<i32>,
    pub labels: Vec<i32>,
}

/// A batch as host arrays: `input_ids`, `attention_mask` `[B, T_text]`, `labels` `[B, T_img]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub input_ids: HostTensor,
    pub attention_mask: HostTensor,
    pub labels: HostTensor,
}

impl Batch {
    pub fn from_examples(examples: &[Example]) -> Result<Batch> {
        let Some(first) = examples.first() else { return Err(Error::Invalid("empty batch".into())) };
        let (t, l) = (first.input_ids.len(), first.labels.len());
        let b = examples.len() as i64;
        let mut ids = Vec::with_capacity(examples.len() * t);
        let mut mask = Vec::with_capacity(examples.len() * t);
        let mut labels = Vec::with_capacity(examples.len() * l);
        for e in examples {
            if e.input_ids.len() != t || e.attention_mask.len() != t || e.labels.len() != l {
                return Err(Error::Invalid(format!(
                    "examples of a batch must have equal lengths: {t} text and {l} image tokens, got {}, {} and {}",
                    e.input_ids.len(),
                    e.attention_mask.len(),
                    e.labels.len()
                )));
            }
            ids.extend_from_slice(&e.input_ids);
            mask.extend_from_slice(&e.attention_mask);
            labels.extend_from_slice(&e.labels);
        }
        Ok(Batch {
            input_ids: HostTensor::new(&[b, t as i64], &ids)?,
            attention_mask: HostTensor::new(&[b, t as i64], &mask)?,
            labels: HostTensor::new(&[b, l as i64], &labels)?,
        })
    }

    pub fn size(&self) -> usize {
        self.input_ids.shape[0] as usize
    }

    /// Splits along the batch axis into `n` equal shards (one per device).
    pub fn shard(&self, n: usize) -> Result<Vec<Batch>> {
        let b = self.size();
        if n == 0 || !b.is_multiple_of(n) {
            return Err(Error::Invalid(format!("batch of {b} cannot be split evenly over {n} devices")));
        }
        let per = b / n;
        let rows = |h: &HostTensor, i: usize| -> HostTensor {
            let row_bytes = h.data.len() / b;
            let mut shape = h.shape.clone();
            shape[0] = per as i64;
            HostTensor { dtype: h.dtype, shape, data: h.data[i * per * row_bytes..(i + 1) * per * row_bytes].to_vec() }
        };
        Ok((0..n)
            .map(|i| Batch { input_ids: rows(&self.input_ids, i), attention_mask: rows(&self.attention_mask, i), labels: rows(&self.labels, i) })
            .collect())
    }
}
