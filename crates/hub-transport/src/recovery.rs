//! R10's recovery of a peer's slots: the fixed sequence over two lock-free structures (the
//! peer's rings and the shared allocator) that the host's recovery runs under its locks
//! (`Core::recover_peer`, through `Link::recover_dead_peer`). It lives here, apart from the
//! host, so that loom models run this very code: the model below races it with a late send
//! from the dying peer, and `link`'s model runs `Link::recover_dead_peer` itself.

use hub_alloc::{OwnerId, ReclaimReport, Region, Slab, SlabError, SlotHandle};

use crate::ring::RawRing;

/// R10, in its order: scan each ring of `rings` (a view, and the sender and receiver of what it
/// carries), freeing the slots its pending descriptors name in flight between them; then
/// `reset` the rings; then sweep what `peer` sent `host` that no frame of the host's holds (a
/// descriptor published after the scan, or one in a ring the peer corrupted). The slots freed,
/// and whether allocators sleep on a class that got one back.
///
/// R4: never a slot the host holds, whatever the shared words say (the allocator's ledger).
pub(crate) fn recover_rings<R: Region, E: From<SlabError>>(
    slab: &Slab<R>,
    peer: OwnerId,
    host: OwnerId,
    rings: impl IntoIterator<Item = Result<(RawRing, OwnerId, OwnerId), E>>,
    reset: impl FnOnce() -> Result<(), E>,
) -> Result<(u32, bool), E> {
    let mut freed = 0;
    for ring in rings {
        let (view, sender, receiver) = ring?;
        // A ring whose indices the peer corrupted yields nothing to scan: the reclaim after
        // this still finds every slot in flight to the peer, and the sweep after the reset
        // every slot it sent the host.
        for desc in view.pending().unwrap_or_default() {
            // An inline descriptor's INLINE_PAYLOAD_SLOT decodes to no slot.
            if let Ok(handle) =
                SlotHandle::from_slot_ref(desc.payload_slot, desc.payload_generation)
                && slab.free_if_in_flight_to(handle, sender, receiver)
            {
                freed += 1;
            }
        }
    }
    // R10: the scans come before the reset.
    reset()?;
    let (swept, wake) = slab.reclaim_sent(peer, host)?;
    Ok((freed + swept, wake))
}

/// Reclaim what `peer` owns (R10). A slot the dead peer was taking or freeing that a live
/// participant is busy with too leaves its journal pending: look again, `pause` between, at
/// most `tries` more times while that one finishes, then give up on the slot rather than on the
/// id (the journal is cleared).
pub(crate) fn reclaim_settled<R: Region>(
    slab: &Slab<R>,
    peer: OwnerId,
    tries: usize,
    mut pause: impl FnMut(),
) -> Result<ReclaimReport, SlabError> {
    let mut reclaimed = slab.reclaim(peer)?;
    for _ in 0..tries {
        if !reclaimed.journal_pending {
            break;
        }
        pause();
        let again = slab.reclaim(peer)?;
        for (total, more) in reclaimed.freed.iter_mut().zip(&again.freed) {
            *total += more;
        }
        reclaimed.recovered_from_journal |= again.recovered_from_journal;
        reclaimed.wake_waiters |= again.wake_waiters;
        reclaimed.journal_pending = again.journal_pending;
    }
    if reclaimed.journal_pending {
        slab.clear_journal(peer)?;
    }
    Ok(reclaimed)
}

#[cfg(all(test, loom))]
mod loom_tests {
    // A loom model of R10's recovery racing a late send from the dying peer (issue 5).
    //
    // The host's recovery is a fixed sequence over two lock-free structures (the peer's send ring
    // and the shared allocator): `recover_rings` and `reclaim_settled` above, which
    // `Core::recover_peer` runs under its locks. This model runs that code against the late send of a peer that was stopped between marking
    // its slot in flight to the host and publishing the descriptor (evicted past its heartbeat,
    // then continued): the publication races the recovery. Whatever the interleaving, once the id
    // is reused (whose reservation sweeps once more, as `add_peer` does), every slot is free,
    // exactly once, and on the free list exactly once.
    //
    // Not modelled, because it is not safe: a peer that runs *inside* an allocator operation
    // (between a pop and its record, a free and its push, or a mark and its owner store) while
    // the host reclaims it. Reclaim assumes the owner stopped, and the late writes of a live one
    // land on a slot that is free again: the free list is corrupted, which later pops detect
    // (R3) and `Host::rebuild_free_list` repairs. Fencing an evicted owner out of the allocator
    // is the open design question (see the README).

    use std::sync::Arc;

    use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabError, SlabLayout};
    use hub_layout::MsgDescHot;
    use loom::thread;

    use super::{reclaim_settled, recover_rings};
    use crate::ring::HeapRing;

    const PEER: OwnerId = OwnerId::peer(0);

    /// The recovery's reclaim, looking again until the journal is settled (never giving up: the
    /// model checks that it settles).
    fn reclaim_until_settled(host: &Slab<Arc<HeapRegion>>) {
        let report = reclaim_settled(host, PEER, usize::MAX, thread::yield_now).expect("reclaim");
        assert!(!report.journal_pending);
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
            let rings = [Ok::<_, SlabError>((view.clone(), PEER, OwnerId::HOST))];
            recover_rings(&host, PEER, OwnerId::HOST, rings, || {
                view.reset();
                Ok(())
            })
            .expect("scan, reset and sweep");
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
}
