//! "More activity than usual", defined: which days of a Device stand far above its own typical
//! day, and how far.
//!
//! The rule, over a Device's daily record counts (zeros included) from its first day with a
//! record to the last day of the answer:
//!
//! - no verdict before [`MIN_DAYS`] days: a new Device has no "usual" yet;
//! - `median` and `MAD` (median absolute deviation) of those counts: both robust, so one burst
//!   barely moves the baseline it is judged against (a mean and standard deviation would be
//!   dragged up by the very day in question);
//! - a day is flagged when `count > max(K x median, median + M x MAD, median + MIN_EXCESS)`: `K`
//!   says "several times a normal day", `M x MAD` scales with how variable the Device is, and
//!   `MIN_EXCESS` keeps a quiet Device (median 0 or 1) from being flagged for a handful of records;
//! - a flagged day's score is `(count - median) / max(MAD, 1)`, a robust z-score.
//!
//! The same rule judges each of a Device's daily series ([`assess`]): all its records, the
//! alerts it raised (DeviceAlert and DCCAlert records: a burst of alerts inside a normal total is
//! still a burst), and the records other Users sent about it. A Device that went quiet is the
//! other side ([`quiet`]): a run of at least [`QUIET_MIN_RUN`] days each below
//! [`QUIET_FRACTION`] of its median day, on a Device whose median day is at least
//! [`QUIET_MIN_MEDIAN`] records (below that, a day without records is ordinary).
//!
//! Pure: counts in, verdict out; the ranking of Devices lives with the summary.

/// Times a typical day's count before a day can count as unusual.
pub const K: f64 = 3.0;
/// Median absolute deviations above the median before a day can count as unusual. Unscaled, so
/// 5 MAD is about 3.4 standard deviations for normally distributed counts.
pub const M: f64 = 5.0;
/// Records above the median before a day can count as unusual.
pub const MIN_EXCESS: f64 = 10.0;
/// Days of history (from the Device's first record) before any day is flagged.
pub const MIN_DAYS: usize = 7;

/// A Device's typical day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    pub median: f64,
    pub mad: f64,
    /// Counts above this are flagged.
    pub threshold: f64,
}

/// One flagged day: its index in the counts, its count and its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flag {
    pub day: usize,
    pub count: u64,
    pub score: f64,
}

/// The verdict on one Device's days.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// `None` when there are fewer than [`MIN_DAYS`] days.
    pub baseline: Option<Baseline>,
    /// Flagged days, in day order.
    pub flags: Vec<Flag>,
}

impl Verdict {
    /// The most recent flagged day.
    pub fn latest(&self) -> Option<&Flag> {
        self.flags.last()
    }
}

/// Judges a Device's daily counts, oldest first.
pub fn assess(daily: &[u64]) -> Verdict {
    if daily.len() < MIN_DAYS {
        return Verdict {
            baseline: None,
            flags: Vec::new(),
        };
    }
    let median = median_of(daily.iter().map(|&c| c as f64).collect());
    let mad = median_of(daily.iter().map(|&c| (c as f64 - median).abs()).collect());
    let threshold = (K * median).max(median + M * mad).max(median + MIN_EXCESS);
    let flags = daily
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c as f64 > threshold)
        .map(|(day, &count)| Flag {
            day,
            count,
            score: (count as f64 - median) / mad.max(1.0),
        })
        .collect();
    Verdict {
        baseline: Some(Baseline { median, mad, threshold }),
        flags,
    }
}

/// A day below this fraction of the median day counts towards a quiet run ("well below usual":
/// a fifth, so a Device with 20 records on a typical day is quiet below 4).
pub const QUIET_FRACTION: f64 = 0.2;
/// The median day a Device needs before it can go quiet: a Device with a couple of records a
/// day often has days without any.
pub const QUIET_MIN_MEDIAN: f64 = 5.0;
/// Consecutive quiet days before they count as a run: one slow day is not a Device gone quiet.
pub const QUIET_MIN_RUN: usize = 3;

/// A run of quiet days: the index of its first day, its length and the records in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietRun {
    pub first: usize,
    pub days: usize,
    pub records: u64,
}

/// When and how a Device went quiet.
#[derive(Clone, Debug, PartialEq)]
pub struct Quiet {
    /// The median day over all of the Device's days (zeros and the quiet days included: robust
    /// while the quiet days are fewer than half).
    pub median: f64,
    /// Days with fewer records than this are quiet: `QUIET_FRACTION x median`.
    pub below: f64,
    /// The runs, in day order.
    pub runs: Vec<QuietRun>,
}

/// Judges whether a Device went quiet: `None` before [`MIN_DAYS`] days or when its median day is
/// below [`QUIET_MIN_MEDIAN`]; otherwise every run of at least [`QUIET_MIN_RUN`] consecutive
/// days each with fewer than `QUIET_FRACTION x median` records (strictly fewer, so a Device with
/// a median of 5 is quiet on days without a record).
pub fn quiet(daily: &[u64]) -> Option<Quiet> {
    if daily.len() < MIN_DAYS {
        return None;
    }
    let median = median_of(daily.iter().map(|&c| c as f64).collect());
    if median < QUIET_MIN_MEDIAN {
        return None;
    }
    let below = QUIET_FRACTION * median;
    let mut runs = Vec::new();
    let mut run: Option<QuietRun> = None;
    // One pass, with a sentinel day that is never quiet to close a run at the end.
    for (day, count) in daily.iter().copied().map(Some).chain([None]).enumerate() {
        match (count.filter(|&c| (c as f64) < below), run.as_mut()) {
            (Some(c), Some(r)) => {
                r.days += 1;
                r.records += c;
            }
            (Some(c), None) => {
                run = Some(QuietRun {
                    first: day,
                    days: 1,
                    records: c,
                })
            }
            (None, _) => {
                if let Some(r) = run.take().filter(|r| r.days >= QUIET_MIN_RUN) {
                    runs.push(r);
                }
            }
        }
    }
    Some(Quiet { median, below, runs })
}

/// The median (the mean of the middle two for an even length; 0 for none).
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged_days(daily: &[u64]) -> Vec<usize> {
        assess(daily).flags.iter().map(|f| f.day).collect()
    }

    #[test]
    fn a_burst_on_a_steady_device_is_flagged_and_scored() {
        let daily = [10, 12, 9, 11, 10, 10, 80];
        let v = assess(&daily);
        let b = v.baseline.unwrap();
        assert_eq!((b.median, b.mad), (10.0, 1.0));
        // max(3 x 10, 10 + 5 x 1, 10 + 10) = 30
        assert_eq!(b.threshold, 30.0);
        assert_eq!(
            v.flags,
            vec![Flag {
                day: 6,
                count: 80,
                score: 70.0
            }]
        );
    }

    #[test]
    fn the_threshold_is_strict_and_each_term_can_bind() {
        // K x median binds: 3 x 10 = 30; exactly 30 is not flagged, 31 is.
        assert!(flagged_days(&[10, 10, 10, 10, 10, 10, 30]).is_empty());
        assert_eq!(flagged_days(&[10, 10, 10, 10, 10, 10, 31]), vec![6]);
        // M x MAD binds for a variable Device: median 16, MAD 14 -> 16 + 70 = 86 (> 3 x 16).
        let daily = [2, 30, 2, 30, 2, 30, 2, 30, 16];
        let b = assess(&daily).baseline.unwrap();
        assert_eq!((b.median, b.mad), (16.0, 14.0));
        assert_eq!(b.threshold, 16.0 + 5.0 * 14.0);
        // MIN_EXCESS binds for a quiet Device: median 1, MAD 0 -> 11.
        let b = assess(&[1, 1, 1, 1, 1, 1, 1]).baseline.unwrap();
        assert_eq!(b.threshold, 11.0);
    }

    #[test]
    fn fewer_than_min_days_gives_no_verdict() {
        // One day, and a new Device with a busy start: nothing to compare with yet.
        for daily in [&[500][..], &[0, 0, 0, 0, 0, 900]] {
            let v = assess(daily);
            assert_eq!(v.baseline, None);
            assert!(v.flags.is_empty());
        }
        assert!(assess(&[]).flags.is_empty());
    }

    #[test]
    fn all_zero_and_flat_days_flag_nothing() {
        assert!(flagged_days(&[0; 30]).is_empty());
        assert!(flagged_days(&[40; 30]).is_empty());
    }

    #[test]
    fn a_quiet_device_needs_more_than_a_handful_to_be_flagged() {
        // Median 0: ten records on one day is within MIN_EXCESS, eleven is not.
        assert!(flagged_days(&[0, 0, 0, 1, 0, 0, 10]).is_empty());
        assert_eq!(flagged_days(&[0, 0, 0, 1, 0, 0, 11]), vec![6]);
    }

    #[test]
    fn one_burst_does_not_hide_another() {
        // Robust statistics: the first burst does not raise the bar for the second.
        let mut daily = vec![5u64; 20];
        daily[3] = 200;
        daily[19] = 60;
        assert_eq!(flagged_days(&daily), vec![3, 19]);
        assert_eq!(assess(&daily).latest().map(|f| f.day), Some(19));
    }

    fn quiet_runs(daily: &[u64]) -> Vec<(usize, usize, u64)> {
        quiet(daily).map_or_else(Vec::new, |q| {
            q.runs.iter().map(|r| (r.first, r.days, r.records)).collect()
        })
    }

    #[test]
    fn a_device_that_stops_is_quiet_from_the_day_it_stopped() {
        // Median 20, so a day below 4 is quiet; the last three days are 3, 0, 0.
        let daily = [20, 22, 19, 21, 20, 20, 20, 20, 3, 0, 0];
        let q = quiet(&daily).unwrap();
        assert_eq!((q.median, q.below), (20.0, 4.0));
        assert_eq!(quiet_runs(&daily), vec![(8, 3, 3)]);
    }

    #[test]
    fn a_quiet_run_needs_min_run_days_and_strictly_fewer_records() {
        // Two quiet days are a slow spell, not a run.
        assert!(quiet_runs(&[20, 20, 20, 20, 20, 20, 0, 0, 20]).is_empty());
        // Exactly the bar (4 of a median 20) is not quiet: the run is broken.
        assert!(quiet_runs(&[20, 20, 20, 20, 20, 20, 0, 4, 0, 20]).is_empty());
        // A run in the middle counts, and so does a second one.
        assert_eq!(
            quiet_runs(&[20, 20, 0, 1, 2, 20, 20, 20, 20, 20, 20, 20, 20, 20, 0, 0, 0, 0]),
            vec![(2, 3, 3), (14, 4, 0)]
        );
    }

    #[test]
    fn a_device_with_little_usual_activity_or_history_cannot_go_quiet() {
        // Median 4 (< QUIET_MIN_MEDIAN): days without records are ordinary for it.
        assert_eq!(quiet(&[4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4]), None);
        // Six days: no usual yet.
        assert_eq!(quiet(&[50, 50, 50, 0, 0, 0]), None);
        assert_eq!(quiet(&[]), None);
        // Median exactly 5 qualifies: quiet below 1 record, so on empty days only.
        assert_eq!(quiet_runs(&[5, 5, 5, 5, 5, 1, 0, 0, 0]), vec![(6, 3, 0)]);
    }

    #[test]
    fn a_device_quiet_for_most_of_the_window_is_its_usual() {
        // More quiet days than busy ones move the median to the quiet level: nothing to flag.
        assert_eq!(quiet(&[30, 30, 30, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn an_alert_burst_inside_a_normal_total_fires_on_alerts_only() {
        // Totals: 40 a day, the burst day too; alerts: 1 a day, 30 on day 8 (instead of requests).
        let totals = [40u64; 10];
        let mut alerts = [1u64; 10];
        alerts[8] = 30;
        assert!(assess(&totals).flags.is_empty());
        assert_eq!(assess(&alerts).flags.iter().map(|f| f.day).collect::<Vec<_>>(), vec![8]);
    }
}
