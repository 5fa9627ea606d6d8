//! Compiled programs: execution on one or several devices, serialization.

use super::buffer::Buffer;
use super::client::ClientInner;
use super::error::{PjrtError, Result};
use super::ffi::{self, slot};
use std::sync::Arc;

/// Memory a compiled program needs on each of its devices, as the compiler
/// planned it (`PJRT_Executable_GetCompiledMemoryStats`), in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompiledMemoryStats {
    pub generated_code: i64,
    /// Every argument buffer (for a training step: parameters, optimizer state, batch).
    pub arguments: i64,
    pub outputs: i64,
    /// Bytes of outputs that reuse (donated) argument buffers.
    pub aliased: i64,
    /// Scratch buffers live during execution.
    pub temporaries: i64,
    pub host_generated_code: i64,
    pub host_arguments: i64,
    pub host_outputs: i64,
    pub host_aliased: i64,
    pub host_temporaries: i64,
    /// Peak, where the plugin reports it (newer C APIs); `None` otherwise.
    pub peak: Option<i64>,
}

impl CompiledMemoryStats {
    /// Device bytes in use at once: arguments, outputs not aliased to
    /// arguments, temporaries and the generated code.
    pub fn device_total(&self) -> i64 {
        self.arguments + self.outputs - self.aliased + self.temporaries + self.generated_code
    }
}

pub struct LoadedExecutable {
    client: Arc<ClientInner>,
    raw: *mut ffi::PJRT_LoadedExecutable,
    num_outputs: usize,
    /// Client device indices the program runs on, in execution order.
    device_indices: Vec<usize>,
}

// SAFETY: PJRT executables may be executed from any thread.
unsafe impl Send for LoadedExecutable {}
unsafe impl Sync for LoadedExecutable {}

/// The non-loaded executable behind a loaded one; destroyed on drop.
struct ExecutableRef<'a> {
    client: &'a ClientInner,
    raw: *mut ffi::PJRT_Executable,
}

impl Drop for ExecutableRef<'_> {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_Executable_Destroy_Args::new();
        a.executable = self.raw;
        let _ = unsafe { self.client.plugin.call(slot::EXECUTABLE_DESTROY, "PJRT_Executable_Destroy", &mut a) };
    }
}

impl LoadedExecutable {
    pub(crate) fn wrap(client: Arc<ClientInner>, raw: *mut ffi::PJRT_LoadedExecutable) -> Result<Self> {
        let mut exe = LoadedExecutable { client, raw, num_outputs: 0, device_indices: vec![] };
        let inner = exe.executable()?;
        let mut n = ffi::PJRT_Executable_NumOutputs_Args::new();
        n.executable = inner.raw;
        unsafe { exe.client.plugin.call(slot::EXECUTABLE_NUM_OUTPUTS, "PJRT_Executable_NumOutputs", &mut n)? };
        drop(inner);
        exe.num_outputs = n.num_outputs;
        let mut d = ffi::PJRT_LoadedExecutable_AddressableDevices_Args::new();
        d.executable = raw;
        unsafe {
            exe.client.plugin.call(
                slot::LOADED_EXECUTABLE_ADDRESSABLE_DEVICES,
                "PJRT_LoadedExecutable_AddressableDevices",
                &mut d,
            )?
        };
        for i in 0..d.num_addressable_devices {
            let dev = unsafe { *d.addressable_devices.add(i) };
            let idx = exe
                .client
                .device_index_of(dev)
                .ok_or_else(|| PjrtError::Invalid("executable runs on a device the client does not know".into()))?;
            exe.device_indices.push(idx);
        }
        Ok(exe)
    }

    fn executable(&self) -> Result<ExecutableRef<'_>> {
        let mut a = ffi::PJRT_LoadedExecutable_GetExecutable_Args::new();
        a.loaded_executable = self.raw;
        unsafe {
            self.client
                .plugin
                .call(slot::LOADED_EXECUTABLE_GET_EXECUTABLE, "PJRT_LoadedExecutable_GetExecutable", &mut a)?
        };
        Ok(ExecutableRef { client: &self.client, raw: a.executable })
    }

    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// Client device indices this program runs on (one per replica/partition).
    pub fn device_indices(&self) -> &[usize] {
        &self.device_indices
    }

    pub fn generated_code_size(&self) -> Result<i64> {
        let e = self.executable()?;
        let mut a = ffi::PJRT_Executable_SizeOfGeneratedCodeInBytes_Args::new();
        a.executable = e.raw;
        unsafe {
            self.client.plugin.call(
                slot::EXECUTABLE_SIZE_OF_GENERATED_CODE,
                "PJRT_Executable_SizeOfGeneratedCodeInBytes",
                &mut a,
            )?
        };
        Ok(a.size_in_bytes)
    }

    /// The compiler's per-device memory plan. An error names the missing call on
    /// plugins whose API table lacks it, or the plugin's own refusal.
    pub fn compiled_memory_stats(&self) -> Result<CompiledMemoryStats> {
        let e = self.executable()?;
        let mut a = ffi::PJRT_Executable_GetCompiledMemoryStats_Args::new();
        a.executable = e.raw;
        unsafe {
            self.client.plugin.call(
                slot::EXECUTABLE_GET_COMPILED_MEMORY_STATS,
                "PJRT_Executable_GetCompiledMemoryStats",
                &mut a,
            )?
        };
        Ok(CompiledMemoryStats {
            generated_code: a.generated_code_size_in_bytes,
            arguments: a.argument_size_in_bytes,
            outputs: a.output_size_in_bytes,
            aliased: a.alias_size_in_bytes,
            temporaries: a.temp_size_in_bytes,
            host_generated_code: a.host_generated_code_size_in_bytes,
            host_arguments: a.host_argument_size_in_bytes,
            host_outputs: a.host_output_size_in_bytes,
            host_aliased: a.host_alias_size_in_bytes,
            host_temporaries: a.host_temp_size_in_bytes,
            peak: (a.peak_memory_in_bytes > 0).then_some(a.peak_memory_in_bytes),
        })
    }

    /// Serialized form for a compile cache; load it with `Client::deserialize`.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let e = self.executable()?;
        let mut a = ffi::PJRT_Executable_Serialize_Args::new();
        a.executable = e.raw;
        unsafe { self.client.plugin.call(slot::EXECUTABLE_SERIALIZE, "PJRT_Executable_Serialize", &mut a)? };
        let bytes = unsafe { std::slice::from_raw_parts(a.serialized_bytes, a.serialized_bytes_size).to_vec() };
        if let Some(deleter) = a.serialized_executable_deleter {
            unsafe { deleter(a.serialized_executable) };
        }
        Ok(bytes)
    }

    /// Runs the program; `args[d]` are the arguments for the d-th device of
    /// [`device_indices`](Self::device_indices). Returns the outputs per device.
    /// Arguments the program marks as donated are consumed: their buffers are
    /// deleted by the runtime and must not be read again.
    pub fn execute(&self, args: &[Vec<&Buffer>]) -> Result<Vec<Vec<Buffer>>> {
        let n_dev = self.device_indices.len();
        if args.len() != n_dev {
            return Err(PjrtError::Invalid(format!(
                "execute got argument lists for {} devices but the program runs on {n_dev}",
                args.len()
            )));
        }
        let n_args = args.first().map_or(0, |a| a.len());
        if let Some((d, a)) = args.iter().enumerate().find(|(_, a)| a.len() != n_args) {
            return Err(PjrtError::Invalid(format!(
                "device {d} got {} arguments but device 0 got {n_args}",
                a.len()
            )));
        }
        let raw_args: Vec<Vec<*mut ffi::PJRT_Buffer>> =
            args.iter().map(|list| list.iter().map(|b| b.raw).collect()).collect();
        let arg_ptrs: Vec<*const *mut ffi::PJRT_Buffer> = raw_args.iter().map(|l| l.as_ptr()).collect();
        let mut outputs: Vec<Vec<*mut ffi::PJRT_Buffer>> =
            (0..n_dev).map(|_| vec![std::ptr::null_mut(); self.num_outputs]).collect();
        let out_ptrs: Vec<*mut *mut ffi::PJRT_Buffer> = outputs.iter_mut().map(|l| l.as_mut_ptr()).collect();
        let mut events: Vec<*mut ffi::PJRT_Event> = vec![std::ptr::null_mut(); n_dev];

        let options = ffi::PJRT_ExecuteOptions::new();
        let mut a = ffi::PJRT_LoadedExecutable_Execute_Args::new();
        a.executable = self.raw;
        a.options = &options;
        a.argument_lists = arg_ptrs.as_ptr();
        a.num_devices = n_dev;
        a.num_args = n_args;
        a.output_lists = out_ptrs.as_ptr();
        a.device_complete_events = events.as_mut_ptr();
        unsafe {
            self.client.plugin.call(slot::LOADED_EXECUTABLE_EXECUTE, "PJRT_LoadedExecutable_Execute", &mut a)?
        };
        let result: Vec<Vec<Buffer>> = outputs
            .into_iter()
            .map(|list| list.into_iter().map(|raw| Buffer { client: self.client.clone(), raw }).collect())
            .collect();
        // Waiting makes execution errors surface here, attributed to this call.
        let mut first_err = None;
        for e in events {
            if let Err(err) = self.client.await_event(e, "PJRT_LoadedExecutable_Execute") {
                first_err.get_or_insert(err);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }
}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
        a.executable = self.raw;
        if let Err(e) = unsafe {
            self.client.plugin.call(slot::LOADED_EXECUTABLE_DESTROY, "PJRT_LoadedExecutable_Destroy", &mut a)
        } {
            tracing::warn!("{e}");
        }
    }
}
