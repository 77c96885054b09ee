//! `sluice status [--watch [INTERVAL]]`: one screen that answers "what is wrong": the four alerts, per-topic
//! ingest rates, per-job lag / throughput / watermark delay, sinks, the slowest stage and backpressure, disk
//! usage and the last errors, from the server's `GET /v1/status`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

use crate::client::{ServerArg, call, http, url};

#[derive(Args)]
pub struct StatusArgs {
    /// Redraw the screen every INTERVAL (default 2s) until interrupted.
    #[arg(long, short, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s")]
    watch: Option<String>,
    /// Print the status document as JSON instead.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let client = http();
    let server = args.server.server.as_str();
    let fetch = || async { call(client.get(url(server, "/v1/status")), server).await.map(|(_, v)| v) };
    let Some(every) = &args.watch else {
        let v = fetch().await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", render(server, &v));
        }
        return Ok(());
    };
    let every = humantime::parse_duration(every)
        .map_err(|e| anyhow::anyhow!("--watch interval `{every}` is not a duration such as 2s: {e}"))?;
    if every < Duration::from_millis(100) {
        bail!("--watch interval must be at least 100ms");
    }
    loop {
        let screen = match fetch().await {
            Ok(v) => render(server, &v),
            Err(e) => format!("sluice status  {server}\n\nerror: {e:#}\n"),
        };
        // Clear the screen and home the cursor, then draw.
        print!("\x1b[2J\x1b[H{screen}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::time::sleep(every).await;
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// 1234567.8 -> "1,234,568"; small numbers keep one decimal.
fn count(x: f64) -> String {
    if x.abs() < 100.0 && x.fract() != 0.0 {
        return format!("{x:.1}");
    }
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn bytes(x: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = x;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0}{}", units[u]) } else { format!("{v:.1}{}", units[u]) }
}

fn secs(x: f64) -> String {
    if x < 1.0 {
        format!("{:.1}ms", x * 1000.0)
    } else if x < 120.0 {
        format!("{x:.1}s")
    } else if x < 7200.0 {
        format!("{:.1}m", x / 60.0)
    } else {
        format!("{:.1}h", x / 3600.0)
    }
}

fn pct(x: f64) -> String {
    if x > 0.0 && x < 0.001 { format!("{:.3}%", x * 100.0) } else { format!("{:.1}%", x * 100.0) }
}

fn alert_value(unit: &str, v: Option<f64>) -> String {
    match (unit, v) {
        (_, None) => "-".into(),
        ("events", Some(v)) => format!("{} events", count(v)),
        ("seconds", Some(v)) => secs(v),
        (_, Some(v)) => pct(v),
    }
}

/// The time of day of an RFC 3339 timestamp (`13:05:01`).
fn clock(v: &Value) -> String {
    v.as_str().and_then(|s| s.get(11..19)).unwrap_or("-").to_string()
}

/// How a [`table`] column's cells line up.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

use Align::{Left, Right};

/// Writes a section's table after a blank line: a header line (`title` over the first column, which holds the names, then each
/// column's header) and one indented line per row. Columns are `(header, minimum width, alignment)`, one space
/// apart; each is as wide as its widest cell, so a long name widens its column for every row instead of pushing
/// its own row's numbers out of line.
fn table(o: &mut String, title: &str, columns: &[(&str, usize, Align)], rows: &[Vec<String>]) {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, &(header, min, _))| {
            let cells = rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count());
            cells.chain([header.chars().count(), min]).max().unwrap_or(min)
        })
        .collect();
    o.push('\n');
    let mut line = |first: &str, cells: Vec<&str>| {
        let _ = write!(o, "{first:<w$}", w = widths[0] + 2);
        for ((cell, w), &(_, _, align)) in cells.into_iter().zip(&widths[1..]).zip(&columns[1..]) {
            let _ = match align {
                Left => write!(o, " {cell:<w$}"),
                Right => write!(o, " {cell:>w$}"),
            };
        }
        o.push('\n');
    };
    line(title, columns[1..].iter().map(|c| c.0).collect());
    for r in rows {
        let name = format!("  {}", r.first().map_or("", String::as_str));
        line(&name, r.iter().skip(1).map(String::as_str).collect());
    }
}

/// The status screen.
pub fn render(server: &str, v: &Value) -> String {
    let mut o = String::new();
    let empty = Vec::new();
    let arr = |k: &str| v[k].as_array().unwrap_or(&empty).clone();
    let span = num(&v["rate_span_seconds"]).unwrap_or(0.0);
    let _ = writeln!(o, "sluice status  {server}  {}  (rates over {span:.0}s)", v["at"].as_str().unwrap_or("-"));

    let _ = writeln!(o, "\nALERTS");
    for a in arr("alerts") {
        let unit = a["unit"].as_str().unwrap_or("");
        let state = a["state"].as_str().unwrap_or("?");
        let shown = match state {
            "firing" => "FIRING",
            "pending" => "pending",
            s => s,
        };
        let _ = writeln!(
            o,
            "  {:<14} {:<8} {:>16}  threshold {:<14} since {}{}",
            a["name"].as_str().unwrap_or("?"),
            shown,
            alert_value(unit, num(&a["value"])),
            alert_value(unit, num(&a["threshold"])),
            clock(&a["since"]),
            a["source"].as_str().map(|s| format!("  ({s})")).unwrap_or_default(),
        );
    }

    let topics = arr("topics");
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| {
            vec![
                t["topic"].as_str().unwrap_or("?").to_string(),
                count(num(&t["events_per_second"]).unwrap_or(0.0)),
                format!("{}/s", bytes(num(&t["bytes_per_second"]).unwrap_or(0.0))),
                count(num(&t["events_total"]).unwrap_or(0.0)),
            ]
        })
        .collect();
    let columns = [("", 29, Left), ("events/s", 12, Right), ("bytes/s", 14, Right), ("events total", 16, Right)];
    table(&mut o, "TOPICS", &columns, &rows);
    if topics.is_empty() {
        let _ = writeln!(o, "  (nothing ingested since start)");
    }

    let jobs = arr("jobs");
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let opt_secs = |k: &str| num(&j[k]).map_or("-".to_string(), secs);
            let bp = num(&j["backpressure"]).unwrap_or(0.0);
            vec![
                j["job"].as_str().unwrap_or("?").to_string(),
                (if j["running"].as_bool() == Some(true) { "running" } else { "stopped" }).to_string(),
                count(num(&j["lag"]).unwrap_or(0.0)),
                count(num(&j["records_per_second"]).unwrap_or(0.0)),
                opt_secs("watermark_delay_seconds"),
                opt_secs("checkpoint_age_seconds"),
                if j["backpressure_active"].as_bool() == Some(true) { format!("ACTIVE {}", pct(bp)) } else { pct(bp) },
            ]
        })
        .collect();
    let columns = [
        ("", 29, Left),
        ("state", 8, Left),
        ("lag", 12, Right),
        ("records/s", 11, Right),
        ("wm delay", 11, Right),
        ("checkpoint", 11, Right),
        ("backpressure", 13, Right),
    ];
    table(&mut o, "JOBS", &columns, &rows);
    if jobs.is_empty() {
        let _ = writeln!(o, "  (no jobs)");
    }

    let sinks = arr("sinks");
    if !sinks.is_empty() {
        let rows: Vec<Vec<String>> = sinks
            .iter()
            .map(|s| {
                vec![
                    format!("{} <- {}", s["sink"].as_str().unwrap_or("?"), s["topic"].as_str().unwrap_or("?")),
                    count(num(&s["lag"]).unwrap_or(0.0)),
                    count(num(&s["records_per_second"]).unwrap_or(0.0)),
                ]
            })
            .collect();
        table(&mut o, "SINKS", &[("", 29, Left), ("lag", 12, Right), ("records/s", 11, Right)], &rows);
    }

    let _ = write!(o, "\nSLOWEST STAGE  ");
    match arr("stages").first() {
        Some(s) => {
            let _ = write!(
                o,
                "{}: busy {}, {} per batch, {} batches/s",
                s["stage"].as_str().unwrap_or("?"),
                pct(num(&s["busy"]).unwrap_or(0.0)),
                secs(num(&s["mean_seconds"]).unwrap_or(0.0)),
                count(num(&s["batches_per_second"]).unwrap_or(0.0)),
            );
        }
        None => {
            let _ = write!(o, "- (idle)");
        }
    }
    let _ = writeln!(
        o,
        "\nBACKPRESSURE   {}",
        if v["backpressure_active"].as_bool() == Some(true) { "ACTIVE" } else { "none" }
    );

    let d = &v["disk"];
    let _ = write!(o, "\nDISK  {}", d["data_dir"].as_str().unwrap_or("?"));
    if let Some(b) = num(&d["data_dir_bytes"]) {
        let areas: Vec<String> = d["areas"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k} {}", bytes(v.as_f64().unwrap_or(0.0)))).collect())
            .unwrap_or_default();
        let _ = write!(o, ": {} ({})", bytes(b), areas.join(", "));
    }
    let fs = &d["filesystem"];
    if let (Some(r), Some(free), Some(size)) = (num(&d["used_ratio"]), num(&fs["free_bytes"]), num(&fs["size_bytes"])) {
        let _ = write!(o, "; filesystem {} used, {} free of {}", pct(r), bytes(free), bytes(size));
    }
    let _ = writeln!(o);

    let errors = arr("recent_errors");
    let _ = writeln!(o, "\nLAST ERRORS");
    if errors.is_empty() {
        let _ = writeln!(o, "  (none since start)");
    }
    for e in errors.iter().take(10) {
        let at = e["at_ms"].as_i64().map(|ms| {
            let s = ms / 1000;
            format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
        });
        let _ = writeln!(
            o,
            "  {}  {}/{} x{}  {}: {}",
            at.unwrap_or_default(),
            e["stage"].as_str().unwrap_or("?"),
            e["kind"].as_str().unwrap_or("?"),
            e["count"].as_u64().unwrap_or(1),
            e["source"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or(""),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_section() {
        let v = serde_json::json!({
            "at": "2026-11-28T13:05:01.000Z", "rate_span_seconds": 30.0,
            "alerts": [{"name": "consumer_lag", "state": "firing", "value": 12345.0, "threshold": 10000.0,
                        "unit": "events", "since": "2026-11-28T13:04:00.000Z", "source": "job/j"},
                       {"name": "error_rate", "state": "ok", "value": null, "threshold": 0.001, "unit": "ratio",
                        "since": "2026-11-28T13:00:00.000Z"}],
            "topics": [{"topic": "t", "events_per_second": 1500.0, "bytes_per_second": 2048.0, "events_total": 1e6}],
            "jobs": [{"job": "j", "running": false, "lag": 12345.0, "records_per_second": 0.0,
                      "watermark_delay_seconds": 75.0, "checkpoint_age_seconds": null, "backpressure": 0.5,
                      "backpressure_active": true}],
            "sinks": [], "stages": [{"stage": "sink store", "busy": 0.9, "mean_seconds": 0.6, "batches_per_second": 1.5}],
            "backpressure_active": true,
            "disk": {"data_dir": "/d", "data_dir_bytes": 1048576, "areas": {"log": 1048576},
                     "filesystem": {"size_bytes": 1e12, "free_bytes": 5e11, "used_bytes": 5e11}, "used_ratio": 0.5},
            "recent_errors": [{"at_ms": 3723000, "stage": "job", "kind": "decode", "count": 3, "source": "j",
                               "message": "3 records do not decode"}]
        });
        let s = render("http://x", &v);
        for want in [
            "consumer_lag   FIRING",
            "12,345 events",
            "(job/j)",
            "1,500",
            "2.0KiB/s",
            "stopped",
            "75.0s",
            "ACTIVE 50.0%",
            "sink store: busy 90.0%, 600.0ms per batch",
            "BACKPRESSURE   ACTIVE",
            "/d: 1.0MiB (log 1.0MiB)",
            "50.0% used",
            "01:02:03  job/decode x3  j: 3 records do not decode",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }

    /// The lines of the screen's `title` section, header first, up to the blank line after it.
    fn section<'a>(screen: &'a str, title: &str) -> Vec<&'a str> {
        let lines: Vec<&str> = screen.lines().collect();
        let start =
            lines.iter().position(|l| l.starts_with(title)).unwrap_or_else(|| panic!("no {title} in\n{screen}"));
        lines[start..].iter().take_while(|l| !l.is_empty()).copied().collect()
    }

    #[test]
    fn long_names_keep_the_columns_aligned() {
        let long = "checkout_http_requests_from_every_region_enriched";
        let v = serde_json::json!({
            "topics": [{"topic": "t", "events_per_second": 1.0, "bytes_per_second": 2.0, "events_total": 3.0},
                       {"topic": long, "events_per_second": 1500.0, "bytes_per_second": 2048.0, "events_total": 1e9}],
            "jobs": [{"job": "j", "running": true, "lag": 1.0, "records_per_second": 2.0},
                     {"job": format!("{long}_per_minute"), "running": false, "lag": 123456789.0,
                      "records_per_second": 0.0, "backpressure": 0.5, "backpressure_active": true}],
            "sinks": [{"sink": "store", "topic": "t", "lag": 0.0, "records_per_second": 10.0},
                      {"sink": "search", "topic": long, "lag": 1234567890.0, "records_per_second": 123456.0}],
        });
        let s = render("http://x", &v);
        for title in ["TOPICS", "JOBS", "SINKS"] {
            let lines = section(&s, title);
            assert_eq!(lines.len(), 3, "{title}: a header and two rows in\n{s}");
            // The last column is right-aligned: aligned columns make every line end at the same place.
            let width = lines[0].chars().count();
            for l in &lines {
                assert_eq!(l.chars().count(), width, "{title} out of line:\n{}", lines.join("\n"));
            }
        }
        // Names are separated from the next column, however long.
        let sinks = section(&s, "SINKS");
        assert!(sinks[2].contains(&format!("search <- {long} ")), "{}", sinks.join("\n"));
        let jobs = section(&s, "JOBS");
        // Each header sits over its column: "lag" ends where the lag values end.
        let lag_end = jobs[0].find("lag").unwrap() + 3;
        assert_eq!(&jobs[2][lag_end - 11..lag_end], "123,456,789", "{}", jobs.join("\n"));
        // Short names keep the usual layout.
        let short = render(
            "http://x",
            &serde_json::json!({"sinks": [{"sink": "store", "topic": "t", "lag": 0.0,
            "records_per_second": 10.0}]}),
        );
        let before = format!(
            "\nSINKS{:<27}{:>12} {:>11}\n  {:<30}{:>12} {:>11}\n",
            "", "lag", "records/s", "store <- t", "0", "10"
        );
        assert!(short.contains(&before), "{short}");
    }
}
