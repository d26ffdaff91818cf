//! Round trips of every encoder and decoder, and the rejections of the checked variants.

#![cfg(not(loom))]

use hub_layout::{
    FREE_LIST_END, HUB_SIZE_CLASSES, HubSlotError, INLINE_PAYLOAD_SLOT, MAX_ENCODABLE_CLASS,
    MAX_EXTENTS_PER_CLASS, NUM_SIZE_CLASSES, SLOT_INDEX_BITS, SLOT_INDEX_LIMIT,
    decode_global_index, decode_slot_ref, encode_global_index, encode_slot_ref, pack_free_head,
    try_decode_slot_ref, try_encode_global_index, try_encode_slot_ref, unpack_free_head,
};
use proptest::prelude::*;

#[test]
fn encoding_constants() {
    assert_eq!(SLOT_INDEX_BITS, 29);
    assert_eq!(SLOT_INDEX_LIMIT, 1 << 29);
    assert_eq!(MAX_ENCODABLE_CLASS, 7);
    assert_eq!(INLINE_PAYLOAD_SLOT, u32::MAX);
}

// ---------------------------------------------------------------------------------------------
// Unit tests of the edges and the rejections.
// ---------------------------------------------------------------------------------------------

#[test]
fn slot_ref_edges() {
    assert_eq!(encode_slot_ref(0, 0), 0);
    assert_eq!(encode_slot_ref(7, SLOT_INDEX_LIMIT - 1), u32::MAX);
    assert_eq!(
        encode_slot_ref(4, SLOT_INDEX_LIMIT - 1),
        (4 << 29) | 0x1FFF_FFFF
    );
    assert_eq!(decode_slot_ref(u32::MAX), (7, SLOT_INDEX_LIMIT - 1));
    assert_eq!(decode_slot_ref(1 << 29), (1, 0));
    assert_eq!(decode_slot_ref((1 << 29) - 1), (0, (1 << 29) - 1));
}

#[test]
fn try_encode_slot_ref_rejections() {
    assert_eq!(try_encode_slot_ref(0, 0), Ok(0));
    assert_eq!(
        try_encode_slot_ref(4, SLOT_INDEX_LIMIT - 1),
        Ok((4 << 29) | (SLOT_INDEX_LIMIT - 1))
    );
    // A class the hub does not have, encodable (5..=7) or not (8..).
    for class in [5, 6, 7, 8, 9, 100, u16::MAX] {
        assert_eq!(
            try_encode_slot_ref(class, 0),
            Err(HubSlotError::InvalidSizeClass),
            "class {class}"
        );
    }
    // An index that would lose bits.
    for index in [SLOT_INDEX_LIMIT, SLOT_INDEX_LIMIT + 1, 1 << 30, u32::MAX] {
        assert_eq!(
            try_encode_slot_ref(0, index),
            Err(HubSlotError::InvalidSlotRef),
            "index {index}"
        );
        assert_eq!(
            try_encode_slot_ref(4, index),
            Err(HubSlotError::InvalidSlotRef),
            "index {index}"
        );
    }
    // Both wrong: the class is reported.
    assert_eq!(
        try_encode_slot_ref(5, u32::MAX),
        Err(HubSlotError::InvalidSizeClass)
    );
}

#[test]
fn try_decode_slot_ref_rejections() {
    assert_eq!(try_decode_slot_ref(0), Ok((0, 0)));
    assert_eq!(try_decode_slot_ref((4 << 29) | 123), Ok((4, 123)));
    // The inline-payload marker is never a slot.
    assert_eq!(
        try_decode_slot_ref(INLINE_PAYLOAD_SLOT),
        Err(HubSlotError::InvalidSizeClass)
    );
    for class in 5u32..=7 {
        assert_eq!(
            try_decode_slot_ref(class << 29),
            Err(HubSlotError::InvalidSizeClass)
        );
        assert_eq!(
            try_decode_slot_ref((class << 29) | 0x1FFF_FFFF),
            Err(HubSlotError::InvalidSizeClass)
        );
    }
}

#[test]
fn global_index_edges() {
    // Every seed class: the last slot of the last extent.
    for (_, slots) in HUB_SIZE_CLASSES {
        let shift = slots.trailing_zeros();
        let last_extent = MAX_EXTENTS_PER_CLASS as u32 - 1;
        let index = encode_global_index(last_extent, slots - 1, shift);
        assert_eq!(index, (last_extent << shift) | (slots - 1));
        assert!(index < SLOT_INDEX_LIMIT);
        assert_eq!(decode_global_index(index, shift), (last_extent, slots - 1));
        assert_eq!(
            try_encode_global_index(last_extent, slots - 1, shift),
            Ok(index)
        );
        assert_eq!(
            try_encode_global_index(last_extent + 1, 0, shift),
            Err(HubSlotError::InvalidExtent)
        );
        assert_eq!(
            try_encode_global_index(0, slots, shift),
            Err(HubSlotError::InvalidSlotRef)
        );
    }
    // Shift 0: one slot per extent, the index is the extent.
    assert_eq!(encode_global_index(9, 0, 0), 9);
    assert_eq!(decode_global_index(9, 0), (9, 0));
    assert_eq!(decode_global_index(u32::MAX, 31), (1, (1 << 31) - 1));
}

#[test]
fn try_encode_global_index_rejections() {
    assert_eq!(try_encode_global_index(0, 0, 0), Ok(0));
    assert_eq!(try_encode_global_index(15, 0, 0), Ok(15));
    // Extent out of range, whatever the rest.
    for extent in [16, 17, 1000, u32::MAX] {
        assert_eq!(
            try_encode_global_index(extent, 0, 10),
            Err(HubSlotError::InvalidExtent)
        );
        assert_eq!(
            try_encode_global_index(extent, u32::MAX, 40),
            Err(HubSlotError::InvalidExtent)
        );
    }
    // A slot that does not fit its shift.
    assert_eq!(
        try_encode_global_index(0, 1, 0),
        Err(HubSlotError::InvalidSlotRef)
    );
    assert_eq!(
        try_encode_global_index(0, 1024, 10),
        Err(HubSlotError::InvalidSlotRef)
    );
    assert_eq!(try_encode_global_index(0, 1023, 10), Ok(1023));
    // A result at or above 2^29: shift 25 with extent 15 needs 29 bits and fits, shift 26 with
    // extent 8 needs 30 and does not.
    assert_eq!(
        try_encode_global_index(15, (1 << 25) - 1, 25),
        Ok((15 << 25) | ((1 << 25) - 1))
    );
    assert_eq!(
        try_encode_global_index(8, 0, 26),
        Err(HubSlotError::InvalidSlotRef)
    );
    assert_eq!(try_encode_global_index(7, 0, 26), Ok(7 << 26));
    // A shift of 29 or more can never give a slot reference with more than one extent; the
    // crate refuses such a shift outright (and never shifts by it, so no overflow panic).
    for shift in [29, 31, 32, 33, 63, 64, 65, u32::MAX] {
        assert_eq!(
            try_encode_global_index(0, 0, shift),
            Err(HubSlotError::InvalidSlotRef),
            "shift {shift}"
        );
    }
}

#[test]
fn free_head_edges() {
    assert_eq!(pack_free_head(FREE_LIST_END, 0), 0x0000_0000_FFFF_FFFF);
    assert_eq!(unpack_free_head(0x0000_0000_FFFF_FFFF), (FREE_LIST_END, 0));
    assert_eq!(pack_free_head(0, u32::MAX), 0xFFFF_FFFF_0000_0000);
    assert_eq!(pack_free_head(u32::MAX, u32::MAX), u64::MAX);
    assert_eq!(unpack_free_head(u64::MAX), (u32::MAX, u32::MAX));
    // A tag bump (R7) changes only the high half.
    let head = pack_free_head(42, 7);
    let bumped = pack_free_head(42, 8);
    assert_eq!(bumped - head, 1 << 32);
}

// ---------------------------------------------------------------------------------------------
// Property tests.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn slot_ref_round_trip(class in 0u16..=7, index in 0u32..SLOT_INDEX_LIMIT) {
        let r = encode_slot_ref(class, index);
        prop_assert_eq!(r >> 29, u32::from(class));
        prop_assert_eq!(r & (SLOT_INDEX_LIMIT - 1), index);
        prop_assert_eq!(decode_slot_ref(r), (class, index));
    }

    #[test]
    fn slot_ref_decode_then_encode_is_identity(r in any::<u32>()) {
        let (class, index) = decode_slot_ref(r);
        prop_assert!(class <= MAX_ENCODABLE_CLASS);
        prop_assert!(index < SLOT_INDEX_LIMIT);
        prop_assert_eq!(encode_slot_ref(class, index), r);
    }

    #[test]
    fn try_slot_ref_round_trip(class in 0u16..NUM_SIZE_CLASSES as u16, index in 0u32..SLOT_INDEX_LIMIT) {
        let r = try_encode_slot_ref(class, index).unwrap();
        prop_assert_eq!(r, encode_slot_ref(class, index));
        prop_assert_eq!(try_decode_slot_ref(r), Ok((class, index)));
    }

    #[test]
    fn try_encode_slot_ref_matches_its_contract(class in any::<u16>(), index in any::<u32>()) {
        let result = try_encode_slot_ref(class, index);
        if usize::from(class) >= NUM_SIZE_CLASSES {
            prop_assert_eq!(result, Err(HubSlotError::InvalidSizeClass));
        } else if index >= SLOT_INDEX_LIMIT {
            prop_assert_eq!(result, Err(HubSlotError::InvalidSlotRef));
        } else {
            prop_assert_eq!(result, Ok((u32::from(class) << 29) | index));
        }
    }

    #[test]
    fn try_decode_slot_ref_matches_its_contract(r in any::<u32>()) {
        let class = r >> 29;
        match try_decode_slot_ref(r) {
            Ok((c, i)) => {
                prop_assert!((class as usize) < NUM_SIZE_CLASSES);
                prop_assert_eq!(u32::from(c), class);
                prop_assert_eq!(i, r & (SLOT_INDEX_LIMIT - 1));
                prop_assert_eq!(try_encode_slot_ref(c, i), Ok(r));
            }
            Err(e) => {
                prop_assert!(class as usize >= NUM_SIZE_CLASSES);
                prop_assert_eq!(e, HubSlotError::InvalidSizeClass);
            }
        }
    }

    #[test]
    fn global_index_round_trip(
        (shift, extent, slot) in (0u32..32).prop_flat_map(|shift| {
            let max_extent = if shift == 0 { u32::MAX } else { (1u32 << (32 - shift)) - 1 };
            let max_slot = if shift == 0 { 0 } else { u32::MAX >> (32 - shift) };
            (Just(shift), 0..=max_extent, 0..=max_slot)
        })
    ) {
        let index = encode_global_index(extent, slot, shift);
        prop_assert_eq!(u64::from(index), (u64::from(extent) << shift) | u64::from(slot));
        prop_assert_eq!(decode_global_index(index, shift), (extent, slot));
    }

    #[test]
    fn global_index_decode_then_encode_is_identity(index in any::<u32>(), shift in 0u32..32) {
        let (extent, slot) = decode_global_index(index, shift);
        prop_assert!(u64::from(slot) < 1u64 << shift);
        prop_assert_eq!(encode_global_index(extent, slot, shift), index);
    }

    #[test]
    fn try_global_index_round_trip_for_seed_classes(
        class in 0usize..NUM_SIZE_CLASSES,
        extent in 0u32..MAX_EXTENTS_PER_CLASS as u32,
        slot_seed in any::<u32>(),
    ) {
        let slots = HUB_SIZE_CLASSES[class].1;
        let shift = slots.trailing_zeros();
        let slot = slot_seed % slots;
        let index = try_encode_global_index(extent, slot, shift).unwrap();
        prop_assert_eq!(index, encode_global_index(extent, slot, shift));
        prop_assert_eq!(decode_global_index(index, shift), (extent, slot));
        // And the index makes a slot reference that survives the checked round trip.
        let r = try_encode_slot_ref(class as u16, index).unwrap();
        let (c, i) = try_decode_slot_ref(r).unwrap();
        prop_assert_eq!(usize::from(c), class);
        prop_assert_eq!(decode_global_index(i, shift), (extent, slot));
    }

    #[test]
    fn try_encode_global_index_matches_its_contract(
        extent in prop_oneof![0u32..20, any::<u32>()],
        slot in prop_oneof![0u32..2048, any::<u32>()],
        shift in prop_oneof![0u32..34, any::<u32>()],
    ) {
        let result = try_encode_global_index(extent, slot, shift);
        if extent as usize >= MAX_EXTENTS_PER_CLASS {
            prop_assert_eq!(result, Err(HubSlotError::InvalidExtent));
        } else if shift >= SLOT_INDEX_BITS || u64::from(slot) >= 1u64 << shift {
            prop_assert_eq!(result, Err(HubSlotError::InvalidSlotRef));
        } else {
            let wide = (u64::from(extent) << shift) | u64::from(slot);
            if wide >= u64::from(SLOT_INDEX_LIMIT) {
                prop_assert_eq!(result, Err(HubSlotError::InvalidSlotRef));
            } else {
                prop_assert_eq!(result, Ok(wide as u32));
                prop_assert_eq!(decode_global_index(wide as u32, shift), (extent, slot));
            }
        }
    }

    #[test]
    fn free_head_round_trip(index in any::<u32>(), tag in any::<u32>()) {
        let head = pack_free_head(index, tag);
        prop_assert_eq!(head, (u64::from(tag) << 32) | u64::from(index));
        prop_assert_eq!(unpack_free_head(head), (index, tag));
    }

    #[test]
    fn free_head_unpack_then_pack_is_identity(head in any::<u64>()) {
        let (index, tag) = unpack_free_head(head);
        prop_assert_eq!(pack_free_head(index, tag), head);
    }
}
