//! Cron schedules in the grammar Kubernetes accepts (robfig/cron's standard parser): five fields
//! (minute, hour, day of month, month, day of week) of `*`/`?`, values, names (`JAN`, `MON`),
//! ranges, steps and lists, or a macro (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight`, `@hourly`), evaluated in a time zone.
//!
//! As in robfig/cron, when both day fields are restricted a day matching either runs
//! (`0 0 1 * MON` is the 1st and every Monday); when either is `*` both must match. A time that
//! a daylight-saving jump skips does not run; a time that a jump back repeats runs once.

use k8s_openapi::jiff::civil::{Date, DateTime};
use k8s_openapi::jiff::tz::{AmbiguousOffset, TimeZone};
use k8s_openapi::jiff::{Timestamp, ToSpan};
use std::fmt;

/// Why a schedule does not parse; the messages follow robfig/cron's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseScheduleError {
    /// The schedule is empty.
    #[error("empty spec string")]
    Empty,
    /// Not five fields.
    #[error("expected exactly 5 fields, found {found}: {spec}")]
    FieldCount {
        /// How many fields there were.
        found: usize,
        /// The schedule.
        spec: String,
    },
    /// An `@` word that is not a known macro (`@every` is not accepted either).
    #[error("unrecognized descriptor: {0}")]
    UnknownDescriptor(String),
    /// A `TZ=` or `CRON_TZ=` prefix: Kubernetes wants `spec.timeZone` instead.
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZoneInSchedule,
    /// One field is malformed or out of range.
    #[error("{field} field: {message}")]
    Field {
        /// `minute`, `hour`, `day of month`, `month` or `day of week`.
        field: &'static str,
        /// What is wrong (`end of range (60) above maximum (59): 0-60`).
        message: String,
    },
}

/// Bit 63 of a field: it was `*` (or `?`), which matters for the day-of-month/day-of-week rule.
const STAR: u64 = 1 << 63;

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTE: Bounds = Bounds { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Bounds = Bounds { name: "hour", min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    name: "day of week",
    min: 0,
    max: 6,
    names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)],
};

/// A parsed cron schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    spec: String,
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.spec).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

impl std::str::FromStr for Schedule {
    type Err = ParseScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn field_error(b: &Bounds, message: String) -> ParseScheduleError {
    ParseScheduleError::Field { field: b.name, message }
}

fn number(text: &str, b: &Bounds) -> Result<u32, ParseScheduleError> {
    let lower = text.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    let v: i64 = text.parse().map_err(|_| field_error(b, format!("failed to parse int from {text}")))?;
    if v < 0 {
        return Err(field_error(b, format!("negative number ({v}) not allowed: {text}")));
    }
    u32::try_from(v).map_err(|_| field_error(b, format!("failed to parse int from {text}")))
}

/// One comma-separated part of a field: `*`, `a`, `a-b`, each optionally `/step`.
fn range(expr: &str, b: &Bounds) -> Result<u64, ParseScheduleError> {
    let mut slash = expr.split('/');
    let span = slash.next().unwrap_or_default();
    let step_text = slash.next();
    if slash.next().is_some() {
        return Err(field_error(b, format!("too many slashes: {expr}")));
    }
    let ends: Vec<&str> = span.split('-').collect();
    let (start, mut end, mut extra) = if span == "*" || span == "?" {
        (b.min, b.max, STAR)
    } else {
        match ends.as_slice() {
            [one] => {
                let v = number(one, b)?;
                (v, v, 0)
            }
            [lo, hi] => (number(lo, b)?, number(hi, b)?, 0),
            _ => return Err(field_error(b, format!("too many hyphens: {expr}"))),
        }
    };
    let step = match step_text {
        None => 1,
        Some(s) => {
            let step = s.parse::<u32>().map_err(|_| field_error(b, format!("failed to parse int from {s}")))?;
            // `N/step` means `N-max/step`.
            if ends.len() == 1 && extra == 0 {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
    };
    if start < b.min {
        return Err(field_error(b, format!("beginning of range ({start}) below minimum ({}): {expr}", b.min)));
    }
    if end > b.max {
        return Err(field_error(b, format!("end of range ({end}) above maximum ({}): {expr}", b.max)));
    }
    if start > end {
        return Err(field_error(b, format!("beginning of range ({start}) beyond end of range ({end}): {expr}")));
    }
    if step == 0 {
        return Err(field_error(b, format!("step of range should be a positive number: {expr}")));
    }
    let bits = (start..=end).step_by(usize::try_from(step).unwrap_or(usize::MAX)).fold(0u64, |acc, v| acc | (1 << v));
    Ok(bits | extra)
}

fn field(text: &str, b: &Bounds) -> Result<u64, ParseScheduleError> {
    text.split(',').try_fold(0u64, |acc, part| Ok(acc | range(part, b)?))
}

fn has(bits: u64, v: impl Into<i64>) -> bool {
    u32::try_from(v.into()).is_ok_and(|v| v < 63 && bits & (1 << v) != 0)
}

impl Schedule {
    /// Parses a schedule (see the module documentation for the grammar).
    pub fn parse(spec: &str) -> Result<Self, ParseScheduleError> {
        let trimmed = spec.trim();
        if trimmed.is_empty() {
            return Err(ParseScheduleError::Empty);
        }
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") || trimmed.contains("TZ=") {
            return Err(ParseScheduleError::TimeZoneInSchedule);
        }
        let expanded = if trimmed.starts_with('@') {
            match trimmed {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                other => return Err(ParseScheduleError::UnknownDescriptor(other.to_owned())),
            }
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(ParseScheduleError::FieldCount { found: fields.len(), spec: trimmed.to_owned() });
        };
        Ok(Self {
            spec: trimmed.to_owned(),
            minute: field(minute, &MINUTE)?,
            hour: field(hour, &HOUR)?,
            dom: field(dom, &DOM)?,
            month: field(month, &MONTH)?,
            dow: field(dow, &DOW)?,
        })
    }

    /// The schedule as written.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    fn day_matches(&self, d: Date) -> bool {
        let dom = has(self.dom, d.day());
        let dow = has(self.dow, d.weekday().to_sunday_zero_offset());
        if self.dom & STAR != 0 || self.dow & STAR != 0 { dom && dow } else { dom || dow }
    }

    /// Whether the civil time `dt` (seconds ignored) is on the schedule.
    pub fn matches(&self, dt: DateTime) -> bool {
        has(self.month, dt.month()) && self.day_matches(dt.date()) && has(self.hour, dt.hour()) && has(self.minute, dt.minute())
    }

    /// The first scheduled instant strictly after `after`, reading the schedule in `tz`; `None`
    /// if there is none within five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut dt = local.date().at(local.hour(), local.minute(), 0, 0).checked_add(1.minute()).ok()?;
        let limit = local.year().saturating_add(5);
        while dt.year() <= limit {
            if !has(self.month, dt.month()) {
                dt = dt.date().first_of_month().checked_add(1.month()).ok()?.at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(dt.date()) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if !has(self.hour, dt.hour()) {
                dt = dt.date().at(dt.hour(), 0, 0, 0).checked_add(1.hour()).ok()?;
                continue;
            }
            if !has(self.minute, dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            let ambiguous = tz.to_ambiguous_timestamp(dt);
            if !matches!(ambiguous.offset(), AmbiguousOffset::Gap { .. })
                && let Ok(ts) = ambiguous.earlier()
                && ts > after
            {
                return Some(ts);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::civil::date;

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
        date(y, mo, d).at(h, mi, 0, 0).to_zoned(TimeZone::UTC).map(|z| z.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn next(spec: &str, after: Timestamp) -> Option<Timestamp> {
        Schedule::parse(spec).ok()?.next_after(after, &TimeZone::UTC)
    }

    fn err(spec: &str) -> String {
        Schedule::parse(spec).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn every_minute_runs_on_the_next_whole_minute() {
        let t = utc(2025, 3, 1, 10, 0) + 30.seconds();
        assert_eq!(next("* * * * *", t), Some(utc(2025, 3, 1, 10, 1)));
        assert_eq!(next("* * * * *", utc(2025, 3, 1, 10, 1)), Some(utc(2025, 3, 1, 10, 2)), "strictly after");
    }

    #[test]
    fn ranges_steps_and_lists_select_values() {
        let s = Schedule::parse("*/15 9-17/4 * * *").ok();
        let s = s.as_ref();
        assert!(s.is_some_and(|s| s.minute == (1 | 1 << 15 | 1 << 30 | 1 << 45)));
        assert!(s.is_some_and(|s| s.hour == (1 << 9 | 1 << 13 | 1 << 17)));
        assert_eq!(next("5,10-12 * * * *", utc(2025, 1, 1, 0, 10)), Some(utc(2025, 1, 1, 0, 11)));
        assert_eq!(next("5,10-12 * * * *", utc(2025, 1, 1, 0, 12)), Some(utc(2025, 1, 1, 1, 5)));
        // `N/step` runs from N to the maximum.
        assert_eq!(next("50/5 * * * *", utc(2025, 1, 1, 0, 56)), Some(utc(2025, 1, 1, 1, 50)));
    }

    #[test]
    fn month_and_weekday_names_are_case_insensitive() {
        // 2025-06-02 is a Monday.
        assert_eq!(next("0 12 * jun Mon", utc(2025, 1, 1, 0, 0)), Some(utc(2025, 6, 2, 12, 0)));
        assert_eq!(next("0 0 * * sat,SUN", utc(2025, 6, 2, 0, 0)), Some(utc(2025, 6, 7, 0, 0)));
        assert_eq!(err("0 0 * * SAT-sun"), "day of week field: beginning of range (6) beyond end of range (0): SAT-sun");
    }

    #[test]
    fn restricted_day_fields_or_together_and_a_star_ands() {
        // The 1st or any Friday: 2025-05-02 is a Friday, before June 1st.
        assert_eq!(next("0 0 1 * FRI", utc(2025, 4, 28, 0, 0)), Some(utc(2025, 5, 1, 0, 0)));
        assert_eq!(next("0 0 1 * FRI", utc(2025, 5, 1, 0, 0)), Some(utc(2025, 5, 2, 0, 0)));
        // `*` in day of month: only Fridays.
        assert_eq!(next("0 0 * * FRI", utc(2025, 4, 28, 0, 0)), Some(utc(2025, 5, 2, 0, 0)));
        // `*/1` is not a star for this rule; `*/2` neither.
        assert_eq!(next("0 0 */2 * FRI", utc(2025, 5, 1, 0, 0)), Some(utc(2025, 5, 2, 0, 0)));
    }

    #[test]
    fn macros_expand_to_their_schedules() {
        let t = utc(2025, 5, 14, 13, 20);
        assert_eq!(next("@hourly", t), Some(utc(2025, 5, 14, 14, 0)));
        assert_eq!(next("@daily", t), Some(utc(2025, 5, 15, 0, 0)));
        assert_eq!(next("@midnight", t), Some(utc(2025, 5, 15, 0, 0)));
        assert_eq!(next("@weekly", t), Some(utc(2025, 5, 18, 0, 0)), "Sunday");
        assert_eq!(next("@monthly", t), Some(utc(2025, 6, 1, 0, 0)));
        assert_eq!(next("@yearly", t), Some(utc(2026, 1, 1, 0, 0)));
        assert_eq!(next("@annually", t), Some(utc(2026, 1, 1, 0, 0)));
    }

    #[test]
    fn leap_days_and_impossible_dates() {
        assert_eq!(next("0 0 29 2 *", utc(2025, 1, 1, 0, 0)), Some(utc(2028, 2, 29, 0, 0)));
        assert_eq!(next("0 0 30 2 *", utc(2025, 1, 1, 0, 0)), None);
    }

    #[test]
    fn schedules_read_in_the_time_zone() {
        let ny = TimeZone::get("America/New_York").ok();
        let Some(ny) = ny else { panic!("the bundled time zone database has America/New_York") };
        let s = Schedule::parse("30 9 * * *").ok();
        // 09:30 in New York is 13:30 UTC in summer, 14:30 in winter.
        assert_eq!(s.as_ref().and_then(|s| s.next_after(utc(2025, 7, 1, 0, 0), &ny)), Some(utc(2025, 7, 1, 13, 30)));
        assert_eq!(s.as_ref().and_then(|s| s.next_after(utc(2025, 12, 1, 0, 0), &ny)), Some(utc(2025, 12, 1, 14, 30)));
        // 02:30 does not exist on 2025-03-09 in New York: that day is skipped.
        let s = Schedule::parse("30 2 * * *").ok();
        assert_eq!(s.as_ref().and_then(|s| s.next_after(utc(2025, 3, 9, 0, 0), &ny)), Some(utc(2025, 3, 10, 6, 30)));
        // 01:30 happens twice on 2025-11-02: it runs once, at the first.
        let s = Schedule::parse("30 1 * * *").ok();
        let first = s.as_ref().and_then(|s| s.next_after(utc(2025, 11, 2, 0, 0), &ny));
        assert_eq!(first, Some(utc(2025, 11, 2, 5, 30)));
        assert_eq!(first.and_then(|f| s.as_ref().and_then(|s| s.next_after(f, &ny))), Some(utc(2025, 11, 3, 6, 30)));
    }

    #[test]
    fn invalid_schedules_say_what_is_wrong() {
        assert_eq!(err(""), "empty spec string");
        assert_eq!(err("* * * *"), "expected exactly 5 fields, found 4: * * * *");
        assert_eq!(err("0 * * * * *"), "expected exactly 5 fields, found 6: 0 * * * * *");
        assert_eq!(err("@every 5m"), "unrecognized descriptor: @every 5m");
        assert_eq!(err("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert_eq!(err("TZ=UTC 0 * * * *"), "cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
        assert_eq!(err("CRON_TZ=UTC 0 * * * *"), "cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
        assert_eq!(err("60 * * * *"), "minute field: end of range (60) above maximum (59): 60");
        assert_eq!(err("0 0-24 * * *"), "hour field: end of range (24) above maximum (23): 0-24");
        assert_eq!(err("0 0 0 * *"), "day of month field: beginning of range (0) below minimum (1): 0");
        assert_eq!(err("0 0 * 13 *"), "month field: end of range (13) above maximum (12): 13");
        assert_eq!(err("0 0 * * 7"), "day of week field: end of range (7) above maximum (6): 7");
        assert_eq!(err("5-1 * * * *"), "minute field: beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(err("*/0 * * * *"), "minute field: step of range should be a positive number: */0");
        assert_eq!(err("1-2-3 * * * *"), "minute field: too many hyphens: 1-2-3");
        assert_eq!(err("*/2/3 * * * *"), "minute field: too many slashes: */2/3");
        assert_eq!(err("x * * * *"), "minute field: failed to parse int from x");
        assert_eq!(err("0 0 * foo *"), "month field: failed to parse int from foo");
        assert_eq!(err("-1 * * * *"), "minute field: failed to parse int from ");
        assert!(Schedule::parse("? ? ? ? ?").is_ok());
    }
}
