//! hub-alloc
