//! The public API of the seed (`seed/hub_layout.rs`, rapace-core 0.5.0) compiles unchanged against
//! hub-layout: every constant with its type and value, every struct with exactly its pub fields
//! and their types (struct literals name every field, so a missing, renamed or retyped field is a
//! compile error), every function and method with its exact signature (coerced to a `fn` pointer
//! type), the error enums with their variants, and the seed's Display texts, byte for byte.
//!
//! It also checks that the seed's methods still behave as the seed's code does.

#![cfg(not(loom))]

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use hub_layout::{
    DEFAULT_HUB_RING_CAPACITY, ExtentHeader, FREE_LIST_END, HUB_MAGIC, HUB_PROTOCOL_VERSION,
    HUB_SIZE_CLASSES, HubHeader, HubLayoutError, HubOffsets, HubSlotError, HubSlotMeta,
    MAX_EXTENTS_PER_CLASS, MAX_PEERS, NO_OWNER, NUM_SIZE_CLASSES, PEER_FLAG_ACTIVE, PEER_FLAG_DEAD,
    PEER_FLAG_DYING, PEER_FLAG_RESERVED, PeerEntry, SizeClassHeader, SlotState,
};

// ---------------------------------------------------------------------------------------------
// Constants: the `const _: T = NAME;` items fail to compile if the type differs.
// ---------------------------------------------------------------------------------------------

const _: [u8; 8] = HUB_MAGIC;
const _: u32 = HUB_PROTOCOL_VERSION;
const _: u16 = MAX_PEERS;
const _: usize = NUM_SIZE_CLASSES;
const _: usize = MAX_EXTENTS_PER_CLASS;
const _: u32 = DEFAULT_HUB_RING_CAPACITY;
const _: u32 = FREE_LIST_END;
const _: u32 = NO_OWNER;
const _: [(u32, u32); NUM_SIZE_CLASSES] = HUB_SIZE_CLASSES;
const _: [(u32, u32); 5] = HUB_SIZE_CLASSES;
const _: u32 = PEER_FLAG_ACTIVE;
const _: u32 = PEER_FLAG_DYING;
const _: u32 = PEER_FLAG_DEAD;
const _: u32 = PEER_FLAG_RESERVED;

#[test]
fn constants_have_the_seed_values() {
    assert_eq!(HUB_MAGIC, *b"RAPAHUB\0");
    assert_eq!(HUB_PROTOCOL_VERSION, 1 << 16);
    assert_eq!(HUB_PROTOCOL_VERSION >> 16, 1, "major version 1");
    assert_eq!(HUB_PROTOCOL_VERSION & 0xFFFF, 0, "minor version 0");
    assert_eq!(MAX_PEERS, 32);
    assert_eq!(NUM_SIZE_CLASSES, 5);
    assert_eq!(MAX_EXTENTS_PER_CLASS, 16);
    assert_eq!(DEFAULT_HUB_RING_CAPACITY, 256);
    assert!(DEFAULT_HUB_RING_CAPACITY.is_power_of_two());
    assert_eq!(FREE_LIST_END, u32::MAX);
    assert_eq!(NO_OWNER, u32::MAX);
    assert_eq!(
        HUB_SIZE_CLASSES,
        [
            (1024, 1024),
            (16384, 256),
            (262144, 32),
            (4194304, 8),
            (16777216, 4),
        ]
    );
    assert_eq!(PEER_FLAG_ACTIVE, 1);
    assert_eq!(PEER_FLAG_DYING, 2);
    assert_eq!(PEER_FLAG_DEAD, 4);
    assert_eq!(PEER_FLAG_RESERVED, 8);
}

// ---------------------------------------------------------------------------------------------
// Structs: literals naming every seed field with the seed's types.
// ---------------------------------------------------------------------------------------------

fn seed_hub_header_literal() -> HubHeader {
    HubHeader {
        magic: [0xAA; 8],
        version: 0xDEAD_BEEF,
        flags: 7,
        max_peers: 999,
        active_peers: AtomicU16::new(5),
        peer_id_counter: AtomicU16::new(6),
        _pad1: 0x1234,
        current_size: AtomicU64::new(77),
        extent_count: AtomicU32::new(88),
        ring_capacity: 3,
        peer_table_offset: 1,
        ring_region_offset: 2,
        size_class_offset: 3,
        extent_region_offset: 4,
        _pad2: [0x55; 168],
    }
}

fn seed_peer_entry_literal() -> PeerEntry {
    PeerEntry {
        peer_id: 9,
        peer_type: 10,
        flags: AtomicU32::new(PEER_FLAG_RESERVED | PEER_FLAG_DEAD | PEER_FLAG_DYING),
        epoch: AtomicU64::new(11),
        last_seen: AtomicU64::new(12),
        send_ring_offset: 13,
        recv_ring_offset: 14,
        send_data_futex: AtomicU32::new(15),
        recv_data_futex: AtomicU32::new(16),
        _pad: [0x77; 16],
    }
}

fn seed_size_class_header_literal() -> SizeClassHeader {
    SizeClassHeader {
        slot_size: 1,
        slots_per_extent: 3,
        extent_slot_shift: 30,
        total_slots: AtomicU32::new(99),
        free_head: AtomicU64::new(0x1234_5678_9ABC_DEF0),
        extent_offsets: std::array::from_fn::<AtomicU64, MAX_EXTENTS_PER_CLASS, _>(|i| {
            AtomicU64::new(i as u64 + 1000)
        }),
        slot_available_futex: AtomicU32::new(42),
        _pad: [0x99; 4],
    }
}

#[test]
fn seed_structs_have_exactly_the_seed_fields() {
    let h = seed_hub_header_literal();
    assert_eq!(h.magic, [0xAA; 8]);
    assert_eq!(h.version, 0xDEAD_BEEF);
    assert_eq!(h.max_peers, 999);
    assert_eq!(h._pad2, [0x55; 168]);

    let p = seed_peer_entry_literal();
    assert_eq!((p.peer_id, p.peer_type), (9, 10));
    assert_eq!((p.send_ring_offset, p.recv_ring_offset), (13, 14));

    let meta = HubSlotMeta {
        generation: AtomicU32::new(1),
        state: AtomicU32::new(SlotState::InFlight as u32),
        next_free: AtomicU32::new(FREE_LIST_END),
        owner_peer: AtomicU32::new(NO_OWNER),
    };
    assert_eq!(meta.generation.load(Ordering::Relaxed), 1);
    assert_eq!(meta.state.load(Ordering::Relaxed), 2);
    assert_eq!(meta.next_free.load(Ordering::Relaxed), u32::MAX);
    assert_eq!(meta.owner_peer.load(Ordering::Relaxed), u32::MAX);

    let c = seed_size_class_header_literal();
    assert_eq!(c.extent_offsets.len(), MAX_EXTENTS_PER_CLASS);
    assert_eq!(c.extent_offsets[15].load(Ordering::Relaxed), 1015);

    let e = ExtentHeader {
        class: 1u16,
        extent_index: 2u16,
        base_global_index: 3u32,
        slot_count: 4u32,
        slot_size: 5u32,
        meta_offset: 6u32,
        data_offset: 7u32,
        _pad: [0u8; 32],
    };
    assert_eq!(
        (
            e.class,
            e.extent_index,
            e.base_global_index,
            e.slot_count,
            e.slot_size,
            e.meta_offset,
            e.data_offset
        ),
        (1, 2, 3, 4, 5, 6, 7)
    );

    let o = HubOffsets {
        header: 0usize,
        peer_table: 1usize,
        ring_region: 2usize,
        size_class_headers: 3usize,
        extent_region: 4usize,
    };
    // The seed derives Debug and Clone on HubOffsets.
    let cloned = o.clone();
    assert_eq!(
        (
            cloned.header,
            cloned.peer_table,
            cloned.ring_region,
            cloned.size_class_headers,
            cloned.extent_region
        ),
        (0, 1, 2, 3, 4)
    );
    assert!(format!("{o:?}").contains("extent_region"));
}

#[test]
fn seed_struct_sizes() {
    use core::mem::{align_of, size_of};
    // The seed's own const asserts.
    assert_eq!(size_of::<HubHeader>(), 256);
    assert_eq!(size_of::<PeerEntry>(), 64);
    assert_eq!(size_of::<HubSlotMeta>(), 16);
    assert_eq!(size_of::<ExtentHeader>(), 64);
    // The seed's comment says 128; PROTOCOL.md §2.6 says 192 (what its fields and align(64) give).
    assert_eq!(size_of::<SizeClassHeader>(), 192);
    // repr(C, align(64)) as in the seed.
    assert_eq!(align_of::<HubHeader>(), 64);
    assert_eq!(align_of::<PeerEntry>(), 64);
    assert_eq!(align_of::<SizeClassHeader>(), 64);
    assert_eq!(align_of::<ExtentHeader>(), 64);
}

// ---------------------------------------------------------------------------------------------
// Functions and methods: coerced to fn pointers of the seed's exact signatures.
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_function_signatures() {
    let _: fn(u16, u32) -> u32 = hub_layout::encode_slot_ref;
    let _: fn(u32) -> (u16, u32) = hub_layout::decode_slot_ref;
    let _: fn(u32, u32, u32) -> u32 = hub_layout::encode_global_index;
    let _: fn(u32, u32) -> (u32, u32) = hub_layout::decode_global_index;
    let _: fn(u32, u32) -> u64 = hub_layout::pack_free_head;
    let _: fn(u64) -> (u32, u32) = hub_layout::unpack_free_head;
    let _: fn(u16, u32) -> Result<HubOffsets, HubLayoutError> = HubOffsets::calculate;
    let _: fn(u32, u32) -> Result<usize, &'static str> = hub_layout::calculate_extent_size;
    let _: fn(u16, u32) -> Result<usize, &'static str> = hub_layout::calculate_initial_hub_size;

    let _: fn(&mut HubHeader, u16, u32) = HubHeader::init;
    let _: fn(&HubHeader) -> Result<(), HubLayoutError> = HubHeader::validate;
    let _: fn(&mut PeerEntry, u64, u64) = PeerEntry::init;
    let _: fn(&PeerEntry) = PeerEntry::mark_active;
    let _: fn(&PeerEntry) = PeerEntry::mark_dead;
    let _: fn(&mut SizeClassHeader, u32, u32) = SizeClassHeader::init;
    let _: fn(u32) -> Option<SlotState> = SlotState::from_u32;

    // The seed's free functions, evaluated on values the seed's bodies give.
    assert_eq!(hub_layout::encode_slot_ref(3, 17), (3 << 29) | 17);
    assert_eq!(hub_layout::decode_slot_ref((3 << 29) | 17), (3, 17));
    assert_eq!(hub_layout::encode_global_index(2, 5, 10), (2 << 10) | 5);
    assert_eq!(hub_layout::decode_global_index((2 << 10) | 5, 10), (2, 5));
    assert_eq!(hub_layout::pack_free_head(7, 9), (9u64 << 32) | 7);
    assert_eq!(hub_layout::unpack_free_head((9u64 << 32) | 7), (7, 9));
}

#[test]
fn hub_header_init_overwrites_every_field_like_the_seed() {
    let mut h = seed_hub_header_literal();
    h.init(12, 512);
    assert_eq!(h.magic, HUB_MAGIC);
    assert_eq!(h.version, HUB_PROTOCOL_VERSION);
    assert_eq!(h.flags, 0);
    assert_eq!(h.max_peers, 12);
    assert_eq!(h.active_peers.load(Ordering::Relaxed), 0);
    assert_eq!(h.peer_id_counter.load(Ordering::Relaxed), 0);
    assert_eq!(h._pad1, 0);
    assert_eq!(h.current_size.load(Ordering::Relaxed), 0);
    assert_eq!(h.extent_count.load(Ordering::Relaxed), 0);
    assert_eq!(h.ring_capacity, 512);
    // The seed's init leaves the offsets to the caller (zero).
    assert_eq!(h.peer_table_offset, 0);
    assert_eq!(h.ring_region_offset, 0);
    assert_eq!(h.size_class_offset, 0);
    assert_eq!(h.extent_region_offset, 0);
    assert_eq!(h._pad2, [0; 168]);
    assert_eq!(h.validate(), Ok(()));
}

#[test]
fn hub_header_validate_matches_the_seed() {
    let mut h = seed_hub_header_literal();
    h.init(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY);
    assert_eq!(h.validate(), Ok(()));

    // Magic first: a wrong magic wins over every other fault.
    h.magic = *b"RAPAHUB!";
    h.version = 0;
    h.max_peers = 0;
    assert_eq!(h.validate(), Err(HubLayoutError::InvalidMagic));
    // The seed's validate has no notion of "not ready": all zero is just invalid.
    h.magic = [0; 8];
    assert_eq!(h.validate(), Err(HubLayoutError::InvalidMagic));

    // Then the major version.
    h.init(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY);
    for version in [0, 2 << 16, (2 << 16) | 1, u32::MAX, 0xFFFF] {
        h.version = version;
        assert_eq!(
            h.validate(),
            Err(HubLayoutError::IncompatibleVersion {
                expected: HUB_PROTOCOL_VERSION,
                found: version,
            }),
            "version {version:#x}"
        );
    }
    // A minor bump of the same major is accepted.
    for minor in [1, 2, 0xFFFF] {
        h.version = HUB_PROTOCOL_VERSION | minor;
        assert_eq!(h.validate(), Ok(()), "minor {minor}");
    }

    // Then max_peers, then ring_capacity, with the seed's messages.
    h.init(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY);
    for max_peers in [0, MAX_PEERS + 1, u16::MAX] {
        h.max_peers = max_peers;
        h.ring_capacity = 3; // also wrong, but max_peers is checked first
        assert_eq!(
            h.validate(),
            Err(HubLayoutError::InvalidConfig(
                "max_peers must be between 1 and MAX_PEERS"
            )),
            "max_peers {max_peers}"
        );
    }
    for max_peers in 1..=MAX_PEERS {
        h.max_peers = max_peers;
        h.ring_capacity = 1;
        assert_eq!(h.validate(), Ok(()));
    }
    for ring_capacity in [0, 3, 6, 100, 257, u32::MAX] {
        h.ring_capacity = ring_capacity;
        assert_eq!(
            h.validate(),
            Err(HubLayoutError::InvalidConfig(
                "ring_capacity must be non-zero power of 2"
            )),
            "ring_capacity {ring_capacity}"
        );
    }
    for k in 0..32 {
        h.ring_capacity = 1 << k;
        assert_eq!(h.validate(), Ok(()), "ring_capacity 1 << {k}");
    }
}

#[test]
fn hub_offsets_calculate_rejects_like_the_seed() {
    for max_peers in [0, MAX_PEERS + 1, u16::MAX] {
        assert_eq!(
            HubOffsets::calculate(max_peers, 0).map(|_| ()),
            Err(HubLayoutError::InvalidConfig(
                "max_peers must be between 1 and MAX_PEERS"
            ))
        );
    }
    for ring_capacity in [0, 3, 1000] {
        assert_eq!(
            HubOffsets::calculate(1, ring_capacity).map(|_| ()),
            Err(HubLayoutError::InvalidConfig(
                "ring_capacity must be non-zero power of 2"
            ))
        );
    }
    assert_eq!(
        hub_layout::calculate_initial_hub_size(0, 256),
        Err("hub offsets calculation failed")
    );
    assert_eq!(
        hub_layout::calculate_initial_hub_size(1, 255),
        Err("hub offsets calculation failed")
    );
}

#[test]
fn calculate_extent_size_overflow_is_an_error_not_a_wrap() {
    // On 64-bit targets the two products of u32s fit usize; their sum with the header does not.
    assert_eq!(
        hub_layout::calculate_extent_size(u32::MAX, u32::MAX),
        Err("extent total size overflow")
    );
    // (2^32 - 9) slots of (2^32 - 7) bytes: 64 + n * (16 + s) = 64 + (2^32 - 9)(2^32 + 9)
    // = 2^64 - 17, which fits usize, but rounding it up to 64 does not. The seed's align_up
    // overflowed here (a panic in debug, 0 in release); the crate reports the overflow.
    let n = u32::MAX - 8;
    let s = u32::MAX - 6;
    assert_eq!(
        64 + (n as usize) * 16 + (n as usize) * (s as usize),
        usize::MAX - 16
    );
    assert_eq!(
        hub_layout::calculate_extent_size(s, n),
        Err("extent total size overflow")
    );
    assert_eq!(hub_layout::ExtentGeometry::new(s, n), None);
    assert_eq!(hub_layout::ExtentGeometry::new(u32::MAX, u32::MAX), None);
    // Small extents: header (64) + meta (16 per slot) + data, rounded up to 64.
    assert_eq!(hub_layout::calculate_extent_size(0, 0), Ok(64));
    assert_eq!(hub_layout::calculate_extent_size(1, 1), Ok(128));
    assert_eq!(hub_layout::calculate_extent_size(48, 1), Ok(128));
    assert_eq!(hub_layout::calculate_extent_size(49, 1), Ok(192));
}

#[test]
fn peer_entry_methods_match_the_seed() {
    let mut p = seed_peer_entry_literal();
    p.init(4096, 8192);
    assert_eq!(p.peer_id, 0);
    assert_eq!(p.peer_type, 0);
    assert_eq!(p.flags.load(Ordering::Relaxed), 0);
    assert_eq!(p.epoch.load(Ordering::Relaxed), 0);
    assert_eq!(p.last_seen.load(Ordering::Relaxed), 0);
    assert_eq!(p.send_ring_offset, 4096);
    assert_eq!(p.recv_ring_offset, 8192);
    assert_eq!(p.send_data_futex.load(Ordering::Relaxed), 0);
    assert_eq!(p.recv_data_futex.load(Ordering::Relaxed), 0);
    assert_eq!(p._pad, [0; 16]);

    // mark_active: set ACTIVE, clear RESERVED and DEAD, leave DYING alone.
    p.flags.store(
        PEER_FLAG_RESERVED | PEER_FLAG_DEAD | PEER_FLAG_DYING,
        Ordering::Relaxed,
    );
    p.mark_active();
    assert_eq!(
        p.flags.load(Ordering::Relaxed),
        PEER_FLAG_ACTIVE | PEER_FLAG_DYING
    );
    p.flags.store(PEER_FLAG_RESERVED, Ordering::Relaxed);
    p.mark_active();
    assert_eq!(p.flags.load(Ordering::Relaxed), PEER_FLAG_ACTIVE);

    // mark_dead: set DEAD, clear ACTIVE, leave the rest alone.
    p.flags
        .store(PEER_FLAG_ACTIVE | PEER_FLAG_RESERVED, Ordering::Relaxed);
    p.mark_dead();
    assert_eq!(
        p.flags.load(Ordering::Relaxed),
        PEER_FLAG_DEAD | PEER_FLAG_RESERVED
    );
    p.mark_dead();
    assert_eq!(
        p.flags.load(Ordering::Relaxed),
        PEER_FLAG_DEAD | PEER_FLAG_RESERVED
    );
    // And back: a dead peer marked active is active only.
    p.flags.store(PEER_FLAG_DEAD, Ordering::Relaxed);
    p.mark_active();
    assert_eq!(p.flags.load(Ordering::Relaxed), PEER_FLAG_ACTIVE);
}

#[test]
fn size_class_header_init_matches_the_seed() {
    for (slot_size, slots) in HUB_SIZE_CLASSES {
        let mut c = seed_size_class_header_literal();
        c.init(slot_size, slots);
        assert_eq!(c.slot_size, slot_size);
        assert_eq!(c.slots_per_extent, slots);
        assert_eq!(c.extent_slot_shift, slots.trailing_zeros());
        assert_eq!(1u32 << c.extent_slot_shift, slots);
        assert_eq!(c.total_slots.load(Ordering::Relaxed), 0);
        assert_eq!(
            c.free_head.load(Ordering::Relaxed),
            hub_layout::pack_free_head(FREE_LIST_END, 0)
        );
        assert_eq!(c.free_head.load(Ordering::Relaxed), u64::from(u32::MAX));
        for off in &c.extent_offsets {
            assert_eq!(off.load(Ordering::Relaxed), 0);
        }
        assert_eq!(c.slot_available_futex.load(Ordering::Relaxed), 0);
        assert_eq!(c._pad, [0; 4]);
    }
    // The seed computes the shift with trailing_zeros even for a count that is not a power of
    // two; so does the crate.
    let mut c = seed_size_class_header_literal();
    c.init(64, 24);
    assert_eq!(c.extent_slot_shift, 3);
}

#[test]
fn slot_state_matches_the_seed() {
    assert_eq!(SlotState::Free as u32, 0);
    assert_eq!(SlotState::Allocated as u32, 1);
    assert_eq!(SlotState::InFlight as u32, 2);
    assert_eq!(SlotState::from_u32(0), Some(SlotState::Free));
    assert_eq!(SlotState::from_u32(1), Some(SlotState::Allocated));
    assert_eq!(SlotState::from_u32(2), Some(SlotState::InFlight));
    for v in [3, 4, 255, 0x100, u32::MAX - 1, u32::MAX] {
        assert_eq!(SlotState::from_u32(v), None, "{v}");
    }
    for state in [SlotState::Free, SlotState::Allocated, SlotState::InFlight] {
        assert_eq!(SlotState::from_u32(state as u32), Some(state));
    }
    // Derives of the seed: Debug, Clone, Copy, PartialEq, Eq.
    let s = SlotState::Allocated;
    let copied = s;
    #[allow(clippy::clone_on_copy)]
    let cloned = s.clone();
    assert_eq!(copied, cloned);
    assert_eq!(format!("{s:?}"), "Allocated");
}

// ---------------------------------------------------------------------------------------------
// Errors: the seed's variants, derives, and Display texts.
// ---------------------------------------------------------------------------------------------

/// The seed's `Display` for `HubLayoutError`, copied from the seed, for its four variants.
fn seed_layout_display(e: &HubLayoutError) -> String {
    match e {
        HubLayoutError::InvalidMagic => "invalid hub magic bytes (expected RAPAHUB)".to_string(),
        HubLayoutError::IncompatibleVersion { expected, found } => format!(
            "incompatible hub version: expected {}.{}, found {}.{}",
            expected >> 16,
            expected & 0xFFFF,
            found >> 16,
            found & 0xFFFF
        ),
        HubLayoutError::HubTooSmall { required, found } => {
            format!("hub too small: need {} bytes, got {}", required, found)
        }
        HubLayoutError::InvalidConfig(msg) => format!("invalid hub config: {}", msg),
        other => panic!("not a seed variant: {other:?}"),
    }
}

/// The seed's `Display` for `HubSlotError`, copied from the seed.
fn seed_slot_display(e: &HubSlotError) -> String {
    match e {
        HubSlotError::NoFreeSlots => "no free slots available".to_string(),
        HubSlotError::PayloadTooLarge { len, max } => {
            format!("payload too large: {} bytes, max {}", len, max)
        }
        HubSlotError::InvalidSlotRef => "invalid slot reference".to_string(),
        HubSlotError::StaleGeneration => "stale generation".to_string(),
        HubSlotError::InvalidState => "invalid slot state".to_string(),
        HubSlotError::InvalidSizeClass => "invalid size class".to_string(),
        HubSlotError::InvalidExtent => "invalid extent".to_string(),
    }
}

#[test]
fn hub_layout_error_display_is_the_seeds() {
    let cases: [(HubLayoutError, &str); 7] = [
        (
            HubLayoutError::InvalidMagic,
            "invalid hub magic bytes (expected RAPAHUB)",
        ),
        (
            HubLayoutError::IncompatibleVersion {
                expected: HUB_PROTOCOL_VERSION,
                found: (2 << 16) | 3,
            },
            "incompatible hub version: expected 1.0, found 2.3",
        ),
        (
            HubLayoutError::IncompatibleVersion {
                expected: u32::MAX,
                found: 0,
            },
            "incompatible hub version: expected 65535.65535, found 0.0",
        ),
        (
            HubLayoutError::HubTooSmall {
                required: 114_321_216,
                found: 4096,
            },
            "hub too small: need 114321216 bytes, got 4096",
        ),
        (
            HubLayoutError::HubTooSmall {
                required: usize::MAX,
                found: 0,
            },
            "hub too small: need 18446744073709551615 bytes, got 0",
        ),
        (
            HubLayoutError::InvalidConfig("max_peers must be between 1 and MAX_PEERS"),
            "invalid hub config: max_peers must be between 1 and MAX_PEERS",
        ),
        (
            HubLayoutError::InvalidConfig("ring_capacity must be non-zero power of 2"),
            "invalid hub config: ring_capacity must be non-zero power of 2",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
        assert_eq!(error.to_string(), seed_layout_display(&error));
    }
}

#[test]
fn hub_slot_error_display_is_the_seeds() {
    let cases: [(HubSlotError, &str); 8] = [
        (HubSlotError::NoFreeSlots, "no free slots available"),
        (
            HubSlotError::PayloadTooLarge {
                len: 20_000_000,
                max: 16_777_216,
            },
            "payload too large: 20000000 bytes, max 16777216",
        ),
        (
            HubSlotError::PayloadTooLarge { len: 0, max: 0 },
            "payload too large: 0 bytes, max 0",
        ),
        (HubSlotError::InvalidSlotRef, "invalid slot reference"),
        (HubSlotError::StaleGeneration, "stale generation"),
        (HubSlotError::InvalidState, "invalid slot state"),
        (HubSlotError::InvalidSizeClass, "invalid size class"),
        (HubSlotError::InvalidExtent, "invalid extent"),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
        assert_eq!(error.to_string(), seed_slot_display(&error));
    }
}

#[test]
fn error_enums_have_the_seed_derives_and_are_errors() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<HubLayoutError>();
    is_error::<HubSlotError>();

    // HubLayoutError: Debug, Clone, PartialEq, Eq.
    let e = HubLayoutError::HubTooSmall {
        required: 1,
        found: 0,
    };
    let c = e.clone();
    assert_eq!(e, c);
    assert_ne!(e, HubLayoutError::InvalidMagic);
    assert!(format!("{e:?}").contains("HubTooSmall"));

    // HubSlotError: Debug, Clone, Copy, PartialEq, Eq.
    let s = HubSlotError::PayloadTooLarge { len: 2, max: 1 };
    let t = s; // Copy
    assert_eq!(s, t);
    assert!(format!("{s:?}").contains("PayloadTooLarge"));

    // A boxed seed error still displays the seed text.
    let boxed: Box<dyn std::error::Error> = Box::new(HubLayoutError::InvalidMagic);
    assert_eq!(
        boxed.to_string(),
        "invalid hub magic bytes (expected RAPAHUB)"
    );
}
