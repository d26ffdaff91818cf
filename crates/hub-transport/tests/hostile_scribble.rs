//! Attack 7 of issue 13: a real peer process scribbles 200,000 random words over the hub's
//! metadata (header, peer entries, ring headers, class headers) and over slot metas, including
//! every word attach validates, and leaves live-looking entries with no process behind. Once it
//! is gone the hub heals by itself (R4): the words the host wrote are restored from its private
//! copies, lists rebuilt, slots no live participant can hold returned, entries back to Empty.
//! Then a fresh peer attaches and echoes 1000 checked frames up to 1 MiB, and every slot is free.

mod common;
mod plugin;

use std::mem::size_of;
use std::time::{Duration, Instant};

use common::{WATCHDOG, pattern};
use hub_layout::{
    DescRingHeader, HubHeader, PEER_FLAG_ACTIVE, PEER_FLAG_RESERVED, PeerEntry, SizeClassHeader,
};
use hub_transport::{FrameMeta, Host, HubConfig, PeerState};
use plugin::poke::{Named, Poker};

/// `msg_id` of the test peer's greeting.
const HELLO: u64 = u64::MAX - 1;

/// Why the hub is not healed yet, if it is not: an entry not Empty, or a class whose slots are
/// not all free and counted.
fn unhealed(host: &Host) -> Option<String> {
    if let Some(peer) = host.peers().iter().find(|p| p.state != PeerState::Empty) {
        return Some(format!("peer entry {peer:?}"));
    }
    host.stats().iter().enumerate().find_map(|(class, s)| {
        (s.free != s.total || s.corrupt != 0 || s.total != s.header_total || s.extents == 0)
            .then(|| format!("class {class}: {s:?}"))
    })
}

/// Wait until the hub is healed, or fail after the watchdog with what is left.
#[track_caller]
fn wait_healed(host: &Host, what: &str) {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let Some(left) = unhealed(host) else {
            return;
        };
        if Instant::now() > deadline {
            let events: Vec<_> = std::iter::from_fn(|| host.try_event()).collect();
            panic!("{what}: not healed after {WATCHDOG:?}: {left}; events {events:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_200_000_random_writes_over_the_metadata_the_hub_heals() {
    let host = Host::create(&HubConfig::default()).expect("create");
    let named = Named::default_hub();
    let layout = &named.layout;
    let mut poker = Poker::spawn(&host);
    assert_eq!(
        poker.peer, 0,
        "the scribbler's own entry is spared until last"
    );

    // (start, len, writes) of each region: the header, the other peers' entries, every ring's
    // header, the class headers, and the slot metas of the two smallest classes' first extents.
    let entry = size_of::<PeerEntry>();
    let mut regions = vec![
        (0, size_of::<HubHeader>(), 40_000),
        (
            layout.offsets.peer_table + entry,
            (usize::from(layout.max_peers) - 1) * entry,
            40_000,
        ),
        (
            layout.offsets.size_class_headers,
            5 * size_of::<SizeClassHeader>(),
            40_000,
        ),
    ];
    let rings = 2 * usize::from(layout.max_peers);
    for ring in 0..rings {
        regions.push((
            layout.ring_offset(ring),
            size_of::<DescRingHeader>(),
            40_000 / rings,
        ));
    }
    for class in 0..2 {
        let metas = named.slot_meta(class, 0);
        let len = layout.slots_per_extent(class) as usize * 16;
        regions.push((metas, len, 20_000));
    }
    let total: usize = regions.iter().map(|r| r.2).sum();
    assert!(total >= 200_000, "{total} writes");
    for (k, &(start, len, writes)) in regions.iter().enumerate() {
        // The scribbler may be evicted (and killed) on the way: what it wrote stays written.
        let _ = poker.try_command(&format!("scribble {} {writes} {start} {len}", 1000 + k));
    }
    // Entries that look alive with no process behind them: one Active, one Reserved.
    let _ = poker.try_command(&format!("w32 {} {PEER_FLAG_ACTIVE}", named.peer_flags(5)));
    let _ = poker.try_command(&format!("w32 {} {PEER_FLAG_RESERVED}", named.peer_flags(6)));
    // Last, its own entry; then it is gone.
    let _ = poker.try_command(&format!(
        "scribble 7 2000 {} {entry}",
        layout.peer_entry_offset(0)
    ));
    drop(poker);

    wait_healed(&host, "after the scribbler");

    // A fresh peer attaches and echoes 1000 checked frames, up to 1 MiB.
    let (peer, mut child) = host
        .spawn_peer(&mut plugin::test_peer(&["echo", "1000"]))
        .expect("spawn a fresh peer");
    let hello = host.recv_from(peer, Some(WATCHDOG)).expect("hello");
    assert_eq!(hello.meta().msg_id, HELLO);
    drop(hello);
    let sizes = [0, 7, 16, 17, 1000, 5000, 40_000, 300_000, 1 << 20];
    for k in 0..1000u64 {
        let size = sizes[k as usize % sizes.len()];
        let mut loan = host.loan(size).expect("loan");
        pattern::fill(loan.as_mut_slice(), k);
        let meta = FrameMeta {
            msg_id: pattern::checksum(loan.as_slice()),
            channel_id: k as u32,
            ..FrameMeta::default()
        };
        host.send_loan(peer, meta, loan).expect("send");
        let echo = host.recv_from(peer, Some(WATCHDOG)).expect("echo");
        assert_eq!(*echo.meta(), meta, "echo {k}");
        assert_eq!(pattern::checksum(echo.payload()), meta.msg_id, "echo {k}");
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "the fresh peer: {status}");
    wait_healed(&host, "after the fresh peer");
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}
