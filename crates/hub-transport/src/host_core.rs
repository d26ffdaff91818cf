//! The host's shared core ([`Core`]): what the host's API ([`Host`](crate::Host)), its supervisor
//! thread (`supervisor`), its auditor thread (`audit`) and its readiness bridge share, and the
//! host's private truth about each peer entry (R4, [`EntryTruth`]).
//!
//! The supervisor and the auditor depend on this module, never on `host`, which starts them
//! (the crate's module graph, without a circle, is in `lib.rs`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hub_alloc::{OwnerId, SlabError};

use crate::event::{EvictReason, PeerEvent, Recovery};
use crate::frame::Endpoint;
use crate::link::Link;
use crate::liveness::{ExitCheck, ProcessWatch, WatchError};
use crate::mapping::MappingError;
use crate::ready::{EntryFds, ReadySet};
use crate::ring::RingError;
use crate::segment::PeerState;
use crate::signal::Doorbell;
use crate::sync::Ordering;
use crate::ticket::{Source, Ticket};

/// Errors of the host's peer management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Every peer entry is in use (`max_peers` peers attached or reserved).
    #[error("all {0} peer entries are in use")]
    NoFreePeer(u16),
    /// No peer with this id.
    #[error("no peer {0}")]
    UnknownPeer(u16),
    /// The segment's descriptor could not be duplicated for a ticket.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// The entry's readiness descriptors could not be made (out of descriptors).
    #[error("cannot make the readiness descriptors: {0}")]
    Readiness(std::io::Error),
    /// A ring of the peer could not be reached to reset it.
    #[error("ring of peer {peer}: {source}")]
    Ring {
        /// The peer.
        peer: u16,
        /// What is wrong.
        source: RingError,
    },
    /// The allocator failed while reclaiming the peer's slots.
    #[error(transparent)]
    Alloc(#[from] SlabError),
    /// [`Host::spawn_peer`](crate::Host::spawn_peer) could not start the process.
    #[error("cannot spawn the peer process: {0}")]
    Spawn(std::io::Error),
    /// The peer's process may still run: its entry is fenced until the host knows the
    /// process is gone ([`Host::recover_peer`](crate::Host::recover_peer)).
    #[error("peer {peer}'s process (pid word {pid}) may still run: its entry is fenced")]
    ProcessAlive {
        /// The peer.
        peer: u16,
        /// Its entry's pid word (information: any peer can write it).
        pid: u32,
    },
}

/// What the host's API ([`Host`](crate::Host)), its supervisor thread and its auditor thread
/// share.
pub(crate) struct Core {
    pub endpoint: Arc<Endpoint>,
    /// The host's readiness descriptor: every entry's to-host eventfd in one epoll set.
    pub ready: ReadySet,
    /// One per peer id: pushes to ring 2i + 1, pops from ring 2i.
    pub links: Vec<Link>,
    pub cursor: AtomicUsize,
    /// One recovery at a time (R10: once, idempotently).
    pub recover_lock: Mutex<()>,
    pub events: mpsc::SyncSender<PeerEvent>,
    pub stopping: AtomicBool,
    pub heartbeat_timeout: Duration,
    pub kill_evicted: bool,
    /// Set by the supervisor after an eviction: the auditor thread looks at once.
    pub audit_now: AtomicBool,
    /// Per peer id, the host's private truth about the entry (R4): its life as the host knows
    /// it, its epoch (the host's own counter), and the process the host spawned for it with
    /// its pidfd. No peer can rewrite it, unlike every word of the entry; the supervisor
    /// checks the entry's words against it.
    pub entries: Vec<Mutex<EntryTruth>>,
    /// `(st_dev, st_ino)` of the segment file: the key of this process's own peers (`local`).
    pub file_id: Option<(u64, u64)>,
}

/// How the host knows the process of one life of a peer entry (R4): from its own spawn, from
/// this process's registry of its own peers, or (information only) from the pid word.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    /// The process the host spawned for the reservation ([`Host::spawn_peer`](crate::Host::spawn_peer)): the pidfd is
    /// the one taken in the spawn ([`EntryTruth::spawn`]). The only kind the host signals.
    ///
    /// [`Host::spawn_peer`](crate::Host::spawn_peer): crate::Host::spawn_peer
    Spawned,
    /// A thread of the host's own process (`local`): trusted as the host is, never signalled.
    Local,
    /// Attached from another process by ticket: a pidfd opened on the pid word at the first
    /// look, on a process the kernel showed using the segment. Information, never authority:
    /// it is never signalled; its exit ends the fence.
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
    /// No process to watch: no pid written, no pidfd available, or a pid naming a process the
    /// kernel does not show using the segment (the host's own among them). The heartbeat is
    /// all the host knows of the peer, and its silence for the heartbeat timeout counts as
    /// gone.
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
    /// The peer's heartbeat word as this host's looks found it (see
    /// [`heartbeat_silence`](Self::heartbeat_silence)).
    heartbeat: Cell<Option<HeartbeatSeen>>,
}

/// A value of a peer's `last_seen` word, and when a look of this host first found it there.
#[derive(Debug, Clone, Copy)]
struct HeartbeatSeen {
    /// The life it was seen in.
    epoch: u64,
    word: u64,
    since: Instant,
}

impl EntryTruth {
    /// An empty entry at epoch 0.
    pub fn new() -> Self {
        Self {
            epoch: 0,
            life: Life::Empty,
            spawn: None,
            heartbeat: Cell::new(None),
        }
    }

    /// How long the peer of this life has been silent, from `word`, its entry's `last_seen`
    /// now: the age the word claims (R3: one from the future counts as now), or the time since
    /// a look of this host first found the word holding this value, whichever is longer. The
    /// second is the host's own truth (R4): a word that stops changing is silence whatever it
    /// holds, so a peer that leaves a heartbeat from the future behind is found silent all
    /// the same.
    pub fn heartbeat_silence(&self, word: u64) -> Duration {
        let claimed = Duration::from_nanos(crate::segment::monotonic_ns().saturating_sub(word));
        let now = Instant::now();
        let unchanged = match self.heartbeat.get() {
            Some(seen) if seen.epoch == self.epoch && seen.word == word => {
                now.saturating_duration_since(seen.since)
            }
            _ => {
                self.heartbeat.set(Some(HeartbeatSeen {
                    epoch: self.epoch,
                    word,
                    since: now,
                }));
                Duration::ZERO
            }
        };
        claimed.max(unchanged)
    }

    /// The watch whose exit the supervisor waits for: the spawn's, or a named process's.
    pub fn watch(&self) -> Option<&Arc<ProcessWatch>> {
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

/// The identity of a peer attached from another process, from the pid word it wrote (R4:
/// information, checked against what the kernel says). The host waits for that process to
/// exit before it hands the entry out again, so the claim counts only when the kernel shows
/// the process using the segment (`file`: open or mapped): a peer that named another process
/// (the host's own, init, any that lives on) would otherwise keep its entry fenced for that
/// process's life. A claim the kernel contradicts, or cannot confirm, leaves the heartbeat to
/// decide, as for a peer that wrote no pid. A peer may still name another participant (a
/// process that does use the segment), and keep its entry fenced while that one lives.
fn claimed_process(pid: u32, file: Option<(u64, u64)>) -> Identity {
    // The host's own threads are known from the registry (`local`), not from a pid word.
    if pid == std::process::id() {
        return Identity::Unknown { pid };
    }
    match ProcessWatch::open(pid) {
        Ok(watch) => {
            let uses_segment = file.and_then(|file| crate::liveness::uses_file(pid, file));
            // What was read was the watched process's only if it still runs now: its pid is
            // not reused before it is reaped.
            if watch.has_exited() {
                Identity::Exited { pid }
            } else if uses_segment == Some(true) {
                Identity::Named {
                    pid,
                    watch: Arc::new(watch),
                }
            } else {
                Identity::Unknown { pid }
            }
        }
        Err(WatchError::NoSuchProcess) => Identity::Exited { pid },
        Err(WatchError::Unavailable(_)) => Identity::Unknown { pid },
    }
}

/// The pid to report for a life known as `identity`.
pub(crate) fn identity_pid(truth: &EntryTruth, identity: &Identity) -> u32 {
    match identity {
        Identity::Spawned => truth.spawn.as_ref().map_or(0, |spawn| spawn.pid),
        Identity::Local => std::process::id(),
        Identity::Named { pid, .. } | Identity::Exited { pid } | Identity::Unknown { pid } => *pid,
    }
}

impl Core {
    /// The host's private truth about `peer`'s entry (`peer < max_peers`), locked.
    pub fn truth(&self, peer: u16) -> std::sync::MutexGuard<'_, EntryTruth> {
        self.entries[usize::from(peer)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve `peer`'s entry, empty in `truth` (R9): the next epoch of the host's own counter
    /// (item 9 of issue 13: never an increment of the shared word, which a peer may have set
    /// to anything), stored over the entry's words, then the rings reset, then the ticket.
    pub fn reserve(&self, peer: u16, truth: &mut EntryTruth) -> Result<Ticket, HostError> {
        let segment = &self.endpoint.segment;
        let words = segment.peer(peer);
        let epoch = truth.epoch.wrapping_add(1);
        truth.epoch = epoch;
        truth.spawn = None;
        truth.life = Life::Reserved { pid_wait: None };
        // A new life gets new readiness descriptors: the last one's process may still hold
        // the old ones.
        let ready = match EntryFds::new().and_then(|fds| {
            self.ready
                .install(usize::from(peer), Arc::clone(&fds.to_host))?;
            Ok(fds)
        }) {
            Ok(fds) => fds,
            Err(error) => {
                truth.life = Life::Empty;
                return Err(HostError::Readiness(error));
            }
        };
        let link = &self.links[usize::from(peer)];
        link.set_notify(Some(Arc::clone(&ready.to_peer)));
        // Before the rings' reset below, which takes the producer's lock: a send to the last
        // life either went before it (and is wiped) or sees this epoch (R4).
        link.set_life(epoch);
        // The peer's bits go with its life; the host's stays: a host asleep on its descriptor
        // while this entry is reserved must be written by the new peer's first frame.
        segment
            .peer_word32(peer, crate::segment::pad::READY_WAITERS)
            .fetch_and(crate::segment::pad::READY_HOST, Ordering::Relaxed);
        words.pid.store(0, Ordering::Relaxed);
        words.epoch.store(epoch, Ordering::Release);
        words
            .flags
            .store(PeerState::Reserved.flags(), Ordering::Release);
        let source = match self.reset_rings(peer) {
            Err(error) => Err(error),
            Ok(()) => match segment.mapping().file().path() {
                Some(path) => Ok(Source::Path(path.to_path_buf())),
                // Close-on-exec: a child inherits it only through `Ticket::apply`.
                None => rustix::io::fcntl_dupfd_cloexec(segment.mapping().file().fd(), 0)
                    .map(|fd| Source::Fd(Arc::new(fd)))
                    .map_err(|e| HostError::Mapping(MappingError::Dup { source: e.into() })),
            },
        };
        match source {
            Ok(source) => Ok(Ticket {
                peer,
                epoch,
                source,
                ready,
            }),
            Err(error) => {
                words
                    .flags
                    .store(PeerState::Empty.flags(), Ordering::Release);
                truth.life = Life::Empty;
                Err(error)
            }
        }
    }

    /// Whether the process of `peer`'s life known as `identity` is gone, as far as the host
    /// can know (R4): its spawn's pidfd, this process's registry of its own peers (a thread's
    /// peer counts as gone once it left or was evicted, even while its `Peer` lives), a pidfd
    /// opened at the first look on the pid word's process, when it uses the segment
    /// (information), or, without any, a heartbeat silent for the heartbeat timeout.
    ///
    /// `check` says how a watched process's exit is learnt: the supervisor's tick, which has
    /// just polled every watch, asks for no new poll.
    pub fn is_gone(
        &self,
        peer: u16,
        truth: &EntryTruth,
        identity: &Identity,
        check: ExitCheck,
    ) -> bool {
        match identity {
            Identity::Spawned => truth
                .spawn
                .as_ref()
                .is_none_or(|spawn| spawn.watch.has_exited_by(check)),
            // Trusted as the host is: once it left or was evicted, at once; while attached,
            // when its `Peer` is dropped.
            Identity::Local => {
                !matches!(truth.life, Life::Attached(_))
                    || !crate::local::is_attached(self.file_id, peer, truth.epoch)
            }
            Identity::Named { watch, .. } => watch.has_exited_by(check),
            Identity::Exited { .. } => true,
            Identity::Unknown { .. } => {
                let seen = self
                    .endpoint
                    .segment
                    .peer(peer)
                    .last_seen
                    .load(Ordering::Relaxed);
                truth.heartbeat_silence(seen) > self.heartbeat_timeout
            }
        }
    }

    /// Recover `peer`'s current life (R10), its process gone, and empty its entry in `truth`:
    /// whether it did. The words recovery checks are the host's first (the epoch, and Dead
    /// unless Dying), so no peer's write makes it skip the recovery and free the id.
    /// With `report`, a [`PeerEvent::Recovered`] says so (the supervisor's recoveries; not
    /// those the application asked for, which return what they did).
    pub fn finish(&self, peer: u16, truth: &mut EntryTruth, report: bool) -> bool {
        let words = self.endpoint.segment.peer(peer);
        words.epoch.store(truth.epoch, Ordering::Release);
        if words.state() != PeerState::Dying {
            words
                .flags
                .store(PeerState::Dead.flags(), Ordering::Release);
        }
        if self.recover(peer, truth.epoch, report) {
            crate::local::forget(self.file_id, peer, truth.epoch);
            truth.life = Life::Empty;
            truth.spawn = None;
            true
        } else {
            false
        }
    }

    /// R10 for `peer`. With `life`, only that epoch of the entry and only when it is Dying,
    /// Dead or invalid (the supervisor's case: the entry may have been recovered and handed out
    /// again while it waited for the lock); without, whatever its state but Empty (the
    /// application's). `None` when there was nothing to do.
    pub fn recover_peer(
        &self,
        peer: u16,
        life: Option<u64>,
    ) -> Result<Option<Recovery>, HostError> {
        let link = self
            .links
            .get(usize::from(peer))
            .ok_or(HostError::UnknownPeer(peer))?;
        let segment = &self.endpoint.segment;
        let slab = &self.endpoint.slab;
        let words = segment.peer(peer);
        let _one_at_a_time = self.recover_lock.lock().unwrap_or_else(|p| p.into_inner());
        if life.is_some_and(|life| words.epoch.load(Ordering::Acquire) != life) {
            return Ok(None);
        }
        match words.state() {
            PeerState::Empty => return Ok(None),
            PeerState::Active | PeerState::Reserved if life.is_some() => return Ok(None),
            _ => {}
        }
        words
            .flags
            .store(PeerState::Dead.flags(), Ordering::Release);
        // The life's descriptors leave the host's set: its process, if it still runs, writes
        // nothing the host listens to (a new life gets new ones).
        self.ready.remove(usize::from(peer));
        link.set_notify(None);
        let mut recovery = Recovery::default();
        // R10, its lock-free part (`Link::recover_dead_peer`): both ends held; both rings
        // scanned, reset and swept; then what the peer held reclaimed, looking again (a slot
        // the dead peer was taking or freeing that a live participant is busy with too) while
        // that one finishes, then giving up on it rather than on the id.
        // SAFETY: `link` is the host's link of the entry.
        let (freed, wake, reclaimed) = unsafe {
            link.recover_dead_peer(
                segment,
                slab,
                100,
                || std::thread::sleep(Duration::from_millis(1)),
                |source| HostError::Ring { peer, source },
            )
        }?;
        recovery.ring_slots_freed += freed;
        recovery.reclaimed = reclaimed;
        if wake || recovery.reclaimed.wake_waiters {
            self.wake_all_allocators();
        }
        Doorbell::new(words.send_bell).clear();
        Doorbell::new(words.recv_bell).clear();
        words.pid.store(0, Ordering::Relaxed);
        words
            .flags
            .store(PeerState::Empty.flags(), Ordering::Release);
        Ok(Some(recovery))
    }

    /// Empty both rings of `peer`, a freshly reserved entry, and rebuild the host's handles
    /// over them. Whatever a process evicted from this entry wrote into them after its
    /// recovery (R10) is not the new peer's: neither frames the host would take from it, nor
    /// indices its attach would refuse. Nothing in them is freed by descriptor (one written
    /// there may name anyone's slot); but a slot the id's previous life sent the host after its
    /// recovery swept (a late send, R10) is freed now, while no new life can have sent any.
    fn reset_rings(&self, peer: u16) -> Result<(), HostError> {
        let link = self
            .links
            .get(usize::from(peer))
            .ok_or(HostError::UnknownPeer(peer))?;
        let segment = &self.endpoint.segment;
        let (send, recv) = (2 * usize::from(peer), 2 * usize::from(peer) + 1);
        let mut held = link.lock_both();
        // SAFETY: this host is the only producer of `recv` and consumer of `send`; the entry
        // is Reserved, so no peer uses the other ends yet.
        unsafe { link.reset(segment, recv, send, &mut held) }
            .map_err(|source| HostError::Ring { peer, source })?;
        let (_, wake) = self
            .endpoint
            .slab
            .reclaim_sent(OwnerId::peer(peer), OwnerId::HOST)?;
        if wake {
            self.wake_all_allocators();
        }
        Ok(())
    }

    pub fn wake_all_allocators(&self) {
        for class in 0..self.endpoint.slab.layout().class_count() as u16 {
            if let Some(word) = self.endpoint.slab.slot_available_word(class) {
                crate::futex::wake(word, crate::futex::WAKE_ALL);
            }
        }
    }

    /// Evict `peer` for `reason` (R3, R4): mark it Dead, report [`PeerEvent::Evicted`], and
    /// fence its entry until its process is gone, when the supervisor recovers it. A process
    /// the host spawned is killed (through the spawn's pidfd) if `kill_evicted`; no other is
    /// ever signalled. Nothing for an empty or already fenced entry.
    pub fn evict(&self, peer: u16, reason: EvictReason) {
        if usize::from(peer) < self.entries.len() {
            let mut truth = self.truth(peer);
            self.evict_locked(peer, &mut truth, reason);
        }
    }

    /// [`evict`](Self::evict), with `peer`'s truth locked by the caller.
    pub fn evict_locked(&self, peer: u16, truth: &mut EntryTruth, reason: EvictReason) {
        let words = self.endpoint.segment.peer(peer);
        let identity = match &truth.life {
            Life::Empty | Life::Fenced { .. } => return,
            Life::Reserved { .. } => {
                match words.transition(PeerState::Reserved, PeerState::Dead) {
                    // Attached before the supervisor looked: reported first (R9).
                    Err(PeerState::Active | PeerState::Dying) => {
                        self.observe_attach(peer, truth, false);
                        match &truth.life {
                            Life::Attached(identity) => identity.clone(),
                            _ => return,
                        }
                    }
                    _ if truth.spawn.is_some() => Identity::Spawned,
                    // Nobody attached and no process known: its heartbeat says when.
                    _ => Identity::Unknown { pid: 0 },
                }
            }
            Life::Attached(identity) | Life::Leaving { identity, .. } => identity.clone(),
        };
        words
            .flags
            .store(PeerState::Dead.flags(), Ordering::Release);
        self.emit(PeerEvent::Evicted { peer, reason });
        // R4: only a process the host spawned, through the pidfd taken in the spawn.
        if self.kill_evicted
            && matches!(identity, Identity::Spawned)
            && let Some(spawn) = &truth.spawn
        {
            spawn.watch.kill();
        }
        truth.life = Life::Fenced { identity };
        // Wake the peer's own sleeping calls, so they see the eviction.
        Doorbell::new(words.recv_bell).ring();
    }

    /// The supervisor saw `peer`, reserved in its truth, attached: learn its process and report
    /// `Attached`. With `patient`, a peer attached from another process whose pid word is still 0
    /// (it writes it right after its compare-and-swap) is looked at again next tick; `false` then.
    pub fn observe_attach(&self, peer: u16, truth: &mut EntryTruth, patient: bool) -> bool {
        let core = self;
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
            claimed_process(pid, core.file_id)
        };
        let pid = identity_pid(truth, &identity);
        core.emit(PeerEvent::Attached { peer, pid });
        truth.life = Life::Attached(identity);
        true
    }

    /// Recover life `life` of `peer`, reported as [`PeerEvent::Recovered`] with `report`; whether
    /// it did.
    pub fn recover(&self, peer: u16, life: u64, report: bool) -> bool {
        match self.recover_peer(peer, Some(life)) {
            Ok(Some(recovery)) => {
                if report {
                    self.emit(PeerEvent::Recovered { peer, recovery });
                }
                true
            }
            // A word changed under it: the next look tries again.
            Ok(None) => false,
            Err(error) => {
                self.emit(PeerEvent::RecoveryFailed {
                    peer,
                    error: error.to_string(),
                });
                false
            }
        }
    }

    /// Report `event` to the application ([`Host::next_event`](crate::Host::next_event)).
    pub fn emit(&self, event: PeerEvent) {
        // A full backlog drops the event: the application is not reading them.
        let _ = self.events.try_send(event);
    }
}

/// The host's bridge thread, for peers that attached without the host's descriptor (they set
/// [`READY_BRIDGED`](crate::pad::READY_BRIDGED)): it sleeps on their doorbells and the host's
/// own (rung when a peer attaches or leaves) with one `futex_waitv`, and writes a peer's
/// to-host eventfd whenever that peer's doorbell moved (R11, as [`ReadyBridge`](crate::ready::ReadyBridge)). Started by
/// the host's first [`arm`](crate::Host::arm) that finds such a peer; it ends with the host.
pub(crate) fn run_host_bridge(core: &Core) {
    use crate::signal::WAITER_BIT;

    let segment = &core.endpoint.segment;
    let max_peers = core.links.len();
    let mut last = vec![0u32; max_peers];
    let slice = std::time::Duration::from_millis(100);
    while !core.stopping.load(Ordering::Acquire) {
        let host_bell = Doorbell::new(segment.host_bell());
        let mut expected = vec![(segment.host_bell(), host_bell.announce() | WAITER_BIT)];
        let mut moved = false;
        for peer in 0..max_peers as u16 {
            let link = &core.links[usize::from(peer)];
            if !link.is_bridged(segment) || !matches!(segment.peer_state(peer), PeerState::Active) {
                continue;
            }
            let word = link.in_bell(segment);
            // R11: announce, then compare with the last value seen: any ring since then moved
            // the sequence, and is passed on before sleeping.
            let now = Doorbell::new(word).announce();
            if now >> 1 != last[usize::from(peer)] >> 1 {
                last[usize::from(peer)] = now;
                core.ready.notify(usize::from(peer));
                moved = true;
            }
            expected.push((word, now | WAITER_BIT));
        }
        if !moved && crate::futex::wait_any(&expected, Some(slice)).is_err() {
            // No futex_waitv here (an old kernel, a seccomp filter): look every millisecond
            // rather than spin.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
