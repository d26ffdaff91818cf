//! One-way throughput into the host: peers in child processes send frames as fast as they can,
//! the host (this process) receives and drops them. Beside each hub figure, an in-process
//! `crossbeam_channel::bounded(256)` between threads, with the same iteration semantics.
//!
//! One iteration is one frame received by the host. Per sample the host tells each peer how many
//! frames to send (a control frame whose `msg_id` is the count); the peer answers with that many
//! frames of the size (inline `send` up to 16 B; else `loan` and `send_loan`, zero copy: the peer
//! writes only a sequence number into the first 8 bytes of the slot), and the host `recv`s and
//! drops each one. The clock runs from before the control frames go out until the last frame is
//! in, so each sample includes one wake-up of the peers. Both sides use the default
//! `WaitMode::Adaptive`.
//!
//! - `throughput/one_way`: one peer, frames of every size of `hub_benches::SIZES` (8 B to 16 MiB)
//!   (`Throughput::Elements`: frames per second; no payload byte is copied, so bytes per second
//!   would only be the size times that), beside `baseline_crossbeam_channel`: a sender thread pushes
//!   `[u8; 8]` values (8 B) or `Vec<u8>` buffers of the size through the channel, the receiving
//!   thread drops each (a buffer goes back to the sender through a second channel, a pool, so
//!   neither side allocates or touches the payload after warm-up, as with the hub's slots).
//! - `throughput/fan_in`: 1, 4, 16 and 32 peers, each sending 8 B frames
//!   (`Throughput::Elements`), beside the channel with the same number of sender threads.
//!
//! Each child exits when the host says goodbye (`HostGone`), asks for `SIGKILL` should the bench
//! die (`PR_SET_PDEATHSIG`), and is killed if it has not exited 5 s after the host is dropped.
//!
//! With `--paired` (`cargo bench -p hub-benches --bench throughput -- --paired`) the bench runs no
//! criterion group: it measures the goals' figures in rounds instead, the hub right after the
//! channel, one-way ones pinned to one CPU or two, and prints their ratios within each placement
//! of the VM's vCPUs (see `paired_report`).
//!
//! ```sh
//! cargo bench -p hub-benches --bench throughput
//! cargo xtask bench-report throughput/one_way
//! cargo xtask bench-report throughput/fan_in
//! cargo bench -p hub-benches --bench throughput -- --paired
//! ```

use std::process::ExitCode;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, measurement::WallTime};
use crossbeam_channel::{Receiver, Sender};
use hub_benches::{
    Partner, SIZES, allowed_cpus, attach_peer, paired_rows, per_iteration, pin_this_thread,
    placement_probe, run_child_if_asked, size_name, steady_floor,
};
use hub_transport::{Disconnect, FrameMeta, Host, HubConfig, RecvError, SendCopyError};

/// The bench's name in the children's messages.
const BENCH: &str = "throughput";
/// The role of a sending peer child in `HUB_BENCH_CHILD`.
const HUB_ROLE: &str = "hub";
const FAN_IN: [usize; 4] = [1, 4, 16, 32];
/// Frames travel inline up to this size.
const INLINE: usize = 16;
/// The baseline channel's capacity.
const CHANNEL_CAPACITY: usize = 256;

fn main() -> ExitCode {
    // Every child is a sending peer, whatever its role says.
    if let Some(code) = run_child_if_asked(BENCH, |_role, size| child_main(size)) {
        return code;
    }
    if std::env::args().any(|arg| arg == "--paired") {
        return paired_report();
    }
    let mut criterion = Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    bench_one_way(&mut criterion);
    bench_fan_in(&mut criterion);
    criterion.final_summary();
    ExitCode::SUCCESS
}

fn bench_one_way(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput/one_way");
    // Frames, not bytes: the hub's path is zero copy, so bytes per second would count bytes
    // handed over (terabytes per second at 1 MiB), not bytes moved.
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let id = size_name(size);
        bench_pair(&mut group, 1, size, &id);
    }
    group.finish();
}

fn bench_fan_in(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput/fan_in");
    group.throughput(Throughput::Elements(1));
    for senders in FAN_IN {
        let id = format!("{senders} senders");
        bench_pair(&mut group, senders, 8, &id);
    }
    group.finish();
}

/// The hub with `senders` peers, then the channel with as many sender threads.
fn bench_pair(group: &mut BenchmarkGroup<'_, WallTime>, senders: usize, size: usize, id: &str) {
    let mut hub = HubFanIn::spawn(senders, size);
    group.bench_function(BenchmarkId::new("hub", id), |b| {
        b.iter_custom(|iters| hub.run(iters))
    });
    drop(hub);
    let mut channel = ChannelFanIn::spawn(senders, size, None);
    group.bench_function(BenchmarkId::new("baseline_crossbeam_channel", id), |b| {
        b.iter_custom(|iters| channel.run(iters))
    });
}

/// Rounds of `--paired`, per figure.
const PAIRED_ROUNDS: usize = 12;

/// Frames each side of a `--paired` figure sends once, untimed, before its first round.
const PAIRED_WARM_UP: u64 = 100_000;

/// How long `--paired` times the hub and the channel in each round, each after as long again
/// of warm-up.
const PAIRED_BLOCK: Duration = Duration::from_millis(50);

/// Where `--paired` runs the two sides of a figure, on the first and the last of the CPUs
/// this process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The receiver on the first CPU, the sender on the last: every frame's lines cross
    /// between them.
    TwoCpus,
    /// Both on the first CPU, taking turns: no line crosses, and the scheduler's switches cost
    /// instead.
    OneCpu,
    /// Wherever the scheduler puts them (the fan-in figures: more senders than CPUs).
    Free,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::TwoCpus => "two CPUs",
            Layout::OneCpu => "one CPU",
            Layout::Free => "any CPU",
        }
    }

    /// The CPUs of the receiver and of the senders, if pinned, given two distinct ones.
    fn cpus(self, [first, last]: [usize; 2]) -> (Option<usize>, Option<usize>) {
        match self {
            Layout::TwoCpus => (Some(first), Some(last)),
            Layout::OneCpu => (Some(first), Some(first)),
            Layout::Free => (None, None),
        }
    }
}

/// The figures of `--paired`: (senders, frame size, layout), the goals' figures first.
const PAIRED_FIGURES: [(usize, usize, Layout); 6] = [
    (1, 8, Layout::TwoCpus),
    (1, 8, Layout::OneCpu),
    (4, 8, Layout::Free),
    (32, 8, Layout::Free),
    (1, 64, Layout::TwoCpus),
    (1, 4 << 10, Layout::TwoCpus),
];

/// `cargo bench -p hub-benches --bench throughput -- --paired`: the hub's time per frame beside
/// the channel's, in the same placement of the VM's vCPUs and the same layout of the two
/// sides. Criterion times the hub and then the channel for seconds each, and between them the
/// VM may move its vCPUs (one physical core or two) and the scheduler its processes (the
/// receiver woken on the sender's CPU, or not), so that their ratio swings by 4x from run to
/// run. Here both stay spawned, one-way figures pinned to one CPU or two ([`Layout`]), and
/// each round times the channel for [`PAIRED_BLOCK`] and the hub right after, between two
/// placement probes ([`hub_benches::placement_probe`]). A round whose probes differ by
/// [`hub_benches::PLACEMENT_GAP`] or more is only counted (`mixed`); the others are split
/// into placements by their probes ([`hub_benches::paired_rows`]), and each row gives, per
/// placement, the medians of both times and the median and range of the rounds' own ratios.
/// Prints a Markdown table; takes about a minute. Fails (the exit code) when this process may
/// use fewer than two CPUs.
fn paired_report() -> ExitCode {
    let allowed = allowed_cpus().expect("the CPUs this process may use");
    let (Some(&first), Some(&last)) = (allowed.first(), allowed.last()) else {
        unreachable!("a running thread has a CPU");
    };
    if first == last {
        eprintln!("throughput --paired: needs two CPUs, may use only CPU {first}");
        return ExitCode::FAILURE;
    }
    let probe_cpus = [first, last];
    println!(
        "| figure | layout | placement | rounds | mixed | channel (ns) | hub (ns) | ratio | ratios |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---|");
    for (senders, size, layout) in PAIRED_FIGURES {
        let name = if senders > 1 {
            format!("fan_in {senders} senders")
        } else {
            format!("one_way {}", size_name(size))
        };
        let (receiver_cpu, sender_cpu) = layout.cpus(probe_cpus);
        let mut hub = HubFanIn::spawn(senders, size);
        if let Some(cpu) = sender_cpu {
            for child in &hub.children {
                child.pin_to(cpu).expect("pin a sending peer");
            }
        }
        let mut channel = ChannelFanIn::spawn(senders, size, sender_cpu);
        let receiver_cpus = receiver_cpu.map_or_else(|| allowed.clone(), |cpu| vec![cpu]);
        pin_this_thread(&receiver_cpus).expect("pin the receiver");
        // A first run of each, untimed: the children attach and both sides warm up before
        // the first probe.
        channel.run(PAIRED_WARM_UP);
        hub.run(PAIRED_WARM_UP);
        let mut mixed = 0;
        let mut floors = Vec::new();
        let mut rounds = Vec::new();
        for _ in 0..PAIRED_ROUNDS {
            let before = placement_probe(probe_cpus).expect("pin the probe's threads");
            let round = vec![
                per_iteration(PAIRED_BLOCK, |iters| channel.run(iters)),
                per_iteration(PAIRED_BLOCK, |iters| hub.run(iters)),
            ];
            let after = placement_probe(probe_cpus).expect("pin the probe's threads");
            match steady_floor(before, after) {
                Some(floor) => {
                    floors.push(floor);
                    rounds.push(round);
                }
                None => mixed += 1,
            }
        }
        for row in paired_rows(&floors, &rounds, 1, 0) {
            println!(
                "| {name} | {} | {} | {} | {mixed} | {} |",
                layout.name(),
                row.placement.name(),
                row.rounds,
                row.cells(),
            );
        }
        if rounds.is_empty() {
            println!(
                "| {name} | {} | mixed | 0 | {mixed} | | | | |",
                layout.name()
            );
        }
    }
    pin_this_thread(&allowed).expect("unpin the receiver");
    ExitCode::SUCCESS
}

/// How many of `iters` frames sender `index` of `senders` sends.
fn share(iters: u64, senders: usize, index: usize) -> u64 {
    let n = senders as u64;
    iters / n + u64::from((index as u64) < iters % n)
}

/// The hub: a host with `senders` peers, each a child process.
struct HubFanIn {
    host: Option<Host>,
    size: usize,
    // Dropped after `host` (see `Drop`): the children exit when the host says goodbye.
    children: Vec<Partner>,
}

impl HubFanIn {
    fn spawn(senders: usize, size: usize) -> Self {
        let host = Host::create(
            &HubConfig::new().max_peers(u16::try_from(senders).expect("at most 32 peers")),
        )
        .expect("create a hub");
        let children = (0..senders)
            .map(|_| {
                let ticket = host.add_peer().expect("a peer entry");
                let child = Partner::spawn(BENCH, HUB_ROLE, size, |command| {
                    ticket.apply(command);
                })
                .expect("spawn a peer child");
                drop(ticket);
                child
            })
            .collect();
        Self {
            host: Some(host),
            size,
            children,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let host = self.host.as_ref().expect("the host");
        let senders = self.children.len();
        let started = Instant::now();
        for index in 0..senders {
            let count = share(iters, senders, index);
            if count > 0 {
                let meta = FrameMeta {
                    msg_id: count,
                    ..FrameMeta::default()
                };
                let peer = u16::try_from(index).expect("a peer index");
                host.send(peer, meta, &[]).expect("send the count");
            }
        }
        for _ in 0..iters {
            let frame = host.recv().expect("recv");
            debug_assert_eq!(frame.len(), self.size);
            drop(frame);
        }
        started.elapsed()
    }
}

impl Drop for HubFanIn {
    fn drop(&mut self) {
        // Goodbye first: each child's recv returns HostGone and it exits; then `children` wait.
        drop(self.host.take());
        self.children.clear();
    }
}

/// The baseline: `senders` threads, each pushing frames into one bounded channel; this thread
/// receives and drops them. Buffers above 8 B go back to the senders through a pool channel.
struct ChannelFanIn {
    orders: Vec<Sender<u64>>,
    frames: Receiver<Frame>,
    pool: Sender<Vec<u8>>,
    threads: Vec<JoinHandle<()>>,
}

/// A baseline frame: 8 B by value, or a buffer of the size.
enum Frame {
    Small([u8; 8]),
    Buffer(Vec<u8>),
}

impl ChannelFanIn {
    fn spawn(senders: usize, size: usize, sender_cpu: Option<usize>) -> Self {
        let (frame_tx, frames) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let (pool, pool_rx) = crossbeam_channel::unbounded::<Vec<u8>>();
        let mut orders = Vec::new();
        let threads = (0..senders)
            .map(|_| {
                let (order_tx, order_rx) = crossbeam_channel::bounded::<u64>(1);
                orders.push(order_tx);
                let frame_tx = frame_tx.clone();
                let pool_rx = pool_rx.clone();
                std::thread::spawn(move || {
                    if let Some(cpu) = sender_cpu {
                        pin_this_thread(&[cpu]).expect("pin a sender thread");
                    }
                    let mut seq = 0_u64;
                    for count in order_rx {
                        for _ in 0..count {
                            seq += 1;
                            let frame = if size <= 8 {
                                Frame::Small(seq.to_le_bytes())
                            } else {
                                let mut buffer =
                                    pool_rx.try_recv().unwrap_or_else(|_| vec![0; size]);
                                buffer[..8].copy_from_slice(&seq.to_le_bytes());
                                Frame::Buffer(buffer)
                            };
                            if frame_tx.send(frame).is_err() {
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            orders,
            frames,
            pool,
            threads,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let senders = self.orders.len();
        let started = Instant::now();
        for (index, order) in self.orders.iter().enumerate() {
            let count = share(iters, senders, index);
            if count > 0 {
                order.send(count).expect("order a sender");
            }
        }
        for _ in 0..iters {
            match self.frames.recv().expect("recv") {
                Frame::Small(bytes) => drop(std::hint::black_box(bytes)),
                // "Drop" the buffer: back to the pool, as the hub's slot goes back to its class.
                Frame::Buffer(buffer) => {
                    let _ = self.pool.send(buffer);
                }
            }
        }
        started.elapsed()
    }
}

impl Drop for ChannelFanIn {
    fn drop(&mut self) {
        self.orders.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A sending peer child, for frames of `size` bytes: sends as many frames as each order from
/// the host says, until the host says goodbye.
fn child_main(size: usize) -> Result<(), String> {
    let Some(peer) = attach_peer()? else {
        return Ok(());
    };
    let small = [0x5a_u8; INLINE];
    let mut seq = 0_u64;
    loop {
        let count = match peer.recv() {
            Ok(order) => order.meta().msg_id,
            Err(RecvError::Disconnected(Disconnect::HostGone)) => return Ok(()),
            Err(error) => return Err(error.to_string()),
        };
        for _ in 0..count {
            seq += 1;
            let meta = FrameMeta {
                msg_id: seq,
                ..FrameMeta::default()
            };
            if size <= INLINE {
                peer.send(meta, &small[..size])
            } else {
                let mut loan = peer.loan(size).map_err(|e| e.to_string())?;
                loan.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
                peer.send_loan(meta, loan).map_err(SendCopyError::from)
            }
            .map_err(|e| e.to_string())?;
        }
    }
}
