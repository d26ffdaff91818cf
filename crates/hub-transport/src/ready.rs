//! Readiness descriptors: how a side that sleeps in an event loop (tokio, mio, a raw `epoll`)
//! rather than on a futex word is woken (R11 extended).
//!
//! Each life of a peer entry gets two `eventfd`s, made by the host when it reserves the entry
//! and handed to the peer with its [`Ticket`](crate::Ticket):
//!
//! - **to the peer**: the host writes it after a push into the peer's receive ring, when the
//!   peer announced itself asleep on it; it is the peer's readiness descriptor;
//! - **to the host**: the peer writes it after a push into its send ring, likewise.
//!
//! Each side's readiness descriptor is an `epoll` set ([`ReadySet`]) of the eventfds written to
//! it (the host: every entry's to-host one, so one descriptor for all its peers) and a timer
//! that ticks every 100 ms, so that a waiter looks again even if nobody writes.
//!
//! Only the waker's *announcement* decides whether anything is written (the waiter bit of the
//! doorbell, and the entry's [`READY_WAITERS`](crate::pad::READY_WAITERS) word saying which side
//! sleeps on a descriptor): a busy loop on both sides makes no system call at all. The order
//! that makes a lost wakeup impossible is the doorbell's (see [`crate::signal`]); the loom model
//! `readiness_never_loses_a_wakeup` checks it on the real code.
//!
//! A hostile peer holds only its own entry's two descriptors: it can wake the host spuriously
//! or silence its own wakeups, nothing else, and only for its life: its recovery takes its
//! to-host descriptor out of the host's set, and a new life of the entry gets new ones.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::event::epoll;
use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;

/// One `eventfd`, non-blocking and close-on-exec: written to wake, read to rearm.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// A new event counter at 0.
    pub fn new() -> io::Result<Arc<Self>> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Arc::new(Self(fd)))
    }

    /// Whether `fd` is an eventfd (the kernel's name of the file behind the descriptor).
    pub fn is_eventfd(fd: BorrowedFd<'_>) -> bool {
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        std::fs::read_link(path).is_ok_and(|link| link.as_os_str() == "anon_inode:[eventfd]")
    }

    /// Take up `fd`, an eventfd this process owns (see [`is_eventfd`](Self::is_eventfd)):
    /// made non-blocking and close-on-exec.
    pub fn from_owned(fd: OwnedFd) -> io::Result<Arc<Self>> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)?;
        Ok(Arc::new(Self(fd)))
    }

    /// Wake whoever watches the descriptor. A counter the other side saturated (`EAGAIN`) or
    /// any other failure is ignored: the waiter looks again at its next wait slice anyway.
    pub fn notify(&self) {
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The two descriptors of one life of a peer entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryFds {
    /// Written by the host, watched by the peer.
    pub to_peer: Arc<EventFd>,
    /// Written by the peer, watched by the host (through the host's [`ReadySet`]).
    pub to_host: Arc<EventFd>,
}

impl EntryFds {
    /// A fresh pair.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            to_peer: EventFd::new()?,
            to_host: EventFd::new()?,
        })
    }
}

/// How often a readiness set reads as ready with nothing written: the slice after which an
/// event-loop waiter looks again (the waiter bits live in words any peer can clear, and a host
/// or peer that goes writes nothing).
pub(crate) const READY_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// The timer's key in a [`ReadySet`].
const TIMER: u64 = u64::MAX;

/// A readiness descriptor: an `epoll` set of eventfds (the host's: every entry's to-host one;
/// a peer's: its to-peer one) and a periodic timer ([`READY_TICK`]), all registered
/// edge-triggered, so the eventfds are never read: one `epoll_wait` that does not wait consumes
/// the set's readiness (and a tick is read from the timer, which re-arms it).
#[derive(Debug)]
pub(crate) struct ReadySet {
    epoll: OwnedFd,
    timer: OwnedFd,
    /// Per member slot (a peer id on the host), the eventfd in the set, if any.
    members: Vec<Mutex<Option<Arc<EventFd>>>>,
}

impl ReadySet {
    /// A set with room for `slots` eventfds, and its timer.
    pub fn new(slots: usize) -> io::Result<Self> {
        use rustix::time::{
            Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
            timerfd_settime,
        };
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: READY_TICK.as_nanos() as _,
        };
        timerfd_settime(
            &timer,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: tick,
                it_value: tick,
            },
        )?;
        epoll::add(
            &epoll,
            &timer,
            epoll::EventData::new_u64(TIMER),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        Ok(Self {
            epoll,
            timer,
            members: (0..slots).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Put `fd` in the set at `slot`, in place of what was there (a previous life's).
    pub fn install(&self, slot: usize, fd: Arc<EventFd>) -> io::Result<()> {
        let Some(member) = self.members.get(slot) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let mut member = member.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = member.take() {
            // The old life's peer may still hold its copy, which keeps the registration alive
            // unless it is removed explicitly.
            match epoll::delete(&self.epoll, &*old) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(error) => return Err(error.into()),
            }
        }
        epoll::add(
            &self.epoll,
            &*fd,
            epoll::EventData::new_u64(slot as u64),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        *member = Some(fd);
        Ok(())
    }

    /// Take the eventfd at `slot` out of the set (its life is over).
    pub fn remove(&self, slot: usize) {
        if let Some(member) = self.members.get(slot) {
            let mut member = member.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = member.take() {
                // Only fails if it is not there (NOENT), which is what is wanted.
                let _ = epoll::delete(&self.epoll, &*old);
            }
        }
    }

    /// Read the timer's expirations if any, which re-arms it (a periodic timerfd fires again
    /// only once read): for a waiter that does not [`drain`](Self::drain) the set.
    pub fn rearm_tick(&self) {
        let mut ticks = [0u8; 8];
        let _ = rustix::io::read(&self.timer, &mut ticks);
    }

    /// Write the eventfd at `slot`, if any (for the host's bridge thread).
    pub fn notify(&self, slot: usize) {
        if let Some(member) = self.members.get(slot)
            && let Some(fd) = &*member.lock().unwrap_or_else(PoisonError::into_inner)
        {
            fd.notify();
        }
    }

    /// Consume the set's pending edges (`epoll_wait` without waiting), so that the descriptor
    /// reads as not ready until a member is written or the timer ticks again.
    pub fn drain(&self) {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 34];
        let now = rustix::time::Timespec::default();
        while let Ok(n) = epoll::wait(&self.epoll, &mut events[..], Some(&now)) {
            // A periodic timerfd is re-armed only when its expirations are read.
            if events[..n].iter().any(|event| event.data.u64() == TIMER) {
                let mut ticks = [0u8; 8];
                let _ = rustix::io::read(&self.timer, &mut ticks);
            }
            if n < events.len() {
                return;
            }
        }
    }
}

impl AsFd for ReadySet {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

/// The waiter thread of a peer whose ticket brought no readiness descriptors: it sleeps on the
/// peer's futex word on the event loop's behalf and writes the peer's own descriptor whenever
/// the word's sequence moves (R11). It keeps the waiter bit set, so that every frame the host
/// sends costs a wake call: the price of not having the host's descriptor.
#[derive(Debug)]
pub(crate) struct ReadyBridge {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ReadyBridge {
    /// Start the thread for `peer`'s incoming bell, the word at byte `field` of its entry (a
    /// link's `in_bell_field`), writing `fd`.
    pub fn start(
        segment: &Arc<crate::segment::Segment>,
        peer: u16,
        field: usize,
        fd: Arc<EventFd>,
    ) -> io::Result<Self> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let segment = Arc::clone(segment);
        let stopped = Arc::clone(&stop);
        // The first announcement is made here, before the attach returns: a ring between the
        // peer's first look at its ring and the thread's start moves the sequence past it, and
        // is passed on (announced in the thread, it would be taken as the starting point).
        let mut last = crate::signal::Doorbell::new(segment.peer_word32(peer, field)).announce();
        std::thread::Builder::new()
            .name("hub-ready-bridge".into())
            .spawn(move || {
                let word = segment.peer_word32(peer, field);
                let bell = crate::signal::Doorbell::new(word);
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    // R11: announce, then compare with the last value seen: any ring since then
                    // moved the sequence, and is passed on before sleeping.
                    let now = bell.announce();
                    if now >> 1 != last >> 1 {
                        fd.notify();
                        last = now;
                        continue;
                    }
                    let expected = now | crate::signal::WAITER_BIT;
                    let slice = std::time::Duration::from_millis(100);
                    let _ = crate::futex::wait(word, expected, Some(slice));
                }
            })?;
        Ok(Self { stop })
    }

    /// Ask the thread to end (within its 100 ms slice); it holds the segment until then.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
