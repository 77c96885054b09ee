//! `sluice jobs ...`: manage stream jobs and read their results through a running server.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ServerArg, call, http, url, urlencode};

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Create and start a job from `CREATE JOB ...` SQL (an argument, --file, or stdin).
    #[command(after_help = "Example:\n  sluice jobs create \"CREATE JOB errors_per_minute AS SELECT window_start, \
        service, count(*) AS errors FROM http_requests WHERE status >= 500 GROUP BY TUMBLE(event_time, INTERVAL '1' \
        MINUTE), service\"\n  sluice jobs create --file job.sql")]
    Create {
        sql: Option<String>,
        #[arg(long, short)]
        file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List jobs with their state, lag and watermark.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show everything about one job (JSON).
    Describe {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Stop a job after a last checkpoint; it stays stopped across restarts until resumed.
    Pause {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Restart a paused job from its last checkpoint.
    Resume {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Stop a job and delete its definition and state (its topics are kept).
    Drop {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Reprocess history, in place or into a shadow job to compare, with a progress bar.
    #[command(after_help = "Examples:\n  sluice jobs replay errors_per_minute --from earliest\n  \
        sluice jobs replay errors_per_minute --from 2026-11-28T08:00:00Z --into errors_v2\n  \
        sluice jobs replay errors_per_minute --from 1000")]
    Replay {
        name: String,
        /// `earliest`, an offset (in every partition), or an RFC 3339 time.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Replay into a new job of this name (same SQL, its own topics) instead of in place.
        #[arg(long)]
        into: Option<String>,
        /// Return at once instead of following progress.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Print a job's hot results (recent windows) as NDJSON.
    Results {
        name: String,
        /// Only this group key (several keys joined by ',').
        #[arg(long)]
        key: Option<String>,
        /// Windows ending after this time (RFC 3339 or epoch ms).
        #[arg(long)]
        from: Option<String>,
        /// Windows starting before this time.
        #[arg(long)]
        to: Option<String>,
        /// Only each key's newest window.
        #[arg(long)]
        latest: bool,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn run(cmd: JobsCommand) -> Result<()> {
    let client = http();
    match cmd {
        JobsCommand::Create { sql, file, server } => {
            let sql = match (sql, file) {
                (Some(s), None) => s,
                (None, Some(f)) => std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?,
                (None, None) => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading SQL from stdin")?;
                    s
                }
                (Some(_), Some(_)) => bail!("give the SQL as an argument or with --file, not both"),
            };
            let (_, job) =
                call(client.post(url(&server.server, "/v1/jobs")).json(&json!({ "sql": sql })), &server.server).await?;
            println!(
                "created job {} reading {} into {}",
                job["name"].as_str().unwrap_or("?"),
                job["source"].as_str().unwrap_or("?"),
                job["output_topic"].as_str().unwrap_or("?")
            );
        }
        JobsCommand::List { server } => {
            let (_, resp) = call(client.get(url(&server.server, "/v1/jobs")), &server.server).await?;
            println!("{:<28} {:<9} {:<10} {:<24} {:>12} {:<26}", "JOB", "STATE", "KIND", "SOURCE", "LAG", "WATERMARK");
            for j in resp["jobs"].as_array().map(Vec::as_slice).unwrap_or_default() {
                println!(
                    "{:<28} {:<9} {:<10} {:<24} {:>12} {:<26}",
                    j["name"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["kind"].as_str().unwrap_or(""),
                    j["source"].as_str().unwrap_or(""),
                    j["lag"].to_string(),
                    j["watermark"].as_str().unwrap_or("-"),
                );
            }
        }
        JobsCommand::Describe { name, server } => {
            let (_, j) = call(client.get(url(&server.server, &job_path(&name, ""))), &server.server).await?;
            println!("{}", serde_json::to_string_pretty(&j)?);
        }
        JobsCommand::Pause { name, server } => {
            call(client.post(url(&server.server, &job_path(&name, "/pause"))), &server.server).await?;
            println!("paused job {name}");
        }
        JobsCommand::Resume { name, server } => {
            call(client.post(url(&server.server, &job_path(&name, "/resume"))), &server.server).await?;
            println!("resumed job {name}");
        }
        JobsCommand::Drop { name, server } => {
            call(client.delete(url(&server.server, &job_path(&name, ""))), &server.server).await?;
            println!("dropped job {name}");
        }
        JobsCommand::Replay { name, from, into, no_wait, server } => {
            let from_v = match from.parse::<u64>() {
                Ok(o) => json!(o),
                Err(_) => json!(from),
            };
            let body = json!({ "from": from_v, "into": into });
            let (_, job) =
                call(client.post(url(&server.server, &job_path(&name, "/replay"))).json(&body), &server.server).await?;
            let target = job["name"].as_str().unwrap_or(&name).to_string();
            println!("replaying {name} from {from} into job {target}");
            if !no_wait {
                follow(&client, &server.server, &target).await?;
            }
        }
        JobsCommand::Results { name, key, from, to, latest, server } => {
            let mut q = Vec::new();
            for (k, v) in [("key", key), ("from", from), ("to", to)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let path = job_path(&name, if latest { "/results/latest" } else { "/results" });
            let path = if q.is_empty() { path } else { format!("{path}?{}", q.join("&")) };
            let (_, resp) = call(client.get(url(&server.server, &path)), &server.server).await?;
            for row in resp["rows"].as_array().map(Vec::as_slice).unwrap_or_default() {
                println!("{row}");
            }
        }
    }
    Ok(())
}

fn job_path(name: &str, suffix: &str) -> String {
    format!("/v1/jobs/{}{suffix}", urlencode(name))
}

/// Shows a progress bar of the records processed until the job has caught up with its source.
async fn follow(client: &reqwest::Client, server: &str, name: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} records ({per_sec}, eta {eta}) {msg}")
            .expect("valid template"),
    );
    let mut caught_up_polls = 0;
    loop {
        let (_, j): (_, Value) = call(client.get(url(server, &job_path(name, ""))), server).await?;
        let done = j["records_in"].as_u64().unwrap_or(0);
        let lag = j["lag"].as_u64().unwrap_or(0);
        bar.set_length(done + lag);
        bar.set_position(done);
        bar.set_message(j["watermark"].as_str().map(|w| format!("watermark {w}")).unwrap_or_default());
        if j["state"] == "failed" {
            bar.abandon();
            bail!("job {name} failed: {}", j["error"].as_str().unwrap_or("unknown error"));
        }
        // Two polls in a row without lag: the replay has caught up with what was there.
        let started = j["partitions"].as_array().is_some_and(|p| !p.is_empty());
        caught_up_polls = if started && lag == 0 && j["state"] == "running" { caught_up_polls + 1 } else { 0 };
        if caught_up_polls >= 2 {
            bar.finish_with_message("caught up");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
