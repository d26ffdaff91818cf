//! Round-trip latency between two processes: the hub beside the floors it is measured against.
//!
//! One iteration is one round trip: the host (this process) sends a message of the size and waits
//! for the echo from a child process, which is this same bench binary started again with
//! `HUB_BENCH_CHILD` in its environment (checked first thing in `main`, before criterion sees
//! the arguments; the plumbing is `hub_benches`). Every figure, baselines included, is two
//! processes, but those of `latency/in_process` (below), which measure the code alone.
//!
//! - `latency/spin`: `hub` with `WaitMode::Spin` on both sides, beside `baseline_spin_floor`: a
//!   raw spin ping-pong on one `AtomicU64` in a shared memfd mapping (for sizes above 8 B the host
//!   also fills a buffer of the size in the mapping and the child copies it to a second buffer
//!   before answering, the work the hub's echo does).
//!   At 8 B also `baseline_ring_floor`: the same ping-pong with the lines a hub ring moves for
//!   a slot frame, a 64-byte descriptor written word by word and then a head word on its own
//!   line, each way; the receiver polls the head, then reads the descriptor (an inline frame,
//!   as here, publishes itself by its stamp instead, PROTOCOL.md §4, and moves only the
//!   descriptor's line). And `baseline_hub_rings`:
//!   that ping-pong through the hub's own ring code (`hub_transport::ring`, two rings in the
//!   mapping, `try_push` and `try_pop_into` with their checks), nothing above it: what the
//!   rings cost, apart from the endpoints, locks, frames and waits the hub adds.
//!   With hub-benches' `iceoryx2` feature also `baseline_iceoryx2`, at every size: the same round
//!   trip through iceoryx2's publish-subscribe (two services of byte slices, a loan filled in
//!   place, the echo a loan the ping is copied into), both sides polling (`iceoryx2_echo.rs`).
//! - `latency/block`: `hub` with `WaitMode::Block`, beside `baseline_futex` (two `AtomicU32`
//!   words in the same kind of mapping, `FUTEX_WAIT`/`FUTEX_WAKE`, the same fill and copy),
//!   `baseline_unix_socket` (a `UnixStream` pair: write the size, the child reads it and writes it
//!   back) and `baseline_pipe` (the same over two pipes).
//! - `latency/adaptive`: `hub` with `WaitMode::Adaptive`, beside the same spin floor.
//! - `latency/in_process`: what the code costs, apart from the cache lines that cross: host and
//!   peer in this process, on one thread, a round trip of `try_send`, `try_recv`, `try_send`,
//!   `try_recv` (8 B inline, 64 B through a slot), beside the same four steps through two
//!   `crossbeam_channel::bounded` channels; at 8 B also `baseline_hub_rings`, the same four
//!   steps through two of the hub's rings on the heap. The one group that does not move with
//!   where the VM puts its two vCPUs.
//!
//! The hub's round trip: the host sends a frame of the size and waits for its echo in one call
//! (`send_then_recv_from` for at most 16 bytes, which travel inline; else `loan`, fill,
//! `send_loan_then_recv_from`), the child echoes it and waits for the next frame in one call
//! (`loan`, copy, `send_loan_then_recv`; `send_then_recv` when inline). Both forms make the
//! send's wake and the wait's sleep one system call when the other side sleeps.
//!
//! Function ids follow the convention `cargo xtask bench-report latency` reads: `baseline...` is
//! a baseline, compared with every row of its group that has the same size.
//!
//! One child serves one figure and exits when it is done: the hub's child when the host says
//! goodbye (`HostGone`), the spin, futex and ring children on a quit value in the ping word, the
//! ring floor's head word or the ring, the socket and pipe children on end of file; the parent
//! waits for it (and kills it after 5 s). Each child also asks for `SIGKILL` when the bench dies
//! (`PR_SET_PDEATHSIG`), so none outlives it.
//!
//! ```sh
//! cargo bench -p hub-benches --bench latency
//! cargo xtask bench-report latency
//! ```
//!
//! With `--paired` (`cargo bench -p hub-benches --bench latency -- --paired`) the bench runs no
//! criterion figure: it measures the spin group's figures in rounds, each figure of a round for
//! 50 ms right after the other, sorts the rounds by placement and prints each size's ratios
//! per placement (see `paired_report`). Criterion's figures run seconds apart, and the VM may
//! move its vCPUs between a figure and its baseline; a round's figures share one placement.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use hub_benches::{
    PairedRow, Partner, SIZES, attach_peer, inherited_fds, paired_rows, per_iteration,
    run_child_if_asked, size_name, steady_floor,
};
use hub_layout::MsgDescHot;
use hub_transport::ring::{Consumer, Producer, RawRing};
use hub_transport::{Disconnect, FrameMeta, Host, HubConfig, RecvError, WaitMode, futex};
use memmap2::MmapRaw;

#[path = "in_process.rs"]
mod in_process;
use in_process::{ChannelPair, HubPair, RingPair};

#[cfg(feature = "iceoryx2")]
#[path = "iceoryx2_echo.rs"]
mod iceoryx2_echo;

/// The bench's name in the children's messages.
const BENCH: &str = "latency";

/// The shared mapping of the spin and futex baselines: the control words on their own cache
/// lines, then the host's buffer and the child's buffer of the largest size.
const PING: usize = 0; // AtomicU64 (spin) / AtomicU32 (futex): host -> child
const PONG: usize = 128; // AtomicU32 (futex): child -> host
/// The ring floor's words (see [`RingFloor`]): per direction a head word and a 64-byte
/// descriptor, each on a line of its own, as a hub ring lays them out.
const RING_HEAD: [usize; 2] = [512, 768];
const RING_DESC: [usize; 2] = [1024, 1280];
const DATA: usize = 4096;
const MAX_SIZE: usize = 16 << 20;
const MAPPING_LEN: usize = DATA + 2 * MAX_SIZE;
const _: () = assert!(
    MAX_SIZE >= SIZES[SIZES.len() - 1],
    "a buffer holds the largest size"
);

/// Written to the ping word to tell the child to exit.
const QUIT64: u64 = u64::MAX;
const QUIT32: u32 = u32::MAX;

fn main() -> ExitCode {
    if let Some(code) = run_child_if_asked(BENCH, child_main) {
        return code;
    }
    if std::env::args().any(|arg| arg == "--paired") {
        paired_report();
        return ExitCode::SUCCESS;
    }
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_spin(&mut criterion);
    bench_block(&mut criterion);
    bench_adaptive(&mut criterion);
    bench_in_process(&mut criterion);
    criterion.final_summary();
    ExitCode::SUCCESS
}

/// Rounds of `--paired`, per size.
const PAIRED_ROUNDS: usize = 12;

/// How long `--paired` times each figure of a round, after as long again of warm-up.
const PAIRED_BLOCK: Duration = Duration::from_millis(50);

/// The figures of `latency/spin` that `--paired` measures in each round: the spin floor first
/// (it tells the round's placement), the hub last.
#[derive(Debug, Clone, Copy)]
enum SpinFigure {
    SpinFloor,
    RingFloor,
    HubRings,
    Hub,
}

impl SpinFigure {
    fn name(self) -> &'static str {
        match self {
            SpinFigure::SpinFloor => "spin_floor",
            SpinFigure::RingFloor => "ring_floor",
            SpinFigure::HubRings => "hub_rings",
            SpinFigure::Hub => "hub",
        }
    }

    /// This figure's time per round trip of `size` bytes, in nanoseconds: a partner spawned for
    /// it alone, a warm-up, one block of about [`PAIRED_BLOCK`].
    fn per_round_trip(self, size: usize) -> f64 {
        match self {
            SpinFigure::SpinFloor => timed(SpinFloor::spawn(size), SpinFloor::run),
            SpinFigure::RingFloor => timed(RingFloor::spawn(), RingFloor::run),
            SpinFigure::HubRings => timed(HubRings::spawn(), HubRings::run),
            SpinFigure::Hub => timed(HubEcho::spawn(WaitMode::Spin, size), HubEcho::run),
        }
    }
}

/// `run`'s time per iteration on `pair` in nanoseconds, over a block of about
/// [`PAIRED_BLOCK`] after as long of warm-up.
fn timed<P>(mut pair: P, run: impl Fn(&mut P, u64) -> Duration) -> f64 {
    per_iteration(PAIRED_BLOCK, |iters| run(&mut pair, iters))
}

/// `cargo bench -p hub-benches --bench latency -- --paired`: the spin group's ratios, robust to
/// the VM's placement. Criterion times each figure for seconds, one after the other, and the
/// placement of the two vCPUs (one physical core or two) may change between a figure and its
/// baseline, making their ratio meaningless. Here each round measures a size's figures one
/// right after the other in blocks of [`PAIRED_BLOCK`], between two blocks of the spin floor.
/// A round whose two floors differ by [`hub_benches::PLACEMENT_GAP`] or more saw the placement
/// change: it is only counted (`mixed`). The others are split into placements by their floors
/// ([`hub_benches::paired_rows`]), and each row gives, per placement, the median of the rounds' figures and
/// the median and range of the rounds' own ratios. Prints a Markdown table; takes 20 to 40 s.
fn paired_report() {
    println!(
        "| size | placement | rounds | mixed | baseline | baseline (ns) | hub (ns) | ratio | ratios |"
    );
    println!("|---|---|---:|---:|---|---:|---:|---:|---|");
    for size in SIZES {
        let mut figures = vec![SpinFigure::SpinFloor];
        if size == 8 {
            figures.extend([SpinFigure::RingFloor, SpinFigure::HubRings]);
        }
        figures.push(SpinFigure::Hub);
        let hub = figures.len() - 1;
        let mut mixed = 0;
        let mut rounds: Vec<Vec<f64>> = Vec::new();
        for _ in 0..PAIRED_ROUNDS {
            let mut round: Vec<f64> = figures.iter().map(|f| f.per_round_trip(size)).collect();
            let floor_after = SpinFigure::SpinFloor.per_round_trip(size);
            match steady_floor(round[0], floor_after) {
                Some(floor) => {
                    round[0] = floor;
                    rounds.push(round);
                }
                None => mixed += 1,
            }
        }
        let floors: Vec<f64> = rounds.iter().map(|round| round[0]).collect();
        // Placement by placement (fast first), each baseline's row in the figures' order.
        let mut rows: Vec<(SpinFigure, PairedRow)> = figures[..hub]
            .iter()
            .enumerate()
            .flat_map(|(b, &baseline)| {
                paired_rows(&floors, &rounds, hub, b)
                    .into_iter()
                    .map(move |row| (baseline, row))
            })
            .collect();
        // `paired_rows` gives fast, slow, one; a stable sort keeps each baseline's order.
        rows.sort_by_key(|(_, row)| row.placement as u8);
        for (baseline, row) in rows {
            println!(
                "| {} | {} | {} | {mixed} | {} | {} |",
                size_name(size),
                row.placement.name(),
                row.rounds,
                baseline.name(),
                row.cells(),
            );
        }
        if rounds.is_empty() {
            println!("| {} | mixed | 0 | {mixed} | | | | | |", size_name(size));
        }
    }
}

fn bench_spin(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency/spin");
    for size in SIZES {
        let id = size_name(size);
        bench_hub(&mut group, WaitMode::Spin, size, &id);
        let mut floor = SpinFloor::spawn(size);
        group.bench_function(BenchmarkId::new("baseline_spin_floor", &id), |b| {
            b.iter_custom(|iters| floor.run(iters))
        });
        drop(floor);
        if size == 8 {
            let mut ring = RingFloor::spawn();
            group.bench_function(BenchmarkId::new("baseline_ring_floor", &id), |b| {
                b.iter_custom(|iters| ring.run(iters))
            });
            drop(ring);
            let mut rings = HubRings::spawn();
            group.bench_function(BenchmarkId::new("baseline_hub_rings", &id), |b| {
                b.iter_custom(|iters| rings.run(iters))
            });
        }
        #[cfg(feature = "iceoryx2")]
        {
            // Started only when criterion runs the figure: its services of up to 16 MiB live in
            // /dev/shm, which a filtered run should not need.
            let mut iceoryx2 = None;
            group.bench_function(BenchmarkId::new("baseline_iceoryx2", &id), |b| {
                let echo = iceoryx2.get_or_insert_with(|| {
                    iceoryx2_echo::Iceoryx2Echo::spawn(size, |prefix| {
                        spawn_partner("iceoryx2", size, &[], |command| {
                            command.env(iceoryx2_echo::SERVICE_ENV, prefix);
                        })
                    })
                });
                b.iter_custom(|iters| echo.run(iters))
            });
        }
    }
    group.finish();
}

fn bench_block(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency/block");
    for size in SIZES {
        let id = size_name(size);
        bench_hub(&mut group, WaitMode::Block, size, &id);
        let mut pair = FutexPair::spawn(size);
        group.bench_function(BenchmarkId::new("baseline_futex", &id), |b| {
            b.iter_custom(|iters| pair.run(iters))
        });
        drop(pair);
        let mut socket = StreamEcho::socket(size);
        group.bench_function(BenchmarkId::new("baseline_unix_socket", &id), |b| {
            b.iter_custom(|iters| socket.run(iters))
        });
        drop(socket);
        let mut pipe = StreamEcho::pipe(size);
        group.bench_function(BenchmarkId::new("baseline_pipe", &id), |b| {
            b.iter_custom(|iters| pipe.run(iters))
        });
    }
    group.finish();
}

fn bench_adaptive(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency/adaptive");
    for size in SIZES {
        let id = size_name(size);
        bench_hub(&mut group, WaitMode::Adaptive, size, &id);
        let mut floor = SpinFloor::spawn(size);
        group.bench_function(BenchmarkId::new("baseline_spin_floor", &id), |b| {
            b.iter_custom(|iters| floor.run(iters))
        });
    }
    group.finish();
}

/// The sizes of `latency/in_process`: one inline, one through a slot.
const IN_PROCESS_SIZES: [usize; 2] = [8, 64];

/// What the code of a round trip costs with every line in this core's cache: host and peer in
/// this process, on this thread, each iteration `try_send`, `try_recv`, `try_send` (the echo,
/// copied out of the frame), `try_recv`. Beside it, the same four steps through two
/// `crossbeam_channel::bounded` channels of `[u8; N]` values. No cache line crosses between
/// cores here, so the figure does not move with where the VM puts its two vCPUs, and the
/// difference to `latency/spin` is what the crossings cost.
fn bench_in_process(c: &mut Criterion) {
    let mut group = c.benchmark_group("latency/in_process");
    for size in IN_PROCESS_SIZES {
        let id = size_name(size);
        let mut pair = HubPair::new(size);
        group.bench_function(BenchmarkId::new("hub", &id), |b| {
            b.iter(|| pair.round_trip())
        });
        match size {
            8 => bench_channel_pair::<8>(&mut group, &id),
            _ => bench_channel_pair::<64>(&mut group, &id),
        }
        if size == 8 {
            let mut rings = RingPair::new();
            group.bench_function(BenchmarkId::new("baseline_hub_rings", &id), |b| {
                b.iter(|| rings.round_trip())
            });
        }
    }
    group.finish();
}

/// `latency/in_process`'s baseline: a request and its echo through two bounded channels of
/// `[u8; N]` values, on one thread.
fn bench_channel_pair<const N: usize>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
) {
    let pair = ChannelPair::<N>::new();
    group.bench_function(BenchmarkId::new("baseline_crossbeam_channel", id), |b| {
        b.iter(|| pair.round_trip())
    });
}

fn bench_hub(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    mode: WaitMode,
    size: usize,
    id: &str,
) {
    let mut hub = HubEcho::spawn(mode, size);
    group.bench_function(BenchmarkId::new("hub", id), |b| {
        b.iter_custom(|iters| hub.run(iters))
    });
}

/// The role name of a wait mode in `HUB_BENCH_CHILD`.
fn hub_role(mode: WaitMode) -> &'static str {
    match mode {
        WaitMode::Spin => "hub-spin",
        WaitMode::Block => "hub-block",
        _ => "hub-adaptive",
    }
}

/// Starts this binary as the echo child `role`, inheriting `fds` (see
/// `Partner::spawn_with_fds`).
fn spawn_partner(
    role: &str,
    size: usize,
    fds: &[&OwnedFd],
    configure: impl FnOnce(&mut Command),
) -> Partner {
    Partner::spawn_with_fds(BENCH, role, size, fds, configure).expect("spawn the echo child")
}

/// The hub: a host with one peer, the child.
struct HubEcho {
    host: Option<Host>,
    size: usize,
    sent: u64,
    // Dropped after `host` (see `Drop`): the child exits when the host says goodbye.
    _child: Partner,
}

impl HubEcho {
    fn spawn(mode: WaitMode, size: usize) -> Self {
        let mut host = Host::create(&HubConfig::new().max_peers(1)).expect("create a hub");
        host.set_wait_mode(mode);
        let ticket = host.add_peer().expect("a peer entry");
        let child = spawn_partner(hub_role(mode), size, &[], |command| {
            ticket.apply(command);
        });
        drop(ticket);
        Self {
            host: Some(host),
            size,
            sent: 0,
            _child: child,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let host = self.host.as_ref().expect("the host");
        let small = [0x5a_u8; 16];
        let started = Instant::now();
        for _ in 0..iters {
            self.sent += 1;
            let meta = FrameMeta {
                msg_id: self.sent,
                ..FrameMeta::default()
            };
            let reply = if self.size <= small.len() {
                host.send_then_recv_from(0, meta, &small[..self.size])
                    .expect("send, then recv")
            } else {
                let mut loan = host.loan(self.size).expect("loan");
                loan.as_mut_slice().fill(self.sent as u8);
                host.send_loan_then_recv_from(0, meta, loan)
                    .expect("send_loan, then recv")
            };
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

/// A shared memfd mapping of `MAPPING_LEN` bytes, touched only through raw pointers: the
/// control words as atomics, the buffers by whichever side the protocol hands them to.
struct Shared {
    map: MmapRaw,
}

impl Shared {
    /// A new memfd of `MAPPING_LEN` bytes, mapped.
    fn create() -> (OwnedFd, Self) {
        let fd = rustix::fs::memfd_create("hub-bench-latency", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        rustix::fs::ftruncate(&fd, MAPPING_LEN as u64).expect("ftruncate");
        let shared = Self::map(&fd);
        (fd, shared)
    }

    /// The memfd `fd`, mapped shared.
    fn map(fd: &OwnedFd) -> Self {
        let map = MmapRaw::map_raw(fd).expect("mmap the memfd");
        assert!(map.len() >= MAPPING_LEN);
        Self { map }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= MAPPING_LEN && offset.is_multiple_of(8));
        // SAFETY: in bounds and aligned (the mapping is page-aligned), mapped as long as `self`,
        // and both processes access these bytes only as this atomic.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= MAPPING_LEN && offset.is_multiple_of(4));
        // SAFETY: as in `word64`.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The host's buffer (`DATA`) filled with `byte`, `size` bytes.
    fn fill_host_buffer(&self, size: usize, byte: u8) {
        assert!(size <= MAX_SIZE);
        // SAFETY: in bounds; the buffer is the host's to write between the child's answer
        // (Acquire) and the next ping (Release), and nobody holds a reference to it.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(DATA), byte, size) }
    }

    /// The child's echo: the host's buffer copied to the child's.
    fn copy_to_child_buffer(&self, size: usize) {
        assert!(size <= MAX_SIZE);
        // SAFETY: in bounds, the two buffers do not overlap; between the ping (Acquire) and the
        // answer (Release) the host leaves both alone, and nobody holds a reference to them.
        unsafe {
            let base = self.map.as_mut_ptr();
            std::ptr::copy_nonoverlapping(base.add(DATA), base.add(DATA + MAX_SIZE), size);
        }
    }
}

/// The spin floor: the host writes an odd sequence number, the child answers with the next even
/// one; both spin on the same `AtomicU64`.
struct SpinFloor {
    map: MappedPartner,
    size: usize,
    seq: u64,
}

impl SpinFloor {
    fn spawn(size: usize) -> Self {
        Self {
            map: MappedPartner::spawn("spin", size),
            size,
            seq: 0,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..iters {
            if self.size > 8 {
                self.map.fill_host_buffer(self.size, self.seq as u8);
            }
            let word = self.map.word64(PING);
            word.store(self.seq + 1, Ordering::Release);
            while word.load(Ordering::Acquire) != self.seq + 2 {
                std::hint::spin_loop();
            }
            self.seq += 2;
        }
        started.elapsed()
    }
}

impl Drop for SpinFloor {
    fn drop(&mut self) {
        self.map.word64(PING).store(QUIT64, Ordering::Release);
    }
}

/// A child process sharing a fresh mapping with this one: the raw baselines' partner. Its owner's
/// drop tells the child to quit; this, dropped after, waits for it (`Partner`'s drop).
struct MappedPartner {
    map: Shared,
    _fd: OwnedFd,
    _child: Partner,
}

impl MappedPartner {
    fn spawn(role: &str, size: usize) -> Self {
        let (fd, map) = Shared::create();
        let child = spawn_partner(role, size, &[&fd], |_| {});
        Self {
            map,
            _fd: fd,
            _child: child,
        }
    }
}

impl std::ops::Deref for MappedPartner {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.map
    }
}

fn spin_child(map: Shared, size: usize) {
    let mut seen = 0;
    loop {
        let value = loop {
            let value = map.word64(PING).load(Ordering::Acquire);
            if value != seen {
                break value;
            }
            std::hint::spin_loop();
        };
        if value == QUIT64 {
            return;
        }
        if size > 8 {
            map.copy_to_child_buffer(size);
        }
        seen = value + 1;
        map.word64(PING).store(seen, Ordering::Release);
    }
}

/// The ring floor: per message, the sender writes a descriptor of 8 words (each the sequence
/// number) and then the head (the sequence number, Release), on two lines; the receiver polls
/// the head (Acquire), then reads the descriptor's words. The host sends on direction 0, the
/// child answers on direction 1. What a hub ring must move, with no code around it.
struct RingFloor {
    map: MappedPartner,
    seq: u64,
}

impl RingFloor {
    fn spawn() -> Self {
        Self {
            map: MappedPartner::spawn("ring", 8),
            seq: 0,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..iters {
            self.seq += 1;
            ring_send(&self.map, 0, self.seq);
            std::hint::black_box(ring_receive(&self.map, 1, self.seq));
        }
        started.elapsed()
    }
}

impl Drop for RingFloor {
    fn drop(&mut self) {
        ring_send(&self.map, 0, QUIT64);
    }
}

/// Publish `value` on direction `way`: the descriptor's words, then the head.
fn ring_send(map: &Shared, way: usize, value: u64) {
    for word in 0..8 {
        map.word64(RING_DESC[way] + 8 * word)
            .store(value, Ordering::Relaxed);
    }
    map.word64(RING_HEAD[way]).store(value, Ordering::Release);
}

/// Wait until direction `way`'s head is `value` (or the quit value), then read its descriptor:
/// the sum of its words.
fn ring_receive(map: &Shared, way: usize, value: u64) -> u64 {
    let head = map.word64(RING_HEAD[way]);
    loop {
        let seen = head.load(Ordering::Acquire);
        if seen == value || seen == QUIT64 {
            break;
        }
        std::hint::spin_loop();
    }
    (0..8)
        .map(|word| {
            map.word64(RING_DESC[way] + 8 * word)
                .load(Ordering::Relaxed)
        })
        .fold(0, u64::wrapping_add)
}

fn ring_child(map: Shared) {
    for seq in 1.. {
        ring_receive(&map, 0, seq);
        if map.word64(RING_HEAD[0]).load(Ordering::Acquire) == QUIT64 {
            return;
        }
        ring_send(&map, 1, seq);
    }
}

/// The hub's rings alone: the ring floor's ping-pong through two `hub_transport::ring` rings
/// in the shared mapping (one each way, at `HUB_RINGS[way]`), each side polling its consumer's
/// `try_pop_into` a `pause` apart and answering with its producer's `try_push`: the ring code
/// and its checks (R3), with no endpoint, lock, frame or waiting machinery around them.
struct HubRings {
    /// Ends of rings in `_map`'s mapping: declared first, so dropped before it.
    rings: (Producer, Consumer),
    _map: MappedPartner,
    seq: u64,
}

/// Where the two rings of [`HubRings`] lie in the shared mapping (a zeroed header is an empty
/// ring).
const HUB_RINGS: [usize; 2] = [DATA, DATA + (64 << 10)];
/// How many descriptors each ring of [`HubRings`] holds: the hub's default, so the rings are the
/// size the hub's own are.
const HUB_RING_CAPACITY: u32 = hub_layout::DEFAULT_HUB_RING_CAPACITY;
const _: () = assert!(
    HUB_RINGS[0] + RING_BYTES <= HUB_RINGS[1] && HUB_RINGS[1] + RING_BYTES <= MAPPING_LEN,
    "the two rings lie apart, inside the mapping"
);
/// A ring's header and descriptors.
const RING_BYTES: usize =
    size_of::<hub_layout::DescRingHeader>() + HUB_RING_CAPACITY as usize * size_of::<MsgDescHot>();

impl HubRings {
    fn spawn() -> Self {
        let map = MappedPartner::spawn("hub-rings", 8);
        // SAFETY: the ends are kept beside `map` in `Self` and dropped before it (field order);
        // this is the host side's one call on this mapping.
        let rings = unsafe { map.rings(0, 1) }.expect("the rings");
        Self {
            rings,
            _map: map,
            seq: 0,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let (producer, consumer) = &mut self.rings;
        let started = Instant::now();
        for _ in 0..iters {
            self.seq += 1;
            push_seq(producer, self.seq).expect("room");
            let answer = pop_seq(consumer).expect("the answer");
            assert_eq!(answer, self.seq);
        }
        started.elapsed()
    }
}

impl Drop for HubRings {
    fn drop(&mut self) {
        // The child exits on it; `_map`'s partner, dropped next, waits for it.
        let _ = push_seq(&mut self.rings.0, QUIT64);
    }
}

impl Shared {
    /// The producer of ring `out` and the consumer of ring `into` of [`HUB_RINGS`].
    ///
    /// # Safety
    ///
    /// The ends point into this mapping without borrowing it: they must be dropped before it is.
    /// Each side (host, child) calls this once per mapping, with the ways the other way round, so
    /// each ring has one producer and one consumer.
    unsafe fn rings(&self, out: usize, into: usize) -> Result<(Producer, Consumer), String> {
        let view = |way: usize| {
            let header = self.map.as_mut_ptr().wrapping_add(HUB_RINGS[way]);
            let header = std::ptr::NonNull::new(header.cast()).expect("mapped");
            // SAFETY: the header and its descriptors lie inside the mapping (`RING_BYTES`), which
            // outlives the ends (the caller's promise) and is 64-byte aligned at these offsets;
            // zeroed, they are an empty ring; no Rust reference to them exists.
            unsafe { RawRing::new(header, HUB_RING_CAPACITY) }.map_err(|e| e.to_string())
        };
        let (out, into) = (view(out)?, view(into)?);
        // SAFETY: this process is the only producer of `out` and the only consumer of `into`
        // (the caller's promise).
        unsafe {
            Ok((
                out.producer().map_err(|e| e.to_string())?,
                into.consumer().map_err(|e| e.to_string())?,
            ))
        }
    }
}

/// Push a descriptor carrying `seq` as its message id.
fn push_seq(producer: &mut Producer, seq: u64) -> Result<(), String> {
    let mut desc = MsgDescHot::empty();
    desc.msg_id = seq;
    desc.payload_len = 8;
    desc.inline_payload[..8].copy_from_slice(&seq.to_le_bytes());
    producer.try_push(&desc).map_err(|e| format!("{e:?}"))
}

/// Poll `consumer` a `pause` apart until it pops a descriptor; its message id.
fn pop_seq(consumer: &mut Consumer) -> Result<u64, String> {
    let mut desc = MsgDescHot::empty();
    loop {
        if consumer
            .try_pop_into(&mut desc)
            .map_err(|e| e.to_string())?
        {
            return Ok(desc.msg_id);
        }
        std::hint::spin_loop();
    }
}

fn hub_rings_child(map: Shared) -> Result<(), String> {
    // SAFETY: the ends are locals declared after `map`, so dropped before it; this is the
    // child's one call on this mapping, with the host's ways reversed.
    let (mut producer, mut consumer) = unsafe { map.rings(1, 0) }?;
    loop {
        let seq = pop_seq(&mut consumer)?;
        if seq == QUIT64 {
            return Ok(());
        }
        push_seq(&mut producer, seq)?;
    }
}

/// The futex ping-pong: the host sets `PING` to a new number and wakes it, the child sets `PONG`
/// to the same number and wakes it; each sleeps in `FUTEX_WAIT` until its word changes.
struct FutexPair {
    map: MappedPartner,
    size: usize,
    seq: u32,
}

impl FutexPair {
    fn spawn(size: usize) -> Self {
        Self {
            map: MappedPartner::spawn("futex", size),
            size,
            seq: 0,
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..iters {
            if self.size > 8 {
                self.map.fill_host_buffer(self.size, self.seq as u8);
            }
            // Wraps below QUIT32.
            let next = (self.seq + 1) % QUIT32;
            let ping = self.map.word32(PING);
            ping.store(next, Ordering::Release);
            futex::wake(ping, 1);
            wait_for_value(self.map.word32(PONG), self.seq, next);
            self.seq = next;
        }
        started.elapsed()
    }
}

impl Drop for FutexPair {
    fn drop(&mut self) {
        let ping = self.map.word32(PING);
        ping.store(QUIT32, Ordering::Release);
        futex::wake(ping, 1);
    }
}

/// Sleeps on `word` while it holds `old`; returns its new value (which must be `want` if given).
fn wait_for_value(word: &AtomicU32, old: u32, want: u32) -> u32 {
    loop {
        let value = word.load(Ordering::Acquire);
        if value != old {
            debug_assert!(
                value == want || want == QUIT32,
                "futex word {value}, want {want}"
            );
            return value;
        }
        futex::wait(word, old, None).expect("FUTEX_WAIT");
    }
}

fn futex_child(map: Shared, size: usize) {
    let mut seen = 0;
    loop {
        let value = wait_for_value(map.word32(PING), seen, QUIT32);
        if value == QUIT32 {
            return;
        }
        if size > 8 {
            map.copy_to_child_buffer(size);
        }
        let pong = map.word32(PONG);
        pong.store(value, Ordering::Release);
        futex::wake(pong, 1);
        seen = value;
    }
}

/// A byte-stream echo: a Unix socket pair, or two pipes. The host writes `size` bytes and reads
/// them back; the child reads them and writes them back. The child exits on end of file.
struct StreamEcho {
    to_child: Option<std::fs::File>,
    from_child: std::fs::File,
    out: Vec<u8>,
    back: Vec<u8>,
    _child: Option<Partner>,
}

impl StreamEcho {
    fn socket(size: usize) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let theirs = OwnedFd::from(theirs);
        let child = spawn_partner("socket", size, &[&theirs], |_| {});
        drop(theirs);
        let ours = std::fs::File::from(OwnedFd::from(ours));
        Self::new(ours.try_clone().expect("dup"), ours, size, child)
    }

    fn pipe(size: usize) -> Self {
        let (child_reads, host_writes) = std::io::pipe().expect("pipe");
        let (host_reads, child_writes) = std::io::pipe().expect("pipe");
        let (child_reads, child_writes) = (OwnedFd::from(child_reads), OwnedFd::from(child_writes));
        let child = spawn_partner("pipe", size, &[&child_reads, &child_writes], |_| {});
        drop((child_reads, child_writes));
        Self::new(
            std::fs::File::from(OwnedFd::from(host_writes)),
            std::fs::File::from(OwnedFd::from(host_reads)),
            size,
            child,
        )
    }

    fn new(
        to_child: std::fs::File,
        from_child: std::fs::File,
        size: usize,
        child: Partner,
    ) -> Self {
        Self {
            to_child: Some(to_child),
            from_child,
            out: vec![0x5a; size],
            back: vec![0; size],
            _child: Some(child),
        }
    }

    fn run(&mut self, iters: u64) -> Duration {
        let to_child = self.to_child.as_mut().expect("the host's end");
        let started = Instant::now();
        for _ in 0..iters {
            to_child.write_all(&self.out).expect("write");
            self.from_child.read_exact(&mut self.back).expect("read");
        }
        started.elapsed()
    }
}

impl Drop for StreamEcho {
    fn drop(&mut self) {
        // End of file for the child (a socket's other end stays open through `from_child`, so
        // shut the write side down explicitly).
        if let Some(to_child) = self.to_child.take() {
            let _ = rustix::net::shutdown(&to_child, rustix::net::Shutdown::Write);
        }
        drop(self._child.take());
    }
}

fn stream_child(
    mut input: std::fs::File,
    mut output: std::fs::File,
    size: usize,
) -> std::io::Result<()> {
    let mut buffer = vec![0; size];
    loop {
        match input.read_exact(&mut buffer) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        }
        output.write_all(&buffer)?;
    }
}

/// The child of role `role` (from `HUB_BENCH_CHILD`), for messages of `size` bytes.
fn child_main(role: &str, size: usize) -> Result<(), String> {
    match role {
        "hub-spin" => hub_child(WaitMode::Spin, size),
        "hub-block" => hub_child(WaitMode::Block, size),
        "hub-adaptive" => hub_child(WaitMode::Adaptive, size),
        "spin" | "futex" | "ring" | "hub-rings" => {
            let [fd] = <[OwnedFd; 1]>::try_from(inherited_fds()?)
                .map_err(|_| "expected one descriptor".to_owned())?;
            let map = Shared::map(&fd);
            match role {
                "spin" => spin_child(map, size),
                "futex" => futex_child(map, size),
                "hub-rings" => hub_rings_child(map)?,
                _ => ring_child(map),
            }
            Ok(())
        }
        "socket" => {
            let [fd] = <[OwnedFd; 1]>::try_from(inherited_fds()?)
                .map_err(|_| "expected one descriptor".to_owned())?;
            let input = std::fs::File::from(fd);
            let output = input.try_clone().map_err(|e| e.to_string())?;
            stream_child(input, output, size).map_err(|e| e.to_string())
        }
        "pipe" => {
            let [input, output] = <[OwnedFd; 2]>::try_from(inherited_fds()?)
                .map_err(|_| "expected two descriptors".to_owned())?;
            stream_child(input.into(), output.into(), size).map_err(|e| e.to_string())
        }
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => iceoryx2_echo::child(size),
        other => Err(format!("unknown role {other:?}")),
    }
}

fn hub_child(mode: WaitMode, size: usize) -> Result<(), String> {
    let Some(mut peer) = attach_peer()? else {
        return Ok(());
    };
    peer.set_wait_mode(mode);
    let mut frame = match peer.recv() {
        Ok(frame) => frame,
        Err(RecvError::Disconnected(Disconnect::HostGone)) => return Ok(()),
        Err(error) => return Err(error.to_string()),
    };
    // The host's goodbye ends the loop; anything else is an error.
    let host_gone =
        |disconnect: Option<&Disconnect>| matches!(disconnect, Some(Disconnect::HostGone));
    loop {
        let meta = *frame.meta();
        if frame.len() != size {
            return Err(format!("a frame of {} bytes, expected {size}", frame.len()));
        }
        // The echo and the wait for the next frame in one call.
        let next = if size <= 16 {
            let mut echo = [0; 16];
            echo[..size].copy_from_slice(frame.payload());
            drop(frame);
            peer.send_then_recv(meta, &echo[..size])
                .map_err(|e| (host_gone(e.disconnect()), e.to_string()))
        } else {
            // A loan that waits for a slot (the largest class has few) may find the host gone.
            match peer.loan(size) {
                Ok(mut loan) => {
                    loan.as_mut_slice().copy_from_slice(frame.payload());
                    drop(frame);
                    peer.send_loan_then_recv(meta, loan)
                        .map_err(|e| (host_gone(e.disconnect()), e.to_string()))
                }
                Err(e) => Err((host_gone(e.disconnect()), e.to_string())),
            }
        };
        frame = match next {
            Ok(frame) => frame,
            Err((true, _)) => return Ok(()),
            Err((false, error)) => return Err(error),
        };
    }
}
