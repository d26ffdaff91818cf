//! All 32 peers of a default hub at once, each a thread: every peer sends a burst of frames
//! (inline and slot payloads), the host receives from any peer (`recv`), checks each frame and
//! echoes it back to `Frame::peer()`, and every peer checks its echoes. Per peer: the count, the
//! order (each ring is FIFO), the sender the host saw and every checksum.

mod common;

use std::thread;

use common::pattern::{checksum, expected, payload};
use common::{Rendezvous, WATCHDOG, assert_all_free};
use hub_transport::{FrameMeta, Host, HubConfig, Peer};

/// Frames each peer sends; below the ring capacity (256), so neither side ever waits for room.
const FRAMES: u64 = 40;
/// Payload sizes, in turn: inline and slots of the two smallest classes.
const SIZES: [usize; 6] = [0, 9, 16, 17, 1000, 5000];

fn msg_id(peer: u16, seq: u64) -> u64 {
    u64::from(peer) << 32 | seq
}

fn size(seq: u64) -> usize {
    SIZES[seq as usize % SIZES.len()]
}

fn seed(peer: u16, seq: u64) -> u64 {
    msg_id(peer, seq) ^ 0x5EED
}

#[test]
fn thirty_two_peers_at_once() {
    let host = Host::create(&HubConfig::default()).expect("create");
    let max = usize::from(host.max_peers());
    assert_eq!(max, 32);
    let tickets: Vec<_> = (0..max)
        .map(|_| host.add_peer().expect("add_peer"))
        .collect();
    let mut ids: Vec<u16> = tickets.iter().map(|t| t.peer_id()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..32).collect::<Vec<u16>>(),
        "every id handed out once"
    );
    assert!(host.add_peer().is_err(), "a 33rd peer is refused");

    let attached = Rendezvous::new(max + 1);
    let mut received = vec![0u64; max];
    thread::scope(|s| {
        let plugins: Vec<_> = tickets
            .iter()
            .map(|ticket| {
                let attached = &attached;
                s.spawn(move || {
                    let peer = Peer::attach(ticket).expect("attach");
                    let id = peer.id();
                    assert_eq!(id, ticket.peer_id());
                    attached.wait();
                    for seq in 0..FRAMES {
                        let meta = FrameMeta {
                            msg_id: msg_id(id, seq),
                            channel_id: u32::from(id),
                            method_id: seq as u32,
                            ..FrameMeta::default()
                        };
                        peer.send(meta, &payload(size(seq), seed(id, seq)))
                            .expect("send");
                    }
                    for seq in 0..FRAMES {
                        let echo = peer.recv_timeout(WATCHDOG).expect("echo");
                        assert_eq!(echo.peer(), id);
                        assert_eq!(echo.meta().msg_id, msg_id(id, seq), "echoes in order");
                        assert_eq!(echo.meta().channel_id, u32::from(id));
                        assert_eq!(echo.len(), size(seq));
                        assert_eq!(checksum(echo.payload()), expected(size(seq), seed(id, seq)));
                    }
                    FRAMES
                })
            })
            .collect();
        attached.wait();
        assert!(
            host.peers()
                .iter()
                .all(|p| p.state == hub_transport::PeerState::Active
                    && p.pid == std::process::id())
        );
        for _ in 0..FRAMES * max as u64 {
            let frame = host.recv_timeout(WATCHDOG).unwrap_or_else(|e| {
                panic!("recv: {e:?}; events: {:?}", common::pending_events(&host))
            });
            let from = frame.peer();
            let meta = *frame.meta();
            assert_eq!(
                meta.msg_id >> 32,
                u64::from(from),
                "Frame::peer() is the sender"
            );
            assert_eq!(meta.channel_id, u32::from(from));
            let seq = meta.msg_id & 0xFFFF_FFFF;
            assert_eq!(seq, received[usize::from(from)], "peer {from}: in order");
            assert_eq!(u64::from(meta.method_id), seq);
            assert_eq!(frame.len(), size(seq));
            assert_eq!(
                checksum(frame.payload()),
                expected(size(seq), seed(from, seq))
            );
            host.send(from, meta, frame.payload()).expect("echo");
            received[usize::from(from)] += 1;
        }
        for plugin in plugins {
            assert_eq!(plugin.join().expect("peer thread"), FRAMES);
        }
    });
    assert!(received.iter().all(|&n| n == FRAMES), "{received:?}");
    assert!(host.try_recv().is_err(), "nothing more");
    assert_all_free(&host.stats());
}
