//! Visitors that skip everything in a Portal body but `info.secret`, so
//! an unauthenticated request is checked without a parse tree.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// What a Portal body said about its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySecret {
    /// No `info.secret`.
    Absent,
    /// `info.secret` was a string (now removed from the document).
    Present(String),
    /// `info.secret` was there but not a string (now removed).
    WrongType,
}

/// `info.secret` of a JSON object, or [`BodySecret::Absent`].
pub fn body_secret(bytes: &[u8]) -> BodySecret {
    serde_json::from_slice::<Doc>(bytes)
        .map(|d| d.0)
        .unwrap_or(BodySecret::Absent)
}

struct Doc(BodySecret);
struct Info(BodySecret);
struct SecretValue(BodySecret);

impl<'de> de::Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doc;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Doc, A::Error> {
                let mut found = BodySecret::Absent;
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    if k == "info" {
                        found = m.next_value::<Info>()?.0;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Doc(found))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> de::Deserialize<'de> for Info {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Info;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Info, A::Error> {
                let mut found = BodySecret::Absent;
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    if k == "secret" {
                        found = m.next_value::<SecretValue>()?.0;
                    } else {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Info(found))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Info, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Info(BodySecret::Absent))
            }
            fn visit_str<E>(self, _: &str) -> Result<Info, E> {
                Ok(Info(BodySecret::Absent))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Info, E> {
                Ok(Info(BodySecret::Absent))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Info, E> {
                Ok(Info(BodySecret::Absent))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Info, E> {
                Ok(Info(BodySecret::Absent))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Info, E> {
                Ok(Info(BodySecret::Absent))
            }
            fn visit_unit<E>(self) -> Result<Info, E> {
                Ok(Info(BodySecret::Absent))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> de::Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E>(self, s: &str) -> Result<SecretValue, E> {
                Ok(SecretValue(BodySecret::Present(s.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SecretValue, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(SecretValue(BodySecret::WrongType))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<SecretValue, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(SecretValue(BodySecret::WrongType))
            }
            fn visit_bool<E>(self, _: bool) -> Result<SecretValue, E> {
                Ok(SecretValue(BodySecret::WrongType))
            }
            fn visit_i64<E>(self, _: i64) -> Result<SecretValue, E> {
                Ok(SecretValue(BodySecret::WrongType))
            }
            fn visit_u64<E>(self, _: u64) -> Result<SecretValue, E> {
                Ok(SecretValue(BodySecret::WrongType))
            }
            fn visit_f64<E>(self, _: f64) -> Result<SecretValue, E> {
                Ok(SecretValue(BodySecret::WrongType))
            }
            fn visit_unit<E>(self) -> Result<SecretValue, E> {
                Ok(SecretValue(BodySecret::WrongType))
            }
        }
        d.deserialize_any(V)
    }
}
