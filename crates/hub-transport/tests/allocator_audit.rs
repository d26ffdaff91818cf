//! The host's auditor (R3): damage written into the allocator's shared state, by a process the
//! host cannot name, is found within a few looks, reported as `PeerEvent::AllocatorDamaged`,
//! and repaired; a healthy hub under traffic reports nothing.
//!
//! The damage is written through a mapping of the test's own of a named segment, as a faulty
//! process would write it.

mod common;

use std::mem::offset_of;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pattern::payload;
use common::{TempFiles, WATCHDOG, meta};
use hub_alloc::shared::Shared;
use hub_layout::{
    FREE_LIST_END, HeaderSnapshot, SegmentLayout, SizeClassHeader, pack_free_head, unpack_free_head,
};
use hub_transport::mapping::{Access, SegmentFile, SegmentMapping};
use hub_transport::{AllocatorDamage, Host, HubConfig, Peer, PeerEvent};

/// A named hub, and a writable mapping of it with its layout.
fn hub(files: &mut TempFiles) -> (Host, Arc<SegmentMapping>, SegmentLayout) {
    let path = files.path("audit");
    let host = Host::create(
        &HubConfig::new()
            .max_peers(2)
            .ring_capacity(16)
            .path(path.clone()),
    )
    .unwrap();
    let file = SegmentFile::open_path(&path, Access::ReadWrite).unwrap();
    let len = file.len().unwrap() as usize;
    let mapping = Arc::new(SegmentMapping::new(file, len).unwrap());
    let header = HeaderSnapshot::read(&*mapping).unwrap();
    let layout = SegmentLayout::new(header.max_peers, header.ring_capacity).unwrap();
    (host, mapping, layout)
}

/// The free-list head word of `class`.
fn free_head<'m>(
    mapping: &'m SegmentMapping,
    layout: &SegmentLayout,
    class: usize,
) -> &'m hub_layout::sync::AtomicU64 {
    Shared::new(mapping)
        .u64_at(layout.class_header_offset(class) + offset_of!(SizeClassHeader, free_head))
        .unwrap()
}

/// The first `AllocatorDamaged` event for `class`, waiting at most `within`.
fn damage_of(host: &Host, class: u16, within: Duration) -> Option<AllocatorDamage> {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match host.next_event(Some(left)) {
            Some(PeerEvent::AllocatorDamaged(damage)) if damage.class == class => {
                return Some(damage);
            }
            Some(_) => {}
            None => break,
        }
    }
    None
}

#[test]
fn a_head_outside_the_class_is_rebuilt_at_the_next_look() {
    let mut files = TempFiles::default();
    let (host, mapping, layout) = hub(&mut files);
    let head = free_head(&mapping, &layout, 3);
    let (_, tag) = unpack_free_head(head.load(std::sync::atomic::Ordering::Acquire));
    head.store(
        pack_free_head(0x0F00_0000, tag.wrapping_add(3)),
        std::sync::atomic::Ordering::Release,
    );
    let damage = damage_of(&host, 3, WATCHDOG).expect("the damage is reported");
    assert!(damage.found.contains("broken"), "{damage:?}");
    let rebuilt = damage.rebuilt.expect("and rebuilt");
    assert_eq!(rebuilt.free, host.stats()[3].total, "{rebuilt:?}");
    assert!(host.try_loan(300_000).is_ok(), "the class serves again");
    assert!(host.check_allocator().is_empty());
}

#[test]
fn a_list_cut_off_is_found_in_two_looks_and_brought_back() {
    let mut files = TempFiles::default();
    let (host, mapping, layout) = hub(&mut files);
    // An empty list: every free slot of class 4 is lost, which no single look can tell from a
    // free in progress.
    let head = free_head(&mapping, &layout, 4);
    let (_, tag) = unpack_free_head(head.load(std::sync::atomic::Ordering::Acquire));
    head.store(
        pack_free_head(FREE_LIST_END, tag.wrapping_add(3)),
        std::sync::atomic::Ordering::Release,
    );
    let damage = damage_of(&host, 4, WATCHDOG).expect("the loss is reported");
    assert!(damage.found.contains("lost"), "{damage:?}");
    assert_eq!(damage.rebuilt.map(|r| r.free), Some(4), "{damage:?}");
    let stats = host.stats()[4];
    assert_eq!((stats.free, stats.extents), (4, 1), "no growth was needed");
}

#[test]
fn a_healthy_hub_under_traffic_reports_nothing() {
    let mut files = TempFiles::default();
    let (host, _mapping, _layout) = hub(&mut files);
    let ticket = host.add_peer().unwrap();
    let peer = Peer::attach(&ticket).unwrap();
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Echo until the host leaves.
            while let Ok(frame) = peer.recv() {
                if peer.send(*frame.meta(), frame.payload()).is_err() {
                    break;
                }
            }
        });
        let mut i = 0u64;
        // Long enough for several looks of the auditor (every 250 ms) at every class.
        while started.elapsed() < Duration::from_millis(1200) {
            let len = [0, 100, 5000, 100_000, 1 << 20][(i % 5) as usize];
            host.send(ticket.peer_id(), meta(i), &payload(len, i))
                .unwrap();
            host.recv_timeout(WATCHDOG).unwrap();
            i += 1;
        }
        assert!(
            host.check_allocator().is_empty(),
            "a look on demand finds nothing either"
        );
        while let Some(event) = host.try_event() {
            assert!(
                !matches!(event, PeerEvent::AllocatorDamaged(_)),
                "{event:?} after {i} round trips"
            );
        }
        drop(host);
    });
}
