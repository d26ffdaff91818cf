//! A tarpc service in a plugin process, called over the hub and over a Unix socket.
//!
//! ```sh
//! cargo run --release --example rpc_tarpc
//! cargo run --release --example rpc_tarpc -- --quick
//! ```
//!
//! The host creates a hub, listens on a Unix socket in a fresh temporary directory, and spawns
//! this program again as its plugin (`Host::spawn_peer`: the child knows it is the plugin by
//! the ticket in its environment). The plugin serves the same tarpc service twice: over the hub
//! (`hub_tarpc::PeerTransport`) and over a connection to the socket (tarpc's own transport:
//! length-delimited frames of bincode). The host then makes the same calls over each, checking
//! every result:
//!
//! - unary: `add(i, i + 1)`, one at a time, each timed: calls per second and the median round
//!   trip;
//! - concurrent: 64 tasks each making `add` calls at once on one client: calls per second;
//! - large: `checksum` of a 1 MiB argument, each compared with the host's own sum: median.
//!
//! Both processes run a current-thread tokio runtime, and the hub's endpoints the default
//! `WaitMode::Adaptive` unless `--wait` says otherwise (see hub-tarpc's docs). The last line
//! is meant for scripts:
//!
//! ```text
//! rpc_tarpc hub_median_us=… uds_median_us=… ratio=…
//! ```
//!
//! (the unary medians, in microseconds, and hub / uds).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hub_examples::{Example, Result, checksum, flag_value, say};
use hub_tarpc::{HostTransport, PeerTransport};
use hub_transport::aio::{AsyncHost, AsyncPeer};
use hub_transport::{Host, HubConfig, Peer, TICKET_ENV, WaitMode};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

const EXAMPLE: Example = Example {
    name: "rpc_tarpc",
    usage: "usage: rpc_tarpc [--quick] [--calls N] [--wait spin|block|adaptive]\n\
            \n\
            Calls a tarpc service in a plugin process over the hub and over a Unix socket,\n\
            checks every result, and prints calls/s and median round trips side by side.\n\
            \n\
            \x20 --quick    fewer calls (500 unary, 64 x 10 concurrent, 10 of 1 MiB)\n\
            \x20 --calls N  unary calls per transport (default 5000; concurrent and 1 MiB\n\
            \x20            calls scale with it)\n\
            \x20 --wait M   the hub's wait mode on both sides (default adaptive: a receive\n\
            \x20            spins and yields a moment first; block: it sleeps at once)\n\
            \x20 --help     this text",
};
/// Tasks calling at once in the concurrent part.
const TASKS: usize = 64;
/// The large argument's size.
const LARGE: usize = 1 << 20;
/// How long the host waits for the plugin to connect to the socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the host waits for the plugin to exit once it has left the hub.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The service the plugin serves.
#[tarpc::service]
trait Calc {
    /// `a + b`, wrapping.
    async fn add(a: u64, b: u64) -> u64;
    /// The length and [`checksum`] of `data`.
    async fn checksum(data: Vec<u8>) -> (u64, u64);
}

#[derive(Clone)]
struct CalcServer;

impl Calc for CalcServer {
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    async fn checksum(self, _: context::Context, data: Vec<u8>) -> (u64, u64) {
        (data.len() as u64, checksum(&data))
    }
}

/// How many calls of each kind, and the hub's wait mode.
#[derive(Debug, Clone, Copy)]
struct Options {
    unary: usize,
    per_task: usize,
    large: usize,
    wait: WaitMode,
}

impl Options {
    fn with_unary(self, unary: usize) -> Self {
        Self {
            unary,
            per_task: (unary / 50).max(1),
            large: (unary / 50).max(1),
            ..self
        }
    }
}

/// The environment variable that hands the host's wait mode to the plugin.
const WAIT_ENV: &str = "RPC_TARPC_WAIT";

fn main() -> ExitCode {
    if std::env::var_os(TICKET_ENV).is_some() {
        return EXAMPLE.exit(run_plugin());
    }
    EXAMPLE.run(parse(std::env::args().skip(1)), run_host)
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        unary: 0,
        per_task: 0,
        large: 0,
        wait: WaitMode::Adaptive,
    }
    .with_unary(5000);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--quick" => options = options.with_unary(500),
            "--calls" => options = options.with_unary(flag_value(&mut args, "--calls")?),
            "--wait" => {
                options.wait = flag_value::<String>(&mut args, "--wait")?
                    .parse()
                    .map_err(|e| format!("--wait: {e}"))?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.unary == 0 {
        return Err("--calls must be at least 1".into());
    }
    Ok(Some(options))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

// ---- The plugin ----------------------------------------------------------------------------

/// The plugin: serve over the socket named by the first argument and over the hub, until the
/// host leaves the hub.
fn run_plugin() -> Result<()> {
    let socket = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("plugin: the socket path is missing")?;
    runtime()?.block_on(async {
        let mut peer = Peer::from_env()?;
        let wait = std::env::var(WAIT_ENV).unwrap_or_default();
        peer.set_wait_mode(wait.parse().map_err(|e| format!("--wait: {e}"))?);
        let hub = PeerTransport::new(Arc::new(AsyncPeer::new(peer)?));
        let uds = tarpc::serde_transport::unix::connect(&socket, Bincode::default).await?;
        let uds = tokio::spawn(serve(uds));
        serve(hub).await;
        uds.abort();
        Ok(())
    })
}

/// Serve `Calc` on `transport`, each call in a task of its own, until its stream ends.
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

// ---- The host ------------------------------------------------------------------------------

/// What one transport measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    unary_per_s: f64,
    unary_median: Duration,
    concurrent_per_s: f64,
    large_median: Duration,
}

fn run_host(options: Options) -> Result<()> {
    let dir = TempDir::new()?;
    let socket = dir.path().join("calc.sock");
    let runtime = runtime()?;
    let (hub, uds, child) = runtime.block_on(measure_both(&socket, options))?;
    drop(runtime);
    wait_for(child)?;
    report(options, &hub, &uds)
}

/// Spawn the plugin, then run the calls over the hub and then over the socket.
async fn measure_both(socket: &Path, options: Options) -> Result<(Figures, Figures, Child)> {
    let mut incoming = tarpc::serde_transport::unix::listen(socket, Bincode::default).await?;
    let mut host = Host::create(&HubConfig::new().max_peers(1))?;
    host.set_wait_mode(options.wait);
    let mut command = Command::new(std::env::current_exe()?);
    command.arg(socket).env(WAIT_ENV, options.wait.name());
    let (peer, child) = host.spawn_peer(&mut command)?;
    let mut child = KillOnDrop(Some(child));
    let host = Arc::new(AsyncHost::new(host)?);

    let (hub_client, hub_dispatch) = spawn_client(HostTransport::new(Arc::clone(&host), peer));
    let uds = match tokio::time::timeout(CONNECT_TIMEOUT, incoming.next()).await {
        Ok(Some(transport)) => transport?,
        Ok(None) => return Err("the socket stopped listening".into()),
        Err(_) => return Err("the plugin did not connect to the socket".into()),
    };
    let (uds_client, uds_dispatch) = spawn_client(uds);

    let hub = measure(&hub_client, options).await?;
    let uds = measure(&uds_client, options).await?;

    // Leave: the clients' dispatch tasks end with their last handles and drop the transports;
    // the host's goodbye then ends the plugin's hub stream, and the plugin exits.
    drop((hub_client, uds_client));
    hub_dispatch.await?;
    uds_dispatch.await?;
    drop(host);
    Ok((hub, uds, child.0.take().ok_or("no plugin")?))
}

/// A client over `transport`, its dispatch in a task of its own.
fn spawn_client<T>(transport: T) -> (CalcClient, tokio::task::JoinHandle<()>)
where
    T: tarpc::Transport<tarpc::ClientMessage<CalcRequest>, tarpc::Response<CalcResponse>>
        + Send
        + 'static,
{
    let new = CalcClient::new(client::Config::default(), transport);
    let dispatch = tokio::spawn(async move {
        if let Err(error) = new.dispatch.await {
            eprintln!("{}: a client's dispatch failed: {error}", EXAMPLE.name);
        }
    });
    (new.client, dispatch)
}

/// The three kinds of calls over `client`, every result checked.
async fn measure(client: &CalcClient, options: Options) -> Result<Figures> {
    // Warm-up: page in the slots and the socket buffers, start the tasks' machinery.
    for i in 0..(options.unary / 10).max(10) as u64 {
        check_add(client, i).await?;
    }

    let mut times = Vec::with_capacity(options.unary);
    let started = Instant::now();
    for i in 0..options.unary as u64 {
        let call = Instant::now();
        check_add(client, i).await?;
        times.push(call.elapsed());
    }
    let unary_per_s = options.unary as f64 / started.elapsed().as_secs_f64();
    let unary_median = median(&mut times);

    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            let per_task = options.per_task;
            tokio::spawn(async move {
                for i in 0..per_task {
                    check_add(&client, (task * per_task + i) as u64).await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let concurrent_per_s = (TASKS * options.per_task) as f64 / started.elapsed().as_secs_f64();

    let mut times = Vec::with_capacity(options.large);
    for round in 0..options.large {
        let data: Vec<u8> = (0..LARGE).map(|i| (i * 31 + round) as u8).collect();
        let want = (data.len() as u64, checksum(&data));
        let call = Instant::now();
        let got = client
            .checksum(context::current(), data)
            .await
            .map_err(|e| format!("checksum call {round}: {e}"))?;
        times.push(call.elapsed());
        if got != want {
            return Err(format!("checksum call {round}: {got:?}, expected {want:?}").into());
        }
    }
    Ok(Figures {
        unary_per_s,
        unary_median,
        concurrent_per_s,
        large_median: median(&mut times),
    })
}

/// `add(i, i + 1)`, checked.
async fn check_add(client: &CalcClient, i: u64) -> Result<(), String> {
    let got = client
        .add(context::current(), i, i + 1)
        .await
        .map_err(|e| format!("add({i}, {}): {e}", i + 1))?;
    if got != 2 * i + 1 {
        return Err(format!(
            "add({i}, {}) = {got}, expected {}",
            i + 1,
            2 * i + 1
        ));
    }
    Ok(())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn report(options: Options, hub: &Figures, uds: &Figures) -> Result<()> {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let lines = [
        format!(
            "tarpc calls to a plugin: {} unary, {TASKS} tasks x {} concurrent, {} of 1 MiB; \
             every result checked; hub wait mode {}",
            options.unary,
            options.per_task,
            options.large,
            options.wait.name()
        ),
        format!("{:<28}{:>14}{:>14}", "", "hub", "unix socket"),
        format!(
            "{:<28}{:>14.0}{:>14.0}",
            "unary calls/s", hub.unary_per_s, uds.unary_per_s
        ),
        format!(
            "{:<28}{:>14.1}{:>14.1}",
            "unary median (us)",
            us(hub.unary_median),
            us(uds.unary_median)
        ),
        format!(
            "{:<28}{:>14.0}{:>14.0}",
            format!("concurrent calls/s ({TASKS} tasks)"),
            hub.concurrent_per_s,
            uds.concurrent_per_s
        ),
        format!(
            "{:<28}{:>14.1}{:>14.1}",
            "1 MiB checksum median (us)",
            us(hub.large_median),
            us(uds.large_median)
        ),
        format!(
            "rpc_tarpc hub_median_us={:.1} uds_median_us={:.1} ratio={:.2}",
            us(hub.unary_median),
            us(uds.unary_median),
            us(hub.unary_median) / us(uds.unary_median)
        ),
    ];
    for line in lines {
        say!("{line}");
    }
    Ok(())
}

/// Wait for the plugin to exit, at most [`EXIT_TIMEOUT`] (then kill it), and check it
/// succeeded.
fn wait_for(child: Child) -> Result<()> {
    let mut child = KillOnDrop(Some(child));
    let deadline = Instant::now() + EXIT_TIMEOUT;
    loop {
        let Some(running) = child.0.as_mut() else {
            return Ok(());
        };
        if let Some(status) = running.try_wait()? {
            child.0 = None;
            if !status.success() {
                return Err(format!("the plugin exited with {status}").into());
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err("the plugin did not exit after the host left".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child process killed and reaped if it is still here when this is dropped.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private temporary directory (mode 0700), removed with what is in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("rpc_tarpc-{}", std::process::id()));
        // A leftover of an earlier process with this pid is ours to replace.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
