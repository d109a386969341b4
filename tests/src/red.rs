//! Checking the agent's HTTP RED metrics against a workload's own timing: exact counts read
//! back from the aggregator, every exchange's span paired with the request the workload
//! timed, and the aggregates (`_sum`/`_count` means, `/debug/http` HDR quantiles) against
//! those spans, per route and status.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use crate::{
    Agent, Aggregator, eventually, http_get, jaeger,
    workload::{Timing, WARMUP, agrees, mean, quantile},
};

/// Labels of a series.
pub type Labels = BTreeMap<String, String>;

/// Every series of an instant vector query with its value.
pub fn vector(agg: &Aggregator, query: &str) -> Vec<(Labels, f64)> {
    let data = agg.query(query, None);
    data["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let value = s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN);
                    (labels, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The route the agent should report for a workload kind (`/fast/{id}`, `/fail/{uuid}`).
pub fn route(prefix: &str, kind: &str) -> String {
    let id = if kind == "fail" { "{uuid}" } else { "{id}" };
    format!("{prefix}/{kind}/{id}")
}

/// Expected counts per (route, status) from a timing log.
pub fn expected_counts(timings: &[Timing], prefix: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for t in timings {
        *out.entry((route(prefix, &t.kind), t.status.to_string()))
            .or_insert(0.0) += 1.0;
    }
    out
}

/// Counts per (route, status) of `<metric>_count` series matching `selector`.
pub fn counts(agg: &Aggregator, metric: &str, selector: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for (labels, value) in vector(agg, &format!("{metric}_count{{{selector}}}")) {
        *out.entry((
            labels.get("http_route").cloned().unwrap_or_default(),
            labels
                .get("http_response_status_code")
                .cloned()
                .unwrap_or_default(),
        ))
        .or_insert(0.0) += value;
    }
    out
}

/// Waits until the aggregator's counts for `selector` equal `expected` exactly; panics with
/// both after the timeout.
pub fn wait_counts(
    agg: &Aggregator,
    metric: &str,
    selector: &str,
    expected: &BTreeMap<(String, String), f64>,
) {
    let mut last = BTreeMap::new();
    let ok = (0..300).any(|_| {
        last = counts(agg, metric, selector);
        if &last == expected {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    if !ok {
        // Where the counts went instead: every series of the metric, whatever its labels.
        let all: Vec<String> = vector(agg, &format!("{metric}_count"))
            .into_iter()
            .map(|(labels, value)| format!("    {labels:?} = {value}"))
            .collect();
        panic!(
            "{metric}{{{selector}}} counts differ from the truth\n  agent: {last:?}\n  truth: {expected:?}\n  every {metric}_count series:\n{}",
            all.join("\n")
        );
    }
}

/// Exchanges per (route kind, status): (start ns, duration s), in start order.
pub type Exchanges = BTreeMap<(String, u16), Vec<(u64, f64)>>;

/// The truth's exchanges, without [`WARMUP`] requests.
pub fn truth_exchanges(truth: &[Timing]) -> Exchanges {
    let mut out = Exchanges::new();
    for t in truth.iter().filter(|t| t.kind != WARMUP) {
        out.entry((t.kind.clone(), t.status))
            .or_default()
            .push((t.start_ns, t.ns as f64 / 1e9));
    }
    for v in out.values_mut() {
        v.sort_by_key(|&(start, _)| start);
    }
    out
}

/// One side of a workload as the agent reports it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// `server` or `client`.
    pub direction: &'a str,
    /// `service.name` of its spans.
    pub service: &'a str,
    /// PromQL label matchers of its `http_<direction>_request_duration_seconds` series.
    pub selector: &'a str,
    /// Labels its `/debug/http` series carry.
    pub debug_labels: &'a [(&'a str, &'a str)],
    /// Tags its spans carry (`server.port`, …).
    pub span_tags: &'a [(&'a str, &'a str)],
    /// Path prefix of the workload's requests (`/proxy` behind nginx, or empty).
    pub prefix: &'a str,
}

/// Share of exchanges whose agent duration must agree with the truth's own within 5% or
/// 0.3 ms. Not all: on a shared 2-core VM the hypervisor or a kernel thread sometimes stalls
/// the CPU inside one clock's span and outside the other's, for that one request. A wrong
/// measurement point (wrong syscall, lost pairing) shifts every request of a kind instead.
pub const PAIRED_AGREEMENT: f64 = 0.9;

/// Checks one side of a workload against `truth`, exchange by exchange and then in
/// aggregate:
///
/// 1. the agent's spans (one per exchange, same start/end as its histograms) match the
///    truth's requests one to one, per kind and status in start order, and at least
///    [`PAIRED_AGREEMENT`] of them agree with the truth's duration (5% or 0.3 ms);
/// 2. the aggregator's `_sum/_count` equals the mean of those spans (µs rounding);
/// 3. `/debug/http` p50/p90/p99 equal the spans' quantiles within HDR precision (2
///    significant digits) and one rank, and p50/p90 agree with the truth's (5% or 0.3 ms) at
///    a rank differing by at most one plus the number of disagreeing exchanges.
///
/// Returns report lines.
pub fn check_side(agg: &Aggregator, agent: &Agent, side: &Side, truth: &[Timing]) -> Vec<String> {
    let truth = truth_exchanges(truth);
    let spans = wait_spans(agg, side, &truth);
    let mut report = Vec::new();
    for (key, expected) in &truth {
        let measured = &spans[key];
        report.push(check_paired(side, key, measured, expected));
    }
    report.extend(check_means(agg, side, &spans));
    report.extend(check_quantiles(agent, side, &spans, &truth));
    report
}

fn label(side: &Side, (kind, status): &(String, u16)) -> String {
    format!(
        "{} {} {} {status}",
        side.direction,
        side.service,
        route(side.prefix, kind)
    )
}

fn check_paired(
    side: &Side,
    key: &(String, u16),
    measured: &[(u64, f64)],
    truth: &[(u64, f64)],
) -> String {
    let name = label(side, key);
    assert_eq!(
        measured.len(),
        truth.len(),
        "{name}: {} spans for {} requests",
        measured.len(),
        truth.len()
    );
    let pairs: Vec<(f64, f64)> = measured
        .iter()
        .zip(truth)
        .map(|(&(_, m), &(_, t))| (m, t))
        .collect();
    let mut diffs: Vec<f64> = pairs.iter().map(|(m, t)| m - t).collect();
    let agreeing = pairs.iter().filter(|(m, t)| agrees(*m, *t)).count();
    let mut outliers: Vec<String> = pairs
        .iter()
        .filter(|(m, t)| !agrees(*m, *t))
        .map(|(m, t)| format!("{:.3}/{:.3}", m * 1e3, t * 1e3))
        .collect();
    outliers.truncate(10);
    diffs.sort_by(f64::total_cmp);
    let line = format!(
        "{name}: {agreeing}/{} exchanges agree with the truth, median agent-truth {:+.3} ms, \
         mean agent {:.3} ms, truth {:.3} ms; disagreeing (agent/truth ms): [{}]",
        truth.len(),
        quantile(&diffs, 0.5) * 1e3,
        mean(&measured.iter().map(|&(_, m)| m).collect::<Vec<_>>()) * 1e3,
        mean(&truth.iter().map(|&(_, t)| t).collect::<Vec<_>>()) * 1e3,
        outliers.join(", ")
    );
    eprintln!("{line}");
    assert!(
        agreeing as f64 >= PAIRED_AGREEMENT * truth.len() as f64,
        "{line}"
    );
    line
}

/// The agent's spans of `side`, grouped like the truth, once every group has as many as the
/// truth (or after 30 s).
fn wait_spans(agg: &Aggregator, side: &Side, truth: &Exchanges) -> Exchanges {
    let mut last = Exchanges::new();
    let complete = |got: &Exchanges| {
        truth
            .iter()
            .all(|(k, v)| got.get(k).is_some_and(|g| g.len() >= v.len()))
    };
    for _ in 0..300 {
        last = spans(agg, side);
        if complete(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let have: BTreeMap<_, _> = last.iter().map(|(k, v)| (k, v.len())).collect();
    let want: BTreeMap<_, _> = truth.iter().map(|(k, v)| (k, v.len())).collect();
    panic!("spans of {side:?}: have {have:?}, truth {want:?}");
}

/// Spans of `side` from the aggregator's Jaeger API.
fn spans(agg: &Aggregator, side: &Side) -> Exchanges {
    let mut out = Exchanges::new();
    let mut seen = std::collections::HashSet::new();
    for (_, spans) in jaeger::search(agg, side.service) {
        for span in spans {
            if span.service != side.service
                || span.kind != side.direction
                || side.span_tags.iter().any(|(k, v)| span.tag(k) != Some(*v))
                || !seen.insert(span.id.clone())
            {
                continue;
            }
            let Some(rest) = span.path.strip_prefix(side.prefix) else {
                continue;
            };
            let kind = rest.split('/').nth(1).unwrap_or_default().to_owned();
            let Some(status) = span
                .tag("http.response.status_code")
                .and_then(|s| s.parse::<u16>().ok())
            else {
                continue;
            };
            out.entry((kind, status))
                .or_default()
                .push((span.start_us as u64 * 1000, span.duration_us as f64 / 1e6));
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|&(start, _)| start);
    }
    out
}

/// `_sum/_count` from the aggregator against the mean of the spans: both sum the same
/// durations, the spans rounded down to µs.
fn check_means(agg: &Aggregator, side: &Side, spans: &Exchanges) -> Vec<String> {
    let metric = format!("http_{}_request_duration_seconds", side.direction);
    let sums = vector(agg, &format!("{metric}_sum{{{}}}", side.selector));
    let counts = vector(agg, &format!("{metric}_count{{{}}}", side.selector));
    let mut report = Vec::new();
    for (key, values) in spans {
        let labels = (route(side.prefix, &key.0), key.1.to_string());
        let pick = |v: &[(Labels, f64)]| -> f64 {
            v.iter()
                .filter(|(l, _)| {
                    l.get("http_route") == Some(&labels.0)
                        && l.get("http_response_status_code") == Some(&labels.1)
                })
                .map(|(_, v)| v)
                .sum()
        };
        let (sum, count) = (pick(&sums), pick(&counts));
        if count == 0.0 {
            // Spans of requests outside the workload's routes (another test's kind).
            continue;
        }
        let measured = sum / count;
        let expected = mean(&values.iter().map(|&(_, d)| d).collect::<Vec<_>>());
        let line = format!(
            "{} mean: histogram {:.4} ms, spans {:.4} ms",
            label(side, key),
            measured * 1e3,
            expected * 1e3
        );
        assert!(
            (measured - expected).abs() <= 1.5e-6 + 1e-9 * expected,
            "{line}"
        );
        report.push(line);
    }
    report
}

/// p50/p90/p99 from `/debug/http` against the spans' nearest-rank quantiles: HDR keeps 2
/// significant digits (≤ 1% high), and its rank may differ by one. p50 and p90 must also
/// agree with the truth's own (5% or 0.3 ms, at a rank shifted by at most one plus the
/// number of exchanges stalled on one clock only); p99 is reported against it but not asserted:
/// with ~100 requests two machine stalls decide it (the exchange pairing covers the tail).
fn check_quantiles(
    agent: &Agent,
    side: &Side,
    spans: &Exchanges,
    truth: &Exchanges,
) -> Vec<String> {
    let series = debug_series(agent);
    let mut report = Vec::new();
    for (key, values) in spans {
        let r = route(side.prefix, &key.0);
        let status = key.1.to_string();
        let Some(s) = series.iter().find(|s| {
            s["direction"] == side.direction
                && s["labels"]["http_route"] == r.as_str()
                && s["labels"]["http_response_status_code"] == status.as_str()
                && side.debug_labels.iter().all(|(k, v)| s["labels"][k] == *v)
        }) else {
            continue;
        };
        let sorted_durations = |v: &[(u64, f64)]| {
            let mut d: Vec<f64> = v.iter().map(|&(_, d)| d).collect();
            d.sort_by(f64::total_cmp);
            d
        };
        let sorted = sorted_durations(values);
        let truth_sorted = truth.get(key).map(|t| sorted_durations(t));
        for (name, q) in [
            ("p50_seconds", 0.5),
            ("p90_seconds", 0.9),
            ("p99_seconds", 0.99),
        ] {
            let measured = s[name].as_f64().expect("quantile");
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let low = sorted[rank.saturating_sub(2)];
            let high = sorted[rank.min(sorted.len() - 1)];
            let truth_q = truth_sorted.as_deref().map(|t| quantile(t, q));
            let line = format!(
                "{} {name}: agent {:.3} ms, spans {:.3} ms, truth {}",
                label(side, key),
                measured * 1e3,
                sorted[rank - 1] * 1e3,
                truth_q.map_or("-".to_owned(), |t| format!("{:.3} ms", t * 1e3))
            );
            if let (Some(t), Some(truth_sorted)) = (truth_q, truth_sorted.as_deref())
                && q < 0.99
            {
                // Each exchange stalled on one clock only (a disagreeing pair, at most
                // 1 - PAIRED_AGREEMENT of them) moves it past its neighbours in one ordering
                // and not the other: the quantile's rank in the truth may differ by that many,
                // and by one more for HDR's rank rounding. Where the tail is sparse one rank is
                // more than 0.3 ms, so the agent must agree with a truth value within those
                // ranks, not with the one at the same rank.
                let stalled = values
                    .iter()
                    .zip(&truth[key])
                    .filter(|(m, t)| !agrees(m.1, t.1))
                    .count();
                let truth_rank =
                    ((q * truth_sorted.len() as f64).ceil() as usize).clamp(1, truth_sorted.len());
                let lo = truth_sorted[truth_rank.saturating_sub(2 + stalled)];
                let hi = truth_sorted[(truth_rank + stalled).min(truth_sorted.len() - 1)];
                assert!(
                    agrees(measured, t)
                        || (measured >= lo - (0.05 * lo).max(0.0003)
                            && measured <= hi + (0.05 * hi).max(0.0003)),
                    "{line} (truth at ranks {}..{} with {stalled} stalled exchanges: \
                     {:.3}..{:.3} ms)",
                    truth_rank.saturating_sub(1 + stalled),
                    (truth_rank + 1 + stalled).min(truth_sorted.len()),
                    lo * 1e3,
                    hi * 1e3
                );
            }
            assert!(
                measured >= low * 0.99 - 2e-6 && measured <= high * 1.01 + 2e-6,
                "{line} (spans at ranks {}..{}: {:.3}..{:.3} ms)",
                rank - 1,
                rank + 1,
                low * 1e3,
                high * 1e3
            );
            report.push(line);
        }
    }
    report
}

/// The agent's `/debug/http` series.
pub fn debug_series(agent: &Agent) -> Vec<Value> {
    let body = http_get(&format!("http://{}/debug/http", agent.metrics))
        .expect("GET /debug/http")
        .body;
    let json: Value = serde_json::from_str(&body).expect("debug JSON");
    json["series"].as_array().cloned().unwrap_or_default()
}

/// Asserts that no HTTP event was lost for any reason.
pub fn assert_nothing_lost(agent: &Agent) {
    let metrics = agent.metrics_text();
    for line in metrics.lines() {
        if line.starts_with("sonde_agent_events_lost_total{program=\"http\"") {
            assert!(line.ends_with(" 0"), "lost HTTP events: {line}\n{metrics}");
        }
    }
}

/// Waits for the agent's `/debug/http` to have at least `n` requests in series matching
/// `pred`.
pub fn wait_debug_count(agent: &Agent, n: u64, pred: impl Fn(&Value) -> bool) {
    eventually(Duration::from_secs(30), "requests in /debug/http", || {
        let total: u64 = debug_series(agent)
            .iter()
            .filter(|s| pred(s))
            .map(|s| s["count"].as_u64().unwrap_or(0))
            .sum();
        (total >= n).then_some(())
    });
}

/// The agent's kernel-side counter `name` (`sonde_agent_ebpf_kernel_counter{counter=…}`),
/// 0 when absent.
pub fn kernel_counter(agent: &Agent, name: &str) -> f64 {
    let prefix = format!("sonde_agent_ebpf_kernel_counter{{counter=\"{name}\"}} ");
    agent
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDE: Side = Side {
        direction: "server",
        service: "s",
        selector: "",
        debug_labels: &[],
        span_tags: &[],
        prefix: "",
    };

    fn exchanges(durations_ms: &[f64]) -> Vec<(u64, f64)> {
        durations_ms
            .iter()
            .enumerate()
            .map(|(i, d)| (i as u64 * 2_000_000, d / 1e3))
            .collect()
    }

    fn paired(measured: &[f64], truth: &[f64]) -> std::thread::Result<String> {
        let key = ("fast".to_owned(), 200);
        let (m, t) = (exchanges(measured), exchanges(truth));
        std::panic::catch_unwind(|| check_paired(&SIDE, &key, &m, &t))
    }

    #[test]
    fn one_stalled_exchange_in_twenty_is_tolerated_and_reported() {
        let truth = [1.2; 20];
        let mut measured = [1.25; 20];
        measured[7] = 5.0;
        let line = paired(&measured, &truth).expect("passes");
        assert!(line.contains("19/20"), "{line}");
        assert!(line.contains("5.000/1.200"), "{line}");
    }

    #[test]
    fn a_shift_of_every_exchange_fails() {
        // 0.4 ms more than the truth on each request: beyond 0.3 ms and 5% of 1.2 ms.
        assert!(paired(&[1.6; 20], &[1.2; 20]).is_err());
    }

    #[test]
    fn exchanges_pair_in_start_order_not_by_duration() {
        // Same durations, different order: pairing by sorted duration would hide it.
        let truth = [1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0, 10.0];
        let measured = [10.0, 1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0, 10.0, 1.0];
        assert!(paired(&measured, &truth).is_err());
    }

    #[test]
    fn a_missing_span_fails() {
        assert!(paired(&[1.2; 19], &[1.2; 20]).is_err());
    }
}
