//! A synthetic caption -> image-token task that a model can learn: every
//! image token is a fixed function of the caption's tokens, so the loss can
//! fall to zero, and every example is a pure function of (seed, index), so a
//! stream position is restored exactly.

use super::batch::Example;

#[derive(Clone, Debug)]
pub struct Synthetic {
    pub seed: u64,
    pub text_vocab: i64,
    pub image_vocab: i64,
    pub text_length: usize,
    pub image_length: usize,
    /// Distinct captions; examples cycle through them (small = memorisable).
    pub num_captions: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Synthetic {
    /// Example number `index` of the stream.
    pub fn example(&self, index: u64) -> Example {
        let caption = index % self.num_captions.max(1);
        let base = mix(self.seed ^ mix(caption));
        // Token 0 is padding; captions use 1..text_vocab and 3..text_length tokens.
        let len = 3 + (base % (self.text_length.saturating_sub(2).max(1)) as u64) as usize;
        let len = len.min(self.text_length);
        let mut input_ids = vec![0i32; self.text_length];
        let mut attention_mask = vec![0i32; self.text_length];
        for (i, (id, m)) in input_ids.iter_mut().zip(attention_mask.iter_mut()).enumerate().take(len) {
            *id = 1 + (mix(base + i as u64) % (self.text_vocab as u64 - 1)) as i32;
            *m = 1;
        }
        let labels = (0..self.image_length)
            .map(|j| {
                let a = input_ids[j % len] as i64;
                let b = input_ids[(j * 7 + 1) % len] as i64;
                ((a * 31 + b * 17 + j as i64) % self.image_vocab) as i32
            })
            .collect();
        Example { input_ids, attention_mask, labels }
    }
}
