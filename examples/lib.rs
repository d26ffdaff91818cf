//! Helpers the examples share: the `main` boilerplate ([`Example`], [`flag_value`]), output
//! that ends quietly into a closed pipe ([`say!`], [`print_quietly`]), the "spawn myself as a
//! plugin" pattern ([`spawn_self`] on the host side, [`next_frame`] on the plugin side), and
//! small checksum and formatting helpers.

use std::ffi::OsStr;
use std::fmt::Display;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, ExitCode};
use std::str::FromStr;

use hub_transport::{Disconnect, Frame, Host, Peer, RecvError};

/// The result of the examples' fallible functions: a boxed error unless `E` says otherwise.
pub type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// An example program's name and usage text, and the ways its `main` ends.
///
/// Errors are printed to stderr as `NAME: MESSAGE`; usage errors are followed by the usage
/// text. `--help` prints the usage text to stdout.
///
/// The examples behave like command-line tools: a reader that closes standard output early
/// (`ping_pong | head -c 50`) ends the program quietly and successfully, with its destructors
/// run (children killed, temporary files removed). Everything they print goes through [`say!`]
/// or [`print_quietly`], and [`Example::run`] ends the program when [`say!`] finds the pipe
/// closed.
///
/// ```
/// use hub_examples::Example;
///
/// const EXAMPLE: Example = Example { name: "demo", usage: "usage: demo [--loud]" };
/// // What a parser gives: `Ok(Some(options))` to run, `Ok(None)` for `--help`, `Err` for a
/// // bad command line.
/// let parsed: Result<Option<bool>, String> = Ok(Some(true));
/// let _code = EXAMPLE.run(parsed, |loud| {
///     hub_examples::say!("{}", if loud { "HELLO" } else { "hello" });
///     Ok(())
/// });
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// The program's name, the prefix of its error messages.
    pub name: &'static str,
    /// The usage text, printed for `--help` and after a usage error.
    pub usage: &'static str,
}

impl Example {
    /// Runs `body` with the parsed command line and ends as [`Example::exit`] does; prints the
    /// usage text for `Ok(None)` (`--help`) and a usage error for `Err`. A [`say!`] in `body`
    /// that finds standard output's reader gone ends `body` there (its values dropped) and the
    /// program with success.
    pub fn run<T>(
        &self,
        parsed: Result<Option<T>, String>,
        body: impl FnOnce(T) -> Result<()>,
    ) -> ExitCode {
        match parsed {
            Ok(Some(args)) => match std::panic::catch_unwind(AssertUnwindSafe(|| body(args))) {
                Ok(result) => self.exit(result),
                // `say!` found standard output's reader gone: everything on the way here was
                // dropped (children, hubs, files), and that is all there is to do.
                Err(payload) if payload.is::<ClosedPipe>() => ExitCode::SUCCESS,
                // A real panic, whose message the panic hook printed already.
                Err(payload) => std::panic::resume_unwind(payload),
            },
            Ok(None) => self.help(),
            Err(message) => self.usage_error(message),
        }
    }

    /// Prints the usage text to stdout: success (also into a closed pipe).
    pub fn help(&self) -> ExitCode {
        self.exit(print_quietly(&format!("{}\n", self.usage)))
    }

    /// Prints `NAME: MESSAGE` and the usage text to stderr: failure.
    pub fn usage_error(&self, message: impl Display) -> ExitCode {
        eprintln!("{}: {message}\n{}", self.name, self.usage);
        ExitCode::FAILURE
    }

    /// Success for `Ok`; for `Err`, prints `NAME: ERROR` to stderr: failure.
    pub fn exit(&self, result: Result<()>) -> ExitCode {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{}: {error}", self.name);
                ExitCode::FAILURE
            }
        }
    }
}

/// The payload of the unwinding with which [`say!`] ends a program whose standard output's
/// reader is gone; [`Example::run`] catches it.
#[derive(Debug)]
pub struct ClosedPipe;

/// `println!` for the examples: prints a line to standard output, and when the reader closed
/// the pipe (`example | head`) ends the program quietly rather than panicking as `println!`
/// does. The end is an unwinding with a [`ClosedPipe`] payload, which runs the destructors on
/// its way and invokes no panic hook (so prints nothing); [`Example::run`] catches it and exits
/// with success. Call it on the thread that runs [`Example::run`]'s body: on another thread
/// it ends that thread only.
///
/// ```
/// use hub_examples::{Example, say};
///
/// const EXAMPLE: Example = Example { name: "demo", usage: "usage: demo" };
/// let _code = EXAMPLE.run(Ok(Some(3)), |n| {
///     for i in 0..n {
///         say!("line {i}");
///     }
///     Ok(())
/// });
/// ```
///
/// # Panics
/// As `println!`, when standard output fails otherwise.
#[macro_export]
macro_rules! say {
    () => {
        $crate::say_line(::std::format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::say_line(::std::format_args!($($arg)*))
    };
}

/// [`say!`]'s work: `args` and a newline to standard output, or the quiet end.
///
/// # Panics
/// As `println!`, when standard output fails other than by a closed pipe.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            drop(stdout);
            // No panic hook runs, so nothing is printed; destructors run on the way out.
            std::panic::resume_unwind(Box::new(ClosedPipe));
        }
        Err(error) => panic!("failed printing to stdout: {error}"),
    }
}

/// Writes `text` to standard output. A reader that closed the pipe early (`layout | head`)
/// is not an error: the program ends quietly, as command-line tools do.
///
/// # Errors
/// Any other write error.
pub fn print_quietly(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Takes the value of `flag` from `args` (the argument after the flag) and parses it.
///
/// # Errors
/// `FLAG needs a value` when `args` is exhausted, `FLAG: REASON` when the value does not parse.
///
/// ```
/// use hub_examples::flag_value;
///
/// let mut args = ["--iters", "20", "--size", "big", "--wait"].into_iter();
/// args.next();
/// assert_eq!(flag_value::<u32>(&mut args, "--iters"), Ok(20));
/// args.next();
/// assert_eq!(
///     flag_value::<u32>(&mut args, "--size"),
///     Err("--size: invalid digit found in string".to_string())
/// );
/// args.next();
/// assert_eq!(
///     flag_value::<String>(&mut args, "--wait"),
///     Err("--wait needs a value".to_string())
/// );
/// ```
pub fn flag_value<T>(
    args: &mut impl Iterator<Item = impl AsRef<str>>,
    flag: &str,
) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    let value = args.next().ok_or(format!("{flag} needs a value"))?;
    value
        .as_ref()
        .parse()
        .map_err(|error| format!("{flag}: {error}"))
}

/// Spawns this program again as a plugin of `host`: reserves a peer entry, runs the current
/// executable with the arguments `args` makes from the new peer's id and with the entry's
/// ticket applied (see [`hub_transport::Ticket::apply`]), then drops the ticket. Returns the
/// peer id and the child.
///
/// # Errors
/// When no peer entry is free or the program cannot be spawned.
///
/// ```no_run
/// use hub_examples::{next_frame, spawn_self};
/// use hub_transport::{Host, HubConfig, Peer};
///
/// # fn main() -> hub_examples::Result<()> {
/// if std::env::args().nth(1).as_deref() == Some("--plugin") {
///     // The plugin: echo every frame until the host leaves.
///     let peer = Peer::from_env()?;
///     while let Some(frame) = next_frame(&peer)? {
///         peer.send(*frame.meta(), frame.payload())?;
///     }
/// } else {
///     let host = Host::create(&HubConfig::default())?;
///     let (_peer_id, mut child) = spawn_self(&host, |_| ["--plugin"])?;
///     // ... talk to the plugin ...
///     drop(host); // goodbye: the plugin's next_frame gives None
///     child.wait()?;
/// }
/// # Ok(())
/// # }
/// ```
pub fn spawn_self<A>(host: &Host, args: impl FnOnce(u16) -> A) -> Result<(u16, Child)>
where
    A: IntoIterator,
    A::Item: AsRef<OsStr>,
{
    let ticket = host.add_peer()?;
    let mut command = Command::new(std::env::current_exe()?);
    command.args(args(ticket.peer_id()));
    ticket.apply(&mut command);
    let child = command.spawn()?;
    Ok((ticket.peer_id(), child))
}

/// The plugin side's receive: the next frame from the host, or `None` once the host has said
/// goodbye ([`Disconnect::HostGone`]).
///
/// # Errors
/// Any other [`RecvError`].
///
/// ```
/// use hub_examples::next_frame;
/// use hub_transport::{FrameMeta, Host, HubConfig, Peer};
///
/// # fn main() -> hub_examples::Result<()> {
/// let host = Host::create(&HubConfig::new().max_peers(1))?;
/// let peer = Peer::attach(&host.add_peer()?)?;
/// host.send(peer.id(), FrameMeta::default(), b"hello")?;
/// assert_eq!(next_frame(&peer)?.map(|frame| frame.payload().to_vec()), Some(b"hello".to_vec()));
/// drop(host);
/// assert!(next_frame(&peer)?.is_none());
/// # Ok(())
/// # }
/// ```
pub fn next_frame(peer: &Peer) -> Result<Option<Frame>, RecvError> {
    match peer.recv() {
        Ok(frame) => Ok(Some(frame)),
        Err(RecvError::Disconnected(Disconnect::HostGone)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A checksum of `bytes` that is cheap enough to run over 16 MiB per frame: the wrapping sum
/// of its little-endian `u64` words, then of its remaining bytes.
///
/// ```
/// use hub_examples::{checksum, expected_checksum};
/// assert_eq!(checksum(&[1u8; 20]), expected_checksum(20, 1));
/// ```
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for word in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
    }
    for &byte in words.remainder() {
        sum = sum.wrapping_add(u64::from(byte));
    }
    sum
}

/// What [`checksum`] gives for `len` bytes of `byte`, without reading them.
pub fn expected_checksum(len: usize, byte: u8) -> u64 {
    let word = u64::from_le_bytes([byte; 8]);
    word.wrapping_mul((len / 8) as u64)
        .wrapping_add(u64::from(byte) * (len % 8) as u64)
}

/// A size in bytes as the slot tables print it: whole MiB or KiB when it is a multiple of one,
/// MiB to one decimal above 1 MiB, bytes otherwise.
///
/// ```
/// use hub_examples::size_text;
/// assert_eq!(size_text(16 << 10), "16 KiB");
/// assert_eq!(size_text(4 << 20), "4 MiB");
/// assert_eq!(size_text(3 << 19), "1.5 MiB");
/// assert_eq!(size_text(1000), "1000 B");
/// ```
pub fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}
