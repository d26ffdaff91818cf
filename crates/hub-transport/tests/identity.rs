//! Process identity and lifecycle against a hostile peer (issue 13, attacks 4 and 5, and the
//! lifecycle holes of its item 9), each attack by a real peer process writing raw words at named
//! offsets (the `poke` peer), checked from the host's side: who got signalled, which entries are
//! handed out, the addresses of what the host holds.
//!
//! R4: the host keeps private truth about every peer entry (its life, its epoch, the process it
//! spawned, with the pidfd taken in the spawn) and signals only processes it spawned. Each test
//! failed before that truth (see each one).

mod common;
mod plugin;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{EventLog, WATCHDOG, meta, wait_exit};
use hub_transport::{FrameMeta, Host, HostError, HubConfig, Peer, PeerEvent, PeerState};
use plugin::poke::{Named, Poker};

const TIMEOUT: Duration = Duration::from_millis(400);

/// The supervisor's period (src/supervisor.rs).
const TICK: Duration = Duration::from_millis(20);

fn host(max_peers: u16) -> Host {
    Host::create(
        &HubConfig::new()
            .max_peers(max_peers)
            .heartbeat_timeout(TIMEOUT),
    )
    .expect("create")
}

fn named(max_peers: u16) -> Named {
    Named::new(max_peers, hub_layout::DEFAULT_HUB_RING_CAPACITY)
}

fn chaos(args: &[&str]) -> Command {
    let mut command = plugin::chaos(args);
    command.stdin(Stdio::null()).stdout(Stdio::null());
    command
}

/// The host sends `peer` a frame and gets its echo back (the `hello` round trip a chaos peer
/// makes after attaching), all within [`WATCHDOG`].
fn echo_hello(host: &Host, peer: u16) {
    let hello = host.recv_timeout(WATCHDOG).expect("hello");
    assert_eq!(hello.peer(), peer);
    host.send(peer, *hello.meta(), hello.payload())
        .expect("echo");
}

/// Attack 4 (proxy kill): a peer writes an honest peer's pid, live flags and a stale heartbeat
/// into an unused peer entry. The host signals nobody: the honest process lives on and works;
/// the entry is put back to Empty and a new peer takes it. Before: the supervisor watched the
/// pid the entry named, evicted the "silent" peer after its heartbeat timeout and SIGKILLed the
/// honest process.
#[test]
fn a_stranger_pid_written_into_an_unused_entry_gets_nobody_signalled() {
    let host = host(3);
    let named = named(3);
    let mut events = EventLog::new(&host);
    let (honest_id, mut honest) = host
        .spawn_peer(&mut chaos(&["hello", "recv-block"]))
        .expect("spawn the honest peer");
    let honest_id = honest_id.index();
    echo_hello(&host, honest_id);
    let mut poker = Poker::spawn(&host);
    let unused = (0..3).find(|&p| p != honest_id && p != poker.peer).unwrap();
    assert_eq!(host.peers()[usize::from(unused)].state, PeerState::Empty);

    poker.w32(named.peer_pid(unused), honest.id());
    poker.w64(named.peer_last_seen(unused), 1);
    poker.w64(named.peer_epoch(unused), 77);
    poker.w32(named.peer_flags(unused), PeerState::Active.flags());

    // Past the heartbeat timeout, with room for a loaded machine: nobody was signalled.
    std::thread::sleep(TIMEOUT * 2 + 10 * TICK);
    assert!(
        honest.try_wait().unwrap().is_none(),
        "the honest peer's process was signalled"
    );
    let entry = host.peers()[usize::from(unused)];
    assert_eq!((entry.state, entry.pid), (PeerState::Empty, 0), "{entry:?}");
    assert!(
        std::iter::from_fn(|| host.try_event()).all(|e| !matches!(
            e,
            PeerEvent::Evicted { peer, .. } | PeerEvent::Attached { peer, .. } if peer == unused
        )),
        "an event for a life the host never reserved"
    );

    // A new peer takes the entry, and the honest one still works: a frame makes it exit 12.
    let ticket = host.add_peer().expect("add_peer");
    assert_eq!(ticket.peer_id(), unused);
    let fresh = Peer::attach(&ticket).expect("attach");
    host.send(unused, meta(1), &[5; 3000]).expect("send");
    let frame = fresh.recv_timeout(WATCHDOG).expect("recv");
    assert_eq!(frame.payload(), &[5; 3000]);
    host.send(honest_id, meta(2), b"wake up").expect("send");
    assert_eq!(wait_exit(&mut honest, "the child").code(), Some(12));
    drop(events.wait("no failure", |_| true));
}

/// Attack 5 (escape) with `state` written into its own flags: a spawned peer that holds a
/// frame of the host's (in flight to it) declares itself gone, then forges the free of a loan
/// the host holds. The host does not hand its id out while the process lives; it kills the
/// process (Dying: after the heartbeat timeout; anything else over an attached entry is an
/// eviction); and none of its later loans aliases the one it holds. The process's exit.
fn escape(state: PeerState) -> ExitStatus {
    let host = host(1);
    let named = named(1);
    let mut poker = Poker::spawn(&host);
    let id = poker.peer;
    host.send(id, FrameMeta::default(), &[1; 5000])
        .expect("send");
    let mut held = host.try_loan(100_000).expect("loan");
    held.as_mut_slice().fill(0x42);
    let held_range = (held.as_slice().as_ptr() as usize, held.len());

    poker.w32(named.peer_flags(id), state.flags());
    let written = Instant::now();
    // The host's loan of class 2 is slot 0 of a fresh hub: its meta forged Free.
    let slot = named.slot_meta(2, 0);
    poker.w64(named.gen_state(slot), 0);
    poker.w32(named.owner(slot), hub_layout::NO_OWNER);

    // While the process lives, the id is not handed out.
    let mut ticket = None;
    while poker.child.try_wait().unwrap().is_none() {
        if written.elapsed() > WATCHDOG {
            panic!(
                "the process was never killed: {:?} {:?}",
                host.peers(),
                common::pending_events(&host)
            );
        }
        match host.add_peer() {
            Err(HostError::NoFreePeer(1)) => {}
            other => {
                assert!(
                    poker.child.try_wait().unwrap().is_some(),
                    "the id of a live process handed out: {other:?}"
                );
                ticket = other.ok();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = wait_exit(&mut poker.child, "the child");
    // The hub heals: the id is free again (the supervisor recovers it, or `add_peer` itself
    // once the process is gone), and no loan aliases the one the host holds.
    while ticket.is_none() {
        assert!(written.elapsed() < WATCHDOG, "the id never came back");
        ticket = host.add_peer().ok();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ticket.as_ref().map(|t| t.peer_id()), Some(id));
    let mut loans = Vec::new();
    while let Ok(mut loan) = host.try_loan(100_000) {
        let start = loan.as_slice().as_ptr() as usize;
        assert!(
            start + loan.len() <= held_range.0 || held_range.0 + held_range.1 <= start,
            "a loan aliases the held one"
        );
        loan.as_mut_slice().fill(0xee);
        loans.push(loan);
    }
    assert!(held.as_slice().iter().all(|&b| b == 0x42));
    drop((loans, held, ticket));
    status
}

/// Attack 5 with Dying (a forged goodbye): before, the host recorded a goodbye, recovered the
/// entry at once and handed the id to the next peer while the process ran on, never killed.
#[test]
fn a_forged_goodbye_does_not_let_a_live_process_go() {
    let started = Instant::now();
    let status = escape(PeerState::Dying);
    assert_eq!(status.signal(), Some(9), "{status}");
    assert!(started.elapsed() >= TIMEOUT, "killed before the timeout");
}

/// Attack 5 with Empty: before, the host took the entry for empty and handed the id out.
#[test]
fn a_forged_empty_entry_does_not_let_a_live_process_go() {
    let status = escape(PeerState::Empty);
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// Item 9: an unused entry's epoch set to `u64::MAX` by a peer. Before, `add_peer` incremented
/// the shared word (`fetch_add(1) + 1`) and panicked on the overflow in a debug build; now the
/// epoch is the host's own counter and the peer attaches.
#[test]
fn an_epoch_word_at_its_maximum_does_not_break_add_peer() {
    let host = host(2);
    let named = named(2);
    let mut poker = Poker::spawn(&host);
    let unused = 1 - poker.peer;
    poker.w64(named.peer_epoch(unused), u64::MAX);
    let ticket = host.add_peer().expect("add_peer");
    assert_eq!((ticket.peer_id(), ticket.epoch()), (unused, 1));
    let peer = Peer::attach(&ticket).expect("attach");
    host.send(unused, meta(3), b"after the overflow")
        .expect("send");
    assert_eq!(
        peer.recv_timeout(WATCHDOG).expect("recv").payload(),
        b"after the overflow"
    );
}

/// A peer attached from another process names its process by the pid word it writes: a
/// hostile one names a process that is not its own and lives on (the host's, or any other
/// long-lived one), then goes silent. Before, the host watched the named process: the entry,
/// evicted for its silence, stayed fenced until that process exited (never, for the host's own),
/// and with every entry taken that way the host refused new peers. Now a named process counts
/// only when the kernel shows it using the segment; else the heartbeat decides, and the entry
/// is recovered. Nobody is signalled.
#[test]
fn a_pid_naming_a_process_that_is_not_the_peer_does_not_fence_its_entry() {
    let host = host(3);
    let named = named(3);
    let mut poker = Poker::spawn(&host);
    let mut stranger = Stranger(
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("a long-lived process"),
    );
    for claimed in [std::process::id(), stranger.0.id()] {
        let ticket = host.add_peer().expect("add_peer");
        let target = ticket.peer_id();
        // A hostile attach to the reservation: a pid that is not the attacher's, a heartbeat
        // that never beats, then the flags (the epoch is the host's already).
        poker.w32(named.peer_pid(target), claimed);
        poker.w64(named.peer_last_seen(target), 1);
        poker.w32(named.peer_flags(target), PeerState::Active.flags());
        wait_empty(&host, target, &format!("fenced for pid {claimed}"));
        drop(ticket);
    }
    assert!(
        stranger.0.try_wait().expect("try_wait").is_none(),
        "the named process was signalled"
    );
    // Every entry but the poker's is free again: two more peers attach.
    let tickets: Vec<_> = (0..2).map(|_| host.add_peer().expect("add_peer")).collect();
    assert!(matches!(host.add_peer(), Err(HostError::NoFreePeer(3))));
    drop(tickets);
}

/// A heartbeat frozen in the future. A peer with no process the host can watch (here a
/// reservation taken over by another peer, naming the host's pid) is judged by its heartbeat
/// alone, and a word that never changes again is silence, whatever value it holds. Before, the
/// host read the silence from the value only, and one from the future counted as now: the
/// entry stayed attached for as long as the host lived, with nothing behind it, and a peer
/// that did this to every free entry kept new peers out after it was gone.
#[test]
fn a_heartbeat_frozen_in_the_future_does_not_hold_an_entry_for_ever() {
    let host = host(2);
    let named = named(2);
    let mut events = EventLog::new(&host);
    let mut poker = Poker::spawn(&host);
    let ticket = host.add_peer().expect("add_peer");
    let target = ticket.peer_id();
    poker.w32(named.peer_pid(target), std::process::id());
    poker.w64(named.peer_last_seen(target), u64::MAX);
    // Before the flags: the host cannot see the attach, nor start the silence, any earlier.
    let started = Instant::now();
    poker.w32(named.peer_flags(target), PeerState::Active.flags());
    drop(ticket);
    // With no process to watch, the silence is the peer's death (or, when the timeout passes
    // between the supervisor's two looks at the heartbeat, an eviction for it).
    events.wait("the silent entry given up", |e| {
        matches!(
            e,
            PeerEvent::Died { peer, .. } | PeerEvent::Evicted { peer, .. } if *peer == target
        )
    });
    assert!(
        started.elapsed() >= TIMEOUT - TICK,
        "given up before its heartbeat timeout: {:?}",
        started.elapsed()
    );
    wait_empty(&host, target, "still held");
    assert_eq!(host.add_peer().expect("add_peer").peer_id(), target);
}

/// Wait until `host` says entry `target` is Empty, at most [`WATCHDOG`]; `why` names what
/// it means if it never is.
#[track_caller]
fn wait_empty(host: &Host, target: u16, why: &str) {
    let deadline = Instant::now() + WATCHDOG;
    while host.peers()[usize::from(target)].state != PeerState::Empty {
        assert!(
            Instant::now() < deadline,
            "entry {target} {why}: {:?}",
            host.peers()[usize::from(target)]
        );
        std::thread::sleep(TICK);
    }
}

/// A process of the test's own, killed and reaped when dropped (a failed test included).
struct Stranger(std::process::Child);

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Item 9: the ticket's descriptor is close-on-exec in the host's process (before: a `dup`
/// without it, inherited by any child any thread spawned while the ticket lived); a child
/// spawned through `Ticket::apply` still gets it and attaches.
#[test]
fn the_tickets_descriptor_is_never_inheritable_in_the_host() {
    let host = host(1);
    let ticket = host.add_peer().expect("add_peer");
    let value = ticket.env_value();
    let number = |key: &str| -> i32 {
        let rest = value.split_once(key).expect(key).1;
        rest.split(',').next().unwrap().parse().unwrap()
    };
    let fd = number(",fd=");
    // The segment's descriptor and both readiness descriptors.
    for fd in [fd, number(",ready="), number(",notify=")] {
        // SAFETY: the ticket owns this descriptor and lives across the borrow.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = rustix::io::fcntl_getfd(borrowed).expect("fcntl");
        assert!(
            flags.contains(rustix::io::FdFlags::CLOEXEC),
            "{fd}: {flags:?}"
        );
    }
    // A process spawned meanwhile without the ticket does not get it: `ls` of its own fds.
    let listing = Command::new("ls")
        .arg("/proc/self/fd")
        .output()
        .expect("ls");
    let fds: Vec<i32> = String::from_utf8_lossy(&listing.stdout)
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        !fds.contains(&fd),
        "a stranger child inherited {fd}: {fds:?}"
    );
    // The ticket's own child does, and attaches.
    let mut command = chaos(&["hello", "recv-block"]);
    ticket.apply(&mut command);
    let mut child = command.spawn().expect("spawn");
    echo_hello(&host, ticket.peer_id());
    host.send(ticket.peer_id(), meta(4), b"bye").expect("send");
    assert_eq!(wait_exit(&mut child, "the child").code(), Some(12));
}

/// Item 9: a spawned child asks for SIGKILL when its parent goes (PR_SET_PDEATHSIG), which
/// fires when the spawning thread exits. Before, the child (blocked in recv) ran on.
#[test]
fn a_spawned_child_is_killed_when_the_spawning_thread_exits() {
    let host = host(1);
    let (_, mut child) = std::thread::scope(|s| {
        s.spawn(|| {
            host.spawn_peer(&mut chaos(&["recv-block"]))
                .expect("spawn_peer")
        })
        .join()
        .expect("the spawning thread")
    });
    let status = wait_exit(&mut child, "the child");
    assert_eq!(status.signal(), Some(9), "{status}");
}

/// Item 9: a spawned child that exits before it attaches is reported, and its reservation
/// withdrawn: frames to it are refused from then on, and the id is handed out again. Before,
/// no event came and the entry stayed Reserved, `send` returning Ok.
#[test]
fn a_child_that_exits_before_attaching_is_reported_and_its_reservation_freed() {
    let host = host(1);
    let mut events = EventLog::new(&host);
    let (id, mut child) = host
        .spawn_peer(&mut Command::new("true"))
        .expect("spawn_peer");
    let id = id.index();
    let pid = child.id();
    assert!(wait_exit(&mut child, "the child").success());
    let event = events.wait("ExitedBeforeAttach", |e| {
        matches!(e, PeerEvent::ExitedBeforeAttach { .. })
    });
    assert_eq!(event, PeerEvent::ExitedBeforeAttach { peer: id, pid });
    events.recovery(id);
    assert!(host.send(id, meta(5), b"to nobody").is_err());
    assert_eq!(host.add_peer().expect("add_peer").peer_id(), id);
}

/// Item 9: a peer that attaches and leaves within one supervisor tick is reported `Attached`
/// before its `Goodbye` (before: the supervisor's first look saw it Dying and reported a
/// goodbye of a peer it never reported attached).
#[test]
fn attached_comes_before_goodbye_for_a_short_life() {
    let host = host(1);
    for round in 0..20 {
        let ticket = host.add_peer().expect("add_peer");
        drop(Peer::attach(&ticket).expect("attach"));
        let mut life = Vec::new();
        let deadline = Instant::now() + WATCHDOG;
        while !matches!(life.last(), Some(PeerEvent::Recovered { .. })) {
            let left = deadline.saturating_duration_since(Instant::now());
            life.push(host.next_event(Some(left)).expect("an event"));
        }
        assert!(
            matches!(life.as_slice(), [PeerEvent::Attached { pid, .. }, PeerEvent::Goodbye { .. }, PeerEvent::Recovered { .. }] if *pid == std::process::id()),
            "round {round}: {life:?}"
        );
    }
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}
