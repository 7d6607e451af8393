//! Newtype ids, so a user id is never passed where a conversation id belongs.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
        )]
        #[serde(transparent)]
        #[schema(minimum = 0)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                Self(v)
            }
        }
    };
}

id_type!(
    /// A user. `0` is the system sender (broadcasts posted with a service key).
    UserId
);
id_type!(
    /// A conversation (direct, group or broadcast audience).
    ConvId
);
id_type!(
    /// A friend request.
    RequestId
);
id_type!(
    /// A message's place in its conversation: 1, 2, 3, … without gaps.
    Seq
);

/// A user id naming a person (not the system's `0`): the schema of member lists.
#[derive(ToSchema)]
#[schema(minimum = 1)]
#[allow(dead_code)] // only its schema is used
pub struct MemberId(i64);

impl UserId {
    /// The system sender: broadcasts posted with a service key.
    pub const SYSTEM: UserId = UserId(0);
}
