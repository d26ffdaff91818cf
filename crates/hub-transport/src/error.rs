//! The errors of loans, sends and receives: one type per kind of call, each with the variants
//! that call can fail with (the table is in the crate's documentation).

use std::io;

use hub_alloc::SlabError;

use crate::frame::{DescriptorFault, Loan, PeerId};
use crate::futex::FutexError;
use crate::ring::RingError;
use crate::segment::PeerState;

/// Why the other side of a call is gone for good: retrying cannot succeed, and nothing more
/// will come from it. A new peer needs a new id.
///
/// Every error of a loan, a send or a receive that can meet it holds it in its
/// `Disconnected` variant; [`RecvError::disconnect`] and the like find it through the
/// `Failed` wrappers.
///
/// ```
/// use hub_transport::{Disconnect, FrameMeta, Host, HubConfig, Peer, RecvError, SendCopyError};
///
/// let host = Host::create(&HubConfig::new().max_peers(1))?;
/// let peer = Peer::attach(&host.add_peer()?)?;
/// host.close(); // the goodbye
/// let error = peer.recv().unwrap_err();
/// assert!(matches!(error, RecvError::Disconnected(Disconnect::HostGone)));
/// assert_eq!(error.disconnect(), Some(&Disconnect::HostGone));
/// let error = peer.send(FrameMeta::default(), b"anyone?").unwrap_err();
/// assert!(matches!(error, SendCopyError::Disconnected(Disconnect::HostGone)));
/// assert_eq!(error.to_string(), "the host has left the hub");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// On the host's side, a peer that left is [`PeerNotActive`](Self::PeerNotActive), and a
/// [`PeerId`] whose life is over is [`PeerGone`](Self::PeerGone):
///
/// ```
/// use hub_transport::{Disconnect, FrameMeta, Host, HubConfig, Peer, PeerState};
///
/// let host = Host::create(&HubConfig::new().max_peers(1))?;
/// let ticket = host.add_peer()?;
/// Peer::attach(&ticket)?.close(); // the peer's goodbye: its entry is no longer Active
/// let error = host.send(ticket.id(), FrameMeta::default(), b"hello?").unwrap_err();
/// assert!(matches!(
///     error.disconnect(),
///     Some(Disconnect::PeerNotActive { peer: 0, state }) if *state != PeerState::Active,
/// ));
/// host.recover_peer(0)?; // (the supervisor does this by itself, soon)
/// let _next = host.add_peer()?; // the entry's next life
/// let error = host.send(ticket.id(), FrameMeta::default(), b"hello?").unwrap_err();
/// assert_eq!(error.disconnect(), Some(&Disconnect::PeerGone { peer: ticket.id() }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnect {
    /// The host has left the hub (its goodbye, or its process died): on a peer's side.
    #[error("the host has left the hub")]
    HostGone,
    /// The peer's entry is in a state the call cannot go on with: on a peer's side, the host
    /// evicted this peer (or recovered its entry); on the host's side, the peer left, died or
    /// was evicted, or the entry is Empty (also, when receiving, for an index the hub does not
    /// have). The host sends to an attached or a reserved peer, and receives from an attached
    /// or a leaving one.
    #[error("peer {peer} is {state}")]
    PeerNotActive {
        /// The peer.
        peer: u16,
        /// Its state.
        state: PeerState,
    },
    /// The life of the peer this [`PeerId`] names is over: the entry is another peer's now,
    /// or nobody's. The host's calls that were given a `PeerId` only.
    #[error("peer {peer} is gone (its entry has another life)")]
    PeerGone {
        /// The id the call named.
        peer: PeerId,
    },
}

/// Why a loan (`loan`, and the `Failed` of `try_loan` and `loan_timeout`) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoanError {
    /// The payload is larger than the largest slot (16 MiB by default).
    #[error("payload of {len} bytes is larger than the largest slot ({max} bytes)")]
    PayloadTooLarge {
        /// Bytes asked for.
        len: usize,
        /// The largest slot size.
        max: usize,
    },
    /// A peer's loans only: the host left, or evicted this peer (before the call, or while it
    /// waited for a slot). The host's loans never are.
    #[error(transparent)]
    Disconnected(#[from] Disconnect),
    /// The allocator failed: its shared state is corrupted, or a class could not grow.
    #[error(transparent)]
    Alloc(SlabError),
    /// The futex system call failed, while waiting for a slot.
    #[error(transparent)]
    Futex(#[from] FutexError),
}

impl From<SlabError> for LoanError {
    fn from(error: SlabError) -> Self {
        match error {
            SlabError::PayloadTooLarge { len, max } => LoanError::PayloadTooLarge { len, max },
            other => LoanError::Alloc(other),
        }
    }
}

/// Why a [`try_loan`](crate::Host::try_loan) did not loan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryLoanError {
    /// The payload needs a slot, and its class (and every larger one) has none free now.
    #[error("no free slot of class {class} or larger")]
    NoFreeSlots {
        /// The smallest class that fits.
        class: u16,
    },
    /// The loan failed for good.
    #[error(transparent)]
    Failed(#[from] LoanError),
}

impl From<SlabError> for TryLoanError {
    fn from(error: SlabError) -> Self {
        match error {
            SlabError::NoFreeSlots { class } => TryLoanError::NoFreeSlots { class },
            other => TryLoanError::Failed(other.into()),
        }
    }
}

/// Why a [`loan_timeout`](crate::Host::loan_timeout) did not loan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoanTimeoutError {
    /// The deadline passed while the payload's class (and every larger one) had no free slot.
    #[error("the deadline passed before a slot was free")]
    Timeout,
    /// The loan failed for good.
    #[error(transparent)]
    Failed(#[from] LoanError),
}

/// Why a send of a loan (`send_loan`, and the `Failed` of `try_send_loan` and
/// `send_loan_timeout`) failed. The loan was dropped, which freed its slot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The receiver is gone for good: on the host's side, the peer is neither attached nor
    /// reserved, or the [`PeerId`] named is of a life that is over; on a peer's side, the host
    /// left or evicted this peer. Found before the send, or while it waited for room.
    #[error(transparent)]
    Disconnected(#[from] Disconnect),
    /// The host's sends only: the hub has no peer entry with this index.
    #[error("no peer {0}")]
    UnknownPeer(u16),
    /// The ring's indices break the protocol (R3); the culprit is the receiving side (the host
    /// evicts such a peer).
    #[error("the ring to peer {peer} is corrupted: {source}")]
    Ring {
        /// The peer whose ring it is.
        peer: u16,
        /// What is wrong.
        source: RingError,
    },
    /// The loan's slot could not be marked in flight to the receiver: its shared state was
    /// changed under the sender (a faulty process, or a recovery of the sender).
    #[error(transparent)]
    Alloc(SlabError),
}

/// Why a [`try_send_loan`](crate::Host::try_send_loan) did not send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError {
    /// The ring to the receiver is full: the loan comes back, unsent and still the sender's.
    #[error("the ring is full")]
    Full(Loan),
    /// The send failed for good; the loan was dropped, which freed its slot.
    #[error(transparent)]
    Failed(#[from] SendError),
}

impl TrySendError {
    /// The loan back, if the ring was full.
    pub fn into_loan(self) -> Option<Loan> {
        match self {
            Self::Full(loan) => Some(loan),
            Self::Failed(_) => None,
        }
    }
}

/// Why a [`send_loan_timeout`](crate::Host::send_loan_timeout) did not send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendTimeoutError {
    /// The deadline passed while the ring was full: the loan comes back, unsent and still the
    /// sender's.
    #[error("the deadline passed before the frame could be sent")]
    Timeout(Loan),
    /// The send failed for good; the loan was dropped, which freed its slot.
    #[error(transparent)]
    Failed(#[from] SendError),
}

impl SendTimeoutError {
    /// The loan back, if the deadline passed.
    pub fn into_loan(self) -> Option<Loan> {
        match self {
            Self::Timeout(loan) => Some(loan),
            Self::Failed(_) => None,
        }
    }
}

/// Why a send of a copy (`send(meta, &[u8])`, and the `Failed` of `try_send` and
/// `send_timeout`) failed: such a send loans a buffer, copies the payload in and sends the
/// loan, so this is what [`LoanError`] and [`SendError`] say, in one list (each converts into
/// it). Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendCopyError {
    /// The payload is larger than the largest slot (16 MiB by default).
    #[error("payload of {len} bytes is larger than the largest slot ({max} bytes)")]
    PayloadTooLarge {
        /// Bytes to send.
        len: usize,
        /// The largest slot size.
        max: usize,
    },
    /// The receiver is gone for good (see [`SendError::Disconnected`]), found before the send,
    /// while it waited for a slot or while it waited for room.
    #[error(transparent)]
    Disconnected(#[from] Disconnect),
    /// The host's sends only: the hub has no peer entry with this index.
    #[error("no peer {0}")]
    UnknownPeer(u16),
    /// The ring's indices break the protocol (R3); the culprit is the receiving side (the host
    /// evicts such a peer).
    #[error("the ring to peer {peer} is corrupted: {source}")]
    Ring {
        /// The peer whose ring it is.
        peer: u16,
        /// What is wrong.
        source: RingError,
    },
    /// The allocator failed: its shared state is corrupted, a class could not grow, or the
    /// slot could not be marked in flight.
    #[error(transparent)]
    Alloc(SlabError),
    /// The futex system call failed, while waiting for a slot.
    #[error(transparent)]
    Futex(#[from] FutexError),
}

impl From<LoanError> for SendCopyError {
    fn from(error: LoanError) -> Self {
        match error {
            LoanError::PayloadTooLarge { len, max } => SendCopyError::PayloadTooLarge { len, max },
            LoanError::Disconnected(disconnect) => SendCopyError::Disconnected(disconnect),
            LoanError::Alloc(error) => SendCopyError::Alloc(error),
            LoanError::Futex(error) => SendCopyError::Futex(error),
        }
    }
}

impl From<SendError> for SendCopyError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Disconnected(disconnect) => SendCopyError::Disconnected(disconnect),
            SendError::UnknownPeer(peer) => SendCopyError::UnknownPeer(peer),
            SendError::Ring { peer, source } => SendCopyError::Ring { peer, source },
            SendError::Alloc(error) => SendCopyError::Alloc(error),
        }
    }
}

/// Why a [`try_send`](crate::Host::try_send) (of a copy) did not send. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendCopyError {
    /// The ring to the receiver is full.
    #[error("the ring is full")]
    Full,
    /// The payload needs a slot, and its class (and every larger one) has none free now.
    #[error("no free slot of class {class} or larger")]
    NoFreeSlots {
        /// The smallest class that fits.
        class: u16,
    },
    /// The send failed for good.
    #[error(transparent)]
    Failed(#[from] SendCopyError),
}

impl From<TryLoanError> for TrySendCopyError {
    fn from(error: TryLoanError) -> Self {
        match error {
            TryLoanError::NoFreeSlots { class } => TrySendCopyError::NoFreeSlots { class },
            TryLoanError::Failed(error) => TrySendCopyError::Failed(error.into()),
        }
    }
}

/// Why a [`send_timeout`](crate::Host::send_timeout) (of a copy) did not send. Nothing was
/// sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendCopyTimeoutError {
    /// The deadline passed while the payload's class had no free slot or the ring was full
    /// (the one deadline covers both waits).
    #[error("the deadline passed before the frame could be sent")]
    Timeout,
    /// The send failed for good.
    #[error(transparent)]
    Failed(#[from] SendCopyError),
}

impl From<LoanTimeoutError> for SendCopyTimeoutError {
    fn from(error: LoanTimeoutError) -> Self {
        match error {
            LoanTimeoutError::Timeout => SendCopyTimeoutError::Timeout,
            LoanTimeoutError::Failed(error) => SendCopyTimeoutError::Failed(error.into()),
        }
    }
}

/// Why a receive (`recv`, `recv_from`, and the `Failed` of `try_recv` and `recv_timeout`)
/// failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// Nothing more will come: on a peer's side, the host left (after the frames it sent
    /// before its goodbye were taken) or evicted this peer; on the host's side
    /// (`recv_from`), the peer is not attached nor leaving (or left, its frames all taken), or
    /// the [`PeerId`] named is of a life that is over.
    #[error(transparent)]
    Disconnected(#[from] Disconnect),
    /// A descriptor broke the protocol (R3); `peer` is the sender at fault (on a peer's end,
    /// the peer's own id: the fault is the host's). The frame is dropped; the host evicts such
    /// a peer.
    #[error("bad descriptor on the ring of peer {peer}: {fault}")]
    BadDescriptor {
        /// The peer whose ring it came through.
        peer: u16,
        /// What is wrong.
        fault: DescriptorFault,
    },
    /// The ring's indices break the protocol (R3); the host evicts such a peer.
    #[error("the ring of peer {peer} is corrupted: {source}")]
    Ring {
        /// The peer whose ring it is.
        peer: u16,
        /// What is wrong.
        source: RingError,
    },
    /// The futex system call failed, while waiting for a frame.
    #[error(transparent)]
    Futex(#[from] FutexError),
    /// The `aio` receives only: the event loop's wait on the readiness descriptor failed (the
    /// reactor is gone).
    #[error("waiting on the readiness descriptor failed: {0}")]
    Readiness(io::Error),
}

/// Why a [`try_recv`](crate::Host::try_recv) took no frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing to receive now.
    #[error("nothing to receive")]
    Empty,
    /// The receive failed for good (or found a faulty frame, which it dropped).
    #[error(transparent)]
    Failed(#[from] RecvError),
}

/// Why a [`recv_timeout`](crate::Host::recv_timeout) (or a
/// [`recv_from`](crate::Host::recv_from) with a timeout) took no frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// The deadline passed with nothing to receive.
    #[error("the deadline passed with nothing to receive")]
    Timeout,
    /// The receive failed for good (or found a faulty frame, which it dropped).
    #[error(transparent)]
    Failed(#[from] RecvError),
}

/// The error of a send and the receive after it, made in one call (a request and its reply:
/// `Peer::send_then_recv`, `Host::send_then_recv_from` and their loan forms): which half
/// failed, with that half's error (`S` is the send's: [`SendCopyError`] or [`SendError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendThenRecvError<S> {
    /// The send failed: nothing went, and nothing was received.
    #[error("send: {0}")]
    Send(S),
    /// The frame went; the receive after it failed.
    #[error("receive after a send: {0}")]
    Recv(RecvError),
}

/// `is_disconnected` and `disconnect` for an error type, given how to find its
/// [`Disconnect`].
macro_rules! disconnect_accessors {
    ($($error:ty => |$e:ident| $find:expr;)*) => {$(
        impl $error {
            /// Whether the other side is gone for good ([`Disconnect`]): retrying cannot
            /// succeed, and nothing more will come from it.
            pub fn is_disconnected(&self) -> bool {
                self.disconnect().is_some()
            }

            /// How the other side is gone for good, if that is what this error says.
            pub fn disconnect(&self) -> Option<&Disconnect> {
                let $e = self;
                $find
            }
        }
    )*};
}

disconnect_accessors! {
    LoanError => |e| match e {
        LoanError::Disconnected(d) => Some(d),
        _ => None,
    };
    TryLoanError => |e| match e {
        TryLoanError::Failed(error) => error.disconnect(),
        _ => None,
    };
    LoanTimeoutError => |e| match e {
        LoanTimeoutError::Failed(error) => error.disconnect(),
        _ => None,
    };
    SendError => |e| match e {
        SendError::Disconnected(d) => Some(d),
        _ => None,
    };
    TrySendError => |e| match e {
        TrySendError::Failed(error) => error.disconnect(),
        _ => None,
    };
    SendTimeoutError => |e| match e {
        SendTimeoutError::Failed(error) => error.disconnect(),
        _ => None,
    };
    SendCopyError => |e| match e {
        SendCopyError::Disconnected(d) => Some(d),
        _ => None,
    };
    TrySendCopyError => |e| match e {
        TrySendCopyError::Failed(error) => error.disconnect(),
        _ => None,
    };
    SendCopyTimeoutError => |e| match e {
        SendCopyTimeoutError::Failed(error) => error.disconnect(),
        _ => None,
    };
    RecvError => |e| match e {
        RecvError::Disconnected(d) => Some(d),
        _ => None,
    };
    TryRecvError => |e| match e {
        TryRecvError::Failed(error) => error.disconnect(),
        _ => None,
    };
    RecvTimeoutError => |e| match e {
        RecvTimeoutError::Failed(error) => error.disconnect(),
        _ => None,
    };
    SendThenRecvError<SendCopyError> => |e| match e {
        SendThenRecvError::Send(error) => error.disconnect(),
        SendThenRecvError::Recv(error) => error.disconnect(),
    };
    SendThenRecvError<SendError> => |e| match e {
        SendThenRecvError::Send(error) => error.disconnect(),
        SendThenRecvError::Recv(error) => error.disconnect(),
    };
}
