//! **crash-storm**: under load, SIGKILL a random peer at a random moment and respawn it, at
//! least 200 times; at the end no slot has leaked, no payload was corrupted, every peer id was
//! reused, and the host still serves.
//!
//! Six peer processes echo the host's requests (the [`Driver`](crate::echo::Driver) of `echo`)
//! and send frames of their own, so that at any moment slots are allocated by peers, in flight
//! to them and from them, and being filled, checked, freed. Every 0 to 30 ms the orchestrator
//! kills one peer with SIGKILL, wherever it is: in a loan, a free, a ring push, a futex wait,
//! or (one pause in four is under 2 ms) still starting or attaching. A peer killed before it
//! attached has its reservation withdrawn (`Host::withdraw`); one killed between taking its
//! entry and recording its pid is evicted as silent after the heartbeat timeout. The hub has exactly as many entries as peers, so the respawn's ticket must reuse
//! the killed peer's id: it is granted only once the supervisor has seen the death (pidfd) and
//! recovered the entry (R10, R12). Every frame the host receives is checksummed, including
//! those of a peer's earlier life still in a ring; every request a peer receives is too (a peer
//! that sees a bad one exits 20, which fails the scenario).
//!
//! At the end the survivors drain, say goodbye and exit 0, every slot of every class is free
//! again (`leaks=0`: per-class stats back to their totals), and a fresh peer still gets its
//! requests echoed.

use std::time::{Duration, Instant};

use hub_transport::{EvictReason, Host, HostError, HubConfig, PeerEvent};

use crate::Settings;
use crate::common::{self, ChildProcess, Figures, Rng};
use crate::echo::{Driver, leak_failure};

/// Peers (and peer entries) of the storm.
const PEERS: u16 = 6;
/// Percent of echoes after which a peer also sends a frame of its own.
const ORIGINATE: &str = "30";
/// The longest pause between two kills.
const MAX_PAUSE: Duration = Duration::from_millis(30);

/// Run the scenario.
pub fn run(settings: &Settings) -> Result<Figures, String> {
    let kills_wanted = settings.scale(200, 20);
    let host =
        Host::create(&HubConfig::new().max_peers(PEERS)).map_err(|e| format!("create: {e}"))?;
    let mut rng = Rng::new(settings.seed);
    let mut driver = Driver::new(&host, rng.next_u64());
    let mut children: Vec<ChildProcess> = Vec::new();
    let mut reuses = vec![0u64; usize::from(PEERS)];
    let mut events = Events {
        awaiting: vec![false; usize::from(PEERS)],
        ..Events::default()
    };

    for _ in 0..PEERS {
        let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
        children.push(spawn(&ticket, &mut rng)?);
        driver.revive(ticket.peer_id());
    }

    let mut kills = 0u64;
    let mut next_kill = Instant::now() + pause(&mut rng);
    while kills < kills_wanted {
        driver.pump()?;
        events.drain(&host)?;
        common::none_exited(&mut children, "without being killed")?;
        if Instant::now() < next_kill {
            continue;
        }
        // Any peer, wherever it is: starting, attaching, or at work.
        let victim = rng.below(children.len() as u64) as usize;
        let mut child = children.swap_remove(victim);
        let peer = child.peer.ok_or("a peer child without a peer id")?;
        child.kill();
        child
            .wait_timeout(Duration::from_secs(5))?
            .ok_or_else(|| format!("peer {peer} (pid {}) outlived SIGKILL", child.pid()))?;
        driver.forget(peer);
        kills += 1;
        // Killed before it attached: the host takes the reservation back (R9). Otherwise the
        // supervisor finds the death: by its pidfd, or by its silence when it died between
        // taking the entry and recording its pid.
        if host
            .withdraw(peer)
            .map_err(|e| format!("withdraw peer {peer}: {e}"))?
        {
            events.before_attach += 1;
        } else {
            events.awaiting[usize::from(peer)] = true;
        }

        // The respawn: the only entry not in use is the victim's, once it is recovered.
        let ticket = respawn_ticket(&host, &mut driver, &mut events)?;
        if ticket.peer_id() != peer {
            return Err(format!(
                "peer {peer} was killed but the new ticket is for peer {}",
                ticket.peer_id()
            ));
        }
        reuses[usize::from(peer)] += 1;
        children.push(spawn(&ticket, &mut rng)?);
        driver.revive(peer);
        next_kill = Instant::now() + pause(&mut rng);
    }

    // The survivors answer what is in flight, leave, and give everything back.
    driver.drain(Duration::from_secs(30))?;
    events.drain(&host)?;
    driver.stop(&mut children, Duration::from_secs(10))?;
    let settled = driver.settle(Duration::from_secs(5))?;
    if settled.leaked + settled.quarantined != 0 {
        return Err(leak_failure(&settled, "after the storm"));
    }
    if driver.alloc_errors != 0 {
        return Err(format!(
            "{} loans failed with allocator errors",
            driver.alloc_errors
        ));
    }
    if let Some(id) = reuses.iter().position(|&n| n == 0) {
        return Err(format!("peer id {id} was never reused in {kills} kills"));
    }

    // And the host still serves: a fresh peer's requests are echoed.
    let before = driver.echoes;
    let ticket = host
        .add_peer()
        .map_err(|e| format!("add_peer after the storm: {e}"))?;
    let mut last = vec![spawn(&ticket, &mut rng)?];
    driver.sending = true;
    driver.revive(ticket.peer_id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.echoes < before + 100 {
        if Instant::now() > deadline {
            return Err("a fresh peer after the storm got no answers".into());
        }
        driver.pump()?;
    }
    driver.drain(Duration::from_secs(10))?;
    driver.stop(&mut last, Duration::from_secs(10))?;
    let settled = driver.settle(Duration::from_secs(5))?;
    if settled.leaked + settled.quarantined != 0 {
        return Err(leak_failure(&settled, "after the last peer"));
    }
    events.drain(&host)?;

    let mut figures = Figures::default();
    figures
        .set("kills", kills)
        .set("died_events", events.died)
        .set("recovered", events.recovered)
        .set("slots_reclaimed", events.slots_reclaimed)
        .set("journal_repairs", events.journals)
        .set("before_attach", events.before_attach)
        .set("while_attaching", events.silent)
        .set(
            "frames",
            driver.requests + driver.echoes + driver.originated + driver.stale,
        )
        .set("bytes", driver.bytes)
        .set("min_reuse", reuses.iter().copied().min().unwrap_or(0))
        .set("leaks", settled.leaked);
    Ok(figures)
}

/// A peer process with `ticket`, echoing and sending frames of its own.
fn spawn(ticket: &hub_transport::Ticket, rng: &mut Rng) -> Result<ChildProcess, String> {
    ChildProcess::spawn(
        "echo",
        &[rng.next_u64().to_string(), ORIGINATE.into()],
        Some(ticket),
        false,
    )
}

/// The pause before the next kill: up to [`MAX_PAUSE`], and one time in four under 2 ms, so
/// that some kills find the last respawned peer still starting or attaching.
fn pause(rng: &mut Rng) -> Duration {
    let max = if rng.percent(25) {
        Duration::from_millis(2)
    } else {
        MAX_PAUSE
    };
    Duration::from_micros(rng.below(max.as_micros() as u64 + 1))
}

/// A ticket for the entry a kill freed, once it is recovered; the traffic goes on meanwhile.
fn respawn_ticket(
    host: &Host,
    driver: &mut Driver<'_>,
    events: &mut Events,
) -> Result<hub_transport::Ticket, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match host.add_peer() {
            Ok(ticket) => return Ok(ticket),
            Err(HostError::NoFreePeer(_)) if Instant::now() < deadline => {
                driver.pump()?;
                events.drain(host)?;
            }
            Err(error) => return Err(format!("respawn: add_peer: {error}")),
        }
    }
}

/// The supervisor's events, counted; the ones a storm must not see fail it.
#[derive(Debug, Default)]
struct Events {
    died: u64,
    recovered: u64,
    /// Slots the recoveries gave back: the dead peers' loans, and frames in flight to and
    /// from them.
    slots_reclaimed: u64,
    /// Recoveries that found a peer killed in the middle of a pop or a free (R5's journal).
    journals: u64,
    /// Peers killed before they attached, whose reservation was withdrawn.
    before_attach: u64,
    /// Peers killed while attaching (before their pid was recorded), evicted as silent.
    silent: u64,
    /// Per peer id: killed after it attached, and not recovered yet.
    awaiting: Vec<bool>,
}

impl Events {
    fn drain(&mut self, host: &Host) -> Result<(), String> {
        while let Some(event) = host.try_event() {
            match event {
                PeerEvent::Died { .. } => self.died += 1,
                PeerEvent::Recovered { peer, recovery } => {
                    self.recovered += 1;
                    self.awaiting[usize::from(peer)] = false;
                    self.slots_reclaimed +=
                        u64::from(recovery.ring_slots_freed + recovery.reclaimed.total());
                    self.journals += u64::from(recovery.reclaimed.recovered_from_journal);
                }
                PeerEvent::Evicted {
                    peer,
                    reason: EvictReason::HeartbeatTimeout { .. },
                } if self.awaiting[usize::from(peer)] => self.silent += 1,
                PeerEvent::Evicted { peer, reason } => {
                    return Err(format!("peer {peer} was evicted: {reason}"));
                }
                PeerEvent::RecoveryFailed { peer, error } => {
                    return Err(format!("recovery of peer {peer} failed: {error}"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
