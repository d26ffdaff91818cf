//! hub-tarpc: [tarpc](https://docs.rs/tarpc) over the hub.
//!
//! The frames follow the hub's protocol, `docs/PROTOCOL.md` in the hub's repository, whose
//! rules (R1 to R14) the other hub crates' docs cite by number.
//!
//! Two transports, one for each end of a host-peer pair:
//!
//! - [`PeerTransport`], the plugin's end, over an [`AsyncPeer`];
//! - [`HostTransport`], the host's end of one peer, over an [`AsyncHost`]. The host holds its
//!   endpoint in an [`Arc`], so it can run one transport per peer over a single hub.
//!
//! Each is a `Stream<Item = io::Result<Item>>` and a `Sink<SinkItem, Error = io::Error>` of
//! serde items, which tarpc's blanket impl makes a `tarpc::Transport`: hand one to
//! `tarpc::server::BaseChannel::with_defaults` to serve, or to a generated client's `new` to
//! call. Both ends may serve and both may call.
//!
//! One item is one frame. An item is encoded with bincode 1 (the encoding of
//! `bincode::serialize`, which tarpc's own Bincode codec uses: fixed-width little-endian
//! integers) straight into a loaned slot of exactly its size, and decoded straight from the
//! received frame's payload where it lies in shared memory: no intermediate buffer on either
//! side. Items of at most 16 bytes travel inline in the descriptor; the largest item is the
//! largest slot (16 MiB by default), and a larger one is refused with
//! [`io::ErrorKind::InvalidInput`].
//!
//! Errors are [`io::Error`]s (tarpc's transports speak `io::Error`) wrapping a
//! [`TransportError`], which says what failed; [`TransportError::kind`] says how it maps. A
//! frame that does not decode is an [`io::ErrorKind::InvalidData`] error and the stream goes
//! on. The stream ends (`None`) when the other side leaves in order: the host's goodbye on the
//! plugin's end ([`Disconnect::HostGone`]), the peer's goodbye on the host's end, or the end of
//! the peer's life the host transport is bound to ([`Disconnect::PeerGone`]). A peer found dead
//! or evicted (its entry not yet recovered) ends it with one
//! [`io::ErrorKind::ConnectionAborted`] error first.
//!
//! **Wait modes.** The default, [`WaitMode::Adaptive`](hub_transport::WaitMode::Adaptive), suits tarpc: a receive that finds
//! nothing gives its turn back to the executor for up to 200 µs (the reply is made by other
//! tasks of it, an RPC server's), looking after each turn, and only then sleeps; it spins
//! inside its poll only after its end sent something and while such spins keep catching
//! frames. [`WaitMode::Block`](hub_transport::WaitMode::Block) sleeps at once: no CPU spent
//! waiting, and two wakeups per call. In runs of the example (`rpc_tarpc --quick`) and of the
//! RPC benchmark, a unary call over the hub took 0.14 to 0.29 times as long as over tarpc's
//! Unix-socket transport in `Adaptive` (6 to 9 µs), 1.2 to 2 times in `Block` (see the
//! README's RPC benchmark).
//!
//! ```
//! use std::sync::Arc;
//!
//! use futures::StreamExt;
//! use hub_tarpc::{HostTransport, PeerTransport};
//! use hub_transport::aio::{AsyncHost, AsyncPeer};
//! use hub_transport::{Host, HubConfig, Peer};
//! use tarpc::server::{BaseChannel, Channel};
//! use tarpc::{client, context};
//!
//! #[tarpc::service]
//! trait Calc {
//!     async fn add(a: i64, b: i64) -> i64;
//! }
//!
//! #[derive(Clone)]
//! struct CalcServer;
//!
//! impl Calc for CalcServer {
//!     async fn add(self, _: context::Context, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::create(&HubConfig::new().max_peers(1))?;
//! let ticket = host.add_peer()?;
//! // In a plugin process this is `PeerTransport::from_env()`.
//! let peer = Arc::new(AsyncPeer::new(Peer::attach(&ticket)?)?);
//! let host = Arc::new(AsyncHost::new(host)?);
//!
//! // The plugin serves...
//! let server = BaseChannel::with_defaults(PeerTransport::new(peer));
//! tokio::spawn(server.execute(CalcServer.serve()).for_each(|call| async {
//!     tokio::spawn(call);
//! }));
//!
//! // ...and the host calls.
//! let transport = HostTransport::new(host, ticket.id());
//! let calc = CalcClient::new(client::Config::default(), transport).spawn();
//! assert_eq!(calc.add(context::current(), 2, 3).await?, 5);
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bincode::Options;
use futures::{Sink, Stream};
use hub_transport::aio::{AsyncHost, AsyncPeer};
use hub_transport::{
    AttachError, Disconnect, Frame, FrameMeta, Loan, LoanError, Peer, PeerRef, PeerState,
    RecvError, SendError, TryLoanError, TrySendError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What went wrong in a transport; the [`io::Error`]s the transports return wrap one (find it
/// with [`io::Error::get_ref`] and `downcast_ref`), of the kind [`kind`](Self::kind) gives.
///
/// ```
/// use std::io;
/// use hub_tarpc::TransportError;
/// use hub_transport::{Disconnect, SendError};
///
/// let error = io::Error::from(TransportError::Send(Disconnect::HostGone.into()));
/// assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
/// let inner = error.get_ref().and_then(|e| e.downcast_ref::<TransportError>());
/// assert!(matches!(
///     inner,
///     Some(TransportError::Send(SendError::Disconnected(Disconnect::HostGone)))
/// ));
/// assert_eq!(inner.and_then(TransportError::disconnect), Some(&Disconnect::HostGone));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Receiving a frame failed.
    #[error("receiving from the hub failed: {0}")]
    Recv(#[source] RecvError),
    /// Loaning a slot for an item failed.
    #[error("loaning a slot for an item failed: {0}")]
    Loan(#[source] LoanError),
    /// Sending an item's frame failed.
    #[error("sending over the hub failed: {0}")]
    Send(#[source] SendError),
    /// A received frame is not the encoding of one item (or has bytes after it).
    #[error("a frame of {len} bytes does not decode: {source}")]
    Decode {
        /// The frame's payload length.
        len: usize,
        /// What bincode found.
        #[source]
        source: bincode::Error,
    },
    /// An item could not be encoded (its `Serialize` impl failed, or changed its size between
    /// measuring and writing).
    #[error("an item does not encode: {0}")]
    Encode(#[source] bincode::Error),
    /// `start_send` was called while an earlier item was still being sent: the sink's
    /// contract is `poll_ready` first. The item is dropped.
    #[error("start_send before poll_ready finished the previous send")]
    NotReady,
    /// [`PeerTransport::from_env`] could not attach.
    #[error("attaching to the hub failed: {0}")]
    Attach(#[from] AttachError),
}

impl TransportError {
    /// The [`io::ErrorKind`] this error is reported as:
    ///
    /// - `InvalidData`: a frame that does not decode, a descriptor or ring that breaks the
    ///   protocol;
    /// - `InvalidInput`: an item that does not encode, or is larger than the largest slot;
    /// - `BrokenPipe`: a loan or a send when the host or peer left; `ConnectionAborted`: a
    ///   receive from a peer that died or was evicted; `NotFound`: a peer id the host does not
    ///   have;
    /// - `Other` for the rest (a failed futex call, a damaged allocator, a misused sink, a
    ///   failed attach).
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match self {
            Self::Recv(error) => match error {
                RecvError::BadDescriptor { .. } | RecvError::Ring { .. } => K::InvalidData,
                RecvError::Disconnected(_) => K::ConnectionAborted,
                _ => K::Other,
            },
            Self::Loan(error) => match error {
                LoanError::PayloadTooLarge { .. } => K::InvalidInput,
                LoanError::Disconnected(_) => K::BrokenPipe,
                _ => K::Other,
            },
            Self::Send(error) => match error {
                SendError::Disconnected(_) => K::BrokenPipe,
                SendError::UnknownPeer(_) => K::NotFound,
                SendError::Ring { .. } => K::InvalidData,
                _ => K::Other,
            },
            Self::Decode { .. } => K::InvalidData,
            Self::Encode(_) => K::InvalidInput,
            Self::NotReady | Self::Attach(_) => K::Other,
        }
    }
}

impl TransportError {
    /// How the other side is gone for good, if that is what this error says: a receive, a loan
    /// or a send that found the host or the peer gone ([`Disconnect`]).
    pub fn disconnect(&self) -> Option<&Disconnect> {
        match self {
            Self::Recv(error) => error.disconnect(),
            Self::Loan(error) => error.disconnect(),
            Self::Send(error) => error.disconnect(),
            _ => None,
        }
    }
}

impl From<TransportError> for io::Error {
    fn from(error: TransportError) -> Self {
        io::Error::new(error.kind(), error)
    }
}

/// The plugin's end: a tarpc transport over an [`AsyncPeer`], to the host.
///
/// `Item` is what it receives, `SinkItem` what it sends: for a server,
/// `tarpc::ClientMessage<Req>` and `tarpc::Response<Resp>`, for a client the other way round;
/// both are inferred where the transport is handed to tarpc.
///
/// Sending an item loans a slot without waiting when one is free and writes the item into it;
/// when its size class is empty the item is kept and the slot waited for in `poll_ready` /
/// `poll_flush`, and the frame is sent there too (waiting for room in the ring if it is full).
/// Dropping the transport gives back whatever it held (a slot loaned and not yet sent).
///
/// ```no_run
/// # use futures::StreamExt;
/// # use tarpc::server::{BaseChannel, Channel};
/// # #[tarpc::service]
/// # trait Calc { async fn add(a: i64, b: i64) -> i64; }
/// # #[derive(Clone)]
/// # struct CalcServer;
/// # impl Calc for CalcServer {
/// #     async fn add(self, _: tarpc::context::Context, a: i64, b: i64) -> i64 { a + b }
/// # }
/// // A plugin spawned by `Host::spawn_peer`: serve until the host leaves.
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let transport = hub_tarpc::PeerTransport::from_env()?;
/// BaseChannel::with_defaults(transport)
///     .execute(CalcServer.serve())
///     .for_each(|call| async {
///         tokio::spawn(call);
///     })
///     .await;
/// # Ok(())
/// # }
/// ```
pub struct PeerTransport<Item, SinkItem> {
    core: Core<PeerEnd, Item, SinkItem>,
}

/// The host's end of one peer: a tarpc transport over an [`AsyncHost`], to peer
/// [`peer`](Self::peer) only (it receives with `recv_from` and sends with `send_loan` to that
/// peer). Any number of them, one per peer, share one host.
///
/// Bound to a [`PeerId`](hub_transport::PeerId) (what `spawn_peer` returns), the transport
/// talks to that life of the entry only: once that plugin is gone its stream ends and its
/// sends fail ([`io::ErrorKind::BrokenPipe`]), and nothing reaches a plugin admitted later
/// under the same index. Bound to a bare `u16` index, it talks to whoever holds the entry.
///
/// Sending works as [`PeerTransport`]'s. The stream ends when the peer says goodbye or its
/// life is over, after a [`io::ErrorKind::ConnectionAborted`] error when the transport finds
/// it dead or evicted; until the peer attaches (a reserved entry) it waits.
///
/// ```no_run
/// use std::process::Command;
/// use std::sync::Arc;
/// use hub_tarpc::HostTransport;
/// use hub_transport::aio::AsyncHost;
/// use hub_transport::{Host, HubConfig};
/// # #[tarpc::service]
/// # trait Calc { async fn add(a: i64, b: i64) -> i64; }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let host = Arc::new(AsyncHost::new(Host::create(&HubConfig::default())?)?);
/// let mut clients = Vec::new();
/// for _ in 0..4 {
///     let (peer, _child) = host.host().spawn_peer(&mut Command::new("calc-plugin"))?;
///     let transport = HostTransport::new(Arc::clone(&host), peer);
///     clients.push(CalcClient::new(tarpc::client::Config::default(), transport).spawn());
/// }
/// for calc in &clients {
///     assert_eq!(calc.add(tarpc::context::current(), 1, 2).await?, 3);
/// }
/// # Ok(())
/// # }
/// ```
pub struct HostTransport<Item, SinkItem> {
    core: Core<HostEnd, Item, SinkItem>,
}

impl<Item, SinkItem> PeerTransport<Item, SinkItem> {
    /// A transport over `peer`, which may be shared with other transports or tasks (frames go
    /// to whoever receives first, so give each peer one receiving transport).
    pub fn new(peer: Arc<AsyncPeer>) -> Self {
        Self {
            core: Core::new(PeerEnd(peer)),
        }
    }

    /// Attach to the hub named in this process's environment ([`hub_transport::TICKET_ENV`],
    /// set by the host's `spawn_peer`) and make a transport over it. Call it inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`TransportError::Attach`] when attaching fails; the error of [`AsyncPeer::new`] when
    /// the peer cannot be registered with the runtime.
    pub fn from_env() -> io::Result<Self> {
        let peer = Peer::from_env().map_err(TransportError::from)?;
        Ok(Self::new(Arc::new(AsyncPeer::new(peer)?)))
    }

    /// The endpoint this transport runs over.
    pub fn endpoint(&self) -> &Arc<AsyncPeer> {
        &self.core.end.0
    }
}

impl<Item, SinkItem> HostTransport<Item, SinkItem> {
    /// A transport over `host` to and from `peer`: a [`PeerId`](hub_transport::PeerId) (one
    /// life of an entry) or a `u16` index (whoever holds the entry).
    pub fn new(host: Arc<AsyncHost>, peer: impl Into<PeerRef>) -> Self {
        Self {
            core: Core::new(HostEnd {
                host,
                peer: peer.into(),
            }),
        }
    }

    /// The peer this transport talks to.
    pub fn peer(&self) -> PeerRef {
        self.core.end.peer
    }

    /// The endpoint this transport runs over.
    pub fn endpoint(&self) -> &Arc<AsyncHost> {
        &self.core.end.host
    }
}

impl<Item, SinkItem> fmt::Debug for PeerTransport<Item, SinkItem> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTransport")
            .field("peer", &self.core.end.0.peer().id())
            .field("sending", &self.core.outgoing.name())
            .field("ended", &self.core.ended)
            .finish()
    }
}

impl<Item, SinkItem> fmt::Debug for HostTransport<Item, SinkItem> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostTransport")
            .field("peer", &self.core.end.peer)
            .field("sending", &self.core.outgoing.name())
            .field("ended", &self.core.ended)
            .finish()
    }
}

// The transports are never structurally pinned: a waiting item is only moved and borrowed, and
// the futures they poll are pinned in their own boxes. So they are `Unpin` whatever the items
// are, which lets their `Sink` and `Stream` impls take `&mut self` out of the `Pin`.
impl<Item, SinkItem> Unpin for PeerTransport<Item, SinkItem> {}
impl<Item, SinkItem> Unpin for HostTransport<Item, SinkItem> {}

/// Both transports' `Stream` and `Sink` impls: the same, over their `core`.
macro_rules! stream_and_sink {
    ($transport:ident) => {
        impl<Item, SinkItem> Stream for $transport<Item, SinkItem>
        where
            Item: DeserializeOwned,
        {
            type Item = io::Result<Item>;

            fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                self.get_mut().core.poll_next(cx)
            }
        }

        impl<Item, SinkItem> Sink<SinkItem> for $transport<Item, SinkItem>
        where
            SinkItem: Serialize,
        {
            type Error = io::Error;

            fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().core.drive(cx)
            }

            fn start_send(self: Pin<&mut Self>, item: SinkItem) -> io::Result<()> {
                self.get_mut().core.start_send(item)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().core.drive(cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                // Nothing to shut: a hub has no half-close. The other side sees the end when
                // this side's endpoint leaves (the host's goodbye, the peer's).
                self.get_mut().core.drive(cx)
            }
        }
    };
}

stream_and_sink!(PeerTransport);
stream_and_sink!(HostTransport);

/// The bincode options of every frame: `bincode::serialize`'s encoding (fixed-width
/// little-endian integers, no size limit beyond the frame's), and a frame must be one item to
/// its last byte.
fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

type RecvFuture = Pin<Box<dyn Future<Output = Result<Frame, RecvError>> + Send>>;
type LoanFuture = Pin<Box<dyn Future<Output = Result<Loan, LoanError>> + Send>>;
type SendFuture = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send>>;

/// What a transport needs of its endpoint: the two ends' differences.
trait End {
    /// A receive; the future owns what it needs, and is kept across polls (a receive spins
    /// only when it starts, and many may wait on one endpoint).
    fn recv(&self) -> RecvFuture;
    /// Send `loan` now, or have it back if the ring is full.
    fn try_send(&self, meta: FrameMeta, loan: Loan) -> Result<(), TrySendError>;
    /// A loan without waiting (`TryLoanError::NoFreeSlots` when the class is empty).
    fn try_loan(&self, len: usize) -> Result<Loan, TryLoanError>;
    /// A loan, waiting for a slot; the future owns what it needs.
    fn loan(&self, len: usize) -> LoanFuture;
    /// Send `loan`, waiting for room; the future owns what it needs.
    fn send(&self, meta: FrameMeta, loan: Loan) -> SendFuture;
}

struct PeerEnd(Arc<AsyncPeer>);

impl End for PeerEnd {
    fn recv(&self) -> RecvFuture {
        let peer = Arc::clone(&self.0);
        Box::pin(async move { peer.recv().await })
    }

    fn try_send(&self, meta: FrameMeta, loan: Loan) -> Result<(), TrySendError> {
        self.0.try_send_loan(meta, loan)
    }

    fn try_loan(&self, len: usize) -> Result<Loan, TryLoanError> {
        self.0.peer().try_loan(len)
    }

    fn loan(&self, len: usize) -> LoanFuture {
        let peer = Arc::clone(&self.0);
        Box::pin(async move { peer.loan(len).await })
    }

    fn send(&self, meta: FrameMeta, loan: Loan) -> SendFuture {
        let peer = Arc::clone(&self.0);
        Box::pin(async move { peer.send_loan(meta, loan).await })
    }
}

struct HostEnd {
    host: Arc<AsyncHost>,
    peer: PeerRef,
}

impl End for HostEnd {
    fn recv(&self) -> RecvFuture {
        let (host, peer) = (Arc::clone(&self.host), self.peer);
        Box::pin(async move { host.recv_from(peer).await })
    }

    fn try_send(&self, meta: FrameMeta, loan: Loan) -> Result<(), TrySendError> {
        self.host.try_send_loan(self.peer, meta, loan)
    }

    fn try_loan(&self, len: usize) -> Result<Loan, TryLoanError> {
        self.host.host().try_loan(len)
    }

    fn loan(&self, len: usize) -> LoanFuture {
        let host = Arc::clone(&self.host);
        Box::pin(async move { host.loan(len).await })
    }

    fn send(&self, meta: FrameMeta, loan: Loan) -> SendFuture {
        let (host, peer) = (Arc::clone(&self.host), self.peer);
        Box::pin(async move { host.send_loan(peer, meta, loan).await })
    }
}

/// The item being sent, if any.
enum Outgoing<SinkItem> {
    /// Nothing: ready for the next item.
    Idle,
    /// Its size class was empty: the item waits for `loan`.
    Loaning { item: SinkItem, loan: LoanFuture },
    /// Encoded into its loan, which `send` is sending.
    Sending(SendFuture),
}

impl<SinkItem> Outgoing<SinkItem> {
    fn name(&self) -> &'static str {
        match self {
            Outgoing::Idle => "idle",
            Outgoing::Loaning { .. } => "waiting for a slot",
            Outgoing::Sending(_) => "sending",
        }
    }
}

/// What a receive error does to the stream.
enum Ending {
    /// The other side left in order: the stream ends.
    Orderly,
    /// The connection is lost: this error, then the end.
    Lost,
    /// This frame is lost, not the connection: the error, and the stream goes on.
    No,
}

fn ending(error: &RecvError) -> Ending {
    match error {
        // The host left, or the life of the peer this transport is bound to is over (its
        // frames all taken): nothing more will come.
        RecvError::Disconnected(Disconnect::HostGone | Disconnect::PeerGone { .. }) => {
            Ending::Orderly
        }
        RecvError::Disconnected(Disconnect::PeerNotActive {
            state: PeerState::Dying | PeerState::Empty,
            ..
        }) => Ending::Orderly,
        RecvError::Disconnected(_) => Ending::Lost,
        RecvError::BadDescriptor { .. } => Ending::No,
        _ => Ending::Lost,
    }
}

/// A transport over either end.
struct Core<E, Item, SinkItem> {
    end: E,
    /// The receive under way, kept across polls.
    incoming: Option<RecvFuture>,
    outgoing: Outgoing<SinkItem>,
    /// The `msg_id` of the next frame sent (the frames' sequence numbers; tarpc has its own).
    next_msg: u64,
    /// The stream has ended: the other side left, or the connection was lost.
    ended: bool,
    _received: PhantomData<fn() -> Item>,
}

impl<E: End, Item, SinkItem> Core<E, Item, SinkItem> {
    fn new(end: E) -> Self {
        Self {
            end,
            incoming: None,
            outgoing: Outgoing::Idle,
            next_msg: 1,
            ended: false,
            _received: PhantomData,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Item>>>
    where
        Item: DeserializeOwned,
    {
        if self.ended {
            return Poll::Ready(None);
        }
        let receive = self.incoming.get_or_insert_with(|| self.end.recv());
        let received = ready!(receive.as_mut().poll(cx));
        self.incoming = None;
        let error = match received {
            Ok(frame) => {
                let item =
                    codec()
                        .deserialize(frame.payload())
                        .map_err(|source| TransportError::Decode {
                            len: frame.len(),
                            source,
                        });
                return Poll::Ready(Some(item.map_err(io::Error::from)));
            }
            Err(error) => error,
        };
        match ending(&error) {
            Ending::Orderly => {
                self.ended = true;
                Poll::Ready(None)
            }
            Ending::Lost => {
                self.ended = true;
                Poll::Ready(Some(Err(TransportError::Recv(error).into())))
            }
            Ending::No => Poll::Ready(Some(Err(TransportError::Recv(error).into()))),
        }
    }

    /// `poll_ready`, `poll_flush`, `poll_close`: drive the item being sent, if any, until it
    /// is in the ring.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        SinkItem: Serialize,
    {
        loop {
            match std::mem::replace(&mut self.outgoing, Outgoing::Idle) {
                Outgoing::Idle => return Poll::Ready(Ok(())),
                Outgoing::Loaning { item, mut loan } => match loan.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.outgoing = Outgoing::Loaning { item, loan };
                        return Poll::Pending;
                    }
                    Poll::Ready(loan) => {
                        let loan = loan.map_err(TransportError::Loan)?;
                        self.encode_and_send(loan, &item)?;
                    }
                },
                Outgoing::Sending(mut send) => match send.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.outgoing = Outgoing::Sending(send);
                        return Poll::Pending;
                    }
                    Poll::Ready(sent) => sent.map_err(TransportError::Send)?,
                },
            }
        }
    }

    fn start_send(&mut self, item: SinkItem) -> io::Result<()>
    where
        SinkItem: Serialize,
    {
        if !matches!(self.outgoing, Outgoing::Idle) {
            return Err(TransportError::NotReady.into());
        }
        let len = codec()
            .serialized_size(&item)
            .map_err(TransportError::Encode)?;
        // Past the address space is past the largest slot too: the loan refuses it.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        match self.end.try_loan(len) {
            Ok(loan) => self.encode_and_send(loan, &item),
            Err(TryLoanError::NoFreeSlots { .. }) => {
                let loan = self.end.loan(len);
                self.outgoing = Outgoing::Loaning { item, loan };
                Ok(())
            }
            Err(TryLoanError::Failed(error)) => Err(TransportError::Loan(error).into()),
            Err(error) => Err(io::Error::other(error)),
        }
    }

    /// Write `item` into `loan` and start sending it. On an error the loan is dropped, which
    /// gives its slot back.
    fn encode_and_send(&mut self, mut loan: Loan, item: &SinkItem) -> io::Result<()>
    where
        SinkItem: Serialize,
    {
        let len = loan.len();
        let mut unwritten = loan.as_mut_slice();
        codec()
            .serialize_into(&mut unwritten, item)
            .map_err(TransportError::Encode)?;
        // Shorter than measured only if the item changed in between: send what was written.
        let written = len - unwritten.len();
        loan.truncate(written);
        let meta = FrameMeta {
            msg_id: self.next_msg,
            ..FrameMeta::default()
        };
        self.next_msg = self.next_msg.wrapping_add(1);
        // The ring has room nearly always: send now, and box a waiting send only when full.
        match self.end.try_send(meta, loan) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(loan)) => {
                self.outgoing = Outgoing::Sending(self.end.send(meta, loan));
                Ok(())
            }
            Err(TrySendError::Failed(error)) => Err(TransportError::Send(error).into()),
            Err(error) => Err(io::Error::other(error)),
        }
    }
}
