//! Errors by stage and kind: the `sluice_errors_total{stage,kind}` counter that the error-rate alert divides by
//! ingested events, and a small ring of the most recent error events for `sluice status`.
//!
//! Call [`record_error`] once where an error is handled (where it is logged), with a count when one failure
//! affects several events (a rejected batch, undecodable records of one page). `stage` is one of [`STAGES`];
//! `kind` is a short fixed code (`io`, `decode`, `disk_full`, ...), never a key, a user or free text.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use prometheus::{IntCounterVec, register_int_counter_vec};
use serde::Serialize;

/// The stages that report errors, as used in the `stage` label.
pub const STAGES: [&str; 6] = ["ingest", "log", "job", "sink", "schema", "search"];

/// Recent error events kept for `sluice status`.
pub const RECENT_ERRORS: usize = 32;

/// Longest message kept per error event.
const MAX_MESSAGE: usize = 300;

static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_errors_total",
        "Errors of every stage by kind (server-side ingest failures, log write errors, undecodable records, \
         job and checkpoint failures, failed sink writes, schema store errors); per affected event where one \
         failure affects several.",
        &["stage", "kind"]
    )
    .expect("metric registers once")
});

static RECENT: LazyLock<Mutex<VecDeque<ErrorEvent>>> =
    LazyLock::new(|| Mutex::new(VecDeque::with_capacity(RECENT_ERRORS)));

/// One handled error, as `sluice status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEvent {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub stage: &'static str,
    pub kind: String,
    /// Events affected (1 for a single failure).
    pub count: u64,
    /// Where: the topic, job or sink (bounded to what exists).
    pub source: String,
    pub message: String,
}

/// Counts `count` errors of `kind` in `stage` and remembers the event in the ring of recent errors.
pub fn record_error(stage: &'static str, kind: &str, count: u64, source: &str, message: &dyn std::fmt::Display) {
    if count == 0 {
        return;
    }
    ERRORS.with_label_values(&[stage, kind]).inc_by(count);
    let mut message = message.to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let event = ErrorEvent { at_ms, stage, kind: kind.to_string(), count, source: source.to_string(), message };
    let mut ring = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    if ring.len() == RECENT_ERRORS {
        ring.pop_front();
    }
    ring.push_back(event);
}

/// The most recent error events, newest first.
pub fn recent_errors() -> Vec<ErrorEvent> {
    RECENT.lock().unwrap_or_else(|p| p.into_inner()).iter().rev().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_keeps_a_bounded_ring() {
        for i in 0..(RECENT_ERRORS + 5) {
            record_error("sink", "test_kind", 2, "store", &format!("failure {i}"));
        }
        record_error("sink", "test_kind", 0, "store", &"not an error");
        let text = crate::render_metrics(&[]);
        let want = format!("sluice_errors_total{{kind=\"test_kind\",stage=\"sink\"}} {}", 2 * (RECENT_ERRORS + 5));
        assert!(text.contains(&want), "{text}");
        let recent: Vec<_> = recent_errors().into_iter().filter(|e| e.kind == "test_kind").collect();
        assert_eq!(recent.len(), RECENT_ERRORS);
        assert_eq!(recent[0].message, format!("failure {}", RECENT_ERRORS + 4), "newest first");
        record_error("log", "long", 1, "t", &"é".repeat(400));
        let long = recent_errors().into_iter().find(|e| e.kind == "long").unwrap();
        assert!(long.message.len() <= MAX_MESSAGE + 3 && long.message.ends_with("..."));
    }
}
