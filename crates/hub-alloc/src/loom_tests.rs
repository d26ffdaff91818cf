//! Loom models of the allocator's lock-free protocols.
//!
//! Each model runs a [`Slab`] over a [`HeapRegion`] with a tiny standalone layout (one class,
//! two or four slots an extent), spawns two participants, each with its own owner and so its own
//! journal word (one journal per owner is the protocol: two threads of one owner would overwrite
//! each other's entries), and checks after they join that no slot was lost, duplicated or
//! handed out twice ([`check_quiet`]). A crash is simulated before the threads start, by taking
//! the first steps of `Slab::pop` by hand ([`Private::crash_in_pop`]).
//!
//! The models of the free list's paths free with `Slab::free_to_list`, the free that never keeps
//! its slot: a participant that allocates in a class keeps one freed slot in its magazine (see
//! `crate::magazine`), which would take their frees off the list. The models at the end cover
//! kept slots.
//!
//! What the slab module does differently under loom, so that these models can run and mean something:
//! `wake::loom_seqcst` puts a SeqCst fence beside R11's SeqCst accesses (loom models SeqCst accesses
//! as AcqRel only); `RESOLVE_ATTEMPTS` is 3, not 64 (a schedule in which the other participant
//! never gets through would otherwise exceed loom's branch limit: the models run reclaim or
//! rebuild again when it reports a pending slot, as the caller is told to); and each class's
//! cache carries a tracked cell per 64 bytes of region, written by growth before it publishes
//! an extent and read by every use of an extent, so that loom checks R8's publication.
//!
//! The preemption bound is `LOOM_MAX_PREEMPTIONS` when set (the xtask sets 2), else 2. Each
//! model prints how many executions it explored. Run them with
//! `RUSTFLAGS="--cfg loom" cargo test --release -p hub-alloc --lib loom_tests -- --nocapture`.

// Under loom the tracked cells make a `HeapRegion` neither `Send` nor `Sync`; loom's threads
// need neither (outside loom both are, which the crate's API relies on).
#![allow(clippy::arc_with_non_send_sync)]

use core::mem::size_of;
use std::collections::HashSet;
use std::sync::Arc;

use hub_layout::{encode_slot_ref, pack_free_head, unpack_free_head};
use loom::thread;

use crate::shared::{Shared, SlotMeta};
use crate::sync::{AtomicU32, Ordering, model};
use crate::{
    ClassConfig, HeapRegion, OwnerId, RebuildReport, ReclaimReport, Slab, SlabError, SlotHandle,
};

type Heap = Arc<HeapRegion>;

/// A dead peer's id in the models that reclaim.
const DEAD: OwnerId = OwnerId::peer(0);
/// A live peer.
const LIVE: OwnerId = OwnerId::peer(1);

/// A host-owned slab over a fresh heap region: one class of `slots` slots an extent, up to
/// `max_extents` extents, peers 0 and 1 besides the host.
fn slab(slots: u32, max_extents: u32) -> Slab<Heap> {
    let layout = crate::SlabLayout::standalone(
        &[ClassConfig {
            slot_size: 64,
            slots_per_extent: slots,
        }],
        max_extents,
        2,
    )
    .unwrap();
    let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    // SAFETY: the region is fresh and no other thread has it yet.
    unsafe { Slab::init(region, layout, OwnerId::HOST) }.unwrap()
}

/// Shared-memory words the public API does not show, reached the way the slab module reaches them.
struct Private<'s> {
    slab: &'s Slab<Heap>,
    shared: Shared<'s, Heap>,
}

impl<'s> Private<'s> {
    fn new(slab: &'s Slab<Heap>) -> Self {
        Self {
            slab,
            shared: Shared::new(slab.region()),
        }
    }

    fn header(&self) -> crate::shared::ClassHeader<'s> {
        self.shared
            .class_header_at(self.slab.layout().class_headers_offset)
            .unwrap()
    }

    fn journal(&self, owner: OwnerId) -> &'s AtomicU32 {
        let layout = self.slab.layout();
        let journal = layout.journal_index(owner).unwrap();
        self.shared.u32_at(layout.journal_offsets[journal]).unwrap()
    }

    /// The meta of slot `index` of the first extent.
    fn meta(&self, index: u32) -> &'s SlotMeta {
        let layout = self.slab.layout();
        let offset = layout.initial_extent_offsets[0]
            + layout.geometry[0].meta_offset
            + index as usize * size_of::<SlotMeta>();
        self.shared.meta_at(offset).unwrap()
    }

    /// The first steps of `owner`'s pop of the head slot, as `Slab::pop` takes them, after
    /// which `owner` dies: the journal names the slot, and, when `cas`, the slot is off the
    /// list. Returns the slot's index.
    fn crash_in_pop(&self, owner: OwnerId, cas: bool) -> u32 {
        let header = self.header();
        let head = header.free_head.load(Ordering::Acquire);
        let (index, tag) = unpack_free_head(head);
        let next = self.meta(index).next_free.load(Ordering::Relaxed);
        self.journal(owner)
            .store(encode_slot_ref(0, index) + 1, Ordering::Release);
        if cas {
            header
                .free_head
                .compare_exchange(
                    head,
                    pack_free_head(next, tag.wrapping_add(1)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .unwrap();
        }
        index
    }

    /// The head and the first extent's metas, for failure messages.
    fn dump(&self) -> String {
        let (first, tag) = unpack_free_head(self.header().free_head.load(Ordering::Relaxed));
        let mut out = format!("head {first:#x} tag {tag};");
        for index in 0..self.slab.layout().classes[0].slots_per_extent {
            let meta = self.meta(index);
            let (generation, state) = crate::shared::split(meta.gen_state.load(Ordering::Relaxed));
            out += &format!(
                " [{index}: gen {generation} state {state} next {:#x} owner {:#x}]",
                meta.next_free.load(Ordering::Relaxed),
                meta.owner.load(Ordering::Relaxed)
            );
        }
        out
    }

    /// Published extent offsets of the class.
    fn extent_offsets(&self) -> Vec<u64> {
        let header = self.header();
        (0..hub_layout::MAX_EXTENTS_PER_CLASS)
            .map(|extent| header.extent_offsets[extent].load(Ordering::Acquire))
            .take_while(|&offset| offset != 0)
            .collect()
    }
}

/// After every participant has joined: `total` slots in the class, each Free, each on the free
/// list exactly once (all of them pop, with distinct indices, and then the list is empty), and
/// every journal empty. Leaves the slots allocated to the host.
fn check_quiet(slab: &Slab<Heap>, total: u32) {
    let stats = slab.stats()[0];
    assert_eq!(stats.total, total, "{stats:?}");
    assert_eq!(stats.header_total, total, "{stats:?}");
    assert_eq!(stats.free, total, "{stats:?}");
    let private = Private::new(slab);
    assert_eq!(slab.free_list_len(0).unwrap(), total, "{}", private.dump());
    for owner in [OwnerId::peer(0), OwnerId::peer(1), OwnerId::HOST] {
        assert_eq!(
            private.journal(owner).load(Ordering::Relaxed),
            0,
            "journal of {owner}"
        );
    }
    let mut seen = HashSet::new();
    for _ in 0..total {
        let handle = slab.try_alloc_in(0).unwrap().expect("a free slot");
        assert!(seen.insert(handle.index()), "slot {} twice", handle.index());
    }
    assert_eq!(slab.try_alloc_in(0).unwrap(), None);
}

/// `reclaim(DEAD)`'s report, run again (after the model's threads joined) for as long as it
/// leaves the journal pending, as its documentation tells the caller to; the reports merged.
fn reclaim_until_done(slab: &Slab<Heap>, mut report: ReclaimReport) -> ReclaimReport {
    while report.journal_pending {
        let again = slab.reclaim(DEAD).unwrap();
        report.freed = report
            .freed
            .iter()
            .zip(&again.freed)
            .map(|(a, b)| a + b)
            .collect();
        report.recovered_from_journal |= again.recovered_from_journal;
        report.wake_waiters |= again.wake_waiters;
        report.journal_pending = again.journal_pending;
    }
    report
}

/// A rebuild's report, after rebuilding again (once the model's threads joined) for as long as
/// slots are left pending, as its documentation tells the caller to.
fn rebuild_until_settled(slab: &Slab<Heap>, mut report: RebuildReport) -> RebuildReport {
    while report.pending > 0 {
        report = slab.rebuild_free_list(0).unwrap();
    }
    report
}

/// Assert that no two of `handles` name the same slot.
fn assert_distinct(handles: &[SlotHandle]) {
    let indices: HashSet<u32> = handles.iter().map(|h| h.index()).collect();
    assert_eq!(
        indices.len(),
        handles.len(),
        "a slot handed out twice: {handles:?}"
    );
}

/// Model 1, R7's ABA: A pops while B pops X, pops Y and pushes X back. In the interleaving
/// where A read head X (next Y) before B's three steps, the tag makes A's compare-and-swap fail;
/// without it A would set the head to Y, which B holds. No slot is handed out twice, and every
/// slot comes back to the list exactly once.
#[test]
fn treiber_aba() {
    model("treiber_aba", || {
        let host = slab(4, 1);
        let a = host.with_owner(OwnerId::peer(0)).unwrap();
        let b = host.with_owner(OwnerId::peer(1)).unwrap();
        let thread_a = thread::spawn(move || a.try_alloc_in(0).unwrap().expect("a slot"));
        let thread_b = thread::spawn(move || {
            let x = b.try_alloc_in(0).unwrap().expect("a slot");
            let y = b.try_alloc_in(0).unwrap().expect("a slot");
            let _ = b.free_to_list(x).unwrap();
            y
        });
        let got_a = thread_a.join().unwrap();
        let y = thread_b.join().unwrap();
        let held = [got_a, y];
        assert_distinct(&held);
        let stats = host.stats()[0];
        assert_eq!(stats.allocated as usize, held.len());
        assert_eq!(host.free_list_len(0).unwrap() as usize, 4 - held.len());
        for handle in held {
            let _ = host.free_to_list(handle).unwrap();
        }
        check_quiet(&host, 4);
    });
}

/// Model 2, R5: two participants free the same handle at once. Exactly one free succeeds; the
/// other is a `DoubleFree` (or, had the slot been taken again, `StaleHandle`), and the slot is
/// free, and on the list, once.
#[test]
fn racing_double_free() {
    model("racing_double_free", || {
        let host = slab(2, 1);
        // Allocated by a participant of its own: neither freer's ledger holds it (R4).
        let handle = host
            .with_owner(DEAD)
            .unwrap()
            .try_alloc_in(0)
            .unwrap()
            .expect("a slot");
        let freers: Vec<_> = [OwnerId::peer(0), OwnerId::peer(1)]
            .into_iter()
            .map(|owner| {
                let slab = host.with_owner(owner).unwrap();
                thread::spawn(move || slab.free_to_list(handle))
            })
            .collect();
        let results: Vec<_> = freers.into_iter().map(|t| t.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for result in &results {
            match result {
                Ok(freed) => assert_eq!(freed.class, 0),
                Err(SlabError::DoubleFree { class: 0, index }) => {
                    assert_eq!(*index, handle.index())
                }
                Err(SlabError::StaleHandle { .. }) => {}
                Err(error) => panic!("the losing free failed with {error:?}"),
            }
        }
        let status = host.slot_status(0, handle.index()).unwrap();
        assert_eq!(status.generation, handle.generation() + 1);
        check_quiet(&host, 2);
    });
}

/// Model 3, R5 and R10: a slot is in flight to peer P, which died. The host, as the receiver
/// of R10's scan of P's ring, frees it while another participant runs `reclaim(P)`: exactly one
/// of them frees it, the other finds it freed, and every slot ends on the list once.
#[test]
fn free_racing_reclaim() {
    model("free_racing_reclaim", || {
        let host = slab(2, 1);
        let sender = host.with_owner(LIVE).unwrap();
        let handle = sender.try_alloc_in(0).unwrap().expect("a slot");
        sender.mark_in_flight(handle, DEAD).unwrap();
        let scanner = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.free_to_list(handle))
        };
        let reclaimer = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || slab.reclaim(DEAD).unwrap())
        };
        let scanned = scanner.join().unwrap();
        let report = reclaimer.join().unwrap();
        assert!(!report.recovered_from_journal && !report.journal_pending);
        match &scanned {
            Ok(_) => assert_eq!(report.freed, [0], "freed twice"),
            Err(SlabError::DoubleFree { .. } | SlabError::StaleHandle { .. }) => {
                assert_eq!(report.freed, [1], "freed by nobody")
            }
            Err(error) => panic!("the scan's free failed with {error:?}"),
        }
        check_quiet(&host, 2);
    });
}

/// Model 3b, R6 and R10: a participant sends a slot to peer P (`mark_in_flight`) while another
/// runs `reclaim(P)`. Once the slot's owner word names P, reclaim may free it and push it on
/// the list; the sender must have written every word of the meta by then. Had it recorded
/// itself as the sender (in `next_free`) after naming the receiver, that store would land on
/// the link of a slot already back on the list: the host's id there is no slot, so the list
/// would be broken.
#[test]
fn send_racing_reclaim_of_its_receiver() {
    model("send_racing_reclaim_of_its_receiver", || {
        let host = slab(2, 1);
        // The host's id in a link is no slot index: a misplaced sender store breaks the list.
        let sender = host.with_owner(OwnerId::HOST).unwrap();
        let handle = sender.try_alloc_in(0).unwrap().expect("a slot");
        let sending = thread::spawn(move || sender.mark_in_flight(handle, DEAD));
        let reclaimer = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || slab.reclaim(DEAD).unwrap())
        };
        sending.join().unwrap().unwrap();
        let report = reclaimer.join().unwrap();
        assert!(!report.recovered_from_journal && !report.journal_pending);
        // Freed by this reclaim or, if it scanned before the send, by the next one.
        let again = host.reclaim(DEAD).unwrap();
        assert_eq!(report.freed[0] + again.freed[0], 1, "{report:?} {again:?}");
        check_quiet(&host, 2);
    });
}

/// Model 4, R8: two participants allocate from the same empty class at once, and both grow it.
/// Each gets a slot, the two slots differ, the reserved ranges never overlap, `current_size`
/// is the initial size plus the published extents, and every slot of every extent ends on the
/// list once.
#[test]
fn concurrent_growers() {
    model("concurrent_growers", || {
        let host = slab(2, 3);
        let mut held = vec![
            host.try_alloc_in(0).unwrap().expect("a slot"),
            host.try_alloc_in(0).unwrap().expect("a slot"),
        ];
        let growers: Vec<_> = [OwnerId::peer(0), OwnerId::peer(1)]
            .into_iter()
            .map(|owner| {
                let slab = host.with_owner(owner).unwrap();
                thread::spawn(move || slab.alloc_in(0))
            })
            .collect();
        for grower in growers {
            held.push(grower.join().unwrap().expect("a grower got no slot"));
        }
        assert_distinct(&held);
        let private = Private::new(&host);
        let offsets = private.extent_offsets();
        let layout = host.layout();
        let size = layout.extent_size(0) as u64;
        let mut ranges: Vec<(u64, u64)> = offsets.iter().map(|&o| (o, o + size)).collect();
        ranges.sort_unstable();
        assert!(
            ranges.windows(2).all(|pair| pair[0].1 <= pair[1].0),
            "extents overlap: {offsets:?}"
        );
        let current_size = private
            .shared
            .u64_at(layout.current_size_offset)
            .unwrap()
            .load(Ordering::Relaxed);
        let extents = offsets.len() as u64;
        assert!(extents >= 2, "nobody grew");
        assert_eq!(
            current_size,
            layout.initial_size() as u64 + (extents - 1) * size
        );
        assert_eq!(ranges.last().unwrap().1, current_size);
        let extent_count = private
            .shared
            .u32_at(layout.extent_count_offset)
            .unwrap()
            .load(Ordering::Relaxed);
        assert_eq!(u64::from(extent_count), extents);
        for handle in held {
            let _ = host.free_to_list(handle).unwrap();
        }
        check_quiet(&host, 2 * extents as u32);
    });
}

/// Model 4b, R8 and R10: a participant grows the empty class while the host reclaims a dead
/// peer's slot. The reclaim's scan reads the new extent's metas as soon as its offset is
/// published (loom checks that the publication orders the extent's initialisation before
/// that), must not free the grower's fresh slots, and frees the dead peer's slot once; the
/// grower may take that slot instead of growing.
#[test]
fn grow_racing_reclaim() {
    model("grow_racing_reclaim", || {
        let host = slab(2, 2);
        let dead = host.with_owner(DEAD).unwrap();
        let lost = dead.try_alloc_in(0).unwrap().expect("a slot");
        let kept = host.try_alloc_in(0).unwrap().expect("a slot");
        let grower = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || slab.alloc_in(0).unwrap())
        };
        let reclaimer = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.reclaim(DEAD).unwrap())
        };
        let grown = grower.join().unwrap();
        let report = reclaimer.join().unwrap();
        assert_eq!(report.freed, [1]);
        assert_ne!(grown.index(), kept.index());
        let status = host.slot_status(0, grown.index()).unwrap();
        assert_eq!(status.owner, LIVE.raw());
        let extents = Private::new(&host).extent_offsets().len() as u32;
        assert_eq!(extents == 1, grown.index() == lost.index());
        for handle in [grown, kept] {
            let _ = host.free_to_list(handle).unwrap();
        }
        check_quiet(&host, 2 * extents);
    });
}

/// Model 5, R5 and R10: peer D died holding slot `a` (Allocated) and in the middle of a pop of
/// slot `b`: its journal names `b`, which is off the list, Free, and owned by nobody. A live
/// participant allocates and frees while the host reclaims D: the reclaim frees `a`, puts `b`
/// back, and every slot ends on the list once.
#[test]
fn alloc_racing_reclaim_of_crash_after_pop() {
    model("alloc_racing_reclaim_of_crash_after_pop", || {
        let host = slab(4, 1);
        let dead = host.with_owner(DEAD).unwrap();
        let a = dead.try_alloc_in(0).unwrap().expect("a slot");
        let b = Private::new(&dead).crash_in_pop(DEAD, true);
        assert_ne!(a.index(), b);
        let live = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || {
                let handle = slab.try_alloc_in(0).unwrap().expect("a slot");
                let _ = slab.free_to_list(handle).unwrap();
            })
        };
        let reclaimer = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.reclaim(DEAD).unwrap())
        };
        live.join().unwrap();
        let report = reclaim_until_done(&host, reclaimer.join().unwrap());
        check_quiet(&host, 4);
        assert_eq!(report.freed, [1]);
        assert!(report.recovered_from_journal);
    });
}

/// Model 5b, R5 and R10: peer D died just after naming the head slot `b` in its journal, before
/// its pop's compare-and-swap: `b` is still on the list. A live participant pops `b`, and frees
/// it, while the host reclaims D: the reclaim must not take `b` for lost while the live one
/// holds it (or is about to push it), and every slot ends on the list once.
#[test]
fn alloc_racing_reclaim_of_crash_before_pop() {
    model("alloc_racing_reclaim_of_crash_before_pop", || {
        let host = slab(4, 1);
        let dead = host.with_owner(DEAD).unwrap();
        let a = dead.try_alloc_in(0).unwrap().expect("a slot");
        let b = Private::new(&dead).crash_in_pop(DEAD, false);
        assert_ne!(a.index(), b);
        let live = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || {
                let handle = slab.try_alloc_in(0).unwrap().expect("a slot");
                let _ = slab.free_to_list(handle).unwrap();
            })
        };
        let reclaimer = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.reclaim(DEAD).unwrap())
        };
        live.join().unwrap();
        let report = reclaim_until_done(&host, reclaimer.join().unwrap());
        check_quiet(&host, 4);
        assert_eq!(report.freed, [1]);
        assert!(
            !report.recovered_from_journal,
            "a slot in use taken for lost"
        );
    });
}

/// Model 6, R11: an allocator finds the class empty, announces itself, checks again and
/// sleeps; meanwhile a slot is freed. Either the check sees the slot or the free reports that
/// a waiter must be woken, and then the word no longer holds the value the sleeper waits on,
/// so its `FUTEX_WAIT` returns at once. Anything else is a lost wakeup.
#[test]
fn slot_available_wakeup() {
    model("slot_available_wakeup", || {
        let host = slab(2, 1);
        // Freed by another participant than its allocator, whose ledger is left behind.
        let first = host
            .with_owner(DEAD)
            .unwrap()
            .try_alloc_in(0)
            .unwrap()
            .expect("a slot");
        let second = host.try_alloc_in(0).unwrap().expect("a slot");
        let freer = {
            let slab = host.with_owner(DEAD).unwrap();
            thread::spawn(move || slab.free_to_list(first).unwrap())
        };
        let waiter = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || {
                if let Some(handle) = slab.try_alloc_in(0).unwrap() {
                    return Some(Ok(handle));
                }
                let seen = slab.announce_waiter(0).unwrap();
                if slab.has_free_slot(0) {
                    None
                } else {
                    // Asleep on `seen`.
                    Some(Err(seen))
                }
            })
        };
        let freed = freer.join().unwrap();
        let mut held = vec![second];
        match waiter.join().unwrap() {
            Some(Ok(handle)) => held.push(handle),
            None => {}
            Some(Err(seen)) => {
                assert!(freed.wake_waiters, "lost wakeup: nobody wakes the sleeper");
                let word = host.slot_available_word(0).unwrap();
                assert_ne!(
                    word.load(Ordering::Relaxed),
                    seen,
                    "lost wakeup: the wait blocks"
                );
            }
        }
        for handle in held {
            let _ = host.free_to_list(handle).unwrap();
        }
        check_quiet(&host, 2);
    });
}

/// Model 5c: as 5b, but the live participant, once it took `b`, frees a slot it held before
/// giving `b` back, so that reclaim may read its journal naming that other slot. Reclaim must
/// still learn that `b` is taken: every journal store is Release, and reclaim reads the state
/// again after the journals.
#[test]
fn alloc_racing_reclaim_journal_names_a_free() {
    model("alloc_racing_reclaim_journal_names_a_free", || {
        let host = slab(4, 1);
        let dead = host.with_owner(DEAD).unwrap();
        let a = dead.try_alloc_in(0).unwrap().expect("a slot");
        let slab = host.with_owner(LIVE).unwrap();
        let other = slab.try_alloc_in(0).unwrap().expect("a slot");
        let b = Private::new(&dead).crash_in_pop(DEAD, false);
        assert!(a.index() != b && other.index() != b);
        let live = thread::spawn(move || {
            let handle = slab.try_alloc_in(0).unwrap().expect("a slot");
            let _ = slab.free_to_list(other).unwrap();
            let _ = slab.free_to_list(handle).unwrap();
        });
        let reclaimer = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.reclaim(DEAD).unwrap())
        };
        live.join().unwrap();
        let report = reclaim_until_done(&host, reclaimer.join().unwrap());
        check_quiet(&host, 4);
        assert_eq!(report.freed, [1]);
        assert!(
            !report.recovered_from_journal,
            "a slot in use taken for lost"
        );
    });
}

/// Model 5d: as 5c, with the live participant taking `b` and then another slot (its journal
/// may name the second pop when reclaim reads it), then freeing both.
#[test]
fn alloc_racing_reclaim_journal_names_a_pop() {
    model("alloc_racing_reclaim_journal_names_a_pop", || {
        let host = slab(4, 1);
        let dead = host.with_owner(DEAD).unwrap();
        let a = dead.try_alloc_in(0).unwrap().expect("a slot");
        let b = Private::new(&dead).crash_in_pop(DEAD, false);
        assert_ne!(a.index(), b);
        let live = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || {
                let first = slab.try_alloc_in(0).unwrap().expect("a slot");
                let second = slab.try_alloc_in(0).unwrap().expect("a slot");
                let _ = slab.free_to_list(first).unwrap();
                let _ = slab.free_to_list(second).unwrap();
            })
        };
        let reclaimer = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.reclaim(DEAD).unwrap())
        };
        live.join().unwrap();
        let report = reclaim_until_done(&host, reclaimer.join().unwrap());
        check_quiet(&host, 4);
        assert_eq!(report.freed, [1]);
        assert!(
            !report.recovered_from_journal,
            "a slot in use taken for lost"
        );
    });
}

/// Model 7, the repair of R3: the host rebuilds a class's free list while a participant frees
/// a slot. The slot the free turns Free but cannot push yet (the list is held) must be left to
/// that free, not chained by the rebuild as well; a slot it pushed on the old list just before
/// the hold, its journal still naming it, must not be dropped with the old list. Every slot
/// ends on the list once.
#[test]
fn rebuild_racing_free() {
    model("rebuild_racing_free", || {
        let host = slab(2, 1);
        let slab = host.with_owner(LIVE).unwrap();
        let handle = slab.try_alloc_in(0).unwrap().expect("a slot");
        let live = thread::spawn(move || {
            let _ = slab.free_to_list(handle).unwrap();
        });
        let rebuilder = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.rebuild_free_list(0).unwrap())
        };
        live.join().unwrap();
        let report = rebuild_until_settled(&host, rebuilder.join().unwrap());
        assert_eq!(report.quarantined, 0);
        check_quiet(&host, 2);
    });
}

/// Model 7b: the host rebuilds while a participant allocates and frees. A slot whose pop
/// named it in the journal but lost its compare-and-swap to the hold must not be dropped; a
/// slot popped before the hold must not be chained. Every slot ends on the list once.
#[test]
fn rebuild_racing_alloc() {
    model("rebuild_racing_alloc", || {
        let host = slab(2, 1);
        let live = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || {
                let handle = slab.try_alloc_in(0).unwrap().expect("a slot");
                let _ = slab.free_to_list(handle).unwrap();
            })
        };
        let rebuilder = {
            let host = host.with_owner(OwnerId::HOST).unwrap();
            thread::spawn(move || host.rebuild_free_list(0).unwrap())
        };
        live.join().unwrap();
        let report = rebuild_until_settled(&host, rebuilder.join().unwrap());
        assert_eq!(report.quarantined, 0);
        check_quiet(&host, 2);
    });
}

/// Run `work` with `owner`'s handle on `host` while the host audits class 0, then check that
/// a settled look reported no damage and that every slot is accounted for (models 8 and 8b).
fn audit_beside(host: Slab<Heap>, owner: OwnerId, work: impl FnOnce(&Slab<Heap>) + Send + 'static) {
    let live = {
        let slab = host.with_owner(owner).unwrap();
        thread::spawn(move || work(&slab))
    };
    let auditor = {
        let host = host.with_owner(OwnerId::HOST).unwrap();
        thread::spawn(move || host.audit(0).unwrap())
    };
    live.join().unwrap();
    let audit = auditor.join().unwrap();
    assert_eq!(audit.bad_states, 0);
    assert!(!audit.held);
    if audit.settled {
        assert_eq!(audit.list_fault, None, "{audit:?}");
        assert!(audit.off_list.is_empty(), "{audit:?}");
    }
    check_quiet(&host, 2);
}

/// Model 8: the host audits while a participant allocates and frees. A settled look at a
/// healthy class never reports damage: no list fault, and no free slot off the list that no
/// journal names (a false report would make the host rebuild lists nobody broke).
#[test]
fn audit_racing_alloc_and_free() {
    model("audit_racing_alloc_and_free", || {
        audit_beside(slab(2, 1), LIVE, |slab| {
            let handle = slab.try_alloc_in(0).unwrap().expect("a slot");
            let _ = slab.free_to_list(handle).unwrap();
        });
    });
}

/// Model 8b: the audit's walk against a pop and two pushes that change a link it reads: the
/// head is slot 1 alone (slot 0 allocated), and a participant pops 1, frees 0, frees 1 (whose
/// link now names 0). A walk that read the new link must not take the old head for settled
/// (it would report slot 0, allocated in its snapshot, as a listed slot that is not free).
#[test]
fn audit_racing_a_relinked_head() {
    model("audit_racing_a_relinked_head", || {
        let host = slab(2, 1);
        // Allocated by a participant of its own, whose ledger the frees below leave behind.
        let first = host
            .with_owner(DEAD)
            .unwrap()
            .try_alloc_in(0)
            .unwrap()
            .expect("slot 0");
        assert_eq!(first.index(), 0);
        audit_beside(host, LIVE, move |slab| {
            let second = slab.try_alloc_in(0).unwrap().expect("slot 1");
            // Slot 0 was allocated by another: `free` checks generation and state, not who frees.
            let _ = slab.free_to_list(first).unwrap();
            let _ = slab.free_to_list(second).unwrap();
        });
    });
}

/// After a forged free: the host's repair (a rebuild, as its auditor makes when a free slot
/// stays off the list), then every slot is free and on the list once.
fn repair_then_check(host: &Slab<Heap>, total: u32) {
    let _ = rebuild_until_settled(host, host.rebuild_free_list(0).unwrap());
    check_quiet(host, total);
}

/// Model 13, R4: the host holds a loan; a peer forges its free (the real `free`, from a handle
/// whose ledger does not hold it: Allocated -> Free and pushed) while the host allocates. The
/// host never gets the slot it holds as a second loan: its pop finds the slot in its ledger
/// and leaves it off the list.
#[test]
fn forged_free_of_a_held_loan_racing_alloc() {
    model("forged_free_of_a_held_loan_racing_alloc", || {
        let host = Arc::new(slab(2, 1));
        let held = host.try_alloc_in(0).unwrap().expect("a slot");
        let forger = {
            let peer = host.with_owner(LIVE).unwrap();
            thread::spawn(move || peer.free_to_list(held))
        };
        let allocator = {
            let host = host.clone();
            thread::spawn(move || {
                let got: Vec<SlotHandle> = (0..2)
                    .filter_map(|_| host.try_alloc_in(0).unwrap())
                    .collect();
                got
            })
        };
        let forged = forger.join().unwrap();
        let got = allocator.join().unwrap();
        assert!(forged.is_ok(), "{forged:?}");
        for handle in &got {
            assert_ne!(
                handle.index(),
                held.index(),
                "the held slot lent again: {got:?}"
            );
        }
        assert!(host.holds(held));
        // The host is done with its loan: the shared state says it is free already.
        assert!(host.free_to_list(held).is_err());
        for handle in got {
            let _ = host.free_to_list(handle).unwrap();
        }
        repair_then_check(&host, 2);
    });
}

/// Model 14, R4: a slot is in flight to the host. The host's receive claims it (`accept`, by
/// compare-and-swap into its ledger) while a third participant forges its free and the host
/// allocates. Of the frame and a loan, the host holds the slot at most once.
#[test]
fn accept_racing_a_forged_free_and_alloc() {
    model("accept_racing_a_forged_free_and_alloc", || {
        let host = Arc::new(slab(2, 1));
        let sender = host.with_owner(LIVE).unwrap();
        let sent = sender.try_alloc_in(0).unwrap().expect("a slot");
        sender.mark_in_flight(sent, OwnerId::HOST).unwrap();
        let receiver = {
            let host = host.clone();
            thread::spawn(move || host.accept(sent, LIVE))
        };
        let allocator = {
            let host = host.clone();
            thread::spawn(move || host.try_alloc_in(0).unwrap())
        };
        // The forger: another peer frees the host's frame-to-be.
        let forged = host.with_owner(DEAD).unwrap().free_to_list(sent);
        let accepted = receiver.join().unwrap();
        let loaned = allocator.join().unwrap();
        assert!(forged.is_ok(), "{forged:?}");
        if accepted.is_ok() {
            assert!(
                loaned.is_none_or(|loan| loan.index() != sent.index()),
                "the frame's slot lent as {loaned:?}"
            );
            assert!(host.holds(sent));
            assert!(host.free_to_list(sent).is_err(), "forged free already");
        }
        if let Some(loan) = loaned {
            let _ = host.free_to_list(loan);
        }
        repair_then_check(&host, 2);
    });
}

/// Model 15, R4 and R5: another process writes garbage into a participant's journal word, and
/// goes on writing it while the participant allocates and frees. The journal is only written by
/// its owner's windows, never waited on (the owner's threads take turns under a private lock),
/// so the owner is never held up, and the word ends empty after each window.
#[test]
fn garbage_in_a_journal_never_blocks_its_owner() {
    model("garbage_in_a_journal_never_blocks_its_owner", || {
        let host = Arc::new(slab(2, 1));
        Private::new(&host)
            .journal(OwnerId::HOST)
            .store(0x1234_5678, Ordering::Relaxed);
        let scribbler = {
            let host = host.clone();
            thread::spawn(move || {
                Private::new(&host)
                    .journal(OwnerId::HOST)
                    .store(0xdead_beef, Ordering::Relaxed);
            })
        };
        let handle = host.try_alloc_in(0).unwrap().expect("a slot");
        let _ = host.free_to_list(handle).unwrap();
        scribbler.join().unwrap();
        // The scribble may land after the last window: a reclaim of the owner would find it;
        // the owner itself is not bothered.
        Private::new(&host)
            .journal(OwnerId::HOST)
            .store(0, Ordering::Relaxed);
        check_quiet(&host, 2);
    });
}

/// Model 16, R4: the host's auditor restores the allocator's words (`restore_constants`) while
/// a thread of the same process grows the class. The growth publishes its extent and records it
/// in the private table in one step, so the restore never takes the host's own new extent for
/// one that does not fit, never zeroes its published offset, and the grown slot stays where it
/// was handed out.
#[test]
fn restore_racing_the_hosts_own_growth() {
    model("restore_racing_the_hosts_own_growth", || {
        let host = Arc::new(slab(2, 2));
        let held = [
            host.try_alloc_in(0).unwrap().expect("a slot"),
            host.try_alloc_in(0).unwrap().expect("a slot"),
        ];
        let auditor = {
            let host = host.clone();
            thread::spawn(move || host.restore_constants())
        };
        let grown = host.alloc_in(0).unwrap();
        let at = host.slot_data(grown).unwrap();
        let restored = auditor.join().unwrap();
        assert!(
            !restored.contains(&"extent offset"),
            "the host's own extent was taken for a forged one: {restored:?}"
        );
        assert_eq!(Private::new(&host).extent_offsets().len(), 2);
        assert_eq!(host.slot_data(grown).unwrap(), at, "the grown slot moved");
        for handle in held.into_iter().chain([grown]) {
            let _ = host.free_to_list(handle).unwrap();
        }
        check_quiet(&host, 4);
    });
}

/// Slots an extent in the magazine models: a magazine of one cell.
const KEEPING: u32 = 16;

/// Model 17, R5 and R4 with the magazine: two threads of one participant free the same handle
/// at once. The ledger's compare-and-swap lets exactly one go on (and keep the slot); the
/// other is a `DoubleFree` or a `StaleHandle`. The slot is kept once, not held, and comes back
/// to the list once.
#[test]
fn keep_racing_double_free_in_one_participant() {
    model("keep_racing_double_free_in_one_participant", || {
        let host = slab(KEEPING, 1);
        let owner = Arc::new(host.with_owner(LIVE).unwrap());
        let handle = owner.try_alloc_in(0).unwrap().expect("a slot");
        let freers: Vec<_> = (0..2)
            .map(|_| {
                let owner = Arc::clone(&owner);
                thread::spawn(move || owner.free(handle))
            })
            .collect();
        let results: Vec<_> = freers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        for result in &results {
            match result {
                Ok(freed) => assert!(!freed.wake_waiters),
                Err(SlabError::DoubleFree { .. } | SlabError::StaleHandle { .. }) => {}
                Err(error) => panic!("the losing free failed with {error:?}"),
            }
        }
        assert_eq!(owner.held_count(0), 0, "the slot is held after its free");
        assert!(!owner.holds(handle));
        assert_eq!(owner.kept_count(0), 1, "{results:?}");
        assert_eq!(owner.give_back_kept().unwrap(), 1);
        check_quiet(&host, KEEPING);
    });
}

/// Model 18, as model 17 while an allocator of the class announces that it waits: the racing
/// frees may then take different paths (one keeps, one frees onto the list). Still exactly one
/// wins, the slot is never both listed and kept, and it comes back to the list once.
#[test]
fn keep_and_list_free_racing_in_one_participant() {
    model("keep_and_list_free_racing_in_one_participant", || {
        let host = slab(KEEPING, 1);
        let owner = Arc::new(host.with_owner(LIVE).unwrap());
        let handle = owner.try_alloc_in(0).unwrap().expect("a slot");
        let waiter = host.with_owner(DEAD).unwrap();
        let freers: Vec<_> = (0..2)
            .map(|_| {
                let owner = Arc::clone(&owner);
                thread::spawn(move || owner.free(handle))
            })
            .collect();
        let _ = waiter.announce_waiter(0).unwrap();
        let results: Vec<_> = freers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert_eq!(owner.held_count(0), 0, "the slot is held after its free");
        // On the list or kept, not both and not neither.
        let listed = host.free_list_len(0).unwrap();
        let kept = owner.kept_count(0);
        assert_eq!(listed + kept, KEEPING, "listed {listed}, kept {kept}");
        let _ = owner.give_back_kept().unwrap();
        check_quiet(&host, KEEPING);
    });
}

/// Model 19, the magazine's cells and the ledger's "kept": two threads of one participant each
/// free a slot they hold (keeping it) and allocate again, while a third gives every kept slot
/// back. No slot is handed out twice or lost; every handle the allocs return is held, and the
/// slots come back to the list once each.
#[test]
fn keep_take_and_give_back_on_three_threads() {
    model("keep_take_and_give_back_on_three_threads", || {
        let host = slab(KEEPING, 1);
        let owner = Arc::new(host.with_owner(LIVE).unwrap());
        let first = owner.try_alloc_in(0).unwrap().expect("a slot");
        let second = owner.try_alloc_in(0).unwrap().expect("a slot");
        let workers: Vec<_> = [first, second]
            .into_iter()
            .map(|handle| {
                let owner = Arc::clone(&owner);
                thread::spawn(move || {
                    let _ = owner.free(handle).unwrap();
                    owner.try_alloc_in(0).unwrap().expect("a slot")
                })
            })
            .collect();
        let giver = {
            let owner = Arc::clone(&owner);
            thread::spawn(move || owner.give_back_kept().unwrap())
        };
        let held: Vec<_> = workers.into_iter().map(|t| t.join().unwrap()).collect();
        let _ = giver.join().unwrap();
        assert_distinct(&held);
        for &handle in &held {
            assert!(owner.holds(handle), "{handle:?} handed out but not held");
        }
        assert_eq!(owner.held_count(0), 2);
        for handle in held {
            let _ = owner.free(handle).unwrap();
        }
        let _ = owner.give_back_kept().unwrap();
        assert_eq!(owner.kept_count(0), 0);
        check_quiet(&host, KEEPING);
    });
}

/// Model 20, R11 with the magazine: an allocator takes the class's one listed slot, finds the
/// class empty for a second, announces itself, checks again and sleeps, while the holder of
/// another slot frees it (keeping it if the list still looked non-empty and it missed the
/// announcement) and then gives its kept slots back, as an endpoint does before it sleeps.
/// Either the allocator sees a slot, or the free or the give-back reports a waiter to wake and
/// the word no longer holds the value the sleeper waits on.
#[test]
fn kept_slot_and_a_waiting_allocator() {
    model("kept_slot_and_a_waiting_allocator", || {
        let host = slab(KEEPING, 1);
        let holder = host.with_owner(DEAD).unwrap();
        let mine = holder.try_alloc_in(0).unwrap().expect("a slot");
        // The others but one, so that one slot is listed: the holder's free may keep.
        let rest: Vec<_> = (2..KEEPING)
            .map(|_| host.try_alloc_in(0).unwrap().expect("a slot"))
            .collect();
        let freer = thread::spawn(move || {
            let freed = holder.free(mine).unwrap();
            let _ = holder.give_back_kept().unwrap();
            let wakes = holder.take_wakes();
            (freed.wake_waiters || wakes & 1 != 0, holder)
        });
        let waiter = {
            let slab = host.with_owner(LIVE).unwrap();
            thread::spawn(move || {
                let first = slab.try_alloc_in(0).unwrap().expect("the listed slot");
                if let Some(handle) = slab.try_alloc_in(0).unwrap() {
                    return (first, Some(Ok(handle)), slab);
                }
                let seen = slab.announce_waiter(0).unwrap();
                if slab.has_free_slot(0) {
                    (first, None, slab)
                } else {
                    // Asleep on `seen`.
                    (first, Some(Err(seen)), slab)
                }
            })
        };
        let (woken, holder) = freer.join().unwrap();
        let (first, outcome, waiter) = waiter.join().unwrap();
        assert_eq!(holder.kept_count(0), 0);
        let _ = waiter.free(first).unwrap();
        match outcome {
            Some(Ok(handle)) => {
                let _ = waiter.free(handle).unwrap();
            }
            None => {}
            Some(Err(seen)) => {
                assert!(woken, "lost wakeup: nobody wakes the sleeper");
                let word = host.slot_available_word(0).unwrap();
                assert_ne!(
                    word.load(Ordering::Relaxed),
                    seen,
                    "lost wakeup: the wait blocks"
                );
            }
        }
        let _ = waiter.give_back_kept().unwrap();
        for handle in rest {
            let _ = host.free(handle).unwrap();
        }
        let _ = host.give_back_kept().unwrap();
        check_quiet(&host, KEEPING);
    });
}
