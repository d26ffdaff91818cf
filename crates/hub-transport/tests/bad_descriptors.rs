//! Bad descriptors (R3): a faulty sender is simulated by pushing crafted descriptors into a
//! peer's send ring through the public lower layer (the named segment mapped again, an allocator
//! handle owning as that peer, and a producer of ring `2 * peer`), while the attached `Peer` of
//! that id sends nothing. Each bad descriptor makes `host.try_recv()` return
//! `RecvError::BadDescriptor` naming the right peer and fault, never a panic; the host evicts
//! the faulty peer and its supervisor recovers the entry (R4, R10); a good peer's frames go
//! through after each; a slot that was in flight to the host under a bad descriptor is freed,
//! one the faulty peer still held is reclaimed with it. Good descriptors pushed the same way
//! are delivered, at any offset inside their slot.

mod common;

use std::sync::Arc;

use common::pattern::{checksum, expected, fill};
use common::{EventLog, TempFiles, WATCHDOG, assert_all_free, meta};
use hub_alloc::{OwnerId, Slab, SlabLayout, SlotHandle};
use hub_layout::{
    DescRingHeader, INLINE_PAYLOAD_SLOT, MsgDescHot, NO_OWNER, SegmentLayout, SlotState,
    encode_slot_ref,
};
use hub_transport::mapping::{Access, SegmentFile, SegmentMapping};
use hub_transport::ring::{Producer, RawRing};
use hub_transport::{
    DescriptorFault, Disconnect, EvictReason, Frame, Host, HubConfig, Peer, PeerEvent, Recovery,
    RecvError, SendCopyError, TryRecvError,
};

const MAX_PEERS: u16 = 3;
const RING_CAPACITY: u32 = 16;

/// A faulty sender: a producer of a peer's send ring and an allocator handle owning as that
/// peer, over a mapping of its own.
struct Faulty {
    producer: Producer,
    slab: Slab<Arc<SegmentMapping>>,
}

impl Faulty {
    /// # Safety (of use)
    /// The attached `Peer` with id `peer` must not send (nor allocate) while this exists: this
    /// is then the ring's only producer, and the only user of the peer's allocator journal.
    fn new(path: &std::path::Path, peer: u16) -> Faulty {
        let layout = SegmentLayout::new(MAX_PEERS, RING_CAPACITY).expect("layout");
        let slab_layout = SlabLayout::for_hub(&layout);
        let file = SegmentFile::open_path(path, Access::ReadWrite).expect("open");
        let mapping = Arc::new(SegmentMapping::new(file, slab_layout.max_size()).expect("mapping"));
        let slab = Slab::attach(mapping.clone(), slab_layout, OwnerId::peer(peer)).expect("slab");
        let offset = layout.send_ring_offset(peer);
        assert!(offset + layout.ring_size() <= mapping.len());
        // SAFETY: `offset` plus the ring's size lies inside the mapping (checked just above).
        let header = unsafe { mapping.base().add(offset) }.cast::<DescRingHeader>();
        // SAFETY: the ring header and its RING_CAPACITY descriptors lie inside the mapping,
        // which the allocator handle (an Arc) keeps mapped as long as this value; the host
        // initialised them (R1), and only atomics and volatile copies touch them.
        let ring = unsafe { RawRing::new(header, RING_CAPACITY) }.expect("ring");
        // SAFETY: the peer of this id sends nothing while the Faulty lives (the tests' rule),
        // so this is the only producer of its send ring.
        let producer = unsafe { ring.producer() }.expect("producer");
        Faulty { producer, slab }
    }

    fn push(&mut self, desc: MsgDescHot) {
        self.producer.try_push(&desc).expect("room in the ring");
    }

    /// A slot of at least `len` bytes, allocated to this peer, filled from `seed`.
    fn slot(&self, len: usize, seed: u64) -> SlotHandle {
        let handle = self.slab.alloc(len).expect("alloc");
        let size = self.slab.slot_size(handle.class()).unwrap() as usize;
        let data = self.slab.slot_data(handle).expect("slot data");
        // SAFETY: the slot is allocated to us and `size` bytes long; nobody else touches it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_ptr(), size) };
        fill(bytes, seed);
        handle
    }

    fn status(&self, handle: SlotHandle) -> hub_alloc::SlotStatus {
        self.slab
            .slot_status(handle.class(), handle.index())
            .expect("status")
    }
}

fn desc(i: u64) -> MsgDescHot {
    let m = meta(i);
    MsgDescHot {
        msg_id: m.msg_id,
        channel_id: m.channel_id,
        method_id: m.method_id,
        flags: m.flags,
        credit_grant: m.credit_grant,
        deadline_ns: m.deadline_ns,
        ..MsgDescHot::empty()
    }
}

fn slot_desc(i: u64, slot_ref: u32, generation: u32, offset: u32, len: u32) -> MsgDescHot {
    MsgDescHot {
        payload_slot: slot_ref,
        payload_generation: generation,
        payload_offset: offset,
        payload_len: len,
        ..desc(i)
    }
}

fn handle_desc(i: u64, handle: SlotHandle, offset: u32, len: u32) -> MsgDescHot {
    slot_desc(i, handle.slot_ref(), handle.generation(), offset, len)
}

#[track_caller]
fn expect_fault(host: &Host, peer: u16, fault: DescriptorFault) {
    match host.try_recv() {
        Err(TryRecvError::Failed(RecvError::BadDescriptor { peer: p, fault: f })) => {
            assert_eq!((p, f), (peer, fault));
        }
        other => panic!("expected BadDescriptor({peer}, {fault:?}), got {other:?}"),
    }
}

#[track_caller]
fn expect_frame(host: &Host, peer: u16, i: u64) -> Frame {
    let frame = host.try_recv().expect("a good frame");
    assert_eq!((frame.peer(), *frame.meta()), (peer, meta(i)));
    frame
}

/// A hub, its path, a good peer that stays, and the events of its supervisor.
struct Bench {
    host: Host,
    path: std::path::PathBuf,
    _files: TempFiles,
}

fn bench() -> Bench {
    let mut files = TempFiles::default();
    let path = files.path("hub");
    let host = Host::create(
        &HubConfig::new()
            .max_peers(MAX_PEERS)
            .ring_capacity(RING_CAPACITY)
            .path(path.clone()),
    )
    .expect("create");
    Bench {
        host,
        path,
        _files: files,
    }
}

impl Bench {
    /// A new peer (attached, idle) and a faulty sender over its send ring.
    fn faulty(&self) -> (Peer, Faulty) {
        let ticket = self.host.add_peer().expect("add_peer");
        let idle = Peer::attach(&ticket).expect("attach");
        let faulty = Faulty::new(&self.path, idle.id());
        (idle, faulty)
    }
}

/// `fault` from the faulty peer `idle`: the host reports it, evicts the peer (which learns it),
/// and its supervisor recovers the entry. Returns what the recovery freed.
#[track_caller]
fn expect_eviction(
    host: &Host,
    events: &mut EventLog<'_>,
    idle: Peer,
    faulty: Faulty,
    fault: DescriptorFault,
) -> Recovery {
    let p = idle.id();
    expect_fault(host, p, fault);
    let evicted = events.wait(
        "Evicted",
        |e| matches!(e, PeerEvent::Evicted { peer, .. } if *peer == p),
    );
    match evicted {
        PeerEvent::Evicted {
            reason: EvictReason::BadDescriptor(f),
            ..
        } => assert_eq!(f, fault),
        other => panic!("evicted for another reason: {other:?}"),
    }
    let recovery = events.recovery(p);
    assert!(matches!(
        idle.send(meta(1), b"me?"),
        Err(SendCopyError::Disconnected(
            Disconnect::PeerNotActive { .. }
        ))
    ));
    drop(faulty);
    drop(idle);
    recovery
}

/// A frame from the good peer, through while the others misbehave.
#[track_caller]
fn good_frame(host: &Host, good: &Peer, i: u64) {
    good.send(meta(i), &[i as u8; 40]).expect("good send");
    let frame = expect_frame(host, good.id(), i);
    assert_eq!(frame.payload(), &[i as u8; 40]);
}

#[test]
fn bad_descriptors_are_typed_errors_naming_the_sender() {
    let b = bench();
    let host = &b.host;
    let mut events = EventLog::new(host);
    let good = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    let mut i = 100;
    let mut next = || {
        i += 1;
        i
    };
    let nothing = |r: &Recovery| r.ring_slots_freed == 0 && r.reclaimed.total() == 0;

    // An inline length beyond the 16 bytes a descriptor holds.
    for len in [17, 64, u32::MAX] {
        let (idle, mut faulty) = b.faulty();
        faulty.push(MsgDescHot {
            payload_len: len,
            ..desc(1)
        });
        let r = expect_eviction(
            host,
            &mut events,
            idle,
            faulty,
            DescriptorFault::InlineTooLong { len },
        );
        assert!(nothing(&r), "{r:?}");
        good_frame(host, &good, next());
    }

    // A slot reference naming a class >= 5 (class 7's other indices are not the inline mark);
    // a slot index in an unpublished extent, beyond the last extent, at the top of 2^29.
    let refs = [5 << 29, 6 << 29 | 3, 7 << 29, INLINE_PAYLOAD_SLOT - 1]
        .into_iter()
        .chain(
            [
                (0, 1 << 10),
                (4, 4),
                (1, 5 << 8),
                (0, 16 << 10),
                (3, (1 << 29) - 1),
            ]
            .map(|(class, index)| encode_slot_ref(class, index)),
        );
    for slot_ref in refs {
        let (idle, mut faulty) = b.faulty();
        faulty.push(slot_desc(2, slot_ref, 0, 0, 100));
        let r = expect_eviction(
            host,
            &mut events,
            idle,
            faulty,
            DescriptorFault::BadSlotRef { slot_ref },
        );
        assert!(nothing(&r), "{r:?}");
        good_frame(host, &good, next());
    }

    // A stale generation: the slot was freed since the descriptor was written.
    let (idle, mut faulty) = b.faulty();
    let stale = faulty.slot(100, 4);
    faulty
        .slab
        .mark_in_flight(stale, OwnerId::HOST)
        .expect("in flight");
    let _ = faulty.slab.free(stale).expect("free");
    faulty.push(handle_desc(4, stale, 0, 100));
    let fault = DescriptorFault::StaleGeneration {
        descriptor: stale.generation(),
        slot: stale.generation() + 1,
    };
    let r = expect_eviction(host, &mut events, idle, faulty, fault);
    assert!(nothing(&r), "{r:?}");
    good_frame(host, &good, next());

    // ... and one from the future, for a slot in flight to the host: the slot records the
    // faulty peer as its sender and no frame of the host holds it, so recovery frees it.
    let (idle, mut faulty) = b.faulty();
    let future = faulty.slot(2000, 5);
    faulty
        .slab
        .mark_in_flight(future, OwnerId::HOST)
        .expect("in flight");
    let generation = future.generation() + 7;
    faulty.push(slot_desc(5, future.slot_ref(), generation, 0, 100));
    let fault = DescriptorFault::StaleGeneration {
        descriptor: generation,
        slot: future.generation(),
    };
    let slab = faulty
        .slab
        .with_owner(OwnerId::HOST)
        .expect("a host handle");
    let r = expect_eviction(host, &mut events, idle, faulty, fault);
    assert_eq!(r.ring_slots_freed, 1, "{r:?}");
    let status = slab
        .slot_status(future.class(), future.index())
        .expect("status");
    assert_eq!(status.state, Some(SlotState::Free));
    good_frame(host, &good, next());

    // Slots not in flight to the host: a free one (at its current generation) ...
    let (idle, mut faulty) = b.faulty();
    let now = faulty.status(stale);
    assert_eq!(now.state, Some(SlotState::Free));
    let free = SlotHandle::from_parts(stale.class(), stale.index(), now.generation);
    faulty.push(handle_desc(8, free, 0, 100));
    let fault = DescriptorFault::NotInFlightToReceiver {
        state: Some(SlotState::Free),
        owner: NO_OWNER,
    };
    let r = expect_eviction(host, &mut events, idle, faulty, fault);
    assert!(nothing(&r), "{r:?}");
    good_frame(host, &good, next());

    // ... one the sender still holds (the recovery reclaims it) ...
    let (idle, mut faulty) = b.faulty();
    let p = idle.id();
    let allocated = faulty.slot(100, 6);
    faulty.push(handle_desc(6, allocated, 0, 100));
    let fault = DescriptorFault::NotInFlightToReceiver {
        state: Some(SlotState::Allocated),
        owner: OwnerId::peer(p).raw(),
    };
    let r = expect_eviction(host, &mut events, idle, faulty, fault);
    assert_eq!((r.ring_slots_freed, r.reclaimed.total()), (0, 1), "{r:?}");
    assert_all_free(&host.stats());
    good_frame(host, &good, next());

    // ... and one in flight to another peer (the good one, which never gets a descriptor for
    // it: the test frees it).
    let (idle, mut faulty) = b.faulty();
    let elsewhere = faulty.slot(100, 7);
    let other = OwnerId::peer(good.id());
    faulty
        .slab
        .mark_in_flight(elsewhere, other)
        .expect("in flight");
    faulty.push(handle_desc(7, elsewhere, 0, 100));
    let fault = DescriptorFault::NotInFlightToReceiver {
        state: Some(SlotState::InFlight),
        owner: other.raw(),
    };
    let slab = faulty
        .slab
        .with_owner(OwnerId::HOST)
        .expect("a host handle");
    let r = expect_eviction(host, &mut events, idle, faulty, fault);
    assert!(nothing(&r), "{r:?}");
    let status = slab
        .slot_status(elsewhere.class(), elsewhere.index())
        .expect("status");
    assert_eq!(
        (status.state, status.owner),
        (Some(SlotState::InFlight), other.raw())
    );
    let _ = slab.free(elsewhere).expect("free");
    good_frame(host, &good, next());

    // A payload that runs past the end of its slot: the slot was in flight to the host, which
    // frees it.
    for (offset, len) in [(1000, 100), (0, 1025), (1024, 1), (u32::MAX, u32::MAX)] {
        let (idle, mut faulty) = b.faulty();
        let slot = faulty.slot(100, 9);
        assert_eq!(slot.class(), 0);
        faulty
            .slab
            .mark_in_flight(slot, OwnerId::HOST)
            .expect("in flight");
        faulty.push(handle_desc(9, slot, offset, len));
        let slab = faulty
            .slab
            .with_owner(OwnerId::HOST)
            .expect("a host handle");
        let fault = DescriptorFault::OutOfSlot {
            offset,
            len,
            slot_size: 1024,
        };
        let r = expect_eviction(host, &mut events, idle, faulty, fault);
        assert!(nothing(&r), "{r:?}");
        let status = slab
            .slot_status(slot.class(), slot.index())
            .expect("status");
        // Freed: by the host's free, or by its give-back of the slots it kept (its free kept
        // the slot, and it gave its kept slots back before it slept): either way a later
        // generation.
        assert_eq!(
            status.state,
            Some(SlotState::Free),
            "the host freed the slot"
        );
        assert!(
            status.generation > slot.generation(),
            "the host freed the slot: {status:?}"
        );
        assert_all_free(&host.stats());
        good_frame(host, &good, next());
    }

    // The host still talks to a peer on an id that carried garbage before.
    let again = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    host.send(again.id(), meta(30), &[7; 300]).expect("send");
    let frame = again.recv_timeout(WATCHDOG).expect("recv");
    assert_eq!(
        (*frame.meta(), frame.payload()),
        (meta(30), &[7u8; 300][..])
    );
    drop(frame);
    drop(again);
    let good_id = good.id();
    drop(good);
    events.goodbye_and_recovery(good_id);
    assert_all_free(&host.stats());
}

#[test]
fn good_descriptors_pushed_the_same_way_are_delivered() {
    let b = bench();
    let host = &b.host;
    let (idle, mut faulty) = b.faulty();
    let p = idle.id();

    let mut inline = desc(20);
    inline.payload_len = 16;
    inline.inline_payload = [0xA5; 16];
    faulty.push(inline);
    let frame = expect_frame(host, p, 20);
    assert_eq!(frame.payload(), &[0xA5; 16]);
    drop(frame);

    // A whole slot.
    let whole = faulty.slot(3000, 21);
    assert_eq!(whole.class(), 1);
    faulty
        .slab
        .mark_in_flight(whole, OwnerId::HOST)
        .expect("in flight");
    faulty.push(handle_desc(21, whole, 0, 16 << 10));
    let frame = expect_frame(host, p, 21);
    assert!(!frame.is_inline());
    assert_eq!(checksum(frame.payload()), expected(16 << 10, 21));
    drop(frame);

    // A payload at an offset inside its slot, ending at its end exactly.
    let part = faulty.slot(3000, 22);
    faulty
        .slab
        .mark_in_flight(part, OwnerId::HOST)
        .expect("in flight");
    faulty.push(handle_desc(22, part, (16 << 10) - 500, 500));
    let frame = expect_frame(host, p, 22);
    assert_eq!(frame.len(), 500);
    let mut whole_slot = vec![0; 16 << 10];
    fill(&mut whole_slot, 22);
    assert_eq!(frame.payload(), &whole_slot[(16 << 10) - 500..]);
    drop(frame);

    assert!(matches!(host.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(
        host.peers()[usize::from(p)].state,
        hub_transport::PeerState::Active
    );
    // The peer still receives.
    host.send(p, meta(23), b"ok").expect("send");
    assert_eq!(idle.recv_timeout(WATCHDOG).expect("recv").payload(), b"ok");
    drop(faulty);
    drop(idle);
    EventLog::new(host).goodbye_and_recovery(p);
    assert_all_free(&host.stats());
}

/// R3/R4: a faulty peer that publishes the same (valid) descriptor twice must not get the host
/// to hand out two frames over one slot. With two, dropping the first frees the slot while the
/// second still lends it out as a slice (R4 broken); a later `loan` in the host's process can
/// then hand out a `&mut` over the same bytes.
#[test]
fn a_duplicated_descriptor_is_refused() {
    let b = bench();
    let host = &b.host;
    let (idle, mut faulty) = b.faulty();
    let slot = faulty.slot(100, 1);
    faulty
        .slab
        .mark_in_flight(slot, OwnerId::HOST)
        .expect("in flight");
    faulty.push(handle_desc(1, slot, 0, 100));
    faulty.push(handle_desc(1, slot, 0, 100));
    let first = expect_frame(host, idle.id(), 1);
    let second = host.try_recv();
    let refused = matches!(
        second,
        Err(TryRecvError::Failed(RecvError::BadDescriptor {
            fault: DescriptorFault::AlreadyReceived { .. },
            ..
        }))
    );
    drop(second);
    drop(first);
    assert!(refused, "the second descriptor for one slot was accepted");
}
