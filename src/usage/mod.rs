//! Customers' Azure usage and costs from the partner billing export: line items parsed as they
//! stream out of the gzip blobs, summed exactly per customer (and per subscription, meter category
//! or day), and written as a table, CSV, JSON or Parquet. Memory holds one total per group, never
//! the line items.

pub mod amount;
pub mod lineitem;
pub mod output;
pub mod stream;

use amount::Amount;
use lineitem::LineItem;
use std::collections::HashMap as StdHashMap;

/// FxHash (rustc's): the keys are GUIDs from Microsoft's export, hashed once or twice per line
/// item; SipHash's resistance to chosen keys buys nothing here and costs a few percent of a run.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type HashMap<K, V> = StdHashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Customer,
    Subscription,
    MeterCategory,
    Day,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Customer => "customer",
            GroupBy::Subscription => "subscription",
            GroupBy::MeterCategory => "meter-category",
            GroupBy::Day => "day",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Group {
    /// Customer name (customer, subscription), empty otherwise.
    name: String,
    /// The customer of a subscription.
    customer_id: String,
    /// Per billing currency: (currency, total, line items). Almost always one.
    totals: Vec<(String, Amount, u64)>,
}

impl Group {
    fn add(&mut self, currency: &str, amount: Amount) -> Result<(), Bad> {
        match self.totals.iter_mut().find(|(c, _, _)| c == currency) {
            Some((_, t, n)) => {
                *t = t.checked_add(amount).ok_or(Bad::Overflow)?;
                *n += 1;
            }
            None => self.totals.push((currency.to_string(), amount, 1)),
        }
        Ok(())
    }

    fn merge(&mut self, other: Group) -> Result<(), Bad> {
        if self.name.is_empty() {
            self.name = other.name;
        }
        for (c, t, n) in other.totals {
            match self.totals.iter_mut().find(|(cc, _, _)| *cc == c) {
                Some((_, tt, nn)) => {
                    *tt = tt.checked_add(t).ok_or(Bad::Overflow)?;
                    *nn += n;
                }
                None => self.totals.push((c, t, n)),
            }
        }
        Ok(())
    }
}

/// Why a line item cannot be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    NoTotal,
    Overflow,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bad::NoTotal => "a line item has no BillingPreTaxTotal",
            Bad::Overflow => "the total overflows",
        })
    }
}

/// Running totals of one or more blobs.
#[derive(Debug, Clone)]
pub struct Aggregate {
    by: GroupBy,
    customers: HashMap<String, Group>,
    /// The `--by` groups when they are not customers.
    groups: HashMap<String, Group>,
    pub lines: u64,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
}

fn entry<'m>(
    map: &'m mut HashMap<String, Group>,
    key: &str,
    name: &str,
    customer: &str,
) -> &'m mut Group {
    // Look up by &str first: no allocation for a group already seen (nearly every line).
    if !map.contains_key(key) {
        map.insert(
            key.to_string(),
            Group {
                name: name.to_string(),
                customer_id: customer.to_string(),
                totals: Vec::new(),
            },
        );
    }
    map.get_mut(key).expect("inserted above")
}

/// One row of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// Customer ID, subscription ID, meter category or day.
    pub key: String,
    /// The customer's name (customer and subscription summaries).
    pub name: String,
    /// The customer of a subscription (same as `key` for customers).
    pub customer_id: String,
    pub currency: String,
    pub total: Amount,
    pub lines: u64,
}

impl Aggregate {
    pub fn new(by: GroupBy) -> Self {
        Aggregate {
            by,
            customers: HashMap::default(),
            groups: HashMap::default(),
            lines: 0,
            first_day: None,
            last_day: None,
        }
    }

    pub fn by(&self) -> GroupBy {
        self.by
    }

    pub fn add(&mut self, item: &LineItem) -> Result<(), Bad> {
        let total = item.total.ok_or(Bad::NoTotal)?;
        let currency = item.currency.as_ref();
        entry(
            &mut self.customers,
            &item.customer_id,
            &item.customer_name,
            &item.customer_id,
        )
        .add(currency, total)?;
        let key = match self.by {
            GroupBy::Customer => None,
            GroupBy::Subscription => Some(item.subscription_id.as_ref()),
            GroupBy::MeterCategory => Some(item.meter_category.as_ref()),
            GroupBy::Day => Some(item.day()),
        };
        if let Some(key) = key {
            let (name, customer) = match self.by {
                GroupBy::Subscription => (item.customer_name.as_ref(), item.customer_id.as_ref()),
                _ => ("", ""),
            };
            entry(&mut self.groups, key, name, customer).add(currency, total)?;
        }
        let day = item.day();
        if !day.is_empty() {
            if self.first_day.as_deref().is_none_or(|f| day < f) {
                self.first_day = Some(day.to_string());
            }
            if self.last_day.as_deref().is_none_or(|l| day > l) {
                self.last_day = Some(day.to_string());
            }
        }
        self.lines += 1;
        Ok(())
    }

    pub fn merge(&mut self, other: Aggregate) -> Result<(), Bad> {
        for (map, theirs) in [
            (&mut self.customers, other.customers),
            (&mut self.groups, other.groups),
        ] {
            for (k, g) in theirs {
                match map.get_mut(&k) {
                    Some(mine) => mine.merge(g)?,
                    None => {
                        map.insert(k, g);
                    }
                }
            }
        }
        self.lines += other.lines;
        if let Some(d) = other.first_day
            && self.first_day.as_deref().is_none_or(|f| d.as_str() < f)
        {
            self.first_day = Some(d);
        }
        if let Some(d) = other.last_day
            && self.last_day.as_deref().is_none_or(|l| d.as_str() > l)
        {
            self.last_day = Some(d);
        }
        Ok(())
    }

    fn rows_of(map: &HashMap<String, Group>, by: GroupBy) -> Vec<SummaryRow> {
        let mut rows: Vec<SummaryRow> = map
            .iter()
            .flat_map(|(k, g)| {
                g.totals.iter().map(move |(c, t, n)| SummaryRow {
                    key: k.clone(),
                    name: g.name.clone(),
                    customer_id: g.customer_id.clone(),
                    currency: c.clone(),
                    total: *t,
                    lines: *n,
                })
            })
            .collect();
        if by == GroupBy::Day {
            rows.sort_by(|a, b| a.key.cmp(&b.key).then(a.currency.cmp(&b.currency)));
        } else {
            // Largest first; ties in a stable order.
            rows.sort_by(|a, b| {
                b.total
                    .cmp(&a.total)
                    .then_with(|| a.key.cmp(&b.key))
                    .then_with(|| a.currency.cmp(&b.currency))
            });
        }
        rows
    }

    /// Per customer, largest first.
    pub fn customers(&self) -> Vec<SummaryRow> {
        Self::rows_of(&self.customers, GroupBy::Customer)
    }

    /// Per `--by` group: largest first, or by date for days.
    pub fn rows(&self) -> Vec<SummaryRow> {
        match self.by {
            GroupBy::Customer => self.customers(),
            by => Self::rows_of(&self.groups, by),
        }
    }

    /// The grand total per currency.
    pub fn totals(&self) -> Vec<(String, Amount, u64)> {
        let mut all = Group::default();
        for g in self.customers.values() {
            // Sums of sums that already fit: an overflow here is impossible in practice.
            let _ = all.merge(g.clone());
        }
        all.totals.sort_by(|a, b| a.0.cmp(&b.0));
        all.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item<'a>(c: &'a str, sub: &'a str, day: &'a str, total: &str) -> LineItem<'a> {
        LineItem {
            customer_id: c.into(),
            customer_name: format!("name of {c}").into(),
            subscription_id: sub.into(),
            usage_date: day.into(),
            meter_category: "Storage".into(),
            total: Amount::parse(total),
            currency: "USD".into(),
            ..Default::default()
        }
    }

    #[test]
    fn totals_merge_exactly_across_blobs() {
        let mut a = Aggregate::new(GroupBy::Subscription);
        let mut b = Aggregate::new(GroupBy::Subscription);
        a.add(&item("c1", "s1", "2026-12-02T00:00:00Z", "0.1"))
            .unwrap();
        a.add(&item("c2", "s2", "2026-12-01T00:00:00Z", "5"))
            .unwrap();
        b.add(&item("c1", "s3", "2026-12-09T00:00:00Z", "0.2"))
            .unwrap();
        a.merge(b).unwrap();
        assert_eq!(a.lines, 3);
        let c = a.customers();
        assert_eq!(
            (c[0].key.as_str(), c[0].total.to_string()),
            ("c2", "5".into())
        );
        assert_eq!(
            (c[1].key.as_str(), c[1].total.to_string(), c[1].lines),
            ("c1", "0.3".into(), 2)
        );
        let s = a.rows();
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].customer_id, "c1");
        assert_eq!(a.first_day.as_deref(), Some("2026-12-01"));
        assert_eq!(a.last_day.as_deref(), Some("2026-12-09"));
        assert_eq!(a.totals()[0].1.to_string(), "5.3");
        let mut no_total = item("c", "s", "", "1");
        no_total.total = None;
        assert_eq!(a.add(&no_total), Err(Bad::NoTotal));
    }
}
