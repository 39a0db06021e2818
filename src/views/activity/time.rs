//! RFC 3339 timestamps, as far as the activity view needs them: the instant (for first and last)
//! and its UTC day (for daily counts). Anything else is "undated", never guessed.

/// An instant: seconds since the Unix epoch and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    pub secs: i64,
    pub nanos: u32,
}

impl Instant {
    /// Days since 1970-01-01, in UTC.
    pub fn day(self) -> i64 {
        self.secs.div_euclid(86_400)
    }

    /// RFC 3339 in UTC (`Z`), with the fraction only when there is one.
    pub fn to_rfc3339(self) -> String {
        let (date, rem) = (self.day(), self.secs.rem_euclid(86_400));
        let mut s = format!(
            "{}T{:02}:{:02}:{:02}",
            day_to_string(date),
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push('Z');
        s
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)` (RFC 3339 `date-time`; `t`, `z` and a
/// space for `T` allowed, as the RFC allows). A leap second (`:60`) counts as `:59`.
pub fn parse(s: &str) -> Option<Instant> {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<i64> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in b[at + 1..at + 1 + digits].iter().enumerate() {
            if i < 9 {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
        }
        at += 1 + digits;
    }
    let offset = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == at + 6 && b[at + 3] == b':' => {
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset * 60;
    Some(Instant { secs, nanos })
}

/// `YYYY-MM-DD` for days since 1970-01-01.
pub fn day_to_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms (proleptic Gregorian), days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_offsets_agree_on_the_instant_and_its_utc_day() {
        let z = parse("2026-11-01T09:30:00Z").unwrap();
        assert_eq!(z.secs, 1_793_525_400);
        assert_eq!(day_to_string(z.day()), "2026-11-01");
        // 00:30 in +01:00 is the previous UTC day.
        let plus = parse("2026-11-02T00:30:00+01:00").unwrap();
        assert_eq!(day_to_string(plus.day()), "2026-11-01");
        assert_eq!(plus.to_rfc3339(), "2026-11-01T23:30:00Z");
        let minus = parse("2026-11-01t23:30:00.250-02:00").unwrap();
        assert_eq!(minus.to_rfc3339(), "2026-11-02T01:30:00.25Z");
        assert!(parse("2026-11-01 09:30:00.123456789123z").is_some());
    }

    #[test]
    fn round_trips_across_eras_and_leap_days() {
        for s in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2000-02-29T12:00:00Z",
            "2024-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(parse(s).unwrap().to_rfc3339(), s);
        }
    }

    #[test]
    fn anything_else_is_undated() {
        for s in [
            "",
            "2026-11-01",
            "2026-11-01T09:30:00",
            "2026-13-01T09:30:00Z",
            "2026-02-29T09:30:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-01T24:00:00Z",
            "2026-11-01T09:30:00.Z",
            "2026-11-01T09:30:00+0100",
            "2026-11-01T09:30:00Zjunk",
            "+2026-11-01T09:30:00Z",
            "２０２６-11-01T09:30:00Z",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
