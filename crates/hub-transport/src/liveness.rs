//! Facts about other processes' lives (R12): a process's exit, learnt from a pidfd, and
//! whether a process uses a given file (holds it open or maps it), learnt from its `/proc`.
//!
//! A pidfd polls readable once its process has exited, whoever its parent is: the host learns of
//! a peer's death from the kernel, not from a guess, and a peer learns of the host's the same
//! way. A stopped process (SIGSTOP, a debugger) is alive to a pidfd; a heartbeat timeout is what
//! finds it hung.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use crate::mapping::HolderProbe;

/// A watch on one process.
#[derive(Debug)]
pub(crate) struct ProcessWatch {
    pidfd: OwnedFd,
    /// Whether an exit was seen: an exit is for good, so once seen it is kept, and no later
    /// look asks the kernel again.
    exited: AtomicBool,
    /// Polls of this pidfd made so far (alone or with others): what a tick costs, for tests.
    #[cfg(test)]
    polls: std::sync::atomic::AtomicU32,
}

/// How a look at a watched process learns whether it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCheck {
    /// Ask the kernel now: one poll of the pidfd, unless the exit was seen already.
    Now,
    /// What the polls made so far saw, with no system call: the supervisor's tick, which has
    /// just waited on every watch it knows (an exit after that wait is seen by the next tick).
    AsPolled,
}

/// What opening a watch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchError {
    /// No process has this id (it exited and was reaped already), or the id is 0.
    NoSuchProcess,
    /// The kernel refused the pidfd for another reason (too many open files, no pidfd support).
    Unavailable(Errno),
}

impl ProcessWatch {
    /// Watch process `pid`.
    pub fn open(pid: u32) -> Result<Self, WatchError> {
        let raw = i32::try_from(pid).map_err(|_| WatchError::NoSuchProcess)?;
        let id = Pid::from_raw(raw).ok_or(WatchError::NoSuchProcess)?;
        match pidfd_open(id, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(Self {
                pidfd,
                exited: AtomicBool::new(false),
                #[cfg(test)]
                polls: std::sync::atomic::AtomicU32::new(0),
            }),
            Err(Errno::SRCH) => Err(WatchError::NoSuchProcess),
            Err(errno) => Err(WatchError::Unavailable(errno)),
        }
    }

    /// Send the process SIGKILL through the pidfd, so never another process that reused its
    /// pid; its exit shows on the pidfd ([`has_exited`](Self::has_exited)) once the kernel is
    /// done with it. Only the host's supervisor calls it, and only on a watch taken in the
    /// host's own spawn (R4: the host signals only processes it started).
    pub fn kill(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL);
    }

    /// Whether the process has exited (a zombie counts: it runs no more): an exit seen
    /// already, else one poll of the pidfd now.
    pub fn has_exited(&self) -> bool {
        self.exit_seen() || !wait_for_exits(&[self], Duration::ZERO).is_empty()
    }

    /// Whether the process has exited, as `check` asks.
    pub fn has_exited_by(&self, check: ExitCheck) -> bool {
        match check {
            ExitCheck::Now => self.has_exited(),
            ExitCheck::AsPolled => self.exit_seen(),
        }
    }

    /// Whether a poll of this watch has seen the process's exit (no system call).
    pub fn exit_seen(&self) -> bool {
        // Relaxed: a hint kept by this process about a fact the kernel keeps; a look that
        // misses a fresh `true` polls, and finds the exit itself.
        self.exited.load(Ordering::Relaxed)
    }

    /// How many times this pidfd was polled.
    #[cfg(test)]
    pub fn polls(&self) -> u32 {
        self.polls.load(Ordering::Relaxed)
    }
}

/// Whether process `pid` uses the file whose identity is `file` (`(st_dev, st_ino)`, as
/// `local::file_id` gives it): holds it open (one of its `/proc/<pid>/fd` links leads to it),
/// or maps it (`/proc/<pid>/maps`). `None` when the kernel tells this process neither (another
/// user's process, one that made itself undumpable, no procfs). Facts the kernel keeps, not a
/// word a peer wrote: what the host checks a pid word against before it waits for that process
/// (R4).
///
/// The descriptors come first: their links `stat` as the file's own `fstat` does on every
/// filesystem (a map line shows the underlying file's device on some, overlayfs and btrfs
/// among them), and reading them takes no lock of the process's memory. At most
/// [`FDS_LOOKED_AT`] descriptors are looked at. The answer is about whichever process has the
/// pid when it is read: a caller that holds a pidfd on the process it means checks afterwards
/// that it still runs.
pub(crate) fn uses_file(pid: u32, file: (u64, u64)) -> Option<bool> {
    let file = FileId::of(file);
    match holds_open(pid, file) {
        Some(true) => Some(true),
        open => maps_file(pid, file).or(open),
    }
}

/// A file as `statx` and `/proc/<pid>/maps` name it: its device's numbers and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

impl FileId {
    /// The file of `(st_dev, st_ino)`.
    fn of((dev, inode): (u64, u64)) -> Self {
        Self {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
            inode,
        }
    }
}

/// How many of a process's descriptors [`uses_file`] looks at, at most: a process that opened
/// more does not make the host's look take longer.
const FDS_LOOKED_AT: usize = 1 << 16;

/// Whether one of process `pid`'s open descriptors is the file `file`.
fn holds_open(pid: u32, file: FileId) -> Option<bool> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        descriptors
            .take(FDS_LOOKED_AT)
            .filter_map(Result::ok)
            // Follows the link to the open file itself. `STATX_DONT_SYNC`: what the kernel has
            // cached, never a question to the file's filesystem (a FUSE server the named
            // process runs could leave that unanswered); the device and inode are the kernel's.
            .filter_map(|entry| {
                statx(CWD, entry.path(), AtFlags::STATX_DONT_SYNC, StatxFlags::INO).ok()
            })
            .any(|stx| {
                file == FileId {
                    major: stx.stx_dev_major,
                    minor: stx.stx_dev_minor,
                    inode: stx.stx_ino,
                }
            }),
    )
}

/// Whether process `pid` maps the file `file`, as its `/proc/<pid>/maps` says.
fn maps_file(pid: u32, file: FileId) -> Option<bool> {
    // Bytes: a mapped file's path need not be UTF-8, and only the numbers before it are read.
    let maps = std::fs::read(format!("/proc/{pid}/maps")).ok()?;
    Some(
        maps.split(|&b| b == b'\n')
            .any(|line| maps_line_is(&String::from_utf8_lossy(line), file)),
    )
}

/// Whether a line of `/proc/<pid>/maps` (`start-end perms offset major:minor inode path`, the
/// device numbers in hexadecimal) maps `file`.
fn maps_line_is(line: &str, file: FileId) -> bool {
    let mut fields = line.split_ascii_whitespace().skip(3);
    let (Some(device), Some(number)) = (fields.next(), fields.next()) else {
        return false;
    };
    let Some((line_major, line_minor)) = device.split_once(':') else {
        return false;
    };
    // Inode 0 is an anonymous mapping, never a file's.
    file.inode != 0
        && u32::from_str_radix(line_major, 16) == Ok(file.major)
        && u32::from_str_radix(line_minor, 16) == Ok(file.minor)
        && number.parse::<u64>() == Ok(file.inode)
}

/// Wait up to `timeout` for any of `watches` to exit; the indices of those that have. Each
/// exit found is kept in its watch ([`ProcessWatch::exit_seen`]).
pub(crate) fn wait_for_exits(watches: &[&ProcessWatch], timeout: Duration) -> Vec<usize> {
    let mut fds: Vec<PollFd<'_>> = watches
        .iter()
        .map(|w| PollFd::new(&w.pidfd, PollFlags::IN))
        .collect();
    let timeout = Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    if fds.is_empty() {
        std::thread::sleep(Duration::new(timeout.tv_sec as u64, timeout.tv_nsec as u32));
        return Vec::new();
    }
    #[cfg(test)]
    for watch in watches {
        watch.polls.fetch_add(1, Ordering::Relaxed);
    }
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(0) | Err(_) => Vec::new(),
        Ok(_) => {
            let exited: Vec<usize> = fds
                .iter()
                .enumerate()
                .filter(|(_, fd)| !fd.revents().is_empty())
                .map(|(i, _)| i)
                .collect();
            for &i in &exited {
                watches[i].exited.store(true, Ordering::Relaxed);
            }
            exited
        }
    }
}

/// Wait up to `timeout` for `watch`'s process to exit or for `wake` (an eventfd) to be
/// written, whichever comes first; drain `wake`.
fn wait_for_exit_or_wake(watch: Option<&ProcessWatch>, wake: &OwnedFd, timeout: Duration) {
    let mut fds = vec![PollFd::new(wake, PollFlags::IN)];
    if let Some(watch) = watch {
        fds.push(PollFd::new(&watch.pidfd, PollFlags::IN));
    }
    let timeout = Timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(i64::MAX),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    if rustix::event::poll(&mut fds, Some(&timeout)).is_ok_and(|n| n > 0)
        && !fds[0].revents().is_empty()
    {
        // The eventfd is non-blocking: a read takes its count, or finds it taken already.
        let _ = rustix::io::read(wake, &mut [0u8; 8]);
    }
}

/// What a peer knows of its host's life (R12), and how it decides that the host is gone.
///
/// A peer concludes "the host is gone" only from a fact the kernel keeps, never from a word of
/// the segment alone: every peer can write every word (PROTOCOL.md §5), so a hostile one could
/// otherwise tell honest peers that a running host left. The facts:
///
/// - the host's [holder lock](crate::mapping::HolderLock), an exclusive `flock` the host takes
///   on an open file description of its own when it creates the hub and releases when it is
///   dropped or dies; the peer probes it ([`HolderProbe`]) on a description of its own;
/// - the exit of the host's process, seen by the heartbeat thread on a pidfd; since the pid it
///   watches was read from the segment (a word a peer could have rewritten before this peer
///   attached), an exit is believed only when the probe confirms the lock released too.
///
/// The host-state word is a hint: when it says gone, the peer probes once per check, and a
/// forged word costs it one probe per check, never a `HostGone`. A confirmed "gone" is kept
/// here, privately, for good: the host never comes back.
#[derive(Debug)]
pub(crate) struct HostLife {
    gone: std::sync::atomic::AtomicBool,
    probe: HolderProbe,
}

impl HostLife {
    /// A peer's view of its host, asking the kernel through `probe`.
    pub fn new(probe: HolderProbe) -> Self {
        Self {
            gone: std::sync::atomic::AtomicBool::new(false),
            probe,
        }
    }

    /// Whether the host is gone: known already, or the host-state word says so and the probe
    /// confirms it (the lock is released).
    pub fn is_gone(&self, segment: &crate::segment::Segment) -> bool {
        use crate::sync::Ordering;
        if self.gone.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        if segment.host_state().load(Ordering::Acquire) != crate::segment::HOST_GONE {
            return false;
        }
        self.confirm()
    }

    /// Ask the kernel now: `true`, and kept, when the host's lock is released.
    pub fn confirm(&self) -> bool {
        if self.probe.is_held() {
            return false;
        }
        self.gone.store(true, std::sync::atomic::Ordering::Release);
        true
    }
}

/// A peer's heartbeat thread (R12): it writes the peer's `last_seen` a few times per heartbeat
/// timeout, and watches the host's process, waiting on its pidfd between beats. When that
/// process exits and the probe of [`HostLife`] confirms the host's lock released, it records
/// the host gone (privately: it writes no shared word) and rings the peer's own bell, so every
/// blocked call of the peer returns `HostGone` at once. Without a pidfd to wait on (none could
/// be opened, or the one it had named a process that was not the host), it probes the lock at
/// every beat instead.
pub(crate) struct Heartbeat {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// An eventfd that wakes the thread when it must stop.
    wake: std::sync::Arc<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Start beating for peer `peer` at `epoch`; `host` is a watch on the host's process,
    /// `life` what the peer knows of the host.
    pub fn start(
        segment: std::sync::Arc<crate::segment::Segment>,
        peer: u16,
        epoch: u64,
        host: Option<ProcessWatch>,
        life: std::sync::Arc<HostLife>,
    ) -> std::io::Result<Self> {
        use crate::sync::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let wake = std::sync::Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let woken = wake.clone();
        let interval = segment.heartbeat_interval().min(Duration::from_millis(250));
        let thread = std::thread::Builder::new()
            .name(format!("hub-heartbeat-{peer}"))
            .spawn(move || {
                let mut host = host;
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    let words = segment.peer(peer);
                    if words.epoch.load(Ordering::Acquire) != epoch {
                        return; // the entry is someone else's now
                    }
                    words
                        .last_seen
                        .store(crate::segment::monotonic_ns(), Ordering::Relaxed);
                    // With a pidfd, its exit is the cue to probe; without one, every beat is.
                    if host.as_ref().is_none_or(ProcessWatch::has_exited) {
                        if life.confirm() {
                            crate::signal::Doorbell::new(words.recv_bell).ring();
                            return;
                        }
                        // The process watched exited while the host's lock is held: it was not
                        // the host (the pid word lied). Probe at every beat from now on.
                        host = None;
                    }
                    // The host's exit ends the wait at once; so does `Drop`.
                    wait_for_exit_or_wake(host.as_ref(), &woken, interval);
                }
            })?;
        Ok(Self {
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maps_line_names_its_file_by_device_and_inode() {
        let line = "7f12a4c00000-7f12a4e00000 rw-s 00000000 00:01 4093   /memfd:hub (deleted)";
        assert!(maps_line_is(line, id(0, 1, 4093)));
        assert!(!maps_line_is(line, id(0, 1, 4094)));
        assert!(!maps_line_is(line, id(0, 2, 4093)));
        assert!(!maps_line_is(line, id(1, 1, 4093)));
        let hex = "00400000-00452000 r-xp 00000000 fd:1a 131 /usr/bin/x";
        assert!(maps_line_is(hex, id(0xfd, 0x1a, 131)));
        // An anonymous mapping is nobody's file, and a short or garbled line names none.
        assert!(!maps_line_is(
            "7ffd-7ffe rw-p 00000000 00:00 0 [stack]",
            id(0, 0, 0)
        ));
        assert!(!maps_line_is("7ffd-7ffe rw-p 00000000", id(0, 0, 0)));
        assert!(!maps_line_is(
            "7ffd-7ffe rw-p 00000000 0000 12",
            id(0, 0, 12)
        ));
        assert!(!maps_line_is(
            "7ffd-7ffe rw-p 00000000 zz:00 12",
            id(0, 0, 12)
        ));
    }

    #[test]
    fn a_process_uses_the_files_it_holds_or_maps_and_not_others() {
        let (fd, map) = tempfile_mapped();
        let stat = rustix::fs::fstat(&fd).expect("fstat");
        let file = (stat.st_dev, stat.st_ino);
        let me = std::process::id();
        assert_eq!(holds_open(me, FileId::of(file)), Some(true));
        assert_eq!(maps_file(me, FileId::of(file)), Some(true));
        assert_eq!(uses_file(me, file), Some(true));
        // Mapped, no longer open.
        drop(fd);
        assert_eq!(holds_open(me, FileId::of(file)), Some(false));
        assert_eq!(uses_file(me, file), Some(true));
        // Neither.
        drop(map);
        assert_eq!(uses_file(me, file), Some(false));
        let (fd, _map) = tempfile_mapped();
        let stat = rustix::fs::fstat(&fd).expect("fstat");
        let file = (stat.st_dev, stat.st_ino);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        assert_eq!(uses_file(child.id(), file), Some(false));
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(uses_file(u32::MAX, file), None, "no such process");
    }

    fn id(major: u32, minor: u32, inode: u64) -> FileId {
        FileId {
            major,
            minor,
            inode,
        }
    }

    /// A memfd of one page, mapped shared in this process while the pair lives.
    fn tempfile_mapped() -> (OwnedFd, memmap2::MmapRaw) {
        let fd =
            rustix::fs::memfd_create("maps-test", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("ftruncate");
        let file = std::fs::File::from(fd.try_clone().expect("dup"));
        let map = memmap2::MmapOptions::new()
            .len(4096)
            .map_raw(&file)
            .expect("map");
        (fd, map)
    }

    #[test]
    fn a_child_that_exits_is_seen_exited_and_a_live_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let watch = ProcessWatch::open(child.id()).expect("watch");
        assert!(!watch.has_exited());
        child.kill().expect("kill");
        // Not reaped yet: a zombie has exited all the same.
        assert_eq!(wait_for_exits(&[&watch], Duration::from_secs(5)), vec![0]);
        child.wait().expect("reap");
        assert!(watch.has_exited());
    }

    #[test]
    fn our_own_process_is_alive_and_pid_zero_is_no_process() {
        let me = ProcessWatch::open(std::process::id()).expect("watch self");
        assert!(!me.has_exited());
        assert_eq!(
            ProcessWatch::open(0).unwrap_err(),
            WatchError::NoSuchProcess
        );
    }
}
