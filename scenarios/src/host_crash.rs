//! **host-crash**: SIGKILL the host under load; every peer returns the host-gone error within
//! one second, and nothing hangs.
//!
//! The host is a process of its own (role `host-load`: a named hub that echoes every frame), so
//! that the orchestrator can kill it and watch its peers. Four peer processes (role `stream`)
//! send checksummed frames of up to 1 MiB and check each echo, as fast as they can. After a
//! random 50 to 250 ms of that, the host is killed with SIGKILL, which gives it no chance to
//! say anything: the peers learn of it from the host's pidfd (R12). Each peer, wherever it is
//! (waiting for an echo, waiting for room in a ring, in a loan), must return
//! `HostGone` and exit with status 40; the orchestrator measures from the kill to each exit.
//! Five rounds, each with a fresh hub.

use std::time::Duration;

use crate::Settings;
use crate::common::{self, ChildProcess, EXIT_HOST_GONE, Figures, Rng, ScratchDir};

/// Peers per round.
const PEERS: u16 = 4;
/// How soon after the host's death every peer must have exited.
const LIMIT: Duration = Duration::from_secs(1);

/// Run the scenario.
pub fn run(settings: &Settings) -> Result<Figures, String> {
    let rounds = settings.scale(5, 1);
    let dir = ScratchDir::new("host-crash")?;
    let mut rng = Rng::new(settings.seed);
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    for round in 0..rounds {
        let path = dir.0.join(format!("hub-{round}"));
        let mut host = ChildProcess::spawn(
            "host-load",
            &[path.display().to_string(), PEERS.to_string()],
            None,
            true,
        )?;
        let mut tickets = Vec::new();
        for _ in 0..PEERS {
            let value = host.expect_line("TICKET ")?;
            let spec = hub_transport::TicketSpec::parse(&value)
                .map_err(|e| format!("the host's ticket: {e}"))?;
            tickets.push((spec.peer, value));
        }
        host.expect_line("READY")?;
        let mut peers = Vec::new();
        for ticket in tickets {
            peers.push(ChildProcess::spawn_with(
                "stream",
                &[rng.next_u64().to_string()],
                Some(ticket),
                true,
            )?);
        }
        for peer in &mut peers {
            peer.expect_line("RUNNING")?;
        }
        std::thread::sleep(Duration::from_millis(rng.between(50, 250)));
        host.kill();
        let killed_at = host.killed_at.ok_or("the host was not killed")?;

        let mut exits = vec![None; peers.len()];
        while exits.iter().any(Option::is_none) && killed_at.elapsed() < 3 * LIMIT {
            for (peer, exit) in peers.iter_mut().zip(&mut exits) {
                if exit.is_none()
                    && let Some(status) = peer.try_wait()?
                {
                    *exit = Some((status, killed_at.elapsed()));
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        for (peer, exit) in peers.iter().zip(&exits) {
            let Some((status, after)) = exit else {
                return Err(format!(
                    "round {round}: peer {:?} still runs {:?} after the host died",
                    peer.peer,
                    3 * LIMIT
                ));
            };
            if status.code() != Some(EXIT_HOST_GONE) {
                return Err(format!(
                    "round {round}: peer {:?} ended with {}, not the host-gone error",
                    peer.peer,
                    common::describe(*status)
                ));
            }
            if *after > LIMIT {
                return Err(format!(
                    "round {round}: peer {:?} took {after:?} to see the host gone",
                    peer.peer
                ));
            }
            worst = worst.max(*after);
            total += *after;
        }
    }
    let mut figures = Figures::default();
    figures
        .set("rounds", rounds)
        .set("peers", rounds * u64::from(PEERS))
        .set("host_gone", rounds * u64::from(PEERS))
        .set(
            "mean_exit_ms",
            (total.as_millis() / u128::from(rounds * u64::from(PEERS))) as u64,
        )
        .set("max_exit_ms", worst.as_millis() as u64);
    Ok(figures)
}
