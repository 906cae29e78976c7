//! CloudWatch metrics as Embedded Metric Format (EMF) records on stdout:
//! one record per invocation, aggregated, never one per request.
//!
//! Lambda ships stdout to CloudWatch Logs, which turns EMF records into
//! metrics in namespace `Sundial` with dimension `FunctionName`. Latency
//! figures are sent as value arrays (EMF takes at most 100 values per
//! metric, so larger samples are reduced to 100 evenly spaced quantiles,
//! which keeps percentiles and drops only the count, sent separately).
//!
//! The processor adds one record per task tag seen ([`for_tags`]) with
//! dimensions `FunctionName` and `Tag`: lag and failures per group of tasks,
//! never per task, so CloudWatch cardinality follows the tags in use.

use serde_json::{json, Map, Value};

use crate::process::ProcessReport;
use crate::scan::ScanSummary;

/// CloudWatch namespace of every Sundial metric.
pub const NAMESPACE: &str = "Sundial";
/// Most values EMF accepts in one metric array.
pub const MAX_VALUES: usize = 100;

/// CloudWatch units used by Sundial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One invocation's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricSet {
    entries: Vec<(&'static str, Unit, Value)>,
    /// The `Tag` dimension, on a per-tag record.
    tag: Option<String>,
}

impl MetricSet {
    /// Adds a single value.
    pub fn value(&mut self, name: &'static str, unit: Unit, value: f64) -> &mut Self {
        self.entries.push((name, unit, json!(value)));
        self
    }

    /// Adds a sample of values (skipped when empty).
    pub fn sample(&mut self, name: &'static str, unit: Unit, values: &[f64]) -> &mut Self {
        if !values.is_empty() {
            self.entries
                .push((name, unit, Value::from(reduce(values, MAX_VALUES))));
        }
        self
    }

    /// This set for the tasks tagged `tag` (adds the `Tag` dimension).
    pub fn for_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Names of the metrics in this set.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|(n, _, _)| *n).collect()
    }

    /// The EMF record for `function_name` at `timestamp_ms`.
    pub fn to_emf(&self, function_name: &str, timestamp_ms: i64) -> Value {
        let definitions: Vec<Value> = self
            .entries
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut record = Map::new();
        let dimensions = match &self.tag {
            Some(_) => json!([["FunctionName", "Tag"]]),
            None => json!([["FunctionName"]]),
        };
        record.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": definitions,
                }],
            }),
        );
        record.insert("FunctionName".into(), json!(function_name));
        if let Some(tag) = &self.tag {
            record.insert("Tag".into(), json!(tag));
        }
        for (name, _, value) in &self.entries {
            record.insert((*name).into(), value.clone());
        }
        Value::Object(record)
    }

    /// Prints the EMF record as one line on stdout.
    pub fn emit(&self, function_name: &str) {
        let record = self.to_emf(function_name, chrono::Utc::now().timestamp_millis());
        println!("{record}");
    }
}

/// Evenly spaced quantiles of `values` (all of them when few enough).
fn reduce(values: &[f64], max: usize) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.len() <= max {
        return sorted;
    }
    (0..max)
        .map(|i| {
            let idx = i * (sorted.len() - 1) / (max - 1);
            sorted[idx]
        })
        .collect()
}

/// The scanner's metrics. `ScannerTicks` is always 1: the heartbeat the
/// dead-man's-switch alarm sums (a minute without it is a minute without
/// a completed tick).
pub fn for_scan(summary: &ScanSummary) -> MetricSet {
    let mut m = MetricSet::default();
    m.value("ScannerTicks", Unit::Count, 1.0)
        .value("DueBacklog", Unit::Count, summary.backlog as f64)
        .value(
            "OldestDueAgeSeconds",
            Unit::Seconds,
            summary.oldest_due_age_secs,
        )
        .value("MissedOccurrences", Unit::Count, summary.missed as f64)
        .value("Claimed", Unit::Count, summary.claimed as f64)
        .value("Enqueued", Unit::Count, summary.enqueued as f64)
        .value("EnqueueFailed", Unit::Count, summary.failed as f64)
        .value("InvalidSchedules", Unit::Count, summary.invalid as f64)
        .value("PurgedRuns", Unit::Count, summary.purged_runs as f64)
        .value("Paced", Unit::Count, summary.paced as f64)
        .value("FlowsOpen", Unit::Count, summary.flows_open as f64)
        .value(
            "NotificationsSent",
            Unit::Count,
            summary.notifications.sent as f64,
        )
        .value(
            "NotificationsFailed",
            Unit::Count,
            summary.notifications.failed as f64,
        )
        .value("AutoResumed", Unit::Count, summary.resumed as f64)
        .value(
            "ScanDurationMs",
            Unit::Milliseconds,
            summary.elapsed_ms as f64,
        );
    m
}

/// A processor run's records: the totals, then one per task tag.
pub fn emit_process(report: &ProcessReport, function_name: &str) {
    for_process(report).emit(function_name);
    for set in for_tags(report) {
        set.emit(function_name);
    }
}

/// Lag and failures per task tag, one set each (dimension `Tag`). A tag
/// whose tasks fired nothing and failed nothing in the run sends nothing.
pub fn for_tags(report: &ProcessReport) -> Vec<MetricSet> {
    report
        .by_tag
        .iter()
        .map(|(tag, f)| {
            let mut m = MetricSet::default();
            m.value("Fired", Unit::Count, f.fired as f64)
                .value("Failed", Unit::Count, f.failed as f64)
                .value("TimedOut", Unit::Count, f.timed_out as f64)
                .sample("FireLagMs", Unit::Milliseconds, &f.fire_lag_ms);
            m.for_tag(tag.clone())
        })
        .collect()
}

/// The processor's metrics.
pub fn for_process(report: &ProcessReport) -> MetricSet {
    let mut m = MetricSet::default();
    m.value("Fired", Unit::Count, report.fired as f64)
        .value("Succeeded", Unit::Count, report.succeeded as f64)
        .value("Failed", Unit::Count, report.failed as f64)
        .value("TimedOut", Unit::Count, report.attempt_timeouts as f64)
        .value("Retried", Unit::Count, report.retried as f64)
        .value("Skipped", Unit::Count, report.skipped as f64)
        .value("StaleDropped", Unit::Count, report.stale_dropped as f64)
        .value("InvalidMessages", Unit::Count, report.invalid as f64)
        .value("HandedBack", Unit::Count, report.not_started as f64)
        .value("WriteFailures", Unit::Count, report.write_failures as f64)
        .value("HeldEarly", Unit::Count, report.held as f64)
        .value("PutBack", Unit::Count, report.put_back as f64)
        .value("Chained", Unit::Count, report.chained as f64)
        .value("Throttled", Unit::Count, report.throttled as f64)
        .value("FlowHeld", Unit::Count, report.flow_held as f64)
        .value("FlowSkipped", Unit::Count, report.flow_skipped as f64)
        .value("FlowOpened", Unit::Count, report.flows_opened as f64)
        .value("FlowClosed", Unit::Count, report.flows_closed as f64)
        .value("FlowsOpen", Unit::Count, report.flows_open as f64)
        .value(
            "NotificationsSent",
            Unit::Count,
            report.notifications_sent as f64,
        )
        .value(
            "NotificationsFailed",
            Unit::Count,
            report.notifications_failed as f64,
        )
        .value("FlowProbes", Unit::Count, report.probes as f64)
        .value(
            "RetryBudgetDelayed",
            Unit::Count,
            report.budget_delayed as f64,
        )
        .sample("PacingDelayMs", Unit::Milliseconds, &report.pacing_ms)
        .sample("FireLagMs", Unit::Milliseconds, &report.fire_lag_ms)
        .sample("TargetLatencyMs", Unit::Milliseconds, &report.latency_ms);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_record_declares_every_value() {
        let summary = ScanSummary {
            claimed: 7,
            enqueued: 6,
            failed: 1,
            backlog: 3,
            oldest_due_age_secs: 12.5,
            missed: 2,
            ..Default::default()
        };
        let record = for_scan(&summary).to_emf("sundial-scanner", 1_700_000_000_000);
        let declared = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "Sundial");
        assert_eq!(declared["Dimensions"], json!([["FunctionName"]]));
        for def in declared["Metrics"].as_array().unwrap() {
            let name = def["Name"].as_str().unwrap();
            assert!(record.get(name).is_some(), "{name} declared but missing");
        }
        assert_eq!(record["Claimed"], 7.0);
        assert_eq!(record["EnqueueFailed"], 1.0);
        assert_eq!(record["OldestDueAgeSeconds"], 12.5);
        assert_eq!(record["MissedOccurrences"], 2.0);
        assert_eq!(record["ScannerTicks"], 1.0);
        assert_eq!(record["FunctionName"], "sundial-scanner");
    }

    #[test]
    fn tagged_records_carry_the_tag_dimension() {
        let mut report = ProcessReport::default();
        report.merge(&ProcessReport {
            fired: 1,
            failed: 1,
            fire_lag_ms: vec![120.0],
            tags: vec!["team:payments".into()],
            ..Default::default()
        });
        let sets = for_tags(&report);
        assert_eq!(sets.len(), 1);
        let record = sets[0].to_emf("sundial-processor", 1_700_000_000_000);
        let declared = &record["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Dimensions"], json!([["FunctionName", "Tag"]]));
        assert_eq!(record["Tag"], "team:payments");
        assert_eq!(record["Failed"], 1.0);
        assert_eq!(record["FireLagMs"], json!([120.0]));
        // The totals stay without the dimension.
        let totals = for_process(&report).to_emf("sundial-processor", 0);
        assert_eq!(
            totals["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName"]])
        );
        assert!(totals.get("Tag").is_none());
    }

    #[test]
    fn large_samples_are_reduced_to_quantiles() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let reduced = reduce(&values, MAX_VALUES);
        assert_eq!(reduced.len(), 100);
        assert_eq!(reduced[0], 0.0);
        assert_eq!(reduced[99], 999.0);
        // The median survives.
        assert!((reduced[50] - 500.0).abs() < 15.0);
    }
}
