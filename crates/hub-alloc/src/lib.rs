//! hub-alloc: a lock-free size-class slab allocator over a shared region that grows without
//! remapping and never loses a slot.
//!
//! Rule numbers (R1 to R14) in these docs and comments name sections of the hub's protocol,
//! `docs/PROTOCOL.md` in the hub's repository: the normative layout, rules and threat model.
//!
//! Every process of a hub maps one segment; large frame payloads live in its slots. This crate
//! is the allocator of those slots, shared by all the processes at once:
//!
//! - **Size classes** (the seed's five: 1 KiB to 16 MiB), each a tagged Treiber stack of free
//!   slots (R7) over up to [`MAX_EXTENTS_PER_CLASS`](hub_layout::MAX_EXTENTS_PER_CLASS)
//!   extents.
//! - **Slot states** `Free -> Allocated -> InFlight -> Free`, each transition a compare-and-swap
//!   of the state together with the generation (R5), and an owner who must free the slot next
//!   (R6).
//! - **Growth** (R8): a class that runs dry gets a new extent at the end of the region, reserved
//!   with a compare-and-swap, in address space every participant mapped up front.
//! - **Reclaim** (R10): everything a dead participant held goes back, including a slot it was
//!   in the middle of taking or freeing when it died (see [`Slab`]'s journal).
//! - **Distrust** (R3): every index, offset and link read from shared memory is checked against
//!   the private [`SlabLayout`] before use; corruption is a [`SlabError::Corrupt`], walks are
//!   bounded, and [`Slab::rebuild_free_list`] repairs a list.
//! - **Private truth** (R4): each handle keeps a ledger of the slots its owner holds, in its own
//!   memory. No shared word can make it hand out, accept, free or reclaim one of them twice
//!   ([`Slab::accept`], [`Slab::holds`]); growth goes where its private extent table says; and
//!   the host puts back the words it wrote ([`Slab::restore_constants`]) and the slots nobody
//!   can hold any more ([`Slab::orphans`], [`Slab::return_orphan`]).
//!
//! The allocator runs over any [`Region`]: hub-transport's file mapping, or a [`HeapRegion`] in
//! tests, benches and loom models.
//!
//! ```
//! use hub_alloc::{ClassConfig, HeapRegion, OwnerId, Slab, SlabLayout};
//!
//! let layout = SlabLayout::standalone(
//!     &[
//!         ClassConfig { slot_size: 64, slots_per_extent: 8 },
//!         ClassConfig { slot_size: 4096, slots_per_extent: 2 },
//!     ],
//!     4,
//!     2,
//! )?;
//! let region = HeapRegion::new(layout.initial_size(), layout.max_size());
//! // SAFETY: a fresh region nobody else uses.
//! let slab = unsafe { Slab::init(&region, layout, OwnerId::peer(1))? };
//! let slot = slab.alloc(1000)?;
//! assert_eq!(slot.class(), 1);
//! let bytes = slab.slot_data(slot)?;
//! // SAFETY: the slot is allocated to us and 4096 bytes long.
//! unsafe { bytes.as_ptr().write_bytes(0xab, 1000) };
//! let _ = slab.free(slot)?;
//! # Ok::<(), hub_alloc::SlabError>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
mod layout;
mod ledger;
pub mod lock;
mod magazine;
mod region;
pub mod shared;
mod slab;
#[cfg(all(test, not(loom)))]
mod tests;
pub mod wake;

#[cfg(all(test, loom))]
mod loom_tests;

pub use error::{Corruption, Refusal, SlabError};
pub use hub_layout::sync;
pub use layout::{ClassConfig, OwnerId, SlabLayout};
pub use region::{GrowError, HeapRegion, Region};
pub use slab::{
    ClassAudit, ClassStats, Freed, Orphan, RebuildReport, ReclaimReport, Slab, SlotHandle,
    SlotStatus,
};
pub use wake::{SEQUENCE_STEP, WAITER_BIT};
