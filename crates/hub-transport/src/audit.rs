//! The host's watch over the allocator's shared state (R3): damage a faulty participant wrote
//! into a class's free list or slot metas is found by [`Slab::audit`](hub_alloc::Slab::audit)
//! and repaired with a rebuild, without knowing who wrote it.
//!
//! The supervisor runs [`Auditor::check`] every [`AUDIT_PERIOD`] and after every eviction; the
//! application can run it too ([`Host::check_allocator`](crate::Host::check_allocator)). What
//! counts as damage, each on evidence a healthy but busy class never shows:
//!
//! - a fault in the list on a settled look (a head or link outside the class, a cycle, a listed
//!   slot that is not Free): rebuilt at once;
//! - a free slot off the list that no journal names, the same slot at the same generation in
//!   two looks: lost; rebuilt, which brings it back;
//! - a list held in two looks in a row (a hold lasts microseconds): the marker is garbage;
//!   rebuilt, which takes it over after a second (the supervisor waits that second);
//! - slot states that are no state: reported once per new one; a rebuild leaves them off the
//!   list for good (quarantined), since whoever wrote them may still use those slots.

use std::sync::Mutex;
use std::time::Duration;

use hub_alloc::{ClassAudit, RebuildReport};

use crate::host::Core;

/// How often the supervisor looks.
pub(crate) const AUDIT_PERIOD: Duration = Duration::from_millis(250);

/// Damage the host found in the allocator's shared state, and what it did about it.
///
/// Which participant wrote it cannot be told: shared memory keeps no record of its writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorDamage {
    /// The size class.
    pub class: u16,
    /// What was found, in words.
    pub found: String,
    /// The rebuild of the class's free list, when one was made.
    pub rebuilt: Option<RebuildReport>,
}

/// What the previous look at each class saw.
#[derive(Debug, Default, Clone)]
struct LastLook {
    off_list: Vec<(u32, u32)>,
    held: bool,
    bad_states: u32,
}

/// The audits' memory between looks.
#[derive(Debug, Default)]
pub(crate) struct Auditor {
    last: Mutex<Vec<LastLook>>,
}

impl Auditor {
    /// Look at every class, repair what is broken, and say what was found.
    pub fn check(&self, core: &Core) -> Vec<AllocatorDamage> {
        let slab = &core.endpoint.slab;
        let classes = slab.layout().class_count();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.resize(classes, LastLook::default());
        let mut found = Vec::new();
        for (class, last) in (0..classes as u16).zip(last.iter_mut()) {
            let Ok(audit) = slab.audit(class) else {
                continue;
            };
            let (damage, bad_states) = judge(&audit, last);
            if bad_states > 0 {
                found.push(AllocatorDamage {
                    class,
                    found: format!("{bad_states} more slot states are garbage (quarantined)"),
                    rebuilt: None,
                });
            }
            match damage {
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
                    *last = LastLook {
                        bad_states: audit.bad_states,
                        ..LastLook::default()
                    };
                }
                None => {
                    *last = LastLook {
                        off_list: audit.off_list,
                        held: audit.held,
                        bad_states: audit.bad_states.max(last.bad_states),
                    };
                }
            }
        }
        found
    }
}

/// What `audit`, after `last`, shows: the damage that needs a rebuild, and how many garbage
/// states are new.
fn judge(audit: &ClassAudit, last: &LastLook) -> (Option<String>, u32) {
    let new_bad = audit.bad_states.saturating_sub(last.bad_states);
    if let Some(fault) = &audit.list_fault {
        return (Some(format!("free list broken: {fault}")), new_bad);
    }
    if audit.held && last.held {
        return (Some("free list held across two looks".into()), new_bad);
    }
    let lost = audit
        .off_list
        .iter()
        .filter(|slot| last.off_list.contains(slot))
        .count();
    if lost > 0 {
        return (
            Some(format!("{lost} free slots lost off the free list")),
            new_bad,
        );
    }
    (None, new_bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_alloc::Corruption;

    #[test]
    fn one_look_or_two() {
        let quiet = LastLook::default();
        let broken = ClassAudit {
            settled: true,
            list_fault: Some(Corruption::FreeHead { index: 9 }),
            ..ClassAudit::default()
        };
        assert!(judge(&broken, &quiet).0.is_some(), "a list fault: at once");

        let off = ClassAudit {
            settled: true,
            off_list: vec![(3, 1)],
            ..ClassAudit::default()
        };
        assert_eq!(judge(&off, &quiet).0, None, "off the list once: not yet");
        let seen = LastLook {
            off_list: vec![(3, 1)],
            ..LastLook::default()
        };
        assert!(judge(&off, &seen).0.is_some(), "the same slot twice: lost");
        let moved_on = LastLook {
            off_list: vec![(3, 0)],
            ..LastLook::default()
        };
        assert_eq!(judge(&off, &moved_on).0, None, "another generation: not");

        let held = ClassAudit {
            held: true,
            ..ClassAudit::default()
        };
        assert_eq!(judge(&held, &quiet).0, None);
        let was_held = LastLook {
            held: true,
            ..LastLook::default()
        };
        assert!(judge(&held, &was_held).0.is_some());

        let bad = ClassAudit {
            settled: true,
            bad_states: 3,
            ..ClassAudit::default()
        };
        let known = LastLook {
            bad_states: 2,
            ..LastLook::default()
        };
        assert_eq!(judge(&bad, &known), (None, 1), "one new garbage state");
    }
}
