//! A read-only look at a named hub: its peers and the use of its slots.
//!
//! ```sh
//! cargo run --release --example inspect -- --demo          # a hub of its own, with traffic
//! cargo run --release --example inspect -- /dev/shm/my-hub  # a hub some host created by path
//! cargo run --release --example inspect -- --json /dev/shm/my-hub
//! ```
//!
//! The inspector opens the segment file read-only, maps it readable only, validates it the way a
//! peer does on attach (R2), then copies the words it reports out of the live mapping, one
//! bounds-checked read at a time: it never writes, takes no peer entry and is invisible to the
//! host. What it prints is a snapshot of words that keep moving, so the counts of a busy hub
//! may not add up exactly.
//!
//! There is no public read-only attach for a whole hub yet, so this example builds one from the
//! public lower layers: `hub_transport::mapping` and `hub_layout`'s validation and offsets.

use std::fmt::Write;
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hub_examples::{Example, print_quietly, size_text};
use hub_layout::{
    DescRingHeader, ExtentHeader, HUB_SIZE_CLASSES, HeaderSnapshot, HubLayoutError, HubSlotMeta,
    PeerEntry, SegmentBytes, SlotState, ValidatedSegment, validate_segment,
};
use hub_transport::mapping::{Access, MappingError, ReadOnlyMapping, SegmentFile};
use hub_transport::{FrameMeta, Host, HubConfig, Peer, PeerState};

/// Where hub-transport keeps a peer's process id: in the padding of its `PeerEntry`.
const PEER_PID_OFFSET: usize = hub_transport::pad::PEER_PID;
/// The state word of a slot's `HubSlotMeta`, after its generation.
const SLOT_STATE_OFFSET: usize = 4;

const USAGE: &str = "usage: inspect [--json] PATH
       inspect [--json] --demo

Attaches read-only to the named hub at PATH (a host created it with HubConfig::path) and
prints its peers (state, pid, heartbeat age, ring depths) and the use of each size class's
slots (total, free, allocated, in flight, extents). Exits non-zero when PATH is no valid hub.

  --json   one JSON object instead of tables
  --demo   create a named hub in a temporary path, attach two in-process peers, leave some
           frames in flight and some slots allocated, and inspect that
  --help   this text";
const EXAMPLE: Example = Example {
    name: "inspect",
    usage: USAGE,
};

/// Why an inspection failed: each layer's own typed error.
#[derive(Debug)]
enum InspectError {
    /// The file could not be opened or mapped.
    Mapping(MappingError),
    /// The file is no valid hub.
    Layout(HubLayoutError),
    /// A word the layout promises was outside the mapping (it shrank under us).
    Truncated { offset: usize },
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InspectError::Mapping(e) => write!(f, "{e}"),
            InspectError::Layout(e) => write!(f, "not a valid hub: {e}"),
            InspectError::Truncated { offset } => {
                write!(
                    f,
                    "the segment ends before offset {offset} (truncated while read?)"
                )
            }
        }
    }
}

impl std::error::Error for InspectError {}

struct PeerRow {
    id: u16,
    state: PeerState,
    pid: u32,
    epoch: u64,
    /// Nanoseconds since the last heartbeat; `None` when there was none or no clock to compare.
    heartbeat_age_ns: Option<u64>,
    to_host: u64,
    to_peer: u64,
}

struct ClassRow {
    class: usize,
    slot_size: u32,
    extents: u32,
    total: u32,
    free: u32,
    allocated: u32,
    in_flight: u32,
    corrupt: u32,
}

struct Report {
    path: PathBuf,
    header: HeaderSnapshot,
    mapped_len: usize,
    resident: Option<u64>,
    /// Nobody holds the hub's lock: its creator is gone.
    stale: bool,
    peers: Vec<PeerRow>,
    classes: Vec<ClassRow>,
}

fn main() -> ExitCode {
    let mut json = false;
    let mut demo = false;
    let mut path = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--help" | "-h") => return EXAMPLE.help(),
            Some("--json") => json = true,
            Some("--demo") => demo = true,
            Some(flag) if flag.starts_with("--") => {
                return EXAMPLE.usage_error(format!("unknown option {flag:?}"));
            }
            _ if path.is_none() => path = Some(PathBuf::from(arg)),
            _ => return EXAMPLE.usage_error("one PATH only"),
        }
    }
    let result = match (demo, path) {
        (true, None) => run_demo(json),
        (false, Some(path)) => match inspect(&path) {
            Ok(report) => print_quietly(&describe(&report, json)),
            // A mapping error names the path itself.
            Err(error @ InspectError::Mapping(_)) => return EXAMPLE.exit(Err(error.into())),
            Err(error) => {
                return EXAMPLE.exit(Err(format!("{}: {error}", path.display()).into()));
            }
        },
        (true, Some(_)) => Err("--demo takes no PATH".into()),
        (false, None) => Err("a PATH or --demo is needed".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The usage text follows every error here, a failed demo's too.
        Err(error) => EXAMPLE.usage_error(error),
    }
}

/// Attach read-only to the hub at `path` and copy out what the report shows.
fn inspect(path: &Path) -> Result<Report, InspectError> {
    let file = SegmentFile::open_path(path, Access::ReadOnly).map_err(InspectError::Mapping)?;
    // The creator holds the hub's lock for as long as it lives (R12).
    let stale = !file
        .holder_probe()
        .map_err(InspectError::Mapping)?
        .is_held();
    let info = file.info().ok();
    let len = file.len().map_err(InspectError::Mapping)?;
    // Map at least a page, so that a file too short for a header is reported by validation
    // (HubTooSmall) rather than as an empty reservation.
    let reservation = usize::try_from(len).unwrap_or(usize::MAX).max(4096);
    let view = ReadOnlyMapping::new(file, reservation).map_err(InspectError::Mapping)?;
    let segment = validate_segment(&view).map_err(InspectError::Layout)?;
    let now = Some(hub_transport::monotonic_ns());
    let peers = (0..segment.layout.max_peers)
        .map(|id| peer_row(&view, &segment, id, now))
        .collect::<Result<_, _>>()?;
    let classes = (0..HUB_SIZE_CLASSES.len())
        .map(|class| class_row(&view, &segment, class))
        .collect::<Result<_, _>>()?;
    Ok(Report {
        path: path.to_path_buf(),
        header: segment.header,
        mapped_len: view.len(),
        resident: info.map(|i| i.allocated),
        stale,
        peers,
        classes,
    })
}

fn read_u32(view: &ReadOnlyMapping, offset: usize) -> Result<u32, InspectError> {
    view.read_u32(offset)
        .ok_or(InspectError::Truncated { offset })
}

fn read_u64(view: &ReadOnlyMapping, offset: usize) -> Result<u64, InspectError> {
    view.read_u64(offset)
        .ok_or(InspectError::Truncated { offset })
}

fn ring_depth(view: &ReadOnlyMapping, ring: usize) -> Result<u64, InspectError> {
    let head = read_u64(view, ring + offset_of!(DescRingHeader, visible_head))?;
    let tail = read_u64(view, ring + offset_of!(DescRingHeader, tail))?;
    Ok(head.saturating_sub(tail))
}

fn peer_row(
    view: &ReadOnlyMapping,
    segment: &ValidatedSegment,
    id: u16,
    now: Option<u64>,
) -> Result<PeerRow, InspectError> {
    let layout = &segment.layout;
    let entry = layout.peer_entry_offset(id);
    let state = PeerState::from_flags(read_u32(view, entry + offset_of!(PeerEntry, flags))?);
    let last_seen = read_u64(view, entry + offset_of!(PeerEntry, last_seen))?;
    Ok(PeerRow {
        id,
        state,
        pid: read_u32(view, entry + PEER_PID_OFFSET)?,
        epoch: read_u64(view, entry + offset_of!(PeerEntry, epoch))?,
        heartbeat_age_ns: match (now, last_seen) {
            (Some(now), seen) if seen != 0 => Some(now.saturating_sub(seen)),
            _ => None,
        },
        to_host: ring_depth(view, layout.send_ring_offset(id))?,
        to_peer: ring_depth(view, layout.recv_ring_offset(id))?,
    })
}

fn class_row(
    view: &ReadOnlyMapping,
    segment: &ValidatedSegment,
    class: usize,
) -> Result<ClassRow, InspectError> {
    let slots = segment.layout.slots_per_extent(class);
    let meta_size = std::mem::size_of::<HubSlotMeta>();
    let mut row = ClassRow {
        class,
        slot_size: HUB_SIZE_CLASSES[class].0,
        extents: 0,
        total: 0,
        free: 0,
        allocated: 0,
        in_flight: 0,
        corrupt: 0,
    };
    for &extent in segment.extent_offsets[class].iter().filter(|&&o| o != 0) {
        let extent =
            usize::try_from(extent).map_err(|_| InspectError::Truncated { offset: usize::MAX })?;
        row.extents += 1;
        let metas = extent + std::mem::size_of::<ExtentHeader>();
        for slot in 0..slots as usize {
            let state = read_u32(view, metas + slot * meta_size + SLOT_STATE_OFFSET)?;
            row.total += 1;
            match SlotState::from_u32(state) {
                Some(SlotState::Free) => row.free += 1,
                Some(SlotState::Allocated) => row.allocated += 1,
                Some(SlotState::InFlight) => row.in_flight += 1,
                None => row.corrupt += 1,
            }
        }
    }
    Ok(row)
}

fn age_text(age: Option<u64>) -> String {
    match age {
        None => "-".into(),
        Some(ns) if ns < 1_000_000_000 => format!("{} ms", ns / 1_000_000),
        Some(ns) => format!("{:.1} s", ns as f64 / 1e9),
    }
}

/// The report as text (or JSON), for one write to standard output.
fn describe(report: &Report, json: bool) -> String {
    let mut out = String::new();
    if json {
        let _ = writeln!(out, "{}", to_json(report));
        return out;
    }
    let h = &report.header;
    let _ = writeln!(out, "hub {}", report.path.display());
    if report.stale {
        let _ = writeln!(
            out,
            "  STALE: its creator is gone (nobody holds the hub's lock); \
             Host::create with take_over_stale(true) replaces it"
        );
    }
    let _ = writeln!(
        out,
        "  version {}.{}, {} peer entries, rings of {} descriptors, {} of {} mapped{}",
        h.version >> 16,
        h.version & 0xffff,
        h.max_peers,
        h.ring_capacity,
        size_text(h.current_size),
        size_text(report.mapped_len as u64),
        report
            .resident
            .map(|r| format!(", {} resident", size_text(r)))
            .unwrap_or_default()
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:>4}  {:<8}  {:>8}  {:>5}  {:>9}  {:>7}  {:>7}",
        "peer", "state", "pid", "epoch", "heartbeat", "to host", "to peer"
    );
    let mut empty = 0;
    for p in &report.peers {
        if p.state == PeerState::Empty && p.to_host == 0 && p.to_peer == 0 {
            empty += 1;
            continue;
        }
        let _ = writeln!(
            out,
            "  {:>4}  {:<8}  {:>8}  {:>5}  {:>9}  {:>7}  {:>7}",
            p.id,
            p.state.to_string(),
            if p.pid == 0 {
                "-".into()
            } else {
                p.pid.to_string()
            },
            p.epoch,
            age_text(p.heartbeat_age_ns),
            p.to_host,
            p.to_peer
        );
    }
    if empty > 0 {
        let _ = writeln!(out, "  ({empty} empty entries not shown)");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:>5}  {:>9}  {:>7}  {:>6}  {:>6}  {:>9}  {:>9}  {:>7}",
        "class", "slot size", "extents", "total", "free", "allocated", "in flight", "corrupt"
    );
    for c in &report.classes {
        let _ = writeln!(
            out,
            "  {:>5}  {:>9}  {:>7}  {:>6}  {:>6}  {:>9}  {:>9}  {:>7}",
            c.class,
            size_text(u64::from(c.slot_size)),
            c.extents,
            c.total,
            c.free,
            c.allocated,
            c.in_flight,
            c.corrupt
        );
    }
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn to_json(report: &Report) -> String {
    let h = &report.header;
    let peers: Vec<String> = report
        .peers
        .iter()
        .map(|p| {
            format!(
                "{{\"id\":{},\"state\":{},\"pid\":{},\"epoch\":{},\"heartbeat_age_ns\":{},\
                 \"to_host\":{},\"to_peer\":{}}}",
                p.id,
                json_string(&p.state.to_string()),
                p.pid,
                p.epoch,
                p.heartbeat_age_ns
                    .map_or("null".to_string(), |a| a.to_string()),
                p.to_host,
                p.to_peer
            )
        })
        .collect();
    let classes: Vec<String> = report
        .classes
        .iter()
        .map(|c| {
            format!(
                "{{\"class\":{},\"slot_size\":{},\"extents\":{},\"total\":{},\"free\":{},\
                 \"allocated\":{},\"in_flight\":{},\"corrupt\":{}}}",
                c.class,
                c.slot_size,
                c.extents,
                c.total,
                c.free,
                c.allocated,
                c.in_flight,
                c.corrupt
            )
        })
        .collect();
    format!(
        "{{\"path\":{},\"stale\":{},\"version\":\"{}.{}\",\"max_peers\":{},\"ring_capacity\":{},\"current_size\":{},\
         \"mapped_len\":{},\"resident\":{},\"peers\":[{}],\"classes\":[{}]}}",
        json_string(&report.path.to_string_lossy()),
        report.stale,
        h.version >> 16,
        h.version & 0xffff,
        h.max_peers,
        h.ring_capacity,
        h.current_size,
        report.mapped_len,
        report
            .resident
            .map_or("null".to_string(), |r| r.to_string()),
        peers.join(","),
        classes.join(",")
    )
}

/// Build a named hub with some traffic in flight, inspect it, and clean up.
fn run_demo(json: bool) -> hub_examples::Result<()> {
    let path = std::env::temp_dir().join(format!("hub-inspect-demo-{}", std::process::id()));
    let host = Host::create(&HubConfig::new().max_peers(4).path(path.clone()))?;
    // Two peers in this process (threads stand in for plugins), and an entry reserved for a
    // third that never attaches.
    let first = Peer::attach(&host.add_peer()?)?;
    let second = Peer::attach(&host.add_peer()?)?;
    let _reserved = host.add_peer()?;
    let meta = |msg_id| FrameMeta {
        msg_id,
        ..FrameMeta::default()
    };
    // In flight: three frames of 4 KiB from the first peer, two of 100 KiB to the second, none
    // of them received yet. Allocated: a 1 MiB loan the second peer is still writing.
    for i in 0..3 {
        first.send(meta(i), &[1u8; 4096])?;
    }
    for i in 0..2 {
        host.send(second.id(), meta(i), &vec![2u8; 100 << 10])?;
    }
    let mut loan = second.loan(1 << 20)?;
    loan.as_mut_slice()[..8].copy_from_slice(b"unsent!!");
    // Let the heartbeat threads beat once.
    std::thread::sleep(std::time::Duration::from_millis(50));

    let mut text = String::new();
    if !json {
        text.push_str(
            "demo: a named hub with 2 in-process peers, 1 reserved entry, 5 frames in flight \
             and 1 slot allocated\n\n",
        );
    }
    let report = inspect(&path)?;
    text.push_str(&describe(&report, json));
    // The inspector's counts, from the slot metas, against the host's own.
    let agree = host.stats().iter().zip(&report.classes).all(|(s, c)| {
        (s.extents, s.total, s.free, s.allocated, s.in_flight)
            == (c.extents, c.total, c.free, c.allocated, c.in_flight)
    });
    if !json {
        let _ = writeln!(
            text,
            "\n  the slot counts {} Host::stats() of the same moment",
            if agree { "match" } else { "differ from" }
        );
    }
    let printed = print_quietly(&text);

    drop(loan);
    drop(first);
    drop(second);
    drop(host); // unlinks the file
    let _ = std::fs::remove_file(&path);
    printed
}
