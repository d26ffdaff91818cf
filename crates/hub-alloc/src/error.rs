//! What can go wrong, typed.

use crate::layout::OwnerId;
use crate::region::GrowError;

/// What the allocator found wrong in shared state that only a faulty participant could have
/// written (R3). The allocator stops the operation that found it and touches nothing outside the
/// region; [`Slab::rebuild_free_list`](crate::Slab::rebuild_free_list) repairs a class's free
/// list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The free-list head names a global index outside the class's published extents.
    #[error("free_head names index {index:#x}, outside the class")]
    FreeHead {
        /// The index found.
        index: u32,
    },
    /// A slot on the free list names a successor outside the class.
    #[error("next_free of slot {index:#x} names {next:#x}, outside the class")]
    NextFree {
        /// The slot whose link is bad.
        index: u32,
        /// The successor it names.
        next: u32,
    },
    /// A slot popped from the free list was not free: the list and the slot states disagree
    /// (a cycle, or a scribbled state). The slot is left off the list.
    #[error("slot {index:#x} was on the free list in state {state}")]
    PoppedNotFree {
        /// The slot.
        index: u32,
        /// The raw state word found.
        state: u32,
    },
    /// A slot's state word holds a value that is no `SlotState`.
    #[error("slot {index:#x} has state word {state}, which is no slot state")]
    BadState {
        /// The slot.
        index: u32,
        /// The raw state word.
        state: u32,
    },
    /// A published extent offset is not 64-aligned, overlaps the fixed part of the layout,
    /// reaches past the reservation, or lies past the end of the backing.
    #[error("extent {extent} is published at offset {offset:#x}, which is not a valid extent")]
    ExtentOffset {
        /// Extent number within the class.
        extent: u32,
        /// The offset found.
        offset: u64,
    },
    /// `current_size` is below the extent region, misaligned or above the reservation.
    #[error("current_size is {value:#x}, which no growth can have written")]
    CurrentSize {
        /// The value found.
        value: u64,
    },
    /// A walk of the free list ran longer than the class has slots: the list has a cycle.
    #[error("the free list is longer than the class ({limit} slots): it has a cycle")]
    Cycle {
        /// Slots in the class.
        limit: u32,
    },
    /// An operation journal names a slot reference that decodes to no slot of this allocator.
    #[error("the journal of {owner} names slot reference {slot_ref:#x}, which is no slot")]
    Journal {
        /// Whose journal.
        owner: OwnerId,
        /// The value found.
        slot_ref: u32,
    },
    /// A class header's fixed fields differ from the configuration (`slot_size`,
    /// `slots_per_extent`, `extent_slot_shift`).
    #[error("the header of this class says {field} = {found}, the configuration {expected}")]
    ClassHeader {
        /// Which field.
        field: &'static str,
        /// Value in shared memory.
        found: u32,
        /// Value of the private configuration.
        expected: u32,
    },
}

/// Errors of [`Slab`](crate::Slab) operations. Each variant says when it happens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlabError {
    /// `alloc(len)` with `len` above the largest slot size.
    #[error("payload of {len} bytes is larger than the largest slot ({max} bytes)")]
    PayloadTooLarge {
        /// Bytes asked for.
        len: usize,
        /// The largest slot size.
        max: usize,
    },
    /// Every class that fits is empty and the fitting class cannot grow (it has all its
    /// extents, or the reservation is used up).
    #[error("no free slot of class {class} or larger, and class {class} cannot grow")]
    NoFreeSlots {
        /// The smallest class that fits the request.
        class: u16,
    },
    /// The region refused to grow for a new extent.
    #[error("the region could not grow for a new extent: {0}")]
    Grow(#[from] GrowError),
    /// A handle or slot reference names a class or index this allocator does not have.
    #[error("no slot of class {class} at index {index:#x}")]
    BadHandle {
        /// Class of the handle.
        class: u16,
        /// Global index of the handle.
        index: u32,
    },
    /// The handle's generation is not the slot's: the slot was freed (and perhaps reused) since
    /// the handle was made (R5).
    #[error("stale handle: generation {handle} but the slot is at {slot}")]
    StaleHandle {
        /// Generation in the handle.
        handle: u32,
        /// Generation of the slot.
        slot: u32,
    },
    /// `free` of a handle whose slot was already freed by this very handle: the slot is free
    /// and its generation is the handle's plus one.
    #[error("double free of slot {index:#x} of class {class}")]
    DoubleFree {
        /// Class.
        class: u16,
        /// Global index.
        index: u32,
    },
    /// The slot is not in the state the transition starts from (for example `mark_in_flight`
    /// of a slot already in flight, or `free` of a free slot of the current generation).
    #[error("slot {index:#x} of class {class} is {found}, not {expected}")]
    WrongState {
        /// Class.
        class: u16,
        /// Global index.
        index: u32,
        /// The state the transition needs.
        expected: &'static str,
        /// The state found.
        found: &'static str,
    },
    /// An owner id at or above the allocator's `max_peers` (and not the host).
    #[error("{0} cannot own slots of this allocator")]
    UnknownOwner(OwnerId),
    /// A free list stayed held by a reclaim or rebuild (of the host) for over a second: the
    /// holder is probably dead.
    #[error("the free list of class {class} has been held for over a second")]
    ListHeld {
        /// Class.
        class: u16,
    },
    /// Shared state of class `class` was found corrupted.
    #[error("class {class}: {corruption}")]
    Corrupt {
        /// The class whose state is bad.
        class: u16,
        /// What is wrong.
        corruption: Corruption,
    },
    /// The region is smaller than the layout's initial size, or its reservation smaller than
    /// the layout's largest size.
    #[error("the region ({len} bytes, reserving {reservation}) cannot hold the layout ({needed})")]
    RegionTooSmall {
        /// Bytes the layout needs.
        needed: usize,
        /// Usable bytes of the region.
        len: usize,
        /// Reservation of the region.
        reservation: usize,
    },
    /// This participant holds the slot (its private ledger says so, R4): a scan that found it
    /// through shared words another process may have written (an owner, a state) does not free
    /// it.
    #[error("slot {index:#x} of class {class} is held by this participant")]
    Held {
        /// Class.
        class: u16,
        /// Global index.
        index: u32,
    },
    /// A [`SlabLayout::standalone`](crate::SlabLayout::standalone) configuration that cannot
    /// be laid out.
    #[error("bad allocator configuration: {0}")]
    BadConfig(String),
}

/// Why [`Slab::accept`](crate::Slab::accept) refused a slot another participant says it sent
/// (R3, R4). The slot is left as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The class and index name no slot of a published extent.
    #[error("no such slot")]
    NoSuchSlot,
    /// The slot's generation is not the one named: it was freed since (R5).
    #[error("stale generation (the slot is at {slot})")]
    StaleGeneration {
        /// Generation of the slot.
        slot: u32,
    },
    /// The slot is not in flight to this participant.
    #[error("the slot is not in flight to the receiver (state {state:?}, owner {owner:#x})")]
    NotInFlightToMe {
        /// The slot's state (`None`: garbage).
        state: Option<hub_layout::SlotState>,
        /// The slot's owner word.
        owner: u32,
    },
    /// The slot is in flight to this participant from another sender than the one named.
    #[error("the slot was sent by {sender:?}")]
    WrongSender {
        /// The sender the slot records.
        sender: Option<OwnerId>,
    },
    /// This participant holds the slot already (at any generation): a frame it took before,
    /// or a loan (R4: one holder per slot in a process).
    #[error("the slot is already held by this participant")]
    AlreadyHeld,
}
