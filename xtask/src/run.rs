//! Running one step: a header, the command's output streamed as it comes, and its counts.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::counts::{Counts, Parse, Tally};

/// One command of a task, run from the workspace root.
#[derive(Debug, Clone)]
pub struct Step {
    /// The name `--only` and `--skip` select it by.
    pub name: String,
    /// A second name that selects it together with its siblings (`scenarios`), or its own name.
    pub group: String,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Variables set for the command, on top of the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// How its output turns into counts.
    pub parse: Parse,
}

impl Step {
    /// A step named `name` (also its group) that runs `command`.
    pub fn new<S: Into<OsString>>(
        name: &str,
        command: impl IntoIterator<Item = S>,
        parse: Parse,
    ) -> Self {
        Self {
            name: name.to_owned(),
            group: name.to_owned(),
            command: command.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            parse,
        }
    }

    /// Set `key` to `value` for the command.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Put the step in `group`.
    pub fn group(mut self, group: &str) -> Self {
        self.group = group.to_owned();
        self
    }

    /// Whether `selector` names this step or its group.
    pub fn is(&self, selector: &str) -> bool {
        self.name == selector || self.group == selector
    }

    /// The command as a person would type it, with its variables in front.
    pub fn display(&self) -> String {
        let env = self
            .env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())));
        let words = self.command.iter().enumerate().map(|(i, w)| {
            let w = w.to_string_lossy();
            // The first word is often the absolute path of cargo: show its name only.
            if i == 0 {
                Path::new(&*w)
                    .file_name()
                    .map_or_else(|| w.to_string(), |n| n.to_string_lossy().into_owned())
            } else {
                quote(&w)
            }
        });
        env.chain(words).collect::<Vec<_>>().join(" ")
    }
}

/// `s`, in single quotes when a shell would split or expand it.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// What became of a step.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its counts (a step that failed counts at least one failure).
    pub counts: Counts,
    /// Whether the command ran and exited with success.
    pub success: bool,
    /// How the command ended, for the summary: `exit status: 1`, `signal: 9`, a spawn error.
    pub status: String,
    /// How long it took.
    pub elapsed: Duration,
    /// A scenario's verdict: the last line it printed that starts with `scenario NAME: `, without
    /// that prefix (`ok  peers=8 frames=200056 ...  seed=7`).
    pub verdict: Option<String>,
}

/// Run `step` from `root`: write its header to `out`, stream its standard output and standard
/// error (both to `out`, in the order the command wrote them) while reading its counts, and write a
/// line with its result.
///
/// Failures to write to `out` are ignored: a closed terminal must not change the counts.
pub fn run(step: &Step, index: usize, total: usize, root: &Path, out: &mut dyn Write) -> Outcome {
    let start = Instant::now();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "==> [{index}/{total}] {}: {}",
        step.name,
        step.display()
    );
    let _ = out.flush();

    let mut tally = Tally::new(step.parse);
    let mut verdict = None;
    let (success, status) = match spawn_and_stream(step, root, &mut tally, &mut verdict, out) {
        Ok(status) => (status.success(), status.to_string()),
        Err(error) => {
            let _ = writeln!(out, "xtask: could not run `{}`: {error}", step.display());
            (false, format!("not run: {error}"))
        }
    };
    let outcome = Outcome {
        counts: tally.finish(success),
        success,
        status,
        elapsed: start.elapsed(),
        verdict,
    };
    let _ = writeln!(
        out,
        "==> {}: {} ({} passed, {} failed) in {:.1}s",
        step.name,
        if outcome.success {
            "ok".to_owned()
        } else {
            format!("FAILED, {}", outcome.status)
        },
        outcome.counts.passed,
        outcome.counts.failed,
        outcome.elapsed.as_secs_f64(),
    );
    let _ = out.flush();
    outcome
}

/// Spawn the command with both output streams on one pipe, copy each line to `out` and to
/// `tally`, and wait for it.
fn spawn_and_stream(
    step: &Step,
    root: &Path,
    tally: &mut Tally,
    verdict: &mut Option<String>,
    out: &mut dyn Write,
) -> io::Result<ExitStatus> {
    let prefix = format!("scenario {}: ", step.name);
    let (program, args) = step
        .command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let (reader, writer) = io::pipe()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(step.env.iter().map(|(k, v)| (k, v)))
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = command.spawn()?;
    // The command holds our copies of the write end; without dropping it the pipe never ends.
    drop(command);

    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                // A closed standard output must not stop the step; the counts still matter.
                let _ = out.write_all(&line).and_then(|()| out.flush());
                let text = String::from_utf8_lossy(&line);
                tally.line(&text);
                if let Some(rest) = text.strip_prefix(&prefix)
                    && (rest.starts_with("ok") || rest.starts_with("FAILED"))
                {
                    *verdict = Some(rest.trim_end().to_owned());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = writeln!(out, "xtask: reading the output failed: {e}");
                break;
            }
        }
    }
    child.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let step = Step::new(
            "t",
            ["/usr/bin/cargo", "test", "--", "-D warnings", "it's"],
            Parse::Exit,
        )
        .env("RUSTFLAGS", "--cfg loom");
        assert_eq!(
            step.display(),
            r"RUSTFLAGS='--cfg loom' cargo test -- '-D warnings' 'it'\''s'"
        );
    }

    #[test]
    fn runs_and_counts_a_command() {
        let root = std::env::temp_dir();
        let ok = Step::new(
            "ok",
            [
                "sh",
                "-c",
                "echo 'test result: ok. 2 passed; 0 failed; 0 ignored' >&2",
            ],
            Parse::Libtest,
        );
        // Into a buffer: libtest does not capture what goes to the real standard output, and an
        // outer `cargo xtask test` would count this line.
        let mut out = Vec::new();
        let outcome = run(&ok, 1, 1, &root, &mut out);
        assert!(outcome.success);
        assert_eq!(outcome.counts, Counts::new(2, 0));
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("==> [1/1] ok: sh -c"), "{out}");
        assert!(out.contains("\ntest result: ok. 2 passed"), "{out}");
        assert!(
            out.contains("\n==> ok: ok (2 passed, 0 failed) in "),
            "{out}"
        );

        assert_eq!(outcome.verdict, None);

        let scenario = Step::new(
            "echo",
            [
                "sh",
                "-c",
                "echo 'scenario echo: seed 7'; echo 'scenario echo: ok  frames=9  seed=7'",
            ],
            Parse::LibtestOrExit,
        );
        let outcome = run(&scenario, 1, 1, &root, &mut Vec::new());
        assert_eq!(outcome.verdict.as_deref(), Some("ok  frames=9  seed=7"));

        let failed = Step::new("failed", ["sh", "-c", "exit 3"], Parse::Libtest);
        let outcome = run(&failed, 1, 1, &root, &mut Vec::new());
        assert!(!outcome.success);
        assert_eq!(outcome.counts, Counts::new(0, 1));

        let missing = Step::new("missing", ["/nonexistent/xtask-test"], Parse::Exit);
        let outcome = run(&missing, 1, 1, &root, &mut Vec::new());
        assert!(!outcome.success);
        assert_eq!(outcome.counts, Counts::new(0, 1));
    }
}
