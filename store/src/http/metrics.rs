//! Request metrics in the Prometheus text format: counts and latency histograms by verb and
//! resource, and the number of open watches.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Histogram bucket bounds in seconds.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The server's counters.
#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    watches: AtomicI64,
    /// Requests over HTTP/1.0 and 1.1, and over HTTP/2.
    protocols: [AtomicI64; 2],
}

impl Metrics {
    /// Records one finished request.
    pub(crate) fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((verb.to_owned(), resource.to_owned(), code)).or_default() += 1;
        }
        if verb == "WATCH" {
            return;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry((verb.to_owned(), resource.to_owned())).or_default();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            let secs = elapsed.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// Counts a request by its HTTP version.
    pub(crate) fn protocol(&self, version: http::Version) {
        let i = usize::from(version == http::Version::HTTP_2);
        self.protocols[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A watch started (+1) or ended (-1).
    pub(crate) fn watch_delta(&self, delta: i64) {
        self.watches.fetch_add(delta, Ordering::Relaxed);
    }

    /// Open watches.
    pub(crate) fn watches(&self) -> i64 {
        self.watches.load(Ordering::Relaxed)
    }

    /// The exposition text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, resource and HTTP response code."
        );
        let _ = writeln!(out, "# TYPE apiserver_request_total counter");
        if let Ok(m) = self.requests.lock() {
            for ((verb, resource, code), n) in m.iter() {
                let _ = writeln!(out, "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}");
            }
        }
        let _ =
            writeln!(out, "# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb and resource.");
        let _ = writeln!(out, "# TYPE apiserver_request_duration_seconds histogram");
        if let Ok(m) = self.latency.lock() {
            for ((verb, resource), h) in m.iter() {
                for (bound, n) in BUCKETS.iter().zip(&h.counts) {
                    let _ = writeln!(
                        out,
                        "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",resource=\"{resource}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",resource=\"{resource}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "apiserver_request_duration_seconds_sum{{verb=\"{verb}\",resource=\"{resource}\"}} {}", h.sum);
                let _ = writeln!(out, "apiserver_request_duration_seconds_count{{verb=\"{verb}\",resource=\"{resource}\"}} {}", h.count);
            }
        }
        let _ = writeln!(out, "# HELP apiserver_longrunning_requests Number of open watch requests.");
        let _ = writeln!(out, "# TYPE apiserver_longrunning_requests gauge");
        let _ = writeln!(out, "apiserver_longrunning_requests{{verb=\"WATCH\"}} {}", self.watches());
        let _ = writeln!(out, "# HELP bosun_http_requests_total Requests by HTTP protocol version.");
        let _ = writeln!(out, "# TYPE bosun_http_requests_total counter");
        for (protocol, n) in ["HTTP/1.1", "HTTP/2"].iter().zip(&self.protocols) {
            let _ = writeln!(out, "bosun_http_requests_total{{protocol=\"{protocol}\"}} {}", n.load(Ordering::Relaxed));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_render_in_prometheus_text() {
        let m = Metrics::default();
        m.observe("LIST", "pods", 200, Duration::from_millis(3));
        m.observe("LIST", "pods", 200, Duration::from_millis(30));
        m.watch_delta(1);
        let text = m.render();
        assert!(text.contains("apiserver_request_total{verb=\"LIST\",resource=\"pods\",code=\"200\"} 2"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_bucket{verb=\"LIST\",resource=\"pods\",le=\"0.005\"} 1"));
        assert!(text.contains("apiserver_request_duration_seconds_count{verb=\"LIST\",resource=\"pods\"} 2"));
        assert!(text.contains("apiserver_longrunning_requests{verb=\"WATCH\"} 1"));
    }
}
