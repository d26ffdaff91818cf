//! Property test: any sequence of pushes and pops on a ring behaves like a bounded FIFO queue,
//! and `len`/`pending` agree with it.

use hub_layout::MsgDescHot;
use hub_transport::ring::{HeapRing, PushError};
use proptest::prelude::*;
use std::collections::VecDeque;

proptest! {
    #[test]
    fn ring_is_a_bounded_fifo(capacity_log in 0u32..5, ops in prop::collection::vec(any::<bool>(), 0..300)) {
        let capacity = 1u32 << capacity_log;
        let heap = HeapRing::new(capacity).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        let mut model = VecDeque::new();
        let mut next = 0u64;
        for push in ops {
            if push {
                let d = MsgDescHot { msg_id: next, ..MsgDescHot::empty() };
                match producer.try_push(&d) {
                    Ok(()) => {
                        prop_assert!(model.len() < capacity as usize);
                        model.push_back(d);
                    }
                    Err(PushError::Full) => prop_assert_eq!(model.len(), capacity as usize),
                    Err(fault) => prop_assert!(false, "fault {}", fault),
                }
                next += 1;
            } else {
                prop_assert_eq!(consumer.try_pop().unwrap(), model.pop_front());
            }
            prop_assert_eq!(ring.len().unwrap() as usize, model.len());
            prop_assert_eq!(ring.pending().unwrap(), model.iter().copied().collect::<Vec<_>>());
        }
    }
}
