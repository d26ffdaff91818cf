//! The readiness descriptors (R11 extended), checked from outside the code that writes them:
//! the kernel's count of each eventfd (`/proc/self/fdinfo`), for the descriptors the ticket
//! names. A side that armed is written once per frame; a busy side is never written.

mod common;

use common::fdinfo::{eventfd_count as count, eventfds_in_set, ticket_fd};
use hub_transport::{FrameMeta, Host, HubConfig, Peer};

/// Every kind of frame, and a loan taken between the arm and the send (the allocator writes
/// the sender's journal, which lives beside the entry's readiness word: before, it erased the
/// host's "I sleep on my descriptor" bit and the host was never woken).
#[test]
fn an_armed_side_is_written_once_per_frame_and_a_busy_one_never() {
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let value = ticket.env_value();
    let (to_peer, to_host) = (ticket_fd(&value, "ready"), ticket_fd(&value, "notify"));
    let peer = Peer::attach(&ticket).expect("attach");

    // Busy: nobody armed, a thousand frames each way, nothing written.
    for i in 0..1000u64 {
        let len = [3usize, 100, 4096, 65536][(i % 4) as usize];
        peer.send(FrameMeta::default(), &vec![1; len])
            .expect("send");
        assert_eq!(host.try_recv().expect("frame").len(), len);
        host.send(0u16, FrameMeta::default(), &vec![2; len])
            .expect("send");
        assert_eq!(peer.try_recv().expect("frame").len(), len);
    }
    assert_eq!((count(to_peer), count(to_host)), (0, 0));

    let mut expected = 0;
    for len in [3usize, 100, 4096, 65536] {
        // Armed, then the sender loans (its allocator runs), then sends: one write.
        host.arm();
        let mut loan = peer.loan(len).expect("loan");
        loan.as_mut_slice().fill(7);
        peer.send_loan(FrameMeta::default(), loan).expect("send");
        expected += 1;
        assert_eq!(count(to_host), expected, "host armed, {len} bytes");
        assert!(host.try_recv().is_ok());

        peer.arm();
        let mut loan = host.loan(len).expect("loan");
        loan.as_mut_slice().fill(8);
        host.send_loan(0u16, FrameMeta::default(), loan)
            .expect("send");
        assert_eq!(count(to_peer), expected, "peer armed, {len} bytes");
        assert!(peer.try_recv().is_ok());

        // One announcement, one write: a second frame finds nobody armed.
        peer.send(FrameMeta::default(), &vec![1; len])
            .expect("send");
        host.send(0u16, FrameMeta::default(), &vec![1; len])
            .expect("send");
        assert_eq!((count(to_host), count(to_peer)), (expected, expected));
        assert!(host.try_recv().is_ok() && peer.try_recv().is_ok());
    }
}

/// A peer attached from a ticket without the descriptors (a path passed by other means): the
/// host's bridge thread writes the host's descriptor for it, and the peer's own waiter thread
/// makes its descriptor readable when the host sends.
#[test]
fn a_peer_without_descriptors_is_bridged_on_both_sides() {
    use hub_transport::{SpecSource, TicketSpec};
    use rustix::event::{PollFd, PollFlags, Timespec, poll};

    let dir = std::env::temp_dir().join(format!("hub-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("hub");
    let host = Host::create(&HubConfig::new().max_peers(1).path(path.clone())).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    // A path ticket's value names no descriptor; the host's own copy of it does.
    assert!(!ticket.env_value().contains("notify="));
    let to_host = std::os::fd::AsRawFd::as_raw_fd(&ticket.readiness_fds()[1]);
    let peer = Peer::attach_spec(&TicketSpec {
        peer: ticket.peer_id(),
        epoch: ticket.epoch(),
        source: SpecSource::Path(path),
        ready: None,
    })
    .expect("attach without descriptors");

    // Host side: armed, it starts its bridge; the peer's frames reach its descriptor.
    let watchdog = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert!(
            std::time::Instant::now() < watchdog,
            "the host's bridge never wrote"
        );
        host.arm();
        peer.send(FrameMeta::default(), b"ping").expect("send");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let written = count(to_host) > 0;
        assert_eq!(host.try_recv().expect("frame").payload(), b"ping");
        if written {
            break;
        }
    }

    // Peer side: its waiter thread writes the eventfd in its readiness set (found through the
    // set's own fdinfo) when the host sends, and the set turns readable.
    let [own] = eventfds_in_set(std::os::fd::AsRawFd::as_raw_fd(&peer))[..] else {
        panic!("one eventfd in the peer's set");
    };
    peer.arm();
    assert!(peer.try_recv().is_err());
    let before = count(own);
    host.send(0u16, FrameMeta::default(), b"pong")
        .expect("send");
    while count(own) == before {
        assert!(
            std::time::Instant::now() < watchdog,
            "the peer's bridge never wrote"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut fds = [PollFd::new(&peer, PollFlags::IN)];
    assert_eq!(poll(&mut fds, Some(&Timespec::default())).expect("poll"), 1);
    assert_eq!(peer.try_recv().expect("frame").payload(), b"pong");
    drop(peer);
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A host asleep on its descriptor while a peer is admitted hears that peer's first frame.
/// Before, the reservation reset the entry's ready word, the host's bit with it, and the new
/// peer's frame (finding the doorbell's waiter bit set) wrote nothing: the host slept on
/// until its tick.
#[test]
fn a_host_asleep_hears_the_first_frame_of_a_peer_admitted_meanwhile() {
    let host = Host::create(&HubConfig::new().max_peers(2)).expect("create");
    let first = Peer::attach(&host.add_peer().expect("add_peer")).expect("attach");
    host.arm();
    assert!(host.try_recv().is_err(), "nothing yet: the host sleeps");
    let ticket = host.add_peer().expect("add_peer");
    let to_host = ticket_fd(&ticket.env_value(), "notify");
    let second = Peer::attach(&ticket).expect("attach");
    second.send(FrameMeta::default(), b"hello").expect("send");
    assert_eq!(
        count(to_host),
        1,
        "the new peer's frame writes the host's descriptor"
    );
    assert_eq!(host.try_recv().expect("frame").payload(), b"hello");
    drop((first, second));
}

/// A life's to-host descriptor leaves the host's set when the life is recovered: a process
/// that still holds it (evicted, or gone with its goodbye but still running) can no longer
/// wake the host.
#[test]
fn a_recovered_life_leaves_the_hosts_set() {
    use std::os::fd::AsRawFd;
    let host = Host::create(&HubConfig::new().max_peers(1)).expect("create");
    let ticket = host.add_peer().expect("add_peer");
    let to_host = ticket_fd(&ticket.env_value(), "notify");
    let set = host.ready_fd().as_raw_fd();
    assert!(
        eventfds_in_set(set).contains(&to_host),
        "the life's descriptor is watched"
    );
    let peer = Peer::attach(&ticket).expect("attach");
    peer.close();
    let watchdog = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The supervisor recovers it after the goodbye (or this call does).
    while eventfds_in_set(set).contains(&to_host) {
        assert!(std::time::Instant::now() < watchdog, "never recovered");
        let _ = host.recover_peer(0);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The ticket still holds the descriptor open: it is out of the set, not merely closed.
    assert_eq!(count(to_host), 0);
}
