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
//!
//! # Where each job lives
//!
//! This module holds [`Slab`] itself: its handles, allocation, sending and accepting, and how
//! it finds shared words (R3). The rest is one module per job: `list` (the free lists, R7),
//! `free` (frees and kept slots, see [`crate::magazine`]), `growth` (R8), `recovery` (R10:
//! reclaim, journals, rebuild), `audit` (R4: the host's checks of shared words against its own
//! truth) and `reports` (what the operations return).

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
use crate::lock::{TurnGuard, TurnLock};
use crate::magazine::{Magazine, hinted_offset, meta_hint};
use crate::region::Region;
use crate::shared::{ClassHeader, Shared, SlotMeta, join, prefetch, split};
use crate::sync::{AtomicU32, AtomicU64, Mutex, Ordering, lock};
use crate::wake::{self, WAITER_BIT};

mod audit;
mod free;
mod growth;
mod list;
mod recovery;
mod reports;

pub use reports::{
    ClassAudit, ClassStats, Freed, Orphan, RebuildReport, ReclaimReport, SlotStatus,
};

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
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotHandle {
    /// The global index in the low half, the generation in the high half.
    slot: u64,
    /// The class, widened to a word of its own.
    ///
    /// A handle is two whole words so that one returned through memory (a `Result` is) and
    /// read back moves as two 8-byte stores and two 8-byte loads: a processor forwards a stored
    /// value to a load only when the load lies inside that one store, and three fields of two
    /// widths, or a `u16` beside padding, were read back across several stores, each read
    /// waiting for them to reach the cache.
    class: u64,
}

impl SlotHandle {
    /// A handle from its parts; the allocator checks them when the handle is used.
    pub const fn from_parts(class: u16, index: u32, generation: u32) -> Self {
        Self {
            slot: index as u64 | (generation as u64) << 32,
            class: class as u64,
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
        self.class as u16
    }

    /// Global index within the class: `extent << extent_slot_shift | slot`.
    pub const fn index(&self) -> u32 {
        self.slot as u32
    }

    /// Generation of the slot when the handle was made.
    pub const fn generation(&self) -> u32 {
        (self.slot >> 32) as u32
    }

    /// The slot reference a descriptor carries (class in the top three bits).
    pub fn slot_ref(&self) -> u32 {
        encode_slot_ref(self.class(), self.index())
    }
}

impl std::fmt::Debug for SlotHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotHandle")
            .field("class", &self.class())
            .field("index", &self.index())
            .field("generation", &self.generation())
            .finish()
    }
}

/// A class's private copies (R3): its shape, from the private layout, and its validated extent
/// offsets, 0 until first seen. The shape is copied here so that a slot's lookup reads one
/// private struct.
struct ClassCache {
    /// `log2(slots_per_extent)`: a global index's extent is `index >> shift`.
    shift: u32,
    /// Where an extent's slot metas start, from the extent's offset.
    meta_offset: usize,
    /// Where an extent's slot data start, from the extent's offset.
    data_offset: usize,
    /// Bytes per slot.
    slot_size: usize,
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
    /// This owner's threads take turns in their journal windows under this private lock (one
    /// read-modify-write a window, see [`crate::lock`]), so that whatever another process
    /// writes into the shared journal word never makes them wait.
    journal_lock: std::sync::Arc<TurnLock<()>>,
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
                // Linked in the order `list_order` gives, from slot 0 (the head below).
                let order: Vec<u32> = list_order(slots).collect();
                for (i, &slot) in order.iter().enumerate() {
                    let next = order.get(i + 1).copied().unwrap_or(FREE_LIST_END);
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
            journal_lock: std::sync::Arc::new(TurnLock::new(())),
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
            .zip(&layout.geometry)
            .map(|(config, geometry)| ClassCache {
                shift: config.slots_per_extent.trailing_zeros(),
                meta_offset: geometry.meta_offset,
                data_offset: geometry.data_offset,
                slot_size: config.slot_size as usize,
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
            journal_lock: std::sync::Arc::new(TurnLock::new(())),
            extents: std::sync::Arc::new(Mutex::new(Vec::new())),
            wakes: std::sync::Arc::new(AtomicU32::new(0)),
        };
        let headers_end = slab.class_header_offset(slab.layout.classes.len());
        // `class_futex_within` reads the headers' words with no check of its own.
        if !slab
            .layout
            .class_headers_offset
            .is_multiple_of(align_of::<SizeClassHeader>())
        {
            return Err(SlabError::BadConfig(
                "class headers not aligned for their words".into(),
            ));
        }
        if slab.region.reservation() < slab.layout.max_size
            || !slab
                .shared()
                .covers(0, slab.layout.initial_size.max(headers_end))
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
    #[inline]
    pub fn alloc(&self, len: usize) -> Result<SlotHandle, SlabError> {
        // The common case, inlined into the caller so that the handle reaches it in registers:
        // a slot this participant kept, in the smallest class that fits.
        if let Some(fits) = self.smallest_fit(len)
            && let Some(handle) = self.take_kept(fits)
        {
            return Ok(handle);
        }
        self.alloc_slow(len)
    }

    /// The smallest class whose slots hold `len` bytes, if any.
    #[inline(always)]
    fn smallest_fit(&self, len: usize) -> Option<usize> {
        self.layout
            .classes
            .iter()
            .position(|c| c.slot_size as usize >= len)
    }

    /// [`alloc`](Self::alloc) when this participant keeps no slot of the smallest class that
    /// fits.
    #[inline(never)]
    fn alloc_slow(&self, len: usize) -> Result<SlotHandle, SlabError> {
        let fits = self
            .smallest_fit(len)
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
    #[inline]
    pub fn alloc_in(&self, class: u16) -> Result<SlotHandle, SlabError> {
        // As in `alloc`: a kept slot inlined, the rest out of line.
        if let Ok(c) = self.class_index(class, 0)
            && let Some(handle) = self.take_kept(c)
        {
            return Ok(handle);
        }
        self.alloc_in_slow(class)
    }

    /// [`alloc_in`](Self::alloc_in) when this participant keeps no slot of the class.
    #[inline(never)]
    fn alloc_in_slow(&self, class: u16) -> Result<SlotHandle, SlabError> {
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
        let class = self.class_index(handle.class(), handle.index())?;
        let meta = self.handle_meta(class, handle)?;
        self.check_not_held_otherwise(handle)?;
        let from = join(handle.generation(), ALLOCATED);
        let to = join(handle.generation(), IN_FLIGHT);
        // R5: one CAS on (generation, state); Release so the receiver, which checks the state
        // with Acquire, sees what the sender wrote in the slot.
        if let Err(found) =
            meta.gen_state
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(transition_error(handle, found, "allocated"));
        }
        // The sender, in `next_free`, which means nothing while the slot is off the free list
        // (and only now is it sure to be: the CAS above won). A receiver checks it
        // (SlotStatus::sender), so no third participant can forge a descriptor for this slot
        // and take the frame (R6). Before the owner: see below.
        meta.next_free.store(self.me.raw(), Ordering::Release);
        // R6: the receiver must free it next. The last word this sender writes: once it names
        // the receiver, the receiver's reclaim may free the slot and link it on the list, and
        // a store after this one would land on that link. A crash before this store leaves the
        // slot in flight but owned by the sender, whose reclaim frees it: the descriptor was
        // not published yet. The ring's Release publication of the descriptor, which comes
        // after this call, publishes both words.
        meta.owner.store(receiver.raw(), Ordering::Release);
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
    #[inline]
    pub fn accept(&self, handle: SlotHandle, sender: OwnerId) -> Result<(), Refusal> {
        let class = self
            .class_index(handle.class(), handle.index())
            .map_err(|_| Refusal::NoSuchSlot)?;
        let (meta, data) = self
            .slot_parts(class, handle.index())
            .map_err(|_| Refusal::NoSuchSlot)?;
        // The payload's first line is asked for now, while the meta's comes: the receiver
        // reads both next, and both were last written by the sender's process, so each is a
        // line that crosses. Fetched one after the other they cost two crossings, together one.
        prefetch(data);
        let status = status_of(meta);
        if status.generation != handle.generation() {
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

    /// The start of a slot's bytes ([`slot_size`](Self::slot_size) of them), for the holder of
    /// `handle` to read or write through raw pointers. Checks that the handle names a slot of a
    /// published extent, not its state: the caller must know it holds the slot (R4).
    ///
    /// # Errors
    /// [`SlabError::BadHandle`].
    #[inline]
    pub fn slot_data(&self, handle: SlotHandle) -> Result<NonNull<u8>, SlabError> {
        let class = self.class_index(handle.class(), handle.index())?;
        // The meta's address, computed beside, is dropped unused (a few additions).
        self.slot_parts(class, handle.index())
            .map(|(_, data)| data)
            .map_err(|_| bad_handle(handle))
    }

    /// A copy of a slot's meta (R3).
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when no published slot has this class and index.
    #[inline]
    pub fn slot_status(&self, class: u16, index: u32) -> Result<SlotStatus, SlabError> {
        let handle = SlotHandle::from_parts(class, index, 0);
        let c = self.class_index(class, index)?;
        Ok(status_of(self.handle_meta(c, handle)?))
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
        Some(self.class_futex_within(class))
    }

    /// The futex word of `class`, a class of the layout, straight from its offset, without a
    /// look at the region's length: a free that may keep its slot reads it (building the
    /// whole [`ClassHeader`] to get it cost a store-forwarding stall each time).
    #[inline(always)]
    fn class_futex_within(&self, class: usize) -> &AtomicU32 {
        debug_assert!(class < self.layout.classes.len());
        // SAFETY: `new` checked that the region covers every class header and that the headers
        // start aligned for `SizeClassHeader`, whose fields are aligned within it; the region's
        // usable length never decreases.
        unsafe {
            self.shared().object_within::<AtomicU32>(
                self.class_header_offset(class)
                    + std::mem::offset_of!(SizeClassHeader, slot_available_futex),
            )
        }
    }

    /// `class`'s free-list head, for a look that needs no `Result`: `class` must be one of the
    /// layout's.
    #[inline(always)]
    pub(super) fn class_head_within(&self, class: usize) -> &AtomicU64 {
        debug_assert!(class < self.layout.classes.len());
        // SAFETY: as in `class_futex_within`: `new` checked that the region covers every class
        // header, aligned for `SizeClassHeader`; the region's usable length never decreases.
        unsafe {
            self.shared().object_within::<AtomicU64>(
                self.class_header_offset(class) + std::mem::offset_of!(SizeClassHeader, free_head),
            )
        }
    }

    /// Say that an allocator of `class` is about to sleep on its futex word, and return the
    /// value to sleep on. `None` when there is no such class.
    pub fn announce_waiter(&self, class: u16) -> Option<u32> {
        // R11: the protocol's announcement; the caller checks `has_free_slot` next.
        Some(wake::announce(self.slot_available_word(class)?))
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
        let shift = self.cache[class].shift;
        ((index >> shift) as usize, index & ((1 << shift) - 1))
    }

    #[inline(always)]
    fn handle_meta(&self, class: usize, handle: SlotHandle) -> Result<&SlotMeta, SlabError> {
        self.meta(class, handle.index())
            .map_err(|_| bad_handle(handle))
    }

    /// The meta of slot `index` of `class`, when its extent is published and valid.
    #[inline(always)]
    fn meta(&self, class: usize, index: u32) -> Result<&SlotMeta, Corruption> {
        let offset = self.meta_offset(class, index)?;
        // SAFETY: an offset `meta_offset` gave.
        Ok(unsafe { self.meta_at(offset) })
    }

    /// The offset of slot `index` of `class`'s meta, when its extent is published and valid.
    #[inline(always)]
    fn meta_offset(&self, class: usize, index: u32) -> Result<usize, Corruption> {
        let (extent, slot) = self.split_index(class, index);
        let base = self.extent_base(class, extent)?;
        Ok(base + self.cache[class].meta_offset + slot as usize * size_of::<SlotMeta>())
    }

    /// The meta at `offset`.
    ///
    /// # Safety
    /// `offset` is one [`meta_offset`](Self::meta_offset) gave this handle, or a handle that
    /// shares its region and extent cache (one made by [`with_owner`](Self::with_owner)): the
    /// extent it lies in is then one this handle's cache holds, for good.
    #[inline(always)]
    unsafe fn meta_at(&self, offset: usize) -> &SlotMeta {
        // SAFETY: `meta_offset` found the extent in this class's private cache, which holds
        // only extents seen whole inside the region and 64-aligned: checked by `adopt`, or
        // grown by this process (`grow_to` made the region reach the extent's end first); the
        // usable length never decreases. The class's metas lie inside each extent from
        // `meta_offset` (the private layout's geometry), `size_of::<SlotMeta>()` bytes each,
        // and the slot is below the slots per extent (the mask of `split_index`).
        unsafe { self.shared().object_within::<SlotMeta>(offset) }
    }

    /// The meta of slot `index` of `class` and the start of its bytes, when its extent is
    /// published and valid, with one lookup of the extent.
    #[inline(always)]
    fn slot_parts(&self, class: usize, index: u32) -> Result<(&SlotMeta, NonNull<u8>), Corruption> {
        let (extent, slot) = self.split_index(class, index);
        let base = self.extent_base(class, extent)?;
        let cache = &self.cache[class];
        let meta = base + cache.meta_offset + slot as usize * size_of::<SlotMeta>();
        let data = base + cache.data_offset + slot as usize * cache.slot_size;
        // SAFETY: as in `meta_at`: `base` is an extent in this class's private cache, seen
        // whole inside the region, and the slot's meta and its `slot_size` bytes lie inside it
        // (the private layout's geometry; `slot` is below the slots per extent, the mask of
        // `split_index`).
        unsafe {
            Ok((
                self.shared().object_within::<SlotMeta>(meta),
                self.shared().bytes_within(data, cache.slot_size),
            ))
        }
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
        self.adopt_extent(class, extent)
    }

    /// [`extent_base`](Self::extent_base) of an extent this handle has not cached yet: out of
    /// line, so that the hot paths that look extents up carry no lock.
    #[cold]
    #[inline(never)]
    fn adopt_extent(&self, class: usize, extent: usize) -> Result<usize, Corruption> {
        let table = lock(&self.extents);
        self.adopt(class, extent, &table)
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
    _turn: TurnGuard<'j, ()>,
}

impl<'j> JournalGuard<'j> {
    // Inlined: a guard returned through memory was read back whole, straddling the stores
    // that wrote it (a store-forwarding stall on every pop and free).
    #[inline(always)]
    fn enter(turn: &'j TurnLock<()>, word: &'j AtomicU32) -> Self {
        // The lock's Acquire: the previous holder's writes (its slot recorded) come before ours.
        Self {
            _turn: turn.lock(),
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
    #[inline(always)]
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
fn has_waiter(slot_available_futex: &AtomicU32) -> bool {
    // Relaxed: a stale answer keeps one slot more (given back before its keeper sleeps) or
    // pushes one more; the push path's wake is R11's, with its own ordering.
    slot_available_futex.load(Ordering::Relaxed) & WAITER_BIT != 0
}

/// Whether a class's free list, whose head is `free_head`, looks non-empty (or held): a free
/// keeps its slot only then. A slot freed while the list is empty may be the one some allocator
/// waits for without having announced it (an async task napping between tries, a caller of
/// `try_alloc_in` polling), so it goes on the list.
#[inline(always)]
fn list_looks_nonempty(free_head: &AtomicU64) -> bool {
    // Relaxed: a hint; a stale answer keeps one slot the list needed (given back before its
    // keeper sleeps) or lists one more.
    unpack_free_head(free_head.load(Ordering::Relaxed)).0 != FREE_LIST_END
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
    // R11: the push was a SeqCst RMW; the sequence step (Release) publishes the slot to the
    // waiter that reads the new value.
    wake::waiter_announced_after_rmw(word) && wake::take_announcement(word, Ordering::Release)
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

/// Slot metas that share a cache line.
const METAS_PER_LINE: u32 = (64 / size_of::<SlotMeta>()) as u32;

/// The slots `0..slots` of an extent in the order its fresh free list hands them out, slot 0
/// first: one slot of each meta line, then a second of each, and so on. Slots taken one after
/// another (by participants that each keep theirs, say) then have their metas on different
/// cache lines, and their allocs and frees do not write one line from two cores.
pub(crate) fn list_order(slots: u32) -> impl Iterator<Item = u32> {
    let stride = METAS_PER_LINE.min(slots).max(1);
    (0..stride).flat_map(move |first| (first..slots).step_by(stride as usize))
}

/// A copy of `meta` (R3): what [`Slab::slot_status`] reports.
#[inline(always)]
fn status_of(meta: &SlotMeta) -> SlotStatus {
    let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
    // The owner before the sender: `mark_in_flight` stores the sender first and the owner
    // last (Release), so an owner read here (Acquire) comes with its sender.
    let owner = meta.owner.load(Ordering::Acquire);
    let sender = if state == IN_FLIGHT {
        OwnerId::from_raw(meta.next_free.load(Ordering::Relaxed))
    } else {
        None
    };
    SlotStatus {
        generation,
        state: SlotState::from_u32(state),
        owner,
        sender,
    }
}

fn bad_handle(handle: SlotHandle) -> SlabError {
    SlabError::BadHandle {
        class: handle.class(),
        index: handle.index(),
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
    if generation != handle.generation() {
        return SlabError::StaleHandle {
            handle: handle.generation(),
            slot: generation,
        };
    }
    if SlotState::from_u32(state).is_none() {
        return corrupt(
            usize::from(handle.class()),
            Corruption::BadState {
                index: handle.index(),
                state,
            },
        );
    }
    SlabError::WrongState {
        class: handle.class(),
        index: handle.index(),
        expected,
        found: state_name(state),
    }
}

/// The error of a free that found `found` in the slot's `(generation, state)`.
fn free_error(handle: SlotHandle, found: u64) -> SlabError {
    let (generation, state) = split(found);
    if state == FREE && generation == handle.generation().wrapping_add(1) {
        return SlabError::DoubleFree {
            class: handle.class(),
            index: handle.index(),
        };
    }
    transition_error(handle, found, "allocated or in flight")
}
