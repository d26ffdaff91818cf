//! Giving slots back: [`Slab::free`], the kept slots of [`crate::magazine`] (R5, R4), and the
//! one free path every other free goes through.

use super::*;

impl<R: Region> Slab<R> {
    /// How many slots of `class` this participant keeps for its next alloc now: slots it freed
    /// that stayed its own (see [`free`](Self::free)): never more than it allocated there.
    pub fn kept_count(&self, class: u16) -> u32 {
        self.magazines
            .get(usize::from(class))
            .map_or(0, |magazine| magazine.len() as u32)
    }

    /// Give back every slot this participant keeps (see [`free`](Self::free)): each is freed
    /// the ordinary way, onto its class's free list. A participant does this before it sleeps,
    /// so that nobody waits for a slot it keeps; classes whose allocators must be woken are
    /// then named by [`take_wakes`](Self::take_wakes). Returns how many slots went back.
    ///
    /// ```
    /// use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
    ///
    /// let layout = SlabLayout::standalone(&[ClassConfig { slot_size: 64, slots_per_extent: 64 }], 1, 1)?;
    /// let region = HeapRegion::new(layout.initial_size(), layout.max_size());
    /// // SAFETY: a fresh region nobody else uses.
    /// let slab = unsafe { Slab::init(&region, layout, OwnerId::HOST)? };
    /// let slot = slab.alloc_in(0)?;
    /// let _ = slab.free(slot)?;
    /// assert_eq!(slab.kept_count(0), 1); // freed, and kept for the next alloc
    /// assert_eq!(slab.give_back_kept()?, 1);
    /// assert_eq!((slab.kept_count(0), slab.free_list_len(0)?), (0, 64));
    /// # Ok::<(), hub_alloc::SlabError>(())
    /// ```
    ///
    /// # Errors
    /// As [`free`](Self::free), for a slot whose meta another process rewrote meanwhile (the
    /// slot leaves the ledger all the same) or a list held too long; the other kept slots are
    /// given back first.
    pub fn give_back_kept(&self) -> Result<u32, SlabError> {
        let mut given = 0;
        let mut first_error = None;
        for class in 0..self.magazines.len() {
            while let Some(handle) = self.take_kept(class) {
                match self.free_owned(handle, false) {
                    Ok(freed) => {
                        given += 1;
                        if freed.wake_waiters {
                            // R11: the caller wakes the class's sleepers (`take_wakes`).
                            self.wakes.fetch_or(1 << class, Ordering::Release);
                        }
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            // Idle from here on: its frees keep again only once it allocates again (the
            // takes above counted as allocs).
            self.magazines[class].forget_allocs();
        }
        first_error.map_or(Ok(given), Err)
    }

    /// Give a slot back (Allocated or InFlight -> Free, generation + 1, R5, R7) and push it on
    /// its class's free list. Of two racing frees of one handle exactly one succeeds.
    ///
    /// A slot this participant holds may instead be *kept* for its next alloc of the class
    /// (see [`kept_count`](Self::kept_count)): its generation moves on as in any free, so the
    /// handle is stale from then on, but in shared memory it stays Allocated and this
    /// participant's, off the list, until an alloc of this participant takes it again, it is
    /// [given back](Self::give_back_kept), or the participant's [reclaim](Self::reclaim)
    /// frees it. A free keeps its slot only when this participant took a slot of the class
    /// (from the free list, a new extent or its kept ones) that no earlier keep answered, so
    /// that it keeps no more than it allocates; when a cell of its magazine is empty (one per
    /// 16 slots of an extent, at least one, at most four); when no allocator has announced
    /// that it waits for the class; and when the class's free list is not empty.
    ///
    /// A slot this participant holds (its ledger, R4) leaves the ledger, whether or not the
    /// shared state agrees: the holder is done with it either way (a slot whose meta another
    /// process rewrote is left for the host's audit to find).
    ///
    /// # Errors
    /// [`SlabError::BadHandle`]; [`SlabError::DoubleFree`] when this handle already freed the
    /// slot; [`SlabError::StaleHandle`] for an older generation, or when this participant holds
    /// the slot at another generation; [`SlabError::WrongState`] when the slot is free;
    /// [`SlabError::Corrupt`] when its state word is garbage; [`SlabError::ListHeld`].
    pub fn free(&self, handle: SlotHandle) -> Result<Freed, SlabError> {
        self.free_owned(handle, true)
    }

    /// [`free`](Self::free), never keeping the slot: for the tests of the free list's path.
    #[cfg(test)]
    pub(crate) fn free_to_list(&self, handle: SlotHandle) -> Result<Freed, SlabError> {
        self.free_owned(handle, false)
    }

    /// [`free`](Self::free), keeping the slot for this participant's next alloc of the class
    /// when `may_keep` and the class allows (see [`crate::magazine`]).
    ///
    /// The private ledger decides first, by a compare-and-swap from "held at the handle's
    /// generation" (R4): of two threads of this participant freeing one handle, one goes on, and
    /// the other's free fails without touching shared memory. The shared state's CAS (R5)
    /// then decides against every other process. Until the slot is on its list or in the
    /// magazine the ledger cell says "kept", so no pop or receive of this participant takes it.
    /// A slot the ledger does not name at all is not this participant's: only the shared
    /// state's CAS decides.
    #[inline]
    pub(super) fn free_owned(
        &self,
        handle: SlotHandle,
        may_keep: bool,
    ) -> Result<Freed, SlabError> {
        // The common case, a held slot kept, is inlined into the caller; every other outcome
        // is out of line, so that this path saves and restores few registers.
        let next = handle.generation().wrapping_add(1);
        if let Err(cell) = self.ledger.begin_keep(handle, next) {
            return self.free_not_begun(handle, cell, next);
        }
        let class = usize::from(handle.class());
        if class >= self.magazines.len() {
            return self.abandon_free(handle, bad_handle(handle));
        }
        let magazine = &self.magazines[class];
        let keep = may_keep
            // A participant keeps no more than it allocates (see `crate::magazine`), and a full
            // magazine would cost the keep's state CAS and then a free's after all.
            && magazine.keeps()
            && magazine.has_room()
            // R11: an allocator waits for a slot of the class: it goes on the list, and is woken.
            && !has_waiter(self.class_futex_within(class))
            // The class's last free slots go where anyone may take them (`crate::magazine`).
            && list_looks_nonempty(self.class_head_within(class));
        if !keep {
            return self.free_slot(handle, Ledgered::Forget);
        }
        let Ok(meta_offset) = self.meta_offset(class, handle.index()) else {
            return self.abandon_free(handle, bad_handle(handle));
        };
        // SAFETY: an offset `meta_offset` gave.
        let meta = unsafe { self.meta_at(meta_offset) };
        let current = meta.gen_state.load(Ordering::Relaxed);
        let (generation, state) = split(current);
        // R5: a free's CAS on (generation, state), to Allocated rather than Free: of this free
        // and any other process's claim on the slot exactly one wins, and the handle is stale
        // from here on.
        let kept =
            if generation == handle.generation() && (state == ALLOCATED || state == IN_FLIGHT) {
                meta.gen_state.compare_exchange(
                    current,
                    join(next, ALLOCATED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
            } else {
                Err(current)
            };
        if let Err(found) = kept {
            // The slot leaves the ledger whatever the shared state says (see `free`).
            return self.abandon_free(handle, free_error(handle, found));
        }
        // R6: the keeper owns it (a received slot was in flight to it, so this writes nothing
        // unless another process rewrote the word).
        if meta.owner.load(Ordering::Relaxed) != self.me.raw() {
            meta.owner.store(self.me.raw(), Ordering::Relaxed);
        }
        // A hint for everybody's counts (`stats`): the link word means nothing off the list.
        meta.next_free.store(KEPT_SLOT_MARK, Ordering::Relaxed);
        if magazine.put(handle.index(), meta_hint(meta_offset)) {
            magazine.note_keep();
            return Ok(Freed {
                class: handle.class(),
                wake_waiters: false,
            });
        }
        self.free_kept_after_all(handle)
    }

    /// [`free_owned`](Self::free_owned) when the ledger's cell did not say "held at the
    /// handle's generation" (`found`): a slot the ledger does not name at all is not this
    /// participant's, and only the shared state's CAS decides; otherwise the handle is not the
    /// one it holds (R4).
    #[cold]
    #[inline(never)]
    fn free_not_begun(
        &self,
        handle: SlotHandle,
        found: Cell,
        next: u32,
    ) -> Result<Freed, SlabError> {
        match found {
            Cell::Empty => self.free_slot(handle, Ledgered::Untouched),
            // Freed (and kept) by another thread of this participant.
            Cell::Kept(generation) if generation == next => Err(SlabError::DoubleFree {
                class: handle.class(),
                index: handle.index(),
            }),
            // Held, or kept, at another generation.
            Cell::Kept(generation) | Cell::Held(generation) => Err(SlabError::StaleHandle {
                handle: handle.generation(),
                slot: generation,
            }),
        }
    }

    /// A free that began (the ledger says "kept") and fails with `error`: the slot leaves the
    /// ledger whatever the shared state says (see [`free`](Self::free)).
    #[cold]
    #[inline(never)]
    fn abandon_free(&self, handle: SlotHandle, error: SlabError) -> Result<Freed, SlabError> {
        self.ledger.forget(handle.class(), handle.index());
        Err(error)
    }

    /// A free that kept its slot but found every magazine cell full: freed onto the list after
    /// all, at its new generation.
    #[cold]
    #[inline(never)]
    fn free_kept_after_all(&self, handle: SlotHandle) -> Result<Freed, SlabError> {
        match self.ledger.unkeep(handle.class(), handle.index()) {
            Some(handle) => self.free_owned(handle, false),
            None => Err(SlabError::DoubleFree {
                class: handle.class(),
                index: handle.index(),
            }),
        }
    }

    /// A slot this participant kept (see [`crate::magazine`]), taken from its magazine and held
    /// again. Nothing in shared memory changes: the slot is Allocated and this participant's
    /// already, at the generation the keep gave it.
    #[inline]
    pub(super) fn take_kept(&self, class: usize) -> Option<SlotHandle> {
        let magazine = &self.magazines[class];
        while let Some((index, hint)) = magazine.take() {
            // The entry is the only right to the slot: whoever empties its cell unkeeps it.
            if let Some(handle) = self.ledger.unkeep(class as u16, index) {
                // In use again: the hint goes. The meta is where the keeper's free found it.
                let meta = if hint != 0 {
                    // SAFETY: a nonzero hint is the offset `meta_offset` gave the free that
                    // kept this slot: `free_owned` is the only writer of magazine entries, and
                    // the magazine is this handle's own (`with_owner` makes a fresh one).
                    Some(unsafe { self.meta_at(hinted_offset(hint)) })
                } else {
                    self.meta(class, index).ok()
                };
                if let Some(meta) = meta {
                    meta.next_free.store(FREE_LIST_END, Ordering::Relaxed);
                }
                magazine.note_alloc();
                return Some(handle);
            }
        }
        None
    }

    /// Free a slot this participant does not hold (R4): reclaim's and recovery's frees of what
    /// another participant left, which must never free a slot the ledger holds, whatever its
    /// shared meta says.
    pub(super) fn free_unheld(&self, handle: SlotHandle) -> Result<Freed, SlabError> {
        if self.ledger.holds(handle.class(), handle.index()) {
            return Err(SlabError::Held {
                class: handle.class(),
                index: handle.index(),
            });
        }
        self.free_slot(handle, Ledgered::Untouched)
    }

    /// `Err(StaleHandle)` when this participant holds `handle`'s slot at another generation:
    /// the handle is not the one it holds (R4).
    #[inline]
    pub(super) fn check_not_held_otherwise(&self, handle: SlotHandle) -> Result<(), SlabError> {
        match self.ledger.look(handle.class(), handle.index()) {
            Cell::Empty => Ok(()),
            Cell::Held(generation) if generation == handle.generation() => Ok(()),
            // Kept (see `crate::magazine`): freed already, and no handle to it is valid.
            Cell::Kept(generation) if generation == handle.generation().wrapping_add(1) => {
                Err(SlabError::DoubleFree {
                    class: handle.class(),
                    index: handle.index(),
                })
            }
            Cell::Held(generation) | Cell::Kept(generation) => Err(SlabError::StaleHandle {
                handle: handle.generation(),
                slot: generation,
            }),
        }
    }

    /// [`free`](Self::free)'s work, onto the list. Unless `ledgered` is
    /// [`Untouched`](Ledgered::Untouched), the slot leaves this participant's ledger whether or
    /// not the shared state agrees: the holder is done with it either way, and a slot whose
    /// state another process rewrote is the auditor's to find.
    pub(super) fn free_slot(
        &self,
        handle: SlotHandle,
        ledgered: Ledgered,
    ) -> Result<Freed, SlabError> {
        let leave = || match ledgered {
            Ledgered::Untouched => {}
            Ledgered::Release => {
                self.ledger.release(handle);
            }
            Ledgered::Forget => self.ledger.forget(handle.class(), handle.index()),
        };
        let ready = self
            .class_index(handle.class(), handle.index())
            .and_then(|class| {
                let meta = self.handle_meta(class, handle)?;
                let header = self.header(class)?;
                let journal = self.enter_journal()?;
                Ok((class, meta, header, journal))
            });
        let (class, meta, header, journal) = match ready {
            Ok(ready) => ready,
            Err(error) => {
                leave();
                return Err(error);
            }
        };
        // R5: say which slot before touching it, so a crash between the state change and the
        // push leaves a trace reclaim follows. Release, as every journal store: whoever reads
        // the journal (Acquire) sees what this participant did before, such as recording a
        // slot it popped as Allocated (see `resolve_journal`).
        journal.name(handle.slot_ref());
        let mut current = meta.gen_state.load(Ordering::Relaxed);
        loop {
            let (generation, state) = split(current);
            if generation != handle.generation() || !(state == ALLOCATED || state == IN_FLIGHT) {
                leave();
                return Err(free_error(handle, current));
            }
            // R5: the CAS on (generation, state) is what makes one of two racing frees win.
            match meta.gen_state.compare_exchange_weak(
                current,
                join(generation.wrapping_add(1), FREE),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(found) => current = found,
            }
        }
        meta.owner.store(NO_OWNER, Ordering::Relaxed);
        // R4: out of the ledger before the push: once on the list, a pop of this process may
        // take it, and must not find it held.
        leave();
        self.push(header, class, handle.index(), meta)?;
        drop(journal);
        Ok(Freed {
            class: handle.class(),
            wake_waiters: notify_waiters(header),
        })
    }
}
