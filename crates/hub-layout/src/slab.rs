//! Size class headers, extents and slot metadata: the allocator's shared state.

use crate::constants::*;
use crate::encoding::pack_free_head;
use crate::sync::{AtomicU32, AtomicU64};

/// Slot state (R5): `Free -> Allocated -> InFlight -> Free`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SlotState {
    /// On its class's free list, or about to be pushed there.
    Free = 0,
    /// Popped by an allocator that is writing it; `owner_peer` is that allocator.
    Allocated = 1,
    /// Published to a receiver; `owner_peer` is the receiver.
    InFlight = 2,
}

impl SlotState {
    /// The state whose encoding is `v`, or `None` for any other value (R3: a state word read from
    /// shared memory may hold garbage).
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(SlotState::Free),
            1 => Some(SlotState::Allocated),
            2 => Some(SlotState::InFlight),
            _ => None,
        }
    }
}

/// Hub slot metadata (16 bytes).
#[repr(C)]
pub struct HubSlotMeta {
    /// Generation counter (increments on free, R7).
    pub generation: AtomicU32,
    /// Slot state: a [`SlotState`] encoding.
    pub state: AtomicU32,
    /// Next free in Treiber stack (global index), or `FREE_LIST_END`.
    pub next_free: AtomicU32,
    /// Owning peer ID (for reclamation), or `NO_OWNER` (R6).
    pub owner_peer: AtomicU32,
}

impl HubSlotMeta {
    /// A free slot of generation 0 whose successor on the free list is `next_free`.
    pub fn new(next_free: u32) -> Self {
        Self {
            generation: AtomicU32::new(0),
            state: AtomicU32::new(SlotState::Free as u32),
            next_free: AtomicU32::new(next_free),
            owner_peer: AtomicU32::new(NO_OWNER),
        }
    }
}

/// Size class header (192 bytes: the seed's comment says 128, but its fields need 160 and the
/// `align(64)` rounds that up).
#[repr(C, align(64))]
pub struct SizeClassHeader {
    /// Slot size in bytes.
    pub slot_size: u32,
    /// Slots per extent (power of 2).
    pub slots_per_extent: u32,
    /// Shift for extent id in global index.
    pub extent_slot_shift: u32,
    /// Total slots across extents (for diagnostics).
    pub total_slots: AtomicU32,

    /// Tagged Treiber stack head: (tag<<32)|global_index (R7).
    pub free_head: AtomicU64,

    /// Extent offsets (relative to base) for this class; 0 means not published yet.
    pub extent_offsets: [AtomicU64; MAX_EXTENTS_PER_CLASS],

    /// Futex for waiting allocators (cross-process).
    ///
    /// This is incremented and woken on slot free.
    /// Note: stored in what used to be padding so older versions that don't use it
    /// can still map the same layout without breaking offsets.
    pub slot_available_futex: AtomicU32,
    /// Padding.
    pub _pad: [u8; 4],
}

impl SizeClassHeader {
    /// A header with no extents and an empty free list.
    pub fn new(slot_size: u32, slots_per_extent: u32) -> Self {
        Self {
            slot_size,
            slots_per_extent,
            extent_slot_shift: slots_per_extent.trailing_zeros(),
            total_slots: AtomicU32::new(0),
            free_head: AtomicU64::new(pack_free_head(FREE_LIST_END, 0)),
            extent_offsets: std::array::from_fn(|_| AtomicU64::new(0)),
            slot_available_futex: AtomicU32::new(0),
            _pad: [0; 4],
        }
    }

    /// Initialize a header with no extents and an empty free list.
    pub fn init(&mut self, slot_size: u32, slots_per_extent: u32) {
        *self = Self::new(slot_size, slots_per_extent);
    }
}

/// Extent header (64 bytes).
///
/// An extent is this header, then `slot_count` [`HubSlotMeta`]s at `meta_offset`, then
/// `slot_count` slots of `slot_size` bytes at `data_offset`, the whole rounded up to 64 bytes
/// (see [`calculate_extent_size`](crate::calculate_extent_size)).
#[repr(C, align(64))]
pub struct ExtentHeader {
    /// Size class index.
    pub class: u16,
    /// Extent index within class.
    pub extent_index: u16,
    /// Base global index for this extent.
    pub base_global_index: u32,
    /// Slot count in this extent.
    pub slot_count: u32,
    /// Slot size in bytes.
    pub slot_size: u32,
    /// Offset to slot meta array from start of extent.
    pub meta_offset: u32,
    /// Offset to slot data from start of extent.
    pub data_offset: u32,
    /// Padding.
    pub _pad: [u8; 32],
}

/// The layout of one extent, computed from its class's slot size and slot count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentGeometry {
    /// Offset of the slot meta array from the start of the extent.
    pub meta_offset: u32,
    /// Offset of slot data from the start of the extent (64-aligned).
    pub data_offset: u32,
    /// Total bytes of the extent, rounded up to 64.
    pub size: usize,
}

impl ExtentGeometry {
    /// The geometry of an extent of `slot_count` slots of `slot_size` bytes, or `None` when it
    /// does not fit the `u32` offsets of [`ExtentHeader`] or its size overflows.
    ///
    /// Slot data starts 64-aligned, so `data_offset` equals
    /// `64 + slot_count * 16` rounded up to 64, and `size` equals
    /// [`calculate_extent_size`](crate::calculate_extent_size) whenever `slot_count` is a
    /// multiple of 4 (every class of the seed).
    ///
    /// ```
    /// use hub_layout::ExtentGeometry;
    /// let g = ExtentGeometry::new(1024, 1024).unwrap();
    /// assert_eq!((g.meta_offset, g.data_offset, g.size), (64, 64 + 16 * 1024, 64 + 1024 * (16 + 1024)));
    /// ```
    pub fn new(slot_size: u32, slot_count: u32) -> Option<Self> {
        let header = core::mem::size_of::<ExtentHeader>() as u64;
        let meta = u64::from(slot_count) * core::mem::size_of::<HubSlotMeta>() as u64;
        let data_offset = (header + meta).next_multiple_of(64);
        // `slot_count * slot_size` fits u64, but adding `data_offset` and rounding up may not.
        let size = (u64::from(slot_count) * u64::from(slot_size))
            .checked_add(data_offset)?
            .checked_next_multiple_of(64)?;
        Some(Self {
            meta_offset: u32::try_from(header).ok()?,
            data_offset: u32::try_from(data_offset).ok()?,
            size: usize::try_from(size).ok()?,
        })
    }
}
