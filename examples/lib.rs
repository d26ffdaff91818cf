//! Helpers the examples share.

/// A checksum of `bytes` that is cheap enough to run over 16 MiB per frame: the wrapping sum
/// of its little-endian `u64` words, then of its remaining bytes.
///
/// ```
/// use hub_examples::{checksum, expected_checksum};
/// assert_eq!(checksum(&[1u8; 20]), expected_checksum(20, 1));
/// ```
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for word in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
    }
    for &byte in words.remainder() {
        sum = sum.wrapping_add(u64::from(byte));
    }
    sum
}

/// What [`checksum`] gives for `len` bytes of `byte`, without reading them.
pub fn expected_checksum(len: usize, byte: u8) -> u64 {
    let word = u64::from_le_bytes([byte; 8]);
    word.wrapping_mul((len / 8) as u64)
        .wrapping_add(u64::from(byte) * (len % 8) as u64)
}
