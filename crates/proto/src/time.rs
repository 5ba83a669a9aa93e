//! Wall-clock time as microseconds since the Unix epoch: compact in records and frames,
//! shown to users as float seconds (the convention of `completion_t`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = u64;

/// The current wall-clock time.
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Float seconds, as the HTTP API shows times.
pub fn to_secs(micros: Micros) -> f64 {
    micros as f64 / 1e6
}
