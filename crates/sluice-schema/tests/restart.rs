//! Durability: the registry is rebuilt from the `_schemas` topic after a restart and after a crash, with
//! identical ids, versions, deleted flags and levels; an unacknowledged change is never visible.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{ROOT, open_log, open_registry, record};
use proptest::prelude::*;
use sluice_log::{Record, SimStorage, StdStorage};
use sluice_schema::{CompatibilityLevel, Registry, SCHEMAS_TOPIC, VersionRef};

fn schema(i: u32) -> String {
    record(&format!(r#"{{"name":"f{i}","type":"int","default":0}}"#))
}

/// Registers, deletes and configures a bit of everything.
async fn populate(reg: &Registry) {
    reg.set_global_level(CompatibilityLevel::Full).await.unwrap();
    reg.set_subject_level("b", CompatibilityLevel::None).await.unwrap();
    for i in 0..3 {
        reg.register("a", &schema(i), None).await.unwrap();
    }
    reg.register("b", &schema(1), None).await.unwrap();
    reg.register("b", &schema(7), None).await.unwrap();
    reg.register("c", &schema(9), None).await.unwrap();
    reg.delete_version("a", VersionRef::Number(1), false).await.unwrap();
    reg.delete_version("a", VersionRef::Number(1), true).await.unwrap();
    reg.delete_version("a", VersionRef::Number(2), false).await.unwrap();
    reg.delete_subject("c", false).await.unwrap();
    reg.delete_subject("c", true).await.unwrap();
    reg.set_subject_level("a", CompatibilityLevel::BackwardTransitive).await.unwrap();
    reg.set_subject_level("d", CompatibilityLevel::Forward).await.unwrap();
    reg.delete_subject_level("d").await.unwrap();
}

fn check_populated(reg: &Registry) {
    assert_eq!(reg.global_level(), CompatibilityLevel::Full);
    assert_eq!(reg.subject_level("a"), Some(CompatibilityLevel::BackwardTransitive));
    assert_eq!(reg.subject_level("b"), Some(CompatibilityLevel::None));
    assert_eq!(reg.subject_level("d"), None);
    assert_eq!(reg.subjects(false), vec!["a", "b"]);
    assert_eq!(reg.versions("a", true).unwrap(), vec![2, 3]);
    assert_eq!(reg.versions("a", false).unwrap(), vec![3]);
    assert!(reg.get_version("a", VersionRef::Number(2), true).unwrap().deleted);
    assert_eq!(reg.get_version("a", VersionRef::Latest, false).unwrap().id(), 3);
    assert_eq!(reg.versions("b", false).unwrap(), vec![1, 2]);
    assert_eq!(reg.get_version("b", VersionRef::Number(1), false).unwrap().id(), 2, "schema(1) is id 2 everywhere");
    assert_eq!(reg.get_version("b", VersionRef::Number(2), false).unwrap().id(), 4);
    assert!(reg.schema_by_id(1).is_none(), "hard-deleted");
    assert!(reg.schema_by_id(5).is_none(), "subject c was hard-deleted");
    assert_eq!(reg.schema(2).unwrap().schema_text, schema(1));
}

#[tokio::test]
async fn restart_on_the_same_data_dir_rebuilds_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("log");
    let reg = open_registry(&root, Arc::new(StdStorage)).await;
    populate(&reg).await;
    check_populated(&reg);
    let before = reg.dump();
    drop(reg);

    let reg = open_registry(&root, Arc::new(StdStorage)).await;
    assert_eq!(reg.dump(), before);
    check_populated(&reg);
    // Ids and versions continue after the highest ever assigned, hard deletes included.
    let r = reg.register("c", &schema(20), None).await.unwrap();
    assert_eq!((r.id, r.version), (6, 2), "subject c had version 1 and ids went up to 5");
    // The same schema as a hard-deleted id gets that id back.
    let r = reg.register("e", &schema(0), None).await.unwrap();
    assert_eq!(r.id, 1);
    let after = reg.dump();
    drop(reg);
    assert_eq!(open_registry(&root, Arc::new(StdStorage)).await.dump(), after);
}

#[tokio::test]
async fn acknowledged_changes_survive_a_crash_and_an_unacknowledged_one_is_never_visible() {
    let sim = SimStorage::new();
    let reg = open_registry(Path::new(ROOT), Arc::new(sim.clone())).await;
    populate(&reg).await;
    let acknowledged = reg.dump();
    let generation = reg.generation();

    // The disk stops syncing: the registration is refused with 50001 and changes nothing.
    sim.set_fail_sync(true);
    let e = reg.register("a", &schema(3), None).await.unwrap_err();
    assert_eq!((e.error_code(), e.http_status()), (50001, 500), "{e}");
    assert_eq!(reg.dump(), acknowledged, "not applied in memory");
    assert_eq!(reg.generation(), generation);
    assert!(reg.schema_by_id(6).is_none());
    assert_eq!(reg.versions("a", false).unwrap(), vec![3]);
    // The partition is fenced until restart: later changes fail too, and still change nothing.
    sim.set_fail_sync(false);
    let e = reg.set_global_level(CompatibilityLevel::None).await.unwrap_err();
    assert_eq!(e.error_code(), 50001);
    assert_eq!(reg.global_level(), CompatibilityLevel::Full);

    // Power cut, then restart.
    drop(reg);
    sim.crash();
    let reg = open_registry(Path::new(ROOT), Arc::new(sim.clone())).await;
    assert_eq!(reg.dump(), acknowledged);
    check_populated(&reg);
    assert!(reg.schema_by_id(6).is_none(), "the unacknowledged registration is gone");
    // And writes work again.
    let r = reg.register("a", &schema(3), None).await.unwrap();
    assert_eq!((r.id, r.version), (6, 4));
}

#[tokio::test]
async fn a_crash_right_after_acknowledgement_keeps_it() {
    let sim = SimStorage::new();
    let reg = open_registry(Path::new(ROOT), Arc::new(sim.clone())).await;
    let r = reg.register("s", &schema(1), None).await.unwrap();
    sim.crash();
    drop(reg);
    let reg = open_registry(Path::new(ROOT), Arc::new(sim.clone())).await;
    assert_eq!(reg.get_version("s", VersionRef::Latest, false).unwrap().id(), r.id);
}

#[tokio::test]
async fn foreign_records_are_skipped_and_a_newer_format_stops_start_up() {
    let sim = SimStorage::new();
    let log = open_log(Path::new(ROOT), Arc::new(sim.clone()));
    let reg = Registry::open(log.clone()).await.unwrap();
    reg.register("s", &schema(1), None).await.unwrap();
    let rec = |value: &'static str| Record {
        timestamp: 0,
        key: None,
        headers: Vec::new(),
        value: Bytes::from_static(value.as_bytes()),
    };
    log.append(SCHEMAS_TOPIC, 0, vec![rec("not json"), rec(r#"{"v":1,"op":"teleport"}"#)]).await.unwrap();
    reg.register("s", &schema(2), None).await.unwrap();
    let before = reg.dump();
    drop(reg);
    let reg = Registry::open(log.clone()).await.unwrap();
    assert_eq!(reg.dump(), before);

    log.append(SCHEMAS_TOPIC, 0, vec![rec(r#"{"v":2,"op":"register"}"#)]).await.unwrap();
    let e = Registry::open(log.clone()).await.unwrap_err();
    assert_eq!(e.error_code(), 50001);
    assert!(e.to_string().contains("format 2"), "{e}");
}

#[tokio::test]
async fn the_topic_is_created_by_the_first_change_with_one_partition_and_no_retention() {
    let sim = SimStorage::new();
    let log = open_log(Path::new(ROOT), Arc::new(sim.clone()));
    let reg = Registry::open(log.clone()).await.unwrap();
    assert!(log.topic(SCHEMAS_TOPIC).await.is_err(), "not created by reads");
    reg.subjects(true);
    reg.register("s", &schema(1), None).await.unwrap();
    let info = log.topic(SCHEMAS_TOPIC).await.unwrap();
    assert_eq!(info.partitions, 1);
    assert_eq!(info.retention_ms, None, "kept forever");
    // Deleted under the registry's feet: writes fail rather than start a new history.
    log.delete_topic(SCHEMAS_TOPIC).await.unwrap();
    assert_eq!(reg.register("s", &schema(2), None).await.unwrap_err().error_code(), 50001);
    assert!(log.topic(SCHEMAS_TOPIC).await.is_err());
    log.create_topic(sluice_log::TopicSpec::new(SCHEMAS_TOPIC, 2)).await.unwrap();
    let e = Registry::open(log).await.unwrap_err();
    assert!(e.to_string().contains("exactly 1"), "{e}");
}

#[derive(Debug, Clone)]
enum Op {
    Register { subject: u8, schema: u8 },
    DeleteVersion { subject: u8, version: u8, permanent: bool },
    DeleteSubject { subject: u8, permanent: bool },
    SetLevel { subject: Option<u8>, level: u8 },
    DeleteLevel { subject: Option<u8> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..6u8).prop_map(|(subject, schema)| Op::Register { subject, schema }),
        2 => (0..3u8, 0..5u8, any::<bool>()).prop_map(|(subject, version, permanent)| Op::DeleteVersion { subject, version, permanent }),
        1 => (0..3u8, any::<bool>()).prop_map(|(subject, permanent)| Op::DeleteSubject { subject, permanent }),
        1 => (proptest::option::of(0..3u8), 0..7u8).prop_map(|(subject, level)| Op::SetLevel { subject, level }),
        1 => proptest::option::of(0..3u8).prop_map(|subject| Op::DeleteLevel { subject }),
    ]
}

/// Schemas that are mostly compatible with each other under every level, and some that are not.
fn prop_schema(i: u8) -> String {
    match i {
        0..=3 => record(&format!(r#"{{"name":"f{i}","type":"int","default":0}}"#)),
        4 => record(r#"{"name":"f0","type":"string"}"#),
        _ => r#""string""#.to_string(),
    }
}

async fn run(reg: &Registry, op: &Op) {
    let subject = |s: u8| format!("s{s}");
    // Errors (incompatible, not found, not soft-deleted...) are part of the game: they must change nothing.
    let _ = match op {
        Op::Register { subject: s, schema } => {
            reg.register(&subject(*s), &prop_schema(*schema), None).await.map(|_| ())
        }
        Op::DeleteVersion { subject: s, version, permanent } => {
            let v = if *version == 0 { VersionRef::Latest } else { VersionRef::Number(*version as u32) };
            reg.delete_version(&subject(*s), v, *permanent).await.map(|_| ())
        }
        Op::DeleteSubject { subject: s, permanent } => reg.delete_subject(&subject(*s), *permanent).await.map(|_| ()),
        Op::SetLevel { subject: None, level } => reg.set_global_level(CompatibilityLevel::ALL[*level as usize]).await,
        Op::SetLevel { subject: Some(s), level } => {
            reg.set_subject_level(&subject(*s), CompatibilityLevel::ALL[*level as usize]).await
        }
        Op::DeleteLevel { subject: None } => reg.delete_global_level().await.map(|_| ()),
        Op::DeleteLevel { subject: Some(s) } => reg.delete_subject_level(&subject(*s)).await.map(|_| ()),
    };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever happened, a restart (or a crash: everything acknowledged is durable) rebuilds the same state.
    #[test]
    fn replay_rebuilds_exactly_the_acknowledged_state(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sim = SimStorage::new();
            let reg = open_registry(Path::new(ROOT), Arc::new(sim.clone())).await;
            for op in &ops {
                run(&reg, op).await;
            }
            let before = reg.dump();
            drop(reg);
            sim.crash();
            let reg = open_registry(Path::new(ROOT), Arc::new(sim.clone())).await;
            prop_assert_eq!(reg.dump(), before);
            Ok(())
        })?;
    }
}
