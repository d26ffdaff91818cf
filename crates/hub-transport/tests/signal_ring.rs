//! A ring and its doorbell together, as the transport uses them: the producer pushes then rings,
//! the consumer waits on the doorbell until `try_pop` yields. Every descriptor must arrive; a lost
//! wakeup would hang the test.

use hub_layout::MsgDescHot;
use hub_transport::ring::{HeapRing, PushError};
use hub_transport::signal::{Doorbell, WaitMode, wait_any_for};
use hub_transport::sync::AtomicU32;
use std::sync::Arc;
use std::thread;

fn desc(seq: u64) -> MsgDescHot {
    MsgDescHot {
        msg_id: seq,
        ..MsgDescHot::empty()
    }
}

/// Producer -> consumer over a data ring with a "data" doorbell, and back-pressure through a
/// "space" doorbell the consumer rings after each pop.
fn stream(mode: WaitMode, capacity: u32, count: u64) {
    let (mut producer, mut consumer) = HeapRing::new(capacity).unwrap().split();
    let words = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]); // [data, space]
    let sender = {
        let words = Arc::clone(&words);
        thread::spawn(move || {
            let (data, space) = (Doorbell::new(&words[0]), Doorbell::new(&words[1]));
            for seq in 0..count {
                let d = desc(seq);
                space
                    .wait_for(
                        || match producer.try_push(&d) {
                            Ok(()) => Some(()),
                            Err(PushError::Full) => None,
                            Err(fault) => panic!("{fault}"),
                        },
                        None,
                        mode,
                    )
                    .unwrap();
                data.ring();
            }
        })
    };
    let (data, space) = (Doorbell::new(&words[0]), Doorbell::new(&words[1]));
    for seq in 0..count {
        let d = data
            .wait_for(|| consumer.try_pop().unwrap(), None, mode)
            .unwrap();
        assert_eq!(d, desc(seq));
        space.ring();
    }
    sender.join().unwrap();
}

#[test]
fn blocking_stream_loses_nothing() {
    stream(WaitMode::Block, 4, 50_000);
}

#[test]
fn adaptive_stream_loses_nothing() {
    stream(WaitMode::Adaptive, 16, 100_000);
}

#[test]
fn spinning_stream_loses_nothing() {
    stream(WaitMode::Spin, 16, 100_000);
}

/// A host consumes 8 peers' rings with one `futex_waitv` wait over their doorbells.
#[test]
fn host_waits_on_all_peers_with_one_call() {
    const PEERS: usize = 8;
    const EACH: u64 = 5_000;
    let words: Arc<Vec<AtomicU32>> = Arc::new((0..PEERS).map(|_| AtomicU32::new(0)).collect());
    let mut consumers = Vec::new();
    let mut peers = Vec::new();
    for peer in 0..PEERS {
        let (mut producer, consumer) = HeapRing::new(8).unwrap().split();
        consumers.push(consumer);
        let words = Arc::clone(&words);
        peers.push(thread::spawn(move || {
            let bell = Doorbell::new(&words[peer]);
            for seq in 0..EACH {
                let d = MsgDescHot {
                    msg_id: seq,
                    channel_id: peer as u32,
                    ..MsgDescHot::empty()
                };
                // The host does not signal space; spin politely while full.
                while producer.try_push(&d) == Err(PushError::Full) {
                    thread::yield_now();
                }
                bell.ring();
            }
        }));
    }
    let bells: Vec<Doorbell<'_>> = words.iter().map(Doorbell::new).collect();
    let mut next = [0u64; PEERS];
    let mut total = 0;
    while total < PEERS as u64 * EACH {
        let poll = || {
            consumers
                .iter_mut()
                .enumerate()
                .find_map(|(peer, c)| c.try_pop().unwrap().map(|d| (peer, d)))
        };
        let (peer, d) = wait_any_for(&bells, poll, None, WaitMode::Block).unwrap();
        assert_eq!((d.channel_id as usize, d.msg_id), (peer, next[peer]));
        next[peer] += 1;
        total += 1;
    }
    for p in peers {
        p.join().unwrap();
    }
    assert!(next.iter().all(|&n| n == EACH));
}
