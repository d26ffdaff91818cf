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
/// different placements means nothing: `latency --paired` measures each round's figures one
/// right after the other and compares them only within a placement.
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
