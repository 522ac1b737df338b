//! How the request side is documented in `/openapi.json`: the two body schemas and the bounded
//! integer parameters. The rules themselves live in `model.rs` and are applied by the handlers,
//! so that every bad field is listed in one 422; the schemas here are built from the same
//! constants, so the document and the checks cannot drift apart.

use std::{borrow::Cow, marker::PhantomData, sync::OnceLock};

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromParameter, ParseResult, Type},
};

use crate::store::{DESCRIPTION_MAX, NAME_MAX};

/// The most items one page holds.
pub const LIMIT_MAX: i64 = 100;
/// The largest integer the API takes (offset, quantity) or documents (ids): 10^15, below 2^53
/// so that every JSON client (JavaScript's numbers included) reads it exactly, and short enough
/// that every parser of the OpenAPI document reads the bound exactly too.
pub const JSON_INT_MAX: i64 = 1_000_000_000_000_000;

/// Characters `str::trim` removes (Unicode `White_Space`), spelled for every regex dialect a
/// client may use (ECMA-262, Python, Rust): `\s` differs between them.
const SPACE: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
/// Control characters (`char::is_control`, Unicode `Cc`).
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

/// A name: after trimming, 1 to `NAME_MAX` characters and no control character.
pub fn name_pattern() -> String {
    let edge = format!("[^{SPACE}{CONTROL}]");
    let inner = format!("[^{CONTROL}]");
    let middle = NAME_MAX - 2;
    format!("^[{SPACE}]*{edge}({inner}{{0,{middle}}}{edge})?[{SPACE}]*$")
}

/// A description holds no NUL character (PostgreSQL text cannot store one).
pub const DESCRIPTION_PATTERN: &str = r"^[^\x00]*$";

fn integer(minimum: i64, maximum: i64) -> MetaSchema {
    MetaSchema {
        minimum: Some(minimum as f64),
        maximum: Some(maximum as f64),
        ..MetaSchema::new_with_format("integer", "int64")
    }
}

fn fields(name_required: bool) -> MetaSchema {
    static NAME_DOC: OnceLock<String> = OnceLock::new();
    let name_doc = NAME_DOC.get_or_init(|| {
        format!("1 to {NAME_MAX} characters after trimming, no control characters.")
    });
    let name = MetaSchema {
        description: Some(if name_required {
            name_doc.as_str()
        } else {
            "As for ItemInput; not null."
        }),
        pattern: Some(name_pattern()),
        ..MetaSchema::new("string")
    };
    let description = MetaSchema {
        description: Some("Free text; `null` for none (on PATCH: clears it)."),
        max_length: Some(DESCRIPTION_MAX),
        pattern: Some(DESCRIPTION_PATTERN.to_owned()),
        nullable: true,
        ..MetaSchema::new("string")
    };
    let price = MetaSchema {
        description: Some("Zero or more."),
        minimum: Some(0.0),
        maximum: Some(f64::MAX),
        ..MetaSchema::new_with_format("number", "double")
    };
    let quantity = MetaSchema {
        description: Some("Zero or more; 0 when left out on POST and PUT."),
        ..integer(0, JSON_INT_MAX)
    };
    // A client may send back the read-only fields of a GET answer; whatever they hold is ignored.
    let ignored = || {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("Read-only: accepted and ignored."),
            ..MetaSchema::ANY
        }))
    };
    MetaSchema {
        required: if name_required {
            vec!["name", "price"]
        } else {
            Vec::new()
        },
        properties: vec![
            ("name", MetaSchemaRef::Inline(Box::new(name))),
            ("description", MetaSchemaRef::Inline(Box::new(description))),
            ("price", MetaSchemaRef::Inline(Box::new(price))),
            ("quantity", MetaSchemaRef::Inline(Box::new(quantity))),
            ("id", ignored()),
            ("created_at", ignored()),
            ("updated_at", ignored()),
        ],
        // Unknown fields are refused with a 422 naming them: `additionalProperties: false`,
        // which poem-openapi cannot express, is set by `api::document` (CLOSED_SCHEMAS).
        ..MetaSchema::new("object")
    }
}

/// Declares a body schema type: documentation only, never parsed (see `payload::JsonBody`).
macro_rules! body_schema {
    ($ty:ident, $name:literal, $doc:literal, $name_required:expr) => {
        #[doc = $doc]
        pub struct $ty;

        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Reference($name.into())
            }

            fn register(registry: &mut Registry) {
                registry.create_schema::<Self, _>($name.into(), |_| MetaSchema {
                    description: Some($doc),
                    ..fields($name_required)
                });
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}

body_schema!(
    ItemInput,
    "ItemInput",
    "The body of POST and PUT: every writable field (PUT replaces the whole item).",
    true
);
body_schema!(
    ItemPatch,
    "ItemPatch",
    "The body of PATCH: any subset of the writable fields; `description: null` clears it.",
    false
);

/// The documented range of an integer parameter.
pub trait Bounds: Send + Sync + 'static {
    const MIN: i64;
    const MAX: i64;
}

/// An integer parameter whose bounds are documented here and checked by the handler, which
/// answers 422 naming every parameter out of range (a parser-side validator would stop at the
/// first with a 400). A value that is not an int64 at all is a 400.
pub struct Bounded<B>(pub i64, PhantomData<B>);

impl<B> Bounded<B> {
    pub fn new(value: i64) -> Self {
        Self(value, PhantomData)
    }
}

impl<B: Bounds> Type for Bounded<B> {
    const IS_REQUIRED: bool = true;
    type RawValueType = i64;
    type RawElementValueType = i64;

    fn name() -> Cow<'static, str> {
        format!("integer_int64_{}_{}", B::MIN, B::MAX).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(integer(B::MIN, B::MAX)))
    }

    fn as_raw_value(&self) -> Option<&i64> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a i64> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl<B: Bounds> ParseFromParameter for Bounded<B> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value.parse().map(Self::new).map_err(ParseError::custom)
    }
}

/// `{id}`: ids start at 1; a smaller or larger one names no item (404).
pub struct IdBounds;
impl Bounds for IdBounds {
    const MIN: i64 = 1;
    const MAX: i64 = JSON_INT_MAX;
}

/// `limit`: page size.
pub struct LimitBounds;
impl Bounds for LimitBounds {
    const MIN: i64 = 1;
    const MAX: i64 = LIMIT_MAX;
}

/// `offset`: items to skip.
pub struct OffsetBounds;
impl Bounds for OffsetBounds {
    const MIN: i64 = 0;
    const MAX: i64 = JSON_INT_MAX;
}

/// The form of a cursor (`model::Cursor`); clients treat it as opaque.
pub const CURSOR_PATTERN: &str = "^[0-9a-f]{16}$";

/// `cursor`: any text is read, and text that is not a cursor is refused by the handler with a
/// 422 beside any other bad parameter.
pub struct CursorText(pub String);

impl Type for CursorText {
    const IS_REQUIRED: bool = true;
    type RawValueType = String;
    type RawElementValueType = String;

    fn name() -> Cow<'static, str> {
        "string_cursor".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(CURSOR_PATTERN.to_owned()),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&String> {
        Some(&self.0)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a String> + 'a> {
        Box::new(std::iter::once(&self.0))
    }
}

impl ParseFromParameter for CursorText {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self(value.to_owned()))
    }
}

pub type ItemId = Bounded<IdBounds>;
pub type Limit = Bounded<LimitBounds>;
pub type Offset = Bounded<OffsetBounds>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::payload::FromJsonBody;
    use crate::store::{ItemChanges, NewItem};
    use proptest::prelude::*;

    fn accepted(name: &str) -> bool {
        NewItem::from_json(serde_json::json!({"name": name, "price": 1})).is_ok()
    }

    /// The documented pattern and the validation agree on every name: a client that checks
    /// the pattern is never surprised by a 422, and one that does not is never let through.
    #[test]
    fn the_name_pattern_is_exactly_the_validation() {
        let pattern = regex::Regex::new(&name_pattern()).unwrap();
        let edges = [
            "a",
            " a ",
            "\t\nLamp\r\n",
            "\u{3000}x\u{3000}",
            "",
            " ",
            "\u{1c}a",
            "a\u{85}",
            "a\tb",
            "a\u{0}",
            "\u{a0}\u{a0}",
            "a\u{2028}b",
        ];
        for name in edges {
            assert_eq!(pattern.is_match(name), accepted(name), "{name:?}");
        }
        for len in [199, 200, 201] {
            let name = "x".repeat(len);
            assert_eq!(pattern.is_match(&name), len <= NAME_MAX, "{len}");
            assert_eq!(accepted(&name), len <= NAME_MAX);
            let padded = format!("  {name}  ");
            assert_eq!(pattern.is_match(&padded), accepted(&padded), "padded {len}");
        }
        let chars = prop::sample::select(vec![
            'a', 'Z', ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{0}', '\u{1c}', '\u{7f}',
            '\u{85}', '\u{9f}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200b}', '\u{2028}',
            '\u{3000}', 'é', '😀',
        ]);
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&prop::collection::vec(chars, 0..8), |chars| {
                let name: String = chars.into_iter().collect();
                prop_assert_eq!(pattern.is_match(&name), accepted(&name), "{:?}", name);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_description_pattern_is_the_nul_rule() {
        let pattern = regex::Regex::new(DESCRIPTION_PATTERN).unwrap();
        for text in ["", "plain", "tab\tand\nnewline", "nul\u{0}inside"] {
            let ok = ItemChanges::from_json(serde_json::json!({"description": text})).is_ok();
            assert_eq!(pattern.is_match(text), ok, "{text:?}");
        }
    }
}
