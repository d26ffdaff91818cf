//! Across processes: the test peer (tests/plugin: this test binary run again) attaches with
//! `Peer::from_env()` from the ticket its parent put in its environment (`Ticket::apply`; the
//! anonymous memfd is inherited, the ticket dropped after spawn), and echoes or sends checksummed
//! frames: inline, slot and 16 MiB payloads. Several children run at once in one test. Every
//! child's exit status is checked, and a guard kills a child whose test fails, so none outlives
//! its test.

mod common;
mod plugin;

use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::pattern::{checksum, expected, fill, payload};
use common::{EventLog, TempFiles, WATCHDOG, assert_all_free, spin_until};
use hub_layout::{PeerEntry, SegmentBytes, SegmentLayout};
use hub_transport::mapping::{Access, ReadOnlyMapping, SegmentFile};
use hub_transport::{FrameMeta, Host, HubConfig, PeerState};

/// `msg_id` of the child's greeting (see the binary).
const HELLO: u64 = u64::MAX - 1;

/// A child process that is killed (and reaped) if it is still running when the guard drops.
struct ChildGuard {
    child: Option<Child>,
    peer: u16,
    what: String,
}

impl ChildGuard {
    /// Reserve a peer, spawn the test peer with ARGS with its ticket, drop the ticket, and wait
    /// for the child's greeting (so it is attached when this returns).
    fn spawn(host: &Host, args: &[&str]) -> ChildGuard {
        let ticket = host.add_peer().expect("add_peer");
        let peer = ticket.peer_id();
        let mut command = plugin::test_peer(args);
        command.stdin(Stdio::null()).stdout(Stdio::null());
        ticket.apply(&mut command);
        let child = command.spawn().expect("spawn the test peer");
        drop(ticket); // the child has its own copy of the descriptor now
        let guard = ChildGuard {
            child: Some(child),
            peer,
            what: format!("test peer {args:?} (peer {peer})"),
        };
        let hello = host.recv_from(peer, Some(WATCHDOG)).expect("hello");
        assert_eq!(hello.meta().msg_id, HELLO);
        let pid = guard.child.as_ref().unwrap().id();
        assert_eq!(hello.payload(), pid.to_le_bytes());
        let info = host.peers()[usize::from(peer)];
        assert_eq!(info.pid, pid);
        // A child with little to do may be done, and gone, already.
        assert!(
            matches!(info.state, PeerState::Active | PeerState::Dying),
            "{info:?}"
        );
        guard
    }

    /// Wait for the child to exit (with a watchdog), and return its status.
    fn wait(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + WATCHDOG;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit", self.what);
            }
            // Polling the exit of another process, not synchronising with it.
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[track_caller]
    fn assert_success(self) {
        let what = self.what.clone();
        let status = self.wait();
        assert!(status.success(), "{what}: {status}");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// After a child exited: it said goodbye (its entry went Dying), and the host's supervisor
/// recovered the entry and found nothing the child leaked.
#[track_caller]
fn recovered_clean(events: &mut EventLog<'_>, host: &Host, peer: u16) {
    let recovery = events.goodbye_and_recovery(peer);
    assert_eq!(recovery.ring_slots_freed, 0, "{recovery:?}");
    assert_eq!(recovery.reclaimed.total(), 0, "{recovery:?}");
    assert_eq!(host.peers()[usize::from(peer)].state, PeerState::Empty);
}

/// Send frame `k` of `size` bytes to `peer` (copying or zero copy), `msg_id` its checksum.
fn send_checked(host: &Host, peer: u16, k: u64, size: usize, zero_copy: bool) -> FrameMeta {
    let seed = k * 31 + size as u64;
    let mut meta = FrameMeta {
        msg_id: expected(size, seed),
        channel_id: k as u32,
        method_id: size as u32,
        flags: 0xF1A6,
        credit_grant: 5,
        deadline_ns: 123_456_789 + k,
    };
    if zero_copy {
        let mut loan = host.loan(size).expect("loan");
        fill(loan.as_mut_slice(), seed);
        meta.msg_id = checksum(loan.as_slice());
        host.send_loan(peer, meta, loan).expect("send_loan");
    } else {
        host.send(peer, meta, &payload(size, seed)).expect("send");
    }
    meta
}

#[test]
fn child_echoes_inline_slot_and_16mib_frames() {
    let host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    let sizes = [
        0,
        1,
        16,
        17,
        1024,
        1025,
        100_000,
        (4 << 20) + 1,
        16 << 20,
        5,
        16 << 20,
    ];
    let child = ChildGuard::spawn(&host, &["echo", &sizes.len().to_string()]);
    let peer = child.peer;
    for (k, &size) in sizes.iter().enumerate() {
        let meta = send_checked(&host, peer, k as u64, size, k % 2 == 1);
        let echo = host.recv_from(peer, Some(WATCHDOG)).expect("echo");
        assert_eq!(*echo.meta(), meta);
        assert_eq!(echo.len(), size);
        assert_eq!(echo.is_inline(), size <= 16);
        assert_eq!(
            checksum(echo.payload()),
            meta.msg_id,
            "echo of {size} bytes"
        );
    }
    child.assert_success();
    recovered_clean(&mut EventLog::new(&host), &host, peer);
    assert_all_free(&host.stats());
}

#[test]
fn child_sends_checksummed_frames() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let (size, n) = (70_000, 20u64);
    let child = ChildGuard::spawn(&host, &["send", &size.to_string(), &n.to_string()]);
    for i in 0..n {
        let frame = host.recv_from(child.peer, Some(WATCHDOG)).expect("frame");
        assert_eq!(u64::from(frame.meta().channel_id), i, "in order");
        assert_eq!(frame.len(), size);
        let sum = checksum(frame.payload());
        assert_eq!(sum, frame.meta().msg_id);
        assert_eq!(sum, expected(size, i));
    }
    let peer = child.peer;
    child.assert_success();
    recovered_clean(&mut EventLog::new(&host), &host, peer);
    assert_all_free(&host.stats());
}

#[test]
fn several_children_at_once() {
    let host = Host::create(&HubConfig::new().max_peers(4)).expect("create");
    const ECHOES: u64 = 30;
    const SMALL: (usize, u64) = (16, 100);
    const LARGE: (usize, u64) = (16 << 20, 4);
    let echo_size = |k: u64| [5, 2000, 40_000][k as usize % 3];
    let n = ECHOES.to_string();
    let children = [
        ChildGuard::spawn(&host, &["echo", &n]),
        ChildGuard::spawn(&host, &["echo", &n]),
        ChildGuard::spawn(&host, &["send", &SMALL.0.to_string(), &SMALL.1.to_string()]),
        ChildGuard::spawn(&host, &["send", &LARGE.0.to_string(), &LARGE.1.to_string()]),
    ];
    let ids: Vec<u16> = children.iter().map(|c| c.peer).collect();
    // Everything for the echoing children up front (their rings hold it all), while the
    // sending children already send.
    let mut sent = [Vec::new(), Vec::new()];
    for k in 0..ECHOES {
        for (c, metas) in sent.iter_mut().enumerate() {
            metas.push(send_checked(
                &host,
                ids[c],
                k,
                echo_size(k),
                k.is_multiple_of(2),
            ));
        }
    }
    let expect = [ECHOES, ECHOES, SMALL.1, LARGE.1];
    let mut got = [0u64; 4];
    while got != expect {
        let frame = host.recv_timeout(WATCHDOG).expect("frame");
        let c = ids
            .iter()
            .position(|&id| id == frame.peer())
            .expect("a known peer");
        let k = got[c];
        let sum = checksum(frame.payload());
        assert_eq!(sum, frame.meta().msg_id, "child {c}, frame {k}");
        match c {
            0 | 1 => {
                assert_eq!(*frame.meta(), sent[c][k as usize], "echo {k} of child {c}");
                assert_eq!(frame.len(), echo_size(k));
            }
            _ => {
                let (size, _) = if c == 2 { SMALL } else { LARGE };
                assert_eq!(u64::from(frame.meta().channel_id), k, "in order");
                assert_eq!(frame.len(), size);
                assert_eq!(frame.is_inline(), size <= 16);
                assert_eq!(sum, expected(size, k));
            }
        }
        got[c] += 1;
        assert!(got[c] <= expect[c], "child {c} sent too much");
    }
    let mut events = EventLog::new(&host);
    for child in children {
        let peer = child.peer;
        child.assert_success();
        recovered_clean(&mut events, &host, peer);
    }
    assert_all_free(&host.stats());
}

#[test]
fn child_blocked_in_recv_sees_host_gone() {
    let mut files = TempFiles::default();
    let path = files.path("hub");
    let (max_peers, ring_capacity) = (1, 16);
    let host = Host::create(
        &HubConfig::new()
            .max_peers(max_peers)
            .ring_capacity(ring_capacity)
            .path(path.clone()),
    )
    .expect("create");
    // Watch the child's receive doorbell through a read-only mapping of our own.
    let view = ReadOnlyMapping::new(
        SegmentFile::open_path(&path, Access::ReadOnly).expect("open"),
        1 << 20,
    )
    .expect("map");
    let layout = SegmentLayout::new(max_peers, ring_capacity).expect("layout");
    let child = ChildGuard::spawn(&host, &["wait-gone"]);
    let bell =
        layout.peer_entry_offset(child.peer) + std::mem::offset_of!(PeerEntry, recv_data_futex);
    // The child announces itself as a waiter (bit 0) before it sleeps (R11).
    spin_until("the child to wait", || {
        let word = view.read_u32(bell).expect("bell");
        if word & 1 == 0 {
            std::thread::sleep(Duration::from_millis(1)); // another process: poll gently
        }
        word & 1 != 0
    });
    drop(host);
    child.assert_success();
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}
