//! The store: every table under one root directory, plus the background maintenance thread (flush by age,
//! compaction, retention) that keeps them in shape.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::StoreError;
use crate::manifest::MANIFEST_FILE;
use crate::table::{Table, TableInfo, TableOptions, TableSpec, validate_name};

/// Prefix of a table directory being deleted (not a valid table name, so never mistaken for a table).
const DROPPED_PREFIX: &str = ".dropped-";

#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Options of every table.
    pub table: TableOptions,
}

/// All tables under `{root}`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    options: StoreOptions,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    /// Serializes creating and dropping tables (directory operations).
    admin: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.inner.root).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating the directory if needed) the store at `root` and every table in it. Directories without a
    /// manifest are skipped with a warning; leftovers of an interrupted drop are deleted.
    pub fn open(root: impl AsRef<Path>, options: StoreOptions) -> Result<Store, StoreError> {
        let root = root.as_ref().to_path_buf();
        fs::create_dir_all(&root).map_err(StoreError::io(&root))?;
        let mut tables = BTreeMap::new();
        for entry in fs::read_dir(&root).map_err(StoreError::io(&root))? {
            let entry = entry.map_err(StoreError::io(&root))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if name.starts_with(DROPPED_PREFIX) {
                fs::remove_dir_all(&path).map_err(StoreError::io(&path))?;
                continue;
            }
            if validate_name(&name).is_err() || !path.join(MANIFEST_FILE).exists() {
                tracing::warn!(dir = %path.display(), "skipping a directory that is not a table");
                continue;
            }
            let table = Table::open(&root, &name, options.table.clone())?;
            tables.insert(name, Arc::new(table));
        }
        Ok(Store { inner: Arc::new(Inner { root, options, tables: RwLock::new(tables), admin: Mutex::new(()) }) })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.inner.tables.read().get(name).cloned()
    }

    /// All tables, by name.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.inner.tables.read().values().cloned().collect()
    }

    /// The table `name`, created from `spec` if it does not exist; an existing one gets the newly declared
    /// columns of `spec` (its kind must match; chunk width and retention are left as they are).
    pub fn ensure_table(&self, name: &str, spec: TableSpec) -> Result<Arc<Table>, StoreError> {
        validate_name(name)?;
        if let Some(table) = self.table(name) {
            if table.kind() != spec.kind {
                return Err(StoreError::WrongKind {
                    table: name.to_string(),
                    actual: table.kind().as_str(),
                    expected: spec.kind.as_str(),
                });
            }
            table.declare(&spec.declared)?;
            return Ok(table);
        }
        let _admin = self.inner.admin.lock();
        if self.table(name).is_some() {
            // Created meanwhile by another caller.
            drop(_admin);
            return self.ensure_table(name, spec);
        }
        let table = Arc::new(Table::create_or_open(&self.inner.root, name, spec, self.inner.options.table.clone())?);
        self.inner.tables.write().insert(name.to_string(), table.clone());
        tracing::info!(table = name, kind = table.kind().as_str(), "created table");
        Ok(table)
    }

    /// Deletes a table and its files. Rows buffered in it are lost; a holder of its `Arc<Table>` gets errors
    /// from then on.
    pub fn drop_table(&self, name: &str) -> Result<(), StoreError> {
        let _admin = self.inner.admin.lock();
        let table = self.inner.tables.write().remove(name).ok_or_else(|| StoreError::UnknownTable(name.to_string()))?;
        // Wait for a running flush or compaction, then move the directory out of the way in one step so a crash
        // during the delete leaves no half table behind.
        let _maint = table.maintenance_lock();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let gone = self.inner.root.join(format!("{DROPPED_PREFIX}{name}-{nanos}"));
        let dir = table.dir().to_path_buf();
        fs::rename(&dir, &gone).map_err(StoreError::io(&dir))?;
        crate::manifest::sync_dir(&self.inner.root)?;
        fs::remove_dir_all(&gone).map_err(StoreError::io(&gone))?;
        tracing::info!(table = name, "dropped table");
        Ok(())
    }

    pub fn list(&self) -> Vec<TableInfo> {
        self.tables().iter().map(|t| t.info()).collect()
    }

    /// One maintenance round: per table, one after the other, flush by age, compact, apply retention. Errors are
    /// logged and the table is retried next round.
    pub fn maintain_once(&self) {
        for table in self.tables() {
            let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| maintain_table(&table)));
            if round.is_err() {
                tracing::error!(table = table.name(), "maintenance panicked; retrying next round");
            }
        }
    }

    /// Flushes every table's buffered rows (graceful shutdown); errors are logged, the rows are read again from
    /// the log at the next start.
    pub fn flush_all(&self) {
        for table in self.tables() {
            if let Err(e) = table.flush() {
                tracing::warn!(table = table.name(), error = %e, "flush at shutdown failed; rows are reread at start");
            }
        }
    }

    /// Runs [`maintain_once`](Self::maintain_once) every `every` on one background thread until the handle is
    /// stopped or dropped.
    pub fn start_maintenance(&self, every: Duration) -> MaintenanceHandle {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let store = self.clone();
        let signal = stop.clone();
        let spawned = std::thread::Builder::new().name("sluice-tsdb-maintenance".into()).spawn(move || {
            let (lock, cvar) = &*signal;
            loop {
                {
                    let mut stopped = lock.lock();
                    if !*stopped {
                        cvar.wait_for(&mut stopped, every);
                    }
                    if *stopped {
                        return;
                    }
                }
                store.maintain_once();
            }
        });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the store maintenance thread");
                None
            }
        };
        MaintenanceHandle { stop, thread }
    }
}

fn maintain_table(table: &Table) {
    let name = table.name();
    match table.flush_if_older(Instant::now()) {
        Ok(0) => {}
        Ok(rows) => tracing::info!(table = name, rows, "flushed buffered rows by age"),
        Err(e) => tracing::warn!(table = name, error = %e, "flush failed; retrying next round"),
    }
    if let Err(e) = table.compact() {
        tracing::warn!(table = name, error = %e, "compaction failed; retrying next round");
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    if let Err(e) = table.apply_retention(now_ms) {
        tracing::warn!(table = name, error = %e, "retention failed; retrying next round");
    }
}

/// Stops the maintenance thread when stopped or dropped (after its current round).
pub struct MaintenanceHandle {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl MaintenanceHandle {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let (lock, cvar) = &*self.stop;
        *lock.lock() = true;
        cvar.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MaintenanceHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
