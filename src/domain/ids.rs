//! Names for the things the queue hands around, so that a delivery id can
//! never be passed where a message id or a lease token is expected. Each is
//! text on the wire and in both databases (`#[serde(transparent)]`,
//! `#[sqlx(transparent)]`), so the stored and served forms do not change.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            sqlx::Type, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(String);

        impl $name {
            /// The text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text form, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        // Reading an id as text is always fine (logs, labels, SQL); what
        // the type prevents is passing one kind of id where another is due.
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

/// A time-ordered UUIDv7 as text: sorts by creation time, which the
/// delivery list's cursor relies on.
fn time_ordered() -> String {
    uuid::Uuid::now_v7().to_string()
}

text_id!(
    /// A message: one accepted request.
    MessageId
);
text_id!(
    /// A delivery: one message for one sink. Also sent to the sink as the
    /// delivery id (`webhook-id`, `X-Hookrelay-Delivery`).
    DeliveryId
);
text_id!(
    /// Proof of one claim on a delivery; a completion must present it.
    LeaseToken
);
text_id!(
    /// A sink's name from the configuration (`[[sinks]] name`).
    SinkName
);
text_id!(
    /// A source's name from the configuration (`POST /hooks/<name>`).
    SourceName
);

impl MessageId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(time_ordered())
    }
}

impl DeliveryId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(time_ordered())
    }
}

impl LeaseToken {
    /// A new token. Random (v4): a token only has to be unguessable and
    /// unique, not ordered.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_their_text_on_the_wire() {
        let id = MessageId::from("0193-abc");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"0193-abc\"");
        let back: MessageId = serde_json::from_str("\"0193-abc\"").unwrap();
        assert_eq!(back, id);
        assert_eq!(id.to_string(), "0193-abc");
    }

    #[test]
    fn generated_ids_sort_by_creation() {
        let a = DeliveryId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = DeliveryId::generate();
        assert!(a < b, "{a} should sort before {b}");
        assert_ne!(LeaseToken::generate(), LeaseToken::generate());
    }
}
