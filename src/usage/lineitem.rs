//! One usage line item, read from a JSON object whose keys may be PascalCase or camelCase (and
//! renamed: `Unit`/`unitOfMeasure`): only the fields the summaries need, strings borrowed from the
//! line when they hold no escapes, amounts parsed from the number's text (never through a float),
//! every other field skipped unparsed.

use super::amount::Amount;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineItem<'a> {
    pub customer_id: Cow<'a, str>,
    pub customer_name: Cow<'a, str>,
    pub subscription_id: Cow<'a, str>,
    pub usage_date: Cow<'a, str>,
    pub meter_category: Cow<'a, str>,
    pub meter_name: Cow<'a, str>,
    pub unit: Cow<'a, str>,
    pub quantity: Option<Amount>,
    /// `BillingPreTaxTotal`: the cost in the billing currency, before tax.
    pub total: Option<Amount>,
    pub currency: Cow<'a, str>,
}

enum Field {
    CustomerId,
    CustomerName,
    SubscriptionId,
    UsageDate,
    MeterCategory,
    MeterName,
    Unit,
    Quantity,
    Total,
    Currency,
    Other,
}

/// Case-insensitive, checked by length first: most keys are skipped after one comparison.
fn field(k: &str) -> Field {
    let is = |name: &str| k.len() == name.len() && k.eq_ignore_ascii_case(name);
    match k.len() {
        4 if is("unit") => Field::Unit,
        8 if is("quantity") => Field::Quantity,
        9 if is("usageDate") => Field::UsageDate,
        9 if is("meterName") => Field::MeterName,
        10 if is("customerId") => Field::CustomerId,
        12 if is("customerName") => Field::CustomerName,
        13 if is("meterCategory") => Field::MeterCategory,
        13 if is("unitOfMeasure") => Field::Unit,
        14 if is("subscriptionId") => Field::SubscriptionId,
        15 if is("billingCurrency") => Field::Currency,
        18 if is("billingPreTaxTotal") => Field::Total,
        _ => Field::Other,
    }
}

/// A string value, borrowed when possible; null is empty; a number or bool is its text.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed("")))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed("")))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// An amount from its JSON text (`12.5` or `"12.5"`); null is absent.
fn amount<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Amount>, A::Error> {
    let raw: &'de serde_json::value::RawValue = map.next_value()?;
    let text = raw.get();
    if text == "null" || text == "\"\"" {
        return Ok(None);
    }
    Amount::parse(text)
        .map(Some)
        .ok_or_else(|| de::Error::custom("an amount that is not a decimal number"))
}

impl<'de> de::Deserialize<'de> for LineItem<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LineItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a usage line item (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut item = LineItem::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let text = |m: &mut A| m.next_value::<Text<'de>>().map(|t| t.0);
                    match field(&key.0) {
                        Field::CustomerId => item.customer_id = text(&mut map)?,
                        Field::CustomerName => item.customer_name = text(&mut map)?,
                        Field::SubscriptionId => item.subscription_id = text(&mut map)?,
                        Field::UsageDate => item.usage_date = text(&mut map)?,
                        Field::MeterCategory => item.meter_category = text(&mut map)?,
                        Field::MeterName => item.meter_name = text(&mut map)?,
                        Field::Unit => item.unit = text(&mut map)?,
                        Field::Currency => item.currency = text(&mut map)?,
                        Field::Quantity => item.quantity = amount(&mut map)?,
                        Field::Total => item.total = amount(&mut map)?,
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(item)
            }
        }
        d.deserialize_map(V)
    }
}

/// The fast path could not read the line; serde_json reads it (and says what is wrong with it).
struct Fallback;

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// The end of a string whose opening quote is at `i - 1`: (index of the closing quote, escaped?).
fn string_end(b: &[u8], i: usize) -> Result<(usize, bool), Fallback> {
    let mut j = i;
    let mut escaped = false;
    loop {
        let k = memchr::memchr2(b'"', b'\\', &b[j..]).ok_or(Fallback)? + j;
        if b[k] == b'"' {
            return Ok((k, escaped));
        }
        escaped = true;
        j = k + 2;
        if j > b.len() {
            return Err(Fallback);
        }
    }
}

/// Skip one value starting at `i`; the index after it.
fn skip_value(b: &[u8], i: usize) -> Result<usize, Fallback> {
    match b.get(i).ok_or(Fallback)? {
        b'"' => Ok(string_end(b, i + 1)?.0 + 1),
        b'{' | b'[' => {
            let mut depth = 0u32;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => j = string_end(b, j + 1)?.0,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Err(Fallback)
        }
        _ => {
            let n = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))
                .ok_or(Fallback)?;
            if n == 0 {
                return Err(Fallback);
            }
            Ok(i + n)
        }
    }
}

/// A flat scan of one object: keys compared case-insensitively, the wanted values sliced out of
/// the line, every other value skipped without being decoded. Anything unusual (an escape in a
/// wanted string or a key, a structural error) goes to serde_json instead.
fn text(s: &[u8]) -> Result<Cow<'_, str>, Fallback> {
    std::str::from_utf8(s)
        .map(Cow::Borrowed)
        .map_err(|_| Fallback)
}

/// A wanted string value (null is empty; a number or literal is its text).
fn string_of(raw: &[u8]) -> Result<Cow<'_, str>, Fallback> {
    match raw.first() {
        Some(b'"') if !raw[1..raw.len() - 1].contains(&b'\\') => text(&raw[1..raw.len() - 1]),
        Some(b'"') | Some(b'{' | b'[') => Err(Fallback),
        _ if raw == b"null" => Ok(Cow::Borrowed("")),
        _ => text(raw),
    }
}

fn amount_of(raw: &[u8]) -> Result<Option<Amount>, Fallback> {
    if raw == b"null" || raw == b"\"\"" {
        return Ok(None);
    }
    let t = std::str::from_utf8(raw).map_err(|_| Fallback)?;
    Amount::parse(t).map(Some).ok_or(Fallback)
}

fn scan(b: &[u8]) -> Result<LineItem<'_>, Fallback> {
    let mut item = LineItem::default();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(Fallback);
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return if ws(b, i + 1) == b.len() {
            Ok(item)
        } else {
            Err(Fallback)
        };
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(Fallback);
        }
        let (end, escaped) = string_end(b, i + 1)?;
        if escaped {
            return Err(Fallback);
        }
        let key = std::str::from_utf8(&b[i + 1..end]).map_err(|_| Fallback)?;
        i = ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return Err(Fallback);
        }
        i = ws(b, i + 1);
        let f = field(key);
        let start = i;
        i = skip_value(b, i)?;
        let raw = &b[start..i];
        match f {
            Field::CustomerId => item.customer_id = string_of(raw)?,
            Field::CustomerName => item.customer_name = string_of(raw)?,
            Field::SubscriptionId => item.subscription_id = string_of(raw)?,
            Field::UsageDate => item.usage_date = string_of(raw)?,
            Field::MeterCategory => item.meter_category = string_of(raw)?,
            Field::MeterName => item.meter_name = string_of(raw)?,
            Field::Unit => item.unit = string_of(raw)?,
            Field::Currency => item.currency = string_of(raw)?,
            Field::Quantity => item.quantity = amount_of(raw)?,
            Field::Total => item.total = amount_of(raw)?,
            Field::Other => {}
        }
        i = ws(b, i);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => {
                return if ws(b, i + 1) == b.len() {
                    Ok(item)
                } else {
                    Err(Fallback)
                };
            }
            _ => return Err(Fallback),
        }
    }
}

impl LineItem<'_> {
    /// One line of JSON (no trailing newline needed): a fast flat scan, with serde_json for any
    /// line it does not read plainly (escapes in the fields used, or a malformed line, which
    /// serde_json then reports).
    pub fn parse(line: &[u8]) -> Result<LineItem<'_>, serde_json::Error> {
        match scan(line) {
            Ok(item) => Ok(item),
            Err(Fallback) => serde_json::from_slice(line),
        }
    }

    /// The calendar day of `UsageDate` (`2026-12-03T00:00:00Z` → `2026-12-03`).
    pub fn day(&self) -> &str {
        self.usage_date.get(..10).unwrap_or(&self.usage_date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_in_any_case_and_under_both_names() {
        let pascal = br#"{"CustomerId":"c1","CustomerName":"Fabrikam","SubscriptionId":"s1","UsageDate":"2026-12-03T00:00:00Z","MeterCategory":"Storage","Unit":"1 GB","Quantity":2.5,"BillingPreTaxTotal":12.345678,"BillingCurrency":"EUR","Tags":{"a":[1,2]}}"#;
        let camel = br#"{"customerId":"c1","customerName":"Fabrikam","subscriptionId":"s1","usageDate":"2026-12-03T00:00:00Z","meterCategory":"Storage","unitOfMeasure":"1 GB","quantity":"2.5","billingPreTaxTotal":"12.345678","billingCurrency":"EUR","resellerMpnId":""}"#;
        let a = LineItem::parse(pascal).unwrap();
        let b = LineItem::parse(camel).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.total, Amount::parse("12.345678"));
        assert_eq!(a.unit, "1 GB");
        assert_eq!(a.day(), "2026-12-03");
        assert!(
            matches!(a.customer_id, Cow::Borrowed(_)),
            "no copy per line"
        );
        let weird = br#"{"CUSTOMERID":"c2","billingpretaxtotal":null}"#;
        let w = LineItem::parse(weird).unwrap();
        assert_eq!((w.customer_id.as_ref(), w.total), ("c2", None));
        assert!(LineItem::parse(br#"{"BillingPreTaxTotal":"abc"}"#).is_err());
        assert!(LineItem::parse(br#"[1,2]"#).is_err());
        assert!(LineItem::parse(br#"{"CustomerId":"c1""#).is_err());
    }

    #[test]
    fn the_fast_scan_agrees_with_serde_json() {
        let lines: &[&[u8]] = &[
            br#"{"CustomerId":"c1","Tags":{"a":"}","b":[1,{"c":"]"}]},"BillingPreTaxTotal":-1.5e1,"CustomerName":"A \"quoted\" name","BillingCurrency":"USD"}"#,
            br#"  { "customerId" : "c2" , "quantity" : null , "billingPreTaxTotal" : "0.000001", "AdditionalInfo": "x\\y" }  "#,
            b"{\"CustomerId\":\"Zo\xc3\xab\",\"BillingPreTaxTotal\":3,\"UsageDate\":null,\"Unit\":7}",
            br#"{}"#,
        ];
        for line in lines {
            let fast = scan(line).ok();
            let slow: LineItem = serde_json::from_slice(line).unwrap();
            if let Some(fast) = fast {
                assert_eq!(fast, slow, "{}", String::from_utf8_lossy(line));
            }
            assert_eq!(LineItem::parse(line).unwrap(), slow);
        }
        // The escaped name is not read by the scan; serde_json reads it.
        assert!(scan(lines[0]).is_err());
        assert!(scan(lines[1]).is_ok());
        for bad in [
            &br#"{"CustomerId":"c1""#[..],
            br#"{"CustomerId" "c1"}"#,
            br#"{"a":1}x"#,
            br#"{"a":}"#,
        ] {
            assert!(
                LineItem::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
