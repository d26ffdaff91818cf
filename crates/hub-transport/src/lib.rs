//! hub-transport: a shared-memory transport between one host process and up to 32 peer
//! (plugin) processes on one Linux machine.
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
//! - frames and loans own a handle on their side: they move into tasks and across threads;
//! - each side has a readiness descriptor for event loops ([`Host::ready_fd`],
//!   [`Peer::ready_fd`]), written only when that side announced it sleeps on it; with the
//!   `tokio` feature, `aio::AsyncHost` and `aio::AsyncPeer` make every call a future.
//!
//! ```
//! use hub_transport::{FrameMeta, Host, HubConfig, Peer};
//!
//! let host = Host::create(&HubConfig { max_peers: 1, ..HubConfig::default() })?;
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

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(all(feature = "tokio", not(loom)))]
pub mod aio;
pub mod futex;
pub mod mapping;
pub mod ring;
pub mod signal;

#[cfg(not(loom))]
mod audit;
#[cfg(not(loom))]
mod host;
#[cfg(not(loom))]
mod link;
#[cfg(not(loom))]
mod liveness;
#[cfg(not(loom))]
mod local;
#[cfg(not(loom))]
mod peer;
#[cfg(not(loom))]
mod ready;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod supervisor;
#[cfg(not(loom))]
mod ticket;

pub use hub_layout::sync;

#[cfg(all(test, loom))]
mod loom_recovery;

#[cfg(not(loom))]
pub use audit::AllocatorDamage;
#[cfg(not(loom))]
pub use host::{Host, HostError, PeerInfo, Recovery};
#[cfg(not(loom))]
pub use link::{
    DescriptorFault, Frame, FrameMeta, Loan, PeerId, PeerRef, RecvError, SendError,
    SendTimeoutError, TrySendError,
};
#[cfg(not(loom))]
pub use peer::Peer;
#[cfg(not(loom))]
pub use segment::{AttachError, CreateError, HubConfig, PeerState, monotonic_ns, pad};
pub use signal::{UnknownWaitMode, WaitMode};
#[cfg(not(loom))]
pub use supervisor::{EvictReason, PeerEvent};
#[cfg(not(loom))]
pub use ticket::{ReadySpec, SpecSource, TICKET_ENV, Ticket, TicketSpec};
