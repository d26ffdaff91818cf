//! hub-alloc: a lock-free size-class allocator over a shared region.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod region;

pub use hub_layout::sync;
pub use region::{GrowError, HeapRegion, Region};
