//! Several threads, each its own owner, allocating, sending slots to each other in flight,
//! freeing, growing and reclaiming at once: no slot is ever handed out while it is out, no
//! payload is overwritten by another holder, exactly one of two racing frees wins, and at the
//! end every slot is free and on its list (R5-R8, R10).
//!
//! The iteration counts are scaled down in debug builds (nextest runs those) and up in release
//! builds (`cargo test --release`), where the mixed test runs millions of operations.

#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;

use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabError, SlabLayout, SlotHandle};

type TestSlab = Slab<Arc<HeapRegion>>;

const CLASSES: [ClassConfig; 3] = [
    ClassConfig {
        slot_size: 64,
        slots_per_extent: 8,
    },
    ClassConfig {
        slot_size: 512,
        slots_per_extent: 4,
    },
    ClassConfig {
        slot_size: 4096,
        slots_per_extent: 2,
    },
];
const MAX_EXTENTS: u32 = 4;

fn scaled(debug: u64, release: u64) -> u64 {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

fn new_slab(max_peers: u16) -> TestSlab {
    let layout = SlabLayout::standalone(&CLASSES, MAX_EXTENTS, max_peers).unwrap();
    let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    // SAFETY: a fresh region nobody else uses.
    unsafe { Slab::init(region, layout, OwnerId::HOST) }.unwrap()
}

/// Every slot is free and on its list, and every class's counts add up.
fn assert_all_free(slab: &TestSlab) {
    for (class, s) in slab.stats().iter().enumerate() {
        assert_eq!(
            s.total,
            s.extents * CLASSES[class].slots_per_extent,
            "{s:?}"
        );
        assert_eq!(s.header_total, s.total, "{s:?}");
        assert_eq!((s.free, s.corrupt), (s.total, 0), "class {class}: {s:?}");
        assert_eq!(
            slab.free_list_len(class as u16),
            Ok(s.total),
            "class {class}: the free list is not every slot"
        );
    }
}

/// xorshift64: cheap, deterministic per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One flag per slot, set while a thread holds it: the allocator handing out a slot that is
/// held is the failure this catches first.
struct Held(Vec<Vec<AtomicBool>>);

impl Held {
    fn new() -> Self {
        Self(
            CLASSES
                .iter()
                .map(|c| {
                    (0..c.slots_per_extent * MAX_EXTENTS)
                        .map(|_| AtomicBool::new(false))
                        .collect()
                })
                .collect(),
        )
    }
    fn take(&self, h: SlotHandle) {
        let was = self.0[usize::from(h.class())][h.index() as usize].swap(true, Ordering::AcqRel);
        assert!(!was, "{h:?} handed out while another thread holds it");
    }
    fn give(&self, h: SlotHandle) {
        let was = self.0[usize::from(h.class())][h.index() as usize].swap(false, Ordering::AcqRel);
        assert!(was, "{h:?} given back but nobody held it");
    }
}

/// A slot's payload: a token at both ends, unique to one holding of one slot.
fn stamp(slab: &TestSlab, h: SlotHandle, token: u64) {
    let size = slab.slot_size(h.class()).unwrap() as usize;
    let bytes = slab.slot_data(h).unwrap().cast::<u64>();
    // SAFETY: the slot is allocated to this thread and `size >= 16` bytes long, 64-aligned.
    unsafe {
        bytes.write(token);
        bytes.add(size / 8 - 1).write(!token);
    }
}

fn check_stamp(slab: &TestSlab, h: SlotHandle, token: u64) {
    let size = slab.slot_size(h.class()).unwrap() as usize;
    let bytes = slab.slot_data(h).unwrap().cast::<u64>();
    // SAFETY: the slot was handed to this thread (allocated by it, or sent to it in flight
    // after the sender's last write), `size` bytes long.
    let (first, last) = unsafe { (bytes.read(), bytes.add(size / 8 - 1).read()) };
    assert_eq!(
        (first, last),
        (token, !token),
        "{h:?}: someone else wrote the slot"
    );
}

/// Four threads, peers 0..4: each allocates (random sizes), writes a token, and either frees
/// the slot itself later or marks it in flight to the next thread and sends it there, which
/// checks the token and frees it. A burst at the start makes every class grow.
#[test]
fn mixed_alloc_send_free_across_threads() {
    const THREADS: usize = 4;
    const BURST: usize = 8;
    let slab = new_slab(THREADS as u16);
    let held = Held::new();
    let rounds = scaled(300_000, 2_000_000);
    let start = std::sync::Barrier::new(THREADS);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::channel::<(SlotHandle, u64)>())
        .unzip();
    let ops = AtomicU64::new(0);
    let leftovers: Vec<mpsc::Receiver<(SlotHandle, u64)>> = std::thread::scope(|s| {
        let threads: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let me = slab.with_owner(OwnerId::peer(i as u16)).unwrap();
                let next = OwnerId::peer(((i + 1) % THREADS) as u16);
                let tx = senders[(i + 1) % THREADS].clone();
                let (held, start, ops) = (&held, &start, &ops);
                s.spawn(move || {
                    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ ((i as u64 + 1) * 0x9e37_79b9));
                    let mut mine: Vec<(SlotHandle, u64)> = Vec::new();
                    let mut serial = 0u64;
                    let mut count = 0u64;
                    let token = |serial: &mut u64| {
                        *serial += 1;
                        ((i as u64) << 56) | *serial
                    };
                    // The burst: 32 small allocations against 14 initial slots.
                    for _ in 0..BURST {
                        // Demand stays below capacity, but a class can look empty for a
                        // moment while a grower pushes the slots of its new extent.
                        let h = loop {
                            match me.alloc(1) {
                                Ok(h) => break h,
                                Err(SlabError::NoFreeSlots { .. }) => std::thread::yield_now(),
                                Err(e) => panic!("alloc(1): {e}"),
                            }
                        };
                        held.take(h);
                        let t = token(&mut serial);
                        stamp(&me, h, t);
                        mine.push((h, t));
                    }
                    start.wait();
                    for _ in 0..rounds {
                        // What others sent: check, give back, free.
                        while let Ok((h, t)) = rx.try_recv() {
                            check_stamp(&me, h, t);
                            held.give(h);
                            let _ = me.free(h).unwrap();
                            count += 1;
                        }
                        let r = rng.below(10);
                        if r < 5 && mine.len() < 16 {
                            let len = match rng.below(8) {
                                0 => 4096,
                                1..=2 => rng.below(4096) as usize,
                                _ => rng.below(512) as usize,
                            };
                            match me.alloc(len) {
                                Ok(h) => {
                                    assert!(me.slot_size(h.class()).unwrap() as usize >= len);
                                    held.take(h);
                                    let t = token(&mut serial);
                                    stamp(&me, h, t);
                                    mine.push((h, t));
                                }
                                Err(SlabError::NoFreeSlots { .. }) => {}
                                Err(e) => panic!("alloc({len}): {e}"),
                            }
                        } else if !mine.is_empty() {
                            let (h, t) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                            check_stamp(&me, h, t);
                            if r < 8 {
                                held.give(h);
                                let _ = me.free(h).unwrap();
                            } else {
                                // Held now by the receiver: the flag stays set.
                                me.mark_in_flight(h, next).unwrap();
                                tx.send((h, t)).unwrap();
                            }
                        }
                        count += 1;
                    }
                    for (h, t) in mine {
                        check_stamp(&me, h, t);
                        held.give(h);
                        let _ = me.free(h).unwrap();
                    }
                    // Leaving: what it keeps goes back on the lists.
                    me.give_back_kept().unwrap();
                    ops.fetch_add(count, Ordering::Relaxed);
                    rx
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    drop(senders);
    // What was still in flight when its receiver stopped: the host frees it.
    for rx in leftovers {
        for (h, t) in rx.try_iter() {
            check_stamp(&slab, h, t);
            held.give(h);
            let _ = slab.free(h).unwrap();
        }
    }
    assert!(held.0.iter().flatten().all(|f| !f.load(Ordering::Relaxed)));
    let stats = slab.stats();
    assert!(
        stats[0].extents >= 3,
        "the burst of {} small allocations against {} initial slots grew class 0: {stats:?}",
        THREADS * BURST,
        8 + 4 + 2
    );
    assert_all_free(&slab);
    eprintln!("{} operations, {stats:?}", ops.load(Ordering::Relaxed));
    assert!(ops.load(Ordering::Relaxed) >= rounds * THREADS as u64);
}

/// A spin barrier for two threads: both leave it within a few instructions of each other, which
/// makes the frees after it overlap (a sleeping barrier would let one finish first).
struct SpinBarrier {
    arrived: AtomicU32,
    round: AtomicU32,
}

impl SpinBarrier {
    fn new() -> Self {
        Self {
            arrived: AtomicU32::new(0),
            round: AtomicU32::new(0),
        }
    }
    fn wait(&self) {
        let round = self.round.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) == 1 {
            self.arrived.store(0, Ordering::Relaxed);
            self.round.store(round.wrapping_add(1), Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.round.load(Ordering::Acquire) == round {
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                // Two cores shared with others: let the other thread run.
                std::thread::yield_now();
            }
        }
    }
}

/// Two threads free the same handle at the same moment, round after round: exactly one wins,
/// the other learns the handle was freed, and the generation goes up by exactly one (R5, R7).
/// The loser gets `DoubleFree`, or, when peer 0 held the slot (a round that did not send it)
/// and kept it for its next alloc, peer 1 gets `StaleHandle` for the slot's next generation:
/// the slot is Allocated there, all a participant that does not keep it can see.
#[test]
fn racing_frees_of_one_handle_exactly_one_wins() {
    let slab = new_slab(2);
    let rounds = scaled(40_000, 400_000) as usize;
    let barrier = SpinBarrier::new();
    let current = std::sync::Mutex::new(None::<SlotHandle>);
    let outcomes: Vec<Vec<Result<(), SlabError>>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2u16)
            .map(|t| {
                let me = slab.with_owner(OwnerId::peer(t)).unwrap();
                let (barrier, current) = (&barrier, &current);
                s.spawn(move || {
                    let mut outcomes = Vec::with_capacity(rounds);
                    for round in 0..rounds {
                        if t == 0 {
                            // Alloc by peer 0; every other round sent to peer 1 first.
                            let h = me.alloc(1 + round % 4096).unwrap();
                            if round % 2 == 1 {
                                me.mark_in_flight(h, OwnerId::peer(1)).unwrap();
                            }
                            *current.lock().unwrap() = Some(h);
                        }
                        barrier.wait();
                        let h = current.lock().unwrap().unwrap();
                        outcomes.push(me.free(h).map(|freed| {
                            assert_eq!(freed.class, h.class());
                        }));
                        barrier.wait();
                        if t == 0 {
                            let status = me.slot_status(h.class(), h.index()).unwrap();
                            assert_eq!(status.generation, h.generation() + 1, "round {round}");
                        }
                    }
                    // Leaving: what it keeps goes back on the lists.
                    me.give_back_kept().unwrap();
                    outcomes
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let (mut wins0, mut wins1) = (0, 0);
    // What the loser may learn (see the doc above): peer 0 only ever loses to a free onto the
    // list; peer 1 may lose to peer 0's keep in the rounds that did not send the slot.
    let lost_by_peer_1 = |round: usize, error: &SlabError| match *error {
        SlabError::DoubleFree { .. } => true,
        SlabError::StaleHandle { handle, slot } => {
            round.is_multiple_of(2) && slot == handle.wrapping_add(1)
        }
        _ => false,
    };
    for (round, (a, b)) in outcomes[0].iter().zip(&outcomes[1]).enumerate() {
        match (a, b) {
            (Ok(()), Err(error)) if lost_by_peer_1(round, error) => wins0 += 1,
            (Err(SlabError::DoubleFree { .. }), Ok(())) => wins1 += 1,
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(wins0 + wins1, rounds);
    assert_all_free(&slab);
}

/// Peer 0 allocates, frees and sends slots in flight to peer 2, which is dead; meanwhile the
/// host plays peer 2 having lived (it allocates a few slots as peer 2) and reclaims peer 2,
/// again and again. Peer 0's own slots are never touched (its frees all succeed), and over the
/// run the reclaims free exactly what peer 2 held: its allocations plus what was sent to it.
#[test]
fn reclaim_of_a_dead_owner_while_another_allocates() {
    const DEAD: OwnerId = OwnerId::peer(2);
    let slab = new_slab(3);
    let held = Held::new();
    let rounds = scaled(400_000, 4_000_000);
    let done = AtomicBool::new(false);
    let sent_to_dead = AtomicU64::new(0);
    let (dead_allocs, reclaimed, reclaims) = std::thread::scope(|s| {
        let me = slab.with_owner(OwnerId::peer(0)).unwrap();
        let (held_w, done_w, sent_w) = (&held, &done, &sent_to_dead);
        let worker = s.spawn(move || {
            struct Done<'a>(&'a AtomicBool);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _done = Done(done_w);
            let mut rng = Rng(0xdead_beef);
            let mut mine: Vec<(SlotHandle, u64)> = Vec::new();
            for serial in 0..rounds {
                if rng.below(2) == 0 && mine.len() < 12 {
                    match me.alloc(rng.below(4096) as usize) {
                        Ok(h) => {
                            held_w.take(h);
                            stamp(&me, h, serial);
                            mine.push((h, serial));
                        }
                        Err(SlabError::NoFreeSlots { .. }) => {}
                        Err(e) => panic!("alloc: {e}"),
                    }
                } else if !mine.is_empty() {
                    let (h, t) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                    check_stamp(&me, h, t);
                    held_w.give(h);
                    if rng.below(16) == 0 {
                        me.mark_in_flight(h, DEAD).unwrap();
                        sent_w.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let _ = me.free(h).unwrap();
                    }
                }
            }
            for (h, t) in mine {
                check_stamp(&me, h, t);
                held_w.give(h);
                let _ = me.free(h).unwrap();
            }
            // Leaving: what it keeps goes back on the lists.
            me.give_back_kept().unwrap();
        });
        let (mut dead_allocs, mut reclaimed, mut reclaims) = (0u64, 0u64, 0u64);
        while !done.load(Ordering::Acquire) || reclaims < 100 {
            // A new life of peer 2 each round, with a ledger of its own (R4: a process's
            // private memory dies with it).
            let dead = slab.with_owner(DEAD).unwrap();
            // Peer 2 lives a little: allocates up to three slots, sends one to itself.
            for k in 0..3 {
                match dead.alloc(64 << (k * 3)) {
                    Ok(h) => {
                        dead_allocs += 1;
                        if k == 1 {
                            dead.mark_in_flight(h, DEAD).unwrap();
                        }
                    }
                    Err(SlabError::NoFreeSlots { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            // ... and dies.
            let report = slab.reclaim(DEAD).unwrap();
            assert!(!report.recovered_from_journal && !report.journal_pending);
            reclaimed += u64::from(report.total());
            reclaims += 1;
            // Idempotent as long as nobody sends it anything: peer 0 might, so only the sum
            // is exact; but a reclaim never frees what is not peer 2's (peer 0's frees and
            // token checks above would fail).
        }
        worker.join().unwrap();
        // The last sends to the dead one.
        reclaimed += u64::from(slab.reclaim(DEAD).unwrap().total());
        assert_eq!(slab.reclaim(DEAD).unwrap().total(), 0);
        (dead_allocs, reclaimed, reclaims)
    });
    eprintln!(
        "{reclaims} reclaims freed {reclaimed} slots: {dead_allocs} allocated by the dead one, {} sent to it",
        sent_to_dead.load(Ordering::Relaxed)
    );
    assert!(reclaims >= 100);
    assert_eq!(
        reclaimed,
        dead_allocs + sent_to_dead.load(Ordering::Relaxed),
        "reclaim freed exactly what the dead one held"
    );
    assert!(held.0.iter().flatten().all(|f| !f.load(Ordering::Relaxed)));
    assert_all_free(&slab);
}
