//! Notifications to Alertmanager (API v2, `POST <url>/api/v2/alerts`), as Prometheus'
//! notifier: a bounded queue (oldest dropped and counted when full), batches of at most 64
//! alerts sent to every configured Alertmanager at once, external labels added to alerts
//! that lack them, `startsAt` = when the alert fired, `endsAt` = resolution or valid-until.
//!
//! Owns: [`Notifier`] (queue, sender task, HTTP/1 client over hyper). Must not: decide what
//! to send (the rule groups do) or block evaluation (enqueueing never waits).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::{alert::Alert, template::gofmt};
use crate::metrics::{AlertmanagerLabels, Metrics};

/// Most alerts in one request (Prometheus: 64).
pub const MAX_BATCH: usize = 64;

/// An Alertmanager endpoint: `http://host:port[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerUrl {
    /// As configured (metric label).
    pub url: String,
    authority: String,
    path: String,
}

impl AlertmanagerUrl {
    /// Parses a base URL; only `http` is supported.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("alertmanager URL {url:?}: only http:// URLs are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("alertmanager URL {url:?}: no host"));
        }
        Ok(Self {
            url: url.to_owned(),
            authority: authority.to_owned(),
            path: format!("{prefix}/api/v2/alerts"),
        })
    }
}

/// One alert as Alertmanager's v2 API takes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    /// Identity.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Link back to the expression.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// RFC 3339 with milliseconds, UTC, as Go's `strfmt.DateTime`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Turns rule alerts into Alertmanager alerts (Prometheus' `sendAlerts`).
pub fn postable(
    expr: &str,
    alerts: &[Alert],
    external_url: &str,
    external_labels: &BTreeMap<String, String>,
) -> Vec<PostableAlert> {
    let link = format!(
        "{}/graph?g0.expr={}&g0.tab=1",
        external_url.trim_end_matches('/'),
        query_escape(expr)
    );
    alerts
        .iter()
        .map(|a| {
            let mut labels: BTreeMap<String, String> = a
                .labels
                .iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect();
            for (k, v) in external_labels {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
            PostableAlert {
                labels,
                annotations: a.annotations.iter().cloned().collect(),
                starts_at: rfc3339(a.fired_at),
                ends_at: rfc3339(if a.resolved_at != 0 {
                    a.resolved_at
                } else {
                    a.valid_until
                }),
                generator_url: link.clone(),
            }
        })
        .collect()
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The queue and the Alertmanagers it sends to.
#[derive(Debug)]
pub struct Notifier {
    queue: Mutex<VecDeque<PostableAlert>>,
    capacity: usize,
    wake: tokio::sync::Notify,
    targets: Vec<AlertmanagerUrl>,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// A notifier for `targets` (none: alerts are evaluated but not sent).
    pub fn new(
        targets: Vec<AlertmanagerUrl>,
        capacity: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        metrics
            .rules
            .notifications_queue_capacity
            .set(capacity as i64);
        metrics
            .rules
            .notifications_alertmanagers
            .set(targets.len() as i64);
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            wake: tokio::sync::Notify::new(),
            targets,
            timeout,
            metrics,
        })
    }

    /// Enqueues alerts; when the queue overflows the oldest are dropped and counted.
    pub fn enqueue(&self, alerts: Vec<PostableAlert>) {
        if self.targets.is_empty() || alerts.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut alerts = alerts;
        if alerts.len() > self.capacity {
            let excess = alerts.len() - self.capacity;
            alerts.drain(..excess);
            self.metrics
                .rules
                .notifications_dropped
                .inc_by(excess as u64);
        }
        let overflow = (q.len() + alerts.len()).saturating_sub(self.capacity);
        if overflow > 0 {
            q.drain(..overflow);
            self.metrics
                .rules
                .notifications_dropped
                .inc_by(overflow as u64);
            tracing::warn!(
                dropped = overflow,
                "alert notification queue full, dropping alerts"
            );
        }
        q.extend(alerts);
        self.metrics
            .rules
            .notifications_queue_length
            .set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    fn next_batch(&self) -> Vec<PostableAlert> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len().min(MAX_BATCH);
        let batch: Vec<_> = q.drain(..n).collect();
        self.metrics
            .rules
            .notifications_queue_length
            .set(q.len() as i64);
        batch
    }

    /// Sends queued alerts until `shutdown`, then sends what is still queued once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
            }
            loop {
                let batch = self.next_batch();
                if batch.is_empty() {
                    break;
                }
                self.send_all(&batch).await;
            }
        }
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                break;
            }
            self.send_all(&batch).await;
        }
    }

    /// Sends one batch to every Alertmanager concurrently; counted as dropped when none
    /// accepted it.
    async fn send_all(&self, batch: &[PostableAlert]) {
        let body = Bytes::from(serde_json::to_vec(batch).expect("alerts serialize"));
        let sends = self.targets.iter().map(|t| {
            let body = body.clone();
            async move {
                let started = Instant::now();
                let labels = AlertmanagerLabels {
                    alertmanager: t.url.clone(),
                };
                let result = tokio::time::timeout(self.timeout, post(t, body)).await;
                self.metrics
                    .rules
                    .notifications_latency
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                let result = result.unwrap_or_else(|_| Err("timed out".to_owned()));
                match result {
                    Ok(()) => {
                        self.metrics
                            .rules
                            .notifications_sent
                            .get_or_create(&labels)
                            .inc_by(batch.len() as u64);
                        true
                    }
                    Err(error) => {
                        self.metrics
                            .rules
                            .notifications_errors
                            .get_or_create(&labels)
                            .inc_by(batch.len() as u64);
                        tracing::error!(alertmanager = %t.url, %error, count = batch.len(), "error sending alerts");
                        false
                    }
                }
            }
        });
        let results = futures_util::future::join_all(sends).await;
        if !results.iter().any(|ok| *ok) {
            self.metrics
                .rules
                .notifications_dropped
                .inc_by(batch.len() as u64);
        }
    }
}

async fn post(target: &AlertmanagerUrl, body: Bytes) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("connect {}: {e}", target.authority))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("sonde-aggregator/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let text = response
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    conn.abort();
    if !status.is_success() {
        return Err(format!("bad response status {status}: {}", text.trim()));
    }
    Ok(())
}

/// Alert value as the API prints it (`strconv.FormatFloat(v, 'e', -1, 64)`).
pub fn api_value(v: f64) -> String {
    if !v.is_finite() {
        return gofmt::format_g(v, None, false);
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rules::alert::AlertState, store::Labels};

    #[test]
    fn urls_and_values() {
        let u = AlertmanagerUrl::parse("http://am:9093/prefix/").unwrap();
        assert_eq!(u.authority, "am:9093");
        assert_eq!(u.path, "/prefix/api/v2/alerts");
        assert!(AlertmanagerUrl::parse("https://x").is_err());
        assert_eq!(api_value(1.0), "1e+00");
        assert_eq!(api_value(0.25), "2.5e-01");
        assert_eq!(api_value(12345.0), "1.2345e+04");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn postable_uses_fired_at_and_resolution() {
        let mut a = Alert {
            labels: Labels::from_pairs([("alertname", "A"), ("job", "x")]),
            annotations: vec![("summary".into(), "s".into())],
            state: AlertState::Firing,
            value: 1.0,
            active_at: 1000,
            fired_at: 61_000,
            resolved_at: 0,
            last_sent_at: 61_000,
            valid_until: 301_000,
            keep_firing_since: 0,
        };
        let ext = BTreeMap::from([
            ("cluster".to_owned(), "eu".to_owned()),
            ("job".to_owned(), "no".to_owned()),
        ]);
        let p = postable("up == 0", std::slice::from_ref(&a), "http://s:9180/", &ext);
        assert_eq!(p[0].starts_at, "1970-01-01T00:01:01.000Z");
        assert_eq!(p[0].ends_at, "1970-01-01T00:05:01.000Z");
        assert_eq!(p[0].labels["cluster"], "eu");
        assert_eq!(
            p[0].labels["job"], "x",
            "alert labels win over external labels"
        );
        assert_eq!(
            p[0].generator_url,
            "http://s:9180/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
        );
        a.resolved_at = 120_000;
        let p = postable("up", &[a], "http://s", &BTreeMap::new());
        assert_eq!(p[0].ends_at, "1970-01-01T00:02:00.000Z");
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let n = Notifier::new(
            vec![AlertmanagerUrl::parse("http://127.0.0.1:1").unwrap()],
            3,
            Duration::from_secs(1),
            metrics.clone(),
        );
        let alert = |i: usize| PostableAlert {
            labels: BTreeMap::from([("i".to_owned(), i.to_string())]),
            annotations: BTreeMap::new(),
            starts_at: String::new(),
            ends_at: String::new(),
            generator_url: String::new(),
        };
        n.enqueue((0..2).map(alert).collect());
        n.enqueue((2..5).map(alert).collect());
        let batch = n.next_batch();
        assert_eq!(
            batch
                .iter()
                .map(|a| a.labels["i"].clone())
                .collect::<Vec<_>>(),
            ["2", "3", "4"]
        );
        assert_eq!(metrics.rules.notifications_dropped.get(), 2);
    }
}
