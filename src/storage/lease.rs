//! One writer per location: a writer lease that works on every store.
//!
//! A writer (a training run, a sweep trial, a pipeline stage) calls
//! [`Lease::acquire`] on its directory before writing anything there. The
//! lease is an object `LEASE` created with create-only semantics (an atomic
//! hard link on local disk, `if-generation-match: 0` on GCS, `If-None-Match`
//! on S3), naming the holder's host, pid, start time and a heartbeat that a
//! background thread renews every [`LeaseOptions::heartbeat_secs`]. A second
//! writer finds the object and is refused with a message naming the holder.
//!
//! A lease is taken over without anyone's help when it is stale: its
//! heartbeat is older than [`LeaseOptions::stale_secs`] (a preempted VM's
//! successor), or it was written on this host by a process that no longer
//! runs (a killed process, rerun at once). Takeover deletes the stale object
//! and creates a new one; if two successors race, the heartbeat of the loser
//! finds a token that is not its own and reports the lease as lost, which the
//! training loop turns into an error before its next save.
//!
//! Heartbeats compare wall clocks of different machines; the default stale
//! time (90 s) leaves room for ordinary clock skew.

use super::{block_on, Location, StorageError};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Name of the lease object inside the leased location.
pub const LEASE_FILE: &str = "LEASE";

/// How often a lease is renewed and when an unrenewed one counts as abandoned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseOptions {
    /// Seconds between two heartbeats.
    pub heartbeat_secs: f64,
    /// A lease whose heartbeat is older than this many seconds may be taken over.
    pub stale_secs: f64,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions { heartbeat_secs: 20.0, stale_secs: 90.0 }
    }
}

impl LeaseOptions {
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [("heartbeat_secs", self.heartbeat_secs), ("stale_secs", self.stale_secs)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("lease.{key} must be a positive number of seconds, got {v}"));
            }
        }
        if self.stale_secs < 2.0 * self.heartbeat_secs {
            return Err(format!(
                "lease.stale_secs ({}) must be at least twice lease.heartbeat_secs ({}), or a live writer could look abandoned",
                self.stale_secs, self.heartbeat_secs
            ));
        }
        Ok(())
    }
}

/// What a lease object says about its holder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), so a
    /// reused pid is not mistaken for the holder.
    #[serde(default)]
    pub process_start: Option<u64>,
    /// What holds it, e.g. `dalle train`.
    #[serde(default)]
    pub purpose: String,
    pub started_unix: f64,
    pub heartbeat_unix: f64,
    /// Unique per acquisition: tells this writer's lease from a successor's.
    pub token: String,
}

impl LeaseHolder {
    fn describe(&self, now: f64) -> String {
        let purpose = if self.purpose.is_empty() { String::new() } else { format!("{} ", self.purpose) };
        format!(
            "{purpose}pid {} on host {} (started {}, last heartbeat {:.0}s ago)",
            self.pid,
            self.host,
            format_unix(self.started_unix),
            (now - self.heartbeat_unix).max(0.0)
        )
    }
}

/// State shared with the heartbeat thread.
#[derive(Default)]
struct Shared {
    /// Set once another writer's lease was found in place of ours.
    lost: Option<String>,
}

/// A held writer lease; renewed in the background until dropped, which
/// deletes the lease object (when it is still this writer's).
pub struct Lease {
    location: Location,
    holder: LeaseHolder,
    shared: Arc<Mutex<Shared>>,
    stop: Option<Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("url", &self.location.url).field("holder", &self.holder).finish()
    }
}

impl Lease {
    /// Takes the writer lease of `location`, or fails with
    /// [`StorageError::LeaseHeld`] naming the live holder. `purpose` goes into
    /// the lease for others' messages (e.g. `dalle train`).
    pub fn acquire(location: &Location, options: &LeaseOptions, purpose: &str) -> Result<Lease, StorageError> {
        options.validate().map_err(|message| StorageError::Location { url: location.url.clone(), message })?;
        let now = unix_now();
        let me = LeaseHolder {
            host: hostname(),
            pid: std::process::id(),
            process_start: process_start(std::process::id()),
            purpose: purpose.to_string(),
            started_unix: now,
            heartbeat_unix: now,
            token: new_token(),
        };
        // A few rounds: a takeover deletes the stale lease, and a racing
        // successor may create its own in between.
        for _ in 0..4 {
            match create(location, &me) {
                Ok(true) => {
                    let shared = Arc::new(Mutex::new(Shared::default()));
                    let (stop, stopped) = channel();
                    let heartbeat = {
                        let (here, holder, state) = (location.clone(), me.clone(), shared.clone());
                        let every = Duration::from_secs_f64(options.heartbeat_secs);
                        std::thread::Builder::new()
                            .name("lease-heartbeat".into())
                            .spawn(move || {
                                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                                    if !renew(&here, &holder, &state) {
                                        return;
                                    }
                                }
                            })
                            .map_err(|e| StorageError::Location { url: location.url.clone(), message: format!("cannot start the lease heartbeat thread: {e}") })?
                    };
                    return Ok(Lease { location: location.clone(), holder: me, shared, stop: Some(stop), heartbeat: Some(heartbeat) });
                }
                Ok(false) => {}
                Err(source) => return Err(store_error(location, source)),
            }
            let Some(bytes) = location.get(LEASE_FILE)? else { continue };
            let now = unix_now();
            let Ok(other) = serde_json::from_slice::<LeaseHolder>(&bytes) else {
                // Not ours to interpret: a partly written or foreign file. Say so rather than delete it.
                return Err(StorageError::LeaseHeld {
                    url: location.url.clone(),
                    holder: format!("an unreadable lease file {}/{LEASE_FILE}; delete it if no other writer uses this directory", location.url.trim_end_matches('/')),
                });
            };
            match stale_reason(&other, options, now) {
                Some(why) => {
                    tracing::warn!("taking over the writer lease of {} from {} ({why})", location.url, other.describe(now));
                    block_on(async { location.store.delete(&location.child(LEASE_FILE)).await })
                        .or_else(|e| if matches!(e, object_store::Error::NotFound { .. }) { Ok(()) } else { Err(e) })
                        .map_err(|source| store_error(location, source))?;
                }
                None => {
                    return Err(StorageError::LeaseHeld { url: location.url.clone(), holder: other.describe(now) });
                }
            }
        }
        Err(StorageError::LeaseHeld { url: location.url.clone(), holder: "other writers that keep taking it over at the same time".into() })
    }

    pub fn holder(&self) -> &LeaseHolder {
        &self.holder
    }

    /// `Err` once the heartbeat found another writer's lease in place of ours:
    /// this writer must stop writing.
    pub fn check(&self) -> Result<(), StorageError> {
        match self.shared.lock().unwrap_or_else(|e| e.into_inner()).lost.clone() {
            None => Ok(()),
            Some(holder) => Err(StorageError::LeaseLost { url: self.location.url.clone(), holder }),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        if self.check().is_ok() {
            match read(&self.location) {
                Ok(Some(current)) if current.token == self.holder.token => {
                    if let Err(e) = block_on(async { self.location.store.delete(&self.location.child(LEASE_FILE)).await }) {
                        tracing::warn!("could not release the writer lease of {}: {e}", self.location.url);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("could not release the writer lease of {}: {e}", self.location.url),
            }
        }
    }
}

/// Why `holder`'s lease may be taken over, or `None` while it is live.
fn stale_reason(holder: &LeaseHolder, options: &LeaseOptions, now: f64) -> Option<String> {
    let age = now - holder.heartbeat_unix;
    if age > options.stale_secs {
        return Some(format!("no heartbeat for {age:.0}s, stale after {:.0}s", options.stale_secs));
    }
    if holder.host == hostname() && !process_alive(holder.pid, holder.process_start) {
        return Some(format!("process {} no longer runs on this host", holder.pid));
    }
    None
}

/// Creates the lease object; `Ok(false)` when one is already there.
fn create(location: &Location, holder: &LeaseHolder) -> Result<bool, object_store::Error> {
    let body = serde_json::to_vec_pretty(holder).unwrap_or_default();
    let path = location.child(LEASE_FILE);
    let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
    match block_on(async { location.store.put_opts(&path, PutPayload::from(body), opts).await }) {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn read(location: &Location) -> Result<Option<LeaseHolder>, StorageError> {
    Ok(location.get(LEASE_FILE)?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// One heartbeat; `false` once the lease is lost (the thread ends).
fn renew(location: &Location, holder: &LeaseHolder, shared: &Mutex<Shared>) -> bool {
    let lost = |who: String| {
        tracing::error!("the writer lease of {} was taken over by {who}; this writer stops writing there", location.url);
        shared.lock().unwrap_or_else(|e| e.into_inner()).lost = Some(who);
        false
    };
    match read(location) {
        Ok(Some(current)) if current.token == holder.token => {
            let renewed = LeaseHolder { heartbeat_unix: unix_now(), ..holder.clone() };
            if let Err(e) = location.put(LEASE_FILE, serde_json::to_vec_pretty(&renewed).unwrap_or_default()) {
                tracing::warn!("could not renew the writer lease of {} (trying again in the next heartbeat): {e}", location.url);
            }
            true
        }
        Ok(Some(other)) => lost(other.describe(unix_now())),
        Ok(None) => lost("nobody (the lease object was deleted)".into()),
        Err(e) => {
            tracing::warn!("could not read the writer lease of {} (trying again in the next heartbeat): {e}", location.url);
            true
        }
    }
}

fn store_error(location: &Location, source: object_store::Error) -> StorageError {
    StorageError::Store { location: format!("{}/{LEASE_FILE}", location.url.trim_end_matches('/')), source }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn format_unix(secs: f64) -> String {
    // Seconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`, without a date crate.
    let secs = secs.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn new_token() -> String {
    format!("{:016x}{:08x}", rand::random::<u64>(), std::process::id())
}

/// This machine's name, as other writers will see it in the lease.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Start time of process `pid` (field 22 of `/proc/PID/stat`), Linux only.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` (started at `start`, when known) still runs here.
/// Without `/proc` this cannot be told, and the answer is "yes".
fn process_alive(pid: u32, start: Option<u64>) -> bool {
    if !std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    match (process_start(pid), start) {
        (None, _) => false,
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_utc() {
        assert_eq!(format_unix(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix(1_709_210_096.0), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn a_second_writer_is_refused_and_a_writer_whose_lease_was_taken_learns_it() {
        let location = crate::storage::open(&format!("memory://lease-unit-{}/run", std::process::id())).unwrap();
        let fast = LeaseOptions { heartbeat_secs: 0.02, stale_secs: 60.0 };
        let lease = Lease::acquire(&location, &fast, "first").unwrap();
        let err = Lease::acquire(&location, &fast, "second").unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("first"), "{err}");

        // Another writer replaces the lease (as a racing successor would).
        let other = LeaseHolder { token: "other".into(), host: "elsewhere".into(), ..lease.holder().clone() };
        location.put(LEASE_FILE, serde_json::to_vec(&other).unwrap()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lease.check().is_ok() {
            assert!(std::time::Instant::now() < deadline, "the heartbeat never noticed the takeover");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(lease.check().unwrap_err().to_string().contains("elsewhere"));
        drop(lease);
        assert!(location.get(LEASE_FILE).unwrap().is_some(), "dropping a lost lease leaves the new holder's in place");
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let start = process_start(pid);
        assert!(process_alive(pid, start));
        if let Some(s) = start {
            assert!(!process_alive(pid, Some(s + 1)));
        }
    }
}
