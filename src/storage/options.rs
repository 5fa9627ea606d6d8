//! Settings for opening a store: retries and endpoint overrides.
//!
//! Deserializable so a config file can carry them under a `storage:` key;
//! every field has a default, so an empty mapping is valid.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often and how patiently failed storage requests are retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 disables retrying.
    pub max_retries: usize,
    /// Wait before the first retry, in seconds; doubled after each one.
    pub initial_backoff_secs: f64,
    /// Upper bound of the wait between two retries, in seconds.
    pub max_backoff_secs: f64,
    /// Give up on a request once this many seconds passed since its first attempt.
    pub timeout_secs: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Long enough to ride out a GCS brown-out of a minute or two, short enough
        // that a dead bucket is reported well before the next hourly checkpoint.
        RetryPolicy { max_retries: 10, initial_backoff_secs: 0.1, max_backoff_secs: 15.0, timeout_secs: 180.0 }
    }
}

impl RetryPolicy {
    /// A policy for tests: a few quick retries.
    pub fn fast(max_retries: usize) -> Self {
        RetryPolicy { max_retries, initial_backoff_secs: 0.005, max_backoff_secs: 0.05, timeout_secs: 30.0 }
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("storage.retry.{key} must be a positive number of seconds, got {v}"))
            }
        };
        positive("initial_backoff_secs", self.initial_backoff_secs)?;
        positive("max_backoff_secs", self.max_backoff_secs)?;
        positive("timeout_secs", self.timeout_secs)?;
        if self.max_backoff_secs < self.initial_backoff_secs {
            return Err(format!(
                "storage.retry.max_backoff_secs ({}) is smaller than storage.retry.initial_backoff_secs ({})",
                self.max_backoff_secs, self.initial_backoff_secs
            ));
        }
        Ok(())
    }

    /// The wait before retry number `attempt` (0-based), doubling up to the maximum.
    pub fn backoff(&self, attempt: usize) -> Duration {
        let secs = self.initial_backoff_secs * 2f64.powi(attempt.min(60) as i32);
        Duration::from_secs_f64(secs.min(self.max_backoff_secs))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    /// The same policy for the cloud backends' per-request retries.
    pub fn to_object_store(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_secs_f64(self.initial_backoff_secs),
                max_backoff: Duration::from_secs_f64(self.max_backoff_secs),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.timeout(),
        }
    }
}

/// Options for [`super::open_with`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageOptions {
    pub retry: RetryPolicy,
    /// Talk to this GCS XML API endpoint instead of `https://storage.googleapis.com`
    /// (a test server, for instance).
    pub gcs_base_url: Option<String>,
    /// A service-account key as JSON text. Without one, credentials come from the
    /// environment or, on a GCE/TPU VM, from the metadata server.
    pub gcs_service_account_key: Option<String>,
    /// An S3-compatible endpoint (MinIO, moto); `http://` endpoints are allowed.
    pub s3_endpoint: Option<String>,
    /// The writer lease of run directories opened with these options.
    pub lease: super::LeaseOptions,
}

impl StorageOptions {
    pub fn validate(&self) -> Result<(), String> {
        self.retry.validate()?;
        self.lease.validate().map_err(|e| format!("storage.{e}"))?;
        for (key, url) in [("gcs_base_url", &self.gcs_base_url), ("s3_endpoint", &self.s3_endpoint)] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("storage.{key} must start with http:// or https://, got '{url}'"));
                }
            }
        }
        if let Some(key) = &self.gcs_service_account_key {
            serde_json::from_str::<serde_json::Value>(key)
                .map_err(|e| format!("storage.gcs_service_account_key is not valid JSON: {e}"))?;
        }
        Ok(())
    }
}
