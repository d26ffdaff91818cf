//! TODO

use crate::Settings;
use crate::common::Figures;
use crate::roles::Stop;

/// Run the scenario.
pub fn run(_settings: &Settings) -> Result<Figures, String> {
    Err("not written yet".into())
}

/// The peer role.
pub fn peer(_args: &[String]) -> Result<(), Stop> {
    Err(Stop::Failed("not written yet".into()))
}
