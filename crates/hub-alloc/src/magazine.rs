//! A participant's magazine: a few free slots per class that it keeps for itself, so that in
//! steady traffic (a slot freed, another allocated) it neither pushes nor pops the shared free
//! list, whose head would otherwise cross between the processes on every frame.
//!
//! # What a kept slot is, in shared memory
//!
//! A slot in a magazine is **Free, off the free list, and owned by its keeper** (`owner_peer`
//! names the keeper, where a slot on the list names nobody). Nothing else changes in the
//! layout:
//!
//! - *Keeping* a slot is the ordinary free's state CAS, `(g, Allocated | InFlight) -> (g + 1,
//!   Free)` (R5), with the owner left as it was, the keeper (the allocator of an Allocated slot,
//!   the receiver of one in flight, R6), and no push. A keeper that dies at any point leaves a
//!   slot that is Allocated or InFlight and its own, or Free and its own: reclaim finds both.
//! - *Taking* a kept slot back is the pop's state CAS, `(g, Free) -> (g, Allocated)`: of the
//!   keeper's take and anybody else's claim on the slot (the host's reclaim of a participant
//!   that left or was evicted, or a pop after a forged push), exactly one wins, as of two pops.
//! - The host's audit and rebuild leave Free slots that name an owner alone: they are a
//!   keeper's, not lost. Reclaim of a participant takes its kept slots back to the list.
//!
//! # The cells
//!
//! This module holds the private half: per class, a few cells in this process's memory, each
//! empty or naming one kept slot (index and generation). A cell is taken whole by one
//! compare-and-swap, so threads of one participant keep and take slots without a lock, and no
//! two of them take the same entry.

use crate::sync::{AtomicU64, Ordering};

/// Cells per class, at most.
pub(crate) const CELLS: usize = 4;

/// A cell that names no slot.
const EMPTY: u64 = u64::MAX;

/// The slots one participant keeps for one class.
pub(crate) struct Magazine {
    cells: [AtomicU64; CELLS],
    /// Cells in use: fewer for classes with few slots, none for the smallest ones, so that no
    /// participant keeps what another may be waiting for.
    capacity: usize,
}

impl Magazine {
    /// A magazine for a class of `slots_per_extent` slots per extent: one cell per 16 of them,
    /// at most [`CELLS`].
    pub(crate) fn for_class(slots_per_extent: u32) -> Self {
        Self {
            cells: std::array::from_fn(|_| AtomicU64::new(EMPTY)),
            capacity: (slots_per_extent as usize / 16).min(CELLS),
        }
    }

    /// Whether this class keeps slots at all.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Put slot `index` at `generation` in an empty cell; `false` when every cell is full.
    #[inline]
    pub(crate) fn put(&self, index: u32, generation: u32) -> bool {
        let entry = pack(index, generation);
        self.cells[..self.capacity].iter().any(|cell| {
            // Release: the thread that takes the entry sees what the keeper did before (its
            // state CAS, its ledger release).
            cell.load(Ordering::Relaxed) == EMPTY
                && cell
                    .compare_exchange(EMPTY, entry, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
        })
    }

    /// Take one kept slot's `(index, generation)`, if any.
    #[inline]
    pub(crate) fn take(&self) -> Option<(u32, u32)> {
        self.cells[..self.capacity].iter().find_map(|cell| {
            let entry = cell.load(Ordering::Relaxed);
            // Acquire: pairs with `put`.
            (entry != EMPTY
                && cell
                    .compare_exchange(entry, EMPTY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok())
            .then(|| unpack(entry))
        })
    }

    /// Whether a cell names slot `index` at `generation` now (a snapshot).
    pub(crate) fn contains(&self, index: u32, generation: u32) -> bool {
        let entry = pack(index, generation);
        self.cells[..self.capacity]
            .iter()
            .any(|cell| cell.load(Ordering::Relaxed) == entry)
    }

    /// How many slots the cells name now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        self.cells[..self.capacity]
            .iter()
            .filter(|cell| cell.load(Ordering::Relaxed) != EMPTY)
            .count()
    }
}

/// Index in the low half, generation in the high half. `EMPTY` is never an entry: a class has
/// fewer than `u32::MAX` slots.
fn pack(index: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(index)
}

fn unpack(entry: u64) -> (u32, u32) {
    (entry as u32, (entry >> 32) as u32)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_class_of_few_slots_keeps_none() {
        assert!(!Magazine::for_class(8).enabled());
        assert!(!Magazine::for_class(15).enabled());
        assert!(Magazine::for_class(32).enabled());
    }

    #[test]
    fn slots_come_back_as_they_were_put_until_the_cells_are_full() {
        let magazine = Magazine::for_class(1024);
        for index in 0..CELLS as u32 {
            assert!(magazine.put(index, 7 + index));
        }
        assert!(!magazine.put(99, 1), "every cell is full");
        assert_eq!(magazine.len(), CELLS);
        let mut taken: Vec<_> = std::iter::from_fn(|| magazine.take()).collect();
        taken.sort_unstable();
        let expected: Vec<_> = (0..CELLS as u32).map(|i| (i, 7 + i)).collect();
        assert_eq!(taken, expected);
        assert_eq!(magazine.len(), 0);
    }

    #[test]
    fn extreme_indices_and_generations_round_trip() {
        let magazine = Magazine::for_class(64);
        assert!(magazine.put(u32::MAX - 1, u32::MAX));
        assert_eq!(magazine.take(), Some((u32::MAX - 1, u32::MAX)));
        assert_eq!(magazine.take(), None);
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
