//! hub-transport: the segment, host and peer sessions, peer rings, futex signalling, liveness.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod futex;
pub mod mapping;
pub mod ring;
pub mod signal;

pub use hub_layout::sync;
