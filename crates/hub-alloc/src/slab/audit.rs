//! The host's private truth against shared words (R4): the audit of a class, the constants the
//! host wrote, and the slots nobody can hold any more.

use super::*;

impl<R: Region> Slab<R> {
    /// Look at `class` for damage a faulty participant did: its free list walked once (bounded,
    /// R3), every slot state read once, the journals read. Read-only and safe while others
    /// allocate and free; see [`ClassAudit`] for what a busy class can and cannot show. The
    /// host runs it periodically and rebuilds what it finds broken.
    ///
    /// ```
    /// use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
    /// use std::sync::Arc;
    ///
    /// let layout = SlabLayout::standalone(&[ClassConfig { slot_size: 64, slots_per_extent: 4 }], 1, 1)?;
    /// let region = Arc::new(HeapRegion::new(layout.initial_size(), layout.max_size()));
    /// // SAFETY: the region is fresh and nobody else uses it.
    /// let host = unsafe { Slab::init(region, layout, OwnerId::HOST)? };
    /// let audit = host.audit(0)?;
    /// assert!(audit.settled && !audit.list_broken() && audit.off_list.is_empty());
    /// # Ok::<(), hub_alloc::SlabError>(())
    /// ```
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when there is no such class.
    pub fn audit(&self, class: u16) -> Result<ClassAudit, SlabError> {
        let c = self.class_index(class, 0)?;
        let header = self.header(c)?;
        let mut audit = ClassAudit::default();
        // Acquire: the head's release sequence carries the pushes that linked the list read
        // below (R7), and the state changes made before them.
        let before = header.free_head.load(Ordering::Acquire);
        audit.head = before;
        let (first, _) = unpack_free_head(before);
        // The journals before the states: a pop that won the head `before` shows (R5 names the
        // slot before the CAS), or its state change does, from its journal's clear onwards.
        let mut journals = self.journal_entries();
        let mut states = Vec::new();
        self.for_each_meta(c, |index, meta| {
            // Acquire: a state a pop or free wrote (AcqRel) brings its earlier head CAS with it,
            // so the last head load below cannot take that list for the one of `before`.
            states.push((index, meta.gen_state.load(Ordering::Acquire)));
        });
        audit.bad_states = states
            .iter()
            .filter(|(_, word)| !matches!(split(*word).1, FREE | ALLOCATED | IN_FLIGHT))
            .count() as u32;
        if first == LIST_HELD {
            audit.held = true;
            // Acquire, as the head load below.
            audit.settled = header.free_head.load(Ordering::Acquire) == before;
            return Ok(audit);
        }
        // Global index -> position in `states`, for the walk's "is it free" and "seen twice".
        let slots = self.layout.classes[c].slots_per_extent;
        let shift = slots.trailing_zeros();
        let position = |index: u32| {
            let extent = (index >> shift) as usize;
            let at = extent * slots as usize + (index & (slots - 1)) as usize;
            (at < states.len() && states[at].0 == index).then_some(at)
        };
        let mut on_list = vec![false; states.len()];
        let mut fault = None;
        let mut index = first;
        let mut previous = None;
        while index != FREE_LIST_END {
            let Some(at) = position(index).filter(|_| self.meta(c, index).is_ok()) else {
                fault = Some(match previous {
                    None => Corruption::FreeHead { index },
                    Some(previous) => Corruption::NextFree {
                        index: previous,
                        next: index,
                    },
                });
                break;
            };
            if on_list[at] {
                fault = Some(Corruption::Cycle {
                    limit: states.len() as u32,
                });
                break;
            }
            on_list[at] = true;
            let state = split(states[at].1).1;
            if state != FREE {
                fault = Some(Corruption::PoppedNotFree { index, state });
                break;
            }
            previous = Some(index);
            index = match self.meta(c, index) {
                // Acquire: a link written since `before` was written after the pop or hold that
                // took its slot off the list (Release), so the last head load below sees that
                // change and the look is not settled.
                Ok(meta) => meta.next_free.load(Ordering::Acquire),
                Err(_) => break,
            };
        }
        // And after them: a free whose Free state was read above named its slot before its
        // state CAS (R5), so a slot between its state change and its push is named here.
        journals.extend(self.journal_entries());
        // Acquire: the journals' and links' writers above are ordered before it, so a head
        // equal to `before` means no pop, push or hold completed during the look (R7's tag).
        audit.settled = header.free_head.load(Ordering::Acquire) == before;
        if audit.settled {
            audit.list_fault = fault;
            if audit.list_fault.is_none() {
                audit.off_list = states
                    .iter()
                    .zip(&on_list)
                    .filter(|&(&(index, word), &listed)| {
                        split(word).1 == FREE
                            && !listed
                            && !journals.contains(&(encode_slot_ref(class, index) + 1))
                            && !self.ledger.holds(class, index)
                    })
                    .map(|(&(index, word), _)| (index, split(word).0))
                    .collect();
            }
        }
        Ok(audit)
    }

    /// Put back every allocator word a participant may not change that another process has
    /// changed: each class header's fixed fields (`slot_size`, `slots_per_extent`,
    /// `extent_slot_shift`, which attach validates), each published extent offset (to the one
    /// this handle adopted, or to 0 when a published one does not fit its private extent
    /// table), a `total_slots` no growth can have written, and a `current_size` below the end
    /// of the extents this handle knows or beyond the reservation. The host's auditor runs it,
    /// so that scribbling cannot keep new peers from attaching (R2) or growth from finding
    /// room. Returns what was restored.
    pub fn restore_constants(&self) -> Vec<&'static str> {
        let mut restored = Vec::new();
        let mut note = |what: &'static str| {
            if !restored.contains(&what) {
                restored.push(what);
            }
        };
        let shared = self.shared();
        for (class, config) in self.layout.classes.iter().enumerate() {
            let base = self.class_header_offset(class);
            let fields = [
                ("class slot_size", 0, config.slot_size),
                ("class slots_per_extent", 4, config.slots_per_extent),
                (
                    "class extent_slot_shift",
                    8,
                    config.slots_per_extent.trailing_zeros(),
                ),
            ];
            for (what, offset, expected) in fields {
                if shared
                    .read_plain_u32(base + offset)
                    .is_some_and(|found| found != expected)
                {
                    // Under loom these plain fields are never written after `init`: models do
                    // not scribble them, and loom cannot take them for atomics.
                    #[cfg(not(loom))]
                    if let Some(word) = shared.u32_at(base + offset) {
                        word.store(expected, Ordering::Release);
                    }
                    note(what);
                }
            }
            let Ok(header) = self.header(class) else {
                continue;
            };
            let mut adopted = 0;
            for extent in 0..self.layout.max_extents as usize {
                let published = header.extent_offsets[extent].load(Ordering::Acquire);
                let known = self.cache[class].extents[extent].load(Ordering::Acquire);
                let truth = if known != 0 {
                    known
                } else if published == 0 {
                    0
                } else {
                    // Published by a grower since the last look, or forged: adopted if it fits.
                    self.extent_base(class, extent)
                        .map_or(0, |offset| offset as u64)
                };
                adopted += u32::from(truth != 0);
                if published != truth
                    && header.extent_offsets[extent]
                        .compare_exchange(published, truth, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    note("extent offset");
                }
            }
            // A grower adds its extent's slots right after it publishes it: a total that is
            // not a whole number of extents, or more than there are, no grower wrote.
            let total = header.total_slots.load(Ordering::Relaxed);
            if !total.is_multiple_of(config.slots_per_extent)
                || total > self.layout.max_extents * config.slots_per_extent
            {
                header
                    .total_slots
                    .store(adopted * config.slots_per_extent, Ordering::Relaxed);
                note("class total_slots");
            }
        }
        if let Ok(current_size) = self.current_size() {
            let table = lock(&self.extents);
            let floor = self.private_end(&table) as u64;
            let seen = current_size.load(Ordering::Acquire);
            if (seen < floor || seen > self.layout.max_size as u64 || !seen.is_multiple_of(64))
                && current_size
                    .compare_exchange(seen, floor, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                note("current_size");
            }
        }
        restored
    }

    /// Slots of `class` that no participant can be holding by the protocol, as this handle
    /// sees them now: a state word that is no state; allocated by, or in flight to, an owner
    /// that `live` says is gone (or an owner word that names nobody); allocated by this
    /// participant but not in its ledger (R4); in flight to this participant from a sender
    /// that `live` says is gone, and not in its ledger. Slots this handle's ledger holds are
    /// never listed. A busy hub shows some for a moment (a grower's new slots, a pop between
    /// its claim and its record): the caller looks twice, far apart, before it
    /// [returns](Self::return_orphan) one, and only once every participant that could have
    /// held it is gone.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when there is no such class.
    pub fn orphans(
        &self,
        class: u16,
        live: impl Fn(OwnerId) -> bool,
    ) -> Result<Vec<Orphan>, SlabError> {
        let c = self.class_index(class, 0)?;
        let mut found = Vec::new();
        self.for_each_meta(c, |index, meta| {
            if self.ledger.holds(class, index) {
                return;
            }
            let word = meta.gen_state.load(Ordering::Acquire);
            let owner = meta.owner.load(Ordering::Acquire);
            let named = OwnerId::from_raw(owner).filter(|&o| self.layout.admits(o));
            let orphan = match split(word).1 {
                FREE => false,
                ALLOCATED => match named {
                    Some(o) if o == self.me => true,
                    Some(o) => !live(o),
                    None => true,
                },
                IN_FLIGHT => match named {
                    Some(o) if o == self.me => {
                        let sender = OwnerId::from_raw(meta.next_free.load(Ordering::Acquire));
                        sender.is_none_or(|s| s == self.me || !self.layout.admits(s) || !live(s))
                    }
                    Some(o) => !live(o),
                    None => true,
                },
                _ => true,
            };
            if orphan {
                found.push(Orphan {
                    class,
                    index,
                    word,
                    owner,
                });
            }
        });
        Ok(found)
    }

    /// Give back a slot [`orphans`](Self::orphans) listed, if its meta still holds what it
    /// did then, it is not on its free list, and this participant does not hold it: the
    /// generation moves on, the state becomes Free, and the slot goes on the list (under a
    /// hold of the list, so it is never listed twice). `Ok(None)` when any of that changed;
    /// the [`Freed`] otherwise.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`]; [`SlabError::Corrupt`] when the list is found broken (a
    /// rebuild comes first); [`SlabError::ListHeld`].
    pub fn return_orphan(&self, orphan: &Orphan) -> Result<Option<Freed>, SlabError> {
        let c = self.class_index(orphan.class, orphan.index)?;
        let meta = self
            .meta(c, orphan.index)
            .map_err(|_| SlabError::BadHandle {
                class: orphan.class,
                index: orphan.index,
            })?;
        if self.ledger.holds(orphan.class, orphan.index) {
            return Ok(None);
        }
        let held = self.hold(c)?;
        let on_list = match self.walk(c, held.first, Some(orphan.index)) {
            Ok((_, found)) => found,
            Err(error) => {
                self.release(c, held, held.first);
                return Err(error);
            }
        };
        let generation = split(orphan.word).0;
        if on_list
            || meta
                .gen_state
                .compare_exchange(
                    orphan.word,
                    join(generation.wrapping_add(1), FREE),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.release(c, held, held.first);
            return Ok(None);
        }
        meta.owner.store(NO_OWNER, Ordering::Relaxed);
        // Release: an audit that reads this link sees the hold (see `audit`).
        meta.next_free.store(held.first, Ordering::Release);
        self.release(c, held, orphan.index);
        Ok(Some(Freed {
            class: orphan.class,
            wake_waiters: self.notify_slot_available(c)?,
        }))
    }
}
