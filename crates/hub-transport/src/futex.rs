//! The futex system calls of the hub: wait on one word, wake a word, wait on many words at once.
//!
//! This module is the only place in the workspace that makes a futex system call. It is a thin,
//! safe layer over [`rustix::thread::futex`]:
//!
//! - [`wait`] is `FUTEX_WAIT`: sleep while a word still holds an expected value;
//! - [`wake`] is `FUTEX_WAKE`: wake up to `n` sleepers of a word;
//! - [`wait_any`] is `futex_waitv` (Linux 5.16+): sleep while *every* word of a list holds its
//!   expected value, so the host waits on all of its peers with one call (R11);
//! - [`wake_then_wait`] wakes one word and sleeps on another in one system call (an io_uring of
//!   the calling thread, Linux 6.7+), or in two where that is not available: a request and its
//!   reply then cost each side one system call instead of two.
//!
//! All three use the *shared* futex flavour (no `FUTEX_PRIVATE_FLAG`, no `FUTEX2_PRIVATE`): the
//! words live in a segment that several processes map, and a private futex would only match
//! waiters of the calling process. A [`wake`] wakes sleepers of [`wait`] and of [`wait_any`]
//! alike.
//!
//! These are the raw primitives; the protocol that decides *when* to wait and wake, so that no
//! wakeup is lost and no system call is made when nobody sleeps, is in [`crate::signal`].
//!
//! # Loom
//!
//! Under `cfg(loom)` no system call is made: the same API is emulated with
//! `loom::sync::{Mutex, Condvar}` and one table of sleepers per model execution. The emulation
//! keeps the kernel's contract (the word is compared with the expected value under the lock that
//! [`wake`] takes, and a sleeper returns only when a [`wake`] picked it), so a lost wakeup shows
//! up as a deadlock that loom reports. Loom cannot model time: a wait with a timeout compares the
//! word and then returns [`WaitOutcome::TimedOut`] at once instead of sleeping. See
//! `futex::emulation` (present only under `cfg(loom)`) for the counters the models check.

/// Largest number of words one [`wait_any`] call accepts (the kernel's `FUTEX_WAITV_MAX`).
pub const MAX_WAIT_ANY: usize = 128;

/// A value of `n` for [`wake`] that wakes every sleeper of the word.
///
/// The kernel reads the count as a signed `int`, so this is `i32::MAX`; larger values passed to
/// [`wake`] are clamped to it.
pub const WAKE_ALL: u32 = i32::MAX as u32;

/// How a [`wait`] ended. Whatever it says, the caller re-checks its condition: futex wakeups may
/// be spurious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitOutcome {
    /// The caller slept and a [`wake`] (or a spurious wakeup) woke it.
    Woken,
    /// The word did not hold the expected value when the kernel compared it (`EAGAIN`); the
    /// caller did not sleep.
    ValueChanged,
    /// The timeout passed (`ETIMEDOUT`).
    TimedOut,
    /// A signal interrupted the wait (`EINTR`).
    Interrupted,
}

/// How a [`wait_any`] ended. Whatever it says, the caller re-checks its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitAnyOutcome {
    /// The caller slept and a [`wake`] of the word at this index of the list woke it (other
    /// words may have been woken too).
    Woken(usize),
    /// At least one word did not hold its expected value (`EAGAIN`); the caller did not sleep.
    ValueChanged,
    /// The timeout passed (`ETIMEDOUT`).
    TimedOut,
    /// A signal interrupted the wait (`EINTR`).
    Interrupted,
}

/// A futex call that failed for a reason other than the ordinary outcomes of
/// [`WaitOutcome`] and [`WaitAnyOutcome`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FutexError {
    /// [`wait_any`] was given an empty list of words.
    #[error("futex_waitv needs at least one word")]
    NoWords,
    /// [`wait_any`] was given more than [`MAX_WAIT_ANY`] words.
    #[error("futex_waitv takes at most {max} words, {count} given")]
    TooManyWords {
        /// Number of words given.
        count: usize,
        /// The limit, [`MAX_WAIT_ANY`].
        max: usize,
    },
    /// The kernel does not implement the call (`ENOSYS`; `futex_waitv` needs Linux 5.16).
    #[error("the kernel does not support this futex call (futex_waitv needs Linux 5.16+)")]
    Unsupported,
    /// The kernel refused the call with this error (`EINVAL`, `EFAULT`, `ENOMEM`, ...).
    #[error("futex system call failed: {0}")]
    Os(#[source] rustix::io::Errno),
}

#[cfg(not(loom))]
pub use self::os::{
    system_calls, wait, wait_any, wake, wake_then_wait, wake_then_wait_is_one_call,
};

#[cfg(loom)]
pub use self::emulation::{wait, wait_any, wake, wake_then_wait};

/// Converts a relative timeout to a `Timespec`, saturating instead of overflowing.
#[cfg(not(loom))]
fn timespec_from(duration: std::time::Duration) -> rustix::thread::futex::Timespec {
    use rustix::thread::futex::Timespec;
    Timespec::try_from(duration).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 999_999_999,
    })
}

#[cfg(not(loom))]
mod os {
    use super::{FutexError, MAX_WAIT_ANY, WAKE_ALL, WaitAnyOutcome, WaitOutcome, timespec_from};

    /// Futex system calls made through this module, by this process.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn count_call() {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many futex system calls (wait, wake, waitv) this process has made through this
    /// module: for tests and benchmarks that check that a path makes none (R11: a publish
    /// costs no system call when nobody sleeps).
    pub fn system_calls() -> u64 {
        CALLS.load(std::sync::atomic::Ordering::Relaxed)
    }
    use crate::sync::AtomicU32;
    use rustix::io::Errno;
    use rustix::thread::futex;
    use std::time::Duration;

    /// Sleeps while `word` holds `expected`, for at most `timeout` (`FUTEX_WAIT`, shared).
    ///
    /// The kernel compares the word with `expected` and puts the caller to sleep atomically with
    /// respect to [`wake`] on the same word: if the word changes and is woken after the comparison,
    /// the caller is woken. The outcome is a hint; spurious wakeups happen, so the caller re-checks
    /// its condition in a loop.
    ///
    /// # Errors
    ///
    /// [`FutexError::Os`] if the kernel refuses the call (it does not for a valid `&AtomicU32`).
    /// A changed value, a timeout and a signal are outcomes, not errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use hub_transport::futex::{self, WaitOutcome};
    /// use hub_transport::sync::AtomicU32;
    /// use std::time::Duration;
    ///
    /// let word = AtomicU32::new(7);
    /// // The word is not 6, so the call returns at once.
    /// assert_eq!(futex::wait(&word, 6, None)?, WaitOutcome::ValueChanged);
    /// // Nobody wakes it, so the call times out.
    /// let outcome = futex::wait(&word, 7, Some(Duration::from_millis(1)))?;
    /// assert!(matches!(outcome, WaitOutcome::TimedOut | WaitOutcome::Interrupted));
    /// # Ok::<(), futex::FutexError>(())
    /// ```
    pub fn wait(
        word: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome, FutexError> {
        let timeout = timeout.map(timespec_from);
        count_call();
        match futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref()) {
            Ok(()) => Ok(WaitOutcome::Woken),
            Err(Errno::AGAIN) => Ok(WaitOutcome::ValueChanged),
            Err(Errno::TIMEDOUT) => Ok(WaitOutcome::TimedOut),
            Err(Errno::INTR) => Ok(WaitOutcome::Interrupted),
            Err(Errno::NOSYS) => Err(FutexError::Unsupported),
            Err(errno) => Err(FutexError::Os(errno)),
        }
    }

    /// Wakes up to `n` sleepers of `word` (`FUTEX_WAKE`, shared) and returns how many it woke.
    ///
    /// Sleepers of [`wait`] and of [`wait_any`] are both woken. `n` above [`WAKE_ALL`] is clamped
    /// to it. The call cannot fail for a valid `&AtomicU32`; should the kernel refuse it anyway,
    /// the result is 0 (and a debug build asserts).
    ///
    /// # Examples
    ///
    /// ```
    /// use hub_transport::futex::{self, WAKE_ALL};
    /// use hub_transport::sync::AtomicU32;
    ///
    /// let word = AtomicU32::new(0);
    /// assert_eq!(futex::wake(&word, WAKE_ALL), 0); // nobody sleeps on it
    /// ```
    pub fn wake(word: &AtomicU32, n: u32) -> usize {
        count_call();
        match futex::wake(word, futex::Flags::empty(), n.min(WAKE_ALL)) {
            Ok(woken) => woken,
            Err(errno) => {
                debug_assert!(false, "FUTEX_WAKE failed: {errno}");
                0
            }
        }
    }

    /// Whether [`wake_then_wait`] makes one system call on the calling thread (its io_uring
    /// and the kernel's io_uring futex operations work), rather than two. Probes once per
    /// thread, with a call that wakes nobody and does not sleep.
    pub fn wake_then_wait_is_one_call() -> bool {
        crate::uring::available()
    }

    /// Wakes up to `n` sleepers of `wake` ([`wake`]), then sleeps while `wait` holds `expected`
    /// for at most `timeout` ([`wait`]): in **one** system call, through an io_uring of the
    /// calling thread (created at its first call; Linux 6.7+), or in the two plain calls where
    /// io_uring or its futex operations are not available. Returns how many sleepers the wake
    /// woke and how the wait ended.
    ///
    /// This is the step of a side that has just published something for the other side and now
    /// waits for the answer: the wake for what it published, the wait for what comes back.
    ///
    /// # Errors
    ///
    /// As [`wait`].
    ///
    /// # Examples
    ///
    /// ```
    /// use hub_transport::futex::{self, WaitOutcome};
    /// use hub_transport::sync::AtomicU32;
    /// use std::time::Duration;
    ///
    /// let (theirs, mine) = (AtomicU32::new(0), AtomicU32::new(7));
    /// // Nobody sleeps on `theirs`; `mine` is not 6, so the call returns at once.
    /// assert_eq!(futex::wake_then_wait(&theirs, 1, &mine, 6, None)?, (0, WaitOutcome::ValueChanged));
    /// let (_, outcome) = futex::wake_then_wait(&theirs, 1, &mine, 7, Some(Duration::from_millis(1)))?;
    /// assert!(matches!(outcome, WaitOutcome::TimedOut | WaitOutcome::Interrupted));
    /// # Ok::<(), futex::FutexError>(())
    /// ```
    pub fn wake_then_wait(
        wake_word: &AtomicU32,
        n: u32,
        wait_word: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<(usize, WaitOutcome), FutexError> {
        let n = n.min(WAKE_ALL);
        use crate::uring::{self, Waited};
        match uring::wake_then_wait(wake_word, n, wait_word, expected, timeout) {
            Some(result) => {
                count_call();
                let (woken, waited) = result.map_err(FutexError::Os)?;
                let outcome = match waited {
                    Waited::Woken => WaitOutcome::Woken,
                    Waited::ValueChanged => WaitOutcome::ValueChanged,
                    Waited::TimedOut => WaitOutcome::TimedOut,
                    Waited::Interrupted => WaitOutcome::Interrupted,
                };
                Ok((woken, outcome))
            }
            None => {
                let woken = wake(wake_word, n);
                Ok((woken, wait(wait_word, expected, timeout)?))
            }
        }
    }

    /// Sleeps while every word of `words` holds its expected value, for at most `timeout`
    /// (`futex_waitv`, shared, 32-bit words).
    ///
    /// A [`wake`] of any of the words wakes the caller; if any word differs from its expected
    /// value when the kernel compares them, the call returns at once. This is how the host waits
    /// on all of its peers with one system call (R11). The timeout is measured on
    /// `CLOCK_MONOTONIC`.
    ///
    /// # Errors
    ///
    /// [`FutexError::NoWords`] for an empty list, [`FutexError::TooManyWords`] for more than
    /// [`MAX_WAIT_ANY`] words, [`FutexError::Unsupported`] on kernels older than 5.16, and
    /// [`FutexError::Os`] if the kernel refuses the call otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use hub_transport::futex::{self, WaitAnyOutcome};
    /// use hub_transport::sync::AtomicU32;
    /// use std::time::Duration;
    ///
    /// let (a, b) = (AtomicU32::new(1), AtomicU32::new(2));
    /// // `b` is not 3, so the call returns at once.
    /// assert_eq!(futex::wait_any(&[(&a, 1), (&b, 3)], None)?, WaitAnyOutcome::ValueChanged);
    /// let outcome = futex::wait_any(&[(&a, 1), (&b, 2)], Some(Duration::from_millis(1)))?;
    /// assert!(matches!(outcome, WaitAnyOutcome::TimedOut | WaitAnyOutcome::Interrupted));
    /// # Ok::<(), futex::FutexError>(())
    /// ```
    pub fn wait_any(
        words: &[(&AtomicU32, u32)],
        timeout: Option<Duration>,
    ) -> Result<WaitAnyOutcome, FutexError> {
        count_call();
        if words.is_empty() {
            return Err(FutexError::NoWords);
        }
        if words.len() > MAX_WAIT_ANY {
            return Err(FutexError::TooManyWords {
                count: words.len(),
                max: MAX_WAIT_ANY,
            });
        }
        let mut waiters = [futex::Wait::new(); MAX_WAIT_ANY];
        for (waiter, &(word, expected)) in waiters.iter_mut().zip(words) {
            waiter.val = u64::from(expected);
            // The kernel only reads the word through this pointer (it never writes a futex word
            // on wait); `AtomicU32::as_ptr` gives the address without a `&mut`.
            waiter.uaddr = futex::WaitPtr::new(word.as_ptr().cast());
            waiter.flags = futex::WaitFlags::SIZE_U32;
        }
        // futex_waitv takes an absolute timeout on the given clock.
        let deadline = timeout.map(|timeout| {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            now.checked_add(timespec_from(timeout))
                .unwrap_or(futex::Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 999_999_999,
                })
        });
        match futex::waitv(
            &waiters[..words.len()],
            futex::WaitvFlags::empty(),
            deadline.as_ref(),
            futex::ClockId::Monotonic,
        ) {
            Ok(index) => Ok(WaitAnyOutcome::Woken(index)),
            Err(Errno::AGAIN) => Ok(WaitAnyOutcome::ValueChanged),
            Err(Errno::TIMEDOUT) => Ok(WaitAnyOutcome::TimedOut),
            Err(Errno::INTR) => Ok(WaitAnyOutcome::Interrupted),
            Err(Errno::NOSYS) => Err(FutexError::Unsupported),
            Err(errno) => Err(FutexError::Os(errno)),
        }
    }
}

/// The loom emulation of the futex calls (only under `cfg(loom)`).
///
/// One table per model execution holds the sleepers; [`wait`] and [`wait_any`] compare the words
/// and register under the table's mutex, [`wake`] picks sleepers under the same mutex, so the
/// kernel's "compare and sleep atomically with respect to wake" holds. A sleeper returns only
/// when a [`wake`] picked it: a protocol that loses a wakeup leaves it asleep forever, and loom
/// reports the deadlock.
#[cfg(loom)]
pub mod emulation {
    use super::{FutexError, MAX_WAIT_ANY, WAKE_ALL, WaitAnyOutcome, WaitOutcome};
    use crate::sync::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};
    use std::time::Duration;

    struct Sleeper {
        id: u64,
        addrs: Vec<usize>,
        /// Set by [`wake`]: the index in `addrs` of the word whose wake picked this sleeper.
        woken: Option<usize>,
    }

    #[derive(Default)]
    struct State {
        sleepers: Vec<Sleeper>,
        next_id: u64,
        wake_calls: usize,
        woken_total: usize,
    }

    struct Table {
        state: Mutex<State>,
        condvar: Condvar,
    }

    loom::lazy_static! {
        static ref TABLE: Table = Table {
            state: Mutex::new(State::default()),
            condvar: Condvar::new(),
        };
    }

    fn addr(word: &AtomicU32) -> usize {
        std::ptr::from_ref(word) as usize
    }

    /// Creates this execution's table. Call it first thing in a model, before spawning threads:
    /// loom's `lazy_static` makes every later access synchronise with the thread that created
    /// the table, and a table created by a model thread would add happens-before edges that hide
    /// ordering bugs.
    pub fn init() {
        drop(TABLE.state.lock().unwrap());
    }

    /// Number of [`wake`] calls so far in this execution: the system calls a real run would make.
    pub fn wake_calls() -> usize {
        TABLE.state.lock().unwrap().wake_calls
    }

    /// Number of sleepers woken so far in this execution.
    pub fn woken_total() -> usize {
        TABLE.state.lock().unwrap().woken_total
    }

    /// The emulation of `FUTEX_WAIT`, with the same contract; a `Some` timeout
    /// compares the word and returns [`WaitOutcome::TimedOut`] without sleeping.
    ///
    /// # Errors
    ///
    /// None in the emulation; the signature matches the real call.
    pub fn wait(
        word: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<WaitOutcome, FutexError> {
        Ok(match wait_any(&[(word, expected)], timeout)? {
            WaitAnyOutcome::Woken(_) => WaitOutcome::Woken,
            WaitAnyOutcome::ValueChanged => WaitOutcome::ValueChanged,
            WaitAnyOutcome::TimedOut => WaitOutcome::TimedOut,
            WaitAnyOutcome::Interrupted => WaitOutcome::Interrupted,
        })
    }

    /// The emulation of `futex_waitv`, with the same contract and errors; a `Some` timeout
    /// compares the words and returns [`WaitAnyOutcome::TimedOut`] without sleeping.
    ///
    /// # Errors
    ///
    /// [`FutexError::NoWords`] and [`FutexError::TooManyWords`], as the real call.
    pub fn wait_any(
        words: &[(&AtomicU32, u32)],
        timeout: Option<Duration>,
    ) -> Result<WaitAnyOutcome, FutexError> {
        if words.is_empty() {
            return Err(FutexError::NoWords);
        }
        if words.len() > MAX_WAIT_ANY {
            return Err(FutexError::TooManyWords {
                count: words.len(),
                max: MAX_WAIT_ANY,
            });
        }
        let mut state = TABLE.state.lock().unwrap();
        for &(word, expected) in words {
            // The kernel reads the word after a full barrier, under the lock that wake takes.
            if word.load(Ordering::SeqCst) != expected {
                return Ok(WaitAnyOutcome::ValueChanged);
            }
        }
        if timeout.is_some() {
            return Ok(WaitAnyOutcome::TimedOut);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.sleepers.push(Sleeper {
            id,
            addrs: words.iter().map(|&(word, _)| addr(word)).collect(),
            woken: None,
        });
        loop {
            state = TABLE.condvar.wait(state).unwrap();
            let position = state
                .sleepers
                .iter()
                .position(|sleeper| sleeper.id == id)
                .expect("a sleeper stays in the table until it leaves");
            if let Some(index) = state.sleepers[position].woken {
                state.sleepers.remove(position);
                return Ok(WaitAnyOutcome::Woken(index));
            }
        }
    }

    /// The emulation of [`wake_then_wait`](super::wake_then_wait): the wake, then the wait.
    ///
    /// # Errors
    ///
    /// None in the emulation; the signature matches the real call.
    pub fn wake_then_wait(
        wake_word: &AtomicU32,
        n: u32,
        wait_word: &AtomicU32,
        expected: u32,
        timeout: Option<std::time::Duration>,
    ) -> Result<(usize, WaitOutcome), FutexError> {
        let woken = wake(wake_word, n);
        Ok((woken, wait(wait_word, expected, timeout)?))
    }

    /// The emulation of `FUTEX_WAKE`: picks up to `n` sleepers of `word` (oldest first), wakes
    /// them, and counts the call.
    pub fn wake(word: &AtomicU32, n: u32) -> usize {
        let target = addr(word);
        let limit = n.min(WAKE_ALL) as usize;
        let mut state = TABLE.state.lock().unwrap();
        state.wake_calls += 1;
        let mut woken = 0;
        for sleeper in state.sleepers.iter_mut() {
            if woken == limit {
                break;
            }
            if sleeper.woken.is_none()
                && let Some(index) = sleeper.addrs.iter().position(|&a| a == target)
            {
                sleeper.woken = Some(index);
                woken += 1;
            }
        }
        state.woken_total += woken;
        if woken > 0 {
            TABLE.condvar.notify_all();
        }
        woken
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;
    use std::time::Instant;

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let word = AtomicU32::new(5);
        assert_eq!(wait(&word, 4, None).unwrap(), WaitOutcome::ValueChanged);
    }

    #[test]
    fn wait_times_out() {
        let word = AtomicU32::new(5);
        let start = Instant::now();
        let outcome = wait(&word, 5, Some(Duration::from_millis(20))).unwrap();
        assert!(matches!(
            outcome,
            WaitOutcome::TimedOut | WaitOutcome::Interrupted
        ));
        if outcome == WaitOutcome::TimedOut {
            // A timeout never ends before it elapsed.
            assert!(start.elapsed() >= Duration::from_millis(20));
        }
    }

    /// Two threads hand a turn back and forth, each with one `wake_then_wait` per turn: the
    /// wake for the turn it gives, the wait for the turn it gets back. No turn is lost (a lost
    /// wakeup would sleep until the watchdog and fail the test).
    #[test]
    fn wake_then_wait_hands_turns_back_and_forth() {
        const TURNS: u32 = 2_000;
        let watchdog = Some(Duration::from_secs(10));
        // `words[side]`: how many turns that side has been given.
        let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        // Wake the other side (for the turn just given) and sleep until this side's word
        // reaches `target`.
        let wait_for = move |words: &[AtomicU32; 2], me: usize, target: u32| {
            loop {
                let seen = words[me].load(Ordering::Acquire);
                if seen >= target {
                    return;
                }
                let (_, outcome) =
                    wake_then_wait(&words[1 - me], 1, &words[me], seen, watchdog).unwrap();
                assert_ne!(outcome, WaitOutcome::TimedOut, "a lost wakeup, side {me}");
            }
        };
        let second = {
            let words = Arc::clone(&words);
            thread::spawn(move || {
                for turn in 1..=TURNS {
                    while words[1].load(Ordering::Acquire) < turn {
                        let _ = wait(&words[1], turn - 1, watchdog).unwrap();
                    }
                    words[0].store(turn, Ordering::Release);
                    if turn < TURNS {
                        wait_for(&words, 1, turn + 1);
                    } else {
                        wake(&words[0], 1);
                    }
                }
            })
        };
        for turn in 1..=TURNS {
            words[1].store(turn, Ordering::Release);
            wait_for(&words, 0, turn);
        }
        second.join().unwrap();
        assert_eq!(words[0].load(Ordering::Relaxed), TURNS);
        assert_eq!(words[1].load(Ordering::Relaxed), TURNS);
    }

    #[test]
    fn wake_then_wait_times_out_and_works_again_after() {
        let (theirs, mine) = (AtomicU32::new(0), AtomicU32::new(3));
        let start = Instant::now();
        let (woken, outcome) =
            wake_then_wait(&theirs, 1, &mine, 3, Some(Duration::from_millis(20))).unwrap();
        assert_eq!(woken, 0);
        assert!(matches!(
            outcome,
            WaitOutcome::TimedOut | WaitOutcome::Interrupted
        ));
        if outcome == WaitOutcome::TimedOut {
            assert!(start.elapsed() >= Duration::from_millis(20));
        }
        // The timed-out wait was cancelled and reaped: the next call sees a changed value.
        mine.store(4, Ordering::Relaxed);
        assert_eq!(
            wake_then_wait(&theirs, 1, &mine, 3, None).unwrap(),
            (0, WaitOutcome::ValueChanged)
        );
    }

    #[test]
    fn wake_then_wait_wakes_a_sleeper() {
        let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let sleeper = {
            let words = Arc::clone(&words);
            thread::spawn(move || {
                while words[0].load(Ordering::Acquire) == 0 {
                    let _ = wait(&words[0], 0, Some(Duration::from_secs(10))).unwrap();
                }
                words[1].store(1, Ordering::Release);
                wake(&words[1], 1)
            })
        };
        thread::sleep(Duration::from_millis(20));
        words[0].store(1, Ordering::Release);
        while words[1].load(Ordering::Acquire) == 0 {
            let (_, outcome) =
                wake_then_wait(&words[0], 1, &words[1], 0, Some(Duration::from_secs(10))).unwrap();
            assert_ne!(outcome, WaitOutcome::TimedOut);
        }
        sleeper.join().unwrap();
    }

    #[test]
    fn wake_without_sleepers_wakes_nobody() {
        let word = AtomicU32::new(0);
        assert_eq!(wake(&word, 1), 0);
        assert_eq!(wake(&word, u32::MAX), 0);
    }

    /// Waits until some thread sleeps on `word` by waking it repeatedly: returns the number
    /// woken once it is non-zero.
    fn wake_until_someone_sleeps(word: &AtomicU32, n: u32) -> usize {
        loop {
            let woken = wake(word, n);
            if woken > 0 {
                return woken;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn wake_wakes_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            thread::spawn(move || {
                // The value never changes, so only a wake (or a rare spurious wakeup) ends a wait.
                while wait(&word, 0, None).unwrap() != WaitOutcome::Woken {}
            })
        };
        assert_eq!(wake_until_someone_sleeps(&word, WAKE_ALL), 1);
        sleeper.join().unwrap();
    }

    #[test]
    fn wait_any_rejects_bad_lists() {
        assert!(matches!(wait_any(&[], None), Err(FutexError::NoWords)));
        let word = AtomicU32::new(0);
        let many = vec![(&word, 0); MAX_WAIT_ANY + 1];
        assert!(matches!(
            wait_any(&many, None),
            Err(FutexError::TooManyWords { count, max }) if count == MAX_WAIT_ANY + 1 && max == MAX_WAIT_ANY
        ));
    }

    #[test]
    fn wait_any_sees_a_changed_word() {
        let words: Vec<AtomicU32> = (0..4).map(AtomicU32::new).collect();
        let mut list: Vec<(&AtomicU32, u32)> = words
            .iter()
            .map(|w| (w, w.load(Ordering::Relaxed)))
            .collect();
        list[3].1 = 99;
        assert_eq!(wait_any(&list, None).unwrap(), WaitAnyOutcome::ValueChanged);
    }

    #[test]
    fn wait_any_times_out() {
        let words: Vec<AtomicU32> = (0..3).map(AtomicU32::new).collect();
        let list: Vec<(&AtomicU32, u32)> = words
            .iter()
            .map(|w| (w, w.load(Ordering::Relaxed)))
            .collect();
        let start = Instant::now();
        let outcome = wait_any(&list, Some(Duration::from_millis(20))).unwrap();
        assert!(matches!(
            outcome,
            WaitAnyOutcome::TimedOut | WaitAnyOutcome::Interrupted
        ));
        if outcome == WaitAnyOutcome::TimedOut {
            assert!(start.elapsed() >= Duration::from_millis(20));
        }
    }

    #[test]
    fn wait_any_is_woken_by_wake_of_any_word_with_its_index() {
        let words: Arc<Vec<AtomicU32>> = Arc::new((0..5).map(|_| AtomicU32::new(0)).collect());
        let sleeper = {
            let words = Arc::clone(&words);
            thread::spawn(move || {
                let list: Vec<(&AtomicU32, u32)> = words.iter().map(|w| (w, 0)).collect();
                loop {
                    match wait_any(&list, None).unwrap() {
                        WaitAnyOutcome::Woken(index) => return index,
                        // Spurious ends: go back to sleep.
                        _ => continue,
                    }
                }
            })
        };
        // Wake word 3 without changing any value: only the wake can end the wait.
        assert_eq!(wake_until_someone_sleeps(&words[3], WAKE_ALL), 1);
        assert_eq!(sleeper.join().unwrap(), 3);
    }

    #[test]
    fn wake_n_wakes_at_most_n() {
        let word = Arc::new(AtomicU32::new(0));
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                let word = Arc::clone(&word);
                thread::spawn(move || while wait(&word, 0, None).unwrap() != WaitOutcome::Woken {})
            })
            .collect();
        let mut total = 0;
        while total < 3 {
            let woken = wake(&word, 1);
            assert!(woken <= 1, "wake(1) woke {woken}");
            total += woken;
            if woken == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
    }
}
