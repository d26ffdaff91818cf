//! A participant's magazine: a few slots per class that it freed and keeps for its next alloc,
//! so that in steady traffic (a frame's slot freed, the next frame's allocated) it touches
//! neither the shared free list nor its journal, and takes no lock.
//!
//! # What a kept slot is
//!
//! A kept slot never leaves its keeper, in shared memory or in private:
//!
//! - **In shared memory it stays Allocated and owned by the keeper.** Keeping is one state CAS,
//!   `(g, Allocated | InFlight) -> (g + 1, Allocated)` (R5), so the handle that was freed is
//!   stale from then on, as after an ordinary free; of two racing frees of one handle exactly
//!   one wins it. No word of the layout changes meaning: to every other participant, to the
//!   host's audit and to reclaim, a kept slot is one its keeper holds, and a keeper that dies
//!   has its kept slots freed by its reclaim like all it held (R10), with no journal.
//! - **In the keeper's ledger (R4) it is *kept*,** at its new generation: not held (no handle
//!   to it is valid, so a free of a forged handle is refused), but the keeper's (so no pop,
//!   accept, reclaim or audit of this process takes, frees or counts it).
//! - **In the magazine** (this module) its index sits in one cell, with where its meta lies
//!   (so that the alloc that takes it clears the kept hint without a lookup). The cell's entry
//!   is the only right to the slot: whoever empties the cell (an alloc of this participant, or
//!   [`Slab::give_back_kept`](crate::Slab::give_back_kept)) turns the ledger's "kept" back
//!   into "held" and has the slot.
//!
//! # When slots are kept, and when given back
//!
//! A participant keeps no more slots of a class than it allocates there: each slot it takes
//! (from the free list, a new extent or a cell) lets one later free keep, and each keep uses
//! that up ([`Magazine::note_alloc`], [`Magazine::note_keep`]). A slot kept by a participant
//! that only frees in the class (a receiver of frames it never sends) would only be withheld:
//! its senders would have to grow the class for it, and a class of few large slots (4 and
//! 16 MiB, 8 and 4 to an extent) would grow by 32 or 64 MiB for each.
//!
//! A class keeps one cell per 16 slots of an extent, at least one and at most [`CELLS`]. A free
//! keeps its slot only when no allocator has announced that it waits for the class (R11),
//! otherwise the slot goes on the list and the waiter is woken; and only when the class's free
//! list is not empty: the class's last free slots go where anyone may take them, since an
//! allocator may wait for one without announcing it (an async task that naps between tries).
//! A participant gives its kept slots back before it sleeps in the hub (hub-transport does so
//! before every futex wait, after a wait slice without a frame, and before it naps for a slot
//! or for room), which also forgets its allocations ([`Magazine::forget_allocs`]), and its
//! reclaim frees them when it leaves or dies. So a participant withholds at most
//! [`CELLS`] slots per class it allocates in (one in a class of fewer than 32 slots an
//! extent), and only while it is busy.

use crate::sync::{AtomicU64, Ordering};
// The magazine's credit only: `std`'s atomic even under loom (see `Magazine::credit`). Loom's
// `Ordering` is `std`'s.
use std::sync::atomic::AtomicU32 as StdAtomicU32;

/// Cells per class, at most.
pub(crate) const CELLS: usize = 4;

/// Slots per extent a class needs for each cell of its magazine.
const SLOTS_PER_CELL: u32 = 16;

/// A cell that names no slot. A cell holds `index + 1` in its low half, so zero never names a
/// slot, and the slot's [`MetaHint`] in its high half.
const EMPTY: u64 = 0;

/// Where a kept slot's meta lies, kept beside its index so that the alloc that takes it needs
/// no lookup: the meta's offset in the region divided by 8 (a meta is 8-aligned), or 0 for
/// none, which the taker answers with a lookup (so a meta at offset 0, which no layout puts
/// there, would merely be looked up). Written and read by this process only, from offsets it
/// computed from its private extent table.
pub(crate) type MetaHint = u32;

/// The [`MetaHint`] of a meta at `offset`: 0 when the offset does not fit one.
pub(crate) fn meta_hint(offset: usize) -> MetaHint {
    if offset.is_multiple_of(8) {
        MetaHint::try_from(offset / 8).unwrap_or(0)
    } else {
        0
    }
}

/// The offset a nonzero [`MetaHint`] gives.
pub(crate) fn hinted_offset(hint: MetaHint) -> usize {
    hint as usize * 8
}

/// The slots one participant keeps for one class.
pub(crate) struct Magazine {
    cells: [AtomicU64; CELLS],
    /// Cells in use: one per [`SLOTS_PER_CELL`] slots of an extent, at least one.
    capacity: usize,
    /// How many slots a free may keep now: one for each slot this participant took in the
    /// class (from the list, a new extent or a cell) that no keep has answered yet, at most
    /// `capacity`; zero again when it gives its kept slots back. So a participant keeps no
    /// more than it allocates: a receiver that allocated in the class once keeps one slot
    /// once, not one for good.
    ///
    /// `std`'s atomic even under loom, the one exception to the `sync` shim: a hint whose
    /// every value is sound (it only picks between keeping and listing, both explored through
    /// the cells and the ledger), which loom would otherwise branch on at every alloc and
    /// free (the three-thread magazine model: 3,254 executions with it untracked, 525,455 and
    /// two minutes tracked; 2,161 before the credit).
    credit: StdAtomicU32,
}

impl Magazine {
    /// A magazine for a class of `slots_per_extent` slots per extent.
    pub(crate) fn for_class(slots_per_extent: u32) -> Self {
        Self {
            cells: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
            capacity: ((slots_per_extent / SLOTS_PER_CELL) as usize).clamp(1, CELLS),
            credit: StdAtomicU32::new(0),
        }
    }

    // The credit is read and written with plain Relaxed loads and stores, no read-modify-write
    // (it is on every alloc and kept free): two threads of the participant may lose one's
    // update, which keeps one slot more or less; the cells and the ledger decide what is kept.

    /// Whether a free may keep its slot here: this participant took a slot of the class that
    /// no keep has answered yet.
    #[inline(always)]
    pub(crate) fn keeps(&self) -> bool {
        self.credit.load(Ordering::Relaxed) > 0
    }

    /// Record that this participant took a slot of the class: one more free may keep.
    #[inline(always)]
    pub(crate) fn note_alloc(&self) {
        let credit = self.credit.load(Ordering::Relaxed);
        if (credit as usize) < self.capacity {
            self.credit.store(credit + 1, Ordering::Relaxed);
        }
    }

    /// Record that a free kept its slot: one fewer may.
    #[inline(always)]
    pub(crate) fn note_keep(&self) {
        let credit = self.credit.load(Ordering::Relaxed);
        self.credit
            .store(credit.saturating_sub(1), Ordering::Relaxed);
    }

    /// Forget every allocation: after the participant gave its kept slots back, its frees keep
    /// nothing until it allocates in the class again.
    #[inline]
    pub(crate) fn forget_allocs(&self) {
        self.credit.store(0, Ordering::Relaxed);
    }

    /// Whether a cell is empty now (a snapshot: another thread of the participant may fill it
    /// before this one's [`put`](Self::put)).
    #[inline(always)]
    pub(crate) fn has_room(&self) -> bool {
        self.cells[..self.capacity]
            .iter()
            .any(|cell| cell.load(Ordering::Relaxed) == EMPTY)
    }

    /// Put slot `index`, whose meta `hint` locates, in an empty cell; `false` when every cell
    /// is full.
    #[inline(always)]
    pub(crate) fn put(&self, index: u32, hint: MetaHint) -> bool {
        let Some(entry) = index.checked_add(1) else {
            return false;
        };
        let entry = u64::from(entry) | u64::from(hint) << 32;
        self.cells[..self.capacity].iter().any(|cell| {
            // Release: the taker of the entry sees what the keeper did before (its ledger's
            // "kept", its state CAS).
            cell.load(Ordering::Relaxed) == EMPTY
                && cell
                    .compare_exchange(EMPTY, entry, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
        })
    }

    /// Take one kept slot's index and meta hint out of its cell, if any cell names one.
    #[inline(always)]
    pub(crate) fn take(&self) -> Option<(u32, MetaHint)> {
        self.cells[..self.capacity].iter().find_map(|cell| {
            if cell.load(Ordering::Relaxed) == EMPTY {
                return None;
            }
            // Acquire: pairs with `put`. A swap, so of two takers of one cell one gets it.
            match cell.swap(EMPTY, Ordering::Acquire) {
                EMPTY => None,
                entry => Some(((entry as u32) - 1, (entry >> 32) as MetaHint)),
            }
        })
    }

    /// How many slots the cells name now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.cells[..self.capacity]
            .iter()
            .filter(|cell| cell.load(Ordering::Relaxed) != EMPTY)
            .count()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_class_of_few_slots_keeps_one_and_only_for_an_allocator() {
        assert_eq!(Magazine::for_class(1).capacity, 1);
        assert_eq!(Magazine::for_class(4).capacity, 1);
        assert_eq!(Magazine::for_class(31).capacity, 1);
        assert_eq!(Magazine::for_class(32).capacity, 2);
        assert_eq!(Magazine::for_class(1024).capacity, CELLS);
        let magazine = Magazine::for_class(4);
        assert!(!magazine.keeps(), "no alloc yet");
        magazine.note_alloc();
        magazine.note_alloc();
        assert!(magazine.keeps());
        magazine.note_keep();
        assert!(!magazine.keeps(), "one cell: one credit, used up");
    }

    #[test]
    fn a_participant_keeps_as_many_as_it_allocated_and_forgets_them_when_it_gives_back() {
        let magazine = Magazine::for_class(64); // four cells
        for _ in 0..2 {
            magazine.note_alloc();
        }
        magazine.note_keep();
        assert!(magazine.keeps());
        magazine.note_keep();
        assert!(!magazine.keeps(), "two allocs, two keeps");
        magazine.note_keep();
        assert!(!magazine.keeps(), "never below zero");
        for _ in 0..9 {
            magazine.note_alloc();
        }
        for _ in 0..CELLS {
            assert!(magazine.keeps());
            magazine.note_keep();
        }
        assert!(!magazine.keeps(), "at most a cell's worth of credit each");
        magazine.note_alloc();
        magazine.forget_allocs();
        assert!(!magazine.keeps());
    }

    #[test]
    fn slots_come_back_as_they_were_put_until_the_cells_are_full() {
        let magazine = Magazine::for_class(1024);
        for index in 0..CELLS as u32 {
            assert!(magazine.put(index * 7, index + 100));
        }
        assert!(!magazine.put(99, 1), "every cell is full");
        assert_eq!(magazine.len(), CELLS);
        let mut taken: Vec<_> = std::iter::from_fn(|| magazine.take()).collect();
        taken.sort_unstable();
        let expected: Vec<_> = (0..CELLS as u32).map(|i| (i * 7, i + 100)).collect();
        assert_eq!(taken, expected);
        assert_eq!(magazine.len(), 0);
        assert_eq!(magazine.take(), None);
    }

    #[test]
    fn meta_hints_give_back_their_offsets_or_say_none() {
        assert_eq!(hinted_offset(meta_hint(4096 + 16)), 4096 + 16);
        let largest = u32::MAX as usize * 8;
        assert_eq!(hinted_offset(meta_hint(largest)), largest);
        assert_eq!(meta_hint(largest + 8), 0, "too far for a hint");
        assert_eq!(meta_hint(4100), 0, "not 8-aligned: no hint");
    }

    #[test]
    fn extreme_indices() {
        let magazine = Magazine::for_class(64);
        assert!(magazine.put(0, 0));
        assert!(magazine.put(u32::MAX - 1, MetaHint::MAX));
        assert!(
            !magazine.put(u32::MAX, 1),
            "no cell value names it: refused"
        );
        let mut taken: Vec<_> = std::iter::from_fn(|| magazine.take()).collect();
        taken.sort_unstable();
        assert_eq!(taken, vec![(0, 0), (u32::MAX - 1, MetaHint::MAX)]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two threads of one participant keep and take slots at once: every slot put is taken
    /// exactly once, none is lost or handed out twice.
    #[test]
    fn concurrent_puts_and_takes_lose_and_duplicate_nothing() {
        loom::model(|| {
            let magazine = Arc::new(Magazine::for_class(32)); // two cells
            assert!(magazine.put(1, 10));
            let other = {
                let magazine = Arc::clone(&magazine);
                thread::spawn(move || {
                    let taken = magazine.take();
                    let kept = magazine.put(2, 20);
                    (taken, kept)
                })
            };
            let mine = magazine.take();
            let (theirs, kept) = other.join().unwrap();
            assert!(kept, "two cells, at most two slots: room for the second");
            let mut all: Vec<_> = [mine, theirs].into_iter().flatten().collect();
            all.extend(std::iter::from_fn(|| magazine.take()));
            all.sort_unstable();
            assert_eq!(all, vec![(1, 10), (2, 20)]);
        });
    }
}
