//! `GET /metrics` in the Prometheus text format.
//!
//! Most figures are read when scraped from where they already live (the state database for
//! deploys, the supervisor for workers, each front's [`FrontStats`](crate::front::http::FrontStats));
//! what only passes by (reload durations, webhook rejections) is counted here.

use crate::store::Store;
use crate::supervisor::Supervisor;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

/// Upper bounds of the reload duration buckets, in seconds.
const RELOAD_BUCKETS: [f64; 9] = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; RELOAD_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// `writeln!` into the page being rendered.
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        // Writing to a `String` cannot fail: the `fmt::Result` is always `Ok`.
        let _ = writeln!($out, $($arg)*);
    }};
}

/// What is counted as it happens.
#[derive(Debug, Default)]
pub struct Metrics {
    reloads: Mutex<BTreeMap<(String, bool), Histogram>>,
    webhook_rejections: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    /// A reload of `app` ended after `seconds`.
    pub fn reload_done(&self, app: &str, ok: bool, seconds: f64) {
        let mut all = self.reloads.lock().unwrap_or_else(|e| e.into_inner());
        let h = all.entry((app.to_string(), ok)).or_default();
        h.count += 1;
        h.sum += seconds;
        for (i, bound) in RELOAD_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
    }

    /// A webhook delivery for `app` was refused (`reason`: `signature`, `payload`, ...).
    pub fn webhook_rejected(&self, app: &str, reason: &str) {
        *self
            .webhook_rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((app.to_string(), reason.to_string()))
            .or_default() += 1;
    }

    /// Everything, as Prometheus text.
    pub fn render(&self, supervisor: &Supervisor, store: &Store) -> String {
        let mut out = String::new();
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            put!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        head(&mut out, "deployer_deploys", "gauge", "Deploys recorded, by app and state.");
        let counts = store.deploy_counts().unwrap_or_default();
        for c in &counts {
            put!(out, "deployer_deploys{{app=\"{}\",state=\"{}\"}} {}", esc(&c.app), esc(&c.state), c.count);
        }
        head(
            &mut out,
            "deployer_deploy_duration_seconds",
            "summary",
            "Time from queued to final, of finished deploys.",
        );
        for c in counts.iter().filter(|c| c.finished > 0) {
            let labels = format!("app=\"{}\",state=\"{}\"", esc(&c.app), esc(&c.state));
            put!(out, "deployer_deploy_duration_seconds_sum{{{labels}}} {}", c.duration_ms as f64 / 1000.0);
            put!(out, "deployer_deploy_duration_seconds_count{{{labels}}} {}", c.finished);
        }

        head(
            &mut out,
            "deployer_reload_duration_seconds",
            "histogram",
            "Rolling reloads asked through the API, by app and outcome.",
        );
        for ((app, ok), h) in self.reloads.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let labels = format!("app=\"{}\",ok=\"{ok}\"", esc(app));
            for (bound, n) in RELOAD_BUCKETS.iter().zip(h.buckets) {
                put!(out, "deployer_reload_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            put!(out, "deployer_reload_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            put!(out, "deployer_reload_duration_seconds_sum{{{labels}}} {}", h.sum);
            put!(out, "deployer_reload_duration_seconds_count{{{labels}}} {}", h.count);
        }

        let apps = supervisor.list();
        head(&mut out, "deployer_workers", "gauge", "Workers by app and state.");
        for app in &apps {
            let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
            for w in app.status().workers {
                *by_state.entry(w.state.as_str()).or_default() += 1;
            }
            for (state, n) in by_state {
                put!(out, "deployer_workers{{app=\"{}\",state=\"{}\"}} {n}", esc(&app.name), esc(state));
            }
        }
        head(
            &mut out,
            "deployer_worker_restarts",
            "gauge",
            "Restarts after unexpected exits, summed over the app's current workers.",
        );
        for app in &apps {
            let restarts: u64 = app.status().workers.iter().map(|w| u64::from(w.restarts)).sum();
            put!(out, "deployer_worker_restarts{{app=\"{}\"}} {restarts}", esc(&app.name));
        }
        type Counter = fn(&crate::front::http::FrontStats) -> u64;
        let fronts: [(&str, &str, Counter); 4] = [
            ("deployer_front_requests_total", "Requests (connections in tcp mode) through the app's front.", |f| {
                f.requests.load(Relaxed)
            }),
            ("deployer_front_errors_total", "Requests the front itself answered 502, 503 or 504.", |f| {
                f.errors.load(Relaxed)
            }),
            ("deployer_front_retries_total", "Requests sent again to another worker before any answer.", |f| {
                f.retries.load(Relaxed)
            }),
            (
                "deployer_front_timeouts_total",
                "Requests a worker did not answer within response_timeout (answered 504).",
                |f| f.timeouts.load(Relaxed),
            ),
        ];
        for (name, help, value) in fronts {
            head(&mut out, name, "counter", help);
            for app in &apps {
                put!(out, "{name}{{app=\"{}\"}} {}", esc(&app.name), value(app.front_stats()));
            }
        }

        head(
            &mut out,
            "deployer_webhook_rejections_total",
            "counter",
            "Webhook deliveries refused, by app and reason.",
        );
        for ((app, reason), n) in self.webhook_rejections.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            put!(out, "deployer_webhook_rejections_total{{app=\"{}\",reason=\"{}\"}} {n}", esc(app), esc(reason));
        }
        out
    }
}

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_buckets_are_cumulative() {
        let m = Metrics::default();
        m.reload_done("web", true, 0.7);
        m.reload_done("web", true, 3.0);
        let all = m.reloads.lock().unwrap();
        let h = &all[&("web".to_string(), true)];
        assert_eq!(h.buckets[..4], [0, 1, 1, 2]);
        assert_eq!(h.count, 2);
        assert_eq!(esc("a\"b"), "a\\\"b");
    }
}
