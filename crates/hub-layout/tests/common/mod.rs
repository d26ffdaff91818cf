//! Helpers shared by the validation tests: a valid segment image written field by field at the
//! offsets of the structs, and a sparse segment that implements `SegmentBytes` for mappings far
//! larger than the bytes it stores.

#![allow(dead_code)]

use core::cell::Cell;
use core::mem::offset_of;
use std::collections::BTreeMap;

use hub_layout::{
    DescRingHeader, HUB_MAGIC, HUB_PROTOCOL_VERSION, HUB_SIZE_CLASSES, HubHeader, HubLayoutError,
    NUM_SIZE_CLASSES, PeerEntry, SegmentBytes, SegmentLayout, SizeClassHeader, ValidatedSegment,
    validate_segment,
};

pub fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

pub fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    put(buf, at, &v.to_ne_bytes());
}

pub fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    put(buf, at, &v.to_ne_bytes());
}

pub fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    put(buf, at, &v.to_ne_bytes());
}

pub fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(buf[at..at + 2].try_into().unwrap())
}

pub fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

pub fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap())
}

/// Header field offsets.
pub const MAGIC: usize = offset_of!(HubHeader, magic);
pub const VERSION: usize = offset_of!(HubHeader, version);
pub const FLAGS: usize = offset_of!(HubHeader, flags);
pub const MAX_PEERS_AT: usize = offset_of!(HubHeader, max_peers);
pub const CURRENT_SIZE: usize = offset_of!(HubHeader, current_size);
pub const RING_CAPACITY: usize = offset_of!(HubHeader, ring_capacity);
pub const PEER_TABLE_OFFSET: usize = offset_of!(HubHeader, peer_table_offset);
pub const RING_REGION_OFFSET: usize = offset_of!(HubHeader, ring_region_offset);
pub const SIZE_CLASS_OFFSET: usize = offset_of!(HubHeader, size_class_offset);
pub const EXTENT_REGION_OFFSET: usize = offset_of!(HubHeader, extent_region_offset);

/// Peer entry field offsets.
pub const SEND_RING: usize = offset_of!(PeerEntry, send_ring_offset);
pub const RECV_RING: usize = offset_of!(PeerEntry, recv_ring_offset);

/// Ring header field offset.
pub const RING_CAP: usize = offset_of!(DescRingHeader, capacity);

/// Size class header field offsets.
pub const SLOT_SIZE: usize = offset_of!(SizeClassHeader, slot_size);
pub const SLOTS_PER_EXTENT: usize = offset_of!(SizeClassHeader, slots_per_extent);
pub const EXTENT_SLOT_SHIFT: usize = offset_of!(SizeClassHeader, extent_slot_shift);
pub const EXTENT_OFFSETS: usize = offset_of!(SizeClassHeader, extent_offsets);

/// Write every field validation checks, for `layout`, into `buf` (zeroed elsewhere). `buf` must
/// reach at least the extent region.
pub fn write_metadata(buf: &mut [u8], layout: &SegmentLayout) {
    put(buf, MAGIC, &HUB_MAGIC);
    put_u32(buf, VERSION, HUB_PROTOCOL_VERSION);
    put_u16(buf, MAX_PEERS_AT, layout.max_peers);
    put_u32(buf, RING_CAPACITY, layout.ring_capacity);
    put_u64(buf, CURRENT_SIZE, layout.initial_size() as u64);
    put_u64(buf, PEER_TABLE_OFFSET, layout.offsets.peer_table as u64);
    put_u64(buf, RING_REGION_OFFSET, layout.offsets.ring_region as u64);
    put_u64(
        buf,
        SIZE_CLASS_OFFSET,
        layout.offsets.size_class_headers as u64,
    );
    put_u64(
        buf,
        EXTENT_REGION_OFFSET,
        layout.offsets.extent_region as u64,
    );
    for peer in 0..layout.max_peers {
        let entry = layout.peer_entry_offset(peer);
        put_u64(buf, entry + SEND_RING, layout.send_ring_offset(peer) as u64);
        put_u64(buf, entry + RECV_RING, layout.recv_ring_offset(peer) as u64);
    }
    for ring in 0..2 * usize::from(layout.max_peers) {
        put_u32(
            buf,
            layout.ring_offset(ring) + RING_CAP,
            layout.ring_capacity,
        );
    }
    for (class, (slot_size, slots)) in HUB_SIZE_CLASSES.into_iter().enumerate() {
        let at = layout.class_header_offset(class);
        put_u32(buf, at + SLOT_SIZE, slot_size);
        put_u32(buf, at + SLOTS_PER_EXTENT, slots);
        put_u32(buf, at + EXTENT_SLOT_SHIFT, slots.trailing_zeros());
        put_u64(
            buf,
            at + EXTENT_OFFSETS,
            layout.initial_extent_offset(class) as u64,
        );
    }
}

/// A whole segment image in a `Vec<u8>`: about 109 MiB plus the rings, all zero but the
/// metadata (a zeroed allocation is lazy, so only the touched pages are resident).
pub struct Image {
    pub bytes: Vec<u8>,
    pub layout: SegmentLayout,
}

impl Image {
    /// A valid image exactly as long as the initial layout.
    pub fn new(max_peers: u16, ring_capacity: u32) -> Self {
        let layout = SegmentLayout::new(max_peers, ring_capacity).unwrap();
        Self::with_len(max_peers, ring_capacity, layout.initial_size())
    }

    /// A valid image mapped `len` bytes long (at least the initial size).
    pub fn with_len(max_peers: u16, ring_capacity: u32, len: usize) -> Self {
        let layout = SegmentLayout::new(max_peers, ring_capacity).unwrap();
        assert!(len >= layout.initial_size());
        let mut bytes = vec![0u8; len];
        write_metadata(&mut bytes, &layout);
        Self { bytes, layout }
    }

    pub fn validate(&self) -> Result<ValidatedSegment, HubLayoutError> {
        validate_segment(&self.bytes[..])
    }

    /// Overwrite the bytes at `at`, validate, and restore them.
    pub fn validate_with(
        &mut self,
        at: usize,
        bytes: &[u8],
    ) -> Result<ValidatedSegment, HubLayoutError> {
        let saved = self.bytes[at..at + bytes.len()].to_vec();
        put(&mut self.bytes, at, bytes);
        let result = self.validate();
        put(&mut self.bytes, at, &saved);
        result
    }

    pub fn with_u16(&mut self, at: usize, v: u16) -> Result<ValidatedSegment, HubLayoutError> {
        self.validate_with(at, &v.to_ne_bytes())
    }

    pub fn with_u32(&mut self, at: usize, v: u32) -> Result<ValidatedSegment, HubLayoutError> {
        self.validate_with(at, &v.to_ne_bytes())
    }

    pub fn with_u64(&mut self, at: usize, v: u64) -> Result<ValidatedSegment, HubLayoutError> {
        self.validate_with(at, &v.to_ne_bytes())
    }

    /// Offset of `extent_offsets[extent]` of `class`.
    pub fn extent_slot(&self, class: usize, extent: usize) -> usize {
        self.layout.class_header_offset(class) + EXTENT_OFFSETS + 8 * extent
    }

    /// The end of the metadata: everything before the extent region.
    pub fn metadata_len(&self) -> usize {
        self.layout.offsets.extent_region
    }
}

/// Only the metadata of a segment (everything before the extent region), as a `Vec`.
pub fn metadata(layout: &SegmentLayout) -> Vec<u8> {
    let mut bytes = vec![0u8; layout.offsets.extent_region];
    write_metadata(&mut bytes, layout);
    bytes
}

/// A segment of `len` bytes whose first bytes are `prefix`, overlaid with `patches`, and whose
/// other bytes read as zero: it stands for a mapping of any length, up to `usize::MAX`, without
/// allocating it, and for a corrupted copy of `prefix` without copying it. It counts requests
/// for bytes outside `len`, which validation must never make.
pub struct Sparse<'a> {
    pub prefix: &'a [u8],
    pub patches: BTreeMap<usize, u8>,
    pub len: usize,
    pub out_of_bounds: Cell<usize>,
}

impl<'a> Sparse<'a> {
    pub fn new(prefix: &'a [u8], len: usize) -> Self {
        Self {
            prefix,
            patches: BTreeMap::new(),
            len,
            out_of_bounds: Cell::new(0),
        }
    }
}

impl SegmentBytes for Sparse<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn read_bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let Some(end) = offset.checked_add(N).filter(|&end| end <= self.len) else {
            self.out_of_bounds.set(self.out_of_bounds.get() + 1);
            return None;
        };
        let mut out = [0u8; N];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = self.prefix.get(offset + i).copied().unwrap_or(0);
        }
        for (&at, &byte) in self.patches.range(offset..end) {
            out[at - offset] = byte;
        }
        Some(out)
    }
}

/// The postconditions of an accepted segment, checked independently of the crate's code: the
/// layout is the one of the header's configuration, extent 0 of every class is published, and
/// every published extent is 64-aligned, inside the extent region and the mapping, and disjoint
/// from every other.
pub fn check_accepted(v: &ValidatedSegment, mapping_len: usize) {
    let layout = SegmentLayout::new(v.header.max_peers, v.header.ring_capacity).unwrap();
    assert_eq!(v.layout, layout);
    assert_eq!(v.header.magic, HUB_MAGIC);
    assert_eq!(v.header.version >> 16, HUB_PROTOCOL_VERSION >> 16);
    assert!(mapping_len >= layout.initial_size());
    assert!(v.header.current_size >= layout.initial_size() as u64);
    assert_eq!(v.header.peer_table_offset, layout.offsets.peer_table as u64);
    assert_eq!(
        v.header.ring_region_offset,
        layout.offsets.ring_region as u64
    );
    assert_eq!(
        v.header.size_class_offset,
        layout.offsets.size_class_headers as u64
    );
    assert_eq!(
        v.header.extent_region_offset,
        layout.offsets.extent_region as u64
    );
    let mut ranges = Vec::new();
    for class in 0..NUM_SIZE_CLASSES {
        assert_ne!(v.extent_offsets[class][0], 0, "class {class} extent 0");
        let size = layout.extent_geometry(class).size as u128;
        for &offset in &v.extent_offsets[class] {
            if offset == 0 {
                continue;
            }
            assert_eq!(offset % 64, 0);
            assert!(offset >= layout.offsets.extent_region as u64);
            assert!(u128::from(offset) + size <= mapping_len as u128);
            ranges.push((u128::from(offset), u128::from(offset) + size));
        }
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            assert!(a.1 <= b.0 || b.1 <= a.0, "{a:?} overlaps {b:?}");
        }
    }
}
