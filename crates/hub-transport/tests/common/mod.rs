//! Helpers shared by the hub-transport integration tests.

#![allow(dead_code)]

pub mod fdinfo;
pub mod pattern;
pub mod sparse;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hub_alloc::ClassStats;
use hub_layout::{HUB_SIZE_CLASSES, NO_DEADLINE};
use hub_transport::FrameMeta;

/// How long any blocking step of a test may take before the test fails instead of hanging.
/// A guard against a lost wakeup or a deadlock, never a measure of speed.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// Wait until `child` exits, at most [`WATCHDOG`]; its status. A child still running then is
/// killed and the test fails, naming it as `what`.
#[track_caller]
pub fn wait_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A path under the system's temporary directory that no other test (in this or another
/// process) uses. Nothing is created.
pub fn temp_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "hub-test-{}-{tag}-{n}-{nanos:08x}",
        std::process::id()
    ))
}

/// Removes the files it names when dropped (also when a test fails).
#[derive(Debug, Default)]
pub struct TempFiles(pub Vec<PathBuf>);

impl TempFiles {
    /// A new unique path, removed on drop.
    pub fn path(&mut self, tag: &str) -> PathBuf {
        let path = temp_path(tag);
        self.0.push(path.clone());
        path
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The size class the allocator picks first for `len` bytes (`None`: inline).
pub fn class_of(len: usize) -> Option<usize> {
    if len <= hub_layout::INLINE_PAYLOAD_SIZE {
        return None;
    }
    HUB_SIZE_CLASSES
        .iter()
        .position(|&(size, _)| size as usize >= len)
}

/// Every slot of every class is free, and the counts add up.
#[track_caller]
pub fn assert_all_free(stats: &[ClassStats]) {
    assert_eq!(stats.len(), HUB_SIZE_CLASSES.len(), "{stats:?}");
    for (class, s) in stats.iter().enumerate() {
        assert_eq!(
            (s.allocated, s.in_flight, s.corrupt),
            (0, 0, 0),
            "class {class}: {s:?}"
        );
        assert_eq!(s.free, s.total, "class {class}: {s:?}");
        assert_eq!(s.total, s.header_total, "class {class}: {s:?}");
        assert!(s.extents >= 1, "class {class}: {s:?}");
    }
}

/// Metadata for frame `i` that uses every bit pattern a field can hold somewhere: extremes for
/// the first two frames, then values derived from `i` that differ in every field.
pub fn meta(i: u64) -> FrameMeta {
    match i {
        0 => FrameMeta {
            msg_id: u64::MAX,
            channel_id: u32::MAX,
            method_id: u32::MAX,
            flags: u32::MAX,
            credit_grant: u32::MAX,
            deadline_ns: NO_DEADLINE,
        },
        1 => FrameMeta {
            msg_id: 0,
            channel_id: 0,
            method_id: 0,
            flags: 0,
            credit_grant: 0,
            deadline_ns: 0,
        },
        _ => FrameMeta {
            msg_id: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            channel_id: 0xC0DE_0000 | i as u32,
            method_id: 0x0BAD_0000 ^ (i as u32).rotate_left(7),
            flags: 0x8000_0001 | (i as u32) << 4,
            credit_grant: u32::MAX - i as u32,
            deadline_ns: 1_700_000_000_000_000_000 + i,
        },
    }
}

/// Spin (yielding) until `condition` holds; panics after [`WATCHDOG`]. For conditions another
/// thread makes true by itself (a flag it sets, a word it writes), not a timed wait.
#[track_caller]
pub fn spin_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// A barrier for `n` threads that fails (panics) after [`WATCHDOG`] instead of waiting forever
/// when a party never arrives (a thread that panicked before it got there).
#[derive(Debug)]
pub struct Rendezvous {
    n: usize,
    state: std::sync::Mutex<(usize, u64)>,
    all_here: std::sync::Condvar,
}

impl Rendezvous {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            state: std::sync::Mutex::new((0, 0)),
            all_here: std::sync::Condvar::new(),
        }
    }

    #[track_caller]
    pub fn wait(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let round = state.1;
        state.0 += 1;
        if state.0 == self.n {
            *state = (0, round + 1);
            self.all_here.notify_all();
            return;
        }
        let (state, timeout) = self
            .all_here
            .wait_timeout_while(state, WATCHDOG, |s| s.1 == round)
            .unwrap_or_else(|e| e.into_inner());
        drop(state);
        assert!(!timeout.timed_out(), "a party never came to the rendezvous");
    }
}

/// The host's lifecycle events waiting now (for failure messages).
pub fn pending_events(host: &hub_transport::Host) -> Vec<hub_transport::PeerEvent> {
    std::iter::from_fn(|| host.try_event()).collect()
}

/// The host supervisor's lifecycle events, read as a test needs them: events it is not waiting
/// for yet are kept for later.
pub struct EventLog<'h> {
    host: &'h hub_transport::Host,
    seen: Vec<hub_transport::PeerEvent>,
}

fn event_peer(event: &hub_transport::PeerEvent) -> Option<u16> {
    use hub_transport::PeerEvent::*;
    match event {
        Attached { peer, .. }
        | Goodbye { peer }
        | Died { peer, .. }
        | Evicted { peer, .. }
        | Recovered { peer, .. }
        | RecoveryFailed { peer, .. } => Some(*peer),
        _ => None,
    }
}

impl<'h> EventLog<'h> {
    pub fn new(host: &'h hub_transport::Host) -> Self {
        Self {
            host,
            seen: Vec::new(),
        }
    }

    /// The first event (already seen, or arriving within [`WATCHDOG`]) that `matches`. Events
    /// about the same peer that came before it are from before: they are dropped.
    #[track_caller]
    pub fn wait(
        &mut self,
        what: &str,
        matches: impl Fn(&hub_transport::PeerEvent) -> bool,
    ) -> hub_transport::PeerEvent {
        let (found, before) = match self.seen.iter().position(&matches) {
            Some(i) => (self.seen.remove(i), i),
            None => {
                let deadline = Instant::now() + WATCHDOG;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.host.next_event(Some(left)) {
                        Some(event) if matches(&event) => break (event, self.seen.len()),
                        Some(event) => self.seen.push(event),
                        None => panic!("no event {what}; saw {:?}", self.seen),
                    }
                }
            }
        };
        let peer = event_peer(&found);
        let later = self.seen.split_off(before);
        self.seen.retain(|e| event_peer(e) != peer);
        self.seen.extend(later);
        found
    }

    /// What the supervisor's recovery of `peer` freed, once it reported it.
    #[track_caller]
    pub fn recovery(&mut self, peer: u16) -> hub_transport::Recovery {
        match self.wait(
            "Recovered",
            |e| matches!(e, hub_transport::PeerEvent::Recovered { peer: p, .. } if *p == peer),
        ) {
            hub_transport::PeerEvent::Recovered { recovery, .. } => recovery,
            _ => unreachable!(),
        }
    }

    /// `peer` said goodbye (its entry went Dying), and the supervisor recovered it: what the
    /// recovery freed.
    #[track_caller]
    pub fn goodbye_and_recovery(&mut self, peer: u16) -> hub_transport::Recovery {
        self.wait(
            "Goodbye",
            |e| matches!(e, hub_transport::PeerEvent::Goodbye { peer: p } if *p == peer),
        );
        self.recovery(peer)
    }
}
