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

impl v1::FailureClass {
    /// The class without its protobuf prefix (`TIMEOUT`), as the database, subjects and people
    /// spell it.
    pub fn name(self) -> &'static str {
        let full = self.as_str_name();
        full.strip_prefix("FAILURE_CLASS_").unwrap_or(full)
    }

    /// Parses `TIMEOUT`, `timeout` or `FAILURE_CLASS_TIMEOUT`.
    pub fn parse(s: &str) -> Option<Self> {
        let upper = s.trim().to_ascii_uppercase();
        let full = if upper.starts_with("FAILURE_CLASS_") {
            upper
        } else {
            format!("FAILURE_CLASS_{upper}")
        };
        Self::from_str_name(&full).filter(|c| *c != Self::Unspecified)
    }
}

#[cfg(test)]
mod tests {
    use super::v1::FailureClass;

    #[test]
    fn failure_class_names_round_trip() {
        assert_eq!(FailureClass::RateLimited.name(), "RATE_LIMITED");
        for class in [
            FailureClass::Timeout,
            FailureClass::Poison,
            FailureClass::ScanFailed,
        ] {
            assert_eq!(FailureClass::parse(class.name()), Some(class));
            assert_eq!(
                FailureClass::parse(&class.name().to_lowercase()),
                Some(class)
            );
        }
        assert_eq!(FailureClass::parse("unspecified"), None);
        assert_eq!(FailureClass::parse("nonsense"), None);
    }
}
