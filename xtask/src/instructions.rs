//! `cargo xtask instructions`: how many instructions the hot paths execute, each beside its
//! baseline, counted by callgrind. A count does not move with the machine's load or with where
//! the VM puts its vCPUs, as times do on a shared VM; so it is how a change to a hot path is
//! judged first, before alternated time runs of the criterion benches.
//!
//! It builds the `hot_loop` bench target of hub-benches (see `benches/hot_loop.rs`) with
//! `--cfg rustix_use_libc` (rustix's own system calls read the vDSO in a way valgrind does not
//! support), in `target/callgrind` (or `callgrind` under `CARGO_TARGET_DIR`), runs each figure
//! under `valgrind --tool=callgrind` counting only inside its measured loop, and prints a
//! Markdown table: instructions per iteration, ours and the baseline's, and their ratio.

use std::env;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Measured iterations per figure (after the binary's own warm-up).
const ITERATIONS: u64 = 20_000;

/// The function whose instructions callgrind counts, callees included.
const MEASURED: &str = "hot_loop::measured*";

/// One row: what is measured, ours (`hot_loop` arguments), the baseline's.
struct Figure {
    name: &'static str,
    ours: &'static [&'static str],
    baseline_name: &'static str,
    baseline: &'static [&'static str],
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "in-process round trip, 8 B inline",
        ours: &["round-trip", "8"],
        baseline_name: "crossbeam channels, 8 B",
        baseline: &["channel-round-trip", "8"],
    },
    Figure {
        name: "in-process round trip, 64 B through slots",
        ours: &["round-trip", "64"],
        baseline_name: "crossbeam channels, 64 B",
        baseline: &["channel-round-trip", "64"],
    },
    Figure {
        name: "alloc+free, class 0 (keeps slots)",
        ours: &["alloc", "0"],
        baseline_name: "ArrayQueue pop+push",
        baseline: &["queue"],
    },
    Figure {
        name: "alloc+free, class 3 (free list)",
        ours: &["alloc", "3"],
        baseline_name: "ArrayQueue pop+push",
        baseline: &["queue"],
    },
];

/// Run the task. Errors are for the user.
pub fn run(root: &Path, cargo: &OsStr, out: &mut dyn Write) -> Result<(), String> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|output| output.status.success()) {
        return Err("valgrind is needed (`valgrind --version` failed)".into());
    }
    let binary = build(root, cargo)?;
    let dir = target_dir(root);
    let mut counted: Vec<(&[&str], f64)> = Vec::new();
    let mut count = |args: &'static [&'static str]| -> Result<f64, String> {
        if let Some(&(_, known)) = counted.iter().find(|(a, _)| *a == args) {
            return Ok(known);
        }
        let per_iteration = instructions(&binary, &dir, args)?;
        counted.push((args, per_iteration));
        Ok(per_iteration)
    };
    let mut rows = Vec::new();
    for figure in FIGURES {
        rows.push((figure, count(figure.ours)?, count(figure.baseline)?));
    }
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(out, "| figure | ours | baseline | baseline's | ratio |")?;
        writeln!(out, "|---|---:|---|---:|---:|")?;
        for (figure, ours, baseline) in &rows {
            writeln!(
                out,
                "| {} | {ours:.0} | {} | {baseline:.0} | {:.2} |",
                figure.name,
                figure.baseline_name,
                ours / baseline
            )?;
        }
        writeln!(
            out,
            "\nInstructions per iteration (callgrind, {ITERATIONS} iterations after a warm-up); \
             ratio = ours / baseline."
        )
    };
    write(out).map_err(|e| format!("writing the table: {e}"))
}

/// Where the instrumented build goes.
fn target_dir(root: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir).join("callgrind"),
        None => root.join("target").join("callgrind"),
    }
}

/// Build `hot_loop` for callgrind; its path.
fn build(root: &Path, cargo: &OsStr) -> Result<PathBuf, String> {
    let output = Command::new(cargo)
        .args([
            "bench",
            "-p",
            "hub-benches",
            "--bench",
            "hot_loop",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target_dir(root))
        // Cargo prefers CARGO_ENCODED_RUSTFLAGS to RUSTFLAGS: this build reads only the latter.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", with_libc_cfg(env::var("RUSTFLAGS").ok()))
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building hot_loop failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    executable(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| "cargo named no hot_loop executable".into())
}

/// `flags` with `--cfg rustix_use_libc` added.
fn with_libc_cfg(flags: Option<String>) -> String {
    match flags {
        Some(flags) if !flags.trim().is_empty() => format!("{flags} --cfg rustix_use_libc"),
        _ => "--cfg rustix_use_libc".into(),
    }
}

/// The path of the `hot_loop` executable in cargo's JSON messages.
fn executable(messages: &str) -> Option<PathBuf> {
    const KEY: &str = "\"executable\":\"";
    messages
        .lines()
        .filter(|line| line.contains("\"name\":\"hot_loop\""))
        .find_map(|line| {
            let start = line.find(KEY)? + KEY.len();
            let end = start + line[start..].find('"')?;
            Some(PathBuf::from(&line[start..end]))
        })
}

/// Instructions per measured iteration of `hot_loop ARGS ITERATIONS`.
fn instructions(binary: &Path, dir: &Path, args: &[&str]) -> Result<f64, String> {
    let out_file = dir.join(format!("{}.callgrind", args.join("-")));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--toggle-collect={MEASURED}"))
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(binary)
        .args(args)
        .arg(ITERATIONS.to_string())
        .output()
        .map_err(|e| format!("running valgrind: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "hot_loop {} failed under callgrind:\n{log}",
            args.join(" ")
        ));
    }
    let collected = collected(&log)
        .ok_or_else(|| format!("no instruction count in callgrind's output:\n{log}"))?;
    Ok(collected as f64 / ITERATIONS as f64)
}

/// The count of callgrind's `Collected : N` line.
fn collected(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let (_, count) = line.split_once("Collected :")?;
        count.trim().replace(',', "").parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_executable_among_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"hub_benches"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["bench"],"name":"hot_loop"},"#,
            r#""executable":"/w/target/callgrind/release/deps/hot_loop-0123"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable(messages),
            Some(PathBuf::from(
                "/w/target/callgrind/release/deps/hot_loop-0123"
            ))
        );
        assert_eq!(executable(r#"{"reason":"build-finished"}"#), None);
    }

    #[test]
    fn reads_the_collected_count() {
        let log = "==12== Events    : Ir\n==12== Collected : 21,540,000\n==12==\n";
        assert_eq!(collected(log), Some(21_540_000));
        assert_eq!(collected("==12== I   refs: 5\n"), None);
    }

    #[test]
    fn adds_the_libc_cfg_to_inherited_flags() {
        assert_eq!(with_libc_cfg(None), "--cfg rustix_use_libc");
        assert_eq!(with_libc_cfg(Some("  ".into())), "--cfg rustix_use_libc");
        assert_eq!(
            with_libc_cfg(Some("-C target-cpu=native".into())),
            "-C target-cpu=native --cfg rustix_use_libc"
        );
    }
}
