//! Issue 13, the peer side and the host's receive: a real peer process (the chaos peer's `poke`)
//! writes raw words at named offsets, and the test checks what honest participants do.
//!
//! - Attack 6: a forged host-state word sends no honest peer away while the host runs; the
//!   host's drop still does (its lock, a kernel fact, is what peers believe).
//! - Attack 8: a second `Peer::from_env` is a typed error and never a second owner of the
//!   inherited descriptor; `attach_spec` never takes a descriptor this process owns.
//! - Item 9: `Host::recv` without a deadline survives a peer clearing the waiter bits;
//!   `Host::recv_from` takes nothing from the ring of a peer that is not attached.
//! - A peer's send whose push faults after its slot was marked in flight (indices another
//!   process moved) frees the slot.

mod common;
mod plugin;

use std::io::{BufRead, Write};
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{WATCHDOG, wait_exit};
use hub_layout::{DescRingHeader, INLINE_PAYLOAD_SLOT, MsgDescHot, PeerEntry};
use hub_transport::{
    AttachError, Disconnect, FrameMeta, Host, HubConfig, Peer, PeerState, RecvError,
    RecvTimeoutError, SendError, SpecSource, TicketSpec, TryRecvError, pad, ring::RingError,
};
use plugin::poke::{Named, Poker};

/// `msg_id` of the greeting the test peers send first (the test peer, the chaos peer's `hello`).
const HELLO: u64 = u64::MAX - 1;

fn hub(max_peers: u16) -> (Host, Named) {
    let config = HubConfig::new().max_peers(max_peers);
    let host = Host::create(&config).expect("create the hub");
    (host, Named::new(max_peers, config.ring_capacity))
}

/// The receive bell (host to peer) of peer `peer`'s entry.
fn recv_bell(named: &Named, peer: u16) -> usize {
    named.layout.peer_entry_offset(peer) + offset_of!(PeerEntry, recv_data_futex)
}

/// Attack 6: a peer writes "gone" into the host-state word while the host runs. Honest peers,
/// real processes, one blocked in `recv` and woken on purpose, one echoing frames, keep
/// working: neither reports `HostGone`. When the host is then really dropped (its process goes
/// on), the blocked one reports `HostGone`.
#[test]
fn a_forged_host_state_word_sends_no_honest_peer_away() {
    const ECHOES: u64 = 40;
    let (host, named) = hub(4);
    let mut blocked = plugin::chaos(&["recv-block"]);
    blocked.stdout(Stdio::piped());
    let (blocked_id, mut blocked) = host.spawn_peer(&mut blocked).expect("spawn recv-block");
    let mut lines = plugin::stdout(&mut blocked);
    let mut line = String::new();
    lines.read_line(&mut line).expect("READY");
    assert_eq!(line.trim(), "READY");

    let mut echo = plugin::test_peer(&["echo", &ECHOES.to_string()]);
    let (echo_id, mut echo) = host.spawn_peer(&mut echo).expect("spawn echo");
    let hello = host.recv_from(echo_id, Some(WATCHDOG)).expect("hello");
    assert_eq!(hello.meta().msg_id, HELLO);
    drop(hello);

    let mut poker = Poker::spawn(&host);
    poker.w32(pad::HOST_STATE, 1);
    // Make the honest peers look at the word now.
    poker.wake(recv_bell(&named, blocked_id.index()));
    poker.wake(recv_bell(&named, echo_id.index()));
    for k in 0..ECHOES {
        // Forged again and again, and the echoer's bell rung: each of its looks finds "gone".
        poker.w32(pad::HOST_STATE, 1);
        poker.wake(recv_bell(&named, echo_id.index()));
        let payload = common::pattern::payload(if k % 2 == 0 { 9 } else { 3000 }, k);
        let meta = FrameMeta {
            msg_id: common::pattern::checksum(&payload),
            channel_id: k as u32,
            ..FrameMeta::default()
        };
        host.send(echo_id, meta, &payload)
            .unwrap_or_else(|e| panic!("send {k}: {e}"));
        let back = host
            .recv_from(echo_id, Some(WATCHDOG))
            .unwrap_or_else(|e| panic!("echo {k}: {e} (the echoer believed the forged word?)"));
        assert_eq!(
            (back.meta().channel_id, back.payload()),
            (k as u32, &payload[..])
        );
    }
    assert!(wait_exit(&mut echo, "the echoer").success());
    // The blocked peer was woken many times meanwhile and is still blocked.
    poker.w32(pad::HOST_STATE, 1);
    poker.wake(recv_bell(&named, blocked_id.index()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        blocked.try_wait().expect("try_wait").is_none(),
        "the blocked peer left while the host runs (it believed the forged word)"
    );
    // And the host put its word back from its private copy (R4: within a tick).
    assert_eq!(
        poker.r32(pad::HOST_STATE),
        0,
        "the host restored its state word"
    );

    // The host really leaves, its process going on: its lock is released, and now the word
    // (forged or not) is believed.
    drop(host);
    let status = wait_exit(&mut blocked, "the blocked peer");
    assert_eq!(
        status.code(),
        Some(0),
        "recv-block exits 0 on HostGone: {status}"
    );
}

/// Attack 8: a second `Peer::from_env` in a process whose first `Peer` lives is a typed error
/// that leaves the descriptor open (no `open` afterwards gets its number), the first `Peer`
/// goes on working, and a third after the first left is refused as well. The checks run in
/// the child (the chaos peer's `from-env-twice`), which exits 0 when they all hold.
#[test]
fn a_second_from_env_is_a_typed_error_and_closes_nothing() {
    let (host, _) = hub(1);
    let mut command = plugin::chaos(&["from-env-twice"]);
    let (id, mut child) = host.spawn_peer(&mut command).expect("spawn");
    match host.recv_from(id, Some(WATCHDOG)) {
        Ok(hello) => {
            assert_eq!(hello.meta().msg_id, HELLO);
            host.send(id, *hello.meta(), hello.payload()).expect("echo");
        }
        Err(error) => {
            let status = wait_exit(&mut child, "from-env-twice");
            panic!("no hello ({error}); the child exited with {status}");
        }
    }
    let status = wait_exit(&mut child, "from-env-twice");
    assert!(
        status.success(),
        "from-env-twice: {status} (see its stderr)"
    );
}

/// Attack 8, in one process: a ticket naming a descriptor that this process owns (here a
/// file's) is refused without touching it: the file stays open and usable.
#[test]
fn attach_spec_never_takes_a_descriptor_this_process_owns() {
    let path = common::temp_path("owned");
    let _remove = common::TempFiles(vec![path.clone()]);
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(&[0u8; 4096]).expect("write");
    let fd = file.as_raw_fd();
    let spec = TicketSpec {
        peer: 0,
        epoch: 1,
        source: SpecSource::Fd(fd),
        ready: None,
    };
    for _ in 0..2 {
        match Peer::attach_spec(&spec) {
            Err(AttachError::DescriptorTaken { fd: named }) => assert_eq!(named, fd),
            other => panic!("expected DescriptorTaken, got {other:?}"),
        }
    }
    file.write_all(b"still mine")
        .expect("the file is still open");
    file.sync_all().expect("sync");
    assert_eq!(file.metadata().expect("stat").len(), 4096 + 10);
}

/// Item 9: the host sleeps in `recv` with no deadline; a peer process clears the waiter bit
/// of an honest peer's send bell, so that the honest peer's next ring makes no wake. The host
/// still receives the honest frame (it looks again at least every 100 ms).
#[test]
fn host_recv_without_deadline_survives_cleared_waiter_bits() {
    let (host, named) = hub(2);
    let host = Arc::new(host);
    let mut poker = Poker::spawn(&host);
    let ticket = host.add_peer().expect("add_peer");
    let honest = Peer::attach(&ticket).expect("attach");
    let bell = named.peer_send_bell(ticket.peer_id());
    let (done, result) = mpsc::channel();
    let receiver = Arc::clone(&host);
    std::thread::spawn(move || {
        let frame = receiver.recv().map(|f| (f.peer(), f.meta().msg_id));
        let _ = done.send(frame);
    });
    // The host announced itself on the honest peer's bell, and went to sleep.
    let announced = Instant::now();
    while poker.r32(bell) & 1 == 0 {
        assert!(announced.elapsed() < WATCHDOG, "the host never waited");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    let word = poker.r32(bell);
    poker.w32(bell, word & !1);
    assert!(result.try_recv().is_err(), "nothing was sent yet");
    let meta = FrameMeta {
        msg_id: 77,
        ..FrameMeta::default()
    };
    honest.send(meta, b"hello").expect("send");
    let got = result
        .recv_timeout(Duration::from_secs(5))
        .expect("Host::recv slept on after the frame came (its wakeup was skipped)");
    assert_eq!(got.expect("recv"), (ticket.peer_id(), 77));
}

/// Item 9: a peer process writes a frame (an inline descriptor and a head) into the send ring
/// of a reserved entry nobody attached to, and of an empty one. `recv_from` takes neither:
/// it waits for the reserved peer (and times out), and refuses the empty one at once.
#[test]
fn recv_from_takes_nothing_from_a_peer_that_is_not_attached() {
    let (host, named) = hub(3);
    let mut poker = Poker::spawn(&host);
    let reserved = host.add_peer().expect("add_peer");
    let reserved_id = reserved.peer_id();
    let empty_id = (0..3)
        .find(|&p| p != poker.peer && p != reserved_id)
        .expect("a third id");
    for peer in [reserved_id, empty_id] {
        let ring = named.layout.ring_offset(2 * usize::from(peer));
        let desc = ring + size_of::<DescRingHeader>();
        poker.w64(desc + offset_of!(MsgDescHot, msg_id), 0xF0F0);
        poker.w32(
            desc + offset_of!(MsgDescHot, payload_slot),
            INLINE_PAYLOAD_SLOT,
        );
        poker.w32(desc + offset_of!(MsgDescHot, payload_len), 4);
        poker.w64(ring + offset_of!(DescRingHeader, visible_head), 1);
    }
    match host.recv_from(reserved_id, Some(Duration::from_millis(300))) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("from the reserved peer: expected Timeout, got {other:?}"),
    }
    match host.recv_from(empty_id, Some(Duration::from_millis(300))) {
        Err(RecvTimeoutError::Failed(RecvError::Disconnected(Disconnect::PeerNotActive {
            peer,
            state,
        }))) => {
            assert_eq!((peer, state), (empty_id, PeerState::Empty));
        }
        other => panic!("from the empty entry: expected PeerNotActive, got {other:?}"),
    }
    // The host's `recv` takes neither either, and the attached poke peer is still served.
    assert!(matches!(host.try_recv(), Err(TryRecvError::Empty)));
    drop(reserved);
}

/// A send that marks its slot in flight and then finds its push impossible frees the slot:
/// another process set the peer's send ring to head = tail = `u64::MAX` before the peer
/// attached, so the ring has room, the slot is marked in flight to the host, and only then does
/// the push find that one more frame would wrap the head (the `HeadOverflow` error is what shows
/// that the mark came first: a check refusing earlier would fail differently). The slot must
/// not stay in flight (nobody would ever free it: no descriptor names it): the class counts
/// every slot as free or kept, and the peer's next loan and its drop are counted as usual.
#[test]
fn a_send_whose_push_faults_after_marking_frees_its_slot() {
    let (host, named) = hub(2);
    let mut poker = Poker::spawn(&host);
    let ticket = host.add_peer().expect("add_peer");
    let ring = named.layout.send_ring_offset(ticket.peer_id());
    poker.w64(ring + offset_of!(DescRingHeader, visible_head), u64::MAX);
    poker.w64(ring + offset_of!(DescRingHeader, tail), u64::MAX);
    let peer = Peer::attach(&ticket).expect("attach over the moved indices");
    let class_of = |host: &Host| host.snapshot().expect("a snapshot").classes[0];
    let total = class_of(&host).total;

    let loan = peer.loan(64).expect("a slot");
    match peer.send_loan(FrameMeta::default(), loan) {
        Err(SendError::Ring {
            source: RingError::HeadOverflow { head: u64::MAX },
            ..
        }) => {}
        other => panic!("expected HeadOverflow, got {other:?}"),
    }
    let class = class_of(&host);
    assert_eq!(
        (class.in_flight, class.allocated, class.free + class.kept),
        (0, 0, total),
        "the slot is neither in flight nor held: {class:?}"
    );
    // The peer's allocator goes on: a new loan is counted, and its drop gives it back.
    let again = peer.loan(64).expect("a slot after the failed send");
    assert_eq!(class_of(&host).allocated, 1);
    drop(again);
    let class = class_of(&host);
    assert_eq!((class.in_flight, class.allocated), (0, 0));
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}
