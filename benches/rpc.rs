//! Async round trips between two processes on tokio: the hub's async endpoints and tarpc over
//! the hub, each beside the same thing over a Unix socket.
//!
//! One iteration is one round trip. Both sides run a current-thread tokio runtime (one thread
//! per process: the machine has two cores); the partner is this bench binary started again
//! with `HUB_BENCH_CHILD` (see `hub_benches`).
//!
//! - `rpc/echo`: `hub adaptive` and `hub block`, an `AsyncHost` sending a message of the size
//!   to an `AsyncPeer` in the child (`send` for 8 B, which travel inline; else `loan`, fill,
//!   `send_loan`), which echoes it (`loan`, copy, `send_loan`) and the host `recv_from`s the
//!   echo, both sides in `WaitMode::Adaptive` (a receive spins a moment before it sleeps) or
//!   `WaitMode::Block`; beside `baseline_unix_stream`, a socket pair of tokio `UnixStream`s:
//!   the host writes the size, the child reads it all and writes it back, the host reads it
//!   all. Sizes 8 B and 64 KiB.
//! - `rpc/tarpc`: `hub adaptive add` and `hub block add`, one unary tarpc call (`add(a, b)`,
//!   checked) from the host to a server in the child over `hub_tarpc`'s transports, in the
//!   two wait modes; beside `baseline_unix_socket add`, the same call over tarpc's own
//!   transport (length-delimited frames, bincode) on a socket pair.
//!
//! Function ids follow the convention `cargo xtask bench-report rpc` reads: `baseline...` is a
//! baseline, compared with every row of its group that has the same parameter.
//!
//! The hub's children exit when the host leaves (`HostGone`, the end of the tarpc stream), the
//! socket children on end of file; the parent waits for each (and kills it after 5 s).
//!
//! ```sh
//! cargo bench -p hub-benches --bench rpc
//! cargo xtask bench-report rpc
//! ```

use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use futures::StreamExt;
use hub_benches::{Partner, attach_peer, inherited_fds, run_child_if_asked, size_name};
use hub_tarpc::{HostTransport, PeerTransport};
use hub_transport::aio::{AsyncHost, AsyncPeer};
use hub_transport::{Disconnect, FrameMeta, Host, HubConfig, PeerId, RecvError, WaitMode};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tarpc::{client, context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

/// The bench's name in the children's messages.
const BENCH: &str = "rpc";
/// The echo sizes.
const ECHO_SIZES: [usize; 2] = [8, 64 << 10];
/// Payloads up to this many bytes travel inline in the descriptor.
const INLINE: usize = 16;
/// The hub's wait modes measured, with their names in function ids and child roles.
const MODES: [(WaitMode, &str); 2] = [(WaitMode::Adaptive, "adaptive"), (WaitMode::Block, "block")];

/// The service of `rpc/tarpc`.
#[tarpc::service]
trait Calc {
    /// `a + b`, wrapping.
    async fn add(a: u64, b: u64) -> u64;
}

#[derive(Clone)]
struct CalcServer;

impl Calc for CalcServer {
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

fn main() -> ExitCode {
    if let Some(code) = run_child_if_asked(BENCH, child_main) {
        return code;
    }
    let runtime = current_thread();
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_echo(&mut criterion, &runtime);
    bench_tarpc(&mut criterion, &runtime);
    criterion.final_summary();
    ExitCode::SUCCESS
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn bench_echo(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("rpc/echo");
    for size in ECHO_SIZES {
        let id = size_name(size);
        for (mode, name) in MODES {
            let mut hub = HubEcho::spawn(runtime, size, mode, name);
            group.bench_function(BenchmarkId::new(format!("hub {name}"), &id), |b| {
                b.iter_custom(|iters| runtime.block_on(hub.run(iters)))
            });
        }
        let mut socket = StreamEcho::spawn(runtime, size);
        group.bench_function(BenchmarkId::new("baseline_unix_stream", &id), |b| {
            b.iter_custom(|iters| runtime.block_on(socket.run(iters)))
        });
    }
    group.finish();
}

fn bench_tarpc(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("rpc/tarpc");
    for (mode, name) in MODES {
        let hub = TarpcCalls::hub(runtime, mode, name);
        bench_calls(&mut group, runtime, &format!("hub {name}"), &hub);
        hub.close(runtime);
    }
    let socket = TarpcCalls::socket(runtime);
    bench_calls(&mut group, runtime, "baseline_unix_socket", &socket);
    socket.close(runtime);
    group.finish();
}

fn bench_calls(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    calls: &TarpcCalls,
) {
    group.bench_function(BenchmarkId::new(name, "add"), |b| {
        b.iter_custom(|iters| runtime.block_on(calls.run(iters)))
    });
}

/// `rpc/echo` over the hub: a host with one peer, the child.
struct HubEcho {
    host: Option<AsyncHost>,
    peer: PeerId,
    size: usize,
    sent: u64,
    // Dropped after `host` (see `Drop`): the child exits when the host says goodbye.
    _child: Partner,
}

impl HubEcho {
    fn spawn(runtime: &Runtime, size: usize, mode: WaitMode, name: &str) -> Self {
        let mut host = Host::create(&HubConfig::new().max_peers(1)).expect("create a hub");
        host.set_wait_mode(mode);
        let ticket = host.add_peer().expect("a peer entry");
        let child = Partner::spawn(BENCH, &format!("hub-echo-{name}"), size, |command| {
            ticket.apply(command);
        })
        .expect("spawn the echo child");
        let peer = ticket.id();
        drop(ticket);
        let _inside = runtime.enter();
        Self {
            host: Some(AsyncHost::new(host).expect("register the host")),
            peer,
            size,
            sent: 0,
            _child: child,
        }
    }

    async fn run(&mut self, iters: u64) -> Duration {
        let host = self.host.as_ref().expect("the host");
        let small = [0x5a_u8; INLINE];
        let started = Instant::now();
        for _ in 0..iters {
            self.sent += 1;
            let meta = FrameMeta {
                msg_id: self.sent,
                ..FrameMeta::default()
            };
            if self.size <= INLINE {
                host.send(self.peer, meta, &small[..self.size])
                    .await
                    .expect("send");
            } else {
                let mut loan = host.loan(self.size).await.expect("loan");
                loan.as_mut_slice().fill(self.sent as u8);
                host.send_loan(self.peer, meta, loan)
                    .await
                    .expect("send_loan");
            }
            let reply = host.recv_from(self.peer).await.expect("recv_from");
            assert_eq!(reply.meta().msg_id, self.sent, "the echo of this frame");
            assert_eq!(reply.len(), self.size);
        }
        started.elapsed()
    }
}

impl Drop for HubEcho {
    fn drop(&mut self) {
        // Goodbye first: the child's recv returns HostGone and it exits; then `_child` waits.
        drop(self.host.take());
    }
}

/// This child's peer, in wait mode `mode`, on the current runtime; `None` when the host has
/// left already (see `attach_peer`).
fn async_peer(mode: WaitMode) -> Result<Option<AsyncPeer>, String> {
    let Some(mut peer) = attach_peer()? else {
        return Ok(None);
    };
    peer.set_wait_mode(mode);
    AsyncPeer::new(peer).map(Some).map_err(|e| e.to_string())
}

/// The hub echo child: echo every frame until the host leaves.
async fn hub_echo_child(mode: WaitMode, size: usize) -> Result<(), String> {
    let Some(peer) = async_peer(mode)? else {
        return Ok(());
    };
    loop {
        let frame = match peer.recv().await {
            Ok(frame) => frame,
            Err(RecvError::Disconnected(Disconnect::HostGone)) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        };
        if frame.len() != size {
            return Err(format!("a frame of {} bytes, expected {size}", frame.len()));
        }
        let meta = *frame.meta();
        let mut loan = peer.loan(size).await.map_err(|e| e.to_string())?;
        loan.as_mut_slice().copy_from_slice(frame.payload());
        drop(frame);
        peer.send_loan(meta, loan)
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// `rpc/echo` over a socket pair: the host's end, the child's inherited.
struct StreamEcho {
    stream: Option<tokio::net::UnixStream>,
    out: Vec<u8>,
    back: Vec<u8>,
    // Dropped after `stream` (see `Drop`): the child exits on end of file.
    _child: Partner,
}

impl StreamEcho {
    fn spawn(runtime: &Runtime, size: usize) -> Self {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let theirs = OwnedFd::from(theirs);
        let child = Partner::spawn_with_fds(BENCH, "socket-echo", size, &[&theirs], |_| {})
            .expect("spawn the echo child");
        drop(theirs);
        Self {
            stream: Some(tokio_stream(runtime, ours.into()).expect("a tokio UnixStream")),
            out: vec![0x5a; size],
            back: vec![0; size],
            _child: child,
        }
    }

    async fn run(&mut self, iters: u64) -> Duration {
        let stream = self.stream.as_mut().expect("the host's end");
        let started = Instant::now();
        for _ in 0..iters {
            stream.write_all(&self.out).await.expect("write");
            stream.read_exact(&mut self.back).await.expect("read");
        }
        started.elapsed()
    }
}

impl Drop for StreamEcho {
    fn drop(&mut self) {
        // End of file for the child, then `_child` waits for it.
        drop(self.stream.take());
    }
}

/// A tokio `UnixStream` over the socket `fd`, registered with `runtime`.
fn tokio_stream(runtime: &Runtime, fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    let _inside = runtime.enter();
    tokio::net::UnixStream::from_std(stream)
}

/// The socket echo child: echo `size` bytes at a time until end of file.
async fn socket_echo_child(size: usize) -> Result<(), String> {
    let [fd] = <[OwnedFd; 1]>::try_from(inherited_fds()?)
        .map_err(|_| "expected one descriptor".to_owned())?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
    let mut buffer = vec![0; size];
    loop {
        match stream.read_exact(&mut buffer).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.to_string()),
        }
        stream.write_all(&buffer).await.map_err(|e| e.to_string())?;
    }
}

/// `rpc/tarpc`: a tarpc client of the child's server, over the hub or a socket pair.
struct TarpcCalls {
    client: CalcClient,
    /// The client's dispatch task, which owns the transport.
    dispatch: tokio::task::JoinHandle<()>,
    /// The hub's host, whose goodbye (when the last reference goes) ends the child.
    host: Option<Arc<AsyncHost>>,
    child: Partner,
}

impl TarpcCalls {
    fn hub(runtime: &Runtime, mode: WaitMode, name: &str) -> Self {
        let mut host = Host::create(&HubConfig::new().max_peers(1)).expect("create a hub");
        host.set_wait_mode(mode);
        let ticket = host.add_peer().expect("a peer entry");
        let child = Partner::spawn(BENCH, &format!("hub-tarpc-{name}"), 0, |command| {
            ticket.apply(command);
        })
        .expect("spawn the tarpc child");
        let peer = ticket.id();
        drop(ticket);
        let _inside = runtime.enter();
        let host = Arc::new(AsyncHost::new(host).expect("register the host"));
        let transport = HostTransport::new(Arc::clone(&host), peer);
        Self::new(transport, Some(host), child)
    }

    fn socket(runtime: &Runtime) -> Self {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let theirs = OwnedFd::from(theirs);
        let child = Partner::spawn_with_fds(BENCH, "socket-tarpc", 0, &[&theirs], |_| {})
            .expect("spawn the tarpc child");
        drop(theirs);
        let stream = tokio_stream(runtime, ours.into()).expect("a tokio UnixStream");
        let _inside = runtime.enter();
        Self::new(socket_transport(stream), None, child)
    }

    /// A client over `transport`, its dispatch spawned on the current runtime.
    fn new<T>(transport: T, host: Option<Arc<AsyncHost>>, child: Partner) -> Self
    where
        T: tarpc::Transport<tarpc::ClientMessage<CalcRequest>, tarpc::Response<CalcResponse>>
            + Send
            + 'static,
    {
        let new = CalcClient::new(client::Config::default(), transport);
        let dispatch = tokio::spawn(async move {
            if let Err(error) = new.dispatch.await {
                eprintln!("{BENCH}: the client's dispatch failed: {error}");
            }
        });
        Self {
            client: new.client,
            dispatch,
            host,
            child,
        }
    }

    async fn run(&self, iters: u64) -> Duration {
        let started = Instant::now();
        for i in 0..iters {
            let sum = self
                .client
                .add(context::current(), i, 1)
                .await
                .expect("a tarpc call");
            assert_eq!(sum, i + 1);
        }
        started.elapsed()
    }

    /// Drop the client and wait for its dispatch to finish (the transport goes with it), then
    /// leave the hub (if any) and wait for the child.
    fn close(self, runtime: &Runtime) {
        let Self {
            client,
            dispatch,
            host,
            child,
        } = self;
        drop(client);
        if let Err(error) = runtime.block_on(dispatch) {
            eprintln!("{BENCH}: the client's dispatch task: {error}");
        }
        drop(host);
        drop(child);
    }
}

/// tarpc's own transport over a Unix stream: length-delimited frames of bincode.
fn socket_transport<Item, SinkItem>(
    stream: tokio::net::UnixStream,
) -> tarpc::serde_transport::Transport<
    tokio::net::UnixStream,
    Item,
    SinkItem,
    Bincode<Item, SinkItem>,
>
where
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
{
    let framed = LengthDelimitedCodec::builder().new_framed(stream);
    tarpc::serde_transport::new(framed, Bincode::default())
}

/// Serve `Calc` on `transport` until its stream ends.
async fn serve<T>(transport: T)
where
    T: tarpc::Transport<tarpc::Response<CalcResponse>, tarpc::ClientMessage<CalcRequest>>
        + Send
        + 'static,
{
    BaseChannel::with_defaults(transport)
        .execute(CalcServer.serve())
        .for_each(|call| async {
            tokio::spawn(call);
        })
        .await;
}

/// The child of role `role` (from `HUB_BENCH_CHILD`), for messages of `size` bytes.
fn child_main(role: &str, size: usize) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mode = |name: &str| {
        MODES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(mode, _)| *mode)
            .ok_or_else(|| format!("unknown role {role:?}"))
    };
    runtime.block_on(async {
        if let Some(name) = role.strip_prefix("hub-echo-") {
            return hub_echo_child(mode(name)?, size).await;
        }
        if let Some(name) = role.strip_prefix("hub-tarpc-") {
            if let Some(peer) = async_peer(mode(name)?)? {
                serve(PeerTransport::new(Arc::new(peer))).await;
            }
            return Ok(());
        }
        match role {
            "socket-echo" => socket_echo_child(size).await,
            "socket-tarpc" => {
                let [fd] = <[OwnedFd; 1]>::try_from(inherited_fds()?)
                    .map_err(|_| "expected one descriptor".to_owned())?;
                let stream = std::os::unix::net::UnixStream::from(fd);
                stream.set_nonblocking(true).map_err(|e| e.to_string())?;
                let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
                serve(socket_transport(stream)).await;
                Ok(())
            }
            other => Err(format!("unknown role {other:?}")),
        }
    })
}
