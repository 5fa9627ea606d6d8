//! Compiled VQGAN inference: images to tokens, tokens to images, and the
//! round trip, with the weights kept on every device and batches split
//! across them (data parallel, no communication needed).

use super::{select_params, Vqgan, VqganConfig};
use crate::error::{Error, Result};
use crate::graph::{Graph, Tensor};
use crate::host::HostTensor;
use crate::nn::VarBuilder;
use crate::pjrt::{Buffer, Client};
use crate::runtime::{download, Program, ProgramOptions};
use crate::DType;
use std::collections::BTreeMap;

pub struct VqganCodec {
    pub config: VqganConfig,
    /// Images per device per program call.
    pub per_device: i64,
    pub replicas: usize,
    encode: Compiled,
    decode: Compiled,
    reconstruct: Compiled,
}

/// A program and, per device, the weights it takes after its input.
struct Compiled {
    program: Program,
    weights: Vec<Vec<Buffer>>,
}

/// Which program a batch goes through.
#[derive(Clone, Copy)]
enum Job {
    Encode,
    Decode,
    Reconstruct,
}

impl VqganCodec {
    /// Compiles the three programs for `per_device` images per device on
    /// `replicas` devices and uploads `weights` (by flax name) to each device.
    pub fn new(client: &Client, config: VqganConfig, weights: &BTreeMap<String, HostTensor>, origin: &str, per_device: i64, replicas: usize) -> Result<Self> {
        config.validate().map_err(Error::Invalid)?;
        if per_device < 1 || replicas < 1 || replicas > client.device_count() {
            return Err(Error::Invalid(format!(
                "the VQGAN codec needs at least one image per device and 1..={} devices, got {per_device} per device on {replicas}",
                client.device_count()
            )));
        }
        let model = Vqgan::new(config.clone());
        let (r, c, l) = (config.resolution, config.in_channels, config.image_length());
        let opts = ProgramOptions::replicated(replicas);
        let build = |name: &str, input: (DType, Vec<i64>), f: &dyn Fn(&VarBuilder, &Tensor) -> crate::graph::Result<Tensor>| -> Result<Compiled> {
            let g = Graph::new(name);
            let x = g.param("input", input.0, &input.1);
            let vb = VarBuilder::new(&g, DType::F32);
            let out = f(&vb, &x)?;
            let program = Program::compile(client, &g, &[&out], &opts)?;
            let values = select_params(weights, &vb.specs(), origin)?;
            let refs: Vec<&HostTensor> = values.iter().collect();
            let weights = (0..replicas).map(|d| program.upload(d, &refs)).collect::<Result<_>>()?;
            Ok(Compiled { program, weights })
        };
        let images = (DType::F32, vec![per_device, r, r, c]);
        let encode = build("vqgan_encode", images.clone(), &|vb, x| model.encode(vb, x))?;
        let decode = build("vqgan_decode", (DType::I32, vec![per_device, l]), &|vb, x| model.decode(vb, x))?;
        let reconstruct = build("vqgan_reconstruct", images, &|vb, x| Ok(model.reconstruct(vb, x)?.0))?;
        Ok(VqganCodec { config, per_device, replicas, encode, decode, reconstruct })
    }

    /// Images per program call over all devices.
    pub fn batch_size(&self) -> usize {
        self.per_device as usize * self.replicas
    }

    /// Tokens `[N, image_length]` (i32) for images `[N, R, R, 3]` (f32 in [-1, 1]); any N.
    pub fn encode(&self, images: &HostTensor) -> Result<HostTensor> {
        self.run(Job::Encode, images)
    }

    /// Images `[N, R, R, 3]` for tokens `[N, image_length]`; tokens outside the codebook are an error.
    pub fn decode(&self, tokens: &HostTensor) -> Result<HostTensor> {
        let tokens = tokens.cast(DType::I32);
        let n_embed = self.config.n_embed;
        if let Some((i, t)) = tokens.to_vec::<i32>()?.iter().enumerate().find(|(_, t)| **t < 0 || **t as i64 >= n_embed) {
            return Err(Error::Invalid(format!("token {t} at position {i} is outside the codebook of {n_embed} entries")));
        }
        self.run(Job::Decode, &tokens)
    }

    /// `decode(encode(images))` in one program.
    pub fn reconstruct(&self, images: &HostTensor) -> Result<HostTensor> {
        self.run(Job::Reconstruct, images)
    }

    fn run(&self, job: Job, input: &HostTensor) -> Result<HostTensor> {
        let (compiled, what) = match job {
            Job::Encode => (&self.encode, "images"),
            Job::Decode => (&self.decode, "tokens"),
            Job::Reconstruct => (&self.reconstruct, "images"),
        };
        let program = &compiled.program;
        let want = &program.inputs[0];
        if input.dtype != want.dtype || input.shape.len() != want.shape.len() || input.shape[1..] != want.shape[1..] {
            return Err(Error::Invalid(format!(
                "{what} must be {}[N, {}], got {}{:?}",
                want.dtype,
                want.shape[1..].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                input.dtype,
                input.shape
            )));
        }
        let n = input.shape[0] as usize;
        let row_bytes = input.data.len() / n.max(1);
        let out_row: i64 = program.outputs[0].shape[1..].iter().product();
        let out_bytes = out_row as usize * program.outputs[0].dtype.size_in_bytes();
        let mut out = Vec::with_capacity(n * out_bytes);
        let per = self.per_device as usize;
        for chunk in input.data.chunks((self.batch_size() * row_bytes).max(1)) {
            let rows = chunk.len() / row_bytes.max(1);
            // A short last batch is padded with zero rows whose results are dropped.
            let mut padded = chunk.to_vec();
            padded.resize(self.batch_size() * row_bytes, 0);
            let mut args = Vec::with_capacity(self.replicas);
            for d in 0..self.replicas {
                let mut shape = want.shape.clone();
                shape[0] = per as i64;
                let part = HostTensor { dtype: want.dtype, shape, data: padded[d * per * row_bytes..(d + 1) * per * row_bytes].to_vec() };
                args.push(program.upload(d, &[&part])?);
            }
            let refs: Vec<Vec<&Buffer>> = args.iter().zip(&compiled.weights).map(|(a, w)| a.iter().chain(w).collect()).collect();
            let results = program.execute(&refs)?;
            let mut got = Vec::with_capacity(self.batch_size() * out_bytes);
            for device in &results {
                got.extend(download(&device[0])?.data);
            }
            out.extend_from_slice(&got[..rows * out_bytes]);
        }
        let mut shape = program.outputs[0].shape.clone();
        shape[0] = n as i64;
        Ok(HostTensor { dtype: program.outputs[0].dtype, shape, data: out })
    }
}
