//! Under `cfg(loom)`: the words and rings of a [`Segment`] on the heap, so that loom models run
//! the real [`Link`](crate::link::Link) and endpoint over it.
//!
//! Loom's atomics are larger than the layout's, so they cannot sit at the layout's byte offsets
//! (the words hub-transport keeps in the padding, R13, would overlap the loom-sized fields
//! before them). Here every word the segment's accessors name by offset is an atomic of its own,
//! built with its constructor, and every ring a [`HeapRing`]: the accessors keep their
//! signatures, and the code above them runs unchanged. The allocator is not here: a model gives
//! its endpoints a slab over a `HeapRegion` of its own.

use hub_layout::{HubLayoutError, SegmentLayout};

use super::Segment;
use crate::ring::{HeapRing, RawRing, RingError};
use crate::sync::{AtomicU32, AtomicU64};

/// The words of the header and the peer table, one atomic per offset of each width, and the
/// rings.
pub(super) struct HeapWords {
    /// The `AtomicU32` at byte offset `4 * i`.
    words32: Box<[AtomicU32]>,
    /// The `AtomicU64` at byte offset `8 * i`.
    words64: Box<[AtomicU64]>,
    /// Ring `i`'s view: views cloned from it share loom's tracked cells of its descriptors.
    rings: Vec<RawRing>,
}

impl Segment {
    /// A hub of `max_peers` peers and rings of `ring_capacity` descriptors on the heap, every
    /// word zero and every ring empty, as a host's `Segment::create` leaves them
    /// before any peer is reserved. Call it inside a loom model (it makes loom atomics).
    pub fn heap(max_peers: u16, ring_capacity: u32) -> Result<Self, HubLayoutError> {
        let layout = SegmentLayout::new(max_peers, ring_capacity)?;
        // The header and the peer table: every word the accessors name lies before the rings.
        let end = layout.offsets.ring_region;
        let rings = (0..2 * usize::from(max_peers))
            .map(|_| {
                let ring = HeapRing::new(ring_capacity).expect("a capacity the layout accepted");
                ring.ring().clone()
            })
            .collect();
        Ok(Self {
            heap: HeapWords {
                words32: (0..end / 4).map(|_| AtomicU32::new(0)).collect(),
                words64: (0..end / 8).map(|_| AtomicU64::new(0)).collect(),
                rings,
            },
            layout,
            fixed: Vec::new(),
        })
    }

    /// The `AtomicU32` at `offset` (of the header or the peer table).
    pub(crate) fn word32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4), "misaligned word {offset}");
        &self.heap.words32[offset / 4]
    }

    /// The `AtomicU64` at `offset` (of the header or the peer table).
    pub(crate) fn word64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8), "misaligned word {offset}");
        &self.heap.words64[offset / 8]
    }

    /// A view of ring `index`, as `Segment::ring` does over a mapping.
    pub fn ring(&self, index: usize) -> Result<RawRing, RingError> {
        Ok(self.heap.rings[index].clone())
    }
}
