//! Unit tests of the allocator, inside the crate so that they can write its shared state the way
//! a participant that crashes at a given instruction, or a faulty one, leaves it (R3, R5-R8,
//! R10).
//!
//! [`Raw`] is that participant: it reaches the shared words through the private layout and
//! [`Shared`], exactly where [`Slab`] finds them, and replays the first steps of a pop, a free
//! or a growth before "crashing".

use core::mem::size_of;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use hub_layout::{
    FREE_LIST_END, HOST_OWNER, KEPT_SLOT_MARK, NO_OWNER, SizeClassHeader, SlotState,
    encode_slot_ref, pack_free_head, unpack_free_head,
};
use proptest::prelude::*;

use crate::shared::{Shared, SlotMeta, join, split};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::{
    ClassConfig, ClassStats, Corruption, GrowError, HeapRegion, OwnerId, Region, Slab, SlabError,
    SlabLayout, SlotHandle,
};

type TestSlab = Slab<Arc<HeapRegion>>;

const FREE: u32 = SlotState::Free as u32;
const ALLOCATED: u32 = SlotState::Allocated as u32;
const IN_FLIGHT: u32 = SlotState::InFlight as u32;
/// The allocator's "held by a reclaim or rebuild" head index.
const LIST_HELD: u32 = FREE_LIST_END - 1;

const P0: OwnerId = OwnerId::peer(0);
const P1: OwnerId = OwnerId::peer(1);
const P2: OwnerId = OwnerId::peer(2);
const P3: OwnerId = OwnerId::peer(3);
const HOST: OwnerId = OwnerId::HOST;
/// Peers `0..MAX_PEERS_HERE` are admitted by [`layout`].
const MAX_PEERS_HERE: u16 = 4;

/// Three classes: 4 slots of 64 bytes, 4 of 256, 2 of 1024 per extent.
const CLASSES: [ClassConfig; 3] = [
    ClassConfig {
        slot_size: 64,
        slots_per_extent: 4,
    },
    ClassConfig {
        slot_size: 256,
        slots_per_extent: 4,
    },
    ClassConfig {
        slot_size: 1024,
        slots_per_extent: 2,
    },
];

fn layout(max_extents: u32) -> SlabLayout {
    SlabLayout::standalone(&CLASSES, max_extents, MAX_PEERS_HERE).unwrap()
}

fn heap(layout: &SlabLayout) -> Arc<HeapRegion> {
    Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()))
}

fn init_on<R: Region>(region: R, layout: SlabLayout) -> Slab<R> {
    // SAFETY: every test region is fresh, and nobody else reaches it before `init` returns.
    unsafe { Slab::init(region, layout, HOST) }.unwrap()
}

/// A fresh allocator of [`CLASSES`] with up to `max_extents` extents a class, as the host.
fn new_slab(max_extents: u32) -> TestSlab {
    let layout = layout(max_extents);
    init_on(heap(&layout), layout)
}

fn free_ok<R: Region>(slab: &Slab<R>, handle: SlotHandle) {
    freed_ok(slab.free(handle), handle);
}

/// [`free_ok`] onto the list, never kept: for the tests of the list's free path (a participant
/// that allocates in a class keeps some of its freed slots, see `crate::magazine`).
fn free_listed_ok<R: Region>(slab: &Slab<R>, handle: SlotHandle) {
    freed_ok(slab.free_to_list(handle), handle);
}

/// A free of `handle` that succeeded, in its class, with nobody to wake.
#[track_caller]
fn freed_ok(freed: Result<crate::Freed, SlabError>, handle: SlotHandle) {
    let freed = freed.unwrap_or_else(|e| panic!("free of {handle:?}: {e}"));
    assert_eq!(freed.class, handle.class());
    assert!(!freed.wake_waiters, "nobody announced a wait");
}

/// Checks that hold whenever nobody is in the middle of an operation, and the stats.
fn quiescent<R: Region>(slab: &Slab<R>) -> Vec<ClassStats> {
    let stats = slab.stats();
    for (class, s) in stats.iter().enumerate() {
        assert_eq!(s.slot_size, CLASSES[class].slot_size);
        assert_eq!(
            s.total,
            s.extents * CLASSES[class].slots_per_extent,
            "{s:?}"
        );
        assert_eq!(s.header_total, s.total, "class {class}: {s:?}");
        assert_eq!(
            s.free + s.allocated + s.in_flight + s.corrupt,
            s.total,
            "{s:?}"
        );
        assert_eq!(
            slab.free_list_len(class as u16).unwrap(),
            s.free - s.kept,
            "class {class}: the free list and the free states disagree: {s:?}"
        );
    }
    stats
}

/// Every published slot is free and on its list.
fn all_free<R: Region>(slab: &Slab<R>) -> Vec<ClassStats> {
    let stats = quiescent(slab);
    for s in &stats {
        assert_eq!((s.free, s.corrupt), (s.total, 0), "{s:?}");
    }
    stats
}

/// Take every slot there is (growing every class to its end), checking that no slot is handed
/// out twice; returns the handles.
fn drain<R: Region>(slab: &Slab<R>) -> Vec<SlotHandle> {
    let mut seen = HashSet::new();
    let mut handles = Vec::new();
    for class in 0..CLASSES.len() as u16 {
        loop {
            match slab.alloc_in(class) {
                Ok(handle) => {
                    assert_eq!(handle.class(), class);
                    assert!(
                        seen.insert((handle.class(), handle.index())),
                        "{handle:?} handed out twice"
                    );
                    handles.push(handle);
                }
                Err(SlabError::NoFreeSlots { class: c }) => {
                    assert_eq!(c, class);
                    break;
                }
                Err(e) => panic!("alloc_in({class}): {e}"),
            }
        }
    }
    handles
}

/// The shared state of a slab, reached the way `Slab` reaches it, for writing what a crashed
/// or faulty participant leaves behind.
struct Raw<'a, R: Region> {
    slab: &'a Slab<R>,
}

impl<'a, R: Region> Raw<'a, R> {
    fn new(slab: &'a Slab<R>) -> Self {
        Self { slab }
    }

    fn shared(&self) -> Shared<'a, R> {
        Shared::new(self.slab.region())
    }

    fn layout(&self) -> &'a SlabLayout {
        self.slab.layout()
    }

    fn header_offset(&self, class: usize) -> usize {
        self.layout().class_headers_offset + class * size_of::<SizeClassHeader>()
    }

    fn header(&self, class: usize) -> crate::shared::ClassHeader<'a> {
        self.shared()
            .class_header_at(self.header_offset(class))
            .unwrap()
    }

    /// One of the plain `u32` fields of a class header, at byte `at` of it.
    fn header_field(&self, class: usize, at: usize) -> &'a AtomicU32 {
        self.shared()
            .u32_at(self.header_offset(class) + at)
            .unwrap()
    }

    fn meta(&self, class: usize, index: u32) -> &'a SlotMeta {
        let shift = CLASSES[class].slots_per_extent.trailing_zeros();
        let (extent, slot) = (index >> shift, index & ((1 << shift) - 1));
        let base = self.header(class).extent_offsets[extent as usize].load(Ordering::Acquire);
        assert_ne!(base, 0, "extent {extent} of class {class} is not published");
        let offset = base as usize
            + self.layout().geometry[class].meta_offset
            + slot as usize * size_of::<SlotMeta>();
        self.shared().meta_at(offset).unwrap()
    }

    fn journal(&self, owner: OwnerId) -> &'a AtomicU32 {
        let index = self.layout().journal_index(owner).unwrap();
        self.shared()
            .u32_at(self.layout().journal_offsets[index])
            .unwrap()
    }

    fn current_size(&self) -> &'a AtomicU64 {
        self.shared()
            .u64_at(self.layout().current_size_offset)
            .unwrap()
    }

    /// The published extent offsets of `class`, up to the first unpublished one.
    fn extent_offsets(&self, class: usize) -> Vec<u64> {
        let header = self.header(class);
        (0..self.layout().max_extents() as usize)
            .map(|extent| header.extent_offsets[extent].load(Ordering::Acquire))
            .take_while(|&offset| offset != 0)
            .collect()
    }

    fn extent_count(&self) -> &'a AtomicU32 {
        self.shared()
            .u32_at(self.layout().extent_count_offset)
            .unwrap()
    }

    /// `(index, tag)` of a class's free-list head.
    fn head(&self, class: usize) -> (u32, u32) {
        unpack_free_head(self.header(class).free_head.load(Ordering::Acquire))
    }

    /// Scribble the head's index (and move the tag on, as any swap does).
    fn set_head(&self, class: usize, index: u32) {
        let (_, tag) = self.head(class);
        self.header(class).free_head.store(
            pack_free_head(index, tag.wrapping_add(1)),
            Ordering::Release,
        );
    }

    /// `(generation, state)` of a slot.
    fn gen_state(&self, class: usize, index: u32) -> (u32, u32) {
        split(self.meta(class, index).gen_state.load(Ordering::Acquire))
    }

    fn set_gen_state(&self, class: usize, index: u32, generation: u32, state: u32) {
        self.meta(class, index)
            .gen_state
            .store(join(generation, state), Ordering::Release);
    }

    /// `owner` pops the head of `class` as `Slab::pop` does (journal, then the tagged CAS),
    /// and, when `record_owner`, records itself as the owner; then it dies. Returns the slot,
    /// or `None` when the list is empty. Safe against concurrent pops and pushes: the CAS is
    /// the real one.
    fn crash_after_pop_cas(&self, owner: OwnerId, class: usize, record_owner: bool) -> Option<u32> {
        let header = self.header(class);
        loop {
            let head = header.free_head.load(Ordering::Acquire);
            let (index, tag) = unpack_free_head(head);
            if index == FREE_LIST_END {
                return None;
            }
            if index == LIST_HELD {
                std::thread::yield_now();
                continue;
            }
            let meta = self.meta(class, index);
            let next = meta.next_free.load(Ordering::Relaxed);
            self.journal(owner)
                .store(encode_slot_ref(class as u16, index) + 1, Ordering::Relaxed);
            if header
                .free_head
                .compare_exchange(
                    head,
                    pack_free_head(next, tag.wrapping_add(1)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                if record_owner {
                    meta.owner.store(owner.raw(), Ordering::Relaxed);
                }
                return Some(index);
            }
        }
    }

    /// `owner` frees `handle` as `Slab::free` does (journal, then the state CAS) and, when
    /// `clear_owner`, clears the owner; then it dies before the push.
    fn crash_after_free_cas(&self, owner: OwnerId, handle: SlotHandle, clear_owner: bool) {
        let meta = self.meta(usize::from(handle.class()), handle.index());
        self.journal(owner)
            .store(handle.slot_ref() + 1, Ordering::Relaxed);
        let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
        assert_eq!(generation, handle.generation());
        assert!(state == ALLOCATED || state == IN_FLIGHT);
        meta.gen_state
            .compare_exchange(
                join(generation, state),
                join(generation + 1, FREE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .unwrap();
        if clear_owner {
            meta.owner.store(NO_OWNER, Ordering::Relaxed);
        }
    }

    /// Push a free slot as `Slab::push` does: what a participant that was in the middle of a
    /// free does when it goes on.
    fn push(&self, class: usize, index: u32) {
        let header = self.header(class);
        let meta = self.meta(class, index);
        loop {
            let head = header.free_head.load(Ordering::Relaxed);
            let (first, tag) = unpack_free_head(head);
            meta.next_free.store(first, Ordering::Relaxed);
            if header
                .free_head
                .compare_exchange(
                    head,
                    pack_free_head(index, tag.wrapping_add(1)),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return;
            }
        }
    }

    /// `owner` grows `class` as `Slab::grow` does up to the publication of the extent (its
    /// slots allocated and owned by `owner`), then dies before freeing them. Returns the
    /// extent number.
    fn crash_after_publishing_extent(&self, owner: OwnerId, class: usize) -> usize {
        let layout = self.layout();
        let header = self.header(class);
        let extent = (0..layout.max_extents as usize)
            .find(|&e| header.extent_offsets[e].load(Ordering::Acquire) == 0)
            .expect("the class can grow");
        let size = layout.geometry[class].size as u64;
        let start = self.current_size().fetch_add(size, Ordering::AcqRel);
        let end = start + size;
        assert!(end <= layout.max_size as u64);
        self.slab.region().grow_to(end as usize).unwrap();
        let meta_base = start as usize + layout.geometry[class].meta_offset;
        for slot in 0..CLASSES[class].slots_per_extent as usize {
            let meta = SlotMeta::new(0, ALLOCATED, FREE_LIST_END, owner.raw());
            // SAFETY: the range was just reserved by the fetch_add above and is not published:
            // nobody else reaches it.
            assert!(unsafe {
                self.shared()
                    .init(meta_base + slot * size_of::<SlotMeta>(), meta)
            });
        }
        header.extent_offsets[extent]
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
            .unwrap();
        header
            .total_slots
            .fetch_add(CLASSES[class].slots_per_extent, Ordering::Relaxed);
        self.extent_count().fetch_add(1, Ordering::Relaxed);
        extent
    }
}

/// A region that refuses to grow while `refuse` is set, as a full disk or a sealed file would.
struct Refusing {
    inner: HeapRegion,
    refuse: AtomicBool,
}

// SAFETY: base, reservation and len forward to the HeapRegion, which keeps the contract; grow_to
// either forwards too or fails without touching anything.
unsafe impl Region for Refusing {
    fn base(&self) -> core::ptr::NonNull<u8> {
        self.inner.base()
    }
    fn reservation(&self) -> usize {
        self.inner.reservation()
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn grow_to(&self, new_len: usize) -> Result<usize, GrowError> {
        if self.refuse.load(Ordering::Relaxed) {
            return Err(GrowError::Backing {
                requested: new_len,
                message: "refused by the test".to_owned(),
            });
        }
        self.inner.grow_to(new_len)
    }
}

fn extent_of(class: usize, index: u32) -> u32 {
    index >> CLASSES[class].slots_per_extent.trailing_zeros()
}

// ----- construction and attach -----

#[test]
fn init_builds_every_class_with_one_free_extent() {
    let slab = new_slab(3);
    let raw = Raw::new(&slab);
    let stats = all_free(&slab);
    for (class, s) in stats.iter().enumerate() {
        assert_eq!(s.extents, 1);
        assert_eq!(s.total, CLASSES[class].slots_per_extent);
    }
    assert_eq!(
        raw.current_size().load(Ordering::Relaxed),
        slab.layout().initial_size() as u64
    );
    assert_eq!(
        raw.extent_count().load(Ordering::Relaxed),
        CLASSES.len() as u32
    );
    for owner in [P0, P1, P2, P3, HOST] {
        assert_eq!(raw.journal(owner).load(Ordering::Relaxed), 0);
    }
    for (class, config) in CLASSES.iter().enumerate() {
        assert_eq!(
            raw.header_field(class, 0).load(Ordering::Relaxed),
            config.slot_size
        );
        assert_eq!(raw.head(class).0, 0);
        for index in 0..config.slots_per_extent {
            let status = slab.slot_status(class as u16, index).unwrap();
            assert_eq!(status.generation, 0);
            assert_eq!(status.state, Some(SlotState::Free));
            assert_eq!(status.owner, NO_OWNER);
        }
    }
    assert_eq!(slab.owner(), HOST);
    assert_eq!(slab.slot_size(2), Some(1024));
    assert_eq!(slab.slot_size(3), None);
}

#[test]
fn regions_too_small_are_refused() {
    let layout = layout(2);
    let (initial, max) = (layout.initial_size(), layout.max_size());
    for (len, reservation) in [(initial - 64, max), (initial, max - 64), (0, max), (64, 64)] {
        let region = HeapRegion::new(len, reservation);
        // SAFETY: a fresh region nobody else uses.
        let result = unsafe { Slab::init(&region, layout.clone(), HOST) };
        assert_eq!(
            result.err(),
            Some(SlabError::RegionTooSmall {
                needed: initial,
                len,
                reservation
            }),
            "init over {len}/{reservation}"
        );
        assert_eq!(
            Slab::attach(&region, layout.clone(), P0).err(),
            Some(SlabError::RegionTooSmall {
                needed: initial,
                len,
                reservation
            }),
            "attach over {len}/{reservation}"
        );
    }
}

#[test]
fn attach_sees_the_same_slots() {
    let layout = layout(3);
    let region = heap(&layout);
    let host = init_on(region.clone(), layout.clone());
    let held = host.alloc(100).unwrap();
    host.mark_in_flight(held, P1).unwrap();
    let grown: Vec<_> = (0..5).map(|_| host.alloc_in(0).unwrap()).collect();

    let peer = Slab::attach(region.clone(), layout, P1).unwrap();
    assert_eq!(peer.owner(), P1);
    assert_eq!(peer.stats(), host.stats());
    let status = peer.slot_status(held.class(), held.index()).unwrap();
    assert_eq!(status.state, Some(SlotState::InFlight));
    assert_eq!(status.owner, P1.raw());
    assert_eq!(peer.slot_data(held).unwrap(), host.slot_data(held).unwrap());
    // The receiver frees what was sent to it; the host sees it.
    free_ok(&peer, held);
    assert_eq!(
        host.slot_status(held.class(), held.index()).unwrap().state,
        Some(SlotState::Free)
    );
    // Slots of an extent the host added: the attached handle frees them and allocates again.
    for handle in grown {
        free_ok(&peer, handle);
    }
    let again: Vec<_> = (0..8).map(|_| peer.alloc_in(0).unwrap()).collect();
    assert!(again.iter().any(|h| extent_of(0, h.index()) == 1));
    for handle in &again {
        assert_eq!(host.slot_status(0, handle.index()).unwrap().owner, P1.raw());
    }
    assert_eq!(
        peer.alloc_in(0).unwrap().index() >> 2,
        2,
        "the third extent, added by the attached handle"
    );
    assert_eq!(host.stats()[0].extents, 3);
}

#[test]
fn attach_refuses_an_uninitialised_region() {
    let layout = layout(2);
    let region = heap(&layout);
    assert_eq!(
        Slab::attach(region, layout, P0).err(),
        Some(SlabError::Corrupt {
            class: 0,
            corruption: Corruption::ClassHeader {
                field: "slot_size",
                found: 0,
                expected: 64
            }
        })
    );
}

#[test]
fn attach_refuses_changed_class_header_fields() {
    for (at, field, expected) in [
        (0, "slot_size", 256),
        (4, "slots_per_extent", 4),
        (8, "extent_slot_shift", 2),
    ] {
        let layout = layout(2);
        let region = heap(&layout);
        let host = init_on(region.clone(), layout.clone());
        let word = Raw::new(&host).header_field(1, at);
        word.store(expected + 1, Ordering::Relaxed);
        assert_eq!(
            Slab::attach(region.clone(), layout.clone(), P0).err(),
            Some(SlabError::Corrupt {
                class: 1,
                corruption: Corruption::ClassHeader {
                    field,
                    found: expected + 1,
                    expected
                }
            })
        );
        word.store(expected, Ordering::Relaxed);
        assert!(Slab::attach(region, layout, P0).is_ok());
    }
}

#[test]
fn attach_refuses_a_bad_first_extent() {
    let layout = layout(2);
    let first = layout.initial_extent_offsets[2] as u64;
    for bad in [0, first + 64, first + 1, u64::MAX, layout.max_size() as u64] {
        let region = heap(&layout);
        let host = init_on(region.clone(), layout.clone());
        Raw::new(&host).header(2).extent_offsets[0].store(bad, Ordering::Release);
        assert_eq!(
            Slab::attach(region, layout.clone(), P0).err(),
            Some(SlabError::Corrupt {
                class: 2,
                corruption: Corruption::ExtentOffset {
                    extent: 0,
                    offset: bad
                }
            }),
            "extent 0 at {bad:#x}"
        );
    }
}

#[test]
fn owners_beyond_max_peers_are_unknown() {
    let layout = layout(2);
    let beyond = OwnerId::peer(MAX_PEERS_HERE);
    let region = heap(&layout);
    // SAFETY: a fresh region nobody else uses.
    let init = unsafe { Slab::init(region.clone(), layout.clone(), beyond) };
    assert_eq!(init.err(), Some(SlabError::UnknownOwner(beyond)));

    let host = init_on(region.clone(), layout.clone());
    assert_eq!(
        Slab::attach(region, layout, beyond).err(),
        Some(SlabError::UnknownOwner(beyond))
    );
    assert_eq!(
        host.with_owner(beyond).err(),
        Some(SlabError::UnknownOwner(beyond))
    );
    assert_eq!(
        host.with_owner(OwnerId::peer(u16::MAX)).err(),
        Some(SlabError::UnknownOwner(OwnerId::peer(u16::MAX)))
    );
    assert_eq!(
        host.reclaim(beyond).err(),
        Some(SlabError::UnknownOwner(beyond))
    );
    let handle = host.alloc(1).unwrap();
    assert_eq!(
        host.mark_in_flight(handle, beyond),
        Err(SlabError::UnknownOwner(beyond))
    );
    // Refused before anything changed.
    assert_eq!(
        host.slot_status(0, handle.index()).unwrap().state,
        Some(SlotState::Allocated)
    );
    let last = OwnerId::peer(MAX_PEERS_HERE - 1);
    assert_eq!(host.with_owner(last).unwrap().owner(), last);
    host.mark_in_flight(handle, last).unwrap();
    free_ok(&host, handle);
}

// ----- alloc -----

#[test]
fn alloc_prefers_the_smallest_fit_then_larger_classes_then_growth() {
    let slab = new_slab(2);
    let mut seen = HashSet::new();
    let mut take = |len: usize, class: u16| {
        let handle = slab.alloc(len).unwrap();
        assert_eq!(handle.class(), class, "alloc({len})");
        assert!(seen.insert((handle.class(), handle.index())));
        handle
    };
    // Boundaries of the smallest fit.
    take(0, 0);
    take(64, 0);
    take(65, 1);
    take(1024, 2);
    assert_eq!(
        slab.alloc(1025),
        Err(SlabError::PayloadTooLarge {
            len: 1025,
            max: 1024
        })
    );
    assert_eq!(
        slab.alloc(usize::MAX),
        Err(SlabError::PayloadTooLarge {
            len: usize::MAX,
            max: 1024
        })
    );
    take(1, 0);
    take(1, 0);
    // Class 0 is empty: larger classes, smallest first, before any growth.
    for _ in 0..3 {
        take(1, 1);
    }
    take(1, 2);
    let stats = slab.stats();
    assert_eq!(stats.iter().map(|s| s.free).sum::<u32>(), 0);
    assert!(stats.iter().all(|s| s.extents == 1));
    // Every class is empty: the fitting class grows, not a larger one.
    let grown = take(1, 0);
    assert_eq!(extent_of(0, grown.index()), 1);
    assert_eq!(grown.index(), 4, "the grower keeps the extent's first slot");
    assert_eq!(grown.generation(), 0);
    let stats = quiescent(&slab);
    assert_eq!(
        (stats[0].extents, stats[0].free, stats[0].allocated),
        (2, 3, 5)
    );
    assert_eq!((stats[1].extents, stats[2].extents), (1, 1));
    for _ in 0..3 {
        let handle = take(1, 0);
        assert_eq!(extent_of(0, handle.index()), 1);
    }
    // Class 0 has all its extents: no free slot of class 0 or larger.
    assert_eq!(slab.alloc(1), Err(SlabError::NoFreeSlots { class: 0 }));
    assert_eq!(slab.alloc(64), Err(SlabError::NoFreeSlots { class: 0 }));
    // Class 1 can still grow.
    let grown = take(200, 1);
    assert_eq!(extent_of(1, grown.index()), 1);
    // A larger class with a free slot serves the smaller request before anything else.
    take(1, 1);
    let stats = quiescent(&slab);
    assert_eq!(stats[1].free, 2);
    assert_eq!((stats[0].free, stats[2].free), (0, 0));
}

#[test]
fn alloc_in_and_try_alloc_in() {
    let slab = new_slab(2);
    assert_eq!(slab.alloc_in(1).unwrap().class(), 1);
    assert_eq!(slab.try_alloc_in(2).unwrap().unwrap().class(), 2);
    assert_eq!(slab.try_alloc_in(2).unwrap().unwrap().class(), 2);
    // Empty: try_alloc_in does not grow; alloc_in does, and does not borrow from class 1.
    assert_eq!(slab.try_alloc_in(2), Ok(None));
    assert_eq!(slab.stats()[2].extents, 1);
    let grown = slab.alloc_in(2).unwrap();
    assert_eq!((grown.class(), extent_of(2, grown.index())), (2, 1));
    assert_eq!(slab.stats()[2].extents, 2);
    assert_eq!(slab.try_alloc_in(2).unwrap().unwrap().class(), 2);
    assert_eq!(slab.try_alloc_in(2), Ok(None));
    assert_eq!(slab.alloc_in(2), Err(SlabError::NoFreeSlots { class: 2 }));
    assert_eq!(slab.stats()[1].free, 3);
    for class in [3, 7, u16::MAX] {
        assert_eq!(
            slab.alloc_in(class),
            Err(SlabError::BadHandle { class, index: 0 })
        );
        assert_eq!(
            slab.try_alloc_in(class),
            Err(SlabError::BadHandle { class, index: 0 })
        );
        assert_eq!(
            slab.free_list_len(class),
            Err(SlabError::BadHandle { class, index: 0 })
        );
        assert_eq!(
            slab.rebuild_free_list(class),
            Err(SlabError::BadHandle { class, index: 0 })
        );
        assert!(slab.slot_available_word(class).is_none());
        assert!(slab.announce_waiter(class).is_none());
        assert!(!slab.has_free_slot(class));
    }
    quiescent(&slab);
}

// ----- transitions (R5, R6, R7) -----

#[test]
fn mark_in_flight_transitions_and_errors() {
    let slab = new_slab(2);
    let peer = slab.with_owner(P1).unwrap();
    let handle = peer.alloc(10).unwrap();
    let status = slab.slot_status(0, handle.index()).unwrap();
    assert_eq!(
        (status.state, status.owner, status.generation),
        (Some(SlotState::Allocated), P1.raw(), 0)
    );

    peer.mark_in_flight(handle, P2).unwrap();
    let status = slab.slot_status(0, handle.index()).unwrap();
    assert_eq!(
        (status.state, status.owner, status.generation),
        (Some(SlotState::InFlight), P2.raw(), 0)
    );
    // Already in flight.
    assert_eq!(
        peer.mark_in_flight(handle, P3),
        Err(SlabError::WrongState {
            class: 0,
            index: handle.index(),
            expected: "allocated",
            found: "in flight"
        })
    );
    assert_eq!(slab.slot_status(0, handle.index()).unwrap().owner, P2.raw());

    // To the host.
    let to_host = peer.alloc(10).unwrap();
    peer.mark_in_flight(to_host, HOST).unwrap();
    assert_eq!(
        slab.slot_status(0, to_host.index()).unwrap().owner,
        HOST_OWNER
    );

    // Stale: freed since; and freed and allocated again.
    free_ok(&slab, handle);
    assert_eq!(
        peer.mark_in_flight(handle, P2),
        Err(SlabError::StaleHandle { handle: 0, slot: 1 })
    );
    let reused = peer.alloc_in(0).unwrap();
    assert_eq!(
        (reused.index(), reused.generation()),
        (handle.index(), 1),
        "LIFO: the slot just freed"
    );
    assert_eq!(
        peer.mark_in_flight(handle, P2),
        Err(SlabError::StaleHandle { handle: 0, slot: 1 })
    );
    assert_eq!(
        slab.slot_status(0, reused.index()).unwrap().state,
        Some(SlotState::Allocated)
    );

    // A free slot of the handle's generation: never allocated at it.
    let (free_index, free_gen) = {
        let index = (0..4)
            .find(|&i| slab.slot_status(0, i).unwrap().state == Some(SlotState::Free))
            .unwrap();
        (index, slab.slot_status(0, index).unwrap().generation)
    };
    assert_eq!(
        peer.mark_in_flight(SlotHandle::from_parts(0, free_index, free_gen), P2),
        Err(SlabError::WrongState {
            class: 0,
            index: free_index,
            expected: "allocated",
            found: "free"
        })
    );

    // Bad handles.
    for (class, index) in [(3, 0), (0, 4), (0, 1 << 20), (2, 2)] {
        assert_eq!(
            peer.mark_in_flight(SlotHandle::from_parts(class, index, 0), P2),
            Err(SlabError::BadHandle { class, index })
        );
    }
    free_ok(&slab, reused);
    free_ok(&slab, to_host);
    all_free(&slab);
}

#[test]
fn free_from_allocated_and_from_in_flight() {
    let slab = new_slab(2);
    let peer = slab.with_owner(P0).unwrap();
    let allocated = peer.alloc(200).unwrap();
    let in_flight = peer.alloc(200).unwrap();
    peer.mark_in_flight(in_flight, HOST).unwrap();
    assert_eq!(slab.stats()[1].in_flight, 1);
    assert_eq!(slab.stats()[1].allocated, 1);

    // The allocator frees its own allocated slot; the receiver frees the in-flight one.
    free_listed_ok(&peer, allocated);
    free_listed_ok(&slab, in_flight);
    for handle in [allocated, in_flight] {
        let status = slab.slot_status(1, handle.index()).unwrap();
        assert_eq!(status.state, Some(SlotState::Free));
        assert_eq!(status.generation, handle.generation() + 1);
        assert_eq!(status.owner, NO_OWNER);
    }
    all_free(&slab);
}

#[test]
fn free_errors() {
    let slab = new_slab(2);
    let handle = slab.alloc(1).unwrap();
    free_listed_ok(&slab, handle);
    let double = Err(SlabError::DoubleFree {
        class: 0,
        index: handle.index(),
    });
    assert_eq!(slab.free(handle), double);
    assert_eq!(slab.with_owner(P2).unwrap().free(handle), double);
    // The failed frees changed nothing, and left their journal empty.
    assert_eq!(slab.slot_status(0, handle.index()).unwrap().generation, 1);
    assert_eq!(Raw::new(&slab).journal(HOST).load(Ordering::Relaxed), 0);
    assert_eq!(Raw::new(&slab).journal(P2).load(Ordering::Relaxed), 0);
    all_free(&slab);

    // Reused: stale.
    let reused = slab.alloc(1).unwrap();
    assert_eq!((reused.index(), reused.generation()), (handle.index(), 1));
    assert_eq!(
        slab.free(handle),
        Err(SlabError::StaleHandle { handle: 0, slot: 1 })
    );
    free_listed_ok(&slab, reused);
    // Freed again since: still stale, not a double free of this handle.
    assert_eq!(
        slab.free(handle),
        Err(SlabError::StaleHandle { handle: 0, slot: 2 })
    );
    // A handle from the future.
    assert_eq!(
        slab.free(SlotHandle::from_parts(0, handle.index(), 9)),
        Err(SlabError::StaleHandle { handle: 9, slot: 2 })
    );

    // A free slot of the handle's generation.
    assert_eq!(
        slab.free(SlotHandle::from_parts(0, handle.index(), 2)),
        Err(SlabError::WrongState {
            class: 0,
            index: handle.index(),
            expected: "allocated or in flight",
            found: "free"
        })
    );

    // Bad handles: class beyond the layout, beyond any slot reference, and indices of
    // unpublished extents or beyond every extent.
    for (class, index) in [
        (3, 0),
        (7, 0),
        (u16::MAX, 0),
        (0, 4),
        (0, 7),
        (1, 4),
        (2, 2),
        (0, 1 << 29),
        (0, u32::MAX),
    ] {
        let bad = SlotHandle::from_parts(class, index, 0);
        let expected = Err(SlabError::BadHandle { class, index });
        assert_eq!(slab.free(bad).map(|_| ()), expected);
        assert_eq!(slab.slot_data(bad).map(|_| ()), expected);
        assert_eq!(slab.slot_status(class, index).map(|_| ()), expected);
    }
    assert!(matches!(
        SlotHandle::from_slot_ref(u32::MAX, 0),
        Err(SlabError::BadHandle { class: 7, .. })
    ));
    assert_eq!(
        SlotHandle::from_slot_ref(encode_slot_ref(2, 5), 3),
        Ok(SlotHandle::from_parts(2, 5, 3))
    );
    all_free(&slab);
}

#[test]
fn generation_goes_up_on_every_free() {
    let slab = new_slab(2);
    let peer = slab.with_owner(P3).unwrap();
    let first = peer.alloc_in(2).unwrap();
    let mut previous = first;
    free_ok(&peer, first);
    for round in 1..50u32 {
        let handle = peer.alloc_in(2).unwrap();
        assert_eq!(handle.index(), first.index(), "LIFO");
        assert_eq!(handle.generation(), round);
        assert_eq!(
            peer.free(previous),
            Err(SlabError::StaleHandle {
                handle: round - 1,
                slot: round
            })
        );
        if round % 2 == 0 {
            peer.mark_in_flight(handle, P1).unwrap();
        }
        free_ok(&peer, handle);
        assert_eq!(
            peer.slot_status(2, handle.index()).unwrap().generation,
            round + 1
        );
        previous = handle;
    }
    // The other slot of the class was never touched.
    let other = 1 - first.index();
    assert_eq!(peer.slot_status(2, other).unwrap().generation, 0);
}

#[test]
fn owner_is_who_must_free_next() {
    let slab = new_slab(2);
    let peers: Vec<_> = [P0, P1, P2, P3]
        .iter()
        .map(|&p| slab.with_owner(p).unwrap())
        .collect();
    let owner_of = |h: SlotHandle| slab.slot_status(h.class(), h.index()).unwrap().owner;
    let mut handles = Vec::new();
    for (i, peer) in peers.iter().enumerate() {
        let handle = peer.alloc(1).unwrap();
        assert_eq!(
            owner_of(handle),
            peer.owner().raw(),
            "the allocator writes it"
        );
        let receiver = if i % 2 == 0 { HOST } else { peers[0].owner() };
        let status = slab.slot_status(handle.class(), handle.index()).unwrap();
        assert_eq!(status.sender, None, "only a slot in flight has a sender");
        peer.mark_in_flight(handle, receiver).unwrap();
        assert_eq!(owner_of(handle), receiver.raw(), "the receiver frees it");
        let status = slab.slot_status(handle.class(), handle.index()).unwrap();
        assert_eq!(status.sender, Some(peer.owner()), "and knows who sent it");
        handles.push(handle);
    }
    let host_handle = slab.alloc(1).unwrap();
    assert_eq!(owner_of(host_handle), HOST_OWNER);
    handles.push(host_handle);
    for handle in handles {
        free_listed_ok(&slab, handle);
        assert_eq!(owner_of(handle), NO_OWNER);
    }
    all_free(&slab);
}

// ----- growth (R8) -----

#[test]
fn growth_adds_extents_up_to_max_extents() {
    let layout = layout(3);
    let region = heap(&layout);
    let slab = init_on(region.clone(), layout.clone());
    let raw = Raw::new(&slab);
    let initial = layout.initial_size() as u64;
    let (size0, size2) = (layout.extent_size(0) as u64, layout.extent_size(2) as u64);
    let mut handles = Vec::new();
    let mut expected_size = initial;
    for n in 1..=12u32 {
        let handle = slab.alloc_in(0).unwrap();
        handles.push(handle);
        let extents = n.div_ceil(4);
        if n % 4 == 1 && n > 1 {
            expected_size += size0;
            assert_eq!(handle.index(), (extents - 1) * 4, "the extent's first slot");
        }
        let stats = quiescent(&slab);
        assert_eq!(
            (stats[0].extents, stats[0].total, stats[0].allocated),
            (extents, extents * 4, n)
        );
        assert_eq!(raw.current_size().load(Ordering::Relaxed), expected_size);
        assert_eq!(
            raw.extent_count().load(Ordering::Relaxed),
            CLASSES.len() as u32 + extents - 1
        );
        assert!(region.len() as u64 >= expected_size);
    }
    assert_eq!(slab.alloc_in(0), Err(SlabError::NoFreeSlots { class: 0 }));
    assert_eq!(raw.current_size().load(Ordering::Relaxed), expected_size);

    // Extents are placed one after the other, at the reserved ranges.
    let offsets: Vec<u64> = (0..3)
        .map(|e| raw.header(0).extent_offsets[e].load(Ordering::Relaxed))
        .collect();
    assert_eq!(offsets[0], layout.initial_extent_offsets[0] as u64);
    assert_eq!(offsets[1], initial);
    assert_eq!(offsets[2], initial + size0);

    // Another class grows after them.
    for _ in 0..6 {
        handles.push(slab.alloc_in(2).unwrap());
    }
    assert_eq!(
        raw.current_size().load(Ordering::Relaxed),
        initial + 2 * size0 + 2 * size2
    );
    assert_eq!(
        raw.current_size().load(Ordering::Relaxed),
        layout.max_size() as u64 - 2 * layout.extent_size(1) as u64
    );
    let stats = quiescent(&slab);
    assert_eq!((stats[2].extents, stats[2].total), (3, 6));

    // Every slot's bytes lie inside the region and apart from every other slot's.
    let mut spans: Vec<(usize, usize)> = handles
        .iter()
        .map(|&h| {
            let at = slab.slot_data(h).unwrap().as_ptr() as usize - region.base().as_ptr() as usize;
            (at, at + slab.slot_size(h.class()).unwrap() as usize)
        })
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "slots overlap: {pair:?}");
    }
    assert!(spans.last().unwrap().1 <= region.len());

    // Another handle (shared caches) and an attached one (its own) use the new slots.
    let peer = slab.with_owner(P2).unwrap();
    let attached = Slab::attach(region.clone(), layout, P3).unwrap();
    assert_eq!(attached.stats(), slab.stats());
    for (i, &handle) in handles.iter().enumerate() {
        let by = if i % 2 == 0 { &peer } else { &attached };
        free_ok(by, handle);
    }
    all_free(&slab);
    let again: Vec<_> = (0..12).map(|_| attached.alloc_in(0).unwrap()).collect();
    let mut indices: Vec<u32> = again.iter().map(|h| h.index()).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..12).collect::<Vec<_>>());
    for handle in again {
        assert_eq!(slab.slot_status(0, handle.index()).unwrap().owner, P3.raw());
        free_ok(&peer, handle);
    }
    all_free(&attached);
}

#[test]
fn every_slot_of_a_full_slab_has_its_own_bytes() {
    let layout = layout(4);
    let region = heap(&layout);
    let slab = init_on(region, layout);
    let handles = drain(&slab);
    assert_eq!(handles.len(), 4 * (4 + 4 + 2));
    for (i, &handle) in handles.iter().enumerate() {
        let size = slab.slot_size(handle.class()).unwrap() as usize;
        let bytes = slab.slot_data(handle).unwrap();
        // SAFETY: the slot is allocated to this test and `size` bytes long.
        unsafe { bytes.as_ptr().write_bytes(i as u8, size) };
    }
    // Slot bytes clobbered no meta.
    let stats = quiescent(&slab);
    assert!(
        stats
            .iter()
            .all(|s| s.allocated == s.total && s.corrupt == 0)
    );
    for (i, &handle) in handles.iter().enumerate() {
        let size = slab.slot_size(handle.class()).unwrap() as usize;
        let bytes = slab.slot_data(handle).unwrap();
        // SAFETY: as above; nobody else writes the slot.
        let data = unsafe { core::slice::from_raw_parts(bytes.as_ptr(), size) };
        assert!(data.iter().all(|&b| b == i as u8), "slot {handle:?}");
        free_ok(&slab, handle);
    }
    all_free(&slab);
}

#[test]
fn growth_the_region_refuses_is_an_error_and_leaves_nothing_behind() {
    let layout = layout(3);
    let region = Arc::new(Refusing {
        inner: HeapRegion::new(layout.initial_size(), layout.max_size()),
        refuse: AtomicBool::new(true),
    });
    let slab = init_on(region.clone(), layout.clone());
    let raw = Raw::new(&slab);
    let held: Vec<_> = (0..4).map(|_| slab.alloc_in(0).unwrap()).collect();
    let before = raw.current_size().load(Ordering::Relaxed);
    let end = before as usize + layout.extent_size(0);
    for _ in 0..2 {
        assert_eq!(
            slab.alloc_in(0),
            Err(SlabError::Grow(GrowError::Backing {
                requested: end,
                message: "refused by the test".to_owned()
            }))
        );
    }
    // Requests class 0 cannot serve still go to a larger class.
    for _ in 0..3 {
        assert_eq!(slab.alloc(1).unwrap().class(), 1);
    }
    // The reservation was given back; nothing was published.
    assert_eq!(raw.current_size().load(Ordering::Relaxed), before);
    assert_eq!(raw.header(0).extent_offsets[1].load(Ordering::Relaxed), 0);
    let stats = quiescent(&slab);
    assert_eq!((stats[0].extents, stats[0].total), (1, 4));

    region.refuse.store(false, Ordering::Relaxed);
    let grown = slab.alloc_in(0).unwrap();
    assert_eq!(extent_of(0, grown.index()), 1);
    assert_eq!(
        raw.header(0).extent_offsets[1].load(Ordering::Relaxed),
        before
    );
    assert_eq!(
        raw.current_size().load(Ordering::Relaxed),
        end as u64,
        "the range refused first is the range used"
    );
    free_ok(&slab, grown);
    for handle in held {
        free_ok(&slab, handle);
    }
    let stats = quiescent(&slab);
    assert_eq!((stats[0].extents, stats[0].free), (2, 8));
}

// ----- reclaim (R10) and the journal -----

#[test]
fn reclaim_frees_exactly_what_the_owner_holds() {
    let slab = new_slab(3);
    let p1 = slab.with_owner(P1).unwrap();
    let p2 = slab.with_owner(P2).unwrap();
    let a = p1.alloc(1).unwrap(); // allocated by P1
    let b = p1.alloc(100).unwrap(); // P1 -> P2
    p1.mark_in_flight(b, P2).unwrap();
    let c = p1.alloc(100).unwrap(); // P1 -> host
    p1.mark_in_flight(c, HOST).unwrap();
    let d = p2.alloc(1000).unwrap(); // allocated by P2
    let e = p2.alloc(1).unwrap(); // P2 -> P1
    p2.mark_in_flight(e, P1).unwrap();
    let f = slab.alloc(1).unwrap(); // allocated by the host
    let g = slab.alloc(1).unwrap(); // host -> P1
    slab.mark_in_flight(g, P1).unwrap();
    let before = slab.stats();

    let report = slab.reclaim(P1).unwrap();
    assert_eq!(report.freed, vec![3, 0, 0]);
    assert_eq!(report.total(), 3);
    assert!(!report.recovered_from_journal && !report.journal_pending && !report.wake_waiters);
    let state = |h: SlotHandle| slab.slot_status(h.class(), h.index()).unwrap();
    for h in [a, e, g] {
        assert_eq!(state(h).state, Some(SlotState::Free), "{h:?}");
        assert_eq!(state(h).generation, h.generation() + 1);
    }
    for (h, s, owner) in [
        (b, SlotState::InFlight, P2.raw()),
        (c, SlotState::InFlight, HOST_OWNER),
        (d, SlotState::Allocated, P2.raw()),
        (f, SlotState::Allocated, HOST_OWNER),
    ] {
        assert_eq!((state(h).state, state(h).owner), (Some(s), owner), "{h:?}");
        assert_eq!(state(h).generation, h.generation());
    }
    let after = quiescent(&slab);
    assert_eq!(after[0].free, before[0].free + 3);
    assert_eq!(after[1], before[1]);
    assert_eq!(after[2], before[2]);

    // Idempotent.
    let again = slab.reclaim(P1).unwrap();
    assert_eq!((again.total(), again.freed.clone()), (0, vec![0, 0, 0]));
    // The dead one's handles are stale now.
    assert_eq!(
        p1.free(a),
        Err(SlabError::DoubleFree {
            class: 0,
            index: a.index()
        })
    );
    // Reclaim of the others frees the rest.
    assert_eq!(slab.reclaim(P2).unwrap().freed, vec![0, 1, 1]);
    assert_eq!(slab.reclaim(HOST).unwrap().freed, vec![1, 1, 0]);
    assert_eq!(slab.reclaim(P0).unwrap().total(), 0);
    all_free(&slab);
}

#[test]
fn reclaim_finds_the_slots_of_grown_extents() {
    let slab = new_slab(3);
    let p1 = slab.with_owner(P1).unwrap();
    let held: Vec<_> = (0..9).map(|_| p1.alloc_in(0).unwrap()).collect();
    assert_eq!(slab.stats()[0].extents, 3);
    p1.mark_in_flight(held[8], P2).unwrap();
    let report = slab.reclaim(P1).unwrap();
    assert_eq!(report.freed, vec![8, 0, 0]);
    assert_eq!(slab.reclaim(P2).unwrap().freed, vec![1, 0, 0]);
    all_free(&slab);
}

#[test]
fn reclaim_recovers_a_slot_popped_but_not_recorded() {
    for record_owner in [false, true] {
        let slab = new_slab(2);
        let raw = Raw::new(&slab);
        let p2 = slab.with_owner(P2).unwrap();
        let kept = p2.alloc(1).unwrap();
        let index = raw.crash_after_pop_cas(P1, 0, record_owner).unwrap();
        assert_ne!(index, kept.index());
        // The slot is free, off the list, and (maybe) owned by the dead one.
        let stats = slab.stats();
        assert_eq!(stats[0].free, 3);
        assert_eq!(
            slab.free_list_len(0).unwrap(),
            2,
            "one free slot is off the list"
        );
        assert_eq!(raw.gen_state(0, index), (0, FREE));

        // A live allocator does not get it, and does not get anything twice meanwhile.
        let other = p2.alloc_in(0).unwrap();
        assert_ne!(other.index(), index);
        free_listed_ok(&p2, other);

        let report = slab.reclaim(P1).unwrap();
        assert!(report.recovered_from_journal, "record_owner {record_owner}");
        assert!(!report.journal_pending);
        assert_eq!(report.freed, vec![0, 0, 0]);
        assert_eq!(report.total(), 1);
        assert_eq!(raw.journal(P1).load(Ordering::Relaxed), 0);
        let status = slab.slot_status(0, index).unwrap();
        assert_eq!(
            (status.state, status.owner, status.generation),
            (Some(SlotState::Free), NO_OWNER, 0)
        );
        let stats = quiescent(&slab);
        assert_eq!((stats[0].free, stats[0].allocated), (3, 1));
        let again = slab.reclaim(P1).unwrap();
        assert!(!again.recovered_from_journal);
        assert_eq!(again.total(), 0);
        free_listed_ok(&p2, kept);
        all_free(&slab);
        // Every slot is handed out once.
        let all = drain(&slab);
        assert_eq!(all.len(), 2 * (4 + 4 + 2));
    }
}

#[test]
fn reclaim_recovers_a_slot_freed_but_not_pushed() {
    for clear_owner in [false, true] {
        for in_flight in [false, true] {
            let slab = new_slab(2);
            let raw = Raw::new(&slab);
            let p1 = slab.with_owner(P1).unwrap();
            let handle = p1.alloc(200).unwrap();
            let freer = if in_flight {
                p1.mark_in_flight(handle, P3).unwrap();
                P3
            } else {
                P1
            };
            raw.crash_after_free_cas(freer, handle, clear_owner);
            assert_eq!(slab.stats()[1].free, 4);
            assert_eq!(slab.free_list_len(1).unwrap(), 3);
            // The handle's owner scan finds nothing; the journal finds the slot.
            let report = slab.reclaim(freer).unwrap();
            assert!(report.recovered_from_journal);
            assert_eq!(report.freed, vec![0, 0, 0]);
            let status = slab.slot_status(1, handle.index()).unwrap();
            assert_eq!(
                (status.state, status.owner, status.generation),
                (Some(SlotState::Free), NO_OWNER, 1)
            );
            assert_eq!(
                p1.free(handle),
                Err(SlabError::DoubleFree {
                    class: 1,
                    index: handle.index()
                })
            );
            all_free(&slab);
            assert_eq!(slab.reclaim(freer).unwrap().total(), 0);
            assert_eq!(drain(&slab).len(), 20);
        }
    }
}

#[test]
fn a_journal_naming_a_slot_on_the_list_is_left_alone() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    // P1 wrote its journal and died before its CAS: the slot is still on the list.
    let (head, _) = raw.head(0);
    raw.journal(P1)
        .store(encode_slot_ref(0, head) + 1, Ordering::Relaxed);
    // Also one naming a slot deeper in the list.
    raw.journal(P2)
        .store(encode_slot_ref(1, 3) + 1, Ordering::Relaxed);
    for owner in [P1, P2] {
        let report = slab.reclaim(owner).unwrap();
        assert!(!report.recovered_from_journal && !report.journal_pending);
        assert_eq!(report.total(), 0);
        assert_eq!(raw.journal(owner).load(Ordering::Relaxed), 0);
    }
    all_free(&slab);
    assert_eq!(drain(&slab).len(), 20);
}

#[test]
fn a_journal_naming_a_slot_someone_else_holds_is_left_alone() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    let p2 = slab.with_owner(P2).unwrap();
    // P1 died before its CAS; P2 took the slot since, and sent it to the host.
    let (head, _) = raw.head(0);
    raw.journal(P1)
        .store(encode_slot_ref(0, head) + 1, Ordering::Relaxed);
    let taken = p2.alloc_in(0).unwrap();
    assert_eq!(taken.index(), head);
    let report = slab.reclaim(P1).unwrap();
    assert!(!report.recovered_from_journal);
    assert_eq!(report.total(), 0);
    assert_eq!(
        slab.slot_status(0, head).unwrap().state,
        Some(SlotState::Allocated)
    );
    p2.mark_in_flight(taken, HOST).unwrap();
    free_ok(&slab, taken);
    all_free(&slab);
}

#[test]
fn a_journaled_slot_a_live_participant_is_freeing_is_left_for_later() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    let p2 = slab.with_owner(P2).unwrap();
    let handle = p2.alloc_in(0).unwrap();
    // P1 named the slot and died before its CAS long ago; now live P2 is between the state
    // CAS of a free of it and the push.
    raw.journal(P1)
        .store(handle.slot_ref() + 1, Ordering::Relaxed);
    raw.crash_after_free_cas(P2, handle, true);
    let report = slab.reclaim(P1).unwrap();
    assert!(report.journal_pending);
    assert!(!report.recovered_from_journal);
    assert_eq!(report.total(), 0);
    assert_ne!(raw.journal(P1).load(Ordering::Relaxed), 0, "kept for later");
    assert_eq!(
        slab.free_list_len(0).unwrap(),
        3,
        "not pushed by the reclaim"
    );
    // P2 goes on: pushes, clears its journal. The later reclaim finds the slot on the list.
    raw.push(0, handle.index());
    raw.journal(P2).store(0, Ordering::Release);
    let report = slab.reclaim(P1).unwrap();
    assert!(!report.journal_pending && !report.recovered_from_journal);
    assert_eq!(raw.journal(P1).load(Ordering::Relaxed), 0);
    all_free(&slab);
    assert_eq!(drain(&slab).len(), 20);
}

#[test]
fn reclaim_frees_an_extent_whose_grower_died_before_freeing_it() {
    let slab = new_slab(3);
    let raw = Raw::new(&slab);
    let extent = raw.crash_after_publishing_extent(P1, 1);
    assert_eq!(extent, 1);
    let stats = quiescent(&slab);
    assert_eq!(
        (
            stats[1].extents,
            stats[1].total,
            stats[1].allocated,
            stats[1].free
        ),
        (2, 8, 4, 4)
    );
    for index in 4..8 {
        assert_eq!(slab.slot_status(1, index).unwrap().owner, P1.raw());
    }
    let report = slab.reclaim(P1).unwrap();
    assert_eq!(report.freed, vec![0, 4, 0]);
    all_free(&slab);
    // The slab goes on growing after it.
    let all = drain(&slab);
    assert_eq!(all.len(), 3 * (4 + 4 + 2));
    let stats = slab.stats();
    assert!(stats.iter().all(|s| s.extents == 3));
}

// ----- corruption (R3) -----

#[test]
fn a_scribbled_free_head_is_an_error_then_rebuilt() {
    for bad in [4, 5, 100, 1 << 28, (1 << 29) - 1, 1 << 29, u32::MAX - 2] {
        let slab = new_slab(2);
        let raw = Raw::new(&slab);
        let kept = slab.alloc_in(0).unwrap();
        raw.set_head(0, bad);
        let expected = SlabError::Corrupt {
            class: 0,
            corruption: Corruption::FreeHead { index: bad },
        };
        assert_eq!(slab.alloc_in(0), Err(expected.clone()), "head {bad:#x}");
        assert_eq!(slab.try_alloc_in(0), Err(expected.clone()));
        assert_eq!(slab.alloc(1), Err(expected.clone()));
        assert!(matches!(
            slab.free_list_len(0),
            Err(SlabError::Corrupt { class: 0, .. })
        ));
        // The other classes are untouched.
        assert_eq!(slab.alloc(65).unwrap().class(), 1);
        // Repair.
        let report = slab.rebuild_free_list(0).unwrap();
        assert_eq!((report.free, report.quarantined), (3, 0));
        assert_eq!(slab.free_list_len(0).unwrap(), 3);
        free_ok(&slab, kept);
        assert_eq!(slab.reclaim(HOST).unwrap().freed, vec![0, 1, 0]);
        all_free(&slab);
        assert_eq!(drain(&slab).len(), 20);
    }
}

#[test]
fn a_scribbled_next_free_is_an_error_then_rebuilt() {
    for bad in [4, 9, 1 << 20, u32::MAX - 1] {
        let slab = new_slab(2);
        let raw = Raw::new(&slab);
        // The list is 0 -> 1 -> 2 -> 3.
        raw.meta(0, 1).next_free.store(bad, Ordering::Relaxed);
        let first = slab.alloc_in(0).unwrap();
        assert_eq!(first.index(), 0);
        assert_eq!(
            slab.alloc_in(0),
            Err(SlabError::Corrupt {
                class: 0,
                corruption: Corruption::NextFree {
                    index: 1,
                    next: bad
                }
            })
        );
        assert_eq!(
            slab.free_list_len(0),
            Err(SlabError::Corrupt {
                class: 0,
                corruption: Corruption::NextFree {
                    index: 1,
                    next: bad
                }
            }),
        );
        // Nothing was taken by the failed pop.
        assert_eq!(slab.stats()[0].free, 3);
        assert_eq!(slab.rebuild_free_list(0).unwrap().free, 3);
        free_ok(&slab, first);
        all_free(&slab);
        assert_eq!(drain(&slab).len(), 20);
    }
}

#[test]
fn a_cycle_in_the_free_list_is_found_then_rebuilt() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    let p1 = slab.with_owner(P1).unwrap();
    // 0 -> 1 -> 2 -> 0 -> ...
    raw.meta(0, 2).next_free.store(0, Ordering::Relaxed);
    assert_eq!(
        slab.free_list_len(0),
        Err(SlabError::Corrupt {
            class: 0,
            corruption: Corruption::Cycle { limit: 4 }
        })
    );
    let a = p1.alloc_in(0).unwrap();
    let b = slab.alloc_in(0).unwrap();
    let c = slab.alloc_in(0).unwrap();
    assert_eq!(
        [a.index(), b.index(), c.index()],
        [0, 1, 2],
        "the list as it was"
    );
    // Slot 0 comes round again, allocated to P1.
    assert_eq!(
        slab.alloc_in(0),
        Err(SlabError::Corrupt {
            class: 0,
            corruption: Corruption::PoppedNotFree {
                index: 0,
                state: ALLOCATED
            }
        })
    );
    // P1's slot is left as it was: still P1's, still allocated.
    let status = slab.slot_status(0, 0).unwrap();
    assert_eq!(
        (status.state, status.owner, status.generation),
        (Some(SlotState::Allocated), P1.raw(), 0)
    );
    assert_eq!(raw.journal(HOST).load(Ordering::Relaxed), 0);
    let report = slab.rebuild_free_list(0).unwrap();
    assert_eq!((report.free, report.quarantined), (1, 0));
    assert_eq!(slab.free_list_len(0).unwrap(), 1);
    assert_eq!(slab.alloc_in(0).unwrap().index(), 3);
    // P1 dies: its slot comes back.
    assert_eq!(slab.reclaim(P1).unwrap().freed, vec![1, 0, 0]);
    assert_eq!(slab.reclaim(HOST).unwrap().freed, vec![3, 0, 0]);
    all_free(&slab);
    assert_eq!(drain(&slab).len(), 20);
}

#[test]
fn a_garbage_state_word_is_found_and_quarantined() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    // Slot 2 of class 1 is free on the list, slot 0 allocated; scribble both.
    let held = slab.alloc_in(1).unwrap();
    assert_eq!(held.index(), 0);
    raw.set_gen_state(1, 2, 0, 7);
    raw.set_gen_state(1, 0, 0, u32::MAX);
    let stats = slab.stats();
    assert_eq!(
        (stats[1].corrupt, stats[1].free, stats[1].allocated),
        (2, 2, 0)
    );
    assert_eq!(slab.slot_status(1, 2).unwrap().state, None);
    let bad_state = |index, state| SlabError::Corrupt {
        class: 1,
        corruption: Corruption::BadState { index, state },
    };
    assert_eq!(slab.free(held), Err(bad_state(0, u32::MAX)));
    assert_eq!(slab.mark_in_flight(held, P1), Err(bad_state(0, u32::MAX)));
    assert_eq!(raw.gen_state(1, 0), (0, u32::MAX), "nothing changed");
    assert_eq!(raw.journal(HOST).load(Ordering::Relaxed), 0);
    // Popping: 1 is free, then 2 is garbage.
    assert_eq!(slab.alloc_in(1).unwrap().index(), 1);
    assert_eq!(
        slab.alloc_in(1),
        Err(SlabError::Corrupt {
            class: 1,
            corruption: Corruption::PoppedNotFree { index: 2, state: 7 }
        })
    );
    assert_eq!(
        raw.gen_state(1, 2),
        (0, 7),
        "the garbage slot is left as it is"
    );
    assert_eq!(slab.alloc_in(1).unwrap().index(), 3);
    // Reclaim skips garbage; rebuild quarantines it.
    assert_eq!(slab.reclaim(HOST).unwrap().freed, vec![0, 2, 0]);
    let report = slab.rebuild_free_list(1).unwrap();
    assert_eq!((report.free, report.quarantined), (2, 2));
    let stats = quiescent(&slab);
    assert_eq!((stats[1].free, stats[1].corrupt), (2, 2));
    // The class keeps working, and grows.
    let taken: Vec<_> = (0..6).map(|_| slab.alloc_in(1).unwrap()).collect();
    assert!(taken.iter().all(|h| h.index() != 0 && h.index() != 2));
    assert_eq!(slab.alloc_in(1), Err(SlabError::NoFreeSlots { class: 1 }));
    for handle in taken {
        free_ok(&slab, handle);
    }
    quiescent(&slab);
}

/// What an audit of a healthy class says: settled, nothing wrong.
fn healthy(audit: &crate::ClassAudit) -> bool {
    audit.settled
        && !audit.held
        && audit.list_fault.is_none()
        && audit.bad_states == 0
        && audit.off_list.is_empty()
}

#[test]
fn an_audit_of_healthy_classes_finds_nothing() {
    let slab = new_slab(2);
    let p1 = slab.with_owner(P1).unwrap();
    assert!((0..3).all(|c| healthy(&slab.audit(c).unwrap())));
    // Slots allocated, in flight, freed, and an extent grown: still nothing.
    let taken: Vec<_> = (0..6).map(|_| p1.alloc_in(0).unwrap()).collect();
    p1.mark_in_flight(taken[1], HOST).unwrap();
    free_ok(&slab, taken[1]);
    free_ok(&p1, taken[2]);
    assert!((0..3).all(|c| healthy(&slab.audit(c).unwrap())));
    assert_eq!(
        slab.audit(3),
        Err(SlabError::BadHandle { class: 3, index: 0 })
    );
}

#[test]
fn an_audit_finds_each_kind_of_list_damage_and_a_rebuild_mends_it() {
    // Each scribble, what the audit must say of it, and the free slots the rebuild brings back.
    type Scribble = fn(&Raw<'_, Arc<HeapRegion>>);
    type Found = fn(&crate::ClassAudit) -> bool;
    let cases: [(&str, Scribble, Found); 5] = [
        (
            "a head outside the class",
            |raw| raw.set_head(0, 100),
            |a| a.list_fault == Some(Corruption::FreeHead { index: 100 }),
        ),
        (
            "a link outside the class",
            |raw| raw.meta(0, 1).next_free.store(1 << 20, Ordering::Relaxed),
            |a| {
                a.list_fault
                    == Some(Corruption::NextFree {
                        index: 1,
                        next: 1 << 20,
                    })
            },
        ),
        (
            "a cycle",
            |raw| raw.meta(0, 2).next_free.store(0, Ordering::Relaxed),
            |a| a.list_fault == Some(Corruption::Cycle { limit: 4 }),
        ),
        (
            "a listed slot that is not free",
            |raw| raw.set_gen_state(0, 1, 0, ALLOCATED),
            |a| {
                a.list_fault
                    == Some(Corruption::PoppedNotFree {
                        index: 1,
                        state: ALLOCATED,
                    })
            },
        ),
        (
            "a list cut short: free slots off the list",
            |raw| {
                raw.meta(0, 1)
                    .next_free
                    .store(FREE_LIST_END, Ordering::Relaxed)
            },
            |a| a.list_fault.is_none() && a.off_list == [(2, 0), (3, 0)],
        ),
    ];
    for (what, scribble, found) in cases {
        let slab = new_slab(2);
        let raw = Raw::new(&slab);
        scribble(&raw);
        let audit = slab.audit(0).unwrap();
        assert!(audit.settled, "{what}: {audit:?}");
        assert!(found(&audit), "{what}: {audit:?}");
        assert_eq!(
            audit.list_broken(),
            audit.list_fault.is_some(),
            "{what}: {audit:?}"
        );
        // The other classes are untouched.
        assert!(healthy(&slab.audit(1).unwrap()), "{what}");
        slab.rebuild_free_list(0).unwrap();
        let after = slab.audit(0).unwrap();
        assert!(
            after.settled && after.list_fault.is_none() && after.off_list.is_empty(),
            "{what}, after the rebuild: {after:?}"
        );
    }
}

#[test]
fn an_audit_counts_garbage_states_and_sees_a_held_list() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    let kept = slab.alloc_in(1).unwrap();
    // Slot 3 is the list's last; a garbage state there is both a bad state and a listed slot
    // that is not free.
    raw.set_gen_state(1, 3, 0, 9);
    raw.set_gen_state(1, kept.index(), 0, u32::MAX);
    let audit = slab.audit(1).unwrap();
    assert_eq!(audit.bad_states, 2, "{audit:?}");
    assert_eq!(
        audit.list_fault,
        Some(Corruption::PoppedNotFree { index: 3, state: 9 })
    );
    let report = slab.rebuild_free_list(1).unwrap();
    assert_eq!(report.quarantined, 2);
    let audit = slab.audit(1).unwrap();
    assert_eq!(
        (audit.bad_states, audit.list_fault),
        (2, None),
        "quarantined"
    );
    assert!(audit.off_list.is_empty());

    // A held marker: the audit says so and judges nothing else.
    raw.set_head(2, LIST_HELD);
    let audit = slab.audit(2).unwrap();
    assert!(
        audit.held && audit.settled && audit.list_fault.is_none(),
        "{audit:?}"
    );
}

#[test]
fn a_slot_between_its_free_and_its_push_is_not_off_the_list() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    let p1 = slab.with_owner(P1).unwrap();
    let handle = p1.alloc_in(0).unwrap();
    // P1 stops between the state CAS of its free and the push: the slot is Free, off the
    // list, and named by P1's journal.
    raw.crash_after_free_cas(P1, handle, false);
    let audit = slab.audit(0).unwrap();
    assert!(healthy(&audit), "{audit:?}");
    // Once the journal no longer names it (P1 died and its journal was cleared without a
    // reclaim), the slot is lost, and the audit says so.
    slab.clear_journal(P1).unwrap();
    let audit = slab.audit(0).unwrap();
    assert_eq!(audit.off_list, [(handle.index(), 1)], "{audit:?}");
    assert_eq!(slab.rebuild_free_list(0).unwrap().free, 4);
    assert!(healthy(&slab.audit(0).unwrap()));
}

#[test]
fn a_garbage_journal_is_an_error_once() {
    let layout = layout(2);
    // (u32::MAX is a journal taken by a thread that has not named its slot yet: no error.)
    for (bad, class) in [
        (encode_slot_ref(4, 0) + 1, 4u16),
        (encode_slot_ref(3, 0) + 1, 3),
        (encode_slot_ref(0, 4) + 1, 0),
        (encode_slot_ref(2, 1 << 20) + 1, 2),
    ] {
        let slab = init_on(heap(&layout), layout.clone());
        let raw = Raw::new(&slab);
        let held = slab.with_owner(P1).unwrap().alloc(1).unwrap();
        raw.journal(P1).store(bad, Ordering::Relaxed);
        assert_eq!(
            slab.reclaim(P1),
            Err(SlabError::Corrupt {
                class,
                corruption: Corruption::Journal {
                    owner: P1,
                    slot_ref: bad - 1
                }
            })
        );
        // Cleared, so the next reclaim does the rest.
        assert_eq!(raw.journal(P1).load(Ordering::Relaxed), 0);
        assert_eq!(slab.reclaim(P1).unwrap().freed, vec![1, 0, 0]);
        assert_eq!(held.class(), 0);
        all_free(&slab);
    }
}

#[test]
fn bad_extent_offsets_are_errors() {
    let layout = layout(3);
    let initial = layout.initial_size() as u64;
    for bad in [
        initial + 1,
        initial + 32,
        64,
        layout.initial_extent_offsets[0] as u64,
        layout.max_size() as u64,
        layout.max_size() as u64 - 64,
        u64::MAX - 63,
    ] {
        let region = heap(&layout);
        let host = init_on(region.clone(), layout.clone());
        let raw = Raw::new(&host);
        raw.header(0).extent_offsets[1].store(bad, Ordering::Release);
        // A handle whose cache never saw extent 1 (the host's did not either).
        let peer = Slab::attach(region.clone(), layout.clone(), P1).unwrap();
        for slab in [&host, &peer] {
            assert_eq!(
                slab.slot_status(0, 4).map(|_| ()),
                Err(SlabError::BadHandle { class: 0, index: 4 }),
                "extent 1 at {bad:#x}"
            );
            let handle = SlotHandle::from_parts(0, 5, 0);
            assert_eq!(
                slab.free(handle).map(|_| ()),
                Err(SlabError::BadHandle { class: 0, index: 5 })
            );
            assert_eq!(
                slab.slot_data(handle).map(|_| ()),
                Err(SlabError::BadHandle { class: 0, index: 5 })
            );
            let stats = slab.stats();
            assert_eq!((stats[0].extents, stats[0].total), (1, 4));
        }
        // Growth goes past the slot someone scribbled; nothing reads it.
        let taken: Vec<_> = (0..8).map(|_| peer.alloc_in(0).unwrap()).collect();
        assert!(taken[4..].iter().all(|h| extent_of(0, h.index()) == 2));
        assert_eq!(peer.alloc_in(0), Err(SlabError::NoFreeSlots { class: 0 }));
        // The extents after the bad one are unreachable to scans; their slots stay usable by
        // handle.
        for handle in taken {
            free_ok(&peer, handle);
        }
        // A free list pointing into the bad extent is a FreeHead error.
        raw.set_head(0, 6);
        assert_eq!(
            host.alloc_in(0),
            Err(SlabError::Corrupt {
                class: 0,
                corruption: Corruption::FreeHead { index: 6 }
            })
        );
    }
}

#[test]
fn a_scribbled_current_size_is_overruled_by_the_private_extent_table() {
    let layout = layout(3);
    let (initial, max) = (layout.initial_size() as u64, layout.max_size() as u64);
    let extent_region = layout.extent_region_offset as u64;
    // Rewound or misaligned (R4: a hint, checked against what this participant knows): growth
    // goes after every known extent, never over one, and the reservation repairs the word.
    for bad in [0, extent_region - 64, initial + 1] {
        let slab = init_on(heap(&layout), layout.clone());
        let raw = Raw::new(&slab);
        let held: Vec<_> = (0..4).map(|_| slab.alloc_in(0).unwrap()).collect();
        let first = slab.alloc_in(0).unwrap();
        assert_eq!(extent_of(0, first.index()), 1);
        let end = raw.current_size().load(Ordering::Relaxed);
        assert!(end > initial, "current_size {end:#x}");
        let more: Vec<_> = (0..3).map(|_| slab.alloc_in(0).unwrap()).collect();
        raw.current_size().store(bad, Ordering::Release);
        let grown = slab.alloc_in(0).unwrap();
        assert_eq!(extent_of(0, grown.index()), 2, "current_size {bad:#x}");
        let addresses: HashSet<usize> = held
            .iter()
            .chain(&more)
            .chain([&first, &grown])
            .map(|&h| slab.slot_data(h).unwrap().as_ptr() as usize)
            .collect();
        assert_eq!(
            addresses.len(),
            9,
            "no slot over another, current_size {bad:#x}"
        );
        let offsets = raw.extent_offsets(0);
        assert!(
            offsets[2] >= end,
            "extent 2 at {:#x}, after {end:#x}",
            offsets[2]
        );
        assert_eq!(
            raw.current_size().load(Ordering::Relaxed),
            offsets[2] + layout.extent_size(0) as u64,
            "repaired"
        );
        for handle in held.into_iter().chain(more).chain([first, grown]) {
            free_ok(&slab, handle);
        }
    }
    // Past the reservation: an error, and nothing grows.
    for bad in [max + 64, u64::MAX] {
        let slab = init_on(heap(&layout), layout.clone());
        let raw = Raw::new(&slab);
        let held: Vec<_> = (0..4).map(|_| slab.alloc_in(0).unwrap()).collect();
        raw.current_size().store(bad, Ordering::Release);
        assert_eq!(
            slab.alloc_in(0),
            Err(SlabError::Corrupt {
                class: 0,
                corruption: Corruption::CurrentSize { value: bad }
            }),
            "current_size {bad:#x}"
        );
        assert_eq!(slab.stats()[0].extents, 1);
        raw.current_size().store(initial, Ordering::Release);
        assert_eq!(extent_of(0, slab.alloc_in(0).unwrap().index()), 1);
        for handle in held {
            free_ok(&slab, handle);
        }
    }
    // Within bounds but leaving no room: the class cannot grow.
    let slab = init_on(heap(&layout), layout.clone());
    let held: Vec<_> = (0..4).map(|_| slab.alloc_in(0).unwrap()).collect();
    Raw::new(&slab).current_size().store(max, Ordering::Release);
    assert_eq!(slab.alloc_in(0), Err(SlabError::NoFreeSlots { class: 0 }));
    assert_eq!(held.len(), 4);
}

#[test]
fn a_held_list_makes_operations_wait_then_fail() {
    let slab = new_slab(2);
    let raw = Raw::new(&slab);
    let held = slab.alloc_in(0).unwrap();
    // Held by a host that died, or scribbled: a second later, an error, not a hang.
    raw.set_head(0, LIST_HELD);
    assert_eq!(slab.free_list_len(0), Err(SlabError::ListHeld { class: 0 }));
    assert!(slab.has_free_slot(0), "held means it may soon have one");
    let started = std::time::Instant::now();
    assert_eq!(slab.alloc_in(0), Err(SlabError::ListHeld { class: 0 }));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(slab.alloc(65).unwrap().class(), 1, "other classes go on");
    // The host's rebuild takes a stuck marker over and brings the class back.
    let total = slab.stats()[0].total;
    let report = slab.rebuild_free_list(0).unwrap();
    assert_eq!(report.free, total - 1, "every free slot but the one held");
    assert_eq!(slab.free_list_len(0), Ok(total - 1));
    free_listed_ok(&slab, held);
    assert_eq!(slab.free_list_len(0), Ok(total));
    assert!(slab.has_free_slot(0));
}

#[test]
fn free_wakes_an_announced_waiter_once() {
    let slab = new_slab(2);
    let held: Vec<_> = (0..2).map(|_| slab.alloc_in(2).unwrap()).collect();
    assert!(!slab.has_free_slot(2));
    let word = slab.slot_available_word(2).unwrap();
    let before = word.load(Ordering::Relaxed);
    let seen = slab.announce_waiter(2).unwrap();
    assert_eq!(seen, before | crate::WAITER_BIT);
    let freed = slab.free(held[0]).unwrap();
    assert!(freed.wake_waiters);
    let after = word.load(Ordering::Relaxed);
    assert_eq!(after & crate::WAITER_BIT, 0, "the bit is cleared");
    assert_ne!(after, seen, "a FUTEX_WAIT on the announced value fails");
    assert_eq!(after, (seen | 1).wrapping_add(crate::SEQUENCE_STEP) & !1);
    // Nobody waits any more.
    assert!(!slab.free(held[1]).unwrap().wake_waiters);
    assert_eq!(word.load(Ordering::Relaxed), after);
    // Reclaim reports the wake too.
    let p1 = slab.with_owner(P1).unwrap();
    let taken = p1.alloc_in(2).unwrap();
    slab.announce_waiter(2).unwrap();
    let report = slab.reclaim(P1).unwrap();
    assert!(report.wake_waiters);
    assert_eq!(report.freed, vec![0, 0, 1]);
    assert_eq!(taken.class(), 2);
}

// ----- no panic, whatever the bytes -----

/// Values worth scribbling: valid and invalid indices, sentinels, and random words.
fn scribble_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..16,
        Just(u64::from(FREE_LIST_END)),
        Just(u64::from(NO_OWNER)),
        (0u32..8).prop_map(|c| u64::from(c) << 29),
        any::<u32>().prop_map(u64::from),
        any::<u64>(),
    ]
}

#[derive(Debug, Clone)]
enum Poke {
    Alloc(usize),
    AllocIn(u16),
    Free(usize),
    FreeBogus(u16, u32, u32),
    Mark(usize, u16),
    Reclaim(u16),
    Rebuild(u16),
    Look,
}

fn poke() -> impl Strategy<Value = Poke> {
    prop_oneof![
        (0usize..1100).prop_map(Poke::Alloc),
        (0u16..4).prop_map(Poke::AllocIn),
        any::<usize>().prop_map(Poke::Free),
        (0u16..4, 0u32..16, 0u32..3).prop_map(|(c, i, g)| Poke::FreeBogus(c, i, g)),
        (any::<usize>(), 0u16..5).prop_map(|(h, r)| Poke::Mark(h, r)),
        (0u16..5).prop_map(Poke::Reclaim),
        (0u16..3).prop_map(Poke::Rebuild),
        Just(Poke::Look),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A participant writes garbage into any word of the allocator's state (control words,
    /// journals, class headers, slot metas): every operation afterwards returns, with a value
    /// or an error, and never panics or reads outside the region (R3, threat model).
    #[test]
    fn scribbles_never_panic(
        setup in proptest::collection::vec(poke(), 0..20),
        scribbles in proptest::collection::vec((any::<prop::sample::Index>(), scribble_value()), 1..6),
        after in proptest::collection::vec(poke(), 1..40),
    ) {
        let layout = layout(3);
        let region = heap(&layout);
        let slab = init_on(region.clone(), layout.clone());
        let peers: Vec<_> = (0..MAX_PEERS_HERE).map(|p| slab.with_owner(OwnerId::peer(p)).unwrap()).collect();
        let mut handles = Vec::new();
        let run = |ops: &[Poke], handles: &mut Vec<SlotHandle>, slab: &TestSlab| {
            for (i, op) in ops.iter().enumerate() {
                let by = if i % 5 == 4 { slab } else { &peers[i % 4] };
                match *op {
                    Poke::Alloc(len) => {
                        if let Ok(h) = by.alloc(len) { handles.push(h) }
                    }
                    Poke::AllocIn(c) => {
                        if let Ok(h) = by.alloc_in(c) { handles.push(h) }
                    }
                    Poke::Free(pick) if !handles.is_empty() => {
                        let h = handles.swap_remove(pick % handles.len());
                        let _ = by.free(h);
                    }
                    Poke::FreeBogus(c, i, g) => {
                        let _ = by.free(SlotHandle::from_parts(c, i, g));
                        let _ = by.mark_in_flight(SlotHandle::from_parts(c, i, g), HOST);
                        let _ = by.slot_status(c, i);
                        let _ = by.slot_data(SlotHandle::from_parts(c, i, g));
                    }
                    Poke::Mark(pick, r) if !handles.is_empty() => {
                        let h = handles[pick % handles.len()];
                        let receiver = if r == 4 { HOST } else { OwnerId::peer(r) };
                        let _ = by.mark_in_flight(h, receiver);
                    }
                    Poke::Reclaim(o) => {
                        let owner = if o == 4 { HOST } else { OwnerId::peer(o) };
                        let _ = slab.reclaim(owner);
                    }
                    Poke::Rebuild(c) => {
                        let _ = slab.rebuild_free_list(c);
                    }
                    _ => {
                        let _ = slab.stats();
                        for c in 0..3 {
                            let _ = slab.free_list_len(c);
                            let _ = slab.has_free_slot(c);
                        }
                    }
                }
            }
        };
        run(&setup, &mut handles, &slab);
        // The allocator's state: everything below the extent region, and the metas of every
        // extent published so far.
        let raw = Raw::new(&slab);
        let mut words: Vec<usize> = (0..layout.extent_region_offset).step_by(4).collect();
        for (class, config) in CLASSES.iter().enumerate() {
            for extent in 0..3 {
                let base = raw.header(class).extent_offsets[extent].load(Ordering::Relaxed) as usize;
                if base != 0 {
                    let metas = base + layout.geometry[class].meta_offset;
                    words.extend((metas..metas + 16 * config.slots_per_extent as usize).step_by(4));
                }
            }
        }
        for (at, value) in scribbles {
            let offset = words[at.index(words.len())];
            if offset.is_multiple_of(8) && value > u64::from(u32::MAX) {
                raw.shared().u64_at(offset).unwrap().store(value, Ordering::Relaxed);
            } else {
                // Never the held marker: that only costs a second of waiting.
                let value = if value as u32 == LIST_HELD { 0 } else { value as u32 };
                raw.shared().u32_at(offset).unwrap().store(value, Ordering::Relaxed);
            }
        }
        for class in 0..CLASSES.len() {
            // Only a held marker itself costs a wait; keep the test fast.
            if raw.head(class).0 == LIST_HELD {
                raw.set_head(class, FREE_LIST_END);
            }
        }
        run(&after, &mut handles, &slab);
        let _ = Slab::attach(region, layout, P0);
        let _ = slab.stats();
    }
}

// ----- concurrency, with crashes injected -----

/// Counts a thread as finished when dropped, also when the thread panics, so that a loop
/// waiting for the threads ends and the test fails instead of hanging.
struct Finished<'a>(&'a AtomicU32);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// One flag per slot: set while the slot is handed out. The allocator handing out a slot that
/// is still out is the failure.
struct Out(Vec<Vec<AtomicBool>>);

impl Out {
    fn new(layout: &SlabLayout) -> Self {
        Self(
            (0..layout.class_count())
                .map(|c| {
                    let n = layout.class(c).unwrap().slots_per_extent * layout.max_extents();
                    (0..n).map(|_| AtomicBool::new(false)).collect()
                })
                .collect(),
        )
    }
    fn take(&self, h: SlotHandle) {
        let was = self.0[usize::from(h.class())][h.index() as usize].swap(true, Ordering::AcqRel);
        assert!(!was, "{h:?} handed out while it was out");
    }
    fn give(&self, h: SlotHandle) {
        let was = self.0[usize::from(h.class())][h.index() as usize].swap(false, Ordering::AcqRel);
        assert!(was, "{h:?} given back but was not out");
    }
}

fn worker(slab: &TestSlab, out: &Out, rounds: u32, seed: u64) {
    let mut rng = seed;
    let mut held: Vec<SlotHandle> = Vec::new();
    for _ in 0..rounds {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if !rng.is_multiple_of(3) && held.len() < 6 {
            match slab.alloc((rng >> 8) as usize % 1024) {
                Ok(h) => {
                    out.take(h);
                    held.push(h);
                }
                Err(SlabError::NoFreeSlots { .. }) => {}
                Err(e) => panic!("alloc: {e}"),
            }
        } else if !held.is_empty() {
            let h = held.swap_remove((rng >> 16) as usize % held.len());
            if rng & (1 << 40) != 0 {
                slab.mark_in_flight(h, HOST).unwrap();
            }
            out.give(h);
            let _ = slab.free(h).unwrap();
        }
    }
    for h in held {
        out.give(h);
        let _ = slab.free(h).unwrap();
    }
}

fn rounds(debug: u32, release: u32) -> u32 {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

/// Rebuilds of a list while others pop and push in it lose no slot and put none on the list
/// twice: a free whose state CAS lands after the rebuild took the list, and whose push waits
/// for it, must not find its slot already chained; a slot pushed on the old list must not be
/// left off the new one.
#[test]
fn rebuild_under_load_loses_and_duplicates_nothing() {
    const WORKERS: u32 = 2;
    let layout = layout(3);
    let slab = init_on(heap(&layout), layout.clone());
    let out = Out::new(&layout);
    let finished = AtomicU32::new(0);
    let last = std::thread::scope(|s| {
        let workers: Vec<_> = [P0, P1]
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let peer = slab.with_owner(p).unwrap();
                let (out, finished) = (&out, &finished);
                s.spawn(move || {
                    let _finished = Finished(finished);
                    worker(
                        &peer,
                        out,
                        rounds(100_000, 1_000_000),
                        0x9e37_79b9 + i as u64,
                    );
                })
            })
            .collect();
        let rebuilder = s.spawn(|| {
            let mut rebuilds = 0u32;
            let mut last = vec![Default::default(); 3];
            while finished.load(Ordering::Acquire) < WORKERS || rebuilds < 100 {
                for (class, last) in last.iter_mut().enumerate() {
                    *last = slab.rebuild_free_list(class as u16).unwrap();
                }
                rebuilds += 1;
            }
            last
        });
        let last = rebuilder.join().unwrap();
        for w in workers {
            w.join().unwrap();
        }
        last
    });
    for (class, report) in last.iter().enumerate() {
        // A slot a live participant kept naming is left for a later rebuild: this one.
        if report.pending > 0 {
            let again = slab.rebuild_free_list(class as u16).unwrap();
            assert_eq!(again.pending, 0, "nobody is busy any more");
        }
    }
    all_free(&slab);
}

/// A participant that dies in the middle of a pop or a free, again and again, while another
/// allocates and frees: every reclaim gets the lost slot back, exactly once; and a journal
/// naming a slot the dead one never took (it died before its CAS), which the live one may be
/// popping at that very moment, makes reclaim put back nothing.
#[test]
fn reclaim_of_crashed_pops_and_frees_under_load() {
    let layout = layout(3);
    let slab = init_on(heap(&layout), layout.clone());
    let out = Out::new(&layout);
    let done = AtomicU32::new(0);
    std::thread::scope(|s| {
        let peer = slab.with_owner(P0).unwrap();
        let (out_w, done_w) = (&out, &done);
        let w = s.spawn(move || {
            let _done = Finished(done_w);
            worker(&peer, out_w, rounds(200_000, 2_000_000), 7);
        });
        let raw = Raw::new(&slab);
        let mut recovered = 0u32;
        let mut crashes = 0u32;
        let mut round = 0u32;
        while done.load(Ordering::Acquire) == 0 || round < 300 {
            round += 1;
            // Each round's dying participant is a new life of P3, with a ledger of its own (a
            // process's private memory dies with it).
            let dead = slab.with_owner(P3).unwrap();
            let class = (round / 4 % 3) as usize;
            let crashed = match round % 4 {
                0 => raw
                    .crash_after_pop_cas(P3, class, round.is_multiple_of(2))
                    .is_some(),
                1 => match dead.try_alloc_in(class as u16) {
                    Ok(Some(h)) => {
                        raw.crash_after_free_cas(P3, h, round.is_multiple_of(2));
                        true
                    }
                    Ok(None) => false,
                    Err(e) => panic!("{e}"),
                },
                kind => {
                    // Died after naming the head, before its CAS: nothing is lost. Mostly in
                    // class 2, where most of the worker's requests go: the worker may be
                    // popping that very slot while reclaim looks at it.
                    let class = if kind == 2 { 2 } else { class };
                    let (head, _) = raw.head(class);
                    if head < LIST_HELD {
                        raw.journal(P3)
                            .store(encode_slot_ref(class as u16, head) + 1, Ordering::Relaxed);
                    }
                    false
                }
            };
            crashes += u32::from(crashed);
            loop {
                let report = slab.reclaim(P3).unwrap();
                assert_eq!(report.freed, vec![0, 0, 0]);
                recovered += u32::from(report.recovered_from_journal);
                if !report.journal_pending {
                    break;
                }
            }
            assert_eq!(recovered, crashes, "round {round}");
        }
        w.join().unwrap();
    });
    all_free(&slab);
}

/// Item 9 of issue 13 (R11): a growth frees the new extent's slots one by one; when an
/// allocator announced that it sleeps on the class, the growth reports the class to wake
/// ([`Slab::take_wakes`]) instead of dropping the wakeup.
#[test]
fn a_growth_reports_the_wakeups_its_frees_owe() {
    let slab = new_slab(2);
    let sleeper = slab.with_owner(P1).unwrap();
    let held: Vec<_> = (0..4).map(|_| slab.alloc_in(0).unwrap()).collect();
    assert_eq!(slab.take_wakes(), 0);
    let seen = sleeper.announce_waiter(0).unwrap();
    assert!(!sleeper.has_free_slot(0), "asleep on {seen}");
    let grown = slab.alloc_in(0).unwrap();
    assert_eq!(extent_of(0, grown.index()), 1);
    assert_eq!(slab.take_wakes(), 1 << 0, "class 0 owes a wakeup");
    assert_eq!(slab.take_wakes(), 0, "taken");
    assert_ne!(
        slab.slot_available_word(0).unwrap().load(Ordering::Relaxed),
        seen,
        "the sleeper's FUTEX_WAIT on {seen} returns at once"
    );
    for handle in held.into_iter().chain([grown]) {
        free_ok(&slab, handle);
    }
}

/// A fresh free list hands out one slot of each meta line before a second of any: slots taken
/// one after another, by participants that then keep them, do not share a meta's cache line.
mod list_order {
    use super::*;
    use crate::slab::list_order;

    /// Slot metas on one 64-byte line.
    const PER_LINE: u32 = 64 / size_of::<SlotMeta>() as u32;

    #[test]
    fn the_order_is_every_slot_once_one_per_line_first() {
        for slots in [1, 2, 3, 4, 5, 8, 64, 1024] {
            let order: Vec<u32> = list_order(slots).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..slots).collect::<Vec<_>>(), "{slots} slots");
            assert_eq!(order[0], 0, "slot 0 heads the list");
            let lines = slots.div_ceil(PER_LINE) as usize;
            let first: HashSet<u32> = order[..lines].iter().map(|i| i / PER_LINE).collect();
            assert_eq!(
                first.len(),
                lines,
                "{slots} slots: one slot of each line first"
            );
        }
    }

    #[test]
    fn fresh_and_grown_extents_hand_out_slots_on_distinct_lines() {
        const SLOTS: u32 = 64;
        let layout = SlabLayout::standalone(
            &[ClassConfig {
                slot_size: 64,
                slots_per_extent: SLOTS,
            }],
            2,
            2,
        )
        .unwrap();
        let host = init_on(heap(&layout), layout);
        let peers = [0, 1].map(|peer| host.with_owner(OwnerId::peer(peer)).unwrap());
        // Taken in turn by two participants, as two peers allocating at once would.
        let taken: Vec<SlotHandle> = (0..8)
            .map(|i| peers[i % 2].alloc_in(0).expect("a slot"))
            .collect();
        let lines: HashSet<u32> = taken.iter().map(|h| h.index() / PER_LINE).collect();
        assert_eq!(lines.len(), taken.len(), "{taken:?}");
        // Empty the first extent; the next alloc grows the class and keeps the new extent's
        // first slot, and the list then hands out the others from other lines.
        let rest: Vec<SlotHandle> = (8..SLOTS).map(|_| host.alloc_in(0).unwrap()).collect();
        assert!(rest.iter().chain(&taken).all(|h| h.index() < SLOTS));
        let grown: Vec<SlotHandle> = (0..8)
            .map(|i| peers[i % 2].alloc_in(0).expect("a slot of a new extent"))
            .collect();
        assert_eq!(grown[0].index(), SLOTS, "the grower's own slot");
        let lines: HashSet<u32> = grown.iter().map(|h| h.index() / PER_LINE).collect();
        assert_eq!(lines.len(), grown.len(), "{grown:?}");
    }
}

/// The magazine (see `crate::magazine`): what a kept slot is to its keeper, to the others and
/// to reclaim.
mod kept_slots {
    use super::*;

    /// One class of 64 slots an extent (a magazine of 4 cells) and one of 8 (one cell).
    fn keeping() -> TestSlab {
        let layout = SlabLayout::standalone(
            &[
                ClassConfig {
                    slot_size: 64,
                    slots_per_extent: 64,
                },
                ClassConfig {
                    slot_size: 256,
                    slots_per_extent: 8,
                },
            ],
            2,
            MAX_PEERS_HERE,
        )
        .unwrap();
        init_on(heap(&layout), layout)
    }

    #[test]
    fn a_freed_slot_is_kept_and_handed_out_again_at_the_next_generation() {
        let slab = keeping();
        let raw = Raw::new(&slab);
        let slot = slab.alloc_in(0).unwrap();
        let freed = slab.free(slot).unwrap();
        assert!(!freed.wake_waiters);
        assert_eq!((slab.kept_count(0), slab.held_count(0)), (1, 0));
        assert!(!slab.holds(slot));
        // Shared memory: Allocated, ours, the next generation, marked kept; off the list.
        let meta = raw.meta(0, slot.index());
        assert_eq!(
            split(meta.gen_state.load(Ordering::Relaxed)),
            (slot.generation() + 1, ALLOCATED)
        );
        assert_eq!(meta.owner.load(Ordering::Relaxed), HOST.raw());
        assert_eq!(meta.next_free.load(Ordering::Relaxed), KEPT_SLOT_MARK);
        assert_eq!(slab.free_list_len(0).unwrap(), 63);
        // Counted free (and kept), by its keeper and by another participant alike.
        for view in [&slab, &slab.with_owner(P0).unwrap()] {
            let stats = view.stats()[0];
            assert_eq!(
                (stats.free, stats.kept, stats.allocated),
                (64, 1, 0),
                "{stats:?}"
            );
        }
        // The next alloc takes it back, held, at the new generation, without the list.
        let again = slab.alloc_in(0).unwrap();
        assert_eq!(
            (again.index(), again.generation()),
            (slot.index(), slot.generation() + 1)
        );
        assert!(slab.holds(again));
        assert_eq!(slab.kept_count(0), 0);
        assert_ne!(meta.next_free.load(Ordering::Relaxed), KEPT_SLOT_MARK);
        free_ok(&slab, again);
        assert_eq!(slab.give_back_kept().unwrap(), 1);
        all_kept_back(&slab);
    }

    /// Every slot free, on its list, and none kept.
    fn all_kept_back(slab: &TestSlab) {
        for (class, stats) in slab.stats().iter().enumerate() {
            assert_eq!((stats.free, stats.kept), (stats.total, 0), "{stats:?}");
            assert_eq!(slab.free_list_len(class as u16).unwrap(), stats.total);
        }
    }

    #[test]
    fn a_second_free_of_a_kept_handle_is_a_double_free_and_a_forged_one_is_stale() {
        let slab = keeping();
        let slot = slab.alloc_in(0).unwrap();
        free_ok(&slab, slot);
        assert_eq!(
            slab.free(slot),
            Err(SlabError::DoubleFree {
                class: 0,
                index: slot.index()
            })
        );
        // The handle the next alloc will return, forged before it does: refused, and the slot
        // stays kept (it is no handle's yet).
        let forged = SlotHandle::from_parts(0, slot.index(), slot.generation() + 1);
        assert!(matches!(
            slab.free(forged),
            Err(SlabError::StaleHandle { .. } | SlabError::DoubleFree { .. })
        ));
        assert!(slab.mark_in_flight(forged, P0).is_err());
        let status = slab.slot_status(0, slot.index()).unwrap();
        assert_eq!(
            (status.state, status.owner),
            (Some(SlotState::Allocated), HOST.raw())
        );
        assert_eq!(slab.kept_count(0), 1);
        assert_eq!(slab.give_back_kept().unwrap(), 1);
        all_kept_back(&slab);
    }

    #[test]
    fn a_received_slot_is_kept_only_by_a_receiver_that_allocates_in_the_class() {
        let host = keeping();
        let peer = host.with_owner(P0).unwrap();
        let send = |from: &TestSlab, to: &TestSlab| {
            let slot = from.alloc_in(0).unwrap();
            from.mark_in_flight(slot, to.owner()).unwrap();
            to.accept(slot, from.owner()).unwrap();
            slot
        };
        // The host has never allocated in class 0: what it receives and frees goes back on
        // the list, for its senders, at once.
        let first = send(&peer, &host);
        free_ok(&host, first);
        assert_eq!((host.kept_count(0), peer.kept_count(0)), (0, 0));
        assert_eq!(host.free_list_len(0).unwrap(), 64);
        let status = host.slot_status(0, first.index()).unwrap();
        assert_eq!(
            (status.state, status.owner),
            (Some(SlotState::Free), NO_OWNER)
        );
        // Once it allocates in the class, it keeps what it receives: one slot for each it took.
        let own = host.alloc_in(0).unwrap();
        let slot = send(&peer, &host);
        free_ok(&host, slot);
        assert_eq!((host.kept_count(0), peer.kept_count(0)), (1, 0));
        free_ok(&host, own);
        assert_eq!(host.kept_count(0), 1, "one alloc, one slot kept");
        let status = host.slot_status(0, slot.index()).unwrap();
        assert_eq!(
            (status.state, status.owner, status.generation),
            (
                Some(SlotState::Allocated),
                HOST.raw(),
                slot.generation() + 1
            )
        );
        // The host sends it back out: the receiver's reuse is the sender's next loan.
        let reused = send(&host, &peer);
        assert_eq!(reused.index(), slot.index());
        free_ok(&peer, reused);
        assert_eq!(peer.kept_count(0), 1);
        assert_eq!(peer.give_back_kept().unwrap(), 1);
        all_kept_back(&host);
    }

    #[test]
    fn after_giving_back_a_participant_keeps_again_only_once_it_allocates() {
        let host = keeping();
        let peer = host.with_owner(P0).unwrap();
        let receive = || {
            let slot = peer.alloc_in(0).unwrap();
            peer.mark_in_flight(slot, HOST).unwrap();
            host.accept(slot, P0).unwrap();
            free_ok(&host, slot);
        };
        // One loan, long ago: kept, then given back as before a sleep.
        let own = host.alloc_in(0).unwrap();
        free_ok(&host, own);
        assert_eq!(host.give_back_kept().unwrap(), 1);
        // From then on the host only receives: it keeps none of it.
        for _ in 0..3 {
            receive();
        }
        assert_eq!(host.kept_count(0), 0);
        // It allocates again: one slot kept again.
        let own = host.alloc_in(0).unwrap();
        receive();
        assert_eq!(host.kept_count(0), 1);
        free_ok(&host, own);
        assert_eq!(host.kept_count(0), 1, "one alloc, one keep");
        assert_eq!(host.give_back_kept().unwrap(), 1);
        all_kept_back(&host);
    }

    #[test]
    fn a_class_of_few_slots_keeps_one_and_a_waited_for_class_none() {
        let slab = keeping();
        let small: Vec<_> = (0..2).map(|_| slab.alloc_in(1).unwrap()).collect();
        for &slot in &small {
            free_ok(&slab, slot);
        }
        assert_eq!(slab.kept_count(1), 1, "8 slots an extent: one cell");
        assert_eq!(slab.free_list_len(1).unwrap(), 7);
        let again = slab.alloc_in(1).unwrap();
        assert_eq!(again.index(), small[0].index(), "the kept one");
        free_ok(&slab, again);
        // An allocator announced that it waits for class 0: the free goes to the list, and
        // says so.
        let slot = slab.alloc_in(0).unwrap();
        let waiter = slab.with_owner(P1).unwrap();
        let _ = waiter.announce_waiter(0).unwrap();
        let freed = slab.free(slot).unwrap();
        assert!(freed.wake_waiters);
        assert_eq!(slab.kept_count(0), 0);
        assert_eq!(slab.give_back_kept().unwrap(), 1, "the class 1 slot");
        all_kept_back(&slab);
    }

    #[test]
    fn the_last_free_slots_of_a_class_go_on_the_list() {
        let slab = keeping();
        // Every slot of class 1 (8 an extent, one extent): its list is empty.
        let all: Vec<_> = (0..8).map(|_| slab.alloc_in(1).unwrap()).collect();
        assert_eq!(slab.free_list_len(1).unwrap(), 0);
        // A free then is not kept, though a cell is empty: someone may wait for the slot
        // without having announced it (an async task napping between tries).
        free_ok(&slab, all[0]);
        assert_eq!((slab.kept_count(1), slab.free_list_len(1).unwrap()), (0, 1));
        let peer = slab.with_owner(P1).unwrap();
        let taken = peer.try_alloc_in(1).unwrap().expect("the listed slot");
        assert_eq!(taken.index(), all[0].index());
        // With a slot on the list again, the next free keeps.
        free_ok(&peer, taken);
        free_ok(&slab, all[1]);
        assert_eq!((slab.kept_count(1), slab.free_list_len(1).unwrap()), (1, 1));
        for &slot in &all[2..] {
            free_ok(&slab, slot);
        }
        assert_eq!(slab.give_back_kept().unwrap(), 1);
        all_kept_back(&slab);
    }

    #[test]
    fn the_cells_fill_then_frees_go_to_the_list() {
        let slab = keeping();
        let slots: Vec<_> = (0..6).map(|_| slab.alloc_in(0).unwrap()).collect();
        for &slot in &slots {
            free_ok(&slab, slot);
        }
        assert_eq!(slab.kept_count(0), 4);
        assert_eq!(slab.free_list_len(0).unwrap(), 60);
        assert_eq!(slab.held_count(0), 0);
        let again: Vec<_> = (0..6).map(|_| slab.alloc_in(0).unwrap()).collect();
        let indices: HashSet<u32> = again.iter().map(|h| h.index()).collect();
        assert_eq!(indices.len(), 6);
        for slot in again {
            free_ok(&slab, slot);
        }
        assert_eq!(slab.give_back_kept().unwrap(), 4);
        all_kept_back(&slab);
    }

    #[test]
    fn reclaim_of_a_dead_keeper_frees_its_kept_slots_and_counts_them_apart() {
        let host = keeping();
        let peer = host.with_owner(P2).unwrap();
        let kept: Vec<_> = (0..3).map(|_| peer.alloc_in(0).unwrap()).collect();
        let in_use = peer.alloc_in(0).unwrap();
        for &slot in &kept {
            free_ok(&peer, slot);
        }
        assert_eq!(peer.kept_count(0), 3);
        // The host never frees or counts as lost what a live peer keeps.
        assert!(host.orphans(0, |_| true).unwrap().is_empty());
        drop(peer); // dies with its kept slots and one in use
        let report = host.reclaim(P2).unwrap();
        assert_eq!((report.freed[0], report.kept), (1, 3), "{report:?}");
        assert_eq!(report.total(), 1);
        let _ = in_use;
        all_kept_back(&host);
    }

    #[test]
    fn the_hosts_own_reclaim_gives_back_what_it_keeps() {
        let host = keeping();
        let slot = host.alloc_in(0).unwrap();
        free_ok(&host, slot);
        assert_eq!(host.kept_count(0), 1);
        // A slot the host keeps is its own (R4): never an orphan, whatever the others say.
        assert!(host.orphans(0, |_| false).unwrap().is_empty());
        let _ = host.reclaim(HOST).unwrap();
        assert_eq!(host.kept_count(0), 0);
        all_kept_back(&host);
    }

    #[test]
    fn threads_of_one_participant_keep_and_take_without_losing_a_slot() {
        let slab = Arc::new(keeping());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let slab = Arc::clone(&slab);
                std::thread::spawn(move || {
                    for round in 0..2_000 {
                        let batch: Vec<_> = (0..1 + round % 5)
                            .map(|_| slab.alloc_in(0).unwrap())
                            .collect();
                        for slot in batch {
                            assert!(slab.holds(slot));
                            free_ok(&slab, slot);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(slab.held_count(0), 0);
        let _ = slab.give_back_kept().unwrap();
        all_kept_back(&slab);
    }
}

mod handles {
    use crate::SlotHandle;

    #[test]
    fn a_handle_gives_back_its_parts_and_prints_them() {
        for (class, index, generation) in [(0, 0, 0), (7, u32::MAX, u32::MAX), (3, 1 << 28, 1)] {
            let handle = SlotHandle::from_parts(class, index, generation);
            assert_eq!(
                (handle.class(), handle.index(), handle.generation()),
                (class, index, generation)
            );
        }
        assert_eq!(
            format!("{:?}", SlotHandle::from_parts(2, 5, 9)),
            "SlotHandle { class: 2, index: 5, generation: 9 }"
        );
        assert_ne!(
            SlotHandle::from_parts(0, 1, 0),
            SlotHandle::from_parts(0, 0, 1),
            "index and generation do not mix"
        );
    }
}
