//! Where the trainer's batches come from: anything that yields batches in a
//! reproducible order and can save and restore its position exactly.

use crate::data::{Batch, Synthetic};
use crate::error::{Error, Result};

pub trait BatchSource: Send {
    /// The next `size` examples as a batch.
    fn next_batch(&mut self, size: usize) -> Result<Batch>;
    /// The position to resume from, saved with checkpoints.
    fn position(&self) -> serde_json::Value;
    /// Continues from a position saved by [`position`](Self::position).
    fn restore(&mut self, position: &serde_json::Value) -> Result<()>;
    /// Back to the start (the evaluation set is read from the start every time).
    fn restart(&mut self) -> Result<()>;
    /// Rows skipped as bad so far, for the logs.
    fn skipped(&self) -> u64 {
        0
    }
}

/// The synthetic task as a stream: example `i` is a pure function of (seed, i).
pub struct SyntheticSource {
    pub task: Synthetic,
    pub next: u64,
}

impl BatchSource for SyntheticSource {
    fn next_batch(&mut self, size: usize) -> Result<Batch> {
        let examples: Vec<_> = (self.next..self.next + size as u64).map(|i| self.task.example(i)).collect();
        self.next += size as u64;
        Batch::from_examples(&examples)
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "synthetic", "next": self.next })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<()> {
        self.next = position
            .get("next")
            .and_then(|v| v.as_u64())
            .filter(|_| position.get("kind").and_then(|k| k.as_str()) == Some("synthetic"))
            .ok_or_else(|| Error::Invalid(format!("not a synthetic data position: {position}")))?;
        Ok(())
    }

    fn restart(&mut self) -> Result<()> {
        self.next = 0;
        Ok(())
    }
}
