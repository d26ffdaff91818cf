//! The hot paths in a loop, for `cargo xtask instructions`, which runs this binary under
//! callgrind and divides the instructions counted inside [`measured`] by its iterations.
//!
//! On a shared VM a time moves with whatever else the host runs, and with where it places the
//! two vCPUs; an instruction count does not. So the count is how a change to the code of a hot
//! path is judged first (whether it does less), and the alternated time runs of the criterion
//! benches judge the rest (whether less is faster). Each figure has its baseline beside it,
//! counted the same way:
//!
//! - `round-trip SIZE N`: host and peer in this process, on one thread, a request of `SIZE`
//!   bytes and its echo (`try_send`, `try_recv`, `try_send`, `try_recv`), as
//!   `latency/in_process` times it;
//! - `channel-round-trip SIZE N`: the same four steps through two bounded crossbeam channels
//!   of `[u8; SIZE]` values (8 or 64), the baseline of the first, as `latency/in_process` has
//!   it;
//! - `ring-round-trip N`: the same four steps at 8 B through two of the hub's rings alone
//!   (`try_push`, `try_pop_into`), what the rings cost apart from everything the endpoints add,
//!   as `latency/in_process`'s `baseline_hub_rings` times it;
//! - `alloc CLASS N`: `alloc_in(CLASS)` then `free`, as `alloc/uncontended` times it (the
//!   freed slot kept, the next alloc taking it back);
//! - `one-way-slot CLASS N`: a peer's `alloc_in(CLASS)` and `mark_in_flight` to the host, the
//!   host's `accept` and `free`: a one-way slot frame's allocator work, through the free list
//!   both ways (a receiver that never allocates in the class keeps nothing);
//! - `queue N`: `pop` then `push` on a full crossbeam `ArrayQueue`, the baseline of `alloc`.
//!
//! Each warms up first (outside `measured`), then makes `N` iterations inside it. `cargo bench`
//! runs every bench target with `--bench` (after any filter of its own), and `cargo test
//! --all-targets` runs it with no argument at all: either way this one says what it is for, and
//! ends with success.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use hub_alloc::{HeapRegion, OwnerId, Slab, SlabLayout};

#[path = "in_process.rs"]
mod in_process;
use in_process::{ChannelPair, HubPair, RingPair};

/// Iterations before the measured ones: slots paged in, kept slots in place, caches warm.
const WARM_UP: u64 = 1000;

const USAGE: &str =
    "usage: hot_loop round-trip SIZE N | channel-round-trip 8|64 N | ring-round-trip N
       | alloc CLASS N | one-way-slot CLASS N | queue N
(run by `cargo xtask instructions`, under callgrind)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let number = |text: &str| text.parse::<u64>().ok();
    if args.is_empty() || args.contains(&"--bench") {
        eprintln!("hot_loop: nothing to time or test here; `cargo xtask instructions` runs it");
        return ExitCode::SUCCESS;
    }
    match args.as_slice() {
        ["round-trip", size, n] => match (number(size), number(n)) {
            (Some(size), Some(n)) => round_trips(size as usize, n),
            _ => usage(),
        },
        ["channel-round-trip", size, n] => match (*size, number(n)) {
            ("8", Some(n)) => channel_round_trips::<8>(n),
            ("64", Some(n)) => channel_round_trips::<64>(n),
            _ => usage(),
        },
        ["ring-round-trip", n] => match number(n) {
            Some(n) => ring_round_trips(n),
            None => usage(),
        },
        ["alloc", class, n] => match (number(class), number(n)) {
            (Some(class), Some(n)) => allocs(class as u16, n),
            _ => usage(),
        },
        ["one-way-slot", class, n] => match (number(class), number(n)) {
            (Some(class), Some(n)) => one_way_slots(class as u16, n),
            _ => usage(),
        },
        ["queue", n] => match number(n) {
            Some(n) => queue_pairs(n),
            None => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// `step`, `n` times: the only function whose instructions callgrind counts (its callees
/// included).
#[inline(never)]
fn measured(n: u64, step: &mut impl FnMut()) {
    for _ in 0..n {
        step();
    }
}

/// `step`, [`WARM_UP`] times and then `n` times inside [`measured`].
fn run(n: u64, mut step: impl FnMut()) -> ExitCode {
    for _ in 0..WARM_UP {
        step();
    }
    measured(n, &mut step);
    ExitCode::SUCCESS
}

fn round_trips(size: usize, n: u64) -> ExitCode {
    let mut pair = HubPair::new(size);
    run(n, || pair.round_trip())
}

fn channel_round_trips<const N: usize>(n: u64) -> ExitCode {
    let pair = ChannelPair::<N>::new();
    run(n, || pair.round_trip())
}

fn ring_round_trips(n: u64) -> ExitCode {
    let mut pair = RingPair::new();
    run(n, || {
        black_box(pair.round_trip());
    })
}

/// The host's allocator over a heap region laid out as the default hub's, if it has `class`.
fn hub_slab(class: u16) -> Option<Slab<Arc<HeapRegion>>> {
    let segment = hub_layout::SegmentLayout::new(32, 256).expect("the default segment");
    let layout = SlabLayout::for_hub(&segment);
    let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    // SAFETY: `region` was created just above and no other handle or thread reaches it, so
    // nobody else accesses the allocator state `init` writes.
    let slab = unsafe { Slab::init(region, layout, OwnerId::HOST) }.expect("init");
    if slab.slot_size(class).is_none() {
        eprintln!("hot_loop: no class {class}");
        return None;
    }
    Some(slab)
}

fn allocs(class: u16, n: u64) -> ExitCode {
    let Some(slab) = hub_slab(class) else {
        return ExitCode::from(2);
    };
    run(n, || {
        let handle = slab.alloc_in(class).expect("a slot");
        let _ = black_box(slab.free(black_box(handle)).expect("freed"));
    })
}

fn one_way_slots(class: u16, n: u64) -> ExitCode {
    let Some(host) = hub_slab(class) else {
        return ExitCode::from(2);
    };
    let peer = host.with_owner(OwnerId::peer(0)).expect("peer 0");
    run(n, || {
        let handle = peer.alloc_in(class).expect("a slot");
        peer.mark_in_flight(handle, OwnerId::HOST).expect("sent");
        host.accept(black_box(handle), OwnerId::peer(0))
            .expect("accepted");
        let _ = black_box(host.free(handle).expect("freed"));
    })
}

fn queue_pairs(n: u64) -> ExitCode {
    let queue = ArrayQueue::new(1024);
    for index in 0..1024_u32 {
        queue.push(index).expect("room for every index");
    }
    run(n, || {
        let index = queue.pop().expect("an index");
        queue.push(black_box(index)).expect("room for it again");
    })
}
