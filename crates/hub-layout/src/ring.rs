//! The descriptor and the descriptor ring header (PROTOCOL.md §4).

use crate::sync::AtomicU64;

/// Size of the payload carried inside a descriptor.
pub const INLINE_PAYLOAD_SIZE: usize = 16;

/// `payload_slot` value meaning the payload is inline in the descriptor.
pub const INLINE_PAYLOAD_SLOT: u32 = u32::MAX;

/// `deadline_ns` value meaning the frame has no deadline.
pub const NO_DEADLINE: u64 = u64::MAX;

/// A frame descriptor: one cache line, copied through a ring.
///
/// The transport fills `payload_*` and `inline_payload`; `msg_id`, `channel_id`, `method_id`,
/// `flags`, `credit_grant` and `deadline_ns` belong to the RPC runtime and travel untouched.
/// A receiver copies a descriptor out of the ring before it looks at any field (R3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct MsgDescHot {
    /// Message id, chosen by the runtime.
    pub msg_id: u64,
    /// Channel id, chosen by the runtime.
    pub channel_id: u32,
    /// Method id, chosen by the runtime.
    pub method_id: u32,
    /// Slot reference of the payload (see [`encode_slot_ref`](crate::encode_slot_ref)), or
    /// [`INLINE_PAYLOAD_SLOT`].
    pub payload_slot: u32,
    /// Generation of the payload slot when it was sent; in an inline descriptor, the ring's
    /// stamp, which publishes it (PROTOCOL.md §4).
    pub payload_generation: u32,
    /// Offset of the payload inside the slot.
    pub payload_offset: u32,
    /// Length of the payload in bytes.
    pub payload_len: u32,
    /// Flags, chosen by the runtime.
    pub flags: u32,
    /// Flow-control credit, chosen by the runtime.
    pub credit_grant: u32,
    /// Deadline in nanoseconds, or [`NO_DEADLINE`].
    pub deadline_ns: u64,
    /// The payload when `payload_slot == INLINE_PAYLOAD_SLOT` (first `payload_len` bytes).
    pub inline_payload: [u8; INLINE_PAYLOAD_SIZE],
}

impl MsgDescHot {
    /// An empty descriptor: ids zero, inline payload of length zero, no deadline.
    pub const fn empty() -> Self {
        Self {
            msg_id: 0,
            channel_id: 0,
            method_id: 0,
            payload_slot: INLINE_PAYLOAD_SLOT,
            payload_generation: 0,
            payload_offset: 0,
            payload_len: 0,
            flags: 0,
            credit_grant: 0,
            deadline_ns: NO_DEADLINE,
            inline_payload: [0; INLINE_PAYLOAD_SIZE],
        }
    }
}

impl Default for MsgDescHot {
    fn default() -> Self {
        Self::empty()
    }
}

/// Header of a single-producer single-consumer descriptor ring (192 bytes).
///
/// `visible_head` and `tail` each own a cache line, so the producer and the consumer never write
/// the same line. Both are free-running counts; slot `i` of the ring is `i % capacity`. The
/// `capacity` descriptors follow the header.
#[repr(C, align(64))]
pub struct DescRingHeader {
    /// Descriptors published by the producer (a count, Release on store): at least up to the
    /// last slot descriptor; inline descriptors after it publish themselves by their stamps
    /// (PROTOCOL.md §4).
    pub visible_head: AtomicU64,
    /// Padding that gives `visible_head` its own cache line.
    pub _pad_head: [u8; 56],
    /// Descriptors consumed by the consumer (a count, Release on store).
    pub tail: AtomicU64,
    /// Padding that gives `tail` its own cache line.
    pub _pad_tail: [u8; 56],
    /// Number of descriptors (a power of two), written once at creation.
    pub capacity: u32,
    /// Padding to 192 bytes.
    pub _pad: [u8; 60],
}

impl DescRingHeader {
    /// An empty ring header of `capacity` descriptors.
    pub fn new(capacity: u32) -> Self {
        Self {
            visible_head: AtomicU64::new(0),
            _pad_head: [0; 56],
            tail: AtomicU64::new(0),
            _pad_tail: [0; 56],
            capacity,
            _pad: [0; 60],
        }
    }
}
