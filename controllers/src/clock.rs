//! Wall-clock time that follows tokio's clock, so paused-time tests move timestamps too.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::sync::OnceLock;

static BASE: OnceLock<(Timestamp, std::time::Instant)> = OnceLock::new();

/// The current time: the wall clock at first use plus the tokio clock's progress since then.
pub fn now() -> Timestamp {
    let (wall, _) = *BASE.get_or_init(|| (system_now(), std::time::Instant::now()));
    let elapsed = match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio_elapsed(),
        Err(_) => std::time::Duration::ZERO,
    };
    wall.checked_add(SignedDuration::try_from(elapsed).unwrap_or(SignedDuration::ZERO)).unwrap_or(wall)
}

fn tokio_elapsed() -> std::time::Duration {
    static TOKIO_BASE: OnceLock<tokio::time::Instant> = OnceLock::new();
    let base = *TOKIO_BASE.get_or_init(tokio::time::Instant::now);
    tokio::time::Instant::now().saturating_duration_since(base)
}

fn system_now() -> Timestamp {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(i64::try_from(since.as_secs()).unwrap_or(0), i32::try_from(since.subsec_nanos()).unwrap_or(0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// [`now`] as an API `Time`.
pub fn now_time() -> Time {
    Time(now())
}

/// [`now`] as an API `MicroTime`.
pub fn now_micro() -> MicroTime {
    MicroTime(now())
}

/// Seconds from `t` until now (negative when `t` is in the future).
pub fn seconds_since(t: &Timestamp) -> f64 {
    now().duration_since(*t).as_secs_f64()
}
