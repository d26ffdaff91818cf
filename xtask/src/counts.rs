//! Test counts, and how they are read from the output of a step.
//!
//! Two summaries are understood:
//!
//! - libtest's, one per test binary and one per crate's doc tests:
//!   `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`
//! - cargo-nextest's final line:
//!   `Summary [   0.159s] 4 tests run: 2 passed (1 slow), 1 failed, 1 timed out, 1 skipped`
//!   where `failed`, `exec failed` and `timed out` all count as failed, and a cancelled run reads
//!   `3/20 tests run: ...`.
//!
//! Colour escapes are stripped before a line is read, so coloured output parses too.

use std::ops::AddAssign;

/// Passed and failed checks: tests, or whole steps for steps that are not test runners.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Checks that passed.
    pub passed: u64,
    /// Checks that failed.
    pub failed: u64,
}

impl Counts {
    /// `passed` passed and `failed` failed.
    pub const fn new(passed: u64, failed: u64) -> Self {
        Self { passed, failed }
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// How the output of a step turns into [`Counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// The step is one check: 1 passed if it exits with success, 1 failed otherwise.
    Exit,
    /// The sum of every libtest summary line.
    Libtest,
    /// The last nextest summary line (libtest lines inside it are captured test output).
    Nextest,
    /// The sum of every libtest summary line, or [`Parse::Exit`] when there is none.
    LibtestOrExit,
}

/// Reads the lines of one step's output and gives its counts at the end.
#[derive(Debug)]
pub struct Tally {
    parse: Parse,
    found: Option<Counts>,
}

impl Tally {
    /// A tally that reads output as `parse` says.
    pub fn new(parse: Parse) -> Self {
        Self { parse, found: None }
    }

    /// Read one line of output (with or without its line ending).
    pub fn line(&mut self, line: &str) {
        let line = strip_ansi(line);
        match self.parse {
            Parse::Exit => {}
            Parse::Libtest | Parse::LibtestOrExit => {
                if let Some(counts) = parse_libtest(&line) {
                    *self.found.get_or_insert_default() += counts;
                }
            }
            Parse::Nextest => {
                if let Some(counts) = parse_nextest(&line) {
                    self.found = Some(counts);
                }
            }
        }
    }

    /// The counts of the step, given whether it exited with success.
    ///
    /// A step that failed counts at least one failure, even when its output showed none (a build
    /// error, a crash of a test binary, a missing tool).
    pub fn finish(self, success: bool) -> Counts {
        let found = match (self.parse, self.found) {
            (Parse::Exit, _) | (Parse::LibtestOrExit, None) => None,
            (_, found) => Some(found.unwrap_or_default()),
        };
        match found {
            None if success => Counts::new(1, 0),
            None => Counts::new(0, 1),
            Some(mut counts) => {
                if !success && counts.failed == 0 {
                    counts.failed = 1;
                }
                counts
            }
        }
    }
}

/// Counts of a libtest summary line, `test result: ok. N passed; M failed; ...`.
pub fn parse_libtest(line: &str) -> Option<Counts> {
    let rest = line.trim_end().strip_prefix("test result: ")?;
    // "ok. 3 passed; ..." or "FAILED. 3 passed; ..."
    let (_verdict, items) = rest.split_once(". ")?;
    parse_items(items.split(';'))
}

/// Counts of nextest's final summary line, `Summary [ 0.1s] N tests run: N passed, M failed, ...`.
pub fn parse_nextest(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("Summary [")?;
    let (_, rest) = rest.split_once(']')?;
    let (run, items) = rest.split_once(':')?;
    if !(run.ends_with(" tests run") || run.ends_with(" test run")) {
        return None; // e.g. a summary of setup scripts
    }
    parse_items(remove_parentheses(items).split(','))
}

/// Sum items of the form `N label`: `passed` is passed; `failed`, `exec failed` and `timed out`
/// are failed; anything else (ignored, skipped, measured, finished in ...) is neither. `None` when
/// no item has a count.
fn parse_items<'a>(items: impl Iterator<Item = &'a str>) -> Option<Counts> {
    let mut counts = Counts::default();
    let mut any = false;
    for item in items {
        let Some((number, label)) = item.trim().split_once(' ') else {
            continue;
        };
        let Ok(n) = number.parse::<u64>() else {
            continue;
        };
        any = true;
        match label.trim() {
            "passed" => counts.passed += n,
            "failed" | "exec failed" | "timed out" => counts.failed += n,
            _ => {}
        }
    }
    any.then_some(counts)
}

/// `s` without parenthesised parts: `2 passed (1 slow, 1 flaky), 1 failed` -> `2 passed , 1 failed`.
fn remove_parentheses(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// `s` without ANSI escape sequences (CSI sequences `ESC [ ... final`, and two-byte escapes).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // A CSI sequence: parameters and intermediates, then one final byte in '@'..='~'.
        // Any other escape loses its next character (a two-byte escape).
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_ok_and_failed() {
        assert_eq!(
            parse_libtest(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n"
            ),
            Some(Counts::new(12, 0))
        );
        assert_eq!(
            parse_libtest(
                "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.14s"
            ),
            Some(Counts::new(1, 2))
        );
    }

    #[test]
    fn libtest_ignores_other_lines() {
        assert_eq!(parse_libtest("running 3 tests"), None);
        assert_eq!(parse_libtest("test foo ... ok"), None);
        // Captured output that nextest indents is not a summary of this run.
        assert_eq!(
            parse_libtest("    test result: FAILED. 0 passed; 1 failed; 0 ignored"),
            None
        );
    }

    #[test]
    fn nextest_summaries() {
        let cases = [
            (
                "     Summary [   0.159s] 4 tests run: 2 passed, 2 failed, 1 skipped",
                Counts::new(2, 2),
            ),
            (
                "     Summary [   0.001s] 0 tests run: 0 passed, 0 skipped",
                Counts::new(0, 0),
            ),
            (
                "Summary [ 1.000s] 1 test run: 1 passed, 0 skipped",
                Counts::new(1, 0),
            ),
            (
                "Summary [ 9.1s] 10 tests run: 5 passed (2 slow, 1 flaky), 2 failed (1 due to being leaky), 1 exec failed, 2 timed out, 3 skipped",
                Counts::new(5, 5),
            ),
            (
                "Summary [ 2.0s] 3/20 tests run: 2 passed, 1 failed, 0 skipped",
                Counts::new(2, 1),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_nextest(line), Some(want), "{line}");
        }
    }

    #[test]
    fn nextest_ignores_other_lines() {
        assert_eq!(
            parse_nextest("    Starting 4 tests across 2 binaries (1 test skipped)"),
            None
        );
        assert_eq!(
            parse_nextest("        PASS [   0.009s] (1/4) ntest t::a"),
            None
        );
        assert_eq!(
            parse_nextest("Summary [ 0.1s] 1 setup script run: 1 passed"),
            None
        );
    }

    #[test]
    fn colour_is_stripped() {
        let line = "\x1b[32;1m     Summary\x1b[0m [   0.2s] \x1b[1m3\x1b[0m tests run: \x1b[1m3\x1b[0m \x1b[32;1mpassed\x1b[0m, \x1b[1m0\x1b[0m \x1b[33;1mskipped\x1b[0m";
        assert_eq!(parse_nextest(&strip_ansi(line)), Some(Counts::new(3, 0)));
        assert_eq!(strip_ansi("a\x1b7b\x1b"), "ab");
    }

    #[test]
    fn tally_libtest_sums_binaries() {
        let mut t = Tally::new(Parse::Libtest);
        t.line("test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        t.line("test result: \x1b[32mok\x1b[0m. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        assert_eq!(t.finish(true), Counts::new(7, 0));
    }

    #[test]
    fn tally_nextest_takes_the_last_summary_only() {
        let mut t = Tally::new(Parse::Nextest);
        t.line("    test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 2 filtered out; finished in 0.13s");
        t.line("     Summary [   0.159s] 4 tests run: 2 passed, 2 failed, 1 skipped");
        assert_eq!(t.finish(false), Counts::new(2, 2));
    }

    #[test]
    fn a_failed_step_counts_a_failure() {
        // A build error: no summary at all.
        assert_eq!(Tally::new(Parse::Libtest).finish(false), Counts::new(0, 1));
        assert_eq!(Tally::new(Parse::Nextest).finish(false), Counts::new(0, 1));
        // A test binary that crashed after another one passed.
        let mut t = Tally::new(Parse::Libtest);
        t.line("test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        assert_eq!(t.finish(false), Counts::new(5, 1));
    }

    #[test]
    fn tally_without_summaries() {
        assert_eq!(Tally::new(Parse::Libtest).finish(true), Counts::new(0, 0));
        assert_eq!(Tally::new(Parse::Exit).finish(true), Counts::new(1, 0));
        assert_eq!(Tally::new(Parse::Exit).finish(false), Counts::new(0, 1));
        assert_eq!(
            Tally::new(Parse::LibtestOrExit).finish(true),
            Counts::new(1, 0)
        );
        let mut t = Tally::new(Parse::LibtestOrExit);
        t.line("test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        assert_eq!(t.finish(true), Counts::new(2, 0));
    }
}
