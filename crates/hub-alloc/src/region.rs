//! The memory an allocator runs over: a fixed base, a fixed virtual reservation, and a length
//! that only grows.

use std::ptr::NonNull;

use crate::sync::{AtomicU64, Ordering};

/// Why a region could not grow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrowError {
    /// The requested length is beyond the region's fixed reservation.
    #[error("cannot grow to {requested} bytes: the reservation is {reservation} bytes")]
    BeyondReservation {
        /// Length asked for.
        requested: usize,
        /// The fixed reservation.
        reservation: usize,
    },
    /// The operating system refused to extend the backing (disk full, sealed file, ...).
    #[error("the backing could not grow to {requested} bytes: {message}")]
    Backing {
        /// Length asked for.
        requested: usize,
        /// What the system said.
        message: String,
    },
}

/// Memory shared by the participants of a hub, as the allocator sees it.
///
/// `base()` never changes, and neither does `reservation()`. The first `len()` bytes are
/// readable and writable; `len()` never decreases. [`grow_to`](Region::grow_to) makes at least
/// `new_len` bytes usable in every process that maps the region, without moving `base()` (R8):
/// pointers into the region stay valid for its whole life.
///
/// # Safety
///
/// An implementation guarantees, for as long as the value lives:
/// - `base()` is non-null, aligned to at least 64 bytes, and returns the same pointer every time;
/// - every byte of `[base(), base() + len())` may be read and written through raw pointers,
///   including by atomic operations, and `len()` never decreases;
/// - `len() <= reservation()`, and a successful `grow_to(n)` leaves `len() >= n`;
/// - concurrent calls of `grow_to` from any thread or process never shrink the backing.
pub unsafe trait Region: Send + Sync {
    /// First byte of the region.
    fn base(&self) -> NonNull<u8>;

    /// Bytes of address space reserved; the region can never grow past this.
    fn reservation(&self) -> usize;

    /// Bytes currently usable.
    fn len(&self) -> usize;

    /// Whether no byte is usable yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Make at least `new_len` bytes usable; never shrinks. Returns the new length.
    ///
    /// # Errors
    /// [`GrowError::BeyondReservation`] when `new_len > reservation()`, [`GrowError::Backing`]
    /// when the system refuses.
    fn grow_to(&self, new_len: usize) -> Result<usize, GrowError>;

    /// Look again at how many bytes are usable, when another process may have grown the
    /// backing since `len()` was last updated, and return the (never smaller) length. The
    /// default returns `len()`: right for a region only this process grows.
    fn refresh_len(&self) -> usize {
        self.len()
    }
}

/// `Region` for a pointer to a region: every method forwards to the pointee.
macro_rules! forward_region {
    ($($pointer:ty),*) => {$(
        // SAFETY: forwards to `T`, whose guarantees hold for as long as the pointer keeps it
        // alive (an Arc owns it; a reference borrows it).
        unsafe impl<T: Region + ?Sized> Region for $pointer {
            #[inline]
            fn base(&self) -> NonNull<u8> {
                (**self).base()
            }
            #[inline]
            fn reservation(&self) -> usize {
                (**self).reservation()
            }
            #[inline]
            fn len(&self) -> usize {
                (**self).len()
            }
            fn grow_to(&self, new_len: usize) -> Result<usize, GrowError> {
                (**self).grow_to(new_len)
            }
            #[inline]
            fn refresh_len(&self) -> usize {
                (**self).refresh_len()
            }
        }
    )*};
}

forward_region!(std::sync::Arc<T>, &T);

/// A private anonymous mapping whose whole reservation is mapped up front (zero pages, committed
/// only when touched) and whose length grows as a counter: the region of unit tests, loom
/// models and in-process benches.
///
/// ```
/// use hub_alloc::{HeapRegion, Region};
/// let region = HeapRegion::new(4096, 1 << 20);
/// assert_eq!(region.len(), 4096);
/// assert_eq!(region.grow_to(8192).unwrap(), 8192);
/// assert!(region.grow_to(2 << 20).is_err());
/// ```
pub struct HeapRegion {
    base: NonNull<u8>,
    map: memmap2::MmapRaw,
    len: AtomicU64,
}

// SAFETY: the memory is owned by the HeapRegion and only reached through raw pointers and
// atomics by its users, who follow the allocator's protocol; the length is an atomic.
unsafe impl Send for HeapRegion {}
// SAFETY: as for Send; `&HeapRegion` exposes nothing but the pointer and atomic operations.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// A zeroed region of `reservation` bytes of which the first `len` are usable.
    ///
    /// # Panics
    /// When `len > reservation`, `reservation` is zero, or the mapping fails.
    pub fn new(len: usize, reservation: usize) -> Self {
        assert!(
            len <= reservation && reservation > 0,
            "bad heap region {len}/{reservation}"
        );
        let map = memmap2::MmapOptions::new()
            .len(reservation)
            .map_anon()
            .map(memmap2::MmapRaw::from)
            .unwrap_or_else(|e| panic!("cannot map {reservation} bytes: {e}"));
        let base = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        Self {
            base,
            map,
            len: AtomicU64::new(len as u64),
        }
    }
}

// SAFETY: the whole reservation is mapped read-write, zeroed and page-aligned for the region's
// life (the MmapRaw is dropped with it), so every byte below `len() <= reservation()` is
// usable; `len` only grows (fetch_max).
unsafe impl Region for HeapRegion {
    #[inline]
    fn base(&self) -> NonNull<u8> {
        self.base
    }

    #[inline]
    fn reservation(&self) -> usize {
        self.map.len()
    }

    #[inline]
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire) as usize
    }

    fn grow_to(&self, new_len: usize) -> Result<usize, GrowError> {
        if new_len > self.reservation() {
            return Err(GrowError::BeyondReservation {
                requested: new_len,
                reservation: self.reservation(),
            });
        }
        let old = self.len.fetch_max(new_len as u64, Ordering::AcqRel) as usize;
        Ok(old.max(new_len))
    }
}
