//! A plugin killed in the middle of a stream, and the hub recovering what it held.
//!
//! ```sh
//! cargo run --release --example crash_recovery
//! ```
//!
//! The host spawns a plugin (this program with a hidden flag) that loans a few slots and keeps
//! them, then streams frames until the host stops reading and its ring fills. The host prints
//! the allocator's per-class counts, kills the plugin (`SIGKILL`, no goodbye), prints the
//! [`PeerEvent`]s its supervisor reports with their timings (the death is seen through a pidfd,
//! then the entry is recovered: every slot the plugin held or had in flight freed), prints the
//! counts again, then admits a new plugin under the same id and makes a round trip with it.

use std::process::{Child, ExitCode};
use std::time::{Duration, Instant};

use hub_examples::{Example, Result, next_frame, say, size_text, spawn_self};
use hub_transport::ClassStats;
use hub_transport::{FrameMeta, Host, HubConfig, Peer, PeerEvent};

/// The flag that makes the program a plugin: `--plugin stream` or `--plugin echo`.
const PLUGIN_FLAG: &str = "--plugin";
/// Slots of 200 KiB (class 2) the streaming plugin loans and never sends.
const HELD: usize = 3;
const HELD_SIZE: usize = 200 << 10;
/// The size of each streamed frame (class 1, 16 KiB slots).
const FRAME_SIZE: usize = 4096;
/// Frames the host reads before it stops reading.
const READ_FRAMES: u64 = 500;
/// Descriptors per ring: small, so the stream fills it quickly.
const RING_CAPACITY: u32 = 64;
/// The id of the frame that says the plugin holds its slots.
const READY: u64 = u64::MAX;
/// How long the host waits for anything.
const TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: crash_recovery

Spawns a plugin that holds slots and streams frames, kills it mid-stream, prints the peer
events the host sees (with timings) and the slot counts before and after recovery, then admits a
new plugin under the same id and makes a round trip. Takes no options.

  --help   this text";
const EXAMPLE: Example = Example {
    name: "crash_recovery",
    usage: USAGE,
};

/// What the program runs: the host or one of the plugins.
type Role = fn() -> Result<()>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let role: Result<Option<Role>, String> = match args.as_slice() {
        [] => Ok(Some(run_host)),
        ["--help" | "-h"] => Ok(None),
        [PLUGIN_FLAG, "stream"] => Ok(Some(run_streamer)),
        [PLUGIN_FLAG, "echo"] => Ok(Some(run_echo)),
        _ => Err(format!("unexpected arguments {args:?}")),
    };
    EXAMPLE.run(role, |run| run())
}

/// Kills the child on the way out, whatever happened.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ms(elapsed: Duration) -> String {
    format!("{:>8.2} ms", elapsed.as_secs_f64() * 1e3)
}

fn print_stats(title: &str, stats: &[ClassStats]) {
    say!("{title}");
    say!(
        "  {:>5}  {:>9}  {:>7}  {:>6}  {:>6}  {:>9}  {:>9}",
        "class",
        "slot size",
        "extents",
        "total",
        "free",
        "allocated",
        "in flight"
    );
    for (class, s) in stats.iter().enumerate() {
        say!(
            "  {:>5}  {:>9}  {:>7}  {:>6}  {:>6}  {:>9}  {:>9}",
            class,
            size_text(u64::from(s.slot_size)),
            s.extents,
            s.total,
            s.free,
            s.allocated,
            s.in_flight
        );
    }
}

fn describe(event: &PeerEvent) -> String {
    match event {
        PeerEvent::Attached { peer, pid } => format!("Attached   peer {peer}, pid {pid}"),
        PeerEvent::Goodbye { peer } => format!("Goodbye    peer {peer}"),
        PeerEvent::Died { peer, pid } => {
            format!("Died       peer {peer}, pid {pid} (exited without a goodbye)")
        }
        PeerEvent::Evicted { peer, reason } => format!("Evicted    peer {peer}: {reason}"),
        PeerEvent::Recovered { peer, recovery } => format!(
            "Recovered  peer {peer}: {} slots freed from its rings, {} reclaimed by class {:?}{}",
            recovery.ring_slots_freed,
            recovery.reclaimed.freed.iter().sum::<u32>(),
            recovery.reclaimed.freed,
            if recovery.reclaimed.recovered_from_journal {
                ", one more from its journal"
            } else {
                ""
            }
        ),
        PeerEvent::RecoveryFailed { peer, error } => {
            format!("RecoveryFailed peer {peer}: {error}")
        }
        other => format!("{other:?}"),
    }
}

fn run_host() -> Result<()> {
    let started = Instant::now();
    let host = Host::create(&HubConfig::new().max_peers(1).ring_capacity(RING_CAPACITY))?;
    let (peer_id, child) = spawn_self(&host, |_| [PLUGIN_FLAG, "stream"])?;
    let pid = child.id();
    let mut plugin = Reaper(Some(child));
    say!("spawned plugin pid {pid} as peer {peer_id}");
    // The supervisor reports the attach on its next pass (it looks every 20 ms).
    loop {
        let Some(event) = host.next_event(Some(TIMEOUT)) else {
            return Err(format!("the plugin did not attach within {TIMEOUT:?}").into());
        };
        say!(
            "  {} after the start: {}",
            ms(started.elapsed()).trim(),
            describe(&event)
        );
        if matches!(event, PeerEvent::Attached { peer, .. } if peer == peer_id) {
            break;
        }
    }

    // The plugin says when it holds its slots, then streams.
    let ready = host.recv_timeout(TIMEOUT)?;
    if ready.meta().msg_id != READY {
        return Err(format!("expected the ready frame, got {ready:?}").into());
    }
    drop(ready);
    let mut bytes = 0usize;
    for i in 0..READ_FRAMES {
        let frame = host.recv_timeout(TIMEOUT)?;
        if frame.meta().msg_id != i || frame.payload().iter().any(|&b| b != i as u8) {
            return Err(format!("frame {i}: unexpected {frame:?}").into());
        }
        bytes += frame.len();
    }
    say!(
        "read {READ_FRAMES} frames ({} KiB) of the stream, then stopped reading",
        bytes >> 10
    );
    // Let the stream fill the ring: those frames are in flight when the plugin dies.
    let fill_deadline = Instant::now() + TIMEOUT;
    while host.peers()[usize::from(peer_id)].to_host < RING_CAPACITY {
        if Instant::now() > fill_deadline {
            return Err("the plugin's ring never filled".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let info = host.peers()[usize::from(peer_id)];
    say!(
        "peer {peer_id}: {:?}, pid {}, {} frames waiting in its ring to the host",
        info.state,
        info.pid,
        info.to_host
    );
    say!();
    print_stats("slots before the kill:", &host.stats());
    say!();

    say!("events (times since the kill):");
    let killed = Instant::now();
    if let Some(child) = plugin.0.as_mut() {
        child.kill()?;
    }
    say!("  {}  SIGKILL sent to pid {pid}", ms(killed.elapsed()));
    loop {
        let Some(event) = host.next_event(Some(TIMEOUT)) else {
            return Err(format!("no recovery within {TIMEOUT:?} of the kill").into());
        };
        say!("  {}  {}", ms(killed.elapsed()), describe(&event));
        match event {
            PeerEvent::Recovered { peer, .. } if peer == peer_id => break,
            PeerEvent::RecoveryFailed { .. } => return Err("recovery failed".into()),
            _ => {}
        }
    }
    if let Some(mut child) = plugin.0.take() {
        let status = child.wait()?;
        say!("  {}  reaped: {status}", ms(killed.elapsed()));
    }
    say!();
    print_stats("slots after recovery:", &host.stats());
    let info = host.peers()[usize::from(peer_id)];
    say!(
        "peer {peer_id}: {:?}, {} + {} frames in its rings",
        info.state,
        info.to_host,
        info.to_peer
    );
    say!();

    // A new plugin under the same id.
    let admitted = Instant::now();
    let (new_id, child) = spawn_self(&host, |_| [PLUGIN_FLAG, "echo"])?;
    let new_pid = child.id();
    let mut plugin = Reaper(Some(child));
    if new_id != peer_id {
        return Err(format!("the new plugin got id {new_id}, not {peer_id}").into());
    }
    say!("admitted a new plugin, pid {new_pid}, under the same id {new_id}");
    let payload: Vec<u8> = (0..FRAME_SIZE).map(|i| (i * 7) as u8).collect();
    let sent = Instant::now();
    host.send_timeout(
        new_id,
        FrameMeta {
            msg_id: 1,
            ..FrameMeta::default()
        },
        &payload,
        TIMEOUT,
    )?;
    let reply = host.recv_timeout(TIMEOUT)?;
    let round_trip = sent.elapsed();
    if reply.peer() != new_id || reply.meta().msg_id != 1 || reply.payload() != &payload[..] {
        return Err(format!("wrong reply {reply:?}").into());
    }
    drop(reply);
    say!(
        "round trip of {FRAME_SIZE} bytes: {} (including the plugin's start-up; {} since admission)",
        ms(round_trip).trim(),
        ms(admitted.elapsed()).trim()
    );
    while let Some(event) = host.next_event(Some(Duration::from_millis(100))) {
        say!("  event: {}", describe(&event));
    }

    drop(host); // goodbye: the echo plugin sees HostGone and exits
    if let Some(mut child) = plugin.0.take() {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("the echo plugin exited with {status}").into());
        }
    }
    say!("done in {}", ms(started.elapsed()).trim());
    Ok(())
}

/// The plugin that holds slots and streams until it is killed.
fn run_streamer() -> Result<()> {
    let peer = Peer::from_env()?;
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut loan = peer.loan(HELD_SIZE)?;
        loan.as_mut_slice().fill(0xAB);
        held.push(loan);
    }
    peer.send(
        FrameMeta {
            msg_id: READY,
            ..FrameMeta::default()
        },
        &(HELD as u64).to_le_bytes(),
    )?;
    for i in 0u64.. {
        let mut loan = peer.loan(FRAME_SIZE)?;
        loan.as_mut_slice().fill(i as u8);
        peer.send_loan(
            FrameMeta {
                msg_id: i,
                ..FrameMeta::default()
            },
            loan,
        )?;
    }
    drop(held);
    Ok(())
}

/// The plugin that sends every frame back, until the host leaves.
fn run_echo() -> Result<()> {
    let peer = Peer::from_env()?;
    while let Some(frame) = next_frame(&peer)? {
        peer.send(*frame.meta(), frame.payload())?;
    }
    Ok(())
}
