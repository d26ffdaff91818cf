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
/// A cell's value while its slot is kept (see [`crate::magazine`]): the generation the slot
/// will be handed out at, with a bit that tells it from a held cell. A kept slot is no
/// handle's: it is this participant's, Allocated in shared memory, and free for its next alloc.
/// Only one thread at a time writes a kept cell other than by a compare-and-swap from another
/// value: the free that made it so, or the taker of its magazine entry.
const KEPT: u64 = 1 << 33;

/// What a ledger cell says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    /// The slot is not this participant's.
    Empty,
    /// Held at this generation.
    Held(u32),
    /// Kept, to be handed out at this generation (or being freed by one thread).
    Kept(u32),
}

impl Cell {
    fn of(value: u64) -> Self {
        if value & HELD != 0 {
            Self::Held(value as u32)
        } else if value & KEPT != 0 {
            Self::Kept(value as u32)
        } else {
            Self::Empty
        }
    }
}

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

    #[inline]
    fn cell(&self, class: u16, index: u32) -> Option<&AtomicU64> {
        self.cells.get(usize::from(class))?.get(index as usize)
    }

    /// Record that this participant holds `handle`'s slot. `false` when it holds that slot
    /// already (at any generation) or the handle names no slot: the claim is refused.
    #[inline]
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
    #[inline]
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

    /// Start freeing or keeping `handle`'s slot, to be handed out next at generation `next`
    /// (see [`crate::magazine`]): held at the handle's generation -> kept, by
    /// compare-and-swap, so of two threads of this participant freeing one handle exactly one
    /// goes on. Otherwise what the cell says.
    #[inline]
    pub fn begin_keep(&self, handle: SlotHandle, next: u32) -> Result<(), Cell> {
        let Some(cell) = self.cell(handle.class(), handle.index()) else {
            return Err(Cell::Empty);
        };
        // Acquire: pairs with the claim's; Release: with the taker's `unkeep`.
        match cell.compare_exchange(
            HELD | u64::from(handle.generation()),
            KEPT | u64::from(next),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(value) => Err(Cell::of(value)),
        }
    }

    /// Empty the cell of slot `index` of `class`, for the thread that owns it since its
    /// [`begin_keep`](Self::begin_keep): the slot is out of this participant's hands.
    #[inline]
    pub fn forget(&self, class: u16, index: u32) {
        if let Some(cell) = self.cell(class, index) {
            // Release: the next claim of the slot in this process (AcqRel) sees this free.
            cell.store(0, Ordering::Release);
        }
    }

    /// Turn the kept slot `index` of `class` back into a held one, for the taker of its
    /// magazine entry (the entry's only owner, see [`crate::magazine`]): its handle, or `None`
    /// when the cell does not say "kept" (an entry of a slot given back since).
    #[inline]
    pub fn unkeep(&self, class: u16, index: u32) -> Option<SlotHandle> {
        let cell = self.cell(class, index)?;
        // Acquire: pairs with `begin_keep`, through the magazine cell's Release and Acquire.
        let value = cell.load(Ordering::Acquire);
        if value & KEPT == 0 {
            return None;
        }
        let generation = value as u32;
        // Relaxed: the cell is this thread's, as the entry's taker (see `KEPT`).
        cell.store(HELD | u64::from(generation), Ordering::Relaxed);
        Some(SlotHandle::from_parts(class, index, generation))
    }

    /// What the cell of slot `index` of `class` says (`Empty` for a slot the ledger has no
    /// cell for): one load, for a caller that needs more than one of the answers below.
    #[inline]
    pub fn look(&self, class: u16, index: u32) -> Cell {
        // Acquire: as `held`.
        self.cell(class, index)
            .map_or(Cell::Empty, |cell| Cell::of(cell.load(Ordering::Acquire)))
    }

    /// The generation at which this participant keeps slot `index` of `class`, if it does.
    #[inline]
    pub fn kept(&self, class: u16, index: u32) -> Option<u32> {
        let value = self.cell(class, index)?.load(Ordering::Acquire);
        (value & KEPT != 0).then_some(value as u32)
    }

    /// The generation at which this participant holds slot `index` of `class`, if it does (a
    /// kept slot is not held: no handle to it is valid).
    #[inline]
    pub fn held(&self, class: u16, index: u32) -> Option<u32> {
        // Acquire: pairs with the claim's AcqRel, for a scan on another thread of this process.
        let value = self.cell(class, index)?.load(Ordering::Acquire);
        (value & HELD != 0).then_some(value as u32)
    }

    /// Whether this participant holds or keeps slot `index` of `class`, at any generation:
    /// either way the slot is its own, and nobody else's to free, chain or count as lost.
    #[inline]
    pub fn holds(&self, class: u16, index: u32) -> bool {
        self.cell(class, index)
            .is_some_and(|cell| cell.load(Ordering::Acquire) != 0)
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
                .filter(|cell| cell.load(Ordering::Relaxed) & HELD != 0)
                .count() as u32
        })
    }
}
