//! R11: "wakeups cost nothing when nobody sleeps". With both ends awake (spin mode), a stream of
//! round trips, inline and through slots, makes no futex system call at all: a publish rings
//! its doorbell with one atomic and finds no waiter to wake, and frees find no allocator asleep.

use hub_transport::{FrameMeta, Host, HubConfig, Peer, WaitMode, futex};

const ROUND_TRIPS: u64 = 2000;

/// `futex::system_calls` counts the whole process's calls: the tests of this file count theirs
/// one at a time, so that a test runner that runs them on threads of one process (plain
/// `cargo test`) does not add one's calls to the other's.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The right to count, held until the test ends; a test that failed while holding it leaves
/// it to the next all the same.
fn counting() -> std::sync::MutexGuard<'static, ()> {
    COUNTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn round_trips_between_awake_ends_make_no_system_call() {
    let _counting = counting();
    let mut host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    host.set_wait_mode(WaitMode::Spin);
    let ticket = host.add_peer().expect("add_peer");
    let mut peer = Peer::attach(&ticket).expect("attach");
    peer.set_wait_mode(WaitMode::Spin);
    let meta = |i: u64| FrameMeta {
        msg_id: i,
        ..FrameMeta::default()
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..2 * ROUND_TRIPS {
                let frame = peer.recv().expect("peer recv");
                peer.send(*frame.meta(), frame.payload())
                    .expect("peer send");
            }
        });
        // Warm up: the first frames of each size page in their slots.
        for i in 0..ROUND_TRIPS / 10 {
            host.send(0, meta(i), &[1; 8]).expect("send");
            drop(host.recv().expect("recv"));
        }
        let before = futex::system_calls();
        for i in ROUND_TRIPS / 10..ROUND_TRIPS {
            host.send(0, meta(i), &[1; 8]).expect("send inline");
            let reply = host.recv().expect("recv inline");
            assert_eq!(reply.meta().msg_id, i);
        }
        for i in 0..ROUND_TRIPS {
            host.send(0, meta(i), &[2; 1000]).expect("send in a slot");
            let reply = host.recv().expect("recv from a slot");
            assert_eq!((reply.meta().msg_id, reply.len()), (i, 1000));
        }
        let calls = futex::system_calls() - before;
        assert_eq!(
            calls, 0,
            "{calls} futex system calls in {ROUND_TRIPS} x 2 round trips"
        );
    });
}

/// R11 with both ends asleep: a blocking round trip through `send_then_recv` on both sides
/// costs each side one system call (the wake of its send and its own sleep together, in one
/// io_uring call of its thread), so two per round trip; four where that is not available (a
/// wake and a wait a side).
#[test]
fn blocking_round_trips_cost_one_system_call_a_side() {
    const TRIPS: u64 = 500;
    let _counting = counting();
    let mut host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    host.set_wait_mode(WaitMode::Block);
    let ticket = host.add_peer().expect("add_peer");
    let mut peer = Peer::attach(&ticket).expect("attach");
    peer.set_wait_mode(WaitMode::Block);
    let peer_id = peer.id();
    let one_call = std::thread::scope(|s| {
        let echo = s.spawn(|| {
            let one_call = futex::wake_then_wait_is_one_call();
            // The first request, then each reply with the wait for the next request.
            let mut frame = peer.recv().expect("the first request");
            loop {
                let last = frame.meta().msg_id == u64::MAX;
                let meta = *frame.meta();
                let payload = frame.payload().to_vec();
                drop(frame);
                if last {
                    peer.send(meta, &payload).expect("the last echo");
                    return one_call;
                }
                frame = peer
                    .send_then_recv(meta, &payload)
                    .expect("echo, then the next request");
            }
        });
        let one_call = futex::wake_then_wait_is_one_call();
        let meta = |i: u64| FrameMeta {
            msg_id: i,
            ..FrameMeta::default()
        };
        // Warm up: slots paged in, both sides asleep in their steady state.
        for i in 0..50 {
            let reply = host
                .send_then_recv_from(peer_id, meta(i), &[7; 100])
                .expect("warm-up round trip");
            assert_eq!(reply.meta().msg_id, i);
        }
        let before = futex::system_calls();
        for i in 50..50 + TRIPS {
            let payload = if i % 2 == 0 {
                &[1u8; 8][..]
            } else {
                &[2u8; 1000][..]
            };
            let reply = host
                .send_then_recv_from(peer_id, meta(i), payload)
                .expect("round trip");
            assert_eq!((reply.meta().msg_id, reply.payload()), (i, payload));
        }
        let calls = futex::system_calls() - before;
        let last = host
            .send_then_recv_from(peer_id, meta(u64::MAX), b"end")
            .expect("the last round trip");
        assert_eq!(last.payload(), b"end");
        let theirs = echo.join().expect("echo thread");
        let per_trip = calls as f64 / TRIPS as f64;
        eprintln!("{calls} system calls in {TRIPS} blocking round trips ({per_trip:.2} each)");
        // A round trip is at most one call a side (two where io_uring is missing); a little
        // slack for a wake that finds the other side not yet asleep (it then makes its own).
        let bound = if one_call && theirs { 2.1 } else { 4.1 };
        assert!(per_trip <= bound, "{per_trip:.2} system calls a round trip");
        one_call && theirs
    });
    eprintln!("one system call a side: {one_call}");
}
