//! The segment's backing file and its mapping: one of the few modules of this crate allowed
//! `unsafe`.
//!
//! A [`SegmentFile`] is the file that holds a hub: by default an anonymous memfd (R14: nothing is
//! left in the file system after a crash, handed to peers by inheritance or `SCM_RIGHTS`), or a
//! named file created `O_EXCL` with mode 0600 and unlinked when its creator drops it. Either way
//! it only ever grows.
//!
//! A [`SegmentMapping`] maps a file read-write over a fixed virtual reservation larger than the
//! file (R8): the base address never changes, so no pointer into the segment is ever invalidated
//! by growth. The bytes between the end of the file and the end of the reservation fault
//! (`SIGBUS`) until the file grows; nothing here ever touches them, because every access is
//! bounded by [`SegmentMapping::len`], which never exceeds the file's length (the segment's
//! fixed words and rings by the layout's initial size, which the segment checked `len`
//! reached when it was made). A
//! [`ReadOnlyMapping`] is the same for an inspector that must not write.
//!
//! # Growth
//!
//! [`SegmentFile::grow_to`] extends the file with `fallocate(fd, 0, new_len - 1, 1)`: the kernel
//! raises the file size to `new_len` only when that is larger, under the inode lock, so two
//! participants growing at once can never cut each other (an `fstat`-then-`ftruncate` sequence
//! could). Allocating the last byte only commits one page (one block on a disk file system); the
//! rest of the file stays a hole, so an idle hub keeps only the pages it touched (R8). A file
//! system without `fallocate` makes growth fail with [`MappingError::Grow`] rather than fall back
//! to a racy truncate. A memfd is additionally sealed with `F_SEAL_SHRINK` (and `F_SEAL_SEAL`,
//! so no participant can add `F_SEAL_GROW` later): no process can shrink it, whatever it does.
//!
//! # Length seen by each process
//!
//! A mapping caches the file's length in an atomic. It is refreshed from `fstat` by
//! [`SegmentMapping::grow_to`] and [`SegmentMapping::refresh_len`], and only ever goes up, so a
//! length read from it is always safe to use. When *another* process grows the file, the cached
//! length lags until this process refreshes it: a read past the cached length returns `None`
//! even though the bytes exist. The protocol publishes growth in the segment itself
//! (`current_size`, `extent_offsets`); a participant that sees a published offset beyond its
//! length calls `refresh_len` (or `grow_to` of the needed length, which refreshes) first.
//!
//! # What the operating system can still do
//!
//! A named file cannot be sealed (only memfds can), so a process of the same user could
//! `truncate` it behind the hub's back; pages past the new end then raise `SIGBUS` in every
//! process that touches them. That is a crash, never a silent read of other memory; the default
//! anonymous segment does not have this hazard.
//!
//! # The holder's lock
//!
//! Whether the host still lives is an operating-system fact, never a word of the segment (any
//! peer can write those, R4). The host takes a [`HolderLock`] ([`SegmentFile::lock_as_holder`]):
//! an exclusive `flock` on an open file description of its own, which no peer shares, so no
//! peer can unlock it. The kernel drops it when the host drops it or dies. A peer asks with a
//! [`HolderProbe`] ([`SegmentFile::holder_probe`]): a non-blocking shared `flock` on a
//! description of the peer's own, which fails exactly while the host holds its lock.
//!
//! # Reads
//!
//! [`SegmentBytes`] on a mapping copies integers out with atomic loads (`Acquire`): a naturally
//! aligned 1, 2, 4 or 8 byte read is a single atomic load, anything else is read byte by byte
//! with `AtomicU8` loads. No Rust reference to shared memory is ever created (R4). These reads
//! are meant for headers and tables, never for a payload that another part of this process
//! holds as a slice.
//!
//! The atomics here are always `std`'s, even under `cfg(loom)`: they act on a real mapping,
//! which loom cannot model (loom models run over heap regions).

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use hub_alloc::{GrowError, Region};
use hub_layout::SegmentBytes;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FallocateFlags, FileType, FlockOperation, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::{Errno, FdFlags};

/// The permission bits of every segment file this module creates (R14).
pub const SEGMENT_MODE: u32 = 0o600;

/// Why a segment file could not be created, opened, grown or mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MappingError {
    /// Creating the backing file failed: `memfd_create`, `open(O_CREAT | O_EXCL)` (for example
    /// because the path already exists), setting its mode, or sizing it.
    #[error("could not create segment file {what}: {source}")]
    CreateFailed {
        /// The memfd name or the path, and the step that failed.
        what: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Opening an existing segment file by path failed.
    #[error("could not open segment file {}: {source}", path.display())]
    OpenFailed {
        /// The path given.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// An inherited file descriptor is negative, not open, or could not be inspected.
    #[error("inherited file descriptor {fd} is not usable: {source}")]
    BadFd {
        /// The descriptor number given.
        fd: RawFd,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The descriptor or path does not refer to a regular file (a memfd is one).
    #[error("the segment must be a regular file or memfd, found {file_type}")]
    NotAFile {
        /// What it is instead.
        file_type: String,
    },
    /// Sealing a memfd against shrinking, or reading its seals, failed.
    #[error("could not seal the segment memfd: {source}")]
    Seal {
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// `fstat` of the segment file failed.
    #[error("could not stat the segment file: {source}")]
    Stat {
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file could not be extended to the requested length (disk or memory full, a file
    /// system without `fallocate`, a file too large, ...).
    #[error("could not grow the segment file to {requested} bytes: {source}")]
    Grow {
        /// Length asked for.
        requested: u64,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// Duplicating the file descriptor failed (too many open files, ...).
    #[error("could not duplicate the segment file descriptor: {source}")]
    Dup {
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// `mmap` of the reservation failed (address space exhausted, a read-only descriptor mapped
    /// for writing, ...).
    #[error("could not map a reservation of {reservation} bytes: {source}")]
    Map {
        /// The reservation asked for.
        reservation: usize,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A mapping needs a reservation of at least one byte.
    #[error("a segment mapping needs a non-empty reservation")]
    EmptyReservation,
    /// The requested length lies beyond the mapping's fixed reservation: growing the file would
    /// not make those bytes reachable (R8).
    #[error("cannot grow to {requested} bytes: the reservation is {reservation} bytes")]
    BeyondReservation {
        /// Length asked for.
        requested: u64,
        /// The fixed reservation.
        reservation: usize,
    },
    /// The operation needs write access but the file was opened read-only.
    #[error("cannot {operation}: the segment file is open read-only")]
    ReadOnly {
        /// What was attempted.
        operation: &'static str,
    },
    /// The holder's lock ([`SegmentFile::lock_as_holder`]) could not be taken, or a private
    /// open file description for it or for a [`HolderProbe`] could not be made.
    #[error("segment holder lock: {what}: {source}")]
    Lock {
        /// The step that failed.
        what: &'static str,
        /// What the system said.
        #[source]
        source: io::Error,
    },
}

fn io_err(errno: Errno) -> io::Error {
    io::Error::from(errno)
}

/// How an existing segment file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write: what a host or a peer needs.
    ReadWrite,
    /// Read only: what an inspector needs. Only a [`ReadOnlyMapping`] can map such a file.
    ReadOnly,
}

/// Facts about a segment file from one `fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentFileInfo {
    /// The file's length in bytes.
    pub len: u64,
    /// Bytes actually allocated to the file (`st_blocks * 512`); far below `len` for a sparse
    /// segment.
    pub allocated: u64,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// The file that backs a segment: an anonymous memfd or a named file.
///
/// The descriptor is close-on-exec; hand it to a child with
/// [`inheritable_fd`](Self::inheritable_fd) and take it up there with
/// [`from_raw_inherited`](Self::from_raw_inherited), or send it with `SCM_RIGHTS` and take it up
/// with [`from_fd`](Self::from_fd). The file never shrinks (see the module documentation).
///
/// ```
/// use hub_transport::mapping::SegmentFile;
/// let file = SegmentFile::create_anonymous("hub-doc", 4096)?;
/// assert_eq!(file.len()?, 4096);
/// assert!(file.is_shrink_sealed()?);
/// assert_eq!(file.grow_to(1 << 20)?, 1 << 20);
/// assert_eq!(file.grow_to(4096)?, 1 << 20); // never shrinks
/// # Ok::<(), hub_transport::mapping::MappingError>(())
/// ```
#[derive(Debug)]
pub struct SegmentFile {
    fd: OwnedFd,
    writable: bool,
    /// The path of a named file, for information and for the owner's unlink.
    path: Option<PathBuf>,
    /// Set for the creator of a named file: `(st_dev, st_ino)` of the file it created, so that
    /// Drop unlinks the path only while it still names that file.
    unlink_on_drop: Option<(u64, u64)>,
}

impl SegmentFile {
    /// Create an anonymous segment: a memfd (`MFD_CLOEXEC | MFD_ALLOW_SEALING`, and
    /// `MFD_NOEXEC_SEAL` where the kernel knows it), mode 0600, `initial_len` bytes long (a hole:
    /// nothing is allocated), sealed with `F_SEAL_SHRINK | F_SEAL_SEAL`.
    ///
    /// `name` only shows in `/proc/PID/fd` and `/proc/PID/maps` (as `memfd:NAME`); it must not
    /// contain a NUL byte and may be at most 249 bytes.
    ///
    /// # Errors
    /// [`MappingError::CreateFailed`] when `memfd_create`, `fchmod` or `ftruncate` fail (a bad
    /// name, too many open files, `initial_len` too large); [`MappingError::Seal`] when sealing
    /// fails.
    pub fn create_anonymous(name: &str, initial_len: u64) -> Result<Self, MappingError> {
        let create_failed = |step: &str, errno: Errno| MappingError::CreateFailed {
            what: format!("memfd {name:?} ({step})"),
            source: io_err(errno),
        };
        let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        // MFD_NOEXEC_SEAL (Linux 6.3) makes the memfd non-executable for good; older kernels
        // reject the flag with EINVAL, and then the plain flags do.
        let fd = match rustix::fs::memfd_create(name, base | MemfdFlags::NOEXEC_SEAL) {
            Ok(fd) => fd,
            Err(Errno::INVAL) => rustix::fs::memfd_create(name, base)
                .map_err(|e| create_failed("memfd_create", e))?,
            Err(e) => return Err(create_failed("memfd_create", e)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(SEGMENT_MODE))
            .map_err(|e| create_failed("fchmod", e))?;
        rustix::fs::ftruncate(&fd, initial_len).map_err(|e| create_failed("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL)
            .map_err(|e| MappingError::Seal { source: io_err(e) })?;
        Ok(Self {
            fd,
            writable: true,
            path: None,
            unlink_on_drop: None,
        })
    }

    /// Create a named segment at `path`: `O_CREAT | O_EXCL`, mode 0600 (whatever the umask),
    /// `initial_len` bytes long (a hole). The file is unlinked when this value is dropped (if
    /// the path still names it); clones and other openers never unlink it. A named file cannot
    /// be sealed: see the module documentation.
    ///
    /// # Errors
    /// [`MappingError::CreateFailed`] when the path exists already (`AlreadyExists`), its
    /// directory is missing or not writable, or sizing fails (then the new file is removed);
    /// [`MappingError::Stat`] when the new file cannot be inspected.
    pub fn create_named(path: impl AsRef<Path>, initial_len: u64) -> Result<Self, MappingError> {
        let path = path.as_ref();
        let create_failed = |step: &str, errno: Errno| MappingError::CreateFailed {
            what: format!("{} ({step})", path.display()),
            source: io_err(errno),
        };
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(SEGMENT_MODE),
        )
        .map_err(|e| create_failed("open", e))?;
        // From here on the file is ours: remove it again if anything fails.
        let sized = rustix::fs::fchmod(&fd, Mode::from_raw_mode(SEGMENT_MODE))
            .map_err(|e| create_failed("fchmod", e))
            .and_then(|()| {
                rustix::fs::ftruncate(&fd, initial_len).map_err(|e| create_failed("ftruncate", e))
            })
            .and_then(|()| {
                rustix::fs::fstat(&fd).map_err(|e| MappingError::Stat { source: io_err(e) })
            });
        match sized {
            Ok(stat) => Ok(Self {
                fd,
                writable: true,
                path: Some(path.to_path_buf()),
                unlink_on_drop: Some((stat.st_dev, stat.st_ino)),
            }),
            Err(err) => {
                let _ = rustix::fs::unlink(path);
                Err(err)
            }
        }
    }

    /// Whether the hub file at `path` is *stale*: a finished hub (it starts with the magic)
    /// whose creator is gone. The creator holds its
    /// [`HolderLock`] from the moment it created the file for as long as it lives, and the
    /// kernel drops the lock when it exits however it exits; so a file nobody holds the lock
    /// on was left by a host that died (SIGKILL, a crash) before it could remove it.
    ///
    /// # Errors
    /// As [`open_path`](Self::open_path) (no file there: [`MappingError::OpenFailed`]).
    pub fn is_stale_at(path: impl AsRef<Path>) -> Result<bool, MappingError> {
        let file = Self::open_path(path, Access::ReadOnly)?;
        Ok(file.is_finished_hub() && !file.holder_probe()?.is_held())
    }

    /// Whether the file starts with the hub's magic: a hub whose creator finished building
    /// it (R1). Anything else (another kind of file, a hub left half-built) is never stale:
    /// no hub code removes a file it cannot tell is a hub.
    fn is_finished_hub(&self) -> bool {
        let mut magic = [0u8; 8];
        matches!(rustix::io::pread(&self.fd, &mut magic, 0), Ok(8))
            && magic == hub_layout::HUB_MAGIC
    }

    /// Take over the stale hub file at `path` (see [`is_stale_at`](Self::is_stale_at)): take
    /// its holder's lock, which succeeds only while nobody holds it, remove the path while the
    /// lock is held (so that no other process takes the same file over at the same time), and
    /// return the lock. Keep it until the new file at `path` is created and locked.
    ///
    /// # Errors
    /// [`MappingError::Lock`] when a live holder has the lock (the hub is in use);
    /// [`MappingError::OpenFailed`]; [`MappingError::CreateFailed`] when the path cannot be
    /// removed.
    pub fn take_over_stale(path: impl AsRef<Path>) -> Result<HolderLock, MappingError> {
        let path = path.as_ref();
        let file = Self::open_path(path, Access::ReadOnly)?;
        if !file.is_finished_hub() {
            return Err(MappingError::Lock {
                what: "take over the stale hub",
                source: io::Error::other("the file is not a finished hub"),
            });
        }
        let lock = file.lock_as_holder()?;
        // Only while the path still names the file whose lock is ours.
        let ours =
            rustix::fs::fstat(&file.fd).map_err(|e| MappingError::Stat { source: io_err(e) })?;
        let now = rustix::fs::stat(path).map_err(|e| MappingError::Stat { source: io_err(e) })?;
        if (ours.st_dev, ours.st_ino) != (now.st_dev, now.st_ino) {
            return Err(MappingError::Lock {
                what: "take over the stale hub",
                source: io::Error::other("the path names another file now"),
            });
        }
        rustix::fs::unlink(path).map_err(|e| MappingError::CreateFailed {
            what: format!("{} (unlink the stale hub)", path.display()),
            source: io_err(e),
        })?;
        Ok(lock)
    }

    /// Open an existing segment file by path (attach by path, or an inspector with
    /// [`Access::ReadOnly`]). The result never unlinks the file.
    ///
    /// # Errors
    /// [`MappingError::OpenFailed`] when the path cannot be opened; [`MappingError::NotAFile`]
    /// when it is not a regular file; [`MappingError::Stat`].
    pub fn open_path(path: impl AsRef<Path>, access: Access) -> Result<Self, MappingError> {
        let path = path.as_ref();
        let mode = match access {
            Access::ReadWrite => OFlags::RDWR,
            Access::ReadOnly => OFlags::RDONLY,
        };
        let fd = rustix::fs::open(path, mode | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            MappingError::OpenFailed {
                path: path.to_path_buf(),
                source: io_err(e),
            }
        })?;
        let mut file = Self::from_fd(fd)?;
        file.path = Some(path.to_path_buf());
        Ok(file)
    }

    /// Take ownership of an open descriptor of a segment file (received with `SCM_RIGHTS`, or
    /// already wrapped). Whether it is writable is read from its open flags.
    ///
    /// # Errors
    /// [`MappingError::NotAFile`] when it is not a regular file or memfd (a socket, a
    /// directory, ...), [`MappingError::Stat`] or [`MappingError::BadFd`] when it cannot be
    /// inspected. The descriptor is closed on error.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, MappingError> {
        let raw = fd.as_raw_fd();
        let writable = check_segment_fd(fd.as_fd(), raw)?;
        Ok(Self {
            fd,
            writable,
            path: None,
            unlink_on_drop: None,
        })
    }

    /// Take up a descriptor inherited from the parent process, typically one made by
    /// [`inheritable_fd`](Self::inheritable_fd) whose number arrived in an environment variable
    /// or on the command line. The descriptor is checked (open, a regular file or memfd) and
    /// then made close-on-exec, so it does not leak further into this process's own children.
    ///
    /// # Safety
    /// `fd` must be an open descriptor that nothing else in this process owns or will close: on
    /// success the returned value owns it and closes it when dropped. A negative number, or one
    /// that is not open, is reported as [`MappingError::BadFd`] rather than undefined behaviour,
    /// as long as no other thread opens that number concurrently.
    ///
    /// # Errors
    /// [`MappingError::BadFd`] when `fd` is negative or not open, [`MappingError::NotAFile`] when
    /// it is not a regular file or memfd, [`MappingError::Stat`]. On error the descriptor is
    /// left as it was, neither closed nor modified.
    pub unsafe fn from_raw_inherited(fd: RawFd) -> Result<Self, MappingError> {
        if fd < 0 {
            return Err(MappingError::BadFd {
                fd,
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        // SAFETY: `fd` is non-negative, and the caller promises it is open and not owned
        // elsewhere, so it stays open for the life of this borrow, which ends in this function.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let writable = check_segment_fd(borrowed, fd)?;
        rustix::io::fcntl_setfd(borrowed, FdFlags::CLOEXEC).map_err(|e| MappingError::BadFd {
            fd,
            source: io_err(e),
        })?;
        Ok(Self {
            // SAFETY: the caller transfers ownership of the open descriptor `fd` to us; it was
            // just checked to be open.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            writable,
            path: None,
            unlink_on_drop: None,
        })
    }

    /// A duplicate of the descriptor *without* close-on-exec, for a child process to inherit:
    /// spawn the child while the returned value is alive, tell it the number
    /// (`as_raw_fd()`), then drop it in the parent. The child calls
    /// [`from_raw_inherited`](Self::from_raw_inherited).
    ///
    /// Any process spawned by any thread while it is alive inherits it too; in a process that
    /// spawns from several threads, spawn segment children from one place.
    ///
    /// # Errors
    /// [`MappingError::Dup`] when `dup` fails (too many open files).
    pub fn inheritable_fd(&self) -> Result<OwnedFd, MappingError> {
        // dup(2) never sets FD_CLOEXEC on the new descriptor.
        rustix::io::dup(&self.fd).map_err(|e| MappingError::Dup { source: io_err(e) })
    }

    /// A second handle to the same file with its own close-on-exec descriptor. It never unlinks
    /// a named file.
    ///
    /// # Errors
    /// [`MappingError::Dup`] when the descriptor cannot be duplicated.
    pub fn try_clone(&self) -> Result<Self, MappingError> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| MappingError::Dup { source: io_err(e) })?;
        Ok(Self {
            fd,
            writable: self.writable,
            path: self.path.clone(),
            unlink_on_drop: None,
        })
    }

    /// The descriptor, borrowed (to send it with `SCM_RIGHTS`, poll it, or inspect it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The path of a named segment; `None` for a memfd or a descriptor taken up from elsewhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the file was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Whether the file carries `F_SEAL_SHRINK`: true for every memfd this module creates,
    /// false for a named file (which cannot be sealed). A peer handed a descriptor can check it
    /// before trusting that nobody can shrink the segment.
    ///
    /// # Errors
    /// [`MappingError::Seal`] when the seals cannot be read for a reason other than the file
    /// not supporting seals.
    pub fn is_shrink_sealed(&self) -> Result<bool, MappingError> {
        match rustix::fs::fcntl_get_seals(&self.fd) {
            Ok(seals) => Ok(seals.contains(SealFlags::SHRINK)),
            Err(Errno::INVAL) => Ok(false),
            Err(e) => Err(MappingError::Seal { source: io_err(e) }),
        }
    }

    /// The file's current length in bytes (one `fstat`). Another process may grow it at any
    /// time, so the answer can only be too small, never too large.
    ///
    /// # Errors
    /// [`MappingError::Stat`] when `fstat` fails.
    pub fn len(&self) -> Result<u64, MappingError> {
        self.info().map(|info| info.len)
    }

    /// Whether the file is zero bytes long (one `fstat`).
    ///
    /// # Errors
    /// [`MappingError::Stat`] when `fstat` fails.
    pub fn is_empty(&self) -> Result<bool, MappingError> {
        self.len().map(|len| len == 0)
    }

    /// Length, allocated bytes and mode, from one `fstat`.
    ///
    /// # Errors
    /// [`MappingError::Stat`] when `fstat` fails.
    pub fn info(&self) -> Result<SegmentFileInfo, MappingError> {
        let stat =
            rustix::fs::fstat(&self.fd).map_err(|e| MappingError::Stat { source: io_err(e) })?;
        Ok(SegmentFileInfo {
            len: u64::try_from(stat.st_size).unwrap_or(0),
            allocated: u64::try_from(stat.st_blocks)
                .unwrap_or(0)
                .saturating_mul(512),
            mode: stat.st_mode & 0o7777,
        })
    }

    /// Make the file at least `new_len` bytes long, never shorter, and return its length
    /// afterwards (which may exceed `new_len` when it was already longer, or another process
    /// grew it further at the same time).
    ///
    /// Uses `fallocate` of the last byte: safe against concurrent growers in any process, and
    /// the file stays sparse (see the module documentation).
    ///
    /// # Errors
    /// [`MappingError::ReadOnly`] on a read-only file; [`MappingError::Grow`] when the system
    /// refuses (no space, no memory, a file system without `fallocate`, `new_len` beyond the
    /// largest file size); [`MappingError::Stat`].
    pub fn grow_to(&self, new_len: u64) -> Result<u64, MappingError> {
        let current = self.len()?;
        if current >= new_len {
            return Ok(current);
        }
        if !self.writable {
            return Err(MappingError::ReadOnly {
                operation: "grow the segment",
            });
        }
        // `new_len > current >= 0`, so `new_len - 1` cannot underflow. Mode 0 (no KEEP_SIZE):
        // the kernel sets the size to max(size, offset + len) under the inode lock.
        rustix::fs::fallocate(&self.fd, FallocateFlags::empty(), new_len - 1, 1).map_err(|e| {
            MappingError::Grow {
                requested: new_len,
                source: io_err(e),
            }
        })?;
        self.len()
    }

    /// A new open file description of this same file, private to the caller: nothing else in
    /// any process refers to it, so a `flock` on it is the caller's alone. It is made by
    /// opening `/proc/self/fd/N` (a memfd has no other name; for a named file this also
    /// survives a rename or an unlink of the path); where `/proc` is not mounted, a named file
    /// is opened by its path. Either way the result is checked to be the same file (device and
    /// inode) as this one.
    fn reopen_private(&self) -> Result<OwnedFd, MappingError> {
        let lock_err = |what, errno: Errno| MappingError::Lock {
            what,
            source: io_err(errno),
        };
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let proc_path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        let fd = match (
            rustix::fs::open(proc_path.as_str(), flags, Mode::empty()),
            &self.path,
        ) {
            (Ok(fd), _) => fd,
            (Err(_), Some(path)) => rustix::fs::open(path, flags | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| lock_err("open the segment's path again", e))?,
            (Err(e), None) => return Err(lock_err("open /proc/self/fd/N", e)),
        };
        let ours =
            rustix::fs::fstat(&self.fd).map_err(|e| MappingError::Stat { source: io_err(e) })?;
        let theirs =
            rustix::fs::fstat(&fd).map_err(|e| MappingError::Stat { source: io_err(e) })?;
        if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino) {
            return Err(MappingError::Lock {
                what: "open the segment again",
                source: io::Error::other("the path names another file now"),
            });
        }
        Ok(fd)
    }

    /// Take the holder's lock: an exclusive `flock` on a private open file description of this
    /// file (see [`HolderLock`]). The host takes it when it creates the hub and holds it for its
    /// life; peers ask the kernel about it with a [`HolderProbe`] (R12).
    ///
    /// # Errors
    /// [`MappingError::Lock`] when the private description cannot be made, or another holds
    /// the lock already (`WouldBlock`); [`MappingError::Stat`].
    pub fn lock_as_holder(&self) -> Result<HolderLock, MappingError> {
        let fd = self.reopen_private()?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            MappingError::Lock {
                what: "flock(LOCK_EX | LOCK_NB)",
                source: io_err(e),
            }
        })?;
        Ok(HolderLock { _fd: fd })
    }

    /// A probe of the holder's lock on this file, over an open file description of its own
    /// (see [`HolderProbe`]).
    ///
    /// # Errors
    /// [`MappingError::Dup`] when not even a duplicate of the descriptor can be made (too many
    /// open files).
    pub fn holder_probe(&self) -> Result<HolderProbe, MappingError> {
        // A description of its own when one can be made; else a duplicate of this one, whose
        // description other participants may share: the probe's own shared lock could then be
        // dropped by them, which never makes a probe report the lock released while it is held.
        let fd = match self.reopen_private() {
            Ok(fd) => fd,
            Err(_) => rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
                .map_err(|e| MappingError::Dup { source: io_err(e) })?,
        };
        Ok(HolderProbe { fd })
    }
}

/// The lock a segment's holder (the host) keeps for its life: an exclusive `flock` on an open
/// file description of the segment that is the holder's alone (made by reopening
/// `/proc/self/fd/N`; never the description peers inherit, so that none of them can unlock it).
///
/// The kernel drops the lock when the holder drops this value or its process dies, whatever
/// it dies of; no word of the segment, which any peer can write, decides it. Peers learn of it
/// with a [`HolderProbe`]. A process that `fork`s without `exec` shares the description with
/// its child, and the lock then lasts until both are done with it.
#[derive(Debug)]
pub struct HolderLock {
    /// Closing it (on drop) releases the lock.
    _fd: OwnedFd,
}

/// A participant's way to ask the kernel whether a segment's [`HolderLock`] is held: a
/// non-blocking shared `flock` on an open file description of the participant's own. It fails
/// while the exclusive lock is held, and succeeds (and is released at once) once the holder
/// dropped it or died.
#[derive(Debug)]
pub struct HolderProbe {
    fd: OwnedFd,
}

impl HolderProbe {
    /// Whether the holder's lock is held now. Two system calls when it is not, one when it is.
    ///
    /// An answer the kernel does not give plainly (an error other than "would block", such as
    /// `ENOLCK`) counts as held: a probe never reports the holder gone on a doubt.
    pub fn is_held(&self) -> bool {
        match rustix::fs::flock(&self.fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => {
                let _ = rustix::fs::flock(&self.fd, FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        }
    }
}

impl AsFd for SegmentFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for SegmentFile {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for SegmentFile {
    fn drop(&mut self) {
        let (Some(path), Some((dev, ino))) = (&self.path, self.unlink_on_drop) else {
            return;
        };
        // Unlink only while the path still names the file we created, not a file someone put
        // in its place. Errors cannot be reported from Drop; a leftover file is the worst case.
        if let Ok(stat) = rustix::fs::stat(path)
            && stat.st_dev == dev
            && stat.st_ino == ino
        {
            let _ = rustix::fs::unlink(path);
        }
    }
}

/// Check that `fd` is an open regular file (memfds are) and return whether it is writable.
fn check_segment_fd(fd: BorrowedFd<'_>, raw: RawFd) -> Result<bool, MappingError> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| MappingError::BadFd {
        fd: raw,
        source: io_err(e),
    })?;
    let stat = rustix::fs::fstat(fd).map_err(|e| MappingError::Stat { source: io_err(e) })?;
    let file_type = FileType::from_raw_mode(stat.st_mode);
    if file_type != FileType::RegularFile {
        return Err(MappingError::NotAFile {
            file_type: format!("{file_type:?}"),
        });
    }
    Ok((flags & OFlags::RWMODE) == OFlags::RDWR)
}

/// The mapped reservation and the cached length: what both mapping kinds share.
struct Mapped {
    map: MmapRaw,
    base: NonNull<u8>,
    reservation: usize,
    /// Bytes known to be backed by the file; never decreases, never exceeds `reservation`.
    len: AtomicU64,
}

impl Mapped {
    fn new(file: &SegmentFile, reservation: usize, writable: bool) -> Result<Self, MappingError> {
        if reservation == 0 {
            return Err(MappingError::EmptyReservation);
        }
        let map_failed = |source: io::Error| MappingError::Map {
            reservation,
            source,
        };
        let file_len = file.len()?;
        let mut options = MmapOptions::new();
        options.len(reservation);
        let map = if writable {
            options.map_raw(&file.fd)
        } else {
            options.map_raw_read_only(&file.fd)
        }
        .map_err(map_failed)?;
        let base = NonNull::new(map.as_mut_ptr())
            .filter(|base| (base.as_ptr() as usize).is_multiple_of(64))
            .ok_or_else(|| map_failed(io::Error::other("mmap returned a misaligned address")))?;
        Ok(Self {
            map,
            base,
            reservation,
            len: AtomicU64::new(clamp(file_len, reservation)),
        })
    }

    fn len(&self) -> usize {
        // The value never exceeds `reservation`, a usize.
        usize::try_from(self.len.load(Ordering::Acquire)).unwrap_or(self.reservation)
    }

    /// Raise the cached length to what the file has now (capped at the reservation).
    fn note_file_len(&self, file_len: u64) -> usize {
        let new = clamp(file_len, self.reservation);
        let old = self.len.fetch_max(new, Ordering::AcqRel);
        usize::try_from(old.max(new)).unwrap_or(self.reservation)
    }

    fn refresh(&self, file: &SegmentFile) -> Result<usize, MappingError> {
        Ok(self.note_file_len(file.len()?))
    }

    fn read_bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        if end > self.len() {
            return None;
        }
        // SAFETY: `offset + N <= len() <= reservation`, so the pointer stays inside the mapping.
        let ptr = unsafe { self.base.as_ptr().add(offset) };
        let mut out = [0u8; N];
        let fill = |out: &mut [u8; N], bytes: &[u8]| {
            for (dst, src) in out.iter_mut().zip(bytes) {
                *dst = *src;
            }
        };
        let addr = ptr as usize;
        // For every load below: the `N` bytes at `ptr` lie inside `[base, base + len())`, which
        // is mapped and backed by the file for as long as `self` lives (the file never shrinks:
        // a sealed memfd, and growth only by fallocate); each wide load is guarded by an
        // alignment check of `addr`; every access this crate makes to shared memory that may
        // race is atomic, and other processes are outside the Rust memory model.
        match N {
            8 if addr.is_multiple_of(8) => {
                // SAFETY: in bounds and 8-aligned, see above.
                let value = unsafe { AtomicU64::from_ptr(ptr.cast()) }.load(Ordering::Acquire);
                fill(&mut out, &value.to_ne_bytes());
            }
            4 if addr.is_multiple_of(4) => {
                // SAFETY: in bounds and 4-aligned, see above.
                let value = unsafe { AtomicU32::from_ptr(ptr.cast()) }.load(Ordering::Acquire);
                fill(&mut out, &value.to_ne_bytes());
            }
            2 if addr.is_multiple_of(2) => {
                // SAFETY: in bounds and 2-aligned, see above.
                let value = unsafe { AtomicU16::from_ptr(ptr.cast()) }.load(Ordering::Acquire);
                fill(&mut out, &value.to_ne_bytes());
            }
            _ => {
                for (i, dst) in out.iter_mut().enumerate() {
                    // SAFETY: `i < N`, so `ptr + i` is one of the in-bounds bytes above, and
                    // an `AtomicU8` needs no alignment.
                    *dst = unsafe { AtomicU8::from_ptr(ptr.add(i)) }.load(Ordering::Acquire);
                }
            }
        }
        Some(out)
    }
}

// SAFETY: `Mapped` is a `MmapRaw` (Send + Sync) plus its base pointer, a copy of what the
// `MmapRaw` gives, and atomics; the memory behind the pointer is shared by design and only ever
// reached through raw pointers and atomic operations, from any thread.
unsafe impl Send for Mapped {}
// SAFETY: as for Send: `&Mapped` exposes the pointer, the reservation and atomic loads only.
unsafe impl Sync for Mapped {}

impl fmt::Debug for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapped")
            .field("base", &self.base)
            .field("reservation", &self.reservation)
            .field("len", &self.len())
            .field("mapped", &self.map.len())
            .finish()
    }
}

fn clamp(file_len: u64, reservation: usize) -> u64 {
    file_len.min(reservation as u64)
}

/// A read-write mapping of a segment file over a fixed virtual reservation (R8).
///
/// `base()` never moves; [`len`](Self::len) is the part of the reservation known to be backed
/// by the file, and grows with [`grow_to`](Self::grow_to) or, for growth done by another
/// process, [`refresh_len`](Self::refresh_len). Implements [`Region`] for the allocator and
/// [`SegmentBytes`] for validation.
///
/// ```
/// use hub_layout::SegmentBytes;
/// use hub_transport::mapping::{SegmentFile, SegmentMapping};
///
/// let file = SegmentFile::create_anonymous("hub-doc", 4096)?;
/// let mapping = SegmentMapping::new(file, 1 << 20)?;
/// let base = mapping.base();
/// assert_eq!(mapping.len(), 4096);
/// assert_eq!(mapping.read_u64(0), Some(0));
/// assert_eq!(mapping.read_u64(4096), None); // past the end of the file
/// assert_eq!(mapping.grow_to(8192)?, 8192);
/// assert_eq!(mapping.read_u64(4096), Some(0));
/// assert_eq!(mapping.base(), base); // growth never remaps
/// assert!(mapping.grow_to(2 << 20).is_err()); // beyond the reservation
/// # Ok::<(), hub_transport::mapping::MappingError>(())
/// ```
#[derive(Debug)]
pub struct SegmentMapping {
    mapped: Mapped,
    file: SegmentFile,
}

impl SegmentMapping {
    /// Map `file` read-write over a reservation of `reservation` bytes. The file may be shorter
    /// (the rest faults until it grows) or longer (only the first `reservation` bytes are
    /// reachable through this mapping).
    ///
    /// # Errors
    /// [`MappingError::ReadOnly`] when the file was opened read-only (use
    /// [`ReadOnlyMapping`]); [`MappingError::EmptyReservation`]; [`MappingError::Map`] when
    /// `mmap` fails; [`MappingError::Stat`].
    pub fn new(file: SegmentFile, reservation: usize) -> Result<Self, MappingError> {
        if !file.writable {
            return Err(MappingError::ReadOnly {
                operation: "map the segment for writing",
            });
        }
        let mapped = Mapped::new(&file, reservation, true)?;
        Ok(Self { mapped, file })
    }

    /// First byte of the mapping; the same for the mapping's whole life, page aligned.
    pub fn base(&self) -> NonNull<u8> {
        self.mapped.base
    }

    /// Bytes of address space reserved; the mapping never reaches past them.
    pub fn reservation(&self) -> usize {
        self.mapped.reservation
    }

    /// Bytes known to be backed by the file, as of this process's last look (see
    /// [`refresh_len`](Self::refresh_len)). Never decreases.
    pub fn len(&self) -> usize {
        self.mapped.len()
    }

    /// Whether no byte is usable yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-read the file's length, so that growth done by another process becomes usable here,
    /// and return the new [`len`](Self::len) (capped at the reservation).
    ///
    /// # Errors
    /// [`MappingError::Stat`] when `fstat` fails.
    pub fn refresh_len(&self) -> Result<usize, MappingError> {
        self.mapped.refresh(&self.file)
    }

    /// Make at least `new_len` bytes usable, growing the file if needed (never shrinking it, in
    /// any process), and return the new length. No syscall when `new_len <= len()`.
    ///
    /// # Errors
    /// [`MappingError::BeyondReservation`] when `new_len > reservation()`;
    /// [`MappingError::Grow`] or [`MappingError::Stat`] when the system refuses.
    pub fn grow_to(&self, new_len: usize) -> Result<usize, MappingError> {
        let len = self.len();
        if new_len <= len {
            return Ok(len);
        }
        if new_len > self.reservation() {
            return Err(MappingError::BeyondReservation {
                requested: new_len as u64,
                reservation: self.reservation(),
            });
        }
        let file_len = self.file.grow_to(new_len as u64)?;
        Ok(self.mapped.note_file_len(file_len))
    }

    /// The backing file (for its descriptor, path or seals).
    pub fn file(&self) -> &SegmentFile {
        &self.file
    }
}

// SAFETY: `base` is the page-aligned (checked >= 64-aligned) start of a read-write `MAP_SHARED`
// mapping of `reservation` bytes that lives as long as `self` and never moves. `len` only grows
// (fetch_max), never exceeds `reservation`, and is only raised to a length `fstat` reported, so
// every byte below it is backed by the file; the file never shrinks because memfds are sealed
// with F_SEAL_SHRINK and growth uses fallocate, which never lowers the size (a named file
// truncated by an outside process raises SIGBUS, a crash, see the module docs). A successful
// `grow_to(n)` leaves `len() >= n` (the file is at least `n` and `n <= reservation`).
unsafe impl Region for SegmentMapping {
    fn base(&self) -> NonNull<u8> {
        self.mapped.base
    }

    fn reservation(&self) -> usize {
        self.mapped.reservation
    }

    fn len(&self) -> usize {
        self.mapped.len()
    }

    fn grow_to(&self, new_len: usize) -> Result<usize, GrowError> {
        SegmentMapping::grow_to(self, new_len).map_err(|err| match err {
            MappingError::BeyondReservation { reservation, .. } => GrowError::BeyondReservation {
                requested: new_len,
                reservation,
            },
            other => GrowError::Backing {
                requested: new_len,
                message: other.to_string(),
            },
        })
    }

    fn refresh_len(&self) -> usize {
        // An fstat that fails leaves the known length, which is never wrong, only stale.
        SegmentMapping::refresh_len(self).unwrap_or_else(|_| self.mapped.len())
    }
}

impl SegmentBytes for SegmentMapping {
    fn len(&self) -> usize {
        self.mapped.len()
    }

    fn read_bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.mapped.read_bytes(offset)
    }
}

/// A read-only mapping of a segment file over a fixed reservation, for an inspector: it can
/// read (through [`SegmentBytes`]) and follow growth with [`refresh_len`](Self::refresh_len),
/// never write or grow.
///
/// ```
/// use hub_layout::SegmentBytes;
/// use hub_transport::mapping::{ReadOnlyMapping, SegmentFile};
///
/// let file = SegmentFile::create_anonymous("hub-doc", 4096)?;
/// let view = ReadOnlyMapping::new(file.try_clone()?, 1 << 20)?;
/// assert_eq!(view.read_u32(8), Some(0));
/// file.grow_to(65536)?;
/// assert_eq!(view.read_u32(60000), None);
/// assert_eq!(view.refresh_len()?, 65536);
/// assert_eq!(view.read_u32(60000), Some(0));
/// # Ok::<(), hub_transport::mapping::MappingError>(())
/// ```
#[derive(Debug)]
pub struct ReadOnlyMapping {
    mapped: Mapped,
    file: SegmentFile,
}

impl ReadOnlyMapping {
    /// Map `file` (opened read-only or read-write) readable only, over `reservation` bytes.
    ///
    /// # Errors
    /// [`MappingError::EmptyReservation`]; [`MappingError::Map`] when `mmap` fails;
    /// [`MappingError::Stat`].
    pub fn new(file: SegmentFile, reservation: usize) -> Result<Self, MappingError> {
        let mapped = Mapped::new(&file, reservation, false)?;
        Ok(Self { mapped, file })
    }

    /// First byte of the mapping; never moves.
    pub fn base(&self) -> NonNull<u8> {
        self.mapped.base
    }

    /// Bytes of address space reserved.
    pub fn reservation(&self) -> usize {
        self.mapped.reservation
    }

    /// Bytes known to be backed by the file, as of the last look. Never decreases.
    pub fn len(&self) -> usize {
        self.mapped.len()
    }

    /// Whether no byte is readable yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-read the file's length and return the new [`len`](Self::len).
    ///
    /// # Errors
    /// [`MappingError::Stat`] when `fstat` fails.
    pub fn refresh_len(&self) -> Result<usize, MappingError> {
        self.mapped.refresh(&self.file)
    }

    /// The backing file.
    pub fn file(&self) -> &SegmentFile {
        &self.file
    }
}

impl SegmentBytes for ReadOnlyMapping {
    fn len(&self) -> usize {
        self.mapped.len()
    }

    fn read_bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.mapped.read_bytes(offset)
    }
}

/// The descriptor number of `fd` as a decimal string, the form a child finds in an environment
/// variable and gives to [`SegmentFile::from_raw_inherited`] after parsing it with
/// [`parse_fd`].
pub fn fd_to_env(fd: &impl AsRawFd) -> OsString {
    OsString::from(fd.as_raw_fd().to_string())
}

/// Parse a descriptor number written by [`fd_to_env`]; `None` unless it is a non-negative
/// decimal number.
///
/// ```
/// use hub_transport::mapping::parse_fd;
/// assert_eq!(parse_fd("7"), Some(7));
/// assert_eq!(parse_fd("-1"), None);
/// assert_eq!(parse_fd("seven"), None);
/// ```
pub fn parse_fd(text: impl AsRef<std::ffi::OsStr>) -> Option<RawFd> {
    text.as_ref()
        .to_str()?
        .parse::<RawFd>()
        .ok()
        .filter(|fd| *fd >= 0)
}

#[cfg(test)]
mod tests;
