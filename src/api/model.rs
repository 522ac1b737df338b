//! What the API reads and writes, and the validation rules of docs/DESIGN.md §5.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde_json::{Map, Value};

use super::{payload::FromJsonBody, problem::FieldError};
use crate::store::{self, ItemChanges, NewItem};

pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 2000;
pub const LIMIT_MAX: i64 = 100;
pub const LIMIT_DEFAULT: i64 = 20;

/// A stored item.
#[derive(Debug, Clone, Object)]
pub struct Item {
    pub id: i64,
    pub name: String,
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

/// One page of items.
#[derive(Debug, Clone, Object)]
pub struct ItemList {
    pub items: Vec<Item>,
    pub total: u64,
    pub limit: i64,
    pub offset: i64,
}

/// The body of POST and PUT: every writable field (PUT replaces the whole item).
#[derive(Debug, Clone, Object)]
#[oai(rename = "ItemInput")]
pub struct ItemInputSchema {
    /// 1 to 200 characters after trimming.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// At most 2000 characters.
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    /// Zero or more.
    #[oai(validator(minimum(value = "0")))]
    pub price: f64,
    /// Zero or more; 0 when left out.
    #[oai(validator(minimum(value = "0")))]
    pub quantity: Option<i64>,
}

/// The body of PATCH: any subset of the writable fields; `description: null` clears it.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ItemPatch")]
pub struct ItemPatchSchema {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: Option<String>,
    #[oai(validator(max_length = 2000))]
    pub description: Option<String>,
    #[oai(validator(minimum(value = "0")))]
    pub price: Option<f64>,
    #[oai(validator(minimum(value = "0")))]
    pub quantity: Option<i64>,
}

/// Fields a client may send back unchanged after a GET; they are ignored.
const READ_ONLY: [&str; 3] = ["id", "created_at", "updated_at"];
const WRITABLE: [&str; 4] = ["name", "description", "price", "quantity"];

impl FromJsonBody for NewItem {
    type Schema = ItemInputSchema;

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
    type Schema = ItemPatchSchema;

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
                    self.error("name", "must be at most 200 characters");
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
                self.error("description", "must be at most 2000 characters");
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
                (Some(q), _) if q >= 0 => return Some(q),
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

/// Checks `limit` and `offset`, reporting both when both are wrong.
pub fn paging(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), Vec<FieldError>> {
    let limit = limit.unwrap_or(LIMIT_DEFAULT);
    let offset = offset.unwrap_or(0);
    let mut errors = Vec::new();
    if !(1..=LIMIT_MAX).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 100"));
    }
    if offset < 0 {
        errors.push(FieldError::new("offset", "must be zero or more"));
    }
    if errors.is_empty() {
        Ok((limit, offset))
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
            fn validation_never_panics(value in any_json(), limit in any::<Option<i64>>(), offset in any::<Option<i64>>()) {
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
                if let Ok((l, o)) = paging(limit, offset) {
                    prop_assert!((1..=LIMIT_MAX).contains(&l) && o >= 0);
                }
            }
        }
    }

    #[test]
    fn paging_is_bounded() {
        assert_eq!(paging(None, None), Ok((20, 0)));
        assert_eq!(paging(Some(100), Some(5)), Ok((100, 5)));
        assert_eq!(
            fields(paging(Some(0), Some(-1)).unwrap_err()),
            ["limit", "offset"]
        );
        assert_eq!(fields(paging(Some(101), None).unwrap_err()), ["limit"]);
    }
}
