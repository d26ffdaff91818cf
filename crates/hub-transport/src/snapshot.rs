//! [`Snapshot`]: a read-only look at a hub as a value. Every way of taking one runs the same
//! code over [`SegmentBytes`], which hands out copies (atomic loads for a live mapping).

use std::fmt;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

use hub_layout::{
    DescRingHeader, ExtentHeader, HUB_PROTOCOL_VERSION, HUB_SIZE_CLASSES, HubLayoutError,
    HubSlotMeta, KEPT_SLOT_MARK, MAX_EXTENTS_PER_CLASS, MsgDescHot, NUM_SIZE_CLASSES, PeerEntry,
    SegmentBytes, SlotState, ValidatedSegment, validate_segment,
};

use crate::Host;
use crate::mapping::{Access, MappingError, ReadOnlyMapping, SegmentFile};
use crate::ring::{published_depth, stamp_word};
use crate::segment::{HOST_GONE, PeerState, monotonic_ns, pad};

/// Smallest mapping made of a file: a file too short for a header is then reported by
/// validation ([`HubLayoutError::HubTooSmall`]) rather than as an empty mapping.
const MIN_MAPPING: usize = 4096;

/// A hub's protocol version, as its header states it: `major.minor`.
///
/// ```
/// use hub_transport::ProtocolVersion;
/// assert_eq!(ProtocolVersion::CURRENT.to_string(), "1.0");
/// assert_eq!(ProtocolVersion::from_word(2 << 16 | 3), ProtocolVersion { major: 2, minor: 3 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    /// Hubs of another major version are not compatible (a peer refuses to attach).
    pub major: u16,
    /// Minor versions of one major version are compatible.
    pub minor: u16,
}

impl ProtocolVersion {
    /// The version this crate builds and attaches to (`hub_layout::HUB_PROTOCOL_VERSION`).
    pub const CURRENT: Self = Self::from_word(HUB_PROTOCOL_VERSION);

    /// The version a header's `version` word encodes: the major in its high 16 bits, the minor
    /// in its low 16.
    pub const fn from_word(word: u32) -> Self {
        Self {
            major: (word >> 16) as u16,
            minor: word as u16,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// As its [`Display`](fmt::Display): the string `"1.0"`.
#[cfg(feature = "serde")]
impl serde::Serialize for ProtocolVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be opened, inspected or mapped (the error names the path).
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The bytes are no valid hub: not a hub at all, another major version, truncated,
    /// inconsistent, or half-built (R1, R2).
    #[error("not a valid hub: {0}")]
    Layout(#[from] HubLayoutError),
    /// A word the validated layout promises lies outside the bytes.
    #[error("the segment ends before offset {offset}")]
    Truncated {
        /// Where the word that could not be read starts (`usize::MAX` when even its offset
        /// was out of range).
        offset: usize,
    },
}

/// A look at a whole hub at one moment, or nearly: a hub keeps moving while it is read, so the
/// counts of a busy hub are those of several moments and may not add up exactly.
///
/// A snapshot is taken from the file of a named hub ([`Snapshot::read`]), from a private copy
/// of a hub's bytes ([`Snapshot::from_bytes`]), or by the host of a live hub
/// ([`Host::snapshot`]). Each way validates the segment as a peer does on attach (R2) before it
/// reads anything else, then copies each word it reports out once, bounds-checked (R3): a
/// reader never makes a reference to memory another process can write, never writes, and
/// gets a typed error, never a panic, from bytes that hold no hub.
///
/// ```
/// use hub_transport::{FrameMeta, Host, HubConfig, Peer, PeerState, Snapshot};
///
/// let path = std::env::temp_dir().join(format!("hub-snapshot-doc-{}", std::process::id()));
/// let host = Host::create(&HubConfig::new().max_peers(2).path(&path))?;
/// let peer = Peer::attach(&host.add_peer()?)?;
/// peer.send(FrameMeta::default(), &[7u8; 4096])?; // a frame in the ring, its slot in flight
///
/// // Any process that can read the file, with no part in the hub:
/// let snapshot = Snapshot::read(&path)?;
/// assert_eq!(snapshot.version.to_string(), "1.0");
/// assert_eq!(snapshot.stale, Some(false)); // its creator holds it
/// assert_eq!(snapshot.peers[0].state, PeerState::Active);
/// assert_eq!(snapshot.peers[0].to_host, 1);
/// assert_eq!(snapshot.classes.iter().map(|c| c.in_flight).sum::<u32>(), 1);
/// assert!(snapshot.damage.is_empty());
///
/// // The host's own look, through its mapping: the same counts.
/// assert_eq!(host.snapshot()?.classes, snapshot.classes);
/// # drop(peer);
/// # drop(host);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// The hub's file, for a snapshot read from a path or of a named host's hub.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_path"))]
    pub path: Option<PathBuf>,
    /// Whether the hub is *stale*: its creator is gone and nobody holds its lock (see
    /// [`SegmentFile::is_stale_at`]); `Host::create` with
    /// [`take_over_stale`](crate::HubConfig::take_over_stale) replaces such a file. `None` when it
    /// cannot be known (a snapshot of bytes).
    pub stale: Option<bool>,
    /// The protocol version in the header (its major version is this crate's: validation
    /// refuses any other).
    pub version: ProtocolVersion,
    /// Peer entries in the hub.
    pub max_peers: u16,
    /// Descriptors per ring.
    pub ring_capacity: u32,
    /// The segment's size as its header says (it grows with the allocator's extents).
    pub current_size: u64,
    /// Bytes of the segment that were readable.
    pub mapped_len: u64,
    /// Bytes of memory the file occupies (a sparse segment's are far fewer than its length),
    /// when known.
    pub resident: Option<u64>,
    /// The host's process id, as the header says.
    pub host_pid: u32,
    /// The host said goodbye (its state word says gone).
    pub host_left: bool,
    /// Every peer entry, by id.
    pub peers: Vec<PeerSnapshot>,
    /// Every size class of the allocator, smallest slots first.
    pub classes: Vec<ClassSnapshot>,
    /// What was read that no healthy hub holds: scribbles of a faulty participant, or (rarely)
    /// a word caught in the middle of a recovery. Empty for a healthy hub.
    pub damage: Vec<Damage>,
}

/// A peer entry, as a [`Snapshot`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PeerSnapshot {
    /// The peer id (the entry's index).
    pub id: u16,
    /// The entry's state; in serialized form, its text (`"active"`).
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_display"))]
    pub state: PeerState,
    /// The process id the peer recorded when it attached; 0 when none did.
    pub pid: u32,
    /// The entry's epoch: how many lives the id has had.
    pub epoch: u64,
    /// Nanoseconds since the peer's last heartbeat, when it ever beat.
    pub heartbeat_age_ns: Option<u64>,
    /// Frames the peer sent that the host has not received yet.
    pub to_host: u64,
    /// Frames the host sent that the peer has not received yet.
    pub to_peer: u64,
}

/// A size class of the allocator, as a [`Snapshot`] counted it from its slots' states.
///
/// `free + allocated + in_flight + corrupt == total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClassSnapshot {
    /// The class number.
    pub class: u16,
    /// Bytes per slot.
    pub slot_size: u32,
    /// Published extents.
    pub extents: u32,
    /// Slots in the published extents.
    pub total: u32,
    /// Slots free for any participant, and the [kept](Self::kept) ones.
    pub free: u32,
    /// Of [`free`](Self::free), the slots a participant freed and keeps for its own next
    /// allocation (see [`ClassStats::kept`](crate::ClassStats::kept)): Allocated in shared
    /// memory and marked kept there.
    pub kept: u32,
    /// Slots a participant allocated (a loan being filled), but for the kept ones.
    pub allocated: u32,
    /// Slots sent and not yet freed by their receiver.
    pub in_flight: u32,
    /// Slots whose state word is no state (see [`Damage::SlotStates`]).
    pub corrupt: u32,
}

/// Which of a peer's two rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum RingDirection {
    /// The peer's send ring: the peer produces, the host consumes.
    ToHost,
    /// The peer's receive ring: the host produces, the peer consumes.
    ToPeer,
}

/// Something a [`Snapshot`] read that no healthy hub holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Damage {
    /// A peer entry's flags word encodes no state ([`PeerState::Invalid`]).
    PeerFlags {
        /// The peer id.
        peer: u16,
        /// The word.
        flags: u32,
    },
    /// A ring's published count is more than its capacity past its consumed count (a healthy
    /// ring never shows it, but one being reset by a recovery may). Its depth is reported as 0.
    /// (A consumed count past the published one is no damage: the consumer took inline
    /// descriptors published by their stamps, PROTOCOL.md §4.)
    RingIndices {
        /// The peer id.
        peer: u16,
        /// Which of its rings.
        ring: RingDirection,
        /// Descriptors published, as read.
        head: u64,
        /// Descriptors consumed, as read.
        tail: u64,
    },
    /// Slots of a class whose state word is no state.
    SlotStates {
        /// The class number.
        class: u16,
        /// How many.
        count: u32,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Damage::PeerFlags { peer, flags } => {
                write!(f, "peer {peer}'s flags word {flags:#x} is no state")
            }
            Damage::RingIndices {
                peer,
                ring,
                head,
                tail,
            } => {
                let ring = match ring {
                    RingDirection::ToHost => "to-host",
                    RingDirection::ToPeer => "to-peer",
                };
                write!(
                    f,
                    "peer {peer}'s {ring} ring has {head} published descriptors, \
                     more than its capacity past the {tail} consumed"
                )
            }
            Damage::SlotStates { class, count } => {
                write!(
                    f,
                    "{count} slots of class {class} have a state word that is no state"
                )
            }
        }
    }
}

impl Snapshot {
    /// A snapshot of the named hub at `path` (a host created it with
    /// [`HubConfig::path`](crate::HubConfig::path)): the file is opened read-only and mapped readable only, so the
    /// reader never writes; it takes no peer entry and the host does not see it. Also tells
    /// whether the hub is [stale](Self::stale).
    ///
    /// A hub that grows while it is read (an extent published past the length first mapped)
    /// is mapped again and read again.
    ///
    /// # Errors
    /// [`SnapshotError::Mapping`] when the file cannot be opened or mapped (no such file, not
    /// a regular file); [`SnapshotError::Layout`] when it holds no valid hub;
    /// [`SnapshotError::Truncated`].
    pub fn read(path: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let path = path.as_ref();
        let file = SegmentFile::open_path(path, Access::ReadOnly)?;
        // A class's growth extends the file before it publishes the extent's offset (R8): an
        // offset past what was mapped, with a longer file now, is growth seen half-way. Each
        // retry needs the file to have grown, and growth is bounded; so is the count.
        let mut retries = NUM_SIZE_CLASSES * MAX_EXTENTS_PER_CLASS;
        let (view, validated) = loop {
            let len = file.len()?;
            let reservation = usize::try_from(len).unwrap_or(usize::MAX).max(MIN_MAPPING);
            let view = ReadOnlyMapping::new(file.try_clone()?, reservation)?;
            match validate_segment(&view) {
                Err(HubLayoutError::BadExtentOffset { .. }) if retries > 0 && file.len()? > len => {
                    retries -= 1;
                }
                result => break (view, result?),
            }
        };
        let mut snapshot = collect(&view, &validated)?;
        snapshot.path = Some(path.to_path_buf());
        snapshot.resident = file.info().ok().map(|info| info.allocated);
        // The creator holds the hub's lock for as long as it lives (R12); the file holds a
        // finished hub (validation checked its magic), so a lock nobody holds means stale.
        snapshot.stale = Some(!file.holder_probe()?.is_held());
        Ok(snapshot)
    }

    /// A snapshot of a private copy of a hub's bytes (a file read into memory, a test's
    /// bytes). Never panics and never reads outside `bytes`, whatever they hold.
    /// [`stale`](Self::stale) and [`resident`](Self::resident) are `None`, and heartbeat ages
    /// are measured against this process's monotonic clock.
    ///
    /// ```
    /// use hub_transport::{Snapshot, SnapshotError};
    /// assert!(matches!(Snapshot::from_bytes(&[0u8; 100]), Err(SnapshotError::Layout(_))));
    /// ```
    ///
    /// # Errors
    /// [`SnapshotError::Layout`] when the bytes hold no valid hub; [`SnapshotError::Truncated`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let validated = validate_segment(bytes)?;
        collect(bytes, &validated)
    }
}

impl Host {
    /// A [`Snapshot`] of this hub, read through the host's own mapping as any reader would
    /// read the file: no lock is taken and nothing is written. [`stale`](Snapshot::stale) is
    /// `Some(false)` (the host is alive).
    ///
    /// ```
    /// use hub_transport::{Host, HubConfig, PeerState};
    /// let host = Host::create(&HubConfig::new().max_peers(2))?;
    /// let _ticket = host.add_peer()?;
    /// let snapshot = host.snapshot()?;
    /// assert_eq!(snapshot.peers[0].state, PeerState::Reserved);
    /// assert_eq!(snapshot.host_pid, std::process::id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Only when another process scribbled over the segment's fixed words so that it no
    /// longer validates ([`SnapshotError::Layout`]).
    pub fn snapshot(&self) -> Result<Snapshot, SnapshotError> {
        let mapping = self.segment_mapping();
        let validated = validate_segment(&**mapping)?;
        let mut snapshot = collect(&**mapping, &validated)?;
        snapshot.path = self.path().map(Path::to_path_buf);
        snapshot.resident = mapping.file().info().ok().map(|info| info.allocated);
        snapshot.stale = Some(false);
        Ok(snapshot)
    }
}

/// Everything but what only a file tells (path, residency, staleness).
fn collect<S: SegmentBytes + ?Sized>(
    bytes: &S,
    validated: &ValidatedSegment,
) -> Result<Snapshot, SnapshotError> {
    let header = &validated.header;
    let now = monotonic_ns();
    let mut damage = Vec::new();
    let peers = (0..validated.layout.max_peers)
        .map(|id| peer(bytes, validated, id, now, &mut damage))
        .collect::<Result<Vec<_>, _>>()?;
    let classes = (0..HUB_SIZE_CLASSES.len())
        .map(|class| class_counts(bytes, validated, class, &mut damage))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Snapshot {
        path: None,
        stale: None,
        version: ProtocolVersion::from_word(header.version),
        max_peers: header.max_peers,
        ring_capacity: header.ring_capacity,
        current_size: header.current_size,
        mapped_len: bytes.len() as u64,
        resident: None,
        host_pid: read_u32(bytes, 0, pad::HOST_PID)?,
        host_left: read_u32(bytes, 0, pad::HOST_STATE)? == HOST_GONE,
        peers,
        classes,
        damage,
    })
}

/// The `u32` at `base + field`.
fn read_u32<S: SegmentBytes + ?Sized>(
    bytes: &S,
    base: usize,
    field: usize,
) -> Result<u32, SnapshotError> {
    let offset = base.saturating_add(field);
    bytes
        .read_u32(offset)
        .ok_or(SnapshotError::Truncated { offset })
}

/// The `u64` at `base + field`.
fn read_u64<S: SegmentBytes + ?Sized>(
    bytes: &S,
    base: usize,
    field: usize,
) -> Result<u64, SnapshotError> {
    let offset = base.saturating_add(field);
    bytes
        .read_u64(offset)
        .ok_or(SnapshotError::Truncated { offset })
}

fn peer<S: SegmentBytes + ?Sized>(
    bytes: &S,
    validated: &ValidatedSegment,
    id: u16,
    now: u64,
    damage: &mut Vec<Damage>,
) -> Result<PeerSnapshot, SnapshotError> {
    let layout = &validated.layout;
    let entry = layout.peer_entry_offset(id);
    let state = PeerState::from_flags(read_u32(bytes, entry, offset_of!(PeerEntry, flags))?);
    if let PeerState::Invalid(flags) = state {
        damage.push(Damage::PeerFlags { peer: id, flags });
    }
    let last_seen = read_u64(bytes, entry, offset_of!(PeerEntry, last_seen))?;
    let capacity = u64::from(layout.ring_capacity);
    let mut depth = |ring: usize, direction: RingDirection| -> Result<u64, SnapshotError> {
        // The tail first: both only grow (but in a reset).
        let tail = read_u64(bytes, ring, offset_of!(DescRingHeader, tail))?;
        let head = read_u64(bytes, ring, offset_of!(DescRingHeader, visible_head))?;
        // The inline descriptors published by their stamps count too (PROTOCOL.md §4).
        let stamp = |index: u64| -> Result<bool, SnapshotError> {
            let slot = size_of::<DescRingHeader>() as u64
                + (index & (capacity - 1)) * size_of::<MsgDescHot>() as u64;
            let word = read_u64(
                bytes,
                ring,
                slot as usize + offset_of!(MsgDescHot, payload_slot),
            )?;
            Ok(word == stamp_word(index))
        };
        Ok(
            published_depth(head, tail, layout.ring_capacity, stamp)?.unwrap_or_else(|| {
                damage.push(Damage::RingIndices {
                    peer: id,
                    ring: direction,
                    head,
                    tail,
                });
                0
            }),
        )
    };
    let to_host = depth(layout.send_ring_offset(id), RingDirection::ToHost)?;
    let to_peer = depth(layout.recv_ring_offset(id), RingDirection::ToPeer)?;
    Ok(PeerSnapshot {
        id,
        state,
        pid: read_u32(bytes, entry, pad::PEER_PID)?,
        epoch: read_u64(bytes, entry, offset_of!(PeerEntry, epoch))?,
        heartbeat_age_ns: (last_seen != 0).then(|| now.saturating_sub(last_seen)),
        to_host,
        to_peer,
    })
}

fn class_counts<S: SegmentBytes + ?Sized>(
    bytes: &S,
    validated: &ValidatedSegment,
    class: usize,
    damage: &mut Vec<Damage>,
) -> Result<ClassSnapshot, SnapshotError> {
    let slots = validated.layout.slots_per_extent(class) as usize;
    let mut counts = ClassSnapshot {
        class: class as u16,
        slot_size: HUB_SIZE_CLASSES[class].0,
        extents: 0,
        total: 0,
        free: 0,
        kept: 0,
        allocated: 0,
        in_flight: 0,
        corrupt: 0,
    };
    for &extent in validated.extent_offsets[class]
        .iter()
        .filter(|&&at| at != 0)
    {
        // Validation checked the offset lies inside the bytes, so it fits a usize.
        let extent =
            usize::try_from(extent).map_err(|_| SnapshotError::Truncated { offset: usize::MAX })?;
        counts.extents += 1;
        let metas = extent.saturating_add(size_of::<ExtentHeader>());
        for slot in 0..slots {
            let meta = metas.saturating_add(slot.saturating_mul(size_of::<HubSlotMeta>()));
            counts.total += 1;
            match SlotState::from_u32(read_u32(bytes, meta, offset_of!(HubSlotMeta, state))?) {
                Some(SlotState::Free) => counts.free += 1,
                // Kept by its owner: as free as a listed slot. The mark is the owner's hint,
                // which it clears when it takes the slot again.
                Some(SlotState::Allocated)
                    if read_u32(bytes, meta, offset_of!(HubSlotMeta, next_free))?
                        == KEPT_SLOT_MARK =>
                {
                    counts.free += 1;
                    counts.kept += 1;
                }
                Some(SlotState::Allocated) => counts.allocated += 1,
                Some(SlotState::InFlight) => counts.in_flight += 1,
                None => counts.corrupt += 1,
            }
        }
    }
    if counts.corrupt > 0 {
        damage.push(Damage::SlotStates {
            class: class as u16,
            count: counts.corrupt,
        });
    }
    Ok(counts)
}

#[cfg(feature = "serde")]
fn serialize_path<S: serde::Serializer>(
    path: &Option<PathBuf>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    // Lossy rather than an error for a path that is no UTF-8.
    match path {
        Some(path) => serializer.collect_str(&path.display()),
        None => serializer.serialize_none(),
    }
}

#[cfg(feature = "serde")]
fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
