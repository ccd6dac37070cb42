//! Wire types and the rules a new order must satisfy.
//!
//! As in `client-service`, the request type [`NewOrder`] has only `Option`
//! fields so that missing values are reported per field, and
//! [`NewOrder::validate`] reports every broken rule at once. On success it
//! yields a [`ValidOrder`] whose lines already carry the catalogue's names
//! and prices: the store only assigns an id.

use std::collections::HashMap;
use std::iter::Sum;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize, Serializer};
use service_kit::{ApiError, Validator, required_text};

use crate::store::Catalogue;

/// Accepted quantity per order line.
pub const QUANTITY_RANGE: RangeInclusive<i64> = 1..=1000;
/// Most lines one order may have.
pub const MAX_LINES: usize = 100;

/// An amount of money. Integer cents inside, so sums are exact; a decimal
/// number of currency units on the wire (`1999` cents → `19.99`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Price {
    cents: u64,
}

impl Price {
    pub const fn from_cents(cents: u64) -> Self {
        Self { cents }
    }

    pub const fn cents(self) -> u64 {
        self.cents
    }

    /// `self × quantity` (saturating: quantities are bounded far below overflow).
    pub const fn times(self, quantity: u32) -> Self {
        Self::from_cents(self.cents.saturating_mul(quantity as u64))
    }
}

impl Sum for Price {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        Self::from_cents(iter.map(Price::cents).fold(0, u64::saturating_add))
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Correctly rounded division + shortest round-trip formatting prints
        // exactly two decimals' worth (or fewer: 12.5) for any realistic amount.
        serializer.serialize_f64(self.cents as f64 / 100.0)
    }
}

/// A catalogue entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub price: Price,
}

/// One line of a placed order; name and price are copied from the catalogue
/// at placement time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: Price,
}

/// A placed order, as returned by the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: u64,
    pub user_id: u64,
    pub items: Vec<OrderLine>,
    /// Sum of `unit_price × quantity` over the lines.
    pub total: Price,
}

/// Body of `POST /orders`, before validation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewOrder {
    /// Signed so that `-1` is a validation error, not a type error.
    pub user_id: Option<i64>,
    pub items: Option<Vec<NewOrderLine>>,
}

/// One requested line of a [`NewOrder`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NewOrderLine {
    pub sku: Option<String>,
    pub quantity: Option<i64>,
}

/// A [`NewOrder`] that passed validation, priced from the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidOrder {
    user_id: u64,
    lines: Vec<OrderLine>,
}

impl ValidOrder {
    pub fn user_id(&self) -> u64 {
        self.user_id
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// Attaches an id and computes the total, making the stored form.
    pub fn into_order(self, id: u64) -> Order {
        let total = self
            .lines
            .iter()
            .map(|l| l.unit_price.times(l.quantity))
            .sum();
        Order {
            id,
            user_id: self.user_id,
            items: self.lines,
            total,
        }
    }
}

impl NewOrder {
    /// Checks every rule against `catalogue`; `Err` is a 422 listing each
    /// invalid field (`user_id`, `items`, `items[2].sku`, ...).
    pub fn validate(self, catalogue: &Catalogue) -> Result<ValidOrder, ApiError> {
        let mut v = Validator::default();
        let user_id = v.field("user_id", validate_user_id(self.user_id));
        let lines = match self.items {
            None => Err("is required".to_owned()),
            Some(items) if items.is_empty() => Err("must not be empty".to_owned()),
            Some(items) if items.len() > MAX_LINES => {
                Err(format!("must have at most {MAX_LINES} entries"))
            }
            Some(items) => Ok(validate_lines(&mut v, items, catalogue)),
        };
        let lines = v.field("items", lines).flatten();
        v.build(|| {
            Some(ValidOrder {
                user_id: user_id?,
                lines: lines?,
            })
        })
    }
}

fn validate_user_id(user_id: Option<i64>) -> Result<u64, String> {
    let user_id = user_id.ok_or("is required")?;
    u64::try_from(user_id)
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| "must be greater than 0".to_owned())
}

/// Validates each line, recording errors under `items[i].…`; `None` if any
/// line is invalid.
fn validate_lines(
    v: &mut Validator,
    items: Vec<NewOrderLine>,
    catalogue: &Catalogue,
) -> Option<Vec<OrderLine>> {
    let mut first_index_of_sku: HashMap<String, usize> = HashMap::new();
    let mut lines = Vec::with_capacity(items.len());
    let mut all_valid = true;
    for (i, line) in items.into_iter().enumerate() {
        let item = v.field(
            &format!("items[{i}].sku"),
            validate_sku(line.sku, catalogue).and_then(|item| {
                match first_index_of_sku.insert(item.sku.clone(), i) {
                    Some(first) => Err(format!("duplicates items[{first}].sku")),
                    None => Ok(item),
                }
            }),
        );
        let quantity = v.field(
            &format!("items[{i}].quantity"),
            validate_quantity(line.quantity),
        );
        match (item, quantity) {
            (Some(item), Some(quantity)) => lines.push(OrderLine {
                sku: item.sku.clone(),
                name: item.name.clone(),
                quantity,
                unit_price: item.price,
            }),
            _ => all_valid = false,
        }
    }
    all_valid.then_some(lines)
}

fn validate_sku(sku: Option<String>, catalogue: &Catalogue) -> Result<&Item, String> {
    let sku = required_text(sku, None)?;
    catalogue
        .get(&sku)
        .ok_or_else(|| format!("unknown sku {sku:?}; see GET /items"))
}

fn validate_quantity(quantity: Option<i64>) -> Result<u32, String> {
    let quantity = quantity.ok_or("is required")?;
    if !QUANTITY_RANGE.contains(&quantity) {
        return Err(format!(
            "must be between {} and {}",
            QUANTITY_RANGE.start(),
            QUANTITY_RANGE.end()
        ));
    }
    u32::try_from(quantity).map_err(|_| "out of range".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_serializes_as_decimal_units() {
        let json = |cents| serde_json::to_string(&Price::from_cents(cents)).unwrap();
        assert_eq!(json(1999), "19.99");
        assert_eq!(json(1250), "12.5");
        assert_eq!(json(400), "4.0");
        assert_eq!(json(1999 * 3), "59.97");
    }

    #[test]
    fn total_is_exact_sum_of_lines() {
        let catalogue = Catalogue::seeded();
        let order = NewOrder {
            user_id: Some(7),
            items: Some(vec![
                NewOrderLine {
                    sku: Some("TEE-003".into()),
                    quantity: Some(3),
                },
                NewOrderLine {
                    sku: Some(" MUG-002 ".into()),
                    quantity: Some(1),
                },
            ]),
        }
        .validate(&catalogue)
        .unwrap()
        .into_order(1);
        assert_eq!(order.user_id, 7);
        assert_eq!(order.items[1].sku, "MUG-002");
        assert_eq!(order.total, Price::from_cents(3 * 1999 + 1250));
    }
}
