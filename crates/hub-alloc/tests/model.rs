//! The allocator against a model: random sequences of alloc, mark in flight, free (of live
//! handles, and of stale ones, which must fail), and reclaim, by random owners, over a small
//! layout that grows. After every step the model's state of every slot equals the allocator's
//! (generation, state, owner), its counts equal `stats()`, the free list holds exactly the free
//! slots, and no slot is handed out while it is out (R5-R8, R10).
//!
//! The model keeps slots as the allocator's magazines do (PROTOCOL.md, "Kept slots"): every
//! class here has fewer than 32 slots an extent, so each owner keeps at most one slot per
//! class; it keeps one only when it took a slot of the class (from the list, a new extent or
//! its cell) since its last keep, and only while the class's list is not empty; and only a
//! free by the slot's holder keeps: its allocator, or the receiver that accepted it.

#![cfg(not(loom))]

use std::collections::HashSet;
use std::sync::Arc;

use hub_alloc::{
    ClassConfig, HeapRegion, OwnerId, Refusal, Slab, SlabError, SlabLayout, SlotHandle,
};
use hub_layout::{NO_OWNER, SlotState};
use proptest::prelude::*;

const CLASSES: [ClassConfig; 3] = [
    ClassConfig {
        slot_size: 32,
        slots_per_extent: 2,
    },
    ClassConfig {
        slot_size: 128,
        slots_per_extent: 2,
    },
    ClassConfig {
        slot_size: 512,
        slots_per_extent: 1,
    },
];
const MAX_EXTENTS: u32 = 3;
const MAX_PEERS: u16 = 3;
/// Owners by number: peers `0..MAX_PEERS`, then the host.
const OWNERS: usize = MAX_PEERS as usize + 1;

fn owner(n: usize) -> OwnerId {
    if n < usize::from(MAX_PEERS) {
        OwnerId::peer(n as u16)
    } else {
        OwnerId::HOST
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `alloc(len)` by owner `by`.
    Alloc { by: usize, len: usize },
    /// `alloc_in(class)` by owner `by`.
    AllocIn { by: usize, class: u16 },
    /// `try_alloc_in(class)` by owner `by`.
    TryAllocIn { by: usize, class: u16 },
    /// `mark_in_flight` of a live handle to a receiver (`OWNERS` is one beyond `max_peers`), by
    /// the owner that allocated it (R4: the only one whose ledger holds it).
    Mark { pick: usize, receiver: usize },
    /// `accept` of a live handle by the owner it is in flight to, naming its sender.
    Accept { pick: usize },
    /// `free` of a live handle: by its allocator while it is allocated (the ledger's holder),
    /// by any owner once it is in flight.
    Free { pick: usize, by: usize },
    /// `free` of a handle that was freed already: must fail.
    FreeStale { pick: usize, by: usize },
    /// `mark_in_flight` of a handle that was freed already: must fail.
    MarkStale { pick: usize },
    /// `reclaim(owner)` by the host.
    Reclaim { owner: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..OWNERS, 0usize..600).prop_map(|(by, len)| Op::Alloc { by, len }),
        1 => (0..OWNERS, 0u16..4).prop_map(|(by, class)| Op::AllocIn { by, class }),
        1 => (0..OWNERS, 0u16..3).prop_map(|(by, class)| Op::TryAllocIn { by, class }),
        2 => (any::<usize>(), 0..=OWNERS).prop_map(|(pick, receiver)| Op::Mark { pick, receiver }),
        2 => any::<usize>().prop_map(|pick| Op::Accept { pick }),
        3 => (any::<usize>(), 0..OWNERS).prop_map(|(pick, by)| Op::Free { pick, by }),
        1 => (any::<usize>(), 0..OWNERS).prop_map(|(pick, by)| Op::FreeStale { pick, by }),
        1 => any::<usize>().prop_map(|pick| Op::MarkStale { pick }),
        1 => (0..OWNERS).prop_map(|owner| Op::Reclaim { owner }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotModel {
    generation: u32,
    state: SlotState,
    owner: u32,
    /// Allocated, and kept by its owner for its next alloc of the class: no handle to it is
    /// live.
    kept: bool,
    /// In flight, and accepted by its receiver, whose ledger holds it now.
    accepted: bool,
    /// Who marked it in flight, while it is.
    sender: Option<usize>,
}

impl SlotModel {
    /// A slot on its list at `generation`.
    fn listed(generation: u32) -> Self {
        Self {
            generation,
            state: SlotState::Free,
            owner: NO_OWNER,
            kept: false,
            accepted: false,
            sender: None,
        }
    }
}

/// What the allocator must look like.
struct Model {
    /// Per class, per global index.
    slots: Vec<Vec<SlotModel>>,
    /// Handles that own a slot now (allocated or in flight).
    live: Vec<SlotHandle>,
    /// Handles whose slot was freed since.
    stale: Vec<SlotHandle>,
    /// Per owner, per class: whether a free may keep (it took a slot of the class since its
    /// last keep: the magazine's credit, at most one cell's worth here), and the index of the
    /// slot it keeps, if any.
    magazines: Vec<Vec<(bool, Option<u32>)>>,
}

impl Model {
    fn new() -> Self {
        Self {
            slots: CLASSES
                .iter()
                .map(|c| {
                    (0..c.slots_per_extent)
                        .map(|_| SlotModel::listed(0))
                        .collect()
                })
                .collect(),
            live: Vec::new(),
            stale: Vec::new(),
            magazines: vec![vec![(false, None); CLASSES.len()]; OWNERS],
        }
    }

    /// Slots of `class` kept by their owners.
    fn kept(&self, class: usize) -> u32 {
        self.slots[class].iter().filter(|s| s.kept).count() as u32
    }

    /// The slot of `class` owner `by` keeps, if any.
    fn kept_by(&self, by: usize, class: usize) -> Option<u32> {
        self.magazines[by][class].1
    }

    fn extents(&self, class: usize) -> u32 {
        self.slots[class].len() as u32 / CLASSES[class].slots_per_extent
    }

    /// Slots of `class` in `state`, the kept ones not counted.
    fn count(&self, class: usize, state: SlotState) -> u32 {
        self.slots[class]
            .iter()
            .filter(|s| s.state == state && !s.kept)
            .count() as u32
    }

    /// The owner number whose ledger holds `h`: its allocator, while it is allocated; its
    /// receiver, once it accepted it.
    fn holder(&self, h: SlotHandle) -> Option<usize> {
        let slot = self.slots[usize::from(h.class())][h.index() as usize];
        (slot.state == SlotState::Allocated && !slot.kept || slot.accepted)
            .then(|| (0..OWNERS).find(|&n| owner(n).raw() == slot.owner))
            .flatten()
    }

    fn slot(&mut self, h: SlotHandle) -> &mut SlotModel {
        &mut self.slots[usize::from(h.class())][h.index() as usize]
    }

    /// The outcome `alloc_in(class)` by `by` (or `alloc` that settled on `class` after the
    /// larger classes) must have: the slot it keeps, a free slot of the class, a new extent,
    /// or nothing.
    fn expect_from(&self, by: usize, class: usize, grow: bool) -> Expect {
        if let Some(index) = self.kept_by(by, class) {
            Expect::Kept(class, index)
        } else if self.count(class, SlotState::Free) > 0 {
            Expect::Pop(class)
        } else if grow && self.extents(class) < MAX_EXTENTS {
            Expect::Grow(class)
        } else {
            Expect::Nothing
        }
    }

    /// Check and apply an allocation the allocator made for owner `by`.
    fn allocated(&mut self, h: SlotHandle, expect: Expect, by: usize) -> Result<(), TestCaseError> {
        let class = usize::from(h.class());
        match expect {
            Expect::Kept(c, index) => {
                prop_assert_eq!((class, h.index()), (c, index), "the kept slot first");
                let slot = self.slot(h);
                prop_assert!(slot.kept && slot.owner == owner(by).raw(), "{:?}", slot);
                prop_assert_eq!(h.generation(), slot.generation);
                slot.kept = false;
                self.magazines[by][c] = (true, None);
                self.live.push(h);
                return Ok(());
            }
            Expect::Pop(c) => prop_assert_eq!(class, c),
            Expect::Grow(c) => {
                prop_assert_eq!(class, c);
                // A new extent: its first slot is the grower's (generation 0), the others were
                // created allocated and freed (generation 1).
                let spe = CLASSES[c].slots_per_extent;
                let first = self.extents(c) * spe;
                prop_assert_eq!(h.index(), first, "the grower keeps the first slot");
                for i in 0..spe {
                    self.slots[c].push(SlotModel::listed(u32::from(i != 0)));
                }
            }
            Expect::Nothing => prop_assert!(false, "alloc gave {h:?}, the model has nothing"),
        }
        let slot = self.slot(h);
        prop_assert_eq!(
            (slot.state, slot.kept),
            (SlotState::Free, false),
            "{:?} handed out but it is out",
            h
        );
        prop_assert_eq!(h.generation(), slot.generation);
        *slot = SlotModel {
            generation: slot.generation,
            state: SlotState::Allocated,
            owner: owner(by).raw(),
            kept: false,
            accepted: false,
            sender: None,
        };
        // From the list or a new extent: an allocator in the class, which keeps from now on.
        self.magazines[by][class].0 = true;
        prop_assert!(
            !self
                .live
                .iter()
                .any(|l| (l.class(), l.index()) == (h.class(), h.index()))
        );
        self.live.push(h);
        Ok(())
    }

    /// `h` freed by owner `by`: kept when `by` holds it, took a slot of the class since its
    /// last keep (so its one cell is empty), and the class's list is not empty; else onto the
    /// list. `None` for a reclaim.
    fn freed(&mut self, h: SlotHandle, by: Option<usize>) {
        let class = usize::from(h.class());
        let listed = self.count(class, SlotState::Free) > 0;
        let keeper = by.filter(|&by| {
            listed && self.holder(h) == Some(by) && self.magazines[by][class] == (true, None)
        });
        let slot = self.slot(h);
        *slot = match keeper {
            Some(by) => SlotModel {
                generation: slot.generation.wrapping_add(1),
                state: SlotState::Allocated,
                owner: owner(by).raw(),
                kept: true,
                accepted: false,
                sender: None,
            },
            None => SlotModel::listed(slot.generation.wrapping_add(1)),
        };
        if let Some(by) = keeper {
            self.magazines[by][class] = (false, Some(h.index()));
        }
        self.live
            .retain(|l| (l.class(), l.index()) != (h.class(), h.index()));
        self.stale.push(h);
    }

    /// Owner `n` reclaimed: what it kept goes onto the lists at the next generation, and its
    /// next life starts with empty magazines.
    fn reclaimed_kept(&mut self, n: usize) -> u32 {
        let mut count = 0;
        for class in 0..CLASSES.len() {
            if let Some(index) = self.magazines[n][class].1 {
                let slot = &mut self.slots[class][index as usize];
                *slot = SlotModel::listed(slot.generation.wrapping_add(1));
                count += 1;
            }
            self.magazines[n][class] = (false, None);
        }
        count
    }
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The slot (class, index) the allocating owner keeps.
    Kept(usize, u32),
    Pop(usize),
    Grow(usize),
    Nothing,
}

/// The allocator's view equals the model's, slot by slot and in its counts.
fn check(host: &Slab<Arc<HeapRegion>>, model: &Model) -> Result<(), TestCaseError> {
    let stats = host.stats();
    for (class, s) in stats.iter().enumerate() {
        let total = model.slots[class].len() as u32;
        prop_assert_eq!(s.extents, model.extents(class), "class {}", class);
        prop_assert_eq!(s.total, total);
        prop_assert_eq!(s.header_total, total);
        let listed = model.count(class, SlotState::Free);
        prop_assert_eq!(s.free, listed + model.kept(class), "class {}", class);
        prop_assert_eq!(s.kept, model.kept(class), "class {}", class);
        prop_assert_eq!(s.allocated, model.count(class, SlotState::Allocated));
        prop_assert_eq!(s.in_flight, model.count(class, SlotState::InFlight));
        prop_assert_eq!(s.corrupt, 0);
        prop_assert_eq!(
            host.free_list_len(class as u16),
            Ok(listed),
            "class {}",
            class
        );
        for (index, want) in model.slots[class].iter().enumerate() {
            let got = host.slot_status(class as u16, index as u32).unwrap();
            prop_assert_eq!(
                (got.generation, got.state, got.owner),
                (want.generation, Some(want.state), want.owner),
                "class {} slot {}",
                class,
                index
            );
        }
    }
    let distinct: HashSet<_> = model.live.iter().map(|h| (h.class(), h.index())).collect();
    prop_assert_eq!(distinct.len(), model.live.len());
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let layout = SlabLayout::standalone(&CLASSES, MAX_EXTENTS, MAX_PEERS).unwrap();
    let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    // SAFETY: a fresh region nobody else uses.
    let host = unsafe { Slab::init(region, layout, OwnerId::HOST) }.unwrap();
    let mut slabs: Vec<_> = (0..OWNERS)
        .map(|n| host.with_owner(owner(n)).unwrap())
        .collect();
    let mut model = Model::new();
    check(&host, &model)?;
    for op in ops {
        match op {
            Op::Alloc { by, len } => {
                let got = slabs[by].alloc(len);
                let Some(fits) = CLASSES.iter().position(|c| c.slot_size as usize >= len) else {
                    prop_assert_eq!(got, Err(SlabError::PayloadTooLarge { len, max: 512 }));
                    continue;
                };
                // Class by class from the smallest that fits: the slot kept, then the list;
                // then a new extent of the smallest.
                let expect = (fits..CLASSES.len())
                    .map(|c| model.expect_from(by, c, false))
                    .find(|e| !matches!(e, Expect::Nothing))
                    .unwrap_or_else(|| model.expect_from(by, fits, true));
                match (got, expect) {
                    (Ok(h), expect) => model.allocated(h, expect, by)?,
                    (Err(e), Expect::Nothing) => {
                        prop_assert_eq!(e, SlabError::NoFreeSlots { class: fits as u16 })
                    }
                    (Err(e), expect) => prop_assert!(false, "alloc({len}): {e}, want {expect:?}"),
                }
            }
            Op::AllocIn { by, class } | Op::TryAllocIn { by, class } => {
                let grow = matches!(op, Op::AllocIn { .. });
                let c = usize::from(class);
                let got = if grow {
                    slabs[by].alloc_in(class).map(Some)
                } else {
                    slabs[by].try_alloc_in(class)
                };
                if c >= CLASSES.len() {
                    prop_assert_eq!(got, Err(SlabError::BadHandle { class, index: 0 }));
                    continue;
                }
                match (got, model.expect_from(by, c, grow)) {
                    (Ok(Some(h)), expect) => model.allocated(h, expect, by)?,
                    (Ok(None), Expect::Nothing) if !grow => {}
                    (Err(e), Expect::Nothing) if grow => {
                        prop_assert_eq!(e, SlabError::NoFreeSlots { class })
                    }
                    (got, expect) => {
                        prop_assert!(false, "alloc_in({class}): {got:?}, want {expect:?}")
                    }
                }
            }
            Op::Mark { pick, receiver } => {
                if model.live.is_empty() {
                    continue;
                }
                let h = model.live[pick % model.live.len()];
                let to = if receiver == OWNERS {
                    OwnerId::peer(MAX_PEERS)
                } else {
                    owner(receiver)
                };
                let by = model.holder(h).unwrap_or(pick % OWNERS);
                let got = slabs[by].mark_in_flight(h, to);
                if receiver == OWNERS {
                    prop_assert_eq!(got, Err(SlabError::UnknownOwner(to)));
                    continue;
                }
                let slot = model.slot(h);
                if slot.state == SlotState::Allocated {
                    prop_assert_eq!(got, Ok(()));
                    slot.state = SlotState::InFlight;
                    slot.owner = to.raw();
                    slot.sender = Some(by);
                } else {
                    prop_assert_eq!(
                        got,
                        Err(SlabError::WrongState {
                            class: h.class(),
                            index: h.index(),
                            expected: "allocated",
                            found: "in flight"
                        })
                    );
                }
            }
            Op::Accept { pick } => {
                if model.live.is_empty() {
                    continue;
                }
                let h = model.live[pick % model.live.len()];
                let slot = *model.slot(h);
                let Some(sender) = slot.sender else {
                    continue; // allocated, not sent
                };
                let to = (0..OWNERS)
                    .find(|&n| owner(n).raw() == slot.owner)
                    .expect("sent to an owner");
                let got = slabs[to].accept(h, owner(sender));
                if slot.accepted {
                    prop_assert_eq!(got, Err(Refusal::AlreadyHeld));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    model.slot(h).accepted = true;
                }
            }
            Op::Free { pick, by } => {
                if model.live.is_empty() {
                    continue;
                }
                let h = model.live[pick % model.live.len()];
                let by = model.holder(h).unwrap_or(by);
                let freed = slabs[by].free(h);
                prop_assert!(freed.is_ok(), "free({:?}): {:?}", h, freed);
                prop_assert_eq!(freed.unwrap().class, h.class());
                model.freed(h, Some(by));
            }
            Op::FreeStale { pick, by } => {
                if model.stale.is_empty() {
                    continue;
                }
                let h = model.stale[pick % model.stale.len()];
                let slot = *model.slot(h);
                let freed_last = slot.generation == h.generation().wrapping_add(1);
                // A double free when the handle's free was the slot's last one: told by the
                // shared state when the slot is listed, by the keeper's ledger when kept.
                let want = if freed_last
                    && (slot.state == SlotState::Free || slot.kept && slot.owner == owner(by).raw())
                {
                    SlabError::DoubleFree {
                        class: h.class(),
                        index: h.index(),
                    }
                } else {
                    SlabError::StaleHandle {
                        handle: h.generation(),
                        slot: slot.generation,
                    }
                };
                prop_assert_eq!(slabs[by].free(h), Err(want));
            }
            Op::MarkStale { pick } => {
                if model.stale.is_empty() {
                    continue;
                }
                let h = model.stale[pick % model.stale.len()];
                let slot = *model.slot(h);
                let by = pick % OWNERS;
                // The keeper's ledger knows the handle was freed last; to all others the
                // shared state says only that the handle is old.
                let want = if slot.kept
                    && slot.owner == owner(by).raw()
                    && slot.generation == h.generation().wrapping_add(1)
                {
                    SlabError::DoubleFree {
                        class: h.class(),
                        index: h.index(),
                    }
                } else {
                    SlabError::StaleHandle {
                        handle: h.generation(),
                        slot: slot.generation,
                    }
                };
                prop_assert_eq!(slabs[by].mark_in_flight(h, OwnerId::HOST), Err(want));
            }
            Op::Reclaim { owner: n } => {
                let who = owner(n).raw();
                let mine: Vec<SlotHandle> = model
                    .live
                    .iter()
                    .copied()
                    .filter(|&h| {
                        model.slots[usize::from(h.class())][h.index() as usize].owner == who
                    })
                    .collect();
                let mut want = vec![0u32; CLASSES.len()];
                for h in &mine {
                    want[usize::from(h.class())] += 1;
                }
                let report = host.reclaim(owner(n)).unwrap();
                prop_assert_eq!(&report.freed, &want);
                prop_assert!(!report.recovered_from_journal && !report.journal_pending);
                for h in mine {
                    model.freed(h, None);
                }
                prop_assert_eq!(report.kept, model.reclaimed_kept(n));
                // A reclaimed owner is dead: its next life starts with an empty ledger (R4).
                slabs[n] = host.with_owner(owner(n)).unwrap();
            }
        }
        check(&host, &model)?;
    }
    // Everything back: reclaim every owner, then every slot is free and on its list.
    for n in 0..OWNERS {
        let _ = host.reclaim(owner(n)).unwrap();
    }
    for s in host.stats() {
        prop_assert_eq!(s.free, s.total);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_allocator_follows_the_model(ops in proptest::collection::vec(op(), 1..150)) {
        run(ops)?;
    }
}

/// A sequence that goes through every growth and back, in case the random ones miss it.
#[test]
fn a_full_cycle_follows_the_model() {
    let mut ops = Vec::new();
    for i in 0..24 {
        ops.push(Op::Alloc {
            by: i % OWNERS,
            len: 1,
        });
    }
    for i in 0..8 {
        ops.push(Op::Mark {
            pick: i * 3,
            receiver: i % OWNERS,
        });
    }
    for i in 0..4 {
        ops.push(Op::Reclaim { owner: i });
        ops.push(Op::FreeStale { pick: i * 5, by: i });
    }
    for i in 0..24 {
        ops.push(Op::Alloc {
            by: i % OWNERS,
            len: 200,
        });
        ops.push(Op::Free { pick: i * 7, by: 3 });
    }
    run(ops).unwrap();
}
