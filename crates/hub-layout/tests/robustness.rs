//! Validation never panics and never reads past the mapping, whatever the bytes (R2, R3, and
//! the threat model: a peer may write garbage anywhere).

#![cfg(not(loom))]

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::*;
use hub_layout::{
    DEFAULT_HUB_RING_CAPACITY, HUB_MAGIC, HUB_PROTOCOL_VERSION, HUB_SIZE_CLASSES, HeaderSnapshot,
    HubLayoutError, MAX_EXTENTS_PER_CLASS, MAX_PEERS, NUM_SIZE_CLASSES, SegmentLayout,
    validate_header, validate_segment,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The snapshot `HeaderSnapshot::read` must give for `bytes`, decoded here field by field.
fn expected_snapshot(b: &[u8]) -> HeaderSnapshot {
    HeaderSnapshot {
        magic: b[0..8].try_into().unwrap(),
        version: get_u32(b, VERSION),
        flags: get_u32(b, FLAGS),
        max_peers: get_u16(b, MAX_PEERS_AT),
        active_peers: get_u16(b, 18),
        peer_id_counter: get_u16(b, 20),
        current_size: get_u64(b, CURRENT_SIZE),
        extent_count: get_u32(b, 32),
        ring_capacity: get_u32(b, RING_CAPACITY),
        peer_table_offset: get_u64(b, PEER_TABLE_OFFSET),
        ring_region_offset: get_u64(b, RING_REGION_OFFSET),
        size_class_offset: get_u64(b, SIZE_CLASS_OFFSET),
        extent_region_offset: get_u64(b, EXTENT_REGION_OFFSET),
    }
}

/// The header of a valid default hub.
fn valid_header() -> Vec<u8> {
    let layout = SegmentLayout::new(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY).unwrap();
    metadata(&layout)[..256].to_vec()
}

/// Checks that hold for any bytes shorter than every hub.
fn check_short_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let snapshot = HeaderSnapshot::read(bytes);
    if bytes.len() < 256 {
        prop_assert_eq!(
            snapshot,
            Err(HubLayoutError::HubTooSmall {
                required: 256,
                found: bytes.len()
            })
        );
    } else {
        let snapshot = snapshot.unwrap();
        prop_assert_eq!(snapshot, expected_snapshot(bytes));
        // Any mapping length at all.
        let _ = validate_header(&snapshot, bytes.len());
        let _ = validate_header(&snapshot, usize::MAX);
        let _ = validate_header(&snapshot, 0);
    }
    // No hub fits in 4 KiB (the extents alone are about 109 MiB).
    prop_assert!(validate_segment(bytes).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_short_bytes(&bytes)?;
    }

    #[test]
    fn corrupted_valid_header_prefix_never_panics(
        tail in prop::collection::vec(any::<u8>(), 0..4096),
        len in 0usize..4096,
        corruptions in prop::collection::vec((0usize..256, any::<u8>()), 0..8),
    ) {
        let mut bytes = valid_header();
        bytes.extend_from_slice(&tail);
        for (at, byte) in corruptions {
            bytes[at] = byte;
        }
        bytes.truncate(len);
        check_short_bytes(&bytes)?;
        if bytes.len() >= 256 && bytes[..256] == valid_header()[..] {
            // An intact header in a short mapping is refused for its length alone.
            let initial = SegmentLayout::new(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY)
                .unwrap()
                .initial_size();
            prop_assert_eq!(
                validate_segment(&bytes[..]).unwrap_err(),
                HubLayoutError::HubTooSmall { required: initial, found: bytes.len() }
            );
        }
    }
}

/// Configurations and their metadata (everything before the extent region), built once.
fn prefixes() -> &'static [(SegmentLayout, Vec<u8>)] {
    static PREFIXES: OnceLock<Vec<(SegmentLayout, Vec<u8>)>> = OnceLock::new();
    PREFIXES.get_or_init(|| {
        [
            (1, 1),
            (3, 16),
            (MAX_PEERS, DEFAULT_HUB_RING_CAPACITY),
            (5, 4096),
        ]
        .into_iter()
        .map(|(p, c)| {
            let layout = SegmentLayout::new(p, c).unwrap();
            let bytes = metadata(&layout);
            (layout, bytes)
        })
        .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A valid segment's metadata with random bytes overwritten, seen through a mapping of a
    /// random length (up to `usize::MAX`): validation returns, never asks for a byte outside
    /// the mapping, and whatever it accepts satisfies R2.
    #[test]
    fn corrupted_segment_of_any_length_never_panics(
        config in 0usize..4,
        len_kind in 0u8..5,
        len_raw in any::<usize>(),
        corruptions in prop::collection::vec((any::<bool>(), any::<usize>(), any::<u8>()), 0..12),
    ) {
        let (layout, prefix) = &prefixes()[config];
        let initial = layout.initial_size();
        let len = match len_kind {
            0 => len_raw % 512,
            1 => initial - 4096 + len_raw % 8192,
            2 => initial + len_raw % (layout.max_size() - initial + 1),
            3 => len_raw,
            _ => initial,
        };
        let mut segment = Sparse::new(prefix, len);
        for &(in_header, raw, byte) in &corruptions {
            let at = if in_header { raw % 256 } else { raw % prefix.len() };
            segment.patches.insert(at, byte);
        }
        let result = validate_segment(&segment);
        prop_assert_eq!(segment.out_of_bounds.get(), 0, "read past the mapping");
        let _ = HeaderSnapshot::read(&segment);
        prop_assert_eq!(segment.out_of_bounds.get(), 0, "read past the mapping");

        // Corruptions that wrote back the byte already there change nothing.
        let intact = segment.patches.iter().all(|(&at, &byte)| prefix[at] == byte);
        match result {
            Ok(v) => check_accepted(&v, len),
            Err(e) if intact => {
                // Only the length can be wrong.
                let required = if len < 256 { 256 } else { initial };
                prop_assert!(len < initial);
                prop_assert_eq!(e, HubLayoutError::HubTooSmall { required, found: len });
            }
            Err(_) => {}
        }
        if intact && len >= initial {
            prop_assert!(validate_segment(&segment).is_ok());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Single-byte flips in the metadata of a valid image: each gives the outcome of its field.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Kind {
    Magic,
    Version,
    MaxPeers,
    CurrentSize,
    RingCapacity,
    Region(&'static str),
    PeerRing(u16, &'static str),
    RingCap(u16),
    ClassField(u16, &'static str),
    Extent(u16, u16),
}

/// Every byte range validation reads, with its field; every other byte is free.
fn checked_fields(layout: &SegmentLayout) -> Vec<(usize, usize, Kind)> {
    let mut fields = vec![
        (MAGIC, 8, Kind::Magic),
        (VERSION, 4, Kind::Version),
        (MAX_PEERS_AT, 2, Kind::MaxPeers),
        (CURRENT_SIZE, 8, Kind::CurrentSize),
        (RING_CAPACITY, 4, Kind::RingCapacity),
        (PEER_TABLE_OFFSET, 8, Kind::Region("peer_table_offset")),
        (RING_REGION_OFFSET, 8, Kind::Region("ring_region_offset")),
        (SIZE_CLASS_OFFSET, 8, Kind::Region("size_class_offset")),
        (
            EXTENT_REGION_OFFSET,
            8,
            Kind::Region("extent_region_offset"),
        ),
    ];
    for peer in 0..layout.max_peers {
        let entry = layout.peer_entry_offset(peer);
        fields.push((
            entry + SEND_RING,
            8,
            Kind::PeerRing(peer, "send_ring_offset"),
        ));
        fields.push((
            entry + RECV_RING,
            8,
            Kind::PeerRing(peer, "recv_ring_offset"),
        ));
    }
    for ring in 0..2 * layout.max_peers {
        fields.push((
            layout.ring_offset(usize::from(ring)) + RING_CAP,
            4,
            Kind::RingCap(ring),
        ));
    }
    for class in 0..NUM_SIZE_CLASSES {
        let base = layout.class_header_offset(class);
        let c = class as u16;
        fields.push((base + SLOT_SIZE, 4, Kind::ClassField(c, "slot_size")));
        fields.push((
            base + SLOTS_PER_EXTENT,
            4,
            Kind::ClassField(c, "slots_per_extent"),
        ));
        fields.push((
            base + EXTENT_SLOT_SHIFT,
            4,
            Kind::ClassField(c, "extent_slot_shift"),
        ));
        for extent in 0..MAX_EXTENTS_PER_CLASS {
            fields.push((
                base + EXTENT_OFFSETS + 8 * extent,
                8,
                Kind::Extent(c, extent as u16),
            ));
        }
    }
    fields
}

/// Flip `mask` into the byte at `at` of a valid image, validate, restore, and check the outcome
/// against the field the byte belongs to.
fn flip_and_check(
    image: &mut Image,
    fields: &[(usize, usize, Kind)],
    at: usize,
    mask: u8,
) -> Result<(), TestCaseError> {
    let layout = image.layout.clone();
    let initial = layout.initial_size() as u64;
    image.bytes[at] ^= mask;
    let result = image.validate();
    let field = fields
        .iter()
        .find(|&&(start, len, _)| (start..start + len).contains(&at))
        .map(|&(start, _, kind)| (start, kind));
    let b = &image.bytes;
    let outcome = match field {
        // A byte validation does not read: the segment stays valid, unchanged.
        None => {
            let v = result.map_err(|e| TestCaseError::fail(format!("byte {at}: {e:?}")))?;
            prop_assert_eq!(v.layout, layout.clone());
            Ok(())
        }
        Some((start, kind)) => check_kind(b, &layout, initial, start, kind, result),
    };
    image.bytes[at] ^= mask;
    outcome.map_err(|e| TestCaseError::fail(format!("byte {at} ^ {mask:#x}: {e}")))
}

fn check_kind(
    b: &[u8],
    layout: &SegmentLayout,
    initial: u64,
    start: usize,
    kind: Kind,
    result: Result<hub_layout::ValidatedSegment, HubLayoutError>,
) -> Result<(), TestCaseError> {
    match kind {
        Kind::Magic => prop_assert_eq!(result.unwrap_err(), HubLayoutError::InvalidMagic),
        Kind::Version => {
            let found = get_u32(b, start);
            if found >> 16 == HUB_PROTOCOL_VERSION >> 16 {
                prop_assert_eq!(result.unwrap().header.version, found);
            } else {
                prop_assert_eq!(
                    result.unwrap_err(),
                    HubLayoutError::IncompatibleVersion {
                        expected: HUB_PROTOCOL_VERSION,
                        found
                    }
                );
            }
        }
        Kind::MaxPeers => {
            let found = get_u16(b, start);
            let err = result.unwrap_err();
            match SegmentLayout::new(found, layout.ring_capacity) {
                Err(_) => prop_assert_eq!(
                    err,
                    HubLayoutError::InvalidConfig("max_peers must be between 1 and MAX_PEERS")
                ),
                Ok(moved) => prop_assert_eq!(
                    err,
                    HubLayoutError::OffsetMismatch {
                        field: "ring_region_offset",
                        expected: moved.offsets.ring_region as u64,
                        found: layout.offsets.ring_region as u64,
                    }
                ),
            }
        }
        Kind::CurrentSize => {
            let found = get_u64(b, start);
            if found >= initial {
                prop_assert_eq!(result.unwrap().header.current_size, found);
            } else {
                prop_assert_eq!(
                    result.unwrap_err(),
                    HubLayoutError::BadCurrentSize {
                        required: initial,
                        found
                    }
                );
            }
        }
        Kind::RingCapacity => {
            let found = get_u32(b, start);
            let err = result.unwrap_err();
            match SegmentLayout::new(layout.max_peers, found) {
                Err(_) => prop_assert_eq!(
                    err,
                    HubLayoutError::InvalidConfig("ring_capacity must be non-zero power of 2")
                ),
                Ok(moved) => prop_assert_eq!(
                    err,
                    HubLayoutError::OffsetMismatch {
                        field: "size_class_offset",
                        expected: moved.offsets.size_class_headers as u64,
                        found: layout.offsets.size_class_headers as u64,
                    }
                ),
            }
        }
        Kind::Region(field) => {
            let expected = match field {
                "peer_table_offset" => layout.offsets.peer_table,
                "ring_region_offset" => layout.offsets.ring_region,
                "size_class_offset" => layout.offsets.size_class_headers,
                _ => layout.offsets.extent_region,
            } as u64;
            prop_assert_eq!(
                result.unwrap_err(),
                HubLayoutError::OffsetMismatch {
                    field,
                    expected,
                    found: get_u64(b, start)
                }
            );
        }
        Kind::PeerRing(peer, field) => {
            let expected = if field == "send_ring_offset" {
                layout.send_ring_offset(peer)
            } else {
                layout.recv_ring_offset(peer)
            } as u64;
            prop_assert_eq!(
                result.unwrap_err(),
                HubLayoutError::PeerRingMismatch {
                    peer,
                    field,
                    expected,
                    found: get_u64(b, start)
                }
            );
        }
        Kind::RingCap(ring) => prop_assert_eq!(
            result.unwrap_err(),
            HubLayoutError::RingCapacityMismatch {
                ring,
                expected: layout.ring_capacity,
                found: get_u32(b, start),
            }
        ),
        Kind::ClassField(class, field) => {
            let (slot_size, slots) = HUB_SIZE_CLASSES[usize::from(class)];
            let expected = match field {
                "slot_size" => slot_size,
                "slots_per_extent" => slots,
                _ => slots.trailing_zeros(),
            };
            prop_assert_eq!(
                result.unwrap_err(),
                HubLayoutError::SizeClassMismatch {
                    class,
                    field,
                    expected: u64::from(expected),
                    found: u64::from(get_u32(b, start)),
                }
            );
        }
        Kind::Extent(class, extent) => {
            // The mapping is exactly the initial layout, which the initial extents tile: an
            // extent moved or added anywhere is misaligned, outside the region, past the end, or
            // overlapping.
            let offset = get_u64(b, start);
            let err = result.unwrap_err();
            let HubLayoutError::BadExtentOffset {
                class: named_class,
                offset: named_offset,
                reason,
                ..
            } = err.clone()
            else {
                return Err(TestCaseError::fail(format!("{err:?}")));
            };
            if reason == "overlaps another extent" {
                // The pair is named by its later start: this extent, or one it overlaps.
                let size = layout.extent_geometry(usize::from(class)).size as u64;
                let named_size = layout.extent_geometry(usize::from(named_class)).size as u64;
                prop_assert!(offset.is_multiple_of(64));
                prop_assert!(
                    named_offset < offset + size && offset < named_offset + named_size,
                    "{:?} does not overlap [{}, {})",
                    err,
                    offset,
                    offset + size
                );
            } else {
                let direct = HubLayoutError::BadExtentOffset {
                    class,
                    extent,
                    offset,
                    reason,
                };
                prop_assert_eq!(err, direct);
            }
        }
    }
    Ok(())
}

/// Flips one random byte of the header, peer table, ring headers or class headers of a valid
/// default image (about 115 MB, built once, restored after each case).
#[test]
fn single_byte_flips_in_a_default_image() {
    let mut image = Image::new(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY);
    let layout = image.layout.clone();
    let fields = checked_fields(&layout);
    let image = std::cell::RefCell::new(&mut image);
    let region = |kind: u8, raw: usize| -> usize {
        match kind {
            0 => raw % 256,
            1 => layout.offsets.peer_table + raw % (64 * usize::from(layout.max_peers)),
            2 => {
                let ring = raw / 192 % (2 * usize::from(layout.max_peers));
                layout.ring_offset(ring) + raw % 192
            }
            _ => layout.offsets.size_class_headers + raw % (NUM_SIZE_CLASSES * 192),
        }
    };
    let mut runner = TestRunner::new(Config::with_cases(1024));
    runner
        .run(&(0u8..4, any::<usize>(), 1u8..=255), |(kind, raw, mask)| {
            flip_and_check(&mut image.borrow_mut(), &fields, region(kind, raw), mask)
        })
        .unwrap();
    assert!(image.borrow().validate().is_ok());
}

/// Every byte of the metadata of a small image, each of its eight bits and all of them.
#[test]
fn every_byte_flip_in_a_small_image() {
    let mut image = Image::new(2, 4);
    let fields = checked_fields(&image.layout);
    for at in 0..image.metadata_len() {
        for mask in [1, 2, 4, 8, 16, 32, 64, 128, 0xFF] {
            flip_and_check(&mut image, &fields, at, mask).unwrap();
        }
    }
    assert!(image.validate().is_ok());
    // The flips covered every checked field.
    assert!(
        fields
            .iter()
            .all(|&(start, len, _)| start + len <= image.metadata_len())
    );
}

#[test]
fn magic_flips_are_never_mistaken_for_not_ready() {
    // HUB_MAGIC has seven non-zero bytes: no single-byte change zeroes it.
    assert_eq!(HUB_MAGIC.iter().filter(|&&b| b != 0).count(), 7);
    let patches: BTreeMap<usize, u8> = (0..8).map(|i| (i, 0)).collect();
    let layout = SegmentLayout::new(1, 1).unwrap();
    let prefix = metadata(&layout);
    let mut segment = Sparse::new(&prefix, layout.initial_size());
    assert!(validate_segment(&segment).is_ok());
    segment.patches = patches;
    assert_eq!(
        validate_segment(&segment).unwrap_err(),
        HubLayoutError::NotReady
    );
}
