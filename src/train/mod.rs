//! Training machinery every model shares: the loop ([`fit`] over a
//! [`Trainable`]), the loop's config section, the run directory and metrics.
//! Each model's trainer lives in its own folder under `src/models/`.

mod config;
mod fit;
mod layout;
pub mod mesh;
mod metrics;
mod restore;
mod run_dir;

pub use config::{LoopConfig, TrainSections};
pub use mesh::{Axis, Mesh, Placement};
pub use fit::{describe_model, fit, FitOptions, Outcome, StepRecord, Trainable};
pub use layout::{update_scalars, NetLayout};
pub use metrics::{MetricsLog, StepMetrics, LOSS_PLOT_FILE, METRICS_FILE};
pub use restore::{RestoreSink, WholeCheckpoint};
pub use run_dir::{RunDir, CONFIG_FILE};
