//! Async endpoints on tokio (feature `tokio`): [`AsyncHost`] and [`AsyncPeer`].
//!
//! Each wraps a [`Host`] or a [`Peer`] and registers its readiness descriptor
//! ([`Host::ready_fd`], [`Peer::ready_fd`]) with tokio's reactor through
//! [`AsyncFd`]. A receive looks at the rings first. In [`WaitMode::Adaptive`] (the default) it
//! then spins a few microseconds (pause instructions only), but only when the endpoint sent a
//! frame since it last received one (a reply may be on its way) and while such spins keep
//! catching their frame: a spin runs inside the executor's poll, where it would only delay
//! other tasks of the executor that make the next frame (an RPC server's handlers). Then, for
//! up to 200 µs, it gives its turn back to the executor, looking after each turn; only then
//! does it arm the endpoint (R11), look once more and wait for the descriptor.
//! [`WaitMode::Block`] arms at once; [`WaitMode::Spin`] keeps looking for up to 1 ms. While
//! frames keep coming, nothing is armed and no side makes a system call per frame (a turn in
//! which the executor has nothing else to run costs it one `epoll_wait` that does not wait).
//! Any number of tasks may wait on one endpoint at once.
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
//! let host = Host::create(&HubConfig::new().max_peers(1))?;
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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{
    Frame, FrameMeta, Host, Loan, LoanError, Peer, PeerRef, RecvError, SendCopyError, SendError,
    TryLoanError, TryRecvError, TrySendError, WaitMode,
};

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

/// An endpoint's readiness descriptor in the reactor, shared by every task that receives.
///
/// Tokio's readiness of a descriptor is one flag for all of them, and a task that consumes it
/// (`clear_ready`) could hide it from another task that armed but has not started waiting yet:
/// that task would sleep through a frame meant for it. So a consumer counts its consumption
/// first (`consumed`), and a waiter that finds no readiness after registering looks at the
/// count: if it moved since the waiter armed, the waiter looks at its ring again instead of
/// sleeping (an event count).
///
/// It also keeps the endpoint's spin budget ([`SpinBudget`]).
#[derive(Debug)]
struct Reactor {
    fd: AsyncFd<Readiness>,
    consumed: AtomicU64,
    spin: SpinBudget,
}

impl Reactor {
    fn new(fd: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            fd: register(fd)?,
            consumed: AtomicU64::new(0),
            spin: SpinBudget::new(),
        })
    }

    /// The count to give [`wait`](Self::wait), read before arming.
    fn mark(&self) -> u64 {
        self.consumed.load(Ordering::SeqCst)
    }

    /// Wait until the descriptor is readable (consuming it) or another task consumed it since
    /// `mark`; then the caller looks again. Registration comes before the count is checked, and
    /// a consumer counts before it clears: a clear this waiter cannot see is one it counts.
    async fn wait(&self, mark: u64) -> io::Result<()> {
        let mut readable = std::pin::pin!(self.fd.readable());
        poll_fn(|cx| match readable.as_mut().poll(cx) {
            Poll::Ready(Ok(mut guard)) => {
                self.consumed.fetch_add(1, Ordering::SeqCst);
                guard.clear_ready();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if self.consumed.load(Ordering::SeqCst) != mark => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

/// The receive loop of both sides: look; spin a moment and give turns back to the executor
/// for a while (not in `Block`); then arm, look again and wait for the descriptor, until a
/// look finds something (R11). Cancellation-safe: a frame is taken only by a look that
/// returns it.
async fn recv_with(
    reactor: &Reactor,
    mode: WaitMode,
    look: impl FnMut() -> Option<Result<Frame, RecvError>>,
    arm: impl Fn(),
    rearm_tick: impl Fn(),
) -> Result<Frame, RecvError> {
    let result = look_and_wait(reactor, mode, look, arm, rearm_tick).await;
    if result.is_ok() {
        reactor.spin.received();
    }
    result
}

/// [`recv_with`] but for noting what it received.
async fn look_and_wait(
    reactor: &Reactor,
    mode: WaitMode,
    mut look: impl FnMut() -> Option<Result<Frame, RecvError>>,
    arm: impl Fn(),
    rearm_tick: impl Fn(),
) -> Result<Frame, RecvError> {
    if let Some(result) = look() {
        return result;
    }
    // A short spin for a reply already on its way: pause instructions only, no system call.
    // It runs inside the executor's poll, where it delays every other task of the executor, so
    // it is skipped while spins of this endpoint keep running out (`SpinBudget`).
    let rounds = match mode {
        WaitMode::Block => 0,
        WaitMode::Adaptive | WaitMode::Spin => reactor.spin.rounds(),
    };
    let backoff = Backoff::new();
    for _ in 0..rounds {
        backoff.spin();
        if let Some(result) = look() {
            reactor.spin.caught();
            return result;
        }
    }
    if rounds > 0 {
        reactor.spin.missed();
    }
    // Then a bounded while of turns given back to the executor, looking after each: the reply
    // may be produced by other tasks of this executor (an RPC server's), which a spin inside
    // this poll would only delay. A turn in which the executor has nothing else to run costs
    // it one `epoll_wait` that does not wait; an endpoint with nothing coming sleeps soon.
    let turns = match mode {
        WaitMode::Block => Duration::ZERO,
        WaitMode::Adaptive => ADAPTIVE_TURNS,
        WaitMode::Spin => SPIN_TURNS,
    };
    if !turns.is_zero() {
        let until = Instant::now() + turns;
        while Instant::now() < until {
            tokio::task::yield_now().await;
            if let Some(result) = look() {
                return result;
            }
        }
    }
    loop {
        let mark = reactor.mark();
        arm();
        if let Some(result) = look() {
            return result;
        }
        reactor.wait(mark).await.map_err(RecvError::Readiness)?;
        // The set is never drained here: tokio's registration is edge-triggered, and every
        // write to a member wakes the set's watchers whether or not it was drained, while a
        // drain by one task could take the edge another task, already asleep, was waiting for.
        // Only the tick is read, which re-arms it.
        rearm_tick();
    }
}

/// How long an `Adaptive` receive keeps giving turns back to the executor before it arms.
const ADAPTIVE_TURNS: Duration = Duration::from_micros(200);

/// The same for `Spin`.
const SPIN_TURNS: Duration = Duration::from_millis(1);

/// Whether a receive of this endpoint spins before it gives turns back.
///
/// A spin runs inside the executor's poll. In a ping-pong with another process it catches the
/// reply without a system call; but where the next frame needs other tasks of the same
/// executor to run first (an RPC server's handlers, or a caller that must be handed its
/// response before it makes the next request), the spin cannot catch it and only delays them,
/// by the whole spin ([`SPIN_ROUNDS`], several microseconds). So a receive spins only
///
/// - when this endpoint sent a frame since it last received one: a reply may be on its way
///   (a receive right after a receive is how a task drains frames, or waits for work its own
///   executor makes); and
/// - when spins have been catching: after a spin that ran out, the next receive does not
///   spin; after another, the next two do not, then four, up to [`MAX_SKIPPED_SPINS`]; one
///   spin that catches its frame makes every receive spin again.
#[derive(Debug)]
struct SpinBudget {
    /// A frame was sent since a receive last returned one.
    sent: AtomicBool,
    /// Receives left that skip their spin.
    skip: AtomicU32,
    /// How many receives skip their spin after the next spin that runs out.
    after_miss: AtomicU32,
}

impl SpinBudget {
    fn new() -> Self {
        Self {
            sent: AtomicBool::new(false),
            skip: AtomicU32::new(0),
            after_miss: AtomicU32::new(1),
        }
    }

    /// Rounds to spin for this receive: [`SPIN_ROUNDS`], or none.
    fn rounds(&self) -> u32 {
        // Relaxed, here and below: a hint, kept by whichever tasks send and receive; a lost
        // update only makes one receive more or less spin.
        if !self.sent.load(Ordering::Relaxed) {
            return 0;
        }
        let skip = self.skip.load(Ordering::Relaxed);
        if skip == 0 {
            return SPIN_ROUNDS;
        }
        self.skip.store(skip - 1, Ordering::Relaxed);
        0
    }

    fn sent(&self) {
        self.sent.store(true, Ordering::Relaxed);
    }

    fn received(&self) {
        self.sent.store(false, Ordering::Relaxed);
    }

    fn caught(&self) {
        self.after_miss.store(1, Ordering::Relaxed);
    }

    fn missed(&self) {
        let skip = self.after_miss.load(Ordering::Relaxed);
        self.skip.store(skip, Ordering::Relaxed);
        self.after_miss
            .store((skip * 2).min(MAX_SKIPPED_SPINS), Ordering::Relaxed);
    }
}

/// Rounds of [`Backoff::spin`] (1, 2, 4 ... 64, 64 ... pause instructions) in a receive's spin:
/// 319 pause instructions, 2 to 10 µs depending on the processor.
const SPIN_ROUNDS: u32 = 10;

/// The most receives in a row that skip their spin after spins ran out: one spin in so many
/// receives is what an endpoint whose spins never catch anything pays for finding out.
const MAX_SKIPPED_SPINS: u32 = 256;

/// Naps while a ring is full or a class has no free slot: yields first, then sleeps 50 µs
/// doubling to 1 ms, giving back the slots its side keeps before each sleep (PROTOCOL.md, kept
/// slots: none withheld while a side naps).
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

    async fn take(&mut self, give_back_kept: impl FnOnce()) {
        self.rounds += 1;
        if self.rounds <= 4 {
            tokio::task::yield_now().await;
        } else {
            give_back_kept();
            tokio::time::sleep(self.next).await;
            self.next = (self.next * 2).min(Duration::from_millis(1));
        }
    }
}

/// `loan` on either side: a slot now, or naps until one is free, giving back the side's kept
/// slots (`give_back_kept`) before it sleeps.
async fn loan_with(
    try_loan: impl Fn() -> Result<Loan, TryLoanError>,
    give_back_kept: impl Fn(),
) -> Result<Loan, LoanError> {
    let mut nap = Nap::new();
    loop {
        match try_loan() {
            Ok(loan) => return Ok(loan),
            Err(TryLoanError::NoFreeSlots { .. }) => nap.take(&give_back_kept).await,
            Err(TryLoanError::Failed(error)) => return Err(error),
        }
    }
}

/// `send_loan` on either side: the loan goes now, or comes back from a full ring and is tried
/// again after a nap (the side's kept slots given back, `give_back_kept`, before it sleeps).
/// Dropped while it naps, the future drops the loan (its slot is freed).
async fn send_with(
    reactor: &Reactor,
    mut loan: Loan,
    try_send: impl Fn(Loan) -> Result<Option<Loan>, SendError>,
    give_back_kept: impl Fn(),
) -> Result<(), SendError> {
    let mut nap = Nap::new();
    loop {
        match try_send(loan)? {
            None => {
                reactor.spin.sent();
                return Ok(());
            }
            Some(back) => loan = back,
        }
        nap.take(&give_back_kept).await;
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
    reactor: Reactor,
}

impl AsyncHost {
    /// Register `host`'s readiness descriptor with the current tokio runtime.
    ///
    /// # Errors
    /// When called outside a runtime with I/O enabled, or when the descriptor cannot be
    /// duplicated or registered.
    pub fn new(host: Host) -> io::Result<Self> {
        let reactor = Reactor::new(host.ready_fd())?;
        Ok(Self { host, reactor })
    }

    /// The host, for everything that does not wait (peers, events, stats, `add_peer`).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host back, out of the runtime.
    pub fn into_host(self) -> Host {
        self.host
    }

    /// Receive the next frame from any peer; [`Frame::peer_id`] says whose. Cancellation-safe.
    /// Any number of tasks may receive at once; each frame goes to one of them.
    ///
    /// # Errors
    /// As [`Host::recv`], and [`RecvError::Readiness`] when the reactor fails.
    pub async fn recv(&self) -> Result<Frame, RecvError> {
        recv_with(
            &self.reactor,
            self.host.wait_mode(),
            || self.host.look_any(),
            || self.host.arm(),
            || self.host.rearm_tick(),
        )
        .await
    }

    /// Receive the next frame from `peer` only (a [`PeerId`](crate::PeerId): that life of the
    /// entry; a `u16`: whoever holds it). Cancellation-safe. A peer that leaves, dies or is
    /// evicted while this waits ends the wait with
    /// [`Disconnect::PeerNotActive`](crate::Disconnect::PeerNotActive) once the host has noticed
    /// (its liveness checks, and the descriptor's 100 ms tick) and the frames it sent are all
    /// taken; a `PeerId` whose entry has a new life, with
    /// [`Disconnect::PeerGone`](crate::Disconnect::PeerGone) (each in
    /// [`RecvError::Disconnected`]).
    ///
    /// # Errors
    /// As [`Host::recv_from`], and [`RecvError::Readiness`].
    pub async fn recv_from(&self, peer: impl Into<PeerRef>) -> Result<Frame, RecvError> {
        let peer = peer.into();
        recv_with(
            &self.reactor,
            self.host.wait_mode(),
            || self.host.look_from(peer),
            || self.host.arm_peer(peer),
            || self.host.rearm_tick(),
        )
        .await
    }

    /// A buffer of `len` bytes to fill in place and send with [`send_loan`](Self::send_loan),
    /// waiting for a free slot. Cancellation-safe (no slot is held until it returns).
    ///
    /// # Errors
    /// As [`Host::loan`].
    pub async fn loan(&self, len: usize) -> Result<Loan, LoanError> {
        loan_with(|| self.host.try_loan(len), || self.host.give_back_kept()).await
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
        send_with(
            &self.reactor,
            loan,
            |loan| self.host.try_send_loan_back(peer, meta, loan),
            || self.host.give_back_kept(),
        )
        .await
    }

    /// Send a filled loan to `peer` if its ring has room, without waiting: the loan comes back
    /// in [`TrySendError::Full`] when it has not. Use this rather than
    /// `host().try_send_loan`, which works too, but leaves the next receive of this endpoint
    /// unaware that a reply may be on its way (it then gives turns back at once rather than
    /// spinning a moment first).
    ///
    /// # Errors
    /// As [`Host::try_send_loan`].
    pub fn try_send_loan(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<(), TrySendError> {
        self.host.try_send_loan(peer, meta, loan)?;
        self.reactor.spin.sent();
        Ok(())
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
    ) -> Result<(), SendCopyError> {
        let mut loan = self.loan(payload.len()).await?;
        loan.as_mut_slice().copy_from_slice(payload);
        Ok(self.send_loan(peer, meta, loan).await?)
    }
}

/// A [`Peer`] on tokio: receives and sends are futures, woken through the peer's readiness
/// descriptor. See the [module](self) for an example.
#[derive(Debug)]
pub struct AsyncPeer {
    peer: Peer,
    reactor: Reactor,
}

impl AsyncPeer {
    /// Register `peer`'s readiness descriptor with the current tokio runtime.
    ///
    /// # Errors
    /// As [`AsyncHost::new`].
    pub fn new(peer: Peer) -> io::Result<Self> {
        let reactor = Reactor::new(peer.ready_fd())?;
        Ok(Self { peer, reactor })
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
    /// it left are delivered, then [`Disconnect::HostGone`](crate::Disconnect::HostGone) (in
    /// [`RecvError::Disconnected`]).
    ///
    /// # Errors
    /// As [`Peer::recv`], and [`RecvError::Readiness`].
    pub async fn recv(&self) -> Result<Frame, RecvError> {
        recv_with(
            &self.reactor,
            self.peer.wait_mode(),
            || match self.peer.try_recv() {
                Ok(frame) => Some(Ok(frame)),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Failed(error)) => Some(Err(error)),
            },
            || self.peer.arm(),
            || self.peer.rearm_tick(),
        )
        .await
    }

    /// A buffer of `len` bytes to fill in place, waiting for a free slot. Cancellation-safe.
    ///
    /// # Errors
    /// As [`Peer::loan`].
    pub async fn loan(&self, len: usize) -> Result<Loan, LoanError> {
        loan_with(|| self.peer.try_loan(len), || self.peer.give_back_kept()).await
    }

    /// Send a filled loan to the host, waiting for room. Dropped before it completes, the
    /// future frees the loan's slot and nothing is sent.
    ///
    /// # Errors
    /// As [`Peer::send_loan`].
    pub async fn send_loan(&self, meta: FrameMeta, loan: Loan) -> Result<(), SendError> {
        send_with(
            &self.reactor,
            loan,
            |loan| self.peer.try_send_loan_back(meta, loan),
            || self.peer.give_back_kept(),
        )
        .await
    }

    /// Send a filled loan to the host if the ring has room, without waiting: the loan comes
    /// back in [`TrySendError::Full`] when it has not. Use this rather than
    /// `peer().try_send_loan` (see [`AsyncHost::try_send_loan`]).
    ///
    /// # Errors
    /// As [`Peer::try_send_loan`].
    pub fn try_send_loan(&self, meta: FrameMeta, loan: Loan) -> Result<(), TrySendError> {
        self.peer.try_send_loan(meta, loan)?;
        self.reactor.spin.sent();
        Ok(())
    }

    /// Copy `payload` into a frame and send it to the host. Cancellation-safe.
    ///
    /// # Errors
    /// As [`Peer::send`].
    pub async fn send(&self, meta: FrameMeta, payload: &[u8]) -> Result<(), SendCopyError> {
        let mut loan = self.loan(payload.len()).await?;
        loan.as_mut_slice().copy_from_slice(payload);
        Ok(self.send_loan(meta, loan).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_SKIPPED_SPINS, SPIN_ROUNDS, SpinBudget};

    /// The spins of `n` receives in a row that all run out.
    fn misses(budget: &SpinBudget, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| {
                let rounds = budget.rounds();
                if rounds > 0 {
                    budget.missed();
                }
                rounds
            })
            .collect()
    }

    #[test]
    fn a_receive_spins_only_after_a_send() {
        let budget = SpinBudget::new();
        assert_eq!(budget.rounds(), 0, "nothing sent yet: no reply to wait for");
        budget.sent();
        assert_eq!(budget.rounds(), SPIN_ROUNDS);
        budget.received();
        assert_eq!(
            budget.rounds(),
            0,
            "a receive after a receive does not spin"
        );
    }

    #[test]
    fn spins_that_run_out_are_skipped_ever_longer_and_one_catch_restores_them() {
        let budget = SpinBudget::new();
        budget.sent();
        let s = SPIN_ROUNDS;
        // Spin, skip 1, spin, skip 2, spin, skip 4, spin.
        assert_eq!(
            misses(&budget, 11),
            [s, 0, s, 0, 0, s, 0, 0, 0, 0, s].to_vec()
        );
        // The skips stop growing at MAX_SKIPPED_SPINS.
        let long = misses(&budget, 4 * MAX_SKIPPED_SPINS as usize);
        let gaps: Vec<usize> = long
            .split(|&rounds| rounds > 0)
            .skip(1)
            .map(<[u32]>::len)
            .collect();
        assert!(
            gaps.iter().all(|&gap| gap <= MAX_SKIPPED_SPINS as usize),
            "{gaps:?}"
        );
        assert!(gaps.contains(&(MAX_SKIPPED_SPINS as usize)), "{gaps:?}");
        // A spin that catches its frame: the next receives spin again, and one miss skips one.
        while budget.rounds() == 0 {}
        budget.caught();
        assert_eq!(misses(&budget, 4), [s, 0, s, 0].to_vec());
    }
}
