//! `Snapshot`: a look at a live hub reports exactly what was done to it (from its file, from
//! the host, from a copy of its bytes); a copy of a hub's file that nobody holds is stale;
//! damage is named; a file or bytes that hold no hub are a typed error, never a panic.

mod common;

use std::mem::{offset_of, size_of};

use common::{TempFiles, class_of};
use hub_layout::{
    DescRingHeader, ExtentHeader, HubSlotMeta, INLINE_PAYLOAD_SLOT, MsgDescHot, PeerEntry,
    SegmentLayout, validate_segment,
};
use hub_transport::mapping::{MappingError, SegmentFile};
use hub_transport::{
    ClassSnapshot, Damage, FrameMeta, Host, HubConfig, HubLayoutError, Peer, PeerState,
    ProtocolVersion, RingDirection, Snapshot, SnapshotError,
};
use proptest::prelude::*;

/// The snapshot's counts of the class a payload of `len` bytes takes.
fn class(snapshot: &Snapshot, len: usize) -> ClassSnapshot {
    snapshot.classes[class_of(len).expect("a slot payload")]
}

#[test]
fn a_live_hub_is_reported_as_it_is() {
    let mut files = TempFiles::default();
    let path = files.path("snapshot-live");
    let host = Host::create(&HubConfig::new().max_peers(4).path(&path)).unwrap();
    let first = Peer::attach(&host.add_peer().unwrap()).unwrap();
    let second = Peer::attach(&host.add_peer().unwrap()).unwrap();
    let reserved = host.add_peer().unwrap();
    let meta = |msg_id| FrameMeta {
        msg_id,
        ..FrameMeta::default()
    };
    // Three frames of 4 KiB to the host, which receives and drops one: two in flight. The host
    // allocates in the class too (a loan of 4 KiB), so it keeps the slot it freed for its own
    // next alloc; one alloc, one keep: the loan it then drops goes back on the list.
    let own = host.loan(4096).unwrap();
    for i in 0..3 {
        first.send(meta(i), &[1u8; 4096]).unwrap();
    }
    drop(host.recv().unwrap());
    drop(own);
    // Two frames of 100 KiB to the second peer, not received; a 1 MiB loan being filled.
    for i in 0..2 {
        host.send(second.id(), meta(i), &vec![2u8; 100 << 10])
            .unwrap();
    }
    let loan = second.loan(1 << 20).unwrap();
    // Two inline frames to the first peer, which takes one: its tail passes the head (an
    // inline frame publishes itself by its stamp, and the head is not stored for it), no
    // damage, one in flight.
    for i in 0..2 {
        host.send(first.id(), meta(i), b"hi").unwrap();
    }
    drop(first.recv().unwrap());
    // Both peers beat at once on attach; the heartbeat's age is below the timeout.

    let snapshot = Snapshot::read(&path).unwrap();
    assert_eq!(snapshot.path.as_deref(), Some(path.as_path()));
    assert_eq!(snapshot.stale, Some(false));
    assert_eq!(snapshot.version, ProtocolVersion::CURRENT);
    assert_eq!(snapshot.version.to_string(), "1.0");
    assert_eq!(
        (snapshot.max_peers, snapshot.ring_capacity),
        (4, HubConfig::new().ring_capacity)
    );
    assert_eq!(snapshot.host_pid, std::process::id());
    assert!(!snapshot.host_left);
    assert!(snapshot.mapped_len >= snapshot.current_size);
    assert!(snapshot.resident.is_some());
    assert!(snapshot.damage.is_empty(), "{:?}", snapshot.damage);

    // Peers: what each did, and the host's own view of the entries.
    let states: Vec<_> = snapshot.peers.iter().map(|p| p.state).collect();
    assert_eq!(
        states,
        [
            PeerState::Active,
            PeerState::Active,
            PeerState::Reserved,
            PeerState::Empty
        ]
    );
    let depths: Vec<_> = snapshot
        .peers
        .iter()
        .map(|p| (p.id, p.to_host, p.to_peer))
        .collect();
    assert_eq!(depths, [(0, 2, 1), (1, 0, 2), (2, 0, 0), (3, 0, 0)]);
    for (seen, info) in snapshot.peers.iter().zip(host.peers()) {
        assert_eq!((seen.pid, seen.epoch), (info.pid, info.epoch), "{seen:?}");
    }
    assert_eq!(snapshot.peers[0].pid, std::process::id());
    assert_eq!(
        snapshot.peers[2].pid, 0,
        "nobody attached with the reservation"
    );
    let timeout = HubConfig::new().heartbeat_timeout.as_nanos() as u64;
    for peer in &snapshot.peers[..2] {
        let age = peer.heartbeat_age_ns.expect("an attached peer beat");
        assert!(age < timeout, "{peer:?}");
    }
    assert_eq!(snapshot.peers[2].heartbeat_age_ns, None);

    // Slots: the frames in flight, the kept one, the loan; every other slot free.
    let small = class(&snapshot, 4096);
    assert_eq!(
        (small.in_flight, small.kept, small.allocated),
        (2, 1, 0),
        "{small:?}"
    );
    assert_eq!(small.free, small.total - 2);
    let medium = class(&snapshot, 100 << 10);
    assert_eq!((medium.in_flight, medium.kept, medium.allocated), (2, 0, 0));
    let large = class(&snapshot, 1 << 20);
    assert_eq!((large.in_flight, large.kept, large.allocated), (0, 0, 1));
    let busy = [4096, 100 << 10, 1 << 20].map(|len| class_of(len).unwrap());
    for c in &snapshot.classes {
        assert_eq!(c.free + c.allocated + c.in_flight + c.corrupt, c.total);
        assert_eq!(c.corrupt, 0);
        if !busy.contains(&usize::from(c.class)) {
            assert_eq!((c.free, c.kept), (c.total, 0), "{c:?}");
        }
    }
    // The allocator's own counts, with its private ledger, agree.
    for (seen, stats) in snapshot.classes.iter().zip(host.stats()) {
        assert_eq!(
            (
                seen.slot_size,
                seen.extents,
                seen.total,
                seen.free,
                seen.kept,
                seen.allocated,
                seen.in_flight
            ),
            (
                stats.slot_size,
                stats.extents,
                stats.total,
                stats.free,
                stats.kept,
                stats.allocated,
                stats.in_flight
            )
        );
    }

    // The host's look through its own mapping, and a look at a copy of the bytes.
    let from_host = host.snapshot().unwrap();
    assert_eq!(from_host.classes, snapshot.classes);
    assert_eq!(from_host.path, snapshot.path);
    assert_eq!(from_host.stale, Some(false));
    let without_ages = |s: &Snapshot| {
        s.peers
            .iter()
            .map(|p| (p.id, p.state, p.pid, p.epoch, p.to_host, p.to_peer))
            .collect::<Vec<_>>()
    };
    assert_eq!(without_ages(&from_host), without_ages(&snapshot));
    let bytes = std::fs::read(&path).unwrap();
    let copied = Snapshot::from_bytes(&bytes).unwrap();
    assert_eq!(copied.classes, snapshot.classes);
    assert_eq!(without_ages(&copied), without_ages(&snapshot));
    assert_eq!(
        (copied.stale, copied.path, copied.resident),
        (None, None, None)
    );

    // What changes shows in the next snapshot: the loan sent, the reservation withdrawn.
    second.send_loan(meta(9), loan).unwrap();
    host.withdraw(reserved.peer_id()).unwrap();
    let after = host.snapshot().unwrap();
    assert_eq!(after.peers[1].to_host, 1);
    assert_eq!(after.peers[2].state, PeerState::Empty);
    let large = class(&after, 1 << 20);
    assert_eq!((large.in_flight, large.allocated), (1, 0));
}

#[test]
fn a_hub_file_nobody_holds_is_stale() {
    let mut files = TempFiles::default();
    let path = files.path("snapshot-held");
    let copy = files.path("snapshot-copy");
    let host = Host::create(&HubConfig::new().max_peers(1).path(&path)).unwrap();
    let _peer = Peer::attach(&host.add_peer().unwrap()).unwrap();
    // A copy of a finished hub whose lock no process holds: what a killed host leaves (the
    // examples' CLI test kills a real one).
    std::fs::copy(&path, &copy).unwrap();
    assert!(SegmentFile::is_stale_at(&copy).unwrap());
    let stale = Snapshot::read(&copy).unwrap();
    assert_eq!(stale.stale, Some(true));
    assert_eq!(stale.peers[0].state, PeerState::Active);
    assert_eq!(Snapshot::read(&path).unwrap().stale, Some(false));
    drop(host);
    assert!(matches!(
        Snapshot::read(&path),
        Err(SnapshotError::Mapping(MappingError::OpenFailed { .. }))
    ));
}

/// A copy of a hub's bytes (one attached peer) and its layout, and the offset of class 0's
/// first extent: the words a faulty participant may scribble on.
fn hub_bytes() -> (Vec<u8>, SegmentLayout, u64) {
    let mut files = TempFiles::default();
    let path = files.path("snapshot-bytes");
    let host = Host::create(&HubConfig::new().max_peers(2).path(&path)).unwrap();
    let _peer = Peer::attach(&host.add_peer().unwrap()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let validated = validate_segment(&bytes[..]).unwrap();
    (bytes, validated.layout, validated.extent_offsets[0][0])
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

/// Counts at the end of their range, with the stamp of the last index in its slot: the
/// look past the tail for stamped descriptors stops there, never wraps (PROTOCOL.md §4).
#[test]
fn a_tail_at_the_end_of_the_counts_is_no_panic() {
    let (mut bytes, layout, _) = hub_bytes();
    let ring = layout.recv_ring_offset(0);
    put_u64(
        &mut bytes,
        ring + offset_of!(DescRingHeader, tail),
        u64::MAX,
    );
    // The stamp of index u64::MAX: the inline mark, generation (u64::MAX + 1) mod 2^32 = 0.
    let last = ring
        + size_of::<DescRingHeader>()
        + (layout.ring_capacity as usize - 1) * size_of::<MsgDescHot>();
    put_u32(
        &mut bytes,
        last + offset_of!(MsgDescHot, payload_slot),
        INLINE_PAYLOAD_SLOT,
    );
    put_u32(
        &mut bytes,
        last + offset_of!(MsgDescHot, payload_generation),
        0,
    );
    let snapshot = Snapshot::from_bytes(&bytes).unwrap();
    assert!(snapshot.damage.is_empty(), "{:?}", snapshot.damage);
    assert_eq!(snapshot.peers[0].to_peer, 1);
}

#[test]
fn damage_is_named() {
    let (mut bytes, layout, extent) = hub_bytes();
    assert!(Snapshot::from_bytes(&bytes).unwrap().damage.is_empty());
    // Peer 1's flags, two slot states of class 0, peer 0's to-peer ring's head.
    put_u32(
        &mut bytes,
        layout.peer_entry_offset(1) + offset_of!(PeerEntry, flags),
        0xdead,
    );
    let meta = |slot: usize| {
        extent as usize
            + size_of::<ExtentHeader>()
            + slot * size_of::<HubSlotMeta>()
            + offset_of!(HubSlotMeta, state)
    };
    put_u32(&mut bytes, meta(3), 7);
    put_u32(&mut bytes, meta(5), u32::MAX);
    let too_far = u64::from(layout.ring_capacity) + 1;
    put_u64(
        &mut bytes,
        layout.recv_ring_offset(0) + offset_of!(DescRingHeader, visible_head),
        too_far,
    );
    let snapshot = Snapshot::from_bytes(&bytes).unwrap();
    assert_eq!(
        snapshot.damage,
        [
            Damage::RingIndices {
                peer: 0,
                ring: RingDirection::ToPeer,
                head: too_far,
                tail: 0
            },
            Damage::PeerFlags {
                peer: 1,
                flags: 0xdead
            },
            Damage::SlotStates { class: 0, count: 2 },
        ]
    );
    assert_eq!(snapshot.peers[1].state, PeerState::Invalid(0xdead));
    assert_eq!(snapshot.peers[0].to_peer, 0);
    assert_eq!(snapshot.classes[0].corrupt, 2);
    assert_eq!(snapshot.classes[0].free, snapshot.classes[0].total - 2);
    assert_eq!(
        snapshot.damage[2].to_string(),
        "2 slots of class 0 have a state word that is no state"
    );
}

#[test]
fn files_that_hold_no_hub_are_typed_errors() {
    let mut files = TempFiles::default();
    let missing = files.path("snapshot-missing");
    assert!(matches!(
        Snapshot::read(&missing),
        Err(SnapshotError::Mapping(MappingError::OpenFailed { .. }))
    ));
    assert!(matches!(
        Snapshot::read(std::env::temp_dir()),
        Err(SnapshotError::Mapping(_))
    ));
    let garbage = files.path("snapshot-garbage");
    for (content, what) in [
        (Vec::new(), "empty"),
        (vec![0u8; 100], "short"),
        (vec![0u8; 1 << 20], "zeros"),
        ((0..1 << 20).map(|i| (i * 7 + 3) as u8).collect(), "noise"),
    ] {
        std::fs::write(&garbage, &content).unwrap();
        match Snapshot::read(&garbage) {
            Err(SnapshotError::Layout(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    std::fs::write(&garbage, vec![0u8; 100]).unwrap();
    let error = Snapshot::read(&garbage).unwrap_err();
    assert!(matches!(
        error,
        SnapshotError::Layout(HubLayoutError::HubTooSmall { .. })
    ));
    assert!(
        error.to_string().starts_with("not a valid hub: "),
        "{error}"
    );
    // A real hub cut short.
    let (bytes, layout, _) = hub_bytes();
    std::fs::write(&garbage, &bytes[..layout.initial_size() / 2]).unwrap();
    assert!(matches!(
        Snapshot::read(&garbage),
        Err(SnapshotError::Layout(HubLayoutError::HubTooSmall { .. }))
    ));
}

/// A snapshot that was taken holds together, whatever the bytes were.
fn check_consistent(snapshot: &Snapshot) {
    assert_eq!(snapshot.peers.len(), usize::from(snapshot.max_peers));
    assert_eq!(snapshot.classes.len(), hub_layout::NUM_SIZE_CLASSES);
    for c in &snapshot.classes {
        assert_eq!(c.free + c.allocated + c.in_flight + c.corrupt, c.total);
        assert!(c.kept <= c.free);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_are_an_error_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..8192),
        magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&hub_layout::HUB_MAGIC);
        }
        if let Ok(snapshot) = Snapshot::from_bytes(&bytes) {
            check_consistent(&snapshot);
        }
    }

    #[test]
    fn a_scribbled_or_truncated_hub_never_panics(
        cut in 0.0f64..=1.0,
        scribbles in proptest::collection::vec((0.0f64..1.0, any::<u64>()), 0..16),
    ) {
        HUB.with_borrow_mut(|(bytes, layout, _)| {
            // Scribbles land in the first part of the hub, where every structure but the
            // slots' bytes lies; they are undone afterwards (the hub is 100 MiB: no copy).
            let hot = layout.initial_size().min(bytes.len()) - 8;
            let mut undo = Vec::new();
            for (at, value) in scribbles {
                let at = ((at * hot as f64) as usize) & !7;
                undo.push((at, u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())));
                put_u64(bytes, at, value);
            }
            let cut = (cut * bytes.len() as f64) as usize;
            let result = Snapshot::from_bytes(&bytes[..cut]);
            for (at, value) in undo.into_iter().rev() {
                put_u64(bytes, at, value);
            }
            if let Ok(snapshot) = result {
                check_consistent(&snapshot);
            }
        });
    }
}

thread_local! {
    static HUB: std::cell::RefCell<(Vec<u8>, SegmentLayout, u64)> =
        std::cell::RefCell::new(hub_bytes());
}
