//! The process's allocator, counting what Rust code holds.
//!
//! Every allocation goes to mimalloc (its `override` feature also serves the
//! PJRT plugin's C and C++ `malloc`, ahead of glibc's: XLA's CPU runtime
//! allocates and frees buffers every step, and glibc's malloc took about 12%
//! of the `tiny` training step's CPU time). Rust's own allocations are also
//! counted, so the host copies a checkpoint save or a restore makes can be
//! measured exactly: the process's resident memory cannot, since its peak
//! can be reset only where the kernel allows it and freed memory stays
//! resident in the allocator's caches.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct CountingHeap;

// On cache lines of their own, and the peak written only when it rises: every
// thread's allocations touch these.
#[repr(align(128))]
struct Counter(AtomicUsize);

static NOW: Counter = Counter(AtomicUsize::new(0));
static PEAK: Counter = Counter(AtomicUsize::new(0));

fn grew(by: usize) {
    let now = NOW.0.fetch_add(by, Relaxed) + by;
    if now > PEAK.0.load(Relaxed) {
        PEAK.0.fetch_max(now, Relaxed);
    }
}

fn shrank(by: usize) {
    NOW.0.fetch_sub(by, Relaxed);
}

/// Bytes that Rust code holds now (the plugin's allocations not included).
pub fn allocated() -> usize {
    NOW.0.load(Relaxed)
}

/// Starts a new peak at what is held now, and returns that.
pub fn reset_peak() -> usize {
    let now = allocated();
    PEAK.0.store(now, Relaxed);
    now
}

/// The most bytes Rust code held at once since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.0.load(Relaxed)
}

unsafe impl GlobalAlloc for CountingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // The new block first: a block that moves is held twice meanwhile.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}
