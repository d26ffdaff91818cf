//! hub-transport: a shared-memory transport between one host process and up to 32 peer
//! (plugin) processes on one Linux machine.
//!
//! Rule numbers (R1 to R14) in these docs and comments name sections of the hub's protocol,
//! `docs/PROTOCOL.md` in the hub's repository: the normative layout, rules and threat model.
//!
//! The host [creates](Host::create) a hub: one segment (an anonymous memfd by default) holding a
//! header, a table of peer entries, two descriptor rings per peer and a slab of payload slots
//! (see hub-layout). It [reserves](Host::add_peer) a peer entry and hands the child the
//! [`Ticket`]; the child [attaches](Peer::from_env) and from then on:
//!
//! - a frame is a 64-byte descriptor pushed into a single-producer single-consumer ring; the
//!   fields of [`FrameMeta`] belong to the RPC runtime and travel untouched;
//! - a payload of at most 16 bytes travels inline in the descriptor, a larger one in a slot of
//!   the shared allocator (hub-alloc): a sender [loans](Host::loan) a slot, fills it in place and
//!   sends it; the receiver's [`Frame`] borrows the payload where it lies and frees the slot
//!   when dropped: zero copies;
//! - a receiver that finds its ring empty spins briefly, then sleeps on a futex word; a sender
//!   makes the wake system call only when a receiver announced that it sleeps (R11); the host
//!   waits on all its peers with one `futex_waitv`;
//! - every descriptor, index and offset read from shared memory is copied, checked, then used
//!   (R3): a faulty peer gets typed errors naming it, never a read outside the segment;
//! - frames and loans are `'static` values: they move into tasks and across threads (one whose
//!   payload is in a slot owns a handle on its side, which frees the slot when it drops);
//! - each side has a readiness descriptor for event loops ([`Host::ready_fd`],
//!   [`Peer::ready_fd`]), written only when that side announced it sleeps on it; with the
//!   `tokio` feature, `aio::AsyncHost` and `aio::AsyncPeer` make every call a future.
//!
//! ```
//! use hub_transport::{FrameMeta, Host, HubConfig, Peer};
//!
//! let host = Host::create(&HubConfig::new().max_peers(1))?;
//! let ticket = host.add_peer()?;
//! let peer = Peer::attach(&ticket)?; // in a child process: Peer::from_env()
//!
//! let mut loan = peer.loan(4096)?; // a slot, filled in place
//! loan.as_mut_slice().fill(0xab);
//! peer.send_loan(FrameMeta { msg_id: 9, ..FrameMeta::default() }, loan)?;
//!
//! let frame = host.recv()?;
//! assert_eq!((frame.peer(), frame.meta().msg_id, frame.len()), (0, 9, 4096));
//! assert!(frame.payload().iter().all(|&b| b == 0xab));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! Each kind of call has its error type, with the variants that call can fail with, in the
//! style of crossbeam-channel: the `try_` and `_timeout` forms wrap the error of the blocking
//! form in `Failed`, beside what they add (a full ring, an empty class, a deadline), and give
//! the loan back when a send of one did not happen.
//!
//! | calls | error |
//! |-------|-------|
//! | `loan` | [`LoanError`] |
//! | `try_loan` | [`TryLoanError`]: [`NoFreeSlots`](TryLoanError::NoFreeSlots), or [`Failed`](TryLoanError::Failed) with a [`LoanError`] |
//! | `loan_timeout` | [`LoanTimeoutError`]: [`Timeout`](LoanTimeoutError::Timeout), or `Failed` |
//! | `send_loan` | [`SendError`] |
//! | `try_send_loan` | [`TrySendError`]: [`Full`](TrySendError::Full) with the loan back, or `Failed` with a [`SendError`] |
//! | `send_loan_timeout` | [`SendTimeoutError`]: [`Timeout`](SendTimeoutError::Timeout) with the loan back, or `Failed` |
//! | `send` (a copy) | [`SendCopyError`]: what a loan and the send of a loan can fail with, in one list |
//! | `try_send` | [`TrySendCopyError`]: [`Full`](TrySendCopyError::Full), [`NoFreeSlots`](TrySendCopyError::NoFreeSlots), or `Failed` |
//! | `send_timeout` | [`SendCopyTimeoutError`]: [`Timeout`](SendCopyTimeoutError::Timeout), or `Failed` |
//! | `recv` | [`RecvError`] |
//! | `try_recv` | [`TryRecvError`]: [`Empty`](TryRecvError::Empty), or `Failed` with a [`RecvError`] |
//! | `recv_timeout`, the host's `recv_from` | [`RecvTimeoutError`]: [`Timeout`](RecvTimeoutError::Timeout), or `Failed` |
//!
//! The `aio` futures fail as the blocking forms do. The other side gone for good is one
//! variant in each, `Disconnected`, holding a [`Disconnect`] that says how (the host left, the
//! peer is not attached, a [`PeerId`]'s life is over); every type answers `is_disconnected()`
//! and `disconnect()`, looking through `Failed`.
//!
//! # Inspection
//!
//! A [`Snapshot`] is a look at a whole hub as a value: each peer's state, pid, heartbeat age
//! and ring depths, each size class's slots (free, kept, allocated, in flight), what is
//! damaged, and whether a named hub is stale. Any process that can read a named hub's file
//! takes one with [`Snapshot::read`], without joining the hub; the host with
//! [`Host::snapshot`].
//!
//! # Features
//!
//! - `tokio`: the async endpoints, `aio::AsyncHost` and `aio::AsyncPeer`.
//! - `serde`: `serde::Serialize` for [`Snapshot`] and the types it holds (the protocol
//!   version as the string `"1.0"`, a peer's state as its text), for reports in JSON and
//!   the like.
//! - `fault-injection` (off by default, for tests only): write access to a ring's indices in
//!   shared memory ([`ring::RawRing`]'s `visible_head` and `tail`), with which a test's plugin
//!   corrupts its own ring; a consumer reports such a store as a [`ring::RingError`]. The
//!   integration tests of this crate enable it (through a dev-dependency on the crate itself).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

// The modules, each after every module it uses (`use crate::...`): no circle.
//
//   layer 0  mapping, ring, uring                      (uring: a futex wake and wait in one call)
//   layer 1  futex -> uring                            (public: the futex system calls)
//            segment -> mapping, ring
//   layer 2  signal -> futex                           (public: the doorbell)
//            snapshot -> mapping, segment               (a look at a whole hub as a value)
//            frame -> futex, mapping, segment, signal  (FrameMeta, PeerId, Loan, Frame, Endpoint)
//            ready -> futex, segment, signal
//            liveness -> mapping, segment, signal
//            local -> segment
//            recovery -> ring                           (R10's scan, reset, sweep, reclaim)
//   layer 3  error -> frame, futex, ring, segment
//            event -> frame, ring                      (PeerEvent, EvictReason, Recovery, ...)
//            ticket -> frame, mapping, ready, segment
//   layer 4  link -> error, frame, futex, ready, recovery, ring, segment, signal
//            forms -> error, frame, link               (the blocking, try_ and _timeout forms)
//   layer 5  host_core -> event, frame, futex, link, liveness, local, mapping, ready, recovery,
//                         ring, segment, signal, ticket (Core: what the host's threads share)
//   layer 6  supervisor -> event, host_core, liveness, segment
//            peer -> error, forms, frame, link, liveness, local, mapping, ready, segment, signal,
//                    ticket
//   layer 7  audit -> event, host_core, supervisor
//   layer 8  host -> audit, error, event, forms, frame, host_core, link, liveness, local,
//                    mapping, ready, segment, signal, supervisor, ticket
//   layer 9  aio -> host, peer and the types they use (feature `tokio`)

/// `AsFd` and `AsRawFd` for an endpoint type (`Host`, `Peer`): its readiness descriptor,
/// `ready_fd()`, for an event loop to poll.
#[cfg(not(loom))]
macro_rules! readiness_descriptor_traits {
    ($endpoint:ident) => {
        impl std::os::fd::AsFd for $endpoint {
            #[doc = concat!("The [readiness descriptor](", stringify!($endpoint), "::ready_fd).")]
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.ready_fd()
            }
        }

        impl std::os::fd::AsRawFd for $endpoint {
            #[doc = concat!("The [readiness descriptor](", stringify!($endpoint), "::ready_fd).")]
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&self.ready_fd())
            }
        }
    };
}

#[cfg(all(feature = "tokio", not(loom)))]
pub mod aio;
pub mod futex;
pub mod mapping;
pub mod ring;
pub mod signal;

#[cfg(not(loom))]
mod audit;
// Under loom, the models of the real `Link` use it, and only in part.
#[cfg(any(test, not(loom)))]
#[cfg_attr(loom, allow(dead_code, unused_imports))]
mod error;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod forms;
// Under loom, the models of the real `Link` use it, and only in part.
#[cfg(any(test, not(loom)))]
#[cfg_attr(loom, allow(dead_code, unused_imports))]
mod frame;
#[cfg(not(loom))]
mod host;
#[cfg(not(loom))]
mod host_core;
// Under loom, the models of the real `Link` use it, and only in part.
#[cfg(any(test, not(loom)))]
#[cfg_attr(loom, allow(dead_code, unused_imports))]
mod link;
#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod local;
#[cfg(not(loom))]
mod peer;
// Under loom, the models of the real `Link` use it, and only in part.
#[cfg(any(test, not(loom)))]
#[cfg_attr(loom, allow(dead_code, unused_imports))]
mod ready;
// Under loom, only its model uses it.
#[cfg(any(test, not(loom)))]
mod recovery;
// Under loom, the models of the real `Link` use it, and only in part.
#[cfg(any(test, not(loom)))]
#[cfg_attr(loom, allow(dead_code, unused_imports))]
mod segment;
#[cfg(not(loom))]
mod snapshot;
#[cfg(not(loom))]
mod supervisor;
#[cfg(not(loom))]
mod ticket;
#[cfg(not(loom))]
mod uring;

pub use hub_layout::sync;

/// Types of hub-alloc and hub-layout that this crate's API returns or takes, so that a user
/// needs no other crate to name them.
pub use hub_alloc::{ClassStats, Corruption, RebuildReport, ReclaimReport, SlabError};
/// The reasons a segment is no valid hub ([`SnapshotError::Layout`],
/// [`AttachError::Layout`]).
pub use hub_layout::HubLayoutError;
pub use hub_layout::{INLINE_PAYLOAD_SIZE, NO_DEADLINE};

#[cfg(not(loom))]
pub use error::{
    Disconnect, LoanError, LoanTimeoutError, RecvError, RecvTimeoutError, SendCopyError,
    SendCopyTimeoutError, SendError, SendThenRecvError, SendTimeoutError, TryLoanError,
    TryRecvError, TrySendCopyError, TrySendError,
};
#[cfg(not(loom))]
pub use event::{AllocatorDamage, EvictReason, PeerEvent, Recovery};
#[cfg(not(loom))]
pub use frame::{DescriptorFault, Frame, FrameMeta, Loan, PeerId, PeerRef};
#[cfg(not(loom))]
pub use host::{Host, PeerInfo};
#[cfg(not(loom))]
pub use host_core::HostError;
#[cfg(not(loom))]
pub use peer::Peer;
#[cfg(not(loom))]
pub use segment::{AttachError, CreateError, HubConfig, PeerState, monotonic_ns, pad};
pub use signal::{UnknownWaitMode, WaitMode};
#[cfg(not(loom))]
pub use snapshot::{
    ClassSnapshot, Damage, PeerSnapshot, ProtocolVersion, RingDirection, Snapshot, SnapshotError,
};
#[cfg(not(loom))]
pub use ticket::{ReadySpec, SpecSource, TICKET_ENV, Ticket, TicketSpec};
