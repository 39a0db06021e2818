//! Time for bundles: a bundle's `expires` is whole seconds since the Unix epoch (UTC), written and
//! shown as RFC 3339 (`2026-01-31T00:00:00Z`) for people. No time zones, no leap seconds: the
//! manifest holds the number, and the text is only ever UTC.

use std::time::{SystemTime, UNIX_EPOCH};

/// The last second RFC 3339 can write with a four-digit year: 9999-12-31T23:59:59Z.
const MAX_RFC3339: u64 = 253_402_300_799;

/// Seconds since the Unix epoch now (0 if the clock is before it).
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `secs` as RFC 3339 UTC, e.g. `2026-01-31T00:00:00Z`; past year 9999, `+<secs>s`.
pub fn rfc3339(secs: u64) -> String {
    if secs > MAX_RFC3339 {
        return format!("+{secs}s");
    }
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A point in time: unix seconds (`1767225600`) or RFC 3339 UTC (`2026-01-01T00:00:00Z`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not unix seconds or an RFC 3339 UTC time like 2026-01-31T00:00:00Z");
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| bad());
    }
    let b = s.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return Err(bad());
    }
    let num = |from: usize, to: usize| s[from..to].parse::<u32>().map_err(|_| bad());
    let (y, mo, d, h, mi, se) = (
        num(0, 4)?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
    );
    if y < 1970 || !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59 {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(y), mo, d) as u64;
    Ok(days * 86_400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(se))
}

/// A span of time in seconds: a positive whole number with a unit, `d`, `h`, `m` or `s` (`90d`).
pub fn parse_span(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a span like 90d, 12h, 30m or 3600s");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(0) => Err(format!("{s:?} must be greater than zero")),
        Some(secs) => Ok(secs),
        None => Err(format!("{s:?} is too long")),
    }
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_both_ways() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_767_225_599, "2025-12-31T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (MAX_RFC3339, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339(secs), text);
            assert_eq!(parse_time(text), Ok(secs), "{text}");
        }
        assert_eq!(rfc3339(MAX_RFC3339 + 1), format!("+{}s", MAX_RFC3339 + 1));
        // Every day for 500 years goes round.
        for day in (0..183_000u64).step_by(7) {
            assert_eq!(parse_time(&rfc3339(day * 86_400 + 3_723)), Ok(day * 86_400 + 3_723));
        }
    }

    #[test]
    fn times_are_unix_seconds_or_strict_utc_rfc3339() {
        assert_eq!(parse_time("1767225600"), Ok(1_767_225_600));
        for bad in [
            "",
            "-1",
            "2026-01-31",
            "2026-01-31T00:00:00",
            "2026-01-31T00:00:00+01:00",
            "2026-01-31t00:00:00z",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-01-31T24:00:00Z",
            "2026-01-31T23:59:60Z",
            "99999999999999999999999",
            "2026-1-31T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans() {
        assert_eq!(parse_span("90d"), Ok(90 * 86_400));
        assert_eq!(parse_span("12h"), Ok(12 * 3600));
        assert_eq!(parse_span("30m"), Ok(1800));
        assert_eq!(parse_span("3600s"), Ok(3600));
        for bad in ["", "90", "d", "0d", "-1d", "1w", "1.5d", "999999999999999999d"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }
}
