//! The hub's one wait/wake protocol over a futex word (R11), used by every word a participant
//! sleeps on: the allocator's `slot_available_futex` (an allocator waits for a free slot) and
//! hub-transport's doorbells (a receiver waits for a frame). This module holds the protocol's
//! atomics; the futex system calls are the caller's (hub-transport's `futex` module).
//!
//! A word holds a sequence in bits 1 to 31 and [`WAITER_BIT`] in bit 0:
//!
//! - **Waiter:** [`announce`] (sets the bit), then checks its condition once more, then sleeps
//!   in `FUTEX_WAIT` on the value `announce` returned; whatever wakes it, it checks again.
//! - **Publisher**, after it published (pushed a slot, pushed a descriptor): asks whether a
//!   waiter announced itself ([`waiter_announced`] or [`waiter_announced_after_rmw`]); if not,
//!   it is done, with no write and no system call. If so, [`take_announcement`] moves the
//!   sequence on and clears the bit in one read-modify-write, and the publisher makes the
//!   `FUTEX_WAKE` call when that says a waiter was there.
//!
//! **Why no wakeup is lost.** The waiter writes the word and then reads the data; the publisher
//! writes the data and then reads the word. Each side separates its two accesses by an access
//! in the single total order of sequentially consistent operations (the waiter's SeqCst fence
//! after its announcement; the publisher's SeqCst fence, or its SeqCst publication RMW followed
//! by a SeqCst load), so one of the two comes first: either the waiter's check sees the data,
//! or the publisher's load sees the announcement. In the second case the publisher's RMW
//! changes the word before its wake, so the waiter's `FUTEX_WAIT` on the announced value
//! either fails at once (the word changed) or is woken. A waiter that announces after the RMW
//! sets the bit again and checks again.
//!
//! Two publisher checks, one proof: [`waiter_announced`] (a SeqCst fence, then a load) for a
//! publication that was a plain Release store, such as a ring's tail; and
//! [`waiter_announced_after_rmw`] (a SeqCst load, free on x86) for a publication that was
//! itself a SeqCst read-modify-write, such as the free list's push.
//!
//! ```
//! use hub_alloc::sync::{AtomicU32, Ordering};
//! use hub_alloc::wake;
//!
//! let word = AtomicU32::new(0);
//! let data = AtomicU32::new(0);
//! // A publisher with no waiter: nothing to do, the word is untouched.
//! data.store(1, Ordering::Release);
//! assert!(!wake::waiter_announced(&word));
//! // A waiter announces itself, and would sleep on `seen` if the data were not there.
//! let seen = wake::announce(&word);
//! assert_eq!(seen, wake::WAITER_BIT);
//! // The next publication finds it: the sequence moves, the bit clears, one wake is due.
//! assert!(wake::waiter_announced(&word) && wake::take_announcement(&word, Ordering::Release));
//! assert_eq!(word.load(Ordering::Relaxed), wake::SEQUENCE_STEP);
//! ```

use crate::sync::{AtomicU32, Ordering, fence};

/// The bit of a futex word that says a waiter announced itself and sleeps, or is about to.
pub const WAITER_BIT: u32 = 1;

/// What a publication that finds a waiter adds to the word: one step of the sequence in bits 1
/// to 31 (wrapping).
pub const SEQUENCE_STEP: u32 = 2;

/// A waiter's announcement: sets [`WAITER_BIT`] and returns the value to sleep on (the word
/// with the bit set). The caller checks its condition once more after this, and sleeps on the
/// returned value only if the condition still fails.
#[inline]
pub fn announce(word: &AtomicU32) -> u32 {
    announce_with(word, Ordering::SeqCst)
}

/// [`announce`], with `order` for the read-modify-write (at least Acquire): AcqRel where the
/// publisher that reads the announcement must also see what the waiter wrote before it (how
/// it sleeps, for a waiter on a readiness descriptor).
#[inline]
pub fn announce_with(word: &AtomicU32, order: Ordering) -> u32 {
    let seen = mark_waiter(word, order);
    after_marking();
    seen
}

/// The first half of an announcement, for a waiter that sleeps on several words at once: sets
/// [`WAITER_BIT`] with `order` (at least Acquire) and returns the value to sleep on. Mark every
/// word, then call [`after_marking`] once, then check the condition.
#[inline]
pub fn mark_waiter(word: &AtomicU32, order: Ordering) -> u32 {
    // R11: Acquire: if a publication's RMW came before this in the word's order, the data it
    // published is visible to the check that follows.
    word.fetch_or(WAITER_BIT, order) | WAITER_BIT
}

/// The second half of an announcement: a SeqCst fence, between the marks and the waiter's
/// check (see the module documentation).
#[inline]
pub fn after_marking() {
    // R11: orders the announcement before the caller's check, against the publisher's fence
    // or SeqCst load.
    fence(Ordering::SeqCst);
}

/// Whether a waiter has announced itself, for a publisher whose publication was a plain store
/// (Release) just before: a SeqCst fence, then a load. `false` is the whole cost of a
/// publication nobody waits for.
#[inline]
pub fn waiter_announced(word: &AtomicU32) -> bool {
    // R11: pairs with the fence of `announce` (store-buffering, settled by the fences' order).
    fence(Ordering::SeqCst);
    word.load(Ordering::Relaxed) & WAITER_BIT != 0
}

/// Whether a waiter has announced itself, for a publisher whose publication was a SeqCst
/// read-modify-write just before (the free list's push): a SeqCst load, which costs nothing
/// more than a plain one on x86.
#[inline]
pub fn waiter_announced_after_rmw(word: &AtomicU32) -> bool {
    loom_seqcst();
    // R11: SeqCst after the SeqCst publication: one of the two SeqCst orders settles it
    // against the waiter's announcement and fence.
    word.load(Ordering::SeqCst) & WAITER_BIT != 0
}

/// After [`waiter_announced`] said yes: moves the sequence on and clears [`WAITER_BIT`] in one
/// read-modify-write with `order` (at least Release: it publishes the caller's data to the
/// waiter that reads the new value). Whether the bit was still set, that is, whether the
/// caller must wake the word's sleepers (`false` when another publisher took the announcement
/// first: its wake is the one).
#[inline]
pub fn take_announcement(word: &AtomicU32, order: Ordering) -> bool {
    word.fetch_update(order, Ordering::Relaxed, |value| {
        (value & WAITER_BIT != 0).then(|| value.wrapping_add(SEQUENCE_STEP) & !WAITER_BIT)
    })
    .is_ok()
}

/// Nothing, except under loom: a SeqCst fence. Loom treats SeqCst loads, stores and
/// read-modify-writes as AcqRel (see its README), so it would not give R11's handshake through
/// [`waiter_announced_after_rmw`] the single total order the real accesses have, and would
/// report lost wakeups that cannot happen. A fence between the publication and the load gives
/// the model that order.
#[inline(always)]
fn loom_seqcst() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_publication_without_a_waiter_writes_nothing() {
        let word = AtomicU32::new(7 * SEQUENCE_STEP);
        assert!(!waiter_announced(&word));
        assert!(!waiter_announced_after_rmw(&word));
        assert_eq!(word.load(Ordering::Relaxed), 7 * SEQUENCE_STEP);
    }

    #[test]
    fn one_announcement_is_taken_once() {
        let word = AtomicU32::new(3 * SEQUENCE_STEP);
        assert_eq!(announce(&word), (3 * SEQUENCE_STEP) | WAITER_BIT);
        assert!(take_announcement(&word, Ordering::Release));
        assert_eq!(word.load(Ordering::Relaxed), 4 * SEQUENCE_STEP);
        // A second publisher that also saw the bit finds it gone: no second wake, no step.
        assert!(!take_announcement(&word, Ordering::Release));
        assert_eq!(word.load(Ordering::Relaxed), 4 * SEQUENCE_STEP);
    }

    #[test]
    fn the_sequence_wraps() {
        let word = AtomicU32::new(u32::MAX - 1);
        let _ = announce(&word);
        assert!(take_announcement(&word, Ordering::Release));
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
