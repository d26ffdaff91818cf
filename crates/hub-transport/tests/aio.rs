//! The async endpoints (`hub_transport::aio`, feature `tokio`) and the readiness descriptors
//! under them, checked from the outside:
//!
//! - every async call across processes: an `AsyncHost` with eight tasks against two plugin
//!   processes running `AsyncPeer`, payloads inline, 4 KiB and 1 MiB, each checksummed;
//! - cancellation: every future of both sides dropped at random points, on full rings and
//!   exhausted classes, and still no frame lost or duplicated and no slot leaked;
//! - a plugin killed while the host awaits `recv_from` it; a late reply to a dead plugin's
//!   `PeerId` refused while the entry's next tenant runs;
//! - the readiness descriptors' write counts (`/proc/self/fdinfo`, `eventfd-count`): nothing
//!   written while the receiver is busy, one write per announcement;
//! - a peer attached without descriptors (its waiter thread writes its own);
//! - several tasks awaiting a receive on one `AsyncHost` at once.
//!
//! A plugin process here is this test binary run again (`async_peer_child`, which does nothing
//! unless [`ROLE_ENV`] is set), as the blocking plugins of tests/plugin are, with a tokio of its
//! own. The parent runs it as `<this binary> --exact async_peer_child --nocapture`, which libtest
//! (`cargo test`) and the binary under `cargo nextest run` both accept, through
//! `Host::spawn_peer` so that it inherits the ticket. It exits non-zero (libtest's failure status) on any failure.

#![cfg(feature = "tokio")]

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::fdinfo::{eventfd_count, eventfds_in_set, ticket_fd};
use common::pattern::{Rng, checksum, fill};
use common::{EventLog, TempFiles, WATCHDOG, assert_all_free, wait_exit};
use hub_layout::SegmentLayout;
use hub_transport::aio::{AsyncHost, AsyncPeer};
use hub_transport::{
    Disconnect, Frame, FrameMeta, Host, HubConfig, LoanError, Peer, PeerEvent, PeerId, RecvError,
    SendCopyError, SendError, SpecSource, TicketSpec, TryLoanError, TryRecvError, WaitMode,
};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

/// The environment variable that makes `async_peer_child` a plugin, and says which.
const ROLE_ENV: &str = "HUB_AIO_ROLE";
/// The name of that test function, for `--exact`.
const CHILD_TEST: &str = "async_peer_child";
/// `msg_id` of a plugin's greeting (its payload: its process id, little endian).
const HELLO: u64 = u64::MAX - 1;
/// `flags` bit: the last frame; the plugin answers with how many frames it echoed, and exits.
const QUIT: u32 = 1 << 31;
/// `flags` bit: echo this one through `loan` + `send_loan` rather than `send`.
const BY_LOAN: u32 = 1 << 30;
/// How long a plugin waits for the host before it fails (it never outlives a test that forgot
/// it: it also gets `SIGKILL` when its parent goes).
const CHILD_WATCHDOG: Duration = Duration::from_secs(60);
/// How long a wait that must end soon (a dead peer noticed within its liveness bound, a frame
/// delivered) may take before the test fails instead of hanging: a hang guard, never a measure.
const HANG_GUARD: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// A runtime as a plugin host would have: two workers, I/O and timers on.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A command that runs this test binary as a plugin in `role`.
fn plugin(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .args(["--exact", CHILD_TEST, "--nocapture"])
        .env(ROLE_ENV, role)
        .stdin(Stdio::null())
        // libtest's own report ("test result: ...") is not this test's: only failures matter,
        // and they go to standard error.
        .stdout(Stdio::null());
    command
}

/// `fut`, or a panic naming `what` if it takes longer than `limit` (a hang guard).
async fn guarded<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: still waiting after {limit:?}"),
    }
}

/// Poll `fut` once, with the current task's waker.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// A frame's metadata with the payload's checksum in `msg_id` (what the plugin checks).
fn checked_meta(payload: &[u8], channel: u32, index: u32, flags: u32) -> FrameMeta {
    FrameMeta {
        msg_id: checksum(payload),
        channel_id: channel,
        method_id: index,
        flags,
        ..FrameMeta::default()
    }
}

/// Receive the greeting of the plugin `id`, spawned as `child`.
async fn hello(host: &AsyncHost, id: PeerId, child: &Child) {
    let hello = guarded(WATCHDOG, "the plugin's hello", host.recv_from(id))
        .await
        .expect("hello");
    assert_eq!(hello.peer_id(), id);
    assert_eq!(hello.meta().msg_id, HELLO);
    assert_eq!(hello.payload(), child.id().to_le_bytes());
}

/// Tell plugin `id` to finish; the number of frames it says it echoed.
async fn quit(host: &AsyncHost, id: PeerId) -> u64 {
    let meta = FrameMeta {
        flags: QUIT,
        ..FrameMeta::default()
    };
    host.send(id, meta, b"quit").await.expect("quit");
    let answer = guarded(WATCHDOG, "the plugin's last word", host.recv_from(id))
        .await
        .expect("last word");
    assert_eq!(answer.meta().flags, QUIT, "{:?}", answer.meta());
    u64::from_le_bytes(answer.payload().try_into().expect("a count"))
}

/// Wait until the supervisor recovered `peer`, and check that the recovery found nothing left
/// behind: every slot the peer held was freed by its own frames and loans.
#[track_caller]
fn assert_recovered_clean(events: &mut EventLog<'_>, peer: u16) {
    let recovery = events.recovery(peer);
    assert_eq!(recovery.ring_slots_freed, 0, "{recovery:?}");
    assert_eq!(recovery.reclaimed.total(), 0, "{recovery:?}");
}

fn seed() -> u64 {
    let seed = std::env::var("HUB_AIO_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("seed {seed} (HUB_AIO_SEED={seed} replays it)");
    seed
}

// ---------------------------------------------------------------------------------------------
// The plugin process
// ---------------------------------------------------------------------------------------------

/// Not a test of its own: the body of the plugin processes the other tests spawn (see the
/// module). Without [`ROLE_ENV`] it returns at once.
#[test]
fn async_peer_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "echo" => runtime().block_on(echo_plugin()),
        other => panic!("unknown role {other:?}"),
    }
}

/// Attach, greet, then echo every frame (checking the checksum in its `msg_id`) from a task of
/// its own, by `send` or by `loan` + `send_loan` as its `BY_LOAN` bit says; on `QUIT`, wait for
/// the echoes, answer with their number and leave.
async fn echo_plugin() {
    let peer = Peer::from_env().expect("attach");
    let peer = Arc::new(AsyncPeer::new(peer).expect("register"));
    let hello = FrameMeta {
        msg_id: HELLO,
        ..FrameMeta::default()
    };
    peer.send(hello, &std::process::id().to_le_bytes())
        .await
        .expect("hello");
    let mut echoes = JoinSet::new();
    let mut echoed = 0u64;
    loop {
        let frame = guarded(CHILD_WATCHDOG, "the host's next frame", peer.recv())
            .await
            .expect("recv");
        let meta = *frame.meta();
        if meta.flags & QUIT != 0 {
            drop(frame);
            while let Some(echo) = echoes.join_next().await {
                echo.expect("echo task");
            }
            let last = FrameMeta {
                flags: QUIT,
                ..FrameMeta::default()
            };
            peer.send(last, &echoed.to_le_bytes()).await.expect("last");
            break;
        }
        assert_eq!(
            checksum(frame.payload()),
            meta.msg_id,
            "frame {meta:?} of {} bytes",
            frame.len()
        );
        echoed += 1;
        // The frame moves into the task; its slot is freed there.
        echoes.spawn(echo(Arc::clone(&peer), frame));
        while let Some(echo) = echoes.try_join_next() {
            echo.expect("echo task");
        }
    }
    drop(echoes);
    let peer = Arc::try_unwrap(peer).expect("the last handle");
    drop(peer.into_peer());
}

async fn echo(peer: Arc<AsyncPeer>, frame: Frame) {
    let meta = *frame.meta();
    if meta.flags & BY_LOAN != 0 {
        let mut loan = peer.loan(frame.len()).await.expect("loan");
        loan.as_mut_slice().copy_from_slice(frame.payload());
        drop(frame);
        peer.send_loan(meta, loan).await.expect("send_loan");
    } else {
        peer.send(meta, frame.payload()).await.expect("send");
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every async call, across processes
// ---------------------------------------------------------------------------------------------

const TASKS: u32 = 8;
const ROUND_TRIPS: u32 = 200;

/// The payload size of round trip `i` of task `task`: inline sizes, 4 KiB and 1 MiB.
fn round_trip_size(task: u32, i: u32) -> usize {
    match (task * 7 + i) % 12 {
        0 => 0,
        1 => 1,
        2 => 9,
        3 => 16,
        11 => 1 << 20,
        _ => 4096,
    }
}

/// Eight host tasks, each 200 round trips with one of two plugin processes (`AsyncPeer`
/// echoing from a task per frame). Requests go by `AsyncHost::send` and by `loan` +
/// `send_loan`; echoes come back by the plugin's `send` and `loan` + `send_loan`; the host
/// takes them with `recv` and with `recv_from` of either plugin (raced in one task), and
/// moves each frame into the task that asked. Every payload is checksummed on both sides, and
/// the metadata must come back as sent. At the end each plugin says how many frames it echoed,
/// exits with success, and the hub is as new: no slot held, nothing for recovery to free.
#[test]
fn every_async_call_across_processes() {
    let rt = runtime();
    let _enter = rt.enter();
    let host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    let (a, mut child_a) = host.spawn_peer(&mut plugin("echo")).expect("spawn a");
    let (b, mut child_b) = host.spawn_peer(&mut plugin("echo")).expect("spawn b");
    let host = Arc::new(AsyncHost::new(host).expect("register"));

    let echoed = rt.block_on(async {
        hello(&host, a, &child_a).await;
        hello(&host, b, &child_b).await;

        // One router receives for every task (by `recv`, or by `recv_from` of either plugin,
        // both raced in this one task) and hands each echo to the task that asked for it.
        let mut inboxes = Vec::new();
        let mut routes = Vec::new();
        for _ in 0..TASKS {
            let (route, inbox) = tokio::sync::mpsc::unbounded_channel::<Frame>();
            routes.push(route);
            inboxes.push(inbox);
        }
        let router = tokio::spawn({
            let host = Arc::clone(&host);
            async move {
                let (mut by_any, mut by_peer) = (0u32, [0u32; 2]);
                for k in 0..TASKS * ROUND_TRIPS {
                    let frame = if k % 2 == 0 {
                        by_any += 1;
                        host.recv().await
                    } else {
                        tokio::select! {
                            frame = host.recv_from(a) => { by_peer[0] += 1; frame }
                            frame = host.recv_from(b.index()) => { by_peer[1] += 1; frame }
                        }
                    }
                    .expect("recv");
                    let task = frame.meta().channel_id as usize;
                    routes[task].send(frame).expect("the task waits");
                }
                (by_any, by_peer)
            }
        });

        let mut tasks = JoinSet::new();
        for (task, mut inbox) in (0..TASKS).zip(inboxes) {
            let host = Arc::clone(&host);
            let peer = if task % 2 == 0 { a } else { b };
            tasks.spawn(async move {
                let mut request = vec![0u8; 1 << 20];
                for i in 0..ROUND_TRIPS {
                    let len = round_trip_size(task, i);
                    let flags = if i % 3 == 0 { BY_LOAN } else { 0 };
                    let seed = (u64::from(task) << 32) | u64::from(i);
                    let meta = if i % 2 == 0 {
                        fill(&mut request[..len], seed);
                        let meta = checked_meta(&request[..len], task, i, flags);
                        host.send(peer, meta, &request[..len]).await.expect("send");
                        meta
                    } else {
                        let mut loan = host.loan(len).await.expect("loan");
                        fill(loan.as_mut_slice(), seed);
                        let meta = checked_meta(loan.as_slice(), task, i, flags);
                        // By index now and then: whoever holds the entry (the same plugin).
                        if i % 4 == 1 {
                            host.send_loan(peer.index(), meta, loan).await
                        } else {
                            host.send_loan(peer, meta, loan).await
                        }
                        .expect("send_loan");
                        meta
                    };
                    let echo = guarded(HANG_GUARD, "an echo", inbox.recv())
                        .await
                        .expect("the router lives");
                    assert_eq!(echo.peer_id(), peer, "task {task} round trip {i}");
                    assert_eq!(*echo.meta(), meta, "task {task} round trip {i}");
                    assert_eq!(echo.len(), len, "task {task} round trip {i}");
                    assert_eq!(
                        checksum(echo.payload()),
                        meta.msg_id,
                        "task {task} round trip {i}"
                    );
                }
            });
        }
        while let Some(task) = tasks.join_next().await {
            task.expect("a host task");
        }
        let (by_any, by_peer) = router.await.expect("router");
        assert!(
            by_any > 0 && by_peer[0] > 0 && by_peer[1] > 0,
            "recv {by_any}, recv_from a {}, recv_from b {}",
            by_peer[0],
            by_peer[1]
        );
        [quit(&host, a).await, quit(&host, b).await]
    });
    let per_plugin = u64::from(TASKS / 2 * ROUND_TRIPS);
    assert_eq!(
        echoed,
        [per_plugin, per_plugin],
        "frames each plugin echoed"
    );

    let host = Arc::try_unwrap(host).expect("the last handle").into_host();
    assert!(
        wait_exit(&mut child_a, "plugin a").success(),
        "plugin a failed"
    );
    assert!(
        wait_exit(&mut child_b, "plugin b").success(),
        "plugin b failed"
    );
    let mut events = EventLog::new(&host);
    assert_recovered_clean(&mut events, a.index());
    assert_recovered_clean(&mut events, b.index());
    assert_all_free(&host.stats());
}

// ---------------------------------------------------------------------------------------------
// 2. Cancellation
// ---------------------------------------------------------------------------------------------

/// Ring capacity of the cancellation hub: small, so that rings fill.
const CAP: u32 = 8;
/// A payload of a 4 MiB or 16 MiB slot: in a hub that cannot grow, twelve of them at most.
const BIG: usize = 300 << 10;
/// The classes a [`BIG`] payload may take.
const BIG_CLASSES: [usize; 2] = [3, 4];
/// Frames each producer tries to send.
const ATTEMPTS: u64 = 2000;

/// When a future is dropped: after `n` polls that returned `Pending`, or once a time has
/// passed (whichever first; it is always polled at least once).
#[derive(Debug, Clone, Copy)]
struct Plan {
    polls: Option<u32>,
    within: Option<Duration>,
}

impl Plan {
    /// A random plan, which may let the future finish (within `max_wait`).
    fn random(rng: &mut Rng, max_wait: Duration) -> Self {
        match rng.below(10) {
            0..=2 => Self {
                polls: Some(1 + rng.below(4) as u32),
                within: Some(max_wait),
            },
            3..=6 => Self {
                polls: None,
                within: Some(rng.micros(3000).min(max_wait)),
            },
            _ => Self {
                polls: None,
                within: Some(max_wait),
            },
        }
    }

    /// A plan that drops the future soon: after one to four `Pending` polls or within 2 ms.
    fn soon(rng: &mut Rng) -> Self {
        if rng.percent(50) {
            Self {
                polls: Some(1 + rng.below(4) as u32),
                within: Some(Duration::from_millis(2)),
            }
        } else {
            Self {
                polls: None,
                within: Some(rng.micros(2000)),
            }
        }
    }
}

/// Run `fut` until it completes (`Some`) or `plan` drops it (`None`).
async fn run<F: Future>(plan: Plan, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut timer = pin!(plan.within.map(tokio::time::sleep));
    let mut pending = 0;
    std::future::poll_fn(|cx: &mut Context<'_>| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        pending += 1;
        if plan.polls.is_some_and(|n| pending >= n) {
            return Poll::Ready(None);
        }
        if let Some(timer) = timer.as_mut().as_pin_mut()
            && timer.poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// The nine futures of the async API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    HostRecv,
    HostRecvFrom,
    HostLoan,
    HostSendLoan,
    HostSend,
    PeerRecv,
    PeerLoan,
    PeerSendLoan,
    PeerSend,
}

const CALLS: [Call; 9] = [
    Call::HostRecv,
    Call::HostRecvFrom,
    Call::HostLoan,
    Call::HostSendLoan,
    Call::HostSend,
    Call::PeerRecv,
    Call::PeerLoan,
    Call::PeerSendLoan,
    Call::PeerSend,
];

/// Which way frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToPeer = 0,
    ToHost = 1,
}

/// What the tasks of the cancellation test count and tell each other.
#[derive(Default)]
struct Tally {
    /// Per [`Call`], futures dropped before they completed.
    dropped: [AtomicU64; 9],
    /// Per [`Call`], futures that completed.
    completed: [AtomicU64; 9],
    /// Per [`Call`] (the sends), futures dropped while the ring they would push into was full.
    dropped_on_full: [AtomicU64; 9],
    /// Per [`Call`] (the loans), futures dropped while every slot that fits was taken.
    dropped_on_empty_class: [AtomicU64; 9],
    /// Per [`Dir`], the producer is done.
    done: [AtomicBool; 2],
    /// Per [`Dir`], frames its producer saw sent.
    sent: [AtomicU64; 2],
}

impl Tally {
    fn count(&self, call: Call, outcome: &Option<impl Sized>) {
        let counter = match outcome {
            Some(_) => &self.completed,
            None => &self.dropped,
        };
        counter[call as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(counters: &[AtomicU64; 9], call: Call) -> u64 {
        counters[call as usize].load(Ordering::Relaxed)
    }

    fn is_done(&self, dir: Dir) -> bool {
        self.done[dir as usize].load(Ordering::Acquire)
    }
}

/// Both ends of the cancellation hub, and the calls of either direction.
#[derive(Clone)]
struct Ends {
    host: Arc<AsyncHost>,
    peer: Arc<AsyncPeer>,
    id: PeerId,
}

impl Ends {
    fn loan_call(dir: Dir) -> Call {
        match dir {
            Dir::ToPeer => Call::HostLoan,
            Dir::ToHost => Call::PeerLoan,
        }
    }

    fn send_call(dir: Dir, by_loan: bool) -> Call {
        match (dir, by_loan) {
            (Dir::ToPeer, false) => Call::HostSend,
            (Dir::ToPeer, true) => Call::HostSendLoan,
            (Dir::ToHost, false) => Call::PeerSend,
            (Dir::ToHost, true) => Call::PeerSendLoan,
        }
    }

    /// The receive of `dir`'s consumer, round `k`: the host alternates `recv`, `recv_from` the
    /// `PeerId` and `recv_from` the index.
    fn recv_call(dir: Dir, k: u64) -> Call {
        match dir {
            Dir::ToPeer => Call::PeerRecv,
            Dir::ToHost if k.is_multiple_of(3) => Call::HostRecv,
            Dir::ToHost => Call::HostRecvFrom,
        }
    }

    async fn loan(&self, dir: Dir, len: usize) -> Result<hub_transport::Loan, LoanError> {
        match dir {
            Dir::ToPeer => self.host.loan(len).await,
            Dir::ToHost => self.peer.loan(len).await,
        }
    }

    fn try_loan(&self, dir: Dir, len: usize) -> Result<hub_transport::Loan, TryLoanError> {
        match dir {
            Dir::ToPeer => self.host.host().try_loan(len),
            Dir::ToHost => self.peer.peer().try_loan(len),
        }
    }

    async fn send(
        &self,
        dir: Dir,
        seq: u64,
        meta: FrameMeta,
        data: &[u8],
    ) -> Result<(), SendCopyError> {
        match dir {
            Dir::ToPeer if seq.is_multiple_of(2) => self.host.send(self.id, meta, data).await,
            Dir::ToPeer => self.host.send(self.id.index(), meta, data).await,
            Dir::ToHost => self.peer.send(meta, data).await,
        }
    }

    async fn send_loan(
        &self,
        dir: Dir,
        seq: u64,
        meta: FrameMeta,
        loan: hub_transport::Loan,
    ) -> Result<(), SendError> {
        match dir {
            Dir::ToPeer if seq.is_multiple_of(2) => self.host.send_loan(self.id, meta, loan).await,
            Dir::ToPeer => self.host.send_loan(self.id.index(), meta, loan).await,
            Dir::ToHost => self.peer.send_loan(meta, loan).await,
        }
    }

    async fn recv(&self, dir: Dir, k: u64) -> Result<Frame, RecvError> {
        match (dir, k % 3) {
            (Dir::ToPeer, _) => self.peer.recv().await,
            (Dir::ToHost, 0) => self.host.recv().await,
            (Dir::ToHost, 1) => self.host.recv_from(self.id).await,
            (Dir::ToHost, _) => self.host.recv_from(self.id.index()).await,
        }
    }

    /// Descriptors waiting in `dir`'s ring.
    fn depth(&self, dir: Dir) -> u32 {
        let info = self.host.host().peers()[usize::from(self.id.index())];
        match dir {
            Dir::ToPeer => info.to_peer,
            Dir::ToHost => info.to_host,
        }
    }

    /// No slot a [`BIG`] payload fits is free.
    fn big_classes_empty(&self) -> bool {
        let stats = self.host.host().stats();
        BIG_CLASSES.iter().all(|&class| stats[class].free == 0)
    }
}

/// Frame `seq` of `len` bytes: its sequence number first, its complement last (when it fits).
fn stamp(buf: &mut [u8], seq: u64) {
    let len = buf.len();
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    if len >= 16 {
        buf[len - 8..].copy_from_slice(&(!seq).to_le_bytes());
    }
}

fn cancel_meta(dir: Dir, seq: u64, len: usize) -> FrameMeta {
    FrameMeta {
        msg_id: seq,
        channel_id: dir as u32,
        method_id: len as u32,
        ..FrameMeta::default()
    }
}

/// `dir`'s producer: [`ATTEMPTS`] frames, each by `send` or by `loan` + `send_loan`, each
/// future run under a random [`Plan`]. A frame counts as sent only when its send completed.
/// A frame tried while the ring is full (the consumer stalls until that happens) goes by
/// `send` and by `send_loan` in turn, with a plan that drops it soon.
async fn producer(ends: Ends, dir: Dir, mut rng: Rng, tally: Arc<Tally>) -> Vec<u64> {
    let mut sent = Vec::new();
    let mut buf = vec![0u8; BIG];
    let mut full_by_loan = false;
    for seq in 0..ATTEMPTS {
        if rng.percent(4) {
            // A slow moment: the consumer waits on an empty ring.
            tokio::time::sleep(rng.micros(1500)).await;
        }
        let full = ends.depth(dir) == CAP;
        let len = match rng.below(10) {
            _ if full => [8, 3000][rng.below(2) as usize],
            0..=2 => 8,
            3..=5 => 3000,
            _ => BIG,
        };
        let empty_class = len == BIG && ends.big_classes_empty();
        let by_loan = if full {
            full_by_loan = !full_by_loan;
            full_by_loan
        } else {
            rng.percent(50)
        };
        let meta = cancel_meta(dir, seq, len);
        let call = Ends::send_call(dir, by_loan);
        let plan = if full {
            Plan::soon(&mut rng)
        } else {
            Plan::random(&mut rng, Duration::from_millis(30))
        };
        let outcome = if by_loan {
            let loan_plan = Plan::random(&mut rng, Duration::from_millis(30));
            let loan_call = Ends::loan_call(dir);
            let loaned = run(loan_plan, ends.loan(dir, len)).await;
            tally.count(loan_call, &loaned);
            let Some(loan) = loaned else {
                if empty_class {
                    tally.dropped_on_empty_class[loan_call as usize]
                        .fetch_add(1, Ordering::Relaxed);
                }
                continue;
            };
            let mut loan = loan.expect("loan");
            stamp(loan.as_mut_slice(), seq);
            if rng.percent(3) {
                continue; // a loan given back unsent
            }
            run(plan, ends.send_loan(dir, seq, meta, loan))
                .await
                .map(|sent| sent.map_err(SendCopyError::from))
        } else {
            stamp(&mut buf[..len], seq);
            run(plan, ends.send(dir, seq, meta, &buf[..len])).await
        };
        tally.count(call, &outcome);
        match outcome {
            Some(result) => {
                result.unwrap_or_else(|e| panic!("{call:?} of frame {seq}: {e}"));
                sent.push(seq);
            }
            None if full => {
                tally.dropped_on_full[call as usize].fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }
    tally.sent[dir as usize].store(sent.len() as u64, Ordering::Relaxed);
    tally.done[dir as usize].store(true, Ordering::Release);
    sent
}

/// `dir`'s consumer: receives under random plans until it has as many frames as the producer
/// sent, checking each (in order, stamped, of the length its metadata says); keeps some
/// frames a while, drops some in tasks of their own. Now and then it stops receiving until the
/// ring is full and the producer has dropped a `send` and a `send_loan` on it.
async fn consumer(ends: Ends, dir: Dir, mut rng: Rng, tally: Arc<Tally>) -> Vec<u64> {
    let mut got: Vec<u64> = Vec::new();
    let mut held = VecDeque::new();
    let mut later = JoinSet::new();
    let mut next_stall = 30 + rng.below(60) as usize;
    let mut progress = Instant::now();
    for k in 0.. {
        if tally.is_done(dir)
            && got.len() as u64 >= tally.sent[dir as usize].load(Ordering::Relaxed)
        {
            break;
        }
        assert!(
            progress.elapsed() < WATCHDOG,
            "{dir:?}: no frame for {WATCHDOG:?}; {} received, producer done: {}",
            got.len(),
            tally.is_done(dir)
        );
        if got.len() >= next_stall {
            held.clear();
            stall(&ends, dir, &tally).await;
            next_stall = got.len() + 80 + rng.below(120) as usize;
            progress = Instant::now();
        }
        if rng.percent(4) {
            // A slow moment: the producer waits on a full ring.
            tokio::time::sleep(rng.micros(1500)).await;
        }
        let call = Ends::recv_call(dir, k);
        let plan = Plan::random(&mut rng, Duration::from_millis(5));
        let outcome = run(plan, ends.recv(dir, k)).await;
        tally.count(call, &outcome);
        let Some(frame) = outcome else { continue };
        let frame = frame.unwrap_or_else(|e| panic!("{call:?}: {e}"));
        let meta = *frame.meta();
        let seq = meta.msg_id;
        assert_eq!(meta.channel_id, dir as u32, "{meta:?}");
        assert_eq!(frame.len(), meta.method_id as usize, "{meta:?}");
        let mut expected = vec![0u8; 16.min(frame.len())];
        stamp(&mut expected, seq);
        assert_eq!(&frame.payload()[..8], &expected[..8], "frame {seq}");
        if frame.len() >= 16 {
            assert_eq!(
                &frame.payload()[frame.len() - 8..],
                &(!seq).to_le_bytes(),
                "frame {seq}"
            );
        }
        assert!(
            got.last().is_none_or(|&last| last < seq),
            "{dir:?}: frame {seq} after {:?}",
            got.last()
        );
        got.push(seq);
        progress = Instant::now();
        match rng.below(10) {
            0..=5 => drop(frame),
            6..=7 => {
                held.push_back(frame);
                while held.len() > rng.below(6) as usize {
                    held.pop_front();
                }
            }
            _ => {
                let nap = rng.micros(2000);
                later.spawn(async move {
                    tokio::time::sleep(nap).await;
                    drop(frame);
                });
            }
        }
        while let Some(task) = later.try_join_next() {
            task.expect("a task holding a frame");
        }
    }
    drop(held);
    while let Some(task) = later.join_next().await {
        task.expect("a task holding a frame");
    }
    got
}

/// The consumer's pause: until `dir`'s ring is full and the producer has since dropped one
/// send of each kind on it (or is done).
async fn stall(ends: &Ends, dir: Dir, tally: &Tally) {
    let deadline = Instant::now() + WATCHDOG;
    let wait = |what: &str| {
        assert!(Instant::now() < deadline, "{dir:?} stall: {what}");
    };
    while ends.depth(dir) < CAP && !tally.is_done(dir) {
        wait("the ring never filled");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let kinds = [Ends::send_call(dir, false), Ends::send_call(dir, true)];
    let before = kinds.map(|call| Tally::get(&tally.dropped_on_full, call));
    while !tally.is_done(dir)
        && kinds
            .iter()
            .zip(before)
            .any(|(&call, n)| Tally::get(&tally.dropped_on_full, call) == n)
    {
        wait("no send dropped on the full ring");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Now and then takes every slot a [`BIG`] payload fits (alternately as the host and as the
/// peer), drops a `loan` future that waits for one, holds them a few milliseconds, gives them
/// back.
async fn hog(ends: Ends, mut rng: Rng, tally: Arc<Tally>) -> u64 {
    let mut rounds = 0u64;
    loop {
        if rounds >= 2 && tally.is_done(Dir::ToPeer) && tally.is_done(Dir::ToHost) {
            return rounds;
        }
        if rounds >= 2 {
            tokio::time::sleep(Duration::from_micros(2000 + rng.below(8000))).await;
        }
        let dir = if rounds.is_multiple_of(2) {
            Dir::ToPeer
        } else {
            Dir::ToHost
        };
        let call = Ends::loan_call(dir);
        let mut held = Vec::new();
        // Until a loan future is dropped while it waits on an exhausted class: a slot freed
        // meanwhile (another task's frame) is taken as well, and there are finitely many.
        loop {
            while let Ok(loan) = ends.try_loan(dir, BIG) {
                held.push(loan);
            }
            let outcome = run(Plan::soon(&mut rng), ends.loan(dir, BIG)).await;
            tally.count(call, &outcome);
            match outcome {
                None => {
                    tally.dropped_on_empty_class[call as usize].fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(loan) => held.push(loan.expect("hog loan")),
            }
        }
        tokio::time::sleep(rng.micros(4000)).await;
        drop(held);
        rounds += 1;
    }
}

/// Every future of both sides dropped at random points (after a random number of `Pending`
/// polls, or after a random time), many times, in a hub whose rings hold 8 frames and whose
/// large classes hold 12 slots and cannot grow: producers and consumers in both directions,
/// a consumer that stalls until its ring is full, a task that takes every large slot now and
/// then. Every frame a sender saw sent arrives exactly once, in order, intact; nothing else
/// arrives; every future kind was dropped (sends on a full ring, loans on an exhausted class);
/// and at the end every slot is free and the peer's recovery finds nothing to free.
#[test]
fn dropped_futures_lose_no_frame_and_leak_no_slot() {
    let seed = seed();
    let rt = runtime();
    let _enter = rt.enter();
    let (max_peers, ring_capacity) = (1, CAP);
    let initial = SegmentLayout::new(max_peers, ring_capacity)
        .expect("layout")
        .initial_size();
    let host = Host::create(
        &HubConfig::new()
            .max_peers(max_peers)
            .ring_capacity(ring_capacity)
            .max_size(initial),
    )
    .expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let id = ticket.id();
    let peer = Peer::attach(&ticket).expect("attach");
    let ends = Ends {
        host: Arc::new(AsyncHost::new(host).expect("register host")),
        peer: Arc::new(AsyncPeer::new(peer).expect("register peer")),
        id,
    };
    let tally = Arc::new(Tally::default());

    rt.block_on(async {
        // First, receives dropped on empty rings: at their first `Pending`, and after they
        // armed and slept on the descriptor a while.
        for plan in [
            Plan {
                polls: Some(1),
                within: None,
            },
            Plan {
                polls: None,
                within: Some(Duration::from_millis(3)),
            },
        ] {
            for (dir, k) in [
                (Dir::ToHost, 0),
                (Dir::ToHost, 1),
                (Dir::ToHost, 2),
                (Dir::ToPeer, 0),
            ] {
                let outcome = run(plan, ends.recv(dir, k)).await;
                assert!(
                    outcome.is_none(),
                    "{dir:?} {k}: {outcome:?} from an empty ring"
                );
                tally.count(Ends::recv_call(dir, k), &outcome);
            }
        }

        let mut rng = Rng::new(seed);
        let mut rng = || Rng::new(rng.next());
        let producers = [Dir::ToPeer, Dir::ToHost]
            .map(|dir| tokio::spawn(producer(ends.clone(), dir, rng(), Arc::clone(&tally))));
        let consumers = [Dir::ToPeer, Dir::ToHost]
            .map(|dir| tokio::spawn(consumer(ends.clone(), dir, rng(), Arc::clone(&tally))));
        let hog = tokio::spawn(hog(ends.clone(), rng(), Arc::clone(&tally)));
        for (dir, (producer, consumer)) in [Dir::ToPeer, Dir::ToHost]
            .into_iter()
            .zip(producers.into_iter().zip(consumers))
        {
            let sent = producer.await.expect("producer");
            let got = consumer.await.expect("consumer");
            assert!(
                sent.len() as u64 > ATTEMPTS / 4,
                "{dir:?}: only {} of {ATTEMPTS} sent (seed {seed})",
                sent.len()
            );
            assert_eq!(
                got, sent,
                "{dir:?}: frames received are not those sent (seed {seed})"
            );
        }
        let rounds = hog.await.expect("hog");
        eprintln!("the large classes were taken {rounds} times");
    });

    // Nothing else is waiting, in either ring.
    assert!(matches!(
        ends.host.host().try_recv(),
        Err(TryRecvError::Empty)
    ));
    assert!(matches!(
        ends.peer.peer().try_recv(),
        Err(TryRecvError::Empty)
    ));
    for call in CALLS {
        let (dropped, completed) = (
            Tally::get(&tally.dropped, call),
            Tally::get(&tally.completed, call),
        );
        eprintln!(
            "{call:?}: {dropped} dropped ({} on a full ring, {} on an empty class), {completed} completed",
            Tally::get(&tally.dropped_on_full, call),
            Tally::get(&tally.dropped_on_empty_class, call)
        );
        assert!(dropped > 0, "{call:?} never dropped (seed {seed})");
        assert!(completed > 0, "{call:?} never completed (seed {seed})");
    }
    for call in [
        Call::HostSend,
        Call::HostSendLoan,
        Call::PeerSend,
        Call::PeerSendLoan,
    ] {
        let n = Tally::get(&tally.dropped_on_full, call);
        assert!(n > 0, "{call:?} never dropped on a full ring (seed {seed})");
    }
    for call in [Call::HostLoan, Call::PeerLoan] {
        let n = Tally::get(&tally.dropped_on_empty_class, call);
        assert!(
            n > 0,
            "{call:?} never dropped on an empty class (seed {seed})"
        );
    }

    // Every frame and loan is gone: every slot is free, with the peer still attached.
    let Ends { host, peer, .. } = ends;
    assert_all_free(&host.host().stats());
    let host = Arc::try_unwrap(host)
        .expect("the last host handle")
        .into_host();
    let peer = Arc::try_unwrap(peer)
        .expect("the last peer handle")
        .into_peer();
    drop(peer);
    let mut events = EventLog::new(&host);
    events.wait(
        "Goodbye",
        |e| matches!(e, PeerEvent::Goodbye { peer } if *peer == id.index()),
    );
    assert_recovered_clean(&mut events, id.index());
    assert_all_free(&host.stats());
}

// ---------------------------------------------------------------------------------------------
// 3. A plugin killed while the host awaits it
// ---------------------------------------------------------------------------------------------

/// A plugin is killed (`SIGKILL`) while the host awaits `recv_from` it, by its `PeerId` and
/// then (a second plugin in the same entry) by its index: each await ends with
/// `PeerNotActive` or `PeerGone` once the host has noticed, well within a generous guard.
#[test]
fn recv_from_a_killed_plugin_ends() {
    let rt = runtime();
    let _enter = rt.enter();
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let host = Arc::new(AsyncHost::new(host).expect("register"));
    for by_index in [false, true] {
        let (id, mut child) = host.host().spawn_peer(&mut plugin("echo")).expect("spawn");
        let ended = rt.block_on(async {
            hello(&host, id, &child).await;
            let waiter = tokio::spawn({
                let host = Arc::clone(&host);
                async move {
                    if by_index {
                        host.recv_from(id.index()).await
                    } else {
                        host.recv_from(id).await
                    }
                }
            });
            // The plugin sends nothing more: the await cannot end while it lives. It waits
            // through a few of its descriptor's 100 ms ticks first, so that what ends it is
            // not the first tick alone (a timer that stopped after one would hang here).
            tokio::time::sleep(Duration::from_millis(350)).await;
            assert!(
                !waiter.is_finished(),
                "recv_from ended while the plugin lives"
            );
            child.kill().expect("kill");
            let killed = Instant::now();
            let ended = guarded(HANG_GUARD, "recv_from a killed plugin", waiter)
                .await
                .expect("the waiting task");
            eprintln!(
                "recv_from (by index: {by_index}) ended {:?} after the kill",
                killed.elapsed()
            );
            ended
        });
        match ended {
            Err(RecvError::Disconnected(Disconnect::PeerNotActive { peer, .. })) => {
                assert_eq!(peer, id.index());
            }
            Err(RecvError::Disconnected(Disconnect::PeerGone { peer })) if !by_index => {
                assert_eq!(peer, id);
            }
            other => panic!("recv_from a killed plugin (by index: {by_index}): {other:?}"),
        }
        let status = wait_exit(&mut child, "the plugin");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        let mut events = EventLog::new(host.host());
        events.recovery(id.index());
    }
    assert_all_free(&host.host().stats());
}

// ---------------------------------------------------------------------------------------------
// 4. A late reply to a dead plugin
// ---------------------------------------------------------------------------------------------

/// Plugin A (the hub's only entry) sends a request, the host keeps its `PeerId`, A is killed
/// and its entry recovered and given to plugin B, which exchanges frames with the host. Then a
/// reply to A's id fails with `PeerGone` (by `send`, by `send_loan`, and blocking), its loan's
/// slot comes back, `recv_from` A's id fails likewise, and B never gets the reply: B echoes
/// everything, and after the late reply the host gets only the echo of its own next frame,
/// then B's count of frames, which is exactly what the host sent it.
#[test]
fn a_late_reply_to_a_dead_plugin_never_reaches_the_next() {
    let rt = runtime();
    let _enter = rt.enter();
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let host = AsyncHost::new(host).expect("register");
    let (_, mut child_a) = host
        .host()
        .spawn_peer(&mut plugin("echo"))
        .expect("spawn a");
    let old = rt.block_on(async {
        let request = guarded(WATCHDOG, "A's request", host.recv())
            .await
            .expect("request");
        assert_eq!(request.meta().msg_id, HELLO);
        request.peer_id()
    });
    child_a.kill().expect("kill a");
    wait_exit(&mut child_a, "plugin a");
    EventLog::new(host.host()).recovery(old.index());

    let (new, mut child_b) = host
        .host()
        .spawn_peer(&mut plugin("echo"))
        .expect("spawn b");
    assert_eq!(new.index(), old.index(), "the same entry");
    assert_ne!(new, old, "a new life of it");
    let payload = |i: u32| vec![i as u8; if i.is_multiple_of(2) { 12 } else { 5000 }];
    rt.block_on(async {
        hello(&host, new, &child_b).await;
        // B at work: a few round trips.
        for i in 0..10 {
            let data = payload(i);
            let meta = checked_meta(&data, 0, i, 0);
            host.send(new, meta, &data).await.expect("send to b");
            let echo = guarded(WATCHDOG, "B's echo", host.recv_from(new))
                .await
                .expect("echo");
            assert_eq!(*echo.meta(), meta);
        }

        // The late reply to A, three ways; and a receive from A.
        let late = payload(1001);
        assert!(late.len() > 16, "a payload in a slot");
        let late_meta = checked_meta(&late, 0, 1001, 0);
        let gone = |result: Result<(), SendCopyError>, how: &str| match result {
            Err(SendCopyError::Disconnected(Disconnect::PeerGone { peer })) => {
                assert_eq!(peer, old, "{how}");
            }
            other => panic!("{how} to a dead plugin's id: {other:?}"),
        };
        gone(host.send(old, late_meta, &late).await, "send");
        let mut loan = host.loan(late.len()).await.expect("loan");
        loan.as_mut_slice().copy_from_slice(&late);
        match host.send_loan(old, late_meta, loan).await {
            Err(SendError::Disconnected(Disconnect::PeerGone { peer })) => {
                assert_eq!(peer, old, "send_loan");
            }
            other => panic!("send_loan to a dead plugin's id: {other:?}"),
        }
        gone(host.host().send(old, late_meta, &late), "a blocking send");
        match host.recv_from(old).await {
            Err(RecvError::Disconnected(Disconnect::PeerGone { peer })) => assert_eq!(peer, old),
            other => panic!("recv_from a dead plugin's id: {other:?}"),
        }

        // B gets the next frame, and nothing before it.
        let data = payload(11);
        let meta = checked_meta(&data, 0, 11, 0);
        host.send(new, meta, &data).await.expect("send to b");
        let echo = guarded(WATCHDOG, "B's echo", host.recv_from(new))
            .await
            .expect("echo");
        assert_eq!(
            *echo.meta(),
            meta,
            "B echoed a frame the host did not send it"
        );
        assert_eq!(quit(&host, new).await, 11, "frames B received");
    });
    assert!(
        wait_exit(&mut child_b, "plugin b").success(),
        "plugin b failed"
    );
    let host = host.into_host();
    let mut events = EventLog::new(&host);
    assert_recovered_clean(&mut events, new.index());
    assert_all_free(&host.stats());
}

// ---------------------------------------------------------------------------------------------
// 5. No system call while busy
// ---------------------------------------------------------------------------------------------

/// The busy path makes no system call, observed from outside the transport: the write count
/// of the readiness eventfds the ticket names. 1000 frames each way, the receiver taking them
/// by the async `recv` as they come, never arming: nothing written. The receiver arms: the
/// next frame writes once, the one after not at all (one write per announcement). An async
/// receive that waits arms by itself: the next frame writes once more, and wakes it.
#[test]
fn a_busy_receiver_costs_no_descriptor_write() {
    let rt = runtime();
    let _enter = rt.enter();
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let (to_peer, to_host) = (
        ticket_fd(&ticket.env_value(), "ready"),
        ticket_fd(&ticket.env_value(), "notify"),
    );
    let id = ticket.id();
    // `Block`: a receive that finds nothing arms at once, so a pending receive is an armed one
    // (in `Adaptive` it first gives turns back to the executor, unarmed, for up to 200 µs).
    let mut peer = Peer::attach(&ticket).expect("attach");
    peer.set_wait_mode(WaitMode::Block);
    let peer = AsyncPeer::new(peer).expect("register peer");
    let mut host = host;
    host.set_wait_mode(WaitMode::Block);
    let host = AsyncHost::new(host).expect("register host");
    let meta = |i: u64| FrameMeta {
        msg_id: i,
        ..FrameMeta::default()
    };
    assert_eq!((eventfd_count(to_peer), eventfd_count(to_host)), (0, 0));

    rt.block_on(async {
        // Host to peer, in bursts the ring holds; the peer takes them as they come.
        for burst in 0..10u64 {
            for i in burst * 100..(burst + 1) * 100 {
                let size = if i % 2 == 0 { 8 } else { 2000 };
                host.send(id, meta(i), &vec![1; size]).await.expect("send");
            }
            for i in burst * 100..(burst + 1) * 100 {
                let frame = peer.recv().await.expect("recv");
                assert_eq!(frame.meta().msg_id, i);
            }
        }
        assert_eq!(eventfd_count(to_peer), 0, "writes while the peer was busy");

        peer.peer().arm();
        host.send(id, meta(1000), b"armed").await.expect("send");
        assert_eq!(eventfd_count(to_peer), 1, "the write for the announcement");
        host.send(id, meta(1001), b"again").await.expect("send");
        assert_eq!(
            eventfd_count(to_peer),
            1,
            "a second write for one announcement"
        );
        for i in [1000, 1001] {
            assert_eq!(peer.recv().await.expect("recv").meta().msg_id, i);
        }
        let mut waiting = Box::pin(peer.recv());
        assert!(
            poll_once(&mut waiting).await.is_pending(),
            "nothing sent yet"
        );
        host.send(id, meta(1002), b"wake").await.expect("send");
        assert_eq!(
            eventfd_count(to_peer),
            2,
            "the waiting receive's announcement"
        );
        let frame = guarded(HANG_GUARD, "the waiting receive", waiting)
            .await
            .expect("recv");
        assert_eq!(frame.meta().msg_id, 1002);

        // Peer to host, likewise.
        for burst in 0..10u64 {
            for i in burst * 100..(burst + 1) * 100 {
                let size = if i % 2 == 0 { 8 } else { 2000 };
                peer.send(meta(i), &vec![2; size]).await.expect("send");
            }
            for i in burst * 100..(burst + 1) * 100 {
                let frame = host.recv().await.expect("recv");
                assert_eq!(frame.meta().msg_id, i);
            }
        }
        assert_eq!(eventfd_count(to_host), 0, "writes while the host was busy");
        host.host().arm();
        peer.send(meta(1000), b"armed").await.expect("send");
        assert_eq!(eventfd_count(to_host), 1, "the write for the announcement");
        peer.send(meta(1001), b"again").await.expect("send");
        assert_eq!(
            eventfd_count(to_host),
            1,
            "a second write for one announcement"
        );
        for i in [1000, 1001] {
            assert_eq!(host.recv_from(id).await.expect("recv").meta().msg_id, i);
        }
        let mut waiting = Box::pin(host.recv_from(id));
        assert!(
            poll_once(&mut waiting).await.is_pending(),
            "nothing sent yet"
        );
        peer.send(meta(1002), b"wake").await.expect("send");
        assert_eq!(
            eventfd_count(to_host),
            2,
            "the waiting receive's announcement"
        );
        let frame = guarded(HANG_GUARD, "the waiting receive", waiting)
            .await
            .expect("recv");
        assert_eq!(frame.meta().msg_id, 1002);
    });
    assert_eq!(eventfd_count(to_peer), 2);
    drop(peer);
    assert_all_free(&host.host().stats());
}

// ---------------------------------------------------------------------------------------------
// 6. A peer without readiness descriptors
// ---------------------------------------------------------------------------------------------

/// The one eventfd in readiness set `set` (a peer's: its own eventfd beside the timer).
fn eventfd_in_set(set: RawFd) -> RawFd {
    match eventfds_in_set(set)[..] {
        [fd] => fd,
        ref other => panic!("{} eventfds in set {set}", other.len()),
    }
}

/// Binds the calling thread to the CPU it runs on, until dropped. Threads it starts meanwhile
/// inherit the binding (and keep it): they can run only when this one blocks, yields or is
/// preempted.
struct OneCpu(rustix::thread::CpuSet);

impl OneCpu {
    fn bind() -> Self {
        let all = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
        let mut one = rustix::thread::CpuSet::new();
        one.set(rustix::thread::sched_getcpu());
        rustix::thread::sched_setaffinity(None, &one).expect("sched_setaffinity");
        Self(all)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        rustix::thread::sched_setaffinity(None, &self.0).expect("sched_setaffinity");
    }
}

/// Peers attached from a `TicketSpec` without readiness descriptors (a named hub, by path)
/// still receive through `AsyncPeer::recv`: each time one waits, the host's frame wakes its
/// waiter thread, which writes the peer's own eventfd (its write count, read from outside,
/// goes up with each frame) and so wakes the receive. Sixteen such peers each get a frame as
/// soon as they are attached and waiting (a frame right after the attach is signalled too),
/// the last one twenty frames in turn.
#[test]
fn a_peer_without_descriptors_receives_through_its_waiter_thread() {
    const PEERS: u16 = 16;
    let rt = runtime();
    let _enter = rt.enter();
    let mut files = TempFiles::default();
    let host = Host::create(
        &HubConfig::new()
            .max_peers(PEERS)
            .path(files.path("aio-fallback")),
    )
    .expect("create");
    let host = AsyncHost::new(host).expect("register host");
    let mut peers = Vec::new();
    rt.block_on(async {
        for n in 0..PEERS {
            let ticket = host.host().add_peer().expect("add_peer");
            // A path ticket's value names no descriptor: a peer attaching with it has none.
            let spec = TicketSpec::parse(&ticket.env_value()).expect("parse");
            assert!(matches!(spec.source, SpecSource::Path(_)), "{spec:?}");
            assert!(spec.ready.is_none(), "a path ticket names no descriptor");
            // The first frame follows the attach at once, with the threads the attach starts
            // bound to this thread's CPU (so they are unlikely to run before the send).
            let one_cpu = OneCpu::bind();
            let mut peer = Peer::attach_spec(&spec).expect("attach");
            peer.set_wait_mode(WaitMode::Block); // it arms at once, without spinning first
            let peer = AsyncPeer::new(peer).expect("register peer");
            let frames = if n == PEERS - 1 { 20 } else { 1 };
            let mut own = None;
            let mut one_cpu = Some(one_cpu);
            for i in 1..=frames {
                let mut waiting = Box::pin(peer.recv());
                assert!(
                    poll_once(&mut waiting).await.is_pending(),
                    "nothing sent yet"
                );
                let data = vec![i as u8; if i % 2 == 0 { 8 } else { 3000 }];
                let meta = FrameMeta {
                    msg_id: i,
                    ..FrameMeta::default()
                };
                host.send(ticket.id(), meta, &data).await.expect("send");
                drop(one_cpu.take());
                let own = *own.get_or_insert_with(|| {
                    let own = eventfd_in_set(peer.peer().ready_fd().as_raw_fd());
                    assert_ne!(own, ticket.readiness_fds()[0].as_raw_fd(), "its own");
                    own
                });
                let frame = guarded(HANG_GUARD, "the waiting receive", waiting)
                    .await
                    .expect("recv");
                assert_eq!((frame.meta().msg_id, frame.payload()), (i, &data[..]));
                // The waiter thread writes for every frame it sees arrive (the receive may
                // also have been woken by the descriptor's 100 ms tick: wait for the write).
                let wrote = tokio::time::timeout(HANG_GUARD, async {
                    while eventfd_count(own) < i {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
                .await;
                assert!(
                    wrote.is_ok(),
                    "peer {n}, frame {i}: the waiter thread wrote its descriptor {} times",
                    eventfd_count(own)
                );
            }
            peers.push(peer);
        }
    });
    drop(peers);
    assert_all_free(&host.host().stats());
}

// ---------------------------------------------------------------------------------------------
// 7. Several receivers at once
// ---------------------------------------------------------------------------------------------

/// Records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// "Several tasks may receive at once (each frame goes to one of them)" (`AsyncHost`): two
/// receives pending at once, each with its own waker, then two frames. Both receives must be
/// woken, and each gets one frame.
#[test]
fn two_pending_receives_are_both_woken() {
    let rt = runtime();
    let _enter = rt.enter();
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let peer = Peer::attach(&ticket).expect("attach");
    let host = AsyncHost::new(host).expect("register");
    let flags = [0, 1].map(|_| Arc::new(Flag(AtomicBool::new(false))));
    let wakers = flags.clone().map(Waker::from);
    type Receive<'h> = std::pin::Pin<Box<dyn Future<Output = Result<Frame, RecvError>> + 'h>>;
    let mut receives: [Receive<'_>; 2] =
        [Box::pin(host.recv()), Box::pin(host.recv_from(ticket.id()))];
    let mut poll = |which: usize| {
        let mut cx = Context::from_waker(&wakers[which]);
        receives[which]
            .as_mut()
            .poll(&mut cx)
            .map(|frame| frame.expect("recv"))
    };
    assert!(
        poll(0).is_pending() && poll(1).is_pending(),
        "nothing sent yet"
    );
    for i in 0..2 {
        let meta = FrameMeta {
            msg_id: i,
            ..FrameMeta::default()
        };
        peer.send(meta, b"for anyone").expect("send");
    }
    let deadline = Instant::now() + HANG_GUARD;
    let mut got = Vec::new();
    for which in [1, 0] {
        while !flags[which].0.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "receive {which} was never woken, with {} frame(s) waiting",
                2 - got.len()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        loop {
            flags[which].0.store(false, Ordering::SeqCst);
            match poll(which) {
                Poll::Ready(frame) => {
                    got.push(frame.meta().msg_id);
                    break;
                }
                Poll::Pending => {
                    while !flags[which].0.load(Ordering::SeqCst) {
                        assert!(Instant::now() < deadline, "receive {which} never completed");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1]);
}

/// Another task's wakeup never takes a sleeping receive's: receive A waits for peer 1, receive
/// B for peer 2; B's wakeup is being handled when peer 1's frame arrives. Before, B drained
/// the host's readiness set after consuming its wakeup, which took the edge peer 1's write had
/// just queued, and A slept until the 100 ms tick. Driven step by step on a current-thread
/// runtime, whose reactor runs only when the test yields to it, with a waker per receive.
#[test]
fn a_receive_asleep_keeps_its_wakeup_while_another_handles_its_own() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let mut host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    host.set_wait_mode(WaitMode::Block); // a receive that finds nothing arms at once
    let tickets = [0, 1].map(|_| host.add_peer().expect("add_peer"));
    let peers = [0, 1].map(|i| Peer::attach(&tickets[i]).expect("attach"));
    let host = AsyncHost::new(host).expect("register");
    let flags = [0, 1].map(|_| Arc::new(Flag(AtomicBool::new(false))));
    let wakers = flags.clone().map(Waker::from);
    type Receive<'h> = std::pin::Pin<Box<dyn Future<Output = Result<Frame, RecvError>> + 'h>>;
    let mut receives: [Receive<'_>; 2] = [
        Box::pin(host.recv_from(tickets[0].id())),
        Box::pin(host.recv_from(tickets[1].id())),
    ];
    let mut poll = |which: usize| {
        flags[which].0.store(false, Ordering::SeqCst);
        let mut cx = Context::from_waker(&wakers[which]);
        receives[which]
            .as_mut()
            .poll(&mut cx)
            .map(|frame| frame.expect("recv"))
    };
    rt.block_on(async {
        // Turns of the reactor, without sleeping.
        let turns = || async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        };
        assert!(poll(1).is_pending(), "nothing from peer 2 yet");
        peers[1].send(FrameMeta::default(), b"for B").expect("send");
        turns().await;
        assert!(
            flags[1].0.load(Ordering::SeqCst),
            "B woken by peer 2's frame"
        );
        // A waits (it consumes the readiness B's wakeup left, and goes to sleep).
        assert!(poll(0).is_pending(), "nothing from peer 1 yet");
        // Peer 1's frame: A is armed, so its write queues an edge for the reactor...
        peers[0].send(FrameMeta::default(), b"for A").expect("send");
        // ...and B handles its own wakeup before the reactor runs.
        match poll(1) {
            Poll::Ready(frame) => assert_eq!(frame.payload(), b"for B"),
            Poll::Pending => panic!("B's frame is there"),
        }
        turns().await;
        assert!(
            flags[0].0.load(Ordering::SeqCst),
            "A was not woken: B's handling took its wakeup"
        );
        match poll(0) {
            Poll::Ready(frame) => assert_eq!(frame.payload(), b"for A"),
            Poll::Pending => panic!("A's frame is there"),
        }
    });
}
