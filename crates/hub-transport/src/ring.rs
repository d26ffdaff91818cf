//! The single-producer single-consumer descriptor ring over shared memory (PROTOCOL.md §4).
//!
//! A ring is a [`DescRingHeader`] (`visible_head` at 0, `tail` at 64, `capacity` at 128)
//! followed by `capacity` [`MsgDescHot`] of 64 bytes each. `visible_head` counts the descriptors
//! the producer published up to its last slot descriptor (inline ones publish themselves, see
//! below), `tail` the ones the consumer took; both are free-running `u64` counts and descriptor
//! `i` lives in slot `i % capacity`.
//!
//! - [`RawRing`] is the view of one ring: a pointer and the capacity from the *private*
//!   validated configuration. The capacity stored in shared memory is never read (R3).
//! - [`Producer::try_push`] and [`Consumer::try_pop`] take `&mut self`, so one handle cannot be
//!   used by two threads at once; creating the handles is `unsafe` with the contract that there
//!   is one of each per ring, in all processes together.
//! - Each side keeps its own index privately and caches the other side's; it reloads the other
//!   side's index only when the ring looks full (producer) or empty (consumer). A push or pop
//!   that need not reload touches the descriptor's line and its own index's line only.
//! - Descriptors are copied in and out one `u64` word at a time with relaxed atomic stores and
//!   loads; no Rust reference to the descriptor area is ever made (R4). The consumer copies a
//!   descriptor out before it publishes the new tail, so the producer never overwrites a
//!   descriptor being read. Since every access is atomic, no index a third party writes (a
//!   forged tail that lets a producer of this process overwrite a slot its consumer, also in
//!   this process, is reading; a scan racing a push) can make two threads race on a slot: the
//!   worst is a torn copy, whose fields are unchecked data anyway (R3).
//! - An inline descriptor publishes itself (PROTOCOL.md §4, "stamps"): the producer writes the
//!   word of `payload_slot` and `payload_generation` last, with Release, and in an inline
//!   descriptor that generation is the descriptor's *stamp*, the low 32 bits of its index plus
//!   one. A consumer that finds the stamp of its next index in that slot takes the descriptor
//!   without reading the head, and the producer stores the head only after a slot descriptor:
//!   a stream of inline frames never moves the head's line between the processes, only the
//!   descriptors' lines, which the consumer reads anyway. So `visible_head` counts at least up
//!   to the last slot descriptor, and the consumer's tail may pass it. A pop gives an inline
//!   descriptor back with generation 0, whatever the producer put there.
//! - Every index read from shared memory is checked before use (R3): a head that went backwards,
//!   ran more than `capacity` ahead of the tail, or moved and stayed behind it, a tail that went
//!   backwards or passed the producer's own head, are typed [`RingError`]s that say which side
//!   is at fault. Slots are indexed with `index & (capacity - 1)` of the private capacity, so no
//!   value a peer writes can make us touch memory outside the ring, nor panic.
//!
//! ```
//! use hub_transport::ring::HeapRing;
//! use hub_layout::MsgDescHot;
//!
//! let (mut producer, mut consumer) = HeapRing::new(4)?.split();
//! let desc = MsgDescHot { msg_id: 7, ..MsgDescHot::empty() };
//! producer.try_push(&desc)?;
//! assert_eq!(consumer.try_pop()?, Some(desc));
//! assert_eq!(consumer.try_pop()?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::sync::{AtomicU64, Ordering};
use hub_layout::{DescRingHeader, INLINE_PAYLOAD_SLOT, MsgDescHot};
use std::alloc::Layout;
use std::convert::Infallible;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Which side of a ring wrote a faulty index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSide {
    /// The producer, which writes `visible_head`.
    Producer,
    /// The consumer, which writes `tail`.
    Consumer,
}

/// A ring that cannot be used: a bad configuration, or an index in shared memory that breaks the
/// protocol (R3). The faulty side is given by [`RingError::culprit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The capacity given to [`RawRing::new`] or [`HeapRing::new`] is zero or not a power of two.
    #[error("ring capacity {capacity} is not a non-zero power of two")]
    InvalidCapacity {
        /// The capacity given.
        capacity: u32,
    },
    /// The header pointer given to [`RawRing::new`] is not 64-byte aligned.
    #[error("ring header at {address:#x} is not 64-byte aligned")]
    Misaligned {
        /// The address given.
        address: usize,
    },
    /// The producer's `visible_head` is smaller than a value read from it before: heads only
    /// grow.
    #[error("ring head went backwards: read {head}, earlier {previous}")]
    HeadWentBackwards {
        /// The head just read.
        head: u64,
        /// The head read before.
        previous: u64,
    },
    /// The producer's `visible_head` moved, but not past the consumer's tail. The head is
    /// stored after a slot descriptor, which the consumer takes only by a head past it; so a
    /// head that moves and stays at or behind the descriptors already taken (the inline ones,
    /// by their stamps) was not stored by a producer that keeps the protocol (PROTOCOL.md §4).
    #[error("ring head moved to {head}, not past the {tail} descriptors taken")]
    HeadNotPastTail {
        /// The head just read.
        head: u64,
        /// The consumer's tail.
        tail: u64,
    },
    /// The producer's `visible_head` is more than `capacity` descriptors ahead of the tail: it
    /// claims descriptors it cannot have written.
    #[error("ring head {head} is more than {capacity} ahead of tail {tail}")]
    HeadPastCapacity {
        /// The head read.
        head: u64,
        /// The tail it was compared with.
        tail: u64,
        /// The ring's private capacity.
        capacity: u32,
    },
    /// The producer's head is `u64::MAX`: it cannot publish another descriptor. Only a corrupt
    /// head read when the producer handle was created can get there.
    #[error("ring head {head} cannot grow")]
    HeadOverflow {
        /// The producer's head.
        head: u64,
    },
    /// The consumer's `tail` is smaller than a value read from it before: tails only grow.
    #[error("ring tail went backwards: read {tail}, earlier {previous}")]
    TailWentBackwards {
        /// The tail just read.
        tail: u64,
        /// The tail known before.
        previous: u64,
    },
    /// The consumer's `tail` is ahead of the head: it claims descriptors that were never
    /// published.
    #[error("ring tail {tail} is past head {head}")]
    TailPastHead {
        /// The tail read.
        tail: u64,
        /// The head it was compared with.
        head: u64,
    },
}

impl RingError {
    /// The side whose index broke the protocol, or `None` for a configuration error.
    ///
    /// The caller maps it to the participant at fault: for a peer's send ring the producer is the
    /// peer, for its recv ring the consumer is.
    pub fn culprit(&self) -> Option<RingSide> {
        match self {
            Self::InvalidCapacity { .. } | Self::Misaligned { .. } => None,
            Self::HeadWentBackwards { .. }
            | Self::HeadNotPastTail { .. }
            | Self::HeadPastCapacity { .. }
            | Self::HeadOverflow { .. } => Some(RingSide::Producer),
            Self::TailWentBackwards { .. } | Self::TailPastHead { .. } => Some(RingSide::Consumer),
        }
    }
}

/// Why [`Producer::try_push`] did not push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The ring holds `capacity` descriptors; try again after the consumer took some.
    #[error("ring is full")]
    Full,
    /// The consumer's tail broke the protocol (or the producer's own head is exhausted).
    #[error(transparent)]
    Fault(#[from] RingError),
}

/// The view of one ring in memory: the header pointer and the private capacity.
///
/// A `RawRing` reads shared memory only through the header's atomics; it offers the ring-wide
/// operations ([`len`](Self::len), [`pending`](Self::pending), [`reset`](Self::reset)) and makes
/// the two handles ([`producer`](Self::producer), [`consumer`](Self::consumer)). Cloning it is
/// cheap and clones the view, not the ring.
#[derive(Clone)]
pub struct RawRing {
    header: NonNull<DescRingHeader>,
    slots: NonNull<MsgDescHot>,
    capacity: u32,
    /// `capacity - 1`: slot of index `i` is `i & mask`.
    mask: u64,
    /// Keeps a [`HeapRing`]'s allocation alive while a view of it exists.
    _owner: Option<Arc<HeapBuffer>>,
    /// Under loom, one tracked cell per slot, so that loom checks the descriptor copies for data
    /// races just as it checks the atomics. Only views cloned from one `RawRing` share them.
    #[cfg(loom)]
    cells: Arc<[loom::cell::UnsafeCell<()>]>,
    /// Under loom, the slots' stamp words as loom atomics (the real words are `std`'s, which
    /// loom does not see), so that a pop on a stamp is ordered after the push as loom checks it.
    #[cfg(loom)]
    stamps: Arc<[AtomicU64]>,
}

impl std::fmt::Debug for RawRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRing")
            .field("header", &self.header)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

// SAFETY: a `RawRing` only touches the ring through atomics (indices and descriptor words),
// whose concurrent use from several threads (and processes) is the protocol of this module;
// the contract of `RawRing::new` keeps the memory valid wherever the view goes.
unsafe impl Send for RawRing {}
// SAFETY: as for `Send`: every `&self` method uses atomics only, on the indices and on the
// descriptor words alike.
unsafe impl Sync for RawRing {}

impl RawRing {
    /// A view of the ring whose header is at `header`, with `capacity` descriptors.
    ///
    /// `capacity` must come from the private, validated configuration of the hub (R2, R3), never
    /// from the `capacity` field of the header: all indexing uses it.
    ///
    /// # Errors
    ///
    /// [`RingError::InvalidCapacity`] if `capacity` is zero or not a power of two,
    /// [`RingError::Misaligned`] if `header` is not 64-byte aligned.
    ///
    /// # Safety
    ///
    /// - `header` points to an initialised [`DescRingHeader`], followed at
    ///   `header.add(1)` by `capacity` descriptors; the whole range is readable and writable and
    ///   stays mapped as long as this view, a clone of it, or a handle made from it exists.
    /// - No Rust reference to the descriptors exists while the view is in use (R4); other
    ///   processes may write them (and the header) at any time, which the view tolerates.
    pub unsafe fn new(header: NonNull<DescRingHeader>, capacity: u32) -> Result<Self, RingError> {
        if capacity == 0 || !capacity.is_power_of_two() {
            return Err(RingError::InvalidCapacity { capacity });
        }
        if !header.as_ptr().cast::<u8>().addr().is_multiple_of(64) {
            return Err(RingError::Misaligned {
                address: header.as_ptr().addr(),
            });
        }
        // SAFETY: by the contract, the descriptors start right after the header, inside the same
        // mapping, so the offset stays in bounds.
        let slots = unsafe { header.add(1) }.cast::<MsgDescHot>();
        Ok(Self {
            header,
            slots,
            capacity,
            mask: u64::from(capacity) - 1,
            _owner: None,
            #[cfg(loom)]
            cells: (0..capacity)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
            #[cfg(loom)]
            stamps: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The capacity the view was built with (the private one).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The producer's published count as it is now, unchecked and with no ordering: a hint for
    /// a consumer's look at whether there is anything to pop before it takes its handle (a
    /// value it compares with its own count, never uses, R3). A pop reads the head again,
    /// with the checks and the Acquire that make the descriptors visible.
    ///
    /// It counts at least up to the last slot descriptor: inline descriptors after it are
    /// published by their stamps ([`stamped`](Self::stamped)), and a consumer's tail may be
    /// past it.
    #[inline]
    pub fn published(&self) -> u64 {
        // A hint: Relaxed (see above; R11's fences order it where a waiter needs it).
        self.head_word().load(Ordering::Relaxed)
    }

    /// Whether the slot of `index` holds the inline descriptor of that index, published by its
    /// stamp: a hint with no ordering, like [`published`](Self::published), for a consumer whose
    /// tail is `index` (a pop looks again, with Acquire).
    #[inline]
    pub fn stamped(&self, index: u64) -> bool {
        self.load_stamp(index, Ordering::Relaxed) == stamp_word(index)
    }

    /// The stamp word of the slot of `index`, loaded with `order`.
    #[inline(always)]
    fn load_stamp(&self, index: u64, order: Ordering) -> u64 {
        #[cfg(loom)]
        return self.stamps[(index & self.mask) as usize].load(order);
        #[cfg(not(loom))]
        {
            let word = self.slot_ptr(index).cast::<u64>().wrapping_add(STAMP_WORD);
            // SAFETY: as in `load_desc`: the slot of `index` is in the ring, 64-aligned, so its
            // word `STAMP_WORD < DESC_WORDS` is in bounds and 8-aligned, no Rust reference to
            // it exists (R4) and every access to it is atomic.
            unsafe { AtomicU64::from_ptr(word) }.load(order)
        }
    }

    /// [`published_depth`] of this ring for the counts `head` and `tail`, looking at its slots.
    fn depth(&self, head: u64, tail: u64) -> Option<u64> {
        let Ok(depth) = published_depth(head, tail, self.capacity, |index| {
            Ok::<_, Infallible>(self.stamped(index))
        });
        depth
    }

    /// Whether `other` is a view of the same ring.
    pub fn is_same_ring(&self, other: &RawRing) -> bool {
        self.header == other.header
    }

    /// The producer's published count, `visible_head`, in shared memory.
    fn head_word(&self) -> &AtomicU64 {
        // SAFETY: the header is valid (contract of `new`); this projects to the atomic field
        // only, and a reference to an atomic in shared memory is allowed (R4).
        unsafe { &(*self.header.as_ptr()).visible_head }
    }

    /// The consumer's count, `tail`, in shared memory.
    fn tail_word(&self) -> &AtomicU64 {
        // SAFETY: as in `head_word`.
        unsafe { &(*self.header.as_ptr()).tail }
    }

    /// The producer's published count, `visible_head`, for a test to store into (feature
    /// `fault-injection`): a store breaks the protocol, which the consumer reports as a
    /// [`RingError`] naming the producer.
    #[cfg(feature = "fault-injection")]
    pub fn visible_head(&self) -> &AtomicU64 {
        self.head_word()
    }

    /// The consumer's count, `tail`, for a test to store into (feature `fault-injection`), like
    /// [`visible_head`](Self::visible_head).
    #[cfg(feature = "fault-injection")]
    pub fn tail(&self) -> &AtomicU64 {
        self.tail_word()
    }

    /// Number of descriptors in the ring now: published and not yet consumed.
    ///
    /// A snapshot for the inspector and for statistics; both sides may move while it is taken.
    /// If the consumer keeps moving so fast that no consistent snapshot is found in a few
    /// tries, the answer is the capacity.
    ///
    /// # Errors
    ///
    /// [`RingError::TailWentBackwards`] or [`RingError::HeadPastCapacity`] if the indices break
    /// the protocol.
    pub fn len(&self) -> Result<u32, RingError> {
        for _ in 0..4 {
            // PROTOCOL.md §4: Acquire pairs with the consumer's Release store of tail, so the head read next
            // is at least the head the consumer had seen (a smaller one is a fault).
            let tail = self.tail_word().load(Ordering::Acquire);
            // PROTOCOL.md §4: Acquire, pairs with the producer's Release store of visible_head.
            let head = self.head_word().load(Ordering::Acquire);
            // PROTOCOL.md §4: re-read to tell a moving consumer from a corrupt head.
            let tail_again = self.tail_word().load(Ordering::Acquire);
            if tail_again < tail {
                return Err(RingError::TailWentBackwards {
                    tail: tail_again,
                    previous: tail,
                });
            }
            if let Some(depth) = self.depth(head, tail) {
                // At most the capacity: fits in a u32.
                return Ok(depth as u32);
            }
            if tail_again == tail {
                // The tail did not move while the head was read: the head itself is too far.
                return Err(RingError::HeadPastCapacity {
                    head,
                    tail,
                    capacity: self.capacity,
                });
            }
        }
        Ok(self.capacity)
    }

    /// Whether the ring is empty now; a snapshot, like [`len`](Self::len).
    ///
    /// # Errors
    ///
    /// As [`len`](Self::len).
    pub fn is_empty(&self) -> Result<bool, RingError> {
        Ok(self.len()? == 0)
    }

    /// Copies out the descriptors published and not yet consumed, oldest first (those below the
    /// head, then the stamped ones after it): the scan of a dead peer's rings that comes
    /// before their [`reset`](Self::reset) (R10).
    ///
    /// Only meaningful when the producer is not pushing (it is dead or stopped) and no consumer
    /// is popping. It is safe to call at any time all the same: each descriptor is copied with
    /// atomic loads, so a producer or consumer running meanwhile, in this process or another,
    /// can only make a copy stale or torn, never a data race. The descriptors are copies of
    /// unchecked data: check every field before use (R3).
    ///
    /// # Errors
    ///
    /// As [`len`](Self::len), when the indices break the protocol.
    pub fn pending(&self) -> Result<Vec<MsgDescHot>, RingError> {
        // PROTOCOL.md §4: Acquire, as in `len`.
        let tail = self.tail_word().load(Ordering::Acquire);
        // PROTOCOL.md §4: Acquire: the descriptors up to head are visible.
        let head = self.head_word().load(Ordering::Acquire);
        let depth = self.depth(head, tail).ok_or(RingError::HeadPastCapacity {
            head,
            tail,
            capacity: self.capacity,
        })?;
        // Each `tail + k` is an index `published_depth` looked at, so none overflows.
        Ok((0..depth).map(|k| self.copy_slot(tail + k)).collect())
    }

    /// Sets both indices to 0 and clears every slot's stamp: an empty ring, as at creation. For
    /// the host's recovery of a dead peer (R10), after the scan with [`pending`](Self::pending).
    ///
    /// Only valid when neither side is in use: no [`Producer`] or [`Consumer`] of this ring
    /// exists in any process, or the ones that exist are never used again. A handle that is used
    /// after a reset sees indices that went backwards and reports a [`RingError`]; memory safety
    /// does not depend on it.
    pub fn reset(&self) {
        // A stamp of the old indices would publish a stale descriptor to the new ones: clear
        // every stamp word first (0 is no index's stamp: its `payload_slot` is 0, not the
        // inline mark).
        for index in 0..u64::from(self.capacity) {
            self.store_stamp(index, 0, Ordering::Relaxed);
        }
        // PROTOCOL.md §4: Release, so new handles that read the zeros with Acquire start after the reset.
        self.tail_word().store(0, Ordering::Release);
        // PROTOCOL.md §4: Release, as above.
        self.head_word().store(0, Ordering::Release);
    }

    /// [`reset`](Self::reset)s the ring and returns its producer handle, starting at 0 whatever
    /// the indices in shared memory say by then: another process that still writes them after
    /// the reset (a peer evicted but alive, R10) makes a later push report a [`RingError`],
    /// never the making of the handle fail.
    ///
    /// # Safety
    ///
    /// As [`producer`](Self::producer), and as [`reset`](Self::reset): no other handle of this
    /// ring is used after the reset.
    pub unsafe fn reset_producer(&self) -> Producer {
        self.reset();
        Producer {
            ring: self.clone(),
            head: 0,
            cached_tail: 0,
        }
    }

    /// [`reset`](Self::reset)s the ring and returns its consumer handle, starting at 0: the
    /// consuming side of [`reset_producer`](Self::reset_producer).
    ///
    /// # Safety
    ///
    /// As [`consumer`](Self::consumer), and as [`reset`](Self::reset).
    pub unsafe fn reset_consumer(&self) -> Consumer {
        self.reset();
        Consumer {
            ring: self.clone(),
            tail: 0,
            cached_head: 0,
            head_seen: 0,
        }
    }

    /// The producer handle of this ring, starting from the indices in shared memory: at creation
    /// or after a [`reset`](Self::reset), or after a handle that pushed no inline descriptor
    /// since its last slot descriptor (the head in shared memory does not count those, see
    /// [`published`](Self::published)).
    ///
    /// # Errors
    ///
    /// [`RingError::TailPastHead`] or [`RingError::HeadPastCapacity`] if the indices break the
    /// protocol.
    ///
    /// # Safety
    ///
    /// No other [`Producer`] of this ring exists, in this or any other process, while the
    /// returned one exists (single producer, PROTOCOL.md §4): two producers would write the same
    /// slot at once.
    pub unsafe fn producer(&self) -> Result<Producer, RingError> {
        // PROTOCOL.md §4: Acquire: the consumer's reads of the slots it freed happen before our writes.
        let tail = self.tail_word().load(Ordering::Acquire);
        // PROTOCOL.md §4: our own published count, from a previous handle of ours or the reset.
        let head = self.head_word().load(Ordering::Acquire);
        self.check_indices(head, tail)?;
        Ok(Producer {
            ring: self.clone(),
            head,
            cached_tail: tail,
        })
    }

    /// The consumer handle of this ring, starting from the indices in shared memory: at creation
    /// or after a [`reset`](Self::reset), when nothing was taken yet (a consumer's tail passes
    /// the head when it takes inline descriptors by their stamps, PROTOCOL.md §4).
    ///
    /// # Errors
    ///
    /// [`RingError::TailPastHead`] or [`RingError::HeadPastCapacity`] if the indices break the
    /// protocol.
    ///
    /// # Safety
    ///
    /// No other [`Consumer`] of this ring exists, in this or any other process, while the
    /// returned one exists (single consumer, PROTOCOL.md §4).
    pub unsafe fn consumer(&self) -> Result<Consumer, RingError> {
        // PROTOCOL.md §4: Acquire, pairs with the previous consumer's Release (or the reset).
        let tail = self.tail_word().load(Ordering::Acquire);
        // PROTOCOL.md §4: Acquire, pairs with the producer's Release store of visible_head.
        let head = self.head_word().load(Ordering::Acquire);
        self.check_indices(head, tail)?;
        Ok(Consumer {
            ring: self.clone(),
            tail,
            cached_head: head,
            head_seen: head,
        })
    }

    fn check_indices(&self, head: u64, tail: u64) -> Result<(), RingError> {
        if tail > head {
            return Err(RingError::TailPastHead { tail, head });
        }
        if head - tail > u64::from(self.capacity) {
            return Err(RingError::HeadPastCapacity {
                head,
                tail,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Pointer to the slot of `index`, always inside the ring.
    fn slot_ptr(&self, index: u64) -> *mut MsgDescHot {
        // `index & mask` < capacity, which fits a usize on the 64-bit targets the hub supports.
        let slot = (index & self.mask) as usize;
        // SAFETY: slot < capacity, and the contract of `new` says `capacity` descriptors follow
        // the header, so the offset stays inside them.
        unsafe { self.slots.as_ptr().add(slot) }
    }

    /// Copies `desc` into the slot of `index`.
    ///
    /// # Safety
    ///
    /// The caller is the ring's only producer and the consumer does not read this slot now (it
    /// is not published, and the consumer is done with its previous content).
    #[inline(always)]
    unsafe fn write_slot(&self, index: u64, desc: &MsgDescHot) {
        let stamp = if desc.payload_slot == INLINE_PAYLOAD_SLOT {
            stamp_word(index)
        } else {
            word_of(&desc.payload_slot, &desc.payload_generation)
        };
        let slot = self.slot_ptr(index);
        let write = || store_desc(slot, desc);
        #[cfg(loom)]
        self.cells[(index & self.mask) as usize].with_mut(|_| write());
        #[cfg(not(loom))]
        write();
        // PROTOCOL.md §4: Release, last: a consumer's Acquire load of the stamp sees the rest.
        self.store_stamp(index, stamp, Ordering::Release);
    }

    /// Stores the stamp word of the slot of `index` with `order`.
    #[inline(always)]
    fn store_stamp(&self, index: u64, word: u64, order: Ordering) {
        let at = self.slot_ptr(index).cast::<u64>().wrapping_add(STAMP_WORD);
        // SAFETY: as in `load_stamp`.
        #[cfg(not(loom))]
        unsafe { AtomicU64::from_ptr(at) }.store(word, order);
        #[cfg(loom)]
        {
            // SAFETY: as in `load_stamp`; the real word, for the copies, and loom's, for the
            // ordering.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(at) }
                .store(word, std::sync::atomic::Ordering::Relaxed);
            self.stamps[(index & self.mask) as usize].store(word, order);
        }
    }

    /// Copies the descriptor out of the slot of `index`.
    ///
    /// # Safety
    ///
    /// The slot is published (below the head read with Acquire) and the producer does not write
    /// it now (it is not consumed yet, or the producer is stopped).
    unsafe fn read_slot(&self, index: u64, out: &mut MsgDescHot) {
        #[cfg(loom)]
        self.cells[(index & self.mask) as usize]
            .with(|_| load_desc_into(self.slot_ptr(index), out));
        #[cfg(not(loom))]
        load_desc_into(self.slot_ptr(index), out);
    }

    /// Copies the descriptor out of the slot of `index`, whoever is writing it: a stale or
    /// torn copy at worst, never a data race (every load is atomic). Under loom it is not
    /// tracked as an access of the slot, for the same reason.
    fn copy_slot(&self, index: u64) -> MsgDescHot {
        load_desc(self.slot_ptr(index))
    }
}

/// `u64` words in a descriptor: 64 bytes, no padding (8 + 8 * 4 + 8 + 16 bytes of fields).
const DESC_WORDS: usize = size_of::<MsgDescHot>() / 8;
const _: () = {
    use std::mem::offset_of;
    assert!(size_of::<MsgDescHot>() == 64 && align_of::<MsgDescHot>() >= 8);
    // The fields in the order `store_desc` puts them in words, with no padding.
    assert!(offset_of!(MsgDescHot, msg_id) == 0);
    assert!(offset_of!(MsgDescHot, channel_id) == 8 && offset_of!(MsgDescHot, method_id) == 12);
    assert!(offset_of!(MsgDescHot, payload_slot) == 16);
    assert!(offset_of!(MsgDescHot, payload_generation) == 20);
    assert!(offset_of!(MsgDescHot, payload_offset) == 24);
    assert!(offset_of!(MsgDescHot, payload_len) == 28);
    assert!(offset_of!(MsgDescHot, flags) == 32 && offset_of!(MsgDescHot, credit_grant) == 36);
    assert!(offset_of!(MsgDescHot, deadline_ns) == 40);
    assert!(offset_of!(MsgDescHot, inline_payload) == 48);
};

/// Copy the descriptor at `slot` (a slot of a ring, see [`RawRing::slot_ptr`]) out, one relaxed
/// atomic load per word.
fn load_desc(slot: *mut MsgDescHot) -> MsgDescHot {
    let mut out = MsgDescHot::empty();
    load_desc_into(slot, &mut out);
    out
}

/// [`load_desc`] into `out`, in place: the caller reads the fields where the words were
/// written, which moving a copy through the stack would not (the processor forwards a word it
/// just stored to a narrower load of it, but not to a load that straddles two stores).
fn load_desc_into(slot: *mut MsgDescHot, out: &mut MsgDescHot) {
    let dst = ptr::from_mut(out).cast::<u64>();
    let src = slot.cast::<u64>();
    for i in 0..DESC_WORDS {
        // SAFETY: `slot` is a slot of the ring (made by `slot_ptr`), inside the mapping for the
        // view's life and 64-aligned (the header is 64-aligned and 192 bytes long, descriptors
        // are 64 bytes), so word `i < 8` of it is in bounds and 8-aligned; no Rust reference to
        // it exists (R4) and every access to it is atomic, so the load races with nothing.
        let mut word = unsafe { std::sync::atomic::AtomicU64::from_ptr(src.add(i)) }
            .load(std::sync::atomic::Ordering::Relaxed);
        if i == STAMP_WORD {
            word = unstamp(word);
        }
        // SAFETY: `out` is a `MsgDescHot` of `DESC_WORDS` words, 64-aligned; every bit pattern
        // is a valid one (integers and bytes only).
        unsafe { dst.add(i).write(word) };
    }
}

/// Copy `desc` into the slot at `slot`, one relaxed atomic store per word, all but the word of
/// `payload_slot` and `payload_generation` ([`STAMP_WORD`]), which the caller stores last.
///
/// The words are put together from `desc`'s fields, each read at its own width, not read from
/// `desc` as words: a sender builds its descriptor field by field (the payload's length and
/// slot after the rest), and a word load that straddles two narrower stores cannot be
/// forwarded from them, so it waits for them to reach the cache (a stall on every push that
/// `perf annotate` of an in-process round trip showed). A field load is always inside the one
/// store that wrote it (a sender's inline payload is two words already: `link::inline_payload`).
/// The loads of the `u32` fields are volatile only so that the compiler keeps them apart: it
/// would merge each pair back into the one word load this avoids.
#[inline(always)]
fn store_desc(slot: *mut MsgDescHot, desc: &MsgDescHot) {
    let inline = |half: usize| {
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(&desc.inline_payload[8 * half..8 * half + 8]);
        u64::from_ne_bytes(bytes)
    };
    let words: [u64; DESC_WORDS] = [
        desc.msg_id,
        word_of(&desc.channel_id, &desc.method_id),
        0, // the stamp word: `RawRing::write_slot` stores it last
        word_of(&desc.payload_offset, &desc.payload_len),
        word_of(&desc.flags, &desc.credit_grant),
        desc.deadline_ns,
        inline(0),
        inline(1),
    ];
    let dst = slot.cast::<u64>();
    for (i, word) in words.into_iter().enumerate() {
        // The stamp word goes last, with Release (`RawRing::write_slot`).
        if i == STAMP_WORD {
            continue;
        }
        // SAFETY: as in `load_desc`: `slot` is a 64-aligned slot of the ring inside the mapping,
        // so word `i < DESC_WORDS` of it is in bounds and 8-aligned; no Rust reference to it
        // exists (R4) and it is only ever accessed atomically.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(dst.add(i)) }
            .store(word, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The stamp word `word` as a copy gives it: an inline descriptor's generation 0 (its stamp is
/// the ring's), a slot descriptor's unchanged. Done on the word, before it is stored into the
/// copy: a 4-byte store of the generation into the copy would stall a later load of the copy
/// that spans it (the processor cannot forward a narrower store to a wider load).
#[inline(always)]
fn unstamp(word: u64) -> u64 {
    let bytes = word.to_ne_bytes();
    // `payload_slot`, at the lower address (see `word_of`).
    if bytes[..4] == INLINE_PAYLOAD_SLOT.to_ne_bytes() {
        let mut inline = [0_u8; 8];
        inline[..4].copy_from_slice(&bytes[..4]);
        u64::from_ne_bytes(inline)
    } else {
        word
    }
}

/// How many descriptors a ring holds published and not taken, from its counts and its slots'
/// stamps (PROTOCOL.md §4): those from `tail` up to `head`, then the run of stamped ones past
/// both, at most `capacity` in all; `None` when `head` is more than `capacity` past `tail`.
/// `stamped(index)` says whether the slot of `index` holds that index's stamp (for a ring in
/// memory, or in a copy of its bytes).
///
/// Counts come from shared memory, so they may be anything: the look stops at `u64::MAX`
/// rather than wrap.
pub(crate) fn published_depth<E>(
    head: u64,
    tail: u64,
    capacity: u32,
    mut stamped: impl FnMut(u64) -> Result<bool, E>,
) -> Result<Option<u64>, E> {
    let capacity = u64::from(capacity);
    // A tail past the head took inline descriptors by their stamps.
    let below_head = head.saturating_sub(tail);
    if below_head > capacity {
        return Ok(None);
    }
    let from = head.max(tail);
    let mut depth = below_head;
    while depth < capacity {
        match from.checked_add(depth - below_head) {
            Some(index) if stamped(index)? => depth += 1,
            _ => break,
        }
    }
    Ok(Some(depth))
}

/// The descriptor's word of `payload_slot` and `payload_generation`: the one the producer
/// writes last, with Release ([`RawRing::write_slot`]).
const STAMP_WORD: usize = 2;

/// The stamp word of the inline descriptor of ring index `index`: `payload_slot` is
/// `INLINE_PAYLOAD_SLOT`, `payload_generation` the low 32 bits of `index + 1` (PROTOCOL.md §4).
/// Two indices a lap apart never share it (the capacity is below 2^32). A cleared slot's 0 is
/// no stamp (its `payload_slot` is 0); a slot still holding `MsgDescHot::empty()` (a
/// [`HeapRing`] at creation) holds the stamp of the indices `2^32 - 1` modulo 2^32 only, long
/// after every slot was written.
#[inline(always)]
pub(crate) fn stamp_word(index: u64) -> u64 {
    let generation = (index as u32).wrapping_add(1);
    // The word as memory holds it, `payload_slot` at the lower address (see `word_of`).
    let mut bytes = [0_u8; 8];
    bytes[..4].copy_from_slice(&INLINE_PAYLOAD_SLOT.to_ne_bytes());
    bytes[4..].copy_from_slice(&generation.to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

/// The descriptor word holding two adjacent `u32` fields, `first` at the lower address: the
/// word a load of those 8 bytes of the struct would give, from two loads of 4 (see
/// [`store_desc`]).
#[inline(always)]
fn word_of(first: &u32, second: &u32) -> u64 {
    // SAFETY: both are references, so valid, aligned and initialised for a read of a `u32`.
    let (first, second) = unsafe { (ptr::read_volatile(first), ptr::read_volatile(second)) };
    let mut bytes = [0_u8; 8];
    bytes[..4].copy_from_slice(&first.to_ne_bytes());
    bytes[4..].copy_from_slice(&second.to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

/// The producing side of a ring: pushes descriptors.
///
/// Made by [`RawRing::producer`] or [`HeapRing::split`]. It keeps its own head privately (the only
/// writer of `visible_head`) and a cached copy of the consumer's tail, reloaded only when the ring
/// looks full.
#[derive(Debug)]
pub struct Producer {
    ring: RawRing,
    /// Descriptors published so far: the value of `visible_head` we last stored.
    head: u64,
    /// The consumer's tail when last read; never more than the real one.
    cached_tail: u64,
}

impl Producer {
    /// Copies `desc` into the ring and publishes it: an inline descriptor by its stamp, a slot
    /// descriptor by the head (PROTOCOL.md §4). An inline descriptor's `payload_generation` is
    /// the ring's: the stamp replaces it.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] if the ring holds `capacity` descriptors. [`PushError::Fault`] if
    /// the consumer's tail, read when the ring looked full, went backwards
    /// ([`RingError::TailWentBackwards`]) or passed our head ([`RingError::TailPastHead`]), or if
    /// our head cannot grow ([`RingError::HeadOverflow`]). Nothing is written then.
    #[inline(always)]
    pub fn try_push(&mut self, desc: &MsgDescHot) -> Result<(), PushError> {
        if !self.has_room()? {
            return Err(PushError::Full);
        }
        let next = self
            .head
            .checked_add(1)
            .ok_or(RingError::HeadOverflow { head: self.head })?;
        // SAFETY: we are the only producer (contract of the constructor); the slot of `head` is
        // not published, and the consumer is done with it since head - tail < capacity.
        unsafe { self.ring.write_slot(self.head, desc) };
        if desc.payload_slot != INLINE_PAYLOAD_SLOT {
            // PROTOCOL.md §4: Release publishes the descriptor written above (and every inline
            // one before it) to the consumer's Acquire load. An inline one published itself.
            self.ring.head_word().store(next, Ordering::Release);
        }
        self.head = next;
        Ok(())
    }

    /// Whether a push would find room now. Reloads the consumer's tail only when the cached
    /// one says the ring is full, like [`try_push`](Self::try_push), whose checks it shares: a
    /// sender that must do something before it publishes (mark a slot in flight) asks this
    /// first, and then its push cannot fail with [`PushError::Full`].
    ///
    /// # Errors
    /// As [`try_push`](Self::try_push), except `Full`.
    pub fn has_room(&mut self) -> Result<bool, RingError> {
        let capacity = u64::from(self.ring.capacity);
        // Invariant: cached_tail <= head and head - cached_tail <= capacity.
        if self.head - self.cached_tail >= capacity {
            // PROTOCOL.md §4: Acquire pairs with the consumer's Release store of tail: its copies out of the
            // slots it freed happen before we overwrite them.
            let tail = self.ring.tail_word().load(Ordering::Acquire);
            if tail < self.cached_tail {
                return Err(RingError::TailWentBackwards {
                    tail,
                    previous: self.cached_tail,
                });
            }
            if tail > self.head {
                return Err(RingError::TailPastHead {
                    tail,
                    head: self.head,
                });
            }
            self.cached_tail = tail;
            if self.head - tail >= capacity {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Descriptors published by this side so far (its private head).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The ring this handle pushes into.
    pub fn ring(&self) -> &RawRing {
        &self.ring
    }
}

/// The consuming side of a ring: pops descriptors.
///
/// Made by [`RawRing::consumer`] or [`HeapRing::split`]. It keeps its own tail privately (the only
/// writer of `tail`) and a cached copy of the producer's head, reloaded only when the ring looks
/// empty and the next slot holds no stamp (PROTOCOL.md §4).
#[derive(Debug)]
pub struct Consumer {
    ring: RawRing,
    /// Descriptors consumed so far: the value of `tail` we last stored.
    tail: u64,
    /// Published up to here, by the head read last or a stamp; tail <= cached_head <=
    /// tail + capacity.
    cached_head: u64,
    /// The head read last (and checked): the next must not be smaller.
    head_seen: u64,
}

impl Consumer {
    /// Copies the oldest descriptor out of the ring, or returns `None` if it is empty.
    ///
    /// The copy is made before the slot is handed back to the producer, so the result is never
    /// torn by a later push. Its fields are unchecked data from the producer (R3). An inline
    /// descriptor comes out with `payload_generation` 0: its stamp is the ring's.
    ///
    /// # Errors
    ///
    /// If the producer's head, read once when the ring looked empty and the next slot held no
    /// stamp, went backwards ([`RingError::HeadWentBackwards`]), moved and stayed at or behind
    /// our tail ([`RingError::HeadNotPastTail`]), or is more than `capacity` ahead of our tail
    /// ([`RingError::HeadPastCapacity`]). Nothing is consumed then, and every later call that
    /// reads the head fails the same way until it is sane again.
    pub fn try_pop(&mut self) -> Result<Option<MsgDescHot>, RingError> {
        let mut desc = MsgDescHot::empty();
        Ok(self.try_pop_into(&mut desc)?.then_some(desc))
    }

    /// [`try_pop`](Self::try_pop) into `out`: `true` when a descriptor was copied there,
    /// `false` (and `out` untouched) when the ring is empty. The hot path's form: the
    /// descriptor is written once, where the caller reads it.
    ///
    /// # Errors
    /// As [`try_pop`](Self::try_pop).
    #[inline]
    pub fn try_pop_into(&mut self, out: &mut MsgDescHot) -> Result<bool, RingError> {
        if self.tail == self.cached_head {
            // PROTOCOL.md §4: Acquire pairs with the producer's Release store of the stamp word: a
            // stamped descriptor is fully written, and the head is not read at all.
            let stamped =
                self.ring.load_stamp(self.tail, Ordering::Acquire) == stamp_word(self.tail);
            // A tail of u64::MAX takes nothing more (a forged one: the counts never get there).
            if let (true, Some(next)) = (stamped, self.tail.checked_add(1)) {
                self.cached_head = next;
            } else if !self.load_head()? {
                return Ok(false);
            }
        }
        // SAFETY: tail < cached_head, a head read with Acquire or a stamp read with Acquire, so
        // the slot is published; the producer does not overwrite it until we store a tail past
        // it below.
        unsafe { self.ring.read_slot(self.tail, out) };
        // tail < cached_head <= u64::MAX, so this cannot overflow.
        self.tail += 1;
        // PROTOCOL.md §4: Release: our copy of the slot happens before the producer's Acquire load of this
        // tail, and so before it overwrites the slot.
        self.ring.tail_word().store(self.tail, Ordering::Release);
        Ok(true)
    }

    /// Reads and checks the producer's head, when the slot of the tail holds no stamp: whether
    /// it published descriptors past the tail (then `cached_head` is that head).
    #[inline]
    fn load_head(&mut self) -> Result<bool, RingError> {
        // PROTOCOL.md §4: Acquire pairs with the producer's Release store: the descriptors below this
        // head are fully written before we copy them.
        let head = self.ring.head_word().load(Ordering::Acquire);
        if head < self.head_seen {
            return Err(RingError::HeadWentBackwards {
                head,
                previous: self.head_seen,
            });
        }
        if head.saturating_sub(self.tail) > u64::from(self.ring.capacity) {
            return Err(RingError::HeadPastCapacity {
                head,
                tail: self.tail,
                capacity: self.ring.capacity,
            });
        }
        if head <= self.tail {
            // A head behind the tail is not a fault (the tail took stamped descriptors past
            // it), but one that moved there is: it moves after a slot descriptor, which we take
            // only by a head past it.
            if head != self.head_seen {
                return Err(RingError::HeadNotPastTail {
                    head,
                    tail: self.tail,
                });
            }
            return Ok(false);
        }
        self.head_seen = head;
        self.cached_head = head;
        Ok(true)
    }

    /// Whether this handle holds descriptors it knows are published and has not popped yet
    /// (its cached head is past its tail): a pop would take one without reading the head.
    pub fn has_cached(&self) -> bool {
        self.tail != self.cached_head
    }

    /// Descriptors consumed by this side so far (its private tail).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// The producer's head as this handle last read it (and checked it): a look without the
    /// handle that finds the head moved from it must take the handle, which checks the move.
    pub fn head_seen(&self) -> u64 {
        self.head_seen
    }

    /// The ring this handle pops from.
    pub fn ring(&self) -> &RawRing {
        &self.ring
    }
}

/// The heap allocation behind a [`HeapRing`].
struct HeapBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain memory owned by this value; access goes through `RawRing`, which
// is Send and Sync under its own contract.
unsafe impl Send for HeapBuffer {}
// SAFETY: as above; `HeapBuffer` itself offers no access.
unsafe impl Sync for HeapBuffer {}

impl Drop for HeapBuffer {
    fn drop(&mut self) {
        // SAFETY: the header was written with `ptr::write` in `HeapRing::new` and is dropped once
        // here (under loom its atomics need their destructor); the descriptors need none.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr().cast::<DescRingHeader>()) };
        // SAFETY: allocated in `HeapRing::new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A ring in private heap memory, laid out exactly like one in a segment: for tests, benchmarks
/// and loom models.
///
/// The allocation lives as long as any view or handle made from it.
pub struct HeapRing {
    ring: RawRing,
}

impl std::fmt::Debug for HeapRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapRing")
            .field("ring", &self.ring)
            .finish()
    }
}

impl HeapRing {
    /// An empty ring of `capacity` descriptors, built with constructors and `ptr::write` (so it
    /// also works with loom's atomics).
    ///
    /// # Errors
    ///
    /// [`RingError::InvalidCapacity`] if `capacity` is zero or not a power of two.
    pub fn new(capacity: u32) -> Result<Self, RingError> {
        if capacity == 0 || !capacity.is_power_of_two() {
            return Err(RingError::InvalidCapacity { capacity });
        }
        let size = size_of::<DescRingHeader>() + capacity as usize * size_of::<MsgDescHot>();
        let layout = Layout::from_size_align(size, 64)
            .map_err(|_| RingError::InvalidCapacity { capacity })?;
        // SAFETY: the layout has a non-zero size (the header alone is non-empty).
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout);
        };
        let header = ptr.cast::<DescRingHeader>();
        // SAFETY: the allocation is 64-aligned and large enough for the header and `capacity`
        // descriptors; each is written once, as a whole value, before any read.
        unsafe {
            header.write(DescRingHeader::new(capacity));
            let slots = header.add(1).cast::<MsgDescHot>();
            for i in 0..capacity as usize {
                slots.add(i).write(MsgDescHot::empty());
            }
        }
        let owner = Arc::new(HeapBuffer { ptr, layout });
        // SAFETY: the header and descriptors were initialised above, the memory lives as long
        // as `owner`, which every view and handle keeps alive, and no reference to it exists.
        let mut ring = unsafe { RawRing::new(header, capacity) }?;
        ring._owner = Some(owner);
        Ok(Self { ring })
    }

    /// A view of the ring, for `len`, `pending` and `reset`. The view keeps the allocation alive.
    pub fn ring(&self) -> &RawRing {
        &self.ring
    }

    /// The ring's only producer and consumer. Consuming the `HeapRing` makes a second pair
    /// impossible without `unsafe`.
    pub fn split(self) -> (Producer, Consumer) {
        (
            Producer {
                ring: self.ring.clone(),
                head: 0,
                cached_tail: 0,
            },
            Consumer {
                ring: self.ring,
                tail: 0,
                cached_head: 0,
                head_seen: 0,
            },
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn desc(seq: u64) -> MsgDescHot {
        MsgDescHot {
            msg_id: seq,
            channel_id: seq as u32,
            inline_payload: [seq as u8; 16],
            ..MsgDescHot::empty()
        }
    }

    /// A slot descriptor (published by the head, not a stamp): slot reference `seq`.
    fn slot_desc(seq: u64) -> MsgDescHot {
        MsgDescHot {
            payload_slot: seq as u32,
            payload_generation: 1,
            ..desc(seq)
        }
    }

    proptest::proptest! {
        /// Every field travels bit for bit: the push puts words together from the fields
        /// (`store_desc`), the pop copies words out.
        #[test]
        fn every_field_survives_a_push_and_a_pop(
            msg_id: u64,
            channel_id: u32,
            method_id: u32,
            payload_slot: u32,
            payload_generation: u32,
            payload_offset: u32,
            payload_len: u32,
            flags: u32,
            credit_grant: u32,
            deadline_ns: u64,
            inline_payload: [u8; 16],
        ) {
            let sent = MsgDescHot {
                msg_id,
                channel_id,
                method_id,
                payload_slot,
                payload_generation,
                payload_offset,
                payload_len,
                flags,
                credit_grant,
                deadline_ns,
                inline_payload,
            };
            let (mut producer, mut consumer) = HeapRing::new(4).unwrap().split();
            producer.try_push(&sent).unwrap();
            let mut received = MsgDescHot::empty();
            proptest::prop_assert!(consumer.try_pop_into(&mut received).unwrap());
            proptest::prop_assert_eq!(received, sent);
        }

        /// An inline descriptor's generation is the ring's stamp: every other field travels,
        /// and the pop (or a scan) gives generation 0.
        #[test]
        fn an_inline_descriptor_comes_out_with_generation_zero(
            msg_id: u64,
            payload_generation: u32,
            payload_len: u32,
            inline_payload: [u8; 16],
            pushes in 1_u64..20,
        ) {
            let sent = MsgDescHot {
                msg_id,
                payload_generation,
                payload_len,
                inline_payload,
                ..MsgDescHot::empty()
            };
            let expected = MsgDescHot { payload_generation: 0, ..sent };
            let heap = HeapRing::new(4).unwrap();
            let ring = heap.ring().clone();
            let (mut producer, mut consumer) = heap.split();
            for _ in 0..pushes {
                producer.try_push(&sent).unwrap();
                proptest::prop_assert_eq!(ring.pending(), Ok(vec![expected]));
                proptest::prop_assert_eq!(consumer.try_pop(), Ok(Some(expected)));
            }
            proptest::prop_assert_eq!(consumer.try_pop(), Ok(None));
        }
    }

    #[test]
    fn invalid_capacity_is_refused() {
        for capacity in [0, 3, 6, 100] {
            assert_eq!(
                HeapRing::new(capacity).unwrap_err(),
                RingError::InvalidCapacity { capacity }
            );
        }
    }

    #[test]
    fn misaligned_header_is_refused() {
        let heap = HeapRing::new(4).unwrap();
        let ptr = heap.ring().header.as_ptr().cast::<u8>();
        // SAFETY: 8 bytes into the allocation; the constructor refuses it before any access.
        let bad = unsafe { NonNull::new_unchecked(ptr.add(8).cast::<DescRingHeader>()) };
        // SAFETY: the memory is valid for the header and 4 descriptors beyond `ptr`; the call
        // fails before using it.
        let result = unsafe { RawRing::new(bad, 2) };
        assert_eq!(
            result.unwrap_err(),
            RingError::Misaligned {
                address: ptr as usize + 8
            }
        );
    }

    #[test]
    fn empty_then_full_then_empty() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        assert_eq!(consumer.try_pop(), Ok(None));
        assert_eq!(ring.len(), Ok(0));
        for i in 0..4 {
            producer.try_push(&desc(i)).unwrap();
            assert_eq!(ring.len(), Ok(i as u32 + 1));
        }
        assert_eq!(producer.try_push(&desc(99)), Err(PushError::Full));
        for i in 0..4 {
            assert_eq!(consumer.try_pop(), Ok(Some(desc(i))));
        }
        assert_eq!(consumer.try_pop(), Ok(None));
        assert_eq!(ring.is_empty(), Ok(true));
        assert_eq!((producer.head(), consumer.tail()), (4, 4));
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        let heap = HeapRing::new(2).unwrap();
        let (mut producer, mut consumer) = heap.split();
        let mut next_pop = 0;
        for i in 0..100u64 {
            producer.try_push(&desc(i)).unwrap();
            if i % 2 == 1 {
                // Keep the ring full half the time.
                assert_eq!(producer.try_push(&desc(999)), Err(PushError::Full));
                while let Some(d) = consumer.try_pop().unwrap() {
                    assert_eq!(d, desc(next_pop));
                    next_pop += 1;
                }
            }
        }
        assert_eq!(next_pop, 100);
        // Inline descriptors publish themselves: the head was never stored.
        assert_eq!(producer.ring().head_word().load(Ordering::Relaxed), 0);
        assert_eq!(consumer.ring().tail_word().load(Ordering::Relaxed), 100);
    }

    /// Inline and slot descriptors mixed: the head is stored for slot descriptors only, and
    /// counts every descriptor up to the last of them; the consumer takes inline ones by their
    /// stamps (its tail passes the head), slot ones by the head, all in order.
    #[test]
    fn inline_and_slot_descriptors_mixed_arrive_in_order() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        let sent = |i: u64| if i % 3 == 2 { slot_desc(i) } else { desc(i) };
        let mut last_slot = 0;
        for i in 0..50_u64 {
            producer.try_push(&sent(i)).unwrap();
            if i % 3 == 2 {
                last_slot = i + 1;
            }
            assert_eq!(ring.head_word().load(Ordering::Relaxed), last_slot);
            assert_eq!(ring.len(), Ok(1));
            assert_eq!(consumer.try_pop(), Ok(Some(sent(i))));
            assert_eq!(ring.tail_word().load(Ordering::Relaxed), i + 1);
            assert_eq!(ring.len(), Ok(0));
            assert_eq!(consumer.try_pop(), Ok(None));
        }
        // Batches too: pushed ahead, then taken, by stamp and by head alike.
        for i in 50..54 {
            producer.try_push(&sent(i)).unwrap();
        }
        assert_eq!(ring.len(), Ok(4));
        assert_eq!(ring.pending(), Ok((50..54).map(sent).collect()));
        for i in 50..54 {
            assert_eq!(consumer.try_pop(), Ok(Some(sent(i))));
        }
        assert_eq!(consumer.try_pop(), Ok(None));
    }

    /// A head that moves but not past the tail (the stamped descriptors taken) is the
    /// producer's fault: a head moves after a slot descriptor, which is taken only by a head
    /// past it. One that does not move, behind the tail, is an empty ring.
    #[test]
    fn a_head_that_moves_behind_the_tail_is_a_fault() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        for i in 0..2 {
            producer.try_push(&desc(i)).unwrap();
            assert_eq!(consumer.try_pop(), Ok(Some(desc(i))));
        }
        assert_eq!((consumer.tail(), consumer.head_seen()), (2, 0));
        assert_eq!(consumer.try_pop(), Ok(None));
        for head in [1, 2] {
            ring.head_word().store(head, Ordering::Release);
            let err = consumer.try_pop().unwrap_err();
            assert_eq!(err, RingError::HeadNotPastTail { head, tail: 2 });
            assert_eq!(err.culprit(), Some(RingSide::Producer));
        }
        // Back where it was: nothing to take, no fault.
        ring.head_word().store(0, Ordering::Release);
        assert_eq!(consumer.try_pop(), Ok(None));
        // A slot descriptor moves it past the tail.
        producer.try_push(&slot_desc(2)).unwrap();
        assert_eq!(consumer.try_pop(), Ok(Some(slot_desc(2))));
        assert_eq!(consumer.head_seen(), 3);
    }

    /// A tail at the end of the counts takes nothing, even when its slot holds the stamp of
    /// its index (a fresh `HeapRing`'s empty descriptors hold the stamp of every index
    /// `2^32 - 1 (mod 2^32)`, u64::MAX among them): it cannot move on.
    #[test]
    fn a_tail_at_the_end_of_the_counts_takes_nothing() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        drop(heap.split());
        ring.head_word().store(u64::MAX, Ordering::Relaxed);
        ring.tail_word().store(u64::MAX, Ordering::Relaxed);
        assert!(ring.stamped(u64::MAX));
        // The looks at the whole ring count it, and stop there, never wrap.
        assert_eq!(ring.len(), Ok(1));
        assert_eq!(ring.pending(), Ok(vec![MsgDescHot::empty()]));
        // SAFETY: the split handles were dropped; this is the only consumer.
        let mut consumer = unsafe { ring.consumer() }.unwrap();
        assert_eq!(consumer.try_pop(), Ok(None));
        assert_eq!(consumer.tail(), u64::MAX);
    }

    /// A stamp of another index, a lap earlier or of a cleared slot, publishes nothing.
    #[test]
    fn only_the_stamp_of_the_tail_publishes() {
        let heap = HeapRing::new(2).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        producer.try_push(&desc(0)).unwrap();
        producer.try_push(&desc(1)).unwrap();
        assert_eq!(consumer.try_pop(), Ok(Some(desc(0))));
        assert_eq!(consumer.try_pop(), Ok(Some(desc(1))));
        // Slots 0 and 1 hold the stamps of indices 0 and 1; the tail is 2.
        assert!(!ring.stamped(2) && !ring.stamped(3));
        assert_eq!(consumer.try_pop(), Ok(None));
        producer.try_push(&desc(2)).unwrap();
        assert!(ring.stamped(2));
        assert_eq!(consumer.try_pop(), Ok(Some(desc(2))));
        // After a reset, no old stamp is a new index's.
        drop((producer, consumer));
        ring.reset();
        assert!((0..2).all(|index| !ring.stamped(index)));
        assert_eq!(ring.len(), Ok(0));
    }

    #[test]
    fn producer_reloads_tail_only_when_full() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, _consumer) = heap.split();
        // Garbage in the tail is not looked at while the ring has room...
        ring.tail_word().store(u64::MAX, Ordering::Relaxed);
        for i in 0..4 {
            producer.try_push(&desc(i)).unwrap();
        }
        // ...and is caught when the producer needs it.
        assert_eq!(
            producer.try_push(&desc(4)),
            Err(PushError::Fault(RingError::TailPastHead {
                tail: u64::MAX,
                head: 4
            }))
        );
    }

    #[test]
    fn consumer_reports_head_past_capacity() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (_producer, mut consumer) = heap.split();
        ring.head_word().store(5, Ordering::Release);
        let err = consumer.try_pop().unwrap_err();
        assert_eq!(
            err,
            RingError::HeadPastCapacity {
                head: 5,
                tail: 0,
                capacity: 4
            }
        );
        assert_eq!(err.culprit(), Some(RingSide::Producer));
        // The error sticks; nothing was consumed.
        assert_eq!(consumer.try_pop(), Err(err));
        assert_eq!(consumer.tail(), 0);
        ring.head_word().store(u64::MAX, Ordering::Release);
        assert!(matches!(
            consumer.try_pop(),
            Err(RingError::HeadPastCapacity { head: u64::MAX, .. })
        ));
    }

    #[test]
    fn consumer_reports_head_went_backwards() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        for i in 0..3 {
            producer.try_push(&slot_desc(i)).unwrap();
        }
        assert_eq!(consumer.try_pop(), Ok(Some(slot_desc(0))));
        // The consumer saw head 3; it drains 1 and 2 from its cache without reloading.
        ring.head_word().store(1, Ordering::Release);
        assert_eq!(consumer.try_pop(), Ok(Some(slot_desc(1))));
        assert_eq!(consumer.try_pop(), Ok(Some(slot_desc(2))));
        assert_eq!(
            consumer.try_pop(),
            Err(RingError::HeadWentBackwards {
                head: 1,
                previous: 3
            })
        );
    }

    #[test]
    fn producer_reports_tail_went_backwards_and_past_head() {
        let heap = HeapRing::new(2).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        for i in 0..2 {
            producer.try_push(&slot_desc(i)).unwrap();
        }
        assert_eq!(consumer.try_pop(), Ok(Some(slot_desc(0))));
        producer.try_push(&slot_desc(2)).unwrap(); // reloads tail = 1
        assert_eq!(consumer.try_pop(), Ok(Some(slot_desc(1))));
        ring.tail_word().store(0, Ordering::Release);
        let err = producer.try_push(&slot_desc(3)).unwrap_err();
        assert_eq!(
            err,
            PushError::Fault(RingError::TailWentBackwards {
                tail: 0,
                previous: 1
            })
        );
        let PushError::Fault(fault) = err else {
            unreachable!()
        };
        assert_eq!(fault.culprit(), Some(RingSide::Consumer));
        ring.tail_word().store(7, Ordering::Release);
        assert_eq!(
            producer.try_push(&slot_desc(3)),
            Err(PushError::Fault(RingError::TailPastHead {
                tail: 7,
                head: 3
            }))
        );
        // Nothing was published by the failed pushes.
        assert_eq!(ring.head_word().load(Ordering::Relaxed), 3);
    }

    #[test]
    fn handles_check_the_indices_they_start_from() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        ring.head_word().store(10, Ordering::Relaxed);
        ring.tail_word().store(2, Ordering::Relaxed);
        // SAFETY: no other producer or consumer of this ring exists (`heap` is not split).
        let (p, c) = unsafe { (ring.producer(), ring.consumer()) };
        let expected = RingError::HeadPastCapacity {
            head: 10,
            tail: 2,
            capacity: 4,
        };
        assert_eq!(p.unwrap_err(), expected);
        assert_eq!(c.unwrap_err(), expected);
        ring.tail_word().store(11, Ordering::Relaxed);
        // SAFETY: as above.
        let (p, c) = unsafe { (ring.producer(), ring.consumer()) };
        let expected = RingError::TailPastHead { tail: 11, head: 10 };
        assert_eq!(p.unwrap_err(), expected);
        // A new consumer's tail is never past the head: it has taken nothing yet.
        assert_eq!(c.unwrap_err(), expected);
        // A sane state: the handles resume from it.
        ring.tail_word().store(8, Ordering::Relaxed);
        // SAFETY: as above; each handle is dropped at the end of the block.
        let (mut p, mut c) = unsafe { (ring.producer().unwrap(), ring.consumer().unwrap()) };
        assert_eq!(ring.len(), Ok(2));
        p.try_push(&desc(10)).unwrap();
        p.try_push(&desc(11)).unwrap();
        assert_eq!(p.try_push(&desc(12)), Err(PushError::Full));
        for _ in 0..2 {
            // Slots 8 and 9 hold the empty descriptors of creation.
            assert_eq!(c.try_pop(), Ok(Some(MsgDescHot::empty())));
        }
        assert_eq!(c.try_pop(), Ok(Some(desc(10))));
        assert_eq!(c.try_pop(), Ok(Some(desc(11))));
        assert_eq!(c.try_pop(), Ok(None));
        drop(heap);
    }

    #[test]
    fn len_reports_faults() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring();
        // A tail past the head is not a fault: it took stamped descriptors.
        ring.head_word().store(3, Ordering::Relaxed);
        ring.tail_word().store(5, Ordering::Relaxed);
        assert_eq!(ring.len(), Ok(0));
        assert_eq!(ring.pending(), Ok(vec![]));
        ring.head_word().store(100, Ordering::Relaxed);
        assert_eq!(
            ring.len(),
            Err(RingError::HeadPastCapacity {
                head: 100,
                tail: 5,
                capacity: 4
            })
        );
        assert!(ring.pending().is_err());
    }

    #[test]
    fn pending_then_reset() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        for i in 0..6 {
            if i >= 4 {
                consumer.try_pop().unwrap();
            }
            producer.try_push(&desc(i)).unwrap();
        }
        assert_eq!(ring.pending(), Ok((2..6).map(desc).collect()));
        drop((producer, consumer));
        ring.reset();
        assert_eq!(ring.len(), Ok(0));
        assert_eq!(ring.pending(), Ok(vec![]));
        // SAFETY: the previous handles were dropped; these are the only ones.
        let (mut p, mut c) = unsafe { (ring.producer().unwrap(), ring.consumer().unwrap()) };
        assert_eq!(c.try_pop(), Ok(None));
        p.try_push(&desc(42)).unwrap();
        assert_eq!(c.try_pop(), Ok(Some(desc(42))));
    }

    #[test]
    fn reset_handles_start_at_zero_whatever_the_indices_say() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        drop(heap.split());
        ring.head_word().store(u64::MAX - 3, Ordering::Relaxed);
        ring.tail_word().store(7, Ordering::Relaxed);
        // SAFETY: the split handles were dropped; these are the only ones.
        let (mut p, mut c) = unsafe { (ring.reset_producer(), ring.reset_consumer()) };
        assert_eq!((p.head(), c.tail(), ring.len()), (0, 0, Ok(0)));
        p.try_push(&desc(1)).unwrap();
        assert_eq!(c.try_pop(), Ok(Some(desc(1))));
        // A writer that still scribbles after the reset: the next use reports it.
        ring.head_word().store(1000, Ordering::Relaxed);
        assert_eq!(
            c.try_pop(),
            Err(RingError::HeadPastCapacity {
                head: 1000,
                tail: 1,
                capacity: 4
            })
        );
    }

    #[test]
    fn a_stale_handle_after_reset_reports_instead_of_misbehaving() {
        let heap = HeapRing::new(4).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, mut consumer) = heap.split();
        for i in 0..3 {
            producer.try_push(&slot_desc(i)).unwrap();
        }
        for _ in 0..3 {
            consumer.try_pop().unwrap();
        }
        ring.reset();
        assert_eq!(
            consumer.try_pop(),
            Err(RingError::HeadWentBackwards {
                head: 0,
                previous: 3
            })
        );
    }

    #[test]
    fn head_overflow_is_an_error_not_a_panic() {
        let heap = HeapRing::new(2).unwrap();
        let ring = heap.ring().clone();
        ring.head_word().store(u64::MAX, Ordering::Relaxed);
        ring.tail_word().store(u64::MAX - 1, Ordering::Relaxed);
        // SAFETY: `heap` is not split; this is the only producer.
        let mut producer = unsafe { ring.producer() }.unwrap();
        assert_eq!(
            producer.try_push(&desc(0)),
            Err(PushError::Fault(RingError::HeadOverflow { head: u64::MAX }))
        );
    }

    #[test]
    fn views_keep_the_allocation_alive() {
        let heap = HeapRing::new(2).unwrap();
        let ring = heap.ring().clone();
        let (mut producer, consumer) = heap.split();
        drop(consumer);
        producer.try_push(&desc(1)).unwrap();
        drop(producer);
        assert_eq!(ring.pending(), Ok(vec![desc(1)]));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    fn desc(seq: u64) -> MsgDescHot {
        MsgDescHot {
            msg_id: seq,
            payload_len: seq as u32,
            ..MsgDescHot::empty()
        }
    }

    /// Pop `count` descriptors, yielding while the ring is empty: each must be the next in
    /// order.
    fn receive_in_order(consumer: &mut Consumer, count: u64) {
        let mut got = 0;
        while got < count {
            match consumer.try_pop().unwrap() {
                Some(d) => {
                    assert_eq!(d, desc(got));
                    got += 1;
                }
                None => thread::yield_now(),
            }
        }
    }

    /// Producer and consumer exchange `sent(0..3)` through a ring of capacity 2 (so the third
    /// wraps around into a slot the consumer freed): every one arrives once, in order, intact,
    /// and loom finds no race on a slot.
    fn exchange_across_a_wrap(sent: fn(u64) -> MsgDescHot) {
        loom::model(move || {
            const COUNT: u64 = 3;
            let (mut producer, mut consumer) = HeapRing::new(2).unwrap().split();
            let sender = thread::spawn(move || {
                for i in 0..COUNT {
                    loop {
                        match producer.try_push(&sent(i)) {
                            Ok(()) => break,
                            Err(PushError::Full) => thread::yield_now(),
                            Err(fault) => panic!("{fault}"),
                        }
                    }
                }
            });
            for i in 0..COUNT {
                loop {
                    match consumer.try_pop().unwrap() {
                        Some(d) => {
                            assert_eq!(d, sent(i));
                            break;
                        }
                        None => thread::yield_now(),
                    }
                }
            }
            sender.join().unwrap();
            assert_eq!(consumer.try_pop().unwrap(), None);
            assert_eq!(consumer.ring().len().unwrap(), 0);
        });
    }

    /// Inline descriptors only: each published by its stamp (Release, the last word), the head
    /// never stored.
    #[test]
    fn exchange_across_wraparound() {
        exchange_across_a_wrap(desc);
    }

    /// Inline, slot, inline: the inline ones published by their stamps, the slot one by the
    /// head, which then also counts the inline one before it. A pop on a stamp is ordered
    /// after the push as well as one on the head.
    #[test]
    fn inline_and_slot_descriptors_across_wraparound() {
        exchange_across_a_wrap(|i| {
            let inline = desc(i);
            if i == 1 {
                MsgDescHot {
                    payload_slot: 5,
                    payload_generation: 9,
                    ..inline
                }
            } else {
                inline
            }
        });
    }

    /// The inspector's `len` runs beside a producer and a consumer and never reports a fault
    /// for a healthy ring.
    #[test]
    fn len_beside_a_healthy_ring() {
        loom::model(|| {
            let heap = HeapRing::new(2).unwrap();
            let ring = heap.ring().clone();
            let (mut producer, mut consumer) = heap.split();
            let sender = thread::spawn(move || {
                producer.try_push(&desc(0)).unwrap();
                producer.try_push(&desc(1)).unwrap();
            });
            let receiver = thread::spawn(move || receive_in_order(&mut consumer, 2));
            let len = ring.len().unwrap();
            assert!(len <= 2);
            sender.join().unwrap();
            receiver.join().unwrap();
        });
    }

    /// `pending`, a safe function, runs beside a producer and a consumer that reuse the slot it
    /// copies (capacity 1: the second push goes into the slot of the first): no data race on
    /// the slot, whatever the interleaving (loom tracks every protocol access of a slot; the
    /// scan's copy is atomic, so it races with none of them). Its result may be stale.
    #[test]
    fn pending_beside_a_running_ring_is_no_race() {
        loom::model(|| {
            let heap = HeapRing::new(1).unwrap();
            let ring = heap.ring().clone();
            let (mut producer, mut consumer) = heap.split();
            let sender = thread::spawn(move || {
                for i in 0..2 {
                    while producer.try_push(&desc(i)) == Err(PushError::Full) {
                        thread::yield_now();
                    }
                }
            });
            let receiver = thread::spawn(move || receive_in_order(&mut consumer, 2));
            if let Ok(pending) = ring.pending() {
                assert!(pending.len() <= 1);
            }
            sender.join().unwrap();
            receiver.join().unwrap();
        });
    }
}
