//! A loom model of R10's recovery racing a late send from the dying peer (issue 5).
//!
//! The host's recovery is a fixed sequence over two lock-free structures (the peer's send ring
//! and the shared allocator); the rest of `Host::recover_peer` is locks and bookkeeping. This
//! model runs that sequence against the late send of a peer that was stopped between marking
//! its slot in flight to the host and publishing the descriptor (evicted past its heartbeat,
//! then continued): the publication races the recovery. Whatever the interleaving, once the id
//! is reused (whose reservation sweeps once more, as `add_peer` does), every slot is free,
//! exactly once, and on the free list exactly once.
//!
//! Not modelled, because it is not safe: a peer that runs *inside* an allocator operation
//! (between a pop and its record, a free and its push, or a mark and its owner store) while
//! the host reclaims it. Reclaim assumes the owner stopped, and the late writes of a live one
//! land on a slot that is free again: the free list is corrupted, which later pops detect
//! (R3) and `Host::rebuild_free_list` repairs. Fencing an evicted owner out of the allocator
//! is the open design question (see the README).

use std::sync::Arc;

use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout, SlotHandle};
use hub_layout::MsgDescHot;
use loom::thread;

use crate::ring::HeapRing;

const PEER: OwnerId = OwnerId::peer(0);

fn reclaim_until_settled(host: &Slab<Arc<HeapRegion>>) {
    loop {
        let report = host.reclaim(PEER).expect("reclaim");
        if !report.journal_pending {
            return;
        }
        thread::yield_now();
    }
}

#[test]
fn recovery_racing_a_late_send_leaks_nothing() {
    loom::model(|| {
        let layout = SlabLayout::standalone(
            &[ClassConfig {
                slot_size: 64,
                slots_per_extent: 2,
            }],
            1,
            1,
        )
        .expect("layout");
        let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
        // SAFETY: a fresh region nobody else uses yet.
        let host = unsafe { Slab::init(region, layout, OwnerId::HOST) }.expect("init");
        let peer = host.with_owner(PEER).expect("peer handle");
        let (mut producer, _consumer) = HeapRing::new(2).expect("ring").split();
        let view = producer.ring().clone();
        let handle = peer.alloc_in(0).expect("a slot");
        peer.mark_in_flight(handle, OwnerId::HOST)
            .expect("in flight");

        // The stopped peer continues, and publishes its last frame.
        let sender = thread::spawn(move || {
            let desc = MsgDescHot {
                payload_slot: handle.slot_ref(),
                payload_generation: handle.generation(),
                payload_len: 8,
                ..MsgDescHot::empty()
            };
            let _ = producer.try_push(&desc);
        });

        // The host's recovery, in R10's order: scan the ring, reset it, sweep what the peer
        // sent that the host holds no frame of (none here), reclaim what the peer owns.
        for desc in view.pending().unwrap_or_default() {
            if let Ok(handle) =
                SlotHandle::from_slot_ref(desc.payload_slot, desc.payload_generation)
            {
                host.free_if_in_flight_to(handle, PEER, OwnerId::HOST);
            }
        }
        view.reset();
        host.reclaim_sent(PEER, OwnerId::HOST).expect("sweep");
        reclaim_until_settled(&host);

        sender.join().expect("sender");
        // The id is reused: the reservation sweeps once more (a send later than the recovery).
        host.reclaim_sent(PEER, OwnerId::HOST)
            .expect("sweep at reuse");
        reclaim_until_settled(&host);

        let stats = host.stats();
        assert_eq!(stats[0].free, stats[0].total, "{stats:?}");
        assert_eq!(host.free_list_len(0), Ok(stats[0].total));
    });
}
