//! What travels and what both ends share: a frame's metadata ([`FrameMeta`]), who it came from
//! ([`PeerId`], [`PeerRef`]), what can be wrong with a descriptor ([`DescriptorFault`]), the
//! payloads ([`Loan`] out, [`Frame`] in) and the [`Endpoint`] they hold: the segment and this
//! side's allocator handle. The rings and the waits are `link`'s.

use std::ptr::NonNull;
use std::sync::Arc;

use hub_alloc::{OwnerId, Slab, SlabError, SlotHandle};
use hub_layout::{INLINE_PAYLOAD_SIZE, MsgDescHot, NO_DEADLINE, SlotState};

use crate::futex::{self, WAKE_ALL};
#[cfg(not(loom))]
use crate::mapping::SegmentMapping;
use crate::segment::Segment;
use crate::signal::WaitMode;

/// The allocator handle of a participant.
#[cfg(not(loom))]
pub(crate) type HubSlab = Slab<Arc<SegmentMapping>>;
/// Under loom, over a heap region (a model's segment holds no allocator, see `Segment::heap`).
#[cfg(loom)]
pub(crate) type HubSlab = Slab<Arc<hub_alloc::HeapRegion>>;

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
    pub(crate) fn from_desc(desc: &MsgDescHot) -> Self {
        Self {
            msg_id: desc.msg_id,
            channel_id: desc.channel_id,
            method_id: desc.method_id,
            flags: desc.flags,
            credit_grant: desc.credit_grant,
            deadline_ns: desc.deadline_ns,
        }
    }

    pub(crate) fn to_desc(self) -> MsgDescHot {
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
/// [`Disconnect::PeerGone`](crate::Disconnect::PeerGone) once that plugin is gone, and never reaches the next tenant of the
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

/// What the host and a peer share: the segment, and an allocator handle owning as this side.
///
/// The allocator handle keeps this side's private ledger of the slots it holds (R4): loans
/// from their allocation until they are sent or dropped, frames from their receipt until they
/// are dropped. Whatever another process writes into the shared slot metas, this side never
/// holds one slot twice, and never frees or reclaims a slot it holds.
///
/// Frames and loans whose payload is in a slot hold the endpoint (an `Arc`), so they may
/// outlive the `Host` or `Peer` they came from: the mapping, the allocator handle and its
/// ledger stay until the last goes. Inline ones hold nothing of it.
pub(crate) struct Endpoint {
    pub segment: Arc<Segment>,
    pub slab: HubSlab,
    mode: crate::sync::AtomicU8,
    /// What ends with the last user of this side: a peer's heartbeat and its goodbye, which
    /// must not come while one of its frames still holds a slot in flight to it.
    _life: Option<Box<dyn Send + Sync>>,
}

impl Endpoint {
    pub fn new(segment: Arc<Segment>, slab: HubSlab) -> Self {
        Self::with_life(segment, slab, None)
    }

    /// An endpoint that keeps `life` until its last handle, and the last frame and loan of it
    /// that hold a slot, are gone.
    pub fn with_life(
        segment: Arc<Segment>,
        slab: HubSlab,
        life: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self {
            segment,
            slab,
            mode: crate::sync::AtomicU8::new(0),
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
        match self.mode.load(crate::sync::Ordering::Relaxed) {
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
        self.mode.store(code, crate::sync::Ordering::Relaxed);
    }

    /// R11: a growth of this side (or a give-back of its kept slots) freed slots while
    /// allocators slept on their class: wake them (one relaxed load when nothing did).
    pub fn wake_after_growth(&self) {
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
}

/// A payload that travels inline in the descriptor, aligned so that it moves as two words: a
/// byte array at an odd offset of an enum is moved piecewise, and the loads that read it back
/// straddle those stores, which the processor cannot forward.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(8))]
pub(crate) struct InlineBytes(pub [u8; INLINE_PAYLOAD_SIZE]);

/// Where a loan's payload lies. Only a slot holds the endpoint: it frees the slot on drop, and
/// the slot's memory stays mapped while the endpoint lives. An inline payload needs neither, and
/// costs no reference count.
pub(crate) enum LoanStorage {
    Inline(InlineBytes),
    Slot {
        endpoint: Arc<Endpoint>,
        handle: SlotHandle,
        ptr: NonNull<u8>,
    },
}

/// A writable buffer for one outgoing frame: inline in the descriptor when the payload fits
/// 16 bytes, else in a slot of the shared allocator (zero copy: fill it in place, then send
/// it). Dropping a loan that was not sent gives its slot back.
pub struct Loan {
    pub(crate) len: usize,
    pub(crate) storage: LoanStorage,
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
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.storage {
            LoanStorage::Inline(bytes) => &mut bytes.0[..self.len],
            // SAFETY: the slot is Allocated and owned by us (R4: a slice only while the state
            // says we hold it), `len` bytes fit it (alloc chose a class of at least `len`), and
            // the `&mut self` borrow makes this the only reference.
            LoanStorage::Slot { ptr, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), self.len)
            },
        }
    }

    /// The payload.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.storage {
            LoanStorage::Inline(bytes) => &bytes.0[..self.len],
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
    pub(crate) fn forget(mut self) {
        self.storage = LoanStorage::Inline(InlineBytes::default());
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
        if let LoanStorage::Slot {
            endpoint, handle, ..
        } = &self.storage
        {
            endpoint.free(*handle);
        }
    }
}

/// A slot a copying send allocated and filled: this end's, freed when dropped unless
/// [`commit`](Self::commit)ted. It needs no loan: no reference count is taken and dropped, as
/// it never outlives the send.
pub(crate) struct FilledSlot<'e> {
    endpoint: &'e Endpoint,
    handle: SlotHandle,
}

impl<'e> FilledSlot<'e> {
    /// `handle`, a slot `endpoint` just allocated and holds, with `payload` copied to its
    /// start; the guard frees it from here on. [`SlabError::PayloadTooLarge`] when the slot is
    /// smaller than `payload` (it is freed).
    pub(crate) fn fill(
        endpoint: &'e Endpoint,
        handle: SlotHandle,
        payload: &[u8],
    ) -> Result<Self, SlabError> {
        let filled = Self { endpoint, handle };
        let size = endpoint.slab.slot_size(handle.class()).unwrap_or(0) as usize;
        if payload.len() > size {
            return Err(SlabError::PayloadTooLarge {
                len: payload.len(),
                max: size,
            });
        }
        let ptr = endpoint.slab.slot_data(handle)?;
        // SAFETY: the slot is Allocated and this end's (R4: the caller's handle, just allocated,
        // and nothing else in this process reaches it); `payload.len()` bytes fit it (checked
        // above); `payload` is private memory, so the two do not overlap. The copy writes
        // through a raw pointer, never a reference.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), ptr.as_ptr(), payload.len()) };
        Ok(filled)
    }

    /// The slot is being sent (marked in flight): no longer this guard's to free.
    pub(crate) fn commit(self) {
        std::mem::forget(self);
    }
}

impl Drop for FilledSlot<'_> {
    fn drop(&mut self) {
        self.endpoint.free(self.handle);
    }
}

/// Where a frame's payload lies; as for [`LoanStorage`], only a slot holds the endpoint.
pub(crate) enum FramePayload {
    Inline(InlineBytes),
    Slot {
        endpoint: Arc<Endpoint>,
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
    pub(crate) peer: PeerId,
    pub(crate) meta: FrameMeta,
    pub(crate) len: usize,
    pub(crate) payload: FramePayload,
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
    /// when the frame was received; a reply sent to it fails with [`Disconnect::PeerGone`](crate::Disconnect::PeerGone)
    /// once that peer is gone, instead of reaching the entry's next tenant.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The runtime's fields, as sent.
    pub fn meta(&self) -> &FrameMeta {
        &self.meta
    }

    /// The payload.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        match &self.payload {
            FramePayload::Inline(bytes) => &bytes.0[..self.len],
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
            FramePayload::Inline(bytes) => out.extend_from_slice(&bytes.0[..self.len]),
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
    // Inlined where frames are dropped: an inline frame's drop is then one look.
    #[inline]
    fn drop(&mut self) {
        if let FramePayload::Slot {
            endpoint, handle, ..
        } = &self.payload
        {
            // R5: InFlight -> Free by the receiver, done with it; the ledger lets it go before
            // the push (R4). A duplicate arriving before the free is refused by the ledger, one
            // arriving after it by the slot's new generation.
            endpoint.free(*handle);
        }
    }
}
