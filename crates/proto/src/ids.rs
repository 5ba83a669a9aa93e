//! Identifier newtypes. Each wraps a [`Uuid`] and prints as the canonical lower-case
//! hyphenated form, which is also what the HTTP API and the Globus Compute SDK expect.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The error for a string that is not a UUID, naming which kind of id was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: expected a UUID")]
pub struct Error {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh id: random, with its creation time in front (UUIDv7), so ids
            /// sort by age and an unknown id can be told apart from an expired one.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// When the id was made, in Unix microseconds (ids made by Ferry only).
            pub fn created_micros(&self) -> Option<u64> {
                let ts = self.0.get_timestamp()?;
                let (secs, nanos) = ts.to_unix();
                Some(secs * 1_000_000 + u64::from(nanos) / 1000)
            }

            /// What this id names, for error messages (`"task"`, `"endpoint"`...).
            pub const KIND: &'static str = $kind;
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| Error {
                    kind: $kind,
                    value: s.chars().take(64).collect(),
                })
            }
        }
    };
}

id_type!(
    /// One execution request of one function with one payload.
    TaskId,
    "task"
);
id_type!(
    /// A registered function (Python code or a shell command template).
    FunctionId,
    "function"
);
id_type!(
    /// A registered endpoint: the user's daemon on a cluster.
    EndpointId,
    "endpoint"
);
id_type!(
    /// A batch (session) of tasks submitted in one request.
    BatchId,
    "batch"
);
id_type!(
    /// A user: owner of functions, endpoints and tasks.
    UserId,
    "user"
);
id_type!(
    /// A task group: tasks that share a result queue (the Globus Compute `Executor`'s
    /// unit), possibly across several submissions.
    TaskGroupId,
    "task group"
);
id_type!(
    /// A manager process (one per node) connected to an endpoint.
    ManagerId,
    "manager"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_canonical_string() {
        let id = TaskId::new();
        let text = id.to_string();
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<TaskId>().unwrap(), id);
    }

    #[test]
    fn a_bad_id_names_its_kind() {
        let err = "nope".parse::<EndpointId>().unwrap_err();
        assert_eq!(err.to_string(), "invalid endpoint id \"nope\": expected a UUID");
    }
}
