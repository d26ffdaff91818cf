//! The allocator: size classes of slots, each class a tagged Treiber stack of free slots over
//! extents that grow without remapping.
//!
//! # Shared state and who writes it
//!
//! Per class, a [`SizeClassHeader`]: `free_head` (the stack, R7), `extent_offsets` (published
//! once each, R8), `total_slots`, `slot_available_futex`. Per slot, a meta: `(generation, state)`
//! as one 64-bit word (R5), `next_free`, `owner_peer` (R6). Per segment, `current_size` (the end
//! of the last reserved extent) and `extent_count`. Per participant, a journal word.
//!
//! # The journal: no window in which a crash leaks a slot (R5)
//!
//! Popping a slot and recording its owner are two writes to two words; so are freeing a slot
//! and pushing it. A process can die between them, leaving a slot that is free, off the list,
//! and owned by nobody. Before either operation a participant writes the slot's reference into
//! its own journal word, and clears it when the slot is accounted for again (recorded as its
//! own, or back on the list). [`Slab::reclaim`] of a dead participant reads its journal: if the
//! slot named there is free, not on the free list, and no other participant's journal names it,
//! the dead one lost it, and reclaim puts it back. To look at the list without racing anyone it
//! *holds* it: it swaps the head for a marker that makes every other pop and push wait (a few
//! microseconds, only in the recovery of a process that died in that window).
//!
//! Growth has no such window: a new extent's slots are created allocated and owned by the
//! grower, and the grower frees them one by one after publishing the extent, so a grower that
//! dies halfway leaves slots its reclaim finds.

use core::mem::size_of;
use core::ptr::NonNull;

use crossbeam_utils::Backoff;
use hub_layout::{
    ExtentHeader, FREE_LIST_END, KEPT_SLOT_MARK, NO_OWNER, SizeClassHeader, SlotState,
    encode_slot_ref, pack_free_head, try_decode_slot_ref, unpack_free_head,
};

use crate::error::{Corruption, Refusal, SlabError};
use crate::layout::{OwnerId, SlabLayout};
use crate::ledger::{Cell, Ledger};
use crate::magazine::Magazine;
use crate::region::Region;
use crate::shared::{ClassHeader, Shared, SlotMeta, join, split};
use crate::sync::{AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering, lock};

const FREE: u32 = SlotState::Free as u32;
const ALLOCATED: u32 = SlotState::Allocated as u32;
const IN_FLIGHT: u32 = SlotState::InFlight as u32;

/// The `free_head` index that says "held by a reclaim or rebuild of the host; wait". Above
/// every global index, distinct from `FREE_LIST_END`.
const LIST_HELD: u32 = FREE_LIST_END - 1;

/// A journal word that names no slot. A journal holds `slot_ref + 1`, so zeroed memory is an
/// empty journal.
const JOURNAL_EMPTY: u32 = 0;

/// A journal value that names no slot either (never `slot_ref + 1`: slot references of the five
/// classes stay below `0xa000_0000`): what a journal taken but not yet named held in earlier
/// versions, where the shared word was also the owner's lock.
const JOURNAL_BUSY: u32 = u32::MAX;

/// The bit of `slot_available_futex` that says an allocator may be asleep on it, and the step
/// of its sequence: the same encoding as hub-transport's doorbells (R11).
pub const WAITER_BIT: u32 = 1;
/// See [`WAITER_BIT`].
pub const SEQUENCE_STEP: u32 = 2;

/// How often reclaim looks again at a journaled slot another participant is in the middle of
/// taking or freeing, before it leaves the journal for a later reclaim.
#[cfg(not(loom))]
const RESOLVE_ATTEMPTS: u32 = 64;
/// Under loom, few: a model explores a schedule in which the other participant never gets
/// through, and every attempt multiplies the branches of that execution.
#[cfg(loom)]
const RESOLVE_ATTEMPTS: u32 = 3;

/// A slot held by its allocator: class, global index and generation (R5, R7).
///
/// A handle says which slot and which life of it: every transition checks the generation, so a
/// handle kept after its slot was freed fails with [`SlabError::StaleHandle`] instead of touching
/// the slot's next life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotHandle {
    class: u16,
    index: u32,
    generation: u32,
}

impl SlotHandle {
    /// A handle from its parts; the allocator checks them when the handle is used.
    pub const fn from_parts(class: u16, index: u32, generation: u32) -> Self {
        Self {
            class,
            index,
            generation,
        }
    }

    /// The handle a descriptor's `slot_ref` and `slot_generation` name.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when the reference names a class beyond the seed's.
    pub fn from_slot_ref(slot_ref: u32, generation: u32) -> Result<Self, SlabError> {
        let (class, index) = try_decode_slot_ref(slot_ref).map_err(|_| SlabError::BadHandle {
            class: (slot_ref >> 29) as u16,
            index: slot_ref & ((1 << 29) - 1),
        })?;
        Ok(Self::from_parts(class, index, generation))
    }

    /// Size class.
    pub const fn class(&self) -> u16 {
        self.class
    }

    /// Global index within the class: `extent << extent_slot_shift | slot`.
    pub const fn index(&self) -> u32 {
        self.index
    }

    /// Generation of the slot when the handle was made.
    pub const fn generation(&self) -> u32 {
        self.generation
    }

    /// The slot reference a descriptor carries (class in the top three bits).
    pub fn slot_ref(&self) -> u32 {
        encode_slot_ref(self.class, self.index)
    }
}

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
    /// [`KEPT_SLOT_MARK`](hub_layout::KEPT_SLOT_MARK)) except for this handle's own, which
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

/// An extent list's private copies (R3): validated extent offsets, 0 until first seen.
struct ClassCache {
    extents: Vec<AtomicU64>,
    /// Under loom, one tracked cell per 64 bytes of the region: growth writes the cell of an
    /// extent's start once it has initialised the extent, and every use of an extent reads it,
    /// so loom reports a use that R8's publication does not order after the initialisation.
    #[cfg(loom)]
    initialised: Vec<loom::cell::UnsafeCell<()>>,
}

impl ClassCache {
    /// Under loom, a use of the extent at `offset`: see `initialised`.
    #[inline(always)]
    fn touch(&self, offset: usize) {
        #[cfg(loom)]
        if let Some(cell) = self.initialised.get(offset / 64) {
            cell.with(|_| ());
        }
        #[cfg(not(loom))]
        let _ = offset;
    }
}

/// A participant's handle on the allocator of a region.
///
/// Every participant (the host and each peer, in its own process or as a thread in a test)
/// holds its own `Slab` over the same region, naming itself as the owner of what it allocates.
/// The type is `Send + Sync`; all operations take `&self`. Across processes they are
/// lock-free, except that a pop or push waits while the host holds a class's list during
/// [`reclaim`](Self::reclaim) or [`rebuild_free_list`](Self::rebuild_free_list); within one
/// owner, its threads take turns over a pop's or free's few-instruction window under a private
/// mutex (the journal's, R5).
///
/// ```
/// use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
/// use std::sync::Arc;
///
/// let layout = SlabLayout::standalone(
///     &[ClassConfig { slot_size: 256, slots_per_extent: 4 }],
///     2, // extents per class at most
///     1, // peers
/// )?;
/// let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
/// // SAFETY: the region is fresh and nobody else uses it yet.
/// let host = unsafe { Slab::init(region.clone(), layout, OwnerId::HOST)? };
/// let peer = host.with_owner(OwnerId::peer(0))?;
///
/// let slot = peer.alloc(100)?;                // Free -> Allocated, owned by peer 0
/// peer.mark_in_flight(slot, OwnerId::HOST)?;  // -> InFlight, owned by the host (R6)
/// let _ = host.free(slot)?;                   // -> Free, generation + 1
/// assert!(host.free(slot).is_err());          // a double free is an error
/// assert_eq!(host.stats()[0].free, 4);
/// # Ok::<(), hub_alloc::SlabError>(())
/// ```
pub struct Slab<R: Region> {
    region: R,
    layout: std::sync::Arc<SlabLayout>,
    me: OwnerId,
    journal_offset: usize,
    cache: std::sync::Arc<[ClassCache]>,
    /// The slots this handle's owner holds, as it knows privately (R4).
    ledger: std::sync::Arc<Ledger>,
    /// Slots this handle's owner freed and keeps for its next alloc, per class (see
    /// [`crate::magazine`]).
    magazines: std::sync::Arc<[Magazine]>,
    /// This owner's threads take turns in their journal windows under this private lock, so
    /// that whatever another process writes into the shared journal word never makes them wait.
    journal_lock: std::sync::Arc<Mutex<()>>,
    /// Extent adoption and growth, one at a time in this process, with this owner's
    /// reservations not yet published: the private extent table's other half (R4).
    extents: std::sync::Arc<Mutex<Vec<(usize, usize)>>>,
    /// Classes (a bit each) whose futex word a growth's frees moved on for a sleeping
    /// allocator, for the caller to wake: see [`take_wakes`](Self::take_wakes).
    wakes: std::sync::Arc<AtomicU32>,
}

impl<R: Region> Slab<R> {
    /// Build the allocator's shared state in `region` as `layout` places it (R1: the creator
    /// builds everything before anyone attaches): control words, empty journals, class headers,
    /// and one extent per class whose slots are all on the free list. Returns the creator's
    /// handle, owning as `me`.
    ///
    /// # Safety
    /// Nobody else may access the region's allocator state during the call: the region is new,
    /// and no other participant can have attached.
    ///
    /// # Errors
    /// [`SlabError::RegionTooSmall`] when the region is shorter than `layout.initial_size()` or
    /// reserves less than `layout.max_size()`; [`SlabError::UnknownOwner`] for `me` beyond
    /// `layout.max_peers()`.
    pub unsafe fn init(region: R, layout: SlabLayout, me: OwnerId) -> Result<Self, SlabError> {
        let slab = Self::new(region, layout, me)?;
        let layout = &slab.layout;
        let shared = slab.shared();
        let too_small = || slab.too_small();
        // SAFETY: every `init` call below writes the allocator's own state, to which the
        // caller guarantees exclusive access.
        unsafe {
            if !shared.init(
                layout.current_size_offset,
                AtomicU64::new(layout.initial_size as u64),
            ) || !shared.init(
                layout.extent_count_offset,
                AtomicU32::new(layout.classes.len() as u32),
            ) {
                return Err(too_small());
            }
            for &offset in &layout.journal_offsets {
                if !shared.init(offset, AtomicU32::new(JOURNAL_EMPTY)) {
                    return Err(too_small());
                }
            }
            for (class, config) in layout.classes.iter().enumerate() {
                let header = SizeClassHeader::new(config.slot_size, config.slots_per_extent);
                if !shared.init(slab.class_header_offset(class), header) {
                    return Err(too_small());
                }
                let start = layout.initial_extent_offsets[class];
                let slots = config.slots_per_extent;
                slab.write_extent_header(class, 0, start)?;
                let meta_base = start + layout.geometry[class].meta_offset;
                for slot in 0..slots {
                    let next = if slot + 1 < slots {
                        slot + 1
                    } else {
                        FREE_LIST_END
                    };
                    let meta = SlotMeta::new(0, FREE, next, NO_OWNER);
                    if !shared.init(meta_base + slot as usize * size_of::<SlotMeta>(), meta) {
                        return Err(too_small());
                    }
                }
            }
        }
        for class in 0..layout.classes.len() {
            let header = slab.header(class)?;
            header.extent_offsets[0].store(
                layout.initial_extent_offsets[class] as u64,
                Ordering::Release,
            );
            header
                .total_slots
                .store(layout.classes[class].slots_per_extent, Ordering::Relaxed);
            header
                .free_head
                .store(pack_free_head(0, 0), Ordering::Release);
        }
        Ok(slab)
    }

    /// Attach to an allocator another participant built with [`init`](Self::init), owning as
    /// `me`. Checks the class headers' fixed fields and each class's first extent against the
    /// private `layout` (R2, R3).
    ///
    /// # Errors
    /// As [`init`](Self::init), and [`SlabError::Corrupt`] when a class header or first extent
    /// offset differs from the layout.
    pub fn attach(region: R, layout: SlabLayout, me: OwnerId) -> Result<Self, SlabError> {
        let slab = Self::new(region, layout, me)?;
        let shared = slab.shared();
        for (class, config) in slab.layout.classes.iter().enumerate() {
            let base = slab.class_header_offset(class);
            let fields = [
                ("slot_size", 0, config.slot_size),
                ("slots_per_extent", 4, config.slots_per_extent),
                (
                    "extent_slot_shift",
                    8,
                    config.slots_per_extent.trailing_zeros(),
                ),
            ];
            for (field, offset, expected) in fields {
                let found = shared
                    .read_plain_u32(base + offset)
                    .ok_or_else(|| slab.too_small())?;
                if found != expected {
                    return Err(corrupt(
                        class,
                        Corruption::ClassHeader {
                            field,
                            found,
                            expected,
                        },
                    ));
                }
            }
            slab.extent_base(class, 0).map_err(|e| corrupt(class, e))?;
        }
        Ok(slab)
    }

    /// Another handle on the same allocator, owning as `me`: what a second participant in the
    /// same process (a test thread, say) uses. Shares this handle's private caches.
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`] for `me` beyond the layout's `max_peers`.
    pub fn with_owner(&self, me: OwnerId) -> Result<Self, SlabError>
    where
        R: Clone,
    {
        let journal = self
            .layout
            .journal_index(me)
            .ok_or(SlabError::UnknownOwner(me))?;
        Ok(Self {
            region: self.region.clone(),
            layout: self.layout.clone(),
            me,
            journal_offset: self.layout.journal_offsets[journal],
            cache: self.cache.clone(),
            ledger: std::sync::Arc::new(Ledger::new(&self.layout)),
            magazines: magazines(&self.layout),
            journal_lock: std::sync::Arc::new(Mutex::new(())),
            extents: self.extents.clone(),
            wakes: std::sync::Arc::new(AtomicU32::new(0)),
        })
    }

    fn new(region: R, layout: SlabLayout, me: OwnerId) -> Result<Self, SlabError> {
        let journal = layout
            .journal_index(me)
            .ok_or(SlabError::UnknownOwner(me))?;
        let cache: Vec<ClassCache> = layout
            .classes
            .iter()
            .map(|_| ClassCache {
                extents: (0..layout.max_extents).map(|_| AtomicU64::new(0)).collect(),
                #[cfg(loom)]
                initialised: (0..=layout.max_size / 64)
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            })
            .collect();
        let slab = Self {
            journal_offset: layout.journal_offsets[journal],
            ledger: std::sync::Arc::new(Ledger::new(&layout)),
            magazines: magazines(&layout),
            layout: std::sync::Arc::new(layout),
            region,
            me,
            cache: cache.into(),
            journal_lock: std::sync::Arc::new(Mutex::new(())),
            extents: std::sync::Arc::new(Mutex::new(Vec::new())),
            wakes: std::sync::Arc::new(AtomicU32::new(0)),
        };
        if slab.region.reservation() < slab.layout.max_size
            || !slab.shared().covers(0, slab.layout.initial_size)
        {
            return Err(slab.too_small());
        }
        Ok(slab)
    }

    /// The owner this handle allocates as.
    pub fn owner(&self) -> OwnerId {
        self.me
    }

    /// The private layout this handle uses.
    pub fn layout(&self) -> &SlabLayout {
        &self.layout
    }

    /// The region.
    pub fn region(&self) -> &R {
        &self.region
    }

    /// Bytes per slot of `class`, or `None` when there is no such class.
    pub fn slot_size(&self, class: u16) -> Option<u32> {
        self.layout
            .classes
            .get(usize::from(class))
            .map(|c| c.slot_size)
    }

    /// Take a slot of at least `len` bytes, owned by this handle's owner (Free -> Allocated,
    /// R5): from the smallest class that fits, else from a larger class, else from a new extent
    /// of the smallest class that fits (R8).
    ///
    /// # Errors
    /// [`SlabError::PayloadTooLarge`] when `len` exceeds the largest slot;
    /// [`SlabError::NoFreeSlots`] when every fitting class is empty and the smallest cannot grow;
    /// [`SlabError::Grow`] when the region refuses to grow; [`SlabError::Corrupt`] when a free
    /// list or extent offset is found corrupted; [`SlabError::ListHeld`].
    pub fn alloc(&self, len: usize) -> Result<SlotHandle, SlabError> {
        let fits = self
            .layout
            .classes
            .iter()
            .position(|c| c.slot_size as usize >= len)
            .ok_or_else(|| SlabError::PayloadTooLarge {
                len,
                max: self
                    .layout
                    .classes
                    .iter()
                    .map(|c| c.slot_size as usize)
                    .max()
                    .unwrap_or(0),
            })?;
        for class in fits..self.layout.classes.len() {
            if let Some(handle) = self.take_kept(class) {
                return Ok(handle);
            }
            if let Some(handle) = self.pop(class)? {
                return Ok(handle);
            }
        }
        if let Some(handle) = self.grow(fits)? {
            return Ok(handle);
        }
        Err(SlabError::NoFreeSlots { class: fits as u16 })
    }

    /// Take a slot of class `class` only, growing the class when it is empty.
    ///
    /// # Errors
    /// As [`alloc`](Self::alloc); [`SlabError::BadHandle`] when there is no such class.
    pub fn alloc_in(&self, class: u16) -> Result<SlotHandle, SlabError> {
        let c = self.class_index(class, 0)?;
        if let Some(handle) = self.take_kept(c) {
            return Ok(handle);
        }
        if let Some(handle) = self.pop(c)? {
            return Ok(handle);
        }
        self.grow(c)?.ok_or(SlabError::NoFreeSlots { class })
    }

    /// Take a slot of class `class` from its free list, without growing.
    ///
    /// # Errors
    /// As [`alloc_in`](Self::alloc_in), but `Ok(None)` where it would grow.
    pub fn try_alloc_in(&self, class: u16) -> Result<Option<SlotHandle>, SlabError> {
        let c = self.class_index(class, 0)?;
        if let Some(handle) = self.take_kept(c) {
            return Ok(Some(handle));
        }
        self.pop(c)
    }

    /// Hand an allocated slot to `receiver` (Allocated -> InFlight, R5), who must free it next
    /// (R6), recording this handle's owner as its sender ([`SlotStatus::sender`]). The sender
    /// calls this before it publishes the descriptor. The slot leaves this participant's ledger
    /// (R4): it is the receiver's now.
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`] for a receiver the layout does not admit;
    /// [`SlabError::BadHandle`]; [`SlabError::StaleHandle`] when the slot has been freed since,
    /// or this participant holds it at another generation; [`SlabError::WrongState`] when it is
    /// not Allocated.
    pub fn mark_in_flight(&self, handle: SlotHandle, receiver: OwnerId) -> Result<(), SlabError> {
        if !self.layout.admits(receiver) {
            return Err(SlabError::UnknownOwner(receiver));
        }
        let class = self.class_index(handle.class, handle.index)?;
        let meta = self.handle_meta(class, handle)?;
        self.check_not_held_otherwise(handle)?;
        let from = join(handle.generation, ALLOCATED);
        let to = join(handle.generation, IN_FLIGHT);
        // R5: one CAS on (generation, state); Release so the receiver, which checks the state
        // with Acquire, sees what the sender wrote in the slot.
        if let Err(found) =
            meta.gen_state
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(transition_error(handle, found, "allocated"));
        }
        // R6: the receiver must free it next. A crash before this store leaves the slot in
        // flight but owned by the sender, whose reclaim frees it: the descriptor was not
        // published yet.
        meta.owner.store(receiver.raw(), Ordering::Release);
        // The sender, in `next_free`, which means nothing while the slot is off the free list
        // (and only now is it sure to be: the CAS above won). A receiver checks it
        // (SlotStatus::sender), so no third participant can forge a descriptor for this slot
        // and take the frame (R6). The ring's Release publication of the descriptor,
        // which comes after this call, publishes it.
        meta.next_free.store(self.me.raw(), Ordering::Release);
        // R4: the slot is the receiver's from here on, no longer ours: out of the ledger once
        // its meta says so whole (owner and sender), so that no look finds it ours and unowned.
        self.ledger.release(handle);
        Ok(())
    }

    /// Take into this participant's hands a slot another one says it sent (a descriptor's
    /// reference and generation): the receiver's claim (R4, R5). The slot must be in flight to
    /// this owner at the handle's generation, recorded as sent by `sender`, and not held by
    /// this participant already, at any generation: it is then recorded in the private ledger,
    /// by compare-and-swap, so of two claims of one slot in this process (two descriptors for
    /// it, or a receive and a pop after a forged free) exactly one wins. Free it with
    /// [`free`](Self::free) when done.
    ///
    /// ```
    /// use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Refusal, Slab, SlabLayout};
    /// use std::sync::Arc;
    ///
    /// let layout = SlabLayout::standalone(&[ClassConfig { slot_size: 64, slots_per_extent: 4 }], 1, 1)?;
    /// let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    /// // SAFETY: the region is fresh and nobody else uses it.
    /// let host = unsafe { Slab::init(region, layout, OwnerId::HOST)? };
    /// let peer = host.with_owner(OwnerId::peer(0))?;
    /// let slot = peer.alloc(10)?;
    /// peer.mark_in_flight(slot, OwnerId::HOST)?;
    /// assert_eq!(host.accept(slot, OwnerId::peer(0)), Ok(()));
    /// assert_eq!(host.accept(slot, OwnerId::peer(0)), Err(Refusal::AlreadyHeld));
    /// let _ = host.free(slot)?;
    /// # Ok::<(), hub_alloc::SlabError>(())
    /// ```
    ///
    /// # Errors
    /// A [`Refusal`] saying which check failed; the slot is left as it was.
    pub fn accept(&self, handle: SlotHandle, sender: OwnerId) -> Result<(), Refusal> {
        let status = self
            .slot_status(handle.class, handle.index)
            .map_err(|_| Refusal::NoSuchSlot)?;
        if status.generation != handle.generation {
            return Err(Refusal::StaleGeneration {
                slot: status.generation,
            });
        }
        if status.state != Some(SlotState::InFlight) || status.owner != self.me.raw() {
            return Err(Refusal::NotInFlightToMe {
                state: status.state,
                owner: status.owner,
            });
        }
        if status.sender != Some(sender) {
            return Err(Refusal::WrongSender {
                sender: status.sender,
            });
        }
        if !self.ledger.claim(handle) {
            return Err(Refusal::AlreadyHeld);
        }
        Ok(())
    }

    /// Whether this participant holds `handle` (its slot, at its generation), as its private
    /// ledger says (R4): a slot it allocated and has not sent or freed, or one it
    /// [accepted](Self::accept) and has not freed.
    pub fn holds(&self, handle: SlotHandle) -> bool {
        self.ledger.holds_handle(handle)
    }

    /// How many slots of `class` this participant holds (its private ledger, R4). Slots it
    /// keeps ([`kept_count`](Self::kept_count)) are not counted: no handle to them is valid.
    pub fn held_count(&self, class: u16) -> u32 {
        self.ledger.count(class)
    }

    /// How many slots of `class` this participant keeps for its next alloc now: slots it freed
    /// that stayed its own (see [`free`](Self::free)). Classes of fewer than 16 slots per
    /// extent keep none.
    pub fn kept_count(&self, class: u16) -> u32 {
        self.magazines
            .get(usize::from(class))
            .map_or(0, |magazine| magazine.len() as u32)
    }

    /// Give back every slot this participant keeps (see [`free`](Self::free)): each is freed
    /// the ordinary way, onto its class's free list. A participant does this before it sleeps,
    /// so that nobody waits for a slot it keeps; classes whose allocators must be woken are
    /// then named by [`take_wakes`](Self::take_wakes). Returns how many slots went back.
    ///
    /// ```
    /// use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
    ///
    /// let layout = SlabLayout::standalone(&[ClassConfig { slot_size: 64, slots_per_extent: 64 }], 1, 1)?;
    /// let region = HeapRegion::new(layout.initial_size(), layout.max_size());
    /// // SAFETY: a fresh region nobody else uses.
    /// let slab = unsafe { Slab::init(&region, layout, OwnerId::HOST)? };
    /// let slot = slab.alloc_in(0)?;
    /// let _ = slab.free(slot)?;
    /// assert_eq!(slab.kept_count(0), 1); // freed, and kept for the next alloc
    /// assert_eq!(slab.give_back_kept()?, 1);
    /// assert_eq!((slab.kept_count(0), slab.free_list_len(0)?), (0, 64));
    /// # Ok::<(), hub_alloc::SlabError>(())
    /// ```
    ///
    /// # Errors
    /// As [`free`](Self::free), for a slot whose meta another process rewrote meanwhile (the
    /// slot leaves the ledger all the same) or a list held too long; the other kept slots are
    /// given back first.
    pub fn give_back_kept(&self) -> Result<u32, SlabError> {
        let mut given = 0;
        let mut first_error = None;
        for class in 0..self.magazines.len() {
            while let Some(handle) = self.take_kept(class) {
                match self.free_owned(handle, false) {
                    Ok(freed) => {
                        given += 1;
                        if freed.wake_waiters {
                            // R11: the caller wakes the class's sleepers (`take_wakes`).
                            self.wakes.fetch_or(1 << class, Ordering::Release);
                        }
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        first_error.map_or(Ok(given), Err)
    }

    /// Give a slot back (Allocated or InFlight -> Free, generation + 1, R5, R7) and push it on
    /// its class's free list. Of two racing frees of one handle exactly one succeeds.
    ///
    /// A slot this participant holds may instead be *kept* for its next alloc of the class
    /// (see [`kept_count`](Self::kept_count)): its generation moves on as in any free, so the
    /// handle is stale from then on, but in shared memory it stays Allocated and this
    /// participant's, off the list, until an alloc of this participant takes it again, it is
    /// [given back](Self::give_back_kept), or the participant's [reclaim](Self::reclaim)
    /// frees it. A free keeps its slot only when the class keeps slots, a cell of this
    /// participant's magazine is empty, and no allocator has announced that it waits for the
    /// class.
    ///
    /// A slot this participant holds (its ledger, R4) leaves the ledger, whether or not the
    /// shared state agrees: the holder is done with it either way (a slot whose meta another
    /// process rewrote is left for the host's audit to find).
    ///
    /// # Errors
    /// [`SlabError::BadHandle`]; [`SlabError::DoubleFree`] when this handle already freed the
    /// slot; [`SlabError::StaleHandle`] for an older generation, or when this participant holds
    /// the slot at another generation; [`SlabError::WrongState`] when the slot is free;
    /// [`SlabError::Corrupt`] when its state word is garbage; [`SlabError::ListHeld`].
    pub fn free(&self, handle: SlotHandle) -> Result<Freed, SlabError> {
        self.free_owned(handle, true)
    }

    /// [`free`](Self::free), keeping the slot for this participant's next alloc of the class
    /// when `may_keep` and the class allows (see [`crate::magazine`]).
    ///
    /// The private ledger decides first, by a compare-and-swap from "held at the handle's
    /// generation" (R4): of two threads of this participant freeing one handle, one goes on, and
    /// the other's free fails without touching shared memory. The shared state's CAS (R5)
    /// then decides against every other process. Until the slot is on its list or in the
    /// magazine the ledger cell says "kept", so no pop or receive of this participant takes it.
    /// A slot the ledger does not name at all is not this participant's: only the shared
    /// state's CAS decides.
    fn free_owned(&self, handle: SlotHandle, may_keep: bool) -> Result<Freed, SlabError> {
        let next = handle.generation.wrapping_add(1);
        match self.ledger.begin_keep(handle, next) {
            Ok(()) => {}
            Err(Cell::Empty) => return self.free_slot(handle, Ledgered::Untouched),
            // Freed (and kept) by another thread of this participant, or held at another
            // generation: the handle is not the one it holds (R4).
            Err(Cell::Kept(generation)) if generation == next => {
                return Err(SlabError::DoubleFree {
                    class: handle.class,
                    index: handle.index,
                });
            }
            Err(Cell::Kept(generation) | Cell::Held(generation)) => {
                return Err(SlabError::StaleHandle {
                    handle: handle.generation,
                    slot: generation,
                });
            }
        }
        let class = match self.class_index(handle.class, handle.index) {
            Ok(class) => class,
            Err(error) => {
                self.ledger.forget(handle.class, handle.index);
                return Err(error);
            }
        };
        let magazine = &self.magazines[class];
        let keep = may_keep
            && magazine.enabled()
            // R11: an allocator waits for a slot of the class: it goes on the list, and is woken.
            && self.header(class).is_ok_and(|header| !has_waiter(header));
        if !keep {
            return self.free_slot(handle, Ledgered::Forget);
        }
        let meta = match self.handle_meta(class, handle) {
            Ok(meta) => meta,
            Err(error) => {
                self.ledger.forget(handle.class, handle.index);
                return Err(error);
            }
        };
        let current = meta.gen_state.load(Ordering::Relaxed);
        let (generation, state) = split(current);
        // R5: a free's CAS on (generation, state), to Allocated rather than Free: of this free
        // and any other process's claim on the slot exactly one wins, and the handle is stale
        // from here on.
        let kept = if generation == handle.generation && (state == ALLOCATED || state == IN_FLIGHT)
        {
            meta.gen_state.compare_exchange(
                current,
                join(next, ALLOCATED),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
        } else {
            Err(current)
        };
        if let Err(found) = kept {
            // The slot leaves the ledger whatever the shared state says (see `free`).
            self.ledger.forget(handle.class, handle.index);
            return Err(free_error(handle, found));
        }
        // R6: the keeper owns it (a received slot was in flight to it, so this writes nothing
        // unless another process rewrote the word).
        if meta.owner.load(Ordering::Relaxed) != self.me.raw() {
            meta.owner.store(self.me.raw(), Ordering::Relaxed);
        }
        // A hint for everybody's counts (`stats`): the link word means nothing off the list.
        meta.next_free.store(KEPT_SLOT_MARK, Ordering::Relaxed);
        if magazine.put(handle.index) {
            return Ok(Freed {
                class: handle.class,
                wake_waiters: false,
            });
        }
        // Every cell is full: freed onto the list after all, at its new generation.
        match self.ledger.unkeep(handle.class, handle.index) {
            Some(handle) => self.free_owned(handle, false),
            None => Err(SlabError::DoubleFree {
                class: handle.class,
                index: handle.index,
            }),
        }
    }

    /// A slot this participant kept (see [`crate::magazine`]), taken from its magazine and held
    /// again. Nothing in shared memory changes: the slot is Allocated and this participant's
    /// already, at the generation the keep gave it.
    #[inline]
    fn take_kept(&self, class: usize) -> Option<SlotHandle> {
        let magazine = &self.magazines[class];
        if !magazine.enabled() {
            return None;
        }
        while let Some(index) = magazine.take() {
            // The entry is the only right to the slot: whoever empties its cell unkeeps it.
            if let Some(handle) = self.ledger.unkeep(class as u16, index) {
                // In use again: the hint goes.
                if let Ok(meta) = self.meta(class, index) {
                    meta.next_free.store(FREE_LIST_END, Ordering::Relaxed);
                }
                return Some(handle);
            }
        }
        None
    }

    /// Free a slot this participant does not hold (R4): reclaim's and recovery's frees of what
    /// another participant left, which must never free a slot the ledger holds, whatever its
    /// shared meta says.
    fn free_unheld(&self, handle: SlotHandle) -> Result<Freed, SlabError> {
        if self.ledger.holds(handle.class, handle.index) {
            return Err(SlabError::Held {
                class: handle.class,
                index: handle.index,
            });
        }
        self.free_slot(handle, Ledgered::Untouched)
    }

    /// `Err(StaleHandle)` when this participant holds `handle`'s slot at another generation:
    /// the handle is not the one it holds (R4).
    fn check_not_held_otherwise(&self, handle: SlotHandle) -> Result<(), SlabError> {
        // Kept (see `crate::magazine`): freed already, and no handle to it is valid.
        if let Some(generation) = self.ledger.kept(handle.class, handle.index) {
            return Err(if generation == handle.generation.wrapping_add(1) {
                SlabError::DoubleFree {
                    class: handle.class,
                    index: handle.index,
                }
            } else {
                SlabError::StaleHandle {
                    handle: handle.generation,
                    slot: generation,
                }
            });
        }
        match self.ledger.held(handle.class, handle.index) {
            Some(generation) if generation != handle.generation => Err(SlabError::StaleHandle {
                handle: handle.generation,
                slot: generation,
            }),
            _ => Ok(()),
        }
    }

    /// [`free`](Self::free)'s work, onto the list. Unless `ledgered` is
    /// [`Untouched`](Ledgered::Untouched), the slot leaves this participant's ledger whether or
    /// not the shared state agrees: the holder is done with it either way, and a slot whose
    /// state another process rewrote is the auditor's to find.
    fn free_slot(&self, handle: SlotHandle, ledgered: Ledgered) -> Result<Freed, SlabError> {
        let leave = || match ledgered {
            Ledgered::Untouched => {}
            Ledgered::Release => {
                self.ledger.release(handle);
            }
            Ledgered::Forget => self.ledger.forget(handle.class, handle.index),
        };
        let ready = self
            .class_index(handle.class, handle.index)
            .and_then(|class| {
                let meta = self.handle_meta(class, handle)?;
                let header = self.header(class)?;
                let journal = self.enter_journal()?;
                Ok((class, meta, header, journal))
            });
        let (class, meta, header, journal) = match ready {
            Ok(ready) => ready,
            Err(error) => {
                leave();
                return Err(error);
            }
        };
        // R5: say which slot before touching it, so a crash between the state change and the
        // push leaves a trace reclaim follows. Release, as every journal store: whoever reads
        // the journal (Acquire) sees what this participant did before, such as recording a
        // slot it popped as Allocated (see `resolve_journal`).
        journal.name(handle.slot_ref());
        let mut current = meta.gen_state.load(Ordering::Relaxed);
        loop {
            let (generation, state) = split(current);
            if generation != handle.generation || !(state == ALLOCATED || state == IN_FLIGHT) {
                leave();
                return Err(free_error(handle, current));
            }
            // R5: the CAS on (generation, state) is what makes one of two racing frees win.
            match meta.gen_state.compare_exchange_weak(
                current,
                join(generation.wrapping_add(1), FREE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(found) => current = found,
            }
        }
        meta.owner.store(NO_OWNER, Ordering::Relaxed);
        // R4: out of the ledger before the push: once on the list, a pop of this process may
        // take it, and must not find it held.
        leave();
        self.push(header, class, handle.index, meta)?;
        drop(journal);
        Ok(Freed {
            class: handle.class,
            wake_waiters: notify_waiters(header),
        })
    }

    /// The start of a slot's bytes ([`slot_size`](Self::slot_size) of them), for the holder of
    /// `handle` to read or write through raw pointers. Checks that the handle names a slot of a
    /// published extent, not its state: the caller must know it holds the slot (R4).
    ///
    /// # Errors
    /// [`SlabError::BadHandle`].
    pub fn slot_data(&self, handle: SlotHandle) -> Result<NonNull<u8>, SlabError> {
        let class = self.class_index(handle.class, handle.index)?;
        let (extent, slot) = self.split_index(class, handle.index);
        let base = self
            .extent_base(class, extent)
            .map_err(|_| bad_handle(handle))?;
        let size = self.layout.classes[class].slot_size as usize;
        let offset = base + self.layout.geometry[class].data_offset + slot as usize * size;
        self.shared()
            .bytes_at(offset, size)
            .ok_or_else(|| bad_handle(handle))
    }

    /// A copy of a slot's meta (R3).
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when no published slot has this class and index.
    pub fn slot_status(&self, class: u16, index: u32) -> Result<SlotStatus, SlabError> {
        let handle = SlotHandle::from_parts(class, index, 0);
        let c = self.class_index(class, index)?;
        let meta = self.handle_meta(c, handle)?;
        let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
        let sender = if state == IN_FLIGHT {
            OwnerId::from_raw(meta.next_free.load(Ordering::Relaxed))
        } else {
            None
        };
        Ok(SlotStatus {
            generation,
            state: SlotState::from_u32(state),
            owner: meta.owner.load(Ordering::Acquire),
            sender,
        })
    }

    /// The futex word allocators of `class` sleep on, for the wake system call after a
    /// [`Freed`] with `wake_waiters`, and for waiting. `None` when there is no such class.
    ///
    /// To sleep until a slot may be free, without losing a wakeup (R11): `seen =`
    /// [`announce_waiter`](Self::announce_waiter)`(class)`, then if
    /// [`has_free_slot`](Self::has_free_slot)`(class)` try again, else `FUTEX_WAIT(word, seen)`.
    pub fn slot_available_word(&self, class: u16) -> Option<&AtomicU32> {
        let class = usize::from(class);
        if class >= self.layout.classes.len() {
            return None;
        }
        self.header(class)
            .ok()
            .map(|header| header.slot_available_futex)
    }

    /// Say that an allocator of `class` is about to sleep on its futex word, and return the
    /// value to sleep on. `None` when there is no such class.
    pub fn announce_waiter(&self, class: u16) -> Option<u32> {
        let word = self.slot_available_word(class)?;
        // R11: SeqCst, against the SeqCst push and load of `free`: either this sees the push
        // in `has_free_slot`, or the freer sees this bit.
        let seen = word.fetch_or(WAITER_BIT, Ordering::SeqCst) | WAITER_BIT;
        loom_seqcst();
        Some(seen)
    }

    /// Whether `class`'s free list looks non-empty (or is held, which means it soon may be).
    pub fn has_free_slot(&self, class: u16) -> bool {
        if usize::from(class) >= self.layout.classes.len() {
            return false;
        }
        let Ok(header) = self.header(usize::from(class)) else {
            return false;
        };
        // R11: SeqCst, see `announce_waiter`.
        let (index, _) = unpack_free_head(header.free_head.load(Ordering::SeqCst));
        index != FREE_LIST_END
    }

    /// Counts per class, from one pass over every published slot meta. Each meta is read once;
    /// under concurrent use the counts are a blur of the moments read, exact when quiet.
    pub fn stats(&self) -> Vec<ClassStats> {
        (0..self.layout.classes.len())
            .map(|class| {
                let mut stats = ClassStats {
                    slot_size: self.layout.classes[class].slot_size,
                    ..ClassStats::default()
                };
                if let Ok(header) = self.header(class) {
                    stats.header_total = header.total_slots.load(Ordering::Relaxed);
                }
                self.for_each_meta(class, |index, meta| {
                    stats.total += 1;
                    match split(meta.gen_state.load(Ordering::Relaxed)).1 {
                        FREE => stats.free += 1,
                        // Kept by its owner (see `crate::magazine`): as free as a listed slot.
                        // This participant's private word, or the owner's hint for the others.
                        ALLOCATED
                            if self.ledger.kept(class as u16, index).is_some()
                                || (!self.ledger.holds(class as u16, index)
                                    && meta.next_free.load(Ordering::Relaxed)
                                        == KEPT_SLOT_MARK) =>
                        {
                            stats.free += 1;
                            stats.kept += 1;
                        }
                        ALLOCATED => stats.allocated += 1,
                        IN_FLIGHT => stats.in_flight += 1,
                        _ => stats.corrupt += 1,
                    }
                });
                stats.extents = self.published_extents(class).count() as u32;
                stats
            })
            .collect()
    }

    /// Length of `class`'s free list, walked once (bounded by the class's slots). Exact only
    /// when nobody allocates or frees in the class meanwhile: for tests and the inspector.
    ///
    /// # Errors
    /// [`SlabError::Corrupt`] with [`Corruption::Cycle`] or a bad link.
    pub fn free_list_len(&self, class: u16) -> Result<u32, SlabError> {
        let c = self.class_index(class, 0)?;
        let header = self.header(c)?;
        let (first, _) = unpack_free_head(header.free_head.load(Ordering::Acquire));
        if first == LIST_HELD {
            return Err(SlabError::ListHeld { class });
        }
        self.walk(c, first, None).map(|(len, _)| len)
    }

    /// Free every slot `owner` holds (Allocated by it, or InFlight to it), after it died or left
    /// (R10's reclaim), and put back a slot its journal shows it was taking or freeing when it
    /// died. Safe while other participants allocate and free; idempotent. This handle's owner
    /// (the host) does the freeing.
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`]; [`SlabError::Corrupt`] when the owner's journal or a free
    /// list is garbage; [`SlabError::ListHeld`].
    pub fn reclaim(&self, owner: OwnerId) -> Result<ReclaimReport, SlabError> {
        let journal_index = self
            .layout
            .journal_index(owner)
            .ok_or(SlabError::UnknownOwner(owner))?;
        let journal = self
            .shared()
            .u32_at(self.layout.journal_offsets[journal_index])
            .ok_or_else(|| self.too_small())?;
        let mut report = ReclaimReport {
            freed: vec![0; self.layout.classes.len()],
            ..ReclaimReport::default()
        };
        let entry = journal.load(Ordering::Acquire);
        if entry == JOURNAL_BUSY {
            // Taken, no slot named yet: nothing was in a window.
            journal.store(JOURNAL_EMPTY, Ordering::Release);
        } else if entry != JOURNAL_EMPTY {
            match self.resolve_journal(owner, entry - 1) {
                Ok(Resolution::Recovered(wake)) => {
                    report.recovered_from_journal = true;
                    report.wake_waiters |= wake;
                    journal.store(JOURNAL_EMPTY, Ordering::Release);
                }
                Ok(Resolution::NothingLost) => journal.store(JOURNAL_EMPTY, Ordering::Release),
                Ok(Resolution::Pending) => report.journal_pending = true,
                Err(error) => {
                    // A garbage journal is cleared so it cannot fail every later reclaim.
                    journal.store(JOURNAL_EMPTY, Ordering::Release);
                    return Err(error);
                }
            }
        }
        // A participant that reclaims its own slots gives up what its ledger holds too, and
        // what it keeps.
        let mine_too = owner == self.me;
        if mine_too {
            self.give_back_kept()?;
        }
        let mut mine = Vec::new();
        for class in 0..self.layout.classes.len() {
            mine.clear();
            self.for_each_meta(class, |index, meta| {
                let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
                // R4: the owner word is a claim another process wrote; a slot this participant
                // holds is not freed whatever it says (unless this participant reclaims its own).
                if (state == ALLOCATED || state == IN_FLIGHT)
                    && meta.owner.load(Ordering::Acquire) == owner.raw()
                    && (mine_too || !self.ledger.holds(class as u16, index))
                {
                    // Kept (see `crate::magazine`), as the owner's hint says: counted apart.
                    let kept = state == ALLOCATED
                        && meta.next_free.load(Ordering::Relaxed) == KEPT_SLOT_MARK;
                    mine.push((
                        SlotHandle::from_parts(class as u16, index, generation),
                        kept,
                    ));
                }
            });
            for &(handle, kept) in &mine {
                let freed = if mine_too {
                    // Freed onto the list, never kept again.
                    self.free_owned(handle, false)
                } else {
                    self.free_unheld(handle)
                };
                match freed {
                    Ok(freed) if kept => {
                        report.kept += 1;
                        report.wake_waiters |= freed.wake_waiters;
                    }
                    Ok(freed) => {
                        report.freed[class] += 1;
                        report.wake_waiters |= freed.wake_waiters;
                    }
                    // Freed, or freed and taken again, by someone else since the scan read it;
                    // or taken by this participant since (R4).
                    Err(
                        SlabError::StaleHandle { .. }
                        | SlabError::DoubleFree { .. }
                        | SlabError::WrongState { .. }
                        | SlabError::Held { .. },
                    ) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(report)
    }

    /// Free `handle`'s slot if `sender` put it in flight to `receiver` at the handle's
    /// generation: R10's scan of a dead peer's rings, where a descriptor may name any slot
    /// (another peer's frame still pending in its own ring, say) and only one that ring's
    /// sender sent to that ring's receiver is the ring's to free. A slot this participant holds
    /// is never freed (R4). Whether it freed the slot.
    pub fn free_if_in_flight_to(
        &self,
        handle: SlotHandle,
        sender: OwnerId,
        receiver: OwnerId,
    ) -> bool {
        let Ok(status) = self.slot_status(handle.class(), handle.index()) else {
            return false;
        };
        status.generation == handle.generation()
            && status.state == Some(SlotState::InFlight)
            && status.owner == receiver.raw()
            && status.sender == Some(sender)
            && self.free_unheld(handle).is_ok()
    }

    /// Free every slot `sender` put in flight to `receiver` that this participant does not hold
    /// (R4: its ledger): after the sender died and its ring to the receiver was scanned and
    /// reset (R10), what it sent that the receiver never took can never be taken, including a
    /// descriptor it published after the scan. Returns how many were freed, and whether a free
    /// woke an allocator (see [`Freed`]).
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`] for a sender or receiver the layout does not admit;
    /// [`SlabError::ListHeld`].
    pub fn reclaim_sent(
        &self,
        sender: OwnerId,
        receiver: OwnerId,
    ) -> Result<(u32, bool), SlabError> {
        for owner in [sender, receiver] {
            if !self.layout.admits(owner) {
                return Err(SlabError::UnknownOwner(owner));
            }
        }
        let (mut freed, mut wake) = (0, false);
        let mut sent = Vec::new();
        for class in 0..self.layout.classes.len() {
            sent.clear();
            self.for_each_meta(class, |index, meta| {
                let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
                if state == IN_FLIGHT
                    && meta.owner.load(Ordering::Acquire) == receiver.raw()
                    && meta.next_free.load(Ordering::Acquire) == sender.raw()
                    && !self.ledger.holds(class as u16, index)
                {
                    sent.push(SlotHandle::from_parts(class as u16, index, generation));
                }
            });
            for &handle in &sent {
                match self.free_unheld(handle) {
                    Ok(done) => {
                        freed += 1;
                        wake |= done.wake_waiters;
                    }
                    Err(
                        SlabError::StaleHandle { .. }
                        | SlabError::DoubleFree { .. }
                        | SlabError::WrongState { .. }
                        | SlabError::Held { .. },
                    ) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok((freed, wake))
    }

    /// Empty `owner`'s journal without resolving it: for the host about to hand a dead peer's
    /// id to a new peer when [`reclaim`](Self::reclaim) kept reporting `journal_pending` (the
    /// slot it names, if it was lost, stays lost). A journal left non-empty would make the new
    /// owner's first allocation wait for ever.
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`].
    pub fn clear_journal(&self, owner: OwnerId) -> Result<(), SlabError> {
        let index = self
            .layout
            .journal_index(owner)
            .ok_or(SlabError::UnknownOwner(owner))?;
        if let Some(journal) = self.shared().u32_at(self.layout.journal_offsets[index]) {
            journal.store(JOURNAL_EMPTY, Ordering::Release);
        }
        Ok(())
    }

    /// Rebuild `class`'s free list from the slot metas, after corruption of the list was
    /// detected: hold the list, chain every Free slot no journal names, leave out slots whose
    /// state is garbage, and publish the new list. Other participants' pops and pushes in the
    /// class wait meanwhile. A Free slot a journal names is between two steps of a
    /// participant's pop or free, or was pushed on the old list just before the hold: after the
    /// release it is looked at again as [`reclaim`](Self::reclaim) looks at a dead
    /// participant's journal, and put back if it is neither taken nor on the list.
    ///
    /// A list that stays held for over a second (a marker a faulty process wrote, or one a dead
    /// holder left) is taken over and rebuilt all the same.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when there is no such class; [`SlabError::Corrupt`] when the new
    /// list is found corrupted while a slot is looked at again.
    pub fn rebuild_free_list(&self, class: u16) -> Result<RebuildReport, SlabError> {
        let c = self.class_index(class, 0)?;
        let held = match self.hold(c) {
            // Held for over a second: the marker is garbage a faulty process wrote, or left by a
            // holder that died (only the host holds, and this is the host). The list it hides
            // is lost either way, and a rebuild does not need it: take the marker over.
            Err(SlabError::ListHeld { .. }) => self.take_over(c)?,
            other => other?,
        };
        // The states first, then the journals: a free whose new state is read here named its
        // slot in its journal before (Release, then its AcqRel state CAS), so the journal read
        // below sees the name while the free's push waits for the hold.
        let mut metas = Vec::new();
        self.for_each_meta(c, |index, meta| {
            metas.push((index, meta, meta.gen_state.load(Ordering::Acquire)));
        });
        let journals = self.journal_entries();
        let mut report = RebuildReport::default();
        let mut chain = FREE_LIST_END;
        let mut unsure = Vec::new();
        for &(index, meta, seen) in metas.iter().rev() {
            match split(seen).1 {
                // R4: a slot this participant holds is never chained, whatever its state says.
                FREE if self.ledger.holds(class, index) => {}
                FREE => {
                    let entry = encode_slot_ref(class, index) + 1;
                    // And the state again after the journals: a pop that won before the hold
                    // and has recorded itself since (its journal cleared, with Release) shows
                    // here as Allocated.
                    if journals.contains(&entry) || meta.gen_state.load(Ordering::Acquire) != seen {
                        // Being popped or freed, or already pushed on the old list by a free
                        // that has not cleared its journal yet: settled after the release.
                        unsure.push((index, meta));
                    } else {
                        // Release: an audit that reads this link sees the hold (see `audit`).
                        meta.next_free.store(chain, Ordering::Release);
                        chain = index;
                        report.free += 1;
                    }
                }
                ALLOCATED | IN_FLIGHT => {}
                _ => report.quarantined += 1,
            }
        }
        self.release(c, held, chain);
        if chain != FREE_LIST_END {
            report.wake_waiters |= self.notify_slot_available(c)?;
        }
        // A slot a journal named may have been on the old list, which is gone: once its
        // participant has moved on, put it back unless it is taken or on the new list.
        for (index, meta) in unsure {
            match self.resolve_slot(c, index, meta, None)? {
                Resolution::Recovered(wake) => {
                    report.free += 1;
                    report.wake_waiters |= wake;
                }
                Resolution::NothingLost => {}
                Resolution::Pending => report.pending += 1,
            }
        }
        Ok(report)
    }

    /// Look at `class` for damage a faulty participant did: its free list walked once (bounded,
    /// R3), every slot state read once, the journals read. Read-only and safe while others
    /// allocate and free; see [`ClassAudit`] for what a busy class can and cannot show. The
    /// host runs it periodically and rebuilds what it finds broken.
    ///
    /// ```
    /// use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
    /// use std::sync::Arc;
    ///
    /// let layout = SlabLayout::standalone(&[ClassConfig { slot_size: 64, slots_per_extent: 4 }], 1, 1)?;
    /// let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    /// // SAFETY: the region is fresh and nobody else uses it.
    /// let host = unsafe { Slab::init(region, layout, OwnerId::HOST)? };
    /// let audit = host.audit(0)?;
    /// assert!(audit.settled && !audit.list_broken() && audit.off_list.is_empty());
    /// # Ok::<(), hub_alloc::SlabError>(())
    /// ```
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when there is no such class.
    pub fn audit(&self, class: u16) -> Result<ClassAudit, SlabError> {
        let c = self.class_index(class, 0)?;
        let header = self.header(c)?;
        let mut audit = ClassAudit::default();
        // Acquire: the head's release sequence carries the pushes that linked the list read
        // below (R7), and the state changes made before them.
        let before = header.free_head.load(Ordering::Acquire);
        audit.head = before;
        let (first, _) = unpack_free_head(before);
        // The journals before the states: a pop that won the head `before` shows (R5 names the
        // slot before the CAS), or its state change does, from its journal's clear onwards.
        let mut journals = self.journal_entries();
        let mut states = Vec::new();
        self.for_each_meta(c, |index, meta| {
            // Acquire: a state a pop or free wrote (AcqRel) brings its earlier head CAS with it,
            // so the last head load below cannot take that list for the one of `before`.
            states.push((index, meta.gen_state.load(Ordering::Acquire)));
        });
        audit.bad_states = states
            .iter()
            .filter(|(_, word)| !matches!(split(*word).1, FREE | ALLOCATED | IN_FLIGHT))
            .count() as u32;
        if first == LIST_HELD {
            audit.held = true;
            // Acquire, as the head load below.
            audit.settled = header.free_head.load(Ordering::Acquire) == before;
            return Ok(audit);
        }
        // Global index -> position in `states`, for the walk's "is it free" and "seen twice".
        let slots = self.layout.classes[c].slots_per_extent;
        let shift = slots.trailing_zeros();
        let position = |index: u32| {
            let extent = (index >> shift) as usize;
            let at = extent * slots as usize + (index & (slots - 1)) as usize;
            (at < states.len() && states[at].0 == index).then_some(at)
        };
        let mut on_list = vec![false; states.len()];
        let mut fault = None;
        let mut index = first;
        let mut previous = None;
        while index != FREE_LIST_END {
            let Some(at) = position(index).filter(|_| self.meta(c, index).is_ok()) else {
                fault = Some(match previous {
                    None => Corruption::FreeHead { index },
                    Some(previous) => Corruption::NextFree {
                        index: previous,
                        next: index,
                    },
                });
                break;
            };
            if on_list[at] {
                fault = Some(Corruption::Cycle {
                    limit: states.len() as u32,
                });
                break;
            }
            on_list[at] = true;
            let state = split(states[at].1).1;
            if state != FREE {
                fault = Some(Corruption::PoppedNotFree { index, state });
                break;
            }
            previous = Some(index);
            index = match self.meta(c, index) {
                // Acquire: a link written since `before` was written after the pop or hold that
                // took its slot off the list (Release), so the last head load below sees that
                // change and the look is not settled.
                Ok(meta) => meta.next_free.load(Ordering::Acquire),
                Err(_) => break,
            };
        }
        // And after them: a free whose Free state was read above named its slot before its
        // state CAS (R5), so a slot between its state change and its push is named here.
        journals.extend(self.journal_entries());
        // Acquire: the journals' and links' writers above are ordered before it, so a head
        // equal to `before` means no pop, push or hold completed during the look (R7's tag).
        audit.settled = header.free_head.load(Ordering::Acquire) == before;
        if audit.settled {
            audit.list_fault = fault;
            if audit.list_fault.is_none() {
                audit.off_list = states
                    .iter()
                    .zip(&on_list)
                    .filter(|&(&(index, word), &listed)| {
                        split(word).1 == FREE
                            && !listed
                            && !journals.contains(&(encode_slot_ref(class, index) + 1))
                            && !self.ledger.holds(class, index)
                    })
                    .map(|(&(index, word), _)| (index, split(word).0))
                    .collect();
            }
        }
        Ok(audit)
    }

    // ----- the host's private truth against shared words (R4) -----

    /// Put back every allocator word a participant may not change that another process has
    /// changed: each class header's fixed fields (`slot_size`, `slots_per_extent`,
    /// `extent_slot_shift`, which attach validates), each published extent offset (to the one
    /// this handle adopted, or to 0 when a published one does not fit its private extent
    /// table), a `total_slots` no growth can have written, and a `current_size` below the end
    /// of the extents this handle knows or beyond the reservation. The host's auditor runs it,
    /// so that scribbling cannot keep new peers from attaching (R2) or growth from finding
    /// room. Returns what was restored.
    pub fn restore_constants(&self) -> Vec<&'static str> {
        let mut restored = Vec::new();
        let mut note = |what: &'static str| {
            if !restored.contains(&what) {
                restored.push(what);
            }
        };
        let shared = self.shared();
        for (class, config) in self.layout.classes.iter().enumerate() {
            let base = self.class_header_offset(class);
            let fields = [
                ("class slot_size", 0, config.slot_size),
                ("class slots_per_extent", 4, config.slots_per_extent),
                (
                    "class extent_slot_shift",
                    8,
                    config.slots_per_extent.trailing_zeros(),
                ),
            ];
            for (what, offset, expected) in fields {
                if shared
                    .read_plain_u32(base + offset)
                    .is_some_and(|found| found != expected)
                {
                    // Under loom these plain fields are never written after `init`: models do
                    // not scribble them, and loom cannot take them for atomics.
                    #[cfg(not(loom))]
                    if let Some(word) = shared.u32_at(base + offset) {
                        word.store(expected, Ordering::Release);
                    }
                    note(what);
                }
            }
            let Ok(header) = self.header(class) else {
                continue;
            };
            let mut adopted = 0;
            for extent in 0..self.layout.max_extents as usize {
                let published = header.extent_offsets[extent].load(Ordering::Acquire);
                let known = self.cache[class].extents[extent].load(Ordering::Acquire);
                let truth = if known != 0 {
                    known
                } else if published == 0 {
                    0
                } else {
                    // Published by a grower since the last look, or forged: adopted if it fits.
                    self.extent_base(class, extent)
                        .map_or(0, |offset| offset as u64)
                };
                adopted += u32::from(truth != 0);
                if published != truth
                    && header.extent_offsets[extent]
                        .compare_exchange(published, truth, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    note("extent offset");
                }
            }
            // A grower adds its extent's slots right after it publishes it: a total that is
            // not a whole number of extents, or more than there are, no grower wrote.
            let total = header.total_slots.load(Ordering::Relaxed);
            if !total.is_multiple_of(config.slots_per_extent)
                || total > self.layout.max_extents * config.slots_per_extent
            {
                header
                    .total_slots
                    .store(adopted * config.slots_per_extent, Ordering::Relaxed);
                note("class total_slots");
            }
        }
        if let Ok(current_size) = self.current_size() {
            let table = lock(&self.extents);
            let floor = self.private_end(&table) as u64;
            let seen = current_size.load(Ordering::Acquire);
            if (seen < floor || seen > self.layout.max_size as u64 || !seen.is_multiple_of(64))
                && current_size
                    .compare_exchange(seen, floor, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                note("current_size");
            }
        }
        restored
    }

    /// Slots of `class` that no participant can be holding by the protocol, as this handle
    /// sees them now: a state word that is no state; allocated by, or in flight to, an owner
    /// that `live` says is gone (or an owner word that names nobody); allocated by this
    /// participant but not in its ledger (R4); in flight to this participant from a sender
    /// that `live` says is gone, and not in its ledger. Slots this handle's ledger holds are
    /// never listed. A busy hub shows some for a moment (a grower's new slots, a pop between
    /// its claim and its record): the caller looks twice, far apart, before it
    /// [returns](Self::return_orphan) one, and only once every participant that could have
    /// held it is gone.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when there is no such class.
    pub fn orphans(
        &self,
        class: u16,
        live: impl Fn(OwnerId) -> bool,
    ) -> Result<Vec<Orphan>, SlabError> {
        let c = self.class_index(class, 0)?;
        let mut found = Vec::new();
        self.for_each_meta(c, |index, meta| {
            if self.ledger.holds(class, index) {
                return;
            }
            let word = meta.gen_state.load(Ordering::Acquire);
            let owner = meta.owner.load(Ordering::Acquire);
            let named = OwnerId::from_raw(owner).filter(|&o| self.layout.admits(o));
            let orphan = match split(word).1 {
                FREE => false,
                ALLOCATED => match named {
                    Some(o) if o == self.me => true,
                    Some(o) => !live(o),
                    None => true,
                },
                IN_FLIGHT => match named {
                    Some(o) if o == self.me => {
                        let sender = OwnerId::from_raw(meta.next_free.load(Ordering::Acquire));
                        sender.is_none_or(|s| s == self.me || !self.layout.admits(s) || !live(s))
                    }
                    Some(o) => !live(o),
                    None => true,
                },
                _ => true,
            };
            if orphan {
                found.push(Orphan {
                    class,
                    index,
                    word,
                    owner,
                });
            }
        });
        Ok(found)
    }

    /// Give back a slot [`orphans`](Self::orphans) listed, if its meta still holds what it
    /// did then, it is not on its free list, and this participant does not hold it: the
    /// generation moves on, the state becomes Free, and the slot goes on the list (under a
    /// hold of the list, so it is never listed twice). `Ok(None)` when any of that changed;
    /// the [`Freed`] otherwise.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`]; [`SlabError::Corrupt`] when the list is found broken (a
    /// rebuild comes first); [`SlabError::ListHeld`].
    pub fn return_orphan(&self, orphan: &Orphan) -> Result<Option<Freed>, SlabError> {
        let c = self.class_index(orphan.class, orphan.index)?;
        let meta = self
            .meta(c, orphan.index)
            .map_err(|_| SlabError::BadHandle {
                class: orphan.class,
                index: orphan.index,
            })?;
        if self.ledger.holds(orphan.class, orphan.index) {
            return Ok(None);
        }
        let held = self.hold(c)?;
        let on_list = match self.walk(c, held.first, Some(orphan.index)) {
            Ok((_, found)) => found,
            Err(error) => {
                self.release(c, held, held.first);
                return Err(error);
            }
        };
        let generation = split(orphan.word).0;
        if on_list
            || meta
                .gen_state
                .compare_exchange(
                    orphan.word,
                    join(generation.wrapping_add(1), FREE),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.release(c, held, held.first);
            return Ok(None);
        }
        meta.owner.store(NO_OWNER, Ordering::Relaxed);
        // Release: an audit that reads this link sees the hold (see `audit`).
        meta.next_free.store(held.first, Ordering::Release);
        self.release(c, held, orphan.index);
        Ok(Some(Freed {
            class: orphan.class,
            wake_waiters: self.notify_slot_available(c)?,
        }))
    }

    // ----- the free list (R7) -----

    /// Pop a slot of class `class`, or `None` when the list is empty.
    #[inline(always)]
    fn pop(&self, class: usize) -> Result<Option<SlotHandle>, SlabError> {
        let header = self.header(class)?;
        let journal = self.enter_journal()?;
        let backoff = Backoff::new();
        let mut held = HeldWait::default();
        loop {
            // R7: Acquire pairs with the Release of the push that linked this head, so the
            // slot's `next_free` (and its data) are those the pusher wrote.
            let head = header.free_head.load(Ordering::Acquire);
            let (index, tag) = unpack_free_head(head);
            if index == FREE_LIST_END {
                return Ok(None);
            }
            if index == LIST_HELD {
                held.wait(class)?;
                continue;
            }
            let Ok(meta) = self.meta(class, index) else {
                return Err(corrupt(class, Corruption::FreeHead { index }));
            };
            // Stale if another pop wins this head first; the tagged CAS below then fails.
            let next = meta.next_free.load(Ordering::Relaxed);
            if next != FREE_LIST_END && self.meta(class, next).is_err() {
                if header.free_head.load(Ordering::Acquire) == head {
                    return Err(corrupt(class, Corruption::NextFree { index, next }));
                }
                continue;
            }
            // R5: name the slot before the pop; the CAS's Release publishes the name. Release
            // here too, for whoever reads this entry before the CAS: see `free`.
            journal.name(encode_slot_ref(class as u16, index));
            let popped = pack_free_head(next, tag.wrapping_add(1));
            // R7: the tag makes a head that was popped and pushed back meanwhile (ABA) fail.
            if header
                .free_head
                .compare_exchange_weak(head, popped, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                backoff.spin();
                continue;
            }
            let seen = meta.gen_state.load(Ordering::Acquire);
            let (generation, state) = split(seen);
            if state != FREE {
                // Off the list now, and left off: its state says someone else has it. Its
                // owner is left alone too, so that reclaim of that one still finds it (R6).
                return Err(corrupt(class, Corruption::PoppedNotFree { index, state }));
            }
            let handle = SlotHandle::from_parts(class as u16, index, generation);
            // R4: the private claim first. A slot this participant holds (at any generation)
            // was put on the list by a forged free: it stays off the list, still ours, and the
            // pop takes the next one.
            if !self.ledger.claim(handle) {
                continue;
            }
            // R6: the owner before the state, so that from here on the slot is found by
            // reclaim(me) (Allocated and owned) or by the journal (Free, off the list).
            meta.owner.store(self.me.raw(), Ordering::Relaxed);
            // R5: Free -> Allocated, by CAS from the state and generation just read: only the
            // pop's winner may write this word now, so a change means another process wrote
            // it, and the slot is not handed out.
            if let Err(found) = meta.gen_state.compare_exchange(
                seen,
                join(generation, ALLOCATED),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                self.ledger.release(handle);
                return Err(corrupt(
                    class,
                    Corruption::PoppedNotFree {
                        index,
                        state: split(found).1,
                    },
                ));
            }
            drop(journal);
            return Ok(Some(handle));
        }
    }

    /// Push slot `index` (already Free) on its list, whose header is `header`.
    #[inline(always)]
    fn push(
        &self,
        header: ClassHeader<'_>,
        class: usize,
        index: u32,
        meta: &SlotMeta,
    ) -> Result<(), SlabError> {
        let backoff = Backoff::new();
        let mut held = HeldWait::default();
        loop {
            let head = header.free_head.load(Ordering::Relaxed);
            let (first, tag) = unpack_free_head(head);
            if first == LIST_HELD {
                held.wait(class)?;
                continue;
            }
            // Release: an audit that reads this link sees the pop that took the slot off the
            // list before (see `audit`).
            meta.next_free.store(first, Ordering::Release);
            // R7: Release publishes `next_free`, the state and the slot's bytes to the next
            // popper; SeqCst for R11 (see `announce_waiter`).
            if header
                .free_head
                .compare_exchange_weak(
                    head,
                    pack_free_head(index, tag.wrapping_add(1)),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(());
            }
            backoff.spin();
        }
    }

    /// After a push: bump the class's futex word when an allocator announced it sleeps (R11).
    fn notify_slot_available(&self, class: usize) -> Result<bool, SlabError> {
        Ok(notify_waiters(self.header(class)?))
    }

    /// Swap `class`'s head for the held marker, so nobody else pops or pushes until
    /// [`release`](Self::release). Returns the list as it was.
    fn hold(&self, class: usize) -> Result<Held, SlabError> {
        self.swap_in_marker(class, false)
    }

    /// Hold a list whose head is already the held marker (see `rebuild_free_list`): the list
    /// it hid is lost, so the held list is empty.
    fn take_over(&self, class: usize) -> Result<Held, SlabError> {
        self.swap_in_marker(class, true)
    }

    /// Swap the held marker in for `class`'s head; wait while another holder has it, unless
    /// `take_over`.
    fn swap_in_marker(&self, class: usize, take_over: bool) -> Result<Held, SlabError> {
        let header = self.header(class)?;
        let mut held = HeldWait::default();
        loop {
            // Acquire: the CAS reads the latest head, whose release sequence carries every
            // earlier pop and push, and with them the journals written before them.
            let head = header.free_head.load(Ordering::Acquire);
            let (first, tag) = unpack_free_head(head);
            if first == LIST_HELD && !take_over {
                held.wait(class)?;
                continue;
            }
            let tag = tag.wrapping_add(1);
            if header
                .free_head
                .compare_exchange(
                    head,
                    pack_free_head(LIST_HELD, tag),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                let first = if first == LIST_HELD {
                    FREE_LIST_END
                } else {
                    first
                };
                return Ok(Held { first, tag });
            }
        }
    }

    /// Publish `first` as the head of a held list.
    fn release(&self, class: usize, held: Held, first: u32) {
        if let Ok(header) = self.header(class) {
            // R7: Release publishes the links written while held; SeqCst for R11.
            header.free_head.store(
                pack_free_head(first, held.tag.wrapping_add(1)),
                Ordering::SeqCst,
            );
        }
    }

    /// Walk a list from `first`: its length, and whether it holds `target`. At most as many
    /// steps as the class has slots (R3: a cycle ends the walk with an error).
    fn walk(
        &self,
        class: usize,
        first: u32,
        target: Option<u32>,
    ) -> Result<(u32, bool), SlabError> {
        let limit = self.published_extents(class).count() as u32
            * self.layout.classes[class].slots_per_extent;
        let mut index = first;
        let mut len = 0u32;
        let mut found = false;
        let mut previous = None;
        while index != FREE_LIST_END {
            if len >= limit {
                return Err(corrupt(class, Corruption::Cycle { limit }));
            }
            let Ok(meta) = self.meta(class, index) else {
                return Err(corrupt(
                    class,
                    match previous {
                        None => Corruption::FreeHead { index },
                        Some(previous) => Corruption::NextFree {
                            index: previous,
                            next: index,
                        },
                    },
                ));
            };
            found |= Some(index) == target;
            len += 1;
            previous = Some(index);
            index = meta.next_free.load(Ordering::Relaxed);
        }
        Ok((len, found))
    }

    /// What became of the slot `slot_ref` that dead `owner`'s journal names.
    fn resolve_journal(&self, owner: OwnerId, slot_ref: u32) -> Result<Resolution, SlabError> {
        let bad_journal = || {
            corrupt(
                (slot_ref >> 29) as usize,
                Corruption::Journal { owner, slot_ref },
            )
        };
        let (class, index) = try_decode_slot_ref(slot_ref).map_err(|_| bad_journal())?;
        let c = usize::from(class);
        if c >= self.layout.classes.len() {
            return Err(bad_journal());
        }
        let meta = self.meta(c, index).map_err(|_| bad_journal())?;
        self.resolve_slot(c, index, meta, self.layout.journal_index(owner))
    }

    /// Whether slot `index` of class `c`, which some journal named while it was Free, is lost
    /// (Free, off the list, and named by no journal but the `skip`ped one's), and if so put it
    /// back on the list.
    fn resolve_slot(
        &self,
        c: usize,
        index: u32,
        meta: &SlotMeta,
        skip: Option<usize>,
    ) -> Result<Resolution, SlabError> {
        let entry = encode_slot_ref(c as u16, index) + 1;
        for _ in 0..RESOLVE_ATTEMPTS {
            // R4: a slot this participant holds is not lost, whatever its state says.
            if self.ledger.holds(c as u16, index) {
                return Ok(Resolution::NothingLost);
            }
            if split(meta.gen_state.load(Ordering::Acquire)).1 != FREE {
                // Allocated or in flight: the owner scan frees it if it is the dead one's.
                return Ok(Resolution::NothingLost);
            }
            let held = self.hold(c)?;
            let seen = meta.gen_state.load(Ordering::Acquire);
            if split(seen).1 != FREE {
                self.release(c, held, held.first);
                return Ok(Resolution::NothingLost);
            }
            let on_list = match self.walk(c, held.first, Some(index)) {
                Ok((_, found)) => found,
                Err(error) => {
                    self.release(c, held, held.first);
                    return Err(error);
                }
            };
            if on_list {
                self.release(c, held, held.first);
                return Ok(Resolution::NothingLost);
            }
            let busy = self
                .layout
                .journal_offsets
                .iter()
                .enumerate()
                .filter(|&(i, _)| Some(i) != skip)
                .filter_map(|(_, &offset)| self.shared().u32_at(offset))
                .any(|journal| journal.load(Ordering::Acquire) == entry);
            // The state once more, after the journals: a participant that popped the slot
            // before the hold may have recorded itself and cleared its journal since the state
            // was read. Then the journal read above acquired its Release store, so this load
            // sees the slot Allocated (or a later life of it: another generation).
            if busy || meta.gen_state.load(Ordering::Acquire) != seen {
                // A live participant popped it and is about to record itself, or freed it and
                // is about to push it: let it finish.
                self.release(c, held, held.first);
                yield_now();
                continue;
            }
            // Free, off the list, and nobody is busy with it: lost (by the dead owner).
            meta.owner.store(NO_OWNER, Ordering::Relaxed);
            // Release: an audit that reads this link sees the hold (see `audit`).
            meta.next_free.store(held.first, Ordering::Release);
            self.release(c, held, index);
            return Ok(Resolution::Recovered(self.notify_slot_available(c)?));
        }
        Ok(Resolution::Pending)
    }

    // ----- growth (R8) -----

    /// Add an extent to `class` and return one of its slots, allocated; `None` when the class
    /// has all its extents or the reservation is used up.
    ///
    /// Where the extent goes is decided by the private extent table (R4), not by the shared
    /// `current_size` alone: never below the end of every extent this participant knows (all
    /// classes, adopted after a check that they overlap nothing) and of its own reservations in
    /// progress. A `current_size` another process rewound is a hint that is overruled, and the
    /// reservation's compare-and-swap repairs it.
    fn grow(&self, class: usize) -> Result<Option<SlotHandle>, SlabError> {
        let header = self.header(class)?;
        let max_extents = self.layout.max_extents as usize;
        // An extent number is free when nothing is published there and this handle knows no
        // extent there either (R4: a number whose shared offset another process zeroed is not
        // reused over the extent this handle knows).
        let next_unpublished = |from: usize| {
            (from..max_extents).find(|&e| {
                header.extent_offsets[e].load(Ordering::Acquire) == 0
                    && self.cache[class].extents[e].load(Ordering::Acquire) == 0
            })
        };
        let Some(mut extent) = next_unpublished(0) else {
            return Ok(None);
        };
        // Someone may have freed or grown while we looked.
        if let Some(handle) = self.pop(class)? {
            return Ok(Some(handle));
        }
        let size = self.layout.geometry[class].size as u64;
        let current_size = self.current_size()?;
        let mut table = lock(&self.extents);
        let floor = self.private_end(&table) as u64;
        let mut seen = current_size.load(Ordering::Acquire);
        let start = loop {
            if seen > self.layout.max_size as u64 {
                return Err(corrupt(class, Corruption::CurrentSize { value: seen }));
            }
            let start = seen.max(floor).next_multiple_of(64);
            let end = start + size;
            if end > self.layout.max_size as u64 {
                return Ok(None);
            }
            // R8: reserve [start, end) atomically; two growers never get overlapping ranges.
            match current_size.compare_exchange_weak(seen, end, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break start,
                Err(found) => seen = found,
            }
        };
        let (start, end) = (start as usize, (start + size) as usize);
        // R4: ours until published, so no extent another process publishes over it is adopted.
        table.push((start, end));
        drop(table);
        let forget = |give: bool| {
            lock(&self.extents).retain(|&reserved| reserved != (start, end));
            if give {
                give_back(current_size, start, end);
            }
        };
        if let Err(error) = self.region.grow_to(end) {
            forget(true);
            return Err(error.into());
        }
        // Every slot starts allocated and owned by this grower: a crash from here on leaves
        // nothing that reclaim(me) cannot find.
        let config = self.layout.classes[class];
        let meta_base = start + self.layout.geometry[class].meta_offset;
        for slot in 0..config.slots_per_extent as usize {
            let meta = SlotMeta::new(0, ALLOCATED, FREE_LIST_END, self.me.raw());
            // SAFETY: [start, end) was reserved by the CAS above for this call alone, and no
            // extent offset names it yet, so nobody else reaches it.
            if !unsafe {
                self.shared()
                    .init(meta_base + slot * size_of::<SlotMeta>(), meta)
            } {
                forget(false);
                return Err(self.too_small());
            }
        }
        #[cfg(loom)]
        if let Some(cell) = self.cache[class].initialised.get(start / 64) {
            cell.with_mut(|_| ());
        }
        let shift = config.slots_per_extent.trailing_zeros();
        let slots_of = |extent: usize| {
            let first = (extent as u32) << shift;
            (first..first + config.slots_per_extent)
                .map(move |index| SlotHandle::from_parts(class as u16, index, 0))
        };
        {
            // R4: the publication and the private table's record of it under the table's lock,
            // so that no adoption (the auditor's restore, say) ever sees the extent published
            // but not yet this handle's; and the new slots in the ledger before they are
            // reachable, so that none is ever this handle's without its ledger saying so.
            let mut table = lock(&self.extents);
            loop {
                if slots_of(extent).any(|slot| !self.ledger.claim(slot)) {
                    slots_of(extent).for_each(|slot| {
                        self.ledger.release(slot);
                    });
                    drop(table);
                    forget(false);
                    return Err(SlabError::Held {
                        class: class as u16,
                        index: (extent as u32) << shift,
                    });
                }
                if let Err(error) = self.write_extent_header(class, extent as u16, start) {
                    slots_of(extent).for_each(|slot| {
                        self.ledger.release(slot);
                    });
                    drop(table);
                    forget(false);
                    return Err(error);
                }
                // R8: publish with Release: whoever reads the offset sees the initialised extent.
                let published = header.extent_offsets[extent].compare_exchange(
                    0,
                    start as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if published.is_ok() {
                    break;
                }
                slots_of(extent).for_each(|slot| {
                    self.ledger.release(slot);
                });
                match next_unpublished(extent + 1) {
                    Some(next) => extent = next,
                    None => {
                        drop(table);
                        forget(true);
                        return Ok(None);
                    }
                }
            }
            table.retain(|&reserved| reserved != (start, end));
            self.cache[class].extents[extent].store(start as u64, Ordering::Release);
        }
        header
            .total_slots
            .fetch_add(config.slots_per_extent, Ordering::Relaxed);
        if let Some(count) = self.shared().u32_at(self.layout.extent_count_offset) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // The first slot is the grower's (in its ledger already); the others leave the ledger
        // as they are freed.
        for slot in slots_of(extent).skip(1) {
            let freed = self.free_slot(slot, Ledgered::Release)?;
            if freed.wake_waiters {
                // R11: an allocator sleeps on the class's word: the caller wakes it.
                self.wakes.fetch_or(1 << class, Ordering::Release);
            }
        }
        Ok(slots_of(extent).next())
    }

    /// The end of every extent this participant knows and of its reservations in progress,
    /// and at least the initial size: where its next growth may start (R4). Every published
    /// extent is adopted first, if it fits the table.
    fn private_end(&self, reservations: &[(usize, usize)]) -> usize {
        let mut end = self.layout.initial_size;
        for class in 0..self.layout.classes.len() {
            let size = self.layout.geometry[class].size;
            for extent in 0..self.layout.max_extents as usize {
                if let Ok(start) = self.adopt(class, extent, reservations) {
                    end = end.max(start + size);
                }
            }
        }
        reservations
            .iter()
            .fold(end, |end, &(_, stop)| end.max(stop))
    }

    /// Classes (bit `1 << class`) in which a growth by this handle freed slots while an
    /// allocator slept on the class's futex word: the caller should make the `FUTEX_WAKE`
    /// system call on each class's [`slot_available_word`](Self::slot_available_word), as it
    /// does after a [`Freed`] with `wake_waiters`. Cleared by the call.
    pub fn take_wakes(&self) -> u32 {
        if self.wakes.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.wakes.swap(0, Ordering::Acquire)
    }

    /// Write extent `extent`'s header at `start`: for inspectors; the allocator never reads it.
    fn write_extent_header(
        &self,
        class: usize,
        extent: u16,
        start: usize,
    ) -> Result<(), SlabError> {
        let config = self.layout.classes[class];
        let geometry = self.layout.geometry[class];
        let header = ExtentHeader {
            class: class as u16,
            extent_index: extent,
            base_global_index: u32::from(extent) << config.slots_per_extent.trailing_zeros(),
            slot_count: config.slots_per_extent,
            slot_size: config.slot_size,
            meta_offset: geometry.meta_offset as u32,
            data_offset: geometry.data_offset as u32,
            _pad: [0; 32],
        };
        // SAFETY: the extent at `start` is not published yet (growth) or the whole allocator
        // is being built (init): nobody else reaches these bytes.
        if unsafe { self.shared().init(start, header) } {
            Ok(())
        } else {
            Err(self.too_small())
        }
    }

    // ----- addressing (R3) -----

    #[inline(always)]
    fn shared(&self) -> Shared<'_, R> {
        Shared::new(&self.region)
    }

    fn too_small(&self) -> SlabError {
        SlabError::RegionTooSmall {
            needed: self.layout.initial_size,
            len: self.region.len(),
            reservation: self.region.reservation(),
        }
    }

    fn class_header_offset(&self, class: usize) -> usize {
        self.layout.class_headers_offset + class * size_of::<SizeClassHeader>()
    }

    #[inline(always)]
    fn header(&self, class: usize) -> Result<ClassHeader<'_>, SlabError> {
        self.shared()
            .class_header_at(self.class_header_offset(class))
            .ok_or_else(|| self.too_small())
    }

    #[inline(always)]
    fn journal(&self) -> Result<&AtomicU32, SlabError> {
        self.shared()
            .u32_at(self.journal_offset)
            .ok_or_else(|| self.too_small())
    }

    /// This owner's journal, for one window (R5).
    #[inline(always)]
    fn enter_journal(&self) -> Result<JournalGuard<'_>, SlabError> {
        Ok(JournalGuard::enter(&self.journal_lock, self.journal()?))
    }

    fn current_size(&self) -> Result<&AtomicU64, SlabError> {
        self.shared()
            .u64_at(self.layout.current_size_offset)
            .ok_or_else(|| self.too_small())
    }

    fn journal_entries(&self) -> Vec<u32> {
        self.layout
            .journal_offsets
            .iter()
            .filter_map(|&offset| self.shared().u32_at(offset))
            .map(|journal| journal.load(Ordering::Acquire))
            .collect()
    }

    /// The class of a handle, checked against the layout.
    #[inline(always)]
    fn class_index(&self, class: u16, index: u32) -> Result<usize, SlabError> {
        let c = usize::from(class);
        if c < self.layout.classes.len() {
            Ok(c)
        } else {
            Err(SlabError::BadHandle { class, index })
        }
    }

    #[inline(always)]
    fn split_index(&self, class: usize, index: u32) -> (usize, u32) {
        let shift = self.layout.classes[class].slots_per_extent.trailing_zeros();
        ((index >> shift) as usize, index & ((1 << shift) - 1))
    }

    #[inline(always)]
    fn handle_meta(&self, class: usize, handle: SlotHandle) -> Result<&SlotMeta, SlabError> {
        self.meta(class, handle.index)
            .map_err(|_| bad_handle(handle))
    }

    /// The meta of slot `index` of `class`, when its extent is published and valid.
    #[inline(always)]
    fn meta(&self, class: usize, index: u32) -> Result<&SlotMeta, Corruption> {
        let (extent, slot) = self.split_index(class, index);
        let base = self.extent_base(class, extent)?;
        let offset =
            base + self.layout.geometry[class].meta_offset + slot as usize * size_of::<SlotMeta>();
        self.shared()
            .meta_at(offset)
            .ok_or(Corruption::ExtentOffset {
                extent: extent as u32,
                offset: base as u64,
            })
    }

    /// The offset of extent `extent` of `class`: from the private cache, or read once from the
    /// header, checked, and cached (R3, R4: adopted into the private extent table). An
    /// unpublished extent is an error too.
    #[inline(always)]
    fn extent_base(&self, class: usize, extent: usize) -> Result<usize, Corruption> {
        let Some(cached) = self.cache[class].extents.get(extent) else {
            return Err(Corruption::ExtentOffset {
                extent: extent as u32,
                offset: 0,
            });
        };
        // Acquire pairs with the Release of `adopt`: the extent was checked and its publication
        // acquired by whoever cached it.
        let known = cached.load(Ordering::Acquire);
        if known != 0 {
            self.cache[class].touch(known as usize);
            return Ok(known as usize);
        }
        let table = lock(&self.extents);
        self.adopt(class, extent, &table)
    }

    /// Adopt extent `extent` of `class` into the private table, under the table's lock (whose
    /// reservations in progress are `reservations`): its published offset is read once and
    /// checked (R3), and it must overlap no extent already adopted, of any class, and no
    /// reservation in progress (R4: an offset another process published over live memory is
    /// refused, never used).
    fn adopt(
        &self,
        class: usize,
        extent: usize,
        reservations: &[(usize, usize)],
    ) -> Result<usize, Corruption> {
        let mut bad = Corruption::ExtentOffset {
            extent: extent as u32,
            offset: 0,
        };
        let cached = self.cache[class].extents.get(extent).ok_or(bad)?;
        let known = cached.load(Ordering::Acquire);
        if known != 0 {
            self.cache[class].touch(known as usize);
            return Ok(known as usize);
        }
        let header = self.header(class).map_err(|_| bad)?;
        // R8: Acquire pairs with the grower's Release publication.
        let offset = header.extent_offsets[extent].load(Ordering::Acquire);
        let size = self.layout.geometry[class].size as u64;
        bad = Corruption::ExtentOffset {
            extent: extent as u32,
            offset,
        };
        let valid = if extent == 0 {
            offset == self.layout.initial_extent_offsets[class] as u64
        } else {
            offset >= self.layout.initial_size as u64
                && offset.is_multiple_of(64)
                && offset
                    .checked_add(size)
                    .is_some_and(|end| end <= self.layout.max_size as u64)
        };
        if !valid || !self.shared().covers(offset as usize, size as usize) {
            return Err(bad);
        }
        if extent != 0 {
            let (start, end) = (offset as usize, (offset + size) as usize);
            let overlaps = |other: usize, len: usize| start < other + len && other < end;
            let adopted = (0..self.layout.classes.len()).any(|c| {
                let len = self.layout.geometry[c].size;
                self.cache[c]
                    .extents
                    .iter()
                    .map(|cell| cell.load(Ordering::Acquire) as usize)
                    .any(|other| other != 0 && overlaps(other, len))
            });
            let reserved = reservations
                .iter()
                .any(|&(other, stop)| overlaps(other, stop - other));
            if adopted || reserved {
                return Err(bad);
            }
        }
        cached.store(offset, Ordering::Release);
        self.cache[class].touch(offset as usize);
        Ok(offset as usize)
    }

    /// Extents of `class` that are published and valid, in order, up to the first that is not.
    fn published_extents(&self, class: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.layout.max_extents as usize)
            .map_while(move |extent| self.extent_base(class, extent).ok().map(|_| extent))
    }

    /// Call `f(global_index, meta)` for every slot of every published extent of `class`.
    fn for_each_meta<'s>(&'s self, class: usize, mut f: impl FnMut(u32, &'s SlotMeta)) {
        let slots = self.layout.classes[class].slots_per_extent;
        let shift = slots.trailing_zeros();
        for extent in self.published_extents(class) {
            for slot in 0..slots {
                let index = (extent as u32) << shift | slot;
                if let Ok(meta) = self.meta(class, index) {
                    f(index, meta);
                }
            }
        }
    }
}

/// A held list: its first slot and the tag of the held head.
#[derive(Clone, Copy)]
struct Held {
    first: u32,
    tag: u32,
}

enum Resolution {
    NothingLost,
    Recovered(bool),
    Pending,
}

/// An owner's journal, taken for one two-step operation (a pop or a free).
///
/// The threads of one owner (one process) take turns for the few instructions between naming a
/// slot and accounting for it, under the owner's private lock, so every window has the journal
/// to itself and a crash of the process leaves at most one slot named, the one that is really
/// in a window. The shared word is only written here, never waited on: garbage another process
/// writes into it is overwritten by the next name, and costs nothing (R4). Dropping the guard
/// empties the journal, on every path, then lets the next thread in.
struct JournalGuard<'j> {
    word: &'j AtomicU32,
    _turn: MutexGuard<'j, ()>,
}

impl<'j> JournalGuard<'j> {
    fn enter(turn: &'j Mutex<()>, word: &'j AtomicU32) -> Self {
        // The lock's Acquire: the previous holder's writes (its slot recorded) come before ours.
        Self {
            _turn: lock(turn),
            word,
        }
    }

    /// Name `slot_ref` as the slot of the window (R5). Release, as every journal store: whoever
    /// reads the journal with Acquire sees what this owner did before.
    #[inline]
    fn name(&self, slot_ref: u32) {
        self.word.store(slot_ref + 1, Ordering::Release);
    }
}

impl Drop for JournalGuard<'_> {
    fn drop(&mut self) {
        self.word.store(JOURNAL_EMPTY, Ordering::Release);
    }
}

/// Waiting for a held list: spin, then yield, and give up after a second.
#[derive(Default)]
struct HeldWait {
    #[cfg(not(loom))]
    since: Option<std::time::Instant>,
    spins: u32,
}

impl HeldWait {
    const SPINS: u32 = 64;
    #[cfg(not(loom))]
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

    fn wait(&mut self, class: usize) -> Result<(), SlabError> {
        self.spins += 1;
        if self.spins < Self::SPINS {
            crate::sync::spin_loop();
            return Ok(());
        }
        #[cfg(not(loom))]
        {
            let since = *self.since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > Self::PATIENCE {
                return Err(SlabError::ListHeld {
                    class: class as u16,
                });
            }
        }
        #[cfg(loom)]
        let _ = class;
        yield_now();
        Ok(())
    }
}

fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// What a free does with the freeing participant's ledger cell of the slot.
#[derive(Clone, Copy)]
enum Ledgered {
    /// Nothing: the participant does not hold the slot (reclaim's and recovery's frees).
    Untouched,
    /// Release the cell if it holds the handle at its generation.
    Release,
    /// Empty the cell: it is the free's own since [`Ledger::begin_keep`].
    Forget,
}

/// Whether an allocator announced that it waits for a slot of the class: a free that finds one
/// puts its slot on the list and wakes it rather than keep the slot.
#[inline]
fn has_waiter(header: ClassHeader<'_>) -> bool {
    // Relaxed: a stale answer keeps one slot more (given back before its keeper sleeps) or
    // pushes one more; the push path's wake is R11's, with its own ordering.
    header.slot_available_futex.load(Ordering::Relaxed) & WAITER_BIT != 0
}

/// An empty magazine per class of `layout`.
fn magazines(layout: &SlabLayout) -> std::sync::Arc<[Magazine]> {
    layout
        .classes
        .iter()
        .map(|class| Magazine::for_class(class.slots_per_extent))
        .collect()
}

/// After a push on `header`'s list: bump the class's futex word when an allocator announced it
/// sleeps (R11), and say whether one did.
#[inline(always)]
fn notify_waiters(header: ClassHeader<'_>) -> bool {
    let word = &header.slot_available_futex;
    loom_seqcst();
    // R11: SeqCst, after the SeqCst push: see `announce_waiter`.
    if word.load(Ordering::SeqCst) & WAITER_BIT == 0 {
        return false;
    }
    // Clear the bit and move the sequence on in one step, so a sleeper's FUTEX_WAIT on the
    // old value fails or is woken.
    let _ = word.fetch_update(Ordering::Release, Ordering::Relaxed, |w| {
        Some((w | WAITER_BIT).wrapping_add(SEQUENCE_STEP) & !WAITER_BIT)
    });
    true
}

/// Nothing, except under loom: a SeqCst fence. Loom treats SeqCst loads, stores and
/// read-modify-writes as AcqRel (see its README), so it would not give R11's handshake (a SeqCst
/// write of one word, then a SeqCst load of the other, on each side) the single total order the
/// real accesses have, and would report lost wakeups that cannot happen. A fence between the two
/// accesses of each side gives the model that order.
#[inline(always)]
fn loom_seqcst() {
    #[cfg(loom)]
    crate::sync::fence(Ordering::SeqCst);
}

/// Undo a reservation of `[start, end)` when it is still the last one.
fn give_back(current_size: &AtomicU64, start: usize, end: usize) {
    let _ = current_size.compare_exchange(
        end as u64,
        start as u64,
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
}

fn corrupt(class: usize, corruption: Corruption) -> SlabError {
    SlabError::Corrupt {
        class: class as u16,
        corruption,
    }
}

fn bad_handle(handle: SlotHandle) -> SlabError {
    SlabError::BadHandle {
        class: handle.class,
        index: handle.index,
    }
}

fn state_name(state: u32) -> &'static str {
    match state {
        FREE => "free",
        ALLOCATED => "allocated",
        IN_FLIGHT => "in flight",
        _ => "garbage",
    }
}

/// The error of a failed transition CAS that expected `(handle.generation, expected)`.
fn transition_error(handle: SlotHandle, found: u64, expected: &'static str) -> SlabError {
    let (generation, state) = split(found);
    if generation != handle.generation {
        return SlabError::StaleHandle {
            handle: handle.generation,
            slot: generation,
        };
    }
    if SlotState::from_u32(state).is_none() {
        return corrupt(
            usize::from(handle.class),
            Corruption::BadState {
                index: handle.index,
                state,
            },
        );
    }
    SlabError::WrongState {
        class: handle.class,
        index: handle.index,
        expected,
        found: state_name(state),
    }
}

/// The error of a free that found `found` in the slot's `(generation, state)`.
fn free_error(handle: SlotHandle, found: u64) -> SlabError {
    let (generation, state) = split(found);
    if state == FREE && generation == handle.generation.wrapping_add(1) {
        return SlabError::DoubleFree {
            class: handle.class,
            index: handle.index,
        };
    }
    transition_error(handle, found, "allocated or in flight")
}
