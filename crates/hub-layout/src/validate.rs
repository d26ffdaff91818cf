//! Validation of a segment on attach (R2), over private copies of what it reads (R3).
//!
//! Nothing here takes a reference to shared memory. A [`SegmentBytes`] hands out copies of
//! integers at offsets, bounds-checked against the length of the mapping; validation reads each
//! field once, checks it, and returns a [`ValidatedSegment`] built only from checked copies.

use core::mem::offset_of;

use crate::constants::*;
use crate::header::{check_config, check_version};
use crate::offsets::SegmentLayout;
use crate::{DescRingHeader, HubHeader, HubLayoutError, PeerEntry, SizeClassHeader};

/// Bounds-checked reads of native-endian integers from a segment's bytes.
///
/// Implemented for `[u8]` (a private copy of a file, or test bytes); hub-transport implements it
/// over a live mapping with atomic loads. Every read returns a copy or `None` when the bytes at
/// `offset` lie outside `len()`, so validation can never read past a mapping.
pub trait SegmentBytes {
    /// Length of the segment in bytes.
    fn len(&self) -> usize;

    /// Whether the segment has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy `N` bytes at `offset`, or `None` when they do not all lie inside the segment.
    fn read_bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    /// The `u16` at `offset`.
    fn read_u16(&self, offset: usize) -> Option<u16> {
        self.read_bytes(offset).map(u16::from_ne_bytes)
    }

    /// The `u32` at `offset`.
    fn read_u32(&self, offset: usize) -> Option<u32> {
        self.read_bytes(offset).map(u32::from_ne_bytes)
    }

    /// The `u64` at `offset`.
    fn read_u64(&self, offset: usize) -> Option<u64> {
        self.read_bytes(offset).map(u64::from_ne_bytes)
    }
}

impl SegmentBytes for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read_bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

/// A private copy of every field of a [`HubHeader`] (R3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSnapshot {
    /// `magic`.
    pub magic: [u8; 8],
    /// `version`.
    pub version: u32,
    /// `flags`.
    pub flags: u32,
    /// `max_peers`.
    pub max_peers: u16,
    /// `active_peers`.
    pub active_peers: u16,
    /// `peer_id_counter`.
    pub peer_id_counter: u16,
    /// `current_size`.
    pub current_size: u64,
    /// `extent_count`.
    pub extent_count: u32,
    /// `ring_capacity`.
    pub ring_capacity: u32,
    /// `peer_table_offset`.
    pub peer_table_offset: u64,
    /// `ring_region_offset`.
    pub ring_region_offset: u64,
    /// `size_class_offset`.
    pub size_class_offset: u64,
    /// `extent_region_offset`.
    pub extent_region_offset: u64,
}

impl HeaderSnapshot {
    /// Copy the header at the start of `segment`.
    ///
    /// # Errors
    /// [`HubLayoutError::HubTooSmall`] when the segment is shorter than a header.
    pub fn read<S: SegmentBytes + ?Sized>(segment: &S) -> Result<Self, HubLayoutError> {
        let size = core::mem::size_of::<HubHeader>();
        let too_small = HubLayoutError::HubTooSmall {
            required: size,
            found: segment.len(),
        };
        if segment.len() < size {
            return Err(too_small);
        }
        let read = || -> Option<Self> {
            Some(Self {
                magic: segment.read_bytes(offset_of!(HubHeader, magic))?,
                version: segment.read_u32(offset_of!(HubHeader, version))?,
                flags: segment.read_u32(offset_of!(HubHeader, flags))?,
                max_peers: segment.read_u16(offset_of!(HubHeader, max_peers))?,
                active_peers: segment.read_u16(offset_of!(HubHeader, active_peers))?,
                peer_id_counter: segment.read_u16(offset_of!(HubHeader, peer_id_counter))?,
                current_size: segment.read_u64(offset_of!(HubHeader, current_size))?,
                extent_count: segment.read_u32(offset_of!(HubHeader, extent_count))?,
                ring_capacity: segment.read_u32(offset_of!(HubHeader, ring_capacity))?,
                peer_table_offset: segment.read_u64(offset_of!(HubHeader, peer_table_offset))?,
                ring_region_offset: segment.read_u64(offset_of!(HubHeader, ring_region_offset))?,
                size_class_offset: segment.read_u64(offset_of!(HubHeader, size_class_offset))?,
                extent_region_offset: segment
                    .read_u64(offset_of!(HubHeader, extent_region_offset))?,
            })
        };
        read().ok_or(too_small)
    }
}

/// A segment that passed every check of R2, described only by private, checked copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedSegment {
    /// The header as it was read.
    pub header: HeaderSnapshot,
    /// The layout recomputed from the header's configuration.
    pub layout: SegmentLayout,
    /// Published extent offsets per class (0: not published), each checked to lie inside the
    /// mapping, 64-aligned, in the extent region, and disjoint from every other extent.
    pub extent_offsets: [[u64; MAX_EXTENTS_PER_CLASS]; NUM_SIZE_CLASSES],
}

/// Check a header against the length of the mapping it was read from: magic (R1), major
/// version, configuration, every stored region offset against [`HubOffsets::calculate`], and the
/// mapping large enough for the initial layout.
///
/// # Errors
/// [`HubLayoutError::NotReady`] for an all-zero magic (a half-built hub),
/// [`HubLayoutError::InvalidMagic`], [`HubLayoutError::IncompatibleVersion`],
/// [`HubLayoutError::InvalidConfig`], [`HubLayoutError::OffsetMismatch`],
/// [`HubLayoutError::HubTooSmall`], [`HubLayoutError::BadCurrentSize`].
///
/// [`HubOffsets::calculate`]: crate::HubOffsets::calculate
pub fn validate_header(
    header: &HeaderSnapshot,
    mapping_len: usize,
) -> Result<SegmentLayout, HubLayoutError> {
    if header.magic == [0; 8] {
        return Err(HubLayoutError::NotReady);
    }
    if header.magic != HUB_MAGIC {
        return Err(HubLayoutError::InvalidMagic);
    }
    check_version(header.version)?;
    check_config(header.max_peers, header.ring_capacity)?;
    let layout = SegmentLayout::new(header.max_peers, header.ring_capacity)?;
    let expected = [
        (
            "peer_table_offset",
            layout.offsets.peer_table,
            header.peer_table_offset,
        ),
        (
            "ring_region_offset",
            layout.offsets.ring_region,
            header.ring_region_offset,
        ),
        (
            "size_class_offset",
            layout.offsets.size_class_headers,
            header.size_class_offset,
        ),
        (
            "extent_region_offset",
            layout.offsets.extent_region,
            header.extent_region_offset,
        ),
    ];
    for (field, expected, found) in expected {
        if expected as u64 != found {
            return Err(HubLayoutError::OffsetMismatch {
                field,
                expected: expected as u64,
                found,
            });
        }
    }
    if mapping_len < layout.initial_size() {
        return Err(HubLayoutError::HubTooSmall {
            required: layout.initial_size(),
            found: mapping_len,
        });
    }
    if header.current_size < layout.initial_size() as u64 {
        return Err(HubLayoutError::BadCurrentSize {
            required: layout.initial_size() as u64,
            found: header.current_size,
        });
    }
    Ok(layout)
}

/// Check all of R2 on a segment: [`validate_header`], then every peer entry's ring offsets, every
/// ring's capacity, every size class header against `HUB_SIZE_CLASSES`, and every published
/// extent offset (inside the mapping, 64-aligned, in the extent region, disjoint from the others;
/// extent 0 of each class must be published).
///
/// Never panics and never reads outside `segment`, whatever its bytes.
///
/// # Errors
/// The first check that fails, each with its own [`HubLayoutError`] variant.
///
/// ```
/// use hub_layout::{validate_segment, HubLayoutError};
/// let bytes = vec![0u8; 64];
/// assert!(matches!(validate_segment(&bytes[..]), Err(HubLayoutError::HubTooSmall { .. })));
/// ```
pub fn validate_segment<S: SegmentBytes + ?Sized>(
    segment: &S,
) -> Result<ValidatedSegment, HubLayoutError> {
    let header = HeaderSnapshot::read(segment)?;
    let layout = validate_header(&header, segment.len())?;
    // Every read below lies inside the initial layout, which validate_header checked fits the
    // mapping; the `ok_or` arms are unreachable but keep this function panic-free regardless.
    let too_small = HubLayoutError::HubTooSmall {
        required: layout.initial_size(),
        found: segment.len(),
    };

    for peer in 0..layout.max_peers {
        let entry = layout.peer_entry_offset(peer);
        let rings = [
            (
                "send_ring_offset",
                offset_of!(PeerEntry, send_ring_offset),
                layout.send_ring_offset(peer),
            ),
            (
                "recv_ring_offset",
                offset_of!(PeerEntry, recv_ring_offset),
                layout.recv_ring_offset(peer),
            ),
        ];
        for (field, at, expected) in rings {
            let found = segment.read_u64(entry + at).ok_or(too_small.clone())?;
            if found != expected as u64 {
                return Err(HubLayoutError::PeerRingMismatch {
                    peer,
                    field,
                    expected: expected as u64,
                    found,
                });
            }
        }
    }

    for ring in 0..2 * layout.max_peers {
        let at = layout.ring_offset(usize::from(ring)) + offset_of!(DescRingHeader, capacity);
        let found = segment.read_u32(at).ok_or(too_small.clone())?;
        if found != layout.ring_capacity {
            return Err(HubLayoutError::RingCapacityMismatch {
                ring,
                expected: layout.ring_capacity,
                found,
            });
        }
    }

    let mut extent_offsets = [[0u64; MAX_EXTENTS_PER_CLASS]; NUM_SIZE_CLASSES];
    // (start, end, class, extent) of every published extent, to check that none overlap.
    let mut ranges: Vec<(u64, u64, u16, u16)> = Vec::new();
    for (class, offsets) in extent_offsets.iter_mut().enumerate() {
        let base = layout.class_header_offset(class);
        let slot_size = u64::from(HUB_SIZE_CLASSES[class].0);
        let slots = u64::from(layout.slots_per_extent(class));
        let fields = [
            (
                "slot_size",
                offset_of!(SizeClassHeader, slot_size),
                slot_size,
            ),
            (
                "slots_per_extent",
                offset_of!(SizeClassHeader, slots_per_extent),
                slots,
            ),
            (
                "extent_slot_shift",
                offset_of!(SizeClassHeader, extent_slot_shift),
                u64::from(slots.trailing_zeros()),
            ),
        ];
        for (field, at, expected) in fields {
            let found = u64::from(segment.read_u32(base + at).ok_or(too_small.clone())?);
            if found != expected {
                return Err(HubLayoutError::SizeClassMismatch {
                    class: class as u16,
                    field,
                    expected,
                    found,
                });
            }
        }
        let extent_size = layout.extent_geometry(class).size as u64;
        for (extent, slot) in offsets.iter_mut().enumerate() {
            let at = base + offset_of!(SizeClassHeader, extent_offsets) + extent * 8;
            let offset = segment.read_u64(at).ok_or(too_small.clone())?;
            let bad = |reason| HubLayoutError::BadExtentOffset {
                class: class as u16,
                extent: extent as u16,
                offset,
                reason,
            };
            if offset == 0 {
                if extent == 0 {
                    return Err(bad("the initial extent is not published"));
                }
                continue;
            }
            if offset % 64 != 0 {
                return Err(bad("not 64-aligned"));
            }
            if offset < layout.offsets.extent_region as u64 {
                return Err(bad("before the extent region"));
            }
            match offset.checked_add(extent_size) {
                Some(end) if end <= segment.len() as u64 => {
                    ranges.push((offset, end, class as u16, extent as u16))
                }
                _ => return Err(bad("past the end of the mapping")),
            }
            *slot = offset;
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((_, end, ..), (start, _, class, extent)) = (pair[0], pair[1]);
        if start < end {
            return Err(HubLayoutError::BadExtentOffset {
                class,
                extent,
                offset: start,
                reason: "overlaps another extent",
            });
        }
    }

    Ok(ValidatedSegment {
        header,
        layout,
        extent_offsets,
    })
}
