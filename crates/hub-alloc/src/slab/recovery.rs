//! Recovery of what a participant left (R10): reclaim of a dead or departed owner, the slots its
//! rings still name, its journal, and the rebuild of a free list.

use super::*;

impl<R: Region> Slab<R> {
    /// Free every slot `owner` holds (Allocated by it, or InFlight to it), after it died or left
    /// (R10's reclaim), and put back a slot its journal shows it was taking or freeing when it
    /// died. Safe while other participants allocate and free; idempotent. This handle's owner
    /// (the host) does the freeing.
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`]; [`SlabError::Corrupt`] when the owner's journal or a free
    /// list is garbage; [`SlabError::ListHeld`].
    pub fn reclaim(&self, owner: OwnerId) -> Result<ReclaimReport, SlabError> {
        let journal_index = self
            .layout
            .journal_index(owner)
            .ok_or(SlabError::UnknownOwner(owner))?;
        let journal = self
            .shared()
            .u32_at(self.layout.journal_offsets[journal_index])
            .ok_or_else(|| self.too_small())?;
        let mut report = ReclaimReport {
            freed: vec![0; self.layout.classes.len()],
            ..ReclaimReport::default()
        };
        let entry = journal.load(Ordering::Acquire);
        if entry == JOURNAL_BUSY {
            // Taken, no slot named yet: nothing was in a window.
            journal.store(JOURNAL_EMPTY, Ordering::Release);
        } else if entry != JOURNAL_EMPTY {
            match self.resolve_journal(owner, entry - 1) {
                Ok(Resolution::Recovered(wake)) => {
                    report.recovered_from_journal = true;
                    report.wake_waiters |= wake;
                    journal.store(JOURNAL_EMPTY, Ordering::Release);
                }
                Ok(Resolution::NothingLost) => journal.store(JOURNAL_EMPTY, Ordering::Release),
                Ok(Resolution::Pending) => report.journal_pending = true,
                Err(error) => {
                    // A garbage journal is cleared so it cannot fail every later reclaim.
                    journal.store(JOURNAL_EMPTY, Ordering::Release);
                    return Err(error);
                }
            }
        }
        // A participant that reclaims its own slots gives up what its ledger holds too, and
        // what it keeps.
        let mine_too = owner == self.me;
        if mine_too {
            self.give_back_kept()?;
        }
        let mut mine = Vec::new();
        for class in 0..self.layout.classes.len() {
            mine.clear();
            self.for_each_meta(class, |index, meta| {
                let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
                // R4: the owner word is a claim another process wrote; a slot this participant
                // holds is not freed whatever it says (unless this participant reclaims its own).
                if (state == ALLOCATED || state == IN_FLIGHT)
                    && meta.owner.load(Ordering::Acquire) == owner.raw()
                    && (mine_too || !self.ledger.holds(class as u16, index))
                {
                    // Kept (see `crate::magazine`), as the owner's hint says: counted apart.
                    let kept = state == ALLOCATED
                        && meta.next_free.load(Ordering::Relaxed) == KEPT_SLOT_MARK;
                    mine.push((
                        SlotHandle::from_parts(class as u16, index, generation),
                        kept,
                    ));
                }
            });
            for &(handle, kept) in &mine {
                let freed = if mine_too {
                    // Freed onto the list, never kept again.
                    self.free_owned(handle, false)
                } else {
                    self.free_unheld(handle)
                };
                match freed {
                    Ok(freed) if kept => {
                        report.kept += 1;
                        report.wake_waiters |= freed.wake_waiters;
                    }
                    Ok(freed) => {
                        report.freed[class] += 1;
                        report.wake_waiters |= freed.wake_waiters;
                    }
                    // Freed, or freed and taken again, by someone else since the scan read it;
                    // or taken by this participant since (R4).
                    Err(error) if freed_meanwhile(&error) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(report)
    }

    /// Free `handle`'s slot if `sender` put it in flight to `receiver` at the handle's
    /// generation: R10's scan of a dead peer's rings, where a descriptor may name any slot
    /// (another peer's frame still pending in its own ring, say) and only one that ring's
    /// sender sent to that ring's receiver is the ring's to free. A slot this participant holds
    /// is never freed (R4). Whether it freed the slot.
    pub fn free_if_in_flight_to(
        &self,
        handle: SlotHandle,
        sender: OwnerId,
        receiver: OwnerId,
    ) -> bool {
        let Ok(status) = self.slot_status(handle.class(), handle.index()) else {
            return false;
        };
        status.generation == handle.generation()
            && status.state == Some(SlotState::InFlight)
            && status.owner == receiver.raw()
            && status.sender == Some(sender)
            && self.free_unheld(handle).is_ok()
    }

    /// Free every slot `sender` put in flight to `receiver` that this participant does not hold
    /// (R4: its ledger): after the sender died and its ring to the receiver was scanned and
    /// reset (R10), what it sent that the receiver never took can never be taken, including a
    /// descriptor it published after the scan. Returns how many were freed, and whether a free
    /// woke an allocator (see [`Freed`]).
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`] for a sender or receiver the layout does not admit;
    /// [`SlabError::ListHeld`].
    pub fn reclaim_sent(
        &self,
        sender: OwnerId,
        receiver: OwnerId,
    ) -> Result<(u32, bool), SlabError> {
        for owner in [sender, receiver] {
            if !self.layout.admits(owner) {
                return Err(SlabError::UnknownOwner(owner));
            }
        }
        let (mut freed, mut wake) = (0, false);
        let mut sent = Vec::new();
        for class in 0..self.layout.classes.len() {
            sent.clear();
            self.for_each_meta(class, |index, meta| {
                let (generation, state) = split(meta.gen_state.load(Ordering::Acquire));
                if state == IN_FLIGHT
                    && meta.owner.load(Ordering::Acquire) == receiver.raw()
                    && meta.next_free.load(Ordering::Acquire) == sender.raw()
                    && !self.ledger.holds(class as u16, index)
                {
                    sent.push(SlotHandle::from_parts(class as u16, index, generation));
                }
            });
            for &handle in &sent {
                match self.free_unheld(handle) {
                    Ok(done) => {
                        freed += 1;
                        wake |= done.wake_waiters;
                    }
                    Err(error) if freed_meanwhile(&error) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok((freed, wake))
    }

    /// Empty `owner`'s journal without resolving it: for the host about to hand a dead peer's
    /// id to a new peer when [`reclaim`](Self::reclaim) kept reporting `journal_pending` (the
    /// slot it names, if it was lost, stays lost). A journal left non-empty would make the new
    /// owner's first allocation wait for ever.
    ///
    /// # Errors
    /// [`SlabError::UnknownOwner`].
    pub fn clear_journal(&self, owner: OwnerId) -> Result<(), SlabError> {
        let index = self
            .layout
            .journal_index(owner)
            .ok_or(SlabError::UnknownOwner(owner))?;
        if let Some(journal) = self.shared().u32_at(self.layout.journal_offsets[index]) {
            journal.store(JOURNAL_EMPTY, Ordering::Release);
        }
        Ok(())
    }

    /// Rebuild `class`'s free list from the slot metas, after corruption of the list was
    /// detected: hold the list, chain every Free slot no journal names, leave out slots whose
    /// state is garbage, and publish the new list. Other participants' pops and pushes in the
    /// class wait meanwhile. A Free slot a journal names is between two steps of a
    /// participant's pop or free, or was pushed on the old list just before the hold: after the
    /// release it is looked at again as [`reclaim`](Self::reclaim) looks at a dead
    /// participant's journal, and put back if it is neither taken nor on the list.
    ///
    /// A list that stays held for over a second (a marker a faulty process wrote, or one a dead
    /// holder left) is taken over and rebuilt all the same.
    ///
    /// # Errors
    /// [`SlabError::BadHandle`] when there is no such class; [`SlabError::Corrupt`] when the new
    /// list is found corrupted while a slot is looked at again.
    pub fn rebuild_free_list(&self, class: u16) -> Result<RebuildReport, SlabError> {
        let c = self.class_index(class, 0)?;
        let held = match self.hold(c) {
            // Held for over a second: the marker is garbage a faulty process wrote, or left by a
            // holder that died (only the host holds, and this is the host). The list it hides
            // is lost either way, and a rebuild does not need it: take the marker over.
            Err(SlabError::ListHeld { .. }) => self.take_over(c)?,
            other => other?,
        };
        // The states first, then the journals: a free whose new state is read here named its
        // slot in its journal before (Release, then its AcqRel state CAS), so the journal read
        // below sees the name while the free's push waits for the hold.
        let mut metas = Vec::new();
        self.for_each_meta(c, |index, meta| {
            metas.push((index, meta, meta.gen_state.load(Ordering::Acquire)));
        });
        let journals = self.journal_entries();
        let mut report = RebuildReport::default();
        let mut chain = FREE_LIST_END;
        let mut unsure = Vec::new();
        for &(index, meta, seen) in metas.iter().rev() {
            match split(seen).1 {
                // R4: a slot this participant holds is never chained, whatever its state says.
                FREE if self.ledger.holds(class, index) => {}
                FREE => {
                    let entry = encode_slot_ref(class, index) + 1;
                    // And the state again after the journals: a pop that won before the hold
                    // and has recorded itself since (its journal cleared, with Release) shows
                    // here as Allocated.
                    if journals.contains(&entry) || meta.gen_state.load(Ordering::Acquire) != seen {
                        // Being popped or freed, or already pushed on the old list by a free
                        // that has not cleared its journal yet: settled after the release.
                        unsure.push((index, meta));
                    } else {
                        // Release: an audit that reads this link sees the hold (see `audit`).
                        meta.next_free.store(chain, Ordering::Release);
                        chain = index;
                        report.free += 1;
                    }
                }
                ALLOCATED | IN_FLIGHT => {}
                _ => report.quarantined += 1,
            }
        }
        self.release(c, held, chain);
        if chain != FREE_LIST_END {
            report.wake_waiters |= self.notify_slot_available(c)?;
        }
        // A slot a journal named may have been on the old list, which is gone: once its
        // participant has moved on, put it back unless it is taken or on the new list.
        for (index, meta) in unsure {
            match self.resolve_slot(c, index, meta, None)? {
                Resolution::Recovered(wake) => {
                    report.free += 1;
                    report.wake_waiters |= wake;
                }
                Resolution::NothingLost => {}
                Resolution::Pending => report.pending += 1,
            }
        }
        Ok(report)
    }

    /// What became of the slot `slot_ref` that dead `owner`'s journal names.
    pub(super) fn resolve_journal(
        &self,
        owner: OwnerId,
        slot_ref: u32,
    ) -> Result<Resolution, SlabError> {
        let bad_journal = || {
            corrupt(
                (slot_ref >> 29) as usize,
                Corruption::Journal { owner, slot_ref },
            )
        };
        let (class, index) = try_decode_slot_ref(slot_ref).map_err(|_| bad_journal())?;
        let c = usize::from(class);
        if c >= self.layout.classes.len() {
            return Err(bad_journal());
        }
        let meta = self.meta(c, index).map_err(|_| bad_journal())?;
        self.resolve_slot(c, index, meta, self.layout.journal_index(owner))
    }

    /// Whether slot `index` of class `c`, which some journal named while it was Free, is lost
    /// (Free, off the list, and named by no journal but the `skip`ped one's), and if so put it
    /// back on the list.
    pub(super) fn resolve_slot(
        &self,
        c: usize,
        index: u32,
        meta: &SlotMeta,
        skip: Option<usize>,
    ) -> Result<Resolution, SlabError> {
        let entry = encode_slot_ref(c as u16, index) + 1;
        for _ in 0..RESOLVE_ATTEMPTS {
            // R4: a slot this participant holds is not lost, whatever its state says.
            if self.ledger.holds(c as u16, index) {
                return Ok(Resolution::NothingLost);
            }
            if split(meta.gen_state.load(Ordering::Acquire)).1 != FREE {
                // Allocated or in flight: the owner scan frees it if it is the dead one's.
                return Ok(Resolution::NothingLost);
            }
            let held = self.hold(c)?;
            let seen = meta.gen_state.load(Ordering::Acquire);
            if split(seen).1 != FREE {
                self.release(c, held, held.first);
                return Ok(Resolution::NothingLost);
            }
            let on_list = match self.walk(c, held.first, Some(index)) {
                Ok((_, found)) => found,
                Err(error) => {
                    self.release(c, held, held.first);
                    return Err(error);
                }
            };
            if on_list {
                self.release(c, held, held.first);
                return Ok(Resolution::NothingLost);
            }
            let busy = self
                .layout
                .journal_offsets
                .iter()
                .enumerate()
                .filter(|&(i, _)| Some(i) != skip)
                .filter_map(|(_, &offset)| self.shared().u32_at(offset))
                .any(|journal| journal.load(Ordering::Acquire) == entry);
            // The state once more, after the journals: a participant that popped the slot
            // before the hold may have recorded itself and cleared its journal since the state
            // was read. Then the journal read above acquired its Release store, so this load
            // sees the slot Allocated (or a later life of it: another generation).
            if busy || meta.gen_state.load(Ordering::Acquire) != seen {
                // A live participant popped it and is about to record itself, or freed it and
                // is about to push it: let it finish.
                self.release(c, held, held.first);
                yield_now();
                continue;
            }
            // Free, off the list, and nobody is busy with it: lost (by the dead owner).
            meta.owner.store(NO_OWNER, Ordering::Relaxed);
            // Release: an audit that reads this link sees the hold (see `audit`).
            meta.next_free.store(held.first, Ordering::Release);
            self.release(c, held, index);
            return Ok(Resolution::Recovered(self.notify_slot_available(c)?));
        }
        Ok(Resolution::Pending)
    }
}

/// Whether a recovery's free of a slot it found failed only because the slot moved on since
/// the scan read it: freed (and perhaps taken again) by someone else, or taken by this
/// participant (R4). Nothing to do then.
fn freed_meanwhile(error: &SlabError) -> bool {
    matches!(
        error,
        SlabError::StaleHandle { .. }
            | SlabError::DoubleFree { .. }
            | SlabError::WrongState { .. }
            | SlabError::Held { .. }
    )
}
