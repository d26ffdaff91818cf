//! Where each region of a segment lives, and how large a segment is.

use crate::constants::*;
use crate::header::check_config;
use crate::{
    DescRingHeader, ExtentGeometry, HubHeader, HubLayoutError, MsgDescHot, PeerEntry,
    SizeClassHeader,
};

/// Offsets of the regions of a segment, from its first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOffsets {
    /// The [`HubHeader`] (always 0).
    pub header: usize,
    /// The peer table: `max_peers` [`PeerEntry`]s.
    pub peer_table: usize,
    /// The rings: for peer `i`, its send ring (index `2i`) then its recv ring (index `2i + 1`).
    pub ring_region: usize,
    /// The `NUM_SIZE_CLASSES` [`SizeClassHeader`]s.
    pub size_class_headers: usize,
    /// The extents, initial ones first in class order, grown ones after them.
    pub extent_region: usize,
}

impl HubOffsets {
    /// Compute the offsets for a configuration.
    ///
    /// # Errors
    /// [`HubLayoutError::InvalidConfig`] when `max_peers` is not in `1..=MAX_PEERS` or
    /// `ring_capacity` is not a power of two.
    ///
    /// ```
    /// let o = hub_layout::HubOffsets::calculate(1, 4).unwrap();
    /// assert_eq!(o.peer_table, 256);
    /// assert_eq!(o.ring_region, 256 + 64);
    /// ```
    pub fn calculate(max_peers: u16, ring_capacity: u32) -> Result<Self, HubLayoutError> {
        check_config(max_peers, ring_capacity)?;

        let header = 0;
        let peer_table = align_up(header + core::mem::size_of::<HubHeader>(), 64);
        let peer_table_size = max_peers as usize * core::mem::size_of::<PeerEntry>();

        let ring_size = ring_size(ring_capacity);
        let ring_region = align_up(peer_table + peer_table_size, 64);
        let ring_region_size = max_peers as usize * 2 * ring_size;

        let size_class_headers = align_up(ring_region + ring_region_size, 64);
        let size_class_headers_size = NUM_SIZE_CLASSES * core::mem::size_of::<SizeClassHeader>();

        let extent_region = align_up(size_class_headers + size_class_headers_size, 64);

        Ok(Self {
            header,
            peer_table,
            ring_region,
            size_class_headers,
            extent_region,
        })
    }
}

/// Bytes of one ring: its header and `ring_capacity` descriptors.
pub(crate) fn ring_size(ring_capacity: u32) -> usize {
    core::mem::size_of::<DescRingHeader>()
        + ring_capacity as usize * core::mem::size_of::<MsgDescHot>()
}

/// Size of an extent of `slot_count` slots of `slot_size` bytes, rounded up to 64.
///
/// # Errors
/// A message when the size overflows `usize`.
pub fn calculate_extent_size(slot_size: u32, slot_count: u32) -> Result<usize, &'static str> {
    let header_size = core::mem::size_of::<crate::ExtentHeader>();
    let meta_size = (slot_count as usize)
        .checked_mul(core::mem::size_of::<crate::HubSlotMeta>())
        .ok_or("extent meta size overflow")?;
    let data_size = (slot_count as usize)
        .checked_mul(slot_size as usize)
        .ok_or("extent data size overflow")?;

    let total = header_size
        .checked_add(meta_size)
        .and_then(|v| v.checked_add(data_size))
        .ok_or("extent total size overflow")?;

    // Rounding up can overflow too (the seed's `align_up` would wrap to 0 in release builds).
    total
        .checked_next_multiple_of(64)
        .ok_or("extent total size overflow")
}

/// Size of a new hub: every region and one extent per size class.
///
/// # Errors
/// A message when the configuration is invalid or the size overflows.
///
/// ```
/// let size = hub_layout::calculate_initial_hub_size(32, 256).unwrap();
/// assert!(size > 100 << 20); // the five initial extents hold about 109 MiB of slots
/// ```
pub fn calculate_initial_hub_size(
    max_peers: u16,
    ring_capacity: u32,
) -> Result<usize, &'static str> {
    let offsets = HubOffsets::calculate(max_peers, ring_capacity)
        .map_err(|_| "hub offsets calculation failed")?;

    let mut total = offsets.extent_region;
    for (slot_size, slot_count) in HUB_SIZE_CLASSES {
        let extent_size = calculate_extent_size(slot_size, slot_count)?;
        total = total
            .checked_add(extent_size)
            .ok_or("total hub size overflow")?;
    }

    Ok(total)
}

/// Round `x` up to a multiple of `align`, a power of two.
pub(crate) fn align_up(x: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (x + align - 1) & !(align - 1)
}

/// The complete geometry of a segment for one configuration: offsets of every region, ring and
/// extent, and the sizes the segment starts at and may grow to.
///
/// Every participant computes this privately from the configuration it validated at attach time,
/// and checks what it reads from shared memory against it (R3).
///
/// ```
/// use hub_layout::{SegmentLayout, HUB_SIZE_CLASSES};
/// let l = SegmentLayout::new(2, 64).unwrap();
/// assert_eq!(l.recv_ring_offset(1) - l.send_ring_offset(1), 192 + 64 * 64);
/// assert_eq!(l.initial_extent_offset(0), l.offsets.extent_region);
/// assert!(l.max_size() > l.initial_size());
/// assert_eq!(l.slots_per_extent(4), HUB_SIZE_CLASSES[4].1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Peers the hub admits at once.
    pub max_peers: u16,
    /// Descriptors per ring.
    pub ring_capacity: u32,
    /// Region offsets.
    pub offsets: HubOffsets,
    ring_size: usize,
    extents: [ExtentGeometry; NUM_SIZE_CLASSES],
    initial_extent_offsets: [usize; NUM_SIZE_CLASSES],
    initial_size: usize,
    max_size: usize,
}

impl SegmentLayout {
    /// The layout of a hub of `max_peers` peers and rings of `ring_capacity` descriptors.
    ///
    /// # Errors
    /// [`HubLayoutError::InvalidConfig`] as [`HubOffsets::calculate`].
    pub fn new(max_peers: u16, ring_capacity: u32) -> Result<Self, HubLayoutError> {
        let offsets = HubOffsets::calculate(max_peers, ring_capacity)?;
        let extents = std::array::from_fn(|class| {
            let (slot_size, slot_count) = HUB_SIZE_CLASSES[class];
            ExtentGeometry::new(slot_size, slot_count.next_power_of_two())
                .expect("the seed's size classes fit u32 offsets")
        });
        let mut initial_extent_offsets = [0; NUM_SIZE_CLASSES];
        let mut end = offsets.extent_region;
        for (class, geometry) in extents.iter().enumerate() {
            initial_extent_offsets[class] = end;
            end += geometry.size;
        }
        let initial_size = end;
        let grown: usize = extents
            .iter()
            .map(|g| g.size * (MAX_EXTENTS_PER_CLASS - 1))
            .sum();
        Ok(Self {
            max_peers,
            ring_capacity,
            ring_size: ring_size(ring_capacity),
            offsets,
            extents,
            initial_extent_offsets,
            initial_size,
            max_size: initial_size + grown,
        })
    }

    /// Offset of peer entry `peer`.
    ///
    /// # Panics
    /// When `peer` is not below `max_peers`: the offset would name another region's bytes,
    /// not an entry (a caller's bug, as an index out of a slice is).
    pub fn peer_entry_offset(&self, peer: u16) -> usize {
        assert!(
            peer < self.max_peers,
            "peer {peer} of a hub of {} peers",
            self.max_peers
        );
        self.offsets.peer_table + usize::from(peer) * core::mem::size_of::<PeerEntry>()
    }

    /// Offset of ring `index` of the ring region: peer `i`'s send ring is `2i`, its receive
    /// ring `2i + 1`.
    ///
    /// # Panics
    /// When `index` is not below `2 * max_peers`, as [`peer_entry_offset`](Self::peer_entry_offset).
    pub fn ring_offset(&self, index: usize) -> usize {
        assert!(
            index < 2 * usize::from(self.max_peers),
            "ring {index} of a hub of {} peers",
            self.max_peers
        );
        self.offsets.ring_region + index * self.ring_size
    }

    /// Offset of the send ring (peer to host) of `peer`.
    ///
    /// # Panics
    /// When `peer` is not below `max_peers`, as [`peer_entry_offset`](Self::peer_entry_offset).
    pub fn send_ring_offset(&self, peer: u16) -> usize {
        self.ring_offset(2 * usize::from(peer))
    }

    /// Offset of the recv ring (host to peer) of `peer`.
    ///
    /// # Panics
    /// When `peer` is not below `max_peers`, as [`peer_entry_offset`](Self::peer_entry_offset).
    pub fn recv_ring_offset(&self, peer: u16) -> usize {
        self.ring_offset(2 * usize::from(peer) + 1)
    }

    /// Bytes of one ring, header and descriptors.
    pub fn ring_size(&self) -> usize {
        self.ring_size
    }

    /// Offset of the header of size class `class` (`class < NUM_SIZE_CLASSES`).
    pub fn class_header_offset(&self, class: usize) -> usize {
        self.offsets.size_class_headers + class * core::mem::size_of::<SizeClassHeader>()
    }

    /// Geometry of every extent of `class`.
    pub fn extent_geometry(&self, class: usize) -> ExtentGeometry {
        self.extents[class]
    }

    /// Slots in every extent of `class`: the seed's count rounded up to a power of two.
    pub fn slots_per_extent(&self, class: usize) -> u32 {
        HUB_SIZE_CLASSES[class].1.next_power_of_two()
    }

    /// Offset of the initial extent (extent 0) of `class`.
    pub fn initial_extent_offset(&self, class: usize) -> usize {
        self.initial_extent_offsets[class]
    }

    /// Size of a new segment: equal to [`calculate_initial_hub_size`].
    pub fn initial_size(&self) -> usize {
        self.initial_size
    }

    /// Size of a segment whose every class has grown to `MAX_EXTENTS_PER_CLASS` extents: the
    /// virtual reservation every participant maps (R8).
    pub fn max_size(&self) -> usize {
        self.max_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last entry and ring of a hub lie inside their regions; one past them is refused
    /// loudly, not turned into an offset in the next region, in every build (the message is the
    /// check's own, not a `debug_assert!`'s, which a release build drops).
    #[test]
    fn entry_and_ring_offsets_stay_in_their_regions() {
        let layout = SegmentLayout::new(3, 64).unwrap();
        let last_entry = layout.peer_entry_offset(2);
        assert!(last_entry + core::mem::size_of::<PeerEntry>() <= layout.offsets.ring_region);
        let last_ring = layout.ring_offset(5);
        assert!(last_ring + layout.ring_size <= layout.offsets.size_class_headers);
        let refused = |result: std::thread::Result<usize>| match result {
            Ok(offset) => panic!("offset {offset} handed out"),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        let entry = refused(std::panic::catch_unwind(|| layout.peer_entry_offset(3)));
        let ring = refused(std::panic::catch_unwind(|| layout.ring_offset(6)));
        assert_eq!(entry, "peer 3 of a hub of 3 peers");
        assert_eq!(ring, "ring 6 of a hub of 3 peers");
    }
}
