//! `sluice search` and `sluice index ...`: full-text search over a topic's events and its index definition,
//! through a running server; and the embedded search the server is started with.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use sluice_server::{SearchFactory, StoreContext};
use sluice_sink::search::SearchService;

use crate::client::{ServerArg, call, http, url, urlencode};

/// The embedded search for `sluice serve`.
pub fn embedded_search() -> SearchFactory {
    Box::new(|ctx: StoreContext| {
        Box::pin(async move {
            let parts = sluice_search::SearchParts {
                data_dir: ctx.config.data_dir.clone(),
                config: ctx.config.search.clone(),
                log: ctx.log,
                decoder: ctx.decoder,
            };
            let search = sluice_search::EmbeddedSearch::start(parts).await.map_err(|e| e.to_string())?;
            Ok(search as Arc<dyn SearchService>)
        })
    })
}

#[derive(Args)]
pub struct SearchArgs {
    /// The query: terms, "phrases", field:value, AND/OR/NOT, field:[a TO b], wildcards (`time*`); empty for all.
    #[arg(default_value = "")]
    query: String,
    /// The topic whose index to search.
    #[arg(long, short)]
    topic: String,
    /// Events at or after this time: RFC 3339, epoch ms, or `now-1h`.
    #[arg(long)]
    from: Option<String>,
    /// Events before this time.
    #[arg(long)]
    to: Option<String>,
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Order: newest first, or best match first.
    #[arg(long, default_value = "time", value_parser = ["time", "score"])]
    sort: String,
    /// Keyword fields to count values of (comma-separated).
    #[arg(long)]
    facets: Option<String>,
    /// The next page: a cursor printed by the previous page.
    #[arg(long)]
    cursor: Option<String>,
    /// Print the API's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Subcommand)]
pub enum IndexCommand {
    /// Index a topic (history included; shows progress until caught up). No --definition: defaults from its schema
    /// or recent events.
    #[command(after_help = "Examples:\n  sluice index create app_logs\n  sluice index create app_logs --definition \
        '{\"fields\":{\"message\":{\"type\":\"text\"},\"service\":{\"type\":\"keyword\"},\"latency_ms\":{\"type\":\"number\"}}}'")]
    Create {
        topic: String,
        /// The definition as JSON (or @file.json).
        #[arg(long)]
        definition: Option<String>,
        /// Return at once instead of following the indexing of history.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show a topic's index: definition, documents, partitions, progress.
    Describe {
        topic: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List indexes.
    List {
        #[command(flatten)]
        server: ServerArg,
    },
    /// Stop indexing a topic and delete its index.
    Drop {
        topic: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

pub async fn search(a: SearchArgs) -> Result<()> {
    let mut q =
        format!("/v1/search?topic={}&q={}&limit={}&sort={}", urlencode(&a.topic), urlencode(&a.query), a.limit, a.sort);
    for (k, v) in [("from", &a.from), ("to", &a.to), ("facets", &a.facets), ("cursor", &a.cursor)] {
        if let Some(v) = v {
            q.push_str(&format!("&{k}={}", urlencode(v)));
        }
    }
    let (_, body) = call(http().get(url(&a.server.server, &q)), &a.server.server).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    print!("{}", render_hits(&body));
    Ok(())
}

/// Hits as one block each: time, id, highlights (matches in `*...*`), then the event; facets and the cursor last.
pub fn render_hits(body: &Value) -> String {
    let mut out = String::new();
    let hits = body["hits"].as_array().cloned().unwrap_or_default();
    for h in &hits {
        let ts = h["timestamp"].as_i64().unwrap_or(0);
        let when = chrono::DateTime::from_timestamp_millis(ts)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| ts.to_string());
        let score = h["score"].as_f64().map(|s| format!("  score {s:.2}")).unwrap_or_default();
        out.push_str(&format!("{when}  {}{score}\n", h["id"].as_str().unwrap_or("")));
        if let Some(hl) = h["highlights"].as_object() {
            for (field, frags) in hl {
                for f in frags.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    let f = f.replace("<em>", "*").replace("</em>", "*");
                    out.push_str(&format!("  {field}: {}\n", unescape_html(&f)));
                }
            }
        }
        out.push_str(&format!("  {}\n", h["event"]));
    }
    let total = body["total"].as_u64().unwrap_or(0);
    out.push_str(&format!("{} of {total} matching events", hits.len()));
    if let Some(t) = body["took_ms"].as_f64() {
        out.push_str(&format!(" ({t:.1} ms)"));
    }
    out.push('\n');
    if let Some(f) = body["facets"].as_object() {
        for (field, values) in f {
            let vs: Vec<String> = values
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("{} ({})", v["value"].as_str().unwrap_or(""), v["count"]))
                .collect();
            out.push_str(&format!("{field}: {}\n", vs.join(", ")));
        }
    }
    if let Some(c) = body["next_cursor"].as_str() {
        out.push_str(&format!("next page: --cursor {c}\n"));
    }
    out
}

fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#x27;", "'").replace("&amp;", "&")
}

pub async fn index(cmd: IndexCommand) -> Result<()> {
    let client = http();
    match cmd {
        IndexCommand::Create { topic, definition, no_wait, server } => {
            let body = match definition {
                None => "{}".to_string(),
                Some(d) => match d.strip_prefix('@') {
                    Some(path) => {
                        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))?
                    }
                    None => d,
                },
            };
            let req = client
                .put(url(&server.server, &format!("/v1/topics/{}/index", urlencode(&topic))))
                .header("content-type", "application/json")
                .body(body);
            let (_, status) = call(req, &server.server).await?;
            print_definition(&status);
            if !no_wait {
                follow(&client, &server.server, &topic).await?;
            }
        }
        IndexCommand::Describe { topic, server } => {
            let (_, s) = call(
                client.get(url(&server.server, &format!("/v1/topics/{}/index", urlencode(&topic)))),
                &server.server,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        IndexCommand::List { server } => {
            let (_, s) = call(client.get(url(&server.server, "/v1/indexes")), &server.server).await?;
            println!("{:<32} {:>10} {:>12} {:>10} {:>10}", "TOPIC", "STATE", "DOCUMENTS", "LAG", "PARTITIONS");
            for i in s["indexes"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:>10} {:>12} {:>10} {:>10}",
                    i["topic"].as_str().unwrap_or(""),
                    i["state"].as_str().unwrap_or(""),
                    i["documents"],
                    i["lag"],
                    i["partitions"].as_array().map_or(0, Vec::len)
                );
            }
        }
        IndexCommand::Drop { topic, server } => {
            let req = client.delete(url(&server.server, &format!("/v1/topics/{}/index", urlencode(&topic))));
            call(req, &server.server).await?;
            println!("index of {topic} dropped");
        }
    }
    Ok(())
}

fn print_definition(status: &Value) {
    let topic = status["topic"].as_str().unwrap_or("");
    println!("index of {topic}:");
    for (name, spec) in status["definition"]["fields"].as_object().into_iter().flatten() {
        let mut kind = spec["type"].as_str().unwrap_or("").to_string();
        if spec["keyword"] == true {
            kind.push_str(" + keyword");
        }
        if let Some(a) = spec["analyzer"].as_str() {
            kind.push_str(&format!(" ({a})"));
        }
        println!("  {name:<30} {kind}");
    }
}

/// A progress bar of the topic's history indexed, until the index has caught up and made it searchable.
async fn follow(client: &reqwest::Client, server: &str, topic: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {percent}% {msg}").expect("valid template"));
    loop {
        let (_, s) = call(client.get(url(server, &format!("/v1/topics/{}/index", urlencode(topic)))), server).await?;
        let progress = s["progress"].as_f64().unwrap_or(0.0);
        bar.set_position((progress * 1000.0) as u64);
        bar.set_message(format!("{} documents searchable, {} events to go", s["documents"], s["lag"]));
        match s["state"].as_str() {
            Some("live") => {
                bar.finish();
                return Ok(());
            }
            Some("stopped") => {
                bar.abandon();
                bail!("indexing of {topic} stopped: {}", s["last_error"].as_str().unwrap_or("see the server log"));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The index definition of the benchmark over `sluice bench ingest`'s events: 2 text and 4 keyword fields.
pub const BENCH_DEFINITION: &str = r#"{"fields":{"message":{"type":"text"},"user_agent":{"type":"text"},
"service":{"type":"keyword"},"endpoint":{"type":"keyword"},"region":{"type":"keyword"},"method":{"type":"keyword"}}}"#;

#[derive(Args)]
pub struct SearchBenchArgs {
    /// Where the benchmark's index lives (reused when it already holds the documents) [default: a temporary
    /// directory].
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Events indexed (`sluice bench ingest`'s ~300-byte events).
    #[arg(long, default_value_t = 50_000_000)]
    docs: u64,
    /// Hours of event time the events are spread over.
    #[arg(long, default_value_t = 24)]
    hours: i64,
    /// Term queries over a random one-hour range.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Indexing threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Indexes `docs` events in-process (no log, no HTTP) and reports documents/s; then runs term queries over
/// one-hour ranges (newest 20 hits, total count) and reports their latency.
pub async fn bench(a: SearchBenchArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || bench_blocking(a)).await?
}

fn bench_blocking(a: SearchBenchArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use sluice_search::index::{IndexOptions, TopicIndex};
    use std::collections::BTreeMap;
    use std::time::Instant;

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_795_824_000_000; // 2026-11-28T00:00:00Z: a day partition starts here
    const PARTITIONS: u64 = 4;
    let tmp;
    let root = match a.data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let dir = root.join("bench");
    let opts = IndexOptions {
        refresh_interval: Duration::from_secs(1),
        partition_ms: HOUR,
        partition_docs: sluice_config::SearchConfig::default().partition_docs,
        retention_ms: None,
        writer_memory: 512 << 20,
        indexing_threads: a.threads.max(1),
        merge_threads: 1,
    };
    let existing = dir.join("manifest.json").exists().then(|| TopicIndex::open(&dir, opts.clone())).transpose()?;
    let index = match existing {
        Some(i) if i.documents() == a.docs => {
            println!("reusing the index in {} ({} documents)", dir.display(), a.docs);
            i
        }
        _ => {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            let def: sluice_config::IndexDefinition = serde_json::from_str(BENCH_DEFINITION)?;
            let index = TopicIndex::create(&dir, "bench", def, opts.clone())?;
            let bar = indicatif::ProgressBar::new(a.docs);
            bar.set_style(
                indicatif::ProgressStyle::with_template("indexing {bar:40} {pos}/{len} events ({per_sec}, eta {eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let span = a.hours * HOUR;
            let started = Instant::now();
            let (mut bytes, mut next) = (0u64, BTreeMap::new());
            let mut i = 0u64;
            while i < a.docs {
                let n = 10_000.min(a.docs - i);
                let mut docs = Vec::with_capacity(n as usize);
                for j in i..i + n {
                    let line = sluice_bench::events::event(&mut rng);
                    let env: Value = serde_json::from_str(&line)?;
                    let raw = serde_json::to_vec(&env["value"])?;
                    bytes += raw.len() as u64;
                    let ts = T0 + (j as i128 * span as i128 / a.docs as i128) as i64;
                    let (p, o) = ((j % PARTITIONS) as u32, j / PARTITIONS);
                    let key = env["key"].as_str().map(str::as_bytes);
                    docs.push((p, o, ts, index.schema.document(ts, p, o, key, &env["value"], &raw)));
                    next.insert(p, o + 1);
                }
                index.add(docs, &next)?;
                i += n;
                if i.is_multiple_of(2_000_000) {
                    index.commit()?;
                }
                bar.set_position(i);
            }
            index.commit()?;
            let indexed = started.elapsed();
            bar.finish_and_clear();
            index.close()?;
            let merged = started.elapsed();
            println!(
                "indexed {} events ({:.0} bytes each) in {:.1}s: {:.0} events/s ({:.0} events/s including the last merges)",
                a.docs,
                bytes as f64 / a.docs as f64,
                indexed.as_secs_f64(),
                a.docs as f64 / indexed.as_secs_f64(),
                a.docs as f64 / merged.as_secs_f64()
            );
            drop(index);
            TopicIndex::open(&dir, opts)?
        }
    };
    let size: u64 = index.partition_info().iter().map(|p| p.bytes).sum();
    println!("index: {} partitions, {:.1} GiB", index.partition_info().len(), size as f64 / (1u64 << 30) as f64);

    let terms = [
        "service:checkout",
        "region:eu-west-1",
        "method:POST",
        "endpoint:/search",
        "timeout",
        "deadlock",
        "user_agent:curl",
        "\"connection reset\"",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut matched = 0u64;
    for q in 0..a.queries + 50 {
        let h = rng.random_range(0..a.hours);
        let term = terms[rng.random_range(0..terms.len())];
        let req = sluice_sink::search::SearchRequest {
            topic: "bench".into(),
            query: term.into(),
            from: Some(T0 + h * HOUR),
            to: Some(T0 + (h + 1) * HOUR),
            limit: 20,
            cursor: None,
            sort: sluice_sink::search::SortOrder::Time,
            facets: vec![],
            highlight: true,
        };
        let started = Instant::now();
        let answer = sluice_search::query::run(&index, &req, started + Duration::from_secs(10))?;
        let took = started.elapsed();
        // The first 50 warm the page cache and the readers.
        if q >= 50 {
            hist.record(took.as_micros() as u64)?;
            matched += answer["total"].as_u64().unwrap_or(0);
        }
    }
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "term query, one-hour range, newest 20 with highlights and the total count ({} queries, {:.0} matches on \
         average): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        a.queries,
        matched as f64 / a.queries.max(1) as f64,
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max())
    );
    Ok(())
}

#[derive(Args)]
pub struct SearchLatencyArgs {
    /// Topic to produce to and search (created with the benchmark's index when missing).
    #[arg(long, default_value = "search_latency")]
    topic: String,
    /// Events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to run, like 60s.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Events per request (each request carries one probe).
    #[arg(long, default_value_t = 100)]
    batch_size: u64,
    #[command(flatten)]
    server: ServerArg,
}

/// Produces `sluice bench ingest`'s events at a fixed rate to a running server; the first event of every request
/// is a probe with a unique key. A poller searches for the outstanding probes every 10 ms; a probe's latency is
/// from its request's acknowledgement (durable) to the first search that finds it.
pub async fn latency(a: SearchLatencyArgs) -> Result<()> {
    use rand::SeedableRng;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Instant;

    let server = a.server.server.clone();
    let client = http();
    let t = urlencode(&a.topic);
    let r = client.get(url(&server, &format!("/v1/topics/{t}"))).send().await?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        let body = serde_json::json!({"name": a.topic, "partitions": 4});
        call(client.post(url(&server, "/v1/topics")).json(&body), &server).await?;
    }
    let def: Value = serde_json::from_str(BENCH_DEFINITION)?;
    call(client.put(url(&server, &format!("/v1/topics/{t}/index"))).json(&def), &server).await?;

    // probe key -> acknowledgement time; found probes move to the histogram.
    let acked: Arc<parking_lot::Mutex<HashMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(parking_lot::Mutex::new(hdrhistogram::Histogram::<u64>::new(3)?));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (acked, hist, done, client, server, t) =
            (acked.clone(), hist.clone(), done.clone(), client.clone(), server.clone(), t.clone());
        tokio::spawn(async move {
            let mut last_empty = false;
            loop {
                let keys: Vec<String> = acked.lock().keys().cloned().collect();
                if keys.is_empty() {
                    if done.load(std::sync::atomic::Ordering::Relaxed) && last_empty {
                        return;
                    }
                    last_empty = true;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                last_empty = false;
                let q = keys.iter().map(|k| format!("_key:{k}")).collect::<Vec<_>>().join(" OR ");
                let u = format!("/v1/search?topic={t}&q={}&limit=1000&highlight=false", urlencode(&q));
                if let Ok(r) = client.get(url(&server, &u)).send().await
                    && let Ok(v) = r.json::<Value>().await
                {
                    let now = Instant::now();
                    let mut acked = acked.lock();
                    for h in v["hits"].as_array().into_iter().flatten() {
                        let Some(k) = h["event"]["probe"].as_str() else { continue };
                        if let Some(at) = acked.remove(k) {
                            let _ = hist.lock().record(now.saturating_duration_since(at).as_micros() as u64);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let every = Duration::from_secs_f64(a.batch_size as f64 / a.rate.max(1) as f64);
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    while started.elapsed() < a.duration {
        tick.tick().await;
        let probe = format!("probe{n}");
        let mut body = String::with_capacity(a.batch_size as usize * 330);
        for i in 0..a.batch_size {
            let line = sluice_bench::events::event(&mut rng);
            if i == 0 {
                // The probe: its key is unique, and its value says so (the hit shows the event).
                let mut v: Value = serde_json::from_str(&line)?;
                v["key"] = Value::String(probe.clone());
                v["value"]["probe"] = Value::String(probe.clone());
                body.push_str(&v.to_string());
            } else {
                body.push_str(&line);
            }
            body.push('\n');
        }
        n += 1;
        let req = client.post(url(&server, &format!("/v1/topics/{t}/events"))).body(body);
        let acked = acked.clone();
        inflight.spawn(async move {
            if let Ok(r) = req.send().await
                && r.status().is_success()
            {
                acked.lock().insert(probe, Instant::now());
            }
        });
        while inflight.len() > 64 {
            inflight.join_next().await;
        }
    }
    while inflight.join_next().await.is_some() {}
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let wait = Instant::now();
    while !acked.lock().is_empty() && wait.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lost = acked.lock().len();
    poller.abort();
    let h = hist.lock();
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{} events/s for {:?}: {} probes, acknowledgement -> searchable p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
        a.rate,
        a.duration,
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        if lost > 0 { format!(" ({lost} probes never found within 30 s)") } else { String::new() }
    );
    Ok(())
}
