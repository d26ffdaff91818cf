//! The iceoryx2 baseline of `latency/spin` (hub-benches' `iceoryx2` feature): the same round
//! trip as the hub's, through iceoryx2's publish-subscribe, both sides polling.
//!
//! Two services of byte slices, `ping` (this process publishes, the child subscribes) and `pong`
//! (the other way), named after this process's id and the size so that no two runs share one.
//! One iteration: loan a sample of the size, fill it, send it, then poll `pong` until the echo
//! comes; the child polls `ping`, loans a sample, copies the ping's bytes into it and sends it:
//! the work the hub's echo does (up to 16 bytes the hub's frames travel inline in the
//! descriptor, with no slot; iceoryx2 always loans a sample). Both sides poll as the hub's
//! `WaitMode::Spin` does. A sample of no bytes tells the child to exit.
//!
//! Included by `latency.rs` with `#[path]`.

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use iceoryx2::node::Node;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::sample_mut_uninit::SampleMutUninit;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

/// The environment variable that gives the child the services' name prefix.
pub const SERVICE_ENV: &str = "HUB_BENCH_ICEORYX2_SERVICE";

/// How long the first exchange may take (the child starting and connecting) before the bench
/// gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a poll waits for a sample before it gives up (the partner died, say).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

type Service = ipc::Service;

/// One side's node, services and ports: it publishes on one service and subscribes to the other.
pub struct Side {
    publisher: Publisher<Service, [u8], ()>,
    subscriber: Subscriber<Service, [u8], ()>,
    // The ports first: they are dropped before the services and the node they belong to.
    _services: [PortFactory<Service, [u8], ()>; 2],
    _node: Node<Service>,
}

impl Side {
    /// Open (or create) the services `{prefix}/ping` and `{prefix}/pong` for slices of up to
    /// `size` bytes; publish on `{prefix}/{publish}` and subscribe to the other one.
    pub fn open(prefix: &str, size: usize, publish: &str) -> Result<Self, String> {
        // Its warning that no config file was found (defaults are used) would fill the report.
        set_log_level(LogLevel::Error);
        let error = |what: &str, e: &dyn std::fmt::Display| format!("iceoryx2 {what}: {e}");
        let node = NodeBuilder::new()
            .create::<Service>()
            .map_err(|e| error("node", &e))?;
        let open = |name: &str| {
            let name: ServiceName = format!("{prefix}/{name}")
                .as_str()
                .try_into()
                .map_err(|e| error("service name", &e))?;
            node.service_builder(&name)
                .publish_subscribe::<[u8]>()
                .open_or_create()
                .map_err(|e| error("service", &e))
        };
        let ping = open("ping")?;
        let pong = open("pong")?;
        let (outgoing, incoming) = if publish == "ping" {
            (&ping, &pong)
        } else {
            (&pong, &ping)
        };
        let publisher = outgoing
            .publisher_builder()
            .initial_max_slice_len(size.max(1))
            .create()
            .map_err(|e| error("publisher", &e))?;
        let subscriber = incoming
            .subscriber_builder()
            .create()
            .map_err(|e| error("subscriber", &e))?;
        Ok(Self {
            publisher,
            subscriber,
            _services: [ping, pong],
            _node: node,
        })
    }

    /// A sample of `len` bytes.
    fn loan(&self, len: usize) -> Result<SampleMutUninit<Service, [MaybeUninit<u8>], ()>, String> {
        self.publisher
            .loan_slice_uninit(len)
            .map_err(|e| format!("iceoryx2 loan: {e}"))
    }

    /// Send a copy of `payload`; how many subscribers it reached.
    fn send_copy(&self, payload: &[u8]) -> Result<usize, String> {
        let sample = self.loan(payload.len())?.write_from_slice(payload);
        sample.send().map_err(|e| format!("iceoryx2 send: {e}"))
    }

    /// Send `len` bytes of `byte`, written in place; how many subscribers it reached.
    fn send_filled(&self, len: usize, byte: u8) -> Result<usize, String> {
        let sample = self.loan(len)?.write_from_fn(|_| byte);
        sample.send().map_err(|e| format!("iceoryx2 send: {e}"))
    }

    /// Poll until a sample comes, then give it to `with`: a `pause` between empty polls, and
    /// after 256 of them a yield of the CPU too, as the hub's `WaitMode::Spin` does (on two
    /// vCPUs a side that never yields slows its own partner). An error after `POLL_TIMEOUT`
    /// with nothing, so that a partner that died cannot hang the bench.
    fn poll<T>(&self, with: impl FnOnce(&[u8]) -> T) -> Result<T, String> {
        let mut empty = 0_u32;
        let mut since: Option<Instant> = None;
        loop {
            match self.subscriber.receive() {
                Ok(Some(sample)) => return Ok(with(sample.payload())),
                Ok(None) => {
                    empty = empty.saturating_add(1);
                    if empty < 256 {
                        std::hint::spin_loop();
                        continue;
                    }
                    std::thread::yield_now();
                    if empty.is_multiple_of(1024)
                        && since.get_or_insert_with(Instant::now).elapsed() > POLL_TIMEOUT
                    {
                        return Err(format!("iceoryx2: nothing came in {POLL_TIMEOUT:?}"));
                    }
                }
                Err(e) => return Err(format!("iceoryx2 receive: {e}")),
            }
        }
    }
}

/// The bench's side: the round trips of one size, and the child that echoes them.
pub struct Iceoryx2Echo {
    side: Side,
    size: usize,
    sent: u8,
    // Dropped after `side` has told the child to exit (see `Drop`).
    _child: hub_benches::Partner,
}

impl Iceoryx2Echo {
    /// Create the services, start the echo child (`spawn(prefix)`), and make one exchange, so
    /// that both sides are connected before any round trip is timed.
    pub fn spawn(size: usize, spawn: impl FnOnce(&str) -> hub_benches::Partner) -> Self {
        let prefix = format!("hub-bench-latency/{}/{size}", std::process::id());
        let side = Side::open(&prefix, size, "ping").expect("the bench's iceoryx2 side");
        let child = spawn(&prefix);
        let echo = Self {
            side,
            size,
            sent: 0,
            _child: child,
        };
        // A sample sent before the child's subscriber is connected reaches nobody: send until
        // one reaches it, then wait for its echo.
        let started = Instant::now();
        while echo.side.send_filled(size, 0).expect("the first ping") == 0 {
            assert!(
                started.elapsed() < CONNECT_TIMEOUT,
                "the iceoryx2 child did not subscribe"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        echo.side.poll(|_| ()).expect("the first pong");
        echo
    }

    /// `iters` round trips, timed.
    pub fn run(&mut self, iters: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..iters {
            self.sent = self.sent.wrapping_add(1);
            let reached = self.side.send_filled(self.size, self.sent).expect("ping");
            assert_eq!(reached, 1, "the child's subscriber");
            let (len, first) = self
                .side
                .poll(|echo| (echo.len(), echo.first().copied()))
                .expect("pong");
            assert_eq!(len, self.size, "the echo of this ping");
            assert_eq!(first, Some(self.sent), "the echo of this ping");
        }
        started.elapsed()
    }
}

impl Drop for Iceoryx2Echo {
    fn drop(&mut self) {
        // No bytes: the child's cue to exit; `_child` then waits for it.
        let _ = self.side.send_copy(&[]);
    }
}

/// The child: echo every ping (a sample loaned, the ping copied into it) until one of no bytes
/// comes.
pub fn child(size: usize) -> Result<(), String> {
    let prefix = std::env::var(SERVICE_ENV).map_err(|e| format!("{SERVICE_ENV}: {e}"))?;
    let side = Side::open(&prefix, size, "pong")?;
    loop {
        let echoed = side.poll(|ping| {
            if ping.is_empty() {
                return Ok(false);
            }
            if ping.len() != size {
                return Err(format!("a ping of {} bytes, expected {size}", ping.len()));
            }
            // The bench's subscriber exists before this process starts; a send that reaches
            // nobody is this side's connection not made yet: try again.
            let started = Instant::now();
            while side.send_copy(ping)? == 0 {
                if started.elapsed() > CONNECT_TIMEOUT {
                    return Err("the bench's subscriber never connected".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(true)
        })??;
        if !echoed {
            return Ok(());
        }
    }
}
