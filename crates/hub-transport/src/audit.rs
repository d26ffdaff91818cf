//! The host's watch over the allocator's shared state (R3): damage a faulty participant wrote
//! into a class's free list or slot metas is found by [`Slab::audit`](hub_alloc::Slab::audit)
//! and repaired with a rebuild, without knowing who wrote it.
//!
//! The host's auditor thread runs [`Auditor::check`] every [`AUDIT_PERIOD`] and as soon as the
//! supervisor has evicted a peer; the application can run it too
//! ([`Host::check_allocator`](crate::Host::check_allocator)). It has a thread of its own so that
//! a rebuild that waits (a held marker is taken over only after a second) never delays the
//! supervisor's watch over the peers. What counts as damage, each on evidence a healthy but busy
//! class never shows:
//!
//! - a fault in the list on a settled look (a head or link outside the class, a cycle, a listed
//!   slot that is not Free): rebuilt at once;
//! - a free slot off the list that no journal names, the same slot at the same generation in
//!   two settled looks at least [`MIN_GAP`] apart: lost; rebuilt, which brings it back;
//! - the same held head (marker and tag) in two looks at least [`MIN_GAP`] apart (a hold lasts
//!   microseconds, and each hold changes the tag): the marker is garbage; rebuilt, which takes
//!   it over after a second;
//! - slot states that are no state: reported once per new one; a rebuild leaves them off the
//!   list for good (quarantined), since whoever wrote them may still use those slots.
//!
//! A class whose head changes during every look (a hot class with many slots) is judged only
//! when it quiets down; until then its pops meet the damage and return typed errors.
//!
//! Besides the lists, the auditor keeps the host's private truth in force (R4):
//!
//! - every tick it compares the words the host wrote once (everything attach validates, the
//!   host's state and pid, the class constants, the extent offsets it adopted, `current_size`)
//!   with its private copies and puts back what changed ([`PeerEvent::WordsRestored`]), so no
//!   scribbling keeps a new peer from attaching;
//! - at every look it lists the slots no live participant can hold
//!   ([`Slab::orphans`](hub_alloc::Slab::orphans): garbage states, owners that are gone, the
//!   host's own slots that its ledger does not hold) and remembers which peer lives were
//!   attached when it first saw each one. Quarantine is not forever: once none of those lives
//!   is left and a second look at least [`MIN_GAP`] later finds the slot unchanged, nobody can
//!   be using it, and it goes back on its free list.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hub_alloc::{ClassAudit, Orphan, OwnerId};

use crate::event::{AllocatorDamage, PeerEvent};
use crate::host_core::{Core, Life};
use crate::supervisor::TICK;
use crate::sync::Ordering;

/// How often the auditor looks, when no eviction asks it to look sooner.
pub(crate) const AUDIT_PERIOD: Duration = Duration::from_millis(250);

/// The least time between two looks that together show a lost slot or a stuck marker: far
/// longer than any window of a healthy participant (microseconds).
pub(crate) const MIN_GAP: Duration = Duration::from_millis(100);

/// What the last settled look at a class saw, and when.
#[derive(Debug, Default, Clone)]
struct LastLook {
    at: Option<Instant>,
    head: u64,
    held: bool,
    off_list: Vec<(u32, u32)>,
}

/// The audits' memory between looks.
#[derive(Debug, Default)]
pub(crate) struct Auditor {
    /// Per class: the last settled look, and the garbage states known.
    last: Mutex<Vec<(LastLook, u32)>>,
    /// Slots no live participant can hold, as first seen.
    suspects: Mutex<HashMap<Orphan, Suspect>>,
}

/// When a slot no live participant can hold was first seen so, and the peer lives `(id, epoch)`
/// attached then, any of which might have been holding it.
type Suspect = (Instant, Vec<(u16, u64)>);

/// The peer lives the hub has now, as the host's private truth says (R4: never the entries'
/// shared words, which any peer can write): `(id, epoch)` of every entry that is not empty.
fn lives(core: &Core) -> Vec<(u16, u64)> {
    (0..core.entries.len() as u16)
        .filter_map(|peer| {
            let truth = core.truth(peer);
            (!matches!(truth.life, Life::Empty)).then_some((peer, truth.epoch))
        })
        .collect()
}

impl Auditor {
    /// Look at every class, repair what is broken, and say what was found.
    pub fn check(&self, core: &Core) -> Vec<AllocatorDamage> {
        let slab = &core.endpoint.slab;
        let classes = slab.layout().class_count();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.resize(classes, (LastLook::default(), 0));
        let mut found = Vec::new();
        for (class, (last, known_bad)) in (0..classes as u16).zip(last.iter_mut()) {
            let Ok(audit) = slab.audit(class) else {
                continue;
            };
            let now = Instant::now();
            if audit.bad_states > *known_bad {
                found.push(AllocatorDamage {
                    class,
                    found: format!(
                        "{} more slot states are garbage (quarantined)",
                        audit.bad_states - *known_bad
                    ),
                    rebuilt: None,
                });
            }
            *known_bad = audit.bad_states;
            if !audit.settled {
                // A busy look judges nothing and is not remembered: the last settled one stays.
                continue;
            }
            if let Some(returned) = self.return_orphans(core, class, now) {
                found.push(returned);
            }
            match judge(&audit, last, now) {
                Some(what) => {
                    let rebuilt = slab.rebuild_free_list(class);
                    if rebuilt.as_ref().is_ok_and(|r| r.wake_waiters) {
                        core.wake_all_allocators();
                    }
                    found.push(AllocatorDamage {
                        class,
                        found: match &rebuilt {
                            Ok(_) => what,
                            Err(error) => format!("{what}; the rebuild failed: {error}"),
                        },
                        rebuilt: rebuilt.ok(),
                    });
                    *last = LastLook::default();
                }
                None => {
                    *last = LastLook {
                        at: Some(now),
                        head: audit.head,
                        held: audit.held,
                        off_list: audit.off_list,
                    };
                }
            }
        }
        found
    }
}

impl Auditor {
    /// Put back the words the host wrote once that another process changed (R4): the
    /// segment's and the allocator's. What was restored.
    pub fn restore(&self, core: &Core) -> Vec<&'static str> {
        let mut words = core.endpoint.segment.restore_fixed();
        words.extend(core.endpoint.slab.restore_constants());
        words
    }

    /// Return the slots of `class` that no live participant can hold, seen so twice far apart
    /// with none of the lives that were attached at the first look still there (R4:
    /// quarantine is not forever). What was done, if anything.
    fn return_orphans(&self, core: &Core, class: u16, now: Instant) -> Option<AllocatorDamage> {
        let slab = &core.endpoint.slab;
        let lives_now = lives(core);
        let live = |owner: OwnerId| {
            owner
                .peer_id()
                .is_some_and(|peer| lives_now.iter().any(|&(id, _)| id == peer))
        };
        let orphans = slab.orphans(class, live).ok()?;
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects.retain(|orphan, _| orphan.class != class || orphans.contains(orphan));
        let (mut returned, mut wake) = (0u32, false);
        for orphan in orphans {
            let (since, then) = suspects
                .entry(orphan)
                .or_insert_with(|| (now, lives_now.clone()));
            let gone = then.iter().all(|life| !lives_now.contains(life));
            if gone && now.saturating_duration_since(*since) >= MIN_GAP {
                if let Ok(Some(freed)) = slab.return_orphan(&orphan) {
                    returned += 1;
                    wake |= freed.wake_waiters;
                }
                suspects.remove(&orphan);
            }
        }
        if wake {
            core.wake_all_allocators();
        }
        (returned > 0).then(|| AllocatorDamage {
            class,
            found: format!(
                "{returned} slots no live participant could hold (garbage states, or owners \
                 gone) returned to the free list"
            ),
            rebuilt: None,
        })
    }
}

/// What a settled `audit` at `now`, after `last`, shows that needs a rebuild.
fn judge(audit: &ClassAudit, last: &LastLook, now: Instant) -> Option<String> {
    if let Some(fault) = &audit.list_fault {
        return Some(format!("free list broken: {fault}"));
    }
    let apart = last
        .at
        .is_some_and(|at| now.saturating_duration_since(at) >= MIN_GAP);
    if !apart {
        return None;
    }
    if audit.held && last.held && audit.head == last.head {
        return Some("free list held by the same marker in two looks".into());
    }
    let lost = audit
        .off_list
        .iter()
        .filter(|slot| last.off_list.contains(slot))
        .count();
    (lost > 0).then(|| format!("{lost} free slots lost off the free list"))
}

/// The auditor thread's loop, until the host is dropped: a look every [`AUDIT_PERIOD`], or
/// within a tick of the supervisor's asking (`audit_now`, after an eviction).
pub(crate) fn run(core: &Core, auditor: &Auditor) {
    let mut last = Instant::now();
    while !core.stopping.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        // R4: within a tick of any scribble, the words attach validates are the host's again.
        let words = auditor.restore(core);
        if !words.is_empty() {
            core.emit(PeerEvent::WordsRestored { words });
        }
        let asked = core.audit_now.swap(false, Ordering::AcqRel);
        if asked || last.elapsed() >= AUDIT_PERIOD {
            for damage in auditor.check(core) {
                core.emit(PeerEvent::AllocatorDamaged(damage));
            }
            last = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_alloc::Corruption;

    fn settled() -> ClassAudit {
        ClassAudit {
            settled: true,
            ..ClassAudit::default()
        }
    }

    #[test]
    fn one_look_or_two_far_apart() {
        let now = Instant::now();
        let long_ago = now - 2 * MIN_GAP;
        let just_now = now - MIN_GAP / 10;
        let none = LastLook::default();
        let broken = ClassAudit {
            list_fault: Some(Corruption::FreeHead { index: 9 }),
            ..settled()
        };
        assert!(
            judge(&broken, &none, now).is_some(),
            "a list fault: at once"
        );

        let off = ClassAudit {
            off_list: vec![(3, 1)],
            ..settled()
        };
        assert_eq!(judge(&off, &none, now), None, "off the list once: not yet");
        let seen = |at| LastLook {
            at: Some(at),
            off_list: vec![(3, 1)],
            ..LastLook::default()
        };
        assert!(
            judge(&off, &seen(long_ago), now).is_some(),
            "twice, apart: lost"
        );
        assert_eq!(judge(&off, &seen(just_now), now), None, "twice, too close");
        let other_generation = LastLook {
            at: Some(long_ago),
            off_list: vec![(3, 0)],
            ..LastLook::default()
        };
        assert_eq!(judge(&off, &other_generation, now), None);

        let held = |head| ClassAudit {
            held: true,
            head,
            ..settled()
        };
        let was_held = |head, at| LastLook {
            at: Some(at),
            held: true,
            head,
            ..LastLook::default()
        };
        assert_eq!(judge(&held(5), &none, now), None);
        assert!(judge(&held(5), &was_held(5, long_ago), now).is_some());
        assert_eq!(
            judge(&held(6), &was_held(5, long_ago), now),
            None,
            "two holds, each with its tag"
        );
        assert_eq!(judge(&held(5), &was_held(5, just_now), now), None);
    }
}
