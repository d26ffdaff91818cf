//! The peers attached from this process (R4): a process-global registry, private to the
//! process, of every live [`Peer`](crate::Peer) by segment file, peer id and epoch.
//!
//! A host learns from it, and not from the pid word of a peer entry (which any peer can
//! rewrite), that a peer is a thread of its own process: such a peer is trusted as the host is,
//! never signalled, and recovered at once once it is gone (its `Peer` dropped). A peer
//! registers before its attach's compare-and-swap and stays registered until its `Peer` is
//! dropped ([`Registration`] is a guard); then its key moves to a list of departed lives, so
//! that a host that looks only after the `Peer` came and went (within one of its ticks) still
//! knows the life was its own process's. The host forgets a departed key when it recovers the
//! life; at most [`DEPARTED`] are kept (a process with peers of other hosts forgets the oldest).

use std::sync::{Mutex, PoisonError};

/// One attached peer: `(st_dev, st_ino)` of the segment file, peer id, epoch.
type Key = ((u64, u64), u16, u64);

static LOCAL: Mutex<Vec<Key>> = Mutex::new(Vec::new());

/// Lives whose `Peer` was dropped, until their host recovers them; the oldest first.
static GONE: Mutex<std::collections::VecDeque<Key>> = Mutex::new(std::collections::VecDeque::new());

/// The most departed lives remembered.
pub(crate) const DEPARTED: usize = 4096;

/// The identity of a segment file, `(st_dev, st_ino)`: the same for every descriptor of it in
/// every process. `None` when `fstat` fails.
pub(crate) fn file_id(segment: &crate::segment::Segment) -> Option<(u64, u64)> {
    let stat = rustix::fs::fstat(segment.mapping().file().fd()).ok()?;
    Some((stat.st_dev, stat.st_ino))
}

/// A peer of this process, registered while the guard lives.
#[derive(Debug)]
pub(crate) struct Registration {
    key: Option<Key>,
}

impl Registration {
    /// Register life `epoch` of peer `peer` of `segment` as attached from this process.
    pub fn new(segment: &crate::segment::Segment, peer: u16, epoch: u64) -> Self {
        Self::register(file_id(segment).map(|file| (file, peer, epoch)))
    }

    /// Register `key` (none: nothing to register, the segment file has no identity).
    fn register(key: Option<Key>) -> Self {
        if let Some(key) = key {
            LOCAL
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(key);
        }
        Self { key }
    }
}

impl Registration {
    /// Withdraw the registration of a life this process did not get after all (its attach's
    /// compare-and-swap was lost): unlike a drop, it leaves no departed life behind, so the
    /// host never takes another process's life for one of its own threads.
    pub fn cancel(mut self) {
        if let Some(key) = self.key.take() {
            let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = local.iter().position(|k| *k == key) {
                local.swap_remove(at);
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // Departed first, then no longer live: a host that looks between the two
            // (`was_attached`) finds the life in one list or the other. Found in neither, it
            // would take the peer for another process, named by the pid it wrote (this one's),
            // and wait for this process to exit before it recovers the entry: never.
            let mut gone = GONE.lock().unwrap_or_else(PoisonError::into_inner);
            if gone.len() >= DEPARTED {
                gone.pop_front();
            }
            gone.push_back(key);
            drop(gone);
            let mut local = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(at) = local.iter().position(|k| *k == key) {
                local.swap_remove(at);
            }
        }
    }
}

/// Whether a `Peer` of this process holds life `epoch` of peer `peer` of the segment file
/// `file` (see [`file_id`]).
pub(crate) fn is_attached(file: Option<(u64, u64)>, peer: u16, epoch: u64) -> bool {
    let Some(file) = file else { return false };
    LOCAL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&(file, peer, epoch))
}

/// Whether life `epoch` of peer `peer` of the segment file `file` was attached from this
/// process, its `Peer` alive or dropped since (and not yet [forgotten](forget)).
pub(crate) fn was_attached(file: Option<(u64, u64)>, peer: u16, epoch: u64) -> bool {
    let Some(file) = file else { return false };
    is_attached(Some(file), peer, epoch)
        || GONE
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(file, peer, epoch))
}

/// Forget a departed life (its host recovered it).
pub(crate) fn forget(file: Option<(u64, u64)>, peer: u16, epoch: u64) {
    let Some(file) = file else { return };
    GONE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|k| *k != (file, peer, epoch));
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A segment file identity no real file has, so that these keys meet no other test's.
    const FILE: Option<(u64, u64)> = Some((u64::MAX, u64::MAX));

    #[test]
    fn a_life_is_known_while_its_peer_is_dropped() {
        // The host's supervisor may look (`was_attached`) at any moment of a `Peer`'s drop: a
        // look that found the life in neither list took the peer for another process, named
        // by the pid it wrote (this process's), and waited for that process to exit forever.
        for epoch in 0..20_000 {
            let registration = Registration::register(FILE.map(|file| (file, 0, epoch)));
            let dropped = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    drop(registration);
                    dropped.store(true, Ordering::Release);
                });
                for looks in 0_u32.. {
                    let done = dropped.load(Ordering::Acquire);
                    assert!(
                        was_attached(FILE, 0, epoch),
                        "life {epoch} in neither list during its drop"
                    );
                    if done {
                        break;
                    }
                    // The drop takes well under a microsecond; a dropper not running yet (a
                    // loaded machine) gets the CPU.
                    if looks >= 100 {
                        std::thread::yield_now();
                    }
                }
            });
            assert!(!is_attached(FILE, 0, epoch), "dropped: no longer attached");
            forget(FILE, 0, epoch);
            assert!(!was_attached(FILE, 0, epoch), "forgotten");
        }
    }
}
