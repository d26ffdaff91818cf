//! A hostile plugin under a test's remote control: the chaos peer's `poke` (tests/plugin), spawned by the host
//! with [`Host::spawn_peer`], writes raw words at the byte offsets the test names, through a
//! mapping of its own (PROTOCOL.md §5: an attack from outside the host's own helpers). The test
//! then checks from the host's side. [`Named`] computes the offsets from hub-layout's definitions.

use std::io::{BufRead, BufReader, Write};
use std::mem::offset_of;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use hub_alloc::shared::SlotMeta;
use hub_layout::{
    DescRingHeader, HubHeader, MsgDescHot, PeerEntry, SegmentLayout, SizeClassHeader,
    encode_slot_ref,
};
use hub_transport::Host;

/// A `poke` peer: the process, its id, and the pipes of its command line protocol.
pub struct Poker {
    /// The peer id the host gave it.
    pub peer: u16,
    /// The process.
    pub child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Poker {
    /// Spawn a `poke` peer of `host` (with [`Host::spawn_peer`]).
    pub fn spawn(host: &Host) -> Self {
        let mut command = super::chaos(&["poke"]);
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        let (id, mut child) = host.spawn_peer(&mut command).expect("spawn the poke peer");
        let peer = id.index();
        let input = child.stdin.take().expect("stdin");
        let output = super::stdout(&mut child);
        let mut poker = Self {
            peer,
            child,
            input,
            output,
        };
        // Its first answer says it has attached and mapped the segment.
        let pid = poker.command("pid");
        assert_eq!(pid, poker.child.id().to_string(), "the poke peer's pid");
        poker
    }

    /// Send one command line and return the answer; panics on an `error:` answer or a closed
    /// pipe (the process died).
    pub fn command(&mut self, line: &str) -> String {
        self.try_command(line)
            .unwrap_or_else(|e| panic!("poke {line:?}: {e}"))
    }

    /// [`command`](Self::command), with the failure as a value.
    pub fn try_command(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.input, "{line}").map_err(|e| format!("write: {e}"))?;
        self.input.flush().map_err(|e| format!("flush: {e}"))?;
        let mut answer = String::new();
        match self.output.read_line(&mut answer) {
            Ok(0) => Err("the poke peer closed its output (it exited)".into()),
            Ok(_) => {
                let answer = answer.trim_end().to_string();
                match answer.strip_prefix("error: ") {
                    Some(error) => Err(error.to_string()),
                    None => Ok(answer),
                }
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// Store `value` in the `u32` at `offset`.
    pub fn w32(&mut self, offset: usize, value: u32) {
        self.command(&format!("w32 {offset} {value}"));
    }

    /// Store `value` in the `u64` at `offset`.
    pub fn w64(&mut self, offset: usize, value: u64) {
        self.command(&format!("w64 {offset} {value}"));
    }

    /// The `u32` at `offset`.
    pub fn r32(&mut self, offset: usize) -> u32 {
        self.command(&format!("r32 {offset}")).parse().expect("u32")
    }

    /// The `u64` at `offset`.
    pub fn r64(&mut self, offset: usize) -> u64 {
        self.command(&format!("r64 {offset}")).parse().expect("u64")
    }

    /// Move the futex word at `offset` on and wake its sleepers (a doorbell's ring).
    pub fn wake(&mut self, offset: usize) {
        self.command(&format!("wake {offset}"));
    }

    /// `count` random `u32` stores in `[start, start + len)`.
    pub fn scribble(&mut self, seed: u64, count: u64, start: usize, len: usize) {
        self.command(&format!("scribble {seed} {count} {start} {len}"));
    }

    /// Send a frame of `len` bytes through its `Peer` (filled from seed `len`, `msg_id` its
    /// checksum: see `pattern`).
    pub fn send(&mut self, len: usize) {
        self.command(&format!("send {len}"));
    }

    /// Write `desc` at `offset` (a descriptor's place in a ring), eight `u64` stores.
    pub fn write_desc(&mut self, offset: usize, desc: &MsgDescHot) {
        for (k, word) in desc_words(desc).into_iter().enumerate() {
            self.w64(offset + 8 * k, word);
        }
    }

    /// Push `desc` into peer `peer`'s send ring by hand, as a producer would (the descriptor at
    /// the head, then the head moved on), and ring the bell: a descriptor the peer's own
    /// `Peer` never made.
    pub fn push_desc(&mut self, named: &Named, peer: u16, desc: &MsgDescHot) {
        let head = self.r64(named.send_head(peer));
        self.write_desc(named.send_desc(peer, head), desc);
        self.w64(named.send_head(peer), head + 1);
        self.wake(named.peer_send_bell(peer));
    }

    /// Drop its `Peer` (goodbye: the entry goes Dying), keeping the process.
    pub fn goodbye(&mut self) {
        self.command("goodbye");
    }

    /// Exit at once with `code`, without goodbye; waits for the exit.
    pub fn exit(mut self, code: u8) -> std::process::ExitStatus {
        let _ = writeln!(self.input, "exit {code}");
        let _ = self.input.flush();
        self.child.wait().expect("wait for the poke peer")
    }
}

impl Drop for Poker {
    fn drop(&mut self) {
        // A test that failed half-way leaves no process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Byte offsets of the words an attacker writes, from hub-layout's definitions.
#[derive(Debug, Clone)]
pub struct Named {
    /// The segment's layout.
    pub layout: SegmentLayout,
}

impl Named {
    /// The offsets in a hub of `max_peers` peers and rings of `ring_capacity` descriptors.
    pub fn new(max_peers: u16, ring_capacity: u32) -> Self {
        Self {
            layout: SegmentLayout::new(max_peers, ring_capacity).expect("layout"),
        }
    }

    /// The offsets of a default hub.
    pub fn default_hub() -> Self {
        Self::new(hub_layout::MAX_PEERS, hub_layout::DEFAULT_HUB_RING_CAPACITY)
    }

    /// `flags` of peer `peer`'s entry.
    pub fn peer_flags(&self, peer: u16) -> usize {
        self.layout.peer_entry_offset(peer) + offset_of!(PeerEntry, flags)
    }

    /// `epoch` of peer `peer`'s entry.
    pub fn peer_epoch(&self, peer: u16) -> usize {
        self.layout.peer_entry_offset(peer) + offset_of!(PeerEntry, epoch)
    }

    /// `last_seen` of peer `peer`'s entry.
    pub fn peer_last_seen(&self, peer: u16) -> usize {
        self.layout.peer_entry_offset(peer) + offset_of!(PeerEntry, last_seen)
    }

    /// The pid word of peer `peer`'s entry.
    pub fn peer_pid(&self, peer: u16) -> usize {
        self.layout.peer_entry_offset(peer) + hub_transport::pad::PEER_PID
    }

    /// The send bell (peer to host) of peer `peer`'s entry.
    pub fn peer_send_bell(&self, peer: u16) -> usize {
        self.layout.peer_entry_offset(peer) + offset_of!(PeerEntry, send_data_futex)
    }

    /// The header of size class `class`.
    pub fn class_header(&self, class: usize) -> usize {
        self.layout.class_header_offset(class)
    }

    /// `free_head` of size class `class`.
    pub fn free_head(&self, class: usize) -> usize {
        self.class_header(class) + offset_of!(SizeClassHeader, free_head)
    }

    /// `extent_offsets[extent]` of size class `class`.
    pub fn extent_offset(&self, class: usize, extent: usize) -> usize {
        self.class_header(class)
            + offset_of!(SizeClassHeader, extent_offsets)
            + extent * std::mem::size_of::<u64>()
    }

    /// The meta of slot `slot` of the initial extent of `class`.
    pub fn slot_meta(&self, class: usize, slot: u32) -> usize {
        self.slot_meta_in(self.layout.initial_extent_offset(class), class, slot)
    }

    /// The meta of slot `slot` of the extent of `class` that starts at `extent_start`.
    pub fn slot_meta_in(&self, extent_start: usize, class: usize, slot: u32) -> usize {
        extent_start
            + self.layout.extent_geometry(class).meta_offset as usize
            + slot as usize * std::mem::size_of::<SlotMeta>()
    }

    /// `(generation, state)` of a slot meta, as one `u64` (generation low, state high: R5).
    pub fn gen_state(&self, meta: usize) -> usize {
        meta + offset_of!(SlotMeta, gen_state)
    }

    /// `next_free` of a slot meta.
    pub fn next_free(&self, meta: usize) -> usize {
        meta + offset_of!(SlotMeta, next_free)
    }

    /// `owner_peer` of a slot meta.
    pub fn owner(&self, meta: usize) -> usize {
        meta + offset_of!(SlotMeta, owner)
    }

    /// The payload bytes of slot `slot` of the initial extent of `class`.
    pub fn slot_data(&self, class: usize, slot: u32) -> usize {
        let geometry = self.layout.extent_geometry(class);
        self.layout.initial_extent_offset(class)
            + geometry.data_offset as usize
            + slot as usize * hub_layout::HUB_SIZE_CLASSES[class].0 as usize
    }

    /// `current_size` in the hub header: the end of the last reserved extent (R8).
    pub fn current_size(&self) -> usize {
        offset_of!(HubHeader, current_size)
    }

    /// `visible_head` of peer `peer`'s send ring.
    pub fn send_head(&self, peer: u16) -> usize {
        self.layout.send_ring_offset(peer) + offset_of!(DescRingHeader, visible_head)
    }

    /// The place of descriptor number `position` (a head or tail count) in peer `peer`'s send
    /// ring.
    pub fn send_desc(&self, peer: u16, position: u64) -> usize {
        let capacity = u64::from(self.layout.ring_capacity);
        self.layout.send_ring_offset(peer)
            + std::mem::size_of::<DescRingHeader>()
            + (position % capacity) as usize * std::mem::size_of::<MsgDescHot>()
    }

    /// A slot reference, as descriptors carry it.
    pub fn slot_ref(class: u16, index: u32) -> u32 {
        encode_slot_ref(class, index)
    }
}

/// A descriptor's 64 bytes as eight little-endian `u64` words, field by field at the offsets
/// hub-layout defines.
pub fn desc_words(desc: &MsgDescHot) -> [u64; 8] {
    let mut bytes = [0u8; 64];
    let mut put = |offset: usize, field: &[u8]| {
        bytes[offset..offset + field.len()].copy_from_slice(field);
    };
    put(offset_of!(MsgDescHot, msg_id), &desc.msg_id.to_le_bytes());
    put(
        offset_of!(MsgDescHot, channel_id),
        &desc.channel_id.to_le_bytes(),
    );
    put(
        offset_of!(MsgDescHot, method_id),
        &desc.method_id.to_le_bytes(),
    );
    put(
        offset_of!(MsgDescHot, payload_slot),
        &desc.payload_slot.to_le_bytes(),
    );
    put(
        offset_of!(MsgDescHot, payload_generation),
        &desc.payload_generation.to_le_bytes(),
    );
    put(
        offset_of!(MsgDescHot, payload_offset),
        &desc.payload_offset.to_le_bytes(),
    );
    put(
        offset_of!(MsgDescHot, payload_len),
        &desc.payload_len.to_le_bytes(),
    );
    put(offset_of!(MsgDescHot, flags), &desc.flags.to_le_bytes());
    put(
        offset_of!(MsgDescHot, credit_grant),
        &desc.credit_grant.to_le_bytes(),
    );
    put(
        offset_of!(MsgDescHot, deadline_ns),
        &desc.deadline_ns.to_le_bytes(),
    );
    put(offset_of!(MsgDescHot, inline_payload), &desc.inline_payload);
    std::array::from_fn(|k| u64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap()))
}
