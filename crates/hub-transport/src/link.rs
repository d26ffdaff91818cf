//! One end of a ring pair, the same code for the host and for a peer: frames out through one
//! ring, frames in through the other, payloads inline or in slots, waits on futex words.
//!
//! The host's end of peer `i` pushes into ring `2i + 1` and pops from ring `2i`; the peer's end
//! does the opposite. Nothing else differs: [`Link`] is built with the two rings and the two
//! doorbell words, and [`Endpoint`] holds what both ends share (the segment and an allocator
//! handle owning as this participant).

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use hub_alloc::{OwnerId, Refusal, Slab, SlabError, SlotHandle};
use hub_layout::{
    INLINE_PAYLOAD_SIZE, INLINE_PAYLOAD_SLOT, MsgDescHot, NO_DEADLINE, PeerEntry, SlotState,
};

use crate::error::{
    Disconnect, LoanError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryLoanError,
};
use crate::futex::{self, WAKE_ALL};
use crate::mapping::SegmentMapping;
use crate::ready::EventFd;
use crate::ring::{Consumer, Producer, PushError, RingError};
use crate::segment::Segment;
use crate::segment::pad::{READY_HOST, READY_PEER};
use crate::signal::{Doorbell, WaitError, WaitMode, wait_any_before_sleep};
use crate::sync::AtomicU32;

/// The allocator handle of a participant.
pub(crate) type HubSlab = Slab<Arc<SegmentMapping>>;

/// The fields of a descriptor that belong to the RPC runtime: they travel untouched.
///
/// ```
/// use hub_transport::FrameMeta;
/// let meta = FrameMeta { msg_id: 42, method_id: 7, ..FrameMeta::default() };
/// assert_eq!(meta.deadline_ns, hub_transport::NO_DEADLINE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameMeta {
    /// Message id.
    pub msg_id: u64,
    /// Channel id.
    pub channel_id: u32,
    /// Method id.
    pub method_id: u32,
    /// Flags.
    pub flags: u32,
    /// Flow-control credit.
    pub credit_grant: u32,
    /// Deadline in nanoseconds, or [`NO_DEADLINE`].
    pub deadline_ns: u64,
}

impl Default for FrameMeta {
    fn default() -> Self {
        Self {
            msg_id: 0,
            channel_id: 0,
            method_id: 0,
            flags: 0,
            credit_grant: 0,
            deadline_ns: NO_DEADLINE,
        }
    }
}

impl FrameMeta {
    fn from_desc(desc: &MsgDescHot) -> Self {
        Self {
            msg_id: desc.msg_id,
            channel_id: desc.channel_id,
            method_id: desc.method_id,
            flags: desc.flags,
            credit_grant: desc.credit_grant,
            deadline_ns: desc.deadline_ns,
        }
    }

    fn to_desc(self) -> MsgDescHot {
        MsgDescHot {
            msg_id: self.msg_id,
            channel_id: self.channel_id,
            method_id: self.method_id,
            flags: self.flags,
            credit_grant: self.credit_grant,
            deadline_ns: self.deadline_ns,
            ..MsgDescHot::empty()
        }
    }
}

/// What is wrong with a descriptor a receiver took from its ring (R3). The frame is dropped;
/// a slot it named that is in flight to the receiver is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorFault {
    /// An inline payload longer than the 16 bytes a descriptor holds.
    #[error("inline payload of {len} bytes (at most 16 fit)")]
    InlineTooLong {
        /// The length claimed.
        len: u32,
    },
    /// The slot reference names no slot of the hub.
    #[error("slot reference {slot_ref:#x} names no slot")]
    BadSlotRef {
        /// The reference.
        slot_ref: u32,
    },
    /// The slot's generation is not the descriptor's: the slot was freed since (R5).
    #[error("stale generation {descriptor} (the slot is at {slot})")]
    StaleGeneration {
        /// Generation in the descriptor.
        descriptor: u32,
        /// Generation of the slot.
        slot: u32,
    },
    /// The slot is not in flight to this receiver.
    #[error("the slot is not in flight to the receiver (state {state:?}, owner {owner:#x})")]
    NotInFlightToReceiver {
        /// The slot's state (`None`: garbage).
        state: Option<SlotState>,
        /// The slot's owner word.
        owner: u32,
    },
    /// The slot is in flight to the receiver, but from another sender: a forged descriptor for
    /// a frame someone else sent (R6: a frame never goes to the wrong peer).
    #[error("the slot was sent by {sender:?}, not by this ring's sender")]
    WrongSender {
        /// The sender the slot records.
        sender: Option<OwnerId>,
    },
    /// The slot is already held by a frame this receiver took from an earlier descriptor: the
    /// same descriptor was sent twice.
    #[error("slot {slot_ref:#x} is already held by an earlier frame (a duplicated descriptor)")]
    AlreadyReceived {
        /// The slot reference.
        slot_ref: u32,
    },
    /// `payload_offset + payload_len` runs past the end of the slot.
    #[error("payload at {offset} + {len} runs past the slot's {slot_size} bytes")]
    OutOfSlot {
        /// Offset claimed.
        offset: u32,
        /// Length claimed.
        len: u32,
        /// The slot's size.
        slot_size: u32,
    },
}

/// A peer of the hub as one life of its entry: the entry's index and its epoch (the host's
/// own counter, one more at every reservation).
///
/// The host's calls accept a `PeerId` wherever they take a peer (see [`PeerRef`]): a reply
/// sent to the `PeerId` a frame came from ([`Frame::peer_id`]) fails with
/// [`Disconnect::PeerGone`] once that plugin is gone, and never reaches the next tenant of the
/// same entry. A bare `u16` index means whoever holds the entry now.
///
/// ```
/// use hub_transport::{Disconnect, FrameMeta, Host, HubConfig, Peer, SendCopyError};
///
/// let host = Host::create(&HubConfig::new().max_peers(1))?;
/// let first = Peer::attach(&host.add_peer()?)?;
/// first.send(FrameMeta::default(), b"hello")?;
/// let request = host.recv()?;
/// let asker = request.peer_id();
/// drop(request);
/// first.close();
/// host.recover_peer(asker.index())?; // (the supervisor does this by itself, soon)
/// let _second = Peer::attach(&host.add_peer()?)?; // the same entry, a new life
/// let late = host.send(asker, FrameMeta::default(), b"late reply");
/// assert!(matches!(
///     late,
///     Err(SendCopyError::Disconnected(Disconnect::PeerGone { peer })) if peer == asker
/// ));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    index: u16,
    epoch: u64,
}

impl PeerId {
    /// The id of life `epoch` of entry `index`.
    pub const fn new(index: u16, epoch: u64) -> Self {
        Self { index, epoch }
    }

    /// The entry's index (0 to `max_peers - 1`).
    pub const fn index(self) -> u16 {
        self.index
    }

    /// The entry's epoch for this life.
    pub const fn epoch(self) -> u64 {
        self.epoch
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.index, self.epoch)
    }
}

/// Whom one of the host's calls is for: a [`PeerId`] (that life of the entry only) or a bare
/// `u16` index (whoever holds the entry when the call runs). Every host call that takes a
/// peer takes `impl Into<PeerRef>`, so both are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerRef {
    /// The entry's index.
    pub index: u16,
    /// The life required, if any.
    pub epoch: Option<u64>,
}

impl From<u16> for PeerRef {
    fn from(index: u16) -> Self {
        Self { index, epoch: None }
    }
}

impl From<PeerId> for PeerRef {
    fn from(id: PeerId) -> Self {
        Self {
            index: id.index,
            epoch: Some(id.epoch),
        }
    }
}

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

/// What the host and a peer share: the segment, and an allocator handle owning as this side.
///
/// The allocator handle keeps this side's private ledger of the slots it holds (R4): loans
/// from their allocation until they are sent or dropped, frames from their receipt until they
/// are dropped. Whatever another process writes into the shared slot metas, this side never
/// holds one slot twice, and never frees or reclaims a slot it holds.
///
/// Frames and loans hold the endpoint (an `Arc`), so they may outlive the `Host` or `Peer`
/// they came from: the mapping, the allocator handle and its ledger stay until the last goes.
pub(crate) struct Endpoint {
    pub segment: Arc<Segment>,
    pub slab: HubSlab,
    mode: std::sync::atomic::AtomicU8,
    /// What ends with the last user of this side: a peer's heartbeat and its goodbye, which
    /// must not come while one of its frames still holds a slot in flight to it.
    _life: Option<Box<dyn Send + Sync>>,
}

impl Endpoint {
    pub fn new(segment: Arc<Segment>, slab: HubSlab) -> Self {
        Self::with_life(segment, slab, None)
    }

    /// An endpoint that keeps `life` until the last frame, loan and handle of it are gone.
    pub fn with_life(
        segment: Arc<Segment>,
        slab: HubSlab,
        life: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self {
            segment,
            slab,
            mode: std::sync::atomic::AtomicU8::new(0),
            _life: life,
        }
    }

    /// Give back the slots this side keeps for its next loans (hub-alloc's kept slots), and
    /// wake allocators asleep on their classes: before this side sleeps, so that nobody waits
    /// for a slot it keeps while it sleeps, and when its last handle goes. Errors are the
    /// auditor's to find (a kept slot whose meta another process rewrote).
    pub fn give_back_kept(&self) {
        if let Ok(given) = self.slab.give_back_kept()
            && given > 0
        {
            self.wake_after_growth();
        }
    }

    /// How this side waits.
    pub fn mode(&self) -> WaitMode {
        match self.mode.load(std::sync::atomic::Ordering::Relaxed) {
            1 => WaitMode::Spin,
            2 => WaitMode::Block,
            _ => WaitMode::Adaptive,
        }
    }

    /// Change how this side waits; calls already waiting keep their mode.
    pub fn set_mode(&self, mode: WaitMode) {
        let code = match mode {
            WaitMode::Spin => 1,
            WaitMode::Block => 2,
            WaitMode::Adaptive => 0,
        };
        self.mode.store(code, std::sync::atomic::Ordering::Relaxed);
    }

    /// A slot of at least `len` bytes, waiting for one as `deadline` allows (R11: an empty
    /// class blocks and wakes when a slot is freed). [`TryLoanError::NoFreeSlots`] when the
    /// deadline passes (`Deadline::Now`: at once) with the class still empty.
    fn alloc(
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
            futex::wait(word, seen, Some(deadline.slice(Duration::from_millis(20))))
                .map_err(LoanError::Futex)?;
        }
    }

    /// R11: a growth of this side (or a give-back of its kept slots) freed slots while
    /// allocators slept on their class: wake them (one relaxed load when nothing did).
    fn wake_after_growth(&self) {
        let mut classes = self.slab.take_wakes();
        while classes != 0 {
            let class = classes.trailing_zeros();
            classes &= classes - 1;
            if let Some(word) = self.slab.slot_available_word(class as u16) {
                futex::wake(word, WAKE_ALL);
            }
        }
    }

    /// Free a slot and wake allocators asleep on its class.
    pub fn free(&self, handle: SlotHandle) {
        if let Ok(freed) = self.slab.free(handle)
            && freed.wake_waiters
            && let Some(word) = self.slab.slot_available_word(freed.class)
        {
            futex::wake(word, WAKE_ALL);
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
                endpoint: Arc::clone(self),
                len,
                storage: LoanStorage::Inline([0; INLINE_PAYLOAD_SIZE]),
            });
        }
        let handle = self.alloc(len, deadline, gone)?;
        let ptr = self.slab.slot_data(handle).map_err(LoanError::Alloc)?;
        Ok(Loan {
            endpoint: Arc::clone(self),
            len,
            storage: LoanStorage::Slot { handle, ptr },
        })
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
    producer: Mutex<Producer>,
    consumer: Mutex<Consumer>,
    /// Rung after a push; the other end waits on it.
    out_bell: usize,
    /// Rung by the other end; this end waits on it.
    in_bell: usize,
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
    life: std::sync::atomic::AtomicU64,
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
        let (their_ready, my_ready) = if out_bell == RECV_BELL {
            (READY_PEER, READY_HOST)
        } else {
            (READY_HOST, READY_PEER)
        };
        Ok(Self {
            peer,
            receiver,
            me,
            producer: Mutex::new(producer),
            consumer: Mutex::new(consumer),
            out_bell,
            in_bell,
            their_ready,
            my_ready,
            notify: Mutex::new(None),
            life: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The life of the entry this end serves from now on.
    pub fn set_life(&self, epoch: u64) {
        // Relaxed: read under the producer lock by sends (`gone`) and taken with the rings'
        // reset, which holds both locks.
        self.life.store(epoch, std::sync::atomic::Ordering::Relaxed);
    }

    /// The id of the life this end serves.
    pub fn id(&self) -> PeerId {
        PeerId::new(
            self.peer,
            self.life.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The other end's readiness descriptor, from now on (a new life of the entry).
    pub fn set_notify(&self, fd: Option<Arc<EventFd>>) {
        *lock(&self.notify) = fd;
    }

    /// The entry's word in which each end says it sleeps on a readiness descriptor.
    fn ready_word<'s>(&self, segment: &'s Segment) -> &'s AtomicU32 {
        segment.peer_word32(self.peer, crate::segment::pad::READY_WAITERS)
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
        self.ready_word(segment)
            .load(std::sync::atomic::Ordering::Relaxed)
            & crate::segment::pad::READY_BRIDGED
            != 0
    }

    /// R11 after a push: bump the other end's bell; if it announced a sleep, wake its futex
    /// and, when it sleeps on a descriptor, write that.
    fn ring_out(&self, segment: &Segment) {
        Doorbell::new(self.bell(segment, self.out_bell)).ring_ready(
            self.ready_word(segment),
            self.their_ready,
            || {
                if let Some(fd) = &*lock(&self.notify) {
                    fd.notify();
                }
            },
        );
    }

    fn bell<'s>(&self, segment: &'s Segment, which: usize) -> &'s AtomicU32 {
        let field = if which == SEND_BELL {
            core::mem::offset_of!(PeerEntry, send_data_futex)
        } else {
            core::mem::offset_of!(PeerEntry, recv_data_futex)
        };
        segment.peer_word32(self.peer, field)
    }

    /// The word this end waits on.
    pub fn in_bell<'s>(&self, segment: &'s Segment) -> &'s AtomicU32 {
        self.bell(segment, self.in_bell)
    }

    /// The peer entry's field this end waits on (a `PeerEntry` offset).
    pub fn in_bell_field(&self) -> usize {
        if self.in_bell == SEND_BELL {
            core::mem::offset_of!(PeerEntry, send_data_futex)
        } else {
            core::mem::offset_of!(PeerEntry, recv_data_futex)
        }
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
        segment: &Segment,
        out: usize,
        into: usize,
        held: &mut (MutexGuard<'_, Producer>, MutexGuard<'_, Consumer>),
    ) -> Result<(), RingError> {
        let out_ring = segment.ring(out)?;
        let in_ring = segment.ring(into)?;
        // SAFETY: the caller's contract; the old handles are replaced under their locks, and
        // are never used again.
        unsafe {
            *held.0 = out_ring.reset_producer();
            *held.1 = in_ring.reset_consumer();
        }
        Ok(())
    }

    /// Hold both sides (to stop using the rings while they are scanned and reset, R10).
    pub fn lock_both(&self) -> (MutexGuard<'_, Producer>, MutexGuard<'_, Consumer>) {
        (lock(&self.producer), lock(&self.consumer))
    }

    /// One attempt to send a filled loan with `meta`: `Ok(None)` when it went, `Ok(Some(loan))`
    /// when the ring is full (the loan comes back, still this end's).
    ///
    /// The slot, if any, is marked in flight to the receiver only once room is certain, so a
    /// frame that is not sent is never left in flight (R5); on an error the loan is dropped,
    /// which frees its slot.
    pub fn try_send(
        &self,
        endpoint: &Endpoint,
        meta: FrameMeta,
        loan: Loan,
        gone: &dyn Fn() -> Option<Disconnect>,
    ) -> Result<Option<Loan>, SendError> {
        let mut desc = meta.to_desc();
        desc.payload_len = loan.len as u32;
        let slot = match &loan.storage {
            LoanStorage::Inline(bytes) => {
                desc.inline_payload = *bytes;
                None
            }
            LoanStorage::Slot { handle, .. } => {
                desc.payload_slot = handle.slot_ref();
                desc.payload_generation = handle.generation();
                Some(*handle)
            }
        };
        let ring_error = |source| SendError::Ring {
            peer: self.peer,
            source,
        };
        let mut producer = lock(&self.producer);
        // Under the lock: a recovery of the receiver (R10) that this call waited for has made
        // it gone; do not publish into its fresh ring.
        if let Some(disconnect) = gone() {
            return Err(SendError::Disconnected(disconnect));
        }
        if !producer.has_room().map_err(ring_error)? {
            return Ok(Some(loan));
        }
        if let Some(handle) = slot {
            // R5: Allocated -> InFlight before the descriptor is published.
            endpoint
                .slab
                .mark_in_flight(handle, self.receiver)
                .map_err(SendError::Alloc)?;
        }
        loan.forget();
        match producer.try_push(&desc) {
            Ok(()) => {
                drop(producer);
                // R11: after the Release publication of the head.
                self.ring_out(&endpoint.segment);
                Ok(None)
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
    pub fn send(
        &self,
        endpoint: &Endpoint,
        meta: FrameMeta,
        mut loan: Loan,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
    ) -> Result<(), SendTimeoutError> {
        let backoff = Backoff::new();
        let mut nap = Duration::from_micros(50);
        loop {
            match self.try_send(endpoint, meta, loan, gone) {
                Ok(None) => return Ok(()),
                Ok(Some(back)) => loan = back,
                Err(error) => return Err(SendTimeoutError::Failed(error)),
            }
            if deadline.passed() {
                return Err(SendTimeoutError::Timeout(loan));
            }
            if let Some(disconnect) = gone() {
                return Err(SendError::Disconnected(disconnect).into());
            }
            // A full ring: the consumer does not ring a bell when it makes room (that would
            // cost every pop a fence), so the producer backs off, then naps, at most 1 ms.
            if endpoint.mode() == WaitMode::Spin || !backoff.is_completed() {
                backoff.snooze();
            } else {
                std::thread::sleep(deadline.slice(nap));
                nap = (nap * 2).min(Duration::from_millis(1));
            }
        }
    }

    /// Take one frame if there is one (R3: the descriptor is copied out and checked before any
    /// payload is read).
    pub fn try_recv(&self, endpoint: &Arc<Endpoint>) -> Result<Option<Frame>, RecvError> {
        self.try_recv_life(endpoint, None)
    }

    /// [`try_recv`](Self::try_recv) from life `epoch` of the entry only, if given: checked
    /// under the consumer's lock, which a new reservation's ring reset takes after it set the
    /// new life (R4), so a frame of the next life never goes to a caller that named this one.
    pub fn try_recv_life(
        &self,
        endpoint: &Arc<Endpoint>,
        epoch: Option<u64>,
    ) -> Result<Option<Frame>, RecvError> {
        // The consumer stays locked through the check: a recovery of the sender (R10), which
        // holds this lock while it frees what the sender left in flight, never sees a slot
        // between its pop and the claim of its frame.
        let mut consumer = lock(&self.consumer);
        if let Some(epoch) = epoch
            && self.id().epoch() != epoch
        {
            return Err(RecvError::Disconnected(Disconnect::PeerGone {
                peer: PeerId::new(self.peer, epoch),
            }));
        }
        let desc = consumer.try_pop().map_err(|source| RecvError::Ring {
            peer: self.peer,
            source,
        })?;
        match desc {
            None => Ok(None),
            Some(desc) => self.check(endpoint, &desc).map(Some),
        }
    }

    /// Wait for one frame, as `deadline` allows, in the endpoint's wait mode (R11):
    /// [`RecvTimeoutError::Timeout`] when it passes (`Deadline::Now`: at once, the ring being
    /// empty).
    pub fn recv(
        &self,
        endpoint: &Arc<Endpoint>,
        deadline: Deadline,
        gone: &dyn Fn() -> Option<Disconnect>,
    ) -> Result<Frame, RecvTimeoutError> {
        if let Some(frame) = self.try_recv(endpoint)? {
            return Ok(frame);
        }
        if let Deadline::Now = deadline {
            return Err(RecvTimeoutError::Timeout);
        }
        let bell = Doorbell::new(self.in_bell(&endpoint.segment));
        loop {
            // Sleep in slices, so that a gone host or peer is noticed even if nobody rings.
            let slice_end = Instant::now() + Duration::from_millis(100);
            let until = match deadline.instant() {
                Some(at) if at < slice_end => Some(at),
                _ => Some(slice_end),
            };
            let poll = || match self.try_recv(endpoint) {
                Ok(None) => gone().map(|disconnect| Err(RecvError::Disconnected(disconnect))),
                other => other.transpose(),
            };
            let before_sleep = || endpoint.give_back_kept();
            match wait_any_before_sleep(
                std::slice::from_ref(&bell),
                poll,
                until,
                endpoint.mode(),
                before_sleep,
            ) {
                Ok(result) => return Ok(result?),
                Err(WaitError::TimedOut) => {
                    // A whole slice without a frame (a spinning side never sleeps): idle.
                    endpoint.give_back_kept();
                    if deadline.passed() {
                        return Err(RecvTimeoutError::Timeout);
                    }
                    if let Some(disconnect) = gone() {
                        return Err(RecvError::Disconnected(disconnect).into());
                    }
                }
                Err(WaitError::Futex(error)) => return Err(RecvError::Futex(error).into()),
            }
        }
    }

    /// Check a descriptor copied out of the ring, and make it a frame (R3, R4).
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
                endpoint: Arc::clone(endpoint),
                peer: self.id(),
                meta,
                len: desc.payload_len as usize,
                payload: FramePayload::Inline(desc.inline_payload),
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
            endpoint: Arc::clone(endpoint),
            peer: self.id(),
            meta,
            len: desc.payload_len as usize,
            payload: FramePayload::Slot { handle, ptr },
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a ring handle was held leaves its private indices as they were at the
    // last completed push or pop, which is consistent: carry on.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum LoanStorage {
    Inline([u8; INLINE_PAYLOAD_SIZE]),
    Slot {
        handle: SlotHandle,
        ptr: NonNull<u8>,
    },
}

/// A writable buffer for one outgoing frame: inline in the descriptor when the payload fits
/// 16 bytes, else in a slot of the shared allocator (zero copy: fill it in place, then send
/// it). Dropping a loan that was not sent gives its slot back.
pub struct Loan {
    endpoint: Arc<Endpoint>,
    len: usize,
    storage: LoanStorage,
}

// SAFETY: the slot is Allocated and owned by this participant until the loan is sent or dropped;
// nothing else in this process reaches it, so moving the loan to another thread is fine.
unsafe impl Send for Loan {}

// SAFETY: through `&Loan` the payload is only read (`as_slice`, `len`); writing needs
// `&mut Loan`. Reads of the slot from several threads at once race with nothing in this
// process.
unsafe impl Sync for Loan {}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan")
            .field("len", &self.len)
            .field("inline", &matches!(self.storage, LoanStorage::Inline(_)))
            .finish()
    }
}

impl Loan {
    /// Bytes of the payload.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the payload travels inline in the descriptor.
    pub fn is_inline(&self) -> bool {
        matches!(self.storage, LoanStorage::Inline(_))
    }

    /// The payload, to fill in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.storage {
            LoanStorage::Inline(bytes) => &mut bytes[..self.len],
            // SAFETY: the slot is Allocated and owned by us (R4: a slice only while the state
            // says we hold it), `len` bytes fit it (alloc chose a class of at least `len`), and
            // the `&mut self` borrow makes this the only reference.
            LoanStorage::Slot { ptr, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len)
            },
        }
    }

    /// The payload.
    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            LoanStorage::Inline(bytes) => &bytes[..self.len],
            // SAFETY: as in `as_mut_slice`, shared.
            LoanStorage::Slot { ptr, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), self.len)
            },
        }
    }

    /// Make the payload shorter (to send fewer bytes than were loaned).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The loan is being sent: its slot is no longer ours to free (the handle on the endpoint
    /// is let go as usual).
    fn forget(mut self) {
        self.storage = LoanStorage::Inline([0; INLINE_PAYLOAD_SIZE]);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // The side's last handle: its kept slots go back before its life ends (a peer's goodbye
        // comes after, with `_life`), so that a peer that leaves leaves nothing to reclaim.
        self.give_back_kept();
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let LoanStorage::Slot { handle, .. } = self.storage {
            self.endpoint.free(handle);
        }
    }
}

enum FramePayload {
    Inline([u8; INLINE_PAYLOAD_SIZE]),
    Slot {
        handle: SlotHandle,
        ptr: NonNull<u8>,
    },
}

/// A received frame. Its payload is borrowed in place (zero copy) from the slot it came in,
/// which is freed when the frame is dropped; a payload of at most 16 bytes was copied out of the
/// descriptor.
///
/// # What a hostile sender can still do
///
/// The receiver's ledger (R4) guarantees that while the frame lives its slot is this frame's
/// alone in this process: no loan, no other frame, no reclaim or recovery of the receiver's
/// touches it. The bytes themselves live in memory every participant maps, so a hostile or
/// buggy process can change them at any time, before or after the receiver reads them. The
/// receiver is never made to read or write outside the slot, but a parser that reads the same
/// field twice may see two values: parse a private copy ([`copy_payload`](Self::copy_payload))
/// when that matters.
pub struct Frame {
    endpoint: Arc<Endpoint>,
    peer: PeerId,
    meta: FrameMeta,
    len: usize,
    payload: FramePayload,
}

// SAFETY: the slot is in flight to this participant until the frame is dropped; nothing else in
// this process reaches it.
unsafe impl Send for Frame {}

// SAFETY: a frame's payload is only ever read through it, from any number of threads.
unsafe impl Sync for Frame {}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("meta", &self.meta)
            .field("len", &self.len)
            .field("inline", &self.is_inline())
            .finish()
    }
}

impl Frame {
    /// The peer whose ring the frame came through: the sender on the host's side, the peer
    /// itself on a peer's side.
    pub fn peer(&self) -> u16 {
        self.peer.index
    }

    /// The life of the peer the frame came through: on the host's side, the sender as it was
    /// when the frame was received; a reply sent to it fails with [`Disconnect::PeerGone`]
    /// once that peer is gone, instead of reaching the entry's next tenant.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The runtime's fields, as sent.
    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        match &self.payload {
            FramePayload::Inline(bytes) => &bytes[..self.len],
            // SAFETY: the slot is in flight to us with the generation checked on receipt (R4:
            // a slice only while the state says we hold it); `ptr + len` lies inside the slot
            // (checked in `Link::check`); we free it only when the frame drops.
            FramePayload::Slot { ptr, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), self.len)
            },
        }
    }

    /// A private copy of the payload, taken once: what a parser should read when it must not
    /// be fooled by a hostile sender (PROTOCOL.md §5, R4).
    ///
    /// [`payload`](Self::payload) lends the bytes where they lie, in a slot that the host's
    /// ledger says is this frame's: no other frame or loan of this process ever covers them.
    /// But every process of the hub maps the whole segment, so the sender (or any peer) can
    /// still write those bytes while the frame is held; a parser that reads a length, checks
    /// it, and reads again may see two different values. This copies the payload once into
    /// `out` (replacing its contents), from the slot's memory and not through a reference, so
    /// that what the parser checks is what it uses. Inline payloads are copies already.
    ///
    /// ```
    /// use hub_transport::{FrameMeta, Host, HubConfig, Peer};
    ///
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// let peer = Peer::attach(&host.add_peer()?)?;
    /// peer.send(FrameMeta::default(), &[7u8; 5000])?;
    /// let frame = host.recv()?;
    /// let mut mine = Vec::new();
    /// frame.copy_payload(&mut mine);
    /// assert_eq!(mine, vec![7u8; 5000]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn copy_payload(&self, out: &mut Vec<u8>) {
        out.clear();
        match &self.payload {
            FramePayload::Inline(bytes) => out.extend_from_slice(&bytes[..self.len]),
            FramePayload::Slot { ptr, .. } => {
                out.reserve(self.len);
                // SAFETY: `ptr + len` lies inside the slot (checked in `Link::check`), which
                // stays mapped while the frame's endpoint lives; `out` has room for `len` bytes
                // (reserved above) and is not shared memory, so the two do not overlap. The
                // copy reads through a raw pointer, never a reference; a byte another process
                // writes meanwhile may come out old or new (as in any copy of shared memory),
                // but this process reads each byte once, so what it checks is what it uses.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr.as_ptr(), out.as_mut_ptr(), self.len);
                    out.set_len(self.len);
                }
            }
        }
    }

    /// Bytes of the payload.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the payload came inline in the descriptor.
    pub fn is_inline(&self) -> bool {
        matches!(self.payload, FramePayload::Inline(_))
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let FramePayload::Slot { handle, .. } = self.payload {
            // R5: InFlight -> Free by the receiver, done with it; the ledger lets it go before
            // the push (R4). A duplicate arriving before the free is refused by the ledger, one
            // arriving after it by the slot's new generation.
            self.endpoint.free(handle);
        }
    }
}
