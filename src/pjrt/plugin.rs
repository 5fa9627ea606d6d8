//! Loading a PJRT plugin (`GetPjrtApi`) and calling into its function table.

use super::error::{code_name, PjrtError, Result};
use super::ffi::{self, slot, ErrorPtr, PJRT_Api};
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Oldest PJRT C API minor version we call into (xla-cpu-pjrt 0.0.1 is 0.81).
pub const MIN_API_MINOR: i32 = 81;
/// The newest layout our declarations follow; newer plugins are tried with a warning.
pub const KNOWN_API_MINOR: i32 = 116;

/// A loaded plugin. Plugins are never unloaded: XLA registers global state on
/// load that does not survive `dlclose`, so one `Plugin` lives per path per process.
pub struct Plugin {
    _lib: libloading::Library,
    api: *const PJRT_Api,
    path: PathBuf,
    major: i32,
    minor: i32,
    slots: usize,
}

// SAFETY: the PJRT C API is thread-safe; the table is immutable after load.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

fn registry() -> &'static Mutex<HashMap<PathBuf, Arc<Plugin>>> {
    static REG: OnceLock<Mutex<HashMap<PathBuf, Arc<Plugin>>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Plugin {
    /// Loads (once per process) and initialises the plugin at `path`.
    pub fn load(path: &Path) -> Result<Arc<Plugin>> {
        let canonical = path.canonicalize().map_err(|e| PjrtError::PluginLoad {
            path: path.to_path_buf(),
            reason: format!("{e}"),
        })?;
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = reg.get(&canonical) {
            return Ok(p.clone());
        }
        let plugin = Arc::new(Self::open(&canonical)?);
        reg.insert(canonical, plugin.clone());
        Ok(plugin)
    }

    fn open(path: &Path) -> Result<Plugin> {
        let load_err = |reason: String| PjrtError::PluginLoad { path: path.to_path_buf(), reason };
        // SAFETY: loading a shared library runs its initialisers; a PJRT plugin is
        // what the user pointed us at, and the file must be one for anything to work.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| load_err(e.to_string()))?;
        let get_api: libloading::Symbol<unsafe extern "C" fn() -> *const PJRT_Api> =
            unsafe { lib.get(b"GetPjrtApi\0") }
                .map_err(|_| load_err("it exports no GetPjrtApi symbol, so it is not a PJRT plugin".into()))?;
        let api = unsafe { get_api() };
        if api.is_null() {
            return Err(load_err("GetPjrtApi returned null".into()));
        }
        // SAFETY: GetPjrtApi returns a pointer to a static PJRT_Api table.
        let (size, major, minor) = unsafe {
            ((*api).struct_size, (*api).pjrt_api_version.major_version, (*api).pjrt_api_version.minor_version)
        };
        if major != 0 || minor < MIN_API_MINOR {
            return Err(PjrtError::UnsupportedApiVersion {
                path: path.to_path_buf(),
                major,
                minor,
                supported: format!("0.{MIN_API_MINOR} or newer, major version 0"),
            });
        }
        if size < ffi::API_TABLE_OFFSET + 8 * (slot::BUFFER_TO_HOST_BUFFER + 1) {
            return Err(load_err(format!("its PJRT_Api table is only {size} bytes")));
        }
        if minor > KNOWN_API_MINOR {
            tracing::warn!(
                "PJRT plugin {} speaks C API 0.{minor}, newer than the 0.{KNOWN_API_MINOR} layouts of this build",
                path.display()
            );
        }
        let slots = (size - ffi::API_TABLE_OFFSET) / 8;
        let plugin = Plugin { _lib: lib, api, path: path.to_path_buf(), major, minor, slots };
        let mut args = ffi::PJRT_Plugin_Initialize_Args::new();
        unsafe { plugin.call(slot::PLUGIN_INITIALIZE, "PJRT_Plugin_Initialize", &mut args)? };
        Ok(plugin)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn api_version(&self) -> (i32, i32) {
        (self.major, self.minor)
    }

    /// Size in bytes of the plugin's `PJRT_Api` table.
    pub fn api_table_size(&self) -> usize {
        ffi::API_TABLE_OFFSET + 8 * self.slots
    }

    fn function(&self, index: usize, name: &'static str) -> Result<*const c_void> {
        let missing = || PjrtError::MissingFunction { path: self.path.clone(), function: name, slots: self.slots };
        if index >= self.slots {
            return Err(missing());
        }
        // SAFETY: index is inside the table the plugin declared.
        let f = unsafe { *((self.api as *const u8).add(ffi::API_TABLE_OFFSET) as *const *const c_void).add(index) };
        if f.is_null() {
            return Err(missing());
        }
        Ok(f)
    }

    /// Calls table entry `index` with `args`, turning a returned `PJRT_Error` into ours.
    ///
    /// # Safety
    /// `A` must be the args struct of the function at `index`, with valid pointers.
    pub(crate) unsafe fn call<A>(&self, index: usize, name: &'static str, args: &mut A) -> Result<()> {
        let f = self.function(index, name)?;
        let f: unsafe extern "C" fn(*mut A) -> ErrorPtr = std::mem::transmute(f);
        let err = f(args as *mut A);
        self.take_error(err, name)
    }

    /// Converts a `PJRT_Error*` into `Result`, destroying it.
    pub(crate) fn take_error(&self, err: ErrorPtr, call: &'static str) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        let mut msg = ffi::PJRT_Error_Message_Args::new();
        msg.error = err;
        let mut code = ffi::PJRT_Error_GetCode_Args::new();
        code.error = err;
        let (message, code) = unsafe {
            if let Ok(f) = self.function(slot::ERROR_MESSAGE, "PJRT_Error_Message") {
                let f: unsafe extern "C" fn(*mut ffi::PJRT_Error_Message_Args) = std::mem::transmute(f);
                f(&mut msg);
            }
            let message = if msg.message.is_null() {
                String::from("(no message)")
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(msg.message, msg.message_size)).into_owned()
            };
            if let Ok(f) = self.function(slot::ERROR_GET_CODE, "PJRT_Error_GetCode") {
                let f: unsafe extern "C" fn(*mut ffi::PJRT_Error_GetCode_Args) -> ErrorPtr = std::mem::transmute(f);
                let e = f(&mut code);
                if !e.is_null() {
                    self.destroy_error(e);
                }
            }
            (message, code.code)
        };
        self.destroy_error(err);
        Err(PjrtError::Call { call, code: code_name(code).to_string(), message })
    }

    fn destroy_error(&self, err: ErrorPtr) {
        if let Ok(f) = self.function(slot::ERROR_DESTROY, "PJRT_Error_Destroy") {
            let mut args = ffi::PJRT_Error_Destroy_Args::new();
            args.error = err;
            unsafe {
                let f: unsafe extern "C" fn(*mut ffi::PJRT_Error_Destroy_Args) = std::mem::transmute(f);
                f(&mut args);
            }
        }
    }

    /// Plugin attributes such as `xla_version` and `stablehlo_current_version`.
    pub fn attributes(&self) -> Result<Vec<(String, String)>> {
        let mut args = ffi::PJRT_Plugin_Attributes_Args::new();
        unsafe { self.call(slot::PLUGIN_ATTRIBUTES, "PJRT_Plugin_Attributes", &mut args)? };
        let mut out = Vec::new();
        for i in 0..args.num_attributes {
            // SAFETY: the plugin returned `num_attributes` values living as long as the process.
            let v = unsafe { &*args.attributes.add(i) };
            let name = unsafe { String::from_utf8_lossy(std::slice::from_raw_parts(v.name, v.name_size)).into_owned() };
            let value = unsafe {
                match v.kind {
                    ffi::NAMED_VALUE_STRING => String::from_utf8_lossy(std::slice::from_raw_parts(
                        v.value as usize as *const u8,
                        v.value_size,
                    ))
                    .into_owned(),
                    ffi::NAMED_VALUE_INT64 => (v.value as i64).to_string(),
                    ffi::NAMED_VALUE_INT64_LIST => {
                        let p = v.value as usize as *const i64;
                        let items: Vec<String> =
                            (0..v.value_size).map(|k| (*p.add(k)).to_string()).collect();
                        format!("[{}]", items.join(", "))
                    }
                    ffi::NAMED_VALUE_FLOAT => f32::from_bits(v.value as u32).to_string(),
                    ffi::NAMED_VALUE_BOOL => ((v.value & 0xff) != 0).to_string(),
                    _ => "?".to_string(),
                }
            };
            out.push((name, value));
        }
        Ok(out)
    }
}
