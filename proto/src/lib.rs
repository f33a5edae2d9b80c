//! The wire format of scorecard-fleet, shared by every service.
//!
//! - [`v1`]: the protobuf messages (`WorkItem`, `ScoreResult`, `WorkFailure`), generated from
//!   `proto/` into `src/gen/` (committed; `tests/codegen.rs` fails when it drifts), with the
//!   protobuf JSON mapping for hand-written messages.
//! - [`repo`]: the validated repository name every door parses.
//! - [`scorecard`]: scorecard's JSON output and its conversion to `ScoreResult`.

pub mod repo;
pub mod scorecard;

pub use repo::{RepoName, RepoNameError};

/// Generated from `proto/scorecard/fleet/v1/fleet.proto`; never edit by hand.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    include!("gen/scorecard.fleet.v1.rs");
    include!("gen/scorecard.fleet.v1.serde.rs");
}

use chrono::{DateTime, Utc};
pub use pbjson_types::Timestamp;

/// A protobuf timestamp from a UTC time.
pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).expect("nanos < 1e9"),
    }
}

/// A UTC time from a protobuf timestamp; out-of-range values clamp to the epoch.
pub fn datetime(t: &Timestamp) -> DateTime<Utc> {
    let nanos = u32::try_from(t.nanos).unwrap_or(0);
    DateTime::from_timestamp(t.seconds, nanos).unwrap_or_default()
}
