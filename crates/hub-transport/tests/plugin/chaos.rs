//! The chaos peer (`plugin::chaos`): a badly behaved plugin (and a killable host) for
//! hub-transport's failure and attack tests, run as the test binary itself (see `super`).
//!
//! A peer attaches with [`Peer::from_env`]. With `hello` as its first argument it first makes a
//! round trip (an inline frame, `msg_id` [`HELLO`], payload its process id, little endian, which
//! the host echoes back), then runs the mode its command line names:
//!
//! - `hold KEEP`: receive KEEP frames and keep them (in flight to it), leave whatever else the
//!   host sent in its ring, send two slot frames to the host (in flight to the host), loan two
//!   slots of different classes and keep them (allocated; one half-written), print `READY`, and
//!   block until killed.
//! - `recv-block`: print `READY`, block in `recv`; exit 0 on `HostGone`, 10 on `PeerNotActive`
//!   (evicted), 11 on another error, 12 when a frame came.
//! - `send-block`: send slot frames until the ring is full, print `READY`, then go on sending
//!   until a send blocks for good; exit 0 on `HostGone`, 11 on another error.
//! - `stream N`: send N frames of varied sizes (inline and in slots of every class but the
//!   largest), frame `i` filled from seed `i`, `msg_id` its checksum, `channel_id` = `i`; then
//!   leave (goodbye).
//! - `echo-then exit|abort|goodbye`: receive one frame, echo it, receive a second (the host's
//!   go-ahead, once it has the echo), then exit without goodbye holding that frame (`exit`), die
//!   of SIGABRT holding it and a loan (`abort`), or leave (`goodbye`).
//! - `garbage SEED head|descriptor`: scribble on its own send ring until killed: first a head
//!   or a descriptor, alone until the host evicts it for that, then at random: descriptors with random bytes, slot references that name
//!   no slot, stale generations, inline lengths past 16, offsets and lengths past any slot, and
//!   heads that jump past the capacity or go backwards; its bell is rung after each. Its `Peer`
//!   never sends, so the scribbler is the ring's only producer. (It never forges a descriptor
//!   naming a slot another peer has in flight to the host: see `garbage`.)
//!
//! - `forge CLASS COUNT GENERATION`: push one descriptor (100 bytes) naming each of slots
//!   0..COUNT of CLASS at GENERATION into its own send ring, print `READY`, block until killed:
//!   a peer forging frames that other peers have in flight to the host.
//!
//! - `poke`: a hostile plugin under a test's remote control. It attaches (its `Peer` never sends
//!   or receives), maps the segment a second time on its own, then reads commands on standard
//!   input, one a line, and answers each with one line on standard output: `w32 OFFSET VALUE`
//!   and `w64 OFFSET VALUE` (an atomic store at that byte offset of the segment; `ok`), `r32
//!   OFFSET` and `r64 OFFSET` (the value, in decimal), `wake OFFSET` (the futex word there moved
//!   on by 2 and woken; `ok`), `scribble SEED COUNT START LEN` (COUNT random `u32` stores at
//!   random aligned offsets of `[START, START + LEN)`; `ok`), `send LEN` (a frame of LEN bytes
//!   filled from seed LEN, `msg_id` its checksum, sent through its `Peer`; `ok`), `pid` (its
//!   process id), `goodbye`
//!   (its `Peer` dropped: the entry goes Dying; `ok`), `exit CODE` (exits at once, no goodbye).
//!   A command it cannot do answers `error: ...`. It exits 0 at the end of its input.
//!   `tests/common/poke.rs` drives it.
//!
//! - `from-env-twice`: with the first `Peer` alive, a second `Peer::from_env` must be
//!   `AttachError::DescriptorTaken` naming the ticket's descriptor, which stays open (files
//!   opened afterwards never get its number); the first `Peer` then makes the `hello` round trip
//!   (the host echoes it); once it is dropped, a third `from_env` is refused the same way.
//!   Exit 0 when all of that holds.
//!
//! And the host: `host PATH N RING_CAPACITY` creates a named hub at PATH, reserves N peers,
//! prints each ticket's environment value on a line of its own, then `HOST READY`; it echoes
//! the `hello` of each of the N peers and then blocks until killed.
//!
//! Exit status 0 on success, 2 with a message on standard error otherwise; 3 when the watchdog
//! fires (a process no test killed in time), so that none outlives a test run that forgot it.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::pattern::{self, Rng};
use hub_alloc::shared::Shared;
use hub_layout::{
    DescRingHeader, HeaderSnapshot, INLINE_PAYLOAD_SLOT, MsgDescHot, PeerEntry, SegmentLayout,
    encode_slot_ref,
};
use hub_transport::mapping::{SegmentFile, SegmentMapping};
use hub_transport::ring::RawRing;
use hub_transport::signal::Doorbell;
use hub_transport::{
    Disconnect, FrameMeta, Host, HubConfig, Peer, RecvError, SendCopyError, SpecSource, TicketSpec,
    TryRecvError, TrySendCopyError,
};

/// `msg_id` of the greeting.
const HELLO: u64 = u64::MAX - 1;
/// How long any chaos process lives at most.
const WATCHDOG: Duration = Duration::from_secs(60);

/// Run the mode `args` names; the process's exit status.
pub fn main(args: &[String]) -> i32 {
    // A safety net, not a synchronisation: a process that no test killed ends by itself.
    std::thread::spawn(|| {
        std::thread::sleep(WATCHDOG);
        eprintln!("chaos peer: watchdog fired after {WATCHDOG:?}");
        std::process::exit(3);
    });
    match run(args) {
        Ok(code) => i32::from(code),
        Err(message) => {
            eprintln!("chaos peer {args:?}: {message}");
            2
        }
    }
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

fn ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
}

/// Block this thread until the process is killed (or the watchdog fires).
fn block_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn run(args: &[String]) -> Result<u8, String> {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if let ["host", path, n, capacity] = args.as_slice() {
        return host(path, number(n)?, number(capacity)?);
    }
    if let ["forge", class, count, generation] = args.as_slice() {
        let class = u16::try_from(number(class)?).map_err(|e| format!("class: {e}"))?;
        let count = u32::try_from(number(count)?).map_err(|e| format!("count: {e}"))?;
        let generation = u32::try_from(number(generation)?).map_err(|e| format!("gen: {e}"))?;
        return forge(class, count, generation);
    }
    if args.as_slice() == ["poke"] {
        return poke();
    }
    if let ["garbage", seed, first] = args.as_slice() {
        let head_first = match *first {
            "head" => true,
            "descriptor" => false,
            other => return Err(format!("garbage: {other:?} is neither head nor descriptor")),
        };
        return garbage(number(seed)?, head_first);
    }
    let peer = Peer::from_env().map_err(|e| format!("attach: {e}"))?;
    if args.first() == Some(&"hello") {
        args.remove(0);
        hello(&peer)?;
    }
    match args.as_slice() {
        ["hold", keep] => hold(&peer, number(keep)?),
        ["recv-block"] => Ok(recv_block(&peer)),
        ["send-block"] => send_block(&peer),
        ["stream", n] => stream(&peer, number(n)?).map(|()| 0),
        ["echo-then", how] => echo_then(peer, how),
        ["from-env-twice"] => from_env_twice(peer),
        _ => Err(
            "usage: [hello] hold KEEP | recv-block | send-block | stream N | \
                  echo-then exit|abort|goodbye | from-env-twice | garbage SEED head|descriptor | forge CLASS COUNT GENERATION | host PATH N RING_CAPACITY"
                .into(),
        ),
    }
}

fn hello(peer: &Peer) -> Result<(), String> {
    let meta = FrameMeta {
        msg_id: HELLO,
        ..FrameMeta::default()
    };
    peer.send(meta, &std::process::id().to_le_bytes())
        .map_err(|e| format!("hello: {e}"))?;
    let echo = peer
        .recv_timeout(WATCHDOG)
        .map_err(|e| format!("hello's echo: {e}"))?;
    if echo.meta().msg_id != HELLO || echo.payload() != std::process::id().to_le_bytes() {
        return Err(format!("hello's echo is {echo:?}"));
    }
    Ok(())
}

fn hold(peer: &Peer, keep: u64) -> Result<u8, String> {
    let mut kept = Vec::new();
    for k in 0..keep {
        kept.push(
            peer.recv_timeout(WATCHDOG)
                .map_err(|e| format!("recv {k}: {e}"))?,
        );
    }
    for (k, size) in [2000, 300_000].into_iter().enumerate() {
        let mut loan = peer.loan(size).map_err(|e| format!("loan: {e}"))?;
        pattern::fill(loan.as_mut_slice(), k as u64);
        let meta = FrameMeta {
            msg_id: pattern::checksum(loan.as_slice()),
            ..FrameMeta::default()
        };
        peer.send_loan(meta, loan)
            .map_err(|e| format!("send {k}: {e}"))?;
    }
    let whole = peer.loan(100).map_err(|e| format!("loan: {e}"))?;
    let mut half = peer.loan(40_000).map_err(|e| format!("loan: {e}"))?;
    half.as_mut_slice()[..20_000].fill(0x5a);
    ready();
    let _held = (kept, whole, half);
    block_forever()
}

fn recv_block(peer: &Peer) -> u8 {
    ready();
    match peer.recv() {
        Err(RecvError::Disconnected(Disconnect::HostGone)) => 0,
        Err(RecvError::Disconnected(Disconnect::PeerNotActive { .. })) => 10,
        Err(error) => {
            eprintln!("chaos peer recv-block: {error}");
            11
        }
        Ok(frame) => {
            eprintln!("chaos peer recv-block: a frame came: {frame:?}");
            12
        }
    }
}

fn send_block(peer: &Peer) -> Result<u8, String> {
    let payload = [0x11u8; 1000];
    let mut sent = 0u64;
    loop {
        match peer.try_send(FrameMeta::default(), &payload) {
            Ok(()) => sent += 1,
            Err(TrySendCopyError::Full) => break,
            Err(error) => return Err(format!("try_send after {sent}: {error}")),
        }
    }
    ready();
    // The host may still make room (it reads until every peer has said hello): send until a
    // send blocks for good.
    loop {
        match peer.send(FrameMeta::default(), &payload) {
            Ok(()) => sent += 1,
            Err(SendCopyError::Disconnected(Disconnect::HostGone)) => return Ok(0),
            Err(error) => {
                eprintln!("chaos peer send-block: after {sent} frames, {error}");
                return Ok(11);
            }
        }
    }
}

/// The size of frame `i` of a stream: inline, and slots of the four smaller classes.
fn stream_size(i: u64) -> usize {
    const SIZES: [usize; 10] = [0, 7, 16, 17, 1000, 1024, 5000, 16_384, 70_000, 300_000];
    SIZES[(i % SIZES.len() as u64) as usize]
}

fn stream(peer: &Peer, n: u64) -> Result<(), String> {
    super::send_patterns(peer, n, stream_size)
}

fn echo_then(peer: Peer, how: &str) -> Result<u8, String> {
    let frame = peer
        .recv_timeout(WATCHDOG)
        .map_err(|e| format!("recv: {e}"))?;
    peer.send(*frame.meta(), frame.payload())
        .map_err(|e| format!("echo: {e}"))?;
    drop(frame);
    // The host's go-ahead, once it has the echo (frames of a peer that dies are dropped with
    // its rings, R10): kept, so that it is in flight to this peer when it goes.
    let go = peer
        .recv_timeout(WATCHDOG)
        .map_err(|e| format!("recv the go-ahead: {e}"))?;
    match how {
        // No destructor runs: no goodbye; the host learns of the exit from the pidfd.
        "exit" => std::process::exit(0),
        "abort" => {
            let loan = peer.loan(5000).map_err(|e| format!("loan: {e}"))?;
            std::mem::forget((loan, go));
            std::process::abort()
        }
        "goodbye" => {
            drop(go);
            drop(peer);
            Ok(0)
        }
        other => Err(format!("echo-then {other:?}")),
    }
}

/// A named hub at `path` with `n` reserved peers; the tickets on standard output.
fn host(path: &str, n: u64, capacity: u64) -> Result<u8, String> {
    let n = u16::try_from(n).map_err(|e| format!("N: {e}"))?;
    let host = Host::create(
        &HubConfig::new()
            .max_peers(n)
            .ring_capacity(u32::try_from(capacity).map_err(|e| format!("capacity: {e}"))?)
            .path(path),
    )
    .map_err(|e| format!("create: {e}"))?;
    {
        let mut out = std::io::stdout().lock();
        for _ in 0..n {
            let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
            let _ = writeln!(out, "{}", ticket.env_value());
        }
        let _ = writeln!(out, "HOST READY");
        let _ = out.flush();
    }
    let mut greeted = 0;
    while greeted < n {
        let frame = host
            .recv_timeout(WATCHDOG)
            .map_err(|e| format!("recv: {e}"))?;
        if frame.meta().msg_id == HELLO {
            host.send(frame.peer(), *frame.meta(), frame.payload())
                .map_err(|e| format!("echo hello: {e}"))?;
            greeted += 1;
        }
    }
    block_forever()
}

/// A second mapping of the segment a ticket in the environment names, taken before
/// `Peer::from_env` takes the inherited descriptor, and the attached peer.
fn attach_with_mapping(reservation: usize) -> Result<(Peer, Arc<SegmentMapping>), String> {
    let spec = TicketSpec::from_env().map_err(|e| format!("ticket: {e}"))?;
    let file = match &spec.source {
        SpecSource::Fd(fd) => {
            // SAFETY: the ticket names this descriptor as the hub's, inherited for this process
            // and open until `Peer::from_env` below takes it; it is only borrowed to duplicate
            // it.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
            let owned = borrowed
                .try_clone_to_owned()
                .map_err(|e| format!("dup: {e}"))?;
            SegmentFile::from_fd(owned)
        }
        SpecSource::Path(path) => {
            SegmentFile::open_path(path, hub_transport::mapping::Access::ReadWrite)
        }
    }
    .map_err(|e| format!("segment file: {e}"))?;
    let peer = Peer::from_env().map_err(|e| format!("attach: {e}"))?;
    let len = usize::try_from(file.len().map_err(|e| format!("len: {e}"))?)
        .map_err(|e| format!("len: {e}"))?;
    let mapping =
        SegmentMapping::new(file, reservation.max(len)).map_err(|e| format!("map: {e}"))?;
    Ok((peer, Arc::new(mapping)))
}

/// The `poke` mode: raw reads and writes at offsets a test names, until the end of the input.
fn poke() -> Result<u8, String> {
    use std::io::BufRead;
    use std::sync::atomic::Ordering::SeqCst;
    // Address space for any segment a test makes (growth never moves the mapping, R8).
    let (peer, mapping) = attach_with_mapping(1 << 36)?;
    let mut peer = Some(peer);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        // The segment may have grown since the last command.
        let _ = mapping.refresh_len();
        let shared = Shared::new(&*mapping);
        let words: Vec<&str> = line.split_whitespace().collect();
        let at32 = |offset: &str| -> Result<&std::sync::atomic::AtomicU32, String> {
            shared
                .u32_at(usize::try_from(number(offset)?).map_err(|e| e.to_string())?)
                .ok_or_else(|| format!("no aligned u32 at {offset}"))
        };
        let at64 = |offset: &str| -> Result<&std::sync::atomic::AtomicU64, String> {
            shared
                .u64_at(usize::try_from(number(offset)?).map_err(|e| e.to_string())?)
                .ok_or_else(|| format!("no aligned u64 at {offset}"))
        };
        let answer: Result<String, String> = match words.as_slice() {
            ["w32", offset, value] => at32(offset).and_then(|word| {
                let value = u32::try_from(number(value)?).map_err(|e| e.to_string())?;
                word.store(value, SeqCst);
                Ok("ok".into())
            }),
            ["w64", offset, value] => at64(offset).and_then(|word| {
                word.store(number(value)?, SeqCst);
                Ok("ok".into())
            }),
            ["r32", offset] => at32(offset).map(|word| word.load(SeqCst).to_string()),
            ["r64", offset] => at64(offset).map(|word| word.load(SeqCst).to_string()),
            ["wake", offset] => at32(offset).map(|word| {
                Doorbell::new(word).ring();
                "ok".into()
            }),
            ["scribble", seed, count, start, len] => (|| {
                let mut rng = Rng::new(number(seed)?);
                let (start, len) = (number(start)?, number(len)?);
                let words = len / 4;
                if words == 0 {
                    return Err("an empty range".to_string());
                }
                for _ in 0..number(count)? {
                    let offset = (start + 4 * rng.below(words)) & !3;
                    if let Some(word) = shared.u32_at(offset as usize) {
                        word.store(rng.next() as u32, SeqCst);
                    }
                }
                Ok("ok".into())
            })(),
            ["send", len] => (|| {
                let peer = peer.as_ref().ok_or("the peer said goodbye")?;
                let len = usize::try_from(number(len)?).map_err(|e| e.to_string())?;
                let mut loan = peer.loan(len).map_err(|e| format!("loan: {e}"))?;
                pattern::fill(loan.as_mut_slice(), len as u64);
                let meta = FrameMeta {
                    msg_id: pattern::checksum(loan.as_slice()),
                    ..FrameMeta::default()
                };
                peer.send_loan(meta, loan)
                    .map_err(|e| format!("send: {e}"))?;
                Ok("ok".to_string())
            })(),
            ["pid"] => Ok(std::process::id().to_string()),
            ["goodbye"] => {
                drop(peer.take());
                Ok("ok".into())
            }
            ["exit", code] => std::process::exit(number(code).map_or(2, |c| c as i32)),
            _ => Err(format!("unknown command {line:?}")),
        };
        let text = answer.unwrap_or_else(|e| format!("error: {e}"));
        writeln!(out, "{text}").map_err(|e| format!("stdout: {e}"))?;
        out.flush().map_err(|e| format!("stdout: {e}"))?;
    }
    Ok(0)
}

/// A peer that never sends through its `Peer`, and its own send ring reached through a mapping
/// of its own: the ring's only producer in use.
struct OwnRing {
    // The view first: it is dropped before the mapping it points into.
    ring: RawRing,
    bell_offset: usize,
    mapping: Arc<SegmentMapping>,
    peer: Peer,
}

impl OwnRing {
    fn attach() -> Result<Self, String> {
        let (peer, mapping) = attach_with_mapping(0)?;
        let id = peer.id();
        let header = HeaderSnapshot::read(&*mapping).map_err(|e| format!("header: {e}"))?;
        let layout = SegmentLayout::new(header.max_peers, header.ring_capacity)
            .map_err(|e| format!("layout: {e}"))?;
        let ring_ptr = Shared::new(&*mapping)
            .bytes_at(layout.send_ring_offset(id), layout.ring_size())
            .ok_or("the send ring lies outside the mapping")?
            .cast::<DescRingHeader>();
        // SAFETY: the ring's header and its `ring_capacity` descriptors lie inside the mapping
        // (`bytes_at` checked it), which `mapping` keeps mapped as long as this value (the
        // view is dropped with it); the host initialised them, and the view touches them only
        // through atomics and volatile copies.
        let ring = unsafe { RawRing::new(ring_ptr, layout.ring_capacity) }
            .map_err(|e| format!("ring: {e}"))?;
        Ok(Self {
            peer,
            mapping,
            ring,
            bell_offset: layout.peer_entry_offset(id)
                + std::mem::offset_of!(PeerEntry, send_data_futex),
        })
    }

    /// The doorbell the host waits on for this peer's frames.
    fn bell(&self) -> Result<Doorbell<'_>, String> {
        Shared::new(&*self.mapping)
            .u32_at(self.bell_offset)
            .map(Doorbell::new)
            .ok_or_else(|| "the send bell lies outside the mapping".into())
    }
}

/// Push one descriptor for each of the first `count` slots of `class`, with generation
/// `generation`, print `READY`, and block until killed: a forger of other peers' frames.
fn forge(class: u16, count: u32, generation: u32) -> Result<u8, String> {
    let own = OwnRing::attach()?;
    // SAFETY: the Peer of this process never sends, so this is the only producer in use.
    let mut producer = unsafe { own.ring.producer() }.map_err(|e| format!("producer: {e}"))?;
    for index in 0..count {
        let desc = MsgDescHot {
            msg_id: u64::from(index),
            payload_slot: encode_slot_ref(class, index),
            payload_generation: generation,
            payload_len: 100,
            ..MsgDescHot::empty()
        };
        producer
            .try_push(&desc)
            .map_err(|e| format!("push {index}: {e}"))?;
    }
    own.bell()?.ring();
    ready();
    let _peer = &own.peer;
    block_forever()
}

/// Scribble on this peer's send ring until killed.
///
/// Descriptors that name a real slot do so with a generation it does not have. A descriptor
/// naming a slot that another peer has in flight to the host, with its current generation,
/// would pass the host's checks (R3 checks the slot's state, owner and generation; no field
/// records which peer sent it) and the host would take that frame as this peer's: the
/// protocol cannot tell a forger from the sender, so this scribbler does not forge.
fn garbage(seed: u64, head_first: bool) -> Result<u8, String> {
    let own = OwnRing::attach()?;
    let ring = &own.ring;
    let bell = own.bell()?;
    let mut rng = Rng::new(seed);
    let capacity = u64::from(ring.capacity());
    let mut first = Some(if head_first { 0 } else { 1 + rng.below(5) });
    let mut evicted = false;
    loop {
        let action = first.take().unwrap_or_else(|| rng.below(8));
        if action == 0 {
            // Heads that jump past the capacity, or go behind the tail.
            let head = ring
                .visible_head()
                .load(std::sync::atomic::Ordering::Relaxed);
            let wild = match rng.below(3) {
                0 => rng.next(),
                1 => head.wrapping_add(capacity + 1 + rng.below(1000)),
                _ => head.wrapping_sub(1 + rng.below(5)),
            };
            ring.visible_head()
                .store(wild, std::sync::atomic::Ordering::Release);
        } else {
            let desc = bad_descriptor(&mut rng, action);
            // Indices this process broke stay broken (no producer) until the host resets them.
            // SAFETY: the Peer of this process never sends, so this handle, dropped at the end
            // of the block, is the only producer of the ring in use.
            if let Ok(mut producer) = unsafe { ring.producer() } {
                let _ = producer.try_push(&desc);
            }
        }
        bell.ring();
        if !evicted {
            // The first fault alone until the host has seen it, so that the eviction names it:
            // poll this peer's own state (an evicted peer's calls say so).
            while !matches!(
                own.peer.try_recv(),
                Err(TryRecvError::Failed(RecvError::Disconnected(
                    Disconnect::PeerNotActive { .. }
                )))
            ) {
                std::thread::sleep(Duration::from_millis(1));
            }
            evicted = true;
        }
        // Pacing, so that the scribbler does not take a whole core from the processes it
        // shares the machine with; not a synchronisation.
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn bad_descriptor(rng: &mut Rng, kind: u64) -> MsgDescHot {
    let base = MsgDescHot {
        msg_id: rng.next(),
        channel_id: rng.next() as u32,
        ..MsgDescHot::empty()
    };
    match kind {
        // Every byte random.
        1 => {
            let mut words = [0u64; 8];
            words.iter_mut().for_each(|w| *w = rng.next());
            MsgDescHot {
                msg_id: words[0],
                channel_id: words[1] as u32,
                method_id: (words[1] >> 32) as u32,
                payload_slot: words[2] as u32,
                payload_generation: (words[2] >> 32) as u32,
                payload_offset: words[3] as u32,
                payload_len: (words[3] >> 32) as u32,
                flags: words[4] as u32,
                credit_grant: (words[4] >> 32) as u32,
                deadline_ns: words[5],
                inline_payload: {
                    let mut bytes = [0; 16];
                    bytes[..8].copy_from_slice(&words[6].to_le_bytes());
                    bytes[8..].copy_from_slice(&words[7].to_le_bytes());
                    bytes
                },
            }
        }
        // A slot reference that names no slot: a class past the last, or an index past its
        // slots.
        2 => MsgDescHot {
            payload_slot: if rng.below(2) == 0 {
                encode_slot_ref(5 + rng.below(3) as u16, rng.below(4) as u32)
            } else {
                encode_slot_ref(rng.below(5) as u16, 100_000 + rng.below(1 << 20) as u32)
            },
            payload_len: rng.below(1000) as u32,
            ..base
        },
        // A real slot, with a generation it does not have (or had long ago).
        3 => MsgDescHot {
            payload_slot: encode_slot_ref(rng.below(5) as u16, rng.below(4) as u32),
            payload_generation: 1000 + rng.next() as u32 % 1_000_000,
            payload_len: rng.below(1000) as u32,
            ..base
        },
        // A slot reference and generation in range, an offset and length past any slot.
        4 => MsgDescHot {
            payload_slot: encode_slot_ref(rng.below(5) as u16, rng.below(4) as u32),
            payload_generation: 1000 + rng.next() as u32 % 1_000_000,
            payload_offset: u32::MAX - rng.below(100) as u32,
            payload_len: u32::MAX - rng.below(100) as u32,
            ..base
        },
        // Inline, longer than a descriptor holds.
        5 => MsgDescHot {
            payload_slot: INLINE_PAYLOAD_SLOT,
            payload_len: 17 + rng.below(u64::from(u32::MAX - 17)) as u32,
            ..base
        },
        // Inline and well formed: garbage that happens to be a valid frame.
        _ => MsgDescHot {
            payload_slot: INLINE_PAYLOAD_SLOT,
            payload_len: rng.below(17) as u32,
            inline_payload: rng
                .next()
                .to_le_bytes()
                .repeat(2)
                .try_into()
                .unwrap_or([0; 16]),
            ..base
        },
    }
}

/// The `from-env-twice` mode (I/O safety: never a second owner of the inherited descriptor).
fn from_env_twice(peer: Peer) -> Result<u8, String> {
    use std::os::fd::AsRawFd;
    let fd = match TicketSpec::from_env()
        .map_err(|e| format!("ticket: {e}"))?
        .source
    {
        SpecSource::Fd(fd) => fd,
        SpecSource::Path(path) => return Err(format!("a path ticket ({})", path.display())),
    };
    let refused = |what: &str| match Peer::from_env() {
        Err(hub_transport::AttachError::DescriptorTaken { fd: taken }) if taken == fd => Ok(()),
        other => Err(format!(
            "{what} from_env: expected DescriptorTaken {{ fd: {fd} }}, got {other:?}"
        )),
    };
    refused("a second")?;
    // Every free number up to the ticket's gets a file: none may be the ticket's, which is the
    // live Peer's (a second owner would have closed it).
    let mut files = Vec::new();
    while files
        .last()
        .is_none_or(|f: &std::fs::File| f.as_raw_fd() < fd)
    {
        let file = std::fs::File::open("/dev/null").map_err(|e| format!("open: {e}"))?;
        if file.as_raw_fd() == fd {
            return Err(format!(
                "open got descriptor {fd}, the live Peer's: it was closed"
            ));
        }
        files.push(file);
    }
    drop(files);
    hello(&peer)?;
    drop(peer);
    refused("a third (after the first Peer left)")?;
    Ok(0)
}
