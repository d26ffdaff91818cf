//! The examples behave like command-line tools: `--help` prints the usage text and succeeds,
//! an unknown argument fails with the usage text, and output into a closed pipe ends quietly.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Every example program; each must answer `--help`.
const EXAMPLES: [&str; 7] = [
    "crash_recovery",
    "inspect",
    "large_payload",
    "layout",
    "ping_pong",
    "plugin_host",
    "rpc_tarpc",
];

/// An example's binary, in the target directory this test binary is in (built by `cargo build
/// --examples`, the `examples` step of `cargo xtask test`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = target.join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built: `cargo build --examples` first (`cargo xtask test` does)",
        path.display()
    );
    path
}

#[test]
fn help_prints_the_usage_and_succeeds() {
    for name in EXAMPLES {
        let output = Command::new(example(name))
            .arg("--help")
            .output()
            .expect("run the example");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name} --help: {output:?}");
        assert!(
            stdout.starts_with(&format!("usage: {name}")),
            "{name} --help printed {stdout:?}"
        );
        assert!(output.stderr.is_empty(), "{name} --help wrote to stderr");
    }
}

#[test]
fn an_unknown_argument_fails_with_the_usage_on_stderr() {
    for name in EXAMPLES {
        let output = Command::new(example(name))
            .arg("--no-such-flag")
            .output()
            .expect("run the example");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} accepted a bogus flag");
        assert!(
            stderr.starts_with(&format!("{name}: ")) && stderr.contains("usage:"),
            "{name} said {stderr:?}"
        );
        assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
    }
}

/// Every example with its quickest options: each prints a little and ends within a second or
/// so.
const QUICK_RUNS: [(&str, &[&str]); 7] = [
    ("crash_recovery", &[]),
    ("inspect", &["--demo"]),
    ("large_payload", &["--size", "1048576", "--iters", "5"]),
    ("layout", &[]),
    ("ping_pong", &["--iters", "200"]),
    ("plugin_host", &["--plugins", "2", "--seconds", "1"]),
    ("rpc_tarpc", &["--calls", "50"]),
];

#[test]
fn quick_runs_cover_every_example() {
    let mut names: Vec<_> = QUICK_RUNS.iter().map(|(name, _)| *name).collect();
    names.sort_unstable();
    assert_eq!(names, EXAMPLES);
}

/// Run `name args` with its standard output into a reader that takes `take` bytes and closes
/// the pipe (`NAME ARGS | head -c TAKE`): the program must end quietly and successfully, as
/// command-line tools do: no panic, no error.
fn run_into_a_closed_pipe(name: &str, args: &[&str], take: u64) {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the example");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut taken = Vec::new();
    stdout
        .take(take)
        .read_to_end(&mut taken)
        .expect("read the output");
    // The reader is gone: every later write of the example fails with EPIPE.
    let output = child.wait_with_output().expect("wait for the example");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked"),
        "{name} | head -c {take} panicked: {stderr}"
    );
    assert!(
        output.status.success() && stderr.is_empty(),
        "{name} | head -c {take}: {:?}, {stderr}",
        output.status
    );
    if take > 0 {
        assert!(!taken.is_empty(), "{name} printed nothing");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    for (name, args) in QUICK_RUNS {
        // Closed before the first write (`NAME | true`), so that every write fails, and after
        // some output (`NAME | head -c 50`).
        for take in [0, 50] {
            run_into_a_closed_pipe(name, args, take);
        }
    }
}

#[test]
fn examples_print_through_the_quiet_writers() {
    // `println!` panics into a closed pipe; `say!` and `print_quietly` end quietly.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in EXAMPLES {
        let source = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        for (number, line) in source.lines().enumerate() {
            let code = line.trim_start();
            let prints = code
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
                .any(|word| word == "println!" || word == "print!");
            assert!(
                code.starts_with("//") || !prints,
                "{name}.rs:{}: prints with println!/print!: {line}",
                number + 1
            );
        }
    }
}

#[test]
fn inspect_json_is_the_snapshot() {
    let output = Command::new(example("inspect"))
        .args(["--json", "--demo"])
        .output()
        .expect("run inspect");
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON value");
    // The fields of inspect's JSON before it was the snapshot's, and the new ones.
    assert_eq!(json["version"], "1.0", "the version as major.minor");
    assert_eq!(json["stale"], false);
    for field in [
        "path",
        "max_peers",
        "ring_capacity",
        "current_size",
        "mapped_len",
        "resident",
        "host_pid",
        "host_left",
        "damage",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    let peers = json["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 4);
    assert_eq!(peers[0]["state"], "active");
    assert_eq!(peers[2]["state"], "reserved");
    assert_eq!(peers[0]["to_host"], 2);
    assert_eq!(peers[1]["to_peer"], 2);
    assert!(peers[0]["heartbeat_age_ns"].is_u64());
    assert!(peers[2]["heartbeat_age_ns"].is_null());
    // The demo's slots: 4 KiB frames (class 1), one received and kept by the host (which took
    // a loan of the class too); 100 KiB frames (class 2); a 1 MiB loan (class 3).
    let classes = json["classes"].as_array().expect("classes");
    let counts = |class: usize| {
        let c = &classes[class];
        ["kept", "allocated", "in_flight", "corrupt"].map(|field| c[field].as_u64().unwrap())
    };
    assert_eq!(counts(1), [1, 0, 2, 0], "{}", classes[1]);
    assert_eq!(counts(2), [0, 0, 2, 0], "{}", classes[2]);
    assert_eq!(counts(3), [0, 1, 0, 0], "{}", classes[3]);
    for c in classes {
        let field = |name: &str| c[name].as_u64().unwrap();
        assert_eq!(
            field("free") + field("allocated") + field("in_flight") + field("corrupt"),
            field("total"),
            "{c}"
        );
        assert!(field("extents") >= 1 && field("slot_size") >= 1024);
    }
}

#[test]
fn errors_name_what_was_wrong_once_and_in_the_users_words() {
    let output = Command::new(example("layout"))
        .args(["0", "7"])
        .output()
        .expect("run layout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(
        stderr.trim_end(),
        "layout: MAX_PEERS must be 1 to 32, not 0"
    );

    let output = Command::new(example("inspect"))
        .arg("/nonexistent/hub")
        .output()
        .expect("run inspect");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.matches("inspect:").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("/nonexistent/hub").count(), 1, "{stderr}");
    assert!(!stderr.contains("::") && !stderr.contains('{'), "{stderr}");
}

/// Set in the environment of this test binary run as a host that creates a hub at the path
/// and waits to be killed.
const STALE_CHILD_ENV: &str = "HUB_EXAMPLES_STALE_CHILD";

#[test]
fn inspect_reports_a_hub_whose_creator_was_killed_as_stale() {
    use std::io::BufRead;
    if let Ok(path) = std::env::var(STALE_CHILD_ENV) {
        let config = hub_transport::HubConfig::new().max_peers(1).path(path);
        let _host = hub_transport::Host::create(&config).expect("create the hub");
        println!("ready");
        loop {
            std::thread::park();
        }
    }
    let dir = std::env::temp_dir().join(format!("hub-cli-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hub");
    let mut creator = Command::new(std::env::current_exe().unwrap())
        .args([
            "inspect_reports_a_hub_whose_creator_was_killed_as_stale",
            "--exact",
            "--nocapture",
        ])
        .env(STALE_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the creator");
    let ready = std::io::BufReader::new(creator.stdout.take().unwrap())
        .lines()
        .any(|line| line.is_ok_and(|line| line == "ready"));
    assert!(ready, "the creator's hub is up");
    let inspect = |path: &std::path::Path| {
        let output = Command::new(example("inspect"))
            .args(["--json".as_ref(), path.as_os_str()])
            .output()
            .expect("run inspect");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(inspect(&path).contains("\"stale\":false"));
    creator.kill().unwrap();
    creator.wait().unwrap();
    let json = inspect(&path);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(json.contains("\"stale\":true"), "{json}");
}
