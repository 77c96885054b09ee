//! The file I/O behind the log: a small trait with a real backend ([`StdStorage`]) and a simulated one
//! ([`SimStorage`]) that separates bytes *written* from bytes *made durable*, so tests can crash the log at any
//! point, fail an fsync, or run out of space, and then check what recovery does.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Directory-level operations of a durable component.
pub trait Storage: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// File and directory names directly below `path`, unsorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing, creating it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
}

/// One open file. Positional reads and writes, so readers and the single writer share a handle without a cursor.
#[allow(clippy::len_without_is_empty)] // `len` is a fallible file-size query, not a collection length
pub trait StorageFile: Send + Sync + 'static {
    fn len(&self) -> io::Result<u64>;
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Makes every byte written so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `pos`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, pos) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably: a temporary file is written and fsynced, renamed over
/// the old one, and the directory fsynced. A crash leaves the old file or the new one, never a mix. For the small
/// metadata files (definitions, manifests) every stage keeps beside its data.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdStorage;

impl Storage for StdStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

struct StdFile(File);

impl StorageFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// An in-memory file system for crash and fault tests.
///
/// Every file keeps the bytes written and, separately, the bytes last made durable by `sync_data`; directory
/// entries become durable with `sync_dir` of their parent. [`SimStorage::crash`] throws away everything that was
/// not durable, as a power cut would. Faults: fsync errors, a space quota (ENOSPC with a partial write, as a
/// real disk does), and write errors.
#[derive(Clone, Default)]
pub struct SimStorage {
    inner: Arc<SimInner>,
}

#[derive(Default)]
struct SimInner {
    state: Mutex<SimState>,
    faults: SimFaults,
}

#[derive(Default)]
struct SimFaults {
    fail_sync: AtomicBool,
    fail_write: AtomicBool,
    /// Total bytes all files may hold; `u64::MAX` means no limit.
    space: AtomicU64,
    syncs: AtomicU64,
}

#[derive(Default)]
struct SimState {
    files: HashMap<PathBuf, Arc<SimFile>>,
    durable_entries: HashMap<PathBuf, Arc<SimFile>>,
    dirs: std::collections::HashSet<PathBuf>,
}

struct SimFile {
    data: Mutex<SimData>,
    storage: Arc<SimInner>,
}

#[derive(Default, Clone)]
struct SimData {
    written: Vec<u8>,
    durable: Vec<u8>,
}

impl SimStorage {
    pub fn new() -> Self {
        let s = Self::default();
        s.inner.faults.space.store(u64::MAX, Ordering::SeqCst);
        s
    }

    /// Simulates a power cut: every file goes back to its last durable bytes, and entries never made durable
    /// by `sync_dir` disappear (removals not made durable come back).
    pub fn crash(&self) {
        let mut st = self.inner.state.lock();
        let entries = st.durable_entries.clone();
        for file in entries.values() {
            let mut d = file.data.lock();
            d.written = d.durable.clone();
        }
        st.files = entries;
    }

    /// Every later fsync fails with EIO (until set back).
    pub fn set_fail_sync(&self, fail: bool) {
        self.inner.faults.fail_sync.store(fail, Ordering::SeqCst);
    }

    /// Every later write fails with EIO (until set back).
    pub fn set_fail_write(&self, fail: bool) {
        self.inner.faults.fail_write.store(fail, Ordering::SeqCst);
    }

    /// Limits the total bytes held by all files; `None` lifts the limit.
    pub fn set_space_limit(&self, limit: Option<u64>) {
        self.inner.faults.space.store(limit.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Number of successful `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.inner.faults.syncs.load(Ordering::SeqCst)
    }

    /// Changes a file's bytes directly (written and durable alike), as media corruption would.
    pub fn mutate(&self, path: &Path, f: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let st = self.inner.state.lock();
        let file = st.files.get(path).ok_or_else(|| not_found(path))?;
        let mut d = file.data.lock();
        f(&mut d.written);
        d.durable = d.written.clone();
        Ok(())
    }

    /// The current (written) bytes of a file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let st = self.inner.state.lock();
        let file = st.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(file.data.lock().written.clone())
    }

    /// Paths of all files, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = self.inner.state.lock().files.keys().cloned().collect();
        v.sort();
        v
    }

    fn used(st: &SimState) -> u64 {
        st.files.values().map(|f| f.data.lock().written.len() as u64).sum()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: not found", path.display()))
}

impl Storage for SimStorage {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        for anc in path.ancestors() {
            st.dirs.insert(anc.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.inner.state.lock();
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in st.files.keys().chain(st.dirs.iter()) {
            if p.parent() == Some(path)
                && let Some(n) = p.file_name()
            {
                names.insert(n.to_string_lossy().into_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.inner.state.lock();
        if let Some(f) = st.files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(not_found(path));
        }
        let f = Arc::new(SimFile { data: Mutex::new(SimData::default()), storage: self.inner.clone() });
        st.files.insert(path.to_path_buf(), f.clone());
        Ok(f)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.state.lock().files.remove(path).map(|_| ()).ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        st.files.retain(|p, _| !p.starts_with(path));
        st.dirs.retain(|p| !p.starts_with(path));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        let moved: Vec<PathBuf> = st.files.keys().filter(|p| p.starts_with(from)).cloned().collect();
        if moved.is_empty() && !st.dirs.contains(from) {
            return Err(not_found(from));
        }
        for p in moved {
            let f = st.files.remove(&p).expect("listed above");
            let rel = p.strip_prefix(from).expect("listed above");
            st.files.insert(to.join(rel), f);
        }
        let dirs: Vec<PathBuf> = st.dirs.iter().filter(|p| p.starts_with(from)).cloned().collect();
        for d in dirs {
            st.dirs.remove(&d);
            let rel = d.strip_prefix(from).expect("listed above");
            st.dirs.insert(to.join(rel));
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.inner.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut st = self.inner.state.lock();
        // Entries below `dir` become durable as they are now. (Subdirectories are treated as durable on
        // creation; the log syncs every directory it changes anyway.)
        let current: Vec<(PathBuf, Arc<SimFile>)> =
            st.files.iter().filter(|(p, _)| p.starts_with(dir)).map(|(p, f)| (p.clone(), f.clone())).collect();
        st.durable_entries.retain(|p, _| !p.starts_with(dir));
        st.durable_entries.extend(current);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.inner.state.lock();
        st.files.contains_key(path) || st.dirs.contains(path)
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.lock().written.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let d = self.data.lock();
        let pos = pos as usize;
        if pos >= d.written.len() {
            return Ok(0);
        }
        let n = buf.len().min(d.written.len() - pos);
        buf[..n].copy_from_slice(&d.written[pos..pos + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let faults = &self.storage.faults;
        if faults.fail_write.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let used = SimStorage::used(&self.storage.state.lock());
        let mut d = self.data.lock();
        let pos = pos as usize;
        let end = pos + buf.len();
        let grow = end.saturating_sub(d.written.len()) as u64;
        let space = faults.space.load(Ordering::SeqCst);
        let (n, full) = if used.saturating_add(grow) > space {
            // A real disk writes what fits, then fails: leave a torn tail behind.
            let room = space.saturating_sub(used) as usize;
            ((d.written.len().saturating_sub(pos) + room).min(buf.len()), true)
        } else {
            (buf.len(), false)
        };
        if d.written.len() < pos + n {
            d.written.resize(pos + n, 0);
        }
        d.written[pos..pos + n].copy_from_slice(&buf[..n]);
        if full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let faults = &self.storage.faults;
        if faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut d = self.data.lock();
        d.durable = d.written.clone();
        faults.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = self.data.lock();
        d.written.resize(len as usize, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_only_durable_bytes_and_entries() {
        let s = SimStorage::new();
        let dir = Path::new("/d");
        s.create_dir_all(dir).unwrap();
        let a = s.open(&dir.join("a"), true).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        s.sync_dir(dir).unwrap();
        a.sync_data().unwrap();
        a.write_all_at(b" world", 5).unwrap();
        let b = s.open(&dir.join("b"), true).unwrap();
        b.write_all_at(b"lost", 0).unwrap();
        b.sync_data().unwrap();
        s.crash();
        assert_eq!(s.contents(&dir.join("a")).unwrap(), b"hello");
        assert!(!s.exists(&dir.join("b")), "entry never synced must vanish");
    }

    #[test]
    fn space_limit_tears_the_write() {
        let s = SimStorage::new();
        s.set_space_limit(Some(3));
        let f = s.open(Path::new("/f"), true).unwrap();
        let err = f.write_all_at(b"12345", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(f.len().unwrap(), 3);
    }
}
