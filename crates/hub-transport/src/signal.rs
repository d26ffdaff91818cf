//! Waiting and waking on a futex word without losing a wakeup (rule R11).
//!
//! A [`Doorbell`] wraps one futex word of the segment (`PeerEntry::send_data_futex`,
//! `recv_data_futex`, `SizeClassHeader::slot_available_futex`, ...). A publisher makes its data
//! visible (a Release store, e.g. a ring's `visible_head`) and then calls [`Doorbell::ring`]. A
//! waiter calls [`Doorbell::wait_until`] (or [`Doorbell::wait_for`]) with a condition that looks
//! at the data. The host waits on many doorbells with one system call through [`wait_any_for`].
//!
//! # The word
//!
//! ```text
//! bit 31 ........................ bit 1   bit 0
//! [        sequence (31 bits)          ] [ W ]
//! ```
//!
//! - The sequence goes up by one (the word by [`SEQUENCE_STEP`]) on every [`Doorbell::ring`]
//!   that finds a waiter announced, wrapping around.
//! - `W` ([`WAITER_BIT`]) says "a waiter may be asleep or about to sleep". A waiter sets it before
//!   its last check of the condition; a publisher that finds it set bumps the sequence, clears
//!   it and makes the `FUTEX_WAKE` system call. A publisher that finds it clear does not write
//!   the word at all: a ring costs one fence and one load when nobody sleeps, and the word's
//!   cache line (which shares the peer entry with words both sides read on every operation)
//!   stays where it is.
//!
//! # The protocol
//!
//! The protocol's atomics are hub-alloc's [`wake`] module, the one
//! implementation every futex word of the hub uses (the allocator's too); this module adds the
//! futex system calls and the waiting policy.
//!
//! Publisher ([`Doorbell::ring`]):
//!
//! 1. publish the data (Release store, done by the caller);
//! 2. `fence(SeqCst)`, then `w = word.load()`; if `w` has no `W`, stop
//!    ([`wake::waiter_announced`]);
//! 3. in one RMW (Release), if `W` is still set: add 2 and clear `W`
//!    ([`wake::take_announcement`]); if it was set,
//!    `futex_wake(word, all)`.
//!
//! Waiter ([`Doorbell::wait_for`], park step):
//!
//! 1. `seen = word.fetch_or(W)` (Acquire), then `fence(SeqCst)`: the announcement
//!    ([`wake::announce`]);
//! 2. check the condition; if it holds, return;
//! 3. `futex_wait(word, seen | W)`; whatever its outcome, go back to checking the condition.
//!
//! # Why no wakeup is lost
//!
//! Each side writes one location and then reads the other's (the publisher the data, then the
//! word; the waiter the word, then the data): store buffering, which only sequentially
//! consistent fences settle. The two fences, F(p) of the publisher and F(w) of the waiter, are
//! ordered one before the other in the single total order of SeqCst operations:
//!
//! - **F(p) before F(w).** The data store comes before F(p), the waiter's check after F(w), so
//!   the check reads that store or a later one, and returns without sleeping.
//! - **F(w) before F(p).** The announcement comes before F(w), the publisher's load after
//!   F(p), so the load reads the announcement or a later value of the word. If `W` is still set
//!   there, this publisher bumps the sequence and wakes. If another ring (or
//!   [`Doorbell::clear`]) cleared it in between, *that* caller changed the word and wakes after
//!   clearing. Either way some wake W' comes after a write R that changed the word after the
//!   announcement. The waiter sleeps on `seen | W`, the value its announcement wrote. The
//!   kernel compares the word and sleeps atomically with respect to `FUTEX_WAKE`: if it
//!   compares after R, the word differs and the waiter does not sleep; if before, the waiter is
//!   queued before W' and W' wakes it. Then the waiter loops and checks again; its next
//!   announcement (Acquire) reads the sequence step (Release) or a later value, so the data is
//!   visible to that check.
//!
//! The loom models fail (with a deadlock) without either fence. The only way a wait could miss a
//! change is the word coming back to exactly `seen | W` before the kernel compares it: 2^31
//! woken rings plus a new announcement within one system call's window.
//!
//! The cost of this scheme: a waiter that finds its condition true at step 2 leaves `W` set, so
//! the next ring makes one `FUTEX_WAKE` that wakes nobody. It never makes a wakeup lost, and `W`
//! is clear again after that ring.
//!
//! # Spinning
//!
//! [`WaitMode::Adaptive`] checks the condition 256 times, one `pause` instruction apart (5 to
//! 10 µs here), then four times with a yield of the CPU between, then parks: "receivers spin
//! briefly before they park" (R11). [`WaitMode::Spin`] never parks: after the same 256 checks it
//! yields the CPU between checks. [`WaitMode::Block`] parks at once.
//!
//! ```
//! use hub_transport::signal::{Doorbell, WaitMode};
//! use hub_transport::sync::{AtomicU32, AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! let word = Arc::new(AtomicU32::new(0));
//! let data = Arc::new(AtomicU64::new(0));
//! let publisher = {
//!     let (word, data) = (Arc::clone(&word), Arc::clone(&data));
//!     std::thread::spawn(move || {
//!         data.store(42, Ordering::Release);
//!         Doorbell::new(&word).ring();
//!     })
//! };
//! let bell = Doorbell::new(&word);
//! bell.wait_until(|| data.load(Ordering::Acquire) == 42, None, WaitMode::Adaptive)?;
//! publisher.join().unwrap();
//! # Ok::<(), hub_transport::signal::WaitError>(())
//! ```

use crate::futex::{self, FutexError, MAX_WAIT_ANY, WAKE_ALL};
use crate::sync::{AtomicU32, Ordering};
use hub_alloc::wake;
use std::time::{Duration, Instant};

/// The bit of a doorbell word that says a waiter announced itself (hub-alloc's
/// [`wake::WAITER_BIT`]: one protocol for every futex word).
pub const WAITER_BIT: u32 = wake::WAITER_BIT;

/// What one [`Doorbell::ring`] that finds a waiter adds to the word: one step of the sequence
/// in bits 1 to 31.
pub const SEQUENCE_STEP: u32 = wake::SEQUENCE_STEP;

/// How a waiter waits for its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMode {
    /// Check the condition in a busy loop and never sleep in the kernel (after 256 checks, it
    /// yields the CPU between checks). Lowest latency, burns a core; for benchmarks and
    /// dedicated polling threads.
    Spin,
    /// Announce and sleep in the kernel as soon as the condition is false.
    Block,
    /// Spin briefly (256 checks a `pause` apart, then four a yield apart), then sleep (R11).
    #[default]
    Adaptive,
}

impl WaitMode {
    /// The mode's name: `spin`, `block` or `adaptive` (what [`FromStr`](std::str::FromStr)
    /// parses).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Spin => "spin",
            Self::Block => "block",
            Self::Adaptive => "adaptive",
        }
    }
}

impl std::fmt::Display for WaitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`WaitMode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a wait mode (spin, block or adaptive)")]
pub struct UnknownWaitMode(pub String);

impl std::str::FromStr for WaitMode {
    type Err = UnknownWaitMode;

    /// `spin`, `block` or `adaptive`, as a command line would give it.
    ///
    /// ```
    /// use hub_transport::WaitMode;
    /// assert_eq!("block".parse::<WaitMode>(), Ok(WaitMode::Block));
    /// assert_eq!(WaitMode::Adaptive.to_string(), "adaptive");
    /// assert!("sometimes".parse::<WaitMode>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Self::Spin, Self::Block, Self::Adaptive]
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| UnknownWaitMode(text.to_owned()))
    }
}

/// Why a wait ended without its condition holding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The deadline passed and the condition was still false.
    #[error("the deadline passed before the condition held")]
    TimedOut,
    /// The futex system call failed (see [`FutexError`]); for [`wait_any_for`] also an empty or
    /// too long list of doorbells.
    #[error(transparent)]
    Futex(#[from] FutexError),
}

/// The wait/wake protocol of R11 over one futex word in shared memory.
///
/// A doorbell is a borrowed view: any number of them, in any number of processes, may wrap the
/// same word; every publisher calls [`ring`](Self::ring) and every waiter
/// [`wait_until`](Self::wait_until). See the [module documentation](self) for the protocol.
#[derive(Debug, Clone, Copy)]
pub struct Doorbell<'a> {
    word: &'a AtomicU32,
}

impl<'a> Doorbell<'a> {
    /// A doorbell over `word`. The word's initial value does not matter (0 is usual).
    pub const fn new(word: &'a AtomicU32) -> Self {
        Self { word }
    }

    /// The futex word.
    pub const fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// The current sequence number: how many times the doorbell rang for an announced waiter
    /// since it was last cleared, modulo 2^31. For inspection; the protocol never needs it.
    pub fn sequence(&self) -> u32 {
        // R11: inspection only, orders nothing.
        self.word.load(Ordering::Relaxed) >> 1
    }

    /// Whether a waiter has announced itself and no ring has cleared the announcement since.
    /// For inspection; the answer may be stale by the time it is read.
    pub fn has_waiter(&self) -> bool {
        // R11: inspection only, orders nothing.
        self.word.load(Ordering::Relaxed) & WAITER_BIT != 0
    }

    /// The publisher's look after its publication (a plain store, Release): whether a waiter
    /// has announced itself, so that a ring is needed. A SeqCst fence and a load: all that a
    /// publication nobody waits for costs. Every `ring` looks so first; a caller that keeps
    /// the ring out of line (its hot path then holds only the look) looks with this, and rings
    /// only when it says yes (the ring looks again).
    ///
    /// ```
    /// use hub_transport::signal::Doorbell;
    /// use hub_transport::sync::AtomicU32;
    ///
    /// let word = AtomicU32::new(0);
    /// let bell = Doorbell::new(&word);
    /// assert!(!bell.waiter_announced());
    /// bell.announce();
    /// assert!(bell.waiter_announced());
    /// ```
    #[inline(always)]
    pub fn waiter_announced(&self) -> bool {
        // R11: the fence pairs with the waiter's announcement (see `wake::waiter_announced`).
        wake::waiter_announced(self.word)
    }

    /// Tells the waiters that data was published: only if a waiter has announced itself, bumps
    /// the sequence and makes the `FUTEX_WAKE` system call for all sleepers of the word;
    /// otherwise the word is not written.
    ///
    /// Call it *after* the Release store that publishes the data. Returns how many sleepers the
    /// system call woke (0 without a system call).
    ///
    /// ```
    /// use hub_transport::signal::Doorbell;
    /// use hub_transport::sync::AtomicU32;
    ///
    /// let word = AtomicU32::new(0);
    /// let bell = Doorbell::new(&word);
    /// assert_eq!(bell.ring(), 0); // nobody announced: no system call, the word untouched
    /// assert_eq!(bell.sequence(), 0);
    /// bell.announce();
    /// bell.ring(); // a waiter announced (none asleep here): the sequence moves, the bit clears
    /// assert_eq!((bell.sequence(), bell.has_waiter()), (1, false));
    /// ```
    pub fn ring(&self) -> usize {
        self.ring_deferred().map_or(0, PendingWake::wake_now)
    }

    /// [`ring`](Self::ring), keeping its system call for later: `Some` when a waiter had
    /// announced itself, with the wake still to be made (see [`PendingWake`]). The word moved
    /// on already, as in `ring`.
    ///
    /// ```
    /// use hub_transport::signal::Doorbell;
    /// use hub_transport::sync::AtomicU32;
    ///
    /// let word = AtomicU32::new(0);
    /// let bell = Doorbell::new(&word);
    /// assert!(bell.ring_deferred().is_none()); // nobody announced: nothing to wake
    /// bell.announce();
    /// let pending = bell.ring_deferred().expect("a waiter announced");
    /// assert_eq!((bell.sequence(), bell.has_waiter()), (1, false));
    /// assert_eq!(pending.wake_now(), 0); // none asleep here
    /// ```
    pub fn ring_deferred(&self) -> Option<PendingWake<'a>> {
        // R11: Release publishes the caller's data to a waiter whose announcement (Acquire)
        // reads the new value or a later one.
        (wake::waiter_announced(self.word) && wake::take_announcement(self.word, Ordering::Release))
            // (Lazily: a `PendingWake` made and dropped would make its wake.)
            .then(|| PendingWake { word: self.word })
    }

    /// [`ring`](Self::ring) for a word whose waiter may sleep on a readiness descriptor (an
    /// event loop) instead of the futex: when a waiter announced itself, `notify` runs (it
    /// writes the descriptor of a waiter that said it sleeps on one) before the `FUTEX_WAKE`.
    ///
    /// The sequence step is AcqRel rather than Release: the waiter says how it sleeps in a word
    /// of its own, written before its [`announce`](Self::announce) (AcqRel), and this RMW, by
    /// reading the announcement, makes that word visible to `notify`.
    ///
    /// ```
    /// use hub_transport::signal::Doorbell;
    /// use hub_transport::sync::AtomicU32;
    ///
    /// let word = AtomicU32::new(0);
    /// let bell = Doorbell::new(&word);
    /// let mut notified = false;
    /// bell.ring_notify(|| notified = true); // nobody announced: nothing runs
    /// assert!(!notified);
    /// bell.announce();
    /// bell.ring_notify(|| notified = true);
    /// assert!(notified && !bell.has_waiter());
    /// ```
    pub fn ring_notify(&self, notify: impl FnOnce()) -> usize {
        self.ring_notify_deferred(notify)
            .map_or(0, PendingWake::wake_now)
    }

    /// [`ring_notify`](Self::ring_notify), keeping the futex's system call for later (see
    /// [`ring_deferred`](Self::ring_deferred)); `notify` runs at once.
    #[inline]
    pub fn ring_notify_deferred(&self, notify: impl FnOnce()) -> Option<PendingWake<'a>> {
        // R11: as `ring`; Acquire as well, for the waiter's word read by `notify`.
        if !wake::waiter_announced(self.word)
            || !wake::take_announcement(self.word, Ordering::AcqRel)
        {
            return None;
        }
        notify();
        Some(PendingWake { word: self.word })
    }

    /// The announcement of a waiter that sleeps elsewhere than on the futex (a readiness
    /// descriptor): sets [`WAITER_BIT`]. The caller then checks its condition once more and
    /// sleeps only if it still fails; a [`ring_notify`](Self::ring_notify) that comes after
    /// this announcement in the word's order runs its `notify`. Returns the value to sleep on:
    /// the word as it was, with [`WAITER_BIT`] set.
    pub fn announce(&self) -> u32 {
        // R11: Acquire as in `wait_any_for`; Release so that the ring that reads it sees the
        // word the caller wrote before (how it sleeps).
        wake::announce_with(self.word, Ordering::AcqRel)
    }

    /// A waiter's announcement that it sleeps on a readiness descriptor: sets bit `mine` of
    /// `ready` (the word in which each side says so, sticky), then [`announce`](Self::announce)s.
    /// The caller checks its condition once more, and sleeps on its descriptor only if it still
    /// fails: a [`ring_ready`](Self::ring_ready) ordered after the announcement writes it.
    pub fn arm(&self, ready: &AtomicU32, mine: u32) -> u32 {
        // R11: Relaxed; the announcement's Release publishes it to the ring that reads it.
        ready.fetch_or(mine, Ordering::Relaxed);
        self.announce()
    }

    /// [`ring_notify`](Self::ring_notify) for a waiter that may sleep on a descriptor: when a
    /// waiter announced itself, `notify` runs if bit `theirs` of `ready` says the other side
    /// sleeps on one (see [`arm`](Self::arm)); the futex is woken in any case, for a waiter
    /// of the same side that sleeps on it. A busy waiter (no announcement) costs nothing.
    pub fn ring_ready(&self, ready: &AtomicU32, theirs: u32, notify: impl FnOnce()) -> usize {
        self.ring_ready_deferred(ready, theirs, notify)
            .map_or(0, PendingWake::wake_now)
    }

    /// [`ring_ready`](Self::ring_ready), keeping the futex's system call for later (see
    /// [`ring_deferred`](Self::ring_deferred)); a descriptor is written at once.
    #[inline]
    pub fn ring_ready_deferred(
        &self,
        ready: &AtomicU32,
        theirs: u32,
        notify: impl FnOnce(),
    ) -> Option<PendingWake<'a>> {
        self.ring_notify_deferred(|| {
            // R11: ordered after the waiter's `arm` by the ring's Acquire.
            if ready.load(Ordering::Relaxed) & theirs != 0 {
                notify();
            }
        })
    }

    /// Resets the word to 0 and wakes every sleeper, for the host's recovery of a dead peer (R10:
    /// "clear its futex words"). Returns how many sleepers were woken.
    ///
    /// A sleeper (which always sleeps on a value with [`WAITER_BIT`] set) is woken or sees the
    /// changed word, re-checks its condition and carries on, so clearing loses no wakeup either.
    pub fn clear(&self) -> usize {
        // R11: Release, like a ring: publishes what the caller did before (e.g. a ring reset).
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITER_BIT == 0 {
            return 0;
        }
        futex::wake(self.word, WAKE_ALL)
    }

    /// Waits until `condition` returns true, until `deadline` at the latest, in the given mode.
    ///
    /// The condition is checked first, so a wait for something already there makes no system
    /// call. It is called again after every wakeup; it must be cheap and must look at data that
    /// the publishers publish *before* they [`ring`](Self::ring).
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`] if the deadline passed with the condition false;
    /// [`WaitError::Futex`] if the kernel refused the wait.
    pub fn wait_until(
        &self,
        mut condition: impl FnMut() -> bool,
        deadline: Option<Instant>,
        mode: WaitMode,
    ) -> Result<(), WaitError> {
        self.wait_for(|| condition().then_some(()), deadline, mode)
    }

    /// Waits until `poll` returns `Some`, and returns that value: [`wait_until`](Self::wait_until)
    /// for a condition that produces something, like a ring's `try_pop`.
    ///
    /// # Errors
    ///
    /// As [`wait_until`](Self::wait_until).
    ///
    /// ```
    /// use hub_transport::signal::{Doorbell, WaitError, WaitMode};
    /// use hub_transport::sync::AtomicU32;
    /// use std::time::{Duration, Instant};
    ///
    /// let word = AtomicU32::new(0);
    /// let bell = Doorbell::new(&word);
    /// let soon = Instant::now() + Duration::from_millis(5);
    /// let result = bell.wait_for(|| None::<u32>, Some(soon), WaitMode::Block);
    /// assert!(matches!(result, Err(WaitError::TimedOut)));
    /// ```
    pub fn wait_for<T>(
        &self,
        poll: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        mode: WaitMode,
    ) -> Result<T, WaitError> {
        wait_any_for(std::slice::from_ref(self), poll, deadline, mode)
    }
}

/// A ring whose `FUTEX_WAKE` is still to be made: the word already moved on and its waiter
/// bit is clear (a waiter that has not slept yet sees the change and does not sleep), so only
/// the system call is left for a sleeper. The next wait of the ringing thread makes it together
/// with its own sleep, in one system call ([`futex::wake_then_wait`]); dropping it makes it
/// alone. Either way it is made exactly once, and before the ringing thread sleeps.
#[must_use = "dropping a pending wake makes its system call at once"]
#[derive(Debug)]
pub struct PendingWake<'a> {
    word: &'a AtomicU32,
}

impl<'a> PendingWake<'a> {
    /// The word whose sleepers are to be woken.
    pub fn word(&self) -> &'a AtomicU32 {
        self.word
    }

    /// Make the wake now; how many sleepers it woke.
    pub fn wake_now(self) -> usize {
        let word = self.word;
        std::mem::forget(self);
        futex::wake(word, WAKE_ALL)
    }

    /// The word, for a caller that makes the wake itself: the pending wake is spent.
    fn take(self) -> &'a AtomicU32 {
        let word = self.word;
        std::mem::forget(self);
        word
    }
}

impl Drop for PendingWake<'_> {
    fn drop(&mut self) {
        futex::wake(self.word, WAKE_ALL);
    }
}

/// When a wait gives up: at its deadline, if it has one, or (a wait in slices) a slice after
/// its first look at the clock, whichever comes first. The clock is read only when the wait
/// first needs it: a look at it costs more than a poll, and a wait that the first polls end
/// never reads it.
///
/// Not `Copy`: the slice starts with the first look, so a copy taken after it and one taken
/// before would be two different limits.
#[derive(Debug)]
pub(crate) struct Limit {
    deadline: Option<Instant>,
    /// Whether `deadline` came from the caller (before the slice folds into it).
    #[cfg_attr(loom, allow(dead_code))] // loom's spin looks at the clock every round
    caller_deadline: bool,
    /// The slice still to start, if any.
    slice: Option<Duration>,
}

impl Limit {
    /// Give up at `deadline` (`None`: never).
    pub(crate) fn at(deadline: Option<Instant>) -> Self {
        Self {
            deadline,
            caller_deadline: deadline.is_some(),
            slice: None,
        }
    }

    /// Give up at `deadline`, or `slice` after the wait first reads the clock.
    #[cfg_attr(loom, allow(dead_code))] // the sliced waits (Host, Peer) are not built under loom
    pub(crate) fn sliced(deadline: Option<Instant>, slice: Duration) -> Self {
        Self {
            deadline,
            caller_deadline: deadline.is_some(),
            slice: Some(slice),
        }
    }

    /// Whether the caller set a deadline (not only a slice).
    #[cfg_attr(loom, allow(dead_code))] // loom's spin looks at the clock every round
    fn has_deadline(&self) -> bool {
        self.caller_deadline
    }

    /// Time left: `None` for no limit, [`WaitError::TimedOut`] once it passed.
    fn remaining(&mut self) -> Result<Option<Duration>, WaitError> {
        let now = match (self.deadline, self.slice.take()) {
            (None, None) => return Ok(None),
            (deadline, Some(slice)) => {
                let now = Instant::now();
                let end = now.checked_add(slice);
                self.deadline = match (deadline, end) {
                    (Some(at), Some(end)) => Some(at.min(end)),
                    (at, end) => at.or(end),
                };
                now
            }
            (Some(_), None) => Instant::now(),
        };
        match self.deadline {
            None => Ok(None),
            Some(at) => {
                let left = at.saturating_duration_since(now);
                if left.is_zero() {
                    Err(WaitError::TimedOut)
                } else {
                    Ok(Some(left))
                }
            }
        }
    }
}

/// Checks `poll` in a busy loop until it yields, the deadline passes or (for `bounded`) the
/// spin's budget is spent. Returns `Ok(None)` when it is.
///
/// Between two polls there is one `pause`, not an exponential backoff: the other side of a
/// ping-pong answers within a few hundred nanoseconds, and a backoff that has grown to 32 or 64
/// pauses (one to two microseconds on this machine's EPYC) would notice the answer that much
/// later. After [`SPIN_POLLS`] empty polls the spin has waited long enough that the other side
/// is not about to answer: a bounded spin ends (the caller sleeps), an unbounded one yields its
/// core between polls, so that on a machine with more spinning sides than cores the side that
/// has work gets to run.
#[cfg(not(loom))]
fn spin<T>(
    poll: &mut impl FnMut() -> Option<T>,
    limit: &mut Limit,
    bounded: bool,
) -> Result<Option<T>, WaitError> {
    let mut round: u32 = 0;
    loop {
        if let Some(value) = poll() {
            return Ok(Some(value));
        }
        round = round.saturating_add(1);
        // The clock after the first empty poll if the caller set a deadline (one already
        // passed ends the wait at once), then every few polls of the busy phase (a look at it
        // costs more than a poll), and at every poll once the spin yields (a yield costs far
        // more than a look).
        if (round == 1 && limit.has_deadline())
            || round.is_multiple_of(DEADLINE_CHECK_ROUNDS)
            || round >= SPIN_POLLS
        {
            limit.remaining()?;
        }
        if round < SPIN_POLLS {
            std::hint::spin_loop();
        } else if bounded && round >= SPIN_POLLS + YIELD_POLLS {
            return Ok(None);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Empty polls, one `pause` apart, before a spin stops busy-waiting: about 5 to 10 µs here.
#[cfg(not(loom))]
const SPIN_POLLS: u32 = 256;

/// Polls, one yield apart, after [`SPIN_POLLS`] before a bounded spin ends.
#[cfg(not(loom))]
const YIELD_POLLS: u32 = 4;

/// How many rounds of a spin go between two looks at the clock.
#[cfg(not(loom))]
const DEADLINE_CHECK_ROUNDS: u32 = 32;

/// Under loom: the spin phase of `Adaptive` is one yield and one check, and `Spin` yields to the
/// model's scheduler between checks, so that models stay small and terminate.
#[cfg(loom)]
fn spin<T>(
    poll: &mut impl FnMut() -> Option<T>,
    limit: &mut Limit,
    bounded: bool,
) -> Result<Option<T>, WaitError> {
    loop {
        crate::sync::spin_loop();
        if let Some(value) = poll() {
            return Ok(Some(value));
        }
        limit.remaining()?;
        if bounded {
            return Ok(None);
        }
    }
}

/// Waits until `poll` returns `Some`, sleeping (in [`WaitMode::Block`] and
/// [`WaitMode::Adaptive`]) until any of `bells` rings: one `futex_waitv` system call over all the
/// words, so the host waits on all of its peers at once (R11).
///
/// Each doorbell follows the protocol of the [module documentation](self): the waiter announces
/// itself on every word, checks `poll`, then sleeps on the values it announced. `poll` typically
/// tries every peer's ring and returns the first thing it finds.
///
/// # Errors
///
/// [`WaitError::TimedOut`] if the deadline passed with `poll` still `None`;
/// [`WaitError::Futex`] with [`FutexError::NoWords`] or [`FutexError::TooManyWords`] for an
/// empty list or more than [`MAX_WAIT_ANY`] doorbells (checked before anything else), or if the
/// kernel refused the wait.
///
/// ```
/// use hub_transport::signal::{Doorbell, WaitMode, wait_any_for};
/// use hub_transport::sync::{AtomicU32, AtomicU64, Ordering};
///
/// let words = [AtomicU32::new(0), AtomicU32::new(0)];
/// let data = [AtomicU64::new(0), AtomicU64::new(0)];
/// let bells = [Doorbell::new(&words[0]), Doorbell::new(&words[1])];
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         data[1].store(7, Ordering::Release);
///         bells[1].ring();
///     });
///     let poll = || (0..2).find(|&i| data[i].load(Ordering::Acquire) != 0);
///     let ready = wait_any_for(&bells, poll, None, WaitMode::Block)?;
///     assert_eq!(ready, 1);
///     Ok::<(), hub_transport::signal::WaitError>(())
/// })?;
/// # Ok::<(), hub_transport::signal::WaitError>(())
/// ```
pub fn wait_any_for<T>(
    bells: &[Doorbell<'_>],
    poll: impl FnMut() -> Option<T>,
    deadline: Option<Instant>,
    mode: WaitMode,
) -> Result<T, WaitError> {
    wait_any_after_ring(bells, poll, Limit::at(deadline), mode, || {}, None)
}

/// [`wait_any_for`], running `before_sleep` once if the wait gets as far as announcing itself
/// to sleep (never in [`WaitMode::Spin`], after the spin in [`WaitMode::Adaptive`]): the place
/// for an endpoint to give back what it keeps for its own use, such as its kept slots. A
/// thread that just rang another side's bell may pass that ring's wake as `pending` (the send
/// of a request, a reply). In [`WaitMode::Block`] with one bell the
/// wake goes with the first sleep, in one system call ([`futex::wake_then_wait`]). In the
/// other modes it is made at once: a spin can catch an answer only from a side that is awake,
/// and a side woken at once answers while this one spins, so that both may stay awake (an
/// adaptive pair that carried its wakes into its sleeps would never spin again).
pub(crate) fn wait_any_after_ring<T>(
    bells: &[Doorbell<'_>],
    mut poll: impl FnMut() -> Option<T>,
    mut limit: Limit,
    mode: WaitMode,
    before_sleep: impl FnOnce(),
    mut pending: Option<PendingWake<'_>>,
) -> Result<T, WaitError> {
    let Some(first) = bells.first() else {
        return Err(FutexError::NoWords.into());
    };
    if bells.len() > MAX_WAIT_ANY {
        return Err(FutexError::TooManyWords {
            count: bells.len(),
            max: MAX_WAIT_ANY,
        }
        .into());
    }
    if let Some(value) = poll() {
        return Ok(value);
    }
    if mode != WaitMode::Block || bells.len() > 1 {
        // Before a spin, and before a futex_waitv (which has no io_uring twin here): wake now.
        drop(pending.take());
    }
    match mode {
        WaitMode::Spin => loop {
            // An unbounded spin returns only with a value or an error.
            if let Some(value) = spin(&mut poll, &mut limit, false)? {
                return Ok(value);
            }
        },
        WaitMode::Adaptive => {
            if let Some(value) = spin(&mut poll, &mut limit, true)? {
                return Ok(value);
            }
        }
        WaitMode::Block => {}
    }
    before_sleep();
    // The (word, announced value) pairs for futex_waitv; the unused tail is never passed.
    let mut expected: [(&AtomicU32, u32); MAX_WAIT_ANY] = [(first.word, 0); MAX_WAIT_ANY];
    loop {
        let timeout = limit.remaining()?;
        for (slot, bell) in expected.iter_mut().zip(bells) {
            // R11: the announcement. Acquire: if a ring came before it in the word's order, the
            // data published before that ring is visible to the check below.
            *slot = (bell.word, wake::mark_waiter(bell.word, Ordering::Acquire));
        }
        // R11: pairs with the fence of every ring (`waiter_announced`): a ring whose load of
        // the word missed these announcements published its data before the check below.
        wake::after_marking();
        if let Some(value) = poll() {
            return Ok(value);
        }
        // Every outcome (woken, value changed, timed out, interrupted) leads back to the check:
        // wakeups may be spurious, and the deadline is checked at the top of the loop.
        if bells.len() == 1 {
            let (word, value) = expected[0];
            match pending.take() {
                Some(ring) => {
                    futex::wake_then_wait(ring.take(), WAKE_ALL, word, value, timeout)?;
                }
                None => {
                    futex::wait(word, value, timeout)?;
                }
            }
        } else {
            futex::wait_any(&expected[..bells.len()], timeout)?;
        }
        if let Some(value) = poll() {
            return Ok(value);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn ring_without_waiter_makes_no_wake_and_leaves_the_word() {
        let word = AtomicU32::new(7 * SEQUENCE_STEP);
        let bell = Doorbell::new(&word);
        for _ in 1..=5 {
            assert_eq!(bell.ring(), 0);
            assert!(!bell.has_waiter());
        }
        assert_eq!(word.load(Ordering::Relaxed), 7 * SEQUENCE_STEP);
    }

    #[test]
    fn ring_clears_the_waiter_bit() {
        let word = AtomicU32::new(WAITER_BIT);
        let bell = Doorbell::new(&word);
        assert!(bell.has_waiter());
        bell.ring();
        assert!(!bell.has_waiter());
        assert_eq!(bell.sequence(), 1);
    }

    #[test]
    fn sequence_wraps_into_the_cleared_waiter_bit() {
        let word = AtomicU32::new(u32::MAX); // sequence at its maximum, a waiter announced
        let bell = Doorbell::new(&word);
        bell.ring();
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn condition_already_true_returns_without_announcing() {
        let word = AtomicU32::new(0);
        let bell = Doorbell::new(&word);
        for mode in [WaitMode::Spin, WaitMode::Block, WaitMode::Adaptive] {
            bell.wait_until(|| true, None, mode).unwrap();
        }
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn every_mode_times_out() {
        let word = AtomicU32::new(0);
        let bell = Doorbell::new(&word);
        for mode in [WaitMode::Spin, WaitMode::Block, WaitMode::Adaptive] {
            let deadline = Instant::now() + Duration::from_millis(5);
            let result = bell.wait_until(|| false, Some(deadline), mode);
            assert!(matches!(result, Err(WaitError::TimedOut)), "{mode:?}");
            assert!(Instant::now() >= deadline);
        }
    }

    #[test]
    fn a_past_deadline_still_checks_the_condition_once() {
        let word = AtomicU32::new(0);
        let bell = Doorbell::new(&word);
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(
            bell.wait_for(|| Some(3), Some(past), WaitMode::Block)
                .unwrap(),
            3
        );
    }

    #[test]
    fn a_past_deadline_ends_a_spin_after_one_more_look() {
        let word = AtomicU32::new(0);
        let bell = Doorbell::new(&word);
        let past = Instant::now() - Duration::from_millis(1);
        for mode in [WaitMode::Spin, WaitMode::Adaptive] {
            let mut looks = 0;
            let result = bell.wait_for(
                || {
                    looks += 1;
                    None::<()>
                },
                Some(past),
                mode,
            );
            assert!(matches!(result, Err(WaitError::TimedOut)), "{mode:?}");
            // The look before the spin and the spin's first: the clock is read after it.
            assert_eq!(looks, 2, "{mode:?}");
        }
    }

    #[test]
    fn wait_any_rejects_bad_lists() {
        let result = wait_any_for(&[], || Some(()), None, WaitMode::Block);
        assert!(matches!(result, Err(WaitError::Futex(FutexError::NoWords))));
        let word = AtomicU32::new(0);
        let bells = vec![Doorbell::new(&word); MAX_WAIT_ANY + 1];
        let result = wait_any_for(&bells, || Some(()), None, WaitMode::Block);
        assert!(matches!(
            result,
            Err(WaitError::Futex(FutexError::TooManyWords { .. }))
        ));
    }

    #[test]
    fn clear_resets_the_word_and_wakes_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let waiter = {
            let (word, done) = (Arc::clone(&word), Arc::clone(&done));
            thread::spawn(move || {
                Doorbell::new(&word)
                    .wait_until(|| done.load(Ordering::Acquire) == 1, None, WaitMode::Block)
                    .unwrap();
            })
        };
        let bell = Doorbell::new(&word);
        while !bell.has_waiter() {
            thread::yield_now();
        }
        done.store(1, Ordering::Release);
        bell.clear();
        waiter.join().unwrap();
        // The waiter left without announcing again, since its condition held.
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    /// Ping-pong between two threads over two words, every mode: each side waits for the other's
    /// counter to reach its value. A lost wakeup would hang the test.
    #[test]
    fn ping_pong_loses_no_wakeup() {
        for mode in [WaitMode::Block, WaitMode::Adaptive, WaitMode::Spin] {
            const ROUNDS: u64 = 20_000;
            let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
            let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let pong = {
                let (words, counters) = (Arc::clone(&words), Arc::clone(&counters));
                thread::spawn(move || {
                    for i in 1..=ROUNDS {
                        Doorbell::new(&words[0])
                            .wait_until(|| counters[0].load(Ordering::Acquire) >= i, None, mode)
                            .unwrap();
                        counters[1].store(i, Ordering::Release);
                        Doorbell::new(&words[1]).ring();
                    }
                })
            };
            for i in 1..=ROUNDS {
                counters[0].store(i, Ordering::Release);
                Doorbell::new(&words[0]).ring();
                Doorbell::new(&words[1])
                    .wait_until(|| counters[1].load(Ordering::Acquire) >= i, None, mode)
                    .unwrap();
            }
            pong.join().unwrap();
            assert_eq!(counters[1].load(Ordering::Relaxed), ROUNDS);
        }
    }

    /// The host waits on 4 doorbells with one call while 4 publishers each publish a stream of
    /// values; it must see every value of every stream.
    #[test]
    fn wait_any_sees_every_publisher() {
        const PUBLISHERS: usize = 4;
        const VALUES: u64 = 5_000;
        let words: Arc<Vec<AtomicU32>> =
            Arc::new((0..PUBLISHERS).map(|_| AtomicU32::new(0)).collect());
        let published: Arc<Vec<AtomicU64>> =
            Arc::new((0..PUBLISHERS).map(|_| AtomicU64::new(0)).collect());
        let consumed: Arc<Vec<AtomicU64>> =
            Arc::new((0..PUBLISHERS).map(|_| AtomicU64::new(0)).collect());
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (words, published, consumed) = (
                    Arc::clone(&words),
                    Arc::clone(&published),
                    Arc::clone(&consumed),
                );
                thread::spawn(move || {
                    for v in 1..=VALUES {
                        // At most one unconsumed value per publisher: wait for the host.
                        while consumed[p].load(Ordering::Acquire) < v - 1 {
                            thread::yield_now();
                        }
                        published[p].store(v, Ordering::Release);
                        Doorbell::new(&words[p]).ring();
                    }
                })
            })
            .collect();
        let bells: Vec<Doorbell<'_>> = words.iter().map(Doorbell::new).collect();
        let mut seen = [0u64; PUBLISHERS];
        while seen.iter().any(|&s| s < VALUES) {
            let poll = || (0..PUBLISHERS).find(|&p| published[p].load(Ordering::Acquire) > seen[p]);
            let p = wait_any_for(&bells, poll, None, WaitMode::Block).unwrap();
            seen[p] += 1;
            assert_eq!(published[p].load(Ordering::Acquire), seen[p]);
            consumed[p].store(seen[p], Ordering::Release);
        }
        for publisher in publishers {
            publisher.join().unwrap();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::futex::emulation;
    use crate::sync::AtomicU64;
    use loom::sync::Arc;
    use loom::thread;

    /// One publisher, one blocking waiter: the waiter always returns and sees the data, in every
    /// interleaving (a lost wakeup is a deadlock, which loom reports). The publisher makes at most
    /// one wake call.
    #[test]
    fn block_waiter_is_never_lost() {
        loom::model(|| {
            emulation::init();
            let word = Arc::new(AtomicU32::new(0));
            let data = Arc::new(AtomicU64::new(0));
            let publisher = {
                let (word, data) = (Arc::clone(&word), Arc::clone(&data));
                thread::spawn(move || {
                    data.store(1, Ordering::Release);
                    Doorbell::new(&word).ring()
                })
            };
            Doorbell::new(&word)
                .wait_until(|| data.load(Ordering::Acquire) == 1, None, WaitMode::Block)
                .unwrap();
            let woken = publisher.join().unwrap();
            assert!(woken <= 1);
            assert!(emulation::wake_calls() <= 1);
        });
    }

    /// A request and its reply, each side ringing the other with its wake deferred into its
    /// own next wait (`ring_deferred`, then `wait_any_after_ring`: one system call a side in
    /// the real run). Neither side is ever left asleep (a deadlock, which loom reports), each
    /// sees the other's data, and each side makes at most one wake.
    /// A blocking wait on `bells` without a deadline, making `pending` with its first sleep.
    fn wait_block<T>(
        bells: &[Doorbell<'_>],
        poll: impl FnMut() -> Option<T>,
        pending: Option<PendingWake<'_>>,
    ) -> T {
        wait_any_after_ring(
            bells,
            poll,
            Limit::at(None),
            WaitMode::Block,
            || {},
            pending,
        )
        .expect("a wait without a deadline returns its value")
    }

    #[test]
    fn deferred_wakes_lose_no_request_and_no_reply() {
        loom::model(|| {
            emulation::init();
            let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
            let data = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let server = {
                let (words, data) = (Arc::clone(&words), Arc::clone(&data));
                thread::spawn(move || {
                    let bell = [Doorbell::new(&words[1])];
                    let poll = || (data[1].load(Ordering::Acquire) == 1).then_some(());
                    wait_block(&bell, poll, None);
                    data[0].store(2, Ordering::Release);
                    // The reply, its wake carried into the wait for the next request.
                    let pending = Doorbell::new(&words[0]).ring_deferred();
                    let poll = || (data[1].load(Ordering::Acquire) == 3).then_some(());
                    wait_block(&bell, poll, pending);
                })
            };
            let mine = [Doorbell::new(&words[0])];
            data[1].store(1, Ordering::Release);
            let pending = Doorbell::new(&words[1]).ring_deferred();
            let poll = || (data[0].load(Ordering::Acquire) == 2).then_some(());
            wait_block(&mine, poll, pending);
            data[1].store(3, Ordering::Release);
            Doorbell::new(&words[1]).ring();
            server.join().unwrap();
            assert!(emulation::wake_calls() <= 3);
        });
    }

    /// A waiter asleep on a readiness descriptor (modelled by loom's `Notify`, which keeps a
    /// permit as an eventfd keeps its count) is never lost: it arms (its bit, then the
    /// announcement), checks, and sleeps; the publisher publishes, then rings with
    /// `ring_ready`, which writes the descriptor only when the waiter armed. Two rounds, so the
    /// second arm meets a word the first ring changed. A lost wakeup is a deadlock.
    #[test]
    fn readiness_never_loses_a_wakeup() {
        const MINE: u32 = 1;
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            emulation::init();
            let word = Arc::new(AtomicU32::new(0));
            let ready = Arc::new(AtomicU32::new(0));
            let data = Arc::new(AtomicU64::new(0));
            let descriptor = Arc::new(loom::sync::Notify::new());
            let publisher = {
                let (word, ready, data, descriptor) = (
                    Arc::clone(&word),
                    Arc::clone(&ready),
                    Arc::clone(&data),
                    Arc::clone(&descriptor),
                );
                thread::spawn(move || {
                    for v in 1..=2 {
                        data.store(v, Ordering::Release);
                        Doorbell::new(&word).ring_ready(&ready, MINE, || descriptor.notify());
                    }
                })
            };
            let bell = Doorbell::new(&word);
            for v in 1..=2 {
                while data.load(Ordering::Acquire) < v {
                    bell.arm(&ready, MINE);
                    if data.load(Ordering::Acquire) >= v {
                        break;
                    }
                    descriptor.wait();
                }
            }
            publisher.join().unwrap();
        });
    }

    /// Two rounds through one word with the adaptive mode: the second publish must not be lost
    /// behind the waiter bit left by the first wait.
    #[test]
    fn adaptive_waiter_two_rounds() {
        loom::model(|| {
            emulation::init();
            let word = Arc::new(AtomicU32::new(0));
            let data = Arc::new(AtomicU64::new(0));
            let publisher = {
                let (word, data) = (Arc::clone(&word), Arc::clone(&data));
                thread::spawn(move || {
                    for v in 1..=2 {
                        data.store(v, Ordering::Release);
                        Doorbell::new(&word).ring();
                    }
                })
            };
            let bell = Doorbell::new(&word);
            for v in 1..=2 {
                bell.wait_until(
                    || data.load(Ordering::Acquire) >= v,
                    None,
                    WaitMode::Adaptive,
                )
                .unwrap();
            }
            publisher.join().unwrap();
        });
    }

    /// Two publishers ring one word; the waiter needs both publishes. One publisher may clear the
    /// waiter bit that the other's ring then does not see: the clearing one must wake.
    #[test]
    fn two_publishers_one_word() {
        loom::model(|| {
            emulation::init();
            let word = Arc::new(AtomicU32::new(0));
            let data = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let publishers: Vec<_> = (0..2)
                .map(|i| {
                    let (word, data) = (Arc::clone(&word), Arc::clone(&data));
                    thread::spawn(move || {
                        data[i].store(1, Ordering::Release);
                        Doorbell::new(&word).ring();
                    })
                })
                .collect();
            let both = || data.iter().all(|d| d.load(Ordering::Acquire) == 1);
            Doorbell::new(&word)
                .wait_until(both, None, WaitMode::Block)
                .unwrap();
            for publisher in publishers {
                publisher.join().unwrap();
            }
        });
    }

    /// Two waiters sleep on one word; one ring must wake both (the waiter bit is shared, so a
    /// ring wakes every sleeper).
    #[test]
    fn one_ring_wakes_two_waiters() {
        loom::model(|| {
            emulation::init();
            let word = Arc::new(AtomicU32::new(0));
            let data = Arc::new(AtomicU64::new(0));
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let (word, data) = (Arc::clone(&word), Arc::clone(&data));
                    thread::spawn(move || {
                        Doorbell::new(&word)
                            .wait_until(|| data.load(Ordering::Acquire) == 1, None, WaitMode::Block)
                            .unwrap();
                    })
                })
                .collect();
            data.store(1, Ordering::Release);
            Doorbell::new(&word).ring();
            for waiter in waiters {
                waiter.join().unwrap();
            }
            assert!(emulation::wake_calls() <= 1);
        });
    }

    /// Nobody sleeps (the waiter only spins): the publisher never makes a wake call, nor writes
    /// the word.
    #[test]
    fn no_wake_call_when_nobody_sleeps() {
        loom::model(|| {
            emulation::init();
            let word = Arc::new(AtomicU32::new(0));
            let data = Arc::new(AtomicU64::new(0));
            let publisher = {
                let (word, data) = (Arc::clone(&word), Arc::clone(&data));
                thread::spawn(move || {
                    data.store(1, Ordering::Release);
                    Doorbell::new(&word).ring();
                    Doorbell::new(&word).ring();
                })
            };
            Doorbell::new(&word)
                .wait_until(|| data.load(Ordering::Acquire) == 1, None, WaitMode::Spin)
                .unwrap();
            publisher.join().unwrap();
            assert_eq!(emulation::wake_calls(), 0);
            // Rings that find no waiter do not write the word.
            assert_eq!(word.load(Ordering::Relaxed), 0);
        });
    }

    /// The host waits on two doorbells with one call; two publishers ring one each. The host
    /// must see both.
    #[test]
    fn wait_any_sees_both_publishers() {
        loom::model(|| {
            emulation::init();
            let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
            let data = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let publishers: Vec<_> = (0..2)
                .map(|i| {
                    let (words, data) = (Arc::clone(&words), Arc::clone(&data));
                    thread::spawn(move || {
                        data[i].store(1, Ordering::Release);
                        Doorbell::new(&words[i]).ring();
                    })
                })
                .collect();
            let bells = [Doorbell::new(&words[0]), Doorbell::new(&words[1])];
            let mut seen = [false; 2];
            while !(seen[0] && seen[1]) {
                let poll = || (0..2).find(|&i| !seen[i] && data[i].load(Ordering::Acquire) == 1);
                let i = wait_any_for(&bells, poll, None, WaitMode::Block).unwrap();
                seen[i] = true;
            }
            for publisher in publishers {
                publisher.join().unwrap();
            }
        });
    }
}
