//! hub-alloc's slab beside its baseline, crossbeam-queue's `ArrayQueue<u32>` used as a free list
//! of slot indices.
//!
//! One iteration is one slot taken and given back:
//!
//! - `alloc/uncontended`: `slab.alloc_in(class)` then `slab.free(handle)`, once per size class
//!   of the hub's real layout (`SegmentLayout::new(32, 256)`), beside `pop` then `push` on a full
//!   `ArrayQueue<u32>` of 1,024 indices (class 0's slot count);
//! - `alloc/contended 2 threads`: two threads at once, each its own owner, both in class 0,
//!   beside two threads sharing one `ArrayQueue`. The threads are spawned before each sample and
//!   start their clocks together after a barrier; the figure is the longer of the two times, per
//!   iteration (so per alloc+free pair of each thread, while the other thread does the same).
//!
//! Function ids follow the convention `cargo xtask bench-report alloc` reads: `baseline ...` is
//! the baseline of its group, every other benchmark of the group is compared with it.
//!
//! ```sh
//! cargo bench -p hub-benches --bench alloc
//! cargo xtask bench-report alloc
//! ```

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use hub_alloc::{HeapRegion, OwnerId, Slab, SlabLayout};

const OURS: &str = "hub-alloc";
const BASELINE: &str = "baseline ArrayQueue";

/// The contended figures' class: the small-frame class, the busiest in a hub.
const CONTENDED_CLASS: u16 = 0;

/// The hub's allocator over a heap region laid out as a default segment (32 peers, rings of
/// 256), owned by the host.
fn hub_slab() -> Slab<Arc<HeapRegion>> {
    let segment = hub_layout::SegmentLayout::new(32, 256).expect("the default segment");
    let layout = SlabLayout::for_hub(&segment);
    // The whole reservation (~1.7 GiB) is allocated zeroed up front, and (its alignment being
    // 4096) zeroed by a memset that touches every page: a second or so, once per run.
    let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    // SAFETY: the region is fresh and nobody else uses it.
    unsafe { Slab::init(region, layout, OwnerId::HOST) }.expect("init")
}

/// A full queue of `capacity` indices: a free list where `pop` allocates and `push` frees.
fn free_queue(capacity: u32) -> ArrayQueue<u32> {
    let queue = ArrayQueue::new(capacity as usize);
    for index in 0..capacity {
        queue.push(index).expect("room for every index");
    }
    queue
}

fn slot_size_name(bytes: u32) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

fn class_name(slab: &Slab<Arc<HeapRegion>>, class: u16) -> String {
    let size = slab.slot_size(class).expect("a class of the layout");
    format!("class {class} ({})", slot_size_name(size))
}

/// Both groups, over one slab: its region is costly to make.
fn alloc(c: &mut Criterion) {
    let slab = hub_slab();
    uncontended(c, &slab);
    contended(c, &slab);
}

fn uncontended(c: &mut Criterion, slab: &Slab<Arc<HeapRegion>>) {
    let classes = slab.layout().class_count() as u16;
    let slots = slab.layout().class(0).expect("class 0").slots_per_extent;
    let queue = free_queue(slots);

    let mut group = c.benchmark_group("alloc/uncontended");
    for class in 0..classes {
        group.bench_function(BenchmarkId::new(OURS, class_name(slab, class)), |b| {
            b.iter(|| {
                let handle = slab.alloc_in(black_box(class)).expect("alloc");
                black_box(slab.free(black_box(handle)).expect("free"))
            });
        });
    }
    group.bench_function(BASELINE, |b| {
        b.iter(|| {
            let index = queue.pop().expect("a free index");
            black_box(queue.push(black_box(index)))
        });
    });
    group.finish();
}

/// Run `work(iters)` on two threads at once, spawned before the clocks start, and return the
/// longer of their two times.
fn two_threads<F>(iters: u64, work: [F; 2]) -> Duration
where
    F: Fn(u64) + Send + Sync,
{
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads = work.map(|work| {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                let start = Instant::now();
                work(iters);
                start.elapsed()
            })
        });
        threads
            .map(|thread| thread.join().expect("bench thread"))
            .into_iter()
            .max()
            .unwrap_or_default()
    })
}

fn contended(c: &mut Criterion, host: &Slab<Arc<HeapRegion>>) {
    let peers = [0, 1].map(|peer| host.with_owner(OwnerId::peer(peer)).expect("a peer"));
    let slots = host
        .layout()
        .class(usize::from(CONTENDED_CLASS))
        .expect("the contended class")
        .slots_per_extent;
    let queue = free_queue(slots);

    let mut group = c.benchmark_group("alloc/contended 2 threads");
    group.bench_function(
        BenchmarkId::new(OURS, class_name(host, CONTENDED_CLASS)),
        |b| {
            b.iter_custom(|iters| {
                two_threads(
                    iters,
                    [&peers[0], &peers[1]].map(|slab| {
                        move |iters| {
                            for _ in 0..iters {
                                let handle =
                                    slab.alloc_in(black_box(CONTENDED_CLASS)).expect("alloc");
                                let _ = black_box(slab.free(black_box(handle)).expect("free"));
                            }
                        }
                    }),
                )
            });
        },
    );
    group.bench_function(BASELINE, |b| {
        b.iter_custom(|iters| {
            let work = |iters| {
                for _ in 0..iters {
                    let index = queue.pop().expect("a free index");
                    black_box(queue.push(black_box(index))).expect("room");
                }
            };
            two_threads(iters, [work, work])
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = alloc
}
criterion_main!(benches);
