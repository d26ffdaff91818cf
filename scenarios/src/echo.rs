//! **echo**: a host and 8 peer processes exchange at least 100,000 checksummed frames each way,
//! of random sizes from 0 bytes to 16 MiB; at the end every slot is free.
//!
//! The host keeps a window of requests in flight to each peer, each filled from its own seed
//! and carrying its checksum; a peer checks every request and echoes it in a slot of its own;
//! the host checks every echo against the request it answers (same sequence number, length and
//! checksum, in order per peer). Sizes cover every class and each class boundary, weighted
//! towards small frames ([`common::payload_size`]). At the end each peer says goodbye, exits 0,
//! and every slot of every class is free again: nothing the traffic touched leaked.
//!
//! The [`Driver`] is the host's side of this traffic; `crash-storm` runs it too.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hub_transport::{
    Disconnect, Host, HubConfig, LoanError, RecvError, RecvTimeoutError, SendCopyError, SendError,
    TryLoanError, TryRecvError, TrySendCopyError, TrySendError,
};

use crate::Settings;
use crate::common::{self, ChildProcess, ECHO, Figures, ORIGIN, REQUEST, Rng, STOP};

/// Peers of the echo scenario.
const PEERS: u16 = 8;
/// Requests in flight to one peer at most.
const WINDOW: usize = 4;

/// A request the host sent and whose echo it waits for.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u32,
    len: usize,
    sum: u64,
}

/// The host's side of echo traffic: requests out to every live peer, each echo checked.
#[derive(Debug)]
pub struct Driver<'h> {
    host: &'h Host,
    rng: Rng,
    /// Per peer id: requests in flight, oldest first.
    pending: Vec<VecDeque<Pending>>,
    /// Per peer id: whether requests go to it (it is alive, as far as the host knows).
    live: Vec<bool>,
    /// Per peer id: the size of the next request, chosen once so a retry sends the same.
    next_len: Vec<Option<usize>>,
    /// Whether new requests go out at all.
    pub sending: bool,
    seq: u32,
    /// Requests sent.
    pub requests: u64,
    /// Echoes received and checked.
    pub echoes: u64,
    /// Frames the peers sent of their own accord, received and checked.
    pub originated: u64,
    /// Payload bytes sent and received.
    pub bytes: u64,
    /// Frames received from a peer the host had given up on (a killed one), checked and dropped.
    pub stale: u64,
    /// The largest request.
    pub max_len: usize,
    /// A peer known to be hostile: its faults are counted, not failures, and its frames are
    /// not checked.
    pub suspect: Option<u16>,
    /// Faults of the suspect that the host's calls reported (it is evicted for them).
    pub faults: u64,
    /// Loans that failed with an allocator error (damage being repaired): tried again later.
    pub alloc_errors: u64,
}

impl<'h> Driver<'h> {
    /// A driver for `host`'s peers, none live yet.
    pub fn new(host: &'h Host, seed: u64) -> Self {
        let n = usize::from(host.max_peers());
        Self {
            host,
            rng: Rng::new(seed),
            pending: vec![VecDeque::new(); n],
            live: vec![false; n],
            next_len: vec![None; n],
            sending: true,
            seq: 0,
            requests: 0,
            echoes: 0,
            originated: 0,
            bytes: 0,
            stale: 0,
            max_len: common::MAX_PAYLOAD,
            suspect: None,
            faults: 0,
            alloc_errors: 0,
        }
    }

    /// Start sending requests to `peer` (a new life of it).
    pub fn revive(&mut self, peer: u16) {
        self.live[usize::from(peer)] = true;
        self.pending[usize::from(peer)].clear();
    }

    /// Stop sending to `peer` and forget what it owes: it was killed.
    pub fn forget(&mut self, peer: u16) {
        self.live[usize::from(peer)] = false;
        self.pending[usize::from(peer)].clear();
    }

    /// Requests in flight, all peers.
    pub fn in_flight(&self) -> usize {
        self.pending.iter().map(VecDeque::len).sum()
    }

    /// Send what the windows allow, then receive and check what came; wait up to a millisecond
    /// when nothing moved.
    pub fn pump(&mut self) -> Result<(), String> {
        let mut moved = false;
        for peer in 0..self.live.len() {
            while self.sending && self.live[peer] && self.pending[peer].len() < WINDOW {
                if !self.send_one(peer as u16)? {
                    break;
                }
                moved = true;
            }
        }
        for _ in 0..256 {
            match self.host.try_recv() {
                Ok(frame) => {
                    moved = true;
                    self.check(frame.peer(), frame.meta(), frame.payload())?;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Failed(error)) => self.fault(error)?,
                Err(error) => return Err(format!("host recv: {error}")),
            }
        }
        if !moved {
            match self.host.recv_timeout(Duration::from_millis(1)) {
                Ok(frame) => self.check(frame.peer(), frame.meta(), frame.payload())?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Failed(error)) => self.fault(error)?,
                Err(error) => return Err(format!("host recv: {error}")),
            }
        }
        Ok(())
    }

    /// A receive error: the suspect's fault (counted; the host evicted it), or a failure.
    fn fault(&mut self, error: RecvError) -> Result<(), String> {
        match error {
            RecvError::BadDescriptor { peer, .. } | RecvError::Ring { peer, .. }
                if Some(peer) == self.suspect =>
            {
                self.faults += 1;
                Ok(())
            }
            error => Err(format!("host recv: {error}")),
        }
    }

    /// Send one request to `peer`; false when it must wait (ring full, class empty, peer gone).
    fn send_one(&mut self, peer: u16) -> Result<bool, String> {
        let index = usize::from(peer);
        if Some(peer) == self.suspect {
            // A hostile peer gets inline frames only, until its ring is full: no slot of the
            // honest streams' classes is left with it.
            let len = self.rng.below(17) as usize;
            let meta = hub_transport::FrameMeta {
                method_id: REQUEST,
                ..hub_transport::FrameMeta::default()
            };
            return match self.host.try_send(peer, meta, &[0x5a; 16][..len]) {
                Ok(()) => Ok(true),
                Err(
                    TrySendCopyError::Full
                    | TrySendCopyError::Failed(SendCopyError::Disconnected(
                        Disconnect::PeerNotActive { .. },
                    )),
                ) => Ok(false),
                Err(TrySendCopyError::Failed(SendCopyError::Ring { .. })) => {
                    self.faults += 1;
                    self.forget(peer);
                    Ok(false)
                }
                Err(error) => Err(format!("host send to the hostile peer {peer}: {error}")),
            };
        }
        let len = match self.next_len[index] {
            Some(len) => len,
            None => {
                let len = common::payload_size(&mut self.rng).min(self.max_len);
                self.next_len[index] = Some(len);
                len
            }
        };
        let mut loan = match self.host.try_loan(len) {
            Ok(loan) => loan,
            Err(TryLoanError::NoFreeSlots { .. }) => return Ok(false),
            Err(TryLoanError::Failed(LoanError::Alloc(_))) => {
                self.alloc_errors += 1;
                return Ok(false);
            }
            Err(error) => return Err(format!("host loan of {len} bytes: {error}")),
        };
        let seq = self.seq;
        let meta = common::fill_frame(
            loan.as_mut_slice(),
            common::mix(u64::from(seq), 7),
            REQUEST,
            seq,
        );
        match self.host.try_send_loan(peer, meta, loan) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Ok(false),
            Err(TrySendError::Failed(SendError::Disconnected(Disconnect::PeerNotActive {
                ..
            }))) => {
                // It died; whoever killed it calls `forget`.
                return Ok(false);
            }
            Err(error) => return Err(format!("host send to peer {peer}: {error}")),
        }
        self.seq = self.seq.wrapping_add(1);
        self.next_len[index] = None;
        self.pending[index].push_back(Pending {
            seq,
            len,
            sum: meta.msg_id,
        });
        self.requests += 1;
        self.bytes += len as u64;
        Ok(true)
    }

    /// Check a frame from `peer`.
    fn check(
        &mut self,
        peer: u16,
        meta: &hub_transport::FrameMeta,
        payload: &[u8],
    ) -> Result<(), String> {
        if Some(peer) == self.suspect {
            return Ok(());
        }
        common::verify(meta, payload).map_err(|e| format!("from peer {peer}: {e}"))?;
        self.bytes += payload.len() as u64;
        let index = usize::from(peer);
        if !self.live[index] {
            self.stale += 1;
            return Ok(());
        }
        match meta.method_id {
            ECHO => {
                let Some(want) = self.pending[index].pop_front() else {
                    return Err(format!(
                        "peer {peer} echoed request {} that the host never sent it",
                        meta.channel_id
                    ));
                };
                if (want.seq, want.len, want.sum) != (meta.channel_id, payload.len(), meta.msg_id) {
                    return Err(format!(
                        "peer {peer} echoed request {} ({} bytes, sum {:#x}) where request {} ({} bytes, sum {:#x}) was next",
                        meta.channel_id,
                        payload.len(),
                        meta.msg_id,
                        want.seq,
                        want.len,
                        want.sum
                    ));
                }
                self.echoes += 1;
            }
            ORIGIN => self.originated += 1,
            other => return Err(format!("peer {peer} sent method {other}")),
        }
        Ok(())
    }

    /// Stop sending and receive until every request in flight is echoed, at most `timeout`.
    pub fn drain(&mut self, timeout: Duration) -> Result<(), String> {
        self.sending = false;
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} requests still unanswered after {timeout:?}",
                    self.in_flight()
                ));
            }
            self.pump()?;
        }
        Ok(())
    }
}

/// What is left in the allocator once the traffic has stopped.
#[derive(Debug)]
pub struct Settled {
    /// Slots neither free nor quarantined: leaked.
    pub leaked: u64,
    /// Slots whose state word is garbage, left off the free lists for good.
    pub quarantined: u64,
    /// Per class, where something is not free.
    pub detail: String,
}

impl Driver<'_> {
    /// Tell each of `children` to stop, and check that each exits 0 within `timeout`; frames
    /// they send meanwhile are received and checked (a peer's frames sent before its goodbye are
    /// the host's: its entry is recovered once they are read).
    pub fn stop(&mut self, children: &mut [ChildProcess], timeout: Duration) -> Result<(), String> {
        self.sending = false;
        let meta = hub_transport::FrameMeta {
            method_id: STOP,
            ..hub_transport::FrameMeta::default()
        };
        for child in children.iter() {
            if let Some(peer) = child.peer {
                self.host
                    .send_timeout(peer, meta, &[], timeout)
                    .map_err(|e| format!("stop peer {peer}: {e}"))?;
            }
        }
        let deadline = Instant::now() + timeout;
        for child in children.iter_mut() {
            loop {
                match child.try_wait()? {
                    Some(status) if status.success() => break,
                    Some(status) => {
                        return Err(format!(
                            "peer {:?} (pid {}) ended with {}",
                            child.peer,
                            child.pid(),
                            common::describe(status)
                        ));
                    }
                    None if Instant::now() >= deadline => {
                        return Err(format!(
                            "peer {:?} (pid {}) did not exit within {timeout:?} of STOP",
                            child.peer,
                            child.pid()
                        ));
                    }
                    None => self.pump()?,
                }
            }
        }
        Ok(())
    }

    /// Receive what is left and wait until every slot of every class is free (or quarantined),
    /// at most `timeout`; what is left then.
    pub fn settle(&mut self, timeout: Duration) -> Result<Settled, String> {
        self.sending = false;
        let host = self.host;
        // Goodbyes are recovered by the supervisor within a tick of their last frame read.
        settle(host, timeout, || self.pump())
    }
}

/// Wait until every slot of every class of `host` is free (or quarantined), at most `timeout`,
/// calling `between` before each look; what is left then.
pub fn settle(
    host: &Host,
    timeout: Duration,
    mut between: impl FnMut() -> Result<(), String>,
) -> Result<Settled, String> {
    let deadline = Instant::now() + timeout;
    loop {
        between()?;
        let stats = host.stats();
        let quarantined: u64 = stats.iter().map(|c| u64::from(c.corrupt)).sum();
        let leaked: u64 = stats
            .iter()
            .map(|c| u64::from(c.total.saturating_sub(c.free + c.corrupt)))
            .sum();
        if leaked == 0 || Instant::now() >= deadline {
            let detail = stats
                .iter()
                .enumerate()
                .filter(|(_, c)| c.free != c.total)
                .map(|(i, c)| {
                    format!(
                        "class {i}: {} of {} free ({} allocated, {} in flight, {} quarantined)",
                        c.free, c.total, c.allocated, c.in_flight, c.corrupt
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(Settled {
                leaked,
                quarantined,
                detail,
            });
        }
    }
}

/// The message of a scenario that found `leaked` slots: `N slots leaked ...`, which
/// [`leaks_in`] reads back (for the soak's totals).
pub fn leak_failure(settled: &Settled, when: &str) -> String {
    format!("{} slots leaked {when}: {}", settled.leaked, settled.detail)
}

/// The slots a failure message of [`leak_failure`] reports, 0 for another failure.
pub fn leaks_in(message: &str) -> u64 {
    message
        .split_once(" slots leaked")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

/// Run the scenario.
pub fn run(settings: &Settings) -> Result<Figures, String> {
    let target = settings.scale(100_000, 10_000);
    let host =
        Host::create(&HubConfig::new().max_peers(PEERS)).map_err(|e| format!("create: {e}"))?;
    let mut children = Vec::new();
    let mut driver = Driver::new(&host, common::mix(settings.seed, 0));
    for i in 0..PEERS {
        let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
        let seed = common::mix(settings.seed, u64::from(i) + 1).to_string();
        children.push(ChildProcess::spawn(
            "echo",
            &[seed, "0".into()],
            Some(&ticket),
            false,
        )?);
        driver.revive(ticket.peer_id());
    }
    let started = Instant::now();
    while driver.requests < target {
        driver.pump()?;
        common::none_exited(&mut children, "during the exchange")?;
    }
    driver.drain(Duration::from_secs(30))?;
    let secs = started.elapsed().as_secs_f64();
    driver.stop(&mut children, Duration::from_secs(10))?;
    let settled = driver.settle(Duration::from_secs(5))?;
    if settled.leaked + settled.quarantined != 0 {
        return Err(leak_failure(&settled, "at the end"));
    }
    if driver.alloc_errors != 0 {
        return Err(format!(
            "{} loans failed with allocator errors",
            driver.alloc_errors
        ));
    }
    if driver.echoes != driver.requests {
        return Err(format!(
            "{} requests but {} echoes",
            driver.requests, driver.echoes
        ));
    }
    let mut figures = Figures::default();
    figures
        .set("peers", u64::from(PEERS))
        .set("requests", driver.requests)
        .set("echoes", driver.echoes)
        .set("frames", driver.requests + driver.echoes)
        .set("bytes", driver.bytes)
        .set("mb_per_s", (driver.bytes as f64 / secs / 1e6) as u64)
        .set("leaks", settled.leaked);
    Ok(figures)
}
