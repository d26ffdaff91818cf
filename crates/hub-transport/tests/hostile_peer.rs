//! Attacks on slot ownership (issue 13, attacks 1 to 3), each by a real peer process writing raw
//! words at named offsets of the segment (the `poke` peer), checked from the host's side: the
//! addresses of what the host holds against every new loan, and the bytes it holds unchanged by
//! writes through new loans.
//!
//! R4: the host keeps a private ledger of the slots it holds; whatever the shared metas, free
//! list and `current_size` say, it never lends one slot twice, and grows only past the extents
//! it knows. Each test failed before the ledger and the private extent table.

mod common;
mod plugin;

use std::time::{Duration, Instant};

use common::WATCHDOG;
use common::pattern;
use hub_layout::{HOST_OWNER, MsgDescHot, NO_OWNER, pack_free_head, unpack_free_head};
use hub_transport::ring::RingError;
use hub_transport::{
    DescriptorFault, EvictReason, Host, HubConfig, PeerEvent, RecvError, RecvTimeoutError,
};
use plugin::poke::{Named, Poker};

const FREE: u32 = 0;
const ALLOCATED: u32 = 1;
const IN_FLIGHT: u32 = 2;

/// A payload that takes a slot of class 2 (256 KiB slots, 32 in the first extent).
const CLASS_2: usize = 100_000;

/// A slot meta's `(generation, state)` word (R5: generation low, state high).
fn gen_state(generation: u32, state: u32) -> u64 {
    u64::from(generation) | u64::from(state) << 32
}

/// A fresh hub of the default configuration.
fn default_host() -> Host {
    Host::create(&HubConfig::default()).expect("create")
}

/// Forge a free of slot `slot` of `class`'s first extent, as a faulty peer would: state Free at
/// `generation`, no owner, and, with `push`, the slot pushed on the class's free list.
fn forge_free(
    poker: &mut Poker,
    named: &Named,
    class: usize,
    slot: u32,
    generation: u32,
    push: bool,
) {
    let meta = named.slot_meta(class, slot);
    poker.w64(named.gen_state(meta), gen_state(generation, FREE));
    poker.w32(named.owner(meta), NO_OWNER);
    if push {
        let (first, tag) = unpack_free_head(poker.r64(named.free_head(class)));
        poker.w32(named.next_free(meta), first);
        poker.w64(
            named.free_head(class),
            pack_free_head(slot, tag.wrapping_add(1)),
        );
    }
}

/// The poke peer sends a frame of class 2 and the host holds it: slot 0 of class 2 (a fresh
/// hub's list starts there), in flight to the host, its payload intact.
fn hold_a_frame(host: &Host, named: &Named, poker: &mut Poker) -> hub_transport::Frame {
    poker.send(CLASS_2);
    let frame = host.recv_timeout(WATCHDOG).unwrap();
    assert_eq!(frame.len(), CLASS_2);
    assert_eq!(pattern::checksum(frame.payload()), frame.meta().msg_id);
    let meta = named.slot_meta(2, 0);
    assert_eq!(poker.r64(named.gen_state(meta)), gen_state(0, IN_FLIGHT));
    assert_eq!(poker.r32(named.owner(meta)), HOST_OWNER);
    frame
}

/// The byte range of a payload.
fn range(bytes: &[u8]) -> (usize, usize) {
    let start = bytes.as_ptr() as usize;
    (start, start + bytes.len())
}

fn overlap(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Take up to `count` loans of `len` bytes (until none is free), check that none overlaps
/// `held` or another, and write every byte of each: the caller then checks that what it holds
/// is unchanged.
fn loans_never_alias(host: &Host, held: &[(usize, usize)], len: usize, count: usize) -> usize {
    let mut loans = Vec::new();
    let mut ranges: Vec<(usize, usize)> = held.to_vec();
    for _ in 0..count {
        let Ok(mut loan) = host.try_loan(len) else {
            break;
        };
        let mine = range(loan.as_slice());
        for &other in &ranges {
            assert!(
                !overlap(mine, other),
                "loan {mine:x?} overlaps {other:x?}, which the host holds"
            );
        }
        ranges.push(mine);
        loan.as_mut_slice().fill(0xee);
        loans.push(loan);
    }
    loans.len()
}

/// Attack 1: the host holds a loan; a peer writes the slot's meta Free (same generation, no
/// owner) and pushes it on the free list. The host's next loans never include it.
#[test]
fn a_forged_free_of_a_held_loan_never_lends_it_again() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let mut held = host.try_loan(CLASS_2).unwrap();
    pattern::fill(held.as_mut_slice(), 7);
    let sum = pattern::checksum(held.as_slice());
    // A fresh hub's list starts at slot 0: the host's loan is slot 0 of class 2.
    let meta = named.slot_meta(2, 0);
    assert_eq!(poker.r64(named.gen_state(meta)), gen_state(0, ALLOCATED));
    assert_eq!(poker.r32(named.owner(meta)), HOST_OWNER);

    forge_free(&mut poker, &named, 2, 0, 0, true);
    let lent = loans_never_alias(&host, &[range(held.as_slice())], CLASS_2, 40);
    assert!(lent >= 31, "the other slots are lent: {lent}");
    assert_eq!(
        pattern::checksum(held.as_slice()),
        sum,
        "the held loan is unchanged"
    );
}

/// Attack 1, on a frame: the host holds a frame (in flight to it); the peer forges its free and
/// pushes it. The host's next loans never include the frame's slot.
#[test]
fn a_forged_free_of_a_held_frame_never_lends_it() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let frame = hold_a_frame(&host, &named, &mut poker);
    forge_free(&mut poker, &named, 2, 0, 0, true);
    loans_never_alias(&host, &[range(frame.payload())], CLASS_2, 40);
    assert_eq!(
        pattern::checksum(frame.payload()),
        frame.meta().msg_id,
        "the held frame is unchanged"
    );
}

/// Attack 1, without the push: the held loan's meta says Free, off the list. The host's audit
/// finds a free slot lost off the list in two looks and rebuilds the list; the rebuild must
/// leave out what the host holds.
#[test]
fn the_audit_never_lists_a_held_slot_whose_meta_says_free() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let mut held = host.try_loan(CLASS_2).unwrap();
    pattern::fill(held.as_mut_slice(), 8);
    let sum = pattern::checksum(held.as_slice());
    forge_free(&mut poker, &named, 2, 0, 0, false);
    // Two looks far apart (and the auditor thread's own, every 250 ms).
    host.check_allocator();
    std::thread::sleep(Duration::from_millis(150));
    host.check_allocator();
    std::thread::sleep(Duration::from_millis(300));
    host.check_allocator();
    loans_never_alias(&host, &[range(held.as_slice())], CLASS_2, 40);
    assert_eq!(
        pattern::checksum(held.as_slice()),
        sum,
        "the held loan is unchanged"
    );
}

/// Attack 2: the host holds a frame; the peer moves the slot's generation on (still in flight
/// to the host, from it) and pushes a second descriptor for the slot at the new generation.
/// The host refuses it (a slot it holds already, R4), evicts the peer, and its first frame is
/// intact.
#[test]
fn a_second_descriptor_for_a_held_slot_is_refused() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let peer = poker.peer;
    let frame = hold_a_frame(&host, &named, &mut poker);
    let meta = named.slot_meta(2, 0);
    poker.w64(named.gen_state(meta), gen_state(1, IN_FLIGHT));
    let forged = MsgDescHot {
        msg_id: 99,
        payload_slot: Named::slot_ref(2, 0),
        payload_generation: 1,
        payload_len: 100,
        ..MsgDescHot::empty()
    };
    poker.push_desc(&named, peer, &forged);

    let deadline = Instant::now() + WATCHDOG;
    let error = loop {
        match host.recv_timeout(Duration::from_millis(50)) {
            Ok(second) => panic!(
                "a second frame over the held slot: {:?} at {:p}, the first at {:p}",
                second,
                second.payload().as_ptr(),
                frame.payload().as_ptr()
            ),
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            error,
            RecvTimeoutError::Failed(RecvError::BadDescriptor {
                peer: p,
                fault: DescriptorFault::AlreadyReceived { .. }
            }) if p == peer
        ),
        "{error:?}"
    );
    let mut events = common::EventLog::new(&host);
    let evicted = events.wait("evicted", |e| matches!(e, PeerEvent::Evicted { .. }));
    assert!(
        matches!(
            evicted,
            PeerEvent::Evicted {
                reason: EvictReason::BadDescriptor(DescriptorFault::AlreadyReceived { .. }),
                ..
            }
        ),
        "{evicted:?}"
    );
    assert_eq!(
        pattern::checksum(frame.payload()),
        frame.meta().msg_id,
        "the first frame is intact"
    );
    loans_never_alias(&host, &[range(frame.payload())], CLASS_2, 40);
}

/// Attack 3: the host exhausts class 4 (16 MiB slots, 4 an extent), grows it once and holds
/// every loan; the peer rewinds `current_size` to the initial size. The host's next growth goes
/// past every extent it knows (R4: its private extent table), never over a live one, and the
/// word is repaired.
#[test]
fn a_rewound_current_size_never_makes_growth_overlap_a_live_extent() {
    const SIXTEEN_MIB: usize = 16 << 20;
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let mut loans = Vec::new();
    for k in 0..8u64 {
        let mut loan = host.try_loan(SIXTEEN_MIB).unwrap();
        let bytes = loan.as_mut_slice();
        bytes[..8].copy_from_slice(&k.to_le_bytes());
        bytes[SIXTEEN_MIB - 8..].copy_from_slice(&k.to_le_bytes());
        loans.push(loan);
    }
    let grown_end = poker.r64(named.current_size());
    assert!(grown_end > named.layout.initial_size() as u64);

    poker.w64(named.current_size(), named.layout.initial_size() as u64);
    for k in 8..12u64 {
        let mut loan = host.try_loan(SIXTEEN_MIB).unwrap();
        let mine = range(loan.as_slice());
        for other in &loans {
            assert!(
                !overlap(mine, range(other.as_slice())),
                "loan {k} at {mine:x?} overlaps a held one"
            );
        }
        let bytes = loan.as_mut_slice();
        bytes[..8].copy_from_slice(&k.to_le_bytes());
        bytes[SIXTEEN_MIB - 8..].copy_from_slice(&k.to_le_bytes());
        loans.push(loan);
    }
    for (k, loan) in loans.iter().enumerate() {
        let bytes = loan.as_slice();
        let stamp = (k as u64).to_le_bytes();
        assert_eq!(
            (&bytes[..8], &bytes[SIXTEEN_MIB - 8..]),
            (&stamp[..], &stamp[..]),
            "loan {k}"
        );
    }
    let repaired = poker.r64(named.current_size());
    assert!(
        repaired >= grown_end + named.layout.extent_geometry(4).size as u64,
        "current_size {repaired:#x} after growth past {grown_end:#x}"
    );
}

/// Waits for `peer`'s entry to be recovered (R10) after its process is gone.
fn wait_recovered(host: &Host, peer: u16) {
    let mut events = common::EventLog::new(host);
    events.wait(
        "recovered",
        |e| matches!(e, PeerEvent::Recovered { peer: p, .. } if *p == peer),
    );
}

/// Item 9: recovery's scan of a dead peer's send ring frees the slots its descriptors name that
/// are in flight to the host: never one the host holds as a frame, whatever the ring says.
#[test]
fn recovery_never_frees_a_frame_the_host_holds() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let peer = poker.peer;
    let frame = hold_a_frame(&host, &named, &mut poker);
    // A second descriptor naming the held slot, left unread in the ring; then the peer dies.
    let again = MsgDescHot {
        payload_slot: Named::slot_ref(2, 0),
        payload_generation: 0,
        payload_len: 100,
        ..MsgDescHot::empty()
    };
    poker.push_desc(&named, peer, &again);
    poker.exit(0);
    wait_recovered(&host, peer);
    loans_never_alias(&host, &[range(frame.payload())], CLASS_2, 40);
    assert_eq!(pattern::checksum(frame.payload()), frame.meta().msg_id);
}

/// Item 9: reclaim of a dead peer frees the slots whose owner word names it: never one the host
/// holds, whatever the owner word says.
#[test]
fn reclaim_never_frees_a_loan_the_host_holds() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let peer = poker.peer;
    let mut held = host.try_loan(CLASS_2).unwrap();
    pattern::fill(held.as_mut_slice(), 9);
    let sum = pattern::checksum(held.as_slice());
    let meta = named.slot_meta(2, 0);
    poker.w32(named.owner(meta), hub_alloc::OwnerId::peer(peer).raw());
    poker.exit(0);
    wait_recovered(&host, peer);
    loans_never_alias(&host, &[range(held.as_slice())], CLASS_2, 40);
    assert_eq!(pattern::checksum(held.as_slice()), sum);
}

/// Item 9: an extent another process publishes over live memory (here class 3's second extent
/// over class 4's, whose slots the host holds) is refused (R4: it does not fit the private
/// extent table), and no loan ever lies over a held one.
#[test]
fn an_extent_published_over_another_class_is_never_used() {
    const SIXTEEN_MIB: usize = 16 << 20;
    const FOUR_MIB: usize = 4 << 20;
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    // Class 4 grown once, every slot held.
    let held: Vec<_> = (0..8)
        .map(|_| host.try_loan(SIXTEEN_MIB).unwrap())
        .collect();
    let live = poker.r64(named.extent_offset(4, 1));
    assert_ne!(live, 0);
    // Class 3's second extent "published" over it, and one of its slots pushed on class 3's list.
    poker.w64(named.extent_offset(3, 1), live);
    let slots_3 = named.layout.slots_per_extent(3);
    let index = slots_3; // extent 1, slot 0
    let meta = named.slot_meta_in(live as usize, 3, 0);
    poker.w64(named.gen_state(meta), gen_state(0, FREE));
    let (first, tag) = unpack_free_head(poker.r64(named.free_head(3)));
    poker.w32(named.next_free(meta), first);
    poker.w64(
        named.free_head(3),
        pack_free_head(index, tag.wrapping_add(1)),
    );

    let ranges: Vec<_> = held.iter().map(|l| range(l.as_slice())).collect();
    let mut loans = Vec::new();
    for _ in 0..12 {
        match host.try_loan(FOUR_MIB) {
            Ok(loan) => {
                let mine = range(loan.as_slice());
                for &other in &ranges {
                    assert!(
                        !overlap(mine, other),
                        "a class 3 loan at {mine:x?} over {other:x?}"
                    );
                }
                loans.push(loan);
            }
            Err(error) => {
                // The forged slot is refused with a typed error, and the audit repairs the
                // list (the auditor thread would within 250 ms).
                assert!(
                    matches!(
                        error,
                        hub_transport::TryLoanError::Failed(hub_transport::LoanError::Alloc(_))
                    ),
                    "{error}"
                );
                host.check_allocator();
            }
        }
    }
    assert!(loans.len() >= 8, "class 3 lends again: {}", loans.len());
}

/// A dead peer's ring may name another peer's frame that is still waiting in that peer's own
/// ring: recovery frees only what the dead peer itself sent, so the other peer's frame arrives
/// intact (and the other peer is not blamed for a stale descriptor).
#[test]
fn recovery_never_frees_another_peers_frame_in_flight() {
    let host = default_host();
    let named = Named::default_hub();
    let mut forger = Poker::spawn(&host);
    let mut honest = Poker::spawn(&host);
    let dead = forger.peer;
    honest.send(CLASS_2);
    let meta = named.slot_meta(2, 0);
    assert_eq!(honest.r64(named.gen_state(meta)), gen_state(0, IN_FLIGHT));
    let forged = MsgDescHot {
        payload_slot: Named::slot_ref(2, 0),
        payload_generation: 0,
        payload_len: 100,
        ..MsgDescHot::empty()
    };
    forger.push_desc(&named, dead, &forged);
    forger.exit(0);
    wait_recovered(&host, dead);
    let frame = host
        .recv_from(honest.peer, Some(WATCHDOG))
        .expect("the honest peer's frame");
    assert_eq!(frame.len(), CLASS_2);
    assert_eq!(pattern::checksum(frame.payload()), frame.meta().msg_id);
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}

/// PROTOCOL.md §4, stamps: the poke peer writes inline descriptors into its send ring by hand,
/// the stamp word last, and never stores the head. The host takes exactly what the stamp rule
/// publishes: the descriptor at its tail when it carries its own number's stamp, then the next,
/// in order. A stamp of another number in the tail's slot (one a lap later), or the right stamp
/// one slot too far, publishes nothing; a head left behind the host's tail is no fault (the
/// peer stays attached), and the tail the host stores passes it. A head that then moves and
/// stays behind the tail is the peer's fault.
#[test]
fn inline_descriptors_are_published_by_their_own_stamps_only() {
    let host = default_host();
    let named = Named::default_hub();
    let mut poker = Poker::spawn(&host);
    let peer = poker.peer;
    let capacity = u64::from(named.layout.ring_capacity);
    // Descriptor number `n`'s place, carrying the stamp of number `stamp`.
    let inline = |n: u64, stamp: u64| MsgDescHot {
        msg_id: 1000 + n,
        payload_generation: (stamp as u32).wrapping_add(1),
        payload_len: 3,
        inline_payload: [n as u8; 16],
        ..MsgDescHot::empty()
    };
    let mut write = |n: u64, desc: &MsgDescHot| {
        // The stamp word (payload_slot and payload_generation: the descriptor's third word)
        // last, as a producer writes it.
        let at = named.send_desc(peer, n);
        let words = plugin::poke::desc_words(desc);
        for k in [0, 1, 3, 4, 5, 6, 7, 2] {
            poker.w64(at + 8 * k, words[k]);
        }
        poker.wake(named.peer_send_bell(peer));
    };
    let nothing = |host: &Host| match host.recv_timeout(Duration::from_millis(100)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("nothing is published, yet: {other:?}"),
    };

    // Slot 0 with the stamp of number `capacity` (its next lap), slot 1 with number 1's.
    write(0, &inline(0, capacity));
    write(1, &inline(1, 1));
    nothing(&host);
    // Number 0's own stamp publishes it, and then number 1 is next.
    write(0, &inline(0, 0));
    for n in 0..2 {
        let frame = host.recv_timeout(WATCHDOG).unwrap();
        assert_eq!(frame.meta().msg_id, 1000 + n);
        assert_eq!(frame.payload(), &[n as u8; 3]);
    }
    nothing(&host);

    // The head never moved; the host's tail went past it, and that is no fault.
    let tail = named.layout.send_ring_offset(peer)
        + std::mem::offset_of!(hub_layout::DescRingHeader, tail);
    assert_eq!((poker.r64(named.send_head(peer)), poker.r64(tail)), (0, 2));
    let state = host.peers()[usize::from(peer)].state;
    assert_eq!(state, hub_transport::PeerState::Active);

    // A head that moves and stays behind the tail was stored by no producer that keeps the
    // protocol (a head moves after a slot descriptor, taken only by a head past it): the host
    // finds it at its next look, names the peer, and evicts it.
    poker.w64(named.send_head(peer), 1);
    poker.wake(named.peer_send_bell(peer));
    match host.recv_timeout(WATCHDOG) {
        Err(RecvTimeoutError::Failed(RecvError::Ring {
            peer: p,
            source: RingError::HeadNotPastTail { head: 1, tail: 2 },
        })) if p == peer => {}
        other => panic!("expected the moved head as the peer's fault, got {other:?}"),
    }
    let mut events = common::EventLog::new(&host);
    events.wait("evicted", |e| matches!(e, PeerEvent::Evicted { .. }));
}
