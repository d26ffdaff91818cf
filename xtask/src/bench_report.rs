//! `cargo xtask bench-report NAME`: a Markdown table of ours against the baseline, from what
//! criterion saved of the last `cargo bench` run.
//!
//! It reads every `<criterion>/**/new/benchmark.json` whose group id is `NAME` or starts with
//! `NAME/`, and the `mean.point_estimate` (nanoseconds per iteration) of the `estimates.json`
//! beside it. `<criterion>` is `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion` (relative
//! to the workspace root), else `target/criterion`: where criterion writes.
//!
//! The convention the benches follow: in each group, a function id that starts with `baseline`
//! is a baseline, and every other benchmark of the group is compared with each of the group's
//! baselines of the same parameter (one row each), or else with its first baseline. Rows come in
//! the order the benchmarks ran (the estimates' modification times). A figure saved more than
//! [`STALE`] before the newest one is an earlier run's (a baseline measured only behind a
//! feature, say): it is left out of the table and named under it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One benchmark as criterion saved it.
#[derive(Debug, Clone, PartialEq)]
struct Bench {
    group: String,
    function: String,
    value: Option<String>,
    mean_ns: f64,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    figure: String,
    ours_ns: f64,
    baseline_ns: f64,
}

/// Run the task: `args` are the words after `bench-report`. Errors are for the user.
pub fn run(args: &[String], root: &Path, out: &mut dyn Write) -> Result<(), String> {
    let [name] = args else {
        return Err("usage: cargo xtask bench-report NAME (the bench, e.g. `alloc`)".into());
    };
    report(name, &criterion_dir(root), out)
}

/// The table of bench `name` from the criterion results in `dir`.
fn report(name: &str, dir: &Path, out: &mut dyn Write) -> Result<(), String> {
    let hint = format!("run `cargo bench -p hub-benches --bench {name}` first");
    if !dir.is_dir() {
        return Err(format!("no criterion results in {}: {hint}", dir.display()));
    }
    let mut found = Vec::new();
    collect(dir, &mut found).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    found.sort_by_key(|(modified, _)| *modified);
    found.retain(|(_, b)| b.group == name || b.group.starts_with(&format!("{name}/")));
    let (benches, stale) = split_stale(found);
    let rows = rows(name, &benches);
    if rows.is_empty() {
        return Err(format!(
            "no `{name}` benchmark with a baseline under {}: {hint}",
            dir.display()
        ));
    }
    let mut table = table(&rows, &machine());
    if !stale.is_empty() {
        let names: Vec<String> = stale.iter().map(Bench::id).collect();
        table.push_str(&format!(
            "\nLeft out, saved more than {} minutes before the newest figure (an earlier run's): {}.\n",
            STALE.as_secs() / 60,
            names.join(", ")
        ));
    }
    out.write_all(table.as_bytes()).map_err(|e| e.to_string())
}

/// How much older than the newest figure of a report a figure may be and still be of the same
/// run: a whole `cargo bench` of one bench takes a few minutes.
const STALE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// `found`, oldest first, split into the figures of the newest run and those saved more than
/// [`STALE`] before its newest figure: an earlier run's, such as a baseline measured only
/// behind a feature, or a benchmark since renamed.
fn split_stale(found: Vec<(SystemTime, Bench)>) -> (Vec<Bench>, Vec<Bench>) {
    let newest = found.iter().map(|(modified, _)| *modified).max();
    let cutoff = newest.and_then(|newest| newest.checked_sub(STALE));
    let (fresh, stale): (Vec<_>, Vec<_>) = found
        .into_iter()
        .partition(|(modified, _)| cutoff.is_none_or(|cutoff| *modified >= cutoff));
    let benches = |found: Vec<(SystemTime, Bench)>| found.into_iter().map(|(_, b)| b).collect();
    (benches(fresh), benches(stale))
}

impl Bench {
    /// `group/function/value`, as criterion names the benchmark.
    fn id(&self) -> String {
        match &self.value {
            Some(value) => format!("{}/{}/{value}", self.group, self.function),
            None => format!("{}/{}", self.group, self.function),
        }
    }
}

/// Where criterion keeps its results.
fn criterion_dir(root: &Path) -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = var("CRITERION_HOME") {
        return root.join(home);
    }
    var("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
        .join("criterion")
}

/// Every saved benchmark under `dir`, with when its estimates were written.
fn collect(dir: &Path, found: &mut Vec<(SystemTime, Bench)>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let estimates = path.join("estimates.json");
            let (Ok(about), Ok(numbers), Ok(meta)) = (
                fs::read_to_string(path.join("benchmark.json")),
                fs::read_to_string(&estimates),
                fs::metadata(&estimates),
            ) else {
                continue;
            };
            if let Some(bench) = parse_bench(&about, &numbers) {
                found.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), bench));
            }
        } else {
            collect(&path, found)?;
        }
    }
    Ok(())
}

fn parse_bench(benchmark_json: &str, estimates_json: &str) -> Option<Bench> {
    let mean = &estimates_json[estimates_json.find("\"mean\"")?..];
    Some(Bench {
        group: json_string(benchmark_json, "group_id")??,
        function: json_string(benchmark_json, "function_id")??,
        value: json_string(benchmark_json, "value_str")?,
        mean_ns: json_number(mean, "point_estimate")?,
    })
}

/// The value of the first `"key":` in `json` when it is a string (`Some(Some(_))`) or `null`
/// (`Some(None)`): just enough JSON for criterion's files.
fn json_string(json: &str, key: &str) -> Option<Option<String>> {
    let rest = after_key(json, key)?;
    if rest.starts_with("null") {
        return Some(None);
    }
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut value = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(Some(value)),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
}

/// The number after the first `"key":` in `json`.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let rest = after_key(json, key)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What follows `"key":` (and any blanks) in `json`.
fn after_key<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let rest = &json[json.find(&quoted)? + quoted.len()..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// A row per non-baseline benchmark and baseline of its group: every baseline of the same
/// parameter, or else the group's first baseline.
fn rows(name: &str, benches: &[Bench]) -> Vec<Row> {
    let is_baseline = |b: &Bench| b.function.starts_with("baseline");
    let mut rows = Vec::new();
    for ours in benches.iter().filter(|b| !is_baseline(b)) {
        let group: Vec<&Bench> = benches
            .iter()
            .filter(|b| b.group == ours.group && is_baseline(b))
            .collect();
        let same: Vec<&Bench> = group
            .iter()
            .copied()
            .filter(|b| b.value == ours.value)
            .collect();
        let baselines = if same.is_empty() {
            group.first().copied().into_iter().collect()
        } else {
            same
        };
        let setting = ours
            .group
            .strip_prefix(name)
            .unwrap_or(&ours.group)
            .trim_start_matches('/');
        for baseline in baselines {
            let against = baseline.function["baseline".len()..].trim_start_matches([' ', '_']);
            let mut figure = String::new();
            if !setting.is_empty() {
                figure.push_str(setting);
                figure.push_str(": ");
            }
            figure.push_str(&ours.function);
            if let Some(value) = &ours.value {
                figure.push(' ');
                figure.push_str(value);
            }
            if !against.is_empty() {
                figure.push_str(" vs ");
                figure.push_str(against.trim_end());
            }
            rows.push(Row {
                figure,
                ours_ns: ours.mean_ns,
                baseline_ns: baseline.mean_ns,
            });
        }
    }
    rows
}

/// The Markdown table and, under it, the machine line.
fn table(rows: &[Row], machine: &str) -> String {
    let mut out =
        String::from("| figure | ours (ns) | baseline (ns) | ratio |\n|---|---:|---:|---:|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2} |\n",
            row.figure.replace('|', "\\|"),
            row.ours_ns,
            row.baseline_ns,
            row.ours_ns / row.baseline_ns,
        ));
    }
    out.push_str(&format!(
        "\nMean time per iteration (criterion's `mean.point_estimate`); ratio = ours / baseline. {machine}\n"
    ));
    out
}

/// `Machine: x86_64, CPU model, N CPUs; YYYY-MM-DD.`
fn machine() -> String {
    let arch = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let days = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (y, m, d) = civil_date(days as i64);
    format!("Machine: {arch}, {model}, {cpus} CPUs; {y:04}-{m:02}-{d:02}.")
}

/// The proleptic Gregorian date of day `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":35.4,"upper_bound":40.9},"point_estimate":38.25,"standard_error":1.4},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":34.9,"upper_bound":43.5},"point_estimate":99.0,"standard_error":2.4},"slope":null}"#;

    fn bench(group: &str, function: &str, value: Option<&str>, mean_ns: f64) -> Bench {
        Bench {
            group: group.into(),
            function: function.into(),
            value: value.map(Into::into),
            mean_ns,
        }
    }

    #[test]
    fn reads_criterion_files() {
        let about = r#"{"group_id":"alloc/uncontended","function_id":"hub-alloc","value_str":"class 0 (1 KiB)","throughput":null,"full_id":"x"}"#;
        assert_eq!(
            parse_bench(about, ESTIMATES),
            Some(bench(
                "alloc/uncontended",
                "hub-alloc",
                Some("class 0 (1 KiB)"),
                38.25
            ))
        );
        let baseline =
            r#"{"group_id":"a \"q\" \u0041","function_id":"baseline X","value_str":null}"#;
        assert_eq!(
            parse_bench(baseline, ESTIMATES),
            Some(bench("a \"q\" A", "baseline X", None, 38.25))
        );
        assert_eq!(parse_bench(r#"{"group_id":"g"}"#, ESTIMATES), None);
        assert_eq!(parse_bench(about, "{}"), None);
        assert_eq!(json_number(r#"{"n" : -1.5e3}"#, "n"), Some(-1500.0));
    }

    #[test]
    fn figures_of_an_earlier_run_are_left_out() {
        let now = SystemTime::now();
        let at = |minutes_ago: u64| now - std::time::Duration::from_secs(minutes_ago * 60);
        let found = vec![
            (
                at(120),
                bench("latency/spin", "baseline_iceoryx2", Some("8 B"), 900.0),
            ),
            (at(4), bench("latency/spin", "hub", Some("8 B"), 230.0)),
            (
                at(3),
                bench("latency/spin", "baseline_spin_floor", Some("8 B"), 66.0),
            ),
        ];
        let (fresh, stale) = split_stale(found);
        let ids = |benches: &[Bench]| benches.iter().map(Bench::id).collect::<Vec<_>>();
        assert_eq!(
            ids(&fresh),
            [
                "latency/spin/hub/8 B",
                "latency/spin/baseline_spin_floor/8 B"
            ]
        );
        assert_eq!(ids(&stale), ["latency/spin/baseline_iceoryx2/8 B"]);
        assert_eq!(split_stale(Vec::new()), (Vec::new(), Vec::new()));
    }

    #[test]
    fn pairs_each_benchmark_with_its_groups_baseline() {
        let benches = [
            bench("alloc/uncontended", "hub-alloc", Some("class 0"), 30.0),
            bench("alloc/uncontended", "hub-alloc", Some("class 1"), 45.0),
            bench("alloc/uncontended", "baseline ArrayQueue", None, 15.0),
            bench("alloc/contended", "hub-alloc", Some("x2"), 80.0),
            bench("alloc/contended", "baseline Q", Some("x1"), 10.0),
            bench("alloc/contended", "baseline Q", Some("x2"), 40.0),
            bench("alloc/lonely", "hub-alloc", None, 1.0),
        ];
        let rows = rows("alloc", &benches);
        let figures: Vec<&str> = rows.iter().map(|r| r.figure.as_str()).collect();
        assert_eq!(
            figures,
            [
                "uncontended: hub-alloc class 0 vs ArrayQueue",
                "uncontended: hub-alloc class 1 vs ArrayQueue",
                "contended: hub-alloc x2 vs Q",
            ]
        );
        assert_eq!(rows[2].baseline_ns, 40.0);
        let latency = [
            bench("latency/block", "hub", Some("8 B"), 12.0),
            bench("latency/block", "baseline_futex", Some("8 B"), 6.0),
            bench("latency/block", "baseline_pipe", Some("8 B"), 8.0),
            bench("latency/block", "hub", Some("1 KiB"), 13.0),
            bench("latency/block", "baseline_futex", Some("1 KiB"), 7.0),
        ];
        let latency_rows = super::rows("latency", &latency);
        let figures: Vec<&str> = latency_rows.iter().map(|r| r.figure.as_str()).collect();
        assert_eq!(
            figures,
            [
                "block: hub 8 B vs futex",
                "block: hub 8 B vs pipe",
                "block: hub 1 KiB vs futex",
            ]
        );
        assert_eq!(latency_rows[1].baseline_ns, 8.0);
        let table = table(&rows[..1], "Machine: m.");
        assert_eq!(
            table,
            "| figure | ours (ns) | baseline (ns) | ratio |\n\
             |---|---:|---:|---:|\n\
             | uncontended: hub-alloc class 0 vs ArrayQueue | 30.0 | 15.0 | 2.00 |\n\
             \n\
             Mean time per iteration (criterion's `mean.point_estimate`); ratio = ours / baseline. Machine: m.\n"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_000), (2024, 10, 4));
        assert!(machine().starts_with("Machine: "));
    }

    #[test]
    fn needs_a_name_and_results() {
        let mut out = Vec::new();
        let nowhere = Path::new("/nonexistent-criterion-root");
        assert!(run(&[], nowhere, &mut out).is_err());
        assert!(run(&["a".into(), "b".into()], nowhere, &mut out).is_err());
        assert!(report("alloc", nowhere, &mut out).is_err());
        assert!(out.is_empty());
    }
}
