//! The only door from the allocator to shared memory: atomics at checked offsets of a region.
//!
//! Everything here returns references to atomics only (R4): another process may write any byte
//! of the region at any time, and an atomic is the one Rust type for which that is defined. Each
//! safe accessor checks that the object lies inside the usable part of the region and is
//! aligned, so an offset computed from a corrupted value can produce an error, never an access
//! outside the mapping (R3). Two crate-private `unsafe` ones skip the check, for the slab's
//! lookups inside an extent it already saw whole (`object_within` and `bytes_within`). The
//! writer of whole structs ([`Shared::init`]) is `unsafe`: it may only touch memory nobody else
//! can reach yet.
//!
//! hub-transport reaches the segment through this module too, so the crate's unsafe code about
//! shared memory lives here and in hub-transport's mapping and ring modules only.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use hub_layout::{ExtentHeader, SizeClassHeader};

use crate::region::Region;
use crate::sync::{AtomicU32, AtomicU64};

/// The slot meta as the allocator accesses it: the seed's `HubSlotMeta` with its generation and
/// state read and written together, as one 64-bit word, so that a single compare-and-swap
/// checks both (R5). Generation is the low half and state the high half, which on a
/// little-endian machine puts each at the seed's offset (0 and 4).
#[repr(C)]
pub struct SlotMeta {
    /// `generation | state << 32`.
    pub gen_state: AtomicU64,
    /// Next slot on the free list (a global index), or `FREE_LIST_END`.
    pub next_free: AtomicU32,
    /// Who must free the slot next (R6), or `NO_OWNER`.
    pub owner: AtomicU32,
}

#[cfg(target_endian = "big")]
compile_error!("SlotMeta overlays HubSlotMeta's generation and state as one little-endian word");

#[cfg(not(loom))]
const _: () = {
    use core::mem::offset_of;
    use hub_layout::HubSlotMeta;
    assert!(size_of::<SlotMeta>() == size_of::<HubSlotMeta>());
    assert!(align_of::<SlotMeta>() == 8);
    assert!(offset_of!(SlotMeta, gen_state) == offset_of!(HubSlotMeta, generation));
    assert!(offset_of!(SlotMeta, gen_state) + 4 == offset_of!(HubSlotMeta, state));
    assert!(offset_of!(SlotMeta, next_free) == offset_of!(HubSlotMeta, next_free));
    assert!(offset_of!(SlotMeta, owner) == offset_of!(HubSlotMeta, owner_peer));
};

impl SlotMeta {
    /// A meta of generation `generation`, state `state` (a `SlotState` encoding), successor
    /// `next_free` and owner `owner`.
    pub fn new(generation: u32, state: u32, next_free: u32, owner: u32) -> Self {
        Self {
            gen_state: AtomicU64::new(join(generation, state)),
            next_free: AtomicU32::new(next_free),
            owner: AtomicU32::new(owner),
        }
    }
}

/// `(generation, state)` packed as [`SlotMeta::gen_state`] holds them.
#[inline]
pub const fn join(generation: u32, state: u32) -> u64 {
    generation as u64 | (state as u64) << 32
}

/// The `(generation, state)` of a [`SlotMeta::gen_state`] value.
#[inline]
pub const fn split(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

/// A view of a region's bytes that hands out only atomics, at checked offsets (or, through its
/// crate-private `unsafe` accessors, at offsets the caller checked before).
///
/// ```
/// use hub_alloc::{HeapRegion, shared::Shared};
/// let region = HeapRegion::new(4096, 8192);
/// let shared = Shared::new(&region);
/// assert!(shared.u64_at(4088).is_some());
/// assert!(shared.u64_at(4092).is_none()); // misaligned
/// assert!(shared.u64_at(4096).is_none()); // past the usable length
/// ```
pub struct Shared<'r, R: Region + ?Sized> {
    region: &'r R,
    base: NonNull<u8>,
}

impl<'r, R: Region + ?Sized> Shared<'r, R> {
    /// A view of `region`.
    pub fn new(region: &'r R) -> Self {
        Self {
            region,
            base: region.base(),
        }
    }

    /// Whether `[offset, offset + len)` is usable now; when it is past `len()`, the region is
    /// asked again (another process may have grown the file), once.
    #[inline]
    pub fn covers(&self, offset: usize, len: usize) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        end <= self.region.len() || end <= self.region.refresh_len()
    }

    /// A reference to the `T` at `offset`, or `None` when it is not inside the usable region or
    /// not aligned.
    #[inline]
    pub fn object<T: SharedAtomic>(&self, offset: usize) -> Option<&'r T> {
        if !offset.is_multiple_of(align_of::<T>()) || !self.covers(offset, size_of::<T>()) {
            return None;
        }
        // SAFETY: the object lies inside the usable part of the region (checked just above),
        // whose bytes stay valid and never move for the region's life `'r` (Region's contract),
        // and it is aligned. `T` is an atomic or a struct of atomics (SharedAtomic): every bit
        // pattern is a valid value and concurrent access from other threads and processes is
        // defined. Under loom the memory must have been initialised with `T`'s constructor;
        // the allocator writes every object with `init_*` before it publishes it.
        Some(unsafe { &*self.base.as_ptr().add(offset).cast::<T>() })
    }

    /// The `AtomicU64` at `offset`, or `None` when it is outside the usable region or misaligned.
    pub fn u64_at(&self, offset: usize) -> Option<&'r AtomicU64> {
        self.object(offset)
    }

    /// The `T` at `offset`, which the caller knows is usable and aligned: [`object`](Self::object)
    /// without its checks, for the slab's lookups inside an extent whose whole range it saw
    /// inside the usable region before (the usable length never decreases).
    ///
    /// # Safety
    /// `[offset, offset + size_of::<T>())` lies below a length the region reported before
    /// (through [`covers`](Self::covers), `len` or `grow_to`), and `offset` is aligned for `T`.
    #[inline(always)]
    pub(crate) unsafe fn object_within<T: SharedAtomic>(&self, offset: usize) -> &'r T {
        debug_assert!(
            offset.is_multiple_of(align_of::<T>()) && self.covers(offset, size_of::<T>()),
            "an object inside a range found covered before"
        );
        // SAFETY: inside the usable part of the region and aligned (the caller's contract);
        // for the rest, as in `object`.
        unsafe { &*self.base.as_ptr().add(offset).cast::<T>() }
    }

    /// The `AtomicU32` at `offset`, as [`u64_at`](Self::u64_at).
    pub fn u32_at(&self, offset: usize) -> Option<&'r AtomicU32> {
        self.object(offset)
    }

    /// The slot meta at `offset`, as [`u64_at`](Self::u64_at).
    pub fn meta_at(&self, offset: usize) -> Option<&'r SlotMeta> {
        self.object(offset)
    }

    /// The atomic fields of the class header at `offset`, or `None` when the header is not
    /// inside the usable region or not aligned.
    pub fn class_header_at(&self, offset: usize) -> Option<ClassHeader<'r>> {
        use core::mem::offset_of;
        if !offset.is_multiple_of(align_of::<SizeClassHeader>())
            || !self.covers(offset, size_of::<SizeClassHeader>())
        {
            return None;
        }
        let first = offset + offset_of!(SizeClassHeader, extent_offsets);
        Some(ClassHeader {
            total_slots: self.object(offset + offset_of!(SizeClassHeader, total_slots))?,
            free_head: self.object(offset + offset_of!(SizeClassHeader, free_head))?,
            slot_available_futex: self
                .object(offset + offset_of!(SizeClassHeader, slot_available_futex))?,
            extent_offsets: ExtentOffsets {
                // SAFETY: the whole header lies inside the usable region (checked above), and
                // `first` is the offset of its `extent_offsets` array.
                first: unsafe { self.base.add(first) }.cast(),
                _region: core::marker::PhantomData,
            },
        })
    }

    /// The address of byte `offset` when `[offset, offset + len)` is usable.
    pub fn bytes_at(&self, offset: usize, len: usize) -> Option<NonNull<u8>> {
        if !self.covers(offset, len) {
            return None;
        }
        // SAFETY: `offset` is inside the region (checked), so the pointer stays in bounds.
        Some(unsafe { self.base.add(offset) })
    }

    /// [`bytes_at`](Self::bytes_at) for a range the caller knows is usable: without the check.
    ///
    /// # Safety
    /// `[offset, offset + len)` lies below a length the region reported before (through
    /// [`covers`](Self::covers), `len` or `grow_to`).
    #[inline(always)]
    pub(crate) unsafe fn bytes_within(&self, offset: usize, len: usize) -> NonNull<u8> {
        debug_assert!(
            self.covers(offset, len),
            "bytes inside a range found covered before"
        );
        // SAFETY: `offset` is inside the region (the caller's contract), so the pointer stays
        // in bounds.
        unsafe { self.base.add(offset) }
    }

    /// Write `value` at `offset`, replacing what was there without reading or dropping it.
    /// Returns `false`, writing nothing, when the object is outside the usable region or
    /// misaligned.
    ///
    /// # Safety
    /// No other thread or process may access `[offset, offset + size_of::<T>())` during the
    /// call: the memory is not yet reachable through any published offset, or the caller holds
    /// the only handle to the region.
    pub unsafe fn init<T: SharedInit>(&self, offset: usize, value: T) -> bool {
        if !offset.is_multiple_of(align_of::<T>()) || !self.covers(offset, size_of::<T>()) {
            return false;
        }
        // SAFETY: in bounds and aligned (checked above); exclusive (the caller's contract).
        // `T` has no drop glue to skip (SharedInit) and the old bytes need none.
        unsafe { self.base.as_ptr().add(offset).cast::<T>().write(value) };
        true
    }
}

/// Types the allocator may hand out references to in shared memory: atomics, and structs made
/// only of atomics and plain integers that it never reads through the reference.
///
/// # Safety
/// Every bit pattern must be a valid value (outside loom) and the type must be fine to access
/// concurrently through shared references.
pub unsafe trait SharedAtomic {}
// SAFETY: atomics of plain integers.
unsafe impl SharedAtomic for AtomicU32 {}
// SAFETY: atomics of plain integers.
unsafe impl SharedAtomic for AtomicU64 {}
// SAFETY: three atomics of plain integers.
unsafe impl SharedAtomic for SlotMeta {}

/// The atomic fields of a [`SizeClassHeader`] in shared memory, each reached on its own: the
/// header's plain fields (`slot_size`, `slots_per_extent`, `extent_slot_shift`) may be written
/// by another process, so no Rust reference spans them (R4); they are read only by copy
/// ([`Shared::read_plain_u32`]).
#[derive(Clone, Copy)]
pub struct ClassHeader<'r> {
    /// `total_slots`.
    pub total_slots: &'r AtomicU32,
    /// `free_head`: the tagged Treiber stack head (R7).
    pub free_head: &'r AtomicU64,
    /// `extent_offsets`, indexed by extent number.
    pub extent_offsets: ExtentOffsets<'r>,
    /// `slot_available_futex`.
    pub slot_available_futex: &'r AtomicU32,
}

/// A class header's `extent_offsets` array: `offsets[e]` is extent `e`'s offset word, for `e`
/// below `MAX_EXTENTS_PER_CLASS` (a larger `e` panics, as an array index does).
#[derive(Clone, Copy)]
pub struct ExtentOffsets<'r> {
    first: NonNull<AtomicU64>,
    _region: core::marker::PhantomData<&'r AtomicU64>,
}

impl<'r> core::ops::Index<usize> for ExtentOffsets<'r> {
    type Output = AtomicU64;

    fn index(&self, extent: usize) -> &AtomicU64 {
        assert!(
            extent < hub_layout::MAX_EXTENTS_PER_CLASS,
            "extent {extent} is beyond a class's extents"
        );
        // SAFETY: the array of MAX_EXTENTS_PER_CLASS atomics lies inside a class header that
        // `Shared::class_header_at` found inside the usable region, which stays valid for 'r;
        // `extent` is inside the array (asserted above).
        unsafe { self.first.add(extent).as_ref() }
    }
}

/// Types the allocator writes whole into unpublished memory.
pub trait SharedInit {}
impl SharedInit for AtomicU32 {}
impl SharedInit for AtomicU64 {}
impl SharedInit for SlotMeta {}
impl SharedInit for SizeClassHeader {}
impl SharedInit for ExtentHeader {}
impl SharedInit for hub_layout::HubHeader {}
impl SharedInit for hub_layout::PeerEntry {}
impl SharedInit for hub_layout::DescRingHeader {}

impl<R: Region + ?Sized> Shared<'_, R> {
    /// A copy of the `u32` at `offset`, a plain (non-atomic) field another process may write,
    /// such as a class header's `slot_size` (R3: copy it once, then check it).
    pub fn read_plain_u32(&self, offset: usize) -> Option<u32> {
        #[cfg(not(loom))]
        {
            // Any aligned u32 of the mapping can be read as an atomic: same size and alignment,
            // and an atomic read is what makes a concurrent write by another process defined.
            self.u32_at(offset)
                .map(|word| word.load(crate::sync::Ordering::Relaxed))
        }
        #[cfg(loom)]
        {
            // Under loom the plain fields are plain `u32`s inside loom-sized structs, written
            // before any model thread starts.
            if !offset.is_multiple_of(4) || !self.covers(offset, 4) {
                return None;
            }
            // SAFETY: in bounds and aligned (checked); no model thread writes plain fields.
            Some(unsafe { self.base.as_ptr().add(offset).cast::<u32>().read() })
        }
    }
}

/// Ask the processor to bring the cache line at `ptr` close, for a read soon: a hint, which
/// reads nothing the program sees and never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch(ptr: NonNull<u8>) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` needs SSE, which every x86_64 processor has; it has no effect on
    // memory or on the program's state, and an address that is not mapped is ignored.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            ptr.as_ptr().cast_const().cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
