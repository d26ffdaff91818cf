//! The atomics and locks every hub crate uses: `std`'s normally, loom's under `cfg(loom)`.
//!
//! hub-alloc and hub-transport import their atomics from here, never from `std` directly, so the
//! same protocol code runs over a real mapping and inside a loom model. Under loom the atomic types
//! are larger than the layout expects, so loom models run over heap regions built with
//! constructors, never over bytes of a real segment (see Loom in the crate docs).
//!
//! The private locks of a process (hub-alloc's, the ring handles of hub-transport's links) are
//! this module's [`Mutex`], taken with [`lock`]. `Arc` stays `std`'s: methods with a
//! `self: &Arc<Self>` receiver need it, and so does hub-alloc's `Region` for `Arc<R>`; loom
//! models spawn their threads with `loom::thread` themselves.

#[cfg(not(loom))]
pub use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence,
};
#[cfg(not(loom))]
pub use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering, fence,
};
#[cfg(loom)]
pub use loom::sync::{Mutex, MutexGuard};

/// Lock `mutex`, whether or not a thread panicked while it held it: the hub's private locks
/// guard state that every critical section leaves consistent at each step.
#[inline]
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Tells the processor that the caller is spinning; under loom, yields to the model's scheduler
/// so that spin loops terminate.
#[inline]
pub fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Run `f` under loom, as every loom model of the hub crates does: a preemption bound of 2
/// unless `LOOM_MAX_PREEMPTIONS` says otherwise, room for models whose final checks make many
/// accesses with few choices (at least 20,000 branches), and a line on standard error saying
/// how many executions `name` explored and how long that took. Loom builds only.
#[cfg(loom)]
pub fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.max_branches = builder.max_branches.max(20_000);
    let executions = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&executions);
    let start = std::time::Instant::now();
    builder.check(move || {
        count.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    eprintln!(
        "loom model {name}: {} executions in {:.2?}",
        executions.load(StdOrdering::Relaxed),
        start.elapsed()
    );
}
