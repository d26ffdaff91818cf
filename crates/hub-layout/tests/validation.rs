//! Validation on attach (R2): a valid segment image built field by field is accepted, and
//! corrupting exactly one field at a time gives that field's own error.

#![cfg(not(loom))]

mod common;

use common::*;
use hub_layout::{
    DEFAULT_HUB_RING_CAPACITY, HUB_MAGIC, HUB_PROTOCOL_VERSION, HUB_SIZE_CLASSES, HeaderSnapshot,
    HubHeader, HubLayoutError, MAX_EXTENTS_PER_CLASS, MAX_PEERS, NUM_SIZE_CLASSES, SegmentLayout,
    validate_header, validate_segment,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The configurations every test runs over: small, the default, and odd-sized.
const CONFIGS: [(u16, u32); 3] = [(2, 4), (MAX_PEERS, DEFAULT_HUB_RING_CAPACITY), (7, 1)];

const MAX_PEERS_MSG: &str = "max_peers must be between 1 and MAX_PEERS";
const RING_CAPACITY_MSG: &str = "ring_capacity must be non-zero power of 2";

fn for_each_config(mut f: impl FnMut(&mut Image)) {
    for (max_peers, ring_capacity) in CONFIGS {
        let mut image = Image::new(max_peers, ring_capacity);
        f(&mut image);
        // Every corruption was restored.
        assert!(image.validate().is_ok(), "({max_peers}, {ring_capacity})");
    }
}

fn bad_extent(class: usize, extent: usize, offset: u64, reason: &'static str) -> HubLayoutError {
    HubLayoutError::BadExtentOffset {
        class: class as u16,
        extent: extent as u16,
        offset,
        reason,
    }
}

// ---------------------------------------------------------------------------------------------
// The valid image.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_valid_image_is_accepted() {
    for_each_config(|image| {
        let layout = image.layout.clone();
        let len = image.bytes.len();
        assert_eq!(len, layout.initial_size());
        let v = image.validate().expect("a valid image");

        let expected_header = HeaderSnapshot {
            magic: HUB_MAGIC,
            version: HUB_PROTOCOL_VERSION,
            flags: 0,
            max_peers: layout.max_peers,
            active_peers: 0,
            peer_id_counter: 0,
            current_size: layout.initial_size() as u64,
            extent_count: 0,
            ring_capacity: layout.ring_capacity,
            peer_table_offset: layout.offsets.peer_table as u64,
            ring_region_offset: layout.offsets.ring_region as u64,
            size_class_offset: layout.offsets.size_class_headers as u64,
            extent_region_offset: layout.offsets.extent_region as u64,
        };
        assert_eq!(v.header, expected_header);
        assert_eq!(
            v.layout,
            SegmentLayout::new(layout.max_peers, layout.ring_capacity).unwrap()
        );
        for class in 0..NUM_SIZE_CLASSES {
            assert_eq!(
                v.extent_offsets[class][0],
                layout.initial_extent_offset(class) as u64
            );
            assert!(v.extent_offsets[class][1..].iter().all(|&o| o == 0));
        }
        check_accepted(&v, len);

        // The header alone, through the public pieces.
        let snapshot = HeaderSnapshot::read(&image.bytes[..]).unwrap();
        assert_eq!(snapshot, expected_header);
        assert_eq!(validate_header(&snapshot, len), Ok(layout.clone()));
    });
}

#[test]
fn fields_validation_does_not_check_are_free() {
    // Flags, counters, futex words, free heads and padding hold live state; any value passes.
    for_each_config(|image| {
        let layout = image.layout.clone();
        let ok = |r: Result<_, HubLayoutError>| assert!(r.is_ok(), "{r:?}");
        ok(image.with_u32(FLAGS, u32::MAX));
        // active_peers, peer_id_counter and _pad1: the six bytes before current_size.
        ok(image.validate_with(core::mem::offset_of!(HubHeader, active_peers), &[0xFF; 6]));
        ok(image.with_u32(core::mem::offset_of!(HubHeader, extent_count), u32::MAX));
        ok(image.validate_with(core::mem::offset_of!(HubHeader, _pad2), &[0xFF; 168]));
        let last = layout.max_peers - 1;
        ok(image.validate_with(layout.peer_entry_offset(last), &[0xFF; 24]));
        ok(image.validate_with(layout.peer_entry_offset(last) + 40, &[0xFF; 24]));
        ok(image.validate_with(layout.ring_offset(0), &[0xFF; 128]));
        ok(image.validate_with(layout.ring_offset(0) + RING_CAP + 4, &[0xFF; 60]));
        let class = layout.class_header_offset(NUM_SIZE_CLASSES - 1);
        ok(image.validate_with(class + 12, &[0xFF; 12]));
        ok(image.validate_with(
            class + EXTENT_OFFSETS + 8 * MAX_EXTENTS_PER_CLASS,
            &[0xFF; 40],
        ));
        // The descriptors and the extents are not read at all.
        ok(image.validate_with(layout.ring_offset(0) + 192, &[0xFF; 64]));
        ok(image.validate_with(layout.initial_extent_offset(0), &[0xFF; 64]));
    });
}

// ---------------------------------------------------------------------------------------------
// The header.
// ---------------------------------------------------------------------------------------------

#[test]
fn magic() {
    for_each_config(|image| {
        // All zero: the creator has not published the hub yet (R1).
        assert_eq!(
            image.validate_with(MAGIC, &[0; 8]).unwrap_err(),
            HubLayoutError::NotReady
        );
        for magic in [
            *b"RAPAHUB!",
            *b"rapahub\0",
            *b"\0APAHUB\0",
            [0, 0, 0, 0, 0, 0, 0, 1],
            [0xFF; 8],
        ] {
            assert_eq!(
                image.validate_with(MAGIC, &magic).unwrap_err(),
                HubLayoutError::InvalidMagic,
                "{magic:?}"
            );
        }
    });
}

#[test]
fn version() {
    for_each_config(|image| {
        for version in [0, 2 << 16, (2 << 16) | 1, 0xFFFF, 0xFFFF_0000, u32::MAX] {
            assert_eq!(
                image.with_u32(VERSION, version).unwrap_err(),
                HubLayoutError::IncompatibleVersion {
                    expected: HUB_PROTOCOL_VERSION,
                    found: version,
                },
                "{version:#x}"
            );
        }
        // A minor version bump of the same major is accepted (R13).
        for minor in [1, 7, 0xFFFF] {
            let v = image
                .with_u32(VERSION, HUB_PROTOCOL_VERSION | minor)
                .expect("a minor bump");
            assert_eq!(v.header.version, HUB_PROTOCOL_VERSION | minor);
        }
    });
}

#[test]
fn max_peers() {
    for_each_config(|image| {
        let max_peers = image.layout.max_peers;
        for bad in [0, MAX_PEERS + 1, 1000, u16::MAX] {
            assert_eq!(
                image.with_u16(MAX_PEERS_AT, bad).unwrap_err(),
                HubLayoutError::InvalidConfig(MAX_PEERS_MSG),
                "max_peers {bad}"
            );
        }
        // A different valid count moves the rings: the stored ring region offset is wrong.
        let other = if max_peers == 1 { 2 } else { max_peers - 1 };
        let moved = SegmentLayout::new(other, image.layout.ring_capacity).unwrap();
        assert_eq!(
            image.with_u16(MAX_PEERS_AT, other).unwrap_err(),
            HubLayoutError::OffsetMismatch {
                field: "ring_region_offset",
                expected: moved.offsets.ring_region as u64,
                found: image.layout.offsets.ring_region as u64,
            }
        );
    });
}

#[test]
fn ring_capacity() {
    for_each_config(|image| {
        for bad in [0, 3, 5, 255, 257, 0x8000_0001, u32::MAX] {
            assert_eq!(
                image.with_u32(RING_CAPACITY, bad).unwrap_err(),
                HubLayoutError::InvalidConfig(RING_CAPACITY_MSG),
                "ring_capacity {bad}"
            );
        }
        // A different power of two moves the class headers.
        let other = image.layout.ring_capacity * 2;
        let moved = SegmentLayout::new(image.layout.max_peers, other).unwrap();
        assert_eq!(
            image.with_u32(RING_CAPACITY, other).unwrap_err(),
            HubLayoutError::OffsetMismatch {
                field: "size_class_offset",
                expected: moved.offsets.size_class_headers as u64,
                found: image.layout.offsets.size_class_headers as u64,
            }
        );
    });
}

#[test]
fn each_region_offset() {
    for_each_config(|image| {
        let o = image.layout.offsets.clone();
        let fields = [
            ("peer_table_offset", PEER_TABLE_OFFSET, o.peer_table),
            ("ring_region_offset", RING_REGION_OFFSET, o.ring_region),
            ("size_class_offset", SIZE_CLASS_OFFSET, o.size_class_headers),
            (
                "extent_region_offset",
                EXTENT_REGION_OFFSET,
                o.extent_region,
            ),
        ];
        for (field, at, expected) in fields {
            let expected = expected as u64;
            for found in [0, expected + 64, expected - 64, expected + 1, u64::MAX] {
                assert_eq!(
                    image.with_u64(at, found).unwrap_err(),
                    HubLayoutError::OffsetMismatch {
                        field,
                        expected,
                        found
                    },
                    "{field} = {found}"
                );
            }
        }
    });
}

#[test]
fn truncated_mapping() {
    for_each_config(|image| {
        let initial = image.layout.initial_size();
        for len in [
            initial - 1,
            initial - 64,
            image.layout.offsets.extent_region,
            4096,
            256,
        ] {
            assert_eq!(
                validate_segment(&image.bytes[..len]).unwrap_err(),
                HubLayoutError::HubTooSmall {
                    required: initial,
                    found: len,
                },
                "len {len}"
            );
        }
        // Shorter than a header: the header itself does not fit.
        for len in [0, 1, 8, 255] {
            assert_eq!(
                validate_segment(&image.bytes[..len]).unwrap_err(),
                HubLayoutError::HubTooSmall {
                    required: 256,
                    found: len,
                },
                "len {len}"
            );
            assert_eq!(
                HeaderSnapshot::read(&image.bytes[..len]).unwrap_err(),
                HubLayoutError::HubTooSmall {
                    required: 256,
                    found: len,
                }
            );
        }
        // Exactly the initial size is enough.
        assert!(validate_segment(&image.bytes[..initial]).is_ok());
    });
}

#[test]
fn current_size() {
    for_each_config(|image| {
        let initial = image.layout.initial_size() as u64;
        for found in [0, 1, initial / 2, initial - 64, initial - 1] {
            assert_eq!(
                image.with_u64(CURRENT_SIZE, found).unwrap_err(),
                HubLayoutError::BadCurrentSize {
                    required: initial,
                    found,
                },
                "current_size {found}"
            );
        }
        // Growth (R8) raises current_size; a reservation may run ahead of what this mapping
        // sees, and validation does not refuse it.
        let grown = initial + image.layout.extent_geometry(0).size as u64;
        let v = image.with_u64(CURRENT_SIZE, grown).unwrap();
        assert_eq!(v.header.current_size, grown);
    });
}

#[test]
fn checks_run_in_the_order_of_r2() {
    let mut image = Image::new(2, 4);
    // Every header field wrong at once: the magic is reported first, then the version, then
    // the configuration, then the offsets, then the mapping length, then current_size.
    put(&mut image.bytes, MAGIC, b"XXXXXXXX");
    put_u32(&mut image.bytes, VERSION, 7 << 16);
    put_u16(&mut image.bytes, MAX_PEERS_AT, 0);
    put_u64(&mut image.bytes, PEER_TABLE_OFFSET, 1);
    put_u64(&mut image.bytes, CURRENT_SIZE, 1);
    let len = image.bytes.len();
    let short = len - 1;
    let check = |image: &Image, expected: HubLayoutError| {
        assert_eq!(
            validate_segment(&image.bytes[..short]).unwrap_err(),
            expected
        );
    };
    check(&image, HubLayoutError::InvalidMagic);
    put(&mut image.bytes, MAGIC, &[0; 8]);
    check(&image, HubLayoutError::NotReady);
    put(&mut image.bytes, MAGIC, &HUB_MAGIC);
    check(
        &image,
        HubLayoutError::IncompatibleVersion {
            expected: HUB_PROTOCOL_VERSION,
            found: 7 << 16,
        },
    );
    put_u32(&mut image.bytes, VERSION, HUB_PROTOCOL_VERSION);
    check(&image, HubLayoutError::InvalidConfig(MAX_PEERS_MSG));
    put_u16(&mut image.bytes, MAX_PEERS_AT, 2);
    check(
        &image,
        HubLayoutError::OffsetMismatch {
            field: "peer_table_offset",
            expected: 256,
            found: 1,
        },
    );
    put_u64(&mut image.bytes, PEER_TABLE_OFFSET, 256);
    let initial = image.layout.initial_size();
    check(
        &image,
        HubLayoutError::HubTooSmall {
            required: initial,
            found: short,
        },
    );
    assert_eq!(
        image.validate().unwrap_err(),
        HubLayoutError::BadCurrentSize {
            required: initial as u64,
            found: 1,
        }
    );
    put_u64(&mut image.bytes, CURRENT_SIZE, initial as u64);
    assert!(image.validate().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Peer entries, rings, size classes.
// ---------------------------------------------------------------------------------------------

#[test]
fn each_peer_ring_offset() {
    for_each_config(|image| {
        let layout = image.layout.clone();
        for peer in 0..layout.max_peers {
            let entry = layout.peer_entry_offset(peer);
            let send = layout.send_ring_offset(peer) as u64;
            let recv = layout.recv_ring_offset(peer) as u64;
            for (field, at, expected) in [
                ("send_ring_offset", SEND_RING, send),
                ("recv_ring_offset", RECV_RING, recv),
            ] {
                for found in [0, expected + 64, expected - 1, u64::MAX] {
                    assert_eq!(
                        image.with_u64(entry + at, found).unwrap_err(),
                        HubLayoutError::PeerRingMismatch {
                            peer,
                            field,
                            expected,
                            found,
                        }
                    );
                }
            }
            // Swapped rings: the send ring is reported.
            put_u64(&mut image.bytes, entry + RECV_RING, send);
            assert_eq!(
                image.with_u64(entry + SEND_RING, recv).unwrap_err(),
                HubLayoutError::PeerRingMismatch {
                    peer,
                    field: "send_ring_offset",
                    expected: send,
                    found: recv,
                }
            );
            put_u64(&mut image.bytes, entry + RECV_RING, recv);
        }
    });
}

#[test]
fn each_ring_capacity() {
    for_each_config(|image| {
        let layout = image.layout.clone();
        let expected = layout.ring_capacity;
        for ring in 0..2 * layout.max_peers {
            let at = layout.ring_offset(usize::from(ring)) + RING_CAP;
            for found in [0, expected * 2, expected + 1, u32::MAX] {
                assert_eq!(
                    image.with_u32(at, found).unwrap_err(),
                    HubLayoutError::RingCapacityMismatch {
                        ring,
                        expected,
                        found,
                    },
                    "ring {ring}"
                );
            }
        }
    });
}

#[test]
fn each_size_class_field() {
    for_each_config(|image| {
        for (class, (slot_size, slots)) in HUB_SIZE_CLASSES.into_iter().enumerate() {
            let base = image.layout.class_header_offset(class);
            let shift = slots.trailing_zeros();
            for (field, at, expected) in [
                ("slot_size", SLOT_SIZE, slot_size),
                ("slots_per_extent", SLOTS_PER_EXTENT, slots),
                ("extent_slot_shift", EXTENT_SLOT_SHIFT, shift),
            ] {
                for found in [0, expected + 1, expected * 2, u32::MAX] {
                    assert_eq!(
                        image.with_u32(base + at, found).unwrap_err(),
                        HubLayoutError::SizeClassMismatch {
                            class: class as u16,
                            field,
                            expected: u64::from(expected),
                            found: u64::from(found),
                        },
                        "class {class} {field}"
                    );
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Extent offsets.
// ---------------------------------------------------------------------------------------------

#[test]
fn unpublished_initial_extent() {
    for_each_config(|image| {
        for class in 0..NUM_SIZE_CLASSES {
            let at = image.extent_slot(class, 0);
            assert_eq!(
                image.with_u64(at, 0).unwrap_err(),
                bad_extent(class, 0, 0, "the initial extent is not published")
            );
        }
    });
}

#[test]
fn misaligned_extent() {
    for_each_config(|image| {
        for class in 0..NUM_SIZE_CLASSES {
            let initial = image.layout.initial_extent_offset(class) as u64;
            for offset in [initial + 1, initial + 8, initial + 63, initial - 32] {
                assert_eq!(
                    image
                        .with_u64(image.extent_slot(class, 0), offset)
                        .unwrap_err(),
                    bad_extent(class, 0, offset, "not 64-aligned")
                );
            }
            // A grown extent too.
            let offset = image.bytes.len() as u64 - 8;
            assert_eq!(
                image
                    .with_u64(image.extent_slot(class, 3), offset)
                    .unwrap_err(),
                bad_extent(class, 3, offset, "not 64-aligned")
            );
        }
    });
}

#[test]
fn extent_before_the_extent_region() {
    for_each_config(|image| {
        let layout = image.layout.clone();
        for class in 0..NUM_SIZE_CLASSES {
            for offset in [
                64,
                layout.offsets.peer_table as u64,
                layout.offsets.ring_region as u64,
                layout.class_header_offset(class) as u64,
                layout.offsets.extent_region as u64 - 64,
            ] {
                for extent in [0, 1, MAX_EXTENTS_PER_CLASS - 1] {
                    assert_eq!(
                        image
                            .with_u64(image.extent_slot(class, extent), offset)
                            .unwrap_err(),
                        bad_extent(class, extent, offset, "before the extent region"),
                        "class {class} extent {extent}"
                    );
                }
            }
        }
    });
}

#[test]
fn extent_past_the_end_of_the_mapping() {
    for_each_config(|image| {
        let len = image.bytes.len() as u64;
        for class in 0..NUM_SIZE_CLASSES {
            let size = image.layout.extent_geometry(class).size as u64;
            for offset in [
                len,
                len - size + 64,
                len + 64,
                // offset + size overflows u64.
                u64::MAX - 63,
                (u64::MAX - size + 1).next_multiple_of(64),
            ] {
                assert_eq!(
                    image
                        .with_u64(image.extent_slot(class, 1), offset)
                        .unwrap_err(),
                    bad_extent(class, 1, offset, "past the end of the mapping"),
                    "class {class} offset {offset}"
                );
            }
        }
        // The last initial extent, moved up by one cache line, sticks out of the mapping.
        let last = NUM_SIZE_CLASSES - 1;
        let offset = image.layout.initial_extent_offset(last) as u64 + 64;
        assert_eq!(
            image
                .with_u64(image.extent_slot(last, 0), offset)
                .unwrap_err(),
            bad_extent(last, 0, offset, "past the end of the mapping")
        );
    });
}

#[test]
fn overlapping_extents() {
    for_each_config(|image| {
        let layout = image.layout.clone();
        for class in 0..NUM_SIZE_CLASSES {
            // The initial extent of the previous class, overlapping the start of this one.
            if class > 0 {
                let prev = class - 1;
                let offset = layout.initial_extent_offset(prev) as u64 + 64;
                assert_eq!(
                    image
                        .with_u64(image.extent_slot(prev, 0), offset)
                        .unwrap_err(),
                    bad_extent(
                        class,
                        0,
                        layout.initial_extent_offset(class) as u64,
                        "overlaps another extent"
                    ),
                    "class {class}"
                );
            }
            // A second extent at the start of the class's own initial extent: of two equal
            // ranges, the one with the higher extent index sorts last and is named.
            let start = layout.initial_extent_offset(class) as u64;
            assert_eq!(
                image
                    .with_u64(image.extent_slot(class, 1), start)
                    .unwrap_err(),
                bad_extent(class, 1, start, "overlaps another extent"),
                "class {class}"
            );
            // A second extent inside the class's own initial extent (the last class has no room
            // for that in the mapping): the later start is named.
            if class == NUM_SIZE_CLASSES - 1 {
                continue;
            }
            let offset = start + 64;
            assert_eq!(
                image
                    .with_u64(image.extent_slot(class, 1), offset)
                    .unwrap_err(),
                bad_extent(class, 1, offset, "overlaps another extent"),
                "class {class}"
            );
        }
        // Two extents of one class at the same offset, far apart in the table.
        let offset = layout.initial_extent_offset(2) as u64;
        let err = image.with_u64(image.extent_slot(2, 5), offset).unwrap_err();
        assert_eq!(err, bad_extent(2, 5, offset, "overlaps another extent"));
    });
}

#[test]
fn grown_extents_after_the_initial_size_are_accepted() {
    for (max_peers, ring_capacity) in [(2, 4), (MAX_PEERS, DEFAULT_HUB_RING_CAPACITY)] {
        let layout = SegmentLayout::new(max_peers, ring_capacity).unwrap();
        let sizes: Vec<usize> = (0..NUM_SIZE_CLASSES)
            .map(|c| layout.extent_geometry(c).size)
            .collect();
        // Room for one more extent of every class, then two more of class 0.
        let len = layout.initial_size() + sizes.iter().sum::<usize>() + 2 * sizes[0];
        let mut image = Image::with_len(max_peers, ring_capacity, len);

        // The image with only the initial extents is valid in a longer mapping.
        assert!(image.validate().is_ok());

        // Grow every class by one extent, placed back to back, largest class first.
        let mut next = layout.initial_size();
        let mut placed = [[0u64; MAX_EXTENTS_PER_CLASS]; NUM_SIZE_CLASSES];
        for (class, offsets) in placed.iter_mut().enumerate() {
            offsets[0] = layout.initial_extent_offset(class) as u64;
        }
        for class in (0..NUM_SIZE_CLASSES).rev() {
            let at = image.extent_slot(class, 1);
            put_u64(&mut image.bytes, at, next as u64);
            placed[class][1] = next as u64;
            next += sizes[class];
            let v = image.validate().expect("a grown extent");
            assert_eq!(v.extent_offsets, placed);
            check_accepted(&v, len);
        }
        // Class 0 twice more, as its last extent and one in the middle of the table; the last
        // one ends exactly at the end of the mapping.
        for extent in [MAX_EXTENTS_PER_CLASS - 1, 7] {
            let at = image.extent_slot(0, extent);
            put_u64(&mut image.bytes, at, next as u64);
            placed[0][extent] = next as u64;
            next += sizes[0];
        }
        assert_eq!(next, len);
        let v = image.validate().expect("grown extents");
        assert_eq!(v.extent_offsets, placed);
        check_accepted(&v, len);

        // One more class-0 extent past them all is past the end; one over the previous
        // overlaps it.
        let at = image.extent_slot(0, 8);
        assert_eq!(
            image.with_u64(at, len as u64).unwrap_err(),
            bad_extent(0, 8, len as u64, "past the end of the mapping")
        );
        let over = (len - sizes[0] - 64) as u64;
        assert!(matches!(
            image.with_u64(at, over).unwrap_err(),
            HubLayoutError::BadExtentOffset {
                class: 0,
                reason: "overlaps another extent",
                ..
            }
        ));
        // The same image in a mapping that ends one byte early refuses the extent placed last
        // (extent 7).
        assert_eq!(
            validate_segment(&image.bytes[..len - 1]).unwrap_err(),
            bad_extent(0, 7, placed[0][7], "past the end of the mapping")
        );
    }
}

#[test]
fn grown_extent_with_a_gap_is_accepted() {
    // Validation checks placement, not packing: a gap (e.g. a reservation abandoned by a
    // grower that died) is allowed.
    let layout = SegmentLayout::new(1, 1).unwrap();
    let size = layout.extent_geometry(1).size;
    let gap = 4096;
    let len = layout.initial_size() + gap + size;
    let mut image = Image::with_len(1, 1, len);
    let at = image.extent_slot(1, 2);
    let offset = (layout.initial_size() + gap) as u64;
    let v = image.with_u64(at, offset).unwrap();
    assert_eq!(v.extent_offsets[1][2], offset);
    assert_eq!(v.extent_offsets[1][1], 0);
    check_accepted(&v, len);
}

// ---------------------------------------------------------------------------------------------
// HubHeader::validate (the seed's check) on constructed headers, against validate_header.
// ---------------------------------------------------------------------------------------------

fn snapshot_of(h: &HubHeader) -> HeaderSnapshot {
    use std::sync::atomic::Ordering::Relaxed;
    HeaderSnapshot {
        magic: h.magic,
        version: h.version,
        flags: h.flags,
        max_peers: h.max_peers,
        active_peers: h.active_peers.load(Relaxed),
        peer_id_counter: h.peer_id_counter.load(Relaxed),
        current_size: h.current_size.load(Relaxed),
        extent_count: h.extent_count.load(Relaxed),
        ring_capacity: h.ring_capacity,
        peer_table_offset: h.peer_table_offset,
        ring_region_offset: h.ring_region_offset,
        size_class_offset: h.size_class_offset,
        extent_region_offset: h.extent_region_offset,
    }
}

#[test]
fn hub_header_validate_on_constructed_headers() {
    let mut h = HubHeader::new(4, 16);
    assert_eq!(h.validate(), Ok(()));
    // The seed's init leaves offsets zero: the seed check passes, full validation does not.
    let layout = SegmentLayout::new(4, 16).unwrap();
    assert_eq!(
        validate_header(&snapshot_of(&h), layout.initial_size()),
        Err(HubLayoutError::OffsetMismatch {
            field: "peer_table_offset",
            expected: 256,
            found: 0,
        })
    );
    // With the offsets and the size filled in, both pass.
    h.peer_table_offset = layout.offsets.peer_table as u64;
    h.ring_region_offset = layout.offsets.ring_region as u64;
    h.size_class_offset = layout.offsets.size_class_headers as u64;
    h.extent_region_offset = layout.offsets.extent_region as u64;
    h.current_size.store(
        layout.initial_size() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    assert_eq!(h.validate(), Ok(()));
    assert_eq!(
        validate_header(&snapshot_of(&h), layout.initial_size()),
        Ok(layout.clone())
    );

    // Each seed fault gives the same error from both checks, except the all-zero magic, which
    // full validation names NotReady.
    type Fault = (&'static str, fn(&mut HubHeader));
    let faults: [Fault; 6] = [
        ("magic", |h| h.magic = *b"NOTAHUB\0"),
        ("version", |h| h.version = 3 << 16),
        ("max_peers 0", |h| h.max_peers = 0),
        ("max_peers 33", |h| h.max_peers = 33),
        ("ring_capacity 0", |h| h.ring_capacity = 0),
        ("ring_capacity 12", |h| h.ring_capacity = 12),
    ];
    for (what, fault) in faults {
        let mut bad = HubHeader::new(4, 16);
        bad.peer_table_offset = h.peer_table_offset;
        bad.ring_region_offset = h.ring_region_offset;
        bad.size_class_offset = h.size_class_offset;
        bad.extent_region_offset = h.extent_region_offset;
        fault(&mut bad);
        let seed = bad.validate().unwrap_err();
        assert_eq!(
            validate_header(&snapshot_of(&bad), usize::MAX),
            Err(seed.clone()),
            "{what}"
        );
    }
    let mut zero = HubHeader::new(4, 16);
    zero.magic = [0; 8];
    assert_eq!(zero.validate(), Err(HubLayoutError::InvalidMagic));
    assert_eq!(
        validate_header(&snapshot_of(&zero), usize::MAX),
        Err(HubLayoutError::NotReady)
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests over one image: one random field, one random value, its own error.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Field {
    Version,
    CurrentSize,
    Region(usize),
    PeerRing { peer: u16, recv: bool },
    RingCapacity(u16),
    Class { class: usize, field: usize },
}

fn field_strategy(max_peers: u16) -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Version),
        Just(Field::CurrentSize),
        (0usize..4).prop_map(Field::Region),
        (0..max_peers, any::<bool>()).prop_map(|(peer, recv)| Field::PeerRing { peer, recv }),
        (0..2 * max_peers).prop_map(Field::RingCapacity),
        (0..NUM_SIZE_CLASSES, 0usize..3).prop_map(|(class, field)| Field::Class { class, field }),
    ]
}

#[test]
fn any_single_field_with_any_value_gives_its_own_error() {
    let mut image = Image::new(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY);
    let layout = image.layout.clone();
    let image = std::cell::RefCell::new(&mut image);
    let mut runner = TestRunner::new(Config::with_cases(256));
    let strategy = (
        field_strategy(MAX_PEERS),
        prop_oneof![any::<u64>(), 0u64..(1 << 32), 0u64..256],
    );
    runner
        .run(&strategy, |(field, value)| {
            let mut image = image.borrow_mut();
            let initial = layout.initial_size() as u64;
            match field {
                Field::Version => {
                    let v = value as u32;
                    let r = image.with_u32(VERSION, v);
                    if v >> 16 == 1 {
                        prop_assert_eq!(r.unwrap().header.version, v);
                    } else {
                        prop_assert_eq!(
                            r.unwrap_err(),
                            HubLayoutError::IncompatibleVersion {
                                expected: HUB_PROTOCOL_VERSION,
                                found: v
                            }
                        );
                    }
                }
                Field::CurrentSize => {
                    let r = image.with_u64(CURRENT_SIZE, value);
                    if value >= initial {
                        prop_assert_eq!(r.unwrap().header.current_size, value);
                    } else {
                        prop_assert_eq!(
                            r.unwrap_err(),
                            HubLayoutError::BadCurrentSize {
                                required: initial,
                                found: value
                            }
                        );
                    }
                }
                Field::Region(i) => {
                    let o = &layout.offsets;
                    let (name, at, expected) = [
                        ("peer_table_offset", PEER_TABLE_OFFSET, o.peer_table),
                        ("ring_region_offset", RING_REGION_OFFSET, o.ring_region),
                        ("size_class_offset", SIZE_CLASS_OFFSET, o.size_class_headers),
                        (
                            "extent_region_offset",
                            EXTENT_REGION_OFFSET,
                            o.extent_region,
                        ),
                    ][i];
                    let r = image.with_u64(at, value);
                    if value == expected as u64 {
                        prop_assert!(r.is_ok());
                    } else {
                        prop_assert_eq!(
                            r.unwrap_err(),
                            HubLayoutError::OffsetMismatch {
                                field: name,
                                expected: expected as u64,
                                found: value
                            }
                        );
                    }
                }
                Field::PeerRing { peer, recv } => {
                    let (name, at, expected) = if recv {
                        ("recv_ring_offset", RECV_RING, layout.recv_ring_offset(peer))
                    } else {
                        ("send_ring_offset", SEND_RING, layout.send_ring_offset(peer))
                    };
                    let r = image.with_u64(layout.peer_entry_offset(peer) + at, value);
                    if value == expected as u64 {
                        prop_assert!(r.is_ok());
                    } else {
                        prop_assert_eq!(
                            r.unwrap_err(),
                            HubLayoutError::PeerRingMismatch {
                                peer,
                                field: name,
                                expected: expected as u64,
                                found: value
                            }
                        );
                    }
                }
                Field::RingCapacity(ring) => {
                    let v = value as u32;
                    let at = layout.ring_offset(usize::from(ring)) + RING_CAP;
                    let r = image.with_u32(at, v);
                    if v == layout.ring_capacity {
                        prop_assert!(r.is_ok());
                    } else {
                        prop_assert_eq!(
                            r.unwrap_err(),
                            HubLayoutError::RingCapacityMismatch {
                                ring,
                                expected: layout.ring_capacity,
                                found: v
                            }
                        );
                    }
                }
                Field::Class { class, field } => {
                    let v = value as u32;
                    let (slot_size, slots) = HUB_SIZE_CLASSES[class];
                    let (name, at, expected) = [
                        ("slot_size", SLOT_SIZE, slot_size),
                        ("slots_per_extent", SLOTS_PER_EXTENT, slots),
                        (
                            "extent_slot_shift",
                            EXTENT_SLOT_SHIFT,
                            slots.trailing_zeros(),
                        ),
                    ][field];
                    let r = image.with_u32(layout.class_header_offset(class) + at, v);
                    if v == expected {
                        prop_assert!(r.is_ok());
                    } else {
                        prop_assert_eq!(
                            r.unwrap_err(),
                            HubLayoutError::SizeClassMismatch {
                                class: class as u16,
                                field: name,
                                expected: u64::from(expected),
                                found: u64::from(v)
                            }
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(image.borrow().validate().is_ok());
}

#[test]
fn any_extent_offset_is_accepted_only_where_it_fits() {
    // Class 0 extent 1 at any offset, in a mapping with room for exactly one grown class-0
    // extent after the initial ones: accepted only at an aligned offset in that room.
    let layout = SegmentLayout::new(3, 8).unwrap();
    let size = layout.extent_geometry(0).size as u64;
    let initial = layout.initial_size() as u64;
    let len = initial + size + 256;
    let mut image = Image::with_len(3, 8, len as usize);
    let at = image.extent_slot(0, 1);
    let image = std::cell::RefCell::new(&mut image);
    let mut runner = TestRunner::new(Config::with_cases(256));
    let strategy = prop_oneof![
        any::<u64>(),
        0..len + 1024,
        (initial - 128)..(initial + 512),
        (initial / 64 - 2..initial / 64 + 8).prop_map(|k| k * 64),
    ];
    runner
        .run(&strategy, |offset| {
            let r = image.borrow_mut().with_u64(at, offset);
            let region = layout.offsets.extent_region as u64;
            let reason = if offset == 0 {
                None
            } else if offset % 64 != 0 {
                Some("not 64-aligned")
            } else if offset < region {
                Some("before the extent region")
            } else if offset.checked_add(size).is_none_or(|end| end > len) {
                Some("past the end of the mapping")
            } else if offset < initial {
                Some("overlaps another extent")
            } else {
                None
            };
            match reason {
                None => {
                    let v = r.unwrap();
                    prop_assert_eq!(v.extent_offsets[0][1], offset);
                    check_accepted(&v, len as usize);
                }
                Some(reason) => {
                    let err = r.unwrap_err();
                    if reason == "overlaps another extent" {
                        // The later start of the first overlapping pair is named: this
                        // extent, or the initial extent that starts at the same offset.
                        let named_here = matches!(
                            err,
                            HubLayoutError::BadExtentOffset {
                                offset: o,
                                reason: "overlaps another extent",
                                ..
                            } if o == offset
                        );
                        prop_assert!(named_here, "{:?}", err);
                    } else {
                        prop_assert_eq!(err, bad_extent(0, 1, offset, reason));
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
