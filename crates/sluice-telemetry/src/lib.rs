//! Telemetry shared by every Sluice stage: structured logging set-up ([`init_logging`]) and the Prometheus
//! exposition of all metrics ([`render_metrics`]). Metrics themselves live beside the code they measure, counted
//! per batch rather than per event, with bounded labels (topic and partition at most, never keys or users).
//! OpenTelemetry export joins here later.

use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global tracing subscriber: human-readable lines, or one JSON object per line with `json`.
/// `filter` is a tracing filter such as `info` or `sluice_log=debug,info`; `RUST_LOG` wins when set.
pub fn init_logging(json: bool, filter: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::try_new(&f).map_err(|e| format!("invalid RUST_LOG `{f}`: {e}"))?,
        _ => EnvFilter::try_new(filter).map_err(|e| format!("invalid logging.level `{filter}`: {e}"))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE);
    let result = if json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    result.map_err(|e| format!("logging already initialised: {e}"))
}

/// All metrics in the Prometheus text format: the process-wide default registry (static per-stage metrics and
/// process metrics) plus `extra` registries (per-instance collectors).
pub fn render_metrics(extra: &[&Registry]) -> String {
    let mut families = prometheus::gather();
    for r in extra {
        families.extend(r.gather());
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf).expect("text encoding of metrics cannot fail");
    String::from_utf8(buf).expect("metrics text is utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_default_and_extra_registries() {
        let r = Registry::new();
        let c = prometheus::IntCounter::new("sluice_test_things_total", "Things.").unwrap();
        r.register(Box::new(c.clone())).unwrap();
        c.inc_by(3);
        let text = render_metrics(&[&r]);
        assert!(text.contains("sluice_test_things_total 3"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "process metrics are exported: {text}");
    }
}
