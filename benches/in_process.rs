//! The in-process round trip, which `latency/in_process` times and `hot_loop` counts the
//! instructions of, and its baseline: one definition for both, so that they measure the same
//! thing. Included by each bench target with `#[path]` (bench targets share no library code
//! with dev-dependencies).

use hub_layout::MsgDescHot;
use hub_transport::ring::{Consumer, HeapRing, Producer};
use hub_transport::{FrameMeta, Host, HubConfig, Peer};

/// A host and its one peer in this process, and the buffers of a round trip of `size` bytes.
pub struct HubPair {
    host: Host,
    peer: Peer,
    to: u16,
    payload: Vec<u8>,
    echo: Vec<u8>,
}

impl HubPair {
    /// A new hub of one peer, attached, for round trips of `size` bytes.
    pub fn new(size: usize) -> Self {
        let host = Host::create(&HubConfig::new().max_peers(1)).expect("a hub");
        let peer = Peer::attach(&host.add_peer().expect("a reservation")).expect("attached");
        let to = peer.id();
        Self {
            host,
            peer,
            to,
            payload: vec![7_u8; size],
            echo: vec![0_u8; size],
        }
    }

    /// One round trip on this thread: `try_send`, `try_recv`, `try_send` of the echo (a copy of
    /// the request's payload), `try_recv`.
    pub fn round_trip(&mut self) {
        self.host
            .try_send(self.to, FrameMeta::default(), &self.payload)
            .expect("room for the request");
        let request = self.peer.try_recv().expect("the request");
        self.echo.copy_from_slice(request.payload());
        drop(request);
        self.peer
            .try_send(FrameMeta::default(), &self.echo)
            .expect("room for the echo");
        let reply = self.host.try_recv().expect("the echo");
        std::hint::black_box(reply.payload());
    }
}

/// The baseline: two bounded crossbeam channels of `[u8; N]` values, one each way.
pub struct ChannelPair<const N: usize> {
    to_peer: crossbeam_channel::Sender<[u8; N]>,
    at_peer: crossbeam_channel::Receiver<[u8; N]>,
    to_host: crossbeam_channel::Sender<[u8; N]>,
    at_host: crossbeam_channel::Receiver<[u8; N]>,
}

impl<const N: usize> ChannelPair<N> {
    /// Two channels of 256 values each.
    pub fn new() -> Self {
        let (to_peer, at_peer) = crossbeam_channel::bounded(256);
        let (to_host, at_host) = crossbeam_channel::bounded(256);
        Self {
            to_peer,
            at_peer,
            to_host,
            at_host,
        }
    }

    /// The same four steps as [`HubPair::round_trip`], through the channels.
    pub fn round_trip(&self) {
        self.to_peer.try_send([7; N]).expect("room for the request");
        let request = self.at_peer.try_recv().expect("the request");
        self.to_host.try_send(request).expect("room for the echo");
        std::hint::black_box(self.at_host.try_recv().expect("the echo"));
    }
}

/// The hub's rings alone: two rings of the hub's default capacity on the heap, one each way,
/// and the same four steps through their `try_push` and `try_pop_into` (with the R3 checks a
/// pop makes), nothing above them: no endpoint, lock, frame or wait.
pub struct RingPair {
    out: (Producer, Consumer),
    back: (Producer, Consumer),
    seq: u64,
}

impl RingPair {
    /// Two empty rings.
    pub fn new() -> Self {
        let rings = || {
            HeapRing::new(hub_layout::DEFAULT_HUB_RING_CAPACITY)
                .expect("a ring")
                .split()
        };
        Self {
            out: rings(),
            back: rings(),
            seq: 0,
        }
    }

    /// The same four steps as [`HubPair::round_trip`] at 8 B inline: push a descriptor
    /// carrying a sequence number, pop it, push it back, pop the answer.
    pub fn round_trip(&mut self) -> u64 {
        self.seq += 1;
        let mut desc = MsgDescHot::empty();
        desc.msg_id = self.seq;
        desc.payload_len = 8;
        desc.inline_payload[..8].copy_from_slice(&self.seq.to_le_bytes());
        self.out.0.try_push(&desc).expect("room for the request");
        let mut request = MsgDescHot::empty();
        assert!(self.out.1.try_pop_into(&mut request).expect("a sound ring"));
        self.back.0.try_push(&request).expect("room for the echo");
        let mut answer = MsgDescHot::empty();
        assert!(self.back.1.try_pop_into(&mut answer).expect("a sound ring"));
        answer.msg_id
    }
}
