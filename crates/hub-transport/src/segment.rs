//! The hub segment: built by the host (R1), validated by every attacher (R2), and the typed
//! words of it the transport uses.
//!
//! # What hub-transport keeps in the layout's padding (R13)
//!
//! | where | bytes | what |
//! |---|---|---|
//! | `HubHeader` | 72..76 | the host's allocator journal (hub-alloc) |
//! | `HubHeader` | 76..80 | the host's process id |
//! | `HubHeader` | 80..84 | the host's state: 0 running, 1 gone (said goodbye) |
//! | `HubHeader` | 84..88 | the host's doorbell: rung when a peer attaches or leaves |
//! | `HubHeader` | 88..96 | the size growth may reach, in bytes (0: the layout's largest) |
//! | `HubHeader` | 96..100 | the heartbeat timeout, in milliseconds (peers beat four times in it) |
//! | `PeerEntry` | 48..52 | the peer's allocator journal (hub-alloc) |
//! | `PeerEntry` | 52..56 | the peer's process id |
//! | `PeerEntry` | 56..60 | which side sleeps on a readiness descriptor (`READY_PEER`, `READY_HOST`) |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hub_alloc::shared::Shared;
use hub_alloc::{OwnerId, Slab, SlabError, SlabLayout};
use hub_layout::{
    DescRingHeader, HUB_MAGIC, HubHeader, HubLayoutError, MAX_EXTENTS_PER_CLASS, NUM_SIZE_CLASSES,
    PEER_FLAG_ACTIVE, PEER_FLAG_DEAD, PEER_FLAG_DYING, PEER_FLAG_RESERVED, PeerEntry, SegmentBytes,
    SegmentLayout, validate_segment,
};

#[cfg(not(loom))]
use crate::mapping::SegmentMapping;
use crate::mapping::{HolderLock, MappingError, SegmentFile};
use crate::ring::{RawRing, RingError};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
mod heap;

/// Where hub-transport keeps its own words in the padding of the seed layout (R13): byte
/// offsets, for inspectors that read a segment without attaching. The names are hub-layout's
/// ([`HubHeader`]'s and [`PeerEntry`]'s associated constants); these are the same values.
pub mod pad {
    use hub_layout::{HubHeader, PeerEntry};

    /// `u32` in the `HubHeader`: the host's process id.
    pub const HOST_PID: usize = HubHeader::HOST_PID_OFFSET;
    /// `u32` in the `HubHeader`: the host's state, 0 running, 1 gone (it said goodbye).
    pub const HOST_STATE: usize = HubHeader::HOST_STATE_OFFSET;
    /// `u32` in the `HubHeader`: the host's doorbell, rung when a peer attaches or leaves.
    pub const HOST_BELL: usize = HubHeader::HOST_BELL_OFFSET;
    /// `u64` in the `HubHeader`: the size growth may reach, in bytes (0: the layout's largest).
    pub const SIZE_LIMIT: usize = HubHeader::SIZE_LIMIT_OFFSET;
    /// `u32` in the `HubHeader`: the heartbeat timeout in milliseconds.
    pub const HEARTBEAT_MS: usize = HubHeader::HEARTBEAT_MS_OFFSET;
    /// `u32` within a `PeerEntry`: the peer's process id.
    pub const PEER_PID: usize = PeerEntry::PID_OFFSET;
    /// `u32` within a `PeerEntry`: which side sleeps on a readiness descriptor rather than
    /// only on the futex ([`READY_PEER`], [`READY_HOST`]); set by that side before it
    /// announces itself (R11), cleared when the host reserves the entry. (Bytes 48..52 of the
    /// entry hold the peer's allocator journal, 52..56 its pid.)
    pub const READY_WAITERS: usize = PeerEntry::READY_WAITERS_OFFSET;
    /// Bit of [`READY_WAITERS`]: the peer sleeps on its descriptor; the host writes it.
    pub const READY_PEER: u32 = hub_layout::READY_PEER;
    /// Bit of [`READY_WAITERS`]: the host sleeps on its descriptor; the peer writes it.
    pub const READY_HOST: u32 = hub_layout::READY_HOST;
    /// Bit of [`READY_WAITERS`]: the peer has no descriptor of the host's (it attached from a
    /// ticket without them); a host thread sleeps on its doorbell and writes for it.
    pub const READY_BRIDGED: u32 = hub_layout::READY_BRIDGED;
}

/// The host's state word: the host left (goodbye).
pub(crate) const HOST_GONE: u32 = 1;

/// How to build a hub.
///
/// Start from [`HubConfig::new`] (the defaults) and change what you need with the builder
/// methods, one per field; the fields stay public to read. The struct is `#[non_exhaustive]`:
/// outside this crate it cannot be written as a literal, so fields added later break nobody.
///
/// ```
/// use hub_transport::HubConfig;
/// let config = HubConfig::new().max_peers(4);
/// assert_eq!(config.max_peers, 4);
/// assert_eq!(config.ring_capacity, 256);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubConfig {
    /// Peers the hub admits at once, 1 to 32.
    pub max_peers: u16,
    /// Descriptors per ring, a power of two.
    pub ring_capacity: u32,
    /// The largest size, in bytes, growth may bring the segment to; `None` for room for every
    /// extent of every class (about 1.7 GiB of address space for the default layout, which
    /// costs nothing until used).
    pub max_size: Option<usize>,
    /// A path to create the segment at, for attach by path; `None` (the default) for an
    /// anonymous memfd handed to peers by inheritance (R14).
    pub path: Option<PathBuf>,
    /// How long a peer may go without a heartbeat before the host declares it hung and evicts
    /// it (R12). Peers beat four times per timeout. A stopped peer (SIGSTOP, a debugger) is
    /// evicted after it too; a peer whose process exits is found at once, by its pidfd.
    pub heartbeat_timeout: std::time::Duration,
    /// Whether the host kills (SIGKILL, through the pidfd it took when it spawned it) the
    /// process of a peer it spawned ([`Host::spawn_peer`](crate::Host::spawn_peer)) and evicts
    /// (the default). Either way the evicted peer's entry stays fenced (Dead, its id not handed
    /// out) until its process is gone, so that it cannot finish an allocator operation on state
    /// the recovery has given back; without the kill that is when it exits by itself. The host
    /// never signals a process it did not spawn, nor a peer of its own process.
    pub kill_evicted: bool,
    /// Whether [`Host::create`](crate::Host::create) replaces a *stale* hub file at
    /// [`path`](Self::path): one whose creator died without removing it (nobody holds its
    /// lock, see [`SegmentFile::is_stale_at`](crate::mapping::SegmentFile::is_stale_at)).
    /// Off by default: then such a file makes `create` fail with [`CreateError::Stale`]. A
    /// file whose creator lives is never replaced.
    pub take_over_stale: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            max_peers: hub_layout::MAX_PEERS,
            ring_capacity: hub_layout::DEFAULT_HUB_RING_CAPACITY,
            max_size: None,
            path: None,
            heartbeat_timeout: std::time::Duration::from_secs(2),
            kill_evicted: true,
            take_over_stale: false,
        }
    }
}

/// The builder: each method takes the configuration by value, sets one field and gives it
/// back, so calls chain. Nothing is checked here; [`Host::create`](crate::Host::create)
/// checks the whole and says what it rejects.
///
/// ```
/// use std::time::Duration;
/// use hub_transport::HubConfig;
///
/// let config = HubConfig::new()
///     .max_peers(2)
///     .ring_capacity(64)
///     .max_size(64 << 20)
///     .path("/dev/shm/my-hub")
///     .heartbeat_timeout(Duration::from_millis(500))
///     .kill_evicted(false);
/// assert_eq!(config.max_peers, 2);
/// assert_eq!(config.ring_capacity, 64);
/// assert_eq!(config.max_size, Some(64 << 20));
/// assert_eq!(config.path.as_deref(), Some(std::path::Path::new("/dev/shm/my-hub")));
/// assert_eq!(config.heartbeat_timeout, Duration::from_millis(500));
/// assert!(!config.kill_evicted);
/// assert_eq!(HubConfig::new(), HubConfig::default());
/// ```
impl HubConfig {
    /// The default configuration, the same as [`HubConfig::default`]: 32 peers
    /// ([`MAX_PEERS`](hub_layout::MAX_PEERS)), rings of 256 descriptors, room to grow to the
    /// layout's largest size, an anonymous memfd, a heartbeat timeout of 2 s, and evicted
    /// spawned peers killed.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_peers`](HubConfig#structfield.max_peers), the peers the hub admits at once:
    /// 1 to 32 ([`MAX_PEERS`](hub_layout::MAX_PEERS), the default). Each costs a peer entry
    /// and two rings in the segment. Outside that range [`Host::create`](crate::Host::create)
    /// fails with [`CreateError::Config`].
    #[must_use]
    pub fn max_peers(mut self, max_peers: u16) -> Self {
        self.max_peers = max_peers;
        self
    }

    /// Sets [`ring_capacity`](HubConfig#structfield.ring_capacity), the descriptors each ring
    /// holds (the frames in flight one way between the host and one peer): a non-zero power
    /// of two, 256 by default. A descriptor is 64 bytes, and each peer has two rings. Any
    /// other value makes [`Host::create`](crate::Host::create) fail with
    /// [`CreateError::Config`].
    #[must_use]
    pub fn ring_capacity(mut self, ring_capacity: u32) -> Self {
        self.ring_capacity = ring_capacity;
        self
    }

    /// Sets [`max_size`](HubConfig#structfield.max_size) to `Some(max_size)`: the largest
    /// size, in bytes, growth may bring the segment to (it is reserved as address space at
    /// creation). By default (`None`) there is room for every extent of every class. It must
    /// lie between the layout's initial size (what the segment holds at creation) and its
    /// largest; otherwise [`Host::create`](crate::Host::create) fails with
    /// [`CreateError::Config`], which names the range.
    #[must_use]
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// Sets [`path`](HubConfig#structfield.path) to `Some(path)`: create the segment as a file
    /// at `path` (mode 0600, removed again when the host is dropped), for peers that attach by
    /// path. By default (`None`) the segment is an anonymous memfd that peers inherit (R14).
    /// Nothing may exist at `path` yet, and its directory must be writable; otherwise
    /// [`Host::create`](crate::Host::create) fails with [`CreateError::Mapping`].
    #[must_use]
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets [`heartbeat_timeout`](HubConfig#structfield.heartbeat_timeout): how long a peer
    /// may go without a heartbeat before the host evicts it as hung (R12); 2 s by default.
    /// Peers beat four times per timeout. Every duration is accepted: peers read it in whole
    /// milliseconds, at least 1 and at most `u32::MAX`. One too short evicts peers that are
    /// only busy or descheduled.
    #[must_use]
    pub fn heartbeat_timeout(mut self, heartbeat_timeout: std::time::Duration) -> Self {
        self.heartbeat_timeout = heartbeat_timeout;
        self
    }

    /// Sets [`kill_evicted`](HubConfig#structfield.kill_evicted): whether the host kills
    /// (SIGKILL, through its pidfd) the process of a peer it spawned
    /// ([`Host::spawn_peer`](crate::Host::spawn_peer)) and evicts; `true` by default. Either
    /// value is valid; with `false` the evicted peer's entry stays fenced until its process
    /// exits by itself.
    #[must_use]
    pub fn kill_evicted(mut self, kill_evicted: bool) -> Self {
        self.kill_evicted = kill_evicted;
        self
    }

    /// Sets [`take_over_stale`](HubConfig#structfield.take_over_stale): whether
    /// [`Host::create`](crate::Host::create) replaces a hub file at the path whose creator died
    /// without removing it (off by default: [`CreateError::Stale`] then). A hub whose creator
    /// lives is never replaced, whatever this says.
    #[must_use]
    pub fn take_over_stale(mut self, take_over_stale: bool) -> Self {
        self.take_over_stale = take_over_stale;
        self
    }
}

/// Why a hub could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The configuration has no valid layout (peers, ring capacity, or `max_size` out of range).
    #[error("invalid hub configuration: {0}")]
    Config(String),
    /// The segment file could not be created, mapped or grown.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The allocator could not be built in the segment.
    #[error(transparent)]
    Alloc(#[from] SlabError),
    /// A hub file is at the path already, and its creator is gone (it died without removing
    /// it): [`HubConfig::take_over_stale`] replaces it. A file whose creator lives is a
    /// [`Mapping`](Self::Mapping) error (`AlreadyExists`).
    #[error("a stale hub is at {}: its creator is gone (take_over_stale(true) replaces it)", .path.display())]
    Stale {
        /// The path.
        path: PathBuf,
    },
    /// The host's readiness descriptor could not be made (out of descriptors).
    #[error("cannot make the readiness descriptor: {0}")]
    Readiness(std::io::Error),
}

/// Why attaching to a segment failed. Every kind of bad file has its own variant (R2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The file could not be opened, inspected or mapped.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The file is not a valid hub: not a hub at all (`InvalidMagic`), another major version
    /// (`IncompatibleVersion`), truncated (`HubTooSmall`), inconsistent offsets, or half-built
    /// (`NotReady`, R1).
    #[error("not a valid hub segment: {0}")]
    Layout(#[from] HubLayoutError),
    /// The allocator's state does not match the layout (R3).
    #[error(transparent)]
    Alloc(#[from] SlabError),
    /// The size limit in the header is outside the layout's range.
    #[error("the segment's size limit {limit} is outside [{initial}, {max}]")]
    SizeLimit {
        /// The value found.
        limit: u64,
        /// The layout's initial size.
        initial: usize,
        /// The layout's largest size.
        max: usize,
    },
    /// The ticket cannot be used: malformed, or naming a peer id beyond the hub's.
    #[error("bad ticket: {0}")]
    BadTicket(String),
    /// The peer entry the ticket names is not Reserved: another process attached with it
    /// already, or the host took it back (R9).
    #[error("peer {peer} is {state}, not reserved: the ticket was used or withdrawn")]
    NotReserved {
        /// The peer id.
        peer: u16,
        /// The state found.
        state: PeerState,
    },
    /// The ticket's epoch is not the entry's: the ticket is from an earlier life of the id.
    #[error("the ticket is for epoch {ticket} of peer {peer}, which is at epoch {entry}")]
    StaleTicket {
        /// The peer id.
        peer: u16,
        /// Epoch in the ticket.
        ticket: u64,
        /// Epoch in the entry.
        entry: u64,
    },
    /// The host has left the hub: the host-state word says so and the host's lock is released
    /// (or, at attach, no process has the host's pid and the lock is released).
    #[error("the host has left the hub")]
    HostGone,
    /// The ticket names an inherited descriptor that is not this process's to take: this
    /// process took that number already (a second [`Peer::from_env`](crate::Peer::from_env),
    /// whether or not the first `Peer` still lives), or the descriptor is close-on-exec, which
    /// an inherited one never is, so something in this process owns it. The descriptor is left
    /// alone: never a second owner of one descriptor.
    #[error("descriptor {fd} is not this process's to take: taken already, or owned here")]
    DescriptorTaken {
        /// The descriptor number in the ticket.
        fd: std::os::fd::RawFd,
    },
}

/// Lifecycle state of a peer entry (R9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Free for `add_peer`.
    Empty,
    /// Reserved by the host for a peer that has not attached yet.
    Reserved,
    /// A peer is attached.
    Active,
    /// The peer said goodbye; the host recovers it.
    Dying,
    /// The peer died or was evicted; the host recovers it.
    Dead,
    /// The flags word holds no state (corruption, R3).
    Invalid(u32),
}

impl PeerState {
    /// The state a flags word encodes.
    #[inline]
    pub fn from_flags(flags: u32) -> Self {
        // The hot paths' answer by one compare; the other states out of line, where their
        // `match` (an indirect jump through a table) costs the hot paths nothing.
        if flags == PEER_FLAG_ACTIVE {
            PeerState::Active
        } else {
            Self::from_other_flags(flags)
        }
    }

    /// [`from_flags`](Self::from_flags) for every state but Active.
    #[inline(never)]
    fn from_other_flags(flags: u32) -> Self {
        match flags {
            0 => PeerState::Empty,
            PEER_FLAG_RESERVED => PeerState::Reserved,
            PEER_FLAG_ACTIVE => PeerState::Active,
            PEER_FLAG_DYING => PeerState::Dying,
            PEER_FLAG_DEAD => PeerState::Dead,
            other => PeerState::Invalid(other),
        }
    }

    /// The flags word of this state (`Invalid` keeps its raw value).
    pub fn flags(self) -> u32 {
        match self {
            PeerState::Empty => 0,
            PeerState::Reserved => PEER_FLAG_RESERVED,
            PeerState::Active => PEER_FLAG_ACTIVE,
            PeerState::Dying => PEER_FLAG_DYING,
            PeerState::Dead => PEER_FLAG_DEAD,
            PeerState::Invalid(raw) => raw,
        }
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerState::Empty => f.write_str("empty"),
            PeerState::Reserved => f.write_str("reserved"),
            PeerState::Active => f.write_str("active"),
            PeerState::Dying => f.write_str("dying"),
            PeerState::Dead => f.write_str("dead"),
            PeerState::Invalid(raw) => write!(f, "invalid ({raw:#x})"),
        }
    }
}

/// A mapped, validated hub segment and the private copy of its layout (R3).
pub(crate) struct Segment {
    #[cfg(not(loom))]
    mapping: Arc<SegmentMapping>,
    /// The mapping's base, copied here so that a fixed word is one bounds check and one
    /// addition away from `&Segment`, not behind the mapping's `Arc`.
    #[cfg(not(loom))]
    base: MappedBase,
    /// Under loom, the words and rings on the heap ([`Segment::heap`]).
    #[cfg(loom)]
    heap: heap::HeapWords,
    layout: SegmentLayout,
    /// The creator's private copies of the words it wrote once and nobody changes afterwards
    /// (R4): every word an attacher validates, and the host's own. Empty for an attacher.
    fixed: Vec<FixedWord>,
}

/// A copy of a mapping's base, which never moves (see `mapping`).
#[cfg(not(loom))]
struct MappedBase(std::ptr::NonNull<u8>);

// SAFETY: a copy of the base of the mapping the same `Segment` holds (`Send + Sync`), which
// outlives it; the memory behind it is reached only as atomics, from any thread.
#[cfg(not(loom))]
unsafe impl Send for MappedBase {}
// SAFETY: as for `Send`: through `&MappedBase`, atomics only.
#[cfg(not(loom))]
unsafe impl Sync for MappedBase {}

/// A word the host wrote when it built the hub, that no participant changes afterwards, and
/// its value then: the host's private truth, restored when another process changed it (R4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedWord {
    /// Byte offset in the segment.
    pub offset: usize,
    /// A `u64` (else a `u32`).
    pub wide: bool,
    /// What it is, for reports.
    pub name: &'static str,
    /// The value the host wrote.
    pub value: u64,
}

/// Every word of a hub of `layout` that its creator writes once and nobody changes afterwards:
/// `(offset, wide, name)`. The header's fixed fields (what attach validates, R2) and the words
/// hub-transport keeps in its padding but the bell, each entry's id and ring offsets, and each
/// ring's capacity.
fn fixed_fields(layout: &SegmentLayout) -> Vec<(usize, bool, &'static str)> {
    use core::mem::offset_of;
    let mut fields = vec![
        (offset_of!(HubHeader, magic), true, "magic"),
        (offset_of!(HubHeader, version), false, "version"),
        (offset_of!(HubHeader, flags), false, "header flags"),
        // max_peers and the (unused) active_peers beside it, as one u32.
        (offset_of!(HubHeader, max_peers), false, "max_peers"),
        (offset_of!(HubHeader, ring_capacity), false, "ring_capacity"),
        (
            offset_of!(HubHeader, peer_table_offset),
            true,
            "peer_table_offset",
        ),
        (
            offset_of!(HubHeader, ring_region_offset),
            true,
            "ring_region_offset",
        ),
        (
            offset_of!(HubHeader, size_class_offset),
            true,
            "size_class_offset",
        ),
        (
            offset_of!(HubHeader, extent_region_offset),
            true,
            "extent_region_offset",
        ),
        (pad::HOST_PID, false, "host pid"),
        (pad::HOST_STATE, false, "host state"),
        (pad::SIZE_LIMIT, true, "size limit"),
        (pad::HEARTBEAT_MS, false, "heartbeat timeout"),
    ];
    for peer in 0..layout.max_peers {
        let entry = layout.peer_entry_offset(peer);
        // peer_id and peer_type, as one u32.
        fields.push((entry + offset_of!(PeerEntry, peer_id), false, "peer id"));
        fields.push((
            entry + offset_of!(PeerEntry, send_ring_offset),
            true,
            "peer send_ring_offset",
        ));
        fields.push((
            entry + offset_of!(PeerEntry, recv_ring_offset),
            true,
            "peer recv_ring_offset",
        ));
    }
    for ring in 0..2 * usize::from(layout.max_peers) {
        fields.push((
            layout.ring_offset(ring) + offset_of!(DescRingHeader, capacity),
            false,
            "ring capacity",
        ));
    }
    fields
}

/// A new hub file at `path` and its holder's lock, taken at once; with `take_over`, in place of
/// a stale one (see [`SegmentFile::is_stale_at`]), whose lock is held until the new file's is.
#[cfg(not(loom))]
fn create_named(
    path: &Path,
    initial: u64,
    take_over: bool,
) -> Result<(SegmentFile, HolderLock), CreateError> {
    let locked = |file: SegmentFile| -> Result<_, CreateError> {
        let holder = file.lock_as_holder()?;
        Ok((file, holder))
    };
    match SegmentFile::create_named(path, initial) {
        Err(MappingError::CreateFailed { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists
                && SegmentFile::is_stale_at(path).unwrap_or(false) =>
        {
            if !take_over {
                return Err(CreateError::Stale {
                    path: path.to_path_buf(),
                });
            }
            let old = SegmentFile::take_over_stale(path)?;
            let new = locked(SegmentFile::create_named(path, initial)?);
            drop(old);
            new
        }
        other => locked(other?),
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Segment");
        debug
            .field("max_peers", &self.layout.max_peers)
            .field("ring_capacity", &self.layout.ring_capacity);
        #[cfg(not(loom))]
        debug.field("len", &self.mapping.len());
        debug.finish()
    }
}

/// What [`Segment::create`] makes: the segment, the host's allocator handle, and the host's
/// lock on the file (R12), taken as the file was made.
#[cfg(not(loom))]
pub(crate) type Created = (Arc<Segment>, Slab<Arc<SegmentMapping>>, HolderLock);

#[cfg(not(loom))]
impl Segment {
    /// Build a new hub (R1): header without magic, peer table, rings, allocator, then the magic
    /// with Release. Returns the segment and the host's allocator handle.
    pub fn create(config: &HubConfig) -> Result<Created, CreateError> {
        let layout = SegmentLayout::new(config.max_peers, config.ring_capacity)
            .map_err(|e| CreateError::Config(e.to_string()))?;
        let mut slab_layout = SlabLayout::for_hub(&layout);
        if let Some(max) = config.max_size {
            slab_layout = slab_layout
                .limit_max_size(max)
                .map_err(|e| CreateError::Config(e.to_string()))?;
        }
        let initial = layout.initial_size() as u64;
        // R12: the holder's lock from the first moment, before the hub is built: a file
        // nobody holds the lock on is stale, and may be taken over.
        let (file, holder) = match &config.path {
            Some(path) => create_named(path, initial, config.take_over_stale)?,
            None => {
                let file = SegmentFile::create_anonymous("hub", initial)?;
                let holder = file.lock_as_holder()?;
                (file, holder)
            }
        };
        let mapping = Arc::new(SegmentMapping::new(file, slab_layout.max_size())?);
        let mut segment = Segment::over(mapping.clone(), layout).map_err(|error| {
            CreateError::Config(format!("segment file shorter than its layout: {error}"))
        })?;
        segment.build(slab_layout.max_size(), config.heartbeat_timeout)?;
        // SAFETY: the file was created just now by this call and nobody else has it: the
        // allocator's state is ours alone until the magic is written.
        let slab = unsafe { Slab::init(mapping, slab_layout, OwnerId::HOST)? };
        let shared = segment.shared();
        shared
            .u32_at(pad::HOST_PID)
            .ok_or_else(|| CreateError::Config("segment too small".into()))?
            .store(std::process::id(), Ordering::Relaxed);
        // R1: the magic last, with Release: whoever reads it with Acquire sees a finished hub.
        shared
            .u64_at(0)
            .ok_or_else(|| CreateError::Config("segment too small".into()))?
            .store(u64::from_le_bytes(HUB_MAGIC), Ordering::Release);
        // R4: the private copies, read back from what this call wrote a moment ago (nobody
        // else has the segment yet).
        let mut fixed = Vec::new();
        for (offset, wide, name) in fixed_fields(&segment.layout) {
            let value = if wide {
                segment.word64(offset).load(Ordering::Relaxed)
            } else {
                u64::from(segment.word32(offset).load(Ordering::Relaxed))
            };
            fixed.push(FixedWord {
                offset,
                wide,
                name,
                value,
            });
        }
        segment.fixed = fixed;
        Ok((Arc::new(segment), slab, holder))
    }

    /// Header (without magic), peer entries and rings.
    fn build(
        &self,
        size_limit: usize,
        heartbeat_timeout: std::time::Duration,
    ) -> Result<(), CreateError> {
        let layout = &self.layout;
        let too_small = || CreateError::Config("segment shorter than its layout".into());
        let mut header = HubHeader::new(layout.max_peers, layout.ring_capacity);
        header.magic = [0; 8];
        header.peer_table_offset = layout.offsets.peer_table as u64;
        header.ring_region_offset = layout.offsets.ring_region as u64;
        header.size_class_offset = layout.offsets.size_class_headers as u64;
        header.extent_region_offset = layout.offsets.extent_region as u64;
        let in_pad2 = |offset: usize| offset - HubHeader::PAD2_OFFSET;
        header._pad2[in_pad2(pad::SIZE_LIMIT)..][..8]
            .copy_from_slice(&(size_limit as u64).to_le_bytes());
        let heartbeat_ms = u32::try_from(heartbeat_timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        header._pad2[in_pad2(pad::HEARTBEAT_MS)..][..4]
            .copy_from_slice(&heartbeat_ms.to_le_bytes());
        let shared = self.shared();
        // SAFETY: the segment was created by our caller a moment ago and is not shared yet.
        unsafe {
            if !shared.init(0, header) {
                return Err(too_small());
            }
            for peer in 0..layout.max_peers {
                let mut entry = PeerEntry::new(
                    layout.send_ring_offset(peer) as u64,
                    layout.recv_ring_offset(peer) as u64,
                );
                entry.peer_id = peer;
                if !shared.init(layout.peer_entry_offset(peer), entry) {
                    return Err(too_small());
                }
            }
            for ring in 0..2 * usize::from(layout.max_peers) {
                let header = DescRingHeader::new(layout.ring_capacity);
                if !shared.init(layout.ring_offset(ring), header) {
                    return Err(too_small());
                }
            }
        }
        Ok(())
    }

    /// Attach to the hub in `file` (R2), as `me`.
    pub fn attach(
        file: SegmentFile,
        me: OwnerId,
    ) -> Result<(Arc<Segment>, Slab<Arc<SegmentMapping>>), AttachError> {
        // A first look at what the file holds now, to learn the layout and so the reservation.
        // Another participant may grow a class meanwhile (R8): it extends the file before it
        // publishes the extent's offset, so an offset past the length we mapped, with a file
        // longer now than then, is growth seen half-way: look again. A retry needs the file to
        // have grown since the last look, and growth is bounded; so is the count.
        let mut retries = NUM_SIZE_CLASSES * MAX_EXTENTS_PER_CLASS;
        let (probe, validated) = loop {
            let len = file.len()?;
            let mapped = usize::try_from(len).unwrap_or(usize::MAX).max(1);
            let probe = SegmentMapping::new(file.try_clone()?, mapped)?;
            match validate_segment(&probe) {
                Err(HubLayoutError::BadExtentOffset { .. }) if retries > 0 && file.len()? > len => {
                    retries -= 1;
                }
                result => break (probe, result?),
            }
        };
        let layout = validated.layout;
        let limit = probe.read_u64(pad::SIZE_LIMIT).unwrap_or(0);
        drop(probe);
        let mut slab_layout = SlabLayout::for_hub(&layout);
        let (initial, max) = (slab_layout.initial_size(), slab_layout.max_size());
        if limit != 0 {
            let bad = AttachError::SizeLimit {
                limit,
                initial,
                max,
            };
            let limit = usize::try_from(limit).map_err(|_| bad)?;
            slab_layout =
                slab_layout
                    .limit_max_size(limit)
                    .map_err(|_| AttachError::SizeLimit {
                        limit: limit as u64,
                        initial,
                        max,
                    })?;
        }
        let mapping = Arc::new(SegmentMapping::new(file, slab_layout.max_size())?);
        // The file may have changed since the probe validated it (R2): the mapping that is
        // used is checked again.
        let segment = Segment::over(mapping.clone(), layout)?;
        let slab = Slab::attach(mapping, slab_layout, me)?;
        Ok((Arc::new(segment), slab))
    }

    /// The segment of `layout` over `mapping`, which must cover the layout's initial size:
    /// the fixed words are found by [`fixed_word`](Self::fixed_word) with no other check.
    fn over(mapping: Arc<SegmentMapping>, layout: SegmentLayout) -> Result<Self, HubLayoutError> {
        let (required, found) = (layout.initial_size(), mapping.len());
        if found < required {
            return Err(HubLayoutError::HubTooSmall { required, found });
        }
        Ok(Segment {
            base: MappedBase(mapping.base()),
            mapping,
            layout,
            fixed: Vec::new(),
        })
    }

    fn shared(&self) -> Shared<'_, SegmentMapping> {
        Shared::new(&self.mapping)
    }

    /// The mapping.
    pub fn mapping(&self) -> &Arc<SegmentMapping> {
        &self.mapping
    }
}

impl Segment {
    /// The private layout.
    pub fn layout(&self) -> &SegmentLayout {
        &self.layout
    }

    /// Put back every word the creator wrote once that another process has changed since (R4:
    /// the host's private copies), so that scribbling cannot stop new peers from attaching or
    /// make honest ones take the host for gone. Returns what was restored; nothing for an
    /// attacher, which keeps no copies.
    pub fn restore_fixed(&self) -> Vec<&'static str> {
        let mut restored = Vec::new();
        for word in &self.fixed {
            // Only a value that differs is written back: a load first, so that an intact word
            // costs no write to a line the peers read.
            let changed = if word.wide {
                let at = self.word64(word.offset);
                at.load(Ordering::Relaxed) != word.value
                    && at.swap(word.value, Ordering::AcqRel) != word.value
            } else {
                let (at, value) = (self.word32(word.offset), word.value as u32);
                at.load(Ordering::Relaxed) != value && at.swap(value, Ordering::AcqRel) != value
            };
            if changed && !restored.contains(&word.name) {
                restored.push(word.name);
            }
        }
        restored
    }

    /// The `AtomicU32` at `offset`, a word of the header or of the peer table: for an offset
    /// found once (see [`peer_field`](Self::peer_field)) and kept.
    #[cfg(not(loom))]
    pub(crate) fn word32(&self, offset: usize) -> &AtomicU32 {
        self.fixed_word(offset)
    }

    /// The `AtomicU64` at `offset`, as [`word32`](Self::word32).
    #[cfg(not(loom))]
    pub(crate) fn word64(&self, offset: usize) -> &AtomicU64 {
        self.fixed_word(offset)
    }

    /// The atomic at `offset`, a fixed word of the initial layout (the header, the peer table, a
    /// ring's header), which the mapping always covers: [`over`](Self::over), the only way a
    /// `Segment` of a mapping is made, checked that its length reached the initial size, and
    /// the length a mapping knows never shrinks. (A file truncated by another process of the
    /// same user afterwards faults on access, here as for every access to the mapping.) The hot paths look
    /// such words up for every frame, so this is a bounds check against the private layout and
    /// an addition, not a look at the mapping's length.
    ///
    /// # Panics
    /// When `offset` is misaligned for `T` or not inside the initial layout: a bug of this
    /// crate, whose offsets are the layout's constants.
    #[cfg(not(loom))]
    #[inline]
    fn fixed_word<T: hub_alloc::shared::SharedAtomic>(&self, offset: usize) -> &T {
        assert!(
            offset.is_multiple_of(align_of::<T>())
                && offset + size_of::<T>() <= self.layout.initial_size(),
            "a fixed word lies inside the initial layout"
        );
        let base = self.base.0.as_ptr();
        // SAFETY: `offset .. offset + size_of::<T>()` lies inside the initial layout (checked
        // above), which the mapping covers for the segment's life (checked by `over`, see
        // above) from `base`, the mapping's own base, and is aligned for `T` (the base is page
        // aligned); `T` is an atomic (`SharedAtomic`), which every process may access at once,
        // and no non-atomic reference to it exists (R4).
        unsafe { &*base.add(offset).cast::<T>() }
    }

    /// The host's state word.
    pub fn host_state(&self) -> &AtomicU32 {
        self.word32(pad::HOST_STATE)
    }

    /// The host's doorbell: rung when a peer attaches or leaves.
    pub fn host_bell(&self) -> &AtomicU32 {
        self.word32(pad::HOST_BELL)
    }

    /// How often a peer beats: a quarter of the hub's heartbeat timeout (R12), at least 1 ms.
    pub fn heartbeat_interval(&self) -> std::time::Duration {
        let ms = self.word32(pad::HEARTBEAT_MS).load(Ordering::Relaxed);
        std::time::Duration::from_millis(u64::from(ms.max(4)) / 4)
    }

    /// The host's process id.
    pub fn host_pid(&self) -> u32 {
        self.word32(pad::HOST_PID).load(Ordering::Relaxed)
    }

    /// The words of peer `peer`'s entry (`peer < max_peers`).
    pub fn peer(&self, peer: u16) -> PeerWords<'_> {
        let base = self.layout.peer_entry_offset(peer);
        use core::mem::offset_of;
        PeerWords {
            flags: self.word32(base + offset_of!(PeerEntry, flags)),
            epoch: self.word64(base + offset_of!(PeerEntry, epoch)),
            last_seen: self.word64(base + offset_of!(PeerEntry, last_seen)),
            send_bell: self.word32(base + offset_of!(PeerEntry, send_data_futex)),
            recv_bell: self.word32(base + offset_of!(PeerEntry, recv_data_futex)),
            pid: self.word32(base + pad::PEER_PID),
        }
    }

    /// The state of peer `peer`'s entry, read once: [`peer`](Self::peer)`(peer).state()` for
    /// the hot paths, which need only that word (`peer < max_peers`).
    pub fn peer_state(&self, peer: u16) -> PeerState {
        let flags = self.peer_word32(peer, core::mem::offset_of!(PeerEntry, flags));
        // Acquire, as `PeerWords::state`: what the transition published comes with it.
        PeerState::from_flags(flags.load(Ordering::Acquire))
    }

    /// The 32-bit word at `field` (an offset inside `PeerEntry`) of peer `peer`'s entry: one
    /// word, where [`peer`](Self::peer) would look up all six.
    pub fn peer_word32(&self, peer: u16, field: usize) -> &AtomicU32 {
        self.word32(self.peer_field(peer, field))
    }

    /// The offset in the segment of `field` (an offset inside `PeerEntry`) of peer `peer`'s
    /// entry (`peer < max_peers`), for [`word32`](Self::word32) and
    /// [`word64`](Self::word64): the hot paths find each word they use once, when their link is
    /// made, and keep its offset.
    pub fn peer_field(&self, peer: u16, field: usize) -> usize {
        self.layout.peer_entry_offset(peer) + field
    }

    /// A view of ring `index` of the ring region: peer `i`'s send ring is `2i`, its receive
    /// ring `2i + 1`. The view is valid while this segment lives.
    #[cfg(not(loom))]
    pub fn ring(&self, index: usize) -> Result<RawRing, RingError> {
        let offset = self.layout.ring_offset(index);
        let header = self
            .shared()
            .bytes_at(offset, self.layout.ring_size())
            .expect("every ring lies inside the validated layout")
            .cast::<DescRingHeader>();
        // SAFETY: the ring's header and its `ring_capacity` descriptors lie inside the mapping
        // (checked just above), which stays mapped while the Segment lives; callers keep the
        // Segment (an Arc) beside every view. The header was initialised by the creator (R1)
        // and validated (R2); only atomics touch it (R4).
        unsafe { RawRing::new(header, self.layout.ring_capacity) }
    }
}

/// The atomic words of one peer entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerWords<'a> {
    pub flags: &'a AtomicU32,
    pub epoch: &'a AtomicU64,
    pub last_seen: &'a AtomicU64,
    /// Rung by the peer after it pushes to its send ring; the host waits on it.
    pub send_bell: &'a AtomicU32,
    /// Rung by the host after it pushes to the peer's receive ring; the peer waits on it.
    pub recv_bell: &'a AtomicU32,
    pub pid: &'a AtomicU32,
}

/// Nanoseconds of `CLOCK_MONOTONIC`: the clock of `PeerEntry::last_seen`, the same in every
/// process of the machine (subtract a peer's `last_seen` from it for its heartbeat's age).
pub fn monotonic_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

impl PeerWords<'_> {
    /// The entry's state, read once.
    pub fn state(&self) -> PeerState {
        PeerState::from_flags(self.flags.load(Ordering::Acquire))
    }

    /// Move the entry from `from` to `to` if it is in `from` (R9); the state found otherwise.
    pub fn transition(&self, from: PeerState, to: PeerState) -> Result<(), PeerState> {
        self.flags
            .compare_exchange(
                from.flags(),
                to.flags(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(PeerState::from_flags)
    }
}
