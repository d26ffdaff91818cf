//! The host: creates the hub, admits peers, sends to one, receives from any.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hub_alloc::{ClassStats, OwnerId};
use hub_layout::MAX_PEERS;

use crate::audit::Auditor;
use crate::error::{
    Disconnect, LoanError, LoanTimeoutError, RecvError, RecvTimeoutError, SendCopyError,
    SendCopyTimeoutError, SendError, SendThenRecvError, SendTimeoutError, TryLoanError,
    TryRecvError, TrySendCopyError, TrySendError,
};
use crate::event::{EVENT_BACKLOG, EvictReason, PeerEvent, Recovery};
use crate::forms::{self, forever, within};
use crate::frame::{Endpoint, Frame, FrameMeta, Loan, PeerId, PeerRef};
use crate::host_core::{Core, EntryTruth, HostError, Identity, Life, Spawn};
use crate::link::{Deadline, Defer, Link, RECV_BELL, SEND_BELL};
use crate::liveness::{ExitCheck, ProcessWatch, WatchError};
use crate::ready::ReadySet;
use crate::segment::{CreateError, HOST_GONE, HubConfig, PeerState, Segment};
use crate::signal::{Doorbell, Limit, PendingWake, WaitError, WaitMode, wait_any_after_ring};
use crate::sync::Ordering;
use crate::ticket::Ticket;

/// The longest the host sleeps in a receive before it looks at its rings again, whoever rang.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(100);

/// What [`Host::peers`] says of one peer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer id.
    pub id: u16,
    /// Its lifecycle state (R9).
    pub state: PeerState,
    /// How many times the id was handed out.
    pub epoch: u64,
    /// The process id the peer recorded on attach (0 before).
    pub pid: u32,
    /// Descriptors waiting in the peer's send ring (to the host).
    pub to_host: u32,
    /// Descriptors waiting in the peer's receive ring (from the host).
    pub to_peer: u32,
}

/// The host of a hub: the process that creates it, admits up to `max_peers` peers, sends to any
/// one of them and receives from all of them.
///
/// Every method takes `&self`; the host is `Send + Sync`, and each ring's producer and consumer
/// sides are serialised inside, so the single-producer single-consumer rule holds whatever the
/// caller's threads do.
///
/// ```
/// use hub_transport::{FrameMeta, Host, HubConfig, Peer};
///
/// let host = Host::create(&HubConfig::new().max_peers(2))?;
/// let ticket = host.add_peer()?;
/// let peer = Peer::attach(&ticket)?; // a thread stands in for a plugin process
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let frame = peer.recv().unwrap();
///         peer.send(FrameMeta { msg_id: frame.meta().msg_id, ..FrameMeta::default() }, frame.payload())
///             .unwrap();
///     });
///     let payload = vec![7u8; 100_000];
///     host.send(ticket.peer_id(), FrameMeta { msg_id: 1, ..FrameMeta::default() }, &payload)?;
///     let echo = host.recv()?;
///     assert_eq!((echo.peer(), echo.meta().msg_id), (ticket.peer_id(), 1));
///     assert_eq!(echo.payload(), &payload[..]);
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Host {
    core: Arc<Core>,
    /// The allocator's watch (R3): what the last look at each class saw; shared with the
    /// auditor thread.
    auditor: Arc<Auditor>,
    events: Mutex<mpsc::Receiver<PeerEvent>>,
    /// The supervisor and auditor threads, joined on drop.
    threads: Vec<std::thread::JoinHandle<()>>,
    /// The host's lock on its segment (R12): held for the host's life, released on drop, before
    /// the goodbye. Peers believe the host gone only once it is released (or the kernel dropped
    /// it with the process): see [`Peer`](crate::Peer).
    holder: Option<crate::mapping::HolderLock>,
    /// The bridge thread for peers without the host's descriptor, from the host's first arm.
    bridge: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether the bridge thread was started (or tried): `arm` checks it without the lock.
    bridge_started: AtomicBool,
}

readiness_descriptor_traits!(Host);

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("segment", &self.core.endpoint.segment)
            .finish()
    }
}

impl Host {
    /// Create a hub: an anonymous memfd (or the file at `config.path`), mode 0600, sealed
    /// against shrinking, mapped over a reservation for its largest size (R8, R14), built
    /// before its magic is written (R1).
    ///
    /// # Errors
    /// [`CreateError::Config`] for a configuration without a valid layout;
    /// [`CreateError::Mapping`] when the file cannot be created or mapped (a named path that
    /// exists already, say), or the host's lock on it cannot be taken
    /// ([`HolderLock`](crate::mapping::HolderLock)); [`CreateError::Alloc`].
    pub fn create(config: &HubConfig) -> Result<Self, CreateError> {
        // R12: the holder's lock, taken as the file was made, held until drop.
        let (segment, slab, holder) = Segment::create(config)?;
        let mut links = Vec::with_capacity(usize::from(config.max_peers));
        for peer in 0..config.max_peers {
            let (send, recv) = (2 * usize::from(peer), 2 * usize::from(peer) + 1);
            // SAFETY: this host, the only one of the segment it just built, is the only
            // producer of every receive ring and the only consumer of every send ring.
            let link = unsafe {
                Link::new(
                    &segment,
                    peer,
                    OwnerId::HOST,
                    OwnerId::peer(peer),
                    recv,
                    send,
                    RECV_BELL,
                    SEND_BELL,
                )
            }
            .map_err(|e| CreateError::Config(e.to_string()))?;
            links.push(link);
        }
        let (events, receiver) = mpsc::sync_channel(EVENT_BACKLOG);
        let file_id = crate::local::file_id(&segment);
        let ready = ReadySet::new(usize::from(config.max_peers)).map_err(CreateError::Readiness)?;
        let core = Arc::new(Core {
            endpoint: Arc::new(Endpoint::new(segment, slab)),
            ready,
            links,
            cursor: AtomicUsize::new(0),
            recover_lock: Mutex::new(()),
            events,
            stopping: AtomicBool::new(false),
            heartbeat_timeout: config.heartbeat_timeout,
            kill_evicted: config.kill_evicted,
            audit_now: AtomicBool::new(false),
            entries: (0..config.max_peers)
                .map(|_| Mutex::new(EntryTruth::new()))
                .collect(),
            file_id,
        });
        let mut threads = Vec::new();
        let auditor = Arc::new(Auditor::default());
        type Body = Box<dyn FnOnce(&Core) + Send>;
        let audited = Arc::clone(&auditor);
        let bodies: [(&str, Body); 2] = [
            ("hub-supervisor", Box::new(crate::supervisor::run)),
            (
                "hub-auditor",
                Box::new(move |core: &Core| crate::audit::run(core, &audited)),
            ),
        ];
        for (name, body) in bodies {
            let shared = core.clone();
            match std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&shared))
            {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    core.stopping.store(true, Ordering::Release);
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(CreateError::Config(format!("cannot start {name}: {e}")));
                }
            }
        }
        Ok(Self {
            core,
            auditor,
            events: Mutex::new(receiver),
            threads,
            holder: Some(holder),
            bridge: Mutex::new(None),
            bridge_started: AtomicBool::new(false),
        })
    }

    /// How this host waits: spin, block or adaptive (the default).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.core.endpoint.set_mode(mode);
    }

    /// The segment's path, for a named hub.
    pub fn path(&self) -> Option<&Path> {
        self.core.endpoint.segment.mapping().file().path()
    }

    /// Peers the hub admits at once.
    pub fn max_peers(&self) -> u16 {
        self.core.endpoint.segment.layout().max_peers
    }

    /// Reserve a peer entry (Empty -> Reserved, R9) and return the ticket a peer attaches with.
    /// Entries of peers that left or were evicted are recovered first when no entry is empty
    /// and their processes are gone (see [`spawn_peer`](Self::spawn_peer)).
    ///
    /// Which entry is empty is the host's own record (R4), not the entry's flags: an entry a
    /// peer marked empty is not handed out while its last peer's process may still run, and
    /// the epoch is the host's own counter, stored over whatever the word held.
    ///
    /// A peer admitted this way and attached from another process is known only by the pid it
    /// writes into its entry, which the host takes as information, never as authority: it
    /// never signals that process. Evicted (or gone with a goodbye), the peer's entry is
    /// fenced (kept, its id not handed out) until that process is gone, or, when the host has
    /// no process to watch (no pidfd of it could be opened, or the kernel does not show that
    /// process using the segment), until its heartbeat has been silent for the heartbeat
    /// timeout. Start
    /// plugins with [`spawn_peer`](Self::spawn_peer) instead. A peer attached from this
    /// process (a thread) is trusted as the host is, and recovered as soon as it is gone.
    ///
    /// # Errors
    /// [`HostError::NoFreePeer`] when every entry is reserved, attached, or fenced;
    /// [`HostError::Mapping`] when the segment's descriptor cannot be duplicated.
    pub fn add_peer(&self) -> Result<Ticket, HostError> {
        for round in 0..2 {
            for peer in 0..self.max_peers() {
                let mut truth = self.core.truth(peer);
                if matches!(truth.life, Life::Empty) {
                    return self.core.reserve(peer, &mut truth);
                }
            }
            if round == 0 {
                // Peers that left or were evicted and whose processes are gone, recovered now
                // rather than when the host has read what they sent.
                let mut freed = false;
                for peer in 0..self.max_peers() {
                    let mut truth = self.core.truth(peer);
                    // What the supervisor would see at its next look, first (a peer that came
                    // and went within one of its ticks is reported Attached, then Goodbye).
                    crate::supervisor::look(&self.core, peer, &mut truth, ExitCheck::Now);
                    let identity = match &truth.life {
                        Life::Empty => {
                            freed = true;
                            continue;
                        }
                        Life::Leaving { identity, .. } | Life::Fenced { identity } => {
                            identity.clone()
                        }
                        _ => continue,
                    };
                    if self.core.is_gone(peer, &truth, &identity, ExitCheck::Now) {
                        freed |= self.core.finish(peer, &mut truth, false);
                    }
                }
                if !freed {
                    break;
                }
            }
        }
        Err(HostError::NoFreePeer(self.max_peers()))
    }

    /// Reserve a peer entry, put its ticket in `command`'s environment and spawn it: the way
    /// to start a plugin. The host then knows the peer's process from the spawn, not from the
    /// pid the peer writes into its entry: it takes a pidfd of the child right after the spawn
    /// (before the [`Child`](std::process::Child) is returned, so before anything can reap it
    /// and its pid be reused), watches its exit through it, evicts the peer if the entry names
    /// another pid, and signals that process, and only processes it spawned, through that
    /// pidfd (R4, R12):
    ///
    /// - evicted, it is killed (with [`HubConfig::kill_evicted`](crate::HubConfig), the
    ///   default), and its entry recovered once it has exited;
    /// - after its goodbye (the entry Dying), its session ends when its process exits; one
    ///   still running a heartbeat timeout after its goodbye is killed. Its id is not handed
    ///   out again before the process is gone.
    ///
    /// The child gets the segment's descriptor in the spawn alone (see [`Ticket::apply`]), and
    /// asks the kernel for `SIGKILL` when its parent goes (`PR_SET_PDEATHSIG`): note that this
    /// fires when the *thread* that spawned it exits, so spawn plugins from a thread that lives
    /// as long as the host. A child that exits before it attaches is reported
    /// ([`PeerEvent::ExitedBeforeAttach`]) and its reservation withdrawn.
    ///
    /// The process spawned must be the one that attaches: a wrapper that `exec`s the plugin is
    /// fine, one that forks it gets the plugin evicted for a pid that is not the spawned one.
    ///
    /// Returns the peer's [`PeerId`] (this life of the entry: frames sent to it never reach a
    /// later tenant) and the child. If the spawn fails the reservation is withdrawn.
    ///
    /// ```no_run
    /// use std::process::Command;
    /// use hub_transport::{Host, HubConfig};
    ///
    /// let host = Host::create(&HubConfig::default())?;
    /// let (peer, mut child) = host.spawn_peer(&mut Command::new("my-plugin"))?;
    /// // ... host.send(peer, ...), host.recv() ...
    /// child.wait()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`add_peer`](Self::add_peer); [`HostError::Spawn`] when the process cannot start
    /// (or no pidfd of it can be opened: it is killed then).
    pub fn spawn_peer(
        &self,
        command: &mut std::process::Command,
    ) -> Result<(PeerId, std::process::Child), HostError> {
        use std::os::unix::process::CommandExt;
        let ticket = self.add_peer()?;
        let peer = ticket.peer_id();
        ticket.apply(command);
        let parent = rustix::process::getpid();
        // SAFETY: the hook runs in the forked child before `exec`, where only
        // async-signal-safe calls are allowed: two system calls (`prctl`, `getppid`), no
        // allocation (an error is built from a raw errno).
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                // The parent may have gone before the prctl: then the signal never comes.
                if rustix::process::getppid() != Some(parent) {
                    return Err(std::io::Error::from_raw_os_error(
                        rustix::io::Errno::SRCH.raw_os_error(),
                    ));
                }
                Ok(())
            });
        }
        // Held across the spawn: the supervisor's first look at the entry, whenever it comes,
        // finds the spawn recorded.
        let mut truth = self.core.truth(peer);
        let spawned = command.spawn().and_then(|mut child| {
            // Before the child is returned: nothing can have reaped it, so the pid is its.
            match ProcessWatch::open(child.id()) {
                Ok(watch) => Ok((child, watch)),
                Err(error) => {
                    // Not watched, not kept: the child is still ours to kill (unreaped).
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(match error {
                        WatchError::Unavailable(errno) => errno.into(),
                        WatchError::NoSuchProcess => std::io::Error::from_raw_os_error(
                            rustix::io::Errno::SRCH.raw_os_error(),
                        ),
                    })
                }
            }
        });
        match spawned {
            Ok((child, watch)) => {
                truth.spawn = Some(Spawn {
                    pid: child.id(),
                    watch: Arc::new(watch),
                });
                Ok((ticket.id(), child))
            }
            Err(error) => {
                drop(truth);
                let _ = self.withdraw(peer);
                Err(HostError::Spawn(error))
            }
        }
    }

    /// Take back the reservation of peer `peer` if no process attached with it (R9): for a
    /// host whose child died, or was never started, before it attached. Whatever the host sent
    /// it meanwhile is freed, and the entry is free for [`add_peer`](Self::add_peer); an attach
    /// with the old ticket fails with [`AttachError::NotReserved`](crate::AttachError).
    ///
    /// Returns `true` when the reservation was taken back, `false` when the entry is not
    /// reserved: a process attached with the ticket first (from then on the supervisor watches
    /// it and reports its exit as any peer's), or the entry was not reserved at all.
    ///
    /// ```
    /// use hub_transport::{Host, HubConfig, Peer};
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// let ticket = host.add_peer()?;
    /// assert!(host.withdraw(ticket.peer_id())?);
    /// assert!(Peer::attach(&ticket).is_err(), "the ticket is void");
    /// assert_eq!(host.add_peer()?.peer_id(), ticket.peer_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`HostError::UnknownPeer`]; as [`recover_peer`](Self::recover_peer) for freeing what
    /// the host sent (the supervisor tries again then).
    pub fn withdraw(&self, peer: u16) -> Result<bool, HostError> {
        if peer >= self.max_peers() {
            return Err(HostError::UnknownPeer(peer));
        }
        let words = self.core.endpoint.segment.peer(peer);
        let mut truth = self.core.truth(peer);
        if !matches!(truth.life, Life::Reserved { .. }) {
            return Ok(false);
        }
        // R9: of this and a process's attach (Reserved -> Active), one compare-and-swap wins.
        if words
            .transition(PeerState::Reserved, PeerState::Dead)
            .is_err()
        {
            return Ok(false);
        }
        // Nobody attached: nothing to wait for. Should the recovery fail, the supervisor
        // tries again.
        truth.spawn = None;
        truth.life = Life::Fenced {
            identity: Identity::Exited { pid: 0 },
        };
        // R10 as for a peer that died: the frames sent to it are freed, the rings reset.
        words.epoch.store(truth.epoch, Ordering::Release);
        if self.core.recover_peer(peer, Some(truth.epoch))?.is_some() {
            truth.life = Life::Empty;
        }
        Ok(true)
    }

    /// Every peer entry: id, state, epoch, pid and ring depths.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let segment = &self.core.endpoint.segment;
        (0..self.max_peers())
            .map(|id| {
                let words = segment.peer(id);
                let depth =
                    |ring: usize| segment.ring(ring).and_then(|r| r.len()).unwrap_or(u32::MAX);
                PeerInfo {
                    id,
                    state: words.state(),
                    epoch: words.epoch.load(Ordering::Relaxed),
                    pid: words.pid.load(Ordering::Relaxed),
                    to_host: depth(2 * usize::from(id)),
                    to_peer: depth(2 * usize::from(id) + 1),
                }
            })
            .collect()
    }

    /// Per-class slot counts of the hub's allocator.
    pub fn stats(&self) -> Vec<ClassStats> {
        self.core.endpoint.slab.stats()
    }

    /// Rebuild size class `class`'s free list from its slot metas, after a call reported the
    /// class's shared state corrupted ([`LoanError::Alloc`] with a corruption, or a list held
    /// for over a second): the host's repair of what a faulty peer scribbled (R3). Pops and
    /// pushes of the class wait meanwhile, for microseconds.
    ///
    /// # Errors
    /// [`HostError::Alloc`] when there is no such class or the rebuilt list is corrupted again.
    pub fn rebuild_free_list(&self, class: u16) -> Result<crate::RebuildReport, HostError> {
        let report = self.core.endpoint.slab.rebuild_free_list(class)?;
        if report.wake_waiters {
            self.core.wake_all_allocators();
        }
        Ok(report)
    }

    /// Look for damage a faulty participant did to the allocator's shared state, and repair
    /// it (R3): each class's free list is walked and its slot states read
    /// ([`Slab::audit`](hub_alloc::Slab::audit)); a broken list, free slots lost off it, or a
    /// list held for good is rebuilt ([`rebuild_free_list`](Self::rebuild_free_list)); slots
    /// whose state is garbage are reported and left off the list. A list that changed during
    /// the look is judged at a later one; a free slot off the list counts as lost only when two
    /// looks at least 100 ms apart find it so. The host's auditor thread does this every
    /// 250 ms and after every eviction, reporting each finding as
    /// [`PeerEvent::AllocatorDamaged`]; this call returns them.
    ///
    /// ```
    /// use hub_transport::{Host, HubConfig};
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// assert!(host.check_allocator().is_empty(), "a healthy hub");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_allocator(&self) -> Vec<crate::AllocatorDamage> {
        self.auditor.check(&self.core)
    }

    /// Recover peer `peer` (R10), once its process left or died: mark it Dead, stop consuming
    /// its send ring, free every slot its two rings still reference, reclaim every slot it
    /// owns, reset both rings and its futex words, then mark the entry Empty for reuse (R9).
    /// Frames the host is still holding are the host's and are not touched. Idempotent.
    ///
    /// A reservation nobody attached with is taken back; a peer attached from this process (a
    /// thread) is recovered whatever its state, and its `Peer`'s calls report it gone. A peer
    /// of another process is recovered only once the host knows that process is gone (R4):
    /// its spawn exited, or the process its entry named at attach did, or its heartbeat has
    /// been silent for the heartbeat timeout when no pidfd of it could be opened. Evict it
    /// first ([`evict`](Self::evict)): a process the host spawned is killed then.
    ///
    /// # Errors
    /// [`HostError::UnknownPeer`]; [`HostError::ProcessAlive`] when the peer's process may
    /// still run; [`HostError::Alloc`] when the allocator finds corruption; [`HostError::Ring`].
    pub fn recover_peer(&self, peer: u16) -> Result<Recovery, HostError> {
        if peer >= self.max_peers() {
            return Err(HostError::UnknownPeer(peer));
        }
        let words = self.core.endpoint.segment.peer(peer);
        let mut truth = self.core.truth(peer);
        let identity = match &truth.life {
            Life::Empty => return Ok(Recovery::default()),
            Life::Reserved { .. } => {
                match words.transition(PeerState::Reserved, PeerState::Dead) {
                    // Attached before the supervisor looked: reported first (R9).
                    Err(PeerState::Active | PeerState::Dying) => {
                        self.core.observe_attach(peer, &mut truth, false);
                        match &truth.life {
                            Life::Attached(identity) => identity.clone(),
                            _ => Identity::Exited { pid: 0 },
                        }
                    }
                    // Nobody attached: nothing to wait for.
                    _ => Identity::Exited { pid: 0 },
                }
            }
            Life::Attached(identity)
            | Life::Leaving { identity, .. }
            | Life::Fenced { identity } => identity.clone(),
        };
        if !matches!(identity, Identity::Local)
            && !self.core.is_gone(peer, &truth, &identity, ExitCheck::Now)
        {
            let pid = words.pid.load(Ordering::Relaxed);
            return Err(HostError::ProcessAlive { peer, pid });
        }
        // Should the recovery fail, the supervisor tries again.
        truth.life = Life::Fenced { identity };
        words.epoch.store(truth.epoch, Ordering::Release);
        words
            .flags
            .store(PeerState::Dead.flags(), Ordering::Release);
        let recovery = self.core.recover_peer(peer, Some(truth.epoch))?;
        crate::local::forget(self.core.file_id, peer, truth.epoch);
        truth.life = Life::Empty;
        truth.spawn = None;
        Ok(recovery.unwrap_or_default())
    }

    /// The next peer lifecycle event (attached, goodbye, died, evicted, recovered; and damage
    /// the allocator audit found), waiting at most `timeout` (`None`: as long as it takes).
    /// `None` when none came in time.
    ///
    /// The host's supervisor thread produces them; up to 1024 wait to be read, and later ones
    /// are dropped until the application catches up.
    pub fn next_event(&self, timeout: Option<Duration>) -> Option<PeerEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        match timeout {
            None => events.recv().ok(),
            Some(timeout) => events.recv_timeout(timeout).ok(),
        }
    }

    /// The next peer lifecycle event if one is waiting.
    pub fn try_event(&self) -> Option<PeerEvent> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.try_recv().ok()
    }

    /// Evict `peer` now (R4): mark it Dead with `reason`; the supervisor recovers it and reports
    /// [`PeerEvent::Evicted`]. For an application that finds a peer misbehaving at its level.
    ///
    /// # Errors
    /// [`HostError::UnknownPeer`].
    pub fn evict(&self, peer: u16, reason: EvictReason) -> Result<(), HostError> {
        if peer >= self.max_peers() {
            return Err(HostError::UnknownPeer(peer));
        }
        self.core.evict(peer, reason);
        Ok(())
    }

    fn link(&self, peer: PeerRef) -> Result<&Link, SendError> {
        let link = self
            .core
            .links
            .get(usize::from(peer.index))
            .ok_or(SendError::UnknownPeer(peer.index))?;
        match self.target_gone(link, peer.index, peer.epoch) {
            None => Ok(link),
            Some(disconnect) => Err(SendError::Disconnected(disconnect)),
        }
    }

    /// Whether entry `index`, served by `link`, takes no frames: `epoch` names a life (a
    /// [`PeerId`]'s) that is over (the host's own copy of the entry's epoch moved on, R4), or
    /// the entry's state is neither Active nor Reserved. Called under the producer's lock by a
    /// send, so a send either precedes the rings' reset of a new life or sees its epoch.
    ///
    /// It takes the `PeerRef`'s fields, not the struct: a send's `gone` closure captures them,
    /// and a `PeerRef` captured whole was copied in pieces wider than the stores that wrote it
    /// (a load that waits for the stores: the processor cannot forward it).
    fn target_gone(&self, link: &Link, index: u16, epoch: Option<u64>) -> Option<Disconnect> {
        debug_assert_eq!(link.peer, index, "the link serves the entry named");
        if let Some(epoch) = epoch
            && link.id().epoch() != epoch
        {
            return Some(Disconnect::PeerGone {
                peer: PeerId::new(index, epoch),
            });
        }
        // Frames may go to an attached peer, and to a reserved one: its ring exists, and it
        // reads them once it attaches (or recovery frees them if it never does).
        match link.peer_state(&self.core.endpoint.segment) {
            PeerState::Active | PeerState::Reserved => None,
            state => Some(Disconnect::PeerNotActive { peer: index, state }),
        }
    }

    /// A buffer of `len` bytes to fill in place and send with [`send_loan`](Self::send_loan):
    /// zero copy. Waits for a free slot as long as it takes.
    ///
    /// # Errors
    /// [`LoanError::PayloadTooLarge`]; [`LoanError::Alloc`]; [`LoanError::Futex`]. (The
    /// host's loans are never [`Disconnected`](LoanError::Disconnected).)
    pub fn loan(&self, len: usize) -> Result<Loan, LoanError> {
        forever((), |(), deadline| {
            self.core.endpoint.loan(len, deadline, &|| None)
        })
    }

    /// [`loan`](Self::loan) without waiting.
    ///
    /// # Errors
    /// [`TryLoanError::NoFreeSlots`] when no slot is free; [`TryLoanError::Failed`] with what
    /// [`loan`](Self::loan) fails with.
    pub fn try_loan(&self, len: usize) -> Result<Loan, TryLoanError> {
        self.core.endpoint.loan(len, Deadline::Now, &|| None)
    }

    /// [`loan`](Self::loan), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LoanTimeoutError::Timeout`] after it; [`LoanTimeoutError::Failed`] with what
    /// [`loan`](Self::loan) fails with.
    pub fn loan_timeout(&self, len: usize, timeout: Duration) -> Result<Loan, LoanTimeoutError> {
        within(timeout, |deadline| {
            self.core.endpoint.loan(len, deadline, &|| None)
        })
    }

    /// Send a filled loan to `peer`, waiting for room in its ring as long as it takes.
    ///
    /// # Errors
    /// [`SendError::UnknownPeer`]; [`SendError::Disconnected`] with
    /// [`Disconnect::PeerNotActive`] when the peer is neither attached nor reserved (also when
    /// it leaves while the call waits), with [`Disconnect::PeerGone`] when `peer` is a
    /// [`PeerId`] whose life is over; [`SendError::Ring`] when the peer corrupted its ring
    /// (the host evicts it, as for a fault found on receive); [`SendError::Alloc`] when the
    /// loan's slot was changed under the host.
    pub fn send_loan(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<(), SendError> {
        let peer = peer.into();
        forever(loan, |loan, deadline| {
            self.send_loan_until(peer, meta, loan, deadline, None)
        })
    }

    /// [`send_loan`](Self::send_loan) without waiting: a full ring gives the loan back,
    /// unsent and still this host's ([`TrySendError::Full`]), to send later or drop.
    ///
    /// ```
    /// use hub_transport::{FrameMeta, Host, HubConfig, Peer, TrySendError};
    ///
    /// let host = Host::create(&HubConfig::new().max_peers(1).ring_capacity(2))?;
    /// let peer = Peer::attach(&host.add_peer()?)?;
    /// let mut loan = host.loan(1000)?;
    /// for _ in 0..2 {
    ///     host.send(peer.id(), FrameMeta::default(), b"fill")?;
    /// }
    /// loan = match host.try_send_loan(peer.id(), FrameMeta::default(), loan) {
    ///     Err(TrySendError::Full(loan)) => loan, // the ring holds 2: ours again
    ///     other => panic!("{other:?}"),
    /// };
    /// drop(peer.recv()?);
    /// host.try_send_loan(peer.id(), FrameMeta::default(), loan)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`TrySendError::Full`]; [`TrySendError::Failed`] with what [`send_loan`](
    /// Self::send_loan) fails with (the loan is dropped then, which frees its slot).
    pub fn try_send_loan(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<(), TrySendError> {
        forms::try_send_loan(self.try_send_loan_back(peer, meta, loan))
    }

    /// [`send_loan`](Self::send_loan), waiting at most `timeout`: when it passes, the loan
    /// comes back, unsent and still this host's ([`SendTimeoutError::Timeout`]).
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`]; [`SendTimeoutError::Failed`] with what
    /// [`send_loan`](Self::send_loan) fails with (the loan is dropped then).
    pub fn send_loan_timeout(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        within(timeout, |deadline| {
            self.send_loan_until(peer, meta, loan, deadline, None)
        })
    }

    fn send_loan_until<'e>(
        &'e self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
        deadline: Deadline,
        defer: Defer<'_, 'e>,
    ) -> Result<(), SendTimeoutError> {
        let peer = peer.into();
        let link = self.link(peer).map_err(SendTimeoutError::Failed)?;
        let (index, epoch) = (peer.index, peer.epoch);
        let gone = move || self.target_gone(link, index, epoch);
        let sent = link.send(&self.core.endpoint, meta, loan, deadline, &gone, defer);
        if let Err(SendTimeoutError::Failed(error)) = &sent {
            self.evict_on_ring_fault(error);
        }
        sent
    }

    /// R3, R4: a peer that broke the indices of its receive ring is evicted, as one that breaks
    /// its send ring is when the host receives; the call that found it reports the fault.
    fn evict_on_ring_fault(&self, error: &SendError) {
        if let SendError::Ring { peer, source } = error {
            self.core.evict(*peer, EvictReason::Ring(*source));
        }
    }

    /// Copy `payload` into a frame and send it to `peer`, waiting for a slot and for room as
    /// long as it takes. Payloads of at most 16 bytes travel inline.
    ///
    /// # Errors
    /// [`SendCopyError`]: what [`loan`](Self::loan) and [`send_loan`](Self::send_loan) fail
    /// with, in one list.
    pub fn send(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        payload: &[u8],
    ) -> Result<(), SendCopyError> {
        let peer = peer.into();
        forever((), |(), deadline| {
            self.send_until(peer, meta, payload, deadline, None)
        })
    }

    /// [`send`](Self::send) without waiting.
    ///
    /// # Errors
    /// [`TrySendCopyError::Full`] when the ring is full; [`TrySendCopyError::NoFreeSlots`] when
    /// the payload needs a slot and none is free; [`TrySendCopyError::Failed`] with what
    /// [`send`](Self::send) fails with.
    pub fn try_send(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        payload: &[u8],
    ) -> Result<(), TrySendCopyError> {
        self.send_until(peer.into(), meta, payload, Deadline::Now, None)
    }

    /// [`send`](Self::send), waiting at most `timeout` (for a slot and for room together).
    ///
    /// # Errors
    /// [`SendCopyTimeoutError::Timeout`] after it; [`SendCopyTimeoutError::Failed`] with what
    /// [`send`](Self::send) fails with.
    pub fn send_timeout(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), SendCopyTimeoutError> {
        let peer = peer.into();
        within(timeout, |deadline| {
            self.send_until(peer, meta, payload, deadline, None)
        })
    }

    /// The sends of a copy: [`TrySendCopyError::NoFreeSlots`] when `deadline` passes
    /// (`Deadline::Now`: at once) with the class empty, [`TrySendCopyError::Full`] when it
    /// passes with the ring full.
    fn send_until<'e>(
        &'e self,
        peer: PeerRef,
        meta: FrameMeta,
        payload: &[u8],
        deadline: Deadline,
        defer: Defer<'_, 'e>,
    ) -> Result<(), TrySendCopyError> {
        // Not `link`: `send_copy` looks at `gone` before it allocates, and under the
        // producer's lock.
        let link = self
            .core
            .links
            .get(usize::from(peer.index))
            .ok_or_else(|| SendCopyError::from(SendError::UnknownPeer(peer.index)))?;
        let (index, epoch) = (peer.index, peer.epoch);
        let gone = move || self.target_gone(link, index, epoch);
        let sent = link.send_copy(&self.core.endpoint, meta, payload, deadline, &gone, defer);
        // R3, R4: as for a send of a loan.
        if let Err(TrySendCopyError::Failed(SendCopyError::Ring { peer, source })) = &sent {
            self.core.evict(*peer, EvictReason::Ring(*source));
        }
        sent
    }

    /// [`send`](Self::send) to `peer`, then [`recv_from`](Self::recv_from) that peer: the call
    /// of a request and its reply (or of a reply and the next request). In
    /// [`WaitMode::Block`], when the peer sleeps, the wake of the send and the host's sleep
    /// for the answer are one system call (an io_uring of this thread, Linux 6.7+; two plain
    /// calls elsewhere), so a blocking request and reply costs each side one system call. In
    /// the other modes it is `send` and then `recv_from`.
    ///
    /// ```
    /// use hub_transport::{FrameMeta, Host, HubConfig, Peer};
    ///
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// let peer = Peer::attach(&host.add_peer()?)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let request = peer.recv().expect("a request");
    ///         peer.send(FrameMeta::default(), request.payload()).expect("the echo");
    ///     });
    ///     let echo = host.send_then_recv_from(peer.id(), FrameMeta::default(), b"hi").expect("an echo");
    ///     assert_eq!(echo.payload(), b"hi");
    /// });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SendThenRecvError::Send`] with what [`send`](Self::send) fails with (nothing went);
    /// [`SendThenRecvError::Recv`] with what [`recv_from`](Self::recv_from) fails with without
    /// a timeout (the frame went).
    pub fn send_then_recv_from(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        payload: &[u8],
    ) -> Result<Frame, SendThenRecvError<SendCopyError>> {
        let peer = peer.into();
        let mut pending = None;
        forever((), |(), deadline| {
            self.send_until(peer, meta, payload, deadline, Some(&mut pending))
        })
        .map_err(SendThenRecvError::Send)?;
        self.recv_from_after_ring(peer, pending)
            .map_err(SendThenRecvError::Recv)
    }

    /// [`send_loan`](Self::send_loan) to `peer`, then [`recv_from`](Self::recv_from) that
    /// peer, as [`send_then_recv_from`](Self::send_then_recv_from) does.
    ///
    /// # Errors
    /// [`SendThenRecvError::Send`] with what [`send_loan`](Self::send_loan) fails with;
    /// [`SendThenRecvError::Recv`] with what [`recv_from`](Self::recv_from) fails with without
    /// a timeout.
    pub fn send_loan_then_recv_from(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<Frame, SendThenRecvError<SendError>> {
        let peer = peer.into();
        let mut pending = None;
        forever(loan, |loan, deadline| {
            self.send_loan_until(peer, meta, loan, deadline, Some(&mut pending))
        })
        .map_err(SendThenRecvError::Send)?;
        self.recv_from_after_ring(peer, pending)
            .map_err(SendThenRecvError::Recv)
    }

    /// Receive the next frame from any peer, waiting as long as it takes; [`Frame::peer`] says
    /// whose. Peers are served in turn, so a busy one does not starve the others.
    ///
    /// # Errors
    /// [`RecvError::BadDescriptor`] or [`RecvError::Ring`] naming a peer that broke the protocol
    /// (R3); [`RecvError::Futex`]. (A receive from any peer is never
    /// [`Disconnected`](RecvError::Disconnected): peers come and go.)
    pub fn recv(&self) -> Result<Frame, RecvError> {
        forever((), |(), deadline| self.recv_until(deadline))
    }

    /// [`recv`](Self::recv) without waiting.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is there; [`TryRecvError::Failed`] with what
    /// [`recv`](Self::recv) fails with.
    pub fn try_recv(&self) -> Result<Frame, TryRecvError> {
        match self.poll_any() {
            Some(result) => Ok(result?),
            None => Err(TryRecvError::Empty),
        }
    }

    /// [`recv`](Self::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] after it; [`RecvTimeoutError::Failed`] with what
    /// [`recv`](Self::recv) fails with.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        within(timeout, |deadline| self.recv_until(deadline))
    }

    /// Receive the next frame from `peer` only, waiting at most `timeout` (`None`: forever).
    ///
    /// As [`recv`](Self::recv), only an attached peer's ring is read, or a leaving one's (the
    /// frames it sent before its goodbye): the entry's state is checked before every receive,
    /// the first one included. A reserved peer (not attached yet) is waited for; nothing in
    /// its ring is taken, since no process of the host's is its producer yet.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout) ([`RecvTimeoutError::Timeout`] only with a
    /// timeout); [`RecvError::Disconnected`] with [`Disconnect::PeerNotActive`] when the peer
    /// does not exist, is neither attached, reserved nor leaving, or left (and its frames were
    /// all taken) while the call waits, with [`Disconnect::PeerGone`] when `peer` is a
    /// [`PeerId`] whose life is over.
    pub fn recv_from(
        &self,
        peer: impl Into<PeerRef>,
        timeout: Option<Duration>,
    ) -> Result<Frame, RecvTimeoutError> {
        let peer = peer.into();
        let Some(link) = self.core.links.get(usize::from(peer.index)) else {
            return Err(RecvError::Disconnected(Disconnect::PeerNotActive {
                peer: peer.index,
                state: PeerState::Empty,
            })
            .into());
        };
        if let Some(result) = self.poll_one(link, peer.epoch) {
            return Ok(result?);
        }
        let until = timeout.map(|timeout| Instant::now() + timeout);
        let bell = [Doorbell::new(link.in_bell(&self.core.endpoint.segment))];
        let ready = || self.ready_one(link, peer.epoch);
        let take = || self.poll_one(link, peer.epoch);
        Ok(self.wait_sliced(&bell, ready, take, until, None)??)
    }

    /// [`recv_from`](Self::recv_from) without a timeout, making the `pending` wake of the send
    /// before it with the first sleep (see [`send_then_recv_from`](Self::send_then_recv_from)).
    fn recv_from_after_ring(
        &self,
        peer: PeerRef,
        pending: Option<PendingWake<'_>>,
    ) -> Result<Frame, RecvError> {
        let Some(link) = self.core.links.get(usize::from(peer.index)) else {
            return Err(RecvError::Disconnected(Disconnect::PeerNotActive {
                peer: peer.index,
                state: PeerState::Empty,
            }));
        };
        if let Some(result) = self.poll_one(link, peer.epoch) {
            return result;
        }
        let bell = [Doorbell::new(link.in_bell(&self.core.endpoint.segment))];
        let ready = || self.ready_one(link, peer.epoch);
        let take = || self.poll_one(link, peer.epoch);
        match self.wait_sliced(&bell, ready, take, None, pending) {
            Ok(result) => result,
            Err(RecvTimeoutError::Failed(error)) => Err(error),
            // No deadline passes.
            Err(RecvTimeoutError::Timeout) => unreachable!("a wait without a deadline timed out"),
        }
    }

    /// One look at `link`'s send ring, if its peer's state lets the host read it (see
    /// [`recv_from`](Self::recv_from)); `None` when there is nothing yet.
    #[inline(always)] // as `poll_any`
    fn poll_one(&self, link: &Link, epoch: Option<u64>) -> Option<Result<Frame, RecvError>> {
        let peer = link.peer;
        // A life that is over, in whatever state the entry is now; checked again under the
        // consumer's lock by the pop, against a new reservation racing this look.
        if let Some(epoch) = epoch
            && link.id().epoch() != epoch
        {
            return Some(Err(RecvError::Disconnected(Disconnect::PeerGone {
                peer: PeerId::new(peer, epoch),
            })));
        }
        match link.peer_state(&self.core.endpoint.segment) {
            PeerState::Reserved => None,
            state @ (PeerState::Active | PeerState::Dying) => {
                match link.try_recv_life(&self.core.endpoint, epoch) {
                    Ok(Some(frame)) => Some(Ok(frame)),
                    Ok(None) if state == PeerState::Dying => {
                        Some(Err(RecvError::Disconnected(Disconnect::PeerNotActive {
                            peer,
                            state,
                        })))
                    }
                    Ok(None) => None,
                    Err(error) => {
                        self.evict_on_recv_fault(&error);
                        Some(Err(error))
                    }
                }
            }
            state => Some(Err(RecvError::Disconnected(Disconnect::PeerNotActive {
                peer,
                state,
            }))),
        }
    }

    /// Whether [`poll_one`](Self::poll_one) may find something: a frame, or the end of the
    /// peer's life. Builds nothing: what a wait polls (see [`Link::looks_nonempty`]).
    fn ready_one(&self, link: &Link, epoch: Option<u64>) -> bool {
        if epoch.is_some_and(|epoch| link.id().epoch() != epoch) {
            return true;
        }
        match link.peer_state(&self.core.endpoint.segment) {
            PeerState::Reserved => false,
            PeerState::Active => link.looks_nonempty(),
            // A leaving peer's last frames, then its end; any other state ends the receive.
            _ => true,
        }
    }

    /// Whether [`poll_any`](Self::poll_any) may find a frame. Builds nothing: what a wait
    /// polls.
    fn ready_any(&self) -> bool {
        // The state first (Acquire), then the look: a new life's rings were reset before its
        // entry turned Active, so the look reads the reset tail (see `looks_nonempty`), and a
        // wait that sleeps on this answer misses no frame.
        self.core.links.iter().any(|link| {
            matches!(
                link.peer_state(&self.core.endpoint.segment),
                PeerState::Active | PeerState::Dying
            ) && link.looks_nonempty()
        })
    }

    /// One pass over every peer's send ring, starting after the last one served.
    #[inline(always)] // as `Link::try_recv`: the frame is built once, in the caller's place
    fn poll_any(&self) -> Option<Result<Frame, RecvError>> {
        let links = &self.core.links;
        // Round robin: start after the ring that gave the last frame. Relaxed load and store,
        // not an RMW: the cursor is a fairness hint, private to this process.
        let start = self.core.cursor.load(Ordering::Relaxed).min(links.len());
        let (after, before) = links.split_at(start);
        for link in after.iter().chain(before) {
            // An idle ring is passed over by the look that builds nothing, before the state is
            // looked up: with many peers, most polls find most rings empty. This look may
            // come before the state's Acquire that orders a new life's reset tail before it
            // (see `looks_nonempty`), and so miss that life's first frame for one poll; a wait
            // decides to sleep on `ready_any`, which looks in the safe order.
            // R10: only an attached peer's ring, or a leaving one's (frames sent before its
            // goodbye), is read. An evicted, recovered or reserved entry has no producer the
            // host listens to: what a process writes there after its eviction is not a frame.
            if !link.looks_nonempty()
                || !matches!(
                    link.peer_state(&self.core.endpoint.segment),
                    PeerState::Active | PeerState::Dying
                )
            {
                continue;
            }
            match link.try_recv(&self.core.endpoint) {
                Ok(Some(frame)) => {
                    let next = usize::from(link.peer) + 1;
                    self.core.cursor.store(next, Ordering::Relaxed);
                    return Some(Ok(frame));
                }
                Ok(None) => {}
                Err(error) => {
                    self.evict_on_recv_fault(&error);
                    return Some(Err(error));
                }
            }
        }
        None
    }

    /// R3, R4: a peer that breaks the protocol is evicted; the call that found it reports the
    /// fault, and the other peers' frames go on.
    fn evict_on_recv_fault(&self, error: &RecvError) {
        match error {
            RecvError::BadDescriptor { peer, fault } => {
                self.core.evict(*peer, EvictReason::BadDescriptor(*fault));
            }
            RecvError::Ring { peer, source } => {
                self.core.evict(*peer, EvictReason::Ring(*source));
            }
            _ => {}
        }
    }

    /// The receives from any peer: [`RecvTimeoutError::Timeout`] when `deadline` passes.
    fn recv_until(&self, deadline: Deadline) -> Result<Frame, RecvTimeoutError> {
        if let Some(result) = self.poll_any() {
            return Ok(result?);
        }
        let until = match deadline {
            Deadline::Now => return Err(RecvTimeoutError::Timeout),
            Deadline::Never => None,
            Deadline::At(at) => Some(at),
        };
        let (bells, count) = self.any_bells();
        let bells = &bells[..count];
        Ok(self.wait_sliced(bells, || self.ready_any(), || self.poll_any(), until, None)??)
    }

    /// The bells a receive from any peer sleeps on, in the first `count` places: every peer
    /// entry's send bell, then the host's bell (a peer that attaches rings it). R11: one
    /// `futex_waitv` over them all, not a thread per peer. On the stack, so that a wait
    /// allocates nothing: a `Vec` built for every wait, and grown once for the host's bell,
    /// held a fifth of a fan-in host's samples (`perf`, 4 peers sending 8 B frames).
    fn any_bells(&self) -> ([Doorbell<'_>; MAX_PEERS as usize + 1], usize) {
        let segment = &self.core.endpoint.segment;
        let peers = usize::from(self.max_peers().min(MAX_PEERS));
        let host_bell = Doorbell::new(segment.host_bell());
        // The layout admits at most MAX_PEERS; the tail past `peers + 1` is never passed on.
        const { assert!((MAX_PEERS as usize) < crate::futex::MAX_WAIT_ANY) };
        let bells = std::array::from_fn(|p| match u16::try_from(p) {
            Ok(p) if usize::from(p) < peers => Doorbell::new(segment.peer(p).send_bell),
            _ => host_bell,
        });
        (bells, peers + 1)
    }

    /// Wait on `bells` until `take` yields or `until` passes ([`RecvTimeoutError::Timeout`]), in
    /// slices of at most [`WAIT_SLICE`], looking again after each (R4): the waiter bits are
    /// words any peer can clear, and a peer that clears one after the host announced itself
    /// makes the next ring skip its wake. The host then finds the frame at its next look
    /// instead of sleeping forever.
    ///
    /// The wait polls `ready`, a look that builds nothing, and calls `take` only when it says
    /// there may be something: a frame is then built once, where it is returned. A `take`
    /// that finds nothing (another thread was first) sends the wait back to `ready`.
    fn wait_sliced<T>(
        &self,
        bells: &[Doorbell<'_>],
        mut ready: impl FnMut() -> bool,
        mut take: impl FnMut() -> Option<T>,
        until: Option<Instant>,
        mut pending: Option<PendingWake<'_>>,
    ) -> Result<T, RecvTimeoutError> {
        loop {
            let endpoint = &self.core.endpoint;
            let before_sleep = || endpoint.give_back_kept();
            match wait_any_after_ring(
                bells,
                || ready().then_some(()),
                Limit::sliced(until, WAIT_SLICE),
                endpoint.mode(),
                before_sleep,
                pending.take(),
            ) {
                Ok(()) => {
                    if let Some(value) = take() {
                        return Ok(value);
                    }
                    // Another thread took it: wait again, while the deadline lets.
                    if until.is_some_and(|at| Instant::now() >= at) {
                        return Err(RecvTimeoutError::Timeout);
                    }
                }
                Err(WaitError::TimedOut) => {
                    // A whole slice without a frame (a spinning host never sleeps): idle.
                    endpoint.give_back_kept();
                    if until.is_some_and(|at| Instant::now() >= at) {
                        return Err(RecvTimeoutError::Timeout);
                    }
                }
                Err(WaitError::Futex(error)) => return Err(RecvError::Futex(error).into()),
            }
        }
    }

    /// The host's readiness descriptor, for an event loop (tokio's
    /// [`AsyncFd`](https://docs.rs/tokio/latest/tokio/io/unix/struct.AsyncFd.html), mio,
    /// `epoll`): one descriptor for all peers, which becomes readable when a frame may be
    /// waiting after the host [armed](Self::arm) itself. The `tokio` feature's
    /// `aio::AsyncHost` does all of this.
    ///
    /// The protocol, in an event loop of your own (R11):
    ///
    /// 1. [`try_recv`](Self::try_recv) until it says [`TryRecvError::Empty`];
    /// 2. [`arm`](Self::arm), then [`try_recv`](Self::try_recv) once more: a frame that came
    ///    between the two is found here;
    /// 3. still empty: wait until the descriptor is readable, [`clear_ready`](Self::clear_ready),
    ///    and go back to 1.
    ///
    /// While the host finds frames it never arms, and no peer makes a system call to wake it.
    /// Arm again after every wakeup: a peer writes the descriptor once per announcement. The
    /// descriptor also turns readable every 100 ms by itself (a timer in the set), so that the
    /// loop looks again even if nobody writes, as [`recv`](Self::recv) does in its slices: the
    /// announcement lives in words any peer can clear, and a peer that leaves or dies writes
    /// nothing.
    ///
    /// ```
    /// use hub_transport::{Host, HubConfig, Peer, TryRecvError, FrameMeta};
    /// use std::os::fd::AsFd;
    ///
    /// let host = Host::create(&HubConfig::new().max_peers(1))?;
    /// let peer = Peer::attach(&host.add_peer()?)?;
    /// assert!(matches!(host.try_recv(), Err(TryRecvError::Empty)));
    /// host.arm();
    /// assert!(matches!(host.try_recv(), Err(TryRecvError::Empty)));
    /// peer.send(FrameMeta::default(), b"hi")?; // the host is armed: the descriptor is written
    /// let mut fds = [rustix::event::PollFd::new(&host, rustix::event::PollFlags::IN)]; // Host: AsFd
    /// assert_eq!(rustix::event::poll(&mut fds, None)?, 1);
    /// host.clear_ready();
    /// assert_eq!(host.try_recv()?.payload(), b"hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ready_fd(&self) -> BorrowedFd<'_> {
        self.core.ready.as_fd()
    }

    /// Give back the slots the host keeps for its next loans (hub-alloc's kept slots), and wake
    /// allocators asleep on their classes: before the host naps (the async loans and sends).
    #[cfg(all(feature = "tokio", not(loom)))] // only `aio` naps
    pub(crate) fn give_back_kept(&self) {
        self.core.endpoint.give_back_kept();
    }

    /// Announce that the host is about to sleep on its [readiness descriptor](Self::ready_fd)
    /// for frames from any peer: each peer that then sends writes it. Look at the rings once
    /// more before sleeping. The slots the host keeps for its next loans go back first (see
    /// hub-alloc's `Slab::give_back_kept`), so that no peer waits for one while it sleeps.
    pub fn arm(&self) {
        self.core.endpoint.give_back_kept();
        let segment = &self.core.endpoint.segment;
        for link in &self.core.links {
            link.arm(segment);
        }
        self.start_bridge();
    }

    /// Start the bridge thread for peers that attached without the host's descriptor, once,
    /// at the host's first arm: from then on it also serves peers that attach later, while the
    /// host sleeps (their attach rings the host's bell, which the thread waits on too).
    fn start_bridge(&self) {
        if self.bridge_started.load(Ordering::Relaxed) {
            return;
        }
        let mut bridge = self
            .bridge
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bridge.is_some() {
            return;
        }
        self.bridge_started.store(true, Ordering::Relaxed);
        let core = Arc::clone(&self.core);
        // Without the thread (out of threads), such peers are looked at every tick.
        *bridge = std::thread::Builder::new()
            .name("hub-ready-bridge".into())
            .spawn(move || crate::host_core::run_host_bridge(&core))
            .ok();
    }

    /// [`arm`](Self::arm) for `peer`'s frames only (what [`recv_from`](Self::recv_from) waits
    /// for). An unknown peer is ignored.
    pub fn arm_peer(&self, peer: impl Into<PeerRef>) {
        if let Some(link) = self.core.links.get(usize::from(peer.into().index)) {
            link.arm(&self.core.endpoint.segment);
            self.start_bridge();
        }
    }

    /// Consume the readiness descriptor's pending wakeups (one `epoll_wait` that does not
    /// wait), after it was found readable and before arming again.
    pub fn clear_ready(&self) {
        self.core.ready.drain();
    }

    /// For an edge-triggered waiter (tokio) that never drains the set: re-arm its tick.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn rearm_tick(&self) {
        self.core.ready.rearm_tick();
    }

    /// One attempt to send a filled loan to `peer`: `Ok(None)` when it went, `Ok(Some(loan))`
    /// with the loan back when the ring is full.
    pub(crate) fn try_send_loan_back(
        &self,
        peer: impl Into<PeerRef>,
        meta: FrameMeta,
        loan: Loan,
    ) -> Result<Option<Loan>, SendError> {
        let peer = peer.into();
        let link = self.link(peer)?;
        let (index, epoch) = (peer.index, peer.epoch);
        let gone = move || self.target_gone(link, index, epoch);
        let sent = link.try_send(&self.core.endpoint, meta, loan, &gone, None);
        if let Err(error) = &sent {
            self.evict_on_ring_fault(error);
        }
        sent
    }

    /// One look for a frame from `peer`, as [`recv_from`](Self::recv_from) takes it: `None`
    /// when there is none yet.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn look_from(&self, peer: impl Into<PeerRef>) -> Option<Result<Frame, RecvError>> {
        let peer = peer.into();
        match self.core.links.get(usize::from(peer.index)) {
            Some(link) => self.poll_one(link, peer.epoch),
            None => Some(Err(RecvError::Disconnected(Disconnect::PeerNotActive {
                peer: peer.index,
                state: PeerState::Empty,
            }))),
        }
    }

    /// One look for a frame from any peer: `None` when there is none yet.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn look_any(&self) -> Option<Result<Frame, RecvError>> {
        self.poll_any()
    }

    /// The wait mode of this host.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn wait_mode(&self) -> WaitMode {
        self.core.endpoint.mode()
    }

    /// Leave the hub: tell every peer (goodbye, R12), so their blocked calls return
    /// [`Disconnect::HostGone`] at once. Dropping the host does the same.
    pub fn close(self) {}

    fn say_goodbye(&self) {
        let segment = &self.core.endpoint.segment;
        segment.host_state().store(HOST_GONE, Ordering::Release);
        for peer in 0..self.max_peers() {
            Doorbell::new(segment.peer(peer).recv_bell).ring();
        }
        self.core.wake_all_allocators();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.core.stopping.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let bridge = self
            .bridge
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = bridge {
            let _ = thread.join();
        }
        // The fact peers check first, released before the word says gone: a peer that sees
        // the word and probes finds the lock released.
        drop(self.holder.take());
        self.say_goodbye();
    }
}

const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Host>();
};

impl Host {
    /// The host's mapping of its segment, for [`Host::snapshot`](crate::snapshot).
    pub(crate) fn segment_mapping(&self) -> &Arc<crate::mapping::SegmentMapping> {
        self.core.endpoint.segment.mapping()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::supervisor::TICK;
    use crate::sync::AtomicU32;

    /// A receive from any peer sleeps on each entry's send bell, then the host's, and on
    /// nothing else: with the most peers a hub admits, and with fewer.
    #[test]
    fn a_receive_from_any_peer_sleeps_on_every_send_bell_and_the_hosts() {
        for max_peers in [1, 3, MAX_PEERS] {
            let host = Host::create(&HubConfig::new().max_peers(max_peers)).expect("a hub");
            let segment = &host.core.endpoint.segment;
            let (bells, count) = host.any_bells();
            let words: Vec<*const AtomicU32> = bells[..count]
                .iter()
                .map(|bell| std::ptr::from_ref(bell.word()))
                .collect();
            let mut expected: Vec<*const AtomicU32> = (0..max_peers)
                .map(|p| std::ptr::from_ref(segment.peer(p).send_bell))
                .collect();
            expected.push(std::ptr::from_ref(segment.host_bell()));
            assert_eq!(words, expected, "{max_peers} peers");
        }
    }

    /// The supervisor polls every watched process once a tick (all of them in one `ppoll`, by
    /// construction of its wait) and asks the kernel nothing more in its looks: an idle host
    /// costs a poll a tick, not three polls a peer. (That a death is still seen within R12's
    /// bound is `tests/failure.rs`'s and `tests/identity.rs`'s to show.)
    #[test]
    fn a_tick_polls_each_watched_process_once() {
        let host = Host::create(&HubConfig::new().max_peers(3)).expect("a hub");
        let mut children: Vec<_> = (0..3)
            .map(|_| {
                let (_, child) = host
                    .spawn_peer(std::process::Command::new("sleep").arg("30"))
                    .expect("spawn a child that never attaches");
                child
            })
            .collect();
        let watches: Vec<Arc<ProcessWatch>> = (0..3)
            .filter_map(|peer| host.core.truth(peer).watch().cloned())
            .collect();
        assert_eq!(watches.len(), 3, "each spawned child is watched");
        let before: Vec<u32> = watches.iter().map(|watch| watch.polls()).collect();
        let started = Instant::now();
        std::thread::sleep(TICK * 10);
        let after: Vec<u32> = watches.iter().map(|watch| watch.polls()).collect();
        // The ticks that can have begun meanwhile, at most: each lasts at least `TICK`.
        let ticks = (started.elapsed().as_millis() / TICK.as_millis()) as u32 + 2;
        for child in &mut children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (before, after) in before.into_iter().zip(after) {
            let polls = after - before;
            assert!(polls >= 1, "the supervisor watches the child");
            assert!(
                polls <= ticks,
                "{polls} polls of one watch in at most {ticks} ticks"
            );
        }
    }
}
