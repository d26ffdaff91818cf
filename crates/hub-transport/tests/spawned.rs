//! Peers the host spawns itself (`Host::spawn_peer`, R12): the host knows their process from
//! the spawn, so a pid rewritten in the peer entry gets the peer evicted, and the eviction
//! kills the spawned process, never the one the rewritten word names; a spawn that fails
//! gives the reservation back.

mod common;
mod plugin;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{EventLog, TempFiles, WATCHDOG};
use hub_alloc::shared::Shared;
use hub_layout::{HeaderSnapshot, SegmentLayout};
use hub_transport::mapping::{Access, SegmentFile, SegmentMapping};
use hub_transport::{EvictReason, Host, HostError, HubConfig, PeerEvent, PeerState, pad};

#[test]
fn a_rewritten_pid_evicts_the_spawned_peer_and_kills_only_it() {
    let mut files = TempFiles::default();
    let path = files.path("spawned");
    let host = Host::create(
        &HubConfig::new()
            .max_peers(1)
            .ring_capacity(16)
            .path(path.clone()),
    )
    .unwrap();
    // An innocent process of the same user, whose pid the peer will write into its entry.
    let mut innocent = Command::new("sleep").arg("30").spawn().unwrap();

    // A peer that, once it has said hello, holds what it has until it is killed: it does not
    // exit by itself when it learns of its eviction.
    let (peer, mut child) = host
        .spawn_peer(&mut plugin::chaos(&["hello", "hold", "0"]))
        .unwrap();
    // Its greeting: it has attached and written its own pid; it waits for the echo.
    let hello = host.recv_timeout(WATCHDOG).unwrap();
    assert_eq!(hello.payload(), child.id().to_le_bytes());
    host.send(peer, *hello.meta(), hello.payload()).unwrap();
    drop(hello);

    // The entry's pid word rewritten, as a faulty peer would, whenever the supervisor looks.
    let file = SegmentFile::open_path(&path, Access::ReadWrite).unwrap();
    let len = file.len().unwrap() as usize;
    let mapping = Arc::new(SegmentMapping::new(file, len).unwrap());
    let header = HeaderSnapshot::read(&*mapping).unwrap();
    let layout = SegmentLayout::new(header.max_peers, header.ring_capacity).unwrap();
    Shared::new(&*mapping)
        .u32_at(layout.peer_entry_offset(peer.index()) + pad::PEER_PID)
        .unwrap()
        .store(innocent.id(), std::sync::atomic::Ordering::Release);

    let mut events = EventLog::new(&host);
    let evicted = events.wait("evicted", |e| matches!(e, PeerEvent::Evicted { .. }));
    assert!(
        matches!(
            evicted,
            PeerEvent::Evicted {
                reason: EvictReason::EntryRewritten { .. },
                ..
            }
        ),
        "{evicted:?}"
    );
    events.wait("recovered", |e| matches!(e, PeerEvent::Recovered { .. }));
    // The spawned process was killed; the one the word named was not.
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(innocent.try_wait().unwrap().is_none(), "the innocent lives");
    innocent.kill().unwrap();
    innocent.wait().unwrap();
    assert_eq!(host.peers()[0].state, PeerState::Empty);
}

#[test]
fn a_spawn_that_fails_gives_the_reservation_back() {
    let host = Host::create(&HubConfig::new().max_peers(1)).unwrap();
    let error = host
        .spawn_peer(&mut Command::new("/nonexistent/hub-plugin"))
        .unwrap_err();
    assert!(matches!(error, HostError::Spawn(_)), "{error:?}");
    assert_eq!(host.peers()[0].state, PeerState::Empty);
    assert_eq!(host.add_peer().unwrap().peer_id(), 0);
}

/// A plugin process when `plugin::ROLE_ENV` says so (see tests/plugin); otherwise nothing.
#[test]
fn plugin_process() {
    plugin::run_if_asked();
}
