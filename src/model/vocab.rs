//! Closed vocabularies with lenient parsing.
//!
//! Each vocabulary has canonical spellings (the spec's own, e.g. `test-taker`), optional
//! aliases and legacy spellings, ASCII case-insensitive matching, and an `Other` value for
//! anything outside it. Parsing reports whether the input used the canonical spelling, so
//! the caller can keep the raw spelling when it did not.

/// Result of parsing a vocabulary word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<T> {
    /// The recognized value, or the vocabulary's `Other`.
    pub value: T,
    /// True when the input was exactly the canonical spelling.
    pub canonical: bool,
}

/// Vocabulary values that may be `Other`.
pub trait Known: Copy {
    /// False for the `Other` value (a spelling outside the vocabulary).
    fn is_known(self) -> bool;
}

/// Declares a vocabulary enum: `Variant = "canonical" | "alias" ...`, plus `Other`.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $canonical:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value outside the vocabulary (the raw spelling is kept beside it).
            Other,
        }

        impl $name {
            /// Every value except `Other`, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical spelling (`other` for [`Self::Other`]).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $canonical, )+
                    $name::Other => "other",
                }
            }

            /// Parses leniently: canonical spellings first, then aliases, ignoring ASCII case.
            pub fn parse(raw: &str) -> $crate::model::vocab::Parsed<Self> {
                match raw {
                    $( $canonical => return $crate::model::vocab::Parsed { value: $name::$variant, canonical: true }, )+
                    _ => {}
                }
                $(
                    if raw.eq_ignore_ascii_case($canonical) $(|| raw.eq_ignore_ascii_case($alias))* {
                        return $crate::model::vocab::Parsed { value: $name::$variant, canonical: false };
                    }
                )+
                $crate::model::vocab::Parsed { value: $name::Other, canonical: false }
            }
        }

        impl $crate::model::vocab::Known for $name {
            fn is_known(self) -> bool {
                self != $name::Other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

pub(crate) use vocabulary;

#[cfg(test)]
mod tests {
    use crate::model::{AcsStatus, Action, ActionStatus, Actor, Status};

    #[test]
    fn canonical_alias_and_unknown_spellings() {
        let cases = [
            ("test-taker", Actor::TestTaker, true),
            ("Test-Taker", Actor::TestTaker, false),
            ("test_taker", Actor::TestTaker, false),
            ("deliver_fe", Actor::DeliverFe, false),
            ("security-plugin", Actor::SecurityPlugin, true),
            ("realtime", Actor::Realtime, true),
            ("", Actor::Other, false),
            ("test taker", Actor::Other, false),
            ("proctor ", Actor::Other, false),
        ];
        for (raw, value, canonical) in cases {
            let parsed = Actor::parse(raw);
            assert_eq!((parsed.value, parsed.canonical), (value, canonical), "{raw:?}");
        }
        assert_eq!(Action::parse("move").value, Action::Navigation);
        assert!(!Action::parse("move").canonical, "an alias keeps its raw spelling");
        assert_eq!(Action::parse("navigate").value, Action::Other);
        assert_eq!(AcsStatus::parse("complete").value, AcsStatus::Complete);
    }

    #[test]
    fn every_value_round_trips_through_its_spelling() {
        for actor in Actor::ALL {
            assert_eq!(Actor::parse(actor.as_str()).value, *actor);
        }
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()).value, *action);
        }
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()).value, *status);
            assert_eq!(ActionStatus::parse(status.as_str()).value, ActionStatus::Session(*status));
        }
        assert_eq!(Actor::Other.as_str(), "other");
        assert_eq!(serde_json::to_string(&Actor::DeliverFe).unwrap(), "\"deliver-fe\"");
    }
}
