//! A futex wake and a futex wait in one system call, through a small io_uring of the calling
//! thread (Linux 6.7+: `IORING_OP_FUTEX_WAKE` and `IORING_OP_FUTEX_WAIT`).
//!
//! A blocking request and reply costs each side a wake (of the other side, for what it just
//! sent) and a wait (for what comes back): four system calls per round trip with plain futex
//! calls, because Linux has no futex operation that wakes one word and sleeps on another. Two
//! submission queue entries, submitted and waited for by one `io_uring_enter`, are that
//! operation: the wake runs at once, and the call returns when the wait completes (woken, or the
//! word no longer held the expected value), or when the timeout passes.
//!
//! Each thread that uses it gets its own ring, created at its first use and closed with the
//! thread: four submission entries, three mappings and a descriptor. A kernel without io_uring,
//! or without its futex operations, or a process where io_uring is disabled
//! (`kernel.io_uring_disabled`), makes [`wake_then_wait`] return `None` (and remember it, for
//! the thread): the caller then makes the two plain calls.
//!
//! All the unsafe code is in this module. The ring's head and tail words are shared with the
//! kernel and accessed only as atomics; the entries are written before the tail's Release store
//! that hands them to the kernel, and completions are read after the tail's Acquire load.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::time::Duration;

use rustix::io::Errno;
use rustix::io_uring::{
    IORING_OFF_CQ_RING, IORING_OFF_SQ_RING, IORING_OFF_SQES, IoringEnterFlags, IoringFeatureFlags,
    IoringOp, Timespec, io_uring_cqe, io_uring_enter, io_uring_enter_arg, io_uring_getevents_arg,
    io_uring_params, io_uring_ptr, io_uring_setup, io_uring_sqe, io_uring_user_data,
};
use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

use crate::sync::AtomicU32;

/// A word of the ring's memory, which the kernel reads or writes too.
type KernelWord = std::sync::atomic::AtomicU32;

/// `FUTEX2_SIZE_U32`: the futex2 flags of a 32-bit shared futex (no `FUTEX2_PRIVATE`: the words
/// live in memory several processes map).
const FUTEX2_SIZE_U32: i32 = 0x02;
/// `FUTEX_BITSET_MATCH_ANY`: wake, or be woken by, any waker or waiter.
const MATCH_ANY: u64 = u32::MAX as u64;

/// The user data of each entry, to tell their completions apart.
const WAKE: u64 = 1;
const WAIT: u64 = 2;
const CANCEL: u64 = 3;

/// How a wait ended (the futex module's `WaitOutcome`, which this module does not import: it
/// sits below `futex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// A wake came.
    Woken,
    /// The word did not hold the expected value.
    ValueChanged,
    /// The timeout passed.
    TimedOut,
    /// A signal came.
    Interrupted,
}

/// What [`wake_then_wait`] did: how many sleepers the wake woke, and how the wait ended.
pub(crate) type Outcome = (usize, Waited);

thread_local! {
    /// This thread's ring: `None` before its first use, `Some(None)` where io_uring (or its
    /// futex operations) turned out unavailable.
    static RING: RefCell<Option<Option<FutexRing>>> = const { RefCell::new(None) };
}

/// Wakes up to `n` sleepers of `wake`, then sleeps while `wait` holds `expected`, for at most
/// `timeout`: both in one `io_uring_enter` when this thread's ring works, `None` when it does
/// not (nothing was done then: the caller makes the two plain calls).
pub(crate) fn wake_then_wait(
    wake: &AtomicU32,
    n: u32,
    wait: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Option<Result<Outcome, Errno>> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ring = slot.get_or_insert_with(|| FutexRing::new().ok());
        let result = ring
            .as_mut()?
            .wake_then_wait(wake, n, wait, expected, timeout);
        match result {
            Ok(result) => Some(result),
            Err(Unsupported) => {
                // Remembered for this thread: the next call goes straight to the plain calls.
                *ring = None;
                None
            }
        }
    })
}

/// Whether [`wake_then_wait`] works on this thread (it makes one system call): a probe that
/// wakes nobody and does not sleep, made once per thread.
pub(crate) fn available() -> bool {
    let (nobody, moved) = (AtomicU32::new(0), AtomicU32::new(1));
    matches!(
        wake_then_wait(&nobody, 1, &moved, 0, None),
        Some(Ok((_, Waited::ValueChanged)))
    )
}

/// The ring cannot do the request: the kernel does not know the futex operations, or the ring
/// failed. The caller makes the plain calls (a wake the ring did too is harmless: R11's
/// wakeups may be spurious), and the thread's ring goes.
struct Unsupported;

/// One mapping of the ring's memory.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: &OwnedFd, len: usize, offset: u64) -> Result<Self, Errno> {
        // SAFETY: a fresh shared mapping of the ring's own memory, at the offset and length the
        // kernel gave in `io_uring_params`; nothing else is mapped there.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                offset,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::NOMEM)?;
        Ok(Self { ptr, len })
    }

    /// The word at `offset`, which the kernel reads or writes too: as an atomic only.
    fn word(&self, offset: u32) -> &KernelWord {
        assert!(offset as usize + 4 <= self.len && offset.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked above, and page-aligned base); the ring's
        // head and tail words are accessed by the kernel and by this thread only atomically.
        unsafe { &*self.ptr.as_ptr().add(offset as usize).cast::<KernelWord>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no reference into it outlives the
        // ring that owns it.
        let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A thread's io_uring, used only for futex wake-and-wait.
struct FutexRing {
    /// Dropped after the mappings (field order): the ring stays valid while they exist.
    sq: Mapping,
    cq: Mapping,
    sqes: Mapping,
    sq_tail: u32,
    sq_mask: u32,
    sq_array: u32,
    cq_head: u32,
    cq_tail: u32,
    cq_mask: u32,
    cqes: u32,
    fd: OwnedFd,
}

impl FutexRing {
    fn new() -> Result<Self, Errno> {
        let mut params = io_uring_params::default();
        // SAFETY: `params` is a valid, zeroed parameter block; the ring has no SQ thread.
        let fd = unsafe { io_uring_setup(4, &mut params)? };
        if !params.features.contains(IoringFeatureFlags::EXT_ARG) {
            return Err(Errno::NOSYS);
        }
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize
            + params.cq_entries as usize * std::mem::size_of::<io_uring_cqe>();
        let sqes_len = params.sq_entries as usize * std::mem::size_of::<io_uring_sqe>();
        let sq = Mapping::new(&fd, sq_len, IORING_OFF_SQ_RING)?;
        let cq = Mapping::new(&fd, cq_len, IORING_OFF_CQ_RING)?;
        let sqes = Mapping::new(&fd, sqes_len, IORING_OFF_SQES)?;
        let ring = Self {
            sq_mask: sq.word(params.sq_off.ring_mask).load(Ordering::Relaxed),
            cq_mask: cq.word(params.cq_off.ring_mask).load(Ordering::Relaxed),
            sq_tail: params.sq_off.tail,
            sq_array: params.sq_off.array,
            cq_head: params.cq_off.head,
            cq_tail: params.cq_off.tail,
            cqes: params.cq_off.cqes,
            sq,
            cq,
            sqes,
            fd,
        };
        if ring.sq_mask < 3 {
            return Err(Errno::INVAL);
        }
        Ok(ring)
    }

    /// Queue one entry (not yet handed to the kernel: see `publish`).
    fn push(&mut self, sqe: io_uring_sqe, queued: &mut u32) {
        let tail = self.sq.word(self.sq_tail).load(Ordering::Relaxed) + *queued;
        let index = tail & self.sq_mask;
        let entries = self.sqes.ptr.as_ptr().cast::<io_uring_sqe>();
        // SAFETY: `index` is below the ring's entry count (masked); the kernel reads entries
        // only between the head and the tail, and this one is past the tail until `publish`.
        unsafe { entries.add(index as usize).write(sqe) };
        let array = self.sq_array + index * 4;
        // The indirection array: slot `index` holds entry `index`. Relaxed: published by the
        // tail's Release store.
        self.sq.word(array).store(index, Ordering::Relaxed);
        *queued += 1;
    }

    /// Hand `queued` entries to the kernel.
    fn publish(&self, queued: u32) {
        let tail = self.sq.word(self.sq_tail);
        // Release: the entries written above are the kernel's from here on.
        tail.store(tail.load(Ordering::Relaxed) + queued, Ordering::Release);
    }

    /// The completions the kernel posted, in order: `(user data, result)`.
    fn reap(&mut self, mut each: impl FnMut(u64, i32)) {
        let head = self.cq.word(self.cq_head);
        // Acquire: the completions up to the tail are written.
        let tail = self.cq.word(self.cq_tail).load(Ordering::Acquire);
        let mut at = head.load(Ordering::Relaxed);
        while at != tail {
            let index = (at & self.cq_mask) as usize;
            let offset = self.cqes as usize + index * std::mem::size_of::<io_uring_cqe>();
            assert!(offset + std::mem::size_of::<io_uring_cqe>() <= self.cq.len);
            // SAFETY: in bounds (checked) and aligned (the kernel's layout); the kernel does
            // not write a completion between the head and the tail.
            let cqe = unsafe {
                self.cq
                    .ptr
                    .as_ptr()
                    .add(offset)
                    .cast::<io_uring_cqe>()
                    .read()
            };
            each(cqe.user_data.u64_(), cqe.res);
            at = at.wrapping_add(1);
        }
        // Release: the kernel may reuse the entries read above.
        head.store(at, Ordering::Release);
    }

    fn wake_then_wait(
        &mut self,
        wake: &AtomicU32,
        n: u32,
        wait: &AtomicU32,
        expected: u32,
        timeout: Option<Duration>,
    ) -> Result<Result<Outcome, Errno>, Unsupported> {
        let mut queued = 0;
        self.push(
            futex_sqe(IoringOp::FutexWake, wake, u64::from(n), WAKE),
            &mut queued,
        );
        self.push(
            futex_sqe(IoringOp::FutexWait, wait, u64::from(expected), WAIT),
            &mut queued,
        );
        self.publish(queued);
        let ts = timeout.map(|t| Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let arg = io_uring_getevents_arg {
            sigmask: io_uring_ptr::null(),
            sigmask_sz: 0,
            min_wait_usec: 0,
            ts: ts.as_ref().map_or(io_uring_ptr::null(), |ts| {
                io_uring_ptr::new(std::ptr::from_ref(ts).cast_mut().cast())
            }),
        };
        // SAFETY: both entries name words that live (the callers' references) until their
        // completions are reaped below, which happens before this function returns; `arg`
        // and `ts` outlive the call.
        let entered = unsafe {
            io_uring_enter_arg(
                &self.fd,
                queued,
                2,
                IoringEnterFlags::GETEVENTS | IoringEnterFlags::EXT_ARG,
                Some(&arg),
            )
        };
        if let Err(errno) = entered
            && errno != Errno::TIME
            && errno != Errno::INTR
        {
            // Not submitted, for a reason that is no outcome of a wait (the ring is unusable):
            // the ring goes, which cancels anything it still had, and the caller makes the
            // plain calls.
            return Err(Unsupported);
        }
        let mut woken = None;
        let mut waited = None;
        self.reap(|data, res| match data {
            WAKE => woken = Some(res),
            WAIT => waited = Some(res),
            _ => {}
        });
        if waited.is_none() {
            // Timed out or interrupted with the wait still armed: cancel it, and wait for it
            // to end (the cancel's completion and the wait's), so that no entry naming the
            // caller's word outlives this call.
            let mut queued = 0;
            let mut cancel = io_uring_sqe {
                opcode: IoringOp::AsyncCancel,
                ..Default::default()
            };
            cancel.addr_or_splice_off_in.user_data = io_uring_user_data::from_u64(WAIT);
            cancel.user_data = io_uring_user_data::from_u64(CANCEL);
            self.push(cancel, &mut queued);
            self.publish(queued);
            let mut submit = queued;
            while waited.is_none() || woken.is_none() {
                // SAFETY: as above; no extended argument.
                match unsafe { io_uring_enter(&self.fd, submit, 1, IoringEnterFlags::GETEVENTS) } {
                    Ok(_) | Err(Errno::INTR) => submit = 0,
                    // Dropping the ring cancels the wait.
                    Err(_) => return Err(Unsupported),
                }
                self.reap(|data, res| match data {
                    WAKE => woken = Some(res),
                    WAIT => waited = Some(res),
                    _ => {}
                });
            }
            // The wait's own outcome, if it ended before the cancel; else the reason it was
            // cancelled.
            if waited == Some(-Errno::CANCELED.raw_os_error()) {
                waited = Some(if entered.is_err_and(|e| e == Errno::INTR) {
                    -Errno::INTR.raw_os_error()
                } else {
                    -Errno::TIME.raw_os_error()
                });
            }
        }
        while woken.is_none() {
            // The wake completes at submission; its completion may trail the wait's.
            // SAFETY: nothing is submitted; the entries in flight name live words (as above).
            let entered = unsafe { io_uring_enter(&self.fd, 0, 1, IoringEnterFlags::GETEVENTS) };
            if let Err(errno) = entered
                && errno != Errno::INTR
            {
                return Err(Unsupported);
            }
            self.reap(|data, res| {
                if data == WAKE {
                    woken = Some(res);
                }
            });
        }
        let (Some(woken), Some(waited)) = (woken, waited) else {
            unreachable!("both completions were reaped above");
        };
        if is_unsupported(woken) || is_unsupported(waited) {
            // The caller does both again with the plain calls. Had the wake been done, a wake
            // too many is harmless (R11: wakeups may be spurious).
            return Err(Unsupported);
        }
        let woken = usize::try_from(woken).unwrap_or(0);
        let outcome = match waited {
            0 => Waited::Woken,
            res if res == -Errno::AGAIN.raw_os_error() => Waited::ValueChanged,
            res if res == -Errno::TIME.raw_os_error() => Waited::TimedOut,
            res if res == -Errno::INTR.raw_os_error() => Waited::Interrupted,
            res => return Ok(Err(Errno::from_raw_os_error(-res))),
        };
        Ok(Ok((woken, outcome)))
    }
}

/// A futex entry: `op` on `word`, with `value` (the expected value of a wait, the count of a
/// wake).
fn futex_sqe(op: IoringOp, word: &AtomicU32, value: u64, data: u64) -> io_uring_sqe {
    let mut sqe = io_uring_sqe {
        opcode: op,
        fd: FUTEX2_SIZE_U32,
        ..Default::default()
    };
    sqe.addr_or_splice_off_in.addr = io_uring_ptr::new(word.as_ptr().cast());
    sqe.off_or_addr2.off = value;
    sqe.addr3_or_cmd.addr3.addr3 = MATCH_ANY;
    sqe.user_data = io_uring_user_data::from_u64(data);
    sqe
}

/// Whether a completion's result says the kernel does not know the operation.
fn is_unsupported(res: i32) -> bool {
    [Errno::INVAL, Errno::NOSYS, Errno::OPNOTSUPP]
        .iter()
        .any(|errno| res == -errno.raw_os_error())
}

use std::sync::atomic::Ordering;
