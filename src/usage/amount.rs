//! Exact money: fixed-point amounts in 10⁻¹² units of the currency, held in an `i128`.
//!
//! Why not `f64`: a million float additions drift, and totals must match an independent sum to the
//! cent. Why not a decimal crate: the export's amounts are plain decimal numbers (six places in
//! practice), a fixed scale of 12 places holds them exactly, and summing `i128`s is as fast as
//! addition gets (no per-row normalisation). `i128` at 10⁻¹² still holds 1.7 × 10²⁶ currency units.
//! A value with more than 12 decimal places is rounded at the 12th, half away from zero (an error
//! below 10⁻¹² per line item, far from the cent).

use std::fmt;

/// Decimal places of [`Amount`].
pub const SCALE: u32 = 12;
const ONE: i128 = 1_000_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub i128);

impl Amount {
    /// A JSON number's text (or a quoted decimal): `-12.5`, `"3.000001"`, `1.5E+2`. None if it
    /// is not a decimal number.
    pub fn parse(text: &str) -> Option<Amount> {
        let t = text.trim();
        let t = t
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(t)
            .trim();
        let (neg, t) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
            None => (t, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        // digits × 10^(exp − frac.len()), brought to 10⁻¹² units.
        let mut digits: i128 = 0;
        let mut count = 0u32;
        let mut shift: i32 = exp - frac.len() as i32 + SCALE as i32;
        for c in int.bytes().chain(frac.bytes()) {
            if !c.is_ascii_digit() {
                return None;
            }
            if count >= 36 {
                // Past i128's exact range: drop the digit and keep the magnitude.
                shift += 1;
                continue;
            }
            digits = digits * 10 + i128::from(c - b'0');
            if digits != 0 {
                count += 1;
            }
        }
        let units = if shift >= 0 {
            digits.checked_mul(10i128.checked_pow(shift as u32)?)?
        } else {
            let div = 10i128.checked_pow((-shift) as u32).unwrap_or(i128::MAX);
            let (q, r) = (digits / div, digits % div);
            if r * 2 >= div { q + 1 } else { q }
        };
        Some(Amount(if neg { -units } else { units }))
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// Rounded to `places` decimals, half away from zero, as a plain decimal string.
    pub fn round_to(self, places: u32) -> String {
        let places = places.min(SCALE);
        let div = 10i128.pow(SCALE - places);
        let abs = self.0.unsigned_abs() as i128;
        let (q, r) = (abs / div, abs % div);
        let rounded = if r * 2 >= div { q + 1 } else { q };
        let sign = if self.0 < 0 && rounded != 0 { "-" } else { "" };
        if places == 0 {
            return format!("{sign}{rounded}");
        }
        let p = 10i128.pow(places);
        format!(
            "{sign}{}.{:0width$}",
            rounded / p,
            rounded % p,
            width = places as usize
        )
    }

    /// To the cent: `1234.57`.
    pub fn cents(self) -> String {
        self.round_to(2)
    }

    /// Rounded to the cent, as a count of cents (for Parquet DECIMAL(38,2)).
    pub fn cents_i128(self) -> i128 {
        let div = ONE / 100;
        let (q, r) = (self.0 / div, self.0 % div);
        if r.abs() * 2 >= div {
            q + self.0.signum()
        } else {
            q
        }
    }
}

impl fmt::Display for Amount {
    /// Every digit, trailing zeros trimmed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.round_to(SCALE);
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_exactly() {
        let a = |s| Amount::parse(s).unwrap();
        assert_eq!(a("12.345678").0, 12_345_678_000_000);
        assert_eq!(a("\"0.1\"").0 * 3, a("0.3").0);
        assert_eq!(a("-1.5e2"), a("-150"));
        assert_eq!(a("1E-3").0, 1_000_000_000);
        assert_eq!(
            a("0.0000000000005").0,
            1,
            "rounded half away from zero at 12 places"
        );
        assert_eq!(a("7"), a("7.000"));
        assert!(Amount::parse("null").is_none());
        assert!(Amount::parse("1.2.3").is_none());
        assert!(Amount::parse("").is_none());
    }

    #[test]
    fn cents_round_half_away_from_zero() {
        let a = |s| Amount::parse(s).unwrap();
        assert_eq!(a("2.345").cents(), "2.35");
        assert_eq!(a("-2.345").cents(), "-2.35");
        assert_eq!(a("2.344999").cents(), "2.34");
        assert_eq!(a("-0.001").cents(), "0.00");
        assert_eq!(a("2.345").cents_i128(), 235);
        assert_eq!(a("-2.345").cents_i128(), -235);
        assert_eq!(a("10.250000").to_string(), "10.25");
        // A float sum of 0.1 ten times is not 1; this is.
        let mut t = Amount::default();
        for _ in 0..10 {
            t = t.checked_add(a("0.1")).unwrap();
        }
        assert_eq!(t.to_string(), "1");
    }
}
