//! A read-only look at a named hub: its peers and the use of its slots.
//!
//! ```sh
//! cargo run --release --example inspect -- --demo          # a hub of its own, with traffic
//! cargo run --release --example inspect -- /dev/shm/my-hub  # a hub some host created by path
//! cargo run --release --example inspect -- --json /dev/shm/my-hub
//! ```
//!
//! A thin command line over [`hub_transport::Snapshot`]: `Snapshot::read` opens the segment
//! file read-only, maps it readable only, validates it the way a peer does on attach (R2), then
//! copies each word it reports out of the live mapping once (R3): it never writes, takes no
//! peer entry and is invisible to the host. What it prints is a snapshot of words that keep
//! moving, so the counts of a busy hub may not add up exactly. `--json` is the snapshot
//! through serde (hub-transport's `serde` feature).

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use hub_examples::{Example, print_quietly, size_text};
use hub_transport::{FrameMeta, Host, HubConfig, Peer, PeerState, Snapshot, SnapshotError};

const USAGE: &str = "usage: inspect [--json] PATH
       inspect [--json] --demo

Attaches read-only to the named hub at PATH (a host created it with HubConfig::path) and
prints its peers (state, pid, heartbeat age, ring depths), the use of each size class's slots
(total, free, kept, allocated, in flight, corrupt, extents), any damage, and whether the hub
is stale (its creator is gone). Exits non-zero when PATH is no valid hub.

  --json   one JSON object instead of tables
  --demo   create a named hub in a temporary path, attach two in-process peers, leave some
           frames in flight and some slots allocated, and inspect that
  --help   this text";
const EXAMPLE: Example = Example {
    name: "inspect",
    usage: USAGE,
};

enum Target {
    Demo,
    Path(PathBuf),
}

struct Options {
    json: bool,
    target: Target,
}

fn main() -> ExitCode {
    EXAMPLE.run(
        parse(std::env::args_os().skip(1)),
        |options| match options.target {
            Target::Demo => run_demo(options.json),
            Target::Path(path) => {
                let snapshot = Snapshot::read(&path).map_err(|error| match error {
                    // A mapping error names the path itself.
                    SnapshotError::Mapping(_) => error.to_string(),
                    error => format!("{}: {error}", path.display()),
                })?;
                print_quietly(&describe(&snapshot, options.json)?)
            }
        },
    )
}

fn parse(args: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<Options>, String> {
    let mut json = false;
    let mut demo = false;
    let mut path = None;
    for arg in args {
        match arg.to_str() {
            Some("--help" | "-h") => return Ok(None),
            Some("--json") => json = true,
            Some("--demo") => demo = true,
            Some(flag) if flag.starts_with("--") => return Err(format!("unknown option {flag:?}")),
            _ if path.is_none() => path = Some(PathBuf::from(arg)),
            _ => return Err("one PATH only".into()),
        }
    }
    let target = match (demo, path) {
        (true, None) => Target::Demo,
        (false, Some(path)) => Target::Path(path),
        (true, Some(_)) => return Err("--demo takes no PATH".into()),
        (false, None) => return Err("a PATH or --demo is needed".into()),
    };
    Ok(Some(Options { json, target }))
}

fn age_text(age: Option<u64>) -> String {
    match age {
        None => "-".into(),
        Some(ns) if ns < 1_000_000_000 => format!("{} ms", ns / 1_000_000),
        Some(ns) => format!("{:.1} s", ns as f64 / 1e9),
    }
}

/// The snapshot as text (or JSON), for one write to standard output.
fn describe(snapshot: &Snapshot, json: bool) -> hub_examples::Result<String> {
    if json {
        return Ok(serde_json::to_string(snapshot)? + "\n");
    }
    let mut out = String::new();
    if let Some(path) = &snapshot.path {
        let _ = writeln!(out, "hub {}", path.display());
    }
    if snapshot.stale == Some(true) {
        let _ = writeln!(
            out,
            "  STALE: its creator is gone (nobody holds the hub's lock); \
             Host::create with take_over_stale(true) replaces it"
        );
    }
    let _ = writeln!(
        out,
        "  version {}, {} peer entries, rings of {} descriptors, {} of {} mapped{}",
        snapshot.version,
        snapshot.max_peers,
        snapshot.ring_capacity,
        size_text(snapshot.current_size),
        size_text(snapshot.mapped_len),
        snapshot
            .resident
            .map(|r| format!(", {} resident", size_text(r)))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  host pid {}{}",
        snapshot.host_pid,
        if snapshot.host_left {
            ", which has left the hub"
        } else {
            ""
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:>4}  {:<8}  {:>8}  {:>5}  {:>9}  {:>7}  {:>7}",
        "peer", "state", "pid", "epoch", "heartbeat", "to host", "to peer"
    );
    let mut empty = 0;
    for p in &snapshot.peers {
        if p.state == PeerState::Empty && p.to_host == 0 && p.to_peer == 0 {
            empty += 1;
            continue;
        }
        let _ = writeln!(
            out,
            "  {:>4}  {:<8}  {:>8}  {:>5}  {:>9}  {:>7}  {:>7}",
            p.id,
            p.state.to_string(),
            if p.pid == 0 {
                "-".into()
            } else {
                p.pid.to_string()
            },
            p.epoch,
            age_text(p.heartbeat_age_ns),
            p.to_host,
            p.to_peer
        );
    }
    if empty > 0 {
        let _ = writeln!(out, "  ({empty} empty entries not shown)");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:>5}  {:>9}  {:>7}  {:>6}  {:>6}  {:>6}  {:>9}  {:>9}  {:>7}",
        "class",
        "slot size",
        "extents",
        "total",
        "free",
        "kept",
        "allocated",
        "in flight",
        "corrupt"
    );
    for c in &snapshot.classes {
        let _ = writeln!(
            out,
            "  {:>5}  {:>9}  {:>7}  {:>6}  {:>6}  {:>6}  {:>9}  {:>9}  {:>7}",
            c.class,
            size_text(u64::from(c.slot_size)),
            c.extents,
            c.total,
            c.free,
            c.kept,
            c.allocated,
            c.in_flight,
            c.corrupt
        );
    }
    if !snapshot.damage.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "  damage:");
        for damage in &snapshot.damage {
            let _ = writeln!(out, "    {damage}");
        }
    }
    Ok(out)
}

/// Build a named hub with some traffic in flight, inspect it, and clean up.
fn run_demo(json: bool) -> hub_examples::Result<()> {
    let path = std::env::temp_dir().join(format!("hub-inspect-demo-{}", std::process::id()));
    let host = Host::create(&HubConfig::new().max_peers(4).path(path.clone()))?;
    // Two peers in this process (threads stand in for plugins), and an entry reserved for a
    // third that never attaches.
    let first = Peer::attach(&host.add_peer()?)?;
    let second = Peer::attach(&host.add_peer()?)?;
    let _reserved = host.add_peer()?;
    let meta = |msg_id| FrameMeta {
        msg_id,
        ..FrameMeta::default()
    };
    // In flight: three frames of 4 KiB from the first peer, two of 100 KiB to the second, not
    // received yet (but one). Allocated: a 1 MiB loan the second peer is still writing.
    for i in 0..3 {
        first.send(meta(i), &[1u8; 4096])?;
    }
    for i in 0..2 {
        host.send(second.id(), meta(i), &vec![2u8; 100 << 10])?;
    }
    let mut loan = second.loan(1 << 20)?;
    loan.as_mut_slice()[..8].copy_from_slice(b"unsent!!");
    // Kept: the host takes a 4 KiB loan itself, receives one of the first peer's frames and
    // drops it, and keeps the freed slot for its own next loan (a side keeps no more slots
    // than it takes: the loan it then drops goes back on the list).
    let own = host.loan(4096)?;
    drop(host.recv()?);
    drop(own);
    // Let the heartbeat threads beat once.
    std::thread::sleep(std::time::Duration::from_millis(50));

    let mut text = String::new();
    if !json {
        text.push_str(
            "demo: a named hub with 2 in-process peers, 1 reserved entry, 4 frames in flight, \
             1 slot kept by the host and 1 allocated\n\n",
        );
    }
    let snapshot = Snapshot::read(&path)?;
    text.push_str(&describe(&snapshot, json)?);
    // The snapshot's counts, from the slot metas, against the host's own.
    let agree = host.stats().iter().zip(&snapshot.classes).all(|(s, c)| {
        (s.extents, s.total, s.free, s.kept, s.allocated, s.in_flight)
            == (c.extents, c.total, c.free, c.kept, c.allocated, c.in_flight)
    });
    if !json {
        let _ = writeln!(
            text,
            "\n  the slot counts {} Host::stats() of the same moment",
            if agree { "match" } else { "differ from" }
        );
    }

    drop(loan);
    drop(first);
    drop(second);
    drop(host); // unlinks the file
    let _ = std::fs::remove_file(&path);
    print_quietly(&text)
}
