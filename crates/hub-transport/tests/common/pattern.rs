//! Deterministic payloads and a checksum, with no dependency: shared by the integration tests
//! and the plugin processes (`tests/plugin`).
//!
//! Both work eight bytes at a time, so that a 16 MiB payload costs little even in a debug build.

/// Fill `buf` with bytes derived from `seed` (xorshift64*), eight at a time.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    if state == 0 {
        state = 1; // xorshift stays at zero forever
    }
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let (words, rest) = buf.as_chunks_mut::<8>();
    for word in words {
        *word = next().to_le_bytes();
    }
    let last = next().to_le_bytes();
    rest.copy_from_slice(&last[..rest.len()]);
}

/// A payload of `len` bytes filled from `seed`.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0; len];
    fill(&mut buf, seed);
    buf
}

/// A 64-bit checksum of `bytes`: FNV-1a over little-endian 8-byte words with an extra shift-xor
/// per word, then the tail bytes and the length, then a final avalanche. Order-sensitive: a
/// moved, dropped or changed byte changes it.
pub fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        h = (h ^ u64::from_le_bytes(*word)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    for &byte in rest {
        h = (h ^ u64::from(byte)).wrapping_mul(PRIME);
    }
    h = (h ^ bytes.len() as u64).wrapping_mul(PRIME);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^ (h >> 33)
}

/// The checksum of the payload of `len` bytes from `seed`, without keeping it.
pub fn expected(len: usize, seed: u64) -> u64 {
    checksum(&payload(len, seed))
}

/// A tiny xorshift64* generator, for tests and plugins that scribble or pick at random from a
/// seed they print (so that a failure can be replayed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (not 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `p` times in a hundred.
    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    /// A duration of at most `max` microseconds.
    pub fn micros(&mut self, max: u64) -> std::time::Duration {
        std::time::Duration::from_micros(self.below(max + 1))
    }
}
