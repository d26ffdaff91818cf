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
//!   registry; or else a pidfd opened on the pid the peer wrote, as information, when the
//!   kernel shows that process using the segment) and reports
//!   [`PeerEvent::Attached`], always before anything else of that life. A spawned child that
//!   exits before it attaches is reported ([`PeerEvent::ExitedBeforeAttach`]) and its
//!   reservation withdrawn.
//! - **Attached**: the process's exit is a death ([`PeerEvent::Died`]); a heartbeat
//!   (`last_seen`) older than the hub's `heartbeat_timeout`, or unchanged that long as the
//!   supervisor saw it, an epoch or pid word that is not the life's, or flags that are not
//!   Active or Dying (written over the entry by anyone) are an eviction
//!   ([`PeerEvent::Evicted`]). Dying is a goodbye ([`PeerEvent::Goodbye`]).
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

use crate::event::{EvictReason, PeerEvent};
use crate::host_core::{Core, EntryTruth, Identity, Life, identity_pid};
use crate::liveness::{ExitCheck, ProcessWatch, wait_for_exits};
use crate::segment::PeerState;
use crate::sync::Ordering;

/// The supervisor's period: a dead peer is found within it (R12 asks for 100 ms).
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// The supervisor's loop, until the host is dropped.
pub(crate) fn run(core: &Core) {
    while !core.stopping.load(Ordering::Acquire) {
        // Sleep until a watched process exits, or a tick passes. A process whose exit is known
        // already is not waited on (its pidfd stays readable).
        // One system call a tick however many peers: a watch whose exit is not known yet is
        // polled here, and the looks below use what this poll saw (`ExitCheck::AsPolled`). A
        // watch this poll did not include (a named peer's, opened by a look below; a life begun
        // since the list was made) is taken for alive until the next tick's poll: a death is
        // seen at most one tick late, well inside R12's 100 ms.
        let watches: Vec<Arc<ProcessWatch>> = (0..core.entries.len())
            .filter_map(|peer| core.truth(peer as u16).watch().cloned())
            .filter(|watch| !watch.exit_seen())
            .collect();
        let watching: Vec<&ProcessWatch> = watches.iter().map(|w| &**w).collect();
        wait_for_exits(&watching, TICK);
        drop(watches);
        for peer in 0..core.entries.len() {
            let peer = peer as u16;
            let mut truth = core.truth(peer);
            look(core, peer, &mut truth, ExitCheck::AsPolled);
        }
    }
}

/// One look at `peer`'s entry: its shared words against the host's truth (R4), learning of
/// watched processes' exits as `check` says.
pub(crate) fn look(core: &Core, peer: u16, truth: &mut EntryTruth, check: ExitCheck) {
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
                    core.emit(PeerEvent::WordsRestored {
                        words: vec!["unused peer entry"],
                    });
                }
                return;
            }
            Life::Reserved { pid_wait } => match state {
                PeerState::Active | PeerState::Dying => {
                    // The peer attached (and perhaps left at once): Attached first.
                    let waited = pid_wait.get_or_insert_with(Instant::now).elapsed();
                    let patient = state == PeerState::Active && waited < core.heartbeat_timeout;
                    if !core.observe_attach(peer, truth, patient) {
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
                        .filter(|spawn| spawn.watch.has_exited_by(check))
                        .map(|spawn| spawn.pid);
                    if let Some(pid) = exited
                        && words
                            .transition(PeerState::Reserved, PeerState::Dead)
                            .is_ok()
                    {
                        // Its spawned child exited before it attached: the reservation is
                        // withdrawn, what the host sent it freed.
                        core.emit(PeerEvent::ExitedBeforeAttach { peer, pid });
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
                        core.observe_attach(peer, truth, false);
                        continue;
                    }
                    let what = format!("flags {:#x} over a reserved entry", state.flags());
                    core.evict_locked(peer, truth, EvictReason::EntryRewritten { what });
                }
            },
            Life::Attached(identity) => {
                let identity = identity.clone();
                let gone = core.is_gone(peer, truth, &identity, check);
                match state {
                    PeerState::Active if gone => {
                        words
                            .flags
                            .store(PeerState::Dead.flags(), Ordering::Release);
                        let pid = identity_pid(truth, &identity);
                        core.emit(PeerEvent::Died { peer, pid });
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
                        core.emit(PeerEvent::Goodbye { peer });
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
                if !core.is_gone(peer, truth, &identity, check) {
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
                if core.is_gone(peer, truth, &identity, check) && core.finish(peer, truth, true) {
                    // R3: an evicted peer may have scribbled on the allocator before it was
                    // caught: the auditor looks at once.
                    core.audit_now.store(true, Ordering::Release);
                }
                return;
            }
        }
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
    // A spawned peer's pid word is 0 until it has written it, and so is a peer of this process
    // (known from the `local` registry, which it joins before its compare-and-swap; it writes
    // its pid right after, R9): a look between the two is no rewrite.
    if pid != known && !(pid == 0 && matches!(identity, Identity::Spawned | Identity::Local)) {
        let what = format!("pid {known} became {pid}");
        core.evict_locked(peer, truth, EvictReason::EntryRewritten { what });
        return;
    }
    // R3, R4: the age the word claims, or how long it has not changed as the host saw it.
    let silent = truth.heartbeat_silence(words.last_seen.load(Ordering::Relaxed));
    if silent > core.heartbeat_timeout {
        core.evict_locked(
            peer,
            truth,
            EvictReason::HeartbeatTimeout { silent_for: silent },
        );
    }
}
