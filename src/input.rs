//! Bounds on what users give and what files hold: day counts, GUIDs, pasted secrets, and date
//! arithmetic that reports an error instead of overflowing.

use crate::exit::UserError;
use time::{Duration, OffsetDateTime};

/// Longest `--overlap`: a key lives at most two years, so keeping an old one longer means nothing.
pub const MAX_OVERLAP_DAYS: u32 = 730;
/// Longest window of `check --warn-days` and `rotate --if-expiring-within` (ten years).
pub const MAX_WINDOW_DAYS: u32 = 3650;
/// Longest pasted secret or token line. Client secrets are about 40 characters; access tokens
/// run to a few thousand. Anything longer is not a credential.
pub const MAX_SECRET_CHARS: usize = 512;
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// `at + days`, or an error naming `what` when the date would leave the calendar `time` knows.
pub fn add_days(at: OffsetDateTime, days: i64, what: &str) -> Result<OffsetDateTime, UserError> {
    days.checked_mul(86_400)
        .map(Duration::seconds)
        .and_then(|d| at.checked_add(d))
        .ok_or_else(|| {
            UserError::usage(format!(
                "{what}: {days} days from {} is out of range",
                at.date()
            ))
            .hint("give a day count that ends within the next few years")
        })
}

/// `now + days` (see [`add_days`]).
pub fn days_from_now(days: i64, what: &str) -> Result<OffsetDateTime, UserError> {
    add_days(OffsetDateTime::now_utc(), days, what)
}

/// A GUID in its canonical 8-4-4-4-12 form (any case, surrounding blanks ignored), lower-cased.
/// Braces, `urn:uuid:`, bare hex and other forms `uuid` would accept are refused: Microsoft's
/// services take the canonical form only, and a value refused after a full sign-in wastes it.
pub fn canonical_guid(raw: &str) -> Option<String> {
    let s = raw.trim();
    let groups: Vec<&str> = s.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(shape)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| s.to_ascii_lowercase())
}

/// Check a GUID flag or prompt value; exit 2 naming `what` otherwise.
pub fn require_guid(raw: &str, what: &str) -> Result<String, UserError> {
    canonical_guid(raw).ok_or_else(|| {
        let shown: String = raw.trim().chars().take(80).collect();
        UserError::usage(format!("{what} is not a GUID: {shown:?}"))
            .hint("give it as 8-4-4-4-12 hex digits, e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_arithmetic_never_panics_over_any_day_count() {
        let now = OffsetDateTime::now_utc();
        // Every edge, then a deterministic sweep of magnitudes and signs (a property test
        // without a crate: the property is "an answer or an error, never a panic", and
        // "an answer is exactly `days` later").
        let mut counts = vec![
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
            0,
            1,
            -1,
            730,
            3_652_059,
            3_652_060,
            10_000_000,
            u32::MAX as i64,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            // xorshift: cheap, reproducible, covers every bit width
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let shift = (x % 64) as u32;
            counts.push((x as i64) >> shift);
        }
        for days in counts {
            match add_days(now, days, "--overlap") {
                Ok(t) => assert_eq!((t - now).whole_days(), days, "{days}"),
                Err(e) => {
                    assert_eq!(e.exit, crate::exit::Exit::Usage);
                    assert!(e.message.contains("out of range"), "{}", e.message);
                    // time's calendar spans ±9999 years: only counts that leave it fail.
                    assert!(days.unsigned_abs() > 700_000, "{days} should fit");
                }
            }
        }
    }

    #[test]
    fn guids_only_in_canonical_form() {
        assert_eq!(
            canonical_guid(" 72F988BF-86F1-41AF-91AB-2D7CD011DB47\n").as_deref(),
            Some("72f988bf-86f1-41af-91ab-2d7cd011db47")
        );
        for bad in [
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "urn:uuid:72f988bf-86f1-41af-91ab-2d7cd011db47",
            "72f988bf86f141af91ab2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db4",
            "72f988bf-86f1-41af-91ab-2d7cd011db470",
            "72f988bf-86f1-41af-91ab_2d7cd011db47",
            "g2f988bf-86f1-41af-91ab-2d7cd011db47",
            "72f988bf-86f1-41af-91ab-2d7cd011db47-",
            "",
            "+2f988bf-86f1-41af-91ab-2d7cd011db47",
        ] {
            assert_eq!(canonical_guid(bad), None, "{bad}");
            assert_eq!(
                require_guid(bad, "--app-id").unwrap_err().exit,
                crate::exit::Exit::Usage
            );
        }
    }
}
