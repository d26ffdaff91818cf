//! A participant's private truth about the slots it holds (R4).
//!
//! Shared slot metas are messages from other processes, not the truth: any peer can write any
//! of them. So each [`Slab`](crate::Slab) handle keeps, in its own process's memory, a ledger of
//! every slot it holds (the slots it allocated and has not sent or freed, and the slots it took
//! from a receive and has not freed), by class, global index and generation. Whatever the shared
//! words say:
//!
//! - a slot the ledger holds is never handed out again by this participant: a pop that finds
//!   one on the free list (a forged free put it there) leaves it off the list and pops the next;
//! - a slot is taken into the ledger by a compare-and-swap from empty, so of two claims of one
//!   slot in this process (a pop and a receive, or two receives of one slot) exactly one wins;
//! - reclaim, rebuild, the audit and recovery scans never free, chain or count as lost a slot
//!   the ledger holds.
//!
//! The ledger lives on the heap of the process that owns the handle; no other process can reach
//! it.

use crate::layout::SlabLayout;
use crate::slab::SlotHandle;
use crate::sync::{AtomicU64, Ordering};

/// A cell's value while its slot is held: the generation, with a bit that tells it from the
/// empty cell whatever the generation.
const HELD: u64 = 1 << 32;

/// The private record of the slots one participant holds: one cell per slot of every extent a
/// class may ever have (R8), so growth needs no new memory here.
pub(crate) struct Ledger {
    /// Per class, per global index: `HELD | generation`, or 0 when the slot is not held.
    cells: Vec<Box<[AtomicU64]>>,
}

impl Ledger {
    /// An empty ledger for `layout`.
    pub fn new(layout: &SlabLayout) -> Self {
        let cells = layout
            .classes
            .iter()
            .map(|class| {
                let slots = class.slots_per_extent as usize * layout.max_extents as usize;
                (0..slots).map(|_| AtomicU64::new(0)).collect()
            })
            .collect();
        Self { cells }
    }

    fn cell(&self, class: u16, index: u32) -> Option<&AtomicU64> {
        self.cells.get(usize::from(class))?.get(index as usize)
    }

    /// Record that this participant holds `handle`'s slot. `false` when it holds that slot
    /// already (at any generation) or the handle names no slot: the claim is refused.
    pub fn claim(&self, handle: SlotHandle) -> bool {
        // AcqRel: the winner of a slot's cell sees what the previous holder in this process did
        // before its release; the loser learns only that it lost.
        self.cell(handle.class(), handle.index())
            .is_some_and(|cell| {
                cell.compare_exchange(
                    0,
                    HELD | u64::from(handle.generation()),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            })
    }

    /// Forget `handle`'s slot, if the ledger holds it at the handle's generation; whether it
    /// did.
    pub fn release(&self, handle: SlotHandle) -> bool {
        self.cell(handle.class(), handle.index())
            .is_some_and(|cell| {
                cell.compare_exchange(
                    HELD | u64::from(handle.generation()),
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            })
    }

    /// The generation at which this participant holds slot `index` of `class`, if it does.
    pub fn held(&self, class: u16, index: u32) -> Option<u32> {
        // Acquire: pairs with the claim's AcqRel, for a scan on another thread of this process.
        let value = self.cell(class, index)?.load(Ordering::Acquire);
        (value & HELD != 0).then_some(value as u32)
    }

    /// Whether this participant holds slot `index` of `class`, at any generation.
    pub fn holds(&self, class: u16, index: u32) -> bool {
        self.held(class, index).is_some()
    }

    /// Whether this participant holds exactly `handle` (its slot at its generation).
    pub fn holds_handle(&self, handle: SlotHandle) -> bool {
        self.held(handle.class(), handle.index()) == Some(handle.generation())
    }

    /// How many slots of `class` the ledger holds.
    pub fn count(&self, class: u16) -> u32 {
        self.cells.get(usize::from(class)).map_or(0, |cells| {
            cells
                .iter()
                .filter(|cell| cell.load(Ordering::Relaxed) != 0)
                .count() as u32
        })
    }
}
