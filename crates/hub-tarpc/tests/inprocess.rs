//! The transports with the host and its peers in one process: tarpc calls, frames that do not
//! decode, items too large, ends of stream, and what a transport gives back when dropped.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hub_tarpc::{HostTransport, PeerTransport, TransportError};
use hub_transport::aio::{AsyncHost, AsyncPeer};
use hub_transport::{FrameMeta, Host, HubConfig, Loan, LoanError, Peer};
use tarpc::server::{BaseChannel, Channel};
use tarpc::{client, context};

#[tarpc::service]
trait Calc {
    async fn add(a: u64, b: u64) -> u64;
}

#[derive(Clone)]
struct CalcServer;

impl Calc for CalcServer {
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

/// A host with `peers` peers attached in this process, all made async. With `no_growth`, the
/// segment may not grow, so a slot class runs dry once its first extent is loaned out.
fn hub(peers: u16, no_growth: bool) -> (Arc<AsyncHost>, Vec<Arc<AsyncPeer>>) {
    let mut config = HubConfig::new().max_peers(peers);
    if no_growth {
        let initial = hub_layout::SegmentLayout::new(peers, hub_layout::DEFAULT_HUB_RING_CAPACITY)
            .expect("a layout")
            .initial_size();
        config = config.max_size(initial);
    }
    let host = Host::create(&config).expect("a hub");
    let attached: Vec<_> = (0..peers)
        .map(|_| {
            let ticket = host.add_peer().expect("a peer entry");
            let peer = Peer::attach(&ticket).expect("attach");
            Arc::new(AsyncPeer::new(peer).expect("an async peer"))
        })
        .collect();
    (
        Arc::new(AsyncHost::new(host).expect("an async host")),
        attached,
    )
}

/// Serve `Calc` over `transport` in a task.
fn serve<T>(transport: T)
where
    T: tarpc::Transport<tarpc::Response<CalcResponse>, tarpc::ClientMessage<CalcRequest>>
        + Send
        + 'static,
{
    let server = BaseChannel::with_defaults(transport);
    tokio::spawn(server.execute(CalcServer.serve()).for_each(|call| async {
        tokio::spawn(call);
    }));
}

/// Slots held (allocated or in flight) in any class.
fn held(host: &AsyncHost) -> u32 {
    host.host()
        .stats()
        .iter()
        .map(|class| class.allocated + class.in_flight)
        .sum()
}

/// The `TransportError` inside `error`.
fn inner(error: &io::Error) -> Option<&TransportError> {
    error.get_ref()?.downcast_ref::<TransportError>()
}

#[tokio::test(flavor = "current_thread")]
async fn the_host_calls_a_peer() {
    let (host, peers) = hub(1, false);
    serve(PeerTransport::new(Arc::clone(&peers[0])));
    let calc = CalcClient::new(client::Config::default(), HostTransport::new(host, 0)).spawn();
    for i in 0..100 {
        assert_eq!(
            calc.add(context::current(), i, 7).await.expect("a call"),
            i + 7
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_peer_calls_the_host() {
    let (host, peers) = hub(1, false);
    serve(HostTransport::new(host, 0));
    let transport = PeerTransport::new(Arc::clone(&peers[0]));
    let calc = CalcClient::new(client::Config::default(), transport).spawn();
    for i in 0..100 {
        assert_eq!(
            calc.add(context::current(), 3, i).await.expect("a call"),
            i + 3
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_host_serves_each_peer_through_its_own_transport() {
    let (host, peers) = hub(3, false);
    let clients: Vec<CalcClient> = peers
        .iter()
        .map(|peer| {
            serve(HostTransport::new(Arc::clone(&host), peer.peer().id()));
            let transport = PeerTransport::new(Arc::clone(peer));
            CalcClient::new(client::Config::default(), transport).spawn()
        })
        .collect();
    // Every peer calls at once, so the three host transports wait on the one host together.
    let calls = clients.iter().enumerate().map(|(p, calc)| async move {
        for i in 0..200 {
            let sum = calc.add(context::current(), p as u64 * 1000, i).await;
            assert_eq!(sum.expect("a call"), p as u64 * 1000 + i);
        }
    });
    let all = futures::future::join_all(calls);
    // A lost wakeup would hang here for ever: fail instead.
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every peer's calls answered");
}

#[tokio::test(flavor = "current_thread")]
async fn a_frame_that_does_not_decode_is_invalid_data_and_the_stream_goes_on() {
    let (host, peers) = hub(1, false);
    let mut receiver = PeerTransport::<(u32, String), ()>::new(Arc::clone(&peers[0]));
    let mut sender = HostTransport::<(), (u32, String)>::new(Arc::clone(&host), 0);
    let meta = FrameMeta::default();
    // A string of 2^60 bytes, claimed in 12 bytes.
    let mut lying = 7u32.to_le_bytes().to_vec();
    lying.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let mut trailing = Vec::new();
    trailing.extend_from_slice(&7u32.to_le_bytes());
    trailing.extend_from_slice(&2u64.to_le_bytes());
    trailing.extend_from_slice(b"ok!");
    let garbage = [
        &[][..],
        &[0xff; 3][..],
        &lying[..],
        &[0xff; 5000][..],
        &trailing[..],
    ];
    for bytes in garbage {
        host.send(0, meta, bytes).await.expect("a raw frame");
        let error = receiver
            .next()
            .await
            .expect("an item")
            .expect_err("no item");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(
            matches!(inner(&error), Some(TransportError::Decode { len, .. }) if *len == bytes.len())
        );
    }
    sender.send((7, "ok".into())).await.expect("an item sent");
    let item = receiver.next().await.expect("an item").expect("it decodes");
    assert_eq!(item, (7, "ok".to_owned()));
    assert_eq!(held(&host), 0, "every frame's slot is back");
}

#[tokio::test(flavor = "current_thread")]
async fn items_travel_inline_in_slots_and_up_to_the_largest_slot() {
    let (host, peers) = hub(1, false);
    let mut receiver = PeerTransport::<Vec<u8>, ()>::new(Arc::clone(&peers[0]));
    let mut sender = HostTransport::<(), Vec<u8>>::new(Arc::clone(&host), 0);
    // 8 bytes of length, then the bytes: inline up to 8, then every class.
    let largest = (16 << 20) - 8;
    for len in [0, 8, 9, 1000, 100_000, 4 << 20, largest] {
        let item: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        sender.send(item.clone()).await.expect("sent");
        let got = receiver.next().await.expect("an item").expect("it decodes");
        assert!(got == item, "an item of {len} bytes comes back whole");
    }
    assert_eq!(held(&host), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_item_larger_than_the_largest_slot_is_refused() {
    let (host, peers) = hub(1, false);
    let mut sender = PeerTransport::<(), Vec<u8>>::new(Arc::clone(&peers[0]));
    let error = sender
        .send(vec![0; 16 << 20])
        .await
        .expect_err("16 MiB and its length do not fit a slot");
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    assert!(matches!(
        inner(&error),
        Some(TransportError::Loan(LoanError::PayloadTooLarge { .. }))
    ));
    // The transport goes on.
    sender.send(vec![1; 100]).await.expect("a small item");
    let frame = host.recv_from(0).await.expect("the small item");
    assert_eq!(frame.len(), 108);
    drop(frame);
    assert_eq!(held(&host), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn an_item_waits_for_a_slot_and_is_sent_once_one_is_free() {
    let (host, peers) = hub(1, true);
    // Every 16 MiB slot, held by the host.
    let mut loans: Vec<Loan> = std::iter::from_fn(|| host.host().try_loan(16 << 20).ok()).collect();
    assert!(!loans.is_empty());
    let item: Vec<u8> = (0..(8 << 20)).map(|i| (i % 253) as u8).collect();
    let mut sender = PeerTransport::<(), Vec<u8>>::new(Arc::clone(&peers[0]));
    let want = item.clone();
    let sending = tokio::spawn(async move {
        sender.send(item).await?;
        Ok::<_, io::Error>(sender)
    });
    // The item cannot go while no slot is free.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!sending.is_finished(), "no slot, no send");
    drop(loans.pop());
    let _sender = sending
        .await
        .expect("the task")
        .expect("sent once a slot is free");
    let frame = host.recv_from(0).await.expect("the item");
    let got: Vec<u8> = bincode::deserialize(frame.payload()).expect("it decodes");
    assert!(got == want);
    drop((frame, loans));
    assert_eq!(held(&host), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_dropped_transport_gives_back_what_it_held() {
    let (host, peers) = hub(1, true);
    // Sending into a full ring: encoded into a slot that waits for room, never flushed.
    let mut fillers = 0;
    while peers[0]
        .peer()
        .try_send(FrameMeta::default(), b"filler")
        .is_ok()
    {
        fillers += 1;
    }
    let mut sender = PeerTransport::<(), Vec<u8>>::new(Arc::clone(&peers[0]));
    futures::future::poll_fn(|cx| sender.poll_ready_unpin(cx))
        .await
        .expect("ready");
    sender.start_send_unpin(vec![5; 50_000]).expect("started");
    assert_eq!(held(&host), 1);
    drop(sender);
    assert_eq!(held(&host), 0, "the unsent slot is back");
    for _ in 0..fillers {
        assert_eq!(
            host.host().try_recv().expect("a filler").payload(),
            b"filler"
        );
    }
    // Waiting for a slot: the item kept, the loan pending.
    let loans: Vec<Loan> = std::iter::from_fn(|| host.host().try_loan(16 << 20).ok()).collect();
    let mut sender = PeerTransport::<(), Vec<u8>>::new(Arc::clone(&peers[0]));
    sender.start_send_unpin(vec![6; 8 << 20]).expect("kept");
    let flushed = futures::future::poll_fn(|cx| {
        std::task::Poll::Ready(sender.poll_flush_unpin(cx).is_pending())
    });
    assert!(flushed.await, "no slot: pending");
    drop(sender);
    drop(loans);
    assert_eq!(held(&host), 0, "nothing held after the drop");
    // Nothing was sent by either.
    assert!(host.host().try_recv().is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn start_send_before_poll_ready_is_an_error_not_a_loss() {
    let (host, peers) = hub(1, true);
    let loans: Vec<Loan> = std::iter::from_fn(|| host.host().try_loan(16 << 20).ok()).collect();
    let mut sender = PeerTransport::<(), Vec<u8>>::new(Arc::clone(&peers[0]));
    sender.start_send_unpin(vec![6; 8 << 20]).expect("kept");
    let error = sender.start_send_unpin(vec![7; 10]).expect_err("busy");
    assert!(matches!(inner(&error), Some(TransportError::NotReady)));
    drop(loans);
    sender.flush().await.expect("the first item goes");
    let frame = host.recv_from(0).await.expect("the first item");
    assert_eq!(frame.len(), (8 << 20) + 8);
}

#[tokio::test(flavor = "current_thread")]
async fn the_peers_stream_ends_when_the_host_leaves() {
    let (host, peers) = hub(1, false);
    let mut receiver = PeerTransport::<u64, u64>::new(Arc::clone(&peers[0]));
    let mut sender = HostTransport::<u64, u64>::new(Arc::clone(&host), 0);
    sender.send(41).await.expect("sent");
    drop((sender, host));
    // What the host sent before it left, then the end.
    assert_eq!(
        receiver.next().await.expect("an item").expect("it decodes"),
        41
    );
    assert!(receiver.next().await.is_none());
    assert!(receiver.next().await.is_none(), "and it stays ended");
    let error = receiver.send(1).await.expect_err("nobody to send to");
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_hosts_stream_ends_when_its_peer_leaves() {
    let (host, mut peers) = hub(1, false);
    let id = peers[0].peer().id();
    let mut receiver = HostTransport::<u64, u64>::new(Arc::clone(&host), id);
    let mut sender = PeerTransport::<u64, u64>::new(peers.pop().expect("the peer"));
    sender.send(42).await.expect("sent");
    drop(sender); // the last reference: the peer says goodbye
    assert_eq!(
        receiver.next().await.expect("an item").expect("it decodes"),
        42
    );
    assert!(receiver.next().await.is_none());
    let error = receiver.send(1).await.expect_err("nobody to send to");
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
}
