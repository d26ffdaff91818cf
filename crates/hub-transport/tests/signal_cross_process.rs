//! The doorbell protocol between two processes: the futex words live in a shared memfd mapping,
//! so only the shared (non-private) futex flavour can wake the other side. The parent waits with
//! `futex_waitv` (through `wait_any_for`), the child with `FUTEX_WAIT`; a lost wakeup hangs.
//!
//! The test binary re-runs itself as the child (the `child_side` test, which does nothing unless
//! the environment names the inherited memfd).

use hub_transport::signal::{Doorbell, WaitMode, wait_any_for};
use hub_transport::sync::{AtomicU32, AtomicU64, Ordering};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FD_VAR: &str = "HUB_SIGNAL_TEST_MEMFD";
const ROUNDS: u64 = 2_000;
const LEN: usize = 4096;

/// A guard against hanging forever if a wakeup is lost (the test then fails with `TimedOut`);
/// not a measure of speed.
fn watchdog() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(30))
}

/// The shared page: two doorbell words, two counters, and a word nobody rings.
#[repr(C)]
struct Shared {
    to_child: AtomicU32,
    to_parent: AtomicU32,
    idle: AtomicU32,
    child_count: AtomicU64,
    parent_count: AtomicU64,
}

fn map(fd: BorrowedFd<'_>) -> &'static Shared {
    // SAFETY: a fresh shared mapping of LEN bytes of the memfd, never unmapped (the process
    // ends with the test); nothing else is mapped there.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            LEN,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .expect("mmap");
    // SAFETY: the page is zero-filled (a zero is a valid value of every field), page-aligned,
    // larger than `Shared`, and only accessed through atomics in both processes.
    unsafe { &*ptr.cast::<Shared>() }
}

#[test]
fn child_side() {
    let Ok(fd) = std::env::var(FD_VAR) else {
        return; // run as an ordinary test: nothing to do
    };
    let fd: i32 = fd.parse().unwrap();
    // SAFETY: the parent passed this descriptor open (no CLOEXEC) and it stays open.
    let shared = map(unsafe { BorrowedFd::borrow_raw(fd) });
    let (to_child, to_parent) = (
        Doorbell::new(&shared.to_child),
        Doorbell::new(&shared.to_parent),
    );
    for i in 1..=ROUNDS {
        to_child
            .wait_until(
                || shared.parent_count.load(Ordering::Acquire) >= i,
                watchdog(),
                WaitMode::Block,
            )
            .unwrap();
        shared.child_count.store(i, Ordering::Release);
        to_parent.ring();
    }
}

#[test]
fn ping_pong_between_processes() {
    let memfd = rustix::fs::memfd_create("hub-signal-test", MemfdFlags::empty()).unwrap();
    rustix::fs::ftruncate(&memfd, LEN as u64).unwrap();
    let shared = map(memfd.as_fd());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_side", "--test-threads=1"])
        .env(FD_VAR, memfd.as_raw_fd().to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let to_child = Doorbell::new(&shared.to_child);
    let bells = [
        Doorbell::new(&shared.idle),
        Doorbell::new(&shared.to_parent),
    ];
    for i in 1..=ROUNDS {
        shared.parent_count.store(i, Ordering::Release);
        to_child.ring();
        let seen = wait_any_for(
            &bells,
            || (shared.child_count.load(Ordering::Acquire) >= i).then_some(i),
            watchdog(),
            WaitMode::Block,
        )
        .unwrap();
        assert_eq!(seen, i);
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(shared.child_count.load(Ordering::Relaxed), ROUNDS);
}
