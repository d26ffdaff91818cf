//! The test peer (`plugin::test_peer`): a well-behaved plugin process for hub-transport's
//! integration tests, run as the test binary itself (see `super`). It attaches with [`Peer::from_env`], greets the host with an inline
//! frame (`msg_id` [`HELLO`], payload its process id, little endian), then runs the mode its
//! command line names:
//!
//! - `echo N`: receive N frames; each must carry the checksum of its payload in `msg_id`; send
//!   each back with the same metadata and payload (inline, or copied into a loaned slot).
//! - `send SIZE N`: send N frames of SIZE bytes, frame `i` filled from seed `i`, with
//!   `msg_id` = the payload's checksum and `channel_id` = `i`, zero copy (loan, fill, send).
//! - `wait-gone`: block in `recv` until the host leaves; succeed on `Disconnect::HostGone`.
//!
//! Exit status 0 on success, 2 with a message on standard error otherwise. Every wait has a
//! watchdog, so the process never outlives a test that forgot it.

use std::time::Duration;

use super::pattern;

use hub_transport::{Disconnect, FrameMeta, Peer, RecvError, RecvTimeoutError, SendCopyError};

/// `msg_id` of the greeting.
const HELLO: u64 = u64::MAX - 1;
/// The longest any single wait may take.
const WATCHDOG: Duration = Duration::from_secs(30);

/// Run the mode `args` names; the process's exit status.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("test peer {args:?}: {message}");
            2
        }
    }
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["grow-mapping", fd, reservation, grown, at, mark] = args.as_slice() {
        return grow_mapping(
            fd,
            number(reservation)?,
            number(grown)?,
            number(at)?,
            number(mark)?,
        );
    }
    let peer = Peer::from_env().map_err(|e| format!("attach: {e}"))?;
    let hello = FrameMeta {
        msg_id: HELLO,
        ..FrameMeta::default()
    };
    peer.send(hello, &std::process::id().to_le_bytes())
        .map_err(|e| format!("hello: {e}"))?;
    match args.as_slice() {
        ["echo", n] => echo(&peer, number(n)?),
        ["send", size, n] => send(&peer, number(size)? as usize, number(n)?),
        ["wait-gone"] => wait_gone(&peer),
        _ => Err(
            "usage: echo N | send SIZE N | wait-gone | grow-mapping FD RESERVATION LEN AT MARK"
                .into(),
        ),
    }
}

fn echo(peer: &Peer, n: u64) -> Result<(), String> {
    for k in 0..n {
        let frame = peer
            .recv_timeout(WATCHDOG)
            .map_err(|e| format!("recv {k}: {e}"))?;
        let meta = *frame.meta();
        let sum = pattern::checksum(frame.payload());
        if sum != meta.msg_id {
            return Err(format!(
                "frame {k} of {} bytes: checksum {sum:#x}, expected {:#x}",
                frame.len(),
                meta.msg_id
            ));
        }
        if frame.is_inline() {
            peer.send(meta, frame.payload())
        } else {
            let mut loan = peer.loan(frame.len()).map_err(|e| format!("loan: {e}"))?;
            loan.as_mut_slice().copy_from_slice(frame.payload());
            drop(frame);
            peer.send_loan(meta, loan).map_err(SendCopyError::from)
        }
        .map_err(|e| format!("echo {k}: {e}"))?;
    }
    Ok(())
}

fn send(peer: &Peer, size: usize, n: u64) -> Result<(), String> {
    super::send_patterns(peer, n, |_| size)
}

fn wait_gone(peer: &Peer) -> Result<(), String> {
    match peer.recv_timeout(WATCHDOG) {
        Err(RecvTimeoutError::Failed(RecvError::Disconnected(Disconnect::HostGone))) => {}
        other => return Err(format!("expected HostGone, got {other:?}")),
    }
    match peer.send(FrameMeta::default(), b"anyone?") {
        Err(SendCopyError::Disconnected(Disconnect::HostGone)) => Ok(()),
        other => Err(format!(
            "send after goodbye: expected HostGone, got {other:?}"
        )),
    }
}

/// No hub: take the inherited segment descriptor `fd`, check that it is sealed and was taken
/// up with close-on-exec, map it over `reservation` bytes, grow the file to `grown` bytes and
/// write `mark` at `at`, for the parent to see without remapping (mapping tests).
fn grow_mapping(fd: &str, reservation: u64, grown: u64, at: u64, mark: u64) -> Result<(), String> {
    use hub_transport::mapping::{SegmentFile, SegmentMapping, parse_fd};
    let fd = parse_fd(fd).ok_or("bad descriptor number")?;
    // SAFETY: the parent left this descriptor open for us and nothing else here knows it.
    let file = unsafe { SegmentFile::from_raw_inherited(fd) }.map_err(|e| e.to_string())?;
    if !file.is_shrink_sealed().map_err(|e| e.to_string())? {
        return Err("the inherited segment is not sealed against shrinking".into());
    }
    let flags = rustix::io::fcntl_getfd(file.fd()).map_err(|e| e.to_string())?;
    if !flags.contains(rustix::io::FdFlags::CLOEXEC) {
        return Err("the inherited descriptor was not taken up with close-on-exec".into());
    }
    let mapping = SegmentMapping::new(file, reservation as usize).map_err(|e| e.to_string())?;
    mapping.grow_to(grown as usize).map_err(|e| e.to_string())?;
    hub_alloc::shared::Shared::new(&mapping)
        .u64_at(at as usize)
        .ok_or("the mark lies outside the grown file")?
        .store(mark, std::sync::atomic::Ordering::Release);
    Ok(())
}
