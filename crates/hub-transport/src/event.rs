//! What the host reports: [`PeerEvent`]s (with [`EvictReason`], [`Recovery`] and
//! [`AllocatorDamage`]), read with [`Host::next_event`](crate::Host::next_event).

use std::time::Duration;

use hub_alloc::{RebuildReport, ReclaimReport};

use crate::frame::DescriptorFault;
use crate::ring::RingError;

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
    AllocatorDamaged(AllocatorDamage),
    /// Words the host wrote once and no participant may change (what attach validates, the
    /// host's state and pid, the allocator's class constants, extent offsets and
    /// `current_size`) were found changed and put back from the host's private copies (R4).
    /// Not one peer's event: which participant wrote them cannot be told.
    WordsRestored {
        /// What was restored.
        words: Vec<&'static str>,
    },
}

/// What [`Host::recover_peer`](crate::Host::recover_peer) did (R10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Slots that descriptors left in the peer's two rings referenced, freed.
    pub ring_slots_freed: u32,
    /// The allocator's reclaim of what the peer owned.
    pub reclaimed: ReclaimReport,
}

/// Damage the host found in the allocator's shared state, and what it did about it.
///
/// Which participant wrote it cannot be told: shared memory keeps no record of its writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorDamage {
    /// The size class.
    pub class: u16,
    /// What was found, in words.
    pub found: String,
    /// The rebuild of the class's free list, when one was made.
    pub rebuilt: Option<RebuildReport>,
}
