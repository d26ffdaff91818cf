/*
 * hub_layout.h: the byte layout of a hub segment, for C and C++ programs that map one.
 *
 * The same structs, offsets and constants as the Rust crate hub-layout (its tests compile a
 * program against this header and compare every figure). Every multi-byte field is
 * little-endian (the hub runs on Linux x86-64 and aarch64). Fields the Rust side declares as
 * atomics are plain integers here: access them with C11 atomics (atomic_load_explicit on an
 * _Atomic-qualified pointer cast) or the __atomic builtins, with the orderings the protocol
 * gives; any peer may write any byte of the segment at any time, so copy a word once, check it,
 * then use it.
 *
 * Licensed under MIT or Apache-2.0, at your option.
 */
#ifndef HUB_LAYOUT_H
#define HUB_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define HUB_ALIGN64 alignas(64)
#define HUB_STATIC_ASSERT(condition, message) static_assert(condition, message)
extern "C" {
#else
#define HUB_ALIGN64 _Alignas(64)
#define HUB_STATIC_ASSERT(condition, message) _Static_assert(condition, message)
#endif

/* ---- constants ---- */

/* The first 8 bytes of a finished segment, written last by its creator (release). */
#define HUB_MAGIC "RAPAHUB\0"
/* Protocol version: major in the high 16 bits, minor in the low 16. */
#define HUB_PROTOCOL_VERSION (1u << 16)
#define HUB_MAX_PEERS 32u
#define HUB_NUM_SIZE_CLASSES 5u
#define HUB_MAX_EXTENTS_PER_CLASS 16u
#define HUB_DEFAULT_RING_CAPACITY 256u
#define HUB_FREE_LIST_END 0xFFFFFFFFu
#define HUB_NO_OWNER 0xFFFFFFFFu
#define HUB_HOST_OWNER 0xFFFFFFFEu
/* next_free of an Allocated slot its owner keeps for its next allocation (a hint) */
#define HUB_KEPT_SLOT_MARK 0xFFFFFFFDu
#define HUB_INLINE_PAYLOAD_SIZE 16u
#define HUB_INLINE_PAYLOAD_SLOT 0xFFFFFFFFu
#define HUB_NO_DEADLINE 0xFFFFFFFFFFFFFFFFull
#define HUB_SLOT_INDEX_BITS 29u
#define HUB_MAX_ENCODABLE_CLASS 7u

/* PeerEntry.flags: the entry's state. */
#define HUB_PEER_FLAG_ACTIVE (1u << 0)
#define HUB_PEER_FLAG_DYING (1u << 1)
#define HUB_PEER_FLAG_DEAD (1u << 2)
#define HUB_PEER_FLAG_RESERVED (1u << 3)

/* HubSlotMeta.state. */
#define HUB_SLOT_FREE 0u
#define HUB_SLOT_ALLOCATED 1u
#define HUB_SLOT_IN_FLIGHT 2u

/* The size classes: slot size in bytes, and slots in a class's first extent. */
#define HUB_CLASS_0_SLOT_SIZE 1024u
#define HUB_CLASS_0_SLOTS 1024u
#define HUB_CLASS_1_SLOT_SIZE 16384u
#define HUB_CLASS_1_SLOTS 256u
#define HUB_CLASS_2_SLOT_SIZE 262144u
#define HUB_CLASS_2_SLOTS 32u
#define HUB_CLASS_3_SLOT_SIZE 4194304u
#define HUB_CLASS_3_SLOTS 8u
#define HUB_CLASS_4_SLOT_SIZE 16777216u
#define HUB_CLASS_4_SLOTS 4u

/* Words of 1.0 in the padding (R13): byte offsets from the start of the struct. In
 * HubHeader._pad2: */
#define HUB_HEADER_HOST_JOURNAL_OFFSET 72u  /* uint32_t: the host's allocator journal */
#define HUB_HEADER_HOST_PID_OFFSET 76u      /* uint32_t: the host's process id */
#define HUB_HEADER_HOST_STATE_OFFSET 80u    /* uint32_t: 0 running, 1 gone */
#define HUB_HEADER_HOST_BELL_OFFSET 84u     /* uint32_t: the host's doorbell */
#define HUB_HEADER_SIZE_LIMIT_OFFSET 88u    /* uint64_t: the size growth may reach */
#define HUB_HEADER_HEARTBEAT_MS_OFFSET 96u  /* uint32_t: the heartbeat timeout, ms */
/* In PeerEntry._pad: */
#define HUB_PEER_JOURNAL_OFFSET 48u         /* uint32_t: the peer's allocator journal */
#define HUB_PEER_PID_OFFSET 52u             /* uint32_t: the peer's process id */
#define HUB_PEER_READY_WAITERS_OFFSET 56u   /* uint32_t: HUB_READY_* bits */
/* Bits of the readiness word: who sleeps on a readiness descriptor. */
#define HUB_READY_PEER (1u << 0)
#define HUB_READY_HOST (1u << 1)
#define HUB_READY_BRIDGED (1u << 2)

/* A slot reference: class in the top 3 bits, the slot's global index in the low 29. */
#define HUB_ENCODE_SLOT_REF(class_, index) (((uint32_t)(class_) << 29) | ((uint32_t)(index) & 0x1FFFFFFFu))

/* ---- structs ----
 * Every struct but HubSlotMeta is aligned to 64 bytes (a cache line): HUB_ALIGN64 on its first
 * member gives the struct that alignment, and rounds its size up to a multiple of it. */

/* At offset 0 of the segment. */
typedef struct HubHeader {
    HUB_ALIGN64 uint8_t magic[8];
    uint32_t version;
    uint32_t flags;
    uint16_t max_peers;
    uint16_t active_peers;     /* atomic */
    uint16_t peer_id_counter;  /* atomic */
    uint16_t _pad1;
    uint64_t current_size;     /* atomic */
    uint32_t extent_count;     /* atomic */
    uint32_t ring_capacity;
    uint64_t peer_table_offset;
    uint64_t ring_region_offset;
    uint64_t size_class_offset;
    uint64_t extent_region_offset;
    uint8_t _pad2[168];
} HubHeader;

/* One per peer, at peer_table_offset + id * 64. */
typedef struct PeerEntry {
    HUB_ALIGN64 uint16_t peer_id;
    uint16_t peer_type;
    uint32_t flags;            /* atomic: HUB_PEER_FLAG_* */
    uint64_t epoch;            /* atomic */
    uint64_t last_seen;        /* atomic: monotonic ns of the peer's last heartbeat */
    uint64_t send_ring_offset;
    uint64_t recv_ring_offset;
    uint32_t send_data_futex;  /* atomic: doorbell of the ring peer -> host */
    uint32_t recv_data_futex;  /* atomic: doorbell of the ring host -> peer */
    uint8_t _pad[16];
} PeerEntry;

/* A frame's descriptor: one slot of a ring. */
typedef struct MsgDescHot {
    HUB_ALIGN64 uint64_t msg_id;
    uint32_t channel_id;
    uint32_t method_id;
    uint32_t payload_slot;        /* a slot reference, or HUB_INLINE_PAYLOAD_SLOT */
    uint32_t payload_generation;
    uint32_t payload_offset;
    uint32_t payload_len;
    uint32_t flags;
    uint32_t credit_grant;
    uint64_t deadline_ns;         /* HUB_NO_DEADLINE for none */
    uint8_t inline_payload[16];
} MsgDescHot;

/* The head of a ring; ring_capacity descriptors follow it. */
typedef struct DescRingHeader {
    HUB_ALIGN64 uint64_t visible_head;  /* atomic: written by the producer (release) */
    uint8_t _pad_head[56];
    uint64_t tail;          /* atomic: written by the consumer (release) */
    uint8_t _pad_tail[56];
    uint32_t capacity;
    uint8_t _pad[60];
} DescRingHeader;

/* One per class, at size_class_offset + class * 192. */
typedef struct SizeClassHeader {
    HUB_ALIGN64 uint32_t slot_size;
    uint32_t slots_per_extent;
    uint32_t extent_slot_shift;
    uint32_t total_slots;                                 /* atomic */
    uint64_t free_head;                                   /* atomic: tag << 32 | index */
    uint64_t extent_offsets[HUB_MAX_EXTENTS_PER_CLASS];   /* atomic, each published once */
    uint32_t slot_available_futex;                        /* atomic */
    uint8_t _pad[4];
} SizeClassHeader;

/* At the start of every extent. */
typedef struct ExtentHeader {
    HUB_ALIGN64 uint16_t class_;
    uint16_t extent_index;
    uint32_t base_global_index;
    uint32_t slot_count;
    uint32_t slot_size;
    uint32_t meta_offset;
    uint32_t data_offset;
    uint8_t _pad[32];
} ExtentHeader;

/* One per slot, in its extent at meta_offset + slot * 16. generation and state are read and
 * swapped together as one 64-bit word (generation in the low half). */
typedef struct HubSlotMeta {
    uint32_t generation;  /* atomic */
    uint32_t state;       /* atomic: HUB_SLOT_* */
    uint32_t next_free;   /* atomic */
    uint32_t owner_peer;  /* atomic: a peer id, HUB_HOST_OWNER or HUB_NO_OWNER */
} HubSlotMeta;

/* ---- the figures, checked by the compiler ---- */

HUB_STATIC_ASSERT(sizeof(HubHeader) == 256, "HubHeader is 256 bytes");
HUB_STATIC_ASSERT(offsetof(HubHeader, current_size) == 24, "HubHeader.current_size");
HUB_STATIC_ASSERT(offsetof(HubHeader, peer_table_offset) == 40, "HubHeader.peer_table_offset");
HUB_STATIC_ASSERT(offsetof(HubHeader, extent_region_offset) == 64, "HubHeader.extent_region_offset");
HUB_STATIC_ASSERT(offsetof(HubHeader, _pad2) == HUB_HEADER_HOST_JOURNAL_OFFSET,
               "HubHeader._pad2 holds the padding words");
HUB_STATIC_ASSERT(sizeof(PeerEntry) == 64, "PeerEntry is 64 bytes");
HUB_STATIC_ASSERT(offsetof(PeerEntry, _pad) == HUB_PEER_JOURNAL_OFFSET,
               "PeerEntry._pad holds the padding words");
HUB_STATIC_ASSERT(offsetof(PeerEntry, epoch) == 8, "PeerEntry.epoch");
HUB_STATIC_ASSERT(offsetof(PeerEntry, send_data_futex) == 40, "PeerEntry.send_data_futex");
HUB_STATIC_ASSERT(offsetof(PeerEntry, recv_data_futex) == 44, "PeerEntry.recv_data_futex");
HUB_STATIC_ASSERT(sizeof(MsgDescHot) == 64, "MsgDescHot is 64 bytes");
HUB_STATIC_ASSERT(offsetof(MsgDescHot, deadline_ns) == 40, "MsgDescHot.deadline_ns");
HUB_STATIC_ASSERT(offsetof(MsgDescHot, inline_payload) == 48, "MsgDescHot.inline_payload");
HUB_STATIC_ASSERT(sizeof(DescRingHeader) == 192, "DescRingHeader is 192 bytes");
HUB_STATIC_ASSERT(offsetof(DescRingHeader, tail) == 64, "DescRingHeader.tail");
HUB_STATIC_ASSERT(offsetof(DescRingHeader, capacity) == 128, "DescRingHeader.capacity");
HUB_STATIC_ASSERT(sizeof(SizeClassHeader) == 192, "SizeClassHeader is 192 bytes");
HUB_STATIC_ASSERT(offsetof(SizeClassHeader, free_head) == 16, "SizeClassHeader.free_head");
HUB_STATIC_ASSERT(offsetof(SizeClassHeader, slot_available_futex) == 152,
               "SizeClassHeader.slot_available_futex");
HUB_STATIC_ASSERT(sizeof(ExtentHeader) == 64, "ExtentHeader is 64 bytes");
HUB_STATIC_ASSERT(sizeof(HubSlotMeta) == 16, "HubSlotMeta is 16 bytes");

#ifdef __cplusplus
}
#endif

#endif /* HUB_LAYOUT_H */
