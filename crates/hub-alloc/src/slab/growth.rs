//! Growth without remapping (R8): a new extent reserved by compare-and-swap at the end of the
//! region, published, and its slots freed one by one; adoption of the extents others
//! published.

use super::*;

impl<R: Region> Slab<R> {
    /// Add an extent to `class` and return one of its slots, allocated; `None` when the class
    /// has all its extents or the reservation is used up.
    ///
    /// Where the extent goes is decided by the private extent table (R4), not by the shared
    /// `current_size` alone: never below the end of every extent this participant knows (all
    /// classes, adopted after a check that they overlap nothing) and of its own reservations in
    /// progress. A `current_size` another process rewound is a hint that is overruled, and the
    /// reservation's compare-and-swap repairs it.
    pub(super) fn grow(&self, class: usize) -> Result<Option<SlotHandle>, SlabError> {
        let header = self.header(class)?;
        let max_extents = self.layout.max_extents as usize;
        // An extent number is free when nothing is published there and this handle knows no
        // extent there either (R4: a number whose shared offset another process zeroed is not
        // reused over the extent this handle knows).
        let next_unpublished = |from: usize| {
            (from..max_extents).find(|&e| {
                header.extent_offsets[e].load(Ordering::Acquire) == 0
                    && self.cache[class].extents[e].load(Ordering::Acquire) == 0
            })
        };
        let Some(mut extent) = next_unpublished(0) else {
            return Ok(None);
        };
        // Someone may have freed or grown while we looked.
        if let Some(handle) = self.pop(class)? {
            return Ok(Some(handle));
        }
        let size = self.layout.geometry[class].size as u64;
        let current_size = self.current_size()?;
        let mut table = lock(&self.extents);
        let floor = self.private_end(&table) as u64;
        let mut seen = current_size.load(Ordering::Acquire);
        let start = loop {
            if seen > self.layout.max_size as u64 {
                return Err(corrupt(class, Corruption::CurrentSize { value: seen }));
            }
            let start = seen.max(floor).next_multiple_of(64);
            let end = start + size;
            if end > self.layout.max_size as u64 {
                return Ok(None);
            }
            // R8: reserve [start, end) atomically; two growers never get overlapping ranges.
            match current_size.compare_exchange_weak(seen, end, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break start,
                Err(found) => seen = found,
            }
        };
        let (start, end) = (start as usize, (start + size) as usize);
        // R4: ours until published, so no extent another process publishes over it is adopted.
        table.push((start, end));
        drop(table);
        let forget = |give: bool| {
            lock(&self.extents).retain(|&reserved| reserved != (start, end));
            if give {
                give_back(current_size, start, end);
            }
        };
        if let Err(error) = self.region.grow_to(end) {
            forget(true);
            return Err(error.into());
        }
        // Every slot starts allocated and owned by this grower: a crash from here on leaves
        // nothing that reclaim(me) cannot find.
        let config = self.layout.classes[class];
        let meta_base = start + self.layout.geometry[class].meta_offset;
        for slot in 0..config.slots_per_extent as usize {
            let meta = SlotMeta::new(0, ALLOCATED, FREE_LIST_END, self.me.raw());
            // SAFETY: [start, end) was reserved by the CAS above for this call alone, and no
            // extent offset names it yet, so nobody else reaches it.
            if !unsafe {
                self.shared()
                    .init(meta_base + slot * size_of::<SlotMeta>(), meta)
            } {
                forget(false);
                return Err(self.too_small());
            }
        }
        #[cfg(loom)]
        if let Some(cell) = self.cache[class].initialised.get(start / 64) {
            cell.with_mut(|_| ());
        }
        let shift = config.slots_per_extent.trailing_zeros();
        let slots_of = |extent: usize| {
            let first = (extent as u32) << shift;
            (first..first + config.slots_per_extent)
                .map(move |index| SlotHandle::from_parts(class as u16, index, 0))
        };
        {
            // R4: the publication and the private table's record of it under the table's lock,
            // so that no adoption (the auditor's restore, say) ever sees the extent published
            // but not yet this handle's; and the new slots in the ledger before they are
            // reachable, so that none is ever this handle's without its ledger saying so.
            let mut table = lock(&self.extents);
            loop {
                if slots_of(extent).any(|slot| !self.ledger.claim(slot)) {
                    slots_of(extent).for_each(|slot| {
                        self.ledger.release(slot);
                    });
                    drop(table);
                    forget(false);
                    return Err(SlabError::Held {
                        class: class as u16,
                        index: (extent as u32) << shift,
                    });
                }
                if let Err(error) = self.write_extent_header(class, extent as u16, start) {
                    slots_of(extent).for_each(|slot| {
                        self.ledger.release(slot);
                    });
                    drop(table);
                    forget(false);
                    return Err(error);
                }
                // R8: publish with Release: whoever reads the offset sees the initialised extent.
                let published = header.extent_offsets[extent].compare_exchange(
                    0,
                    start as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if published.is_ok() {
                    break;
                }
                slots_of(extent).for_each(|slot| {
                    self.ledger.release(slot);
                });
                match next_unpublished(extent + 1) {
                    Some(next) => extent = next,
                    None => {
                        drop(table);
                        forget(true);
                        return Ok(None);
                    }
                }
            }
            table.retain(|&reserved| reserved != (start, end));
            self.cache[class].extents[extent].store(start as u64, Ordering::Release);
        }
        header
            .total_slots
            .fetch_add(config.slots_per_extent, Ordering::Relaxed);
        if let Some(count) = self.shared().u32_at(self.layout.extent_count_offset) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // The first slot is the grower's (in its ledger already); the others leave the ledger
        // as they are freed, last first, so that the list hands them out in `list_order`.
        let first = (extent as u32) << shift;
        let order: Vec<u32> = list_order(config.slots_per_extent).skip(1).collect();
        for &local in order.iter().rev() {
            let slot = SlotHandle::from_parts(class as u16, first + local, 0);
            let freed = self.free_slot(slot, Ledgered::Release)?;
            if freed.wake_waiters {
                // R11: an allocator sleeps on the class's word: the caller wakes it.
                self.wakes.fetch_or(1 << class, Ordering::Release);
            }
        }
        // A slot taken: one more free of the class may keep (`crate::magazine`).
        self.magazines[class].note_alloc();
        Ok(slots_of(extent).next())
    }

    /// The end of every extent this participant knows and of its reservations in progress,
    /// and at least the initial size: where its next growth may start (R4). Every published
    /// extent is adopted first, if it fits the table.
    pub(super) fn private_end(&self, reservations: &[(usize, usize)]) -> usize {
        let mut end = self.layout.initial_size;
        for class in 0..self.layout.classes.len() {
            let size = self.layout.geometry[class].size;
            for extent in 0..self.layout.max_extents as usize {
                if let Ok(start) = self.adopt(class, extent, reservations) {
                    end = end.max(start + size);
                }
            }
        }
        reservations
            .iter()
            .fold(end, |end, &(_, stop)| end.max(stop))
    }

    /// Classes (bit `1 << class`) in which a growth by this handle freed slots while an
    /// allocator slept on the class's futex word: the caller should make the `FUTEX_WAKE`
    /// system call on each class's [`slot_available_word`](Self::slot_available_word), as it
    /// does after a [`Freed`] with `wake_waiters`. Cleared by the call.
    pub fn take_wakes(&self) -> u32 {
        if self.wakes.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.wakes.swap(0, Ordering::Acquire)
    }

    /// Write extent `extent`'s header at `start`: for inspectors; the allocator never reads it.
    pub(super) fn write_extent_header(
        &self,
        class: usize,
        extent: u16,
        start: usize,
    ) -> Result<(), SlabError> {
        let config = self.layout.classes[class];
        let geometry = self.layout.geometry[class];
        let header = ExtentHeader {
            class: class as u16,
            extent_index: extent,
            base_global_index: u32::from(extent) << config.slots_per_extent.trailing_zeros(),
            slot_count: config.slots_per_extent,
            slot_size: config.slot_size,
            meta_offset: geometry.meta_offset as u32,
            data_offset: geometry.data_offset as u32,
            _pad: [0; 32],
        };
        // SAFETY: the extent at `start` is not published yet (growth) or the whole allocator
        // is being built (init): nobody else reaches these bytes.
        if unsafe { self.shared().init(start, header) } {
            Ok(())
        } else {
            Err(self.too_small())
        }
    }

    /// Adopt extent `extent` of `class` into the private table, under the table's lock (whose
    /// reservations in progress are `reservations`): its published offset is read once and
    /// checked (R3), and it must overlap no extent already adopted, of any class, and no
    /// reservation in progress (R4: an offset another process published over live memory is
    /// refused, never used).
    pub(super) fn adopt(
        &self,
        class: usize,
        extent: usize,
        reservations: &[(usize, usize)],
    ) -> Result<usize, Corruption> {
        let mut bad = Corruption::ExtentOffset {
            extent: extent as u32,
            offset: 0,
        };
        let cached = self.cache[class].extents.get(extent).ok_or(bad)?;
        let known = cached.load(Ordering::Acquire);
        if known != 0 {
            self.cache[class].touch(known as usize);
            return Ok(known as usize);
        }
        let header = self.header(class).map_err(|_| bad)?;
        // R8: Acquire pairs with the grower's Release publication.
        let offset = header.extent_offsets[extent].load(Ordering::Acquire);
        let size = self.layout.geometry[class].size as u64;
        bad = Corruption::ExtentOffset {
            extent: extent as u32,
            offset,
        };
        let valid = if extent == 0 {
            offset == self.layout.initial_extent_offsets[class] as u64
        } else {
            offset >= self.layout.initial_size as u64
                && offset.is_multiple_of(64)
                && offset
                    .checked_add(size)
                    .is_some_and(|end| end <= self.layout.max_size as u64)
        };
        if !valid || !self.shared().covers(offset as usize, size as usize) {
            return Err(bad);
        }
        if extent != 0 {
            let (start, end) = (offset as usize, (offset + size) as usize);
            let overlaps = |other: usize, len: usize| start < other + len && other < end;
            let adopted = (0..self.layout.classes.len()).any(|c| {
                let len = self.layout.geometry[c].size;
                self.cache[c]
                    .extents
                    .iter()
                    .map(|cell| cell.load(Ordering::Acquire) as usize)
                    .any(|other| other != 0 && overlaps(other, len))
            });
            let reserved = reservations
                .iter()
                .any(|&(other, stop)| overlaps(other, stop - other));
            if adopted || reserved {
                return Err(bad);
            }
        }
        cached.store(offset, Ordering::Release);
        self.cache[class].touch(offset as usize);
        Ok(offset as usize)
    }
}
