//! Identifiers. Everything a device creates offline gets a UUIDv7 (time-ordered, so indexes stay
//! append-mostly) and, for cases, a short code a worker can read out over the phone before the
//! server has issued an official number.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
    };
}

string_id!(
    /// An enrolled user (worker, supervisor, handler, administrator).
    UserId
);
string_id!(
    /// An enrolled device. One user may have several over time.
    DeviceId
);
string_id!(
    /// A grid: the patch of streets and compounds one worker is responsible for.
    GridId
);
string_id!(
    /// A case category from the server's catalogue.
    CategoryId
);
string_id!(
    /// A department cases are dispatched to (police, housing, …).
    DepartmentId
);
string_id!(
    /// A fixed patrol point inside a grid.
    PointId
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7())
            }
            pub fn parse(s: &str) -> Result<Self, uuid::Error> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A case, and the id of its Automerge document.
    CaseId
);
uuid_id!(
    /// One lifecycle event inside a case document.
    EventId
);
impl EventId {
    /// An id every server derives alike for one automatic step (`sync-server` escalation rules):
    /// the same step taken twice is the same event, which a case holds once.
    pub fn derived(digest: [u8; 16]) -> Self {
        Self(uuid::Builder::from_custom_bytes(digest).into_uuid())
    }
}

uuid_id!(
    /// An immutable record (patrol start/finish, check-in).
    RecordId
);

/// The short code a worker quotes while offline: the device's enrolment code and a per-device
/// counter, e.g. `K7Q2-0042`. Unique because the device code is unique and the counter is
/// persisted in the same transaction as the case it numbers.
pub fn case_code(device_code: &str, counter: u64) -> String {
    format!("{device_code}-{counter:04}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_time_ordered_v7() {
        let a = CaseId::generate();
        let b = CaseId::generate();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b, "v7 ids generated later sort later");
        assert_eq!(CaseId::parse(&a.to_string()).ok(), Some(a));
    }

    #[test]
    fn case_code_pads_counter() {
        assert_eq!(case_code("K7Q2", 42), "K7Q2-0042");
        assert_eq!(case_code("K7Q2", 123456), "K7Q2-123456");
    }
}
