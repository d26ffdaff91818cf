//! Where the allocator's shared state lives in a region, and who may own a slot.
//!
//! A [`SlabLayout`] is the allocator's private copy of its configuration (R3): every offset and
//! count it uses comes from here, never from shared memory. [`SlabLayout::for_hub`] places the
//! state where the seed layout has it; [`SlabLayout::standalone`] packs it into a small region of
//! its own, for tests, loom models and benches.

use core::mem::size_of;

use hub_layout::{
    ExtentHeader, HOST_OWNER, MAX_EXTENTS_PER_CLASS, MAX_PEERS, NUM_SIZE_CLASSES, SLOT_INDEX_BITS,
    SizeClassHeader,
};

use crate::error::SlabError;
use crate::shared::SlotMeta;
use crate::sync::{AtomicU32, AtomicU64};

/// Who holds a slot (R6): a peer, by its id, or the host.
///
/// The raw value is what `HubSlotMeta::owner_peer` stores: the peer id, or
/// [`hub_layout::HOST_OWNER`] for the host.
///
/// ```
/// use hub_alloc::OwnerId;
/// assert_eq!(OwnerId::peer(3).raw(), 3);
/// assert_eq!(OwnerId::HOST.raw(), hub_layout::HOST_OWNER);
/// assert_eq!(OwnerId::from_raw(3), Some(OwnerId::peer(3)));
/// assert_eq!(OwnerId::from_raw(hub_layout::NO_OWNER), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerId(u32);

impl OwnerId {
    /// The host.
    pub const HOST: OwnerId = OwnerId(HOST_OWNER);

    /// The peer whose id is `id`. Whether the id is below a hub's `max_peers` is checked where
    /// the id is used.
    pub const fn peer(id: u16) -> Self {
        OwnerId(id as u32)
    }

    /// The owner a raw `owner_peer` value names, or `None` for [`NO_OWNER`](hub_layout::NO_OWNER)
    /// and any value that is neither a possible peer id nor the host.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        if raw < MAX_PEERS as u32 || raw == HOST_OWNER {
            Some(OwnerId(raw))
        } else {
            None
        }
    }

    /// The value stored in `HubSlotMeta::owner_peer`.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Whether this is the host.
    pub const fn is_host(self) -> bool {
        self.0 == HOST_OWNER
    }

    /// The peer id, or `None` for the host.
    ///
    /// ```
    /// use hub_alloc::OwnerId;
    /// assert_eq!(OwnerId::peer(3).peer_id(), Some(3));
    /// assert_eq!(OwnerId::HOST.peer_id(), None);
    /// ```
    pub const fn peer_id(self) -> Option<u16> {
        if self.0 < MAX_PEERS as u32 {
            Some(self.0 as u16)
        } else {
            None
        }
    }
}

impl core::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.is_host() {
            f.write_str("host")
        } else {
            write!(f, "peer {}", self.0)
        }
    }
}

/// One size class: slots of `slot_size` bytes, `slots_per_extent` to an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassConfig {
    /// Bytes per slot.
    pub slot_size: u32,
    /// Slots per extent: a power of two, so a global index splits into extent and slot by a
    /// shift.
    pub slots_per_extent: u32,
}

/// The geometry of one extent: header, slot metas, then slot data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub meta_offset: usize,
    pub data_offset: usize,
    pub size: usize,
}

impl Geometry {
    /// The geometry of an extent of `class`, with the metas the allocator really writes (their
    /// size differs under loom, see `hub_layout::sync`); `None` when it overflows.
    fn of(class: ClassConfig) -> Option<Self> {
        let slots = class.slots_per_extent as usize;
        let meta_offset = size_of::<ExtentHeader>().next_multiple_of(64);
        let data_offset = slots
            .checked_mul(size_of::<SlotMeta>())?
            .checked_add(meta_offset)?
            .checked_next_multiple_of(64)?;
        let size = slots
            .checked_mul(class.slot_size as usize)?
            .checked_add(data_offset)?
            .checked_next_multiple_of(64)?;
        Some(Geometry {
            meta_offset,
            data_offset,
            size,
        })
    }
}

/// Where an allocator's state lives in its region, and its classes: the private configuration
/// every participant holds (R3).
///
/// The shared state is: a `current_size` word (`u64`, the end of the last reserved extent), an
/// `extent_count` word (`u32`), one operation journal word (`u32`) per possible owner (see
/// [`Slab`](crate::Slab) for what it records), one [`SizeClassHeader`] per class, and the
/// extents, the first of each class right after the other, from `extent_region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlabLayout {
    pub(crate) classes: Vec<ClassConfig>,
    pub(crate) geometry: Vec<Geometry>,
    pub(crate) max_extents: u32,
    pub(crate) max_peers: u16,
    pub(crate) current_size_offset: usize,
    pub(crate) extent_count_offset: usize,
    /// `max_peers` peer journals, then the host's.
    pub(crate) journal_offsets: Vec<usize>,
    pub(crate) class_headers_offset: usize,
    pub(crate) extent_region_offset: usize,
    pub(crate) initial_extent_offsets: Vec<usize>,
    pub(crate) initial_size: usize,
    pub(crate) max_size: usize,
}

impl SlabLayout {
    /// The allocator of a hub segment: the seed's five classes, `MAX_EXTENTS_PER_CLASS` extents
    /// each, `current_size` and `extent_count` in the [`HubHeader`](hub_layout::HubHeader), each
    /// peer's journal in the padding of its [`PeerEntry`](hub_layout::PeerEntry) (bytes 48..52)
    /// and the host's in the header's padding (bytes 72..76).
    ///
    /// ```
    /// let segment = hub_layout::SegmentLayout::new(32, 256).unwrap();
    /// let slab = hub_alloc::SlabLayout::for_hub(&segment);
    /// assert_eq!(slab.initial_size(), segment.initial_size());
    /// assert_eq!(slab.max_size(), segment.max_size());
    /// assert_eq!(slab.class_count(), 5);
    /// ```
    #[cfg(not(loom))]
    pub fn for_hub(segment: &hub_layout::SegmentLayout) -> Self {
        use core::mem::offset_of;
        use hub_layout::{HUB_SIZE_CLASSES, HubHeader, PeerEntry};

        let classes: Vec<ClassConfig> = (0..HUB_SIZE_CLASSES.len())
            .map(|class| ClassConfig {
                slot_size: HUB_SIZE_CLASSES[class].0,
                slots_per_extent: segment.slots_per_extent(class),
            })
            .collect();
        let mut journal_offsets: Vec<usize> = (0..segment.max_peers)
            .map(|peer| segment.peer_entry_offset(peer) + PeerEntry::JOURNAL_OFFSET)
            .collect();
        journal_offsets.push(HubHeader::HOST_JOURNAL_OFFSET);
        let layout = Self {
            geometry: classes
                .iter()
                .map(|&c| Geometry::of(c).expect("the seed's classes fit"))
                .collect(),
            classes,
            max_extents: MAX_EXTENTS_PER_CLASS as u32,
            max_peers: segment.max_peers,
            current_size_offset: offset_of!(HubHeader, current_size),
            extent_count_offset: offset_of!(HubHeader, extent_count),
            journal_offsets,
            class_headers_offset: segment.offsets.size_class_headers,
            extent_region_offset: segment.offsets.extent_region,
            initial_extent_offsets: (0..HUB_SIZE_CLASSES.len())
                .map(|class| segment.initial_extent_offset(class))
                .collect(),
            initial_size: segment.initial_size(),
            max_size: segment.max_size(),
        };
        for (class, g) in layout.geometry.iter().enumerate() {
            let seed = segment.extent_geometry(class);
            debug_assert_eq!(
                (g.meta_offset, g.data_offset, g.size),
                (
                    seed.meta_offset as usize,
                    seed.data_offset as usize,
                    seed.size
                )
            );
        }
        layout
    }

    /// A region of its own for an allocator of `classes`, up to `max_extents` extents each,
    /// whose owners are peers `0..max_peers` and the host: the layout of tests, loom models and
    /// in-process benches. Every word of shared state that several owners write sits on its own
    /// 64-byte line.
    ///
    /// # Errors
    /// [`SlabError::BadConfig`] when there are no classes or more than `NUM_SIZE_CLASSES` (the
    /// classes a slot reference may name), a slot size is zero, a class's slots per extent is not a power
    /// of two, `max_extents` is 0 or above `MAX_EXTENTS_PER_CLASS`, `max_peers` is above
    /// `MAX_PEERS`, or a global index or a size would overflow.
    ///
    /// ```
    /// use hub_alloc::{ClassConfig, SlabLayout};
    /// let layout = SlabLayout::standalone(
    ///     &[ClassConfig { slot_size: 64, slots_per_extent: 4 }],
    ///     2,
    ///     1,
    /// ).unwrap();
    /// assert!(layout.max_size() > layout.initial_size());
    /// assert!(SlabLayout::standalone(&[ClassConfig { slot_size: 64, slots_per_extent: 3 }], 2, 1).is_err());
    /// ```
    pub fn standalone(
        classes: &[ClassConfig],
        max_extents: u32,
        max_peers: u16,
    ) -> Result<Self, SlabError> {
        let bad = |why: &str| SlabError::BadConfig(why.to_owned());
        if classes.is_empty() || classes.len() > NUM_SIZE_CLASSES {
            return Err(bad("between 1 and NUM_SIZE_CLASSES size classes"));
        }
        if max_extents == 0 || max_extents as usize > MAX_EXTENTS_PER_CLASS {
            return Err(bad(
                "max_extents must be between 1 and MAX_EXTENTS_PER_CLASS",
            ));
        }
        if max_peers > MAX_PEERS {
            return Err(bad("max_peers must be at most MAX_PEERS"));
        }
        let line = |size: usize| size.next_multiple_of(64);
        let current_size_offset = 0;
        let extent_count_offset = line(size_of::<AtomicU64>());
        let journals_start = extent_count_offset + line(size_of::<AtomicU32>());
        let journal_stride = line(size_of::<AtomicU32>());
        let journal_offsets: Vec<usize> = (0..=usize::from(max_peers))
            .map(|owner| journals_start + owner * journal_stride)
            .collect();
        let class_headers_offset = journals_start + journal_offsets.len() * journal_stride;
        let extent_region_offset =
            class_headers_offset + line(classes.len() * size_of::<SizeClassHeader>());
        Self::assemble(
            classes,
            max_extents,
            max_peers,
            current_size_offset,
            extent_count_offset,
            journal_offsets,
            class_headers_offset,
            extent_region_offset,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        classes: &[ClassConfig],
        max_extents: u32,
        max_peers: u16,
        current_size_offset: usize,
        extent_count_offset: usize,
        journal_offsets: Vec<usize>,
        class_headers_offset: usize,
        extent_region_offset: usize,
    ) -> Result<Self, SlabError> {
        let bad = |why: &str| SlabError::BadConfig(why.to_owned());
        let mut geometry = Vec::with_capacity(classes.len());
        for class in classes {
            if class.slot_size == 0 {
                return Err(bad("a slot size is zero"));
            }
            if !class.slots_per_extent.is_power_of_two() {
                return Err(bad("slots per extent must be a power of two"));
            }
            // Every global index, extent id and slot together, must stay below 2^29.
            let indices = u64::from(class.slots_per_extent) * u64::from(max_extents);
            if indices > 1 << SLOT_INDEX_BITS {
                return Err(bad("global indices would not fit 29 bits"));
            }
            geometry.push(Geometry::of(*class).ok_or_else(|| bad("an extent's size overflows"))?);
        }
        let mut initial_extent_offsets = Vec::with_capacity(classes.len());
        let mut end = extent_region_offset;
        for g in &geometry {
            initial_extent_offsets.push(end);
            end = end
                .checked_add(g.size)
                .ok_or_else(|| bad("the initial size overflows"))?;
        }
        let initial_size = end;
        let mut max_size = initial_size;
        for g in &geometry {
            let grown = g
                .size
                .checked_mul(max_extents as usize - 1)
                .ok_or_else(|| bad("the largest size overflows"))?;
            max_size = max_size
                .checked_add(grown)
                .ok_or_else(|| bad("the largest size overflows"))?;
        }
        Ok(Self {
            classes: classes.to_vec(),
            geometry,
            max_extents,
            max_peers,
            current_size_offset,
            extent_count_offset,
            journal_offsets,
            class_headers_offset,
            extent_region_offset,
            initial_extent_offsets,
            initial_size,
            max_size,
        })
    }

    /// The same layout with growth capped at `max_size` bytes of region instead of the room
    /// for every extent: a hub that must stay smaller than its largest possible size.
    ///
    /// # Errors
    /// [`SlabError::BadConfig`] when `max_size` is below the initial size or above the current
    /// largest size.
    ///
    /// ```
    /// let segment = hub_layout::SegmentLayout::new(4, 64).unwrap();
    /// let layout = hub_alloc::SlabLayout::for_hub(&segment);
    /// let small = layout.clone().limit_max_size(layout.initial_size() + (64 << 20)).unwrap();
    /// assert_eq!(small.max_size(), layout.initial_size() + (64 << 20));
    /// assert!(layout.clone().limit_max_size(layout.initial_size() - 1).is_err());
    /// ```
    pub fn limit_max_size(mut self, max_size: usize) -> Result<Self, SlabError> {
        if max_size < self.initial_size || max_size > self.max_size {
            return Err(SlabError::BadConfig(format!(
                "max_size {max_size} is outside [{}, {}]",
                self.initial_size, self.max_size
            )));
        }
        self.max_size = max_size;
        Ok(self)
    }

    /// Number of size classes.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// The configuration of class `class`, or `None` when there is no such class.
    pub fn class(&self, class: usize) -> Option<ClassConfig> {
        self.classes.get(class).copied()
    }

    /// Most extents a class can have.
    pub fn max_extents(&self) -> u32 {
        self.max_extents
    }

    /// Peers `0..max_peers` may own slots, besides the host.
    pub fn max_peers(&self) -> u16 {
        self.max_peers
    }

    /// Bytes of one extent of `class`.
    ///
    /// # Panics
    /// When `class >= class_count()`.
    pub fn extent_size(&self, class: usize) -> usize {
        self.geometry[class].size
    }

    /// Bytes the region needs once initialised: the initial extents' end.
    pub fn initial_size(&self) -> usize {
        self.initial_size
    }

    /// Bytes the region needs when every class has all its extents: the reservation to map.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Index of `owner`'s journal, or `None` when it is a peer id at or above `max_peers`.
    pub(crate) fn journal_index(&self, owner: OwnerId) -> Option<usize> {
        if owner.is_host() {
            Some(usize::from(self.max_peers))
        } else if owner.raw() < u32::from(self.max_peers) {
            Some(owner.raw() as usize)
        } else {
            None
        }
    }

    /// Whether `owner` may hold slots of this allocator.
    pub fn admits(&self, owner: OwnerId) -> bool {
        self.journal_index(owner).is_some()
    }
}
