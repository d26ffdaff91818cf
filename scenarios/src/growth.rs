//! `growth`: several processes exhaust the largest class at once (R8).
//!
//! The largest class (16 MiB slots, four per extent) starts with one extent and may grow to
//! [`MAX_EXTENTS_PER_CLASS`]. The scenario proves that growth under concurrent demand from
//! several processes ends exactly where the layout says, with every slot usable and a clean
//! refusal after the last one:
//!
//! 1. The host creates a hub (anonymous memfd, 4 peers, `max_size: None`) and spawns
//!    [`PEERS`] peers in role `grab`; each attaches and prints `ATTACHED`, while the class still
//!    has its one initial extent.
//! 2. The host loans every slot of the initial extent plus one more, which grows the class by
//!    one extent, and fills each with a checksummed pattern. From now on every slot anyone gets
//!    lies in an extent published after the peers attached: every participant uses grown slots.
//! 3. The host sends `GO` to every peer at once. Each peer takes 16 MiB slots with `try_loan`,
//!    filling each entirely ([`common::fill_frame`], checksum in the meta), until the hub says
//!    `NoFreeSlots { class: 4 }`; a `loan_timeout` of 50 ms must then end in `Timeout` (or
//!    `NoFreeSlots`), not hang, panic or fail otherwise. A slot that this wait still obtains
//!    (another peer was pushing the slots of the extent it had just published) is kept and the
//!    loop goes on: such slots are counted as `late`. The peer checks that its own view of the
//!    class shows every extent, and prints `GOT n late`.
//! 4. With every peer done, the host checks the snapshot: the class has all its extents, every
//!    slot is allocated and none free, the host's slots plus the peers' add up to the class's
//!    total, every peer got at least one, and the host's own `try_loan` and `loan_timeout` are
//!    refused too.
//! 5. The host sends `GO` again: the peers send every slot they hold; the host checks every
//!    payload's checksum and order, then reads back its own slots. It sends `STOP`; the peers say
//!    goodbye and exit 0, and within a few supervisor ticks every slot of every class is free.
//!    Finally the grown class serves its whole capacity again to the host, without growing more.
//!
//! A slot count that does not add up, an unexpected error, a payload that does not match its
//! checksum or a peer that does not exit cleanly fails the scenario with a message that says so.

use std::time::{Duration, Instant};

use hub_layout::{HUB_SIZE_CLASSES, MAX_EXTENTS_PER_CLASS};
use hub_transport::{
    Disconnect, FrameMeta, Host, HubConfig, Loan, LoanError, LoanTimeoutError, Peer,
    RecvTimeoutError, TryLoanError,
};

use crate::Settings;
use crate::common::{self, ChildProcess, Figures, GO, ORIGIN, STOP};
use crate::roles::{self, Stop};

/// Peer processes that grab slots at once.
const PEERS: usize = 3;

/// The class under test: the largest.
const CLASS: usize = HUB_SIZE_CLASSES.len() - 1;

/// The size of every loan: a whole slot of [`CLASS`].
const SIZE: usize = HUB_SIZE_CLASSES[CLASS].0 as usize;

/// How long a peer's final `loan_timeout` waits once `try_loan` said `NoFreeSlots`.
const LAST_WAIT: Duration = Duration::from_millis(50);

/// How long either side waits for a frame the protocol promises.
const FRAME_WAIT: Duration = Duration::from_secs(30);

/// How long a peer may take to exit after `STOP`.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// How long the host waits for every slot to be free once the peers are gone.
const FREE_WAIT: Duration = Duration::from_secs(5);

/// Names of the per-peer slot figures, one per peer.
const PEER_FIGURES: [&str; PEERS] = ["slots_p1", "slots_p2", "slots_p3"];

/// Slots per extent of [`CLASS`], as the layout rounds them.
fn slots_per_extent() -> u32 {
    HUB_SIZE_CLASSES[CLASS].1.next_power_of_two()
}

/// The seed of slot `k` of a participant whose seed is `seed`.
fn slot_seed(seed: u64, k: u32) -> u64 {
    common::mix(seed, u64::from(k))
}

/// A control frame (`GO` or `STOP`): inline, so that it needs no slot of an exhausted hub.
fn control(method_id: u32) -> FrameMeta {
    FrameMeta {
        method_id,
        ..FrameMeta::default()
    }
}

/// One peer process as the host sees it.
struct Grabber {
    /// The process.
    child: ChildProcess,
    /// Its peer id.
    id: u16,
    /// The slots it said it holds.
    held: u32,
    /// Of those, the slots its final `loan_timeout` still obtained.
    late: u32,
    /// Frames received from it so far.
    received: u32,
}

/// Run the scenario; see the module documentation.
pub fn run(settings: &Settings) -> Result<Figures, String> {
    let started = Instant::now();
    if SIZE != common::MAX_PAYLOAD {
        return Err(format!(
            "class {CLASS} has {SIZE}-byte slots, not the {} bytes this scenario expects",
            common::MAX_PAYLOAD
        ));
    }
    let per_extent = slots_per_extent();
    let capacity = per_extent * MAX_EXTENTS_PER_CLASS as u32;
    let host =
        Host::create(&HubConfig::new().max_peers(4)).map_err(|e| format!("create the hub: {e}"))?;
    let initial = host.stats()[CLASS];
    if (initial.extents, initial.total) != (1, per_extent) {
        return Err(format!(
            "a new hub's class {CLASS} should have 1 extent of {per_extent} slots: {initial:?}"
        ));
    }

    // 1. The peers attach while the class has its initial extent only.
    let mut grabbers = Vec::with_capacity(PEERS);
    for i in 0..PEERS {
        let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
        let seed = common::mix(settings.seed, i as u64).to_string();
        let mut child = ChildProcess::spawn("grab", &[seed], Some(&ticket), true)?;
        child.expect_line("ATTACHED")?;
        grabbers.push(Grabber {
            child,
            id: ticket.peer_id(),
            held: 0,
            late: 0,
            received: 0,
        });
    }

    // 2. The host takes the initial extent and one slot more: the class grows once.
    let host_seed = common::mix(settings.seed, u64::MAX);
    let mut own: Vec<(Loan, FrameMeta)> = Vec::new();
    for k in 0..=per_extent {
        let mut loan = host
            .try_loan(SIZE)
            .map_err(|e| format!("host loan {k} of {}: {e}", per_extent + 1))?;
        let meta = common::fill_frame(loan.as_mut_slice(), slot_seed(host_seed, k), ORIGIN, k);
        own.push((loan, meta));
    }
    let grown_once = host.stats()[CLASS];
    if (grown_once.extents, grown_once.total) != (2, 2 * per_extent) {
        return Err(format!(
            "after {} host loans class {CLASS} should have grown to 2 extents: {grown_once:?}",
            per_extent + 1
        ));
    }

    // 3. Every peer starts at once.
    let go = Instant::now();
    for g in &grabbers {
        host.send(g.id, control(GO), &[])
            .map_err(|e| format!("send GO to peer {}: {e}", g.id))?;
    }
    for g in &mut grabbers {
        let line = g
            .child
            .expect_line("GOT ")
            .map_err(|e| format!("peer {}: {e}", g.id))?;
        let mut words = line.split_whitespace().map(str::parse::<u32>);
        match (words.next(), words.next()) {
            (Some(Ok(held)), Some(Ok(late))) => (g.held, g.late) = (held, late),
            _ => return Err(format!("peer {} said GOT {line:?}", g.id)),
        }
    }
    let grab_time = go.elapsed();

    // 4. The snapshot: the class at its largest, every slot held, the next loan refused.
    let full = host.stats()[CLASS];
    let peer_slots: u32 = grabbers.iter().map(|g| g.held).sum();
    let host_slots = own.len() as u32;
    if full.extents != MAX_EXTENTS_PER_CLASS as u32
        || full.total != capacity
        || full.header_total != capacity
        || full.allocated != capacity
        || full.free != 0
        || full.in_flight != 0
        || full.corrupt != 0
    {
        return Err(format!(
            "hub bug? with every peer refused, class {CLASS} should have {MAX_EXTENTS_PER_CLASS} \
             extents and {capacity} slots, all allocated: {full:?}"
        ));
    }
    if host_slots + peer_slots != capacity {
        return Err(format!(
            "hub bug? the host holds {host_slots} slots and the peers {peer_slots} \
             ({:?}), not the class's {capacity}",
            grabbers.iter().map(|g| g.held).collect::<Vec<_>>()
        ));
    }
    if let Some(g) = grabbers.iter().find(|g| g.held == 0) {
        return Err(format!(
            "peer {} got no slot at all: it did not take part in the growth",
            g.id
        ));
    }
    let mut refusals = PEERS as u64;
    match host.try_loan(SIZE) {
        Err(TryLoanError::NoFreeSlots { class }) if usize::from(class) == CLASS => refusals += 1,
        Err(error) => return Err(format!("host try_loan at the limit: {error}")),
        Ok(_) => {
            return Err(format!(
                "hub bug? host try_loan at the limit got a slot beyond the class's {capacity}"
            ));
        }
    }
    match host.loan_timeout(SIZE, LAST_WAIT) {
        Err(LoanTimeoutError::Timeout) => {}
        Err(error) => return Err(format!("host loan_timeout at the limit: {error}")),
        Ok(_) => {
            return Err(format!(
                "hub bug? host loan_timeout at the limit got a slot beyond the class's {capacity}"
            ));
        }
    }

    // 5. The peers send what they hold; the host checks every byte.
    for g in &grabbers {
        host.send(g.id, control(GO), &[])
            .map_err(|e| format!("send the second GO to peer {}: {e}", g.id))?;
    }
    let mut bytes = 0u64;
    for _ in 0..peer_slots {
        let frame = host
            .recv_timeout(FRAME_WAIT)
            .map_err(|e| format!("receive the peers' slots: {e}"))?;
        let from = frame.peer();
        let Some(g) = grabbers.iter_mut().find(|g| g.id == from) else {
            return Err(format!("a frame from peer {from}, which is none of ours"));
        };
        let meta = *frame.meta();
        if meta.method_id != ORIGIN || frame.len() != SIZE || meta.channel_id != g.received {
            return Err(format!(
                "peer {from}: frame {} should be method {ORIGIN}, {SIZE} bytes: got method {}, \
                 seq {}, {} bytes",
                g.received,
                meta.method_id,
                meta.channel_id,
                frame.len()
            ));
        }
        common::verify(&meta, frame.payload()).map_err(|e| format!("peer {from}: {e}"))?;
        g.received += 1;
        bytes += frame.len() as u64;
    }
    if let Some(g) = grabbers.iter().find(|g| g.received != g.held) {
        return Err(format!(
            "peer {} said it held {} slots and sent {}",
            g.id, g.held, g.received
        ));
    }
    for (loan, meta) in &own {
        common::verify(meta, loan.as_slice()).map_err(|e| format!("the host's own slot: {e}"))?;
        bytes += loan.len() as u64;
    }
    drop(own);

    // 6. The peers leave; every slot comes back.
    for g in &grabbers {
        host.send(g.id, control(STOP), &[])
            .map_err(|e| format!("send STOP to peer {}: {e}", g.id))?;
    }
    for g in &mut grabbers {
        match g.child.wait_timeout(EXIT_WAIT)? {
            Some(status) if status.success() => {}
            Some(status) => {
                return Err(format!("peer {} ended: {}", g.id, common::describe(status)));
            }
            None => return Err(format!("peer {} still runs {EXIT_WAIT:?} after STOP", g.id)),
        }
    }
    let settled = crate::echo::settle(&host, FREE_WAIT, || {
        std::thread::sleep(Duration::from_millis(10));
        Ok(())
    })?;
    if settled.leaked + settled.quarantined != 0 {
        return Err(crate::echo::leak_failure(&settled, "after the peers left"));
    }
    let extents = host.stats()[CLASS].extents;
    if extents != MAX_EXTENTS_PER_CLASS as u32 {
        return Err(format!(
            "hub bug? class {CLASS} has {extents} extents after the peers left"
        ));
    }

    // 7. The grown class serves its whole capacity again, and grows no further.
    let mut again = Vec::with_capacity(capacity as usize);
    loop {
        match host.try_loan(SIZE) {
            Ok(loan) => again.push(loan),
            Err(TryLoanError::NoFreeSlots { .. }) => break,
            Err(error) => return Err(format!("host loan after the peers left: {error}")),
        }
        if again.len() > capacity as usize {
            return Err(format!(
                "hub bug? the host got more than {capacity} slots of class {CLASS}"
            ));
        }
    }
    if again.len() != capacity as usize {
        return Err(format!(
            "hub bug? after the peers left the host got {} slots of class {CLASS}, not {capacity}",
            again.len()
        ));
    }
    drop(again);
    let after = host.stats();
    if after.iter().any(|s| s.free != s.total) || after[CLASS].total != capacity {
        return Err(format!("slots still out after the last loans: {after:?}"));
    }

    let mut figures = Figures::default();
    figures
        .set("peers", PEERS as u64)
        .set("extents", u64::from(full.extents))
        .set("slots", u64::from(full.total))
        .set("host", u64::from(host_slots));
    for (name, g) in PEER_FIGURES.iter().zip(&grabbers) {
        figures.set(name, u64::from(g.held));
    }
    figures
        .set("late", grabbers.iter().map(|g| u64::from(g.late)).sum())
        .set("frames", u64::from(peer_slots))
        .set("bytes", bytes)
        .set("no_free_slots", refusals)
        .set("grab_ms", grab_time.as_millis() as u64)
        .set("total_ms", started.elapsed().as_millis() as u64);
    Ok(figures)
}

/// Wait for a control frame with `method_id`; any other frame is a failure.
fn expect_control(peer: &Peer, method_id: u32, what: &str) -> Result<(), Stop> {
    let frame = match peer.recv_timeout(FRAME_WAIT) {
        Ok(frame) => frame,
        Err(RecvTimeoutError::Timeout) => {
            return Err(Stop::Failed(format!(
                "no {what} from the host within {FRAME_WAIT:?}"
            )));
        }
        Err(RecvTimeoutError::Failed(error)) => return Err(error.into()),
        Err(error) => return Err(Stop::Failed(format!("recv: {error}"))),
    };
    if frame.meta().method_id == method_id {
        Ok(())
    } else {
        Err(Stop::Failed(format!(
            "waiting for {what}, got a frame of method {} ({} bytes)",
            frame.meta().method_id,
            frame.len()
        )))
    }
}

/// The child role `grab SEED`: on `GO`, take 16 MiB slots until the hub refuses, fill each
/// entirely, print `GOT n late`; on the next `GO`, send them all to the host; exit 0 on `STOP`.
pub fn peer(args: &[String]) -> Result<(), Stop> {
    let seed: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Stop::Failed(format!("grab SEED: bad arguments {args:?}")))?;
    let peer = roles::attach()?;
    roles::say(&format!("ATTACHED {}", peer.id()));
    expect_control(&peer, GO, "GO")?;

    // More slots than the class can ever hold would be a hub bug; stop counting there.
    let capacity = slots_per_extent() as usize * MAX_EXTENTS_PER_CLASS;
    let mut held: Vec<(Loan, FrameMeta)> = Vec::new();
    let mut late = 0u32;
    loop {
        let mut loan = match peer.try_loan(SIZE) {
            Ok(loan) => loan,
            Err(TryLoanError::NoFreeSlots { class }) if usize::from(class) == CLASS => {
                // Refused: a wait must end in a refusal too, unless another peer was just
                // pushing the slots of an extent it published.
                match peer.loan_timeout(SIZE, LAST_WAIT) {
                    Ok(loan) => {
                        late += 1;
                        loan
                    }
                    Err(LoanTimeoutError::Timeout) => break,
                    Err(error) => {
                        return Err(Stop::Failed(format!(
                            "loan_timeout after NoFreeSlots, with {} slots held: {error}",
                            held.len()
                        )));
                    }
                }
            }
            Err(TryLoanError::Failed(LoanError::Disconnected(Disconnect::HostGone))) => {
                return Err(Stop::HostGone);
            }
            Err(error) => {
                return Err(Stop::Failed(format!(
                    "try_loan with {} slots held: expected a slot or NoFreeSlots {{ class: \
                     {CLASS} }}, got {error:?}",
                    held.len()
                )));
            }
        };
        let k = held.len() as u32;
        let meta = common::fill_frame(loan.as_mut_slice(), slot_seed(seed, k), ORIGIN, k);
        held.push((loan, meta));
        if held.len() > capacity {
            return Err(Stop::Failed(format!(
                "hub bug? this peer alone holds {} slots of class {CLASS}, which has {capacity}",
                held.len()
            )));
        }
    }
    let view = peer.stats();
    let extents = view.get(CLASS).map_or(0, |s| s.extents);
    if extents != MAX_EXTENTS_PER_CLASS as u32 {
        return Err(Stop::Failed(format!(
            "refused with {} slots held, but this peer sees {extents} extents of class {CLASS}, \
             not {MAX_EXTENTS_PER_CLASS}",
            held.len()
        )));
    }
    roles::say(&format!("GOT {} {late}", held.len()));

    expect_control(&peer, GO, "the second GO")?;
    for (loan, meta) in held {
        peer.send_loan(meta, loan)?;
    }
    expect_control(&peer, STOP, "STOP")?;
    drop(peer);
    Ok(())
}
