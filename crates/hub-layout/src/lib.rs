//! The byte layout of a hub segment: the shared memory that one host and up to
//! [`MAX_PEERS`] peers map.
//!
//! This crate owns bytes, not behaviour. It holds the `repr(C)` structs of the seed layout
//! (rapace-core 0.5.0's hub layout) byte for byte, the descriptor and ring header, the encoders of
//! slot references and free-list heads, the offsets of every region, and the validation a
//! participant runs before it trusts a segment it did not build (rule R2). It does
//! no I/O and makes no system call.
//!
//! Rule numbers (R1 to R14) in these docs and comments name sections of the hub's protocol,
//! `docs/PROTOCOL.md` in the hub's repository: the normative layout (a table per struct of the
//! figures this crate compiles to), rules and threat model.
//!
//! # A segment
//!
//! ```text
//! 0                    HubHeader (256 B)
//! peer_table           PeerEntry x max_peers (64 B each)
//! ring_region          per peer: send ring (peer->host), recv ring (host->peer);
//!                      each DescRingHeader (192 B) + ring_capacity x MsgDescHot (64 B)
//! size_class_headers   SizeClassHeader x NUM_SIZE_CLASSES (192 B each)
//! extent_region        one extent per class, then extents added by growth (R8);
//!                      each ExtentHeader (64 B) + slot_count x HubSlotMeta (16 B) + slot data
//! ```
//!
//! ```
//! use hub_layout::{SegmentLayout, DEFAULT_HUB_RING_CAPACITY, MAX_PEERS};
//!
//! let layout = SegmentLayout::new(MAX_PEERS, DEFAULT_HUB_RING_CAPACITY)?;
//! assert_eq!(layout.offsets.peer_table, 256);
//! assert_eq!(layout.offsets.ring_region, 256 + 32 * 64);
//! assert_eq!(layout.initial_size(), hub_layout::calculate_initial_hub_size(32, 256).unwrap());
//! # Ok::<(), hub_layout::HubLayoutError>(())
//! ```
//!
//! # Reading shared memory
//!
//! Other processes write the segment, and they may be wrong (PROTOCOL.md §5). So
//! nothing here hands out a reference to a plain field of a segment: validation reads through
//! [`SegmentBytes`], which copies integers out bounds-checked, and only checked copies reach a
//! [`ValidatedSegment`] (R3). The atomics of the structs are the only shared state the other
//! crates touch in place.
//!
//! # Versions (R13)
//!
//! New fields go only into padding, with a minor version bump; the major version changes only
//! when an old reader would misread a segment. A reader accepts any minor version of its major.
//!
//! | version | what it added |
//! |---------|---------------|
//! | 1.0     | the seed layout; `SizeClassHeader::slot_available_futex` in former padding; in `HubHeader::_pad2` the host's allocator journal (bytes 72..76), pid (76..80), state (80..84), doorbell (84..88), the size growth may reach (88..96) and the heartbeat timeout in milliseconds (96..100); in `PeerEntry::_pad` the peer's allocator journal (48..52), pid (52..56) and the readiness word, which side sleeps on a descriptor (56..60); the doorbell words' sequence counts only the rings that found a waiter announced (a ring without a waiter writes nothing); `HubSlotMeta::next_free` of an Allocated slot may read [`KEPT_SLOT_MARK`]: its owner keeps it for its own next allocation (a hint for counts; the slot is its owner's, as any Allocated one); an inline descriptor's `payload_generation` is its ring *stamp* (the low 32 bits of its number plus one), written last and with Release with `payload_slot`, which publishes it: `visible_head` is stored only after a slot descriptor, so it counts at least up to the last one, and a consumer's `tail` may pass it (PROTOCOL.md §4) |
//!
//! The padding words of 1.0 have names: `HubHeader::HOST_JOURNAL_OFFSET` ..
//! `HubHeader::HEARTBEAT_MS_OFFSET`, `PeerEntry::JOURNAL_OFFSET`, `PeerEntry::PID_OFFSET` and
//! `PeerEntry::READY_WAITERS_OFFSET` (byte offsets from the start of the struct), and the
//! readiness word's bits [`READY_PEER`], [`READY_HOST`] and [`READY_BRIDGED`]; the padding
//! fields keep the seed's names and sizes.
//!
//! Version 1.0 is the first the hub ships, so the padding words hub-alloc and hub-transport
//! use belong to it: a seed-only reader ignores them (it never reads padding), and nothing older
//! than 1.0 exists that could misread them.
//!
//! # Loom
//!
//! Under `cfg(loom)` the atomics come from loom (see [`sync`]) and are larger than the layout's,
//! so the size and offset assertions are off and structs are built with their constructors.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("the hub layout uses 64-bit offsets and a multi-gigabyte reservation");

mod constants;
mod encoding;
mod error;
mod header;
mod offsets;
mod ring;
mod slab;
pub mod sync;
mod validate;

pub use constants::*;
pub use encoding::*;
pub use error::{HubLayoutError, HubSlotError};
pub use header::{HubHeader, PeerEntry};
pub use offsets::{HubOffsets, SegmentLayout, calculate_extent_size, calculate_initial_hub_size};
pub use ring::{DescRingHeader, INLINE_PAYLOAD_SIZE, INLINE_PAYLOAD_SLOT, MsgDescHot, NO_DEADLINE};
pub use slab::{ExtentGeometry, ExtentHeader, HubSlotMeta, SizeClassHeader, SlotState};
pub use validate::{
    HeaderSnapshot, SegmentBytes, ValidatedSegment, validate_header, validate_segment,
};

/// Compile-time checks of size, alignment and every field offset of the seven shared structs.
#[cfg(not(loom))]
mod layout_asserts {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    macro_rules! assert_layout {
        ($ty:ty, size = $size:expr, align = $align:expr, { $($field:ident = $off:expr),* $(,)? }) => {
            const _: () = assert!(size_of::<$ty>() == $size);
            const _: () = assert!(align_of::<$ty>() == $align);
            $(const _: () = assert!(offset_of!($ty, $field) == $off);)*
        };
    }

    assert_layout!(HubHeader, size = 256, align = 64, {
        magic = 0, version = 8, flags = 12, max_peers = 16, active_peers = 18,
        peer_id_counter = 20, _pad1 = 22, current_size = 24, extent_count = 32,
        ring_capacity = 36, peer_table_offset = 40, ring_region_offset = 48,
        size_class_offset = 56, extent_region_offset = 64, _pad2 = 72,
    });
    assert_layout!(PeerEntry, size = 64, align = 64, {
        peer_id = 0, peer_type = 2, flags = 4, epoch = 8, last_seen = 16,
        send_ring_offset = 24, recv_ring_offset = 32, send_data_futex = 40,
        recv_data_futex = 44, _pad = 48,
    });
    assert_layout!(SizeClassHeader, size = 192, align = 64, {
        slot_size = 0, slots_per_extent = 4, extent_slot_shift = 8, total_slots = 12,
        free_head = 16, extent_offsets = 24, slot_available_futex = 152, _pad = 156,
    });
    assert_layout!(ExtentHeader, size = 64, align = 64, {
        class = 0, extent_index = 2, base_global_index = 4, slot_count = 8, slot_size = 12,
        meta_offset = 16, data_offset = 20, _pad = 24,
    });
    assert_layout!(HubSlotMeta, size = 16, align = 4, {
        generation = 0, state = 4, next_free = 8, owner_peer = 12,
    });
    assert_layout!(MsgDescHot, size = 64, align = 64, {
        msg_id = 0, channel_id = 8, method_id = 12, payload_slot = 16,
        payload_generation = 20, payload_offset = 24, payload_len = 28, flags = 32,
        credit_grant = 36, deadline_ns = 40, inline_payload = 48,
    });
    assert_layout!(DescRingHeader, size = 192, align = 64, {
        visible_head = 0, tail = 64, capacity = 128,
    });

    /// A word of `len` bytes at `offset` of a struct lies in its padding `[pad, pad + pad_len)`
    /// and is aligned to its size.
    const fn in_padding(offset: usize, len: usize, pad: usize, pad_len: usize) -> bool {
        offset >= pad && offset + len <= pad + pad_len && offset.is_multiple_of(len)
    }
    const _: () = assert!(HubHeader::PAD2_OFFSET == offset_of!(HubHeader, _pad2));
    const _: () = assert!(PeerEntry::PAD_OFFSET == offset_of!(PeerEntry, _pad));
    // The words of 1.0 in the padding, in order, none overlapping the next.
    const HEADER_WORDS: [(usize, usize); 6] = [
        (HubHeader::HOST_JOURNAL_OFFSET, 4),
        (HubHeader::HOST_PID_OFFSET, 4),
        (HubHeader::HOST_STATE_OFFSET, 4),
        (HubHeader::HOST_BELL_OFFSET, 4),
        (HubHeader::SIZE_LIMIT_OFFSET, 8),
        (HubHeader::HEARTBEAT_MS_OFFSET, 4),
    ];
    const PEER_WORDS: [(usize, usize); 3] = [
        (PeerEntry::JOURNAL_OFFSET, 4),
        (PeerEntry::PID_OFFSET, 4),
        (PeerEntry::READY_WAITERS_OFFSET, 4),
    ];
    const _: () = {
        let mut i = 0;
        while i < HEADER_WORDS.len() {
            let (offset, len) = HEADER_WORDS[i];
            assert!(in_padding(offset, len, HubHeader::PAD2_OFFSET, 168));
            assert!(i == 0 || HEADER_WORDS[i - 1].0 + HEADER_WORDS[i - 1].1 <= offset);
            i += 1;
        }
        let mut i = 0;
        while i < PEER_WORDS.len() {
            let (offset, len) = PEER_WORDS[i];
            assert!(in_padding(offset, len, PeerEntry::PAD_OFFSET, 16));
            assert!(i == 0 || PEER_WORDS[i - 1].0 + PEER_WORDS[i - 1].1 <= offset);
            i += 1;
        }
    };

    // Every seed class has a power-of-two slot count that is a multiple of 4, so its slot data
    // starts 64-aligned and `ExtentGeometry` agrees with `calculate_extent_size`.
    const _: () = {
        let mut class = 0;
        while class < NUM_SIZE_CLASSES {
            let (size, count) = HUB_SIZE_CLASSES[class];
            assert!(count.is_power_of_two() && count % 4 == 0 && size % 64 == 0);
            // The largest global index of the last extent fits a slot reference.
            assert!((MAX_EXTENTS_PER_CLASS as u64) * (count as u64) <= SLOT_INDEX_LIMIT as u64);
            class += 1;
        }
    };
    const _: () = assert!(HOST_OWNER != NO_OWNER && HOST_OWNER >= MAX_PEERS as u32);
    // The kept mark is no slot index, no owner and no list end.
    const _: () = assert!(
        KEPT_SLOT_MARK >= SLOT_INDEX_LIMIT
            && KEPT_SLOT_MARK != HOST_OWNER
            && KEPT_SLOT_MARK != NO_OWNER
            && KEPT_SLOT_MARK != FREE_LIST_END
    );
}
