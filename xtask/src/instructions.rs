//! `cargo xtask instructions`: how many instructions the hot paths execute, and how many of them
//! are atomic read-modify-writes, each beside its baseline, counted by callgrind. A count does
//! not move with the machine's load or with where the VM puts its vCPUs, as times do on a shared
//! VM; so it is how a change to a hot path is judged first, before alternated time runs of the
//! criterion benches.
//!
//! The read-modify-writes are counted because the instructions alone mislead: on x86 every
//! one of them (a `lock`-prefixed instruction, or an `xchg` with memory, which locks without the
//! prefix) waits for the store buffer to drain and costs up to a few tens of cycles where most
//! instructions cost one, so two paths of equal length can differ in time by their
//! read-modify-writes. Full fences compiled as `lock or` to the stack are counted with them;
//! only the binary's own instructions are, not those of libc or the dynamic loader.
//!
//! It builds the `hot_loop` bench target of hub-benches (see `benches/hot_loop.rs`) with
//! `--cfg rustix_use_libc` (rustix's own system calls read the vDSO in a way valgrind does not
//! support), in `target/callgrind` (or `callgrind` under `CARGO_TARGET_DIR`), runs each figure
//! under `valgrind --tool=callgrind --dump-instr=yes` counting only inside its measured loop,
//! finds the locked instructions of the binary with `objdump`, adds up how often callgrind saw
//! each execute, and prints a Markdown table: per iteration, ours and the baseline's
//! instructions and read-modify-writes, and the ratio of the instructions. It needs `valgrind`
//! and `objdump` (binutils).

use std::collections::HashSet;
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
        name: "in-process round trip, 8 B inline",
        ours: &["round-trip", "8"],
        baseline_name: "the hub's rings alone, 8 B",
        baseline: &["ring-round-trip"],
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
        name: "one-way slot, class 0 (the free list both ways)",
        ours: &["one-way-slot", "0"],
        baseline_name: "ArrayQueue pop+push",
        baseline: &["queue"],
    },
];

/// What callgrind counted of one figure, per measured iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    /// Instructions executed, all objects (callgrind's `Ir` total).
    instructions: f64,
    /// Executions of the binary's locked instructions (atomic read-modify-writes, and full
    /// fences).
    read_modify_writes: f64,
}

/// Run the task. Errors are for the user.
pub fn run(root: &Path, cargo: &OsStr, out: &mut dyn Write) -> Result<(), String> {
    for (tool, arg) in [("valgrind", "--version"), ("objdump", "--version")] {
        let answered = Command::new(tool).arg(arg).output();
        if !answered.is_ok_and(|output| output.status.success()) {
            return Err(format!("{tool} is needed (`{tool} {arg}` failed)"));
        }
    }
    let binary = build(root, cargo)?;
    let locked = locked_instructions(&binary)?;
    let dir = target_dir(root);
    let mut counted: Vec<(&[&str], Counts)> = Vec::new();
    let mut count = |args: &'static [&'static str]| -> Result<Counts, String> {
        if let Some(&(_, known)) = counted.iter().find(|(a, _)| *a == args) {
            return Ok(known);
        }
        let per_iteration = counts(&binary, &locked, &dir, args)?;
        counted.push((args, per_iteration));
        Ok(per_iteration)
    };
    let mut rows = Vec::new();
    for figure in FIGURES {
        rows.push((figure, count(figure.ours)?, count(figure.baseline)?));
    }
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "| figure | ours | RMWs | baseline | baseline's | RMWs | ratio |"
        )?;
        writeln!(out, "|---|---:|---:|---|---:|---:|---:|")?;
        for (figure, ours, baseline) in &rows {
            writeln!(
                out,
                "| {} | {:.0} | {:.1} | {} | {:.0} | {:.1} | {:.2} |",
                figure.name,
                ours.instructions,
                ours.read_modify_writes,
                figure.baseline_name,
                baseline.instructions,
                baseline.read_modify_writes,
                ours.instructions / baseline.instructions
            )?;
        }
        writeln!(
            out,
            "\nInstructions, and atomic read-modify-writes (locked instructions) among them, per \
             iteration (callgrind, {ITERATIONS} iterations after a warm-up); ratio = ours / \
             baseline, of the instructions."
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

/// What callgrind counts per measured iteration of `hot_loop ARGS ITERATIONS`: its
/// instructions, and the executions of the `locked` ones among them.
fn counts(
    binary: &Path,
    locked: &HashSet<u64>,
    dir: &Path,
    args: &[&str],
) -> Result<Counts, String> {
    let out_file = dir.join(format!("{}.callgrind", args.join("-")));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--dump-instr=yes")
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
    let profile = std::fs::read_to_string(&out_file)
        .map_err(|e| format!("reading {}: {e}", out_file.display()))?;
    let executed = executions_of(&profile, &binary.to_string_lossy(), locked)
        .map_err(|e| format!("reading {}: {e}", out_file.display()))?;
    Ok(Counts {
        instructions: collected as f64 / ITERATIONS as f64,
        read_modify_writes: executed as f64 / ITERATIONS as f64,
    })
}

/// The addresses of `binary`'s locked instructions, from `objdump -d`.
fn locked_instructions(binary: &Path) -> Result<HashSet<u64>, String> {
    let output = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(binary)
        .output()
        .map_err(|e| format!("running objdump: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "objdump -d {} failed:\n{}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let locked = locked_in_disassembly(&String::from_utf8_lossy(&output.stdout));
    if locked.is_empty() {
        return Err(format!(
            "objdump found no locked instruction in {}",
            binary.display()
        ));
    }
    Ok(locked)
}

/// The addresses of the locked instructions in `objdump -d --no-show-raw-insn`'s output (lines
/// like `  12be91:\tlock orl $0x0,-0x40(%rsp)`): those with the `lock` prefix, and `xchg` with
/// a memory operand, which locks without it.
fn locked_in_disassembly(disassembly: &str) -> HashSet<u64> {
    disassembly
        .lines()
        .filter_map(|line| {
            let (address, instruction) = line.split_once(":\t")?;
            let address = u64::from_str_radix(address.trim(), 16).ok()?;
            let instruction = instruction.trim_start();
            let locked = instruction.starts_with("lock ")
                || (instruction.starts_with("xchg") && instruction.contains('('));
            locked.then_some(address)
        })
        .collect()
}

/// How many times callgrind saw the instructions at `addresses` of the object `object`
/// execute, from a profile written with `--dump-instr=yes`.
///
/// The `positions:` header names the subpositions that start each cost line (`instr` must be
/// one of them) and `events:` the counts after them (`Ir` must be one; a count a line leaves
/// out is 0). Cost lines name an instruction's address absolutely (`0x45c50`), relative to the
/// previous cost line's (`+7`, `-12`) or as the same (`*`). Three kinds of line name a
/// position without moving that base: the target after `calls=`, `jump=` or `jcnd=`, and the
/// line following each of them (a call's inclusive cost, or a jump's source); those are not
/// executions and are skipped. Only the lines under `object`'s `ob=` are counted: other
/// objects' addresses are offsets of other files. (Objects are named once, in an `ob=` or
/// `cob=` line, as `(id) name`, and by `(id)` after that.)
///
/// Fails when the headers lack `instr` or `Ir`, when a line's address cannot be read, when an
/// `(id)` was never named, or when no `ob=` line names `object`.
fn executions_of(profile: &str, object: &str, addresses: &HashSet<u64>) -> Result<u64, String> {
    let mut names: Vec<(String, String)> = Vec::new();
    // Which subposition is the instruction's address, and how many there are.
    let mut positions: Option<(usize, usize)> = None;
    // Which field after the subpositions is `Ir`.
    let mut instructions_event: Option<usize> = None;
    let mut in_object = false;
    let mut object_seen = false;
    let mut address: u64 = 0;
    let mut skip_next = false;
    let mut executed = 0;
    for line in profile.lines() {
        if let Some(list) = line.strip_prefix("positions:") {
            let list: Vec<&str> = list.split_ascii_whitespace().collect();
            let instr = list.iter().position(|p| *p == "instr");
            positions = Some((
                instr.ok_or_else(|| format!("positions without `instr`: {line:?}"))?,
                list.len(),
            ));
            continue;
        }
        if let Some(list) = line.strip_prefix("events:") {
            let ir = list.split_ascii_whitespace().position(|e| e == "Ir");
            instructions_event = Some(ir.ok_or_else(|| format!("events without `Ir`: {line:?}"))?);
            continue;
        }
        if let Some(named) = line.strip_prefix("ob=") {
            in_object = same_object(compressed_name(named, &mut names)?, object);
            object_seen |= in_object;
            continue;
        }
        // A called object's name, which later `ob=` lines may give by its id alone.
        if let Some(named) = line.strip_prefix("cob=") {
            compressed_name(named, &mut names)?;
            continue;
        }
        if ["calls=", "jump=", "jcnd="]
            .iter()
            .any(|key| line.starts_with(key))
        {
            skip_next = true;
            continue;
        }
        let Some(first) = line.chars().next() else {
            continue;
        };
        if !(first.is_ascii_digit() || matches!(first, '+' | '-' | '*')) {
            continue;
        }
        let (Some((instr, subpositions)), Some(ir)) = (positions, instructions_event) else {
            return Err(format!(
                "a cost line before the positions and events headers: {line:?}"
            ));
        };
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let position = subposition(fields.get(instr).copied().unwrap_or("*"), address)
            .ok_or_else(|| format!("a cost line with a bad address: {line:?}"))?;
        if std::mem::take(&mut skip_next) {
            continue;
        }
        address = position;
        if !in_object || !addresses.contains(&address) {
            continue;
        }
        let cost: u64 = match fields.get(subpositions + ir) {
            None => 0,
            Some(cost) => cost
                .parse()
                .map_err(|_| format!("a cost line with a bad count: {line:?}"))?,
        };
        executed += cost;
    }
    if !object_seen {
        return Err(format!("no `ob=` line names {object}"));
    }
    Ok(executed)
}

/// Whether callgrind's name of an object is `object`: the same path, or the same file once
/// both are canonicalised (callgrind may name it through a link the caller did not).
fn same_object(named: &str, object: &str) -> bool {
    named == object
        || match (std::fs::canonicalize(named), std::fs::canonicalize(object)) {
            (Ok(named), Ok(object)) => named == object,
            _ => false,
        }
}

/// The name a compressed `(id) name` or `(id)` stands for, recording new ones in `names`;
/// an uncompressed name as it is. Fails on an `(id)` that was never named.
fn compressed_name<'a>(
    field: &'a str,
    names: &'a mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    let field = field.trim();
    let Some(rest) = field.strip_prefix('(') else {
        return Ok(field);
    };
    let Some((id, name)) = rest.split_once(')') else {
        return Ok(field);
    };
    let name = name.trim();
    if !name.is_empty() {
        names.push((id.to_owned(), name.to_owned()));
        return Ok(name);
    }
    names
        .iter()
        .rev()
        .find(|(known, _)| known == id)
        .map(|(_, name)| name.as_str())
        .ok_or_else(|| format!("an object id named nowhere before: ({id})"))
}

/// An instruction position of a callgrind cost line, given the previous one: `0x` hex,
/// decimal, `+N`/`-N` relative (decimal, or hex after `0x`), or `*` for the same.
fn subposition(field: &str, previous: u64) -> Option<u64> {
    let number = |digits: &str| match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => digits.parse().ok(),
    };
    match field.as_bytes().first()? {
        b'*' => Some(previous),
        b'+' => previous.checked_add(number(&field[1..])?),
        b'-' => previous.checked_sub(number(&field[1..])?),
        _ => number(field),
    }
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
    fn finds_the_locked_instructions_in_a_disassembly() {
        let disassembly = concat!(
            "000000000012be20 <_ZN4link8ring_out>:\n",
            "  12be2b:\tmovzwl 0xe8(%rdi),%eax\n",
            "  12be91:\tlock orl $0x0,-0x40(%rsp)\n",
            "  12bedf:\tlock cmpxchg %r8d,(%rbx)\n",
            "  12bf78:\txchg   %eax,0xc0(%rbp)\n",
            "  12bf80:\txchg   %ax,%ax\n",
            "  12bf84:\tje     12c0a2 <_ZN4link8ring_out+0x282>\n",
        );
        let locked = locked_in_disassembly(disassembly);
        assert_eq!(locked, HashSet::from([0x12be91, 0x12bedf, 0x12bf78]));
    }

    #[test]
    fn counts_the_executions_of_named_instructions_in_one_object() {
        let profile = concat!(
            "positions: instr line\n",
            "events: Ir\n",
            "ob=(6) /w/hot_loop\n",
            "fl=(1) /w/a.rs\n",
            "fn=(2) measured\n",
            "0x100 34 20000\n",
            "+4 * 20000\n", // 0x104, locked
            "cfn=(3) callee\n",
            "calls=20000 0x200 12\n",
            "* * 900000\n",  // the call's inclusive cost at 0x104, not executions
            "+2 35 20000\n", // 0x106
            "calls=20000 +0x100 12\n", // the target, 0x206: the base stays 0x106
            "+4 * 900000\n", // the call's cost at 0x10a: the base stays 0x106
            "+4 36 20000\n", // 0x10a, locked
            "jump=5 +0x10\n",
            "-2\n",         // the jump's source, 0x108: the base stays 0x10a
            "-6 * 40000\n", // 0x104 again, locked
            "0x10a 37\n",   // no count: none
            "cob=(7) /lib/libc.so.6\n",
            "cfn=(4) memcpy\n",
            "calls=1 0x300 0\n",
            "0x10e 37 10\n", // the call's cost
            "ob=(7)\n",
            "0x104 0 5\n", // another object's offset
            "ob=(6)\n",
            "0x10a 36 3\n", // locked
        );
        let locked = HashSet::from([0x104, 0x10a]);
        assert_eq!(executions_of(profile, "/w/hot_loop", &locked), Ok(80003));
        assert!(executions_of(profile, "/w/other", &locked).is_err());
        assert!(executions_of("ob=(1) x\n+z 1 2\n", "x", &locked).is_err());
        assert!(executions_of("ob=(1) x\nob=(2)\n", "x", &locked).is_err());
    }

    #[test]
    fn reads_the_subpositions_and_events_the_headers_name() {
        let profile = concat!(
            "positions: line instr\n",
            "events: Bc Ir\n",
            "ob=/w/x\n",
            "7 0x104 1 9\n", // Ir 9
            "8 +0 2\n",      // no Ir: none
            "* +6 0 4\n",    // 0x10a, Ir 4
        );
        let locked = HashSet::from([0x104, 0x10a]);
        assert_eq!(executions_of(profile, "/w/x", &locked), Ok(13));
        let no_instr = "positions: line\nevents: Ir\nob=/w/x\n7 9\n";
        assert!(executions_of(no_instr, "/w/x", &locked).is_err());
        let no_ir = "positions: instr\nevents: Bc\nob=/w/x\n0x104 9\n";
        assert!(executions_of(no_ir, "/w/x", &locked).is_err());
    }

    #[test]
    fn reads_subpositions() {
        assert_eq!(subposition("0x45c50", 7), Some(0x45c50));
        assert_eq!(subposition("+12", 100), Some(112));
        assert_eq!(subposition("-0x10", 100), Some(84));
        assert_eq!(subposition("*", 100), Some(100));
        assert_eq!(subposition("-200", 100), None);
        assert_eq!(subposition("", 100), None);
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
