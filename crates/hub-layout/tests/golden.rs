//! Golden offsets and sizes of whole segments, with the arithmetic of the seed written out, and a
//! property test that every valid configuration follows the seed's formulas.
//!
//! The seed's layout: a 256-byte `HubHeader`; `max_peers` 64-byte `PeerEntry`s; `2 * max_peers`
//! rings of a 192-byte `DescRingHeader` plus `ring_capacity` 64-byte `MsgDescHot`s; five
//! 192-byte `SizeClassHeader`s; then one extent per class of a 64-byte `ExtentHeader`,
//! `slot_count` 16-byte `HubSlotMeta`s and `slot_count * slot_size` bytes of slots, each region
//! aligned to 64 (which every one of these sizes already is).

#![cfg(not(loom))]

use hub_layout::{
    DescRingHeader, ExtentGeometry, ExtentHeader, HUB_SIZE_CLASSES, HubHeader, HubLayoutError,
    HubOffsets, HubSlotMeta, MAX_EXTENTS_PER_CLASS, MAX_PEERS, MsgDescHot, NUM_SIZE_CLASSES,
    PeerEntry, SegmentLayout, SizeClassHeader, calculate_extent_size, calculate_initial_hub_size,
};
use proptest::prelude::*;

/// The five initial extents, written out: header + slot metas + slot data.
const EXTENT_SIZES: [usize; NUM_SIZE_CLASSES] = [
    64 + 1024 * 16 + 1024 * 1024, // 1 KiB x 1024
    64 + 256 * 16 + 256 * 16384,  // 16 KiB x 256
    64 + 32 * 16 + 32 * 262144,   // 256 KiB x 32
    64 + 8 * 16 + 8 * 4194304,    // 4 MiB x 8
    64 + 4 * 16 + 4 * 16777216,   // 16 MiB x 4
];

/// Offset of the slot data inside an extent of each class: header + metas.
const DATA_OFFSETS: [u32; NUM_SIZE_CLASSES] = [
    64 + 1024 * 16,
    64 + 256 * 16,
    64 + 32 * 16,
    64 + 8 * 16,
    64 + 4 * 16,
];

#[test]
fn extent_sizes_are_golden() {
    assert_eq!(
        EXTENT_SIZES,
        [1_065_024, 4_198_464, 8_389_184, 33_554_624, 67_108_992]
    );
    let total: usize = EXTENT_SIZES.iter().sum();
    assert_eq!(total, 114_316_288); // about 109 MiB
    for (class, (slot_size, slot_count)) in HUB_SIZE_CLASSES.into_iter().enumerate() {
        assert_eq!(
            calculate_extent_size(slot_size, slot_count),
            Ok(EXTENT_SIZES[class]),
            "class {class}"
        );
        assert_eq!(
            ExtentGeometry::new(slot_size, slot_count),
            Some(ExtentGeometry {
                meta_offset: 64,
                data_offset: DATA_OFFSETS[class],
                size: EXTENT_SIZES[class],
            }),
            "class {class}"
        );
        assert_eq!(DATA_OFFSETS[class] % 64, 0, "slot data is 64-aligned");
        assert_eq!(EXTENT_SIZES[class] % 64, 0);
    }
}

#[test]
fn struct_sizes_used_by_the_arithmetic() {
    use core::mem::size_of;
    assert_eq!(size_of::<HubHeader>(), 256);
    assert_eq!(size_of::<PeerEntry>(), 64);
    assert_eq!(size_of::<DescRingHeader>(), 192);
    assert_eq!(size_of::<MsgDescHot>(), 64);
    assert_eq!(size_of::<SizeClassHeader>(), 192);
    assert_eq!(size_of::<ExtentHeader>(), 64);
    assert_eq!(size_of::<HubSlotMeta>(), 16);
}

/// One configuration's golden numbers.
struct Golden {
    max_peers: u16,
    ring_capacity: u32,
    peer_table: usize,
    ring_region: usize,
    ring_size: usize,
    size_class_headers: usize,
    extent_region: usize,
    initial_size: usize,
    max_size: usize,
}

fn check(g: &Golden) {
    let what = format!("config ({}, {})", g.max_peers, g.ring_capacity);

    let offsets = HubOffsets::calculate(g.max_peers, g.ring_capacity).expect(&what);
    assert_eq!(
        offsets,
        HubOffsets {
            header: 0,
            peer_table: g.peer_table,
            ring_region: g.ring_region,
            size_class_headers: g.size_class_headers,
            extent_region: g.extent_region,
        },
        "{what}"
    );
    assert_eq!(
        calculate_initial_hub_size(g.max_peers, g.ring_capacity),
        Ok(g.initial_size),
        "{what}"
    );

    let layout = SegmentLayout::new(g.max_peers, g.ring_capacity).expect(&what);
    assert_eq!(layout.max_peers, g.max_peers, "{what}");
    assert_eq!(layout.ring_capacity, g.ring_capacity, "{what}");
    assert_eq!(layout.offsets, offsets, "{what}");
    assert_eq!(layout.ring_size(), g.ring_size, "{what}");
    for peer in 0..g.max_peers {
        let p = usize::from(peer);
        assert_eq!(
            layout.peer_entry_offset(peer),
            g.peer_table + 64 * p,
            "{what}"
        );
        assert_eq!(
            layout.send_ring_offset(peer),
            g.ring_region + 2 * p * g.ring_size,
            "{what} peer {peer}"
        );
        assert_eq!(
            layout.recv_ring_offset(peer),
            g.ring_region + (2 * p + 1) * g.ring_size,
            "{what} peer {peer}"
        );
        assert_eq!(layout.ring_offset(2 * p), layout.send_ring_offset(peer));
        assert_eq!(layout.ring_offset(2 * p + 1), layout.recv_ring_offset(peer));
    }
    // The last peer entry ends where the rings start, the last ring where the class headers do.
    let last = g.max_peers - 1;
    assert_eq!(layout.peer_entry_offset(last) + 64, g.ring_region, "{what}");
    assert_eq!(
        layout.recv_ring_offset(last) + g.ring_size,
        g.size_class_headers,
        "{what}"
    );

    let mut extent = g.extent_region;
    for class in 0..NUM_SIZE_CLASSES {
        assert_eq!(
            layout.class_header_offset(class),
            g.size_class_headers + 192 * class,
            "{what} class {class}"
        );
        assert_eq!(
            layout.initial_extent_offset(class),
            extent,
            "{what} class {class}"
        );
        assert_eq!(layout.initial_extent_offset(class) % 64, 0);
        assert_eq!(layout.slots_per_extent(class), HUB_SIZE_CLASSES[class].1);
        let geometry = layout.extent_geometry(class);
        assert_eq!(geometry.size, EXTENT_SIZES[class], "{what} class {class}");
        assert_eq!(geometry.meta_offset, 64);
        assert_eq!(geometry.data_offset, DATA_OFFSETS[class]);
        let (slot_size, slot_count) = HUB_SIZE_CLASSES[class];
        assert_eq!(
            calculate_extent_size(slot_size, slot_count),
            Ok(geometry.size),
            "{what} class {class}"
        );
        extent += EXTENT_SIZES[class];
    }
    assert_eq!(
        layout.class_header_offset(NUM_SIZE_CLASSES - 1) + 192,
        g.extent_region,
        "{what}"
    );
    assert_eq!(extent, g.initial_size, "{what}");
    assert_eq!(layout.initial_size(), g.initial_size, "{what}");
    assert_eq!(layout.max_size(), g.max_size, "{what}");
}

#[test]
fn golden_one_peer_ring_of_one() {
    let peer_table = 256;
    let ring_region = 256 + 64;
    let ring_size = 192 + 64;
    let size_class_headers = ring_region + 2 * ring_size;
    let extent_region = size_class_headers + 5 * 192;
    let extents: usize = EXTENT_SIZES.iter().sum();
    let initial_size = extent_region + extents;
    assert_eq!(
        (ring_region, ring_size, size_class_headers, extent_region),
        (320, 256, 832, 1792)
    );
    assert_eq!(initial_size, 114_318_080);
    check(&Golden {
        max_peers: 1,
        ring_capacity: 1,
        peer_table,
        ring_region,
        ring_size,
        size_class_headers,
        extent_region,
        initial_size,
        max_size: initial_size + 15 * extents,
    });
}

#[test]
fn golden_one_peer_ring_of_64() {
    let peer_table = 256;
    let ring_region = 256 + 64;
    let ring_size = 192 + 64 * 64;
    let size_class_headers = ring_region + 2 * ring_size;
    let extent_region = size_class_headers + 5 * 192;
    let extents: usize = EXTENT_SIZES.iter().sum();
    let initial_size = extent_region + extents;
    assert_eq!(
        (ring_region, ring_size, size_class_headers, extent_region),
        (320, 4288, 8896, 9856)
    );
    assert_eq!(initial_size, 114_326_144);
    check(&Golden {
        max_peers: 1,
        ring_capacity: 64,
        peer_table,
        ring_region,
        ring_size,
        size_class_headers,
        extent_region,
        initial_size,
        max_size: initial_size + 15 * extents,
    });
}

#[test]
fn golden_default_32_peers_ring_of_256() {
    let peer_table = 256;
    let ring_region = 256 + 32 * 64;
    let ring_size = 192 + 256 * 64;
    let size_class_headers = ring_region + 2 * 32 * ring_size;
    let extent_region = size_class_headers + 5 * 192;
    let extents: usize = EXTENT_SIZES.iter().sum();
    let initial_size = extent_region + extents;
    assert_eq!(
        (ring_region, ring_size, size_class_headers, extent_region),
        (2304, 16_576, 1_063_168, 1_064_128)
    );
    assert_eq!(initial_size, 115_380_416); // "about 115 MB of layout" (R8)
    let max_size = initial_size + 15 * extents;
    assert_eq!(max_size, 1_830_124_736);
    check(&Golden {
        max_peers: MAX_PEERS,
        ring_capacity: hub_layout::DEFAULT_HUB_RING_CAPACITY,
        peer_table,
        ring_region,
        ring_size,
        size_class_headers,
        extent_region,
        initial_size,
        max_size,
    });
}

#[test]
fn golden_7_peers_ring_of_1024() {
    let peer_table = 256;
    let ring_region = 256 + 7 * 64;
    let ring_size = 192 + 1024 * 64;
    let size_class_headers = ring_region + 2 * 7 * ring_size;
    let extent_region = size_class_headers + 5 * 192;
    let extents: usize = EXTENT_SIZES.iter().sum();
    let initial_size = extent_region + extents;
    assert_eq!(
        (ring_region, ring_size, size_class_headers, extent_region),
        (704, 65_728, 920_896, 921_856)
    );
    assert_eq!(initial_size, 115_238_144);
    check(&Golden {
        max_peers: 7,
        ring_capacity: 1024,
        peer_table,
        ring_region,
        ring_size,
        size_class_headers,
        extent_region,
        initial_size,
        max_size: initial_size + 15 * extents,
    });
}

#[test]
fn golden_32_peers_ring_of_4096() {
    let peer_table = 256;
    let ring_region = 256 + 32 * 64;
    let ring_size = 192 + 4096 * 64;
    let size_class_headers = ring_region + 2 * 32 * ring_size;
    let extent_region = size_class_headers + 5 * 192;
    let extents: usize = EXTENT_SIZES.iter().sum();
    let initial_size = extent_region + extents;
    assert_eq!(
        (ring_region, ring_size, size_class_headers, extent_region),
        (2304, 262_336, 16_791_808, 16_792_768)
    );
    assert_eq!(initial_size, 131_109_056);
    check(&Golden {
        max_peers: 32,
        ring_capacity: 4096,
        peer_table,
        ring_region,
        ring_size,
        size_class_headers,
        extent_region,
        initial_size,
        max_size: initial_size + 15 * extents,
    });
}

#[test]
fn max_size_is_sixteen_extents_per_class() {
    let layout = SegmentLayout::new(3, 8).unwrap();
    let per_class: usize = EXTENT_SIZES.iter().map(|e| e * MAX_EXTENTS_PER_CLASS).sum();
    assert_eq!(layout.max_size(), layout.offsets.extent_region + per_class);
    // The full reservation of a default hub is below 2 GiB.
    let default = SegmentLayout::new(32, 256).unwrap();
    assert!(default.max_size() < 2 << 30);
}

#[test]
fn invalid_configs_are_refused_everywhere() {
    for (max_peers, ring_capacity) in [(0, 256), (33, 256), (u16::MAX, 256), (1, 0), (1, 3)] {
        assert!(matches!(
            HubOffsets::calculate(max_peers, ring_capacity),
            Err(HubLayoutError::InvalidConfig(_))
        ));
        assert!(matches!(
            SegmentLayout::new(max_peers, ring_capacity),
            Err(HubLayoutError::InvalidConfig(_))
        ));
        assert!(calculate_initial_hub_size(max_peers, ring_capacity).is_err());
    }
}

/// The seed's formulas, written independently of the crate: `(peer_table, ring_region,
/// size_class_headers, extent_region, initial_size)`.
fn seed_formulas(max_peers: usize, ring_capacity: usize) -> (usize, usize, usize, usize, usize) {
    let align = |x: usize| x.div_ceil(64) * 64;
    let peer_table = align(256);
    let ring_region = align(peer_table + max_peers * 64);
    let ring_size = 192 + ring_capacity * 64;
    let size_class_headers = align(ring_region + max_peers * 2 * ring_size);
    let extent_region = align(size_class_headers + 5 * 192);
    let mut initial = extent_region;
    for (slot_size, slot_count) in [
        (1024usize, 1024usize),
        (16384, 256),
        (262144, 32),
        (4194304, 8),
        (16777216, 4),
    ] {
        initial += align(64 + slot_count * 16 + slot_count * slot_size);
    }
    (
        peer_table,
        ring_region,
        size_class_headers,
        extent_region,
        initial,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_valid_config_follows_the_seed_formulas(max_peers in 1u16..=32, k in 0u32..=16) {
        let ring_capacity = 1u32 << k;
        let (peer_table, ring_region, size_class_headers, extent_region, initial) =
            seed_formulas(usize::from(max_peers), ring_capacity as usize);
        let ring_size = 192 + ring_capacity as usize * 64;

        let offsets = HubOffsets::calculate(max_peers, ring_capacity).unwrap();
        prop_assert_eq!(offsets.header, 0);
        prop_assert_eq!(offsets.peer_table, peer_table);
        prop_assert_eq!(offsets.ring_region, ring_region);
        prop_assert_eq!(offsets.size_class_headers, size_class_headers);
        prop_assert_eq!(offsets.extent_region, extent_region);
        prop_assert_eq!(calculate_initial_hub_size(max_peers, ring_capacity), Ok(initial));

        let layout = SegmentLayout::new(max_peers, ring_capacity).unwrap();
        prop_assert_eq!(&layout.offsets, &offsets);
        prop_assert_eq!(layout.ring_size(), ring_size);
        prop_assert_eq!(layout.initial_size(), initial);
        let extents: usize = EXTENT_SIZES.iter().sum();
        prop_assert_eq!(layout.max_size(), initial + 15 * extents);
        for peer in 0..max_peers {
            let p = usize::from(peer);
            prop_assert_eq!(layout.peer_entry_offset(peer), peer_table + p * 64);
            prop_assert_eq!(layout.send_ring_offset(peer), ring_region + 2 * p * ring_size);
            prop_assert_eq!(layout.recv_ring_offset(peer), ring_region + (2 * p + 1) * ring_size);
            prop_assert_eq!(layout.send_ring_offset(peer) % 64, 0);
        }
        let mut extent = extent_region;
        for (class, size) in EXTENT_SIZES.into_iter().enumerate() {
            prop_assert_eq!(layout.class_header_offset(class), size_class_headers + 192 * class);
            prop_assert_eq!(layout.initial_extent_offset(class), extent);
            extent += size;
        }
        prop_assert_eq!(extent, initial);
    }

    #[test]
    fn every_invalid_config_is_refused(max_peers in any::<u16>(), ring_capacity in any::<u32>()) {
        let valid = (1..=MAX_PEERS).contains(&max_peers) && ring_capacity.is_power_of_two();
        prop_assert_eq!(HubOffsets::calculate(max_peers, ring_capacity).is_ok(), valid);
        prop_assert_eq!(SegmentLayout::new(max_peers, ring_capacity).is_ok(), valid);
        prop_assert_eq!(calculate_initial_hub_size(max_peers, ring_capacity).is_ok(), valid);
        if !valid {
            let is_invalid_config = matches!(
                HubOffsets::calculate(max_peers, ring_capacity),
                Err(HubLayoutError::InvalidConfig(_))
            );
            prop_assert!(is_invalid_config);
        }
    }

    /// Extent geometry and the seed's extent size agree for any slot count that is a multiple of
    /// 4 (the metas then end 64-aligned), and neither panics on any input.
    #[test]
    fn extent_geometry_agrees_with_calculate_extent_size(
        slot_size in any::<u32>(),
        slot_count in any::<u32>(),
    ) {
        let seed = calculate_extent_size(slot_size, slot_count);
        let geometry = ExtentGeometry::new(slot_size, slot_count);
        let n = u128::from(slot_count);
        let exact = (64 + 16 * n + n * u128::from(slot_size)).div_ceil(64) * 64;
        match seed {
            Ok(size) => prop_assert_eq!(size as u128, exact),
            Err(_) => prop_assert!(exact > usize::MAX as u128),
        }
        if let Some(g) = geometry {
            prop_assert_eq!(g.meta_offset, 64);
            prop_assert_eq!(u128::from(g.data_offset), (64 + 16 * n).div_ceil(64) * 64);
            prop_assert_eq!(g.data_offset % 64, 0);
            prop_assert!(g.size as u128 >= exact);
            if slot_count % 4 == 0 {
                prop_assert_eq!(seed, Ok(g.size));
            }
        } else {
            // Only when the metas push data_offset past u32, or the size past usize.
            prop_assert!(64 + 16 * n > u128::from(u32::MAX) || exact > usize::MAX as u128);
        }
    }

    #[test]
    fn small_extent_geometry_agrees(slot_size in 0u32..(1 << 20), slot_count in 0u32..(1 << 16)) {
        let g = ExtentGeometry::new(slot_size, slot_count).unwrap();
        let seed = calculate_extent_size(slot_size, slot_count).unwrap();
        if slot_count % 4 == 0 {
            prop_assert_eq!(g.size, seed);
        } else {
            prop_assert!(g.size >= seed && g.size - seed <= 64);
        }
    }
}
