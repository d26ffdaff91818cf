//! A host and a pool of plugin processes doing work for it, one of which crashes and is
//! replaced.
//!
//! ```sh
//! cargo run --release --example plugin_host
//! cargo run --release --example plugin_host -- --plugins 2 --seconds 3 --crash-after 0
//! ```
//!
//! The host spawns `--plugins` plugins (this program with a hidden flag). Even ones checksum the
//! buffers they get and reply with the 8-byte sum (inline in the descriptor); odd ones transform
//! them (invert every byte) into a slot of their own and send that back. Buffers come in mixed
//! sizes, 256 B to 1 MiB, written in place in loaned slots; the host keeps a few requests
//! outstanding per plugin and checks every reply. Every second it prints per-plugin frames,
//! bytes and latency. After `--crash-after` seconds one plugin exits without a goodbye; the
//! host reports its death and recovery and spawns a replacement.

use std::collections::HashMap;
use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use hub_examples::{
    Example, Result, checksum, expected_checksum, flag_value, next_frame, say, spawn_self,
};
use hub_transport::{
    Disconnect, FrameMeta, Host, HubConfig, Peer, PeerEvent, RecvError, RecvTimeoutError,
    SendCopyError, SendError,
};

/// The flag that makes the program a plugin: `--plugin checksum|transform [CRASH_MS]`.
const PLUGIN_FLAG: &str = "--plugin";
/// The buffer sizes the host cycles through.
const SIZES: [usize; 4] = [256, 4096, 64 << 10, 1 << 20];
/// Requests outstanding per plugin.
const WINDOW: usize = 2;
/// The exit code of a plugin's simulated crash.
const CRASH_CODE: i32 = 101;

const USAGE: &str = "usage: plugin_host [--plugins N] [--seconds S] [--crash-after S]

Spawns N plugin processes that checksum or transform buffers of 256 B to 1 MiB, prints a table
of per-plugin frames, bytes and latency every second, and replaces a plugin that dies.

  --plugins N       plugins, 1 to 32 (default 4)
  --seconds S       how long to run, 1 to 3600 (default 5)
  --crash-after S   seconds after which one plugin exits without a goodbye, to show its
                    replacement; 0 for never (default 2.5)
  --help            this text";
const EXAMPLE: Example = Example {
    name: "plugin_host",
    usage: USAGE,
};

struct Options {
    plugins: u16,
    seconds: u64,
    crash_after: f64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(PLUGIN_FLAG) {
        return EXAMPLE.exit(run_plugin(&args[1..]));
    }
    EXAMPLE.run(parse(&args), |options| run_host(&options))
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut options = Options {
        plugins: 4,
        seconds: 5,
        crash_after: 2.5,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--plugins" => options.plugins = flag_value(&mut args, "--plugins")?,
            "--seconds" => options.seconds = flag_value(&mut args, "--seconds")?,
            "--crash-after" => options.crash_after = flag_value(&mut args, "--crash-after")?,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !(1..=hub_layout::MAX_PEERS).contains(&options.plugins) {
        return Err(format!(
            "--plugins must be 1 to {}, not {}",
            hub_layout::MAX_PEERS,
            options.plugins
        ));
    }
    if !(1..=3600).contains(&options.seconds) {
        return Err(format!(
            "--seconds must be 1 to 3600, not {}",
            options.seconds
        ));
    }
    if !(options.crash_after.is_finite() && options.crash_after >= 0.0) {
        return Err(format!(
            "--crash-after must be 0 or more seconds, not {}",
            options.crash_after
        ));
    }
    Ok(Some(options))
}

fn kind_of(peer: u16) -> &'static str {
    if peer.is_multiple_of(2) {
        "checksum"
    } else {
        "transform"
    }
}

/// A request waiting for its reply.
struct Pending {
    sent: Instant,
    len: usize,
    fill: u8,
}

/// One plugin process and what the host measured of it in the current interval.
struct Plugin {
    child: Child,
    pid: u32,
    alive: bool,
    pending: HashMap<u64, Pending>,
    frames: u64,
    bytes: u64,
    latencies_ns: Vec<u64>,
    total_frames: u64,
}

fn spawn_plugin(host: &Host, crash_ms: Option<u64>) -> Result<(u16, Plugin)> {
    let (id, child) = spawn_self(host, |id| {
        let mut args = vec![PLUGIN_FLAG.to_string(), kind_of(id).to_string()];
        args.extend(crash_ms.map(|ms| ms.to_string()));
        args
    })?;
    Ok((
        id,
        Plugin {
            pid: child.id(),
            child,
            alive: true,
            pending: HashMap::new(),
            frames: 0,
            bytes: 0,
            latencies_ns: Vec::new(),
            total_frames: 0,
        },
    ))
}

fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

fn print_table(at: Duration, plugins: &mut [Option<Plugin>], interval: Duration) {
    say!(
        "t={:>4.1}s  {:>6}  {:>7}  {:<9}  {:>8}  {:>9}  {:>9}  {:>9}",
        at.as_secs_f64(),
        "plugin",
        "pid",
        "kind",
        "frames",
        "MB/s",
        "p50 us",
        "p99 us"
    );
    for (id, plugin) in plugins.iter_mut().enumerate() {
        let Some(p) = plugin.as_mut() else { continue };
        p.latencies_ns.sort_unstable();
        let pick = |q: f64| {
            p.latencies_ns
                .get(((p.latencies_ns.len().saturating_sub(1)) as f64 * q).round() as usize)
                .map_or("-".to_string(), |&ns| micros(ns))
        };
        say!(
            "         {:>6}  {:>7}  {:<9}  {:>8}  {:>9.1}  {:>9}  {:>9}{}",
            id,
            p.pid,
            kind_of(id as u16),
            p.frames,
            p.bytes as f64 / interval.as_secs_f64() / 1e6,
            pick(0.5),
            pick(0.99),
            if p.alive { "" } else { "  (dead)" }
        );
        p.frames = 0;
        p.bytes = 0;
        p.latencies_ns.clear();
    }
}

fn run_host(options: &Options) -> Result<()> {
    let host = Host::create(&HubConfig::new().max_peers(options.plugins))?;
    let started = Instant::now();
    let mut plugins: Vec<Option<Plugin>> = (0..options.plugins).map(|_| None).collect();
    // The plugin that crashes: the second one if there are two or more.
    let crasher = u16::from(options.plugins > 1);
    let crash_ms = (options.crash_after > 0.0).then_some((options.crash_after * 1e3) as u64);
    for n in 0..options.plugins {
        let (id, plugin) = spawn_plugin(&host, crash_ms.filter(|_| n == crasher))?;
        plugins[usize::from(id)] = Some(plugin);
    }
    let result = drive(&host, options, started, &mut plugins);
    drop(host); // goodbye: every plugin's recv returns HostGone and it exits
    for plugin in plugins.iter_mut().flatten() {
        if plugin.alive {
            match plugin.child.wait() {
                Ok(status) if status.success() => {}
                Ok(status) => eprintln!(
                    "plugin_host: plugin pid {} exited with {status}",
                    plugin.pid
                ),
                Err(error) => eprintln!("plugin_host: waiting for pid {}: {error}", plugin.pid),
            }
        }
    }
    let total: u64 = plugins.iter().flatten().map(|p| p.total_frames).sum();
    if result.is_ok() {
        say!(
            "{total} replies in {:.1} s from {} plugins, every one checked",
            started.elapsed().as_secs_f64(),
            options.plugins
        );
    }
    result
}

fn drive(
    host: &Host,
    options: &Options,
    started: Instant,
    plugins: &mut [Option<Plugin>],
) -> Result<()> {
    let end = started + Duration::from_secs(options.seconds);
    let mut next_report = started + Duration::from_secs(1);
    let mut last_report = started;
    let mut msg_id = 0u64;
    loop {
        let now = Instant::now();
        if now >= next_report {
            print_table(now - started, plugins, now - last_report);
            last_report = now;
            next_report += Duration::from_secs(1);
            if now >= end {
                return Ok(());
            }
        }
        // Keep every live plugin's window full.
        for (id, slot) in plugins.iter_mut().enumerate() {
            let Some(plugin) = slot.as_mut().filter(|p| p.alive) else {
                continue;
            };
            while plugin.pending.len() < WINDOW {
                msg_id += 1;
                let len = SIZES[msg_id as usize % SIZES.len()];
                let fill = (msg_id % 251) as u8 + 1;
                let mut loan = host.loan(len)?;
                loan.as_mut_slice().fill(fill);
                let meta = FrameMeta {
                    msg_id,
                    ..FrameMeta::default()
                };
                match host.send_loan(id as u16, meta, loan) {
                    Ok(()) => {}
                    // Died since the last event: the supervisor's event follows.
                    Err(SendError::Disconnected(Disconnect::PeerNotActive { .. })) => break,
                    Err(error) => return Err(error.into()),
                }
                plugin.pending.insert(
                    msg_id,
                    Pending {
                        sent: Instant::now(),
                        len,
                        fill,
                    },
                );
            }
        }
        match host.recv_timeout(Duration::from_millis(5)) {
            Ok(frame) => {
                let id = usize::from(frame.peer());
                let Some(plugin) = plugins.get_mut(id).and_then(Option::as_mut) else {
                    return Err(format!("a frame from unknown peer {id}").into());
                };
                let Some(pending) = plugin.pending.remove(&frame.meta().msg_id) else {
                    return Err(format!("plugin {id}: a reply to nothing: {frame:?}").into());
                };
                let right = if kind_of(id as u16) == "checksum" {
                    frame.payload() == expected_checksum(pending.len, pending.fill).to_le_bytes()
                } else {
                    frame.len() == pending.len
                        && frame.payload().iter().all(|&b| b == !pending.fill)
                };
                if !right {
                    return Err(format!("plugin {id}: wrong reply {frame:?}").into());
                }
                plugin.frames += 1;
                plugin.total_frames += 1;
                plugin.bytes += pending.len as u64;
                plugin
                    .latencies_ns
                    .push(pending.sent.elapsed().as_nanos() as u64);
            }
            Err(
                RecvTimeoutError::Timeout
                | RecvTimeoutError::Failed(RecvError::Disconnected(Disconnect::PeerNotActive {
                    ..
                })),
            ) => {}
            Err(error) => return Err(error.into()),
        }
        while let Some(event) = host.try_event() {
            handle_event(host, started, plugins, event)?;
        }
    }
}

fn handle_event(
    host: &Host,
    started: Instant,
    plugins: &mut [Option<Plugin>],
    event: PeerEvent,
) -> Result<()> {
    let at = started.elapsed().as_secs_f64();
    match event {
        PeerEvent::Died { peer, pid } => {
            if let Some(plugin) = plugins.get_mut(usize::from(peer)).and_then(Option::as_mut) {
                plugin.alive = false;
                let lost = plugin.pending.len();
                plugin.pending.clear();
                let status = plugin.child.wait()?;
                say!(
                    "t={at:>4.1}s  plugin {peer} (pid {pid}) died: {status}; {lost} requests lost"
                );
            }
        }
        PeerEvent::Evicted { peer, reason } => {
            if let Some(plugin) = plugins.get_mut(usize::from(peer)).and_then(Option::as_mut) {
                plugin.alive = false;
                plugin.pending.clear();
                let _ = plugin.child.kill();
                let _ = plugin.child.wait();
            }
            say!("t={at:>4.1}s  plugin {peer} evicted: {reason}");
        }
        PeerEvent::Recovered { peer, recovery } => {
            say!(
                "t={at:>4.1}s  plugin {peer} recovered: {} slots freed from its rings, {} reclaimed",
                recovery.ring_slots_freed,
                recovery.reclaimed.freed.iter().sum::<u32>()
            );
            let (id, plugin) = spawn_plugin(host, None)?;
            say!(
                "t={at:>4.1}s  replaced by a new {} plugin, pid {}, as plugin {id}",
                kind_of(id),
                plugin.pid
            );
            let old = plugins[usize::from(id)].replace(plugin);
            if let (Some(old), Some(new)) = (old, plugins[usize::from(id)].as_mut()) {
                new.total_frames += old.total_frames;
            }
        }
        PeerEvent::RecoveryFailed { peer, error } => {
            return Err(format!("recovering plugin {peer} failed: {error}").into());
        }
        _ => {}
    }
    Ok(())
}

fn run_plugin(args: &[String]) -> Result<()> {
    let (transform, crash_ms) = match args {
        [kind] => (kind == "transform", None),
        [kind, ms] => (kind == "transform", Some(ms.parse::<u64>()?)),
        _ => return Err(format!("bad plugin arguments {args:?}").into()),
    };
    let started = Instant::now();
    let peer = Peer::from_env()?;
    while let Some(frame) = next_frame(&peer)? {
        if crash_ms.is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms)) {
            // A crash: no goodbye, no destructors; the host sees the exit through its pidfd.
            std::process::exit(CRASH_CODE);
        }
        let meta = *frame.meta();
        let sent = if transform {
            peer.loan(frame.len())
                .map_err(SendCopyError::from)
                .and_then(|mut loan| {
                    for (out, &b) in loan.as_mut_slice().iter_mut().zip(frame.payload()) {
                        *out = !b;
                    }
                    drop(frame);
                    peer.send_loan(meta, loan).map_err(SendCopyError::from)
                })
        } else {
            let sum = checksum(frame.payload());
            drop(frame);
            peer.send(meta, &sum.to_le_bytes())
        };
        match sent {
            Ok(()) => {}
            // The host left while this reply was on its way: nothing more to do.
            Err(SendCopyError::Disconnected(Disconnect::HostGone)) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}
