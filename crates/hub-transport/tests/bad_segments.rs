//! Attaching to files that are not (valid) hubs, and with tickets that cannot be used (R2, R9):
//! every case gets its own typed error and nothing panics.
//!
//! Valid hub bytes come from a real named hub (max_peers 2, ring_capacity 16), copied while its
//! host lives; each bad file is that copy with one thing changed. The copies keep the original's
//! holes (only the data ranges are read and written, found with `SEEK_DATA`/`SEEK_HOLE`), so a
//! 100 MiB layout costs a few hundred KiB of disk. An unchanged copy attaches: the copy is
//! faithful, and each error comes from the one change.

mod common;

use std::fs::File;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::TempFiles;
use hub_layout::{
    DescRingHeader, HUB_MAGIC, HUB_PROTOCOL_VERSION, HubHeader, HubLayoutError, PeerEntry,
    SegmentLayout, SizeClassHeader,
};
use hub_transport::mapping::MappingError;
use hub_transport::{AttachError, Host, HubConfig, Peer, PeerState, SpecSource, TicketSpec};

const MAX_PEERS: u16 = 2;
const RING_CAPACITY: u32 = 16;

/// The bytes of a (sparse) file: its length and its data ranges.
#[derive(Clone, Debug)]
struct Image {
    len: u64,
    chunks: Vec<(u64, Vec<u8>)>,
}

impl Image {
    fn of(path: &Path) -> Image {
        let (len, chunks) = common::sparse::data_ranges(path, 64 << 20).expect("a sparse copy");
        Image { len, chunks }
    }

    fn write(&self, path: &Path) {
        let file = File::create_new(path).expect("create");
        file.set_len(self.len).expect("set_len");
        for (at, bytes) in &self.chunks {
            let end = (*at + bytes.len() as u64).min(self.len);
            if *at < end {
                file.write_all_at(&bytes[..(end - at) as usize], *at)
                    .expect("write");
            }
        }
    }

    fn chunk(&mut self, at: u64, n: usize) -> &mut [u8] {
        let (start, bytes) = self
            .chunks
            .iter_mut()
            .find(|(start, bytes)| *start <= at && at + n as u64 <= *start + bytes.len() as u64)
            .unwrap_or_else(|| panic!("no data at {at}"));
        let from = (at - *start) as usize;
        &mut bytes[from..from + n]
    }

    fn patch(mut self, at: usize, bytes: &[u8]) -> Image {
        self.chunk(at as u64, bytes.len()).copy_from_slice(bytes);
        self
    }

    fn u64_at(&mut self, at: usize) -> u64 {
        u64::from_ne_bytes(self.chunk(at as u64, 8).try_into().unwrap())
    }

    fn truncated(mut self, len: u64) -> Image {
        self.len = len;
        self
    }
}

/// A live named hub, its bytes (with peer 0 reserved at epoch 1) and a place for copies.
struct Fixture {
    host: Host,
    image: Image,
    layout: SegmentLayout,
    files: TempFiles,
}

fn fixture() -> Fixture {
    let mut files = TempFiles::default();
    let path = files.path("hub");
    let host = Host::create(
        &HubConfig::new()
            .max_peers(MAX_PEERS)
            .ring_capacity(RING_CAPACITY)
            .path(path.clone()),
    )
    .expect("create");
    let ticket = host.add_peer().expect("add_peer");
    assert_eq!((ticket.peer_id(), ticket.epoch()), (0, 1));
    let image = Image::of(&path);
    Fixture {
        host,
        image,
        layout: SegmentLayout::new(MAX_PEERS, RING_CAPACITY).expect("layout"),
        files,
    }
}

impl Fixture {
    /// Write `image` to a new file and attach to it as peer 0, epoch 1.
    fn attach(&mut self, image: &Image) -> Result<Peer, AttachError> {
        let path = self.files.path("copy");
        image.write(&path);
        attach_path(path, 0, 1)
    }
}

fn attach_path(path: PathBuf, peer: u16, epoch: u64) -> Result<Peer, AttachError> {
    Peer::attach_spec(&TicketSpec {
        peer,
        epoch,
        source: SpecSource::Path(path),
        ready: None,
    })
}

#[track_caller]
fn layout_error(result: Result<Peer, AttachError>) -> HubLayoutError {
    match result {
        Err(AttachError::Layout(error)) => error,
        other => panic!("expected a layout error, got {other:?}"),
    }
}

#[test]
fn an_unchanged_copy_attaches() {
    let mut f = fixture();
    let image = f.image.clone();
    let peer = f.attach(&image).expect("the copy is a valid hub");
    assert_eq!(peer.id(), 0);
    assert_eq!(peer.host_pid(), std::process::id());
    // A newer minor version only adds fields in padding (R13): still accepted.
    let minor = f.image.clone().patch(
        offset_of!(HubHeader, version),
        &(HUB_PROTOCOL_VERSION + 3).to_ne_bytes(),
    );
    f.attach(&minor).expect("a newer minor version attaches");
    drop(f.host);
}

#[test]
fn random_bytes_are_not_a_hub() {
    let mut files = TempFiles::default();
    let mut bytes = vec![0u8; 64 << 10];
    common::pattern::fill(&mut bytes, 0xBAD);
    assert_ne!(&bytes[..8], &[0; 8]);
    assert_ne!(bytes[..8], HUB_MAGIC);
    let path = files.path("random");
    std::fs::write(&path, &bytes).expect("write");
    assert_eq!(
        layout_error(attach_path(path, 0, 1)),
        HubLayoutError::InvalidMagic
    );
    // A file shorter than a header is too small to say.
    let path = files.path("short");
    std::fs::write(&path, &bytes[..100]).expect("write");
    assert!(matches!(
        layout_error(attach_path(path, 0, 1)),
        HubLayoutError::HubTooSmall { found: 100, .. }
    ));
    // So is an empty one.
    let path = files.path("empty");
    std::fs::write(&path, b"").expect("write");
    match attach_path(path, 0, 1) {
        Err(AttachError::Layout(HubLayoutError::HubTooSmall { found: 0, .. }))
        | Err(AttachError::Mapping(_)) => {}
        other => panic!("expected HubTooSmall or a mapping error, got {other:?}"),
    }
}

#[test]
fn another_major_version_is_refused() {
    let mut f = fixture();
    let found = HUB_PROTOCOL_VERSION + (1 << 16);
    let image = f
        .image
        .clone()
        .patch(offset_of!(HubHeader, version), &found.to_ne_bytes());
    assert_eq!(
        layout_error(f.attach(&image)),
        HubLayoutError::IncompatibleVersion {
            expected: HUB_PROTOCOL_VERSION,
            found
        }
    );
    let image = f
        .image
        .clone()
        .patch(offset_of!(HubHeader, version), &0u32.to_ne_bytes());
    assert!(matches!(
        layout_error(f.attach(&image)),
        HubLayoutError::IncompatibleVersion { found: 0, .. }
    ));
}

#[test]
fn a_truncated_hub_is_too_small() {
    let mut f = fixture();
    let initial = f.layout.initial_size();
    for len in [
        initial - 4096,
        initial - 1,
        f.layout.offsets.extent_region,
        4096,
    ] {
        let image = f.image.clone().truncated(len as u64);
        assert_eq!(
            layout_error(f.attach(&image)),
            HubLayoutError::HubTooSmall {
                required: initial,
                found: len
            },
            "truncated to {len}"
        );
    }
}

#[test]
fn a_changed_offset_is_refused() {
    let mut f = fixture();
    let at = offset_of!(HubHeader, ring_region_offset);
    let expected = f.image.u64_at(at);
    assert_eq!(expected, f.layout.offsets.ring_region as u64);
    let image = f.image.clone().patch(at, &(expected + 64).to_ne_bytes());
    assert_eq!(
        layout_error(f.attach(&image)),
        HubLayoutError::OffsetMismatch {
            field: "ring_region_offset",
            expected,
            found: expected + 64
        }
    );
    // A peer entry's ring offset.
    let at = f.layout.peer_entry_offset(1) + offset_of!(PeerEntry, recv_ring_offset);
    let image = f.image.clone().patch(at, &u64::MAX.to_ne_bytes());
    assert_eq!(
        layout_error(f.attach(&image)),
        HubLayoutError::PeerRingMismatch {
            peer: 1,
            field: "recv_ring_offset",
            expected: f.layout.recv_ring_offset(1) as u64,
            found: u64::MAX
        }
    );
    // A ring's capacity.
    let at = f.layout.ring_offset(3) + offset_of!(DescRingHeader, capacity);
    let image = f.image.clone().patch(at, &1024u32.to_ne_bytes());
    assert_eq!(
        layout_error(f.attach(&image)),
        HubLayoutError::RingCapacityMismatch {
            ring: 3,
            expected: RING_CAPACITY,
            found: 1024
        }
    );
    // An extent offset outside the file.
    let at = f.layout.class_header_offset(2) + offset_of!(SizeClassHeader, extent_offsets) + 8;
    let image = f.image.clone().patch(at, &(1u64 << 40).to_ne_bytes());
    assert!(matches!(
        layout_error(f.attach(&image)),
        HubLayoutError::BadExtentOffset {
            class: 2,
            extent: 1,
            ..
        }
    ));
}

#[test]
fn a_half_built_hub_is_not_ready() {
    let mut f = fixture();
    let image = f.image.clone().patch(offset_of!(HubHeader, magic), &[0; 8]);
    assert_eq!(layout_error(f.attach(&image)), HubLayoutError::NotReady);
    // One wrong byte of the magic is no hub at all.
    let mut magic = HUB_MAGIC;
    magic[7] = b'!';
    let image = f.image.clone().patch(offset_of!(HubHeader, magic), &magic);
    assert_eq!(layout_error(f.attach(&image)), HubLayoutError::InvalidMagic);
}

#[test]
fn a_hub_whose_host_left_is_refused() {
    let mut f = fixture();
    // The host's state word (HubHeader padding, see hub-transport's segment module): 1 = gone.
    let image = f.image.clone().patch(80, &1u32.to_ne_bytes());
    assert!(matches!(f.attach(&image), Err(AttachError::HostGone)));
}

#[test]
fn files_that_cannot_be_opened() {
    let missing = common::temp_path("missing");
    assert!(matches!(
        attach_path(missing, 0, 1),
        Err(AttachError::Mapping(MappingError::OpenFailed { .. }))
    ));
    assert!(matches!(
        attach_path(std::env::temp_dir(), 0, 1),
        Err(AttachError::Mapping(_))
    ));
    for fd in [-1, i32::MAX] {
        let spec = TicketSpec {
            peer: 0,
            epoch: 1,
            source: SpecSource::Fd(fd),
            ready: None,
        };
        assert!(
            matches!(
                Peer::attach_spec(&spec),
                Err(AttachError::Mapping(MappingError::BadFd { .. }))
            ),
            "fd {fd}"
        );
    }
    assert!(matches!(
        TicketSpec::parse("peer=0,epoch=1,socket=3"),
        Err(AttachError::BadTicket(_))
    ));
}

#[test]
fn tickets_that_cannot_be_used() {
    let mut files = TempFiles::default();
    let path = files.path("hub");
    let host = Host::create(
        &HubConfig::new()
            .max_peers(MAX_PEERS)
            .ring_capacity(RING_CAPACITY)
            .path(path.clone()),
    )
    .expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let id = ticket.peer_id();
    let peer = Peer::attach(&ticket).expect("first attach");
    // The same ticket again: the entry is Active, not Reserved.
    match Peer::attach(&ticket) {
        Err(AttachError::NotReserved { peer, state }) => {
            assert_eq!((peer, state), (id, PeerState::Active));
        }
        other => panic!("expected NotReserved, got {other:?}"),
    }
    // By path too, as another process would.
    match attach_path(path.clone(), id, ticket.epoch()) {
        Err(AttachError::NotReserved { state, .. }) => assert_eq!(state, PeerState::Active),
        other => panic!("expected NotReserved, got {other:?}"),
    }
    // Peer ids beyond the hub's.
    for beyond in [MAX_PEERS, 31, 32, 1000, u16::MAX] {
        match attach_path(path.clone(), beyond, 1) {
            Err(AttachError::BadTicket(_)) => {}
            other => panic!("peer {beyond}: expected BadTicket, got {other:?}"),
        }
    }
    // An entry never reserved.
    let other_id = 1 - id;
    match attach_path(path.clone(), other_id, 0) {
        Err(AttachError::NotReserved { peer, state }) => {
            assert_eq!((peer, state), (other_id, PeerState::Empty));
        }
        other => panic!("expected NotReserved, got {other:?}"),
    }
    // A reserved entry, the wrong epoch.
    let second = host.add_peer().expect("add_peer");
    assert_eq!((second.peer_id(), second.epoch()), (other_id, 1));
    match attach_path(path.clone(), other_id, 7) {
        Err(AttachError::StaleTicket {
            peer,
            ticket,
            entry,
        }) => assert_eq!((peer, ticket, entry), (other_id, 7, 1)),
        other => panic!("expected StaleTicket, got {other:?}"),
    }
    // The failures left the reservation alone: the right ticket still attaches.
    let other = attach_path(path, other_id, 1).expect("attach");
    assert_eq!(host.peers()[usize::from(other_id)].state, PeerState::Active);
    // After a goodbye, the used ticket still cannot attach (the entry is Dying, or Empty once
    // the host's supervisor recovered it).
    drop(peer);
    match Peer::attach(&ticket) {
        Err(AttachError::NotReserved { state, .. }) => {
            assert!(
                matches!(state, PeerState::Dying | PeerState::Empty),
                "{state}"
            );
        }
        other => panic!("expected NotReserved, got {other:?}"),
    }
    drop(other);
}
