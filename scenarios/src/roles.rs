//! The child processes of the scenarios: `hub-scenario role ROLE ARGS...`.
//!
//! Every child asks for `SIGKILL` when its parent dies and has a watchdog, so that none
//! outlives its scenario. A peer attaches with the ticket in its environment.
//!
//! - `echo SEED ORIGINATE`: checks each request's checksum and echoes it; after each echo, with
//!   ORIGINATE percent chance, also sends a frame of its own (random size, checksummed). Says
//!   goodbye and exits 0 on `STOP`.
//! - `stream SEED`: sends frames of its own and checks the host's echoes, forever; prints
//!   `RUNNING` after the first echo; exits [`EXIT_HOST_GONE`] on the host-gone error.
//! - `host-load PATH PEERS`: a host at PATH that prints `TICKET <env value>` for each of PEERS
//!   peers, then `READY`, and echoes every frame until killed.
//! - `grab` and `hostile ...`: see [`crate::growth`] and [`crate::hostile`].

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use hub_transport::{Disconnect, Host, HubConfig, LoanError, Peer, RecvError, SendError};

use crate::common::{
    self, ECHO, EXIT_CORRUPT, EXIT_FAILED, EXIT_HOST_GONE, EXIT_HUNG, ORIGIN, REQUEST, Rng, STOP,
};

/// How long a child lives at most.
const CHILD_LIMIT: Duration = Duration::from_secs(240);

/// Why a child stops.
pub enum Stop {
    /// It saw the host-gone error.
    HostGone,
    /// It received a corrupted payload.
    Corrupt(String),
    /// Something else failed.
    Failed(String),
}

impl From<LoanError> for Stop {
    fn from(error: LoanError) -> Self {
        match error {
            LoanError::Disconnected(Disconnect::HostGone) => Stop::HostGone,
            other => Stop::Failed(format!("loan: {other}")),
        }
    }
}

impl From<SendError> for Stop {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Disconnected(Disconnect::HostGone) => Stop::HostGone,
            other => Stop::Failed(format!("send: {other}")),
        }
    }
}

impl From<RecvError> for Stop {
    fn from(error: RecvError) -> Self {
        match error {
            RecvError::Disconnected(Disconnect::HostGone) => Stop::HostGone,
            other => Stop::Failed(format!("recv: {other}")),
        }
    }
}

/// Print a line for the parent, now.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Result<T, Stop> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Stop::Failed(format!("argument {i} missing or malformed in {args:?}")))
}

/// Entry point of `hub-scenario role ...`.
pub fn main(args: &[String]) -> ExitCode {
    // SIGKILL when the scenario that spawned this process dies: no orphan outlives it.
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
    {
        eprintln!("hub-scenario role: PR_SET_PDEATHSIG: {e}");
    }
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIMIT);
        eprintln!("hub-scenario role: watchdog fired after {CHILD_LIMIT:?}");
        std::process::exit(EXIT_HUNG);
    });
    let role = args.first().map_or("", String::as_str);
    let rest = args.get(1..).unwrap_or_default();
    let result = match role {
        "echo" => echo(rest),
        "stream" => stream(rest),
        "host-load" => host_load(rest),
        "grab" => crate::growth::peer(rest),
        "hostile" => crate::hostile::peer(rest),
        other => Err(Stop::Failed(format!("no role {other:?}"))),
    };
    let code = match result {
        Ok(()) => 0,
        Err(Stop::HostGone) => EXIT_HOST_GONE,
        Err(Stop::Corrupt(message)) => {
            eprintln!("hub-scenario role {role}: {message}");
            EXIT_CORRUPT
        }
        Err(Stop::Failed(message)) => {
            eprintln!("hub-scenario role {role}: {message}");
            EXIT_FAILED
        }
    };
    ExitCode::from(code as u8)
}

/// Attach with the ticket in the environment.
pub fn attach() -> Result<Peer, Stop> {
    Peer::from_env().map_err(|e| Stop::Failed(format!("attach: {e}")))
}

/// A loan of `len` bytes; an allocator error (shared state a faulty peer damaged, which the
/// host repairs) is a clean failure: tried again for up to ten seconds.
pub fn loan(peer: &Peer, len: usize) -> Result<hub_transport::Loan, Stop> {
    let started = std::time::Instant::now();
    loop {
        match peer.loan(len) {
            Ok(loan) => return Ok(loan),
            Err(LoanError::Alloc(_)) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Send a frame of `len` bytes filled from `seed`, checksummed, with `method_id` and `seq`.
pub fn send_filled(
    peer: &Peer,
    len: usize,
    seed: u64,
    method_id: u32,
    seq: u32,
) -> Result<(), Stop> {
    let mut loan = loan(peer, len)?;
    let meta = common::fill_frame(loan.as_mut_slice(), seed, method_id, seq);
    peer.send_loan(meta, loan)?;
    Ok(())
}

fn echo(args: &[String]) -> Result<(), Stop> {
    let seed: u64 = arg(args, 0)?;
    let originate: u64 = arg(args, 1)?;
    let peer = attach()?;
    let mut rng = Rng::new(seed);
    let mut originated = 0u32;
    loop {
        let frame = peer.recv()?;
        let meta = *frame.meta();
        match meta.method_id {
            STOP => {
                drop(frame);
                drop(peer);
                return Ok(());
            }
            REQUEST => {
                common::verify(&meta, frame.payload()).map_err(Stop::Corrupt)?;
                let mut loan = loan(&peer, frame.len())?;
                loan.as_mut_slice().copy_from_slice(frame.payload());
                drop(frame);
                peer.send_loan(
                    hub_transport::FrameMeta {
                        method_id: ECHO,
                        ..meta
                    },
                    loan,
                )?;
                if rng.percent(originate) {
                    let len = common::payload_size(&mut rng);
                    send_filled(&peer, len, rng.next_u64(), ORIGIN, originated)?;
                    originated = originated.wrapping_add(1);
                }
            }
            _ => {}
        }
    }
}

fn stream(args: &[String]) -> Result<(), Stop> {
    let seed: u64 = arg(args, 0)?;
    let peer = attach()?;
    let mut rng = Rng::new(seed);
    let mut running = false;
    for seq in 0u32.. {
        let len = common::payload_size(&mut rng).min(1 << 20);
        send_filled(&peer, len, rng.next_u64(), ORIGIN, seq)?;
        let echo = peer.recv()?;
        common::verify(echo.meta(), echo.payload()).map_err(Stop::Corrupt)?;
        if echo.meta().channel_id != seq {
            return Err(Stop::Failed(format!(
                "echo of frame {} came for frame {seq}",
                echo.meta().channel_id
            )));
        }
        if !running {
            say("RUNNING");
            running = true;
        }
    }
    Ok(())
}

fn host_load(args: &[String]) -> Result<(), Stop> {
    let path: String = arg(args, 0)?;
    let peers: u16 = arg(args, 1)?;
    let host = Host::create(&HubConfig::new().max_peers(peers).path(path))
        .map_err(|e| Stop::Failed(format!("create: {e}")))?;
    for _ in 0..peers {
        let ticket = host
            .add_peer()
            .map_err(|e| Stop::Failed(format!("add_peer: {e}")))?;
        say(&format!("TICKET {}", ticket.env_value()));
    }
    say("READY");
    loop {
        let frame = host.recv()?;
        let mut loan = host.loan(frame.len())?;
        loan.as_mut_slice().copy_from_slice(frame.payload());
        let (to, meta) = (frame.peer(), *frame.meta());
        drop(frame);
        match host.send_loan(to, meta, loan) {
            Ok(()) | Err(SendError::Disconnected(Disconnect::PeerNotActive { .. })) => {}
            Err(error) => return Err(error.into()),
        }
    }
}
