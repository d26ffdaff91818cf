//! Constants of the seed layout.

/// Magic bytes identifying a rapace hub SHM segment.
pub const HUB_MAGIC: [u8; 8] = *b"RAPAHUB\0";

/// Current hub protocol version (major.minor packed into u32).
pub const HUB_PROTOCOL_VERSION: u32 = 1 << 16; // v1.0

/// Maximum number of peers supported.
pub const MAX_PEERS: u16 = 32;

/// Number of size classes.
pub const NUM_SIZE_CLASSES: usize = 5;

/// Maximum extents per size class.
pub const MAX_EXTENTS_PER_CLASS: usize = 16;

/// Default descriptor ring capacity per peer (power of 2).
pub const DEFAULT_HUB_RING_CAPACITY: u32 = 256;

/// Sentinel value indicating end of free list.
pub const FREE_LIST_END: u32 = u32::MAX;

/// Sentinel value indicating no owner.
pub const NO_OWNER: u32 = u32::MAX;

/// Size class configuration: (slot_size, initial_slot_count).
pub const HUB_SIZE_CLASSES: [(u32, u32); NUM_SIZE_CLASSES] = [
    (1024, 1024),  // 1KB * 1024 = 1MB (small RPC args)
    (16384, 256),  // 16KB * 256 = 4MB (typical payloads)
    (262144, 32),  // 256KB * 32 = 8MB (images, CSS)
    (4194304, 8),  // 4MB * 8 = 32MB (compressed fonts)
    (16777216, 4), // 16MB * 4 = 64MB (decompressed fonts)
];

/// Peer is active and healthy.
pub const PEER_FLAG_ACTIVE: u32 = 1 << 0;
/// Peer is being shut down.
pub const PEER_FLAG_DYING: u32 = 1 << 1;
/// Peer has died (crash detected).
pub const PEER_FLAG_DEAD: u32 = 1 << 2;
/// Peer slot is reserved by host but not yet claimed by plugin.
pub const PEER_FLAG_RESERVED: u32 = 1 << 3;

/// The owner id of the host in `HubSlotMeta::owner_peer` (R6): distinct from every peer id
/// (`0..MAX_PEERS`) and from [`NO_OWNER`].
pub const HOST_OWNER: u32 = u32::MAX - 1;

/// `HubSlotMeta::next_free` of an Allocated slot that its owner freed and keeps for its own next
/// allocation (protocol 1.0, a use of a word that means nothing off the free list): such a slot
/// is as free as a listed one for every count, but only its owner takes it again, and its
/// owner's reclaim frees it. A hint for statistics and inspection only: nothing trusts it.
pub const KEPT_SLOT_MARK: u32 = u32::MAX - 2;

/// Number of bits of a slot reference that hold the global index.
pub const SLOT_INDEX_BITS: u32 = 29;

/// Largest class number a slot reference can encode (3 bits).
pub const MAX_ENCODABLE_CLASS: u16 = 7;

/// One past the largest global index a slot reference can encode (2^29).
pub const SLOT_INDEX_LIMIT: u32 = 1 << SLOT_INDEX_BITS;

/// Bit of a peer entry's readiness word ([`PeerEntry::READY_WAITERS_OFFSET`](crate::PeerEntry::READY_WAITERS_OFFSET)):
/// the peer sleeps on its readiness descriptor; the host writes it.
pub const READY_PEER: u32 = 1;
/// Bit of the readiness word: the host sleeps on its readiness descriptor; the peer writes it.
pub const READY_HOST: u32 = 2;
/// Bit of the readiness word: the peer has no descriptor of the host's (it attached from a
/// ticket without them); a host thread sleeps on its doorbell and writes for it.
pub const READY_BRIDGED: u32 = 4;
