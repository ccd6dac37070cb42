//! In-memory catalogue and order storage, and the shared handler state.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};

use service_kit::store::{IdTable, Shared};

use crate::model::{Item, NewOrder, NewOrderLine, Order, Price, ValidOrder};

/// The items that can be ordered, keyed (and listed) by sku. Read-only after
/// construction.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    items: BTreeMap<String, Item>,
}

impl Catalogue {
    pub fn new(items: impl IntoIterator<Item = Item>) -> Self {
        Self {
            items: items.into_iter().map(|i| (i.sku.clone(), i)).collect(),
        }
    }

    /// The demo catalogue.
    pub fn seeded() -> Self {
        Self::new(
            [
                ("BOOK-001", "The Rust Programming Language", 3999),
                ("MUG-002", "Ferris mug", 1250),
                ("TEE-003", "Gatehouse t-shirt", 1999),
                ("STICKER-004", "Sticker pack", 400),
            ]
            .map(|(sku, name, cents)| Item {
                sku: sku.into(),
                name: name.into(),
                price: Price::from_cents(cents),
            }),
        )
    }

    /// All items, by sku.
    pub fn list(&self) -> Vec<Item> {
        self.items.values().cloned().collect()
    }

    /// Exact (case-sensitive) lookup.
    pub fn get(&self, sku: &str) -> Option<&Item> {
        self.items.get(sku)
    }
}

/// The placed orders, under the ids the book gives them (never reused), listed by
/// id.
#[derive(Debug, Clone)]
pub struct OrderBook {
    orders: IdTable<Order>,
}

impl OrderBook {
    /// An empty book; the first order gets id 1.
    pub fn empty() -> Self {
        Self {
            orders: IdTable::new(),
        }
    }

    /// The demo orders (ids 1–2, for users 1 and 2), priced from `catalogue`.
    ///
    /// # Panics
    /// If `catalogue` lacks the seeded skus (only [`Catalogue::seeded`] is
    /// meant to be used here).
    pub fn seeded(catalogue: &Catalogue) -> Self {
        let line = |sku: &str, quantity| NewOrderLine {
            sku: Some(sku.into()),
            quantity: Some(quantity),
        };
        let mut book = Self::empty();
        for (user_id, items) in [
            (1, vec![line("BOOK-001", 1), line("STICKER-004", 2)]),
            (2, vec![line("MUG-002", 2)]),
        ] {
            let order = NewOrder {
                user_id: Some(user_id),
                items: Some(items),
            }
            .validate(catalogue)
            .expect("seed orders are valid");
            book.insert(order);
        }
        book
    }

    /// All orders, by ascending id.
    pub fn list(&self) -> Vec<Order> {
        self.orders.list()
    }

    pub fn get(&self, id: u64) -> Option<Order> {
        self.orders.get(id)
    }

    /// Stores `order` under the next id and returns it.
    pub fn insert(&mut self, order: ValidOrder) -> Order {
        self.orders.insert_with(|id| order.into_order(id))
    }
}

/// State shared by all handlers; cheap to clone.
///
/// The catalogue never changes, so it is a plain `Arc` that handlers read
/// without locking; the order book is [`Shared`] (see there for the lock).
#[derive(Debug, Clone)]
pub struct AppState {
    catalogue: Arc<Catalogue>,
    orders: Shared<OrderBook>,
}

impl AppState {
    pub fn new(catalogue: Catalogue, orders: OrderBook) -> Self {
        Self {
            catalogue: Arc::new(catalogue),
            orders: Shared::new(orders),
        }
    }

    /// The seeded catalogue and orders.
    pub fn seeded() -> Self {
        let catalogue = Catalogue::seeded();
        let orders = OrderBook::seeded(&catalogue);
        Self::new(catalogue, orders)
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn orders(&self) -> RwLockReadGuard<'_, OrderBook> {
        self.orders.read()
    }

    pub fn orders_mut(&self) -> RwLockWriteGuard<'_, OrderBook> {
        self.orders.write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_consistent() {
        let catalogue = Catalogue::seeded();
        let book = OrderBook::seeded(&catalogue);
        let orders = book.list();
        assert_eq!(orders.iter().map(|o| o.id).collect::<Vec<_>>(), [1, 2]);
        // 1 × 39.99 + 2 × 4.00
        assert_eq!(orders[0].total, Price::from_cents(4799));
        assert!(
            orders
                .iter()
                .flat_map(|o| &o.items)
                .all(|l| catalogue.get(&l.sku).is_some())
        );
    }

    #[test]
    fn catalogue_lists_by_sku() {
        let skus: Vec<_> = Catalogue::seeded()
            .list()
            .into_iter()
            .map(|i| i.sku)
            .collect();
        let mut sorted = skus.clone();
        sorted.sort();
        assert_eq!(skus, sorted);
        assert_eq!(skus.len(), 4);
    }
}
