//! The plugin processes of the integration tests: the test binary itself, run again.
//!
//! A test binary that includes this module includes `common` as well. A test that needs a plugin
//! process builds its command with [`test_peer`] or [`chaos`] and
//! spawns it (directly, or through `Host::spawn_peer` so that it inherits a ticket). The
//! command runs the current test binary as `<binary> --exact plugin_process --nocapture`, which
//! libtest (`cargo test`) and the binary under `cargo nextest run` both accept, with [`ROLE_ENV`]
//! naming the plugin and its arguments. Every test binary that spawns plugins declares that test
//! function, which does nothing unless [`ROLE_ENV`] is set:
//!
//! ```ignore
//! mod plugin;
//!
//! /// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); else nothing.
//! #[test]
//! fn plugin_process() {
//!     plugin::run_if_asked();
//! }
//! ```
//!
//! The plugin prints [`MARKER`] on its standard output before anything else, after what libtest
//! printed there; [`stdout`] skips up to it, so that a test reading the plugin's lines sees only
//! the plugin's. The plugin leaves with its own exit status (`std::process::exit`), never
//! through libtest.
//!
//! - [`test_peer`] (module `test_peer`): a well-behaved plugin (echo, send, wait for the host's
//!   goodbye) and the child of the mapping tests (`grow-mapping`);
//! - [`chaos`] (module `chaos`): a badly behaved one (holds slots and gets killed, scribbles on
//!   its ring, forges descriptors, pokes words under remote control: [`poke`] drives that one)
//!   and a killable host.

#![allow(dead_code)]

use crate::common::pattern;

mod chaos;
pub mod poke;
mod test_peer;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command};

/// The environment variable that makes `plugin_process` a plugin: the plugin's name and its
/// arguments, separated by [`SEPARATOR`].
pub const ROLE_ENV: &str = "HUB_TEST_PLUGIN";
/// The name of the test function that runs a plugin, for `--exact`.
pub const ENTRY_TEST: &str = "plugin_process";
/// The separator of the words in [`ROLE_ENV`] (the ASCII unit separator).
const SEPARATOR: char = '\u{1f}';
/// The first line a plugin prints on its standard output.
pub const MARKER: &str = "HUB TEST PLUGIN";

/// A command that runs this test binary as the plugin `name` with `args`.
fn command(name: &str, args: &[&str]) -> Command {
    let mut role = String::from(name);
    for arg in args {
        assert!(!arg.contains(SEPARATOR), "plugin argument {arg:?}");
        role.push(SEPARATOR);
        role.push_str(arg);
    }
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .args(["--exact", ENTRY_TEST, "--nocapture"])
        .env(ROLE_ENV, role);
    command
}

/// A command that runs the test peer (module `test_peer`) with `args`.
pub fn test_peer(args: &[&str]) -> Command {
    command("test-peer", args)
}

/// A command that runs the chaos peer (module `chaos`) with `args`.
pub fn chaos(args: &[&str]) -> Command {
    command("chaos", args)
}

/// The piped standard output of a plugin `child`, past libtest's lines and the [`MARKER`].
///
/// # Panics
///
/// If the standard output was not piped, or it ends before the marker.
pub fn stdout(child: &mut Child) -> BufReader<ChildStdout> {
    let mut output = BufReader::new(child.stdout.take().expect("the plugin's stdout is piped"));
    let mut line = String::new();
    loop {
        line.clear();
        let read = output
            .read_line(&mut line)
            .expect("read the plugin's stdout");
        assert_ne!(read, 0, "the plugin's stdout ended before {MARKER:?}");
        if line.trim_end() == MARKER {
            return output;
        }
    }
}

/// In a plugin process (when [`ROLE_ENV`] is set), run the plugin it names and exit with its
/// status; otherwise return at once.
pub fn run_if_asked() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let mut words = role.split(SEPARATOR).map(String::from);
    let name = words.next().unwrap_or_default();
    let args: Vec<String> = words.collect();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{MARKER}");
        let _ = out.flush();
    }
    let status = match name.as_str() {
        "test-peer" => test_peer::main(&args),
        "chaos" => chaos::main(&args),
        other => {
            eprintln!("{ROLE_ENV}: no plugin named {other:?}");
            2
        }
    };
    std::process::exit(status);
}

/// Send `n` frames of pattern `i` (`pattern::fill`, its checksum in `msg_id` and `i` in
/// `channel_id`), frame `i` of `size(i)` bytes: the stream the tests check on the host's side.
fn send_patterns(
    peer: &hub_transport::Peer,
    n: u64,
    size: impl Fn(u64) -> usize,
) -> Result<(), String> {
    for i in 0..n {
        let mut loan = peer.loan(size(i)).map_err(|e| format!("loan {i}: {e}"))?;
        pattern::fill(loan.as_mut_slice(), i);
        let meta = hub_transport::FrameMeta {
            msg_id: pattern::checksum(loan.as_slice()),
            channel_id: i as u32,
            ..hub_transport::FrameMeta::default()
        };
        peer.send_loan(meta, loan)
            .map_err(|e| format!("send {i}: {e}"))?;
    }
    Ok(())
}
