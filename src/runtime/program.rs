//! A compiled graph with its signature: type-checked execution on device
//! buffers or host arrays, on one device or on every replica.

use crate::error::{Error, Result};
use crate::graph::{emit_module, Graph, ModuleOptions, Tensor, TensorType};
use crate::host::HostTensor;
use super::CompileCache;
use crate::pjrt::{Buffer, Client, CompileOptions, LoadedExecutable};
use std::time::{Duration, Instant};

/// How to compile a graph.
#[derive(Clone, Debug, Default)]
pub struct ProgramOptions {
    /// Data-parallel replicas (default 1).
    pub replicas: usize,
    /// SPMD partitions (default 1).
    pub partitions: usize,
    /// Parameters whose buffers the program consumes and may reuse for outputs.
    pub donate: Vec<usize>,
    /// Per-parameter SPMD shardings (`mhlo.sharding` strings).
    pub arg_shardings: Vec<Option<String>>,
    /// Per-result SPMD shardings.
    pub result_shardings: Vec<Option<String>>,
    /// Client device indices to run on, replica-major (`replicas x partitions` of them);
    /// `None` means the client's first devices. Lets several programs share one client
    /// on disjoint devices (e.g. sweep trials side by side).
    pub devices: Option<Vec<usize>>,
}

impl ProgramOptions {
    pub fn replicated(n: usize) -> Self {
        ProgramOptions { replicas: n, ..Default::default() }
    }
    pub fn donating(mut self, params: impl IntoIterator<Item = usize>) -> Self {
        self.donate.extend(params);
        self
    }
    /// Runs on these client device indices instead of the first ones.
    pub fn on_devices(mut self, devices: Vec<usize>) -> Self {
        self.devices = Some(devices);
        self
    }

    /// The PJRT device ids of `devices`, as `[replica][partition]`, checked against `client`.
    fn device_assignment(&self, client: &Client) -> Result<Option<Vec<Vec<i64>>>> {
        let Some(devices) = &self.devices else { return Ok(None) };
        let (replicas, partitions) = (self.replicas.max(1), self.partitions.max(1));
        if devices.len() != replicas * partitions {
            return Err(Error::Invalid(format!(
                "the program has {replicas} replica(s) x {partitions} partition(s) but was given {} devices {devices:?}",
                devices.len()
            )));
        }
        let known = client.devices();
        let mut seen = std::collections::HashSet::new();
        let mut ids = Vec::with_capacity(devices.len());
        for &d in devices {
            let info = known.get(d).ok_or_else(|| {
                Error::Invalid(format!("device index {d} is out of range: the {} client has {} devices", client.platform(), known.len()))
            })?;
            if !seen.insert(d) {
                return Err(Error::Invalid(format!("device index {d} is listed twice in {devices:?}")));
            }
            ids.push(info.id as i64);
        }
        Ok(Some(ids.chunks(partitions).map(|c| c.to_vec()).collect()))
    }
}

/// A compiled program and the types it takes and returns.
pub struct Program {
    pub name: String,
    pub exe: LoadedExecutable,
    pub client: Client,
    pub param_names: Vec<String>,
    pub inputs: Vec<TensorType>,
    pub outputs: Vec<TensorType>,
    pub options: ProgramOptions,
    /// The StableHLO text it was compiled from.
    pub module: String,
    /// Time to compile it, or to load it when it came from the compile cache.
    pub compile_time: Duration,
    /// Whether the executable was loaded from the client's [`CompileCache`](super::CompileCache).
    pub from_cache: bool,
}

impl Program {
    /// Lowers `outputs` of `graph` to StableHLO and compiles it on `client`.
    pub fn compile(client: &Client, graph: &Graph, outputs: &[&Tensor], options: &ProgramOptions) -> Result<Program> {
        let module_opts = ModuleOptions {
            donate: options.donate.clone(),
            arg_shardings: options.arg_shardings.clone(),
            result_shardings: options.result_shardings.clone(),
            num_replicas: options.replicas.max(1),
            num_partitions: options.partitions.max(1),
        };
        let outs: Vec<Tensor> = outputs.iter().map(|t| (*t).clone()).collect();
        let module = emit_module(graph, &outs, &module_opts)?;
        let compile_opts = CompileOptions {
            num_replicas: options.replicas.max(1),
            num_partitions: options.partitions.max(1),
            device_ids: options.device_assignment(client)?,
            propagate_to_output: if options.result_shardings.is_empty() { vec![] } else { (0..outs.len()).map(|i| options.result_shardings.get(i).is_none_or(|s| s.is_none())).collect() },
        };
        let name = graph.name();
        let t = Instant::now();
        let cached = client.compile_cache().map(|cache| (cache, CompileCache::key(client, &module, &compile_opts)));
        let expected_devices: Vec<usize> = match &options.devices {
            Some(d) => d.clone(),
            None => (0..compile_opts.num_devices()).collect(),
        };
        let hit = cached.as_ref().and_then(|(cache, key)| cache.load(key, client, &expected_devices));
        let from_cache = hit.is_some();
        let exe = match hit {
            Some(exe) => exe,
            None => client.compile(&module, &compile_opts).map_err(|e| annotate_compile_error(e, &module))?,
        };
        let compile_time = t.elapsed();
        if from_cache {
            tracing::debug!("program '{name}' loaded from the compile cache in {compile_time:.1?}");
        } else {
            tracing::debug!("program '{name}' compiled in {compile_time:.1?}");
            if let Some((cache, key)) = &cached {
                cache.store(key, &name, &exe);
            }
        }
        Ok(Program {
            name,
            exe,
            client: client.clone(),
            param_names: graph.param_names(),
            inputs: graph.param_types(),
            outputs: outs.iter().map(|t| t.ty().clone()).collect(),
            options: options.clone(),
            module,
            compile_time,
            from_cache,
        })
    }

    /// "compiled in 1.2s" or "loaded from the compile cache in 0.1s".
    pub fn compile_note(&self) -> String {
        let how = if self.from_cache { "loaded from the compile cache" } else { "compiled" };
        format!("{how} in {:.1?}", self.compile_time)
    }

    /// Number of devices the program runs on at once.
    pub fn num_devices(&self) -> usize {
        self.exe.device_indices().len()
    }

    fn spmd(&self) -> bool {
        self.options.partitions > 1
    }

    fn check_args(&self, device: usize, args: &[&Buffer]) -> Result<()> {
        if args.len() != self.inputs.len() {
            return Err(Error::Invalid(format!(
                "program '{}' takes {} arguments ({}), got {}",
                self.name,
                self.inputs.len(),
                self.param_names.join(", "),
                args.len()
            )));
        }
        for (i, (b, want)) in args.iter().zip(&self.inputs).enumerate() {
            let (dtype, dims) = (b.dtype()?, b.dims()?);
            let shape_ok = self.spmd() || dims == want.shape;
            if dtype != want.dtype || !shape_ok {
                return Err(Error::Invalid(format!(
                    "argument {i} ('{}') of program '{}' on device {device} must be {want}, got {dtype}{dims:?}",
                    self.param_names[i], self.name
                )));
            }
        }
        Ok(())
    }

    /// Runs on device buffers: `args[d]` for the d-th device of the program.
    pub fn execute(&self, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        for (d, a) in args.iter().enumerate() {
            self.check_args(d, a)?;
        }
        Ok(self.exe.execute(args)?)
    }

    /// Copies host arrays to the program's d-th device.
    pub fn upload(&self, device: usize, values: &[&HostTensor]) -> Result<Vec<Buffer>> {
        let idx = *self.exe.device_indices().get(device).ok_or_else(|| {
            Error::Invalid(format!("program '{}' runs on {} devices, not {}", self.name, self.num_devices(), device + 1))
        })?;
        values.iter().map(|v| Ok(self.client.buffer_from_host(&v.data, v.dtype, &v.shape, idx)?)).collect()
    }

    /// Runs on one device with host inputs and outputs.
    pub fn run(&self, inputs: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        if self.num_devices() != 1 {
            return Err(Error::Invalid(format!(
                "program '{}' runs on {} devices: use run_replicated",
                self.name,
                self.num_devices()
            )));
        }
        let mut out = self.run_replicated(&[inputs.to_vec()])?;
        Ok(out.remove(0))
    }

    /// Runs on every device with per-device host inputs; returns per-device outputs.
    pub fn run_replicated(&self, inputs: &[Vec<&HostTensor>]) -> Result<Vec<Vec<HostTensor>>> {
        if inputs.len() != self.num_devices() {
            return Err(Error::Invalid(format!(
                "program '{}' runs on {} devices but got inputs for {}",
                self.name,
                self.num_devices(),
                inputs.len()
            )));
        }
        for (d, list) in inputs.iter().enumerate() {
            if list.len() != self.inputs.len() {
                return Err(Error::Invalid(format!(
                    "program '{}' takes {} arguments ({}), got {} for device {d}",
                    self.name,
                    self.inputs.len(),
                    self.param_names.join(", "),
                    list.len()
                )));
            }
            for (i, (v, want)) in list.iter().zip(&self.inputs).enumerate() {
                if v.dtype != want.dtype || (!self.spmd() && v.shape != want.shape) {
                    return Err(Error::Invalid(format!(
                        "argument {i} ('{}') of program '{}' must be {want}, got {}{:?}",
                        self.param_names[i], self.name, v.dtype, v.shape
                    )));
                }
            }
        }
        let buffers: Vec<Vec<Buffer>> =
            inputs.iter().enumerate().map(|(d, list)| self.upload(d, list)).collect::<Result<_>>()?;
        let refs: Vec<Vec<&Buffer>> = buffers.iter().map(|l| l.iter().collect()).collect();
        let outs = self.execute(&refs)?;
        outs.iter().map(|list| list.iter().map(download).collect()).collect()
    }

    /// Serialized executable, for [`Program::deserialize`].
    pub fn serialize(&self) -> Result<Vec<u8>> {
        Ok(self.exe.serialize()?)
    }

    /// Loads a serialized executable into `client`, taking the signature from `like`'s graph.
    pub fn deserialize(client: &Client, bytes: &[u8], signature: &Program) -> Result<Program> {
        let t = Instant::now();
        let exe = client.deserialize(bytes)?;
        Ok(Program {
            name: signature.name.clone(),
            exe,
            client: client.clone(),
            param_names: signature.param_names.clone(),
            inputs: signature.inputs.clone(),
            outputs: signature.outputs.clone(),
            options: signature.options.clone(),
            module: signature.module.clone(),
            compile_time: t.elapsed(),
            from_cache: false,
        })
    }
}

/// Copies a device buffer to a host array.
pub fn download(b: &Buffer) -> Result<HostTensor> {
    let dtype = b.dtype()?;
    let shape = b.dims()?;
    let data = b.to_host_bytes()?;
    Ok(HostTensor { dtype, shape, data })
}

/// Adds the offending StableHLO line to a compile error that names one (`-:LINE:COL`).
fn annotate_compile_error(e: crate::pjrt::PjrtError, module: &str) -> Error {
    let text = e.to_string();
    let line = text
        .split("-:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse::<usize>().ok());
    match line.and_then(|n| module.lines().nth(n.saturating_sub(1))) {
        Some(src) => Error::Invalid(format!("{text}\nin StableHLO line: {}", src.trim())),
        None => Error::Pjrt(e),
    }
}
