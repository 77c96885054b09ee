//! The registry: subjects of numbered versions, global schema ids, compatibility levels; durable in the log.
//!
//! **Durability.** Every change is one JSON record appended to partition 0 of the `_schemas` log topic
//! ([`SCHEMAS_TOPIC`]; created with one partition and no retention by the first change, so a server that never
//! uses the registry has no such topic) *before* it is applied in memory and acknowledged; [`Registry::open`]
//! replays the topic from its start to rebuild the state, so ids,
//! versions, deletions and levels are identical after a restart or a crash. Writers are serialized by one async
//! mutex, and each change runs in its own task, so a caller that goes away mid-append cannot leave the log and
//! the memory apart. A failed append changes nothing and answers 50001.
//!
//! **Reads** take a `parking_lot` read lock over the in-memory state and clone an `Arc`: no I/O, no await.
//! [`Registry::subscribe`] tells cache holders when anything changed.
//!
//! **Identity.** Two schemas are the same when their canonical forms ([`crate::canonical_form`]) are equal. Ids
//! are global: the same schema under two subjects has one id, and an id is never given to another schema (the
//! register records stay in the log, so the highest id ever assigned survives a hard delete). Version numbers of
//! a subject start at 1 and are never reused, not even after a hard delete of the subject.
//!
//! Record format (the value; the key is the subject, absent for the global level):
//!
//! ```text
//! {"v":1,"op":"register","subject":"orders-value","version":1,"id":1,"schema":"{...}"}
//! {"v":1,"op":"delete_version","subject":"orders-value","version":1,"permanent":false}
//! {"v":1,"op":"delete_subject","subject":"orders-value","versions":[1,2],"permanent":true}
//! {"v":1,"op":"set_level","subject":null,"level":"FULL"}
//! {"v":1,"op":"delete_level","subject":"orders-value"}
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use bytes::Bytes;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sluice_log::{LogError, LogStore, Record, TopicSpec};
use tokio::sync::{Mutex, watch};

use crate::avro::{self, Parsed};
use crate::compat::{self, CompatibilityLevel, Previous};
use crate::error::SchemaError;
use crate::metrics;

/// The log topic holding the registry.
pub const SCHEMAS_TOPIC: &str = sluice_log::topics::SCHEMAS;

/// Format version of the records in [`SCHEMAS_TOPIC`]; a newer one stops start-up rather than being misread.
const FORMAT: u32 = 1;

/// A schema with its global id.
#[derive(Debug)]
pub struct RegisteredSchema {
    pub id: u32,
    /// The schema text as first registered, without insignificant whitespace.
    pub schema_text: String,
    pub schema: Schema,
    /// The registry's canonical form ([`crate::canonical_form`]): equal forms are the same schema.
    pub canonical: String,
}

impl RegisteredSchema {
    /// The Avro Parsing Canonical Form (no defaults, aliases or logical types), for fingerprints.
    pub fn parsing_canonical_form(&self) -> String {
        self.schema.canonical_form()
    }
}

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    /// Soft-deleted (only returned when deleted versions were asked for).
    pub deleted: bool,
    pub schema: Arc<RegisteredSchema>,
}

impl SubjectVersion {
    pub fn id(&self) -> u32 {
        self.schema.id
    }
}

/// A version as named in the API: a number, or `latest` (also spelled `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    /// `latest`, `-1`, or a number in `1..=i32::MAX`; anything else is a 42202.
    pub fn parse(s: &str) -> Result<Self, SchemaError> {
        if s.eq_ignore_ascii_case("latest") {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<i64>() {
            Ok(-1) => Ok(VersionRef::Latest),
            Ok(n) if (1..=i32::MAX as i64).contains(&n) => Ok(VersionRef::Number(n as u32)),
            _ => Err(SchemaError::InvalidVersion(s.to_string())),
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub id: u32,
    pub version: u32,
    /// False when the schema was already a live version of the subject (nothing was written).
    pub created: bool,
}

/// The answer of a compatibility test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatibilityReport {
    pub is_compatible: bool,
    pub level: CompatibilityLevel,
    /// One message per problem, each naming the field, why, and the version it concerns.
    pub messages: Vec<String>,
}

/// The whole registry state as plain data: for restart checks and tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryDump {
    /// The id the next new schema gets.
    pub next_id: u32,
    pub global_level: Option<CompatibilityLevel>,
    /// Schemas in use by at least one version (soft-deleted versions included), by id: the schema text.
    pub schemas: BTreeMap<u32, String>,
    pub subjects: BTreeMap<String, SubjectDump>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectDump {
    pub next_version: u32,
    pub level: Option<CompatibilityLevel>,
    /// `(version, id, soft-deleted)`.
    pub versions: Vec<(u32, u32, bool)>,
}

/// One change as stored in the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Change {
    Register { subject: String, version: u32, id: u32, schema: String },
    DeleteVersion { subject: String, version: u32, permanent: bool },
    DeleteSubject { subject: String, versions: Vec<u32>, permanent: bool },
    SetLevel { subject: Option<String>, level: CompatibilityLevel },
    DeleteLevel { subject: Option<String> },
}

impl Change {
    fn subject(&self) -> Option<&str> {
        match self {
            Change::Register { subject, .. }
            | Change::DeleteVersion { subject, .. }
            | Change::DeleteSubject { subject, .. } => Some(subject),
            Change::SetLevel { subject, .. } | Change::DeleteLevel { subject } => subject.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    v: u32,
    #[serde(flatten)]
    change: &'a Change,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    v: u32,
    #[serde(flatten)]
    change: serde_json::Value,
}

#[derive(Debug, Clone, Copy)]
struct VersionEntry {
    id: u32,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Subject {
    versions: BTreeMap<u32, VersionEntry>,
    /// Highest version ever assigned + 1 (0 until the first).
    next_version: u32,
    level: Option<CompatibilityLevel>,
}

impl Subject {
    fn visible(&self, deleted: bool) -> impl DoubleEndedIterator<Item = (u32, VersionEntry)> + '_ {
        self.versions.iter().filter(move |(_, e)| deleted || !e.deleted).map(|(v, e)| (*v, *e))
    }

    fn has_visible(&self, deleted: bool) -> bool {
        self.visible(deleted).next().is_some()
    }
}

#[derive(Debug)]
struct State {
    schemas: HashMap<u32, Arc<RegisteredSchema>>,
    /// Canonical form to id, for every schema ever registered (so re-registering gives the same id back).
    ids: HashMap<String, u32>,
    /// Versions (soft-deleted included) using each id; an id with none is not served.
    refs: HashMap<u32, u32>,
    next_id: u32,
    subjects: BTreeMap<String, Subject>,
    global: Option<CompatibilityLevel>,
}

impl State {
    fn new() -> Self {
        State {
            schemas: HashMap::new(),
            ids: HashMap::new(),
            refs: HashMap::new(),
            next_id: 1,
            subjects: BTreeMap::new(),
            global: None,
        }
    }

    fn level(&self, subject: &str) -> CompatibilityLevel {
        self.subjects.get(subject).and_then(|s| s.level).or(self.global).unwrap_or(CompatibilityLevel::DEFAULT)
    }

    /// The subject if it has a version visible under `deleted`, else 40401.
    fn subject(&self, subject: &str, deleted: bool) -> Result<&Subject, SchemaError> {
        self.subjects
            .get(subject)
            .filter(|s| s.has_visible(deleted))
            .ok_or_else(|| SchemaError::SubjectNotFound { subject: subject.to_string() })
    }

    fn live_schema(&self, id: u32) -> Option<&Arc<RegisteredSchema>> {
        self.schemas.get(&id).filter(|_| self.refs.get(&id).is_some_and(|&n| n > 0))
    }

    fn subject_version(&self, subject: &str, version: u32, entry: VersionEntry) -> SubjectVersion {
        SubjectVersion {
            subject: subject.to_string(),
            version,
            deleted: entry.deleted,
            schema: self.schemas[&entry.id].clone(),
        }
    }

    fn resolve(&self, subject: &str, v: VersionRef, deleted: bool) -> Result<(u32, VersionEntry), SchemaError> {
        let s = self.subject(subject, deleted)?;
        let found = match v {
            VersionRef::Latest => s.visible(deleted).next_back(),
            VersionRef::Number(n) => s.versions.get(&n).filter(|e| deleted || !e.deleted).map(|e| (n, *e)),
        };
        found.ok_or_else(|| SchemaError::VersionNotFound { subject: subject.to_string(), version: v.to_string() })
    }

    /// The live versions of `subject`, oldest first, for a compatibility check.
    fn previous(&self, subject: &str) -> Vec<Previous<'_>> {
        self.subjects.get(subject).map_or_else(Vec::new, |s| {
            s.visible(false).map(|(version, e)| Previous { version, schema: &self.schemas[&e.id].schema }).collect()
        })
    }

    /// Applies one change. `schema` is the parsed schema of a live registration; replay parses the stored text.
    fn apply(&mut self, change: &Change, schema: Option<Arc<RegisteredSchema>>) -> Result<(), String> {
        match change {
            Change::Register { subject, version, id, schema: text } => {
                // Even a record that cannot be applied has used its id: never hand it to another schema.
                self.next_id = self.next_id.max(id.saturating_add(1));
                let schema = match (self.schemas.get(id), schema) {
                    (Some(existing), _) => existing.clone(),
                    (None, Some(s)) => s,
                    (None, None) => {
                        let p = avro::parse(text, None).map_err(|e| format!("stored schema {id} is invalid: {e}"))?;
                        Arc::new(RegisteredSchema {
                            id: *id,
                            schema_text: p.text,
                            schema: p.schema,
                            canonical: p.canonical,
                        })
                    }
                };
                let s = self.subjects.entry(subject.clone()).or_default();
                if s.versions.contains_key(version) {
                    return Err(format!("version {version} of subject `{subject}` is already registered"));
                }
                s.versions.insert(*version, VersionEntry { id: *id, deleted: false });
                s.next_version = s.next_version.max(version + 1);
                self.ids.entry(schema.canonical.clone()).or_insert(*id);
                self.schemas.insert(*id, schema);
                *self.refs.entry(*id).or_default() += 1;
                self.next_id = self.next_id.max(id + 1);
            }
            Change::DeleteVersion { subject, version, permanent } => {
                self.delete_version(subject, *version, *permanent)?;
            }
            Change::DeleteSubject { subject, versions, permanent } => {
                for v in versions {
                    self.delete_version(subject, *v, *permanent)?;
                }
                if *permanent && let Some(s) = self.subjects.get_mut(subject) {
                    s.level = None;
                }
            }
            Change::SetLevel { subject: None, level } => self.global = Some(*level),
            Change::SetLevel { subject: Some(subject), level } => {
                self.subjects.entry(subject.clone()).or_default().level = Some(*level);
            }
            Change::DeleteLevel { subject: None } => self.global = None,
            Change::DeleteLevel { subject: Some(subject) } => {
                if let Some(s) = self.subjects.get_mut(subject) {
                    s.level = None;
                }
            }
        }
        Ok(())
    }

    fn delete_version(&mut self, subject: &str, version: u32, permanent: bool) -> Result<(), String> {
        let missing = || format!("version {version} of subject `{subject}` does not exist");
        let s = self.subjects.get_mut(subject).ok_or_else(missing)?;
        if permanent {
            let e = s.versions.remove(&version).ok_or_else(missing)?;
            if let Some(n) = self.refs.get_mut(&e.id) {
                *n = n.saturating_sub(1);
            }
        } else {
            s.versions.get_mut(&version).ok_or_else(missing)?.deleted = true;
        }
        Ok(())
    }

    fn publish_gauges(&self) {
        let live_subjects = self.subjects.values().filter(|s| s.has_visible(false)).count();
        let live_ids: std::collections::HashSet<u32> =
            self.subjects.values().flat_map(|s| s.visible(false).map(|(_, e)| e.id)).collect();
        metrics::LIVE_SUBJECTS.set(live_subjects as i64);
        metrics::LIVE_SCHEMAS.set(live_ids.len() as i64);
    }

    fn dump(&self) -> RegistryDump {
        RegistryDump {
            next_id: self.next_id,
            global_level: self.global,
            schemas: self
                .schemas
                .iter()
                .filter(|(id, _)| self.refs.get(id).is_some_and(|&n| n > 0))
                .map(|(id, s)| (*id, s.schema_text.clone()))
                .collect(),
            subjects: self
                .subjects
                .iter()
                .map(|(name, s)| {
                    let versions = s.versions.iter().map(|(v, e)| (*v, e.id, e.deleted)).collect();
                    (name.clone(), SubjectDump { next_version: s.next_version, level: s.level, versions })
                })
                .collect(),
        }
    }
}

/// What a writer decided once it held the writer lock.
enum Plan<T> {
    /// Nothing to write (for example: the schema is already registered).
    Done(T),
    Write {
        change: Change,
        schema: Option<Arc<RegisteredSchema>>,
        result: T,
    },
}

struct Inner {
    log: Arc<dyn LogStore>,
    topic: String,
    state: RwLock<State>,
    /// Serializes writers: decide, append, apply. Holds whether the topic exists (it is created by the first
    /// change; once it exists it is never created again, so a deleted topic fails writes rather than silently
    /// starting a new history).
    writer: Mutex<bool>,
    /// Bumped after every applied change.
    changes: watch::Sender<u64>,
}

/// The schema registry. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("topic", &self.inner.topic).finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry on `log`: replays [`SCHEMAS_TOPIC`] when it exists (the first change creates it).
    pub async fn open(log: Arc<dyn LogStore>) -> Result<Registry, SchemaError> {
        Self::open_on_topic(log, SCHEMAS_TOPIC).await
    }

    /// [`Registry::open`] on another topic (tests, or several registries on one log).
    pub async fn open_on_topic(log: Arc<dyn LogStore>, topic: &str) -> Result<Registry, SchemaError> {
        let exists = match log.topic(topic).await {
            Ok(info) => {
                check_topic(&info)?;
                true
            }
            Err(LogError::TopicNotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        let started = std::time::Instant::now();
        let (state, report) =
            if exists { replay(&*log, topic).await? } else { (State::new(), ReplayReport { records: 0, skipped: 0 }) };
        tracing::info!(
            topic,
            records = report.records,
            skipped = report.skipped,
            subjects = state.subjects.len(),
            schemas = state.schemas.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "schema registry replayed"
        );
        state.publish_gauges();
        let (changes, _) = watch::channel(0);
        let inner =
            Inner { log, topic: topic.to_string(), state: RwLock::new(state), writer: Mutex::new(exists), changes };
        Ok(Registry { inner: Arc::new(inner) })
    }

    // ---- Hot-path reads (no I/O, one read lock) ----

    /// The schema with this id, while any version (soft-deleted ones included) uses it.
    pub fn schema_by_id(&self, id: u32) -> Option<Arc<RegisteredSchema>> {
        metrics::LOOKUPS_BY_ID.inc();
        self.inner.state.read().live_schema(id).cloned()
    }

    /// The schema of the newest live (not deleted) version of `subject`.
    pub fn latest(&self, subject: &str) -> Option<Arc<RegisteredSchema>> {
        metrics::LOOKUPS_BY_SUBJECT_VERSION.inc();
        let st = self.inner.state.read();
        let (_, e) = st.subjects.get(subject)?.visible(false).next_back()?;
        Some(st.schemas[&e.id].clone())
    }

    /// The schema of live version `version` of `subject`.
    pub fn version(&self, subject: &str, version: u32) -> Option<Arc<RegisteredSchema>> {
        metrics::LOOKUPS_BY_SUBJECT_VERSION.inc();
        let st = self.inner.state.read();
        let e = st.subjects.get(subject)?.versions.get(&version).filter(|e| !e.deleted)?;
        Some(st.schemas[&e.id].clone())
    }

    /// A receiver of the change counter: it changes after every applied change, so holders of caches (encoders
    /// per subject, say) know when to drop them.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The current change counter (see [`Registry::subscribe`]).
    pub fn generation(&self) -> u64 {
        *self.inner.changes.borrow()
    }

    // ---- API reads ----

    /// Subjects with a live version (or, with `deleted`, a soft-deleted one), sorted.
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        let st = self.inner.state.read();
        st.subjects.iter().filter(|(_, s)| s.has_visible(deleted)).map(|(n, _)| n.clone()).collect()
    }

    /// Version numbers of `subject`, ascending; 40401 when it has none.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, SchemaError> {
        let st = self.inner.state.read();
        Ok(st.subject(subject, deleted)?.visible(deleted).map(|(v, _)| v).collect())
    }

    /// One version of `subject`: 40401 without the subject, 40402 without the version.
    pub fn get_version(&self, subject: &str, v: VersionRef, deleted: bool) -> Result<SubjectVersion, SchemaError> {
        metrics::LOOKUPS_BY_SUBJECT_VERSION.inc();
        let st = self.inner.state.read();
        let (version, e) = st.resolve(subject, v, deleted)?;
        Ok(st.subject_version(subject, version, e))
    }

    /// The version of `subject` holding `schema` (the newest, live ones first): 42201 for an invalid schema, 40401
    /// without the subject, 40403 when the schema is not registered under it.
    pub fn lookup(
        &self,
        subject: &str,
        schema: &str,
        schema_type: Option<&str>,
        deleted: bool,
    ) -> Result<SubjectVersion, SchemaError> {
        metrics::LOOKUPS_BY_SCHEMA.inc();
        let parsed = avro::parse(schema, schema_type)?;
        let st = self.inner.state.read();
        let s = st.subject(subject, deleted)?;
        let matches = |(_, e): &(u32, VersionEntry)| st.schemas[&e.id].canonical == parsed.canonical;
        let found = s.visible(false).rev().find(matches).or_else(|| s.visible(deleted).rev().find(matches));
        let (version, e) = found.ok_or_else(|| SchemaError::SchemaNotInSubject { subject: subject.to_string() })?;
        Ok(st.subject_version(subject, version, e))
    }

    /// The schema with `id`, or 40403.
    pub fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, SchemaError> {
        self.schema_by_id(id).ok_or(SchemaError::SchemaNotFound { id })
    }

    /// `(subject, version)` pairs using schema `id`, sorted; 40403 for an unknown id.
    pub fn versions_of(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, SchemaError> {
        let st = self.inner.state.read();
        st.live_schema(id).ok_or(SchemaError::SchemaNotFound { id })?;
        Ok(st
            .subjects
            .iter()
            .flat_map(|(name, s)| s.visible(deleted).filter(|(_, e)| e.id == id).map(|(v, _)| (name.clone(), v)))
            .collect())
    }

    /// Subjects using schema `id`, sorted; 40403 for an unknown id.
    pub fn subjects_of(&self, id: u32, deleted: bool) -> Result<Vec<String>, SchemaError> {
        let mut names: Vec<String> = self.versions_of(id, deleted)?.into_iter().map(|(s, _)| s).collect();
        names.dedup();
        Ok(names)
    }

    /// The global level (the default, BACKWARD, when none was set).
    pub fn global_level(&self) -> CompatibilityLevel {
        self.inner.state.read().global.unwrap_or(CompatibilityLevel::DEFAULT)
    }

    /// The level set on `subject` itself, if any.
    pub fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.inner.state.read().subjects.get(subject).and_then(|s| s.level)
    }

    /// The level that applies to `subject`: its own, else the global one.
    pub fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.inner.state.read().level(subject)
    }

    /// Would `schema` be accepted by `subject`? `version` `None` or `Latest`: checked as a registration would be
    /// (against the latest live version, or all of them for a transitive level; compatible when there is none).
    /// A number: against that version only.
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        schema: &str,
        schema_type: Option<&str>,
    ) -> Result<CompatibilityReport, SchemaError> {
        let parsed = avro::parse(schema, schema_type)?;
        let st = self.inner.state.read();
        let level = st.level(subject);
        // Confluent: `/versions` tests against what the level says (all live versions when transitive);
        // `/versions/{version}` (`latest` included) against that one version.
        let messages = match version {
            None => compat::check(level, &parsed.schema, &st.previous(subject)),
            Some(VersionRef::Latest) if st.resolve(subject, VersionRef::Latest, false).is_err() => Vec::new(),
            Some(v) => {
                let (version, e) = st.resolve(subject, v, false)?;
                let old = [Previous { version, schema: &st.schemas[&e.id].schema }];
                compat::check(level, &parsed.schema, &old)
            }
        };
        Ok(CompatibilityReport { is_compatible: messages.is_empty(), level, messages })
    }

    /// The whole state as plain data.
    pub fn dump(&self) -> RegistryDump {
        self.inner.state.read().dump()
    }

    // ---- Changes ----

    /// Registers `schema` under `subject`: the existing id and version when the subject already has it as a
    /// live version (nothing written), else a new version after the compatibility check (409 when it fails),
    /// with the schema's existing global id or a new one.
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
        schema_type: Option<&str>,
    ) -> Result<Registration, SchemaError> {
        let parsed = avro::parse(schema, schema_type)
            .inspect_err(|_| metrics::REJECTED.with_label_values(&["invalid"]).inc())?;
        let subject = subject.to_string();
        let result = self
            .write(move |st| {
                let Parsed { text, schema, canonical } = parsed;
                if let Some(s) = st.subjects.get(&subject)
                    && let Some((version, e)) =
                        s.visible(false).rev().find(|(_, e)| st.schemas[&e.id].canonical == canonical)
                {
                    return Ok(Plan::Done(Registration { id: e.id, version, created: false }));
                }
                let level = st.level(&subject);
                let messages = compat::check(level, &schema, &st.previous(&subject));
                if !messages.is_empty() {
                    metrics::REJECTED.with_label_values(&["incompatible"]).inc();
                    return Err(SchemaError::Incompatible { subject, level, messages });
                }
                let existing = st.ids.get(&canonical).and_then(|id| st.schemas.get(id));
                let (id, registered) = match existing {
                    Some(s) => (s.id, s.clone()),
                    None => {
                        let id = st.next_id;
                        (id, Arc::new(RegisteredSchema { id, schema_text: text, schema, canonical }))
                    }
                };
                let version = st.subjects.get(&subject).map_or(1, |s| s.next_version.max(1));
                let change = Change::Register { subject, version, id, schema: registered.schema_text.clone() };
                Ok(Plan::Write {
                    change,
                    schema: Some(registered),
                    result: Registration { id, version, created: true },
                })
            })
            .await?;
        metrics::REGISTRATIONS.with_label_values(&[if result.created { "new" } else { "existing" }]).inc();
        Ok(result)
    }

    /// Deletes every version of `subject`: soft (the live versions; 40404 when there are none left) or, with
    /// `permanent`, hard (all versions, which must all be soft-deleted first: 40405). Returns the versions.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<u32>, SchemaError> {
        let subject = subject.to_string();
        self.write(move |st| {
            let s = st.subject(&subject, true)?;
            let live: Vec<u32> = s.visible(false).map(|(v, _)| v).collect();
            let versions = if permanent {
                if !live.is_empty() {
                    return Err(SchemaError::SubjectNotSoftDeleted { subject });
                }
                s.versions.keys().copied().collect()
            } else {
                if live.is_empty() {
                    return Err(SchemaError::SubjectSoftDeleted { subject });
                }
                live
            };
            let change = Change::DeleteSubject { subject, versions: versions.clone(), permanent };
            Ok(Plan::Write { change, schema: None, result: versions })
        })
        .await
    }

    /// Deletes one version: soft (40406 when it already is) or, with `permanent`, hard (it must be soft-deleted
    /// first: 40407). `latest` is the newest live version, or with `permanent` the newest one.
    pub async fn delete_version(&self, subject: &str, v: VersionRef, permanent: bool) -> Result<u32, SchemaError> {
        let subject = subject.to_string();
        self.write(move |st| {
            // A numbered version is found even when soft-deleted, to say so (40406).
            let (version, e) = st.resolve(&subject, v, permanent || matches!(v, VersionRef::Number(_)))?;
            match (e.deleted, permanent) {
                (true, false) => return Err(SchemaError::VersionSoftDeleted { subject, version }),
                (false, true) => return Err(SchemaError::VersionNotSoftDeleted { subject, version }),
                _ => {}
            }
            Ok(Plan::Write {
                change: Change::DeleteVersion { subject, version, permanent },
                schema: None,
                result: version,
            })
        })
        .await
    }

    /// Sets the global level.
    pub async fn set_global_level(&self, level: CompatibilityLevel) -> Result<(), SchemaError> {
        self.write(move |_| {
            Ok(Plan::Write { change: Change::SetLevel { subject: None, level }, schema: None, result: () })
        })
        .await
    }

    /// Resets the global level to the default; returns the level that applied before.
    pub async fn delete_global_level(&self) -> Result<CompatibilityLevel, SchemaError> {
        self.write(move |st| {
            let before = st.global.unwrap_or(CompatibilityLevel::DEFAULT);
            Ok(Plan::Write { change: Change::DeleteLevel { subject: None }, schema: None, result: before })
        })
        .await
    }

    /// Sets `subject`'s own level (the subject need not exist yet).
    pub async fn set_subject_level(&self, subject: &str, level: CompatibilityLevel) -> Result<(), SchemaError> {
        let subject = Some(subject.to_string());
        self.write(move |_| Ok(Plan::Write { change: Change::SetLevel { subject, level }, schema: None, result: () }))
            .await
    }

    /// Removes `subject`'s own level; returns it (40408 when it had none).
    pub async fn delete_subject_level(&self, subject: &str) -> Result<CompatibilityLevel, SchemaError> {
        let subject = subject.to_string();
        self.write(move |st| {
            let level = st
                .subjects
                .get(&subject)
                .and_then(|s| s.level)
                .ok_or_else(|| SchemaError::SubjectLevelNotConfigured { subject: subject.clone() })?;
            Ok(Plan::Write { change: Change::DeleteLevel { subject: Some(subject) }, schema: None, result: level })
        })
        .await
    }

    /// Runs one change in its own task (so it completes even if the caller goes away): under the writer lock,
    /// `decide` looks at the state; its change is appended to the log, then applied and published.
    async fn write<T, F>(&self, decide: F) -> Result<T, SchemaError>
    where
        T: Send + 'static,
        F: FnOnce(&State) -> Result<Plan<T>, SchemaError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let mut topic_exists = inner.writer.lock().await;
            let plan = decide(&inner.state.read())?;
            let (change, schema, result) = match plan {
                Plan::Done(result) => return Ok(result),
                Plan::Write { change, schema, result } => (change, schema, result),
            };
            if !*topic_exists {
                create_topic(&*inner.log, &inner.topic).await.inspect_err(|_| metrics::STORE_ERRORS.inc())?;
                *topic_exists = true;
            }
            inner.append(&change).await?;
            let mut st = inner.state.write();
            if let Err(e) = st.apply(&change, schema) {
                // Decided under the same lock from the same state: cannot happen.
                tracing::error!(error = %e, "schema registry change could not be applied after it was stored");
            }
            st.publish_gauges();
            drop(st);
            inner.changes.send_modify(|n| *n += 1);
            Ok(result)
        });
        task.await.map_err(|e| SchemaError::Internal(format!("schema registry writer task failed: {e}")))?
    }
}

impl Inner {
    async fn append(&self, change: &Change) -> Result<(), SchemaError> {
        let value = serde_json::to_vec(&EnvelopeOut { v: FORMAT, change }).expect("a change serializes");
        let record = Record {
            timestamp: sluice_log::now_ms(),
            key: change.subject().map(|s| Bytes::copy_from_slice(s.as_bytes())),
            headers: Vec::new(),
            value: Bytes::from(value),
        };
        // Flushed even under an fsync interval: a lost registration could see its id given to another schema.
        let stored = match self.log.append(&self.topic, 0, vec![record]).await {
            Ok(_) => self.log.flush(&self.topic, 0).await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => Ok(()),
            Err(e) => {
                metrics::STORE_ERRORS.inc();
                tracing::error!(error = %e, topic = %self.topic, "schema registry change not stored");
                sluice_telemetry::record_error("schema", "store", 1, &self.topic, &e);
                Err(SchemaError::Store(e))
            }
        }
    }
}

/// Creates the registry topic (one partition, kept forever), or checks the one someone else just created.
async fn create_topic(log: &dyn LogStore, topic: &str) -> Result<(), SchemaError> {
    let spec = TopicSpec {
        name: topic.to_string(),
        partitions: 1,
        retention: Some(Duration::MAX),
        retention_bytes: Some(u64::MAX),
    };
    let info = match log.create_topic(spec).await {
        Ok(info) => info,
        Err(LogError::TopicExists(_)) => log.topic(topic).await?,
        Err(e) => return Err(e.into()),
    };
    check_topic(&info)
}

/// The registry topic must have one partition; a retention limit would lose history, so it is logged.
fn check_topic(info: &sluice_log::TopicInfo) -> Result<(), SchemaError> {
    let topic = info.name.as_str();
    if info.partitions != 1 {
        return Err(SchemaError::Replay(format!(
            "topic `{topic}` has {} partitions; the schema registry needs exactly 1",
            info.partitions
        )));
    }
    if info.retention_ms.is_some() || info.retention_bytes.is_some_and(|b| b != u64::MAX) {
        tracing::warn!(
            topic,
            retention_ms = info.retention_ms,
            retention_bytes = info.retention_bytes,
            "the schema registry topic has a retention limit: registry history may be deleted"
        );
    }
    Ok(())
}

struct ReplayReport {
    records: u64,
    skipped: u64,
}

/// Rebuilds the state from the topic's first offset to its high watermark.
async fn replay(log: &dyn LogStore, topic: &str) -> Result<(State, ReplayReport), SchemaError> {
    let start = log.describe_topic(topic).await?.partition_details.first().map_or(0, |p| p.log_start_offset);
    if start > 0 {
        tracing::error!(topic, start, "the schema registry topic no longer starts at offset 0: schemas were lost");
    }
    let mut state = State::new();
    let mut report = ReplayReport { records: 0, skipped: 0 };
    let mut from = start;
    loop {
        let batch = log.read(topic, 0, from, 4096, 32 << 20).await?;
        if batch.records.is_empty() {
            break;
        }
        for r in &batch.records {
            report.records += 1;
            let skip = |reason: String| {
                tracing::warn!(topic, offset = r.offset, reason = %reason, "skipping a schema registry record");
            };
            let envelope: EnvelopeIn = match serde_json::from_slice(&r.value) {
                Ok(e) => e,
                Err(e) => {
                    skip(format!("not a registry record: {e}"));
                    report.skipped += 1;
                    continue;
                }
            };
            if envelope.v > FORMAT {
                return Err(SchemaError::Replay(format!(
                    "record at offset {} of `{topic}` has format {} but this Sluice reads up to {FORMAT}; upgrade",
                    r.offset, envelope.v
                )));
            }
            let applied = serde_json::from_value::<Change>(envelope.change)
                .map_err(|e| format!("not a registry change: {e}"))
                .and_then(|c| state.apply(&c, None));
            if let Err(reason) = applied {
                skip(reason);
                report.skipped += 1;
            }
        }
        from = batch.next_offset;
        if from >= batch.high_watermark {
            break;
        }
    }
    Ok((state, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_confluent() {
        assert_eq!(VersionRef::parse("latest").unwrap(), VersionRef::Latest);
        assert_eq!(VersionRef::parse("-1").unwrap(), VersionRef::Latest);
        assert_eq!(VersionRef::parse("1").unwrap(), VersionRef::Number(1));
        assert_eq!(VersionRef::parse("2147483647").unwrap(), VersionRef::Number(i32::MAX as u32));
        for bad in ["0", "-2", "2147483648", "x", "", "1.5", "99999999999999999999"] {
            let e = VersionRef::parse(bad).unwrap_err();
            assert_eq!(e.error_code(), 42202, "{bad}");
            assert_eq!(e.http_status(), 422);
        }
    }

    #[test]
    fn changes_round_trip_in_the_record_format() {
        let c = Change::SetLevel { subject: None, level: CompatibilityLevel::Full };
        let text = serde_json::to_string(&EnvelopeOut { v: FORMAT, change: &c }).unwrap();
        assert_eq!(text, r#"{"v":1,"op":"set_level","subject":null,"level":"FULL"}"#);
        let c = Change::Register { subject: "s".into(), version: 1, id: 7, schema: "\"int\"".into() };
        let text = serde_json::to_string(&EnvelopeOut { v: FORMAT, change: &c }).unwrap();
        assert_eq!(text, r#"{"v":1,"op":"register","subject":"s","version":1,"id":7,"schema":"\"int\""}"#);
        let e: EnvelopeIn = serde_json::from_str(&text).unwrap();
        assert!(matches!(serde_json::from_value::<Change>(e.change).unwrap(), Change::Register { id: 7, .. }));
    }
}
