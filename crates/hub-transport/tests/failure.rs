//! The failure path (R9, R10, R12, and the threat model of PROTOCOL.md §5), with real processes: the
//! chaos peer (tests/plugin: this test binary run again) plays plugins that hold slots and get SIGKILLed, stop,
//! leave without goodbye, scribble garbage on their ring, or block while their host is killed.
//!
//! Every child is in a [`Chaos`] guard that kills and reaps it when the guard drops, also when a
//! test fails; every wait has a deadline whose expiry fails the test with a message. Exits are
//! waited for on a pidfd, never by sleeping.

mod common;
mod plugin;

use std::io::BufRead;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::pattern::{checksum, expected, payload};
use hub_alloc::ClassStats;
use hub_layout::HUB_SIZE_CLASSES;
use hub_transport::{
    Disconnect, EvictReason, Frame, FrameMeta, Host, HostError, HubConfig, Loan, Peer, PeerEvent,
    PeerState, RecvError, RecvTimeoutError, TICKET_ENV, Ticket,
};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal, kill_process, pidfd_open};

/// How long any step may take before the test fails instead of hanging: a guard against a lost
/// wakeup or a deadlock, not a measure of speed.
const WATCHDOG: Duration = Duration::from_secs(20);

/// The supervisor's tick (see src/supervisor.rs): it notices a state change within one.
const TICK: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Children

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}

/// A chaos peer process (`plugin::chaos`), killed and reaped when the guard drops. Its standard output is
/// read line by line by a thread of its own.
struct Chaos {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Chaos {
    fn command(args: &[&str]) -> Command {
        let mut command = plugin::chaos(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        command
    }

    fn start(mut command: Command, what: String) -> Chaos {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Self::of(child, what)
    }

    /// A peer the host spawns itself (`Host::spawn_peer`: the host knows its process from the
    /// spawn, and may signal it).
    fn spawned(host: &Host, args: &[&str]) -> (Chaos, u16) {
        let (peer, child) = host
            .spawn_peer(&mut Self::command(args))
            .expect("spawn_peer");
        let what = format!("chaos peer {args:?} (spawned peer {peer})");
        (Self::of(child, what), peer.index())
    }

    fn of(mut child: Child, what: String) -> Chaos {
        let stdout = plugin::stdout(&mut child);
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Chaos {
            child: Some(child),
            lines,
            what,
        }
    }

    /// A peer with a fresh ticket of `host`; the ticket is dropped once the child has its copy.
    fn peer(host: &Host, args: &[&str]) -> (Chaos, u16) {
        let ticket = host.add_peer().expect("add_peer");
        let chaos = Self::with_ticket(&ticket, args);
        (chaos, ticket.peer_id())
    }

    fn with_ticket(ticket: &Ticket, args: &[&str]) -> Chaos {
        let mut command = Self::command(args);
        ticket.apply(&mut command);
        Self::start(
            command,
            format!("chaos peer {args:?} (peer {})", ticket.peer_id()),
        )
    }

    /// A peer with a ticket given as its environment value (from a host in another process).
    fn with_env(ticket: &str, args: &[&str]) -> Chaos {
        let mut command = Self::command(args);
        command.env(TICKET_ENV, ticket);
        Self::start(command, format!("chaos peer {args:?} ({ticket})"))
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("the child is still guarded")
    }

    fn pid(&self) -> Pid {
        Pid::from_child(self.child())
    }

    /// The next line the child prints, within [`WATCHDOG`].
    #[track_caller]
    fn line(&self) -> String {
        self.lines
            .recv_timeout(WATCHDOG)
            .unwrap_or_else(|e| panic!("{}: no line on its standard output: {e}", self.what))
    }

    #[track_caller]
    fn expect_line(&self, want: &str) {
        let line = self.line();
        assert_eq!(line, want, "{}", self.what);
    }

    /// SIGKILL; the instant just before it.
    fn kill(&self) -> Instant {
        let at = Instant::now();
        kill_process(self.pid(), Signal::KILL).expect("SIGKILL");
        at
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid(), signal).unwrap_or_else(|e| panic!("{}: {e}", self.what));
    }

    /// Wait for the child to exit, until `deadline` at the latest (a pidfd poll, no sleeping),
    /// and reap it.
    #[track_caller]
    fn wait_until(&mut self, deadline: Instant) -> ExitStatus {
        let pidfd: OwnedFd = pidfd_open(self.pid(), PidfdFlags::empty()).expect("pidfd");
        if !wait_readable(&pidfd, deadline) {
            panic!("{} did not exit in time", self.what);
        }
        let mut child = self.child.take().expect("child");
        child.wait().expect("reap")
    }

    #[track_caller]
    fn wait(&mut self) -> ExitStatus {
        self.wait_until(Instant::now() + WATCHDOG)
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Poll `fd` for readability until `deadline`; whether it became readable.
fn wait_readable(fd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Removes a file when dropped (a named hub whose host was killed leaves its file behind).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_path(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "hub-failure-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

// ---------------------------------------------------------------------------------------------
// The host's side

/// The supervisor's events, read as a test needs them: the ones it does not wait for yet are
/// kept for later.
struct Events<'h> {
    host: &'h Host,
    seen: Vec<PeerEvent>,
}

impl<'h> Events<'h> {
    fn new(host: &'h Host) -> Self {
        Self {
            host,
            seen: Vec::new(),
        }
    }

    /// The first event (seen already, or arriving before `deadline`) that `matches`.
    fn wait_until(
        &mut self,
        deadline: Instant,
        matches: impl Fn(&PeerEvent) -> bool,
    ) -> Option<PeerEvent> {
        if let Some(i) = self.seen.iter().position(&matches) {
            return Some(self.seen.remove(i));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.host.next_event(Some(left)) {
                Some(event) if matches(&event) => return Some(event),
                Some(event) => self.seen.push(event),
                None => return None,
            }
        }
    }

    #[track_caller]
    fn wait(&mut self, what: &str, matches: impl Fn(&PeerEvent) -> bool) -> PeerEvent {
        match self.wait_until(Instant::now() + WATCHDOG, matches) {
            Some(event) => event,
            None => panic!("no event {what} within {WATCHDOG:?}; saw {:?}", self.seen),
        }
    }

    #[track_caller]
    fn attached(&mut self, peer: u16) -> u32 {
        match self.wait(
            "Attached",
            |e| matches!(e, PeerEvent::Attached { peer: p, .. } if *p == peer),
        ) {
            PeerEvent::Attached { pid, .. } => pid,
            _ => unreachable!(),
        }
    }

    #[track_caller]
    fn recovered(&mut self, peer: u16) -> hub_transport::Recovery {
        match self.wait(
            "Recovered",
            |e| matches!(e, PeerEvent::Recovered { peer: p, .. } if *p == peer),
        ) {
            PeerEvent::Recovered { recovery, .. } => recovery,
            _ => unreachable!(),
        }
    }

    /// Read what is waiting; fail on a recovery that failed.
    #[track_caller]
    fn drain(&mut self) {
        while let Some(event) = self.host.try_event() {
            assert!(
                !matches!(event, PeerEvent::RecoveryFailed { .. }),
                "{event:?}"
            );
            self.seen.push(event);
        }
    }
}

fn slot_counts(stats: &[ClassStats]) -> (u32, u32) {
    stats
        .iter()
        .fold((0, 0), |(a, f), s| (a + s.allocated, f + s.in_flight))
}

/// Every slot of every class is free, and the counts add up.
fn all_free(stats: &[ClassStats]) -> bool {
    stats.len() == HUB_SIZE_CLASSES.len()
        && stats.iter().all(|s| {
            s.allocated == 0
                && s.in_flight == 0
                && s.corrupt == 0
                && s.free == s.total
                && s.total == s.header_total
        })
}

/// Poll `condition` until it holds; fail after [`WATCHDOG`].
#[track_caller]
fn poll_until(what: &str, condition: impl FnMut() -> bool) {
    poll_until_else(condition, || format!("timed out waiting for {what}"));
}

/// [`poll_until`], failing with what `failure` says then.
#[track_caller]
fn poll_until_else(mut condition: impl FnMut() -> bool, failure: impl FnOnce() -> String) {
    let deadline = Instant::now() + WATCHDOG;
    while !condition() {
        if Instant::now() >= deadline {
            panic!("{}", failure());
        }
        // Another thread or process makes it true: look again soon, without burning a core.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[track_caller]
fn assert_all_free_soon(host: &Host) {
    poll_until("every slot free", || all_free(&host.stats()));
}

/// Every peer entry is Empty; on timeout, the failure names the entries that are not and the
/// events the host has not handed out yet.
#[track_caller]
fn all_entries_empty_soon(host: &Host) {
    let busy = || {
        host.peers()
            .into_iter()
            .filter(|p| p.state != PeerState::Empty)
            .collect::<Vec<_>>()
    };
    poll_until_else(
        || busy().is_empty(),
        || {
            format!(
                "timed out waiting for every peer entry empty: {:?}; events: {:?}",
                busy(),
                common::pending_events(host)
            )
        },
    );
}

fn frame_meta(k: u64, sum: u64) -> FrameMeta {
    FrameMeta {
        msg_id: sum,
        channel_id: k as u32,
        method_id: 0x5EED,
        ..FrameMeta::default()
    }
}

/// One round trip through an in-process peer: host -> peer -> host, checksummed.
#[track_caller]
fn round_trip(host: &Host, peer: &Peer, k: u64, size: usize) {
    let data = payload(size, k);
    let meta = frame_meta(k, checksum(&data));
    host.send(peer.id(), meta, &data).expect("host send");
    let frame = peer.recv_timeout(WATCHDOG).expect("peer recv");
    assert_eq!(
        (*frame.meta(), checksum(frame.payload())),
        (meta, meta.msg_id)
    );
    peer.send(meta, frame.payload()).expect("peer send");
    drop(frame);
    let echo = host
        .recv_from(peer.id(), Some(WATCHDOG))
        .expect("host recv");
    assert_eq!((*echo.meta(), echo.len()), (meta, size));
    assert_eq!(checksum(echo.payload()), meta.msg_id);
}

// ---------------------------------------------------------------------------------------------
// The tests

/// R10, R12: a peer SIGKILLed while it holds slots in every state (allocated loans, one of them
/// half written; frames it received and keeps; frames sent to it still in its ring; frames it
/// sent to the host) is reported Died within 100 ms of the kill, then Recovered; every slot is
/// free again, and a new peer takes the same id and works.
#[test]
fn peer_killed_holding_slots_in_every_state() {
    let host = Host::create(&HubConfig::new().max_peers(1).ring_capacity(16)).expect("create");
    let mut events = Events::new(&host);
    let ticket = host.add_peer().expect("add_peer");
    let id = ticket.peer_id();
    // Six slot frames, of four classes, to the reserved peer: it keeps three it receives and
    // leaves three in its ring.
    let sizes = [100, 2000, 20_000, 300_000, 1000, 5000];
    for (k, &size) in sizes.iter().enumerate() {
        let data = payload(size, k as u64);
        host.send(id, frame_meta(k as u64, checksum(&data)), &data)
            .expect("send to the reserved peer");
    }
    let chaos = Chaos::with_ticket(&ticket, &["hold", "3"]);
    drop(ticket);
    chaos.expect_line("READY");
    // The supervisor watches its pidfd from here on.
    let pid = events.attached(id);
    assert_eq!(pid, chaos.child().id());
    // Two loans (allocated), and 6 + 2 frames in flight: to the peer, and to the host.
    assert_eq!(slot_counts(&host.stats()), (2, 8), "{:?}", host.stats());
    let info = host.peers()[usize::from(id)];
    assert_eq!(
        (info.state, info.to_peer, info.to_host),
        (PeerState::Active, 3, 2)
    );

    let killed = chaos.kill();
    let died = events
        .wait_until(
            killed + WATCHDOG,
            |e| matches!(e, PeerEvent::Died { peer, .. } if *peer == id),
        )
        .expect("Died");
    let latency = killed.elapsed();
    eprintln!("SIGKILL -> PeerEvent::Died: {latency:?}");
    assert_eq!(died, PeerEvent::Died { peer: id, pid });
    // R12: the death is an operating-system fact, seen within 100 ms of the exit (here, of the
    // kill, which comes before it).
    assert!(
        latency < Duration::from_millis(100),
        "Died {latency:?} after SIGKILL"
    );
    let recovery = events.recovered(id);
    // The ring scan freed the three frames still in the peer's ring and the two it sent;
    // the reclaim freed the three it kept and its two loans.
    assert_eq!(recovery.ring_slots_freed, 5, "{recovery:?}");
    assert_eq!(recovery.reclaimed.total(), 5, "{recovery:?}");
    assert_all_free_soon(&host);
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Empty);
    drop(chaos);

    // The same id, a new life.
    let ticket = host.add_peer().expect("add_peer after recovery");
    assert_eq!(ticket.peer_id(), id);
    let peer = Peer::attach(&ticket).expect("attach");
    for (k, size) in [0, 16, 17, 70_000, 300_000].into_iter().enumerate() {
        round_trip(&host, &peer, k as u64, size);
    }
    drop(peer);
    events.wait(
        "Goodbye",
        |e| matches!(e, PeerEvent::Goodbye { peer } if *peer == id),
    );
    let recovery = events.recovered(id);
    assert_eq!(recovery.ring_slots_freed, 0, "{recovery:?}");
    assert_eq!(recovery.reclaimed.total(), 0, "{recovery:?}");
    assert_all_free_soon(&host);
}

/// Crash injection: a streaming peer SIGKILLed at several points of its life (just after
/// spawn, perhaps before it attached; after 1, 7, 40 and 150 frames, somewhere in loan, fill
/// or send) while the host reads; after each death every slot is free again.
#[test]
fn streaming_peer_killed_at_random_points_leaks_nothing() {
    let host = Host::create(
        &HubConfig::new()
            .max_peers(2)
            .ring_capacity(8)
            .heartbeat_timeout(Duration::from_millis(500)),
    )
    .expect("create");
    let mut events = Events::new(&host);
    for kill_after in [None, Some(1), Some(7), Some(40), Some(150)] {
        let (mut chaos, id) = Chaos::peer(&host, &["stream", "1000000"]);
        let mut got = 0u64;
        if let Some(n) = kill_after {
            while got < n {
                let frame = host.recv_from(id, Some(WATCHDOG)).expect("stream frame");
                assert_eq!(u64::from(frame.meta().channel_id), got);
                assert_eq!(checksum(frame.payload()), frame.meta().msg_id);
                got += 1;
            }
        }
        chaos.kill();
        chaos.wait();
        // Before it attached, the entry is still Reserved and the application withdraws it;
        // after, the supervisor finds the death (by pidfd, or by a heartbeat that never came
        // when it died between its attach and its first beat).
        if host.peers()[usize::from(id)].state == PeerState::Reserved {
            host.recover_peer(id).expect("withdraw the reservation");
        } else {
            events.recovered(id);
        }
        // Frames it sent before it died were freed with its rings; the host holds none.
        assert_all_free_soon(&host);
        assert_eq!(host.peers()[usize::from(id)].state, PeerState::Empty);
        events.drain();
    }
}

/// R9: a thousand peers attach, exchange frames and go, one after the other: most of them
/// threads of this process (leaving with goodbye, leaving with leaked loans and frames that
/// their recovery reclaims, leaving with a frame the host reads after, or evicted), a few real
/// processes (exiting without goodbye, dying of SIGABRT holding a slot, saying goodbye). At the
/// end the hub still admits 32 at once, and every slot is free.
#[test]
fn a_thousand_peers_come_and_go_and_32_still_fit() {
    let host = Host::create(&HubConfig::new().max_peers(32).ring_capacity(16)).expect("create");
    let mut events = Events::new(&host);
    let mut processes = 0;
    let started = Instant::now();
    // The frame and loan of the last peer evicted while holding them (case 1 below).
    let mut held: Option<(Frame, Loan)> = None;
    for i in 0..1000u64 {
        let size = [5, 100, 3000, 40_000][(i % 4) as usize];
        if i % 125 == 60 {
            // A real process: echo one frame, then go (once the host has the echo: a dead
            // peer's unread frames go with its rings).
            let how = ["exit", "abort", "goodbye"][processes % 3];
            let (mut chaos, id) = Chaos::peer(&host, &["echo-then", how]);
            let data = payload(size, i);
            let meta = frame_meta(i, checksum(&data));
            host.send(id, meta, &data).expect("send to the process");
            let echo = host.recv_from(id, Some(WATCHDOG)).unwrap_or_else(|e| {
                events.drain();
                panic!("{how}'s echo: {e:?}; events: {:?}", events.seen)
            });
            assert_eq!(
                (*echo.meta(), checksum(echo.payload())),
                (meta, meta.msg_id)
            );
            drop(echo);
            host.send(id, meta, &data).expect("send the go-ahead");
            let status = chaos.wait();
            assert_eq!(status.success(), how != "abort", "{how}: {status}");
            processes += 1;
            continue;
        }
        let ticket = host.add_peer().expect("add_peer");
        let peer = Peer::attach(&ticket).expect("attach");
        let id = peer.id();
        match i % 4 {
            0 => round_trip(&host, &peer, i, size),
            1 => {
                // Evicted while it holds a received frame and a loan: the recovery reclaims
                // both, and they are dropped only after the entry's next life began (their
                // frees are then refused: the slots are no longer this life's).
                let data = payload(size, i);
                host.send(id, frame_meta(i, checksum(&data)), &data)
                    .expect("send");
                let frame = peer.recv_timeout(WATCHDOG).expect("recv");
                let loan = peer.loan(2000).expect("loan");
                host.evict(id, EvictReason::Application("test".into()))
                    .expect("evict");
                held = Some((frame, loan));
            }
            2 => {
                // Leave right after sending: the host still gets the frame.
                let data = payload(size, i);
                let meta = frame_meta(i, checksum(&data));
                peer.send(meta, &data).expect("send");
                drop(peer);
                let frame = host
                    .recv_from(id, Some(WATCHDOG))
                    .expect("a frame sent before goodbye");
                assert_eq!(checksum(frame.payload()), meta.msg_id);
                continue;
            }
            _ => {
                // Evicted: its calls fail from then on.
                round_trip(&host, &peer, i, size);
                host.evict(id, EvictReason::Application("test".into()))
                    .expect("evict");
                assert!(
                    matches!(
                        peer.recv_timeout(WATCHDOG),
                        Err(RecvTimeoutError::Failed(RecvError::Disconnected(
                            Disconnect::PeerNotActive { peer: p, .. }
                        ))) if p == id
                    ),
                    "an evicted peer's recv"
                );
            }
        }
        drop(peer);
        events.drain();
    }
    eprintln!(
        "1000 peers ({} processes) in {:?}",
        processes,
        started.elapsed()
    );
    drop(held.take());
    all_entries_empty_soon(&host);
    assert_all_free_soon(&host);
    events.drain();

    // 32 at once.
    let tickets: Vec<Ticket> = (0..32)
        .map(|_| host.add_peer().expect("add_peer"))
        .collect();
    assert!(matches!(host.add_peer(), Err(HostError::NoFreePeer(32))));
    let peers: Vec<Peer> = tickets
        .iter()
        .map(|t| Peer::attach(t).expect("attach"))
        .collect();
    for (k, peer) in peers.iter().enumerate() {
        round_trip(&host, peer, 5000 + k as u64, 1000 + k * 100);
    }
    drop(peers);
    all_entries_empty_soon(&host);
    assert_all_free_soon(&host);
    events.drain();
}

/// R12: a stopped peer (SIGSTOP) is alive to its pidfd; it is not declared dead before its
/// heartbeat timeout, and is evicted (HeartbeatTimeout) after it. R4: admitted with `add_peer`
/// (not spawned by the host), it is never signalled: its entry is fenced (Dead, its id not
/// handed out) while its process lives. Continued, its blocked recv reports the eviction and
/// it exits; only then is the entry recovered.
#[test]
fn stopped_peer_is_evicted_after_its_heartbeat_timeout_and_fenced_until_it_exits() {
    let timeout = Duration::from_millis(500);
    let host =
        Host::create(&HubConfig::new().max_peers(1).heartbeat_timeout(timeout)).expect("create");
    let mut events = Events::new(&host);
    let (mut chaos, id) = Chaos::peer(&host, &["recv-block"]);
    chaos.expect_line("READY");
    events.attached(id);
    let stopped = Instant::now();
    chaos.signal(Signal::STOP);
    // The peer beats four times per timeout: its last beat came at most a quarter of it before
    // the stop (if its heartbeat thread ran on time), so nothing may happen to it during the
    // next three quarters. Half is asserted: a loaded machine may delay a beat.
    let quiet = stopped + timeout / 2;
    let early = events.wait_until(quiet, |e| {
        matches!(e, PeerEvent::Died { .. } | PeerEvent::Evicted { .. })
    });
    assert_eq!(early, None, "a stopped peer, before its heartbeat timeout");
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Active);
    let evicted = events.wait("Evicted", |e| {
        matches!(e, PeerEvent::Evicted { .. } | PeerEvent::Died { .. })
    });
    let after = stopped.elapsed();
    eprintln!("SIGSTOP -> PeerEvent::Evicted: {after:?} (heartbeat timeout {timeout:?})");
    match evicted {
        PeerEvent::Evicted {
            peer,
            reason: EvictReason::HeartbeatTimeout { silent_for },
        } => {
            assert_eq!(peer, id);
            assert!(silent_for > timeout, "silent for {silent_for:?}");
        }
        other => panic!("expected an eviction for a heartbeat timeout, got {other:?}"),
    }
    // Found within a tick or two of the timeout (with room for a loaded machine).
    assert!(
        after < timeout + 10 * TICK,
        "evicted {after:?} after SIGSTOP"
    );
    // Fenced: not recovered, the id not handed out, the process not signalled, while it lives.
    let early = events.wait_until(Instant::now() + 10 * TICK, |e| {
        matches!(e, PeerEvent::Recovered { .. })
    });
    assert_eq!(early, None, "recovered while its process lives");
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Dead);
    assert!(matches!(host.add_peer(), Err(HostError::NoFreePeer(1))));
    assert!(matches!(
        host.recover_peer(id),
        Err(HostError::ProcessAlive { .. })
    ));
    chaos.signal(Signal::CONT);
    // Its recv returns PeerNotActive (exit status 10), now that it runs again: it was never
    // killed.
    let status = chaos.wait();
    assert_eq!(status.code(), Some(10), "{status}");
    events.recovered(id);
    assert_all_free_soon(&host);
    assert_eq!(host.add_peer().expect("add_peer").peer_id(), id);
}

/// R10: by default the host fences an evicted peer before it recovers the entry: a stopped
/// peer the host spawned, evicted for its silence, is killed (it cannot wake up later inside an allocator
/// operation on state the recovery gave back), and then recovered.
#[test]
fn an_evicted_process_is_killed_before_its_recovery() {
    let host = Host::create(
        &HubConfig::new()
            .max_peers(1)
            .heartbeat_timeout(Duration::from_millis(300)),
    )
    .expect("create");
    let mut events = Events::new(&host);
    // Spawned by the host: the only kind of process it signals (R4).
    let (mut chaos, id) = Chaos::spawned(&host, &["recv-block"]);
    chaos.expect_line("READY");
    assert_eq!(events.attached(id), chaos.child().id());
    chaos.signal(Signal::STOP);
    let evicted = events.wait("Evicted", |e| matches!(e, PeerEvent::Evicted { .. }));
    assert!(
        matches!(evicted, PeerEvent::Evicted { peer, reason: EvictReason::HeartbeatTimeout { .. } } if peer == id),
        "{evicted:?}"
    );
    events.recovered(id);
    assert_all_free_soon(&host);
    // Killed while stopped: it never ran again.
    let status = chaos.wait();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// R9, R12: the exit of a peer's process is that peer's, not the next one's. R4: the id of an
/// evicted peer whose process the host did not spawn is not handed out before that process is
/// gone (so a new peer can no longer get it while the old process runs, as it could before
/// the host kept its own truth). The old process learns of its eviction and exits; then the
/// entry is recovered and handed to a new peer (a thread here), and the supervisor, which
/// watched the old process's pidfd, never reports the new peer Died or evicts it.
#[test]
fn an_old_process_exit_is_not_the_new_peers_death() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let mut events = Events::new(&host);
    let (mut old, id) = Chaos::peer(&host, &["recv-block"]);
    old.expect_line("READY");
    events.attached(id);
    host.evict(id, EvictReason::Application("replaced".into()))
        .expect("evict");
    // Not signalled: it exits by itself, its recv having reported the eviction.
    assert_eq!(old.wait().code(), Some(10));
    events.recovered(id);
    let ticket = host.add_peer().expect("add_peer");
    assert_eq!(ticket.peer_id(), id);
    let new = Peer::attach(&ticket).expect("attach");
    // The supervisor looks within a tick of an exit; give it several.
    let wrong = events.wait_until(Instant::now() + 10 * TICK, |e| {
        matches!(e, PeerEvent::Died { .. })
            || matches!(e, PeerEvent::Evicted { reason, .. } if *reason != EvictReason::Application("replaced".into()))
    });
    assert_eq!(wrong, None, "the new peer, after the old process exited");
    assert_eq!(host.peers()[usize::from(id)].state, PeerState::Active);
    round_trip(&host, &new, 1, 5000);
}

/// R12: the host is SIGKILLed (it is a child process here, with a named hub); peers blocked in
/// recv, and one blocked in send on a full ring, get HostGone within one second of the kill,
/// and every process exits.
#[test]
fn host_killed_under_blocked_peers() {
    let path = temp_path("hub");
    let _remove = RemoveOnDrop(path.clone());
    let n = 4;
    let mut host = Chaos::start(
        Chaos::command(&[
            "host",
            path.to_str().expect("utf-8 path"),
            &n.to_string(),
            "8",
        ]),
        "chaos host".into(),
    );
    let tickets: Vec<String> = (0..n).map(|_| host.line()).collect();
    host.expect_line("HOST READY");
    let mut peers: Vec<Chaos> = tickets
        .iter()
        .enumerate()
        .map(|(k, ticket)| {
            let mode = if k == 0 { "send-block" } else { "recv-block" };
            Chaos::with_env(ticket, &["hello", mode])
        })
        .collect();
    for peer in &peers {
        peer.expect_line("READY");
    }
    let killed = host.kill();
    let status = host.wait();
    assert_eq!(status.code(), None, "the host was killed: {status}");
    let mut worst = Duration::ZERO;
    for peer in &mut peers {
        let status = peer.wait_until(killed + Duration::from_secs(1));
        let after = killed.elapsed();
        worst = worst.max(after);
        assert_eq!(status.code(), Some(0), "{}: {status}", peer.what);
    }
    eprintln!("host SIGKILL -> every peer out with HostGone: {worst:?}");
}

/// PROTOCOL.md §5: a peer that scribbles garbage on its ring, a descriptor first, is evicted for a
/// bad descriptor while two honest peers' checksummed streams go on to completion.
#[test]
fn descriptor_scribbler_is_evicted_while_honest_streams_complete() {
    let reason = scribbler_among_honest_streams(0x5EED_0001, "descriptor");
    assert!(
        matches!(reason, EvictReason::BadDescriptor(_)),
        "{reason:?}"
    );
}

/// PROTOCOL.md §5: as above, the ring's head first: evicted for a corrupted ring.
#[test]
fn head_scribbler_is_evicted_while_honest_streams_complete() {
    let reason = scribbler_among_honest_streams(0x5EED_0002, "head");
    assert!(matches!(reason, EvictReason::Ring(_)), "{reason:?}");
}

/// A peer that scribbles garbage on its ring (descriptors and head, `first` first, then at
/// random, until it is killed) is evicted with a named reason, while two honest peers'
/// checksummed streams go on to completion; the host never panics, never reports a frame or a
/// fault from the scribbler's ring once its entry is recovered, and afterwards the hub admits a
/// full set of new peers (the scribbler's id too) and every slot is free. The reason.
fn scribbler_among_honest_streams(seed: u64, first: &str) -> EvictReason {
    const N: u64 = 300;
    let host = Host::create(&HubConfig::new().max_peers(3).ring_capacity(32)).expect("create");
    let mut events = Events::new(&host);
    let (garbage, bad) = Chaos::peer(&host, &["garbage", &seed.to_string(), first]);
    let (mut honest_a, a) = Chaos::peer(&host, &["stream", &N.to_string()]);
    let (mut honest_b, b) = Chaos::peer(&host, &["stream", &N.to_string()]);
    let honest = [a, b];
    let mut got = [0u64; 2];
    let (mut faults, mut ring_faults, mut junk) = (0u64, 0u64, 0u64);
    let mut reason = None;
    // Results naming the scribbler after its entry was recovered (Empty): frames or faults
    // from a ring nobody may produce into (R10: the host stops consuming a dead peer's ring).
    let mut recovered = false;
    let mut after_recovery = Vec::new();
    let deadline = Instant::now() + WATCHDOG;
    while got != [N, N] || reason.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "streams at {got:?}, eviction {reason:?}, faults {faults}/{ring_faults}"
        );
        let result = host.recv_timeout(left.min(Duration::from_millis(50)));
        if recovered {
            match &result {
                Ok(frame) if frame.peer() == bad => after_recovery.push(format!("{frame:?}")),
                Err(RecvTimeoutError::Failed(
                    RecvError::BadDescriptor { peer, .. } | RecvError::Ring { peer, .. },
                )) if *peer == bad => after_recovery.push(format!("{result:?}")),
                _ => {}
            }
        }
        match result {
            Ok(frame) if frame.peer() == bad => junk += 1,
            Ok(frame) => {
                let c = honest
                    .iter()
                    .position(|&h| h == frame.peer())
                    .expect("a frame from a known peer");
                let i = got[c];
                assert_eq!(u64::from(frame.meta().channel_id), i, "stream {c} in order");
                assert_eq!(checksum(frame.payload()), frame.meta().msg_id, "stream {c}");
                assert_eq!(frame.meta().msg_id, expected(frame.len(), i), "stream {c}");
                got[c] += 1;
            }
            Err(RecvTimeoutError::Failed(RecvError::BadDescriptor { peer, .. })) if peer == bad => {
                faults += 1
            }
            Err(RecvTimeoutError::Failed(RecvError::Ring { peer, .. })) if peer == bad => {
                ring_faults += 1
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(error) => panic!("the host's recv: {error}"),
        }
        while let Some(event) = host.try_event() {
            match event {
                PeerEvent::Evicted { peer, reason: r } if peer == bad => reason = Some(r),
                PeerEvent::Recovered { peer, .. } if peer == bad => recovered = true,
                PeerEvent::Evicted { .. }
                | PeerEvent::Died { .. }
                | PeerEvent::RecoveryFailed { .. } => {
                    panic!("{event:?}")
                }
                other => events.seen.push(other),
            }
        }
    }
    let reason = reason.expect("evicted");
    eprintln!(
        "garbage writer evicted ({reason}); {faults} bad descriptors, {ring_faults} ring \
         faults, {junk} well-formed junk frames reported while the streams completed"
    );
    assert!(
        after_recovery.is_empty(),
        "{} results from the scribbler's ring after its recovery: {:?}",
        after_recovery.len(),
        &after_recovery[..after_recovery.len().min(5)]
    );
    assert!(honest_a.wait().success());
    assert!(honest_b.wait().success());
    drop(garbage);
    // Whatever it left in its ring is not the next peer's problem.
    for peer in [a, b] {
        events.recovered(peer);
    }
    all_entries_empty_soon(&host);
    let tickets: Vec<Ticket> = (0..3).map(|_| host.add_peer().expect("add_peer")).collect();
    let peers: Vec<Peer> = tickets
        .iter()
        .map(|t| Peer::attach(t).expect("attach after the garbage"))
        .collect();
    for (k, peer) in peers.iter().enumerate() {
        round_trip(&host, peer, k as u64, 3000);
    }
    drop(peers);
    all_entries_empty_soon(&host);
    assert_all_free_soon(&host);
    reason
}

/// PROTOCOL.md §5 ("never hand a frame to the wrong peer"): a peer that forges descriptors naming
/// slots another peer has in flight to the host, at their current generation, must not get
/// that peer's frame, nor get it evicted.
///
/// The slot records its sender when it goes in flight (`SlotStatus::sender`), and the host
/// checks it against the ring the descriptor came through.
#[test]
fn forged_descriptor_does_not_steal_another_peers_frame() {
    let host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    let honest = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    let data = payload(1000, 7);
    let sum = checksum(&data);
    honest.send(frame_meta(7, sum), &data).expect("send");
    // The first slots of class 0 at generation 0: a fresh hub hands out slot 0 first, so one
    // of them is the honest frame's.
    let (forger, forger_id) = Chaos::peer(&host, &["forge", "0", "8", "0"]);
    forger.expect_line("READY");
    let forged = host.recv_from(forger_id, Some(WATCHDOG));
    let stolen = format!("{forged:?}");
    let stole = forged.is_ok();
    drop(forged);
    let delivered = host.recv_from(honest.id(), Some(WATCHDOG));
    let delivered_ok = matches!(&delivered, Ok(f) if checksum(f.payload()) == sum);
    assert!(
        !stole && delivered_ok,
        "the forger got {stolen}; the honest peer's frame: {delivered:?}"
    );
}
