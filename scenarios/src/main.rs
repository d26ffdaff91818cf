//! `hub-scenario`: the hub run for real, with real processes dying at random moments.
//!
//! ```text
//! hub-scenario SCENARIO [--seed N] [--quick]     one scenario; its last line says what it saw
//! hub-scenario soak --minutes N [--seed N]       crash storm and hostile peer, in turns, N minutes
//! hub-scenario role ROLE ...                     a child process of a scenario (not for people)
//! ```
//!
//! The scenarios (each is a module of this crate, documented there):
//!
//! | name          | proves |
//! |---------------|--------|
//! | `echo`        | 8 peers and a host exchange 100,000+ checksummed frames of 0 B to 16 MiB each way; every slot is free at the end |
//! | `crash-storm` | 200+ SIGKILLs of random peers under load, each respawned: no slot leaked, no payload corrupted, every id reused, the host still serves |
//! | `host-crash`  | SIGKILL of a loaded host: every peer returns the host-gone error within one second |
//! | `hostile`     | a peer scribbling on its rings, descriptors, peer entry, slot metas and free-list heads is evicted, the damage to shared state is found and repaired, honest streams go on |
//! | `growth`      | peers exhausting the largest class at once grow it to its last extent, use the new slots, then get `NoFreeSlots` |
//! | `mutants`     | 10,000+ mutated copies of a segment file each give a typed error or a working hub, never a panic |
//!
//! A seed drives every random choice of the orchestrator (and is passed on to its children),
//! printed first, so that a failure can be replayed with `--seed`. The exit status is 0 when
//! the scenario held, 1 when it did not, 2 for a bad command line.

#![deny(unsafe_op_in_unsafe_fn)]

#[path = "../../crates/hub-transport/tests/common/pattern.rs"]
#[allow(dead_code)]
mod pattern;

#[path = "../../crates/hub-transport/tests/common/sparse.rs"]
mod sparse;

mod common;
mod echo;
mod growth;
mod host_crash;
mod hostile;
mod mutants;
mod roles;
mod storm;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::Figures;

/// A scenario: name, what it runs.
type Scenario = (&'static str, fn(&Settings) -> Result<Figures, String>);

/// Every scenario, in the order `cargo xtask test` runs them.
const SCENARIOS: &[Scenario] = &[
    ("echo", echo::run),
    ("crash-storm", storm::run),
    ("host-crash", host_crash::run),
    ("hostile", hostile::run),
    ("growth", growth::run),
    ("mutants", mutants::run),
];

/// What a scenario run was asked for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seed of every random choice.
    pub seed: u64,
    /// A smaller run (a tenth of the work), for a quick look.
    pub quick: bool,
    /// For `soak`: run until then.
    pub until: Option<Instant>,
}

impl Settings {
    /// `full` for a normal run, `quick` for `--quick`.
    pub fn scale(&self, full: u64, quick: u64) -> u64 {
        if self.quick { quick } else { full }
    }
}

const USAGE: &str =
    "usage: hub-scenario echo|crash-storm|host-crash|hostile|growth|mutants [--seed N] [--quick]
       hub-scenario soak --minutes N [--seed N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "role") {
        return roles::main(&args[1..]);
    }
    let Some(name) = args.first().cloned() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut seed = None;
    let mut minutes = None;
    let mut quick = false;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let mut value = || rest.next().and_then(|v| v.parse::<u64>().ok());
        match arg.as_str() {
            "--seed" => seed = value(),
            "--minutes" => minutes = value(),
            "--quick" => quick = true,
            _ => {
                eprintln!("hub-scenario: unknown argument {arg:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let seed = seed.unwrap_or_else(common::fresh_seed);
    let settings = Settings {
        seed,
        quick,
        until: minutes.map(|m| Instant::now() + Duration::from_secs(m * 60)),
    };
    if name == "soak" {
        let Some(minutes) = minutes else {
            eprintln!("hub-scenario: soak needs --minutes N\n{USAGE}");
            return ExitCode::from(2);
        };
        return soak(&settings, minutes);
    }
    let Some(&(name, scenario)) = SCENARIOS.iter().find(|s| s.0 == name) else {
        eprintln!("hub-scenario: no scenario {name:?}\n{USAGE}");
        return ExitCode::from(2);
    };
    common::watchdog(common::SCENARIO_LIMIT, name);
    println!(
        "scenario {name}: seed {seed} (replay: cargo run --release -p hub-scenarios -- {name} --seed {seed}{})",
        if quick { " --quick" } else { "" }
    );
    report(name, seed, Instant::now(), scenario(&settings))
}

/// Print a scenario's line and return its exit status.
fn report(name: &str, seed: u64, started: Instant, result: Result<Figures, String>) -> ExitCode {
    let secs = started.elapsed().as_secs_f64();
    match result {
        Ok(figures) => {
            println!("scenario {name}: ok  {figures}  {secs:.1}s  seed={seed}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("scenario {name}: FAILED  {error}  {secs:.1}s  seed={seed}");
            ExitCode::FAILURE
        }
    }
}

/// Crash storm and hostile peer in turns until the deadline; the totals at the end.
fn soak(settings: &Settings, minutes: u64) -> ExitCode {
    let started = Instant::now();
    let until = started + Duration::from_secs(minutes * 60);
    common::watchdog(
        Duration::from_secs(minutes * 60) + common::SCENARIO_LIMIT,
        "soak",
    );
    println!(
        "soak: {minutes} min, seed {} (replay: cargo xtask soak --minutes {minutes} --seed {})",
        settings.seed, settings.seed
    );
    let mut totals = Figures::default();
    let mut round = 0u64;
    let mut failed = None;
    while Instant::now() < until && failed.is_none() {
        for (name, scenario) in [
            ("crash-storm", storm::run as fn(&_) -> _),
            ("hostile", hostile::run),
        ] {
            let seed = common::mix(settings.seed, round);
            let round_settings = Settings {
                seed,
                quick: false,
                until: Some(until),
            };
            let t = Instant::now();
            match scenario(&round_settings) {
                Ok(figures) => {
                    println!(
                        "soak round {round} {name}: ok  {figures}  {:.1}s  seed={seed}",
                        t.elapsed().as_secs_f64()
                    );
                    totals.add_all(&figures);
                }
                Err(error) => {
                    println!(
                        "soak round {round} {name}: FAILED  {error}  seed={seed} (replay: cargo run --release -p hub-scenarios -- {name} --seed {seed})"
                    );
                    totals.add("leaks", echo::leaks_in(&error));
                    failed = Some(error);
                    break;
                }
            }
            round += 1;
        }
    }
    let leaks = totals.get("leaks");
    println!(
        "soak totals: {} rounds={round} frames={} bytes={} kills={} evictions={} repairs={} leaks={leaks}  {:.0}s",
        if failed.is_none() { "ok" } else { "FAILED" },
        totals.get("frames"),
        totals.get("bytes"),
        totals.get("kills"),
        totals.get("evictions"),
        totals.get("repairs"),
        started.elapsed().as_secs_f64(),
    );
    if failed.is_none() && leaks == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
