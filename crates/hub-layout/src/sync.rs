//! The atomics every hub crate uses: `std`'s normally, loom's under `cfg(loom)`.
//!
//! hub-alloc and hub-transport import their atomics from here, never from `std` directly, so the
//! same protocol code runs over a real mapping and inside a loom model. Under loom the atomic types
//! are larger than the layout expects, so loom models run over heap regions built with
//! constructors, never over bytes of a real segment (DESIGN §6).

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering, fence};

/// Tells the processor that the caller is spinning; under loom, yields to the model's scheduler
/// so that spin loops terminate.
#[inline]
pub fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
