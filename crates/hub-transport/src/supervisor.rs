//! The host's supervisor: a thread that watches every peer and recovers the ones that are gone
//! (R10, R12), and the lifecycle events it reports.
//!
//! The host keeps private truth about every peer entry (R4, [`EntryTruth`]): the entry's life
//! as the host knows it (empty, reserved, attached, leaving, fenced), its epoch (the host's own
//! counter), and the process it spawned for it with the pidfd taken in the spawn. Every few
//! milliseconds (at most [`TICK`]), or at once when a watched process exits, the supervisor
//! compares each entry's shared words with that truth:
//!
//! - **Empty** in the host's truth: whatever a peer wrote there (live flags and another
//!   process's pid, say) is put back, and nobody is signalled.
//! - **Reserved**: an entry gone Active (or Dying) is an attach: the supervisor learns the
//!   peer's process (the host's spawn; a thread of its own process, from the `local`
//!   registry; or else a pidfd opened on the pid the peer wrote, as information) and reports
//!   [`PeerEvent::Attached`], always before anything else of that life. A spawned child that
//!   exits before it attaches is reported ([`PeerEvent::ExitedBeforeAttach`]) and its
//!   reservation withdrawn.
//! - **Attached**: the process's exit is a death ([`PeerEvent::Died`]); a heartbeat
//!   (`last_seen`) older than the hub's `heartbeat_timeout`, an epoch or pid word that is not
//!   the life's, or flags that are not Active or Dying (written over the entry by anyone) are
//!   an eviction ([`PeerEvent::Evicted`]). Dying is a goodbye ([`PeerEvent::Goodbye`]).
//! - **Leaving** (after a goodbye): the session ends only once the process is gone. A process
//!   the host spawned is waited for up to the heartbeat timeout, then killed through the
//!   spawn's pidfd; any other is waited for. Then, once the host has read what the peer sent
//!   before it left, the entry is recovered ([`PeerEvent::Recovered`]) and its id free again.
//! - **Fenced** (evicted or dead): the entry stays Dead and its id is not handed out until the
//!   process is gone: a spawned one is killed when it is evicted (`kill_evicted`), any other is
//!   never signalled and waited for (or, when no pidfd of it could be opened, its heartbeat's
//!   silence for the heartbeat timeout counts); a peer of the host's own process is gone once
//!   its `Peer` is dropped. Then it is recovered, and the auditor thread (see the `audit`
//!   module) looks at the allocator's shared state at once.
//!
//! The host signals only processes it spawned, through the pidfd taken in the spawn: a pid in
//! a peer entry is information, never authority.
//!
//! Each step is reported as a [`PeerEvent`] to [`Host::next_event`](crate::Host::next_event).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host::{Core, Recovery};
use crate::link::DescriptorFault;
use crate::liveness::{ProcessWatch, WatchError, wait_for_exits};
use crate::ring::RingError;
use crate::segment::{PeerState, monotonic_ns};
use crate::sync::Ordering;

/// The supervisor's period: a dead peer is found within it (R12 asks for 100 ms).
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// Events the application has not read yet, at most.
pub(crate) const EVENT_BACKLOG: usize = 1024;

/// Why the host evicted a peer (R3, R4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictReason {
    /// No heartbeat for longer than the hub's heartbeat timeout: the peer hangs or is stopped.
    HeartbeatTimeout {
        /// How long it had been silent.
        silent_for: Duration,
    },
    /// It sent a descriptor that breaks the protocol.
    BadDescriptor(DescriptorFault),
    /// It broke a ring's indices (a head that jumped or went backwards, a tail past the head).
    Ring(RingError),
    /// Its peer entry was rewritten under it: a flags word that is no state, or another pid.
    EntryRewritten {
        /// What was found.
        what: String,
    },
    /// The application evicted it ([`Host::evict`](crate::Host::evict)).
    Application(String),
}

impl std::fmt::Display for EvictReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvictReason::HeartbeatTimeout { silent_for } => {
                write!(f, "no heartbeat for {silent_for:?}")
            }
            EvictReason::BadDescriptor(fault) => write!(f, "bad descriptor: {fault}"),
            EvictReason::Ring(error) => write!(f, "corrupted ring: {error}"),
            EvictReason::EntryRewritten { what } => write!(f, "peer entry rewritten: {what}"),
            EvictReason::Application(why) => write!(f, "evicted by the application: {why}"),
        }
    }
}

/// A change in a peer's life, as the host's supervisor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// A peer attached (R9).
    Attached {
        /// Its id.
        peer: u16,
        /// Its process id.
        pid: u32,
    },
    /// A peer said goodbye.
    Goodbye {
        /// Its id.
        peer: u16,
    },
    /// A peer's process exited without saying goodbye (R12).
    Died {
        /// Its id.
        peer: u16,
        /// Its process id.
        pid: u32,
    },
    /// A child the host spawned for a peer ([`Host::spawn_peer`](crate::Host::spawn_peer))
    /// exited before it attached; its reservation was withdrawn (what the host sent it is
    /// freed, and a [`Recovered`](Self::Recovered) follows).
    ExitedBeforeAttach {
        /// The id it was reserved.
        peer: u16,
        /// The child's process id.
        pid: u32,
    },
    /// A peer was evicted.
    Evicted {
        /// Its id.
        peer: u16,
        /// Why.
        reason: EvictReason,
    },
    /// A peer's entry was recovered (R10) and is free for a new peer.
    Recovered {
        /// Its id.
        peer: u16,
        /// What the recovery freed.
        recovery: Recovery,
    },
    /// Recovering a peer failed (corruption in shared state); the entry stays as it was.
    RecoveryFailed {
        /// Its id.
        peer: u16,
        /// The error, as text.
        error: String,
    },
    /// The supervisor found the allocator's shared state damaged, and repaired what it could
    /// (see [`Host::check_allocator`](crate::Host::check_allocator)). Not one peer's event:
    /// which participant wrote the damage cannot be told.
    AllocatorDamaged(crate::AllocatorDamage),
    /// Words the host wrote once and no participant may change (what attach validates, the
    /// host's state and pid, the allocator's class constants, extent offsets and
    /// `current_size`) were found changed and put back from the host's private copies (R4).
    /// Not one peer's event: which participant wrote them cannot be told.
    WordsRestored {
        /// What was restored.
        words: Vec<&'static str>,
    },
}

/// How the host knows the process of one life of a peer entry (R4): from its own spawn, from
/// this process's registry of its own peers, or (information only) from the pid word.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// The process the host spawned for the reservation ([`Host::spawn_peer`]): the pidfd is
    /// the one taken in the spawn ([`EntryTruth::spawn`]). The only kind the host signals.
    ///
    /// [`Host::spawn_peer`]: crate::Host::spawn_peer
    Spawned,
    /// A thread of the host's own process (`local`): trusted as the host is, never signalled.
    Local,
    /// Attached from another process by ticket: a pidfd opened on the pid word at the first
    /// look. Information, never authority: it is never signalled; its exit ends the fence.
    Named {
        /// The pid word at the first look.
        pid: u32,
        /// A watch on that process.
        watch: Arc<ProcessWatch>,
    },
    /// As `Named`, but no process had that pid at the first look: gone already.
    Exited {
        /// The pid word at the first look.
        pid: u32,
    },
    /// No pidfd could be opened (no pid written, or none available): the heartbeat is all the
    /// host knows of the process, and its silence for the heartbeat timeout counts as gone.
    Unknown {
        /// The pid word at the first look.
        pid: u32,
    },
}

/// The process the host spawned for a reservation: its pid and the pidfd taken in the spawn,
/// before the `Child` was handed out (so before it could be reaped and its pid reused).
#[derive(Debug)]
pub(crate) struct Spawn {
    pub pid: u32,
    pub watch: Arc<ProcessWatch>,
}

/// A life of a peer entry as the host knows it (R4, R9), whatever the shared flags say.
#[derive(Debug)]
pub(crate) enum Life {
    /// Free for `add_peer`.
    Empty,
    /// Reserved by `add_peer`; no attach seen yet.
    Reserved {
        /// Since when an attach (the entry Active) has been seen with no pid written yet.
        pid_wait: Option<Instant>,
    },
    /// Attached.
    Attached(Identity),
    /// The peer said goodbye (the entry Dying): the session ends when its process is gone.
    Leaving {
        identity: Identity,
        since: Instant,
        killed: bool,
    },
    /// Evicted (or found dead): fenced, the id kept, until its process is gone.
    Fenced { identity: Identity },
}

/// The host's private truth about one peer entry: what no peer can rewrite (R4).
#[derive(Debug)]
pub(crate) struct EntryTruth {
    /// The epoch of the entry's current (or last) life: the host's own counter, stored into
    /// the shared word, never read back from it.
    pub epoch: u64,
    pub life: Life,
    /// The process the host spawned for the current reservation, if it did.
    pub spawn: Option<Spawn>,
}

impl EntryTruth {
    /// An empty entry at epoch 0.
    pub fn new() -> Self {
        Self {
            epoch: 0,
            life: Life::Empty,
            spawn: None,
        }
    }

    /// The watch whose exit the supervisor waits for: the spawn's, or a named process's.
    fn watch(&self) -> Option<&Arc<ProcessWatch>> {
        let identity = match &self.life {
            Life::Empty => return None,
            Life::Reserved { .. } => return self.spawn.as_ref().map(|s| &s.watch),
            Life::Attached(identity)
            | Life::Leaving { identity, .. }
            | Life::Fenced { identity } => identity,
        };
        match identity {
            Identity::Spawned => self.spawn.as_ref().map(|s| &s.watch),
            Identity::Named { watch, .. } => Some(watch),
            _ => None,
        }
    }
}

/// The supervisor's loop, until the host is dropped.
pub(crate) fn run(core: &Core) {
    while !core.stopping.load(Ordering::Acquire) {
        // Sleep until a watched process exits, or a tick passes. A process whose exit is known
        // already is not waited on (its pidfd stays readable).
        let watches: Vec<Arc<ProcessWatch>> = (0..core.entries.len())
            .filter_map(|peer| core.truth(peer as u16).watch().cloned())
            .filter(|watch| !watch.has_exited())
            .collect();
        let watching: Vec<&ProcessWatch> = watches.iter().map(|w| &**w).collect();
        wait_for_exits(&watching, TICK);
        drop(watches);
        for peer in 0..core.entries.len() {
            let peer = peer as u16;
            let mut truth = core.truth(peer);
            look(core, peer, &mut truth);
        }
    }
}

/// One look at `peer`'s entry: its shared words against the host's truth (R4).
pub(crate) fn look(core: &Core, peer: u16, truth: &mut EntryTruth) {
    let words = core.endpoint.segment.peer(peer);
    // A few steps at most: an attach seen late is followed by what came after it in one look.
    for _ in 0..4 {
        let state = words.state();
        match &mut truth.life {
            Life::Empty => {
                // Nobody's entry: whatever a peer wrote there (live flags and a stranger's
                // pid, say) is nobody's life. Put back, and signal nobody.
                let (pid, epoch) = (
                    words.pid.load(Ordering::Acquire),
                    words.epoch.load(Ordering::Acquire),
                );
                if state != PeerState::Empty || pid != 0 || epoch != truth.epoch {
                    words
                        .flags
                        .store(PeerState::Empty.flags(), Ordering::Release);
                    words.pid.store(0, Ordering::Relaxed);
                    words.epoch.store(truth.epoch, Ordering::Release);
                    emit(
                        core,
                        PeerEvent::WordsRestored {
                            words: vec!["unused peer entry"],
                        },
                    );
                }
                return;
            }
            Life::Reserved { pid_wait } => match state {
                PeerState::Active | PeerState::Dying => {
                    // The peer attached (and perhaps left at once): Attached first.
                    let waited = pid_wait.get_or_insert_with(Instant::now).elapsed();
                    let patient = state == PeerState::Active && waited < core.heartbeat_timeout;
                    if !observe_attach(core, peer, truth, patient) {
                        return;
                    }
                }
                PeerState::Reserved => {
                    if words.epoch.load(Ordering::Acquire) != truth.epoch {
                        // Without its epoch the ticket cannot attach.
                        words.epoch.store(truth.epoch, Ordering::Release);
                    }
                    let exited = truth
                        .spawn
                        .as_ref()
                        .filter(|spawn| spawn.watch.has_exited())
                        .map(|spawn| spawn.pid);
                    if let Some(pid) = exited
                        && words
                            .transition(PeerState::Reserved, PeerState::Dead)
                            .is_ok()
                    {
                        // Its spawned child exited before it attached: the reservation is
                        // withdrawn, what the host sent it freed.
                        emit(core, PeerEvent::ExitedBeforeAttach { peer, pid });
                        truth.life = Life::Fenced {
                            identity: Identity::Spawned,
                        };
                        continue;
                    }
                    return;
                }
                // The host's own changes (evict, withdraw) move its truth first: this one is a
                // write over the entry. With a pid written, the peer attached first (and is
                // reported so): then it is a write over an attached entry. Else the
                // reservation is evicted (its spawned child killed).
                state => {
                    if words.pid.load(Ordering::Acquire) != 0 {
                        observe_attach(core, peer, truth, false);
                        continue;
                    }
                    let what = format!("flags {:#x} over a reserved entry", state.flags());
                    core.evict_locked(peer, truth, EvictReason::EntryRewritten { what });
                }
            },
            Life::Attached(identity) => {
                let identity = identity.clone();
                let gone = core.is_gone(peer, truth, &identity);
                match state {
                    PeerState::Active if gone => {
                        words
                            .flags
                            .store(PeerState::Dead.flags(), Ordering::Release);
                        let pid = identity_pid(truth, &identity);
                        emit(core, PeerEvent::Died { peer, pid });
                        truth.life = Life::Fenced { identity };
                    }
                    PeerState::Active => {
                        check_attached(core, peer, truth, &identity);
                        if matches!(truth.life, Life::Attached(_)) {
                            return;
                        }
                    }
                    PeerState::Dying => {
                        // A goodbye ends the session only once the process is gone (R4).
                        emit(core, PeerEvent::Goodbye { peer });
                        truth.life = Life::Leaving {
                            identity,
                            since: Instant::now(),
                            killed: false,
                        };
                    }
                    state => {
                        // Dead, Empty, Reserved or garbage over an attached entry: not the
                        // host's doing (its evictions move its truth first).
                        core.evict_locked(
                            peer,
                            truth,
                            EvictReason::EntryRewritten {
                                what: format!("flags {:#x} over an attached peer", state.flags()),
                            },
                        );
                    }
                }
            }
            Life::Leaving {
                identity,
                since,
                killed,
            } => {
                let (identity, since, killed) = (identity.clone(), *since, *killed);
                if !matches!(state, PeerState::Dying | PeerState::Dead) {
                    words
                        .flags
                        .store(PeerState::Dying.flags(), Ordering::Release);
                }
                if !core.is_gone(peer, truth, &identity) {
                    // Its own spawn: waited for up to the heartbeat timeout, then killed.
                    if let (Identity::Spawned, Some(spawn)) = (&identity, &truth.spawn)
                        && !killed
                        && since.elapsed() > core.heartbeat_timeout
                    {
                        spawn.watch.kill();
                        truth.life = Life::Leaving {
                            identity,
                            since,
                            killed: true,
                        };
                    }
                    return;
                }
                // Frames the peer sent before its goodbye are the host's: recover the entry
                // once the host has read them (a ring whose indices are garbage has none to
                // read). `add_peer` recovers it sooner when it needs the entry.
                let unread = core
                    .endpoint
                    .segment
                    .ring(2 * usize::from(peer))
                    .and_then(|ring| ring.len())
                    .unwrap_or(0);
                if unread == 0 {
                    core.finish(peer, truth, true);
                }
                return;
            }
            Life::Fenced { identity } => {
                let identity = identity.clone();
                if state != PeerState::Dead {
                    words
                        .flags
                        .store(PeerState::Dead.flags(), Ordering::Release);
                }
                if core.is_gone(peer, truth, &identity) && core.finish(peer, truth, true) {
                    // R3: an evicted peer may have scribbled on the allocator before it was
                    // caught: the auditor looks at once.
                    core.audit_now.store(true, Ordering::Release);
                }
                return;
            }
        }
    }
}

/// The supervisor saw `peer`, reserved in its truth, attached: learn its process and report
/// `Attached`. With `patient`, a peer attached from another process whose pid word is still 0
/// (it writes it right after its compare-and-swap) is looked at again next tick; `false` then.
pub(crate) fn observe_attach(
    core: &Core,
    peer: u16,
    truth: &mut EntryTruth,
    patient: bool,
) -> bool {
    let words = core.endpoint.segment.peer(peer);
    let pid = words.pid.load(Ordering::Acquire);
    let identity = if truth.spawn.is_some() {
        Identity::Spawned
    } else if crate::local::was_attached(core.file_id, peer, truth.epoch) {
        Identity::Local
    } else if pid == 0 {
        if patient {
            return false;
        }
        Identity::Unknown { pid }
    } else {
        match ProcessWatch::open(pid) {
            Ok(watch) => Identity::Named {
                pid,
                watch: Arc::new(watch),
            },
            Err(WatchError::NoSuchProcess) => Identity::Exited { pid },
            Err(WatchError::Unavailable(_)) => Identity::Unknown { pid },
        }
    };
    let pid = identity_pid(truth, &identity);
    emit(core, PeerEvent::Attached { peer, pid });
    truth.life = Life::Attached(identity);
    true
}

/// The pid to report for a life known as `identity`.
fn identity_pid(truth: &EntryTruth, identity: &Identity) -> u32 {
    match identity {
        Identity::Spawned => truth.spawn.as_ref().map_or(0, |spawn| spawn.pid),
        Identity::Local => std::process::id(),
        Identity::Named { pid, .. } | Identity::Exited { pid } | Identity::Unknown { pid } => *pid,
    }
}

/// An attached, live peer's words against the host's truth: its epoch, its pid, its heartbeat.
fn check_attached(core: &Core, peer: u16, truth: &mut EntryTruth, identity: &Identity) {
    let words = core.endpoint.segment.peer(peer);
    let epoch = words.epoch.load(Ordering::Acquire);
    if epoch != truth.epoch {
        let what = format!("epoch {} became {epoch}", truth.epoch);
        core.evict_locked(peer, truth, EvictReason::EntryRewritten { what });
        return;
    }
    let pid = words.pid.load(Ordering::Acquire);
    let known = identity_pid(truth, identity);
    // A spawned peer's pid word is 0 until it has written it.
    if pid != known && !(pid == 0 && matches!(identity, Identity::Spawned)) {
        let what = format!("pid {known} became {pid}");
        core.evict_locked(peer, truth, EvictReason::EntryRewritten { what });
        return;
    }
    // R3: a heartbeat from the future counts as now.
    let silent = monotonic_ns().saturating_sub(words.last_seen.load(Ordering::Relaxed));
    let timeout_ns = u64::try_from(core.heartbeat_timeout.as_nanos()).unwrap_or(u64::MAX);
    if silent > timeout_ns {
        core.evict_locked(
            peer,
            truth,
            EvictReason::HeartbeatTimeout {
                silent_for: Duration::from_nanos(silent),
            },
        );
    }
}

/// Recover life `life` of `peer`, reported as [`PeerEvent::Recovered`] with `report`; whether
/// it did.
pub(crate) fn recover(core: &Core, peer: u16, life: u64, report: bool) -> bool {
    match core.recover_peer(peer, Some(life)) {
        Ok(Some(recovery)) => {
            if report {
                emit(core, PeerEvent::Recovered { peer, recovery });
            }
            true
        }
        // A word changed under it: the next look tries again.
        Ok(None) => false,
        Err(error) => {
            emit(
                core,
                PeerEvent::RecoveryFailed {
                    peer,
                    error: error.to_string(),
                },
            );
            false
        }
    }
}

pub(crate) fn emit(core: &Core, event: PeerEvent) {
    // A full backlog drops the event: the application is not reading them.
    let _ = core.events.try_send(event);
}
