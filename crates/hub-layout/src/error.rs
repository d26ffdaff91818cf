//! Errors of layout validation and slot references.

/// Errors from hub layout validation.
///
/// Every check of rule R2 fails with its own variant, so a caller (and a test) can tell which
/// field of a segment was wrong. The Display texts of the seed's variants are unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubLayoutError {
    /// Invalid magic bytes: the bytes are not a hub segment.
    #[error("invalid hub magic bytes (expected RAPAHUB)")]
    InvalidMagic,
    /// Incompatible protocol version: the major version differs from ours.
    #[error(
        "incompatible hub version: expected {}.{}, found {}.{}",
        .expected >> 16, .expected & 0xFFFF, .found >> 16, .found & 0xFFFF
    )]
    IncompatibleVersion {
        /// The version this crate speaks.
        expected: u32,
        /// The version stored in the segment.
        found: u32,
    },
    /// Hub too small: the mapping is shorter than the layout it describes needs.
    #[error("hub too small: need {required} bytes, got {found}")]
    HubTooSmall {
        /// Bytes the layout needs.
        required: usize,
        /// Bytes the mapping has.
        found: usize,
    },
    /// Invalid configuration in header (`max_peers` or `ring_capacity` out of range).
    #[error("invalid hub config: {0}")]
    InvalidConfig(&'static str),
    /// The magic is all zeroes: the creator has not finished building the segment (R1), or died
    /// while building it. A half-built segment is refused, never waited on.
    #[error("hub segment is not finished: its creator has not published the magic (R1)")]
    NotReady,
    /// A region offset stored in the header differs from the one `HubOffsets::calculate` gives.
    #[error("hub header field `{field}` is {found}, but the layout puts it at {expected}")]
    OffsetMismatch {
        /// The header field.
        field: &'static str,
        /// The offset the layout computes.
        expected: u64,
        /// The offset stored in the segment.
        found: u64,
    },
    /// A peer entry's ring offset differs from the one the layout computes.
    #[error("peer entry {peer}: `{field}` is {found}, but the layout puts it at {expected}")]
    PeerRingMismatch {
        /// Index of the peer entry.
        peer: u16,
        /// `send_ring_offset` or `recv_ring_offset`.
        field: &'static str,
        /// The offset the layout computes.
        expected: u64,
        /// The offset stored in the segment.
        found: u64,
    },
    /// A ring header's capacity differs from the header's `ring_capacity`.
    #[error("ring {ring}: capacity is {found}, but the hub's ring_capacity is {expected}")]
    RingCapacityMismatch {
        /// Index of the ring in the ring region (peer * 2 for send, peer * 2 + 1 for recv).
        ring: u16,
        /// The hub's ring capacity.
        expected: u32,
        /// The capacity stored in the ring header.
        found: u32,
    },
    /// A size class header field differs from the seed's `HUB_SIZE_CLASSES`.
    #[error("size class {class}: `{field}` is {found}, expected {expected}")]
    SizeClassMismatch {
        /// The size class.
        class: u16,
        /// The field of `SizeClassHeader`.
        field: &'static str,
        /// The value the layout prescribes.
        expected: u64,
        /// The value stored in the segment.
        found: u64,
    },
    /// A published extent offset is not 64-aligned, lies before the extent region, overlaps
    /// another extent, or does not fit inside the mapping.
    #[error("size class {class}, extent {extent}: offset {offset} is invalid ({reason})")]
    BadExtentOffset {
        /// The size class.
        class: u16,
        /// The extent index within the class.
        extent: u16,
        /// The stored offset.
        offset: u64,
        /// Which check failed.
        reason: &'static str,
    },
    /// `current_size` in the header is smaller than the initial layout, which no hub ever is.
    #[error("hub header current_size {found} is below the initial layout size {required}")]
    BadCurrentSize {
        /// Initial size of the layout.
        required: u64,
        /// The stored `current_size`.
        found: u64,
    },
}

/// Errors from hub slot operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubSlotError {
    /// No free slots available in any size class.
    #[error("no free slots available")]
    NoFreeSlots,
    /// Payload too large for largest size class.
    #[error("payload too large: {len} bytes, max {max}")]
    PayloadTooLarge {
        /// Requested length.
        len: usize,
        /// Largest slot size.
        max: usize,
    },
    /// Invalid slot reference: an index at or above 2^29, or outside the class's extents.
    #[error("invalid slot reference")]
    InvalidSlotRef,
    /// Generation mismatch (stale reference).
    #[error("stale generation")]
    StaleGeneration,
    /// Slot in unexpected state.
    #[error("invalid slot state")]
    InvalidState,
    /// Invalid size class: beyond the encodable (0..=7) or configured (`NUM_SIZE_CLASSES`) range.
    #[error("invalid size class")]
    InvalidSizeClass,
    /// Invalid extent: beyond `MAX_EXTENTS_PER_CLASS` or not published.
    #[error("invalid extent")]
    InvalidExtent,
}
