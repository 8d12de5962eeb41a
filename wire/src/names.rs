//! Enums that travel as their names: in JSON, in SQLite, in environment variables and logs.
//!
//! Each is written once with [`named!`](crate::named): its variants and their snake_case names.
//! The macro gives `as_str`, `Display`, `FromStr`, serde and `KNOWN` (every variant but
//! `Unknown`), so a name is spelled in one place for the agent (which writes it) and the CLI
//! (which reads it).
//!
//! Every such enum has an `Unknown` variant: what a name this build does not know becomes when it
//! is *deserialised*, so a CLI older than its agent still reads an answer that carries a state
//! added later (it shows it as `unknown` and treats it as not fine). `FromStr` refuses unknown
//! names instead: the agent parses what it stored itself, and a name it does not know there is an
//! error, not a value. `Unknown` serialises as `unknown`; the agent never produces it.

use std::fmt;

/// A name that is none of an enum's (`FromStr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What the name was meant to be: `deploy state`, `trigger`...
    pub kind: &'static str,
    pub name: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} `{}`", self.kind, self.name)
    }
}

impl std::error::Error for UnknownName {}

/// Declares an enum carried by its names. Scripts and tests compare the values with the names
/// they see in JSON (`state == "live"`), so `PartialEq<&str>` is there too; code compares values.
#[macro_export]
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A name this build does not know (sent by a newer agent); never produced by the agent.
            Unknown,
        }

        impl $name {
            /// Every variant but `Unknown`.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The name, as stored and sent.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                    $name::Unknown => "unknown",
                }
            }

            /// The variant a name stands for, `Unknown` for a name this build does not know.
            pub fn from_name(name: &str) -> $name {
                name.parse().unwrap_or($name::Unknown)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownName;
            fn from_str(s: &str) -> Result<$name, $crate::UnknownName> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err($crate::UnknownName { kind: $kind, name: s.to_string() }),
                }
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let name = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                Ok($name::from_name(&name))
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    };
}
