//! What the scenarios share: the seeded generator, the figures a scenario reports, payload sizes
//! and checks, child processes, and the watchdog.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hub_transport::{FrameMeta, Host, HostError, Ticket};

use crate::pattern;

/// How long one scenario may run before its watchdog calls it hung.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(300);

/// The largest payload: a slot of the largest class.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// `method_id` of a request the host sends, which the peer echoes.
pub const REQUEST: u32 = 1;
/// `method_id` of a peer's echo of a request.
pub const ECHO: u32 = 2;
/// `method_id` of a frame a peer sends of its own accord.
pub const ORIGIN: u32 = 3;
/// `method_id` of the host's "stop now" to a peer (it says goodbye and exits 0).
pub const STOP: u32 = 4;
/// `method_id` of the host's "start" to a peer that waits for its peers.
pub const GO: u32 = 5;

/// Exit status of a peer that saw the host-gone error, as `host-crash` expects.
pub const EXIT_HOST_GONE: i32 = 40;
/// Exit status of a peer that received a corrupted payload.
pub const EXIT_CORRUPT: i32 = 20;
/// Exit status of a peer for any other failure (its message is on standard error).
pub const EXIT_FAILED: i32 = 21;
/// Exit status of a process whose watchdog fired.
pub const EXIT_HUNG: i32 = 22;

/// A seed from the clock, for a run that was given none.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(nanos, u64::from(std::process::id()))
}

/// A new seed from a seed and a number (splitmix64's finaliser over their sum).
pub fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64: small, fast, and every seed is a good one.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0, 0)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // The bias of a modulo is far below anything a scenario could notice.
        self.next_u64() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A payload size from 0 bytes to 16 MiB: every class and every boundary, weighted towards
/// small frames so that 100,000 of them move in a minute (about 80 KiB on average).
pub fn payload_size(rng: &mut Rng) -> usize {
    const EDGES: [usize; 10] = [
        0,
        1,
        16,
        17,
        1024,
        1025,
        16 << 10,
        256 << 10,
        4 << 20,
        MAX_PAYLOAD,
    ];
    let size = match rng.below(1000) {
        0..20 => EDGES[rng.below(EDGES.len() as u64) as usize] as u64,
        20..300 => rng.between(0, 16),           // inline
        300..680 => rng.between(17, 1024),       // class 0
        680..880 => rng.between(1025, 16 << 10), // class 1
        880..975 => rng.between((16 << 10) + 1, 256 << 10),
        975..997 => rng.between((256 << 10) + 1, 4 << 20),
        _ => rng.between((4 << 20) + 1, MAX_PAYLOAD as u64),
    };
    size as usize
}

/// The meta of a frame whose payload is `payload`: its checksum in `msg_id`.
pub fn meta_for(payload: &[u8], method_id: u32, seq: u32) -> FrameMeta {
    FrameMeta {
        msg_id: pattern::checksum(payload),
        channel_id: seq,
        method_id,
        ..FrameMeta::default()
    }
}

/// Fill `buf` from `seed` and return the meta that carries its checksum.
pub fn fill_frame(buf: &mut [u8], seed: u64, method_id: u32, seq: u32) -> FrameMeta {
    pattern::fill(buf, seed);
    meta_for(buf, method_id, seq)
}

/// Check that a payload is what its meta's checksum says.
pub fn verify(meta: &FrameMeta, payload: &[u8]) -> Result<(), String> {
    let sum = pattern::checksum(payload);
    if sum == meta.msg_id {
        Ok(())
    } else {
        Err(format!(
            "corrupted payload: {} bytes, method {}, seq {}: checksum {sum:#x}, meta says {:#x}",
            payload.len(),
            meta.method_id,
            meta.channel_id,
            meta.msg_id
        ))
    }
}

/// Named figures a scenario reports, in the order they were set: `frames=100000 kills=200`.
#[derive(Debug, Clone, Default)]
pub struct Figures(Vec<(&'static str, u64)>);

impl Figures {
    /// Set `name` to `value`.
    pub fn set(&mut self, name: &'static str, value: u64) -> &mut Self {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
        self
    }

    /// Add `value` to `name`.
    pub fn add(&mut self, name: &'static str, value: u64) -> &mut Self {
        let now = self.get(name);
        self.set(name, now + value)
    }

    /// The value of `name`, 0 when unset.
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    }

    /// Add every figure of `other` to this one's.
    pub fn add_all(&mut self, other: &Figures) {
        for &(name, value) in &other.0 {
            self.add(name, value);
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

/// Exit with [`EXIT_HUNG`] after `limit`: nothing a scenario starts outlives it by much, and a
/// hang is a failure with a message rather than a stuck CI job.
pub fn watchdog(limit: Duration, what: &str) {
    let what = what.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        println!("scenario {what}: FAILED  hung: still running after {limit:?}");
        std::process::exit(EXIT_HUNG);
    });
}

/// A child process of this binary in role `role`, killed when dropped (and when this process
/// dies: the child asks for `SIGKILL` on its parent's death).
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    /// Its standard output, line by line, when it was asked for.
    pub stdout: Option<BufReader<ChildStdout>>,
    /// The peer id of its ticket, if it has one.
    pub peer: Option<u16>,
    /// When [`kill`](Self::kill) sent it `SIGKILL`.
    pub killed_at: Option<Instant>,
}

impl ChildProcess {
    /// Spawn `role` with `args`, with `ticket` applied if given (`Ticket::apply`: its
    /// environment, and the segment's descriptor for this child alone).
    pub fn spawn(
        role: &str,
        args: &[String],
        ticket: Option<&Ticket>,
        read_stdout: bool,
    ) -> Result<Self, String> {
        let mut command = Self::command(role, args, read_stdout)?;
        if let Some(ticket) = ticket {
            ticket.apply(&mut command);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("spawn role {role}: {e}"))?;
        Ok(Self::of(child, ticket.map(Ticket::peer_id)))
    }

    /// Spawn `role` with `args`, with a ticket's peer id and environment value if given (a
    /// ticket another process printed).
    pub fn spawn_with(
        role: &str,
        args: &[String],
        ticket: Option<(u16, String)>,
        read_stdout: bool,
    ) -> Result<Self, String> {
        let mut command = Self::command(role, args, read_stdout)?;
        if let Some((_, value)) = &ticket {
            command.env(hub_transport::TICKET_ENV, value);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("spawn role {role}: {e}"))?;
        Ok(Self::of(child, ticket.map(|t| t.0)))
    }

    /// A peer of `host` in role `role`, spawned by the host itself (`Host::spawn_peer`: the
    /// host knows its process from the spawn).
    pub fn spawn_peer(
        host: &Host,
        role: &str,
        args: &[String],
        read_stdout: bool,
    ) -> Result<Self, HostError> {
        let mut command = Self::command(role, args, read_stdout)
            .map_err(|e| HostError::Spawn(std::io::Error::other(e)))?;
        let (peer, child) = host.spawn_peer(&mut command)?;
        Ok(Self::of(child, Some(peer.index())))
    }

    /// The command that runs this binary in `role`.
    fn command(role: &str, args: &[String], read_stdout: bool) -> Result<Command, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut command = Command::new(exe);
        command.arg("role").arg(role).args(args);
        command.stdin(Stdio::null());
        command.stdout(if read_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        Ok(command)
    }

    fn of(mut child: Child, peer: Option<u16>) -> Self {
        let stdout = child.stdout.take().map(BufReader::new);
        Self {
            child,
            stdout,
            peer,
            killed_at: None,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send it `SIGKILL` (once).
    pub fn kill(&mut self) {
        if self.killed_at.is_none() {
            let _ = self.child.kill();
            self.killed_at = Some(Instant::now());
        }
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        self.child.try_wait().map_err(|e| format!("wait: {e}"))
    }

    /// Wait for it to exit, at most `timeout`; `None` when it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Read its next line of standard output, failing on end of file; the line must start with
    /// `prefix`, and the rest is returned.
    pub fn expect_line(&mut self, prefix: &str) -> Result<String, String> {
        let Some(stdout) = self.stdout.as_mut() else {
            return Err("the child's standard output was not kept".into());
        };
        let mut line = String::new();
        match stdout.read_line(&mut line) {
            Ok(0) => Err(format!(
                "child {} ended its output before {prefix:?}",
                self.child.id()
            )),
            Ok(_) => line
                .trim_end()
                .strip_prefix(prefix)
                .map(str::to_owned)
                .ok_or_else(|| format!("child {} said {line:?}, not {prefix:?}", self.child.id())),
            Err(e) => Err(format!("read the child's output: {e}")),
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Fail when any of `children` has exited: none of them was meant to (`when` says at what
/// point of the scenario, for the message).
pub fn none_exited(children: &mut [ChildProcess], when: &str) -> Result<(), String> {
    for child in children {
        if let Some(status) = child.try_wait()? {
            return Err(format!(
                "peer {:?} (pid {}) ended with {} {when}",
                child.peer,
                child.pid(),
                describe(status)
            ));
        }
    }
    Ok(())
}

/// What an exit status says, in words, for a failure message.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(EXIT_CORRUPT), _) => "exit 20: it received a corrupted payload".into(),
        (Some(EXIT_HUNG), _) => "exit 22: its watchdog fired".into(),
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => format!("{status}"),
    }
}

/// A directory for a scenario's files, removed when dropped: on tmpfs when there is one.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    /// A fresh directory named after `what`.
    pub fn new(what: &str) -> Result<Self, String> {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("hub-scenario-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
