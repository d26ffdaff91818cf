//! The host's supervisor: a thread that watches every peer and recovers the ones that are gone
//! (R10, R12), and the lifecycle events it reports.
//!
//! Every few milliseconds (at most [`TICK`]) it looks at each peer entry:
//!
//! - **Active**: it holds a pidfd of the peer's process (the one the host spawned, with
//!   [`Host::spawn_peer`](crate::Host::spawn_peer), or else the one the entry names), opened
//!   when it first sees the entry active; the pidfd polls readable once the process exits,
//!   which the supervisor waits for (so a death is seen within one tick, whoever spawned the
//!   peer). A peer whose heartbeat
//!   (`last_seen`, written by the peer's own heartbeat thread) is older than the hub's
//!   `heartbeat_timeout` is hung or stopped, and evicted. A peer entry whose pid changes under
//!   an attached peer was rewritten, and its peer is evicted.
//! - **Dying** (goodbye): recover it once the host has read the frames the peer sent before it
//!   left. **Dead** (evicted), or a flags word that is no state: recover it.
//!
//! Once it has recovered an evicted peer it asks the auditor thread (see the `audit` module) to
//! look at the allocator's shared state at once.
//!
//! Each step is reported as a [`PeerEvent`] to [`Host::next_event`](crate::Host::next_event).

use std::time::Duration;

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

/// What the supervisor remembers of one attached peer.
struct Watched {
    epoch: u64,
    pid: u32,
    process: Option<ProcessWatch>,
}

/// The supervisor's loop, until the host is dropped.
pub(crate) fn run(core: &Core) {
    let peers = core.links.len();
    let mut watched: Vec<Option<Watched>> = (0..peers).map(|_| None).collect();
    // The epoch of each entry whose goodbye was reported, while it stays Dying.
    let mut goodbye: Vec<Option<u64>> = vec![None; peers];
    // The epoch of each entry whose evicted process was fenced (killed), so that a recovery
    // that fails and is tried again next tick does not kill whatever the pid word names then.
    let mut fenced: Vec<Option<u64>> = vec![None; peers];
    let timeout_ns = u64::try_from(core.heartbeat_timeout.as_nanos()).unwrap_or(u64::MAX);
    let own_pid = std::process::id();
    while !core.stopping.load(Ordering::Acquire) {
        // Sleep until a watched process exits, or a tick passes.
        let (ids, watches): (Vec<usize>, Vec<&ProcessWatch>) = watched
            .iter()
            .enumerate()
            .filter_map(|(i, w)| Some((i, w.as_ref()?.process.as_ref()?)))
            .unzip();
        let exited: Vec<usize> = wait_for_exits(&watches, TICK)
            .into_iter()
            .map(|k| ids[k])
            .collect();
        let now = monotonic_ns();
        for (index, slot) in watched.iter_mut().enumerate() {
            let peer = index as u16;
            let words = core.endpoint.segment.peer(peer);
            // The epoch before the state: a Dying state read after it is that life's or a later
            // one's, and a second look at the epoch tells which.
            let life = words.epoch.load(Ordering::Acquire);
            let state = words.state();
            match state {
                PeerState::Active => {
                    let epoch = words.epoch.load(Ordering::Acquire);
                    let pid = words.pid.load(Ordering::Acquire);
                    // A peer the host spawned is known by its spawn; any other by the pid it
                    // wrote into its entry, as it is at the first look.
                    let spawned = core.spawned_pid(peer);
                    // A new life of the entry (or the first look at it): a watch of its own.
                    let fresh = slot.as_ref().is_none_or(|w| w.epoch != epoch);
                    if fresh {
                        let target = spawned.unwrap_or(pid);
                        let process = match ProcessWatch::open(target) {
                            Ok(watch) => Some(watch),
                            Err(WatchError::NoSuchProcess) if target != 0 => {
                                // Attached and gone before we looked.
                                died(core, peer, target, life);
                                *slot = None;
                                continue;
                            }
                            // No pid yet (between the CAS and the store), or no pidfds: the
                            // heartbeat still finds a silent peer.
                            Err(_) => None,
                        };
                        if target != 0 {
                            emit(core, PeerEvent::Attached { peer, pid: target });
                        }
                        *slot = Some(Watched {
                            epoch,
                            pid: target,
                            process,
                        });
                        if target == 0 {
                            continue;
                        }
                    }
                    let Some(watch) = slot.as_mut() else { continue };
                    if watch.pid == 0 && pid != 0 {
                        // The pid arrived after the state: watch it now.
                        watch.pid = pid;
                        watch.process = ProcessWatch::open(pid).ok();
                        emit(core, PeerEvent::Attached { peer, pid });
                    }
                    // An exit seen in this pass is of the process watched before it: for a
                    // fresh watch, that is an earlier life's (evicted and recovered, and the id
                    // handed out again, between two passes), not this peer's.
                    if exited.contains(&index) && !fresh {
                        died(core, peer, watch.pid, life);
                        *slot = None;
                    } else if pid != watch.pid && !(pid == 0 && spawned.is_some()) {
                        // (A spawned peer's pid word is 0 until it has written it.)
                        core.evict(
                            peer,
                            EvictReason::EntryRewritten {
                                what: format!("pid {} became {pid}", watch.pid),
                            },
                        );
                    } else {
                        let seen = words.last_seen.load(Ordering::Relaxed);
                        // R3: a heartbeat from the future counts as now.
                        let silent = now.saturating_sub(seen);
                        if silent > timeout_ns {
                            core.evict(
                                peer,
                                EvictReason::HeartbeatTimeout {
                                    silent_for: Duration::from_nanos(silent),
                                },
                            );
                        }
                    }
                }
                PeerState::Dying => {
                    if words.epoch.load(Ordering::Acquire) != life {
                        // Recovered and handed out again meanwhile: look at it next tick.
                        continue;
                    }
                    if goodbye[index] != Some(life) {
                        emit(core, PeerEvent::Goodbye { peer });
                        goodbye[index] = Some(life);
                    }
                    *slot = None;
                    // Frames the peer sent before its goodbye are the host's: recover the entry
                    // once the host has read them (a ring whose indices are garbage has none to
                    // read). `add_peer` recovers it sooner when it needs the entry.
                    let unread = core
                        .endpoint
                        .segment
                        .ring(2 * index)
                        .and_then(|ring| ring.len())
                        .unwrap_or(0);
                    if unread == 0 {
                        recover(core, peer, life);
                    }
                }
                PeerState::Dead => {
                    let reason = core
                        .reasons
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(index)
                        .and_then(Option::take);
                    if let Some(reason) = reason {
                        emit(core, PeerEvent::Evicted { peer, reason });
                    }
                    // Fence it first: an evicted process that still runs could finish an
                    // allocator operation on state the recovery gives back (R10). A peer
                    // evicted before this loop first saw it attached has no watch yet: its
                    // process is the one the host spawned, or else the one its entry names,
                    // trusted as a first look trusts it.
                    let process = match slot.take() {
                        Some(watched) => watched.process.filter(|_| watched.pid != own_pid),
                        None if fenced[index] != Some(life) => {
                            let pid = core
                                .spawned_pid(peer)
                                .unwrap_or_else(|| words.pid.load(Ordering::Acquire));
                            match pid {
                                0 => None,
                                pid if pid == own_pid => None,
                                pid => ProcessWatch::open(pid).ok(),
                            }
                        }
                        None => None,
                    };
                    fenced[index] = Some(life);
                    if core.kill_evicted
                        && let Some(process) = &process
                    {
                        process.kill_and_wait(Duration::from_secs(1));
                    }
                    recover(core, peer, life);
                    // R3: an evicted peer may have scribbled on the allocator before it was
                    // caught: the auditor looks at once.
                    core.audit_now.store(true, Ordering::Release);
                }
                PeerState::Invalid(flags) => {
                    core.evict(
                        peer,
                        EvictReason::EntryRewritten {
                            what: format!("flags {flags:#x}"),
                        },
                    );
                }
                PeerState::Empty | PeerState::Reserved => *slot = None,
            }
        }
    }
}

/// A peer's process exited without goodbye: mark it Dead and recover it.
fn died(core: &Core, peer: u16, pid: u32, life: u64) {
    let words = core.endpoint.segment.peer(peer);
    if words.transition(PeerState::Active, PeerState::Dead).is_ok() {
        emit(core, PeerEvent::Died { peer, pid });
        recover(core, peer, life);
    }
}

/// Recover life `life` of `peer`, unless someone else did already.
fn recover(core: &Core, peer: u16, life: u64) {
    match core.recover_peer(peer, Some(life)) {
        Ok(Some(recovery)) => emit(core, PeerEvent::Recovered { peer, recovery }),
        Ok(None) => {}
        Err(error) => emit(
            core,
            PeerEvent::RecoveryFailed {
                peer,
                error: error.to_string(),
            },
        ),
    }
}

pub(crate) fn emit(core: &Core, event: PeerEvent) {
    // A full backlog drops the event: the application is not reading them.
    let _ = core.events.try_send(event);
}
