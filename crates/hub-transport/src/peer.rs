//! A peer: attaches with a ticket, sends to the host, receives from it.

use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hub_alloc::{OwnerId, SlabError};

use crate::error::{
    Disconnect, LoanError, LoanTimeoutError, RecvError, RecvTimeoutError, SendCopyError,
    SendCopyTimeoutError, SendError, SendThenRecvError, SendTimeoutError, TryLoanError,
    TryRecvError, TrySendCopyError, TrySendError,
};
use crate::forms::{self, forever, within};
use crate::frame::{Endpoint, Frame, FrameMeta, Loan};
use crate::link::{Deadline, Defer, Link, RECV_BELL, SEND_BELL};
use crate::liveness::{Heartbeat, HostLife, ProcessWatch, WatchError};
use crate::mapping::{Access, SegmentFile};
use crate::ready::{EntryFds, EventFd, ReadyBridge, ReadySet};
use crate::segment::{AttachError, PeerState, Segment};
use crate::signal::{Doorbell, PendingWake, WaitMode};
use crate::sync::Ordering;
use crate::ticket::{Source, SpecSource, Ticket, TicketSpec};

/// A peer of a hub: attached with a [`Ticket`] (R9), it sends frames to the host and receives
/// frames from it.
///
/// Every method takes `&self`; a `Peer` is `Send + Sync` and serialises each ring side inside.
/// Dropping it (or [`close`](Self::close)) says goodbye: the entry goes Dying and the host
/// recovers it. See [`Host`](crate::Host) for an example.
///
/// # When a peer concludes that the host is gone
///
/// Only from a fact the kernel keeps (R12), never from a word of the segment alone, because
/// every peer can write every word (PROTOCOL.md §5): the host holds an exclusive `flock` on an open
/// file description of its own ([`HolderLock`](crate::mapping::HolderLock)) from creation
/// until it is dropped or its process dies, and the kernel drops it then. The host-state word
/// in the header is a hint: when it says "gone", the peer probes the lock on a description of
/// its own (one non-blocking `flock`), and reports [`Disconnect::HostGone`] only when the
/// probe succeeds, i.e. the lock is released. The heartbeat thread also waits on a pidfd of
/// the host's process; its exit is believed only when the probe confirms it (the pid was read
/// from the segment, so it may not be the host's). Once confirmed, "gone" is kept privately
/// for good. A peer that forges the word costs honest peers one probe per check, never a
/// `HostGone`.
pub struct Peer {
    /// Shared with every frame and loan of this peer that holds a slot: the peer's life
    /// (heartbeat, goodbye) ends with the last of them.
    endpoint: Arc<Endpoint>,
    link: Link,
    id: u16,
    /// The entry's epoch when this peer attached: once the host recovers the entry (and perhaps
    /// hands the id to a new peer, at a higher epoch), the entry is no longer this peer's.
    epoch: u64,
    /// Whether the host is gone, decided from the kernel's facts (R12), shared with the
    /// heartbeat thread.
    host: Arc<HostLife>,
    /// This peer's readiness descriptor: its to-peer eventfd, written by the host (or by the
    /// waiter thread), and the tick.
    ready: ReadySet,
    /// The waiter thread standing in for the host's writes when the ticket brought no
    /// descriptors; stopped when the peer drops.
    bridge: Option<ReadyBridge>,
}

/// What ends when the last handle on a peer's side goes: the heartbeat, this process's record
/// of the attach, and the goodbye (the entry Active -> Dying), in that order.
struct PeerLife {
    segment: Arc<Segment>,
    id: u16,
    epoch: u64,
    /// Beats `last_seen` and watches the host (R12).
    heartbeat: Option<Heartbeat>,
    /// This process's record of the attach, for a host in the same process (R4, `local`).
    local: Option<crate::local::Registration>,
}

impl Drop for PeerLife {
    fn drop(&mut self) {
        drop(self.heartbeat.take());
        let words = self.segment.peer(self.id);
        // Only this peer's own entry: after an eviction the id may be another peer's (R9).
        if words.epoch.load(Ordering::Acquire) == self.epoch
            && words
                .transition(PeerState::Active, PeerState::Dying)
                .is_ok()
        {
            Doorbell::new(self.segment.host_bell()).ring();
        }
        drop(self.local.take());
    }
}

/// The descriptor numbers this process took up as inherited segment descriptors
/// ([`Peer::attach_spec`] with [`SpecSource::Fd`]). A number is taken once in the life of the
/// process: once taken it is this process's own descriptor (closed when its `Peer` goes), so a
/// second take would close a live `Peer`'s file, or, after that `Peer` went, whatever `open`
/// has since put at that number.
static TAKEN_FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

readiness_descriptor_traits!(Peer);

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("id", &self.id).finish()
    }
}

impl Peer {
    /// Attach in this process with a ticket from [`Host::add_peer`](crate::Host::add_peer)
    /// (a thread standing in for a plugin, or a ticket passed by other means).
    ///
    /// # Errors
    /// [`AttachError::Mapping`] when the segment cannot be opened or mapped;
    /// [`AttachError::Layout`] when it is not a valid hub (R2); [`AttachError::NotReserved`]
    /// when the entry is not Reserved (the ticket was used); [`AttachError::StaleTicket`];
    /// [`AttachError::HostGone`].
    pub fn attach(ticket: &Ticket) -> Result<Self, AttachError> {
        let file = match &ticket.source {
            Source::Fd(fd) => SegmentFile::from_fd(
                fd.try_clone()
                    .map_err(|e| AttachError::BadTicket(format!("descriptor: {e}")))?,
            )?,
            Source::Path(path) => SegmentFile::open_path(path, Access::ReadWrite)?,
        };
        Self::attach_file(file, ticket.peer, ticket.epoch, Some(ticket.ready.clone()))
    }

    /// Attach in a child process with the ticket its parent put in [`TICKET_ENV`](crate::TICKET_ENV)
    /// ([`Ticket::apply`]). Takes ownership of the inherited descriptor the ticket names.
    ///
    /// # Errors
    /// [`AttachError::BadTicket`] when the variable is missing or malformed, and those of
    /// [`attach`](Self::attach).
    pub fn from_env() -> Result<Self, AttachError> {
        Self::attach_spec(&TicketSpec::from_env()?)
    }

    /// Attach with a parsed ticket: what [`from_env`](Self::from_env) does after reading the
    /// environment. An `Fd` source must be a descriptor this process inherited for the hub and
    /// uses for nothing else: the peer takes ownership of it (and makes it close-on-exec).
    ///
    /// A descriptor number is taken at most once in the life of the process: a second attach
    /// with the same number (a second `from_env`, whether or not the first `Peer` still lives)
    /// is [`AttachError::DescriptorTaken`] and leaves the descriptor alone, so it never closes
    /// a live `Peer`'s file nor one that `open` has since put at that number. So is a number
    /// whose descriptor is close-on-exec: an inherited descriptor never is (it came through an
    /// `exec`), while every descriptor Rust's standard library and rustix open is, so such a
    /// number belongs to something else in this process.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env), and [`AttachError::DescriptorTaken`].
    pub fn attach_spec(spec: &TicketSpec) -> Result<Self, AttachError> {
        let file = match &spec.source {
            SpecSource::Fd(fd) => Self::take_inherited(*fd)?,
            SpecSource::Path(path) => SegmentFile::open_path(path, Access::ReadWrite)?,
        };
        let ready = spec.ready.and_then(|spec| {
            Some(EntryFds {
                to_peer: Self::take_ready(spec.ready)?,
                to_host: Self::take_ready(spec.notify)?,
            })
        });
        Self::attach_file(file, spec.peer, spec.epoch, ready)
    }

    /// Take up inherited readiness descriptor `fd`, once per process, if it is one: an open,
    /// inheritable eventfd not taken before. Anything else is left alone (`None`), and the
    /// peer's event-loop waits go through a waiter thread instead.
    fn take_ready(fd: RawFd) -> Option<Arc<EventFd>> {
        let mut taken = TAKEN_FDS.lock().unwrap_or_else(PoisonError::into_inner);
        if fd < 0 || taken.contains(&fd) {
            return None;
        }
        // SAFETY: only borrowed for `fcntl` and a `readlink` of its /proc entry, which fail
        // cleanly when the number is not open; nothing is closed or changed.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let inheritable = rustix::io::fcntl_getfd(borrowed)
            .is_ok_and(|flags| !flags.contains(rustix::io::FdFlags::CLOEXEC));
        if !inheritable || !EventFd::is_eventfd(borrowed) {
            return None;
        }
        // SAFETY: as for the segment's descriptor in `take_inherited`: the ticket hands this
        // number to this process for the hub alone, it was not taken before (`TAKEN_FDS`,
        // under its lock), it is open, inheritable (so nothing std or rustix opened here owns
        // it) and an eventfd, as the ticket says.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        taken.push(fd);
        EventFd::from_owned(owned).ok()
    }

    /// Take up inherited descriptor `fd`, once per process (see [`attach_spec`](Self::attach_spec)).
    fn take_inherited(fd: RawFd) -> Result<SegmentFile, AttachError> {
        // Held across the check and the take: two threads cannot both take one number.
        let mut taken = TAKEN_FDS.lock().unwrap_or_else(PoisonError::into_inner);
        if taken.contains(&fd) {
            return Err(AttachError::DescriptorTaken { fd });
        }
        if fd >= 0 {
            // SAFETY: only borrowed for one fcntl, which fails cleanly (EBADF) when the number
            // is not open; nothing is closed or changed.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if rustix::io::fcntl_getfd(borrowed)
                .is_ok_and(|flags| flags.contains(rustix::io::FdFlags::CLOEXEC))
            {
                return Err(AttachError::DescriptorTaken { fd });
            }
        }
        // SAFETY: the ticket protocol hands this descriptor number to this process for the
        // hub alone (documented on `attach_spec`); it was not taken before in this process
        // (`TAKEN_FDS`, under its lock), and it is not close-on-exec, so nothing std or rustix
        // opened in this process owns it (they open everything close-on-exec). That it is not
        // some other inherited descriptor, such as stdio, rests on the caller: the contract of
        // `attach_spec`. `from_raw_inherited` checks that it is open and a segment-like file
        // before taking it, and leaves it alone on error.
        let file = unsafe { SegmentFile::from_raw_inherited(fd)? };
        // Recorded whatever the attach does next: from here on the number is this process's,
        // and a failed attach closes it.
        taken.push(fd);
        Ok(file)
    }

    fn attach_file(
        file: SegmentFile,
        peer: u16,
        epoch: u64,
        ready: Option<EntryFds>,
    ) -> Result<Self, AttachError> {
        // R12: the way to ask the kernel whether the host lives, on a description of our own.
        let host = Arc::new(HostLife::new(file.holder_probe()?));
        let (segment, slab) = Segment::attach(file, OwnerId::peer(peer)).map_err(|e| match e {
            AttachError::Alloc(SlabError::UnknownOwner(_)) => {
                AttachError::BadTicket(format!("peer {peer} is beyond the hub's peers"))
            }
            other => other,
        })?;
        if host.is_gone(&segment) {
            return Err(AttachError::HostGone);
        }
        let words = segment.peer(peer);
        let check_epoch = || {
            let entry = words.epoch.load(Ordering::Acquire);
            if entry == epoch {
                Ok(())
            } else {
                Err(AttachError::StaleTicket {
                    peer,
                    ticket: epoch,
                    entry,
                })
            }
        };
        check_epoch()?;
        // R12: a fresh heartbeat before the entry turns Active, so that the supervisor never
        // sees this life Active with an earlier life's heartbeat (and evicts it as silent) while
        // this process is preempted between the CAS and its first beat. Relaxed: the CAS below
        // (AcqRel) publishes it. Should the CAS be lost, this only refreshed a word of an entry
        // another process holds, once.
        words
            .last_seen
            .store(crate::segment::monotonic_ns(), Ordering::Relaxed);
        let local = crate::local::Registration::new(&segment, peer, epoch);
        // R9: Reserved -> Active by compare-and-swap: of two processes with one ticket, one wins.
        if let Err(state) = words.transition(PeerState::Reserved, PeerState::Active) {
            // Another process attached with the ticket: that life is not this process's.
            local.cancel();
            return Err(AttachError::NotReserved { peer, state });
        }
        if let Err(error) = check_epoch() {
            // The host recovered and re-reserved the entry between our two looks: give it back.
            let _ = words.transition(PeerState::Active, PeerState::Reserved);
            local.cancel();
            return Err(error);
        }
        words.pid.store(std::process::id(), Ordering::Relaxed);
        let (send, recv) = (2 * usize::from(peer), 2 * usize::from(peer) + 1);
        // SAFETY: the CAS above made this process the entry's only peer, hence the only
        // producer of its send ring and the only consumer of its receive ring.
        let link = unsafe {
            Link::new(
                &segment,
                peer,
                OwnerId::peer(peer),
                OwnerId::HOST,
                send,
                recv,
                SEND_BELL,
                RECV_BELL,
            )
        }
        .map_err(|e| AttachError::BadTicket(format!("ring: {e}")))?;
        link.set_life(epoch);
        // R12: the heartbeat waits on the pidfd of the process the header names as the host's,
        // opened now. That pid is a word of the segment: its exit is believed only when the
        // host's lock is found released too (see `HostLife`). No such process while the lock
        // is held: the word lied, and the heartbeat probes the lock at every beat instead.
        let watch = match ProcessWatch::open(segment.host_pid()) {
            Ok(watch) => Some(watch),
            Err(WatchError::NoSuchProcess) if host.confirm() => {
                let _ = words.transition(PeerState::Active, PeerState::Dying);
                return Err(AttachError::HostGone);
            }
            Err(_) => None,
        };
        let heartbeat = Heartbeat::start(segment.clone(), peer, epoch, watch, host.clone())
            .map_err(|e| {
                // Out of threads or descriptors: leave as a goodbye does, so that the host
                // recovers the entry now rather than after a heartbeat timeout.
                let _ = words.transition(PeerState::Active, PeerState::Dying);
                AttachError::BadTicket(format!("cannot start the heartbeat: {e}"))
            })?;
        let life = PeerLife {
            segment: segment.clone(),
            id: peer,
            epoch,
            heartbeat: Some(heartbeat),
            local: Some(local),
        };
        // From here on, dropping `life` says goodbye.
        let readiness = |e| AttachError::BadTicket(format!("readiness descriptor: {e}"));
        let set = ReadySet::new(1).map_err(readiness)?;
        let bridge = match ready {
            Some(fds) => {
                link.set_notify(Some(fds.to_host));
                set.install(0, fds.to_peer).map_err(readiness)?;
                None
            }
            None => {
                // The host's bridge thread stands in for the descriptor this peer lacks.
                segment
                    .peer_word32(peer, crate::segment::pad::READY_WAITERS)
                    .fetch_or(crate::segment::pad::READY_BRIDGED, Ordering::Relaxed);
                let own = EventFd::new().map_err(readiness)?;
                set.install(0, Arc::clone(&own)).map_err(readiness)?;
                let bridge = ReadyBridge::start(&segment, link.peer, link.in_bell_field(), own)
                    .map_err(|e| AttachError::BadTicket(format!("waiter thread: {e}")))?;
                Some(bridge)
            }
        };
        Doorbell::new(segment.host_bell()).ring();
        Ok(Self {
            host,
            endpoint: Arc::new(Endpoint::with_life(segment, slab, Some(Box::new(life)))),
            link,
            id: peer,
            epoch,
            ready: set,
            bridge,
        })
    }

    /// This peer's id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The host's process id, as the header says (the host wrote it when it created the hub;
    /// any peer could have rewritten it since: information, not a fact to act on).
    pub fn host_pid(&self) -> u32 {
        self.endpoint.segment.host_pid()
    }

    /// How this peer waits: spin, block or adaptive (the default).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.endpoint.set_mode(mode);
    }

    /// Per-class slot counts of the hub's allocator.
    pub fn stats(&self) -> Vec<crate::ClassStats> {
        self.endpoint.slab.stats()
    }

    /// `None` while the entry is this peer's and Active; else the state to report. An entry the
    /// host recovered and gave to a new peer (its epoch moved on) is reported Dead, whatever the
    /// new peer's state: this peer must not touch rings that are someone else's now (R9).
    fn evicted(&self) -> Option<PeerState> {
        // Two words, not the entry's six: this is looked at on the hot paths.
        let segment = &self.endpoint.segment;
        if self.link.shared_epoch(segment) != self.epoch {
            return Some(PeerState::Dead);
        }
        match self.link.peer_state(segment) {
            PeerState::Active => None,
            state => Some(state),
        }
    }

    /// Whether the other side is gone for good: the host left ([`Disconnect::HostGone`]), or
    /// evicted this peer ([`Disconnect::PeerNotActive`]).
    fn gone(&self) -> Option<Disconnect> {
        if self.host.is_gone(&self.endpoint.segment) {
            return Some(Disconnect::HostGone);
        }
        self.evicted().map(|state| Disconnect::PeerNotActive {
            peer: self.id,
            state,
        })
    }

    /// A buffer of `len` bytes to fill in place and send with [`send_loan`](Self::send_loan):
    /// zero copy. Waits for a free slot as long as it takes.
    ///
    /// # Errors
    /// [`LoanError::PayloadTooLarge`]; [`LoanError::Disconnected`] with
    /// [`Disconnect::HostGone`] when the host left, with [`Disconnect::PeerNotActive`] when it
    /// evicted this peer; [`LoanError::Alloc`]; [`LoanError::Futex`].
    pub fn loan(&self, len: usize) -> Result<Loan, LoanError> {
        forever((), |(), deadline| self.loan_until(len, deadline))
    }

    /// [`loan`](Self::loan) without waiting.
    ///
    /// # Errors
    /// [`TryLoanError::NoFreeSlots`] when no slot is free; [`TryLoanError::Failed`] with what
    /// [`loan`](Self::loan) fails with.
    pub fn try_loan(&self, len: usize) -> Result<Loan, TryLoanError> {
        self.loan_until(len, Deadline::Now)
    }

    /// [`loan`](Self::loan), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LoanTimeoutError::Timeout`] after it; [`LoanTimeoutError::Failed`] with what
    /// [`loan`](Self::loan) fails with.
    pub fn loan_timeout(&self, len: usize, timeout: Duration) -> Result<Loan, LoanTimeoutError> {
        within(timeout, |deadline| self.loan_until(len, deadline))
    }

    /// An evicted peer allocates nothing: its owner id may be another peer's by now (R6, R9).
    /// [`TryLoanError::NoFreeSlots`] when `deadline` passes with the class empty.
    fn loan_until(&self, len: usize, deadline: Deadline) -> Result<Loan, TryLoanError> {
        if let Some(disconnect) = self.gone() {
            return Err(LoanError::Disconnected(disconnect).into());
        }
        self.endpoint.loan(len, deadline, &|| self.gone())
    }

    /// Send a filled loan to the host, waiting for room as long as it takes.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] with [`Disconnect::HostGone`] when the host left, with
    /// [`Disconnect::PeerNotActive`] when it evicted this peer; [`SendError::Ring`];
    /// [`SendError::Alloc`] when the loan's slot was changed under this peer.
    pub fn send_loan(&self, meta: FrameMeta, loan: Loan) -> Result<(), SendError> {
        forever(loan, |loan, deadline| {
            self.send_loan_until(meta, loan, deadline, None)
        })
    }

    /// [`send_loan`](Self::send_loan) without waiting: a full ring gives the loan back,
    /// unsent and still this peer's ([`TrySendError::Full`]).
    ///
    /// # Errors
    /// [`TrySendError::Full`]; [`TrySendError::Failed`] with what [`send_loan`](
    /// Self::send_loan) fails with (the loan is dropped then, which frees its slot).
    pub fn try_send_loan(&self, meta: FrameMeta, loan: Loan) -> Result<(), TrySendError> {
        forms::try_send_loan(self.try_send_loan_back(meta, loan))
    }

    /// [`send_loan`](Self::send_loan), waiting at most `timeout`: when it passes, the loan
    /// comes back, unsent and still this peer's ([`SendTimeoutError::Timeout`]).
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`]; [`SendTimeoutError::Failed`] with what
    /// [`send_loan`](Self::send_loan) fails with (the loan is dropped then).
    pub fn send_loan_timeout(
        &self,
        meta: FrameMeta,
        loan: Loan,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        within(timeout, |deadline| {
            self.send_loan_until(meta, loan, deadline, None)
        })
    }

    /// The send of a filled loan: whether the host left or evicted this peer is checked under
    /// the ring's lock, first thing (`Link::try_send`).
    fn send_loan_until<'e>(
        &'e self,
        meta: FrameMeta,
        loan: Loan,
        deadline: Deadline,
        defer: Defer<'_, 'e>,
    ) -> Result<(), SendTimeoutError> {
        self.link
            .send(&self.endpoint, meta, loan, deadline, &|| self.gone(), defer)
    }

    /// Copy `payload` into a frame and send it to the host, waiting for a slot and for room as
    /// long as it takes. Payloads of at most 16 bytes travel inline.
    ///
    /// # Errors
    /// [`SendCopyError`]: what [`loan`](Self::loan) and [`send_loan`](Self::send_loan) fail
    /// with, in one list.
    pub fn send(&self, meta: FrameMeta, payload: &[u8]) -> Result<(), SendCopyError> {
        forever((), |(), deadline| {
            self.send_until(meta, payload, deadline, None)
        })
    }

    /// [`send`](Self::send) without waiting.
    ///
    /// # Errors
    /// [`TrySendCopyError::Full`] when the ring is full; [`TrySendCopyError::NoFreeSlots`] when
    /// the payload needs a slot and none is free; [`TrySendCopyError::Failed`] with what
    /// [`send`](Self::send) fails with.
    pub fn try_send(&self, meta: FrameMeta, payload: &[u8]) -> Result<(), TrySendCopyError> {
        self.send_until(meta, payload, Deadline::Now, None)
    }

    /// [`send`](Self::send), waiting at most `timeout` (for a slot and for room together).
    ///
    /// # Errors
    /// [`SendCopyTimeoutError::Timeout`] after it; [`SendCopyTimeoutError::Failed`] with what
    /// [`send`](Self::send) fails with.
    pub fn send_timeout(
        &self,
        meta: FrameMeta,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), SendCopyTimeoutError> {
        within(timeout, |deadline| {
            self.send_until(meta, payload, deadline, None)
        })
    }

    /// The sends of a copy: [`TrySendCopyError::NoFreeSlots`] when `deadline` passes
    /// (`Deadline::Now`: at once) with the class empty, [`TrySendCopyError::Full`] when it
    /// passes with the ring full.
    fn send_until<'e>(
        &'e self,
        meta: FrameMeta,
        payload: &[u8],
        deadline: Deadline,
        defer: Defer<'_, 'e>,
    ) -> Result<(), TrySendCopyError> {
        // `send_copy` looks at `gone` before it allocates, and under the producer's lock.
        let gone = || self.gone();
        self.link
            .send_copy(&self.endpoint, meta, payload, deadline, &gone, defer)
    }

    /// [`send`](Self::send), then [`recv`](Self::recv): the call of a request and its reply
    /// (or of a reply and the next request). In [`WaitMode::Block`], when the host sleeps, the
    /// wake of the send and this peer's sleep for the answer are one system call (an io_uring
    /// of this thread, Linux 6.7+; two plain calls elsewhere), so a blocking request and reply
    /// costs each side one system call. In the other modes it is `send` and then `recv`.
    ///
    /// ```
    /// use hub_transport::{FrameMeta, Host, HubConfig, Peer};
    ///
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// let peer = Peer::attach(&host.add_peer()?)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let request = host.recv().expect("a request");
    ///         host.send(request.peer(), FrameMeta::default(), b"pong").expect("the reply");
    ///     });
    ///     let reply = peer.send_then_recv(FrameMeta::default(), b"ping").expect("a reply");
    ///     assert_eq!(reply.payload(), b"pong");
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SendThenRecvError::Send`] with what [`send`](Self::send) fails with (nothing went);
    /// [`SendThenRecvError::Recv`] with what [`recv`](Self::recv) fails with (the frame went).
    pub fn send_then_recv(
        &self,
        meta: FrameMeta,
        payload: &[u8],
    ) -> Result<Frame, SendThenRecvError<SendCopyError>> {
        let mut pending = None;
        forever((), |(), deadline| {
            self.send_until(meta, payload, deadline, Some(&mut pending))
        })
        .map_err(SendThenRecvError::Send)?;
        self.recv_after_ring(pending)
            .map_err(SendThenRecvError::Recv)
    }

    /// [`send_loan`](Self::send_loan), then [`recv`](Self::recv), as
    /// [`send_then_recv`](Self::send_then_recv) does.
    ///
    /// # Errors
    /// [`SendThenRecvError::Send`] with what [`send_loan`](Self::send_loan) fails with;
    /// [`SendThenRecvError::Recv`] with what [`recv`](Self::recv) fails with.
    pub fn send_loan_then_recv(
        &self,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<Frame, SendThenRecvError<SendError>> {
        let mut pending = None;
        forever(loan, |loan, deadline| {
            self.send_loan_until(meta, loan, deadline, Some(&mut pending))
        })
        .map_err(SendThenRecvError::Send)?;
        self.recv_after_ring(pending)
            .map_err(SendThenRecvError::Recv)
    }

    /// Receive the next frame from the host, waiting as long as it takes.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] with [`Disconnect::HostGone`] when the host left (once the
    /// frames it sent before are taken), with [`Disconnect::PeerNotActive`] when it evicted
    /// this peer; [`RecvError::BadDescriptor`] / [`RecvError::Ring`] when the host broke the
    /// protocol; [`RecvError::Futex`].
    pub fn recv(&self) -> Result<Frame, RecvError> {
        forever((), |(), deadline| self.recv_until(deadline))
    }

    /// [`recv`](Self::recv) without waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is there; [`TryRecvError::Failed`] with what
    /// [`recv`](Self::recv) fails with.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        forms::try_recv(self.recv_until(Deadline::Now))
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] after it; [`RecvTimeoutError::Failed`] with what
    /// [`recv`](Self::recv) fails with.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        within(timeout, |deadline| self.recv_until(deadline))
    }

    /// The receives: [`RecvTimeoutError::Timeout`] when `deadline` passes (`Deadline::Now`: at
    /// once) with nothing to receive.
    #[inline(always)] // as the receive below
    fn recv_until(&self, deadline: Deadline) -> Result<Frame, RecvTimeoutError> {
        self.recv_until_after_ring(deadline, None)
    }

    /// The blocking receive after a send whose wake is `pending` (see
    /// [`send_then_recv`](Self::send_then_recv)).
    fn recv_after_ring(&self, pending: Option<PendingWake<'_>>) -> Result<Frame, RecvError> {
        let mut pending = pending;
        forever((), |(), deadline| {
            self.recv_until_after_ring(deadline, pending.take())
        })
    }

    /// [`recv_until`](Self::recv_until), making the `pending` wake with its first sleep.
    /// Inlined, as [`Link::try_recv`] is: the frame is built once, in the caller's place.
    #[inline(always)]
    fn recv_until_after_ring(
        &self,
        deadline: Deadline,
        pending: Option<PendingWake<'_>>,
    ) -> Result<Frame, RecvTimeoutError> {
        // An evicted peer pops nothing: its receive ring may be another peer's by now.
        if let Some(state) = self.evicted() {
            return Err(RecvError::Disconnected(Disconnect::PeerNotActive {
                peer: self.id,
                state,
            })
            .into());
        }
        // Frames the host sent before it left are still delivered; then HostGone.
        if let Some(frame) = self
            .link
            .try_recv_unless_gone(&self.endpoint, &|| self.gone())?
        {
            return Ok(frame);
        }
        if let Deadline::Now = deadline {
            return Err(RecvTimeoutError::Timeout);
        }
        self.link
            .wait_recv(&self.endpoint, deadline, &|| self.gone(), pending)
    }

    /// Leave the hub (goodbye): the entry goes Active -> Dying and the host is told, so it
    /// recovers the entry (R10) for a new peer. Dropping the peer does the same. Frames and
    /// loans of this peer that are still held keep it attached until the last is dropped: the
    /// host must not reclaim a slot this process still reads.
    pub fn close(self) {}

    /// This peer's readiness descriptor, for an event loop (tokio's `AsyncFd`, mio, `epoll`):
    /// it becomes readable when a frame from the host may be waiting, after the peer
    /// [armed](Self::arm) itself. The `tokio` feature's `aio::AsyncPeer`
    /// does all of this. The protocol is the host's ([`Host::ready_fd`](crate::Host::ready_fd)):
    /// [`try_recv`](Self::try_recv) until empty, [`arm`](Self::arm), `try_recv` once more, then
    /// wait until readable, [`clear_ready`](Self::clear_ready), and start again. The descriptor
    /// turns readable every 100 ms by itself too, so that a gone host is noticed.
    ///
    /// A peer that attached with a ticket carrying its descriptors (every ticket the host
    /// hands out, inherited through [`Ticket::apply`](crate::Ticket::apply) or
    /// [`Host::spawn_peer`](crate::Host::spawn_peer)) is woken by the host itself, and a busy
    /// peer makes no system call. A peer attached from a [`TicketSpec`] without them (a path
    /// passed by other means) gets a waiter thread that sleeps on the futex and writes the
    /// descriptor: then every frame the host sends costs it a wake call.
    ///
    /// ```
    /// use hub_transport::{FrameMeta, Host, HubConfig, Peer};
    ///
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// let peer = Peer::attach(&host.add_peer()?)?;
    /// peer.arm();
    /// assert!(peer.try_recv().is_err()); // nothing yet: sleep on the descriptor
    /// host.send(peer.id(), FrameMeta::default(), b"hi")?;
    /// let mut fds = [rustix::event::PollFd::new(&peer, rustix::event::PollFlags::IN)]; // Peer: AsFd
    /// assert_eq!(rustix::event::poll(&mut fds, None)?, 1);
    /// peer.clear_ready();
    /// assert_eq!(peer.try_recv()?.payload(), b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// Give back the slots the peer keeps for its next loans (hub-alloc's kept slots), and wake
    /// allocators asleep on their classes: before the peer naps (the async loans and sends).
    #[cfg(all(feature = "tokio", not(loom)))] // only `aio` naps
    pub(crate) fn give_back_kept(&self) {
        self.endpoint.give_back_kept();
    }

    /// Announce that this peer is about to sleep on its [readiness descriptor](Self::ready_fd):
    /// the host's next send writes it. Look at the ring once more before sleeping. The slots
    /// the peer keeps for its next loans go back first (see hub-alloc's
    /// `Slab::give_back_kept`), so that nobody waits for one while it sleeps.
    pub fn arm(&self) {
        self.endpoint.give_back_kept();
        // With a waiter thread, the thread announces (it sleeps on the futex).
        if self.bridge.is_none() {
            self.link.arm(&self.endpoint.segment);
        }
    }

    /// Consume the readiness descriptor's pending wakeups (one `epoll_wait` that does not
    /// wait), after it was found readable and before arming again.
    pub fn clear_ready(&self) {
        self.ready.drain();
    }

    /// For an edge-triggered waiter (tokio) that never drains the set: re-arm its tick.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn rearm_tick(&self) {
        self.ready.rearm_tick();
    }

    /// One attempt to send a filled loan: `Ok(None)` when it went, `Ok(Some(loan))` with the
    /// loan back when the ring is full.
    pub(crate) fn try_send_loan_back(
        &self,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<Option<Loan>, SendError> {
        self.link
            .try_send(&self.endpoint, meta, loan, &|| self.gone(), None)
    }

    /// The wait mode of this peer.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn wait_mode(&self) -> WaitMode {
        self.endpoint.mode()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(bridge) = &self.bridge {
            bridge.stop();
        }
        // The goodbye comes with the endpoint's last handle (`PeerLife`): now, or when the last
        // frame or loan of this peer that holds a slot is dropped (inline ones hold none).
    }
}

const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Peer>();
};
