//! A persistent compilation cache: compiled executables kept on disk, so a
//! process restarted after preemption loads its programs instead of compiling
//! them again.
//!
//! An entry is `<dir>/<key>.pjrt`, where the key is the sha256 of everything
//! that decides the compiled code: the StableHLO text, the plugin (path, size,
//! modification time, C API version), the client's platform, version and
//! devices, the encoded compile options (replicas, partitions, device
//! assignment), `XLA_FLAGS`, and on CPU the host's model and instruction-set
//! flags. The file holds a header (magic, format version, key, program
//! name, payload length and sha256) and the plugin's serialized executable.
//!
//! The cache never fails a compile: an entry that is truncated, corrupt, from
//! another format or that the plugin cannot load is logged, deleted and the
//! program compiled (and written) again; a directory that cannot be created
//! or written is reported once and the process goes on without caching.
//! Entries are written to a temporary file in the same directory and renamed
//! into place, so concurrent processes and kills never leave a partial entry.
//! After each write, the least recently used entries (by modification time,
//! refreshed on every hit) are deleted while the directory exceeds its limit.
//!
//! A second, remote tier (`with_remote`: a folder of the run directory, on
//! `gs://`, `s3://` or disk) follows a run from machine to machine: a program
//! missing locally is fetched from it and kept locally, and every program
//! compiled is copied to it. A fresh TPU VM resuming a preempted run then
//! loads its programs instead of compiling them. The remote tier is best
//! effort like the local one: failures are logged once and never fail a run.

use crate::pjrt::{Client, CompileOptions, LoadedExecutable};
use crate::storage::Location;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// `DALLE_COMPILE_CACHE`: a directory, or `off` to disable the cache.
pub const CACHE_ENV: &str = "DALLE_COMPILE_CACHE";
/// `DALLE_COMPILE_CACHE_MAX_BYTES`: the size limit of the cache directory.
pub const MAX_BYTES_ENV: &str = "DALLE_COMPILE_CACHE_MAX_BYTES";
/// Default size limit: 4 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

const MAGIC: &[u8; 8] = b"DXLAPJRT";
/// Bumped whenever the entry layout or the key's inputs change.
const FORMAT_VERSION: u32 = 2;
const EXTENSION: &str = "pjrt";
/// Temporary files older than this are left over from killed writers.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// An on-disk cache of compiled executables; attach it to a client with
/// [`Client::with_compile_cache`].
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Set once writing failed: later programs are neither written nor warned about.
    unwritable: AtomicBool,
    temp_counter: AtomicU64,
    /// The remote tier, if any.
    remote: Option<Location>,
    /// Set once the remote tier failed: it is not used again.
    remote_failed: AtomicBool,
}

/// Why a cache entry was not used.
enum Miss {
    Absent,
    Bad(String),
}

impl CompileCache {
    /// A cache in `dir` (created on first write) with the default size limit.
    pub fn new(dir: impl Into<PathBuf>) -> CompileCache {
        CompileCache {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            unwritable: AtomicBool::new(false),
            temp_counter: AtomicU64::new(0),
            remote: None,
            remote_failed: AtomicBool::new(false),
        }
    }

    /// The same cache with `remote` (e.g. the run directory's `compile-cache`
    /// folder) as a second tier.
    pub fn with_remote(&self, remote: Location) -> CompileCache {
        CompileCache { remote: Some(remote), ..CompileCache::new(self.dir.clone()).with_max_bytes(self.max_bytes) }
    }

    fn remote_failed(&self, what: &str, e: impl std::fmt::Display) {
        if !self.remote_failed.swap(true, Ordering::Relaxed) {
            let url = self.remote.as_ref().map_or(String::new(), |r| r.url.clone());
            tracing::warn!("the remote compile cache {url} failed ({what}: {e}); going on with the local cache only");
        }
    }

    /// Copies the remote entry of `key` into the local directory; false when there is none.
    fn fetch_remote(&self, key: &str) -> bool {
        let Some(remote) = self.remote.as_ref().filter(|_| !self.remote_failed.load(Ordering::Relaxed)) else { return false };
        let name = format!("{key}.{EXTENSION}");
        match remote.get(&name) {
            Ok(Some(bytes)) => match Entry::parse(&bytes) {
                Ok(entry) if entry.key == key => match self.write_entry(key, &entry.name, entry.payload) {
                    Ok(()) => {
                        tracing::debug!("program '{}' fetched from the remote compile cache {}", entry.name, remote.url);
                        true
                    }
                    Err(e) => {
                        tracing::debug!("cannot keep the remote entry {name} locally: {e}");
                        false
                    }
                },
                // A bad remote entry is replaced when the program is compiled and stored.
                Ok(_) | Err(_) => {
                    tracing::warn!("the remote compile cache entry {}/{name} is unusable; compiling", remote.url);
                    false
                }
            },
            Ok(None) => false,
            Err(e) => {
                self.remote_failed("reading", e);
                false
            }
        }
    }

    fn store_remote(&self, key: &str, name: &str, payload: &[u8]) {
        let Some(remote) = self.remote.as_ref().filter(|_| !self.remote_failed.load(Ordering::Relaxed)) else { return };
        if let Err(e) = remote.put(&format!("{key}.{EXTENSION}"), Entry::encode(key, name, payload)) {
            self.remote_failed("writing", e);
        }
    }

    pub fn with_max_bytes(mut self, max_bytes: u64) -> CompileCache {
        self.max_bytes = max_bytes;
        self
    }

    /// The cache the environment asks for: `$DALLE_COMPILE_CACHE` (a directory,
    /// or `off`), else `$XDG_CACHE_HOME/dalle-xla/compile`, else
    /// `~/.cache/dalle-xla/compile`; limited to `$DALLE_COMPILE_CACHE_MAX_BYTES`
    /// (default 4 GiB). `None` when disabled or no home directory is known.
    pub fn from_env() -> Option<Arc<CompileCache>> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let dir = match var(CACHE_ENV) {
            Some(v) if ["off", "0", "false", "no", "none"].contains(&v.to_string_lossy().to_ascii_lowercase().as_str()) => return None,
            Some(v) => PathBuf::from(v),
            None => match (var("XDG_CACHE_HOME"), var("HOME")) {
                (Some(xdg), _) => PathBuf::from(xdg).join("dalle-xla").join("compile"),
                (None, Some(home)) => PathBuf::from(home).join(".cache").join("dalle-xla").join("compile"),
                (None, None) => {
                    tracing::debug!("no {CACHE_ENV}, XDG_CACHE_HOME or HOME: compiling without a cache");
                    return None;
                }
            },
        };
        let max_bytes = match var(MAX_BYTES_ENV) {
            None => DEFAULT_MAX_BYTES,
            Some(v) => match v.to_string_lossy().trim().parse::<u64>() {
                Ok(n) => n,
                Err(_) => {
                    tracing::warn!("{MAX_BYTES_ENV}={} is not a number of bytes; using the default limit of 4 GiB", v.to_string_lossy());
                    DEFAULT_MAX_BYTES
                }
            },
        };
        Some(Arc::new(CompileCache::new(dir).with_max_bytes(max_bytes)))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The entry file of `key`.
    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.{EXTENSION}"))
    }

    /// The key of `module` compiled with `options` on `client`, in this
    /// process's [`CompileEnvironment`].
    pub fn key(client: &Client, module: &str, options: &CompileOptions) -> String {
        Self::key_in(client, module, options, CompileEnvironment::current())
    }

    /// The key of `module` compiled with `options` on `client` in `environment`.
    pub fn key_in(client: &Client, module: &str, options: &CompileOptions, environment: &CompileEnvironment) -> String {
        let mut h = Sha256::new();
        let mut field = |name: &str, bytes: &[u8]| {
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field("format", &FORMAT_VERSION.to_le_bytes());
        field("plugin", plugin_identity(client.plugin().path()).as_bytes());
        let (major, minor) = client.plugin().api_version();
        field("api", format!("{major}.{minor}").as_bytes());
        field("platform", client.platform().as_bytes());
        field("platform_version", client.platform_version().as_bytes());
        let devices: Vec<String> = client.devices().iter().map(|d| format!("{}:{}", d.id, d.kind)).collect();
        field("devices", devices.join(",").as_bytes());
        field("options", &options.encode(&client.device_ids()));
        field("xla_flags", environment.xla_flags.as_bytes());
        // A CPU plugin compiles for the host's instruction set: an entry
        // carried by the remote tier to a machine without it would crash there.
        if crate::pjrt::is_cpu_platform(client.platform()) {
            field("host_cpu", environment.host_cpu.as_bytes());
        }
        field("module", module.as_bytes());
        hex(&h.finalize())
    }

    /// The executable stored under `key`, loaded into `client`; `expected_devices`
    /// are the client device indices it must run on. A bad entry is logged and deleted.
    pub(crate) fn load(&self, key: &str, client: &Client, expected_devices: &[usize]) -> Option<LoadedExecutable> {
        let path = self.entry_path(key);
        let mut found = self.try_load(&path, key, client, expected_devices);
        if matches!(found, Err(Miss::Absent)) && self.fetch_remote(key) {
            found = self.try_load(&path, key, client, expected_devices);
        }
        match found {
            Ok(exe) => {
                // Refresh the entry's place in the LRU order; failing that only ages it.
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(exe)
            }
            Err(Miss::Absent) => None,
            Err(Miss::Bad(why)) => {
                tracing::warn!("compile cache entry {} is unusable ({why}); deleting it and compiling", path.display());
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::debug!("cannot delete {}: {e}", path.display());
                    }
                }
                None
            }
        }
    }

    fn try_load(&self, path: &Path, key: &str, client: &Client, expected_devices: &[usize]) -> Result<LoadedExecutable, Miss> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Bad(format!("cannot read it: {e}"))),
        };
        let entry = Entry::parse(&bytes).map_err(Miss::Bad)?;
        if entry.key != key {
            return Err(Miss::Bad(format!("it holds the entry of key {}", entry.key)));
        }
        let exe = client.deserialize(entry.payload).map_err(|e| Miss::Bad(format!("the plugin cannot load it: {e}")))?;
        if exe.device_indices() != expected_devices {
            return Err(Miss::Bad(format!(
                "it runs on devices {:?}, the program needs {expected_devices:?}",
                exe.device_indices()
            )));
        }
        tracing::debug!("program '{}' found in the compile cache ({})", entry.name, path.display());
        Ok(exe)
    }

    /// Writes `exe` under `key`, then trims the directory to its limit. Never fails:
    /// problems are logged (an unwritable directory once) and caching stops.
    pub(crate) fn store(&self, key: &str, name: &str, exe: &LoadedExecutable) {
        if self.unwritable.load(Ordering::Relaxed) && self.remote.is_none() {
            return;
        }
        let payload = match exe.serialize() {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("program '{name}' is not cached: the plugin cannot serialize it: {e}");
                return;
            }
        };
        self.store_remote(key, name, &payload);
        if self.unwritable.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.write_entry(key, name, &payload) {
            if !self.unwritable.swap(true, Ordering::Relaxed) {
                tracing::warn!("the compile cache {} is not writable ({e}); going on without caching", self.dir.display());
            }
            return;
        }
        self.enforce_limit_keeping(Some(key));
    }

    fn write_entry(&self, key: &str, name: &str, payload: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".{key}.{}.{n}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(&Entry::encode(key, name, payload))?;
            f.flush()?;
            drop(f);
            std::fs::rename(&temp, self.entry_path(key))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    /// Deletes the least recently used entries while the directory holds more
    /// than its limit, and temporary files left by killed writers.
    pub fn enforce_limit(&self) {
        self.enforce_limit_keeping(None)
    }

    fn enforce_limit_keeping(&self, keep: Option<&str>) {
        let Ok(read) = std::fs::read_dir(&self.dir) else { return };
        let keep = keep.map(|k| self.entry_path(k));
        let now = SystemTime::now();
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for item in read.flatten() {
            let path = item.path();
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                if now.duration_since(modified).unwrap_or_default() > STALE_TEMP {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if path.extension().is_some_and(|e| e == EXTENSION) {
                entries.push((modified, meta.len(), path));
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.max_bytes {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if keep.as_ref() == Some(&path) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    tracing::debug!("compile cache over its {} byte limit: deleted {}", self.max_bytes, path.display());
                }
                Err(e) => tracing::debug!("cannot delete {}: {e}", path.display()),
            }
        }
    }
}

/// A parsed entry file.
#[derive(Debug)]
struct Entry<'a> {
    key: String,
    name: String,
    payload: &'a [u8],
}

impl<'a> Entry<'a> {
    fn encode(key: &str, name: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 160 + name.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for s in [key, name] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(payload));
        out.extend_from_slice(payload);
        out
    }

    fn parse(bytes: &'a [u8]) -> Result<Entry<'a>, String> {
        let mut rest = bytes;
        let mut take = |n: usize, what: &str| -> Result<&'a [u8], String> {
            if rest.len() < n {
                return Err(format!("truncated in its {what}"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        if take(MAGIC.len(), "header")? != MAGIC {
            return Err("not a compile cache entry".into());
        }
        let version = u32::from_le_bytes(take(4, "header")?.try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(format!("format version {version}, this build writes {FORMAT_VERSION}"));
        }
        let mut string = |what: &str| -> Result<String, String> {
            let n = u32::from_le_bytes(take(4, what)?.try_into().unwrap()) as usize;
            if n > 4096 {
                return Err(format!("its {what} is {n} bytes long"));
            }
            String::from_utf8(take(n, what)?.to_vec()).map_err(|_| format!("its {what} is not UTF-8"))
        };
        let key = string("key")?;
        let name = string("program name")?;
        let len = u64::from_le_bytes(take(8, "header")?.try_into().unwrap());
        let digest = take(32, "header")?.to_vec();
        if rest.len() as u64 != len {
            return Err(format!("the header announces {len} bytes of executable, the file holds {}", rest.len()));
        }
        let payload = rest;
        if Sha256::digest(payload).as_slice() != digest.as_slice() {
            return Err("its checksum does not match".into());
        }
        Ok(Entry { key, name, payload })
    }
}

/// The plugin file's path, size and modification time, read once per process.
fn plugin_identity(path: &Path) -> String {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    seen.entry(path.to_path_buf())
        .or_insert_with(|| {
            let meta = std::fs::metadata(path);
            let (len, mtime) = match &meta {
                Ok(m) => (m.len(), m.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos())),
                Err(_) => (0, 0),
            };
            format!("{}|{len}|{mtime}", path.display())
        })
        .clone()
}

/// What outside the program and the client changes the code a plugin
/// compiles: the `XLA_FLAGS` the plugin reads, and the host CPU's model and
/// instruction-set flags (which a CPU plugin compiles for).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompileEnvironment {
    pub xla_flags: String,
    pub host_cpu: String,
}

impl CompileEnvironment {
    /// This process's environment, read once.
    pub fn current() -> &'static CompileEnvironment {
        static CURRENT: OnceLock<CompileEnvironment> = OnceLock::new();
        CURRENT.get_or_init(|| CompileEnvironment {
            xla_flags: std::env::var("XLA_FLAGS").unwrap_or_default(),
            host_cpu: host_cpu_identity(),
        })
    }
}

/// The first processor's model and flags from `/proc/cpuinfo` (vendor,
/// model name, flags; `Features` and `CPU part` on ARM); else the
/// architecture alone.
fn host_cpu_identity() -> String {
    let mut identity = std::env::consts::ARCH.to_string();
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let first = info.split("\n\n").next().unwrap_or("");
        for line in first.lines() {
            let key = line.split(':').next().unwrap_or("").trim();
            if ["vendor_id", "model name", "flags", "Features", "CPU implementer", "CPU part"].contains(&key) {
                identity.push('|');
                identity.push_str(line.trim());
            }
        }
    }
    identity
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let bytes = Entry::encode("abc", "train_step", b"payload bytes");
        let e = Entry::parse(&bytes).unwrap();
        assert_eq!((e.key.as_str(), e.name.as_str(), e.payload), ("abc", "train_step", &b"payload bytes"[..]));
        assert!(Entry::parse(&bytes[..bytes.len() - 1]).unwrap_err().contains("announces"));
        assert!(Entry::parse(&bytes[..10]).unwrap_err().contains("truncated"));
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(Entry::parse(&flipped).unwrap_err().contains("checksum"));
        assert!(Entry::parse(b"garbage garbage garbage").unwrap_err().contains("not a compile cache entry"));
    }
}
