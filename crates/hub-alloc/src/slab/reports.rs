//! What the slab's operations report: a freed slot, a slot's status, a class's counts, and
//! the outcomes of reclaim, rebuild and audit.

use super::*;

/// The outcome of a successful [`Slab::free`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "when `wake_waiters` is set, an allocator may be asleep on the class's futex word"]
pub struct Freed {
    /// Class of the freed slot.
    pub class: u16,
    /// An allocator announced that it sleeps on the class's `slot_available_futex`; the free
    /// bumped the word's sequence, and the caller should make the `FUTEX_WAKE` system call on
    /// [`Slab::slot_available_word`] (hub-transport does).
    pub wake_waiters: bool,
}

/// What a slot's meta says, copied once (R3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotStatus {
    /// Current generation.
    pub generation: u32,
    /// The state, or `None` when the state word holds garbage.
    pub state: Option<SlotState>,
    /// The raw owner word: an [`OwnerId`] value or `NO_OWNER`.
    pub owner: u32,
    /// For a slot in flight, who marked it so: the sender, recorded by
    /// [`Slab::mark_in_flight`]. `None` in other states, or when the word is no owner.
    pub sender: Option<OwnerId>,
}

/// Per-class counts of [`Slab::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassStats {
    /// Bytes per slot.
    pub slot_size: u32,
    /// Published extents.
    pub extents: u32,
    /// Slots in the published extents.
    pub total: u32,
    /// Slots whose state is Free, and the slots this handle keeps ([`kept`](Self::kept)).
    pub free: u32,
    /// Of [`free`](Self::free), the slots their owners keep for their own next alloc
    /// ([`Slab::kept_count`]): Allocated in shared memory, and marked so there (a hint, see
    /// [`hub_layout::KEPT_SLOT_MARK`]) except for this handle's own, which
    /// its private ledger names.
    pub kept: u32,
    /// Slots whose state is Allocated, but for the kept ones.
    pub allocated: u32,
    /// Slots whose state is InFlight.
    pub in_flight: u32,
    /// Slots whose state word is no state (corruption).
    pub corrupt: u32,
    /// `total_slots` as the class header says.
    pub header_total: u32,
}

/// What [`Slab::reclaim`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReclaimReport {
    /// Slots freed per class: the owner's allocated and in-flight slots, but for the kept ones.
    pub freed: Vec<u32>,
    /// Slots freed that the owner kept for its own next alloc (see [`Slab::kept_count`]), as
    /// their [hint](hub_layout::KEPT_SLOT_MARK) said: free for every purpose already, so not
    /// counted in `freed`.
    pub kept: u32,
    /// A slot the owner had popped or freed but not yet recorded, put back on its list.
    pub recovered_from_journal: bool,
    /// The journal named a slot another participant is still busy with; it was left for a
    /// later reclaim, which the caller should run again.
    pub journal_pending: bool,
    /// Some free woke an allocator asleep on a class's futex word: see [`Freed`].
    pub wake_waiters: bool,
}

impl ReclaimReport {
    /// Slots freed in all classes, the journal's included.
    pub fn total(&self) -> u32 {
        self.freed.iter().sum::<u32>() + u32::from(self.recovered_from_journal)
    }
}

/// What [`Slab::rebuild_free_list`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildReport {
    /// Free slots the rebuild put on the list.
    pub free: u32,
    /// Slots left off the list because their state word is garbage.
    pub quarantined: u32,
    /// Free slots left off the list because a journal kept naming them: a participant that
    /// died in the middle of taking or freeing one (its reclaim puts it back), or one that is
    /// still busy with it. A later rebuild looks at them again.
    pub pending: u32,
    /// The rebuild put slots on the list and an allocator may be asleep: see [`Freed`].
    pub wake_waiters: bool,
}

/// What [`Slab::audit`] saw of one class: evidence of damage a faulty participant did to the
/// class's shared state, and nothing that a busy but healthy class shows.
///
/// A look is *settled* when the free-list head (with its tag, which every pop, push and hold
/// changes, R7) is the same before and after it: no list operation completed meanwhile, so the
/// walk saw one consistent list. Only a settled look judges the list; a busy class is looked
/// at again later.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassAudit {
    /// The tagged free-list head at the start of the look (R7: index and tag, as stored).
    pub head: u64,
    /// The head did not change during the look.
    pub settled: bool,
    /// The list was held (a hold in progress, or a marker left by a faulty or dead process).
    pub held: bool,
    /// What is wrong with the list, seen on a settled look: a head or link outside the class, a
    /// cycle, or a listed slot that is not Free. [`Slab::rebuild_free_list`] repairs it.
    pub list_fault: Option<Corruption>,
    /// Slots whose state word is no state (they are left off any rebuilt list: quarantined).
    pub bad_states: u32,
    /// Free slots that are neither on the settled list nor named by a journal, with their
    /// generation: `(global index, generation)`. A free between its state change and its push
    /// is named by its journal and does not show; a slot a rebuild left to look at again after
    /// its hold can, for a moment. The same slot at the same generation in two looks far apart
    /// is lost, and a rebuild brings it back.
    pub off_list: Vec<(u32, u32)>,
}

impl ClassAudit {
    /// Whether the list itself needs a rebuild, on this look alone.
    pub fn list_broken(&self) -> bool {
        self.list_fault.is_some()
    }
}

/// A slot [`Slab::orphans`] found that no live participant can hold, as it was when found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Orphan {
    /// Class.
    pub class: u16,
    /// Global index.
    pub index: u32,
    /// Its `(generation, state)` word as read (R5: generation low, state high).
    pub word: u64,
    /// Its owner word as read.
    pub owner: u32,
}
