//! Prints the byte layout of a hub segment: the table in the README's "A segment" section.
//!
//! ```sh
//! cargo run --release --example layout              # 32 peers, rings of 256 descriptors
//! cargo run --release --example layout -- 4 64      # max_peers ring_capacity
//! ```
//!
//! Every number comes from `hub_layout::SegmentLayout`, the same code a host uses to build a
//! segment and a peer uses to validate one (R2), so the printout cannot drift from the crate.

use std::fmt::Write;
use std::process::ExitCode;

use hub_examples::{Example, print_quietly};
use hub_layout::{
    HUB_PROTOCOL_VERSION, HUB_SIZE_CLASSES, MAX_EXTENTS_PER_CLASS, MAX_PEERS, SegmentLayout,
};

const EXAMPLE: Example = Example {
    name: "layout",
    usage: "usage: layout [MAX_PEERS RING_CAPACITY]   (defaults: 32 256)\n\
            \n\
            Prints the segment layout a hub of MAX_PEERS peers and rings of RING_CAPACITY\n\
            descriptors has: every region's offset and size, and the size classes.\n\
            \n\
            \x20 --help  this text",
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    EXAMPLE.run(parse_args(&args), |(max_peers, ring_capacity)| {
        if !(1..=MAX_PEERS).contains(&max_peers) {
            return Err(format!("MAX_PEERS must be 1 to {MAX_PEERS}, not {max_peers}").into());
        }
        if !ring_capacity.is_power_of_two() {
            return Err(
                format!("RING_CAPACITY must be a power of two, not {ring_capacity}").into(),
            );
        }
        let layout = SegmentLayout::new(max_peers, ring_capacity)?;
        print_quietly(&describe(&layout))
    })
}

/// `(max_peers, ring_capacity)`, or `None` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<(u16, u32)>, String> {
    match args {
        [help] if help == "--help" || help == "-h" => Ok(None),
        [] => Ok(Some((32, 256))),
        [peers, capacity] => {
            let peers = peers
                .parse()
                .map_err(|e| format!("MAX_PEERS {peers:?}: {e}"))?;
            let capacity = capacity
                .parse()
                .map_err(|e| format!("RING_CAPACITY {capacity:?}: {e}"))?;
            Ok(Some((peers, capacity)))
        }
        _ => Err("expected no arguments or exactly two".to_owned()),
    }
}

/// The layout as text, one region a row.
fn describe(layout: &SegmentLayout) -> String {
    let mut out = String::new();
    let major = HUB_PROTOCOL_VERSION >> 16;
    let minor = HUB_PROTOCOL_VERSION & 0xffff;
    let _ = writeln!(
        out,
        "hub segment, protocol {major}.{minor}: {} peers, rings of {} descriptors\n",
        layout.max_peers, layout.ring_capacity
    );
    let _ = writeln!(
        out,
        "{:>13}  {:>10}  {:<48}  {:>13}",
        "offset", "hex", "region", "size"
    );
    let mut row = |offset: usize, region: &str, size: Option<usize>| {
        let size = size.map(group).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>13}  {offset:#010x}  {region:<48}  {size:>13}",
            group(offset)
        );
    };

    let offsets = &layout.offsets;
    let peers = usize::from(layout.max_peers);
    row(
        offsets.header,
        "HubHeader",
        Some(offsets.peer_table - offsets.header),
    );
    row(
        offsets.peer_table,
        &format!("peer table: {peers} x PeerEntry"),
        Some(offsets.ring_region - offsets.peer_table),
    );
    row(
        offsets.ring_region,
        &format!("ring region: {} rings", 2 * peers),
        Some(offsets.size_class_headers - offsets.ring_region),
    );
    let last = layout.max_peers - 1;
    for peer in [0, last] {
        row(
            layout.send_ring_offset(peer),
            &format!("  peer {peer} send ring (peer -> host)"),
            Some(layout.ring_size()),
        );
        row(
            layout.recv_ring_offset(peer),
            &format!("  peer {peer} recv ring (host -> peer)"),
            Some(layout.ring_size()),
        );
    }
    row(
        offsets.size_class_headers,
        &format!("size class headers: {} x 192 B", HUB_SIZE_CLASSES.len()),
        Some(offsets.extent_region - offsets.size_class_headers),
    );
    row(offsets.extent_region, "extent region", None);
    for (class, &(slot_size, _)) in HUB_SIZE_CLASSES.iter().enumerate() {
        let geometry = layout.extent_geometry(class);
        row(
            layout.initial_extent_offset(class),
            &format!(
                "  class {class} extent 0: {} x {}",
                layout.slots_per_extent(class),
                bytes(slot_size as usize)
            ),
            Some(geometry.size),
        );
    }
    row(layout.initial_size(), "end of a new segment", None);
    let _ = writeln!(
        out,
        "\ninitial size {} ({}); reservation for growth to {} extents per class: {} ({})",
        group(layout.initial_size()),
        bytes(layout.initial_size()),
        MAX_EXTENTS_PER_CLASS,
        group(layout.max_size()),
        bytes(layout.max_size()),
    );
    out
}

/// `1234567` -> `1,234,567`.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size in the largest binary unit that keeps it at or above one.
fn bytes(n: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
