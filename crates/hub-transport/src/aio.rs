//! Async endpoints on tokio (feature `tokio`): [`AsyncHost`] and [`AsyncPeer`].
//!
//! Each wraps a [`Host`] or a [`Peer`] and registers its readiness descriptor
//! ([`Host::ready_fd`], [`Peer::ready_fd`]) with tokio's reactor through
//! [`AsyncFd`]. A receive looks at the rings first, spins a bounded moment (as the blocking
//! calls do, unless the wait mode is [`WaitMode::Block`]), then arms the endpoint (R11), looks
//! once more and only then waits for the descriptor. While frames keep coming, nothing is
//! armed and no side makes a system call per frame.
//!
//! A full ring or an empty slot class is waited for with short naps (50 µs doubling to 1 ms,
//! on tokio's timer), as the blocking calls do: the consumer of a ring signals nobody when it
//! makes room, which keeps the busy path free of fences and system calls.
//!
//! Every future here is cancellation-safe: a receive takes a frame only in the poll that
//! returns it, so a receive dropped before it completes loses no frame; a send dropped before
//! it completes drops its loan, which frees the slot, and the frame is not sent.
//!
//! The runtime must have its I/O driver and timer on (`Builder::enable_all`, or
//! `#[tokio::main]`), and the endpoints must be made inside it.
//!
//! ```
//! use hub_transport::aio::{AsyncHost, AsyncPeer};
//! use hub_transport::{FrameMeta, Host, HubConfig, Peer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let host = Host::create(&HubConfig { max_peers: 1, ..HubConfig::default() })?;
//! let ticket = host.add_peer()?;
//! let host = AsyncHost::new(host)?;
//! let peer = AsyncPeer::new(Peer::attach(&ticket)?)?; // in a plugin: Peer::from_env()
//!
//! // The frame is owned: it moves into a task, and its slot is freed where it is dropped.
//! let echo = tokio::spawn(async move {
//!     let frame = peer.recv().await?;
//!     peer.send(*frame.meta(), frame.payload()).await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! host.send(ticket.peer_id(), FrameMeta { msg_id: 7, ..FrameMeta::default() }, &[1; 4096]).await?;
//! let reply = host.recv().await?;
//! assert_eq!((reply.meta().msg_id, reply.len()), (7, 4096));
//! echo.await??;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::task::{Context, Poll};
use std::time::Duration;

use crossbeam_utils::Backoff;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{Frame, FrameMeta, Host, Loan, Peer, PeerRef, RecvError, SendError, WaitMode};

/// A duplicate of an endpoint's readiness descriptor, owned by the reactor's registration.
#[derive(Debug)]
struct Readiness(OwnedFd);

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn register(fd: BorrowedFd<'_>) -> io::Result<AsyncFd<Readiness>> {
    // Registration panics outside a runtime: say so as an error instead.
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    // SAFETY: `Readiness` owns the duplicate, so the descriptor stays open and names the same
    // file description for as long as the `AsyncFd` owns it, and `as_raw_fd` always returns
    // that number.
    unsafe { AsyncFd::register_with_interest(Readiness(dup), Interest::READABLE) }
        .map_err(io::Error::from)
}

/// The receive loop of both sides: look; spin a bounded moment; arm, look again; wait for the
/// descriptor, consume its readiness, and start over (R11).
fn poll_frame(
    cx: &mut Context<'_>,
    fd: &AsyncFd<Readiness>,
    mode: WaitMode,
    mut look: impl FnMut() -> Option<Result<Frame, RecvError>>,
    arm: impl Fn(),
    clear: impl Fn(),
) -> Poll<Result<Frame, RecvError>> {
    if let Some(result) = look() {
        return Poll::Ready(result);
    }
    if mode != WaitMode::Block {
        // Spin, then yield the thread a few times (crossbeam's `Backoff`, as the blocking
        // calls do): a reply on its way is found without arming. The yields are system calls,
        // made only when the other side is slower than the spin; on a machine with a core for
        // each side a busy exchange makes none.
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            backoff.snooze();
            if let Some(result) = look() {
                return Poll::Ready(result);
            }
        }
    }
    loop {
        arm();
        if let Some(result) = look() {
            return Poll::Ready(result);
        }
        let mut guard = match fd.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(guard)) => guard,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(RecvError::Readiness(error))),
        };
        // Readiness is consumed before the next arm: a write after the arm sets it again.
        guard.clear_ready();
        clear();
        if let Some(result) = look() {
            return Poll::Ready(result);
        }
    }
}

/// Naps while a ring is full or a class has no free slot: yields first, then sleeps 50 µs
/// doubling to 1 ms.
struct Nap {
    rounds: u32,
    next: Duration,
}

impl Nap {
    fn new() -> Self {
        Self {
            rounds: 0,
            next: Duration::from_micros(50),
        }
    }

    async fn take(&mut self) {
        self.rounds += 1;
        if self.rounds <= 4 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(self.next).await;
            self.next = (self.next * 2).min(Duration::from_millis(1));
        }
    }
}

/// `loan` on either side: a slot now, or naps until one is free.
async fn loan_with(try_loan: impl Fn() -> Result<Loan, SendError>) -> Result<Loan, SendError> {
    let mut nap = Nap::new();
    loop {
        match try_loan() {
            Err(SendError::NoFreeSlots { .. }) => nap.take().await,
            other => return other,
        }
    }
}

/// `send_loan` on either side: the loan goes now, or comes back from a full ring and is tried
/// again after a nap. Dropped while it naps, the future drops the loan (its slot is freed).
async fn send_with(
    mut loan: Loan,
    try_send: impl Fn(Loan) -> Result<Option<Loan>, SendError>,
) -> Result<(), SendError> {
    let mut nap = Nap::new();
    loop {
        match try_send(loan)? {
            None => return Ok(()),
            Some(back) => loan = back,
        }
        nap.take().await;
    }
}

/// A [`Host`] on tokio: receives and sends are futures, woken through the host's one
/// readiness descriptor for all peers. See the [module](self) for an example.
///
/// Methods take `&self`; share it in an `Arc` between tasks. Several tasks may receive at
/// once (each frame goes to one of them) and send to different peers at once (each peer's ring
/// has a lock of its own).
#[derive(Debug)]
pub struct AsyncHost {
    host: Host,
    fd: AsyncFd<Readiness>,
}

impl AsyncHost {
    /// Register `host`'s readiness descriptor with the current tokio runtime.
    ///
    /// # Errors
    /// When called outside a runtime with I/O enabled, or when the descriptor cannot be
    /// duplicated or registered.
    pub fn new(host: Host) -> io::Result<Self> {
        let fd = register(host.ready_fd())?;
        Ok(Self { host, fd })
    }

    /// The host, for everything that does not wait (peers, events, stats, `add_peer`).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host back, out of the runtime.
    pub fn into_host(self) -> Host {
        self.host
    }

    /// Receive the next frame from any peer; [`Frame::peer`] says whose. Cancellation-safe.
    ///
    /// # Errors
    /// As [`Host::recv`], and [`RecvError::Readiness`] when the reactor fails.
    pub async fn recv(&self) -> Result<Frame, RecvError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receive the next frame from `peer` only. Cancellation-safe. A peer that leaves, dies
    /// or is evicted while this waits ends the wait with [`RecvError::PeerNotActive`] once the
    /// host has noticed (its liveness checks) and the frames it sent are all taken.
    ///
    /// # Errors
    /// As [`Host::recv_from`], and [`RecvError::Readiness`].
    pub async fn recv_from(&self, peer: impl Into<PeerRef>) -> Result<Frame, RecvError> {
        let peer = peer.into();
        poll_fn(|cx| self.poll_recv_from(cx, peer)).await
    }

    /// [`recv`](Self::recv) as a poll function, for `Stream` implementations: `Pending`
    /// registers `cx`'s waker.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Frame, RecvError>> {
        poll_frame(
            cx,
            &self.fd,
            self.host.wait_mode(),
            || self.host.look_any(),
            || self.host.arm(),
            || self.host.clear_ready(),
        )
    }

    /// [`recv_from`](Self::recv_from) as a poll function.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        peer: impl Into<PeerRef>,
    ) -> Poll<Result<Frame, RecvError>> {
        let peer = peer.into();
        poll_frame(
            cx,
            &self.fd,
            self.host.wait_mode(),
            || self.host.look_from(peer),
            || self.host.arm_peer(peer),
            || self.host.clear_ready(),
        )
    }

    /// A buffer of `len` bytes to fill in place and send with [`send_loan`](Self::send_loan),
    /// waiting for a free slot. Cancellation-safe (no slot is held until it returns).
    ///
    /// # Errors
    /// As [`Host::loan`].
    pub async fn loan(&self, len: usize) -> Result<Loan, SendError> {
        loan_with(|| self.host.try_loan(len)).await
    }

    /// Send a filled loan to `peer`, waiting for room in its ring. Dropped before it
    /// completes, the future frees the loan's slot and nothing is sent.
    ///
    /// # Errors
    /// As [`Host::send_loan`].
    pub async fn send_loan(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<(), SendError> {
        let peer = peer.into();
        send_with(loan, |loan| self.host.try_send_loan_back(peer, meta, loan)).await
    }

    /// Copy `payload` into a frame and send it to `peer` (inline up to 16 bytes), waiting for
    /// a slot and for room. Cancellation-safe as [`send_loan`](Self::send_loan).
    ///
    /// # Errors
    /// As [`Host::send`].
    pub async fn send(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let mut loan = self.loan(payload.len()).await?;
        loan.as_mut_slice().copy_from_slice(payload);
        self.send_loan(peer, meta, loan).await
    }
}

/// A [`Peer`] on tokio: receives and sends are futures, woken through the peer's readiness
/// descriptor. See the [module](self) for an example.
#[derive(Debug)]
pub struct AsyncPeer {
    peer: Peer,
    fd: AsyncFd<Readiness>,
}

impl AsyncPeer {
    /// Register `peer`'s readiness descriptor with the current tokio runtime.
    ///
    /// # Errors
    /// As [`AsyncHost::new`].
    pub fn new(peer: Peer) -> io::Result<Self> {
        let fd = register(peer.ready_fd())?;
        Ok(Self { peer, fd })
    }

    /// The peer, for everything that does not wait.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The peer back, out of the runtime.
    pub fn into_peer(self) -> Peer {
        self.peer
    }

    /// Receive the next frame from the host. Cancellation-safe. Frames the host sent before
    /// it left are delivered, then [`RecvError::HostGone`].
    ///
    /// # Errors
    /// As [`Peer::recv`], and [`RecvError::Readiness`].
    pub async fn recv(&self) -> Result<Frame, RecvError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll function, for `Stream` implementations.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Frame, RecvError>> {
        poll_frame(
            cx,
            &self.fd,
            self.peer.wait_mode(),
            || match self.peer.try_recv() {
                Err(RecvError::Empty) => None,
                other => Some(other),
            },
            || self.peer.arm(),
            || self.peer.clear_ready(),
        )
    }

    /// A buffer of `len` bytes to fill in place, waiting for a free slot. Cancellation-safe.
    ///
    /// # Errors
    /// As [`Peer::loan`].
    pub async fn loan(&self, len: usize) -> Result<Loan, SendError> {
        loan_with(|| self.peer.try_loan(len)).await
    }

    /// Send a filled loan to the host, waiting for room. Dropped before it completes, the
    /// future frees the loan's slot and nothing is sent.
    ///
    /// # Errors
    /// As [`Peer::send_loan`].
    pub async fn send_loan(&self, meta: FrameMeta, loan: Loan) -> Result<(), SendError> {
        send_with(loan, |loan| self.peer.try_send_loan_back(meta, loan)).await
    }

    /// Copy `payload` into a frame and send it to the host. Cancellation-safe.
    ///
    /// # Errors
    /// As [`Peer::send`].
    pub async fn send(&self, meta: FrameMeta, payload: &[u8]) -> Result<(), SendError> {
        let mut loan = self.loan(payload.len()).await?;
        loan.as_mut_slice().copy_from_slice(payload);
        self.send_loan(meta, loan).await
    }
}
