//! Fault injection on checkpoint files: every truncation, every bit flip, interrupted writes, mismatched names
//! and unwritable directories. Recovery must fall back to the previous good checkpoint, never panic.

use std::fs::{self, OpenOptions};
use std::path::Path;

use sluice_jobs::checkpoint::{CheckpointError, CheckpointStore};

const GOOD: &[u8] = b"epoch one: offsets and state";
const NEWEST: &[u8] = b"epoch two: newer offsets, more state";

/// A store holding a good epoch 1 and epoch 2, the one the tests damage.
fn two_checkpoints() -> (tempfile::TempDir, CheckpointStore, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(1, GOOD).unwrap();
    let bytes = fs::read(store.write(2, NEWEST).unwrap()).unwrap();
    assert_eq!(store.latest().unwrap(), Some((2, NEWEST.to_vec())));
    (dir, store, bytes)
}

#[test]
fn truncation_at_every_offset_falls_back_to_the_previous() {
    let (_dir, store, bytes) = two_checkpoints();
    let path = store.path(2);
    for len in 0..bytes.len() {
        fs::write(&path, &bytes).unwrap();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len as u64).unwrap();
        assert_eq!(store.latest().unwrap(), Some((1, GOOD.to_vec())), "truncated to {len} bytes");
    }
    fs::write(&path, &bytes).unwrap();
    assert_eq!(store.latest().unwrap(), Some((2, NEWEST.to_vec())));
}

#[test]
fn a_bit_flip_anywhere_falls_back_to_the_previous() {
    let (_dir, store, bytes) = two_checkpoints();
    let path = store.path(2);
    for byte in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 1 << bit;
            fs::write(&path, &damaged).unwrap();
            assert_eq!(store.latest().unwrap(), Some((1, GOOD.to_vec())), "bit {bit} of byte {byte} flipped");
        }
    }
}

#[test]
fn appended_garbage_falls_back_to_the_previous() {
    let (_dir, store, mut bytes) = two_checkpoints();
    bytes.extend_from_slice(b"trailing");
    fs::write(store.path(2), &bytes).unwrap();
    assert_eq!(store.latest().unwrap(), Some((1, GOOD.to_vec())));
}

#[test]
fn every_checkpoint_damaged_means_none() {
    let (_dir, store, _) = two_checkpoints();
    fs::write(store.path(1), b"").unwrap();
    fs::write(store.path(2), b"SLCKPT01").unwrap();
    assert_eq!(store.latest().unwrap(), None);
    assert_eq!(store.list().unwrap(), vec![1, 2]);
}

#[test]
fn a_leftover_tmp_file_is_ignored_and_removed_on_open() {
    let (dir, store, bytes) = two_checkpoints();
    // A crash after writing epoch 3 in full but before the rename: it never became a checkpoint.
    let mut epoch3 = bytes.clone();
    epoch3[12] = 3;
    let tmp = dir.path().join("00000000000000000003.ckpt.tmp");
    fs::write(&tmp, &epoch3).unwrap();
    fs::write(dir.path().join("00000000000000000004.ckpt.tmp"), &bytes[..10]).unwrap();
    assert_eq!(store.latest().unwrap(), Some((2, NEWEST.to_vec())));
    assert_eq!(store.list().unwrap(), vec![1, 2]);
    drop(store);
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert!(!tmp.exists());
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.iter().all(|n| n.to_str().unwrap().ends_with(".ckpt")), "{names:?}");
    assert_eq!(store.latest().unwrap(), Some((2, NEWEST.to_vec())));
    // The next write of epoch 3 goes through the same tmp name.
    store.write(3, b"three").unwrap();
    assert_eq!(store.latest().unwrap(), Some((3, b"three".to_vec())));
}

#[test]
fn keep_n_keeps_the_newest_n() {
    for keep in [1, 2, 5] {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), keep).unwrap();
        for epoch in 0..12u64 {
            store.write(epoch, &epoch.to_be_bytes()).unwrap();
        }
        let expected: Vec<u64> = (12 - keep as u64..12).collect();
        assert_eq!(store.list().unwrap(), expected, "keep {keep}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), keep);
        assert_eq!(store.latest().unwrap(), Some((11, 11u64.to_be_bytes().to_vec())));
    }
}

#[test]
fn latest_is_none_on_an_empty_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().join("new/nested"), 2).unwrap();
    assert_eq!(store.latest().unwrap(), None);
    assert_eq!(store.list().unwrap(), Vec::<u64>::new());
    store.clear().unwrap();
}

#[test]
fn a_file_whose_name_and_header_disagree_is_skipped() {
    let (_dir, store, bytes) = two_checkpoints();
    // Epoch 2's intact file renamed to epoch 5: valid CRC, wrong epoch.
    fs::write(store.path(5), &bytes).unwrap();
    assert_eq!(store.list().unwrap(), vec![1, 2, 5]);
    assert_eq!(store.latest().unwrap(), Some((2, NEWEST.to_vec())));
}

#[test]
fn large_payloads_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    let payload: Vec<u8> = (0..8_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    store.write(7, &payload).unwrap();
    assert_eq!(fs::metadata(store.path(7)).unwrap().len(), payload.len() as u64 + 32);
    assert_eq!(store.latest().unwrap(), Some((7, payload)));
}

fn assert_io_error(result: Result<impl std::fmt::Debug, CheckpointError>, path: &Path) {
    match result {
        Err(CheckpointError::Io { path: p, .. }) => assert!(p.starts_with(&path.display().to_string()), "{p}"),
        other => panic!("expected an i/o error naming {}, got {other:?}", path.display()),
    }
}

#[test]
fn an_unusable_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A path under a regular file can never be a directory, even for root.
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    assert_io_error(CheckpointStore::open(file.join("ckpt"), 3), &file.join("ckpt"));

    // The directory replaced by a file after opening.
    let ckpt = dir.path().join("ckpt");
    let store = CheckpointStore::open(&ckpt, 3).unwrap();
    store.write(1, GOOD).unwrap();
    fs::remove_dir_all(&ckpt).unwrap();
    fs::write(&ckpt, b"not a directory").unwrap();
    assert_io_error(store.write(2, NEWEST), &ckpt);
    assert_io_error(store.latest(), &ckpt);
    assert_io_error(store.list(), &ckpt);
    assert_io_error(store.clear(), &ckpt);
}

#[cfg(unix)]
#[test]
fn a_read_only_directory_is_an_error_not_a_panic() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(1, GOOD).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
    // Root ignores permissions: nothing to test there.
    let writable = fs::write(dir.path().join("probe"), b"").is_ok();
    if !writable {
        assert_io_error(store.write(2, NEWEST), dir.path());
        assert_eq!(store.latest().unwrap(), Some((1, GOOD.to_vec())));
        assert!(store.clear().is_err());
    }
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
}
