//! A PJRT client: devices, host-to-device transfers, compilation.

use super::buffer::{to_pjrt_type, Buffer};
use super::compile_options::CompileOptions;
use super::error::{PjrtError, Result};
use super::executable::LoadedExecutable;
use super::ffi::{self, slot};
use super::plugin::Plugin;
use crate::dtype::DType;
use crate::runtime::CompileCache;
use std::sync::Arc;

/// A value passed to `PJRT_Client_Create` (plugin specific, e.g. `cpu_device_count`).
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    Int(i64),
    Str(String),
    Bool(bool),
    Float(f32),
}

/// Options for creating a client.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Number of virtual CPU devices (CPU plugins only).
    pub cpu_device_count: Option<usize>,
    /// Further plugin-specific options.
    pub extra: Vec<(String, OptionValue)>,
}

impl ClientOptions {
    pub fn cpu_devices(n: usize) -> Self {
        ClientOptions { cpu_device_count: Some(n), extra: vec![] }
    }
}

#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub id: i32,
    pub kind: String,
}

pub(crate) struct ClientInner {
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) raw: *mut ffi::PJRT_Client,
    platform: String,
    platform_version: String,
    devices: Vec<(*mut ffi::PJRT_Device, DeviceInfo)>,
}

// SAFETY: the PJRT client is thread-safe.
unsafe impl Send for ClientInner {}
unsafe impl Sync for ClientInner {}

impl ClientInner {
    pub(crate) fn await_event(&self, event: *mut ffi::PJRT_Event, call: &'static str) -> Result<()> {
        if event.is_null() {
            return Ok(());
        }
        let mut a = ffi::PJRT_Event_Await_Args::new();
        a.event = event;
        let r = unsafe { self.plugin.call(slot::EVENT_AWAIT, call, &mut a) };
        let mut d = ffi::PJRT_Event_Destroy_Args::new();
        d.event = event;
        let _ = unsafe { self.plugin.call(slot::EVENT_DESTROY, "PJRT_Event_Destroy", &mut d) };
        r
    }

    pub(crate) fn device_ptr(&self, index: usize) -> Result<*mut ffi::PJRT_Device> {
        self.devices.get(index).map(|d| d.0).ok_or_else(|| {
            PjrtError::Invalid(format!("device index {index} is out of range: the client has {} devices", self.devices.len()))
        })
    }

    pub(crate) fn device_id(&self, ptr: *mut ffi::PJRT_Device) -> Result<i32> {
        self.devices
            .iter()
            .find(|d| d.0 == ptr)
            .map(|d| d.1.id)
            .ok_or_else(|| PjrtError::Invalid("buffer lives on a device this client does not address".into()))
    }

    pub(crate) fn device_index_of(&self, ptr: *mut ffi::PJRT_Device) -> Option<usize> {
        self.devices.iter().position(|d| d.0 == ptr)
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut a = ffi::PJRT_Client_Destroy_Args::new();
        a.client = self.raw;
        if let Err(e) = unsafe { self.plugin.call(slot::CLIENT_DESTROY, "PJRT_Client_Destroy", &mut a) } {
            tracing::warn!("{e}");
        }
    }
}

/// A connection to the devices of one plugin. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
    /// Where [`Program::compile`](crate::runtime::Program::compile) keeps and finds
    /// executables; `None` (the default) compiles every time.
    compile_cache: Option<Arc<CompileCache>>,
}

fn read_str(p: *const u8, n: usize) -> String {
    if p.is_null() {
        return String::new();
    }
    unsafe { String::from_utf8_lossy(std::slice::from_raw_parts(p, n)).into_owned() }
}

impl Client {
    pub fn new(plugin: Arc<Plugin>, options: &ClientOptions) -> Result<Client> {
        let mut named: Vec<(String, OptionValue)> = options.extra.clone();
        if let Some(n) = options.cpu_device_count {
            if n == 0 {
                return Err(PjrtError::Invalid("cpu_device_count must be at least 1".into()));
            }
            named.push(("cpu_device_count".into(), OptionValue::Int(n as i64)));
        }
        let values: Vec<ffi::PJRT_NamedValue> = named
            .iter()
            .map(|(name, v)| {
                let (kind, value, size) = match v {
                    OptionValue::Int(i) => (ffi::NAMED_VALUE_INT64, *i as u64, 1),
                    OptionValue::Str(s) => (ffi::NAMED_VALUE_STRING, s.as_ptr() as usize as u64, s.len()),
                    OptionValue::Bool(b) => (ffi::NAMED_VALUE_BOOL, *b as u64, 1),
                    OptionValue::Float(f) => (ffi::NAMED_VALUE_FLOAT, f.to_bits() as u64, 1),
                };
                ffi::PJRT_NamedValue {
                    struct_size: ffi::PJRT_NamedValue::STRUCT_SIZE,
                    extension_start: std::ptr::null_mut(),
                    name: name.as_ptr(),
                    name_size: name.len(),
                    kind,
                    value,
                    value_size: size,
                }
            })
            .collect();
        let mut a = ffi::PJRT_Client_Create_Args::new();
        a.create_options = values.as_ptr();
        a.num_options = values.len();
        unsafe { plugin.call(slot::CLIENT_CREATE, "PJRT_Client_Create", &mut a)? };
        let raw = a.client;

        let mut pn = ffi::PJRT_Client_PlatformName_Args::new();
        pn.client = raw;
        let mut pv = ffi::PJRT_Client_PlatformVersion_Args::new();
        pv.client = raw;
        let mut ad = ffi::PJRT_Client_AddressableDevices_Args::new();
        ad.client = raw;
        // Build the inner value first so the client is destroyed if a query fails.
        let mut inner = ClientInner { plugin: plugin.clone(), raw, platform: String::new(), platform_version: String::new(), devices: vec![] };
        unsafe {
            plugin.call(slot::CLIENT_PLATFORM_NAME, "PJRT_Client_PlatformName", &mut pn)?;
            plugin.call(slot::CLIENT_PLATFORM_VERSION, "PJRT_Client_PlatformVersion", &mut pv)?;
            plugin.call(slot::CLIENT_ADDRESSABLE_DEVICES, "PJRT_Client_AddressableDevices", &mut ad)?;
        }
        inner.platform = read_str(pn.platform_name, pn.platform_name_size);
        inner.platform_version = read_str(pv.platform_version, pv.platform_version_size);
        for i in 0..ad.num_addressable_devices {
            let dev = unsafe { *ad.addressable_devices.add(i) };
            let mut gd = ffi::PJRT_Device_GetDescription_Args::new();
            gd.device = dev;
            unsafe { plugin.call(slot::DEVICE_GET_DESCRIPTION, "PJRT_Device_GetDescription", &mut gd)? };
            let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
            id.device_description = gd.device_description;
            let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
            kind.device_description = gd.device_description;
            unsafe {
                plugin.call(slot::DEVICE_DESCRIPTION_ID, "PJRT_DeviceDescription_Id", &mut id)?;
                plugin.call(slot::DEVICE_DESCRIPTION_KIND, "PJRT_DeviceDescription_Kind", &mut kind)?;
            }
            inner.devices.push((dev, DeviceInfo { id: id.id, kind: read_str(kind.device_kind, kind.device_kind_size) }));
        }
        Ok(Client { inner: Arc::new(inner), compile_cache: None })
    }

    /// This client (sharing its devices) with programs compiled through `cache`;
    /// `None` turns caching off. Clones made afterwards share the setting.
    pub fn with_compile_cache(mut self, cache: Option<Arc<CompileCache>>) -> Client {
        self.compile_cache = cache;
        self
    }

    pub fn compile_cache(&self) -> Option<&Arc<CompileCache>> {
        self.compile_cache.as_ref()
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.inner.plugin
    }

    /// "cpu", "cuda", "tpu", ...
    pub fn platform(&self) -> &str {
        &self.inner.platform
    }

    pub fn platform_version(&self) -> &str {
        &self.inner.platform_version
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.inner.devices.iter().map(|d| d.1.clone()).collect()
    }

    pub fn device_count(&self) -> usize {
        self.inner.devices.len()
    }

    pub fn device_ids(&self) -> Vec<i64> {
        self.inner.devices.iter().map(|d| d.1.id as i64).collect()
    }

    /// Copies a dense row-major host array to device `device_index`.
    pub fn buffer_from_host(&self, bytes: &[u8], dtype: DType, dims: &[i64], device_index: usize) -> Result<Buffer> {
        if let Some(d) = dims.iter().find(|d| **d < 0) {
            return Err(PjrtError::Invalid(format!("negative dimension {d} in shape {dims:?}")));
        }
        let expected = dims.iter().product::<i64>() as usize * dtype.size_in_bytes();
        if bytes.len() != expected {
            return Err(PjrtError::Invalid(format!(
                "host data has {} bytes but a {dtype} array of shape {dims:?} needs {expected}",
                bytes.len()
            )));
        }
        let device = self.inner.device_ptr(device_index)?;
        let mut a = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
        a.client = self.inner.raw;
        a.data = bytes.as_ptr().cast();
        a.kind = to_pjrt_type(dtype);
        a.dims = dims.as_ptr();
        a.num_dims = dims.len();
        a.host_buffer_semantics = ffi::HOST_BUFFER_IMMUTABLE_ONLY_DURING_CALL;
        a.device = device;
        unsafe {
            self.inner.plugin.call(slot::CLIENT_BUFFER_FROM_HOST_BUFFER, "PJRT_Client_BufferFromHostBuffer", &mut a)?
        };
        let buffer = Buffer { client: self.inner.clone(), raw: a.buffer };
        // The data must stay valid until the plugin says it is done with it.
        self.inner.await_event(a.done_with_host_buffer, "PJRT_Client_BufferFromHostBuffer")?;
        Ok(buffer)
    }

    /// Compiles a StableHLO (MLIR text or bytecode) module.
    pub fn compile(&self, module: &str, options: &CompileOptions) -> Result<LoadedExecutable> {
        let needed = options.num_devices();
        if needed > self.device_count() {
            return Err(PjrtError::Invalid(format!(
                "the program needs {needed} devices but the {} client has {}",
                self.platform(),
                self.device_count()
            )));
        }
        if let Some(ids) = &options.device_ids {
            let known = self.device_ids();
            if let Some(bad) = ids.iter().flatten().find(|id| !known.contains(id)) {
                return Err(PjrtError::Invalid(format!("device id {bad} is not one of this client's devices {known:?}")));
            }
        }
        let opts = options.encode(&self.device_ids());
        let format = "mlir";
        let program = ffi::PJRT_Program {
            struct_size: ffi::PJRT_Program::STRUCT_SIZE,
            extension_start: std::ptr::null_mut(),
            code: module.as_ptr(),
            code_size: module.len(),
            format: format.as_ptr(),
            format_size: format.len(),
        };
        let mut a = ffi::PJRT_Client_Compile_Args::new();
        a.client = self.inner.raw;
        a.program = &program;
        a.compile_options = opts.as_ptr();
        a.compile_options_size = opts.len();
        unsafe { self.inner.plugin.call(slot::CLIENT_COMPILE, "PJRT_Client_Compile", &mut a)? };
        LoadedExecutable::wrap(self.inner.clone(), a.executable)
    }

    /// Loads an executable produced by [`LoadedExecutable::serialize`] (same plugin and version).
    pub fn deserialize(&self, bytes: &[u8]) -> Result<LoadedExecutable> {
        let mut a = ffi::PJRT_Executable_DeserializeAndLoad_Args::new();
        a.client = self.inner.raw;
        a.serialized_executable = bytes.as_ptr();
        a.serialized_executable_size = bytes.len();
        unsafe {
            self.inner.plugin.call(slot::EXECUTABLE_DESERIALIZE_AND_LOAD, "PJRT_Executable_DeserializeAndLoad", &mut a)?
        };
        LoadedExecutable::wrap(self.inner.clone(), a.loaded_executable)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}, {} devices)", self.platform(), self.device_count())
    }
}

/// Whether a client of `platform` (as [`Client::platform`] names it) runs on
/// the host CPU: its devices then share host memory, and its plugin compiles
/// for the host's instruction set.
pub fn is_cpu_platform(platform: &str) -> bool {
    platform.to_ascii_lowercase().contains("cpu") || platform.eq_ignore_ascii_case("host")
}
