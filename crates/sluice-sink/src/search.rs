//! The search port: what the HTTP server needs from a full-text index of events (define, inspect and drop a
//! topic's index; search it). The embedded adapter (tantivy) lives in `sluice-search`; an Elasticsearch adapter
//! would sit beside it.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use sluice_config::IndexDefinition;

use crate::PortError;

/// How hits are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Newest event first (ties by partition and offset, newest first).
    Time,
    /// Best match first (BM25).
    Score,
}

/// One search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub topic: String,
    /// The query text (tantivy's query language); empty or `*` matches every event.
    pub query: String,
    /// Inclusive lower bound of the event time, ms since the epoch.
    pub from: Option<i64>,
    /// Exclusive upper bound of the event time.
    pub to: Option<i64>,
    pub limit: usize,
    /// From a previous answer's `next_cursor`: the page after it.
    pub cursor: Option<String>,
    pub sort: SortOrder,
    /// Keyword fields to count values of over every match (not just this page).
    pub facets: Vec<String>,
    /// Highlight the matched terms of text fields.
    pub highlight: bool,
}

/// The search port.
#[async_trait]
pub trait SearchService: Send + Sync + 'static {
    /// `{"hits":[{"partition","offset","timestamp","event","highlights"}],"total","next_cursor","facets"}`.
    async fn search(&self, req: SearchRequest) -> Result<Value, PortError>;

    /// Creates or replaces a topic's index (a changed definition rebuilds it from the log); answers its status.
    async fn put_index(&self, topic: &str, definition: IndexDefinition) -> Result<Value, PortError>;

    /// A topic's index: its resolved definition and status (documents, partitions, indexing progress).
    async fn index(&self, topic: &str) -> Result<Value, PortError>;

    /// Every index, as [`SearchService::index`] shows them.
    async fn indexes(&self) -> Result<Vec<Value>, PortError>;

    /// Stops indexing the topic and deletes its index.
    async fn delete_index(&self, topic: &str) -> Result<(), PortError>;

    /// Commits what the indexers buffered (graceful shutdown).
    async fn shutdown(&self);
}
