//! `cargo xtask`: the hub's task runner, and the one entry point for every check.
//!
//! ```text
//! cargo xtask test [--skip-loom] [--skip STEP]... [--only STEP]... [--no-nextest] [--seed N]
//! cargo xtask lint          # the fmt and clippy steps of `test`
//! cargo xtask loom          # the loom step of `test`
//! cargo xtask protocol      # the protocol step of `test`: docs/PROTOCOL.md against the code
//! cargo xtask soak --minutes N [--seed N]   # crash storm and hostile peer for N minutes
//! cargo xtask bench-report NAME   # Markdown table of a bench's ratios, from criterion's results
//! cargo xtask instructions  # callgrind: hot paths' instructions and RMWs vs baselines
//! cargo xtask help
//! ```
//!
//! `test` runs these steps in order, from the workspace root, whatever the current directory:
//!
//! | step      | command |
//! |-----------|---------|
//! | `fmt`     | `cargo fmt --all -- --check` |
//! | `clippy`  | `cargo clippy --workspace --all-targets --all-features -- -D warnings` |
//! | `protocol` | `cargo run --quiet -p xtask -- protocol`: `docs/PROTOCOL.md` against the code, citations and layout tables (see [`protocol`]) |
//! | `examples` | `cargo build --workspace --examples --all-features` (for the examples' CLI tests) |
//! | `test`    | `cargo nextest run --workspace --all-features --no-fail-fast --no-tests=warn` when `cargo nextest --version` works, else `cargo test --workspace --all-targets --all-features --no-fail-fast` |
//! | `doc`     | `cargo test --workspace --doc --all-features --no-fail-fast` (nextest does not run doc tests) |
//! | `rustdoc` | `RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features` |
//! | `package` | `cargo publish --workspace --dry-run --allow-dirty` (the four library crates), in `target/package-verify`, after forgetting what earlier runs built of them (see [`forget_packaged_builds`]) |
//! | `loom`    | `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release -p hub-alloc -p hub-transport --lib --no-fail-fast` |
//! | scenarios | `cargo run --release -p hub-scenarios -- NAME` for each of [`SCENARIOS`] (group name `scenarios`); `--seed N` passes a seed to each |
//!
//! Every step runs even when an earlier one failed. Each prints a header, streams the command's
//! output (standard error merged into standard output, in order) and ends with a result line.
//! Counts come from libtest's `test result:` lines and nextest's `Summary` line; `fmt`, `clippy`
//! and scenarios that print no libtest summary count as one check each. A step that exits with
//! failure counts at least one failure. The last line printed is always `N passed, M failed`,
//! totalled over all steps, and the exit code is 0 exactly when nothing failed.
//!
//! The loom build goes to its own target directory (`target/loom`, or `loom` under
//! `CARGO_TARGET_DIR` when that is set) because `--cfg loom` in `RUSTFLAGS` would otherwise
//! invalidate the normal build cache. An inherited `RUSTFLAGS` is kept, with `--cfg loom` added;
//! an inherited `LOOM_MAX_PREEMPTIONS` wins over the default of 2.
//!
//! `bench-report NAME` runs nothing: it reads what the last `cargo bench --bench NAME` left in
//! criterion's directory and prints ours against the baseline (see [`bench_report`]), leaving
//! out, and naming, figures saved more than 30 minutes before the newest (an earlier run's).
//! `instructions` builds the `hot_loop` bench target for callgrind and prints how many
//! instructions each hot path executes, and how many atomic read-modify-writes among them,
//! beside its baseline (see [`instructions`]; it needs valgrind and objdump).

mod bench_report;
mod counts;
mod instructions;
mod protocol;
mod run;

use std::env;
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use counts::{Counts, Parse};
use run::{Outcome, Step};

/// The multi-process scenarios of hub-scenarios, run after the loom models, in this order: each
/// is `SCENARIO_COMMAND NAME [--seed N]`, counts as one check (its exit status), and ends its
/// output with a line `scenario NAME: ok|FAILED  figures...  seed=N`, which the summary repeats.
const SCENARIOS: &[&str] = &[
    "echo",
    "crash-storm",
    "host-crash",
    "hostile",
    "growth",
    "mutants",
];

/// How a scenario runs, its name and options after it. The first word is replaced by the cargo
/// that runs the xtask.
const SCENARIO_COMMAND: &[&str] = &[
    "cargo",
    "run",
    "--release",
    "--quiet",
    "-p",
    "hub-scenarios",
    "--bin",
    "hub-scenario",
    "--",
];

/// Loom's preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_LOOM_MAX_PREEMPTIONS: &str = "2";

/// The crates whose loom models run.
const LOOM_PACKAGES: &[&str] = &["hub-alloc", "hub-transport"];

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  test    every check: fmt, clippy, protocol, examples, test, doc, rustdoc, package, loom,
          then the scenarios
  lint    fmt and clippy only
  loom    the loom models only
  protocol
          docs/PROTOCOL.md against the code: every rule and section cited resolves, and
          the layout tables hold hub-layout's figures
  soak --minutes N [--seed N]
          crash storm and hostile peer in turns for N minutes, then the totals
  bench-report NAME
          a Markdown table, ours / baseline, of the last `cargo bench --bench NAME`
  instructions
          callgrind's instructions and atomic read-modify-writes per round trip and
          per alloc+free, beside the baselines' (needs valgrind and objdump)
  help    this text

options (test, lint, loom):
  --only STEP     run only STEP (a step name, or `scenarios`); may be repeated
  --skip STEP     do not run STEP; may be repeated
  --skip-loom     same as --skip loom
  --no-nextest    use `cargo test` even when cargo-nextest is installed
  --seed N        the seed of every scenario (each prints the one it used)

The last line printed is `N passed, M failed`; the exit code is non-zero when anything failed.";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "bench-report") {
        return match bench_report::run(&args[1..], &workspace_root(), &mut io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("xtask: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().is_some_and(|a| a == "instructions") {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        return match instructions::run(&workspace_root(), &cargo, &mut io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("xtask: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().is_some_and(|a| a == "protocol") {
        return if protocol::run(&workspace_root(), &mut io::stdout()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if args.first().is_some_and(|a| a == "soak") {
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        return soak(&args[1..], &cargo, &workspace_root());
    }
    let options = match Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            let _ = writeln!(io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let steps = all_steps(&cargo, &root, &options);
    let selected = match select(&steps, &options) {
        Ok(selected) => selected,
        Err(message) => {
            eprintln!("xtask: {message}");
            return ExitCode::from(2);
        }
    };

    let total = selected.iter().filter(|s| s.1).count();
    let mut results: Vec<(&Step, Option<Outcome>)> = Vec::new();
    let mut index = 0;
    for (step, chosen) in selected {
        let outcome = chosen.then(|| {
            index += 1;
            if step.name == "package" {
                forget_packaged_builds(&package_target_dir(&root));
            }
            run::run(step, index, total, &root, &mut io::stdout())
        });
        results.push((step, outcome));
    }

    let totals = summarise(&results, &mut io::stdout());
    if totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the command line asked for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// Steps to run; all of them when empty.
    only: Vec<String>,
    /// Steps not to run.
    skip: Vec<String>,
    /// Use `cargo test` even when cargo-nextest is there.
    no_nextest: bool,
    /// The seed every scenario runs with (each picks and prints its own otherwise).
    seed: Option<u64>,
}

impl Options {
    /// The options of `args` (without the program name), `None` for help.
    fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let mut options = Self::default();
        let mut args = args.iter();
        match args.next().map(String::as_str) {
            Some("test") => {}
            Some("lint") => options.only = vec!["fmt".into(), "clippy".into()],
            Some("loom") => options.only = vec!["loom".into()],
            Some("help" | "-h" | "--help") => return Ok(None),
            Some(other) => return Err(format!("unknown task `{other}`")),
            None => return Err("no task given".into()),
        }
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a step name"))
            };
            match arg.as_str() {
                "--only" => options.only.push(value("--only")?),
                "--skip" => options.skip.push(value("--skip")?),
                "--skip-loom" => options.skip.push("loom".into()),
                "--no-nextest" => options.no_nextest = true,
                "--seed" => {
                    let seed = args.next().and_then(|v| v.parse().ok());
                    options.seed = Some(seed.ok_or("--seed needs a number")?);
                }
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown option `{other}`")),
            }
        }
        Ok(Some(options))
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Every step of `cargo xtask test`, in order.
fn all_steps(cargo: &OsString, root: &Path, options: &Options) -> Vec<Step> {
    let cargo_cmd = |args: &[&str]| {
        std::iter::once(cargo.clone())
            .chain(args.iter().map(OsString::from))
            .collect::<Vec<_>>()
    };
    let mut steps = vec![
        Step::new(
            "fmt",
            cargo_cmd(&["fmt", "--all", "--", "--check"]),
            Parse::Exit,
        ),
        Step::new(
            "clippy",
            cargo_cmd(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ]),
            Parse::Exit,
        ),
        // docs/PROTOCOL.md against the code (this program's `protocol` task).
        Step::new(
            "protocol",
            cargo_cmd(&["run", "--quiet", "-p", "xtask", "--", "protocol"]),
            Parse::Exit,
        ),
        // The examples' own tests (examples/tests/cli.rs) run the example binaries, which
        // neither nextest nor `cargo test` rebuilds by default.
        Step::new(
            "examples",
            cargo_cmd(&["build", "--workspace", "--examples", "--all-features"]),
            Parse::Exit,
        ),
    ];

    // Asking cargo-nextest for its version costs a process start, so only when it matters.
    let wants = |name: &str| options.only.is_empty() || options.only.iter().any(|o| o == name);
    let nextest = wants("test") && !options.no_nextest && has_nextest(cargo, root);
    steps.push(if nextest {
        Step::new(
            "test",
            cargo_cmd(&[
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
                "--no-tests=warn",
            ]),
            Parse::Nextest,
        )
    } else {
        Step::new(
            "test",
            cargo_cmd(&[
                "test",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--no-fail-fast",
            ]),
            Parse::Libtest,
        )
    });
    steps.push(Step::new(
        "doc",
        cargo_cmd(&[
            "test",
            "--workspace",
            "--doc",
            "--all-features",
            "--no-fail-fast",
        ]),
        Parse::Libtest,
    ));
    // The API documentation builds without a warning (dead links, private items named).
    steps.push(
        Step::new(
            "rustdoc",
            cargo_cmd(&["doc", "--workspace", "--no-deps", "--all-features"]),
            Parse::Exit,
        )
        .env("RUSTDOCFLAGS", "-D warnings"),
    );
    // The library crates package and build as crates.io would have them (nothing uploaded);
    // `--allow-dirty` so that a working tree with changes can be checked before a commit.
    // In a target directory of its own, where our crates are only ever built as packages (see
    // `forget_packaged_builds`).
    steps.push(
        Step::new(
            "package",
            cargo_cmd(&["publish", "--workspace", "--dry-run", "--allow-dirty"]),
            Parse::Exit,
        )
        .env("CARGO_TARGET_DIR", package_target_dir(root)),
    );

    let mut loom_args = vec!["test", "--release"];
    for package in LOOM_PACKAGES {
        loom_args.extend(["-p", package]);
    }
    loom_args.extend(["--lib", "--no-fail-fast"]);
    let mut loom = Step::new("loom", cargo_cmd(&loom_args), Parse::Libtest)
        .env("LOOM_MAX_PREEMPTIONS", loom_max_preemptions())
        .env("CARGO_TARGET_DIR", loom_target_dir(root));
    // Cargo prefers CARGO_ENCODED_RUSTFLAGS to RUSTFLAGS: add `--cfg loom` to the one it reads.
    loom = match env::var("CARGO_ENCODED_RUSTFLAGS") {
        Ok(flags) if !flags.is_empty() => loom.env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("{flags}\x1f--cfg\x1floom"),
        ),
        _ => loom.env("RUSTFLAGS", with_loom_cfg(env::var("RUSTFLAGS").ok())),
    };
    steps.push(loom);

    for name in SCENARIOS {
        let mut command = scenario_command(cargo);
        command.push(name.into());
        if let Some(seed) = options.seed {
            command.extend(["--seed".into(), seed.to_string().into()]);
        }
        steps.push(Step::new(name, command, Parse::LibtestOrExit).group("scenarios"));
    }

    // Colour helps a person reading a terminal; children see a pipe, so ask for it.
    if env::var_os("CARGO_TERM_COLOR").is_none() && io::stdout().is_terminal() {
        steps = steps
            .into_iter()
            .map(|s| s.env("CARGO_TERM_COLOR", "always"))
            .collect();
    }
    steps
}

/// The workspace's library crates, as `cargo publish --workspace` packages them.
const LIBRARY_CRATES: &[&str] = &["hub-layout", "hub-alloc", "hub-transport", "hub-tarpc"];

/// Before the `package` step: forget what earlier runs of `cargo publish --dry-run` built of
/// this workspace's own crates. Cargo verifies a package against the packages it made just
/// before, served from a local registry under the target directory; and it takes a registry
/// crate's name and version for its content. So a crate changed since an earlier run, at the
/// same version, would be verified against its old source (extracted once into
/// `$CARGO_HOME/registry/src/-HASH/NAME-VERSION`) and its old build (in `target`): an
/// unresolved import of a constant added since, say. Removed: those extracted copies (only in
/// local registries, whose directory names start with `-`, and only of these crates' names),
/// and these crates' builds in the step's own target directory, where nothing else builds
/// them. Failures are ignored: at worst the step reports the stale crate.
fn forget_packaged_builds(target: &Path) {
    let ours = |name: &str, separator: char| {
        LIBRARY_CRATES.iter().any(|krate| {
            let krate = if separator == '_' {
                krate.replace('-', "_")
            } else {
                (*krate).to_owned()
            };
            name.strip_prefix(&krate)
                .and_then(|rest| rest.strip_prefix(separator))
                .is_some()
        })
    };
    let remove_ours = |dir: &Path, prefix: &str, separator: char| {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(prefix)
                && ours(rest, separator)
            {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    };
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    if let Some(Ok(registries)) = home.map(|home| std::fs::read_dir(home.join("registry/src"))) {
        for registry in registries.flatten() {
            if registry.file_name().to_string_lossy().starts_with('-') {
                remove_ours(&registry.path(), "", '-');
            }
        }
    }
    for profile in ["debug", "release"] {
        let profile = target.join(profile);
        remove_ours(&profile.join(".fingerprint"), "", '-');
        remove_ours(&profile.join("deps"), "lib", '_');
        remove_ours(&profile.join("deps"), "", '_');
        remove_ours(&profile.join("build"), "", '-');
    }
}

/// The `package` step's target directory: `package-verify` beside the loom one.
fn package_target_dir(root: &Path) -> PathBuf {
    loom_target_dir(root).with_file_name("package-verify")
}

/// [`SCENARIO_COMMAND`] with this cargo.
fn scenario_command(cargo: &OsString) -> Vec<OsString> {
    std::iter::once(cargo.clone())
        .chain(SCENARIO_COMMAND[1..].iter().map(OsString::from))
        .collect()
}

/// `cargo xtask soak --minutes N [--seed N]`: crash storm and hostile peer in turns for N
/// minutes, the scenario binary's output as it comes; its exit status.
fn soak(args: &[String], cargo: &OsString, root: &Path) -> ExitCode {
    let mut minutes = None;
    let mut seed = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = rest.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--minutes", Some(n)) if n > 0 => minutes = Some(n),
            ("--seed", Some(n)) => seed = Some(n),
            _ => {
                eprintln!("xtask: soak takes --minutes N (N > 0) and --seed N, not {args:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(minutes) = minutes else {
        eprintln!("xtask: soak needs --minutes N");
        return ExitCode::from(2);
    };
    let mut command = scenario_command(cargo);
    command.extend([
        "soak".into(),
        "--minutes".into(),
        minutes.to_string().into(),
    ]);
    if let Some(seed) = seed {
        command.extend(["--seed".into(), seed.to_string().into()]);
    }
    let status = Command::new(&command[0])
        .args(&command[1..])
        .current_dir(root)
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("xtask: could not run the soak: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `cargo nextest --version` succeeds.
fn has_nextest(cargo: &OsString, root: &Path) -> bool {
    Command::new(cargo)
        .args(["nextest", "--version"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `LOOM_MAX_PREEMPTIONS` as inherited, or the default.
fn loom_max_preemptions() -> String {
    env::var("LOOM_MAX_PREEMPTIONS")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_LOOM_MAX_PREEMPTIONS.to_owned())
}

/// `RUSTFLAGS` for loom: the inherited flags, if any, and `--cfg loom`.
fn with_loom_cfg(inherited: Option<String>) -> String {
    match inherited {
        Some(flags) if !flags.trim().is_empty() => format!("{} --cfg loom", flags.trim()),
        _ => "--cfg loom".to_owned(),
    }
}

/// The loom target directory: `loom` inside the normal target directory.
fn loom_target_dir(root: &Path) -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("loom")
}

/// Each step with whether it runs, after `--only` and `--skip`; an error names an unknown step.
fn select<'a>(steps: &'a [Step], options: &Options) -> Result<Vec<(&'a Step, bool)>, String> {
    for name in options.only.iter().chain(&options.skip) {
        if !steps.iter().any(|s| s.is(name)) {
            let mut known: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
            if !SCENARIOS.is_empty() {
                known.push("scenarios");
            }
            return Err(format!(
                "unknown step `{name}`; the steps are: {}",
                known.join(", ")
            ));
        }
    }
    Ok(steps
        .iter()
        .map(|step| {
            let only = options.only.is_empty() || options.only.iter().any(|o| step.is(o));
            let skipped = options.skip.iter().any(|s| step.is(s));
            (step, only && !skipped)
        })
        .collect())
}

/// Write a line per step and, last, the totals `N passed, M failed`; return the totals.
///
/// Write errors are ignored: the totals and the exit code stand even if nobody reads them.
fn summarise(results: &[(&Step, Option<Outcome>)], out: &mut dyn Write) -> Counts {
    let mut totals = Counts::default();
    let width = results.iter().map(|(s, _)| s.name.len()).max().unwrap_or(0);
    let _ = writeln!(out);
    let _ = writeln!(out, "==> summary");
    for (step, outcome) in results {
        let _ = match outcome {
            None => writeln!(out, "    {:width$}  skipped", step.name),
            Some(outcome) => {
                totals += outcome.counts;
                writeln!(
                    out,
                    "    {:width$}  {:6}  {} passed, {} failed  {:.1}s{}{}",
                    step.name,
                    if outcome.success { "ok" } else { "FAILED" },
                    outcome.counts.passed,
                    outcome.counts.failed,
                    outcome.elapsed.as_secs_f64(),
                    if outcome.success {
                        String::new()
                    } else {
                        format!("  ({})", outcome.status)
                    },
                    outcome
                        .verdict
                        .as_ref()
                        .map_or_else(String::new, |v| format!("  | {v}")),
                )
            }
        };
    }
    let _ = writeln!(out, "{} passed, {} failed", totals.passed, totals.failed);
    let _ = out.flush();
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn names(selected: &[(&Step, bool)]) -> Vec<String> {
        selected
            .iter()
            .filter(|s| s.1)
            .map(|s| s.0.name.clone())
            .collect()
    }

    #[test]
    fn tasks_and_options() {
        assert_eq!(Options::parse(&args("test")), Ok(Some(Options::default())));
        assert_eq!(
            Options::parse(&args("test --skip-loom --only test --no-nextest")),
            Ok(Some(Options {
                only: vec!["test".into()],
                skip: vec!["loom".into()],
                no_nextest: true,
                seed: None,
            }))
        );
        assert_eq!(
            Options::parse(&args("lint")).unwrap().unwrap().only,
            ["fmt", "clippy"]
        );
        assert_eq!(
            Options::parse(&args("loom")).unwrap().unwrap().only,
            ["loom"]
        );
        assert_eq!(Options::parse(&args("help")), Ok(None));
        assert!(Options::parse(&args("")).is_err());
        assert!(Options::parse(&args("bench")).is_err());
        assert!(Options::parse(&args("test --only")).is_err());
        assert!(Options::parse(&args("test --frobnicate")).is_err());
        assert_eq!(
            Options::parse(&args("test --seed 7"))
                .unwrap()
                .unwrap()
                .seed,
            Some(7)
        );
        assert!(Options::parse(&args("test --seed x")).is_err());
    }

    #[test]
    fn steps_in_order_and_selection() {
        let root = workspace_root();
        let options = Options {
            no_nextest: true,
            ..Options::default()
        };
        let steps = all_steps(&"cargo".into(), &root, &options);
        let all = select(&steps, &options).unwrap();
        let mut want = vec![
            "fmt", "clippy", "protocol", "examples", "test", "doc", "rustdoc", "package", "loom",
        ];
        want.extend(SCENARIOS);
        assert_eq!(names(&all), want);

        let skip_loom = Options {
            skip: vec!["loom".into()],
            ..Options::default()
        };
        assert_eq!(
            names(&select(&steps, &skip_loom).unwrap()),
            want.iter()
                .filter(|n| **n != "loom")
                .copied()
                .collect::<Vec<_>>()
        );

        let lint = Options::parse(&args("lint")).unwrap().unwrap();
        assert_eq!(names(&select(&steps, &lint).unwrap()), ["fmt", "clippy"]);

        let unknown = Options {
            only: vec!["nope".into()],
            ..Options::default()
        };
        assert!(select(&steps, &unknown).is_err());
    }

    #[test]
    fn loom_step_builds_apart() {
        let root = Path::new("/w");
        let options = Options {
            no_nextest: true,
            ..Options::default()
        };
        let steps = all_steps(&"cargo".into(), root, &options);
        let loom = steps.iter().find(|s| s.name == "loom").unwrap();
        let display = loom.display();
        assert!(display.contains("LOOM_MAX_PREEMPTIONS="), "{display}");
        assert!(
            display.contains("cargo test --release -p hub-alloc -p hub-transport --lib"),
            "{display}"
        );
        assert!(
            loom.env.iter().any(|(k, _)| k == "CARGO_TARGET_DIR"),
            "{display}"
        );
        assert_eq!(with_loom_cfg(None), "--cfg loom");
        assert_eq!(
            with_loom_cfg(Some(" -C debuginfo=0 ".into())),
            "-C debuginfo=0 --cfg loom"
        );
    }

    #[test]
    fn the_last_line_is_the_totals() {
        let ok = Step::new("fmt", ["true"], Parse::Exit);
        let failed = Step::new("test", ["false"], Parse::Libtest);
        let skipped = Step::new("loom", ["true"], Parse::Libtest);
        let outcome = |passed, failed, success| Outcome {
            counts: Counts::new(passed, failed),
            success,
            status: if success {
                "exit status: 0"
            } else {
                "exit status: 101"
            }
            .into(),
            elapsed: std::time::Duration::from_millis(1500),
            verdict: None,
        };
        let results = [
            (&ok, Some(outcome(1, 0, true))),
            (&failed, Some(outcome(40, 2, false))),
            (&skipped, None),
        ];
        let mut out = Vec::new();
        assert_eq!(summarise(&results, &mut out), Counts::new(41, 2));
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "\n==> summary\n\
             \x20   fmt   ok      1 passed, 0 failed  1.5s\n\
             \x20   test  FAILED  40 passed, 2 failed  1.5s  (exit status: 101)\n\
             \x20   loom  skipped\n\
             41 passed, 2 failed\n"
        );
    }

    #[test]
    fn root_is_the_workspace() {
        let root = workspace_root();
        assert!(root.join("xtask").join("Cargo.toml").is_file());
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
