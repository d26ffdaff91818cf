//! Large frames through loaned slots, with no copies: a plugin process loans a 16 MiB slot,
//! fills it in place and sends it; the host reads it in place and checksums it.
//!
//! ```sh
//! cargo run --release --example large_payload
//! cargo run --release --example large_payload -- --size 4194304 --iters 200
//! ```
//!
//! The host prints the transport's throughput (bytes delivered per second, counting the
//! plugin's fill and the host's read of every byte) beside a plain `memcpy` of the same size
//! measured in the host process in the same run, and the ratio of the two. The last line is
//! meant for scripts:
//!
//! ```text
//! size=16777216 iters=100 hub_gbps=… memcpy_gbps=… ratio=…
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hub_examples::{
    Example, Result, checksum, expected_checksum, flag_value, next_frame, say, spawn_self,
};
use hub_transport::{FrameMeta, Host, HubConfig, Peer, RecvTimeoutError};

/// The flag that makes the program the plugin side.
const PEER_FLAG: &str = "--peer";
/// The largest slot of the default layout.
const MAX_SIZE: usize = 16 << 20;
/// Frames before the measured ones, to page in the slots.
const WARMUP: usize = 4;
/// How long the host waits for any one frame before giving up.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: large_payload [--size BYTES] [--iters N]

Streams N frames of BYTES bytes (default 16 MiB, at most 16 MiB) from a plugin process to the
host through loaned slots: the plugin fills each slot in place, the host checksums it in place.
Prints the throughput beside a plain memcpy of the same size, and their ratio.

  --size BYTES   frame size, 17 to 16777216 (default 16777216)
  --iters N      measured frames, at least 1 (default 100)
  --help         this text";
const EXAMPLE: Example = Example {
    name: "large_payload",
    usage: USAGE,
};

struct Options {
    size: usize,
    iters: usize,
    peer: bool,
}

fn main() -> ExitCode {
    EXAMPLE.run(parse(std::env::args().skip(1)), |options| {
        if options.peer {
            run_peer(&options)
        } else {
            run_host(&options)
        }
    })
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        size: MAX_SIZE,
        iters: 100,
        peer: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => options.size = flag_value(&mut args, "--size")?,
            "--iters" => options.iters = flag_value(&mut args, "--iters")?,
            "--help" | "-h" => return Ok(None),
            PEER_FLAG => options.peer = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    if !(17..=MAX_SIZE).contains(&options.size) {
        return Err(format!(
            "--size must be 17 to {MAX_SIZE} bytes (payloads of 16 bytes or less travel inline, \
             and the largest slot holds {MAX_SIZE}), not {}",
            options.size
        ));
    }
    Ok(Some(options))
}

/// The byte the plugin fills frame `i` with.
fn fill_byte(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

fn gbps(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e9
}

fn run_host(options: &Options) -> Result<()> {
    let host = Host::create(&HubConfig::new().max_peers(1))?;
    let (size, iters) = (options.size.to_string(), options.iters.to_string());
    let (_, mut child) = spawn_self(&host, |_| [PEER_FLAG, "--size", &size, "--iters", &iters])?;

    let total = WARMUP + options.iters;
    let mut started = Instant::now();
    let mut in_slots = 0usize;
    for i in 0..total {
        if i == WARMUP {
            started = Instant::now();
        }
        let frame = match host.recv_timeout(FRAME_TIMEOUT) {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                return Err(format!("no frame {i} within {FRAME_TIMEOUT:?}").into());
            }
            Err(error) => return Err(error.into()),
        };
        if frame.meta().msg_id != i as u64 || frame.len() != options.size {
            return Err(format!("frame {i}: unexpected {frame:?}").into());
        }
        if !frame.is_inline() {
            in_slots += 1;
        }
        let sum = checksum(frame.payload());
        let expected = expected_checksum(options.size, fill_byte(i));
        if sum != expected {
            return Err(format!("frame {i}: checksum {sum:#x}, expected {expected:#x}").into());
        }
    }
    let hub_elapsed = started.elapsed();
    drop(host); // goodbye: the plugin's recv returns HostGone and it exits
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the plugin exited with {status}").into());
    }

    // The baseline: the same number of bytes copied by memcpy in this process, between two
    // buffers of the frame size that were touched before the clock starts.
    let source: Vec<u8> = (0..options.size).map(|i| i as u8).collect();
    let mut target = vec![0u8; options.size];
    for _ in 0..WARMUP {
        target.copy_from_slice(&source);
    }
    let copy_started = Instant::now();
    for _ in 0..options.iters {
        target.copy_from_slice(std::hint::black_box(&source));
        std::hint::black_box(&mut target);
    }
    let copy_elapsed = copy_started.elapsed();
    if checksum(&target) != checksum(&source) {
        return Err("the memcpy baseline copied the wrong bytes".into());
    }

    let bytes = options.size * options.iters;
    let hub = gbps(bytes, hub_elapsed);
    let memcpy = gbps(bytes, copy_elapsed);
    let ratio = hub / memcpy;
    say!(
        "{} frames of {} bytes ({:.1} MiB each), plugin process -> host, every checksum right",
        options.iters,
        options.size,
        options.size as f64 / (1 << 20) as f64
    );
    say!("  frames in slots: {in_slots} of {total} (zero copy: filled and read in place)");
    say!(
        "  hub, loan + fill + send -> recv + checksum   {hub:>7.2} GB/s   ({:.2} ms per frame)",
        hub_elapsed.as_secs_f64() * 1e3 / options.iters as f64
    );
    say!(
        "  memcpy of the same size, same process      {memcpy:>7.2} GB/s   ({:.2} ms per copy)",
        copy_elapsed.as_secs_f64() * 1e3 / options.iters as f64
    );
    say!("  ratio hub / memcpy                         {ratio:>7.2}");
    say!(
        "size={} iters={} hub_gbps={hub:.3} memcpy_gbps={memcpy:.3} ratio={ratio:.3}",
        options.size,
        options.iters
    );
    Ok(())
}

fn run_peer(options: &Options) -> Result<()> {
    let peer = Peer::from_env()?;
    for i in 0..WARMUP + options.iters {
        let mut loan = peer.loan(options.size)?;
        loan.as_mut_slice().fill(fill_byte(i));
        peer.send_loan(
            FrameMeta {
                msg_id: i as u64,
                ..FrameMeta::default()
            },
            loan,
        )?;
    }
    // Wait for the host's goodbye, so every frame is read before the plugin leaves.
    while next_frame(&peer)?.is_some() {}
    Ok(())
}
