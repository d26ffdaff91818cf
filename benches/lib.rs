//! What the two-process benches (`latency`, `throughput`) share: running the bench binary again
//! as a child with a role, and the size table.
//!
//! A bench that needs a partner process starts its own executable again with `HUB_BENCH_CHILD`
//! (the role) and `HUB_BENCH_SIZE` (the message size, in bytes) in its environment
//! ([`Partner::spawn`]). First thing in `main`, before criterion sees the arguments, the bench
//! calls [`run_child_if_asked`], which in such a child asks for `SIGKILL` on the parent's death,
//! reads the size and runs the role instead of criterion. Dropping the [`Partner`] waits for the
//! child to exit, and kills it if it has not within [`EXIT_TIMEOUT`]. A child that needs
//! descriptors of the parent's (a socket, a pipe, a memfd) gets them with
//! [`Partner::spawn_with_fds`] and takes them with [`inherited_fds`].
//!
//! Both benches' `--paired` reports also share their method: rounds that time each figure right
//! after its baseline ([`per_iteration`]), a round's placement of the VM's vCPUs told by a floor
//! or a [`placement_probe`] ([`Placement`], [`steady_floor`]), ratios compared only within a
//! placement ([`paired_rows`]), and each side pinned to a CPU of [`allowed_cpus`]
//! ([`pin_this_thread`], [`Partner::pin_to`]).

#![warn(missing_docs)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use rustix::io::{FdFlags, fcntl_setfd};

/// The environment variable naming a child's role; its presence makes the bench binary a child
/// instead of criterion.
pub const CHILD_ENV: &str = "HUB_BENCH_CHILD";

/// The environment variable holding a child's message size, in bytes.
pub const SIZE_ENV: &str = "HUB_BENCH_SIZE";

/// The environment variable listing the descriptors a child inherits, comma-separated.
pub const FDS_ENV: &str = "HUB_BENCH_FDS";

/// The message sizes the benches measure, smallest first.
pub const SIZES: [usize; 7] = [8, 64, 1 << 10, 4 << 10, 64 << 10, 1 << 20, 16 << 20];

/// How long dropping a [`Partner`] waits for the child to exit before killing it.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The name of a size in benchmark ids and tables: `8 B`, `4 KiB`, `16 MiB` (rounded down to
/// the unit). Never fails.
pub fn size_name(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// Runs this process as a bench child if `HUB_BENCH_CHILD` is set, else returns `None` at once
/// (the caller goes on to criterion). Call it first thing in `main`.
///
/// In a child it asks for `SIGKILL` when the parent dies (`PR_SET_PDEATHSIG`), reads the size
/// from `HUB_BENCH_SIZE`, then calls `run(role, size)`. It returns `Some(ExitCode::FAILURE)`,
/// after printing `{bench} child {role}: {error}` to stderr, if the death signal cannot be set,
/// the parent has already exited, the size is missing or not a number, or `run` fails (an
/// unknown role included: `run` should say so); else `Some(ExitCode::SUCCESS)`.
pub fn run_child_if_asked(
    bench: &str,
    run: impl FnOnce(&str, usize) -> Result<(), String>,
) -> Option<ExitCode> {
    let role = std::env::var_os(CHILD_ENV)?;
    let role = role.to_string_lossy();
    Some(match child_main(&role, run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{bench} child {role}: {error}");
            ExitCode::FAILURE
        }
    })
}

fn child_main(
    role: &str,
    run: impl FnOnce(&str, usize) -> Result<(), String>,
) -> Result<(), String> {
    // Never outlive the bench: die with the parent, even if it is killed.
    let parent = rustix::process::getppid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("PR_SET_PDEATHSIG: {e}"))?;
    if rustix::process::getppid() != parent {
        return Err("the bench exited before its child started".into());
    }
    let size: usize = std::env::var(SIZE_ENV)
        .map_err(|e| format!("{SIZE_ENV}: {e}"))?
        .parse()
        .map_err(|e| format!("{SIZE_ENV}: {e}"))?;
    run(role, size)
}

/// In a hub child: attach as the peer the parent's ticket names (`Peer::from_env`), or `None`
/// when the host has left already. That is the parent's goodbye, not an error: the parent
/// starts each figure's child before criterion's filter decides whether the figure runs, and
/// drops the host at once when it does not.
///
/// Fails (with a message) on any other attach error.
pub fn attach_peer() -> Result<Option<hub_transport::Peer>, String> {
    match hub_transport::Peer::from_env() {
        Ok(peer) => Ok(Some(peer)),
        Err(hub_transport::AttachError::HostGone) => Ok(None),
        Err(error) => Err(error.to_string()),
    }
}

/// A child process running this bench binary in a role; dropping it waits for the child to exit
/// and kills it if it has not within [`EXIT_TIMEOUT`]. Tell the child to exit (its protocol's
/// goodbye) before dropping this.
pub struct Partner {
    child: Child,
    bench: &'static str,
    role: String,
}

impl Partner {
    /// Starts this bench's executable as a child with `HUB_BENCH_CHILD=role` and
    /// `HUB_BENCH_SIZE=size`, after `configure` has had the command (for more environment, a
    /// peer ticket, descriptors to inherit). `bench` and `role` name the child in the messages
    /// printed when it is dropped.
    ///
    /// Fails if the path of the running executable cannot be found or the spawn fails.
    pub fn spawn(
        bench: &'static str,
        role: &str,
        size: usize,
        configure: impl FnOnce(&mut Command),
    ) -> std::io::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command.env(CHILD_ENV, role).env(SIZE_ENV, size.to_string());
        configure(&mut command);
        let child = command.spawn()?;
        Ok(Self {
            child,
            bench,
            role: role.to_owned(),
        })
    }
}

impl Partner {
    /// Runs the child's main thread on CPU `cpu` only from now on, and so every thread it
    /// starts later (a thread inherits its starter's CPUs); threads it already runs stay where
    /// they are. Fails when the kernel refuses, as for a CPU this process may not use.
    pub fn pin_to(&self, cpu: usize) -> std::io::Result<()> {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| std::io::Error::other("a child without a pid"))?;
        set_cpus(Some(pid), &[cpu])
    }
}

/// The CPUs the calling thread may run on, lowest first: the set to restore with
/// [`pin_this_thread`] after a measure pinned the thread, and the set the `--paired` reports
/// pick their CPUs from (a cpuset or `taskset` may leave out CPU 0). Fails only if the kernel
/// refuses `sched_getaffinity`.
///
/// ```
/// let cpus = hub_benches::allowed_cpus()?;
/// assert!(!cpus.is_empty());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// Runs the calling thread on the CPUs `cpus` only: the benches' way to put the two sides of a
/// measure on one vCPU or on two, which the scheduler otherwise picks and changes between
/// runs, and to give the thread back the set [`allowed_cpus`] saved before. Fails when `cpus`
/// is empty or names a CPU past [`rustix::thread::CpuSet::MAX_CPU`], or when the kernel
/// refuses (none of `cpus` is allowed).
///
/// ```
/// let allowed = hub_benches::allowed_cpus()?;
/// hub_benches::pin_this_thread(&allowed[..1])?;
/// assert_eq!(hub_benches::allowed_cpus()?, allowed[..1]);
/// hub_benches::pin_this_thread(&allowed)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pin_this_thread(cpus: &[usize]) -> std::io::Result<()> {
    set_cpus(None, cpus)
}

/// `sched_setaffinity` of `pid` (`None`: the calling thread) to the CPUs `cpus`.
fn set_cpus(pid: Option<rustix::process::Pid>, cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Err(std::io::Error::other("no CPU to run on"));
    }
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        if cpu >= rustix::thread::CpuSet::MAX_CPU {
            return Err(std::io::Error::other(format!("no CPU {cpu}")));
        }
        set.set(cpu);
    }
    Ok(rustix::thread::sched_setaffinity(pid, &set)?)
}

impl Partner {
    /// [`spawn`](Self::spawn), the child inheriting `fds` and finding their numbers in
    /// `HUB_BENCH_FDS` (see [`inherited_fds`]). Their close-on-exec flag is cleared for the
    /// spawn and set again after it.
    ///
    /// Fails as [`spawn`](Self::spawn) does, or when a descriptor's flags cannot be changed.
    pub fn spawn_with_fds(
        bench: &'static str,
        role: &str,
        size: usize,
        fds: &[&OwnedFd],
        configure: impl FnOnce(&mut Command),
    ) -> std::io::Result<Self> {
        let mut cleared = Ok(());
        let child = Self::spawn(bench, role, size, |command| {
            let list: Vec<String> = fds.iter().map(|fd| fd.as_raw_fd().to_string()).collect();
            command.env(FDS_ENV, list.join(","));
            configure(command);
            for fd in fds {
                if let Err(error) = fcntl_setfd(fd, FdFlags::empty()) {
                    cleared = Err(error);
                }
            }
        });
        for fd in fds {
            fcntl_setfd(fd, FdFlags::CLOEXEC)?;
        }
        cleared?;
        child
    }
}

/// In a child started by [`Partner::spawn_with_fds`]: the descriptors named in
/// `HUB_BENCH_FDS`, owned by this process, in the parent's order.
///
/// Fails (with a message) when the variable is missing, a number does not parse or names no
/// open descriptor. Call it once: the descriptors are owned by what it returns.
pub fn inherited_fds() -> Result<Vec<OwnedFd>, String> {
    let list = std::env::var(FDS_ENV).map_err(|e| format!("{FDS_ENV}: {e}"))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let fd: RawFd = s.parse().map_err(|e| format!("{FDS_ENV}: {e}"))?;
            rustix::io::fcntl_getfd(
                // SAFETY: only checks that the number is an open descriptor.
                unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) },
            )
            .map_err(|e| format!("descriptor {fd}: {e}"))?;
            // SAFETY: the parent passed this descriptor for this child alone, it is open (checked
            // above), and nothing else in this process owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

impl Drop for Partner {
    /// Waits up to [`EXIT_TIMEOUT`] for the child, printing its status if it failed; past that
    /// (or if waiting fails) kills it and reaps it.
    fn drop(&mut self) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let (bench, role) = (self.bench, &self.role);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("{bench}: child {role} exited with {status}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                _ => {
                    eprintln!("{bench}: child {role} did not exit; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// Where the VM put its two vCPUs while a round of figures ran, as told by the round's floor:
/// on one physical core (`Fast`: a cache line crosses in tens of nanoseconds) or on two
/// (`Slow`: several times that), or `One` when the rounds do not fall into two such groups.
/// The shared VM moves between the two every minute or so, and a ratio of figures measured in
/// different placements means nothing: `latency --paired` and `throughput --paired` measure
/// each round's figures one right after the other and compare them only within a placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The faster group of rounds.
    Fast,
    /// The slower group of rounds.
    Slow,
    /// All rounds, when they do not split into two groups.
    One,
}

impl Placement {
    /// The placement's name in tables: `fast`, `slow`, `one`.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Fast => "fast",
            Placement::Slow => "slow",
            Placement::One => "one",
        }
    }
}

/// How far apart, as a ratio, two neighbouring floors must be for the rounds to split there
/// into two placements. The two placements' floors differ by 3x to 7x on this VM; rounds of one
/// placement vary by well under 1.5x.
pub const PLACEMENT_GAP: f64 = 1.5;

/// The placement of each round, from each round's floor time (in any unit, all positive): the
/// rounds split at the widest gap between neighbouring floors when that gap is at least
/// [`PLACEMENT_GAP`] (a ratio), the ones below it `Fast` and the ones above it `Slow`; else all
/// are `One`. Fewer than two rounds are `One`.
///
/// ```
/// use hub_benches::{Placement, placements};
///
/// let floors = [70.0, 450.0, 68.0, 72.0, 430.0];
/// let split = placements(&floors);
/// assert_eq!(split[0], Placement::Fast);
/// assert_eq!(split[1], Placement::Slow);
/// assert_eq!(placements(&[70.0, 80.0, 75.0]), [Placement::One; 3]);
/// ```
pub fn placements(floors: &[f64]) -> Vec<Placement> {
    let mut sorted = floors.to_vec();
    sorted.sort_by(f64::total_cmp);
    let widest = sorted
        .windows(2)
        .map(|pair| (pair[1] / pair[0], (pair[0] * pair[1]).sqrt()))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match widest {
        Some((gap, threshold)) if gap >= PLACEMENT_GAP => floors
            .iter()
            .map(|&floor| {
                if floor < threshold {
                    Placement::Fast
                } else {
                    Placement::Slow
                }
            })
            .collect(),
        _ => vec![Placement::One; floors.len()],
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// A round's floor from its placement probes before and after it: their geometric mean, or
/// `None` when either is not a positive, finite time or they differ by [`PLACEMENT_GAP`] or
/// more (the placement changed during the round, whose figures then mix both).
///
/// ```
/// assert_eq!(hub_benches::steady_floor(50.0, 72.0), Some(60.0));
/// assert_eq!(hub_benches::steady_floor(70.0, 450.0), None);
/// assert_eq!(hub_benches::steady_floor(f64::NAN, 50.0), None);
/// ```
pub fn steady_floor(before: f64, after: f64) -> Option<f64> {
    // A probe that is not a positive, finite time tells nothing: the round is not counted.
    let valid = |t: f64| t.is_finite() && t > 0.0;
    let (low, high) = (before.min(after), before.max(after));
    (valid(before) && valid(after) && high / low < PLACEMENT_GAP).then(|| (low * high).sqrt())
}

/// What the rounds of one placement give for one figure beside its baseline: the medians of
/// the rounds' times and of their own ratios, and the ratios' range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedRow {
    /// The rounds' placement.
    pub placement: Placement,
    /// How many rounds the row is made of.
    pub rounds: usize,
    /// The median of the baseline's times.
    pub baseline: f64,
    /// The median of the figure's times.
    pub ours: f64,
    /// The median of the rounds' ratios, the figure's time over the baseline's.
    pub ratio: f64,
    /// The smallest of the rounds' ratios.
    pub low: f64,
    /// The largest of the rounds' ratios.
    pub high: f64,
}

impl PairedRow {
    /// The row's figures as Markdown table cells: `baseline | ours | ratio | low to high`.
    pub fn cells(&self) -> String {
        format!(
            "{:.1} | {:.1} | {:.2} | {:.2} to {:.2}",
            self.baseline, self.ours, self.ratio, self.low, self.high
        )
    }
}

/// The rows of a paired measure for the figure at index `ours` of each round beside the one at
/// index `baseline`: one row per placement that has rounds, fast first. `floors` holds each
/// round's placement probe (see [`placements`]), `rounds` each round's times, in the same
/// order. Empty when there are no rounds.
///
/// # Panics
/// When `floors` and `rounds` differ in length, or an index is out of a round's bounds.
///
/// ```
/// use hub_benches::{Placement, paired_rows};
///
/// // Each round: a baseline's time, then ours.
/// let rounds = [vec![100.0, 300.0], vec![110.0, 320.0], vec![400.0, 800.0]];
/// let rows = paired_rows(&[70.0, 72.0, 450.0], &rounds, 1, 0);
/// assert_eq!(rows.len(), 2);
/// assert_eq!((rows[0].placement, rows[0].rounds), (Placement::Fast, 2));
/// assert_eq!(rows[1].ratio, 2.0);
/// ```
pub fn paired_rows(
    floors: &[f64],
    rounds: &[Vec<f64>],
    ours: usize,
    baseline: usize,
) -> Vec<PairedRow> {
    assert_eq!(floors.len(), rounds.len(), "a floor for each round");
    let split = placements(floors);
    [Placement::Fast, Placement::Slow, Placement::One]
        .into_iter()
        .filter_map(|placement| {
            let of_it: Vec<&Vec<f64>> = rounds
                .iter()
                .zip(&split)
                .filter(|(_, p)| **p == placement)
                .map(|(round, _)| round)
                .collect();
            let column = |i: usize| of_it.iter().map(|round| round[i]).collect::<Vec<_>>();
            let ratios: Vec<f64> = of_it
                .iter()
                .map(|round| round[ours] / round[baseline])
                .collect();
            Some(PairedRow {
                placement,
                rounds: of_it.len(),
                baseline: median(&column(baseline))?,
                ours: median(&column(ours))?,
                ratio: median(&ratios)?,
                low: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                high: ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            })
        })
        .collect()
}

/// The time per iteration of `run`, in nanoseconds, over one block of about `block`: `run(n)`
/// makes `n` iterations and returns how long they took. It runs once (a partner's start-up),
/// then 16 iterations to size the block, then a block of warm-up, then the block it times.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let ns = hub_benches::per_iteration(Duration::from_millis(5), |n| {
///     let start = Instant::now();
///     for i in 0..n {
///         std::hint::black_box(i);
///     }
///     start.elapsed()
/// });
/// assert!(ns.is_finite() && ns >= 0.0);
/// ```
pub fn per_iteration(block: Duration, mut run: impl FnMut(u64) -> Duration) -> f64 {
    const PROBE: u64 = 16;
    run(1);
    let each = run(PROBE).as_secs_f64() / PROBE as f64;
    let iters = (block.as_secs_f64() / each.max(1e-9)).clamp(4.0, 1e7) as u64;
    run(iters);
    run(iters).as_secs_f64() * 1e9 / iters as f64
}

/// How long two threads of this process, one on CPU `cpus[0]` and one on `cpus[1]`, take to
/// bounce one cache line there and back, in nanoseconds (the median of five blocks of about
/// 2 ms, each after as long of warm-up): a probe of the placement ([`Placement`]) for the
/// benches whose own figures do not tell it. Tens of nanoseconds when the VM runs the two
/// vCPUs on one physical core, hundreds when on two. The probe pins its own two threads, so
/// the caller's CPUs do not matter and stay as they are.
///
/// Fails when a thread cannot be pinned (see [`pin_this_thread`]); give two distinct CPUs from
/// [`allowed_cpus`], or the two threads take turns on one.
pub fn placement_probe(cpus: [usize; 2]) -> std::io::Result<f64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // The word's values besides the bounce's counts: the answering thread is pinning itself,
    // could not, or is told to quit.
    const PINNING: u64 = u64::MAX - 2;
    const UNPINNED: u64 = u64::MAX - 1;
    const QUIT: u64 = u64::MAX;
    let word = AtomicU64::new(PINNING);
    let answer = || -> std::io::Result<()> {
        if let Err(error) = pin_this_thread(&cpus[1..]) {
            word.store(UNPINNED, Ordering::Release);
            return Err(error);
        }
        word.store(0, Ordering::Release);
        // Answers each odd value with the next even one, until told to quit.
        loop {
            let seen = word.load(Ordering::Acquire);
            if seen == QUIT {
                return Ok(());
            }
            if seen % 2 == 1 {
                word.store(seen + 1, Ordering::Release);
            } else {
                std::hint::spin_loop();
            }
        }
    };
    let ask = || -> std::io::Result<f64> {
        let pinned = pin_this_thread(&cpus[..1]);
        let answering = loop {
            match word.load(Ordering::Acquire) {
                PINNING => std::hint::spin_loop(),
                seen => break seen == 0,
            }
        };
        if pinned.is_err() || !answering {
            word.store(QUIT, Ordering::Release);
            // The answering thread's own error, if any, is the one reported.
            return pinned.map(|()| f64::NAN);
        }
        let mut sent = 0;
        let mut bounce = |n: u64| {
            let start = Instant::now();
            for _ in 0..n {
                word.store(sent + 1, Ordering::Release);
                while word.load(Ordering::Acquire) != sent + 2 {
                    std::hint::spin_loop();
                }
                sent += 2;
            }
            start.elapsed()
        };
        let blocks: Vec<f64> = (0..5)
            .map(|_| per_iteration(Duration::from_millis(2), &mut bounce))
            .collect();
        word.store(QUIT, Ordering::Release);
        Ok(median(&blocks).unwrap_or(f64::NAN))
    };
    std::thread::scope(|scope| {
        let answering = scope.spawn(answer);
        let asked = scope.spawn(ask).join().expect("the probe's asking thread");
        answering.join().expect("the probe's answering thread")?;
        asked
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_at_the_widest_gap() {
        let floors = [65.0, 450.0, 70.0, 90.0, 400.0, 610.0];
        use Placement::{Fast, Slow};
        assert_eq!(placements(&floors), [Fast, Slow, Fast, Fast, Slow, Slow]);
    }

    #[test]
    fn rounds_without_a_wide_gap_are_one_placement() {
        assert_eq!(placements(&[65.0, 90.0, 80.0]), [Placement::One; 3]);
        assert_eq!(placements(&[65.0]), [Placement::One]);
        assert!(placements(&[]).is_empty());
    }

    #[test]
    fn paired_rows_compare_within_each_placement() {
        // Round: baseline, ours. Two fast rounds (ratios 2 and 4), three slow (1, 1.5, 2).
        let floors = [70.0, 400.0, 75.0, 420.0, 410.0];
        let rounds = [
            vec![50.0, 100.0],
            vec![200.0, 200.0],
            vec![40.0, 160.0],
            vec![200.0, 300.0],
            vec![300.0, 600.0],
        ];
        let rows = paired_rows(&floors, &rounds, 1, 0);
        let fast = PairedRow {
            placement: Placement::Fast,
            rounds: 2,
            baseline: 45.0,
            ours: 130.0,
            ratio: 3.0,
            low: 2.0,
            high: 4.0,
        };
        let slow = PairedRow {
            placement: Placement::Slow,
            rounds: 3,
            baseline: 200.0,
            ours: 300.0,
            ratio: 1.5,
            low: 1.0,
            high: 2.0,
        };
        assert_eq!(rows, [fast, slow]);
        // One placement: one row; no rounds: none.
        let one = paired_rows(&[70.0, 75.0], &rounds[..2], 1, 0);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].placement, one[0].rounds), (Placement::One, 2));
        assert!(paired_rows(&[], &[], 1, 0).is_empty());
    }

    #[test]
    fn the_placement_probe_times_a_bounce() {
        let cpus = allowed_cpus().expect("the allowed CPUs");
        let pair = [cpus[0], *cpus.last().expect("a CPU")];
        let ns = placement_probe(pair).expect("pin the probe's threads");
        // A smoke test: the probe pins its threads, runs, ends and gives a time (on a machine
        // that allows one CPU both threads share it; the time says nothing of the placement).
        assert!(ns > 0.0 && ns < 1e9, "{ns}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn size_names() {
        assert_eq!(size_name(8), "8 B");
        assert_eq!(size_name(4 << 10), "4 KiB");
        assert_eq!(size_name(16 << 20), "16 MiB");
    }
}
