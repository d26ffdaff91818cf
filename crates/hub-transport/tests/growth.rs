//! Growth under load (R8): several peers (threads) each hold many 256 KiB slots at once, so the
//! class must grow extent after extent while they race. Every loan succeeds up to what the hub
//! can give (the class at its largest, plus the larger classes it falls back to), the next one
//! is refused, the host reads every slot (including those of extents other participants
//! published), and at the end every slot is free again in the grown class. And peers attach
//! while another grows: attaching validates every published extent (R2) and must not mistake
//! growth in progress for a bad offset.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::{Rendezvous, WATCHDOG, assert_all_free, meta};
use hub_layout::{HUB_SIZE_CLASSES, MAX_EXTENTS_PER_CLASS};
use hub_transport::{Host, HubConfig, Peer, PeerState, TryLoanError};

const PEERS: usize = 4;
const CLASS: usize = 2;
const SIZE: usize = 256 << 10;

#[test]
fn class_grows_to_its_capacity_under_concurrent_load() {
    let host = Host::create(&HubConfig::new().max_peers(PEERS as u16)).expect("create");
    let before = host.stats();
    assert_eq!(before[CLASS].extents, 1);
    let per_extent = HUB_SIZE_CLASSES[CLASS].1.next_power_of_two();
    // A 256 KiB loan takes a slot of its class, else of a larger class, else grows its class.
    let class_capacity = per_extent * MAX_EXTENTS_PER_CLASS as u32;
    let larger: u32 = before[CLASS + 1..].iter().map(|s| s.total).sum();
    let capacity = class_capacity + larger;
    assert_eq!(capacity % PEERS as u32, 0);
    let per_peer = capacity as usize / PEERS;

    let tickets: Vec<_> = (0..PEERS)
        .map(|_| host.add_peer().expect("add_peer"))
        .collect();
    let all_held = Rendezvous::new(PEERS + 1);
    let checked = Rendezvous::new(PEERS + 1);
    let mut received = 0;
    thread::scope(|s| {
        for ticket in &tickets {
            let (all_held, checked) = (&all_held, &checked);
            s.spawn(move || {
                let peer = Peer::attach(ticket).expect("attach");
                let id = u64::from(peer.id());
                let mut held = Vec::with_capacity(per_peer);
                for k in 0..per_peer as u64 {
                    // Blocking with a watchdog: near the end another peer may be between
                    // reserving the last extent and pushing its slots (a transient empty class).
                    let mut loan = peer.loan_timeout(SIZE, WATCHDOG).expect("a slot");
                    let tag = (id << 32 | k).to_le_bytes();
                    let bytes = loan.as_mut_slice();
                    bytes[..8].copy_from_slice(&tag);
                    bytes[SIZE - 8..].copy_from_slice(&tag);
                    held.push(loan);
                }
                all_held.wait();
                checked.wait();
                for (k, loan) in held.into_iter().enumerate() {
                    let mut m = meta(k as u64 + 2);
                    m.msg_id = id << 32 | k as u64;
                    peer.send_loan(m, loan).expect("send_loan");
                }
            });
        }
        all_held.wait();
        // Everything the hub can give for 256 KiB is out: the next loan is refused.
        match host.try_loan(SIZE) {
            Err(TryLoanError::NoFreeSlots { class }) => assert_eq!(usize::from(class), CLASS),
            other => panic!("expected NoFreeSlots, got {other:?}"),
        }
        let stats = host.stats();
        let grown = stats[CLASS];
        assert_eq!(grown.extents, MAX_EXTENTS_PER_CLASS as u32, "{grown:?}");
        assert_eq!(
            (grown.total, grown.allocated, grown.free),
            (class_capacity, class_capacity, 0),
            "{grown:?}"
        );
        assert_eq!(grown.header_total, grown.total);
        for s in &stats[CLASS + 1..] {
            assert_eq!((s.extents, s.allocated, s.free), (1, s.total, 0), "{s:?}");
        }
        for s in &stats[..CLASS] {
            assert_eq!((s.extents, s.allocated), (1, 0), "{s:?}");
        }
        checked.wait();
        // The host reads every slot, wherever it lies.
        let mut next = [0u64; PEERS];
        for _ in 0..capacity {
            let frame = host.recv_timeout(WATCHDOG).expect("frame");
            let id = u64::from(frame.peer());
            let k = next[frame.peer() as usize];
            let tag = (id << 32 | k).to_le_bytes();
            assert_eq!(frame.meta().msg_id, id << 32 | k);
            assert_eq!(frame.len(), SIZE);
            assert_eq!(&frame.payload()[..8], &tag);
            assert_eq!(&frame.payload()[SIZE - 8..], &tag);
            next[frame.peer() as usize] += 1;
            received += 1;
        }
    });
    assert_eq!(received, capacity);
    let after = host.stats();
    assert_eq!(after[CLASS].extents, MAX_EXTENTS_PER_CLASS as u32);
    assert_all_free(&after);
    // The grown class serves again, and nothing more grows.
    let loans: Vec<_> = (0..class_capacity)
        .map(|_| host.try_loan(SIZE).expect("a slot"))
        .collect();
    assert_eq!(host.stats()[CLASS].allocated, class_capacity);
    assert_eq!(host.stats()[CLASS + 1].allocated, 0);
    drop(loans);
    assert_all_free(&host.stats());
}

/// Peers attach, one after the other, while another peer grows three classes to their largest.
/// Each growth extends the file, then publishes the new extent's offset (R8): an attacher that
/// measured the file before and reads the offset after must look again, not refuse the hub.
#[test]
fn peers_attach_while_another_grows() {
    let host = Host::create(&HubConfig::new().max_peers(2).ring_capacity(16)).expect("create");
    let grower = host.add_peer().expect("add_peer");
    let done = AtomicBool::new(false);
    let mut attaches = 0;
    thread::scope(|s| {
        let grow = s.spawn(|| {
            let peer = Peer::attach(&grower).expect("attach");
            let mut held = Vec::new();
            for size in [1 << 10, 16 << 10, 256 << 10] {
                loop {
                    match peer.try_loan(size) {
                        Ok(loan) => held.push(loan),
                        Err(TryLoanError::NoFreeSlots { .. }) => break,
                        Err(error) => {
                            done.store(true, Ordering::SeqCst);
                            panic!("loan of {size}: {error}");
                        }
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
            held.len()
        });
        while !done.load(Ordering::SeqCst) {
            let ticket = host.add_peer().expect("add_peer");
            let id = ticket.peer_id();
            match Peer::attach(&ticket) {
                Ok(peer) => drop(peer),
                Err(error) => {
                    done.store(true, Ordering::SeqCst);
                    panic!("attach {attaches} during growth: {error}");
                }
            }
            host.recover_peer(id).expect("recover");
            attaches += 1;
        }
        let held = grow.join().expect("grower");
        let stats = host.stats();
        for class in 0..3 {
            assert_eq!(
                stats[class].extents, MAX_EXTENTS_PER_CLASS as u32,
                "{stats:?}"
            );
        }
        assert_eq!(held as u32, stats.iter().map(|s| s.total).sum::<u32>());
    });
    assert!(attaches > 0);
    host.recover_peer(0).expect("recover");
    assert_eq!(host.peers()[0].state, PeerState::Empty);
    assert_all_free(&host.stats());
}
