//! Round trips between two processes through a hub: the README's first command.
//!
//! ```sh
//! cargo run --release --example ping_pong
//! cargo run --release --example ping_pong -- --size 65536 --iters 5000 --wait block
//! ```
//!
//! The program creates a hub, spawns itself as a peer (handing it a ticket through its
//! environment), and measures `--iters` round trips of `--size` bytes: the host sends a frame,
//! the peer sends it back, each with `send_loan_then_recv` (the send and the wait for the
//! answer in one call: one system call a side when both sleep). Payloads of up to 16 bytes travel inline in the descriptor; larger
//! ones in a slot, written in place (zero copy) and read in place. The last line is meant for
//! scripts:
//!
//! ```text
//! size=8 wait=adaptive iters=20000 min_ns=… median_ns=… p99_ns=… max_ns=…
//! ```

use std::process::ExitCode;
use std::time::Instant;

use hub_examples::{Example, Result, flag_value, next_frame, say, spawn_self};
use hub_transport::{
    Disconnect, FrameMeta, Host, HubConfig, Peer, RecvError, SendThenRecvError, WaitMode,
};

const EXAMPLE: Example = Example {
    name: "ping_pong",
    usage: "usage: ping_pong [--size BYTES] [--iters N] [--wait spin|block|adaptive]\n\
            \n\
            Spawns itself as a plugin and bounces a frame of BYTES bytes (default 8) between\n\
            the two processes N times (default 20000), then prints the round trip's min,\n\
            median, p99 and max; its last line is meant for scripts.\n\
            \n\
            \x20 --size BYTES  payload size: inline up to 16 B, else a loaned slot (at most 16 MiB)\n\
            \x20 --iters N     measured round trips (after 1000 to warm up)\n\
            \x20 --wait M      the wait mode of both sides (default adaptive)\n\
            \x20 --help        this text",
};
/// The flag that makes the program the peer side.
const PEER_FLAG: &str = "--peer";
/// Round trips before the measured ones, to warm caches and page in the slots.
const WARMUP: usize = 1000;

struct Options {
    size: usize,
    iters: usize,
    wait: WaitMode,
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

/// The options, or `None` for `--help`.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        size: 8,
        iters: 20_000,
        wait: WaitMode::Adaptive,
        peer: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" => options.size = flag_value(&mut args, "--size")?,
            "--iters" => options.iters = flag_value(&mut args, "--iters")?,
            "--wait" => {
                options.wait = flag_value::<String>(&mut args, "--wait")?
                    .parse()
                    .map_err(|e| format!("--wait: {e}"))?
            }
            PEER_FLAG => options.peer = true,
            "--help" | "-h" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    Ok(Some(options))
}

fn run_host(options: &Options) -> Result<()> {
    let mut host = Host::create(&HubConfig::new().max_peers(1))?;
    host.set_wait_mode(options.wait);
    let size = options.size.to_string();
    let (peer_id, mut child) = spawn_self(&host, |_| {
        [PEER_FLAG, "--size", &size, "--wait", options.wait.name()]
    })?;

    let mut samples = Vec::with_capacity(options.iters);
    for i in 0..WARMUP + options.iters {
        let started = Instant::now();
        let mut loan = host.loan(options.size)?;
        let stamp = (i as u64).to_le_bytes();
        let payload = loan.as_mut_slice();
        let n = payload.len().min(stamp.len());
        payload[..n].copy_from_slice(&stamp[..n]);
        let meta = FrameMeta {
            msg_id: i as u64,
            ..FrameMeta::default()
        };
        // The frame and the wait for its echo in one call: when the peer sleeps, its wake and
        // the host's sleep are one system call.
        let reply = host.send_loan_then_recv_from(peer_id, meta, loan)?;
        let elapsed = started.elapsed();
        if reply.meta().msg_id != i as u64 || reply.len() != options.size {
            return Err(format!("round trip {i}: wrong reply {reply:?}").into());
        }
        drop(reply);
        if i >= WARMUP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    drop(host); // goodbye: the peer's recv returns HostGone and it exits
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("the peer exited with {status}").into());
    }

    samples.sort_unstable();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    say!(
        "{} round trips of {} bytes between two processes ({} wait)",
        options.iters,
        options.size,
        options.wait.name()
    );
    say!(
        "  min {:>9} ns   median {:>9} ns   p99 {:>9} ns   max {:>9} ns",
        samples[0],
        pick(0.5),
        pick(0.99),
        samples[samples.len() - 1]
    );
    say!(
        "size={} wait={} iters={} min_ns={} median_ns={} p99_ns={} max_ns={}",
        options.size,
        options.wait.name(),
        options.iters,
        samples[0],
        pick(0.5),
        pick(0.99),
        samples[samples.len() - 1]
    );
    Ok(())
}

fn run_peer(options: &Options) -> Result<()> {
    let mut peer = Peer::from_env()?;
    peer.set_wait_mode(options.wait);
    let Some(mut frame) = next_frame(&peer)? else {
        return Ok(());
    };
    loop {
        let mut loan = peer.loan(frame.len())?;
        loan.as_mut_slice().copy_from_slice(frame.payload());
        let meta = *frame.meta();
        drop(frame);
        // The echo and the wait for the next frame in one call.
        frame = match peer.send_loan_then_recv(meta, loan) {
            Ok(next) => next,
            // The host said goodbye after its last round trip.
            Err(SendThenRecvError::Recv(RecvError::Disconnected(Disconnect::HostGone))) => {
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
    }
}
