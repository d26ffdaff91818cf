//! Two threads push and pop millions of descriptors through one ring; every descriptor must
//! arrive once, in order, with every field intact (PROTOCOL.md §4).

use hub_layout::MsgDescHot;
use hub_transport::ring::{HeapRing, PushError};
use std::thread;

/// A descriptor whose every field is derived from its sequence number, so a torn or stale copy
/// is detected.
fn desc(seq: u64) -> MsgDescHot {
    let low = seq as u32;
    MsgDescHot {
        msg_id: seq,
        channel_id: low ^ 0x5555_5555,
        method_id: low.rotate_left(7),
        payload_slot: low.wrapping_mul(3),
        payload_generation: low.wrapping_add(1),
        payload_offset: !low,
        payload_len: low % 17,
        flags: low.rotate_right(3),
        credit_grant: low.wrapping_mul(7),
        deadline_ns: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        inline_payload: (seq.wrapping_mul(0x0101_0101_0101_0101) as u128 | ((seq as u128) << 64))
            .to_le_bytes(),
    }
}

fn stress(capacity: u32, count: u64) {
    let heap = HeapRing::new(capacity).unwrap();
    let ring = heap.ring().clone();
    let (mut producer, mut consumer) = heap.split();
    let sender = thread::spawn(move || {
        let mut full = 0u64;
        for seq in 0..count {
            let d = desc(seq);
            loop {
                match producer.try_push(&d) {
                    Ok(()) => break,
                    Err(PushError::Full) => {
                        full += 1;
                        thread::yield_now();
                    }
                    Err(fault) => panic!("healthy ring reported {fault}"),
                }
            }
        }
        (producer.head(), full)
    });
    let mut expected = 0u64;
    while expected < count {
        match consumer.try_pop().expect("healthy ring reported a fault") {
            Some(d) => {
                assert_eq!(
                    d,
                    desc(expected),
                    "descriptor {expected} lost, duplicated or torn"
                );
                expected += 1;
            }
            None => thread::yield_now(),
        }
    }
    let (head, _full) = sender.join().unwrap();
    assert_eq!(head, count);
    assert_eq!(consumer.try_pop().unwrap(), None);
    assert_eq!(consumer.tail(), count);
    assert_eq!(ring.len(), Ok(0));
}

#[test]
fn two_million_descriptors_through_256_slots() {
    stress(256, 2_000_000);
}

#[test]
fn half_a_million_descriptors_through_2_slots() {
    // The smallest ring that wraps: producer and consumer meet on every slot.
    stress(2, 500_000);
}

#[test]
fn a_ring_of_one() {
    stress(1, 100_000);
}
