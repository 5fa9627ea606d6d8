//! Parameter initialisers, run on the host from a seed and the parameter's
//! name, so every parameter's initial value is reproducible on its own.

use crate::host::HostTensor;
use crate::DType;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    /// Uniform in [-a, a].
    Uniform(f64),
    /// Every element equal to this value (e.g. CLIP's initial log temperature).
    Constant(f64),
}

/// SplitMix64: a small, well-mixed generator for host-side initialisation.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// FNV-1a of the name, mixed with the seed.
fn stream(seed: u64, name: &str) -> SplitMix {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    SplitMix(h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Init {
    /// The initial value of parameter `name` of `shape`.
    pub fn sample(&self, seed: u64, name: &str, dtype: DType, shape: &[i64]) -> HostTensor {
        let n: usize = shape.iter().product::<i64>() as usize;
        let mut rng = stream(seed, name);
        let values: Vec<f64> = match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant(v) => vec![v; n],
            Init::Uniform(a) => (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * a).collect(),
            Init::Normal(std) => {
                let mut out = Vec::with_capacity(n + 1);
                while out.len() < n {
                    // Box-Muller: two normals per pair of uniforms.
                    let (u1, u2) = (rng.unit(), rng.unit());
                    let r = (-2.0 * u1.ln()).sqrt();
                    let t = 2.0 * std::f64::consts::PI * u2;
                    out.push(r * t.cos() * std);
                    out.push(r * t.sin() * std);
                }
                out.truncate(n);
                out
            }
        };
        HostTensor::from_f64(dtype, shape, &values).expect("shape matches value count")
    }
}
