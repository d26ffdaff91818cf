//! The hub header and the peer table.

use crate::HubLayoutError;
use crate::constants::*;
use crate::sync::{AtomicU16, AtomicU32, AtomicU64, Ordering};

/// Hub header at the start of the SHM region (256 bytes).
///
/// Contains version info, peer management, and size tracking for growth. The plain fields are
/// written once by the creator before it publishes `magic` (R1) and never again; readers take a
/// private copy of them with [`HeaderSnapshot`](crate::HeaderSnapshot) rather than a reference.
#[repr(C, align(64))]
pub struct HubHeader {
    /// Magic bytes: "RAPAHUB\0". Written last by the creator (R1).
    pub magic: [u8; 8],
    /// Protocol version (major.minor packed).
    pub version: u32,
    /// Feature flags.
    pub flags: u32,

    /// Maximum number of peers this hub supports.
    pub max_peers: u16,
    /// Number of currently active peers.
    pub active_peers: AtomicU16,
    /// Counter for allocating peer IDs.
    pub peer_id_counter: AtomicU16,
    /// Reserved.
    pub _pad1: u16,

    /// Current size of the SHM file: the end of the last range reserved for an extent (R8).
    pub current_size: AtomicU64,
    /// Number of extents currently allocated.
    pub extent_count: AtomicU32,
    /// Ring capacity per peer.
    pub ring_capacity: u32,

    /// Offset to peer table from start of file.
    pub peer_table_offset: u64,
    /// Offset to ring region from start of file.
    pub ring_region_offset: u64,
    /// Offset to size class headers from start of file.
    pub size_class_offset: u64,
    /// Offset to extent region from start of file.
    pub extent_region_offset: u64,

    /// Padding to 256 bytes.
    pub _pad2: [u8; 168],
}

impl HubHeader {
    /// A header for `max_peers` and `ring_capacity` with every offset zero, like the seed's
    /// [`init`](Self::init). The caller fills in the offsets.
    pub fn new(max_peers: u16, ring_capacity: u32) -> Self {
        Self {
            magic: HUB_MAGIC,
            version: HUB_PROTOCOL_VERSION,
            flags: 0,
            max_peers,
            active_peers: AtomicU16::new(0),
            peer_id_counter: AtomicU16::new(0),
            _pad1: 0,
            current_size: AtomicU64::new(0),
            extent_count: AtomicU32::new(0),
            ring_capacity,
            peer_table_offset: 0,
            ring_region_offset: 0,
            size_class_offset: 0,
            extent_region_offset: 0,
            _pad2: [0; 168],
        }
    }

    /// Initialize a new hub header.
    ///
    /// As in the seed, this writes the magic at once and leaves the offsets zero. A creator that
    /// shares the memory with other processes while it builds should write the magic last
    /// instead (R1), as hub-transport does.
    pub fn init(&mut self, max_peers: u16, ring_capacity: u32) {
        *self = Self::new(max_peers, ring_capacity);
    }

    /// Validate the hub header: magic, major version, `max_peers` and `ring_capacity`.
    ///
    /// This is the seed's check of the header alone. [`validate_segment`](crate::validate_segment)
    /// checks all of rule R2 against the length of a mapping.
    pub fn validate(&self) -> Result<(), HubLayoutError> {
        if self.magic != HUB_MAGIC {
            return Err(HubLayoutError::InvalidMagic);
        }
        check_version(self.version)?;
        check_config(self.max_peers, self.ring_capacity)
    }
}

/// The words version 1.0 keeps in the header's padding (R13): byte offsets from the start of
/// the header, each inside `_pad2`, whose name and size stay the seed's.
impl HubHeader {
    /// Where `_pad2` starts, the first of the words below.
    pub const PAD2_OFFSET: usize = 72;
    /// `u32`: the host's allocator journal (hub-alloc).
    pub const HOST_JOURNAL_OFFSET: usize = 72;
    /// `u32`: the host's process id.
    pub const HOST_PID_OFFSET: usize = 76;
    /// `u32`: the host's state, 0 running, 1 gone (it said goodbye).
    pub const HOST_STATE_OFFSET: usize = 80;
    /// `u32`: the host's doorbell, rung when a peer attaches or leaves.
    pub const HOST_BELL_OFFSET: usize = 84;
    /// `u64`: the size growth may reach, in bytes (0: the layout's largest).
    pub const SIZE_LIMIT_OFFSET: usize = 88;
    /// `u32`: the heartbeat timeout, in milliseconds.
    pub const HEARTBEAT_MS_OFFSET: usize = 96;
}

/// The major version check of R2.
pub(crate) fn check_version(version: u32) -> Result<(), HubLayoutError> {
    if version >> 16 != HUB_PROTOCOL_VERSION >> 16 {
        return Err(HubLayoutError::IncompatibleVersion {
            expected: HUB_PROTOCOL_VERSION,
            found: version,
        });
    }
    Ok(())
}

/// The configuration check shared by header validation and offset calculation.
pub(crate) fn check_config(max_peers: u16, ring_capacity: u32) -> Result<(), HubLayoutError> {
    if max_peers == 0 || max_peers > MAX_PEERS {
        return Err(HubLayoutError::InvalidConfig(
            "max_peers must be between 1 and MAX_PEERS",
        ));
    }
    if !ring_capacity.is_power_of_two() || ring_capacity == 0 {
        return Err(HubLayoutError::InvalidConfig(
            "ring_capacity must be non-zero power of 2",
        ));
    }
    Ok(())
}

/// Peer entry in the peer table (64 bytes).
#[repr(C, align(64))]
pub struct PeerEntry {
    /// Peer ID.
    pub peer_id: u16,
    /// Peer type (reserved for future).
    pub peer_type: u16,
    /// Flags (active, dying, dead): the `PEER_FLAG_*` constants.
    pub flags: AtomicU32,

    /// Heartbeat counter.
    pub epoch: AtomicU64,
    /// Last seen timestamp (nanos since epoch).
    pub last_seen: AtomicU64,

    /// Offset to send ring for this peer (peer->host).
    pub send_ring_offset: u64,
    /// Offset to recv ring for this peer (host->peer).
    pub recv_ring_offset: u64,

    /// Futex for send ring data (peer signals host).
    pub send_data_futex: AtomicU32,
    /// Futex for recv ring data (host signals peer).
    pub recv_data_futex: AtomicU32,

    /// Padding to 64 bytes.
    pub _pad: [u8; 16],
}

/// The words version 1.0 keeps in a peer entry's padding (R13): byte offsets from the start of
/// the entry, each inside `_pad`, whose name and size stay the seed's.
impl PeerEntry {
    /// Where `_pad` starts, the first of the words below.
    pub const PAD_OFFSET: usize = 48;
    /// `u32`: the peer's allocator journal (hub-alloc).
    pub const JOURNAL_OFFSET: usize = 48;
    /// `u32`: the peer's process id.
    pub const PID_OFFSET: usize = 52;
    /// `u32`: which side sleeps on a readiness descriptor rather than only on the futex
    /// ([`READY_PEER`], [`READY_HOST`], [`READY_BRIDGED`]).
    pub const READY_WAITERS_OFFSET: usize = 56;
}

impl PeerEntry {
    /// An empty entry whose rings live at the given offsets.
    pub fn new(send_ring_offset: u64, recv_ring_offset: u64) -> Self {
        Self {
            peer_id: 0,
            peer_type: 0,
            flags: AtomicU32::new(0),
            epoch: AtomicU64::new(0),
            last_seen: AtomicU64::new(0),
            send_ring_offset,
            recv_ring_offset,
            send_data_futex: AtomicU32::new(0),
            recv_data_futex: AtomicU32::new(0),
            _pad: [0; 16],
        }
    }

    /// Initialize an empty entry whose rings live at the given offsets.
    pub fn init(&mut self, send_ring_offset: u64, recv_ring_offset: u64) {
        *self = Self::new(send_ring_offset, recv_ring_offset);
    }

    /// Set `ACTIVE` and clear `RESERVED` and `DEAD`, as the seed does.
    ///
    /// These are two separate atomic operations, so another process can observe the state in
    /// between. The lifecycle of R9 uses a single compare-and-swap on `flags` instead.
    pub fn mark_active(&self) {
        self.flags.fetch_or(PEER_FLAG_ACTIVE, Ordering::Release);
        self.flags
            .fetch_and(!(PEER_FLAG_RESERVED | PEER_FLAG_DEAD), Ordering::Release);
    }

    /// Set `DEAD` and clear `ACTIVE`, as the seed does (two atomic operations; see
    /// [`mark_active`](Self::mark_active)).
    pub fn mark_dead(&self) {
        self.flags.fetch_or(PEER_FLAG_DEAD, Ordering::Release);
        self.flags.fetch_and(!PEER_FLAG_ACTIVE, Ordering::Release);
    }
}
