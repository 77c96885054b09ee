//! The results writer: appends changelog rows to `{job}.results`, partitioned by key, retrying transient
//! failures so that no result is dropped.

use super::*;

pub(super) async fn run_writer(
    log: Arc<dyn LogStore>,
    topic: String,
    job: String,
    stats: Arc<JobStats>,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> Result<(), JobError> {
    let partitions = log.topic(&topic).await?.partitions;
    while let Some(msg) = rx.recv().await {
        match msg {
            WriterMsg::Rows(rows) => {
                let mut by_part: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
                for r in rows {
                    let kind = r.headers.first().map(|(_, v)| v.clone());
                    if let Some(k) = kind {
                        let kind = std::str::from_utf8(&k).unwrap_or("row").to_string();
                        metrics::RESULTS.with_label_values(&[&job, &kind]).inc();
                    }
                    let p = partition_for_key(r.key.as_deref().unwrap_or_default(), partitions);
                    by_part.entry(p).or_default().push(r);
                }
                for (p, batch) in by_part {
                    let n = batch.len() as u64;
                    append_with_retry(&*log, &topic, p, batch).await?;
                    stats.results_written.fetch_add(n, Ordering::Relaxed);
                }
            }
            WriterMsg::Flush(done) => {
                let _ = done.send(Ok(()));
            }
        }
    }
    Ok(())
}

/// Appends, retrying transient failures with backoff: results must not be dropped, and the job's input stays
/// where it is meanwhile (backpressure).
pub(super) async fn append_with_retry(
    log: &dyn LogStore,
    topic: &str,
    p: u32,
    batch: Vec<Record>,
) -> Result<(), JobError> {
    let mut delay = Duration::from_millis(50);
    for attempt in 0..8 {
        match log.append(topic, p, batch.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 7 && e.kind().is_transient() => {
                tracing::warn!(topic, partition = p, error = %e, "results append failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}
