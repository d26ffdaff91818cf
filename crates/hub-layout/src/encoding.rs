//! Encoders of slot references, global indices and free-list heads, unchecked and checked.
//!
//! The unchecked encoders keep the seed's signatures and `debug_assert` their ranges; in release
//! builds they still mask silently, as the seed does. Anything that encodes a value it did not
//! compute itself uses the `try_` variants.

use crate::HubSlotError;
use crate::constants::*;

/// Encode a slot reference into u32.
/// Bits:
/// - 31..29: class (0-7)
/// - 28..0: global index (0..2^29-1)
///
/// ```
/// assert_eq!(hub_layout::encode_slot_ref(2, 5), (2 << 29) | 5);
/// ```
pub fn encode_slot_ref(class: u16, global_index: u32) -> u32 {
    debug_assert!(
        class <= MAX_ENCODABLE_CLASS,
        "class {class} does not fit 3 bits"
    );
    debug_assert!(
        global_index < SLOT_INDEX_LIMIT,
        "index {global_index} does not fit 29 bits"
    );
    ((class as u32) << 29) | (global_index & ((1 << 29) - 1))
}

/// Decode a slot reference into `(class, global_index)`. Every `u32` decodes; use
/// [`try_decode_slot_ref`] to also check the class against `NUM_SIZE_CLASSES`.
pub fn decode_slot_ref(slot_ref: u32) -> (u16, u32) {
    let class = (slot_ref >> 29) as u16;
    let global_index = slot_ref & ((1 << 29) - 1);
    (class, global_index)
}

/// Combine an extent id and a slot number within it into a global index.
pub fn encode_global_index(extent_id: u32, slot_in_extent: u32, extent_slot_shift: u32) -> u32 {
    debug_assert!(extent_slot_shift < 32);
    debug_assert!(
        u64::from(slot_in_extent) < 1u64 << extent_slot_shift,
        "slot {slot_in_extent} does not fit {extent_slot_shift} bits"
    );
    (extent_id << extent_slot_shift) | slot_in_extent
}

/// Split a global index into `(extent_id, slot_in_extent)`.
pub fn decode_global_index(global_index: u32, extent_slot_shift: u32) -> (u32, u32) {
    let extent_id = global_index >> extent_slot_shift;
    let slot_in_extent = global_index & ((1 << extent_slot_shift) - 1);
    (extent_id, slot_in_extent)
}

/// Pack a free-list head: `(tag << 32) | global_index` (R7).
pub fn pack_free_head(global_index: u32, tag: u32) -> u64 {
    ((tag as u64) << 32) | global_index as u64
}

/// Unpack a free-list head into `(global_index, tag)`.
pub fn unpack_free_head(head: u64) -> (u32, u32) {
    (head as u32, (head >> 32) as u32)
}

/// Encode a slot reference, refusing a class outside `0..NUM_SIZE_CLASSES` and an index at or
/// above 2^29 instead of dropping bits.
///
/// # Errors
/// [`HubSlotError::InvalidSizeClass`] for the class, [`HubSlotError::InvalidSlotRef`] for the
/// index.
///
/// ```
/// use hub_layout::{try_encode_slot_ref, HubSlotError};
/// assert_eq!(try_encode_slot_ref(4, 7), Ok((4 << 29) | 7));
/// assert_eq!(try_encode_slot_ref(5, 7), Err(HubSlotError::InvalidSizeClass));
/// assert_eq!(try_encode_slot_ref(0, 1 << 29), Err(HubSlotError::InvalidSlotRef));
/// ```
pub fn try_encode_slot_ref(class: u16, global_index: u32) -> Result<u32, HubSlotError> {
    if usize::from(class) >= NUM_SIZE_CLASSES {
        return Err(HubSlotError::InvalidSizeClass);
    }
    if global_index >= SLOT_INDEX_LIMIT {
        return Err(HubSlotError::InvalidSlotRef);
    }
    Ok(encode_slot_ref(class, global_index))
}

/// Decode a slot reference read from shared memory, refusing a class outside
/// `0..NUM_SIZE_CLASSES` (which includes [`INLINE_PAYLOAD_SLOT`](crate::INLINE_PAYLOAD_SLOT)).
///
/// # Errors
/// [`HubSlotError::InvalidSizeClass`].
pub fn try_decode_slot_ref(slot_ref: u32) -> Result<(u16, u32), HubSlotError> {
    let (class, index) = decode_slot_ref(slot_ref);
    if usize::from(class) >= NUM_SIZE_CLASSES {
        return Err(HubSlotError::InvalidSizeClass);
    }
    Ok((class, index))
}

/// Combine an extent id and a slot number into a global index, refusing an extent at or above
/// `MAX_EXTENTS_PER_CLASS`, a slot that does not fit `extent_slot_shift` bits, and a result at
/// or above 2^29.
///
/// # Errors
/// [`HubSlotError::InvalidExtent`] for the extent, [`HubSlotError::InvalidSlotRef`] otherwise.
///
/// ```
/// use hub_layout::try_encode_global_index;
/// assert_eq!(try_encode_global_index(3, 5, 10), Ok((3 << 10) | 5));
/// assert!(try_encode_global_index(3, 1024, 10).is_err());
/// ```
pub fn try_encode_global_index(
    extent_id: u32,
    slot_in_extent: u32,
    extent_slot_shift: u32,
) -> Result<u32, HubSlotError> {
    if extent_id as usize >= MAX_EXTENTS_PER_CLASS {
        return Err(HubSlotError::InvalidExtent);
    }
    if extent_slot_shift >= SLOT_INDEX_BITS
        || u64::from(slot_in_extent) >= 1u64 << extent_slot_shift
    {
        return Err(HubSlotError::InvalidSlotRef);
    }
    let index = u64::from(extent_id) << extent_slot_shift | u64::from(slot_in_extent);
    if index >= u64::from(SLOT_INDEX_LIMIT) {
        return Err(HubSlotError::InvalidSlotRef);
    }
    Ok(index as u32)
}
