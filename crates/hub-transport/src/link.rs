//! One end of a ring pair, the same code for the host and for a peer: frames out through one
//! ring, frames in through the other, payloads inline or in slots, waits on futex words.
//!
//! The host's end of peer `i` pushes into ring `2i + 1` and pops from ring `2i`; the peer's end
//! does the opposite. Nothing else differs: [`Link`] is built with the two rings and the two
//! doorbell words, and [`Endpoint`] holds what both ends share (the segment and an allocator
//! handle owning as this participant).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use hub_alloc::{OwnerId, ReclaimReport, Refusal, SlabError, SlotHandle};
use hub_layout::{INLINE_PAYLOAD_SIZE, INLINE_PAYLOAD_SLOT, MsgDescHot, PeerEntry};

use crate::error::{
    Disconnect, LoanError, RecvError, RecvTimeoutError, SendCopyError, SendError, SendTimeoutError,
    TryLoanError, TrySendCopyError,
};
use crate::frame::{
    DescriptorFault, Endpoint, FilledSlot, Frame, FrameMeta, FramePayload, HubSlab, InlineBytes,
    Loan, LoanStorage, PeerId,
};
use crate::futex;
use crate::ready::EventFd;
use crate::recovery::{reclaim_settled, recover_rings};
use crate::ring::{Consumer, Producer, PushError, RawRing, RingError};
use crate::segment::pad::{READY_HOST, READY_PEER};
use crate::segment::{PeerState, Segment};
use crate::signal::{Doorbell, Limit, PendingWake, WaitError, WaitMode, wait_any_after_ring};
use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, lock};
use hub_alloc::lock::{TurnGuard, TurnLock};

/// When a blocking call gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deadline {
    /// Do not wait (`try_*`).
    Now,
    /// Wait as long as it takes.
    Never,
    /// Wait until then (`*_timeout`).
    At(Instant),
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Deadline::Never, Deadline::At)
    }

    fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Now => Some(Instant::now()),
            Deadline::Never => None,
            Deadline::At(at) => Some(at),
        }
    }

    fn passed(self) -> bool {
        match self {
            Deadline::Now => true,
            Deadline::Never => false,
            Deadline::At(at) => Instant::now() >= at,
        }
    }

    /// How long one sleep may last: at most `cap`, at most until the deadline.
    fn slice(self, cap: Duration) -> Duration {
        match self {
            Deadline::At(at) => at.saturating_duration_since(Instant::now()).min(cap),
            _ => cap,
        }
    }
}

/// The loans of an endpoint: they wait as the caller's deadline allows, and fail with the
/// transport's errors.
impl Endpoint {
    /// A slot of at least `len` bytes, waiting for one as `deadline` allows (R11: an empty
    /// class blocks and wakes when a slot is freed). [`TryLoanError::NoFreeSlots`] when the
    /// deadline passes (`Deadline::Now`: at once) with the class still empty.
    pub(crate) fn alloc(
        &self,
        len: usize,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
    ) -> Result<SlotHandle, TryLoanError> {
        let backoff = Backoff::new();
        loop {
            let class = match self.slab.alloc(len) {
                Ok(handle) => {
                    self.wake_after_growth();
                    return Ok(handle);
                }
                Err(SlabError::NoFreeSlots { class }) => class,
                Err(error) => return Err(error.into()),
            };
            if deadline.passed() {
                return Err(TryLoanError::NoFreeSlots { class });
            }
            if let Some(disconnect) = gone() {
                return Err(LoanError::Disconnected(disconnect).into());
            }
            if self.mode() == WaitMode::Spin
                || (self.mode() == WaitMode::Adaptive && !backoff.is_completed())
            {
                backoff.snooze();
                continue;
            }
            // R11: announce, re-check, then sleep on the value announced. A free in a larger
            // class does not ring this class's word, so sleeps are capped and the loop polls.
            let (Some(word), Some(seen)) = (
                self.slab.slot_available_word(class),
                self.slab.announce_waiter(class),
            ) else {
                // The class the allocator named has no word to wait on: it cannot wait.
                return Err(LoanError::Alloc(SlabError::NoFreeSlots { class }).into());
            };
            if self.slab.has_free_slot(class) {
                continue;
            }
            // PROTOCOL.md, kept slots: none withheld while this side sleeps (this class's
            // would have been taken above; the others' go back).
            self.give_back_kept();
            futex::wait(word, seen, Some(deadline.slice(Duration::from_millis(20))))
                .map_err(LoanError::Futex)?;
        }
    }

    /// A buffer of `len` bytes to fill and send: inline when it fits a descriptor, else a slot,
    /// waiting for one as `deadline` allows ([`TryLoanError::NoFreeSlots`] when it passes).
    pub fn loan(
        self: &Arc<Self>,
        len: usize,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
    ) -> Result<Loan, TryLoanError> {
        if len <= INLINE_PAYLOAD_SIZE {
            return Ok(Loan {
                len,
                storage: LoanStorage::Inline(InlineBytes::default()),
            });
        }
        let handle = self.alloc(len, deadline, gone)?;
        let ptr = match self.slab.slot_data(handle) {
            Ok(ptr) => ptr,
            Err(error) => {
                // Ours, and no loan holds it yet: it goes back here, or never.
                self.free(handle);
                return Err(LoanError::Alloc(error).into());
            }
        };
        Ok(Loan {
            len,
            storage: LoanStorage::Slot {
                endpoint: Arc::clone(self),
                handle,
                ptr,
            },
        })
    }
}

/// Where a send puts the wake of its ring when the caller will wait next (the send of a
/// request before its reply): `None` rings at once; `Some(slot)` leaves the `FUTEX_WAKE` in
/// `slot` for the caller's next wait to make with its own sleep, in one system call (see
/// [`PendingWake`]). A descriptor of a side that sleeps on one is written at once either way.
pub(crate) type Defer<'d, 'e> = Option<&'d mut Option<PendingWake<'e>>>;

/// A payload of at most [`INLINE_PAYLOAD_SIZE`] bytes as a descriptor carries it: at the
/// start, zeros after it. Built as two 8-byte words from loads of the payload that may overlap
/// (not by a `memcpy` of a length known only at run time, which cost more than the rest of
/// building the descriptor), so that the descriptor's copy into the ring, which loads it by
/// words, reads each word from the one store that wrote it (see `ring::store_desc`).
#[inline(always)]
fn inline_payload(from: &[u8]) -> [u8; INLINE_PAYLOAD_SIZE] {
    const WORD: usize = 8;
    const _: () = assert!(INLINE_PAYLOAD_SIZE == 2 * WORD);
    // The little-endian value of `from`'s `N` bytes at `at`.
    fn le<const N: usize>(from: &[u8], at: usize) -> u64 {
        let mut bytes = [0_u8; WORD];
        bytes[..N].copy_from_slice(&from[at..at + N]);
        u64::from_le_bytes(bytes)
    }
    let len = from.len();
    let (low, high) = if len >= WORD {
        // The last 8 bytes, shifted down past the ones the first word holds (all of them,
        // when the payload is one word long).
        let last = le::<WORD>(from, len - WORD);
        let high = last.checked_shr(8 * (2 * WORD - len) as u32).unwrap_or(0);
        (le::<WORD>(from, 0), high)
    } else if len >= 4 {
        // Two loads of 4 that overlap; the bytes both hold are the same.
        (
            le::<4>(from, 0) | le::<4>(from, len - 4) << (8 * (len - 4)),
            0,
        )
    } else {
        let low = from
            .iter()
            .enumerate()
            .fold(0, |word, (i, &byte)| word | u64::from(byte) << (8 * i));
        (low, 0)
    };
    let mut payload = [0_u8; INLINE_PAYLOAD_SIZE];
    payload[..WORD].copy_from_slice(&low.to_le_bytes());
    payload[WORD..].copy_from_slice(&high.to_le_bytes());
    payload
}

/// How a send that waits for room ends when the frame did not go.
enum Retry<T> {
    /// The deadline passed with the ring full: what was to be sent comes back.
    Timeout(T),
    /// The send failed.
    Failed(SendError),
}

impl<T> Retry<T> {
    /// The same end, without the value (a copy's filled slot is dropped, which frees it).
    fn forget(self) -> Retry<()> {
        match self {
            Retry::Timeout(_) => Retry::Timeout(()),
            Retry::Failed(error) => Retry::Failed(error),
        }
    }
}

/// One end of a peer's ring pair.
pub(crate) struct Link {
    /// The peer whose rings these are.
    pub peer: u16,
    /// Who frees what this end sends (R6).
    pub receiver: OwnerId,
    /// This end as an owner: what it receives is in flight to it.
    pub me: OwnerId,
    /// The ring handles, each behind a [`TurnLock`] (one compare-and-swap to take, a store to
    /// release), which has no poisoning: a panic while a handle was held leaves its private
    /// indices as they were at the last completed push or pop, which is consistent.
    producer: TurnLock<Producer>,
    consumer: TurnLock<Consumer>,
    /// A view of the ring this end pops from, to look at its head without the consumer's lock.
    in_ring: RawRing,
    /// The consumer's tail after its last pop, private to this process: a receive that finds
    /// no stamp in the slot it names and the head where `seen` says it was has nothing to pop
    /// and takes no lock (a poll of an empty ring, the common case of a spin and of the host's
    /// look at every peer, costs two loads of lines that do not change). Reset with the rings
    /// (R10).
    taken: AtomicU64,
    /// The producer's head as the consumer last read it, private to this process like `taken`:
    /// a look that finds the head moved from it takes the lock, and the pop checks the move
    /// (a head that went back, or moved and stayed behind the tail, is a fault, R3).
    seen: AtomicU64,
    /// Whether the consumer holds descriptors it read as published and has not popped: then
    /// the look above is skipped, so that a producer that moves its head back to the tail
    /// meanwhile is still caught by the pop's checks (R3), not mistaken for an empty ring.
    cached: AtomicBool,
    /// Where the entry's words this end uses lie in the segment, found once: a hot path reaches
    /// each with a bounds check and an addition.
    words: EntryWords,
    /// The bit of the entry's `READY_WAITERS` word that says the other end sleeps on its
    /// readiness descriptor.
    their_ready: u32,
    /// The bit this end sets there when it sleeps on its own.
    my_ready: u32,
    /// The other end's readiness descriptor, if this end has it: written when a push finds
    /// it asleep on it. Locked only then, and when a new life of the entry replaces it.
    notify: Mutex<Option<Arc<EventFd>>>,
    /// The life of the entry this end serves: this process's own copy of its epoch (the
    /// host's counter, or the ticket's on a peer), never read from the segment (R4).
    life: AtomicU64,
}

/// The offsets in the segment of the words of a peer entry that a link uses (see
/// [`Segment::word32`]).
struct EntryWords {
    /// The bell rung after a push; the other end waits on it.
    out_bell: usize,
    /// The bell the other end rings; this end waits on it.
    in_bell: usize,
    /// `in_bell`'s offset inside `PeerEntry`.
    in_bell_field: usize,
    /// The entry's `READY_WAITERS` word.
    ready: usize,
    /// The entry's state (`flags`).
    flags: usize,
    /// The entry's `epoch`.
    epoch: usize,
}

/// Which of a peer entry's two futex words.
pub(crate) const SEND_BELL: usize = 0;
/// See [`SEND_BELL`].
pub(crate) const RECV_BELL: usize = 1;

impl Link {
    /// The end that pushes into ring `out` and pops from ring `into`, ringing bell `out_bell`
    /// and waiting on `in_bell` ([`SEND_BELL`] or [`RECV_BELL`] of `peer`'s entry).
    ///
    /// # Safety
    /// This end is the only producer of ring `out` and the only consumer of ring `into`, in
    /// every process, while the link exists.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn new(
        segment: &Segment,
        peer: u16,
        me: OwnerId,
        receiver: OwnerId,
        out: usize,
        into: usize,
        out_bell: usize,
        in_bell: usize,
    ) -> Result<Self, RingError> {
        let out_ring = segment.ring(out)?;
        let in_ring = segment.ring(into)?;
        // SAFETY: the caller's contract: single producer of `out`, single consumer of `into`.
        let (producer, consumer) = unsafe { (out_ring.producer()?, in_ring.consumer()?) };
        let taken = AtomicU64::new(consumer.tail());
        let seen = AtomicU64::new(consumer.head_seen());
        let cached = AtomicBool::new(consumer.has_cached());
        let (their_ready, my_ready) = if out_bell == RECV_BELL {
            (READY_PEER, READY_HOST)
        } else {
            (READY_HOST, READY_PEER)
        };
        let bell_field = |which| {
            if which == SEND_BELL {
                core::mem::offset_of!(PeerEntry, send_data_futex)
            } else {
                core::mem::offset_of!(PeerEntry, recv_data_futex)
            }
        };
        let words = EntryWords {
            out_bell: segment.peer_field(peer, bell_field(out_bell)),
            in_bell: segment.peer_field(peer, bell_field(in_bell)),
            in_bell_field: bell_field(in_bell),
            ready: segment.peer_field(peer, crate::segment::pad::READY_WAITERS),
            flags: segment.peer_field(peer, core::mem::offset_of!(PeerEntry, flags)),
            epoch: segment.peer_field(peer, core::mem::offset_of!(PeerEntry, epoch)),
        };
        Ok(Self {
            peer,
            receiver,
            me,
            producer: TurnLock::new(producer),
            consumer: TurnLock::new(consumer),
            in_ring,
            taken,
            seen,
            cached,
            words,
            their_ready,
            my_ready,
            notify: Mutex::new(None),
            life: AtomicU64::new(0),
        })
    }

    /// The life of the entry this end serves from now on.
    pub fn set_life(&self, epoch: u64) {
        // Relaxed: read under the producer lock by sends (`gone`) and taken with the rings'
        // reset, which holds both locks.
        self.life.store(epoch, Ordering::Relaxed);
    }

    /// The id of the life this end serves.
    pub fn id(&self) -> PeerId {
        PeerId::new(self.peer, self.life.load(Ordering::Relaxed))
    }

    /// The other end's readiness descriptor, from now on (a new life of the entry).
    pub fn set_notify(&self, fd: Option<Arc<EventFd>>) {
        *lock(&self.notify) = fd;
    }

    /// The entry's word in which each end says it sleeps on a readiness descriptor.
    fn ready_word<'s>(&self, segment: &'s Segment) -> &'s AtomicU32 {
        segment.word32(self.words.ready)
    }

    /// The state of the entry, read once (Acquire, as [`Segment::peer_state`]).
    #[inline]
    pub fn peer_state(&self, segment: &Segment) -> PeerState {
        PeerState::from_flags(segment.word32(self.words.flags).load(Ordering::Acquire))
    }

    /// The entry's epoch as the segment says, read once (Acquire: what the host published
    /// with a new life comes with it). A word any peer can write: only a peer compares it
    /// with its own, to learn that it was evicted.
    #[inline]
    pub fn shared_epoch(&self, segment: &Segment) -> u64 {
        segment.word64(self.words.epoch).load(Ordering::Acquire)
    }

    /// Announce that this end is about to sleep on its readiness descriptor (R11): its bit in
    /// the entry's ready word, then the waiter bit of its bell. The caller looks at the ring
    /// once more before it sleeps.
    pub fn arm(&self, segment: &Segment) {
        Doorbell::new(self.in_bell(segment)).arm(self.ready_word(segment), self.my_ready);
    }

    /// Whether the peer of this entry said it has no descriptor of the host's (and so needs
    /// the host's bridge thread): a hint any peer can write, costing at most a thread.
    pub fn is_bridged(&self, segment: &Segment) -> bool {
        // R11: a hint; the bridge thread re-reads it every round.
        self.ready_word(segment).load(Ordering::Relaxed) & crate::segment::pad::READY_BRIDGED != 0
    }

    /// R11 after a push: when the other end announced a sleep, ring its bell
    /// ([`wake_out`](Self::wake_out)). Inlined into every push: while the other end is busy,
    /// the fence and the look are all it costs.
    #[inline(always)]
    fn ring_out<'s>(&self, segment: &'s Segment, defer: Defer<'_, 's>) {
        let bell = Doorbell::new(segment.word32(self.words.out_bell));
        if bell.waiter_announced() {
            self.wake_out(segment, bell, defer);
        }
    }

    /// [`ring_out`](Self::ring_out) once the other end announced a sleep: bump its `bell`,
    /// wake its futex (now, or into `defer` for the caller's next wait to make) and, when it
    /// sleeps on a descriptor, write that. Out of line and cold: a busy receiver never gets
    /// here, and a sleeping one costs a system call, beside which this call is nothing.
    #[cold]
    #[inline(never)]
    fn wake_out<'s>(&self, segment: &'s Segment, bell: Doorbell<'s>, defer: Defer<'_, 's>) {
        // R11: looks again (a second fence) and takes the announcement.
        let pending = bell.ring_ready_deferred(self.ready_word(segment), self.their_ready, || {
            if let Some(fd) = &*lock(&self.notify) {
                fd.notify();
            }
        });
        match (defer, pending) {
            // A wake already pending (an earlier frame of this call) is made now.
            (Some(slot), Some(pending)) => drop(slot.replace(pending)),
            // No waiter, or none to defer for: nothing pending, or the wake made now.
            (_, pending) => drop(pending),
        }
    }

    /// The word this end waits on.
    pub fn in_bell<'s>(&self, segment: &'s Segment) -> &'s AtomicU32 {
        segment.word32(self.words.in_bell)
    }

    /// The peer entry's field this end waits on (a `PeerEntry` offset).
    pub fn in_bell_field(&self) -> usize {
        self.words.in_bell_field
    }

    /// Reset both rings and rebuild both handles over them, starting at 0 (R10), under `held`,
    /// the locks [`lock_both`](Self::lock_both) took before the rings were scanned: a push or
    /// pop between the reset and the new handles would find the indices gone backwards and
    /// blame the peer. The new handles do not read the indices back: a process that still
    /// writes them after the reset (evicted, but alive) cannot make this fail, only a later
    /// push or pop report its ring as corrupted.
    ///
    /// # Safety
    /// As [`new`](Self::new).
    pub unsafe fn reset(
        &self,
        segment: &Segment,
        out: usize,
        into: usize,
        held: &mut (TurnGuard<'_, Producer>, TurnGuard<'_, Consumer>),
    ) -> Result<(), RingError> {
        let out_ring = segment.ring(out)?;
        let in_ring = segment.ring(into)?;
        debug_assert!(
            in_ring.is_same_ring(&self.in_ring),
            "the ring this end pops from, which its lockless look reads"
        );
        // SAFETY: the caller's contract; the old handles are replaced under their locks, and
        // are never used again.
        unsafe {
            *held.0 = out_ring.reset_producer();
            *held.1 = in_ring.reset_consumer();
        }
        // Under the consumer's lock, like every store of them: a look without the lock that
        // compares the new life's head with the old head seen finds them different and takes
        // the lock, which waits for this.
        self.taken.store(held.1.tail(), Ordering::Relaxed);
        self.seen.store(held.1.head_seen(), Ordering::Relaxed);
        self.cached.store(held.1.has_cached(), Ordering::Relaxed);
        Ok(())
    }

    /// Hold both sides (to stop using the rings while they are scanned and reset, R10).
    pub fn lock_both(&self) -> (TurnGuard<'_, Producer>, TurnGuard<'_, Consumer>) {
        (self.producer.lock(), self.consumer.lock())
    }

    /// R10's recovery of this entry's dead peer, the lock-free part of the host's
    /// `Core::recover_peer` (and what the loom model of it runs): both ends held, so that
    /// nothing is pushed or popped until the rings are reset and the handles rebuilt; both
    /// rings scanned, reset and swept (`recovery::recover_rings`: what the peer sent can never
    /// be read now, and the held consumer keeps a receive from being between pop and claim);
    /// then what the peer held reclaimed until settled (`recovery::reclaim_settled`, `tries`
    /// more looks with `pause` between). Returns the slots the rings' scan and sweep freed,
    /// whether allocators sleep on a class that got one back, and the reclaim's report.
    ///
    /// # Errors
    /// A ring view the segment refuses, as `ring_error` makes it; the allocator's errors.
    ///
    /// # Safety
    /// `self` is the host's link of the entry: the host is the only producer of its receive
    /// ring and the only consumer of its send ring (as [`reset`](Self::reset)).
    pub unsafe fn recover_dead_peer<E: From<SlabError>>(
        &self,
        segment: &Segment,
        slab: &HubSlab,
        tries: usize,
        pause: impl FnMut(),
        ring_error: impl Fn(RingError) -> E,
    ) -> Result<(u32, bool, ReclaimReport), E> {
        let peer = OwnerId::peer(self.peer);
        let (send, recv) = (2 * usize::from(self.peer), 2 * usize::from(self.peer) + 1);
        let mut held = self.lock_both();
        let rings = [(send, peer, OwnerId::HOST), (recv, OwnerId::HOST, peer)].map(
            |(ring, sender, receiver)| {
                let view = segment.ring(ring).map_err(&ring_error)?;
                Ok((view, sender, receiver))
            },
        );
        let (freed, wake) = recover_rings(slab, peer, OwnerId::HOST, rings, || {
            // SAFETY: the caller's contract: the host's link of the entry.
            unsafe { self.reset(segment, recv, send, &mut held) }.map_err(&ring_error)
        })?;
        let reclaimed = reclaim_settled(slab, peer, tries, pause)?;
        drop(held);
        Ok((freed, wake, reclaimed))
    }

    /// One attempt to send a filled loan with `meta`: `Ok(None)` when it went, `Ok(Some(loan))`
    /// when the ring is full (the loan comes back, still this end's). On an error the loan is
    /// dropped, which frees its slot.
    pub fn try_send<'e>(
        &self,
        endpoint: &'e Endpoint,
        meta: FrameMeta,
        loan: Loan,
        gone: &dyn Fn() -> Option<Disconnect>,
        defer: Defer<'_, 'e>,
    ) -> Result<Option<Loan>, SendError> {
        let mut desc = meta.to_desc();
        desc.payload_len = loan.len as u32;
        let slot = match &loan.storage {
            LoanStorage::Inline(bytes) => {
                desc.inline_payload = bytes.0;
                None
            }
            LoanStorage::Slot { handle, .. } => {
                desc.payload_slot = handle.slot_ref();
                desc.payload_generation = handle.generation();
                Some(*handle)
            }
        };
        let mut loan = Some(loan);
        let sent = self.try_push(endpoint, &desc, slot, gone, defer, || {
            if let Some(loan) = loan.take() {
                loan.forget();
            }
        })?;
        Ok(if sent { None } else { loan })
    }

    /// One attempt to push `desc` under the producer's lock: `Ok(true)` when it went,
    /// `Ok(false)` when the ring is full. `slot`, the descriptor's slot if it has one, is
    /// Allocated and this end's: it is marked in flight to the receiver only once room is
    /// certain, so a frame that is not sent is never left in flight (R5). `commit` runs once the
    /// slot is marked (at once for an inline frame): from then on the slot is this call's to
    /// free if the push fails, no longer its loan's.
    #[inline]
    fn try_push<'e>(
        &self,
        endpoint: &'e Endpoint,
        desc: &MsgDescHot,
        slot: Option<SlotHandle>,
        gone: &dyn Fn() -> Option<Disconnect>,
        defer: Defer<'_, 'e>,
        commit: impl FnOnce(),
    ) -> Result<bool, SendError> {
        let ring_error = |source| SendError::Ring {
            peer: self.peer,
            source,
        };
        let mut producer = self.producer.lock();
        // Under the lock: a recovery of the receiver (R10) that this call waited for has made
        // it gone; do not publish into its fresh ring.
        if let Some(disconnect) = gone() {
            return Err(SendError::Disconnected(disconnect));
        }
        if !producer.has_room().map_err(ring_error)? {
            return Ok(false);
        }
        if let Some(handle) = slot {
            // R5: Allocated -> InFlight before the descriptor is published.
            endpoint
                .slab
                .mark_in_flight(handle, self.receiver)
                .map_err(SendError::Alloc)?;
        }
        commit();
        match producer.try_push(desc) {
            Ok(()) => {
                drop(producer);
                // R11: after the Release publication of the head.
                self.ring_out(&endpoint.segment, defer);
                Ok(true)
            }
            Err(error) => {
                if let Some(handle) = slot {
                    endpoint.free(handle);
                }
                match error {
                    PushError::Fault(source) => Err(ring_error(source)),
                    // `has_room` said yes under this lock, from this handle's private indices
                    // alone, and nothing but this push moves them.
                    PushError::Full => unreachable!("a push after has_room found the ring full"),
                }
            }
        }
    }

    /// Send a filled loan with `meta`, waiting for room as `deadline` allows (see
    /// [`try_send`](Self::try_send)). A deadline that passes (`Deadline::Now`: at once, the
    /// ring being full) gives the loan back ([`SendTimeoutError::Timeout`]); on any other
    /// failure the loan is dropped, which frees its slot.
    pub fn send<'e>(
        &self,
        endpoint: &'e Endpoint,
        meta: FrameMeta,
        loan: Loan,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
        defer: Defer<'_, 'e>,
    ) -> Result<(), SendTimeoutError> {
        let attempt = |loan, defer: Defer<'_, 'e>| self.try_send(endpoint, meta, loan, gone, defer);
        match Self::retry(endpoint, loan, deadline, gone, defer, attempt) {
            Ok(()) => Ok(()),
            Err(Retry::Timeout(loan)) => Err(SendTimeoutError::Timeout(loan)),
            Err(Retry::Failed(error)) => Err(SendTimeoutError::Failed(error)),
        }
    }

    /// Run `attempt` on `value` until it goes (`Ok(None)`), fails, or `deadline` passes with the
    /// ring still full (the value comes back). The first attempt is inlined into the caller;
    /// the waiting for room, which only a full ring needs, is not.
    #[inline(always)]
    fn retry<'e, T>(
        endpoint: &'e Endpoint,
        value: T,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
        mut defer: Defer<'_, 'e>,
        mut attempt: impl FnMut(T, Defer<'_, 'e>) -> Result<Option<T>, SendError>,
    ) -> Result<(), Retry<T>> {
        match attempt(value, defer.as_deref_mut()) {
            Ok(None) => Ok(()),
            Ok(Some(back)) => Self::retry_full(endpoint, back, deadline, gone, defer, attempt),
            Err(error) => Err(Retry::Failed(error)),
        }
    }

    /// [`retry`](Self::retry) after an attempt found the ring full.
    #[inline(never)]
    fn retry_full<'e, T>(
        endpoint: &'e Endpoint,
        mut value: T,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
        mut defer: Defer<'_, 'e>,
        mut attempt: impl FnMut(T, Defer<'_, 'e>) -> Result<Option<T>, SendError>,
    ) -> Result<(), Retry<T>> {
        let backoff = Backoff::new();
        let mut nap = Duration::from_micros(50);
        loop {
            if deadline.passed() {
                return Err(Retry::Timeout(value));
            }
            if let Some(disconnect) = gone() {
                return Err(Retry::Failed(SendError::Disconnected(disconnect)));
            }
            // A full ring: the consumer does not ring a bell when it makes room (that would
            // cost every pop a fence), so the producer backs off, then naps, at most 1 ms.
            if endpoint.mode() == WaitMode::Spin || !backoff.is_completed() {
                backoff.snooze();
            } else {
                // PROTOCOL.md, kept slots: none withheld while this side naps.
                endpoint.give_back_kept();
                std::thread::sleep(deadline.slice(nap));
                nap = (nap * 2).min(Duration::from_millis(1));
            }
            match attempt(value, defer.as_deref_mut()) {
                Ok(None) => return Ok(()),
                Ok(Some(back)) => value = back,
                Err(error) => return Err(Retry::Failed(error)),
            }
        }
    }

    /// Copy `payload` into the descriptor or a slot of `endpoint` and send it, within `deadline`
    /// for a slot and for room together: the sends of a copy, the host's and a peer's. A
    /// payload that fits a descriptor goes straight into it; a larger one into a slot filled
    /// and sent from here ([`FilledSlot`]), with no loan.
    /// [`TrySendCopyError::NoFreeSlots`] when the deadline passes (`Deadline::Now`: at once)
    /// with the class empty, [`TrySendCopyError::Full`] when it passes with the ring full.
    /// (The host evicts a peer whose ring the send found broken, R3, when this returns.)
    #[inline]
    pub fn send_copy<'e>(
        &self,
        endpoint: &'e Arc<Endpoint>,
        meta: FrameMeta,
        payload: &[u8],
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
        defer: Defer<'_, 'e>,
    ) -> Result<(), TrySendCopyError> {
        let sent = if payload.len() <= INLINE_PAYLOAD_SIZE {
            let mut desc = meta.to_desc();
            desc.payload_len = payload.len() as u32;
            desc.inline_payload = inline_payload(payload);
            let attempt = |(), defer: Defer<'_, 'e>| {
                let sent = self.try_push(endpoint, &desc, None, gone, defer, || {})?;
                Ok((!sent).then_some(()))
            };
            Self::retry(endpoint, (), deadline, gone, defer, attempt).map_err(Retry::forget)
        } else {
            // No slot for a receiver that is gone (an evicted peer must not allocate at all).
            // An inline frame needs no such look: the push looks, under the producer's lock.
            if let Some(disconnect) = gone() {
                return Err(SendCopyError::Disconnected(disconnect).into());
            }
            // A slot filled here and sent from here needs no loan: no reference count taken and
            // dropped, only a guard that frees the slot unless it goes.
            let handle = endpoint.alloc(payload.len(), deadline, gone)?;
            let filled = FilledSlot::fill(endpoint, handle, payload)
                .map_err(|error| TryLoanError::from(LoanError::Alloc(error)))?;
            let mut desc = meta.to_desc();
            desc.payload_len = payload.len() as u32;
            desc.payload_slot = handle.slot_ref();
            desc.payload_generation = handle.generation();
            let attempt = |filled: FilledSlot<'e>, defer: Defer<'_, 'e>| {
                let mut filled = Some(filled);
                let sent = self.try_push(endpoint, &desc, Some(handle), gone, defer, || {
                    if let Some(filled) = filled.take() {
                        filled.commit();
                    }
                })?;
                Ok(if sent { None } else { filled })
            };
            Self::retry(endpoint, filled, deadline, gone, defer, attempt).map_err(Retry::forget)
        };
        match sent {
            Ok(()) => Ok(()),
            Err(Retry::Timeout(())) => Err(TrySendCopyError::Full),
            Err(Retry::Failed(error)) => Err(SendCopyError::from(error).into()),
        }
    }

    /// Take one frame if there is one (R3: the descriptor is copied out and checked before any
    /// payload is read).
    ///
    /// This, [`try_recv_life`](Self::try_recv_life) and [`check`](Self::check) are inlined
    /// into every receive, so that a frame is built once, where its caller keeps it: moving it
    /// up through calls cost a third of an in-process round trip (a store-forwarding stall per
    /// move), as `latency/in_process` measures.
    #[inline(always)]
    pub fn try_recv(&self, endpoint: &Arc<Endpoint>) -> Result<Option<Frame>, RecvError> {
        self.try_recv_life(endpoint, None)
    }

    /// [`try_recv`](Self::try_recv) from life `epoch` of the entry only, if given: checked
    /// under the consumer's lock, which a new reservation's ring reset takes after it set the
    /// new life (R4), so a frame of the next life never goes to a caller that named this one.
    /// A ring with nothing published is `Ok(None)` before any lock or check, whatever the life
    /// (a caller that must report a life that is over checks it first, as `Host::poll_one`
    /// does).
    #[inline(always)]
    pub fn try_recv_life(
        &self,
        endpoint: &Arc<Endpoint>,
        epoch: Option<u64>,
    ) -> Result<Option<Frame>, RecvError> {
        if !self.looks_nonempty() {
            return Ok(None);
        }
        // The consumer stays locked through the check: a recovery of the sender (R10), which
        // holds this lock while it frees what the sender left in flight, never sees a slot
        // between its pop and the claim of its frame.
        let mut consumer = self.consumer.lock();
        if let Some(epoch) = epoch
            && self.id().epoch() != epoch
        {
            return Err(RecvError::Disconnected(Disconnect::PeerGone {
                peer: PeerId::new(self.peer, epoch),
            }));
        }
        let mut desc = MsgDescHot::empty();
        let popped = consumer
            .try_pop_into(&mut desc)
            .map_err(|source| RecvError::Ring {
                peer: self.peer,
                source,
            })?;
        self.cached.store(consumer.has_cached(), Ordering::Relaxed);
        self.seen.store(consumer.head_seen(), Ordering::Relaxed);
        if !popped {
            return Ok(None);
        }
        self.taken.store(consumer.tail(), Ordering::Relaxed);
        self.check(endpoint, &desc).map(Some)
    }

    /// Whether a receive may find a frame: something was published since this end's last pop
    /// (the next slot holds its stamp, or the head moved), or its consumer holds descriptors it
    /// read as published. A look without the lock, which builds nothing: what waits poll, and
    /// the first step of every receive.
    ///
    /// Only a hint: with two threads receiving at once it may say empty while the other
    /// thread's pop let new frames in (a later look finds them), or say non-empty when the
    /// other thread took the frame. A waiter that sleeps on it loses no wake (R11: the SeqCst
    /// fences of the waiter's announcement and of the publisher's ring order this Relaxed load
    /// after any head stored before the ring's look at the announcement). A frame of a new
    /// life is not missed by a host that reads the entry's state (Acquire) before it looks:
    /// the rings' reset stores the new tail under the lock, before the entry turns Active.
    /// (`Host::poll_any` looks first, to pass idle rings over cheaply; it may miss such a frame
    /// for one poll, and its waits sleep only on `Host::ready_any`, which reads the state first.)
    #[inline(always)]
    pub fn looks_nonempty(&self) -> bool {
        // PROTOCOL.md §4: the next slot's stamp first (an inline frame), then whether the head
        // moved (a slot frame, inline frames of a producer that stores the head for them too,
        // or a head the pop will find at fault). A head behind the tail that did not move means
        // only that the tail took stamped frames past it.
        self.cached.load(Ordering::Relaxed)
            || self.in_ring.stamped(self.taken.load(Ordering::Relaxed))
            || self.in_ring.published() != self.seen.load(Ordering::Relaxed)
    }

    /// [`try_recv`](Self::try_recv), and when it finds nothing, whether the other side is gone
    /// (`gone`): `Ok(None)` when it is not. A side that went after it published a frame
    /// still has that frame delivered, even when it published between this end's look and
    /// `gone`'s: see [`last_frame_or`](Self::last_frame_or).
    #[inline(always)]
    pub fn try_recv_unless_gone(
        &self,
        endpoint: &Arc<Endpoint>,
        gone: &dyn Fn() -> Option<Disconnect>,
    ) -> Result<Option<Frame>, RecvError> {
        if let Some(frame) = self.try_recv(endpoint)? {
            return Ok(Some(frame));
        }
        match gone() {
            None => Ok(None),
            Some(disconnect) => self.last_frame_or(endpoint, disconnect).map(Some),
        }
    }

    /// After `gone` said `disconnect`: the frame the host published before it left, if this
    /// end's last look came before it (the host published, then left, between the look and
    /// `gone`), else the disconnection. A host that left wrote its gone word after its last
    /// publication (Release), and `gone` read it (Acquire), so this look sees every frame it
    /// sent. Only for [`Disconnect::HostGone`]: an end `gone` reports evicted
    /// ([`Disconnect::PeerNotActive`]) pops nothing here, as its ring may be another peer's by
    /// now.
    #[cold]
    fn last_frame_or(
        &self,
        endpoint: &Arc<Endpoint>,
        disconnect: Disconnect,
    ) -> Result<Frame, RecvError> {
        if disconnect == Disconnect::HostGone
            && let Some(frame) = self.try_recv(endpoint)?
        {
            return Ok(frame);
        }
        Err(RecvError::Disconnected(disconnect))
    }

    /// Wait for one frame, after a [`try_recv`](Self::try_recv) found none, as `deadline`
    /// allows, in the endpoint's wait mode (R11): [`RecvTimeoutError::Timeout`] when it passes,
    /// a disconnection when `gone` names one. A wake still `pending` from the caller's send
    /// (see [`Defer`]) goes with the first sleep, in one system call. The wait polls
    /// [`looks_nonempty`](Self::looks_nonempty) and `gone`, which build nothing; the frame is
    /// taken, and built, once they say there may be one.
    pub fn wait_recv(
        &self,
        endpoint: &Arc<Endpoint>,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
        mut pending: Option<PendingWake<'_>>,
    ) -> Result<Frame, RecvTimeoutError> {
        let bell = Doorbell::new(self.in_bell(&endpoint.segment));
        loop {
            // Sleep in slices, so that a gone host or peer is noticed even if nobody rings.
            let limit = Limit::sliced(deadline.instant(), Duration::from_millis(100));
            let ready = || (self.looks_nonempty() || gone().is_some()).then_some(());
            let before_sleep = || endpoint.give_back_kept();
            match wait_any_after_ring(
                std::slice::from_ref(&bell),
                ready,
                limit,
                endpoint.mode(),
                before_sleep,
                pending.take(),
            ) {
                Ok(()) => {
                    // Frames sent before the other side went are still delivered.
                    if let Some(frame) = self.try_recv_unless_gone(endpoint, gone)? {
                        return Ok(frame);
                    }
                    // Another receiver took the frame: wait again, while the deadline lets.
                    if deadline.passed() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                }
                Err(WaitError::TimedOut) => {
                    // A whole slice without a frame (a spinning side never sleeps): idle.
                    endpoint.give_back_kept();
                    if deadline.passed() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    if let Some(disconnect) = gone() {
                        return Ok(self.last_frame_or(endpoint, disconnect)?);
                    }
                }
                Err(WaitError::Futex(error)) => return Err(RecvError::Futex(error).into()),
            }
        }
    }

    /// Check a descriptor copied out of the ring, and make it a frame (R3, R4).
    #[inline(always)]
    pub fn check(&self, endpoint: &Arc<Endpoint>, desc: &MsgDescHot) -> Result<Frame, RecvError> {
        let fault = |fault| RecvError::BadDescriptor {
            peer: self.peer,
            fault,
        };
        let meta = FrameMeta::from_desc(desc);
        if desc.payload_slot == INLINE_PAYLOAD_SLOT {
            if desc.payload_len as usize > INLINE_PAYLOAD_SIZE {
                return Err(fault(DescriptorFault::InlineTooLong {
                    len: desc.payload_len,
                }));
            }
            return Ok(Frame {
                peer: self.id(),
                meta,
                len: desc.payload_len as usize,
                payload: FramePayload::Inline(InlineBytes(desc.inline_payload)),
            });
        }
        let bad_ref = || {
            fault(DescriptorFault::BadSlotRef {
                slot_ref: desc.payload_slot,
            })
        };
        let handle = SlotHandle::from_slot_ref(desc.payload_slot, desc.payload_generation)
            .map_err(|_| bad_ref())?;
        let slot_size = endpoint
            .slab
            .slot_size(handle.class())
            .ok_or_else(bad_ref)?;
        debug_assert_eq!(endpoint.slab.owner(), self.me, "the endpoint of this end");
        // R4, R5: in flight to us at this generation, from this ring's sender (R6: only
        // the slot's sender may hand it over, through its own ring), and claimed in our ledger
        // by compare-and-swap: a slot we hold already (a frame of an earlier descriptor, at
        // any generation, or a loan) is refused and left to its holder.
        endpoint
            .slab
            .accept(handle, self.receiver)
            .map_err(|refusal| {
                fault(match refusal {
                    Refusal::StaleGeneration { slot } => DescriptorFault::StaleGeneration {
                        descriptor: handle.generation(),
                        slot,
                    },
                    Refusal::NotInFlightToMe { state, owner } => {
                        DescriptorFault::NotInFlightToReceiver { state, owner }
                    }
                    Refusal::WrongSender { sender } => DescriptorFault::WrongSender { sender },
                    Refusal::AlreadyHeld => DescriptorFault::AlreadyReceived {
                        slot_ref: desc.payload_slot,
                    },
                    _ => DescriptorFault::BadSlotRef {
                        slot_ref: desc.payload_slot,
                    },
                })
            })?;
        // The slot is ours now (in flight to us, this generation): free it on any later error.
        let end = u64::from(desc.payload_offset) + u64::from(desc.payload_len);
        if end > u64::from(slot_size) {
            endpoint.free(handle);
            return Err(fault(DescriptorFault::OutOfSlot {
                offset: desc.payload_offset,
                len: desc.payload_len,
                slot_size,
            }));
        }
        let base = match endpoint.slab.slot_data(handle) {
            Ok(base) => base,
            Err(_) => {
                endpoint.free(handle);
                return Err(bad_ref());
            }
        };
        // SAFETY: offset + len <= slot_size (checked above), so the pointer stays in the slot.
        let ptr = unsafe { base.add(desc.payload_offset as usize) };
        Ok(Frame {
            peer: self.id(),
            meta,
            len: desc.payload_len as usize,
            payload: FramePayload::Slot {
                endpoint: Arc::clone(endpoint),
                handle,
                ptr,
            },
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Every length a descriptor holds: the payload's bytes at the start, in order, zeros after.
    #[test]
    fn an_inline_payload_is_the_bytes_then_zeros() {
        for len in 0..=INLINE_PAYLOAD_SIZE {
            let from: Vec<u8> = (0xA1..).take(len).collect();
            let payload = inline_payload(&from);
            assert_eq!(&payload[..len], &from[..], "length {len}");
            assert!(
                payload[len..].iter().all(|&b| b == 0),
                "length {len}: {payload:?}"
            );
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    // Loom models of the real `Link`, over a segment on the heap (`Segment::heap`: its words and
    // rings, the allocator apart, over a `HeapRegion`): a peer's end sends, the host's end
    // receives, as `Peer` and `Host` build them.
    //
    // Under loom the allocator's tracked cells make an `Endpoint` neither `Send` nor `Sync`;
    // loom's threads need neither (outside loom both are, which the crate's API relies on).
    #![allow(clippy::arc_with_non_send_sync)]

    use std::sync::Arc;

    use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
    use loom::thread;

    use super::{Deadline, Link, RECV_BELL, SEND_BELL};
    use crate::error::{Disconnect, RecvError, TryLoanError};
    use crate::frame::{Endpoint, FrameMeta};
    use crate::segment::Segment;
    use crate::signal::{Doorbell, WaitMode, wait_any_for};
    use crate::sync::{AtomicBool, Ordering, model};

    const PEER: OwnerId = OwnerId::peer(0);

    /// What the recovery model's steps fail with: a ring's error or the allocator's.
    type Failure = Box<dyn std::error::Error>;

    /// A hub of one peer with rings of two descriptors, and one class of `slots` slots of
    /// 64 bytes: the host's endpoint and link, the peer's endpoint and link.
    struct Hub {
        host: Arc<Endpoint>,
        host_link: Link,
        peer: Arc<Endpoint>,
        peer_link: Link,
    }

    fn hub(slots: u32) -> Hub {
        let segment = Arc::new(Segment::heap(1, 2).expect("layout"));
        let layout = SlabLayout::standalone(
            &[ClassConfig {
                slot_size: 64,
                slots_per_extent: slots,
            }],
            1,
            1,
        )
        .expect("slab layout");
        let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
        // SAFETY: a fresh region nobody else uses yet.
        let host_slab = unsafe { Slab::init(region, layout, OwnerId::HOST) }.expect("init");
        let peer_slab = host_slab.with_owner(PEER).expect("peer handle");
        // SAFETY: each end is the only producer of its out ring and the only consumer of its in
        // ring: the peer pushes into ring 0 and pops from ring 1, the host the opposite.
        let (host_link, peer_link) = unsafe {
            (
                Link::new(&segment, 0, OwnerId::HOST, PEER, 1, 0, RECV_BELL, SEND_BELL),
                Link::new(&segment, 0, PEER, OwnerId::HOST, 0, 1, SEND_BELL, RECV_BELL),
            )
        };
        Hub {
            host: Arc::new(Endpoint::new(Arc::clone(&segment), host_slab)),
            host_link: host_link.expect("host link"),
            peer: Arc::new(Endpoint::new(segment, peer_slab)),
            peer_link: peer_link.expect("peer link"),
        }
    }

    /// Frame `i`'s payload: `len(i)` bytes of value `i`.
    fn len(i: u64) -> usize {
        if i.is_multiple_of(2) { 8 } else { 40 }
    }

    /// Send frame `i` from the peer's end, retrying while the class is empty or the ring full.
    fn send(endpoint: &Arc<Endpoint>, link: &Link, i: u64) {
        let mut loan = loop {
            match endpoint.loan(len(i), Deadline::Now, &|| None) {
                Ok(loan) => break loan,
                Err(TryLoanError::NoFreeSlots { .. }) => thread::yield_now(),
                Err(error) => panic!("loan {i}: {error}"),
            }
        };
        loan.as_mut_slice().fill(i as u8);
        let meta = FrameMeta {
            msg_id: i,
            ..FrameMeta::default()
        };
        while let Some(back) = link
            .try_send(endpoint, meta, loan, &|| None, None)
            .expect("send")
        {
            loan = back;
            thread::yield_now();
        }
    }

    /// The class's slots, after both sides gave back what they keep: every one free, none
    /// allocated or in flight, each on the free list once.
    fn check_all_free(hub: &Hub, total: u32) {
        for endpoint in [&hub.host, &hub.peer] {
            endpoint.slab.give_back_kept().expect("give back");
        }
        let stats = hub.host.slab.stats()[0];
        assert_eq!(
            (stats.free, stats.allocated, stats.in_flight),
            (total, 0, 0),
            "{stats:?}"
        );
        assert_eq!(hub.host.slab.free_list_len(0), Ok(total));
    }

    /// R3, R5, R6, R11 through the real `Link`: the peer sends four frames (inline, in a slot,
    /// inline, in a slot) through a ring of two and a class of one slot, waiting for the host
    /// to make room, and for it to free the first slot before the second loan; the host takes
    /// each once, in order, intact, and frees its slot; no slot is lost.
    #[test]
    fn frames_arrive_once_in_order_and_slots_come_back() {
        model("frames_arrive_once_in_order_and_slots_come_back", || {
            const FRAMES: u64 = 4;
            let hub = Arc::new(hub(1));
            let sender = {
                let hub = Arc::clone(&hub);
                thread::spawn(move || {
                    for i in 0..FRAMES {
                        send(&hub.peer, &hub.peer_link, i);
                    }
                })
            };
            let mut next = 0;
            while next < FRAMES {
                let Some(frame) = hub.host_link.try_recv(&hub.host).expect("recv") else {
                    thread::yield_now();
                    continue;
                };
                assert_eq!(frame.meta().msg_id, next);
                assert_eq!(frame.len(), len(next));
                assert_eq!(
                    frame.is_inline(),
                    len(next) <= hub_layout::INLINE_PAYLOAD_SIZE
                );
                assert!(frame.payload().iter().all(|&b| b == next as u8));
                drop(frame);
                next += 1;
            }
            sender.join().expect("sender");
            assert!(hub.host_link.try_recv(&hub.host).expect("recv").is_none());
            check_all_free(&hub, 1);
        });
    }

    /// R11 through the real `Link`: the host waits in `WaitMode::Block` on its bell with the
    /// receive's own poll (`looks_nonempty`, a look at the ring that takes no lock and reads
    /// the head with no ordering of its own), then takes the frame with `try_recv`, as
    /// `wait_recv` does; the peer sends two inline frames with the real `try_send` (which
    /// rings the bell at once). The host gets both, in order: no wake is lost between the look
    /// and the sleep. (The real `wait_recv` waits in slices of 100 ms, which the futex
    /// emulation would turn into a busy loop: the wait here is the same `wait_any_after_ring`
    /// without the slices.)
    #[test]
    fn a_blocking_receive_is_woken_by_a_send() {
        model("a_blocking_receive_is_woken_by_a_send", || {
            crate::futex::emulation::init();
            let hub = Arc::new(hub(1));
            let sender = {
                let hub = Arc::clone(&hub);
                thread::spawn(move || {
                    for i in 0..2 {
                        send(&hub.peer, &hub.peer_link, 2 * i);
                    }
                })
            };
            let bell = [Doorbell::new(hub.host_link.in_bell(&hub.host.segment))];
            for i in 0..2 {
                let ready = || hub.host_link.looks_nonempty().then_some(());
                wait_any_for(&bell, ready, None, WaitMode::Block)
                    .expect("a wait without a deadline ends with a value");
                // One receiver: what the look saw published is there to take.
                let frame = hub.host_link.try_recv(&hub.host).expect("recv");
                assert_eq!(frame.expect("a frame").meta().msg_id, 2 * i);
            }
            sender.join().expect("sender");
        });
    }

    /// A host that sends a frame and then leaves: the peer's receive gets the frame, then
    /// `HostGone`, never `HostGone` first. The host's leaving is a flag stored (Release) after
    /// its send, as the host-state word is; the peer's receive is the real
    /// `try_recv_unless_gone`, the first step of every receive and the step of every wait
    /// that finds something. It fails when the receive believes `gone` without a last look at
    /// the ring (checked): the host may publish and leave between the look and `gone`.
    #[test]
    fn a_frame_sent_before_the_host_left_comes_before_host_gone() {
        model(
            "a_frame_sent_before_the_host_left_comes_before_host_gone",
            || {
                let hub = Arc::new(hub(1));
                let left = Arc::new(AtomicBool::new(false));
                let host = {
                    let (hub, left) = (Arc::clone(&hub), Arc::clone(&left));
                    thread::spawn(move || {
                        send(&hub.host, &hub.host_link, 0);
                        left.store(true, Ordering::Release);
                    })
                };
                let gone = || left.load(Ordering::Acquire).then_some(Disconnect::HostGone);
                let frame = loop {
                    match hub.peer_link.try_recv_unless_gone(&hub.peer, &gone) {
                        Ok(Some(frame)) => break frame,
                        Ok(None) => thread::yield_now(),
                        Err(error) => panic!("before the frame the host sent: {error}"),
                    }
                };
                assert_eq!(frame.meta().msg_id, 0);
                drop(frame);
                host.join().expect("host");
                match hub.peer_link.try_recv_unless_gone(&hub.peer, &gone) {
                    Err(RecvError::Disconnected(Disconnect::HostGone)) => {}
                    other => panic!("after the frame: {other:?}"),
                }
                check_all_free(&hub, 1);
            },
        );
    }

    /// Two threads receive from one link at once: two frames published before them go one to
    /// each, none twice, none lost. What this checks is the look at the head before the lock,
    /// whose private words (`taken`, `cached`) the other thread's pop changes under it; it
    /// fails if `taken` runs one ahead of the tail (checked). The lock's own exclusion is
    /// `hub_alloc::lock`'s model: loom does not see the consumer handle's plain fields.
    #[test]
    fn two_receivers_take_each_frame_once() {
        model("two_receivers_take_each_frame_once", || {
            let hub = Arc::new(hub(1));
            for i in 0..2 {
                send(&hub.peer, &hub.peer_link, 2 * i);
            }
            let receiver = {
                let hub = Arc::clone(&hub);
                thread::spawn(move || {
                    let frame = hub.host_link.try_recv(&hub.host).expect("recv");
                    frame.map(|frame| frame.meta().msg_id)
                })
            };
            let mine = hub.host_link.try_recv(&hub.host).expect("recv");
            let mine = mine.map(|frame| frame.meta().msg_id);
            let theirs = receiver.join().expect("receiver");
            let mut got = [mine, theirs];
            got.sort();
            assert_eq!(got, [Some(0), Some(2)]);
            assert!(hub.host_link.try_recv(&hub.host).expect("recv").is_none());
        });
    }

    /// R10's recovery through the real host `Link`: `Link::recover_dead_peer`, the very call
    /// `Core::recover_peer` makes (both ends held, `recover_rings` with `Link::reset`, then
    /// `reclaim_settled`), racing a late send of
    /// the dying peer through the real peer `Link`: an inline frame, so that the dead peer makes
    /// no allocator operation during the recovery (which reclaim assumes, see
    /// `recovery::loom_tests`). Before the race each side sent a frame in a slot that the other
    /// did not take. Whatever the interleaving, the recovery frees both slots, and once the id
    /// is reserved again (the rings reset and swept once more, as `reset_rings` and `add_peer`
    /// do) every slot is free, exactly once, and the host's end takes nothing.
    #[test]
    fn recovery_racing_a_late_send_through_the_link() {
        model("recovery_racing_a_late_send_through_the_link", || {
            let hub = Arc::new(hub(2));
            send(&hub.peer, &hub.peer_link, 1);
            send(&hub.host, &hub.host_link, 1);
            let late = {
                let hub = Arc::clone(&hub);
                thread::spawn(move || send(&hub.peer, &hub.peer_link, 2))
            };

            let segment = &hub.host.segment;
            let slab = &hub.host.slab;
            // SAFETY: the host's link of entry 0: the only producer of ring 1 and consumer of
            // ring 0.
            let (freed, _wake, reclaimed) = unsafe {
                hub.host_link.recover_dead_peer(
                    segment,
                    slab,
                    usize::MAX,
                    thread::yield_now,
                    Failure::from,
                )
            }
            .expect("scan, reset, sweep and reclaim");
            assert_eq!(freed, 2, "both frames in flight");
            assert!(!reclaimed.journal_pending);
            late.join().expect("late sender");

            // The id is reserved again: the host resets the rings it wrote into after the
            // recovery, and sweeps what it sent meanwhile.
            let mut held = hub.host_link.lock_both();
            // SAFETY: as above.
            unsafe { hub.host_link.reset(segment, 1, 0, &mut held) }.expect("reset at reuse");
            drop(held);
            slab.reclaim_sent(PEER, OwnerId::HOST)
                .expect("sweep at reuse");
            assert!(hub.host_link.try_recv(&hub.host).expect("recv").is_none());
            check_all_free(&hub, 2);
        });
    }
}
