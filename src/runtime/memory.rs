//! The up-front size check: memory a training run needs, estimated from its
//! config with checked arithmetic, against the memory there is, before any
//! weights are allocated or programs compiled.
//!
//! An absurd setting (`model.d_model=100000`, a 65536-pixel VQGAN) otherwise
//! ends in an allocation abort, a foreign exception or a compile that never
//! finishes; here it becomes an error that names the sizes. The estimate
//! counts parameters, gradients, optimizer state, the host copy made while
//! initialising and saving, and the activations of one device's batch; it is
//! a lower bound of what XLA will allocate, so a refusal is always warranted.
//!
//! On CPU platforms every device lives in host memory, so the budget is the
//! host's available memory (`MemAvailable`). Other platforms' device memory
//! is not reported through the PJRT calls we bind; there only the host side
//! is checked.

use crate::error::{Error, Result};

/// Bytes a run needs, by part, per device and on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// Trainable parameters.
    pub parameters: u64,
    /// Bytes on each device, by what they hold.
    pub per_device: Vec<(&'static str, u64)>,
    /// Bytes on the host while weights are initialised or saved.
    pub host: u64,
}

impl MemoryEstimate {
    pub fn per_device_total(&self) -> u64 {
        self.per_device.iter().fold(0u64, |sum, (_, b)| sum.saturating_add(*b))
    }
}

/// The product of `dims` as u64, `None` on a negative dimension or overflow.
pub fn checked_product(dims: &[i64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| u64::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

/// Sum of products, `None` on overflow.
pub fn checked_sum_of_products(terms: &[&[i64]]) -> Option<u64> {
    terms.iter().try_fold(0u64, |acc, t| checked_product(t).and_then(|p| acc.checked_add(p)))
}

/// Bytes available to a new allocation on this host (Linux `MemAvailable`).
pub fn host_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Human-readable bytes: `1.5 GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Refuses a run whose estimate does not fit: on CPU platforms (devices in
/// host memory) `replicas` devices plus the host copy against the host's
/// available memory, elsewhere the host copy alone. `what` names the model
/// and `hint` the settings to change.
pub fn check_fits(what: &str, estimate: &MemoryEstimate, platform: &str, replicas: usize, hint: &str) -> Result<()> {
    let Some(available) = host_available_bytes() else {
        tracing::debug!("cannot read the host's available memory; skipping the size check");
        return Ok(());
    };
    let per_device = estimate.per_device_total();
    let on_host = crate::pjrt::is_cpu_platform(platform);
    let needed = if on_host { per_device.saturating_mul(replicas as u64).saturating_add(estimate.host) } else { estimate.host };
    tracing::debug!("{what}: estimated {} per device, {} on the host; {} available", format_bytes(per_device), format_bytes(estimate.host), format_bytes(available));
    if needed <= available {
        return Ok(());
    }
    let parts: Vec<String> = estimate.per_device.iter().map(|(name, b)| format!("{name} {}", format_bytes(*b))).collect();
    let devices = if on_host { format!(" on each of {replicas} {platform} device(s) in host memory") } else { String::new() };
    Err(Error::Invalid(format!(
        "{what} needs at least {} ({}{devices}, plus {} for the host copy of {} parameters) but this machine has {} available: {hint}",
        format_bytes(needed),
        parts.join(", "),
        format_bytes(estimate.host),
        estimate.parameters,
        format_bytes(available)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_products_catch_overflow_and_negatives() {
        assert_eq!(checked_product(&[3, 4, 5]), Some(60));
        assert_eq!(checked_product(&[]), Some(1));
        assert_eq!(checked_product(&[4_000_000_000, 4_000_000_000, 4_000_000_000]), None);
        assert_eq!(checked_product(&[-1, 4]), None);
        assert_eq!(checked_sum_of_products(&[&[2, 3], &[4]]), Some(10));
        assert_eq!(checked_sum_of_products(&[&[i64::MAX, 3]]), None);
    }

    #[test]
    fn bytes_print_in_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }
}
