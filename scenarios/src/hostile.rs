//! **hostile**: a peer writes garbage into its rings, its descriptors, its peer entry, slot metas
//! and free-list heads; the host never crashes, detects it, evicts it, and the honest peers'
//! checksummed streams go on.
//!
//! Three honest peers echo the host's checksummed requests (the [`Driver`] of `echo`) for the
//! whole run, in the three smaller size classes. One peer entry is for the hostile: eighteen
//! lives, one attack each, each attack twice:
//!
//! | attack        | what the hostile process writes | the host must |
//! |---------------|---------------------------------|---------------|
//! | `send-head`   | its send ring's head: past the capacity, or backwards | evict it: `Ring` |
//! | `send-desc`   | descriptors of random bytes naming no slot, or a slot at a wrong generation | evict it: `BadDescriptor` |
//! | `recv-tail`   | its receive ring's tail, far past the head | evict it on its next send: `Ring` |
//! | `entry-flags` | its peer entry's flags: a word that is no state | evict it: `EntryRewritten` |
//! | `entry-pid`   | its peer entry's pid: another process's | evict it: `EntryRewritten` |
//! | `entry-heartbeat` | its peer entry's `last_seen`: long ago | evict it: `HeartbeatTimeout` |
//! | `entry-epoch` | its peer entry's epoch: another life's | evict it: `EntryRewritten` (the host keeps the epoch privately, R4) |
//! | `slot-metas`  | the state word of the first free slot of classes 3 and 4 (garbage), a free slot's link (out of the class); then its send head | evict it, find the damage, rebuild both lists, quarantine the garbage slots |
//! | `free-heads`  | the free-list heads of classes 3 and 4: an index outside the class, an empty list, or the held marker; then its send head | evict it, find the damage, rebuild both lists |
//!
//! Garbage in the allocator's headers is state every participant shares, and shared memory
//! does not say who wrote it: the host cannot blame a peer for it, only find it and repair it.
//! So the allocator attacks are followed by a ring attack, for which the hostile is evicted
//! (and killed, before its entry is recovered), and the host's supervisor, which audits the
//! allocator every 250 ms and after each eviction, must report the damage
//! ([`PeerEvent::AllocatorDamaged`]) and rebuild the lists; the host then allocates from both
//! classes. They are classes the honest streams do not use: a slot in flight from an honest
//! peer whose meta the hostile scribbled would make the host blame the honest peer for a bad
//! descriptor, which no protocol can tell from the real thing.
//!
//! The host spawns each hostile life itself (`Host::spawn_peer`), so it knows the process
//! whatever the hostile writes into its entry, and the hostile attacks as soon as it has
//! attached, before or after the supervisor's first look at it.
//!
//! Between lives the honest echoes must go on (at least 50 more after each eviction), no honest
//! peer may be evicted or fail a checksum.
//!
//! Then the honest peers leave, and the last lives **scribble**: 200,000 random words each over
//! the whole metadata (the header, every other peer entry, every ring header, the class headers
//! and the slot metas of every class's first extent), including every word attach validates,
//! then over their own entry, for which they are evicted and killed. In one segment every peer
//! can write every word, so honest peers cannot be shielded from such a peer's bytes
//! (PROTOCOL.md §5); the host can, and once the scribbler is gone the hub must heal by itself,
//! within seconds: the words the host wrote restored from its private copies, lists rebuilt, slots
//! no live participant can hold returned, every entry Empty, every slot free. Last, a fresh peer
//! attaches and echoes 1000 checked frames up to 1 MiB, and at the end every slot is free,
//! none quarantined (`leaks=0 quarantined=0`).

use std::mem::offset_of;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub_alloc::shared::Shared;
use hub_layout::{
    DescRingHeader, FREE_LIST_END, HeaderSnapshot, MsgDescHot, PeerEntry, SegmentLayout,
    SizeClassHeader, encode_slot_ref, pack_free_head, unpack_free_head,
};
use hub_transport::mapping::{Access, SegmentFile, SegmentMapping};
use hub_transport::{EvictReason, Host, HostError, HubConfig, PeerEvent};

use crate::Settings;
use crate::common::{self, ChildProcess, Figures, Rng, ScratchDir};
use crate::echo::{Driver, leak_failure};
use crate::roles::{self, Stop};

/// Honest peers.
const HONEST: u16 = 3;
/// The largest honest payload: classes 0 to 2.
const HONEST_MAX: usize = 200_000;
/// The classes the allocator attacks scribble on.
const TARGET_CLASSES: [usize; 2] = [3, 4];
/// Honest echoes that must come after each eviction.
const PROGRESS: u64 = 50;
/// How long each step of a life may take.
const STEP: Duration = Duration::from_secs(10);
/// Random stores of each scribbling life over the metadata (its own entry comes on top).
const SCRIBBLES: u64 = 200_000;
/// Echoes the fresh peer must return after the scribblers.
const FRESH_ECHOES: u64 = 1000;

/// The attacks, and the eviction each must bring.
const ATTACKS: [(&str, Expect); 9] = [
    ("send-head", Expect::Ring),
    ("send-desc", Expect::BadDescriptor),
    ("recv-tail", Expect::Ring),
    ("entry-flags", Expect::EntryRewritten),
    ("entry-pid", Expect::EntryRewritten),
    ("entry-heartbeat", Expect::Silent),
    ("entry-epoch", Expect::EntryRewritten),
    ("slot-metas", Expect::Ring),
    ("free-heads", Expect::Ring),
];

/// Which eviction reason an attack must bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ring,
    BadDescriptor,
    EntryRewritten,
    Silent,
}

impl Expect {
    fn matches(self, reason: &EvictReason) -> bool {
        matches!(
            (self, reason),
            (Expect::Ring, EvictReason::Ring(_))
                | (Expect::BadDescriptor, EvictReason::BadDescriptor(_))
                | (Expect::EntryRewritten, EvictReason::EntryRewritten { .. })
                | (Expect::Silent, EvictReason::HeartbeatTimeout { .. })
        )
    }
}

/// What the host heard while the hostile lived.
#[derive(Debug, Default)]
struct Heard {
    evicted: Option<EvictReason>,
    recovered: bool,
    /// Classes reported damaged.
    damaged: Vec<u16>,
    damage_reports: u64,
    rebuilds: u64,
}

/// Run the scenario.
pub fn run(settings: &Settings) -> Result<Figures, String> {
    let lives = settings.scale(2 * ATTACKS.len() as u64, ATTACKS.len() as u64);
    let dir = ScratchDir::new("hostile")?;
    let path = dir.0.join("hub");
    let host = Host::create(&HubConfig::new().max_peers(HONEST + 1).path(path.clone()))
        .map_err(|e| format!("create: {e}"))?;
    let mut rng = Rng::new(settings.seed);
    let mut driver = Driver::new(&host, rng.next_u64());
    driver.max_len = HONEST_MAX;
    let mut honest = Vec::new();
    for _ in 0..HONEST {
        let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
        honest.push(ChildProcess::spawn(
            "echo",
            &[rng.next_u64().to_string(), "0".into()],
            Some(&ticket),
            false,
        )?);
        driver.revive(ticket.peer_id());
    }
    let honest_ids: Vec<u16> = honest.iter().filter_map(|c| c.peer).collect();

    // Each attack twice, in an order the seed chooses.
    let mut order: Vec<usize> = (0..lives as usize).map(|i| i % ATTACKS.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }

    let mut figures = Figures::default();
    for (life, &attack) in order.iter().enumerate() {
        let (name, expect) = ATTACKS[attack];
        // The host spawns it (`Host::spawn_peer`), so it knows the process whatever the hostile
        // writes into its entry, even before the supervisor's first look.
        let args = [
            name.into(),
            rng.next_u64().to_string(),
            path.display().to_string(),
        ];
        let mut hostile = spawn_when_free(&host, &args, || {
            driver.pump()?;
            listen(&host, &mut Heard::default(), u16::MAX, &honest_ids)
        })?;
        let id = hostile.peer.ok_or("the hostile has no peer id")?;
        driver.suspect = Some(id);
        driver.revive(id);
        let mut heard = Heard::default();
        let deadline = Instant::now() + STEP;
        while heard.evicted.is_none() || !heard.recovered {
            if Instant::now() > deadline {
                return Err(format!(
                    "life {life} ({name}): the hostile peer {id} was not evicted and recovered within {STEP:?} (heard {heard:?})"
                ));
            }
            driver.pump()?;
            listen(&host, &mut heard, id, &honest_ids)?;
            common::none_exited(&mut honest, "while a hostile peer lived")?;
        }
        let reason = heard.evicted.clone().ok_or("no reason")?;
        if !expect.matches(&reason) {
            return Err(format!(
                "life {life} ({name}): evicted for {reason}, expected {expect:?}"
            ));
        }
        match hostile.wait_timeout(Duration::from_secs(2))? {
            Some(status) if status.code().is_none() => {}
            Some(status) => {
                return Err(format!(
                    "life {life} ({name}): the hostile process ended by itself ({}), not killed",
                    common::describe(status)
                ));
            }
            None => {
                return Err(format!(
                    "life {life} ({name}): the hostile process still runs after its eviction"
                ));
            }
        }
        driver.forget(id);

        if name == "slot-metas" || name == "free-heads" {
            // The supervisor must find the damage in both classes, and repair it.
            let deadline = Instant::now() + STEP;
            while TARGET_CLASSES
                .iter()
                .any(|&c| !heard.damaged.contains(&(c as u16)))
            {
                if Instant::now() > deadline {
                    return Err(format!(
                        "life {life} ({name}): damage to classes {TARGET_CLASSES:?} not reported within {STEP:?} (heard {heard:?})"
                    ));
                }
                driver.pump()?;
                listen(&host, &mut heard, id, &honest_ids)?;
            }
            check_repaired(&host, name, life)?;
        }

        // The honest streams go on.
        let target = driver.echoes + PROGRESS;
        let deadline = Instant::now() + STEP;
        while driver.echoes < target {
            if Instant::now() > deadline {
                return Err(format!(
                    "life {life} ({name}): the honest echoes stalled after the eviction"
                ));
            }
            driver.pump()?;
            listen(&host, &mut heard, id, &honest_ids)?;
            common::none_exited(&mut honest, "while a hostile peer lived")?;
        }
        figures.add("evictions", 1);
        figures.add("damage_found", heard.damage_reports);
        figures.add("repairs", heard.rebuilds);
    }

    driver.suspect = None;
    driver.drain(Duration::from_secs(30))?;
    driver.stop(&mut honest, Duration::from_secs(10))?;
    let settled = driver.settle(Duration::from_secs(5))?;
    if settled.leaked != 0 {
        return Err(leak_failure(&settled, "after the honest peers left"));
    }

    // The scribblers, with nobody else attached, and the hub's healing after each.
    let scribblers = settings.scale(2, 1);
    let mut healing = Healing::default();
    for life in 0..scribblers {
        let args = [
            "scribble".into(),
            rng.next_u64().to_string(),
            path.display().to_string(),
        ];
        let mut scribbler = spawn_when_free(&host, &args, || {
            healing.listen(&host)?;
            std::thread::sleep(Duration::from_millis(5));
            Ok(())
        })?;
        let id = scribbler.peer.ok_or("the scribbler has no peer id")?;
        let deadline = Instant::now() + STEP;
        loop {
            match scribbler.try_wait()? {
                Some(status) if status.code().is_none() => break,
                Some(status) => {
                    return Err(format!(
                        "scribbler {life} (peer {id}) ended by itself ({}), not killed",
                        common::describe(status)
                    ));
                }
                None if Instant::now() > deadline => {
                    return Err(format!(
                        "scribbler {life} (peer {id}) still runs {STEP:?} after it started: not evicted ({healing:?})"
                    ));
                }
                None => healing.listen(&host)?,
            }
        }
        wait_healed(&host, &mut healing, &format!("after scribbler {life}"))?;
    }

    // A fresh peer: 1000 checked echoes, up to 1 MiB.
    let ticket = host.add_peer().map_err(|e| format!("add_peer: {e}"))?;
    let mut fresh = vec![ChildProcess::spawn(
        "echo",
        &[rng.next_u64().to_string(), "0".into()],
        Some(&ticket),
        false,
    )?];
    let fresh_id = ticket.peer_id();
    drop(ticket);
    healing.honest = Some(fresh_id);
    driver.max_len = 1 << 20;
    driver.sending = true;
    driver.revive(fresh_id);
    let target = driver.echoes + FRESH_ECHOES;
    let deadline = Instant::now() + 3 * STEP;
    while driver.echoes < target {
        if Instant::now() > deadline {
            return Err(format!(
                "the fresh peer returned {} of {FRESH_ECHOES} echoes within {:?}",
                FRESH_ECHOES - (target - driver.echoes),
                3 * STEP
            ));
        }
        driver.pump()?;
        healing.listen(&host)?;
        common::none_exited(&mut fresh, "while it echoed")?;
    }
    driver.drain(Duration::from_secs(30))?;
    driver.stop(&mut fresh, Duration::from_secs(10))?;
    let settled = driver.settle(Duration::from_secs(5))?;
    if settled.leaked != 0 {
        return Err(leak_failure(&settled, "at the end"));
    }
    wait_healed(&host, &mut healing, "at the end")?;
    // Every slot back, none quarantined (`wait_healed` waited for it; counted here again).
    let quarantined: u64 = host.stats().iter().map(|c| u64::from(c.corrupt)).sum();
    if quarantined != 0 {
        return Err(format!("{quarantined} slots quarantined at the end"));
    }
    if driver.alloc_errors != 0 {
        return Err(format!(
            "{} honest loans failed with allocator errors",
            driver.alloc_errors
        ));
    }
    let mut out = Figures::default();
    out.set("lives", lives)
        .set("evictions", figures.get("evictions"))
        .set("faults_reported", driver.faults)
        .set("damage_found", figures.get("damage_found"))
        .set("repairs", figures.get("repairs"))
        .set("scribblers", scribblers)
        .set("words_restored", healing.restored)
        .set("scribble_damage", healing.damage)
        .set("scribble_evictions", healing.evictions)
        .set("failed_recoveries", healing.failed_recoveries)
        .set("quarantined", quarantined)
        .set("frames", driver.requests + driver.echoes)
        .set("bytes", driver.bytes)
        .set("leaks", settled.leaked);
    Ok(out)
}

/// What the host said while it healed from the scribblers: their writes hit every entry, so
/// evictions, deaths and failed recoveries of entries nobody uses are expected, and counted.
#[derive(Debug, Default)]
struct Healing {
    /// `WordsRestored` events.
    restored: u64,
    /// `AllocatorDamaged` events.
    damage: u64,
    /// `Evicted` and `Died` events (the scribbler's own, and those of entries it made look
    /// alive).
    evictions: u64,
    /// `RecoveryFailed` events (garbage in a journal fails one recovery; it is tried again).
    failed_recoveries: u64,
    /// Other events.
    other: u64,
    /// A peer that must stay well (the fresh one): its eviction, death or failed recovery fails
    /// the scenario.
    honest: Option<u16>,
}

impl Healing {
    fn listen(&mut self, host: &Host) -> Result<(), String> {
        while let Some(event) = host.try_event() {
            match event {
                PeerEvent::Evicted { peer, reason } if Some(peer) == self.honest => {
                    return Err(format!("the fresh peer {peer} was evicted: {reason}"));
                }
                PeerEvent::Died { peer, .. } if Some(peer) == self.honest => {
                    return Err(format!("the fresh peer {peer} died"));
                }
                PeerEvent::RecoveryFailed { peer, error } if Some(peer) == self.honest => {
                    return Err(format!("recovery of the fresh peer {peer} failed: {error}"));
                }
                PeerEvent::WordsRestored { .. } => self.restored += 1,
                PeerEvent::AllocatorDamaged(_) => self.damage += 1,
                PeerEvent::Evicted { .. } | PeerEvent::Died { .. } => self.evictions += 1,
                PeerEvent::RecoveryFailed { .. } => self.failed_recoveries += 1,
                _ => self.other += 1,
            }
        }
        Ok(())
    }
}

/// Wait until the hub has healed by itself: every entry Empty, and in every class every slot
/// free, none garbage, and the header's total right.
fn wait_healed(host: &Host, healing: &mut Healing, when: &str) -> Result<(), String> {
    let deadline = Instant::now() + 3 * STEP;
    loop {
        healing.listen(host)?;
        let stuck = host
            .peers()
            .into_iter()
            .find(|p| p.state != hub_transport::PeerState::Empty)
            .map(|p| format!("peer entry {} is {} (epoch {})", p.id, p.state, p.epoch))
            .or_else(|| {
                host.stats().iter().enumerate().find_map(|(class, s)| {
                    (s.free != s.total || s.corrupt != 0 || s.total != s.header_total).then(
                        || {
                            format!(
                                "class {class}: {} of {} free, {} allocated, {} in flight, {} garbage, header total {}",
                                s.free, s.total, s.allocated, s.in_flight, s.corrupt, s.header_total
                            )
                        },
                    )
                })
            });
        match stuck {
            None => return Ok(()),
            Some(what) if Instant::now() > deadline => {
                return Err(format!(
                    "{when}: the hub has not healed within {:?}: {what}",
                    3 * STEP
                ));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A hostile process, spawned by the host into an entry as soon as one is free (the last
/// life's recovered); `between` runs while it waits (serving the honest peers, or reading the
/// host's events).
fn spawn_when_free(
    host: &Host,
    args: &[String],
    mut between: impl FnMut() -> Result<(), String>,
) -> Result<ChildProcess, String> {
    let deadline = Instant::now() + STEP;
    loop {
        match ChildProcess::spawn_peer(host, "hostile", args, false) {
            Ok(child) => return Ok(child),
            Err(HostError::NoFreePeer(_)) if Instant::now() < deadline => between()?,
            Err(error) => return Err(format!("spawn the hostile: {error}")),
        }
    }
}

/// Read the host's events: the hostile's eviction and recovery, damage reports; an honest
/// peer's trouble fails the scenario.
fn listen(host: &Host, heard: &mut Heard, hostile: u16, honest: &[u16]) -> Result<(), String> {
    while let Some(event) = host.try_event() {
        match event {
            PeerEvent::Evicted { peer, reason } if peer == hostile => {
                heard.evicted.get_or_insert(reason);
            }
            PeerEvent::Recovered { peer, .. } if peer == hostile => heard.recovered = true,
            PeerEvent::AllocatorDamaged(damage) => {
                heard.damage_reports += 1;
                heard.rebuilds += u64::from(damage.rebuilt.is_some());
                if !heard.damaged.contains(&damage.class) {
                    heard.damaged.push(damage.class);
                }
            }
            PeerEvent::Evicted { peer, reason } if honest.contains(&peer) => {
                return Err(format!("honest peer {peer} was evicted: {reason}"));
            }
            PeerEvent::Died { peer, .. } if honest.contains(&peer) => {
                return Err(format!("honest peer {peer} died"));
            }
            PeerEvent::RecoveryFailed { peer, error } => {
                return Err(format!("recovery of peer {peer} failed: {error}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// After the repair: a fresh look finds no broken list, and both classes serve a loan.
fn check_repaired(host: &Host, name: &str, life: usize) -> Result<(), String> {
    if let Some(damage) = host
        .check_allocator()
        .into_iter()
        .find(|d| d.rebuilt.is_some())
    {
        return Err(format!(
            "life {life} ({name}): still broken after the repair: {damage:?}"
        ));
    }
    for len in [300_000, 5 << 20] {
        let loan = host
            .try_loan(len)
            .map_err(|e| format!("life {life} ({name}): a loan of {len} after the repair: {e}"))?;
        drop(loan);
    }
    Ok(())
}

// ----- the hostile process -----

/// The hostile peer's view of the segment: a mapping of its own, and the layout.
struct Segment {
    mapping: Arc<SegmentMapping>,
    layout: SegmentLayout,
}

impl Segment {
    fn map(path: &Path) -> Result<Self, Stop> {
        let failed = |what: &str, e: &dyn std::fmt::Display| Stop::Failed(format!("{what}: {e}"));
        let file =
            SegmentFile::open_path(path, Access::ReadWrite).map_err(|e| failed("open", &e))?;
        let len = file.len().map_err(|e| failed("len", &e))?;
        let len = usize::try_from(len).map_err(|e| failed("len", &e))?;
        let mapping = Arc::new(SegmentMapping::new(file, len).map_err(|e| failed("map", &e))?);
        let header = HeaderSnapshot::read(&*mapping).map_err(|e| failed("header", &e))?;
        let layout = SegmentLayout::new(header.max_peers, header.ring_capacity)
            .map_err(|e| failed("layout", &e))?;
        Ok(Self { mapping, layout })
    }

    fn shared(&self) -> Shared<'_, SegmentMapping> {
        Shared::new(&*self.mapping)
    }

    fn u64_at(&self, offset: usize) -> Result<&hub_layout::sync::AtomicU64, Stop> {
        self.shared()
            .u64_at(offset)
            .ok_or_else(|| Stop::Failed(format!("offset {offset:#x} is outside the mapping")))
    }

    fn u32_at(&self, offset: usize) -> Result<&hub_layout::sync::AtomicU32, Stop> {
        self.shared()
            .u32_at(offset)
            .ok_or_else(|| Stop::Failed(format!("offset {offset:#x} is outside the mapping")))
    }

    /// The offset of the meta of slot `index` of `class`, if its extent is published.
    fn meta_offset(&self, class: usize, index: u32) -> Option<usize> {
        let slots = self.layout.slots_per_extent(class);
        let extent = (index / slots) as usize;
        if extent >= hub_layout::MAX_EXTENTS_PER_CLASS {
            return None;
        }
        let header = self.layout.class_header_offset(class);
        let extent_offset = self
            .shared()
            .u64_at(
                header + offset_of!(SizeClassHeader, extent_offsets) + extent * size_of::<u64>(),
            )?
            .load(std::sync::atomic::Ordering::Acquire);
        if extent_offset == 0 {
            return None;
        }
        let geometry = self.layout.extent_geometry(class);
        Some(
            usize::try_from(extent_offset).ok()?
                + geometry.meta_offset as usize
                + (index % slots) as usize * 16,
        )
    }

    fn free_head(&self, class: usize) -> Result<&hub_layout::sync::AtomicU64, Stop> {
        self.u64_at(self.layout.class_header_offset(class) + offset_of!(SizeClassHeader, free_head))
    }
}

/// The hostile peer: `hostile ATTACK SEED PATH`. Attaches, makes its attack once, then waits to
/// be killed.
pub fn peer(args: &[String]) -> Result<(), Stop> {
    use std::sync::atomic::Ordering::{Acquire, Release};
    let [attack, seed, path] = args else {
        return Err(Stop::Failed(format!(
            "hostile ATTACK SEED PATH, not {args:?}"
        )));
    };
    let mut rng = Rng::new(
        seed.parse()
            .map_err(|e| Stop::Failed(format!("seed: {e}")))?,
    );
    let peer = roles::attach()?;
    let segment = Segment::map(Path::new(path))?;
    let id = peer.id();
    let layout = &segment.layout;
    let entry = layout.peer_entry_offset(id);
    let send_ring = layout.send_ring_offset(id);
    let recv_ring = layout.recv_ring_offset(id);
    let capacity = u64::from(layout.ring_capacity);
    let send_head = segment.u64_at(send_ring + offset_of!(DescRingHeader, visible_head))?;
    let break_send_head = |rng: &mut Rng| {
        let head = send_head.load(Acquire);
        let wild = if rng.percent(50) {
            head.wrapping_add(capacity + 1 + rng.below(1000))
        } else {
            head.wrapping_sub(1 + rng.below(5))
        };
        send_head.store(wild, Release);
        ring_bell(&segment, entry);
    };
    match attack.as_str() {
        "send-head" => break_send_head(&mut rng),
        "send-desc" => {
            // Random bytes, with a slot reference that names no slot or a slot at a generation
            // it does not have.
            let head = send_head.load(Acquire);
            let at = send_ring + size_of::<DescRingHeader>() + (head % capacity) as usize * 64;
            for word in 0..8 {
                segment
                    .u64_at(at + 8 * word)?
                    .store(rng.next_u64(), Release);
            }
            let slot_ref = if rng.percent(50) {
                encode_slot_ref(rng.below(5) as u16, 1 << 20 | rng.below(1 << 20) as u32)
            } else {
                encode_slot_ref(rng.below(5) as u16, rng.below(4) as u32)
            };
            segment
                .u32_at(at + offset_of!(MsgDescHot, payload_slot))?
                .store(slot_ref, Release);
            segment
                .u32_at(at + offset_of!(MsgDescHot, payload_generation))?
                .store(1_000_000 + rng.below(1 << 30) as u32, Release);
            send_head.store(head + 1, Release);
            ring_bell(&segment, entry);
        }
        "recv-tail" => {
            // Take a few frames as a peer does, then break the tail: the host finds it on its
            // next send.
            for _ in 0..3 {
                let _ = peer.try_recv();
            }
            let tail = segment.u64_at(recv_ring + offset_of!(DescRingHeader, tail))?;
            let head = segment
                .u64_at(recv_ring + offset_of!(DescRingHeader, visible_head))?
                .load(Acquire);
            // Far past the head: a tail just ahead of it would be overtaken by the host's
            // next pushes and then look like frames consumed, which is no fault.
            tail.store(head + (1 << 20) + rng.below(capacity), Release);
        }
        "entry-flags" => {
            // Bits no state has (states are single bits 0 to 3).
            let garbage = (rng.next_u64() as u32) | 1 << (4 + rng.below(28));
            segment
                .u32_at(entry + offset_of!(PeerEntry, flags))?
                .store(garbage, Release);
        }
        "entry-heartbeat" => {
            // A heartbeat from long ago (one from the future counts as now, R3), written again
            // and again: its own heartbeat thread would otherwise overwrite a single write
            // before the host looks. Until it is killed.
            let seen = segment.u64_at(entry + offset_of!(PeerEntry, last_seen))?;
            loop {
                let now = hub_transport::monotonic_ns();
                seen.store(rng.below(now / 2), Release);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        "entry-epoch" => {
            // Another life's epoch: the peer's own heartbeat takes the entry for someone
            // else's and stops, and the peer falls silent.
            let epoch = segment.u64_at(entry + offset_of!(PeerEntry, epoch))?;
            epoch.store(
                epoch.load(Acquire).wrapping_add(1 + rng.below(1 << 40)),
                Release,
            );
        }
        "entry-pid" => {
            let pid = segment.u32_at(entry + hub_transport::pad::PEER_PID)?;
            pid.store(
                pid.load(Acquire).wrapping_add(1 + rng.below(1000) as u32),
                Release,
            );
        }
        "slot-metas" => {
            for class in TARGET_CLASSES {
                let (first, _) = unpack_free_head(segment.free_head(class)?.load(Acquire));
                // The first free slot gets a state word that is no state, a random slot a link
                // outside the class.
                if let Some(at) = segment.meta_offset(class, first) {
                    let generation = rng.next_u64() & 0xffff_ffff;
                    let state = 3 + rng.below(u64::from(u32::MAX) - 3);
                    segment.u64_at(at)?.store(generation | state << 32, Release);
                }
                let other = rng.below(u64::from(layout.slots_per_extent(class))) as u32;
                if let Some(at) = segment.meta_offset(class, other) {
                    segment
                        .u32_at(at + 8)?
                        .store(0x0F00_0000 | rng.below(1 << 20) as u32, Release);
                }
            }
            break_send_head(&mut rng);
        }
        "free-heads" => {
            for class in TARGET_CLASSES {
                let head = segment.free_head(class)?;
                let (_, tag) = unpack_free_head(head.load(Acquire));
                let index = match rng.below(3) {
                    0 => 0x0F00_0000 | rng.below(1 << 20) as u32,
                    1 => FREE_LIST_END,
                    _ => FREE_LIST_END - 1, // the held marker
                };
                head.store(pack_free_head(index, tag.wrapping_add(7)), Release);
            }
            break_send_head(&mut rng);
        }
        "scribble" => {
            // Random words over the whole metadata but its own entry, then its own entry, for
            // which it is evicted (and killed).
            let store = |start: usize, len: usize, count: u64, rng: &mut Rng| -> Result<(), Stop> {
                let words = (len / 4) as u64;
                for _ in 0..count {
                    let at = start + 4 * rng.below(words) as usize;
                    segment.u32_at(at)?.store(rng.next_u64() as u32, Release);
                }
                Ok(())
            };
            let peers = usize::from(layout.max_peers);
            let rings = 2 * peers;
            let entry_size = size_of::<PeerEntry>();
            let quarter = SCRIBBLES / 5;
            store(0, size_of::<hub_layout::HubHeader>(), quarter, &mut rng)?;
            for other in (0..layout.max_peers).filter(|&p| p != id) {
                let offset = layout.peer_entry_offset(other);
                store(
                    offset,
                    entry_size,
                    quarter / (peers as u64 - 1).max(1),
                    &mut rng,
                )?;
            }
            for ring in 0..rings {
                let offset = layout.ring_offset(ring);
                store(
                    offset,
                    size_of::<DescRingHeader>(),
                    quarter / rings as u64,
                    &mut rng,
                )?;
            }
            let classes = hub_layout::NUM_SIZE_CLASSES;
            store(
                layout.class_header_offset(0),
                classes * size_of::<SizeClassHeader>(),
                quarter,
                &mut rng,
            )?;
            for class in 0..classes {
                let metas = layout.initial_extent_offset(class)
                    + layout.extent_geometry(class).meta_offset as usize;
                let len = layout.slots_per_extent(class) as usize * 16;
                store(metas, len, quarter / classes as u64, &mut rng)?;
            }
            store(entry, entry_size, 1000, &mut rng)?;
        }
        other => return Err(Stop::Failed(format!("no attack {other:?}"))),
    }
    roles::say("ATTACKED");
    // The host kills an evicted peer (`HubConfig::kill_evicted`); until then, nothing more.
    loop {
        std::thread::park();
    }
}

/// Ring the bell the host waits on for this peer's frames.
fn ring_bell(segment: &Segment, entry: usize) {
    if let Ok(word) = segment.u32_at(entry + offset_of!(PeerEntry, send_data_futex)) {
        hub_transport::signal::Doorbell::new(word).ring();
    }
}
