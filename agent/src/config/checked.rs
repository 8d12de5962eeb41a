//! Values checked while the YAML parser still knows where they are.
//!
//! serde_yaml_ng gives an error the position of the innermost value being read when the error was
//! made. `#[serde(try_from)]` checks only after the value was read, so a failed check used to be
//! reported at the enclosing map (the app's first key). These helpers run the check inside the
//! value's own read, so `instances: 0` is reported on its own line, under `apps.web.instances`.

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Read a `Raw` of any shape (scalar, list or map), then turn it into a `T` or a located error.
pub fn any<'de, D, Raw, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    Raw: Deserialize<'de>,
    T: TryFrom<Raw, Error = String>,
{
    d.deserialize_any(Checked::<Raw, T> { expecting, _types: PhantomData })
}

/// Read a scalar as text (`30` too, so the check can say what is wrong with it), then check it.
pub fn text<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String, Error = String>,
{
    d.deserialize_str(Checked::<String, T> { expecting, _types: PhantomData })
}

struct Checked<Raw, T> {
    expecting: &'static str,
    _types: PhantomData<fn() -> (Raw, T)>,
}

impl<'de, Raw, T> Checked<Raw, T>
where
    Raw: Deserialize<'de>,
    T: TryFrom<Raw, Error = String>,
{
    fn check<D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::try_from(Raw::deserialize(d)?).map_err(de::Error::custom)
    }
}

impl<'de, Raw, T> Visitor<'de> for Checked<Raw, T>
where
    Raw: Deserialize<'de>,
    T: TryFrom<Raw, Error = String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Self::check(v.into_deserializer())
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Self::check(().into_deserializer())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        Self::check(SeqAccessDeserializer::new(seq))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        Self::check(MapAccessDeserializer::new(map))
    }
}
