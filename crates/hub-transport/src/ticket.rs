//! Tickets: everything a peer process needs to attach to a hub.
//!
//! The host's [`add_peer`](crate::Host::add_peer) reserves a peer entry and returns a
//! [`Ticket`]: the peer id, the entry's epoch, and the segment (a close-on-exec descriptor of
//! the anonymous memfd, or the path of a named segment). [`Ticket::apply`] puts it in a
//! [`Command`]'s environment as [`TICKET_ENV`] and has the child, and only the child, inherit
//! the descriptor; the child calls [`Peer::from_env`](crate::Peer::from_env). In the same
//! process, a thread attaches with [`Peer::attach`](crate::Peer::attach).
//! [`Host::spawn_peer`](crate::Host::spawn_peer) does all of it.
//!
//! No inheritable descriptor of the segment ever exists in the host's process: the ticket's
//! descriptor is close-on-exec, and the flag is cleared in the forked child between `fork` and
//! `exec` (a `pre_exec` hook), so a process another thread spawns meanwhile never inherits it.
//!
//! The ticket also carries the entry's two readiness descriptors (see [`Host::ready_fd`](
//! crate::Host::ready_fd)), inherited the same way.
//!
//! The environment value reads `peer=3,epoch=7,fd=5` or `peer=3,epoch=7,path=/dev/shm/x`,
//! followed by `,ready=8,notify=9` when the readiness descriptors come with it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use crate::segment::AttachError;

/// The environment variable a ticket travels in.
pub const TICKET_ENV: &str = "HUB_TICKET";

/// Where the segment is.
#[derive(Debug)]
pub(crate) enum Source {
    /// A close-on-exec descriptor, which a child inherits through [`Ticket::apply`]'s
    /// `pre_exec` hook (shared with it, so that it stays open while the command may spawn).
    Fd(Arc<OwnedFd>),
    /// The path of a named segment.
    Path(PathBuf),
}

/// A reserved peer entry and the way to the segment: what a peer needs to attach (R9).
///
/// The ticket holds a close-on-exec descriptor of an anonymous segment; a command it was
/// [applied](Self::apply) to holds it too, until the command is dropped, and gives it to each
/// child it spawns (only to those). [`Host::spawn_peer`](crate::Host::spawn_peer) is the
/// usual way to use one.
///
/// ```no_run
/// use hub_transport::{Host, HubConfig};
/// use std::process::Command;
///
/// let host = Host::create(&HubConfig::default())?;
/// let ticket = host.add_peer()?;
/// let mut child = Command::new("my-plugin");
/// ticket.apply(&mut child);
/// let child = child.spawn()?;
/// drop(ticket);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Ticket {
    pub(crate) peer: u16,
    pub(crate) epoch: u64,
    pub(crate) source: Source,
    /// The entry's readiness descriptors for this life (close-on-exec, like the segment's).
    pub(crate) ready: crate::ready::EntryFds,
}

impl Ticket {
    /// The peer id the ticket reserves.
    pub fn peer_id(&self) -> u16 {
        self.peer
    }

    /// The life of the entry the ticket reserves: its index and epoch. Frames sent to it
    /// never reach a later tenant of the entry.
    pub fn id(&self) -> crate::frame::PeerId {
        crate::frame::PeerId::new(self.peer, self.epoch)
    }

    /// The epoch of the entry when it was reserved: a ticket of an earlier life of the same id
    /// is refused.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The value of [`TICKET_ENV`] for a child. A ticket of an anonymous segment names
    /// descriptors, which the child must inherit ([`apply`](Self::apply)), the readiness
    /// descriptors with the segment's; a path ticket names none, so it may be passed by any
    /// means (the peer's event-loop waits then go through a waiter thread).
    pub fn env_value(&self) -> String {
        match &self.source {
            Source::Fd(_) => self.value(true),
            Source::Path(_) => self.value(false),
        }
    }

    /// The value, with the readiness descriptors if `with_ready`.
    fn value(&self, with_ready: bool) -> String {
        let (peer, epoch) = (self.peer, self.epoch);
        let source = match &self.source {
            Source::Fd(fd) => format!("fd={}", fd.as_raw_fd()),
            Source::Path(path) => format!("path={}", path.display()),
        };
        if !with_ready {
            return format!("peer={peer},epoch={epoch},{source}");
        }
        let [ready, notify] = self.readiness_fds().map(|fd| fd.as_raw_fd());
        format!("peer={peer},epoch={epoch},{source},ready={ready},notify={notify}")
    }

    /// The entry's two readiness descriptors for this life, which [`apply`](Self::apply)
    /// hands to the child: the one the host writes (the peer's), then the one the peer writes
    /// (the host's). Both are close-on-exec here.
    pub fn readiness_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.ready.to_peer.as_fd(), self.ready.to_host.as_fd()]
    }

    /// Put the ticket in `command`'s environment, and have each child the command spawns
    /// inherit the segment's descriptor and the two readiness descriptors: a `pre_exec` hook
    /// clears their close-on-exec flags in the child, after the fork, so they are never
    /// inheritable in this process. The command keeps the descriptors open (it shares them
    /// with the ticket) until it is dropped.
    pub fn apply<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.env(TICKET_ENV, self.value(true));
        let segment = match &self.source {
            Source::Fd(fd) => Some(Arc::clone(fd)),
            Source::Path(_) => None,
        };
        let ready = self.ready.clone();
        // SAFETY: the hook runs in the forked child before `exec`, where only async-signal-safe
        // calls are allowed: it makes at most three `fcntl` system calls on descriptors the
        // closure keeps open (`Arc`s shared with the ticket, read, never dropped or cloned
        // there), and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let inherit = |fd: BorrowedFd<'_>| {
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
                        .map_err(std::io::Error::from)
                };
                if let Some(fd) = &segment {
                    inherit(fd.as_fd())?;
                }
                inherit(ready.to_peer.as_fd())?;
                inherit(ready.to_host.as_fd())
            });
        }
        command
    }
}

/// A ticket as a child reads it from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSpec {
    /// The peer id.
    pub peer: u16,
    /// The epoch.
    pub epoch: u64,
    /// Where the segment is.
    pub source: SpecSource,
    /// The entry's inherited readiness descriptors, if the ticket carried them; without them
    /// the peer's event-loop waits fall back to a waiter thread.
    pub ready: Option<ReadySpec>,
}

/// The readiness descriptor numbers a [`TicketSpec`] names (see
/// [`Host::ready_fd`](crate::Host::ready_fd)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadySpec {
    /// Written by the host when a frame may wait for the peer: the peer's readiness descriptor.
    pub ready: RawFd,
    /// Written by the peer when a frame may wait for the host.
    pub notify: RawFd,
}

/// Where a [`TicketSpec`] says the segment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecSource {
    /// An inherited descriptor number.
    Fd(RawFd),
    /// A path.
    Path(PathBuf),
}

impl TicketSpec {
    /// Parse a ticket's environment value.
    ///
    /// # Errors
    /// [`AttachError::BadTicket`] when it is not of the form [`Ticket::env_value`] writes.
    ///
    /// ```
    /// use hub_transport::{SpecSource, TicketSpec};
    /// let spec = TicketSpec::parse("peer=3,epoch=7,fd=5")?;
    /// assert_eq!((spec.peer, spec.epoch, spec.source), (3, 7, SpecSource::Fd(5)));
    /// let spec = TicketSpec::parse("peer=3,epoch=7,fd=5,ready=8,notify=9")?;
    /// assert_eq!(spec.ready.map(|r| (r.ready, r.notify)), Some((8, 9)));
    /// assert!(TicketSpec::parse("peer=3").is_err());
    /// # Ok::<(), hub_transport::AttachError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, AttachError> {
        let bad = || AttachError::BadTicket(format!("{text:?}"));
        let rest = text.strip_prefix("peer=").ok_or_else(bad)?;
        let (peer, rest) = rest.split_once(",epoch=").ok_or_else(bad)?;
        let peer = peer.parse().map_err(|_| bad())?;
        let (epoch, source) = rest.split_once(',').ok_or_else(bad)?;
        let epoch = epoch.parse().map_err(|_| bad())?;
        // `,ready=R,notify=N` ends the value when present (a path never holds that tail: it is
        // parsed from the right, and a path that ends so must be given without it).
        let (source, ready) = match source.rsplit_once(",ready=") {
            Some((source, fds)) => {
                let (ready, notify) = fds.split_once(",notify=").ok_or_else(bad)?;
                let fd = |text: &str| crate::mapping::parse_fd(text).ok_or_else(bad);
                (
                    source,
                    Some(ReadySpec {
                        ready: fd(ready)?,
                        notify: fd(notify)?,
                    }),
                )
            }
            None => (source, None),
        };
        let source = if let Some(fd) = source.strip_prefix("fd=") {
            SpecSource::Fd(crate::mapping::parse_fd(fd).ok_or_else(bad)?)
        } else if let Some(path) = source.strip_prefix("path=") {
            SpecSource::Path(PathBuf::from(path))
        } else {
            return Err(bad());
        };
        Ok(Self {
            peer,
            epoch,
            source,
            ready,
        })
    }

    /// The ticket in [`TICKET_ENV`].
    ///
    /// # Errors
    /// [`AttachError::BadTicket`] when the variable is missing or malformed.
    pub fn from_env() -> Result<Self, AttachError> {
        let value = std::env::var(TICKET_ENV)
            .map_err(|_| AttachError::BadTicket(format!("{TICKET_ENV} is not set")))?;
        Self::parse(&value)
    }
}
