//! What the API reads and writes, and the validation rules of docs/DESIGN.md §5.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde_json::{Map, Value};

use super::{payload::FromJsonBody, problem::FieldError, schema};
use crate::store::{self, ItemChanges, NewItem, DESCRIPTION_MAX, NAME_MAX};

pub use super::schema::{JSON_INT_MAX, LIMIT_MAX};
pub const LIMIT_DEFAULT: i64 = 20;

/// A stored item.
#[derive(Debug, Clone, Object)]
pub struct Item {
    pub id: i64,
    pub name: String,
    /// `null` when the item has none.
    #[oai(nullable)]
    pub description: Option<String>,
    pub price: f64,
    pub quantity: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<store::Item> for Item {
    fn from(m: store::Item) -> Self {
        Self {
            id: m.id,
            name: m.name,
            description: m.description,
            price: m.price,
            quantity: m.quantity,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// One page of items, oldest first.
#[derive(Debug, Clone, Object)]
pub struct ItemList {
    pub items: Vec<Item>,
    /// Every stored item; present only with `count=true`, because counting reads the whole
    /// table while a page reads only its rows.
    #[oai(skip_serializing_if_is_none)]
    pub total: Option<u64>,
    pub limit: i64,
    pub offset: i64,
    /// The URL of the next page (also in the `Link` header, `rel="next"`); `null` on the last.
    #[oai(nullable)]
    pub next: Option<String>,
    /// The opaque cursor of the next page, to pass as `cursor`; `null` on the last page.
    #[oai(nullable)]
    pub next_cursor: Option<String>,
}

/// A keyset position: the id of the last item of the previous page. Clients see it as opaque
/// text (`schema::CURSOR_PATTERN`): sixteen hex digits. Every string of that form is a valid
/// position, so only text of another form is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    pub fn encode(self) -> String {
        format!("{:016x}", self.0)
    }

    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let position = u64::from_str_radix(text, 16).ok()?;
        // Beyond the largest id: the page after it is empty, which is the right answer.
        Some(Self(i64::try_from(position).unwrap_or(i64::MAX)))
    }
}

/// A page request after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
    pub after: Option<Cursor>,
}

/// Fields a client may send back unchanged after a GET; they are ignored.
const READ_ONLY: [&str; 3] = ["id", "created_at", "updated_at"];
const WRITABLE: [&str; 4] = ["name", "description", "price", "quantity"];

impl FromJsonBody for NewItem {
    type Schema = schema::ItemInput;

    fn from_json(value: Value) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::new(value)?;
        let name = fields.name(true);
        let description = fields.description();
        let price = fields.price(true);
        let quantity = fields.quantity();
        fields.finish()?;
        Ok(NewItem {
            // `required` fields are Some unless an error was recorded, and finish() returned it.
            name: name.unwrap_or_default(),
            description: description.flatten(),
            price: price.unwrap_or_default(),
            quantity: quantity.unwrap_or(0),
        })
    }
}

impl FromJsonBody for ItemChanges {
    type Schema = schema::ItemPatch;

    fn from_json(value: Value) -> Result<Self, Vec<FieldError>> {
        let mut fields = Fields::new(value)?;
        let changes = ItemChanges {
            name: fields.name(false),
            description: fields.description(),
            price: fields.price(false),
            quantity: fields.quantity(),
        };
        fields.finish()?;
        Ok(changes)
    }
}

/// Walks a JSON object field by field, collecting every error instead of stopping at the first.
struct Fields {
    object: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    fn new(value: Value) -> Result<Self, Vec<FieldError>> {
        match value {
            Value::Object(object) => Ok(Self {
                object,
                errors: Vec::new(),
            }),
            _ => Err(vec![FieldError::new("$", "the body must be a JSON object")]),
        }
    }

    fn error(&mut self, field: &str, message: &str) {
        self.errors.push(FieldError::new(field, message));
    }

    fn name(&mut self, required: bool) -> Option<String> {
        match self.object.remove("name") {
            None | Some(Value::Null) if required => self.error("name", "is required"),
            None => {}
            Some(Value::String(s)) => {
                let trimmed = s.trim();
                let chars = trimmed.chars().count();
                if chars == 0 {
                    self.error("name", "must not be blank");
                } else if chars > NAME_MAX {
                    self.error("name", &format!("must be at most {NAME_MAX} characters"));
                } else if trimmed.chars().any(char::is_control) {
                    self.error("name", "must not contain control characters");
                } else {
                    return Some(trimmed.to_owned());
                }
            }
            Some(_) => self.error("name", "must be a string"),
        }
        None
    }

    /// `None`: absent; `Some(None)`: explicitly null (clears it).
    fn description(&mut self) -> Option<Option<String>> {
        match self.object.remove("description") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() > DESCRIPTION_MAX => {
                self.error(
                    "description",
                    &format!("must be at most {DESCRIPTION_MAX} characters"),
                );
                None
            }
            Some(Value::String(s)) if s.contains('\0') => {
                self.error("description", "must not contain NUL characters");
                None
            }
            Some(Value::String(s)) => Some(Some(s)),
            Some(_) => {
                self.error("description", "must be a string or null");
                None
            }
        }
    }

    fn price(&mut self, required: bool) -> Option<f64> {
        match self.object.remove("price") {
            None | Some(Value::Null) if required => self.error("price", "is required"),
            None => {}
            Some(Value::Number(n)) => match n.as_f64() {
                Some(p) if p.is_finite() && p >= 0.0 => return Some(p),
                Some(p) if p.is_finite() => self.error("price", "must be zero or more"),
                _ => self.error("price", "must be a finite number"),
            },
            Some(_) => self.error("price", "must be a number"),
        }
        None
    }

    fn quantity(&mut self) -> Option<i64> {
        match self.object.remove("quantity") {
            None => {}
            Some(Value::Null) => self.error("quantity", "must be an integer, not null"),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (Some(q), _) if (0..=JSON_INT_MAX).contains(&q) => return Some(q),
                (Some(q), _) if q > JSON_INT_MAX => self.error("quantity", "is too large"),
                (Some(_), _) => self.error("quantity", "must be zero or more"),
                (None, Some(_)) => self.error("quantity", "is too large"),
                (None, None) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                    self.error("quantity", "is out of range")
                }
                (None, None) => self.error("quantity", "must be an integer"),
            },
            Some(_) => self.error("quantity", "must be an integer"),
        }
        None
    }

    /// Any field left over is unknown; read-only fields of a GET answer are tolerated.
    fn finish(mut self) -> Result<(), Vec<FieldError>> {
        let mut unknown: Vec<String> = self
            .object
            .keys()
            .filter(|k| !READ_ONLY.contains(&k.as_str()) && !WRITABLE.contains(&k.as_str()))
            .cloned()
            .collect();
        unknown.sort();
        for key in unknown {
            let shown: String = key.chars().take(64).collect();
            self.errors
                .push(FieldError::new(&shown, "is not a known field"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Checks `limit`, `offset` and `cursor`, reporting every one that is wrong.
pub fn paging(
    limit: Option<i64>,
    offset: Option<i64>,
    cursor: Option<&str>,
) -> Result<Paging, Vec<FieldError>> {
    let limit = limit.unwrap_or(LIMIT_DEFAULT);
    let offset = offset.unwrap_or(0);
    let mut errors = Vec::new();
    if !(1..=LIMIT_MAX).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {LIMIT_MAX}"),
        ));
    }
    if !(0..=JSON_INT_MAX).contains(&offset) {
        errors.push(FieldError::new(
            "offset",
            format!("must be between 0 and {JSON_INT_MAX}"),
        ));
    }
    let after = match cursor.map(Cursor::decode) {
        Some(None) => {
            errors.push(FieldError::new(
                "cursor",
                "is not a cursor this service gave out",
            ));
            None
        }
        Some(after) => after,
        None => None,
    };
    if errors.is_empty() {
        Ok(Paging {
            limit,
            offset,
            after,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_item_is_trimmed_and_defaulted() {
        let item = NewItem::from_json(json!({"name": "  Lamp ", "price": 9.5})).unwrap();
        assert_eq!(item.name, "Lamp");
        assert_eq!(item.quantity, 0);
        assert_eq!(item.description, None);
    }

    #[test]
    fn every_bad_field_is_listed() {
        let err =
            NewItem::from_json(json!({"name": " ", "price": -1, "quantity": 1.5, "colour": 1}))
                .unwrap_err();
        assert_eq!(fields(err), ["name", "price", "quantity", "colour"]);
        let err = NewItem::from_json(json!({})).unwrap_err();
        assert_eq!(fields(err), ["name", "price"]);
        let err = NewItem::from_json(json!([1, 2])).unwrap_err();
        assert_eq!(fields(err), ["$"]);
    }

    #[test]
    fn patch_takes_any_subset_and_null_clears_description() {
        let changes = ItemChanges::from_json(json!({"description": null})).unwrap();
        assert_eq!(changes.description, Some(None));
        assert_eq!(changes.name, None);
        let err = ItemChanges::from_json(json!({"name": 3, "quantity": -2})).unwrap_err();
        assert_eq!(fields(err), ["name", "quantity"]);
    }

    /// The request parsing and validation layer never panics, whatever JSON arrives, and what it
    /// accepts is within the rules. 10,000 cases by default; `PROPTEST_CASES=1000000 cargo test
    /// --lib validation_never_panics` runs the long version.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn any_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                any::<String>().prop_map(serde_json::Value::String),
            ];
            let keys = prop_oneof![
                Just("name".to_owned()),
                Just("description".to_owned()),
                Just("price".to_owned()),
                Just("quantity".to_owned()),
                Just("id".to_owned()),
                any::<String>(),
            ];
            leaf.prop_recursive(3, 32, 6, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(keys.clone(), inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn cases() -> u32 {
            std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(10_000)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn validation_never_panics(value in any_json(), limit in any::<Option<i64>>(), offset in any::<Option<i64>>(), cursor in any::<Option<String>>()) {
                if let Ok(item) = NewItem::from_json(value.clone()) {
                    let chars = item.name.chars().count();
                    prop_assert!((1..=NAME_MAX).contains(&chars));
                    prop_assert!(item.price.is_finite() && item.price >= 0.0);
                    prop_assert!(item.quantity >= 0);
                    prop_assert!(item.description.as_ref().is_none_or(|d| d.chars().count() <= DESCRIPTION_MAX));
                }
                if let Err(errors) = ItemChanges::from_json(value) {
                    prop_assert!(!errors.is_empty());
                }
                if let Ok(p) = paging(limit, offset, cursor.as_deref()) {
                    prop_assert!((1..=LIMIT_MAX).contains(&p.limit) && (0..=JSON_INT_MAX).contains(&p.offset));
                    prop_assert!(p.after.is_none_or(|c| c.0 >= 0));
                }
            }
        }
    }

    #[test]
    fn paging_is_bounded() {
        let page = |limit, offset, after| Paging {
            limit,
            offset,
            after,
        };
        assert_eq!(paging(None, None, None), Ok(page(20, 0, None)));
        assert_eq!(paging(Some(100), Some(5), None), Ok(page(100, 5, None)));
        assert_eq!(
            fields(paging(Some(0), Some(-1), Some("zz")).unwrap_err()),
            ["limit", "offset", "cursor"]
        );
        assert_eq!(
            fields(paging(Some(101), None, None).unwrap_err()),
            ["limit"]
        );
        assert_eq!(
            fields(paging(None, Some(JSON_INT_MAX + 1), None).unwrap_err()),
            ["offset"]
        );
    }

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        for id in [0, 1, 42, i64::MAX] {
            assert_eq!(Cursor::decode(&Cursor(id).encode()), Some(Cursor(id)));
        }
        assert_eq!(Cursor(255).encode(), "00000000000000ff");
        assert_eq!(Cursor::decode("ffffffffffffffff"), Some(Cursor(i64::MAX)));
        for bad in [
            "",
            "ff",
            "00000000000000FF",
            "0000000000000000f",
            "+000000000000000",
            "0x00000000000000",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad:?}");
        }
    }
}
