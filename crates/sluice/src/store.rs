//! `sluice query` and `sluice tables ...`: SQL over the time-series store and its tables, through a running server;
//! and the embedded store the server is started with.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_server::{StoreContext, StoreFactory};
use sluice_sink::store::TimeSeriesStore;

use crate::client::{ServerArg, call, http, url, urlencode};

/// The embedded store for `sluice serve`.
pub fn embedded_store() -> StoreFactory {
    Box::new(|ctx: StoreContext| {
        Box::pin(async move {
            let parts = sluice_tsdb::port::StoreParts {
                data_dir: ctx.config.data_dir.clone(),
                config: ctx.config.store.clone(),
                log: ctx.log,
                decoder: ctx.decoder,
                jobs: ctx.jobs,
            };
            let store = sluice_tsdb::port::EmbeddedStore::start(parts).await.map_err(|e| e.to_string())?;
            Ok(store as Arc<dyn TimeSeriesStore>)
        })
    })
}

#[derive(Args)]
pub struct QueryArgs {
    /// The SQL (or `-` or nothing to read it from stdin; --file to read it from a file).
    sql: Option<String>,
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Output: an aligned table, JSON (the API's answer), CSV, or NDJSON rows.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv", "ndjson"])]
    format: String,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Subcommand)]
pub enum TablesCommand {
    /// List tables with their rows, size, chunks and retention.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show a table's columns, chunks and source offsets.
    Describe {
        table: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Set a table's retention (`30d`, `12h`, or `forever`); whole chunks older than it are dropped.
    #[command(after_help = "Examples:\n  sluice tables retention http_requests 30d\n  \
        sluice tables retention errors_per_minute forever")]
    Retention {
        table: String,
        retention: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn query(args: QueryArgs) -> Result<()> {
    let sql = match (&args.sql, &args.file) {
        (Some(s), None) if s != "-" => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        (Some(_), Some(_)) => bail!("give the SQL as an argument or with --file, not both"),
        _ => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the query from stdin")?;
            s
        }
    };
    let server = &args.server.server;
    let mut req = http().post(url(server, "/v1/query")).json(&json!({ "sql": sql }));
    if args.format == "csv" {
        req = req.header("accept", "text/csv");
        let resp = req.send().await.with_context(|| format!("cannot reach the sluice server at {server}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            bail!("{} (HTTP {})", v["error"]["message"].as_str().unwrap_or("query failed"), status.as_u16());
        }
        std::io::stdout().write_all(&body)?;
        return Ok(());
    }
    let (_, v) = call(req, server).await?;
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&v)?),
        "ndjson" => {
            for r in v["rows"].as_array().into_iter().flatten() {
                println!("{r}");
            }
        }
        _ => print!("{}", render_table(&v)),
    }
    Ok(())
}

/// An aligned text table of a `/v1/query` JSON answer, with a row count (and a note when it was cut).
pub fn render_table(v: &Value) -> String {
    let names: Vec<&str> = v["columns"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect();
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let cell = |x: &Value| match x {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let grid: Vec<Vec<String>> =
        rows.iter().map(|r| names.iter().map(|n| cell(r.get(*n).unwrap_or(&Value::Null))).collect()).collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for r in &grid {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = v["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| matches!(c["type"].as_str(), Some("bigint" | "integer" | "smallint" | "double" | "real" | "decimal")))
        .collect();
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if numeric.get(i).copied().unwrap_or(false) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(parts.join(" | ").trim_end());
        out.push('\n');
    };
    line(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &mut out);
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-"));
    out.push('\n');
    for r in &grid {
        line(r, &mut out);
    }
    let n = grid.len();
    out.push_str(&format!("({n} row{})\n", if n == 1 { "" } else { "s" }));
    if v["truncated"].as_bool() == Some(true) {
        out.push_str("(answer cut at the server's row limit; add a LIMIT or narrow the query)\n");
    }
    out
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

fn human_ms(ms: Option<i64>) -> String {
    match ms {
        None => "forever".into(),
        Some(ms) => humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string(),
    }
}

pub async fn tables(cmd: TablesCommand) -> Result<()> {
    match cmd {
        TablesCommand::List { server } => {
            let (_, v) = call(http().get(url(&server.server, "/v1/tables")), &server.server).await?;
            println!(
                "{:<32} {:<8} {:>12} {:>10} {:>7} {:>7} {:>10} {:>10}",
                "TABLE", "KIND", "ROWS", "SIZE", "CHUNKS", "FILES", "BUFFERED", "RETENTION"
            );
            for t in v["tables"].as_array().into_iter().flatten() {
                let chunks = t["chunks"].as_array().map_or(0, |c| c.len());
                let files: u64 = t["chunks"].as_array().into_iter().flatten().filter_map(|c| c["files"].as_u64()).sum();
                println!(
                    "{:<32} {:<8} {:>12} {:>10} {:>7} {:>7} {:>10} {:>10}",
                    t["name"].as_str().unwrap_or("?"),
                    t["kind"].as_str().unwrap_or("?"),
                    t["rows"].as_u64().unwrap_or(0),
                    human_bytes(t["bytes"].as_u64().unwrap_or(0)),
                    chunks,
                    files,
                    t["buffered_rows"].as_u64().unwrap_or(0),
                    human_ms(t["retention_ms"].as_i64()),
                );
            }
        }
        TablesCommand::Describe { table, server } => {
            let path = format!("/v1/tables/{}", urlencode(&table));
            let (_, v) = call(http().get(url(&server.server, &path)), &server.server).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        TablesCommand::Retention { table, retention, server } => {
            let path = format!("/v1/tables/{}/retention", urlencode(&table));
            let req = http().put(url(&server.server, &path)).json(&json!({ "retention": retention }));
            let (_, v) = call(req, &server.server).await?;
            println!("table `{table}`: retention {}", human_ms(v["retention_ms"].as_i64()));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct StoreBenchArgs {
    /// Where the benchmark's store lives (reused when it already holds the rows) [default: a temporary directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Events written into the raw table.
    #[arg(long, default_value_t = 50_000_000)]
    rows: u64,
    /// Hours of event time the events are spread over.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Runs of each query (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Rows per flush (the store's `flush_rows`).
    #[arg(long, default_value_t = 262_144)]
    flush_rows: usize,
    /// Query threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
}

pub async fn bench(args: StoreBenchArgs) -> Result<()> {
    let tmp;
    let dir = match args.data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let bar = indicatif::ProgressBar::new(args.rows);
    bar.set_style(
        indicatif::ProgressStyle::with_template("writing {bar:40} {pos}/{len} rows ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let opts = sluice_tsdb::bench::StoreBenchOptions {
        dir,
        rows: args.rows,
        hours: args.hours,
        query_runs: args.runs.into(),
        flush_rows: args.flush_rows,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        memory_limit_bytes: 2 << 30,
    };
    let report = sluice_tsdb::bench::run(opts, move |n| b.set_position(n)).await?;
    bar.finish_and_clear();
    print!("{report}");
    Ok(())
}
