//! `sluice`: one binary that is a whole event pipeline. `sluice serve` runs it; the other commands are clients
//! of a running server (`--server`, default http://127.0.0.1:8080) or tools over a data directory.

mod client;
mod jobs;
mod schema;
mod search;
mod status;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sluice_config::{Config, LogFormat, Overrides};

// glibc's malloc keeps freed memory in up to 8 arenas per core: under a backfill the server's RSS grew to 1.4 GiB
// while it used under 500 MiB (ADR 0012).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "One binary that is a whole event pipeline: durable log, stream jobs, \
    time-series store, search and metrics.",
    after_help = "Start here:\n  sluice serve\n  sluice topics create \
    http_requests --partitions 4\n  echo '{\"value\":{\"status\":500}}' | sluice produce http_requests\n  \
    sluice tail http_requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: HTTP API, durable log, everything in one process on one data directory.
    #[command(after_help = "Examples:\n  sluice serve\n  sluice serve --config sluice.toml\n  \
        sluice serve --data-dir /var/lib/sluice --http-addr 0.0.0.0:8080\n  SLUICE__LOG__FSYNC=10ms sluice serve")]
    Serve(ServeArgs),
    /// Send events from a file or stdin (a JSON array or NDJSON, one event per line) to a topic.
    #[command(after_help = "Each event is {\"value\":{...},\"key\":\"...\",\"timestamp\":\"...\",\"headers\":{...}}; \
        with --values each input object is the value itself.\n\nExamples:\n  \
        sluice produce http_requests --file events.ndjson\n  \
        echo '{\"service\":\"api\",\"status\":503}' | sluice produce http_requests --values")]
    Produce(client::ProduceArgs),
    /// Print a topic's events as NDJSON: from an offset, from a time, or following new events.
    #[command(after_help = "Examples:\n  sluice tail http_requests\n  sluice tail http_requests --partition 2 \
        --offset 1000 --limit 10\n  sluice tail http_requests --from-time 2026-11-28T10:00:00Z\n  \
        sluice tail http_requests --from-end --follow")]
    Tail(client::TailArgs),
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(client::TopicsCommand),
    /// Register, list, get and check schemas in the schema registry.
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Create, list, describe, pause, resume, drop and replay stream jobs; read their results.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Run a read-only SQL query over the time-series store and print an aligned table.
    #[command(after_help = "Examples:\n  sluice query \"SELECT time_bucket('1 minute', event_time) AS m, service, \
        count(*), avg(latency_ms) FROM http_requests GROUP BY 1, 2 ORDER BY 1\"\n  \
        sluice query --format csv \"SELECT * FROM errors_per_minute\" > errors.csv\n  sluice query \"SHOW TABLES\"")]
    Query(store::QueryArgs),
    /// List and describe the store's tables; set their retention.
    #[command(subcommand)]
    Tables(store::TablesCommand),
    /// Search a topic's events by what they say (newest first), with highlights and facets.
    #[command(
        after_help = "Examples:\n  sluice search --topic app_logs 'service:checkout AND timeout' --from now-1h\n  \
        sluice search --topic app_logs '\"connection reset\" -level:DEBUG' --facets service,level\n  \
        sluice search --topic app_logs 'latency_ms:[500 TO *]' --sort score"
    )]
    Search(search::SearchArgs),
    /// Create, describe, list and drop topics' search indexes.
    #[command(subcommand)]
    Index(search::IndexCommand),
    /// One screen of what is wrong: alerts, rates, lag, slowest stage, backpressure, disk, last errors.
    #[command(after_help = "Examples:\n  sluice status\n  sluice status --watch\n  sluice status --watch 5s\n  \
        sluice status --json")]
    Status(status::StatusArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Load generators and measurements.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML config file (see `sluice config check`); SLUICE__SECTION__KEY variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Where all data lives [default: ./sluice-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// Log lines as text or JSON objects.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

impl ServeArgs {
    fn load(&self) -> Result<Config> {
        let overrides = Overrides {
            data_dir: self.data_dir.clone(),
            http_addr: self.http_addr,
            log_format: self.log_format.as_deref().map(|f| if f == "json" { LogFormat::Json } else { LogFormat::Text }),
        };
        Ok(Config::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the configuration exactly as `serve` would, report errors, and print the effective config.
    #[command(after_help = "Examples:\n  sluice config check\n  sluice config check --config sluice.toml\n  \
        SLUICE__LOG__DEFAULT_PARTITIONS=8 sluice config check")]
    Check(ServeArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Produce realistic HTTP-request-log events to a running server and report throughput and ack latency.
    #[command(after_help = "Examples:\n  sluice bench ingest --duration 60s\n  \
        sluice bench ingest --rate 10000 --connections 4 --duration 30s")]
    Ingest(sluice_bench::IngestArgs),
    /// Read a partition sequentially from offset 0 straight from a data directory (server stopped).
    #[command(after_help = "Example:\n  sluice bench read --data-dir ./sluice-data --topic bench")]
    Read(sluice_bench::ReadArgs),
    /// Run the example job under ingest load and report ingest-ack -> hot-results latency (measured in the server).
    #[command(after_help = "Examples:\n  sluice bench pipeline --rate 10000 --duration 30s\n  \
        sluice bench pipeline --rate 100000 --connections 16 --batch-size 500")]
    Pipeline(sluice_bench::PipelineArgs),
    /// Read a job's hot results at a fixed rate and report latency.
    #[command(after_help = "Example:\n  sluice bench results --job errors_per_minute --rate 5000 --duration 30s")]
    Results(sluice_bench::ResultsArgs),
    /// The example job's per-event work on decoded events, on one core (in-process, no server).
    #[command(after_help = "Example:\n  sluice bench operator --events 2000000")]
    Operator(sluice_bench::OperatorArgs),
    /// Checkpoint a job holding a million keys of state (in-process, temporary data directory).
    #[command(after_help = "Example:\n  sluice bench checkpoint --keys 1000000")]
    Checkpoint(sluice_bench::CheckpointArgs),
    /// The time-series store: write rows/s, the per-minute aggregate over 50M events, the same from a results
    /// table, and time-range pruning (in-process).
    #[command(after_help = "Examples:\n  sluice bench store\n  sluice bench store --rows 5000000 --data-dir /tmp/sb")]
    Store(store::StoreBenchArgs),
    /// Search: index ~300-byte events in-process and report events/s, then term queries over one-hour ranges.
    #[command(after_help = "Examples:\n  sluice bench search\n  sluice bench search --docs 5000000 --data-dir /tmp/sb")]
    Search(search::SearchBenchArgs),
    /// Search: produce at a fixed rate to a running server and report acknowledgement -> searchable latency.
    #[command(after_help = "Example:\n  sluice bench search-latency --rate 10000 --duration 60s")]
    SearchLatency(search::SearchLatencyArgs),
    /// Backfill a year of events in time order through the example job, the store and a search index; report
    /// sink throughput until caught up, peak RSS, store files, index partitions and query latency meanwhile.
    #[command(after_help = "Examples:\n  sluice bench backfill\n  \
        sluice bench backfill --events 50000 --span 30d --server-pid $(pgrep -n sluice) --json")]
    Backfill(sluice_bench::BackfillArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<std::process::ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await?,
        Command::Produce(args) => return client::produce(args).await,
        Command::Tail(args) => client::tail(args).await?,
        Command::Topics(cmd) => client::topics(cmd).await?,
        Command::Schema(cmd) => return schema::run(cmd).await,
        Command::Jobs(cmd) => jobs::run(cmd).await?,
        Command::Query(args) => store::query(args).await?,
        Command::Tables(cmd) => store::tables(cmd).await?,
        Command::Search(args) => search::search(args).await?,
        Command::Index(cmd) => search::index(cmd).await?,
        Command::Status(args) => status::run(args).await?,
        Command::Config(ConfigCommand::Check(args)) => {
            let config = args.load()?;
            println!("# config ok\n{}", config.to_toml());
        }
        Command::Bench(BenchCommand::Ingest(args)) => sluice_bench::ingest(args).await?,
        Command::Bench(BenchCommand::Read(args)) => sluice_bench::read(args).await?,
        Command::Bench(BenchCommand::Pipeline(args)) => sluice_bench::pipeline::pipeline(args).await?,
        Command::Bench(BenchCommand::Results(args)) => sluice_bench::pipeline::results(args).await?,
        Command::Bench(BenchCommand::Operator(args)) => sluice_bench::jobs::operator(args).await?,
        Command::Bench(BenchCommand::Checkpoint(args)) => sluice_bench::jobs::checkpoint(args).await?,
        Command::Bench(BenchCommand::Store(args)) => store::bench(args).await?,
        Command::Bench(BenchCommand::Search(args)) => search::bench(args).await?,
        Command::Bench(BenchCommand::SearchLatency(args)) => search::latency(args).await?,
        Command::Bench(BenchCommand::Backfill(args)) => sluice_bench::backfill::backfill(args).await?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<()> {
    let config = args.load()?;
    let t = &config.tracing;
    let otlp = (!t.otlp_endpoint.is_empty()).then(|| sluice_telemetry::trace::OtlpSettings {
        endpoint: t.otlp_endpoint.clone(),
        sample_ratio: t.sample_ratio,
        service_name: t.service_name.clone(),
        export_interval: t.export_interval.0,
    });
    let tracing_guard =
        sluice_telemetry::init(config.logging.format == LogFormat::Json, &config.logging.level, otlp.as_ref())
            .map_err(anyhow::Error::msg)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), addr = %config.http.addr,
        data_dir = %config.data_dir.display(), "starting sluice");
    if let Some(o) = &otlp {
        tracing::info!(endpoint = %o.endpoint, sample_ratio = o.sample_ratio, "exporting spans over otlp/http");
    }
    let adapters =
        sluice_server::Adapters { store: Some(store::embedded_store()), search: Some(search::embedded_search()) };
    let mut server = sluice_server::start_with_adapters(config, std::sync::Arc::new(sluice_log::StdStorage), adapters)
        .await
        .context("cannot start")?;
    let shutdown = server.take_shutdown();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        if let Some(tx) = shutdown {
            let _ = tx.send(());
        }
    });
    let stopped = server.wait().await;
    // The exporter's last batch goes out after the last sink flush; shutting it down blocks, so off the workers.
    let _ = tokio::task::spawn_blocking(move || tracing_guard.shutdown()).await;
    stopped?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
