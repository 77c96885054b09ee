//! Commands that talk to a running server over its HTTP API: produce, tail, topics.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Args, Clone)]
pub struct ServerArg {
    /// Base URL of the sluice server.
    #[arg(long, env = "SLUICE_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
}

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Read events from this file instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Each input object is an event's value (no envelope).
    #[arg(long)]
    values: bool,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Args)]
pub struct TailArgs {
    /// Topic to read.
    topic: String,
    /// Only this partition (default: all).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Start at this offset (in every partition read).
    #[arg(long, conflicts_with_all = ["from_time", "from_end"])]
    offset: Option<u64>,
    /// Start at the first event with event time at or after this (RFC 3339 or epoch ms).
    #[arg(long, conflicts_with = "from_end")]
    from_time: Option<String>,
    /// Start at the end: only events produced from now on.
    #[arg(long)]
    from_end: bool,
    /// Keep waiting for new events.
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many events.
    #[arg(long, short = 'n')]
    limit: Option<u64>,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    #[command(after_help = "Example:\n  sluice topics create http_requests --partitions 4 --retention 7d")]
    Create {
        name: String,
        /// Partitions (default: the server's log.default_partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// Retention by age, like 7d or 12h, or "forever" (default: the server's log.retention).
        #[arg(long)]
        retention: Option<String>,
        /// Retention by size per partition, in bytes.
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List topics.
    #[command(after_help = "Example:\n  sluice topics list")]
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show a topic's partitions: offsets, size, segments, writability.
    #[command(after_help = "Example:\n  sluice topics describe http_requests")]
    Describe {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Delete a topic and all its data.
    #[command(after_help = "Example:\n  sluice topics delete http_requests")]
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("http client builds")
}

/// Sends a request and returns the JSON body, turning API errors into their message.
pub async fn call(req: reqwest::RequestBuilder, server: &str) -> Result<(reqwest::StatusCode, Value)> {
    let (status, text) = call_text(req, server).await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Like [`call`], returning the body as text (to keep it exactly as the server wrote it).
async fn call_text(req: reqwest::RequestBuilder, server: &str) -> Result<(reqwest::StatusCode, String)> {
    let resp = req.send().await.with_context(|| format!("cannot reach the sluice server at {server}"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("reading the answer of {server}"))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() && body.get("results").is_none() {
        // Sluice's `{"error":{"message"}}`, or the Confluent APIs' `{"error_code","message"}`.
        let msg = body["error"]["message"]
            .as_str()
            .or(body["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        bail!("{msg} (HTTP {})", status.as_u16());
    }
    Ok((status, text))
}

/// A page of `GET /v1/topics/{topic}/events`, events kept as the server wrote them.
#[derive(serde::Deserialize)]
struct Page {
    events: Vec<Box<RawValue>>,
    next_offset: u64,
}

pub fn url(server: &str, path: &str) -> String {
    format!("{}{path}", server.trim_end_matches('/'))
}

pub async fn produce(args: ProduceArgs) -> Result<ExitCode> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let input: Box<dyn BufRead + Send> = match &args.file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let source = args.file.as_ref().map_or("stdin".to_string(), |p| p.display().to_string());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String>>(4);
    let values = args.values;
    let batch = args.batch_size;
    // Reading and batching is blocking I/O: keep it off the runtime.
    let reader = tokio::task::spawn_blocking(move || batches(input, values, batch, &source, &tx));
    let client = http();
    let target = url(&args.server.server, &format!("/v1/topics/{}/events", args.topic));
    let (mut sent, mut accepted, mut rejected) = (0u64, 0u64, 0u64);
    while let Some(body) = rx.recv().await {
        let body = body?;
        let req = client.post(&target).header("content-type", "application/x-ndjson").body(body);
        let (_, resp) = call(req, &args.server.server).await?;
        for (i, r) in resp["results"].as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            if let Some(msg) = r["error"]["message"].as_str() {
                eprintln!("event {}: {msg}", sent + i as u64);
            }
        }
        let n = resp["results"].as_array().map_or(0, |a| a.len() as u64);
        sent += n;
        accepted += resp["accepted"].as_u64().unwrap_or(0);
        rejected += resp["rejected"].as_u64().unwrap_or(0);
        if let Some(msg) = resp["error"]["message"].as_str() {
            bail!("{msg} ({accepted} events stored before the failure)");
        }
    }
    match reader.await.context("input reader failed")? {
        Err(e) if accepted > 0 => bail!("{e:#} ({accepted} events stored before the failure)"),
        read => read?,
    }
    eprintln!("produced {accepted} events to {} ({rejected} rejected)", args.topic);
    Ok(if rejected > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Splits the input into NDJSON bodies of `batch` events each. Every event is parsed here first, so invalid JSON
/// is reported at its line and column in the input as the user wrote it (`source`), not in the body sent.
fn batches(
    mut input: Box<dyn BufRead + Send>,
    values: bool,
    batch: usize,
    source: &str,
    tx: &tokio::sync::mpsc::Sender<Result<String>>,
) -> Result<()> {
    let wrap = |event: &str| if values { format!("{{\"value\":{event}}}\n") } else { format!("{event}\n") };
    // Peek past whitespace to tell a JSON array from NDJSON, keeping it so that positions stay the input's.
    let mut lead = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte)? == 0 {
            return Ok(());
        }
        lead.push(byte[0]);
        if !byte[0].is_ascii_whitespace() {
            break;
        }
    }
    let mut buf = String::new();
    let mut count = 0;
    let flush = |buf: &mut String, count: &mut usize| -> Result<()> {
        if *count > 0 {
            tx.blocking_send(Ok(std::mem::take(buf))).map_err(|_| anyhow::anyhow!("producer stopped"))?;
            *count = 0;
        }
        Ok(())
    };
    if lead.last() == Some(&b'[') {
        input.read_to_end(&mut lead)?;
        let events: Vec<Box<RawValue>> =
            serde_json::from_slice(&lead).map_err(|e| invalid_json(&e, &lead, 0, source))?;
        for e in events {
            buf.push_str(&wrap(e.get()));
            count += 1;
            if count == batch {
                flush(&mut buf, &mut count)?;
            }
        }
    } else {
        // The lines before the first event are blank.
        let mut line_no = 1 + lead.iter().filter(|&&b| b == b'\n').count();
        let mut first = lead.split_off(lead.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
        input.read_until(b'\n', &mut first)?;
        let mut line =
            String::from_utf8(first).map_err(|_| anyhow::anyhow!("line {line_no} of {source} is not UTF-8"))?;
        loop {
            let text = line.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                let event: &RawValue =
                    serde_json::from_str(text).map_err(|e| invalid_json(&e, text.as_bytes(), line_no - 1, source))?;
                buf.push_str(&wrap(event.get()));
                count += 1;
                if count == batch {
                    flush(&mut buf, &mut count)?;
                }
            }
            line.clear();
            if input.read_line(&mut line).with_context(|| format!("reading line {} of {source}", line_no + 1))? == 0 {
                break;
            }
            line_no += 1;
        }
    }
    flush(&mut buf, &mut count)
}

/// `e`, from parsing `text` (which starts at line `lines_before + 1` of `source`), at the line and column where
/// the user finds it: serde_json counts the column in bytes, editors in characters.
fn invalid_json(e: &serde_json::Error, text: &[u8], lines_before: usize, source: &str) -> anyhow::Error {
    let line = text.split(|&b| b == b'\n').nth(e.line().saturating_sub(1)).unwrap_or_default();
    let column = line[..e.column().min(line.len())].iter().filter(|&&b| b & 0xC0 != 0x80).count();
    let msg = e.to_string();
    let reason = msg.split(" at line ").next().unwrap_or(&msg);
    anyhow::anyhow!("invalid JSON at line {} column {column} of {source}: {reason}", e.line() + lines_before)
}

pub async fn tail(args: TailArgs) -> Result<()> {
    let client = http();
    let server = &args.server.server;
    let (_, desc) = call(client.get(url(server, &format!("/v1/topics/{}", args.topic))), server).await?;
    let partitions: Vec<(u32, u64)> = desc["partition_details"]
        .as_array()
        .context("unexpected describe response")?
        .iter()
        .map(|p| (p["partition"].as_u64().unwrap_or(0) as u32, p["high_watermark"].as_u64().unwrap_or(0)))
        .filter(|(p, _)| args.partition.is_none_or(|want| want == *p))
        .collect();
    if partitions.is_empty() {
        bail!("topic `{}` has no partition {}", args.topic, args.partition.unwrap_or(0));
    }
    // Per partition: the next query (offset, or from_time for the first read).
    let mut cursors: Vec<(u32, Option<u64>)> =
        partitions.iter().map(|&(p, hw)| (p, if args.from_end { Some(hw) } else { args.offset })).collect();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    let single = cursors.len() == 1;
    loop {
        let mut got_any = false;
        for (p, next) in cursors.iter_mut() {
            let mut q = format!("/v1/topics/{}/events?partition={p}&limit=1000", args.topic);
            match (*next, &args.from_time) {
                (Some(o), _) => q.push_str(&format!("&offset={o}")),
                (None, Some(t)) => q.push_str(&format!("&from_time={}", urlencode(t))),
                (None, None) => {}
            }
            if args.follow && single {
                q.push_str("&wait_ms=1000");
            }
            let (_, text) = call_text(client.get(url(server, &q)), server).await?;
            let page: Page = serde_json::from_str(&text).context("unexpected answer to a read")?;
            let mut out = stdout.lock();
            for e in &page.events {
                if args.limit.is_some_and(|l| printed >= l) {
                    return Ok(());
                }
                writeln!(out, "{}", e.get())?;
                printed += 1;
            }
            got_any |= !page.events.is_empty();
            *next = Some(page.next_offset);
        }
        if args.limit.is_some_and(|l| printed >= l) {
            return Ok(());
        }
        if !got_any {
            if !args.follow {
                return Ok(());
            }
            if !single {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn topics(cmd: TopicsCommand) -> Result<()> {
    let client = http();
    match cmd {
        TopicsCommand::Create { name, partitions, retention, retention_bytes, server } => {
            let mut body = serde_json::json!({"name": name});
            if let Some(p) = partitions {
                body["partitions"] = p.into();
            }
            if let Some(r) = retention {
                body["retention"] = r.into();
            }
            if let Some(b) = retention_bytes {
                body["retention_bytes"] = b.into();
            }
            let (_, info) = call(client.post(url(&server.server, "/v1/topics")).json(&body), &server.server).await?;
            println!("created topic {} with {} partitions", info["name"].as_str().unwrap_or(&name), info["partitions"]);
        }
        TopicsCommand::List { server } => {
            let (_, resp) = call(client.get(url(&server.server, "/v1/topics")), &server.server).await?;
            println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITIONS", "RETENTION");
            for t in resp["topics"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let retention = t["retention_ms"].as_u64().map_or("forever".to_string(), |ms| {
                    humantime::format_duration(Duration::from_millis(ms)).to_string()
                });
                println!(
                    "{:<40} {:>10} {:>14}",
                    t["name"].as_str().unwrap_or(""),
                    t["partitions"].to_string(),
                    retention
                );
            }
        }
        TopicsCommand::Describe { name, server } => {
            let (_, d) = call(client.get(url(&server.server, &format!("/v1/topics/{name}"))), &server.server).await?;
            println!("topic {name}: {} partitions", d["partitions"]);
            println!(
                "{:>9} {:>14} {:>14} {:>14} {:>9} {:>9}",
                "PARTITION", "START", "END", "BYTES", "SEGMENTS", "WRITABLE"
            );
            for p in d["partition_details"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let f = |k: &str| p[k].to_string();
                println!(
                    "{:>9} {:>14} {:>14} {:>14} {:>9} {:>9}",
                    f("partition"),
                    f("log_start_offset"),
                    f("high_watermark"),
                    f("size_bytes"),
                    f("segments"),
                    f("writable")
                );
            }
        }
        TopicsCommand::Delete { name, server } => {
            call(client.delete(url(&server.server, &format!("/v1/topics/{name}"))), &server.server).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bodies `batches` sends for `input` and how it ended (as the CLI prints it).
    fn split(input: &str, values: bool, batch: usize) -> (Vec<String>, Result<(), String>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let read = batches(Box::new(std::io::Cursor::new(input.as_bytes().to_vec())), values, batch, "in.ndjson", &tx);
        drop(tx);
        let mut bodies = Vec::new();
        while let Ok(body) = rx.try_recv() {
            bodies.push(body.expect("only bodies are sent"));
        }
        (bodies, read.map_err(|e| format!("{e:#}")))
    }

    #[test]
    fn valid_input_is_batched_as_ndjson() {
        let (bodies, read) = split("\n{\"a\":1}\r\n\n  {\"a\": 2}  \n{\"a\":3}", true, 2);
        assert_eq!(read, Ok(()));
        assert_eq!(bodies, ["{\"value\":{\"a\":1}}\n{\"value\":{\"a\": 2}}\n", "{\"value\":{\"a\":3}}\n"]);
        let (bodies, read) = split(" [{\"value\":1},\n {\"value\":2}]\n", false, 10);
        assert_eq!(read, Ok(()));
        assert_eq!(bodies, ["{\"value\":1}\n{\"value\":2}\n"]);
    }

    #[test]
    fn invalid_ndjson_is_reported_at_the_line_and_column_typed() {
        // Line 3, the `2` where a `:` belongs is its 8th character; blank lines count, batches already sent stay.
        let (bodies, read) = split("{\"a\":1}\n\n  {\"a\" 2}\n{\"a\":4}\n", true, 1);
        assert_eq!(read, Err("invalid JSON at line 3 column 8 of in.ndjson: expected `:`".to_string()));
        assert_eq!(bodies, ["{\"value\":{\"a\":1}}\n"]);
        // Without --values too, and the column counts characters, not bytes.
        let (bodies, read) = split("\n\n{\"value\":{\"msg\":\"héllo\" x}}\n", false, 10);
        assert_eq!(read, Err("invalid JSON at line 3 column 25 of in.ndjson: expected `,` or `}`".to_string()));
        assert!(bodies.is_empty());
        // A line cut short ends at its last character, not on the next line.
        let (_, read) = split("{\"a\":1}\n{\"a\":\n", true, 10);
        assert_eq!(read, Err("invalid JSON at line 2 column 5 of in.ndjson: EOF while parsing a value".to_string()));
        // Two values on one line.
        let (_, read) = split("{\"a\":1} {\"a\":2}\n", true, 10);
        assert_eq!(read, Err("invalid JSON at line 1 column 9 of in.ndjson: trailing characters".to_string()));
    }

    #[test]
    fn invalid_arrays_are_reported_at_the_line_and_column_typed() {
        // The blank lines before the array count.
        let (bodies, read) = split("\n\n[{\"a\":1},\n {\"a\":tru}]\n", true, 10);
        assert_eq!(read, Err("invalid JSON at line 4 column 10 of in.ndjson: expected ident".to_string()));
        assert!(bodies.is_empty());
    }
}
