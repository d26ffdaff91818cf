//! R11: "wakeups cost nothing when nobody sleeps". With both ends awake (spin mode), a stream of
//! round trips, inline and through slots, makes no futex system call at all: a publish rings
//! its doorbell with one atomic and finds no waiter to wake, and frees find no allocator asleep.

use hub_transport::{FrameMeta, Host, HubConfig, Peer, WaitMode, futex};

const ROUND_TRIPS: u64 = 2000;

#[test]
fn round_trips_between_awake_ends_make_no_system_call() {
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
