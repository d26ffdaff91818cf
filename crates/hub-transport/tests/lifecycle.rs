//! The host's goodbye and the peer lifecycle (R9, R10, R12).
//!
//! - A peer blocked in `recv()` (or in `loan()` on an empty class) gets `HostGone` promptly when
//!   the host is dropped; frames the host sent before it left are still delivered first.
//! - A peer's Drop makes its entry Dying; `recover_peer` (or `add_peer`, when no entry is empty,
//!   or the host's supervisor, once the host has read what the peer sent) frees what it left
//!   behind and makes the id reusable: a new ticket with a higher epoch attaches, the old ticket
//!   gets `NotReserved` or `StaleTicket`. An evicted peer learns it, and cannot touch the rings
//!   of the id's next peer.
//!
//! A blocked call is established without sleeping: the test watches, through a mapping of its
//! own of the named segment, the futex word the call sleeps on until the waiter bit (R11) shows
//! that the call announced itself.

mod common;

use std::mem::offset_of;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pattern::{checksum, expected, payload};
use common::{EventLog, TempFiles, WATCHDOG, assert_all_free, meta, spin_until};
use hub_layout::{PeerEntry, SegmentBytes, SegmentLayout, SizeClassHeader};
use hub_transport::mapping::{Access, ReadOnlyMapping, SegmentFile};
use hub_transport::{
    AttachError, Disconnect, EvictReason, Host, HostError, HubConfig, LoanError, Peer, PeerEvent,
    PeerState, RecvError, RecvTimeoutError, SendCopyError, TryLoanError, TryRecvError,
    TrySendCopyError,
};

/// How soon after the host's goodbye a blocked call must return: R12's bound for a host that
/// died, which a goodbye (a wake, not a detection) beats by far.
const PROMPT: Duration = Duration::from_secs(1);

fn named_hub(
    files: &mut TempFiles,
    max_peers: u16,
    max_size: Option<usize>,
) -> (Host, SegmentLayout, ReadOnlyMapping) {
    let path = files.path("hub");
    let ring_capacity = 16;
    let mut config = HubConfig::new()
        .max_peers(max_peers)
        .ring_capacity(ring_capacity);
    config.max_size = max_size;
    config.path = Some(path.clone());
    let host = Host::create(&config).expect("create");
    let layout = SegmentLayout::new(max_peers, ring_capacity).expect("layout");
    (host, layout, view(&path))
}

/// A read-only mapping of the segment at `path` (its first MiB: headers and tables).
fn view(path: &Path) -> ReadOnlyMapping {
    let file = SegmentFile::open_path(path, Access::ReadOnly).expect("open");
    ReadOnlyMapping::new(file, 1 << 20).expect("map")
}

/// Spin until the futex word at `offset` has its waiter bit set.
fn wait_for_waiter(view: &ReadOnlyMapping, offset: usize, what: &str) {
    spin_until(what, || view.read_u32(offset).expect("word") & 1 != 0);
}

#[test]
fn peer_blocked_in_recv_gets_host_gone_promptly() {
    let mut files = TempFiles::default();
    let (host, layout, view) = named_hub(&mut files, 2, None);
    let ticket = host.add_peer().expect("add_peer");
    let spare = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    let bell = layout.peer_entry_offset(peer.id()) + offset_of!(PeerEntry, recv_data_futex);
    let blocked = std::thread::spawn(move || {
        let result = peer.recv().map(|frame| frame.len());
        (result, Instant::now(), peer)
    });
    wait_for_waiter(&view, bell, "the peer to sleep in recv");
    let goodbye = Instant::now();
    drop(host);
    let (result, returned, peer) = blocked.join().expect("peer thread");
    assert!(
        matches!(result, Err(RecvError::Disconnected(Disconnect::HostGone))),
        "{result:?}"
    );
    let took = returned.duration_since(goodbye);
    assert!(took < PROMPT, "HostGone after {took:?}");
    // Every later call says so too, without waiting.
    assert!(matches!(
        peer.try_recv(),
        Err(TryRecvError::Failed(RecvError::Disconnected(
            Disconnect::HostGone
        )))
    ));
    assert!(matches!(
        peer.recv_timeout(WATCHDOG),
        Err(RecvTimeoutError::Failed(RecvError::Disconnected(
            Disconnect::HostGone
        )))
    ));
    assert!(matches!(
        peer.send(meta(1), b"hello?"),
        Err(SendCopyError::Disconnected(Disconnect::HostGone))
    ));
    assert!(matches!(
        peer.try_send(meta(1), &[0; 5000]),
        Err(TrySendCopyError::Failed(SendCopyError::Disconnected(
            Disconnect::HostGone
        )))
    ));
    // A ticket not used yet cannot attach any more (the named file is gone: by path it fails
    // to open).
    assert!(Peer::attach(&spare).is_err());
}

#[test]
fn peer_blocked_in_recv_learns_it_was_evicted() {
    let mut files = TempFiles::default();
    let (host, layout, view) = named_hub(&mut files, 1, None);
    let peer = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    let id = peer.id();
    let bell = layout.peer_entry_offset(id) + offset_of!(PeerEntry, recv_data_futex);
    let blocked = std::thread::spawn(move || {
        let result = peer.recv().map(|frame| frame.len());
        (result, Instant::now(), peer)
    });
    wait_for_waiter(&view, bell, "the peer to sleep in recv");
    let mut events = EventLog::new(&host);
    let evicted = Instant::now();
    host.evict(id, EvictReason::Application("a test".into()))
        .expect("evict");
    let (result, returned, peer) = blocked.join().expect("peer thread");
    match result {
        Err(RecvError::Disconnected(Disconnect::PeerNotActive { peer: p, .. })) => {
            assert_eq!(p, id);
        }
        other => panic!("expected PeerNotActive, got {other:?}"),
    }
    let took = returned.duration_since(evicted);
    assert!(took < PROMPT, "PeerNotActive after {took:?}");
    assert!(matches!(
        peer.send(meta(1), b"still here"),
        Err(SendCopyError::Disconnected(
            Disconnect::PeerNotActive { .. }
        ))
    ));
    // The supervisor reports the eviction and recovers the entry.
    let event = events.wait("Evicted", |e| matches!(e, PeerEvent::Evicted { .. }));
    assert_eq!(
        event,
        PeerEvent::Evicted {
            peer: id,
            reason: EvictReason::Application("a test".into())
        }
    );
    events.recovery(id);
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Empty);
    // Its goodbye does not disturb the entry, which a new peer may already hold.
    let next = host.add_peer().expect("add_peer");
    drop(peer);
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Reserved);
    let peer = Peer::attach(&next).expect("attach");
    round_trip(&host, &peer, 50);
}

/// After the host recovers a live peer's entry and hands the id to a new peer, the old `Peer`
/// must not touch the new peer's rings, slots or entry (R9): every call says it was evicted.
#[test]
fn an_evicted_peer_leaves_its_successor_alone() {
    let host = Host::create(&HubConfig::new().max_peers(1).ring_capacity(16)).expect("create");
    let old = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    round_trip(&host, &old, 60);
    host.recover_peer(0).expect("evict");
    let evicted = |state| move |gone: Option<&Disconnect>| matches!(gone, Some(Disconnect::PeerNotActive { peer: 0, state: s }) if *s == state);
    assert!(
        old.send(meta(1), b"x")
            .is_err_and(|e| evicted(PeerState::Empty)(e.disconnect()))
    );
    assert!(matches!(
        old.try_recv(),
        Err(TryRecvError::Failed(RecvError::Disconnected(
            Disconnect::PeerNotActive {
                peer: 0,
                state: PeerState::Empty
            }
        )))
    ));

    let ticket = host.add_peer().expect("add_peer");
    assert_eq!((ticket.peer_id(), ticket.epoch()), (0, 2));
    let new = Peer::attach(&ticket).expect("attach");
    host.send(0, meta(2), b"for the new one").expect("send");
    host.send(0, meta(3), &payload(5000, 3)).expect("send");
    // The old peer sees its entry is gone, though it is Active again (for the new peer).
    assert!(
        old.send(meta(4), b"from the old one")
            .is_err_and(|e| evicted(PeerState::Dead)(e.disconnect()))
    );
    assert!(
        old.try_loan(5000)
            .is_err_and(|e| evicted(PeerState::Dead)(e.disconnect()))
    );
    assert!(matches!(
        old.try_recv(),
        Err(TryRecvError::Failed(RecvError::Disconnected(
            Disconnect::PeerNotActive {
                peer: 0,
                state: PeerState::Dead
            }
        )))
    ));
    assert!(matches!(
        old.recv_timeout(WATCHDOG),
        Err(RecvTimeoutError::Failed(RecvError::Disconnected(
            Disconnect::PeerNotActive { .. }
        )))
    ));
    drop(old);
    assert_eq!(
        host.peers()[0].state,
        PeerState::Active,
        "the old goodbye is not the new one's"
    );
    // The new peer has everything, in order, and its own frames get through.
    let first = new.try_recv().expect("first");
    assert_eq!(
        (*first.meta(), first.payload()),
        (meta(2), &b"for the new one"[..])
    );
    let second = new.try_recv().expect("second");
    assert_eq!(checksum(second.payload()), expected(5000, 3));
    drop((first, second));
    assert!(matches!(host.try_recv(), Err(TryRecvError::Empty)));
    round_trip(&host, &new, 70);
    drop(new);
    host.recover_peer(0).expect("recover");
    assert_all_free(&host.stats());
}

#[test]
fn ticket_of_an_anonymous_hub_after_goodbye() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    host.close();
    // The ticket still holds the memfd: the hub is readable, and says its host left.
    assert!(matches!(Peer::attach(&ticket), Err(AttachError::HostGone)));
}

#[test]
fn peer_blocked_in_loan_gets_host_gone_promptly() {
    let mut files = TempFiles::default();
    let initial = SegmentLayout::new(2, 16).expect("layout").initial_size();
    let (host, layout, view) = named_hub(&mut files, 2, Some(initial));
    let holder = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    let waiter = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    let big = 16 << 20;
    // Every 16 MiB slot is held, and the class cannot grow.
    let held: Vec<_> = (0..4).map(|_| holder.loan(big).expect("loan")).collect();
    assert!(matches!(
        waiter.try_loan(big),
        Err(TryLoanError::NoFreeSlots { class: 4 })
    ));
    let word = layout.class_header_offset(4) + offset_of!(SizeClassHeader, slot_available_futex);
    let blocked = std::thread::spawn(move || {
        let result = waiter.loan(big).map(drop);
        (result, Instant::now())
    });
    wait_for_waiter(&view, word, "the peer to sleep in loan");
    let goodbye = Instant::now();
    drop(host);
    let (result, returned) = blocked.join().expect("peer thread");
    assert!(
        matches!(result, Err(LoanError::Disconnected(Disconnect::HostGone))),
        "{result:?}"
    );
    let took = returned.duration_since(goodbye);
    assert!(took < PROMPT, "HostGone after {took:?}");
    drop(held);
}

#[test]
fn frames_sent_before_goodbye_are_delivered_first() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let peer = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    host.send(peer.id(), meta(1), b"inline").expect("send");
    host.send(peer.id(), meta(2), &payload(70_000, 2))
        .expect("send");
    drop(host);
    let first = peer.recv_timeout(WATCHDOG).expect("first");
    assert_eq!((*first.meta(), first.payload()), (meta(1), &b"inline"[..]));
    let second = peer.recv().expect("second");
    assert_eq!(*second.meta(), meta(2));
    assert_eq!(checksum(second.payload()), expected(70_000, 2));
    assert!(matches!(
        peer.recv(),
        Err(RecvError::Disconnected(Disconnect::HostGone))
    ));
}

/// A frame each way, to show an attached peer works.
#[track_caller]
fn round_trip(host: &Host, peer: &Peer, i: u64) {
    peer.send(meta(i), &payload(3000, i)).expect("send");
    let frame = host.recv_from(peer.id(), Some(WATCHDOG)).expect("recv");
    assert_eq!((frame.peer(), *frame.meta()), (peer.id(), meta(i)));
    assert_eq!(checksum(frame.payload()), expected(3000, i));
    host.send(peer.id(), meta(i + 1), frame.payload())
        .expect("send");
    let echo = peer.recv_timeout(WATCHDOG).expect("recv");
    assert_eq!(*echo.meta(), meta(i + 1));
    assert_eq!(checksum(echo.payload()), expected(3000, i));
}

#[test]
fn goodbye_makes_the_entry_dying_and_the_id_is_reused() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let mut events = EventLog::new(&host);
    let first = host.add_peer().expect("add_peer");
    assert_eq!((first.peer_id(), first.epoch()), (0, 1));
    let info = host.peers()[0];
    assert_eq!(
        (info.state, info.epoch, info.pid),
        (PeerState::Reserved, 1, 0)
    );
    let peer = Peer::attach(&first).expect("attach");
    let info = host.peers()[0];
    assert_eq!(
        (info.state, info.pid),
        (PeerState::Active, std::process::id())
    );
    round_trip(&host, &peer, 10);

    // Leave things behind: a frame to the peer it never reads, a frame to the host the host
    // has not read (so the entry stays Dying: the supervisor waits for the host to read it).
    host.send(0, meta(20), &[1; 5000]).expect("send");
    peer.send(meta(21), &[2; 3000]).expect("send");
    let info = host.peers()[0];
    assert_eq!((info.to_peer, info.to_host), (1, 1));
    // A loan outlives its peer: the peer stays attached until it goes too (its slot is still
    // the peer's, and the host must not reclaim it under the loan).
    let mut loan = peer.loan(100).expect("loan");
    drop(peer);
    loan.as_mut_slice().fill(9);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        host.peers()[0].state,
        PeerState::Active,
        "a live loan keeps the peer"
    );
    drop(loan);
    events.wait("Goodbye", |e| *e == PeerEvent::Goodbye { peer: 0 });
    assert_eq!(host.peers()[0].state, PeerState::Dying);
    match Peer::attach(&first) {
        Err(AttachError::NotReserved { peer, state }) => {
            assert_eq!((peer, state), (0, PeerState::Dying));
        }
        other => panic!("expected NotReserved, got {other:?}"),
    }

    // The application recovers it without reading: the frames are freed (the loan was).
    let recovery = host.recover_peer(0).expect("recover");
    assert_eq!(recovery.ring_slots_freed, 2, "{recovery:?}");
    assert_eq!(recovery.reclaimed.total(), 0, "{recovery:?}");
    let info = host.peers()[0];
    assert_eq!(
        (info.state, info.pid, info.to_host, info.to_peer),
        (PeerState::Empty, 0, 0, 0)
    );
    assert_all_free(&host.stats());
    // Idempotent; and no such peer.
    assert_eq!(host.recover_peer(0).expect("again"), Default::default());
    assert!(matches!(
        host.recover_peer(1),
        Err(HostError::UnknownPeer(1))
    ));
    match Peer::attach(&first) {
        Err(AttachError::NotReserved { state, .. }) => assert_eq!(state, PeerState::Empty),
        other => panic!("expected NotReserved, got {other:?}"),
    }

    // The id again, a higher epoch; the old ticket is stale.
    let second = host.add_peer().expect("add_peer");
    assert_eq!((second.peer_id(), second.epoch()), (0, 2));
    match Peer::attach(&first) {
        Err(AttachError::StaleTicket {
            peer,
            ticket,
            entry,
        }) => assert_eq!((peer, ticket, entry), (0, 1, 2)),
        other => panic!("expected StaleTicket, got {other:?}"),
    }
    let peer = Peer::attach(&second).expect("attach");
    round_trip(&host, &peer, 30);
    assert!(matches!(host.add_peer(), Err(HostError::NoFreePeer(1))));

    // add_peer recovers a Dying entry itself when it needs it (this one keeps a frame unread,
    // so the supervisor has not).
    peer.send(meta(31), &[3; 3000]).expect("send");
    peer.close();
    events.wait("Goodbye", |e| *e == PeerEvent::Goodbye { peer: 0 });
    assert_eq!(host.peers()[0].state, PeerState::Dying);
    let third = host.add_peer().expect("add_peer recovers");
    assert_eq!((third.peer_id(), third.epoch()), (0, 3));
    assert!(matches!(
        Peer::attach(&second),
        Err(AttachError::StaleTicket {
            ticket: 2,
            entry: 3,
            ..
        })
    ));
    assert_all_free(&host.stats());
    let peer = Peer::attach(&third).expect("attach");
    round_trip(&host, &peer, 40);
    // And the supervisor recovers an entry whose peer left nothing unread. (Not always after
    // a Goodbye event: a supervisor that saw the entry Dead while add_peer recovered it above
    // may recover this later life as soon as it goes Dying, before it looks at it again.)
    drop(peer);
    loop {
        let recovery = events.recovery(0);
        assert_eq!(
            (recovery.ring_slots_freed, recovery.reclaimed.total()),
            (0, 0)
        );
        if host.peers()[0].state == PeerState::Empty {
            break;
        }
    }
    assert_all_free(&host.stats());
}

/// A peer's goodbye waits for its frames and loans that hold a slot (the host must not reclaim
/// a slot the peer still reads), and only for those: an inline frame or loan is a copy that
/// holds nothing of the peer.
#[test]
fn only_frames_and_loans_in_slots_delay_the_goodbye() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let mut events = EventLog::new(&host);
    let peer = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    host.send(peer.id(), meta(1), &[3; 5000]).expect("send");
    host.send(peer.id(), meta(2), &[4; 8]).expect("send");
    let in_slot = peer.recv_timeout(WATCHDOG).expect("the frame in a slot");
    let inline = peer.recv_timeout(WATCHDOG).expect("the inline frame");
    assert!(!in_slot.is_inline() && inline.is_inline());
    let inline_loan = peer.loan(8).expect("an inline loan");
    assert!(inline_loan.is_inline());
    let slot_loan = peer.loan(5000).expect("a loan in a slot");
    assert!(!slot_loan.is_inline());
    // The goodbye is made by the drop of the endpoint's last handle, within that drop: a
    // state still Active right after a drop is one no goodbye came for.
    let still_active = |why: &str| assert_eq!(host.peers()[0].state, PeerState::Active, "{why}");
    drop(peer);
    still_active("a frame and a loan in slots keep the peer");
    drop(in_slot);
    still_active("a loan in a slot keeps the peer");
    drop(slot_loan);
    events.wait("Goodbye", |e| *e == PeerEvent::Goodbye { peer: 0 });
    // The inline frame and loan outlived the goodbye, and are still what they were.
    assert_eq!(inline.payload(), &[4; 8]);
    assert_eq!(inline_loan.len(), 8);
}

/// Frames a peer sent before its goodbye reach the host: the entry stays Dying until the host
/// has read them, then the supervisor recovers it.
#[test]
fn frames_sent_before_a_peer_goodbye_are_delivered() {
    let host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    let mut events = EventLog::new(&host);
    let peer = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    let id = peer.id();
    let sizes = [5, 3000, 70_000];
    for (k, &size) in sizes.iter().enumerate() {
        peer.send(meta(k as u64), &payload(size, k as u64))
            .expect("send");
    }
    drop(peer);
    events.wait("Goodbye", |e| *e == PeerEvent::Goodbye { peer: id });
    let info = host.peers()[usize::from(id)];
    assert_eq!((info.state, info.to_host), (PeerState::Dying, 3));
    for (k, &size) in sizes.iter().enumerate() {
        let frame = host.recv_timeout(WATCHDOG).expect("frame");
        assert_eq!((frame.peer(), *frame.meta()), (id, meta(k as u64)));
        assert_eq!(checksum(frame.payload()), expected(size, k as u64));
    }
    let recovery = events.recovery(id);
    assert_eq!(
        (recovery.ring_slots_freed, recovery.reclaimed.total()),
        (0, 0)
    );
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Empty);
    assert_all_free(&host.stats());
}

#[test]
fn a_hundred_plugins_come_and_go() {
    let host = Host::create(&HubConfig::new().max_peers(2).ring_capacity(16)).expect("create");
    let mut epochs = [0u64; 2];
    for i in 0..100u64 {
        let ticket = host.add_peer().expect("add_peer");
        let id = usize::from(ticket.peer_id());
        assert!(ticket.epoch() > epochs[id], "epochs only go up");
        epochs[id] = ticket.epoch();
        let peer = Peer::attach(&ticket).expect("attach");
        if i.is_multiple_of(10) {
            round_trip(&host, &peer, i);
        }
        peer.send(meta(i), &[i as u8; 100]).expect("send");
        // Half leave a frame behind for recovery to free.
        if i.is_multiple_of(2) {
            let frame = host.recv_from(peer.id(), Some(WATCHDOG)).expect("recv");
            assert_eq!(frame.payload(), &[i as u8; 100]);
        }
    }
    assert_eq!(epochs.iter().sum::<u64>(), 100);
    for id in 0..2 {
        host.recover_peer(id).expect("recover");
    }
    assert_all_free(&host.stats());
}

/// R9: a reservation whose child never attached is taken back with `withdraw`; what the host
/// sent it meanwhile is freed, the ticket is void, and the id is handed out again. Once a peer
/// attached, `withdraw` leaves it alone.
#[test]
fn a_reservation_nobody_used_is_withdrawn() {
    let host = Host::create(&HubConfig::new().max_peers(1)).unwrap();
    let ticket = host.add_peer().unwrap();
    let id = ticket.peer_id();
    // Frames to a reserved peer wait in its ring, in slots in flight to it (R9).
    for (i, len) in [10, 5000, 300_000].into_iter().enumerate() {
        host.send(id, meta(i as u64), &payload(len, i as u64))
            .unwrap();
    }
    assert_eq!(host.stats().iter().map(|c| c.in_flight).sum::<u32>(), 2);
    assert!(matches!(host.add_peer(), Err(HostError::NoFreePeer(1))));

    assert!(host.withdraw(id).unwrap());
    assert_all_free(&host.stats());
    assert_eq!(host.peers()[0].state, PeerState::Empty);
    assert!(matches!(
        Peer::attach(&ticket),
        Err(AttachError::NotReserved { .. })
    ));
    assert!(!host.withdraw(id).unwrap(), "nothing left to withdraw");
    assert!(matches!(host.withdraw(1), Err(HostError::UnknownPeer(1))));

    // The id again, for a peer that does attach: then withdraw says no and changes nothing.
    let second = host.add_peer().unwrap();
    assert_eq!(second.peer_id(), id);
    assert!(second.epoch() > ticket.epoch());
    let peer = Peer::attach(&second).unwrap();
    assert!(!host.withdraw(id).unwrap());
    host.send(id, meta(7), &payload(100, 7)).unwrap();
    let frame = peer.recv_timeout(WATCHDOG).unwrap();
    assert_eq!(checksum(frame.payload()), expected(100, 7));
}
