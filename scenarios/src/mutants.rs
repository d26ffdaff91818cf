//! `mutants`: 10,000+ mutated copies of a valid segment file each give a typed error or a
//! working hub, never a panic (R2, R3).
//!
//! How:
//!
//! 1. A named hub (2 peers, rings of 16) is created in a scratch directory, peer 0 is reserved
//!    and the file's bytes are copied as a sparse image: only its data ranges, found with
//!    `SEEK_DATA`/`SEEK_HOLE`, so that a copy costs a few hundred KiB rather than the layout's
//!    100+ MiB. The host lives for the whole run: the copies name a live host process, so an
//!    attach to one of them can succeed.
//! 2. An unmutated copy must attach and work (every call of the exercise below succeeds): the
//!    copying is faithful, and whatever a mutant does comes from its mutations.
//! 3. Each mutant (the count is `scale(10_000, 1_000)`) is the image with one to three mutations,
//!    drawn from its own generator (`mix(seed, n)`, so any mutant can be replayed): a bit flip in
//!    a field of a shared structure (the `HubHeader` and hub-transport's words in its padding,
//!    the peer entries, ring headers and descriptors, size class headers, extent headers, slot
//!    metas) or anywhere in the file; a truncation (to 0, inside the header, inside the
//!    metadata, just short of the layout, anywhere, or longer); two aligned words swapped; a
//!    chosen value (0, all ones, an offset of the layout, off by one, ...) written over a field.
//!    It is written to a fresh file and attached as peer 0 with the reservation's epoch.
//! 4. An attach that fails must fail with an error value: it is counted by kind (the
//!    `AttachError` variant, and the inner variant for layout, mapping and allocator errors). A
//!    peer that attaches is exercised as a working hub with calls that never wait: `try_loan`
//!    of 0 B to 16 MiB (writing into each loan's first and last bytes), `try_send` of an inline
//!    and a slot frame, `try_send_loan`, `try_recv` (reading what it returns) and `stats`; any
//!    result is fine as long as it is a value.
//!
//! A panic, in the attaching thread or any other (the panic hook records every one, with its
//! message and location, and is restored at the end), fails the scenario with the mutant's
//! number and mutations. A mutant that takes longer than [`MUTANT_LIMIT`] fails it too: a watch
//! thread names the mutant and exits. A crash by signal (`SIGBUS`, `SIGSEGV`) cannot be caught:
//! run again with `HUB_MUTANTS_TRACE=1` in the environment to see each mutant on standard error
//! before it is attached.
//!
//! Figures: `mutants` tried, `typed_errors` (attaches refused), `working` (attaches that gave a
//! peer), `op_errors` (error values from calls on working hubs), `panics` (0 or the run fails),
//! `kinds` (distinct attach error kinds; the count of each goes to standard error). The
//! mutations are the same for a seed in every run, but the image is not quite: it holds this
//! process's pid and clock readings, so an outcome that depends on them (a mutated pid that does
//! or does not name a live process: `HostGone` or a working hub) may differ between two runs.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub_layout::{
    DescRingHeader, ExtentHeader, HubHeader, HubSlotMeta, MsgDescHot, NUM_SIZE_CLASSES, PeerEntry,
    SegmentLayout, SizeClassHeader,
};
use hub_transport::{FrameMeta, Host, HubConfig, Peer, SpecSource, TicketSpec, TryRecvError, pad};

use crate::Settings;
use crate::common::{self, EXIT_HUNG, Figures, Rng, ScratchDir};

/// Peers of the hub that is copied.
const MAX_PEERS: u16 = 2;

/// Descriptors per ring of the hub that is copied.
const RING_CAPACITY: u32 = 16;

/// Most data bytes a sparse image may hold: more means the file was not sparse.
const MAX_IMAGE_DATA: usize = 64 << 20;

/// How long one mutant (write, attach, exercise, drop) may take before it counts as a hang.
pub const MUTANT_LIMIT: Duration = Duration::from_secs(20);

/// Loan sizes a working hub is asked for: empty, inline-sized up, each class, the largest slot.
const LOAN_SIZES: [usize; 5] = [0, 100, 5000, 100_000, common::MAX_PAYLOAD];

/// Environment variable that makes the scenario print each mutant on standard error first.
const TRACE_ENV: &str = "HUB_MUTANTS_TRACE";

/// Panics seen by the recording hook: `thread 'name' panicked at location: message`.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The bytes of a sparse file: its length and its data ranges.
#[derive(Debug, Clone)]
struct Image {
    /// Length of the file.
    len: u64,
    /// Data ranges, in order: offset and bytes. Everything else reads as zero.
    chunks: Vec<(u64, Vec<u8>)>,
}

impl Image {
    /// Copy the data ranges of the file at `path`.
    fn of(path: &Path) -> Result<Image, String> {
        let (len, chunks) = crate::sparse::data_ranges(path, MAX_IMAGE_DATA)?;
        Ok(Image { len, chunks })
    }

    /// Copy `out.len()` bytes at `at` into `out` (holes and bytes past the end read as zero).
    fn read_into(&self, at: u64, out: &mut [u8]) {
        out.fill(0);
        overlay(at, out, self.chunks.iter().map(|(s, b)| (*s, b.as_slice())));
    }
}

/// Copy into `out` (the bytes at `at`) the parts of `pieces` that overlap it, in order.
fn overlay<'a>(at: u64, out: &mut [u8], pieces: impl Iterator<Item = (u64, &'a [u8])>) {
    let end = at + out.len() as u64;
    for (start, bytes) in pieces {
        let stop = start + bytes.len() as u64;
        let (from, to) = (start.max(at), stop.min(end));
        if from < to {
            out[(from - at) as usize..(to - at) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }
}

/// A field of a shared structure: where it is, how wide, and its name for messages.
#[derive(Debug, Clone)]
struct Field {
    /// Byte offset in the segment.
    at: u64,
    /// Width in bytes: 1, 2, 4 or 8.
    width: u8,
    /// `HubHeader.ring_capacity`, `peer 1.epoch`, ...
    name: String,
}

/// Where mutations aim: the fields of every fixed structure, by area, and the layout.
struct Targets {
    /// The layout of the copied hub.
    layout: SegmentLayout,
    /// `HubHeader` fields and hub-transport's words in its padding.
    header: Vec<Field>,
    /// Fields of every peer entry.
    peers: Vec<Field>,
    /// Fields of every ring header.
    rings: Vec<Field>,
    /// Fields of the size class headers.
    classes: Vec<Field>,
    /// Fields of the initial extent's header of each class.
    extents: Vec<Field>,
}

/// `Field`s of a struct at `base`: `field!(list, base, "prefix", Type, name, width)`.
macro_rules! field {
    ($list:expr, $base:expr, $prefix:expr, $ty:ty, $field:ident, $width:expr) => {
        $list.push(Field {
            at: ($base + offset_of!($ty, $field)) as u64,
            width: $width,
            name: format!("{}.{}", $prefix, stringify!($field)),
        })
    };
}

impl Targets {
    /// Every field of the fixed structures of `layout`.
    fn new(layout: SegmentLayout) -> Targets {
        let mut header = Vec::new();
        let h = "HubHeader";
        field!(header, 0, h, HubHeader, magic, 8);
        field!(header, 0, h, HubHeader, version, 4);
        field!(header, 0, h, HubHeader, flags, 4);
        field!(header, 0, h, HubHeader, max_peers, 2);
        field!(header, 0, h, HubHeader, active_peers, 2);
        field!(header, 0, h, HubHeader, peer_id_counter, 2);
        field!(header, 0, h, HubHeader, current_size, 8);
        field!(header, 0, h, HubHeader, extent_count, 4);
        field!(header, 0, h, HubHeader, ring_capacity, 4);
        field!(header, 0, h, HubHeader, peer_table_offset, 8);
        field!(header, 0, h, HubHeader, ring_region_offset, 8);
        field!(header, 0, h, HubHeader, size_class_offset, 8);
        field!(header, 0, h, HubHeader, extent_region_offset, 8);
        for (at, width, name) in [
            (pad::HOST_PID, 4, "host_pid"),
            (pad::HOST_STATE, 4, "host_state"),
            (pad::HOST_BELL, 4, "host_bell"),
            (pad::SIZE_LIMIT, 8, "size_limit"),
            (pad::HEARTBEAT_MS, 4, "heartbeat_ms"),
        ] {
            header.push(Field {
                at: at as u64,
                width,
                name: format!("HubHeader pad {name}"),
            });
        }

        let mut peers = Vec::new();
        for peer in 0..layout.max_peers {
            let base = layout.peer_entry_offset(peer);
            let p = format!("peer {peer}");
            field!(peers, base, p, PeerEntry, peer_id, 2);
            field!(peers, base, p, PeerEntry, peer_type, 2);
            field!(peers, base, p, PeerEntry, flags, 4);
            field!(peers, base, p, PeerEntry, epoch, 8);
            field!(peers, base, p, PeerEntry, last_seen, 8);
            field!(peers, base, p, PeerEntry, send_ring_offset, 8);
            field!(peers, base, p, PeerEntry, recv_ring_offset, 8);
            field!(peers, base, p, PeerEntry, send_data_futex, 4);
            field!(peers, base, p, PeerEntry, recv_data_futex, 4);
            peers.push(Field {
                at: (base + pad::PEER_PID) as u64,
                width: 4,
                name: format!("{p} pad pid"),
            });
        }

        let mut rings = Vec::new();
        for ring in 0..2 * usize::from(layout.max_peers) {
            let base = layout.ring_offset(ring);
            let r = format!("ring {ring}");
            field!(rings, base, r, DescRingHeader, visible_head, 8);
            field!(rings, base, r, DescRingHeader, tail, 8);
            field!(rings, base, r, DescRingHeader, capacity, 4);
        }

        let mut classes = Vec::new();
        let mut extents = Vec::new();
        for class in 0..NUM_SIZE_CLASSES {
            let base = layout.class_header_offset(class);
            let c = format!("class {class}");
            field!(classes, base, c, SizeClassHeader, slot_size, 4);
            field!(classes, base, c, SizeClassHeader, slots_per_extent, 4);
            field!(classes, base, c, SizeClassHeader, extent_slot_shift, 4);
            field!(classes, base, c, SizeClassHeader, total_slots, 4);
            field!(classes, base, c, SizeClassHeader, free_head, 8);
            field!(classes, base, c, SizeClassHeader, slot_available_futex, 4);
            let offsets = base + offset_of!(SizeClassHeader, extent_offsets);
            for extent in [0, 1, 2, hub_layout::MAX_EXTENTS_PER_CLASS - 1] {
                classes.push(Field {
                    at: (offsets + 8 * extent) as u64,
                    width: 8,
                    name: format!("{c}.extent_offsets[{extent}]"),
                });
            }
            let base = layout.initial_extent_offset(class);
            let e = format!("class {class} extent 0");
            field!(extents, base, e, ExtentHeader, class, 2);
            field!(extents, base, e, ExtentHeader, extent_index, 2);
            field!(extents, base, e, ExtentHeader, base_global_index, 4);
            field!(extents, base, e, ExtentHeader, slot_count, 4);
            field!(extents, base, e, ExtentHeader, slot_size, 4);
            field!(extents, base, e, ExtentHeader, meta_offset, 4);
            field!(extents, base, e, ExtentHeader, data_offset, 4);
        }
        Targets {
            layout,
            header,
            peers,
            rings,
            classes,
            extents,
        }
    }

    /// A field to mutate, weighted towards the structures every participant checks.
    fn pick(&self, rng: &mut Rng) -> Field {
        let from =
            |list: &[Field], rng: &mut Rng| list[rng.below(list.len() as u64) as usize].clone();
        match rng.below(100) {
            0..28 => from(&self.header, rng),
            28..44 => from(&self.peers, rng),
            44..56 => from(&self.rings, rng),
            56..60 => self.descriptor(rng),
            60..76 => from(&self.classes, rng),
            76..82 => from(&self.extents, rng),
            82..94 => self.slot_meta(rng),
            94..97 => self.byte(rng, self.layout.offsets.extent_region as u64),
            _ => self.byte(rng, self.layout.initial_size() as u64),
        }
    }

    /// A field of a descriptor of a ring (the first two of a ring, or any).
    fn descriptor(&self, rng: &mut Rng) -> Field {
        let ring = rng.below(2 * u64::from(self.layout.max_peers)) as usize;
        let index = if rng.percent(60) {
            rng.below(2)
        } else {
            rng.below(u64::from(self.layout.ring_capacity))
        };
        let base = self.layout.ring_offset(ring)
            + size_of::<DescRingHeader>()
            + index as usize * size_of::<MsgDescHot>();
        let (field, width) = [
            (offset_of!(MsgDescHot, payload_slot), "payload_slot"),
            (
                offset_of!(MsgDescHot, payload_generation),
                "payload_generation",
            ),
            (offset_of!(MsgDescHot, payload_offset), "payload_offset"),
            (offset_of!(MsgDescHot, payload_len), "payload_len"),
            (offset_of!(MsgDescHot, flags), "flags"),
        ][rng.below(5) as usize];
        Field {
            at: (base + field) as u64,
            width: 4,
            name: format!("ring {ring} desc {index}.{width}"),
        }
    }

    /// A field of a slot meta of a class's initial extent: mostly the first slots (the head of
    /// the free list), else the last or any.
    fn slot_meta(&self, rng: &mut Rng) -> Field {
        let class = rng.below(NUM_SIZE_CLASSES as u64) as usize;
        let slots = u64::from(self.layout.slots_per_extent(class));
        let slot = match rng.below(4) {
            0 | 1 => rng.below(4.min(slots)),
            2 => slots - 1 - rng.below(2.min(slots)),
            _ => rng.below(slots),
        };
        let (field, name) = [
            (offset_of!(HubSlotMeta, generation), "generation"),
            (offset_of!(HubSlotMeta, state), "state"),
            (offset_of!(HubSlotMeta, next_free), "next_free"),
            (offset_of!(HubSlotMeta, owner_peer), "owner_peer"),
        ][rng.below(4) as usize];
        let at = self.layout.initial_extent_offset(class)
            + self.layout.extent_geometry(class).meta_offset as usize
            + slot as usize * size_of::<HubSlotMeta>()
            + field;
        Field {
            at: at as u64,
            width: 4,
            name: format!("class {class} slot {slot}.{name}"),
        }
    }

    /// One byte anywhere below `end`.
    fn byte(&self, rng: &mut Rng, end: u64) -> Field {
        let at = rng.below(end);
        Field {
            at,
            width: 1,
            name: format!("byte in {}", self.locate(at)),
        }
    }

    /// What lies at `at`, in words.
    fn locate(&self, at: u64) -> String {
        let l = &self.layout;
        let o = &l.offsets;
        let at = at as usize;
        let ring_end = l.ring_offset(0) + 2 * usize::from(l.max_peers) * l.ring_size();
        if at < o.peer_table {
            "HubHeader".into()
        } else if at < o.peer_table + usize::from(l.max_peers) * size_of::<PeerEntry>() {
            format!("peer {}", (at - o.peer_table) / size_of::<PeerEntry>())
        } else if (o.ring_region..ring_end).contains(&at) {
            let ring = (at - o.ring_region) / l.ring_size();
            let within = (at - o.ring_region) % l.ring_size();
            match within.checked_sub(size_of::<DescRingHeader>()) {
                None => format!("ring {ring} header"),
                Some(d) => format!("ring {ring} desc {}", d / size_of::<MsgDescHot>()),
            }
        } else if (o.size_class_headers..o.extent_region).contains(&at) {
            format!(
                "class header {}",
                (at - o.size_class_headers) / size_of::<SizeClassHeader>()
            )
        } else if at >= o.extent_region {
            let class = (0..NUM_SIZE_CLASSES)
                .rev()
                .find(|&c| l.initial_extent_offset(c) <= at)
                .unwrap_or(0);
            let geometry = l.extent_geometry(class);
            let within = at - l.initial_extent_offset(class);
            if within < geometry.meta_offset as usize {
                format!("class {class} extent header")
            } else if within < geometry.data_offset as usize {
                let slot = (within - geometry.meta_offset as usize) / size_of::<HubSlotMeta>();
                format!("class {class} slot {slot} meta")
            } else {
                format!("class {class} slot data")
            }
        } else {
            "padding".into()
        }
    }
}

/// One change to a copy.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of the field.
    Flip {
        /// The field.
        field: Field,
        /// Which bit of its width.
        bit: u8,
    },
    /// Cut (or extend) the file to `len` bytes.
    Truncate {
        /// The new length.
        len: u64,
        /// Which kind of length.
        why: &'static str,
    },
    /// Swap two aligned words of `width` bytes.
    Swap {
        /// Offset of one.
        a: u64,
        /// Offset of the other.
        b: u64,
        /// 4 or 8.
        width: u8,
        /// The fields the words were chosen for.
        names: (String, String),
    },
    /// Write `value` (its low `field.width` bytes) over the field.
    Write {
        /// The field.
        field: Field,
        /// The value.
        value: u64,
    },
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::Flip { field, bit } => {
                write!(
                    f,
                    "flip bit {bit} of {} @{:#x}/{}",
                    field.name, field.at, field.width
                )
            }
            Mutation::Truncate { len, why } => write!(f, "truncate to {len} ({why})"),
            Mutation::Swap { a, b, width, names } => write!(
                f,
                "swap u{} @{a:#x} ({}) with @{b:#x} ({})",
                u32::from(*width) * 8,
                names.0,
                names.1
            ),
            Mutation::Write { field, value } => write!(
                f,
                "write {value:#x} over {} @{:#x}/{}",
                field.name, field.at, field.width
            ),
        }
    }
}

/// A mutated copy: the image's length after truncations, and byte patches applied in order.
#[derive(Debug, Clone)]
struct Mutant {
    /// Length of the file.
    len: u64,
    /// Bytes written over the image, in order.
    patches: Vec<(u64, Vec<u8>)>,
    /// What was done, for messages.
    mutations: Vec<Mutation>,
}

impl Mutant {
    /// The image unchanged.
    fn of(image: &Image) -> Mutant {
        Mutant {
            len: image.len,
            patches: Vec::new(),
            mutations: Vec::new(),
        }
    }

    /// The `n` bytes at `at` as the mutant has them so far (before truncation).
    fn read(&self, image: &Image, at: u64, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        image.read_into(at, &mut out);
        overlay(
            at,
            &mut out,
            self.patches.iter().map(|(s, b)| (*s, b.as_slice())),
        );
        out
    }

    /// The field's value (native-endian, as the hub stores it), zero-extended.
    fn value(&self, image: &Image, field: &Field) -> u64 {
        let bytes = self.read(image, field.at, usize::from(field.width));
        match *bytes.as_slice() {
            [a] => u64::from(a),
            [a, b] => u64::from(u16::from_ne_bytes([a, b])),
            [a, b, c, d] => u64::from(u32::from_ne_bytes([a, b, c, d])),
            _ => {
                let mut word = [0; 8];
                word.copy_from_slice(&bytes[..8]);
                u64::from_ne_bytes(word)
            }
        }
    }

    /// Apply `mutation`.
    fn apply(&mut self, image: &Image, mutation: Mutation) {
        match &mutation {
            Mutation::Flip { field, bit } => {
                let value = self.value(image, field) ^ (1u64 << bit);
                self.write(field, value);
            }
            Mutation::Truncate { len, .. } => self.len = *len,
            Mutation::Swap { a, b, width, .. } => {
                let n = usize::from(*width);
                let (x, y) = (self.read(image, *a, n), self.read(image, *b, n));
                self.patches.push((*a, y));
                self.patches.push((*b, x));
            }
            Mutation::Write { field, value } => self.write(field, *value),
        }
        self.mutations.push(mutation);
    }

    /// Patch the field with `value` cut to its width (native-endian, as the hub stores it).
    fn write(&mut self, field: &Field, value: u64) {
        let bytes = match field.width {
            1 => vec![value as u8],
            2 => (value as u16).to_ne_bytes().to_vec(),
            4 => (value as u32).to_ne_bytes().to_vec(),
            _ => value.to_ne_bytes().to_vec(),
        };
        self.patches.push((field.at, bytes));
    }

    /// Write the mutant to a new file at `path`.
    fn write_file(&self, image: &Image, path: &Path) -> Result<(), String> {
        let what = |step: &str, e: std::io::Error| format!("{step} {}: {e}", path.display());
        let file = File::create_new(path).map_err(|e| what("create", e))?;
        file.set_len(self.len).map_err(|e| what("set_len", e))?;
        let pieces = image.chunks.iter().chain(self.patches.iter());
        for (at, bytes) in pieces {
            let end = (*at + bytes.len() as u64).min(self.len);
            if *at < end {
                file.write_all_at(&bytes[..(end - at) as usize], *at)
                    .map_err(|e| what("write", e))?;
            }
        }
        Ok(())
    }

    /// The mutations, for messages.
    fn describe(&self) -> String {
        if self.mutations.is_empty() {
            return "unmutated".into();
        }
        let parts: Vec<String> = self.mutations.iter().map(ToString::to_string).collect();
        parts.join("; ")
    }
}

/// Draw mutant `n`'s one to three mutations from `mix(seed, n)`.
fn mutate(targets: &Targets, image: &Image, seed: u64, n: u64) -> Mutant {
    let mut rng = Rng::new(common::mix(seed, n));
    let mut mutant = Mutant::of(image);
    let count = match rng.below(100) {
        0..60 => 1,
        60..85 => 2,
        _ => 3,
    };
    for _ in 0..count {
        let mutation = match rng.below(100) {
            0..45 => {
                let field = targets.pick(&mut rng);
                let bit = rng.below(u64::from(field.width) * 8) as u8;
                Mutation::Flip { field, bit }
            }
            45..70 => {
                let field = targets.pick(&mut rng);
                let value = interesting_value(&mut rng, targets, mutant.value(image, &field));
                Mutation::Write { field, value }
            }
            70..88 => swap(&mut rng, targets),
            _ => truncation(&mut rng, &targets.layout),
        };
        mutant.apply(image, mutation);
    }
    mutant
}

/// Two aligned words to swap, each holding a field of [`Targets::pick`].
fn swap(rng: &mut Rng, targets: &Targets) -> Mutation {
    let width: u8 = if rng.percent(50) { 8 } else { 4 };
    let mask = !(u64::from(width) - 1);
    let one = targets.pick(rng);
    let mut other = targets.pick(rng);
    if other.at & mask == one.at & mask {
        other = targets.pick(rng);
    }
    Mutation::Swap {
        a: one.at & mask,
        b: other.at & mask,
        width,
        names: (one.name, other.name),
    }
}

/// A value worth writing over a field whose value is `now`.
fn interesting_value(rng: &mut Rng, targets: &Targets, now: u64) -> u64 {
    let l = &targets.layout;
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => u64::MAX,
        3 => u64::MAX - 1,
        4 => 1 << rng.below(64),
        5 => now.wrapping_add(1),
        6 => now.wrapping_sub(1),
        7 => now.wrapping_mul(2),
        8 => rng.below(4096),
        9 => [
            l.offsets.peer_table,
            l.offsets.ring_region,
            l.offsets.size_class_headers,
            l.offsets.extent_region,
            l.initial_extent_offset(rng.below(NUM_SIZE_CLASSES as u64) as usize),
            l.initial_size(),
            l.max_size(),
        ][rng.below(7) as usize] as u64,
        10 => u64::from(u32::MAX),
        _ => rng.next_u64(),
    }
}

/// A length to cut (or extend) the file to.
fn truncation(rng: &mut Rng, layout: &SegmentLayout) -> Mutation {
    let initial = layout.initial_size() as u64;
    let extents = layout.offsets.extent_region as u64;
    let header = size_of::<HubHeader>() as u64;
    let (len, why) = match rng.below(7) {
        0 => (0, "empty"),
        1 => (rng.below(header), "inside the header"),
        2 => (rng.between(header, extents), "inside the metadata"),
        3 => (initial - rng.between(1, 4096), "just short of the layout"),
        4 => (extents, "the extent region's start"),
        5 => (rng.below(initial), "anywhere"),
        _ => (
            rng.between(initial + 1, layout.max_size() as u64),
            "longer than the layout",
        ),
    };
    Mutation::Truncate { len, why }
}

/// What the mutants did.
#[derive(Debug, Default)]
struct Tally {
    /// Mutants attached (successfully or not).
    mutants: u64,
    /// Attaches that failed with an error value.
    typed_errors: u64,
    /// Attaches that gave a peer, which was then exercised.
    working: u64,
    /// Error values returned by the calls on working hubs (`Empty` not counted).
    op_errors: u64,
    /// Attach errors by kind.
    kinds: BTreeMap<String, u64>,
    /// Panics: the mutant and what was recorded.
    panics: Vec<String>,
}

/// The kind of an error from its `Debug` text: the variant name, and the inner variant for a
/// variant that wraps an enum (`Layout::OffsetMismatch`).
fn kind_of(debug: &str) -> String {
    let name = |s: &str| {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        s[..end].to_owned()
    };
    let outer = name(debug);
    match debug[outer.len()..].strip_prefix('(') {
        Some(inner) if inner.starts_with(|c: char| c.is_ascii_uppercase()) => {
            format!("{outer}::{}", name(inner))
        }
        _ => outer,
    }
}

/// The text of a panic payload.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a payload that is not text)".into()
    }
}

/// A panic hook, as `std::panic::take_hook` returns it.
type PanicHook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// Records every panic in [`PANICS`] instead of printing it; the previous hook is restored when
/// this is dropped.
struct QuietPanics {
    /// The hook that was in place.
    previous: Option<PanicHook>,
}

impl QuietPanics {
    /// Install the recording hook.
    fn install() -> QuietPanics {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            let text = format!(
                "thread '{}' panicked at {}: {}",
                thread.name().unwrap_or("unnamed"),
                info.location()
                    .map_or_else(|| "an unknown place".into(), ToString::to_string),
                payload_text(info.payload())
            );
            PANICS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(text);
        }));
        QuietPanics {
            previous: Some(previous),
        }
    }

    /// The panics recorded since the last call.
    fn take() -> Vec<String> {
        std::mem::take(
            &mut *PANICS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = std::panic::take_hook();
            std::panic::set_hook(previous);
        }
    }
}

/// Which mutant is being tried, for the watch thread.
struct Progress {
    /// The mutant's number (`u64::MAX` for the unmutated copy).
    mutant: AtomicU64,
    /// Its mutations.
    what: Mutex<String>,
    /// Set when the run is over.
    done: AtomicBool,
}

/// Watch `progress`: when one mutant takes longer than [`MUTANT_LIMIT`], report it as hung
/// and exit with [`EXIT_HUNG`] (a hang cannot be interrupted from inside).
fn watch(progress: Arc<Progress>, seed: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (u64::MAX - 1, Instant::now());
        while !progress.done.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(200));
            let now = progress.mutant.load(Ordering::Acquire);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > MUTANT_LIMIT {
                let what = progress
                    .what
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                println!(
                    "scenario mutants: FAILED  hung: mutant {now} of seed {seed} ({what}) still \
                     running after {MUTANT_LIMIT:?}"
                );
                std::process::exit(EXIT_HUNG);
            }
        }
    })
}

/// What one attach gave.
enum Outcome {
    /// An error value, of this kind.
    Typed(String),
    /// A working hub; this many calls returned errors.
    Working(u64),
    /// A panic (its message).
    Panic(String),
}

/// Write `mutant` to `path`, attach to it as peer 0 at `epoch`, exercise a peer it gives, and
/// remove the file.
fn try_mutant(image: &Image, mutant: &Mutant, path: &Path, epoch: u64) -> Result<Outcome, String> {
    mutant.write_file(image, path)?;
    let spec = TicketSpec {
        peer: 0,
        epoch,
        source: SpecSource::Path(path.to_path_buf()),
        ready: None,
    };
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| Peer::attach_spec(&spec))) {
        Err(payload) => Outcome::Panic(payload_text(payload.as_ref())),
        Ok(Err(error)) => Outcome::Typed(kind_of(&format!("{error:?}"))),
        Ok(Ok(peer)) => match std::panic::catch_unwind(AssertUnwindSafe(move || {
            let errors = exercise(&peer);
            drop(peer);
            errors
        })) {
            Ok(errors) => Outcome::Working(errors),
            Err(payload) => Outcome::Panic(payload_text(payload.as_ref())),
        },
    };
    std::fs::remove_file(path).map_err(|e| format!("remove {}: {e}", path.display()))?;
    Ok(outcome)
}

/// Use `peer` as a working hub with calls that never wait; the number of error values.
fn exercise(peer: &Peer) -> u64 {
    let mut errors = 0;
    for size in LOAN_SIZES {
        match peer.try_loan(size) {
            Ok(mut loan) => {
                let bytes = loan.as_mut_slice();
                let len = bytes.len();
                bytes[..len.min(4096)].fill(0xA5);
                bytes[len.saturating_sub(4096)..].fill(0x5A);
            }
            Err(_) => errors += 1,
        }
    }
    let meta = FrameMeta {
        msg_id: 7,
        ..FrameMeta::default()
    };
    for payload in [&[1u8, 2, 3][..], &[9u8; 100][..]] {
        if peer.try_send(meta, payload).is_err() {
            errors += 1;
        }
    }
    match peer.try_loan(5000) {
        Ok(mut loan) => {
            loan.as_mut_slice().fill(3);
            if peer.try_send_loan(meta, loan).is_err() {
                errors += 1;
            }
        }
        Err(_) => errors += 1,
    }
    for _ in 0..2 {
        match peer.try_recv() {
            Ok(frame) => {
                let sum = frame.payload().iter().fold(0u64, |s, &b| s + u64::from(b));
                std::hint::black_box(sum);
            }
            Err(TryRecvError::Empty) => {}
            Err(_) => errors += 1,
        }
    }
    std::hint::black_box(peer.stats());
    errors
}

/// Run the scenario.
pub fn run(settings: &Settings) -> Result<Figures, String> {
    let count = settings.scale(10_000, 1_000);
    let trace = std::env::var_os(TRACE_ENV).is_some();
    let dir = ScratchDir::new("mutants")?;
    let hub_path = dir.0.join("hub");
    let host = Host::create(
        &HubConfig::new()
            .max_peers(MAX_PEERS)
            .ring_capacity(RING_CAPACITY)
            .path(hub_path.clone()),
    )
    .map_err(|e| format!("create the hub: {e}"))?;
    let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
    if ticket.peer_id() != 0 {
        return Err(format!(
            "the first reservation is peer {}",
            ticket.peer_id()
        ));
    }
    let epoch = ticket.epoch();
    let image = Image::of(&hub_path)?;
    let layout = SegmentLayout::new(MAX_PEERS, RING_CAPACITY)
        .map_err(|e| format!("the layout of the copied hub: {e}"))?;
    if image.len != layout.initial_size() as u64 {
        return Err(format!(
            "the hub file is {} bytes, the layout says {}",
            image.len,
            layout.initial_size()
        ));
    }
    let targets = Targets::new(layout);

    let quiet = QuietPanics::install();
    let progress = Arc::new(Progress {
        mutant: AtomicU64::new(u64::MAX),
        what: Mutex::new("unmutated".into()),
        done: AtomicBool::new(false),
    });
    let watcher = watch(progress.clone(), settings.seed);
    let result = (|| {
        // The unmutated copy: it attaches, and every call works.
        let path = dir.0.join("unmutated");
        match try_mutant(&image, &Mutant::of(&image), &path, epoch)? {
            Outcome::Working(0) => {}
            Outcome::Working(errors) => {
                return Err(format!(
                    "the unmutated copy attached, but {errors} calls on it failed"
                ));
            }
            Outcome::Typed(kind) => {
                return Err(format!("the unmutated copy does not attach: {kind}"));
            }
            Outcome::Panic(text) => return Err(format!("the unmutated copy panicked: {text}")),
        }
        let stray = QuietPanics::take();
        if !stray.is_empty() {
            return Err(format!(
                "panics around the unmutated copy: {}",
                stray.join(" | ")
            ));
        }

        let mut tally = Tally::default();
        for n in 0..count {
            let mutant = mutate(&targets, &image, settings.seed, n);
            let what = mutant.describe();
            if trace {
                eprintln!("mutant {n}: {what}");
            }
            *progress
                .what
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = what.clone();
            progress.mutant.store(n, Ordering::Release);
            let path = dir.0.join(format!("mutant-{n}"));
            let outcome = try_mutant(&image, &mutant, &path, epoch)?;
            tally.mutants += 1;
            let mut panics = QuietPanics::take();
            match outcome {
                Outcome::Typed(kind) => {
                    tally.typed_errors += 1;
                    *tally.kinds.entry(kind).or_default() += 1;
                }
                Outcome::Working(errors) => {
                    tally.working += 1;
                    tally.op_errors += errors;
                }
                Outcome::Panic(text) => {
                    if panics.is_empty() {
                        panics.push(text);
                    }
                }
            }
            if !panics.is_empty() {
                tally
                    .panics
                    .push(format!("mutant {n} ({what}): {}", panics.join(" | ")));
            }
        }
        Ok(tally)
    })();
    progress.done.store(true, Ordering::Release);
    watcher.thread().unpark();
    let _ = watcher.join();
    drop(quiet);
    drop(host);
    let tally = result?;

    let breakdown: Vec<String> = tally
        .kinds
        .iter()
        .map(|(kind, n)| format!("{kind}={n}"))
        .collect();
    eprintln!("mutants: attach errors by kind: {}", breakdown.join(" "));
    let mut figures = Figures::default();
    figures
        .set("mutants", tally.mutants)
        .set("typed_errors", tally.typed_errors)
        .set("working", tally.working)
        .set("op_errors", tally.op_errors)
        .set("panics", tally.panics.len() as u64)
        .set("kinds", tally.kinds.len() as u64);
    if !tally.panics.is_empty() {
        let shown: Vec<&str> = tally.panics.iter().take(3).map(String::as_str).collect();
        return Err(format!(
            "{figures}: {} mutants panicked (seed {}); first: {}",
            tally.panics.len(),
            settings.seed,
            shown.join(" || ")
        ));
    }
    if tally.mutants < count || tally.typed_errors + tally.working != tally.mutants {
        return Err(format!("{figures}: {count} mutants were to be tried"));
    }
    Ok(figures)
}
