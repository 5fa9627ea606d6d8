//! The order in which rows are read: a pure function of the seed, the epoch,
//! the host and the row counts of the files, never of the rows' contents.
//! That is what lets a saved position be restored exactly: the stream can be
//! re-walked from row counts alone (see `stream.rs`).

use crate::error::{Error, Result};

/// SplitMix64 finaliser: a well-mixed 64-bit hash of a 64-bit value.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator (SplitMix64); its state is one integer.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift method.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Row `row` of file `file` (an index into the dataset's file list).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowRef {
    pub file: usize,
    pub row: usize,
}

/// What one host reads in one epoch: files in `order`, and in each file the
/// rows `row_start, row_start + row_step, ...`.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPlan {
    pub order: Vec<usize>,
    pub row_start: usize,
    pub row_step: usize,
}

/// The epoch's file order is a seeded permutation, the same on every host.
/// With at least as many files as hosts, each host takes every `host_count`-th
/// file of it (whole files, so each host reads only its share); with fewer
/// files, every host reads every file and takes every `host_count`-th row.
/// Either way the hosts' shares are disjoint and together cover the data.
pub fn plan_epoch(num_files: usize, seed: u64, epoch: u64, host_index: usize, host_count: usize) -> EpochPlan {
    let mut order: Vec<usize> = (0..num_files).collect();
    let mut rng = Rng::new(mix(seed ^ 0xF11E_0DE2) ^ mix(epoch));
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    if num_files >= host_count {
        let order = order.into_iter().enumerate().filter(|(i, _)| i % host_count == host_index).map(|(_, f)| f).collect();
        EpochPlan { order, row_start: 0, row_step: 1 }
    } else {
        EpochPlan { order, row_start: host_index, row_step: host_count }
    }
}

/// The seed of a host's shuffle buffer in an epoch.
pub fn buffer_seed(seed: u64, epoch: u64, host_index: usize) -> u64 {
    mix(seed ^ 0x5B0F_FE12) ^ mix(epoch ^ mix(host_index as u64))
}

/// Where the next row comes from: a slot of the epoch's file order and a row in that file.
#[derive(Clone, Debug, PartialEq)]
pub struct Cursor {
    pub slot: usize,
    pub row: usize,
}

impl Cursor {
    pub fn start(plan: &EpochPlan) -> Cursor {
        Cursor { slot: 0, row: plan.row_start }
    }

    /// The next row, given each file's row count; `None` at the end of the epoch.
    pub fn next_ref(&mut self, plan: &EpochPlan, mut rows_in: impl FnMut(usize) -> Result<usize>) -> Result<Option<RowRef>> {
        while let Some(&file) = plan.order.get(self.slot) {
            if self.row < rows_in(file)? {
                let found = RowRef { file, row: self.row };
                self.row += plan.row_step;
                return Ok(Some(found));
            }
            self.slot += 1;
            self.row = plan.row_start;
        }
        Ok(None)
    }
}

/// A seeded shuffle buffer: keeps up to `capacity` items and hands out a
/// uniformly chosen one each time, refilling from the source first. With
/// capacity 1 the source order is kept.
#[derive(Clone, Debug)]
pub struct ShuffleBuffer<T> {
    items: Vec<T>,
    capacity: usize,
    rng: Rng,
}

impl<T> ShuffleBuffer<T> {
    pub fn new(capacity: usize, seed: u64) -> ShuffleBuffer<T> {
        ShuffleBuffer { items: Vec::with_capacity(capacity.min(1 << 16)), capacity: capacity.max(1), rng: Rng::new(seed) }
    }

    /// The next item; `None` once the source and the buffer are both empty.
    pub fn next(&mut self, mut source: impl FnMut() -> Result<Option<T>>) -> Result<Option<T>> {
        while self.items.len() < self.capacity {
            match source()? {
                Some(item) => self.items.push(item),
                None => break,
            }
        }
        if self.items.is_empty() {
            return Ok(None);
        }
        let i = self.rng.below(self.items.len());
        Ok(Some(self.items.swap_remove(i)))
    }

    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The same buffer (same order, same generator state) with each item replaced.
    pub fn try_map<U>(self, f: impl FnMut(T) -> Result<U>) -> Result<ShuffleBuffer<U>> {
        let items = self.items.into_iter().map(f).collect::<Result<Vec<U>>>()?;
        Ok(ShuffleBuffer { items, capacity: self.capacity, rng: self.rng })
    }
}

/// Re-walks an epoch from row counts alone: the buffer (of row references)
/// and the cursor exactly as they are after `consumed` rows were handed out.
pub fn replay(
    plan: &EpochPlan,
    capacity: usize,
    seed: u64,
    consumed: u64,
    mut rows_in: impl FnMut(usize) -> Result<usize>,
) -> Result<(ShuffleBuffer<RowRef>, Cursor)> {
    let mut buffer = ShuffleBuffer::new(capacity, seed);
    let mut cursor = Cursor::start(plan);
    for done in 0..consumed {
        if buffer.next(|| cursor.next_ref(plan, &mut rows_in))?.is_none() {
            return Err(Error::Invalid(format!(
                "the saved data position ({consumed} rows into the epoch) is past the end of the epoch ({done} rows): the dataset files changed since it was saved"
            )));
        }
    }
    Ok((buffer, cursor))
}
