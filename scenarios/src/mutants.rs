//! TODO

use crate::Settings;
use crate::common::Figures;

/// Run the scenario.
pub fn run(_settings: &Settings) -> Result<Figures, String> {
    Err("not written yet".into())
}
