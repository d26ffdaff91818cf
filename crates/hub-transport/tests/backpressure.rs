//! Backpressure: a full ring, an empty size class and an empty ring, in both directions.
//!
//! - Full ring (capacity 4, the receiver not reading): `try_send` is `Full`, `send_timeout` is
//!   `Timeout` after the timeout, and a blocked `send` completes once the receiver reads one.
//! - Empty class (`max_size` = the initial size, so nothing can grow; every 16 MiB slot held by
//!   loans or un-dropped frames): `try_loan` is `NoFreeSlots`, `loan_timeout` is `Timeout`, and a
//!   blocked `loan` completes when another thread drops a held frame or loan.
//! - Nothing to receive: `try_recv` is `Empty`, `recv_timeout` is `Timeout`.
//!
//! "Blocked" is established without sleeping: the blocked call's thread says it is about to
//! call, and the test checks that the call has not returned while the condition that blocks it
//! (a full ring, an empty class) still holds, which it cannot change by itself.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::pattern::{checksum, expected, fill, payload};
use common::{WATCHDOG, assert_all_free, meta, spin_until};
use hub_layout::SegmentLayout;
use hub_transport::{
    Host, HubConfig, LoanTimeoutError, Peer, RecvTimeoutError, SendCopyTimeoutError,
    SendTimeoutError, TryLoanError, TryRecvError, TrySendCopyError, TrySendError,
};

const CAPACITY: u32 = 4;
const TIMEOUT: Duration = Duration::from_millis(50);
const BIG: usize = 16 << 20;

fn small_hub() -> Host {
    Host::create(&HubConfig::new().max_peers(1).ring_capacity(CAPACITY)).expect("create")
}

/// A timed-out call took at least the timeout, and not absurdly longer.
#[track_caller]
fn assert_took_timeout(start: Instant) {
    let took = start.elapsed();
    assert!(
        took >= TIMEOUT,
        "gave up after {took:?}, before {TIMEOUT:?}"
    );
    assert!(took < WATCHDOG, "gave up after {took:?}");
}

#[test]
fn full_ring_peer_to_host() {
    let host = small_hub();
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    // Fill the ring: inline and slot payloads alternately.
    let size = |i: u64| if i.is_multiple_of(2) { 8 } else { 600 };
    for i in 0..u64::from(CAPACITY) {
        peer.try_send(meta(i), &payload(size(i), i)).expect("room");
    }
    assert_eq!(host.peers()[0].to_host, CAPACITY);
    // A slot payload that finds the ring full leaks nothing: its slot goes back.
    match peer.try_send(meta(90), &payload(600, 90)) {
        Err(TrySendCopyError::Full) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    match peer.try_send(meta(90), &[1, 2, 3]) {
        Err(TrySendCopyError::Full) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    let mut loan = peer.loan(700).expect("loan");
    fill(loan.as_mut_slice(), 91);
    let filled = loan.as_slice().to_vec();
    match peer.try_send_loan(meta(91), loan) {
        // The loan comes back as it was; dropped here, its slot goes back.
        Err(TrySendError::Full(back)) => assert_eq!(back.as_slice(), &filled[..]),
        other => panic!("expected Full, got {other:?}"),
    }
    let start = Instant::now();
    match peer.send_timeout(meta(92), &payload(600, 92), TIMEOUT) {
        Err(SendCopyTimeoutError::Timeout) => assert_took_timeout(start),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let start = Instant::now();
    let loan = peer.loan(2000).expect("loan");
    match peer.send_loan_timeout(meta(93), loan, TIMEOUT) {
        // The loan comes back; dropped here, its slot goes back.
        Err(SendTimeoutError::Timeout(back)) => {
            assert_took_timeout(start);
            assert_eq!(back.len(), 2000);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    // Only the two slot frames in the ring hold slots.
    let class0 = host.stats()[0];
    assert_eq!((class0.in_flight, class0.allocated), (2, 0), "{class0:?}");

    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let sender = s.spawn(|| {
            started.store(true, Ordering::SeqCst);
            let result = peer.send(meta(99), &payload(600, 99));
            done.store(true, Ordering::SeqCst);
            result
        });
        spin_until("the sender to start", || started.load(Ordering::SeqCst));
        // The ring is full and only this thread consumes it: the send cannot have completed.
        let early = done.load(Ordering::SeqCst);
        // Unblock before any assertion, so that a failure cannot leave the sender stuck.
        let first = host.try_recv().map(|frame| *frame.meta());
        let sent = sender.join().expect("sender");
        assert!(!early, "send completed into a full ring");
        assert_eq!(first.expect("first frame"), meta(0));
        sent.expect("the blocked send completes");
    });
    // The rest, in order, the blocked frame last.
    for i in (1..u64::from(CAPACITY)).chain([99]) {
        let frame = host.recv_timeout(WATCHDOG).expect("frame");
        assert_eq!(*frame.meta(), meta(i));
        let len = if i == 99 { 600 } else { size(i) };
        assert_eq!(checksum(frame.payload()), expected(len, i));
    }
    match host.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected Empty, got {other:?}"),
    }
    drop(peer);
    assert_all_free(&host.stats());
}

#[test]
fn full_ring_host_to_peer() {
    let host = small_hub();
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    let id = peer.id();
    for i in 0..u64::from(CAPACITY) {
        host.try_send(id, meta(i), &payload(300, i)).expect("room");
    }
    assert_eq!(host.peers()[0].to_peer, CAPACITY);
    match host.try_send(id, meta(90), &payload(300, 90)) {
        Err(TrySendCopyError::Full) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    let loan = host.loan(5).expect("inline loan");
    match host.try_send_loan(id, meta(91), loan) {
        Err(TrySendError::Full(back)) => assert_eq!(back.len(), 5),
        other => panic!("expected Full, got {other:?}"),
    }
    let start = Instant::now();
    match host.send_timeout(id, meta(92), &payload(300, 92), TIMEOUT) {
        Err(SendCopyTimeoutError::Timeout) => assert_took_timeout(start),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let start = Instant::now();
    let loan = host.loan(3000).expect("loan");
    match host.send_loan_timeout(id, meta(93), loan, TIMEOUT) {
        Err(SendTimeoutError::Timeout(back)) => {
            assert_took_timeout(start);
            assert_eq!(back.len(), 3000);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let class0 = host.stats()[0];
    assert_eq!((class0.in_flight, class0.allocated), (4, 0), "{class0:?}");

    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let sender = s.spawn(|| {
            started.store(true, Ordering::SeqCst);
            let result = host.send(id, meta(99), &payload(300, 99));
            done.store(true, Ordering::SeqCst);
            result
        });
        spin_until("the sender to start", || started.load(Ordering::SeqCst));
        let early = done.load(Ordering::SeqCst);
        // Unblock before any assertion, so that a failure cannot leave the sender stuck.
        let first = peer.try_recv().map(|frame| *frame.meta());
        let sent = sender.join().expect("sender");
        assert!(!early, "send completed into a full ring");
        assert_eq!(first.expect("first frame"), meta(0));
        sent.expect("the blocked send completes");
    });
    for i in (1..u64::from(CAPACITY)).chain([99]) {
        let frame = peer.recv_timeout(WATCHDOG).expect("frame");
        assert_eq!(*frame.meta(), meta(i));
        assert_eq!(checksum(frame.payload()), expected(300, i));
    }
    match peer.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected Empty, got {other:?}"),
    }
    drop(peer);
    assert_all_free(&host.stats());
}

#[test]
fn empty_class_blocks_until_a_slot_is_freed() {
    let (max_peers, ring_capacity) = (2, 16);
    let initial = SegmentLayout::new(max_peers, ring_capacity)
        .expect("layout")
        .initial_size();
    let host = Host::create(
        &HubConfig::new()
            .max_peers(max_peers)
            .ring_capacity(ring_capacity)
            .max_size(initial),
    )
    .expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    let total = host.stats()[4].total;
    assert_eq!(total, 4, "the 16 MiB class starts with 4 slots");

    // Hold every 16 MiB slot: two loans of the host, two frames the host received and keeps.
    let mut loans = vec![host.loan(BIG).expect("loan"), host.loan(BIG).expect("loan")];
    for i in 0..2 {
        let mut loan = peer.loan(BIG).expect("peer loan");
        let bytes = loan.as_mut_slice();
        bytes[0] = i;
        bytes[BIG - 1] = i;
        peer.send_loan(meta(u64::from(i)), loan).expect("send_loan");
    }
    let mut frames = vec![
        host.recv_timeout(WATCHDOG).expect("frame"),
        host.recv_timeout(WATCHDOG).expect("frame"),
    ];
    assert_eq!(frames[1].payload()[BIG - 1], 1);
    let big = host.stats()[4];
    assert_eq!(
        (big.extents, big.free, big.allocated, big.in_flight),
        (1, 0, 2, 2),
        "{big:?}"
    );

    // Nothing larger to fall back to, no room to grow: no 16 MiB slot for anyone.
    let no_slot = |result: Result<_, TryLoanError>| match result {
        Err(TryLoanError::NoFreeSlots { class }) => assert_eq!(class, 4),
        other => panic!("expected NoFreeSlots, got {other:?}"),
    };
    no_slot(host.try_loan(BIG).map(drop));
    no_slot(host.try_loan((4 << 20) + 1).map(drop));
    no_slot(peer.try_loan(BIG).map(drop));
    match peer.try_send(meta(5), &vec![0; BIG]) {
        Err(TrySendCopyError::NoFreeSlots { class }) => assert_eq!(class, 4),
        other => panic!("expected NoFreeSlots, got {other:?}"),
    }
    // A side that sleeps for a slot keeps none of another class meanwhile (PROTOCOL.md, kept
    // slots): the 4 MiB slot the host keeps for its next loan of the size goes back first.
    drop(host.try_loan(4 << 20).expect("a 4 MiB slot"));
    assert_eq!(
        host.stats()[3].kept,
        1,
        "kept for the host's next 4 MiB loan"
    );
    let start = Instant::now();
    match host.loan_timeout(BIG, TIMEOUT) {
        Err(LoanTimeoutError::Timeout) => assert_took_timeout(start),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(host.stats()[3].kept, 0, "given back before the wait");
    let start = Instant::now();
    match peer.send_timeout(meta(6), &vec![0; BIG], TIMEOUT) {
        Err(SendCopyTimeoutError::Timeout) => assert_took_timeout(start),
        other => panic!("expected Timeout, got {other:?}"),
    }
    // The smaller classes are not affected.
    drop(host.try_loan(4 << 20).expect("a 4 MiB slot"));
    assert_eq!(host.stats()[4].extents, 1, "the class did not grow");

    // A peer blocked in `loan` gets the slot of a frame the host drops.
    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let loaner = s.spawn(|| {
            started.store(true, Ordering::SeqCst);
            let mut loan = peer.loan(BIG).expect("blocked loan");
            done.store(true, Ordering::SeqCst);
            fill(loan.as_mut_slice(), 77);
            peer.send_loan(meta(7), loan).expect("send_loan");
        });
        spin_until("the loaner to start", || started.load(Ordering::SeqCst));
        let early = done.load(Ordering::SeqCst);
        drop(frames.pop());
        loaner.join().expect("loaner");
        assert!(!early, "loan completed with no free slot");
    });
    let frame = host.recv_timeout(WATCHDOG).expect("frame");
    assert_eq!(checksum(frame.payload()), expected(BIG, 77));
    frames.push(frame);

    // A host thread blocked in `loan` gets the slot of a loan another thread drops.
    let started = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        let loaner = s.spawn(|| {
            started.store(true, Ordering::SeqCst);
            let loan = host.loan(BIG).expect("blocked loan");
            done.store(true, Ordering::SeqCst);
            loan
        });
        spin_until("the loaner to start", || started.load(Ordering::SeqCst));
        let early = done.load(Ordering::SeqCst);
        drop(loans.pop());
        loans.push(loaner.join().expect("loaner"));
        assert!(!early, "loan completed with no free slot");
    });
    let big = host.stats()[4];
    assert_eq!((big.extents, big.free), (1, 0), "{big:?}");

    drop(loans);
    drop(frames);
    drop(peer);
    assert_all_free(&host.stats());
}

#[test]
fn nothing_to_receive() {
    let host = small_hub();
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    let empty = |result: Result<_, TryRecvError>| match result {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected Empty, got {other:?}"),
    };
    let timeout = |start: Instant, result: Result<_, RecvTimeoutError>| match result {
        Err(RecvTimeoutError::Timeout) => assert_took_timeout(start),
        other => panic!("expected Timeout, got {other:?}"),
    };
    empty(host.try_recv().map(drop));
    empty(peer.try_recv().map(drop));
    let start = Instant::now();
    timeout(start, host.recv_timeout(TIMEOUT).map(drop));
    let start = Instant::now();
    timeout(start, host.recv_from(peer.id(), Some(TIMEOUT)).map(drop));
    let start = Instant::now();
    timeout(start, peer.recv_timeout(TIMEOUT).map(drop));
    // And a frame sent afterwards still arrives.
    peer.send(meta(3), b"late").expect("send");
    assert_eq!(host.try_recv().expect("frame").payload(), b"late");
    host.send(peer.id(), meta(4), b"reply").expect("send");
    assert_eq!(peer.try_recv().expect("frame").payload(), b"reply");
    drop(peer);
    assert_all_free(&host.stats());
}
