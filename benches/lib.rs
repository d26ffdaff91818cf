//! Shared baselines for the benches.
