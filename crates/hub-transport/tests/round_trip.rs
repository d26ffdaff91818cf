//! Round trips between the host and one peer in this process (a thread stands in for the plugin
//! process): inline payloads of 0..=16 bytes, slot payloads at every size-class boundary and a
//! full 16 MiB slot, both copying (`send(&[u8])`) and zero copy (`loan`, fill in place,
//! `send_loan`; receive through `Frame::payload()` without copying), in both directions. Every
//! payload is checksummed, every `FrameMeta` field compared, the class a payload lands in is
//! checked while the frame is held, and at the end every slot is free again. Also several
//! threads receiving on each side at once, in each wait mode: each frame reaches one of them.

mod common;

use std::thread;

use common::pattern::{checksum, expected, fill, payload};
use common::{WATCHDOG, assert_all_free, class_of, meta};
use hub_transport::{
    Frame, FrameMeta, Host, HubConfig, LoanError, Peer, SendCopyError, Ticket, TrySendCopyError,
    WaitMode,
};

/// Inline sizes, then each class boundary from both sides, then the largest slot.
fn sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..=16).collect();
    sizes.extend([
        17,
        1 << 10,
        (1 << 10) + 1,
        16 << 10,
        (16 << 10) + 1,
        256 << 10,
        (256 << 10) + 1,
        4 << 20,
        (4 << 20) + 1,
        16 << 20,
    ]);
    sizes
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// `send(meta, &[u8])`.
    Copy,
    /// `loan`, fill in place, `send_loan`.
    Loan,
}

/// Frame `k` of pass `pass`: its index for `meta`, its payload seed, and the echo's.
fn index(pass: usize, k: usize) -> u64 {
    (pass * 100 + k) as u64
}
fn seed(i: u64) -> u64 {
    i * 7 + 3
}
fn echo_seed(i: u64) -> u64 {
    i * 7 + 1_000_003
}
fn echo_meta(i: u64) -> hub_transport::FrameMeta {
    meta(i + 5_000)
}

/// The peer's mode in `pass`; the host echoes with the other one, so each side uses both.
fn peer_mode(pass: usize) -> Mode {
    if pass == 0 { Mode::Copy } else { Mode::Loan }
}

fn peer_side(ticket: &Ticket, sizes: &[usize]) {
    let peer = Peer::attach(ticket).expect("attach");
    assert_eq!(peer.id(), ticket.peer_id());
    assert_eq!(peer.host_pid(), std::process::id());
    for pass in 0..2 {
        for (k, &size) in sizes.iter().enumerate() {
            let i = index(pass, k);
            match peer_mode(pass) {
                Mode::Copy => peer.send(meta(i), &payload(size, seed(i))).expect("send"),
                Mode::Loan => {
                    let mut loan = peer.loan(size).expect("loan");
                    assert_eq!(loan.len(), size);
                    assert_eq!(loan.is_empty(), size == 0);
                    assert_eq!(loan.is_inline(), size <= 16, "size {size}");
                    fill(loan.as_mut_slice(), seed(i));
                    peer.send_loan(meta(i), loan).expect("send_loan");
                }
            }
            let echo = peer.recv_timeout(WATCHDOG).expect("recv echo");
            check(&echo, peer.id(), echo_meta(i), size, echo_seed(i));
        }
    }
}

/// Everything about a received frame.
#[track_caller]
fn check(frame: &Frame, peer: u16, meta: hub_transport::FrameMeta, size: usize, seed: u64) {
    assert_eq!(frame.peer(), peer);
    assert_eq!(*frame.meta(), meta, "size {size}");
    assert_eq!(frame.len(), size);
    assert_eq!(frame.is_empty(), size == 0);
    assert_eq!(frame.is_inline(), size <= 16, "size {size}");
    // Zero copy: the checksum reads the slot where it lies.
    let bytes = frame.payload();
    assert_eq!(bytes.len(), size);
    assert_eq!(
        checksum(bytes),
        expected(size, seed),
        "payload of {size} bytes"
    );
}

fn host_side(host: &Host, peer: u16, sizes: &[usize]) {
    for pass in 0..2 {
        for (k, &size) in sizes.iter().enumerate() {
            let i = index(pass, k);
            let frame = if pass == 0 {
                host.recv_timeout(WATCHDOG).expect("recv")
            } else {
                host.recv_from(peer, Some(WATCHDOG)).expect("recv_from")
            };
            check(&frame, peer, meta(i), size, seed(i));
            // While the host holds the frame, exactly its slot is in flight, in the smallest
            // class that fits (nothing else is allocated: the peer waits for the echo).
            let class = class_of(size);
            for (c, s) in host.stats().iter().enumerate() {
                let mine = u32::from(class == Some(c));
                assert_eq!((s.in_flight, s.allocated), (mine, 0), "size {size}: {s:?}");
            }
            match peer_mode(pass) {
                // The peer copied: echo zero copy.
                Mode::Copy => {
                    let mut loan = host.loan(size).expect("loan");
                    assert_eq!(loan.is_inline(), size <= 16);
                    fill(loan.as_mut_slice(), echo_seed(i));
                    host.send_loan(peer, echo_meta(i), loan).expect("send_loan");
                }
                Mode::Loan => host
                    .send(peer, echo_meta(i), &payload(size, echo_seed(i)))
                    .expect("send"),
            }
            drop(frame);
        }
    }
}

#[test]
fn every_size_both_ways_copying_and_zero_copy() {
    let host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let peer = ticket.peer_id();
    let sizes = sizes();
    thread::scope(|s| {
        let plugin = s.spawn(|| peer_side(&ticket, &sizes));
        host_side(&host, peer, &sizes);
        plugin.join().expect("peer thread");
    });
    assert_all_free(&host.stats());
}

#[test]
fn truncated_loan_sends_the_prefix() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    for (loaned, sent) in [(4096, 100), (4096, 16), (20, 3), (4096, 4096)] {
        let mut loan = peer.loan(loaned).expect("loan");
        fill(loan.as_mut_slice(), 42);
        loan.truncate(sent);
        assert_eq!(loan.len(), sent);
        peer.send_loan(meta(9), loan).expect("send_loan");
        let frame = host.try_recv().expect("frame");
        assert_eq!(frame.len(), sent);
        assert_eq!(frame.payload(), &payload(loaned, 42)[..sent]);
        // A slot loaned for more than 16 bytes stays a slot, however short the payload.
        assert_eq!(frame.is_inline(), loaned <= 16);
    }
    drop(peer);
    assert_all_free(&host.stats());
}

#[test]
fn payload_larger_than_the_largest_slot_is_refused() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    let max = 16 << 20;
    match host.loan(max + 1) {
        Err(LoanError::PayloadTooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let big = vec![0u8; max + 1];
    match peer.try_send(meta(2), &big) {
        Err(TrySendCopyError::Failed(SendCopyError::PayloadTooLarge { len, max: m })) => {
            assert_eq!((len, m), (max + 1, max))
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    match host.send(peer.id(), meta(2), &big) {
        Err(SendCopyError::PayloadTooLarge { len, .. }) => assert_eq!(len, max + 1),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    // Nothing was sent, nothing leaked.
    assert!(host.try_recv().is_err());
    assert!(peer.try_recv().is_err());
    drop(peer);
    assert_all_free(&host.stats());
}

/// The `msg_id` that tells a receiving thread of
/// [`several_receivers_take_each_frame_once`] to stop.
const STOP: u64 = u64::MAX;

/// Receive with `recv` until a `STOP` frame: the `msg_id`s received, each payload checked.
fn receive_until_stop(
    recv: impl Fn() -> Result<Frame, hub_transport::RecvTimeoutError>,
) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let frame = recv().expect("a frame within the watchdog: none may be lost");
        let id = frame.meta().msg_id;
        if id == STOP {
            return got;
        }
        assert_eq!(
            frame.payload(),
            &payload(stream_size(id), id)[..],
            "frame {id}"
        );
        got.push(id);
    }
}

/// Frame `i` of the stream: inline, but every seventh in a slot.
fn stream_size(i: u64) -> usize {
    if i.is_multiple_of(7) { 100 } else { 8 }
}

/// Several threads of one side blocked in receives share its frames: each frame reaches exactly
/// one of them, none is lost, and every receiver ends. A wait that sees a frame which another
/// thread then takes must wait again, not return empty-handed nor sleep past the next frame:
/// the senders pause after every other frame, so that both receivers are waiting when the next
/// one comes. On the host one thread in `recv_timeout`, one in `recv_from`; on the peer two in
/// `recv_timeout`; both sides sending at once, in each wait mode.
#[test]
fn several_receivers_take_each_frame_once() {
    const FRAMES: u64 = 2_000;
    let pause = |i: u64| {
        if i % 2 == 1 {
            thread::sleep(std::time::Duration::from_micros(20));
        }
    };
    for mode in [WaitMode::Spin, WaitMode::Adaptive, WaitMode::Block] {
        let mut host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
        host.set_wait_mode(mode);
        let ticket = host.add_peer().expect("add_peer");
        let mut peer = Peer::attach(&ticket).expect("attach");
        peer.set_wait_mode(mode);
        let id = peer.id();
        let frame_meta = |i: u64| FrameMeta {
            msg_id: i,
            ..FrameMeta::default()
        };
        let (at_host, at_peer) = thread::scope(|s| {
            let host_receivers = [
                s.spawn(|| receive_until_stop(|| host.recv_timeout(WATCHDOG))),
                s.spawn(|| receive_until_stop(|| host.recv_from(id, Some(WATCHDOG)))),
            ];
            let peer_receivers =
                [0, 1].map(|_| s.spawn(|| receive_until_stop(|| peer.recv_timeout(WATCHDOG))));
            let peer_sender = s.spawn(|| {
                for i in 0..FRAMES {
                    peer.send(frame_meta(i), &payload(stream_size(i), i))
                        .expect("peer send");
                    pause(i);
                }
                for _ in 0..2 {
                    peer.send(frame_meta(STOP), &[]).expect("peer stop");
                }
            });
            for i in 0..FRAMES {
                host.send(id, frame_meta(i), &payload(stream_size(i), i))
                    .expect("host send");
                pause(i);
            }
            for _ in 0..2 {
                host.send(id, frame_meta(STOP), &[]).expect("host stop");
            }
            peer_sender.join().expect("peer sender");
            let join_all = |threads: [thread::ScopedJoinHandle<'_, Vec<u64>>; 2]| {
                let mut all: Vec<u64> = threads
                    .into_iter()
                    .flat_map(|t| t.join().expect("receiver"))
                    .collect();
                all.sort_unstable();
                all
            };
            (join_all(host_receivers), join_all(peer_receivers))
        });
        let every: Vec<u64> = (0..FRAMES).collect();
        assert_eq!(at_host, every, "{mode:?}: the host's receivers");
        assert_eq!(at_peer, every, "{mode:?}: the peer's receivers");
        drop(peer);
        assert_all_free(&host.stats());
    }
}
