//! The free list of each class: a tagged Treiber stack in shared memory (R7), its pop and push
//! with their journal windows (R5), and the host's hold of a list while it recovers.

use super::*;

impl<R: Region> Slab<R> {
    /// Pop a slot of class `class`, or `None` when the list is empty.
    #[inline(always)]
    pub(super) fn pop(&self, class: usize) -> Result<Option<SlotHandle>, SlabError> {
        let header = self.header(class)?;
        let journal = self.enter_journal()?;
        let backoff = Backoff::new();
        let mut held = HeldWait::default();
        loop {
            // R7: Acquire pairs with the Release of the push that linked this head, so the
            // slot's `next_free` (and its data) are those the pusher wrote.
            let head = header.free_head.load(Ordering::Acquire);
            let (index, tag) = unpack_free_head(head);
            if index == FREE_LIST_END {
                return Ok(None);
            }
            if index == LIST_HELD {
                held.wait(class)?;
                continue;
            }
            let Ok(meta) = self.meta(class, index) else {
                return Err(corrupt(class, Corruption::FreeHead { index }));
            };
            // Stale if another pop wins this head first; the tagged CAS below then fails.
            let next = meta.next_free.load(Ordering::Relaxed);
            if next != FREE_LIST_END && self.meta(class, next).is_err() {
                if header.free_head.load(Ordering::Acquire) == head {
                    return Err(corrupt(class, Corruption::NextFree { index, next }));
                }
                continue;
            }
            // R5: name the slot before the pop; the CAS's Release publishes the name. Release
            // here too, for whoever reads this entry before the CAS: see `free`.
            journal.name(encode_slot_ref(class as u16, index));
            let popped = pack_free_head(next, tag.wrapping_add(1));
            // R7: the tag makes a head that was popped and pushed back meanwhile (ABA) fail.
            if header
                .free_head
                .compare_exchange_weak(head, popped, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                backoff.spin();
                continue;
            }
            let seen = meta.gen_state.load(Ordering::Acquire);
            let (generation, state) = split(seen);
            if state != FREE {
                // Off the list now, and left off: its state says someone else has it. Its
                // owner is left alone too, so that reclaim of that one still finds it (R6).
                return Err(corrupt(class, Corruption::PoppedNotFree { index, state }));
            }
            let handle = SlotHandle::from_parts(class as u16, index, generation);
            // R4: the private claim first. A slot this participant holds (at any generation)
            // was put on the list by a forged free: it stays off the list, still ours, and the
            // pop takes the next one.
            if !self.ledger.claim(handle) {
                continue;
            }
            // R6: the owner before the state, so that from here on the slot is found by
            // reclaim(me) (Allocated and owned) or by the journal (Free, off the list).
            meta.owner.store(self.me.raw(), Ordering::Relaxed);
            // R5: Free -> Allocated, by CAS from the state and generation just read: only the
            // pop's winner may write this word now, so a change means another process wrote
            // it, and the slot is not handed out.
            if let Err(found) = meta.gen_state.compare_exchange(
                seen,
                join(generation, ALLOCATED),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                self.ledger.release(handle);
                return Err(corrupt(
                    class,
                    Corruption::PoppedNotFree {
                        index,
                        state: split(found).1,
                    },
                ));
            }
            drop(journal);
            // A slot taken: one more free of the class may keep (`crate::magazine`).
            self.magazines[class].note_alloc();
            return Ok(Some(handle));
        }
    }

    /// Push slot `index` (already Free) on its list, whose header is `header`.
    #[inline(always)]
    pub(super) fn push(
        &self,
        header: ClassHeader<'_>,
        class: usize,
        index: u32,
        meta: &SlotMeta,
    ) -> Result<(), SlabError> {
        let backoff = Backoff::new();
        let mut held = HeldWait::default();
        loop {
            let head = header.free_head.load(Ordering::Relaxed);
            let (first, tag) = unpack_free_head(head);
            if first == LIST_HELD {
                held.wait(class)?;
                continue;
            }
            // Release: an audit that reads this link sees the pop that took the slot off the
            // list before (see `audit`).
            meta.next_free.store(first, Ordering::Release);
            // R7: Release publishes `next_free`, the state and the slot's bytes to the next
            // popper; SeqCst for R11 (see `announce_waiter`).
            if header
                .free_head
                .compare_exchange_weak(
                    head,
                    pack_free_head(index, tag.wrapping_add(1)),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Ok(());
            }
            backoff.spin();
        }
    }

    /// After a push: bump the class's futex word when an allocator announced it sleeps (R11).
    pub(super) fn notify_slot_available(&self, class: usize) -> Result<bool, SlabError> {
        Ok(notify_waiters(self.header(class)?))
    }

    /// Swap `class`'s head for the held marker, so nobody else pops or pushes until
    /// [`release`](Self::release). Returns the list as it was.
    pub(super) fn hold(&self, class: usize) -> Result<Held, SlabError> {
        self.swap_in_marker(class, false)
    }

    /// Hold a list whose head is already the held marker (see `rebuild_free_list`): the list
    /// it hid is lost, so the held list is empty.
    pub(super) fn take_over(&self, class: usize) -> Result<Held, SlabError> {
        self.swap_in_marker(class, true)
    }

    /// Swap the held marker in for `class`'s head; wait while another holder has it, unless
    /// `take_over`.
    pub(super) fn swap_in_marker(&self, class: usize, take_over: bool) -> Result<Held, SlabError> {
        let header = self.header(class)?;
        let mut held = HeldWait::default();
        loop {
            // Acquire: the CAS reads the latest head, whose release sequence carries every
            // earlier pop and push, and with them the journals written before them.
            let head = header.free_head.load(Ordering::Acquire);
            let (first, tag) = unpack_free_head(head);
            if first == LIST_HELD && !take_over {
                held.wait(class)?;
                continue;
            }
            let tag = tag.wrapping_add(1);
            if header
                .free_head
                .compare_exchange(
                    head,
                    pack_free_head(LIST_HELD, tag),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                let first = if first == LIST_HELD {
                    FREE_LIST_END
                } else {
                    first
                };
                return Ok(Held { first, tag });
            }
        }
    }

    /// Publish `first` as the head of a held list.
    pub(super) fn release(&self, class: usize, held: Held, first: u32) {
        if let Ok(header) = self.header(class) {
            // R7: Release publishes the links written while held; SeqCst for R11.
            header.free_head.store(
                pack_free_head(first, held.tag.wrapping_add(1)),
                Ordering::SeqCst,
            );
        }
    }

    /// Walk a list from `first`: its length, and whether it holds `target`. At most as many
    /// steps as the class has slots (R3: a cycle ends the walk with an error).
    pub(super) fn walk(
        &self,
        class: usize,
        first: u32,
        target: Option<u32>,
    ) -> Result<(u32, bool), SlabError> {
        let limit = self.published_extents(class).count() as u32
            * self.layout.classes[class].slots_per_extent;
        let mut index = first;
        let mut len = 0u32;
        let mut found = false;
        let mut previous = None;
        while index != FREE_LIST_END {
            if len >= limit {
                return Err(corrupt(class, Corruption::Cycle { limit }));
            }
            let Ok(meta) = self.meta(class, index) else {
                return Err(corrupt(
                    class,
                    match previous {
                        None => Corruption::FreeHead { index },
                        Some(previous) => Corruption::NextFree {
                            index: previous,
                            next: index,
                        },
                    },
                ));
            };
            found |= Some(index) == target;
            len += 1;
            previous = Some(index);
            index = meta.next_free.load(Ordering::Relaxed);
        }
        Ok((len, found))
    }
}
