//! Registry semantics on an in-memory log: ids, versions, identity, lookups, deletes, levels, errors.

mod common;

use common::{record, sim_registry};
use sluice_schema::{CompatibilityLevel, VersionRef};

fn v1() -> String {
    record(r#"{"name":"id","type":"long"}"#)
}

fn v2() -> String {
    record(r#"{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}"#)
}

fn code<T: std::fmt::Debug>(r: Result<T, sluice_schema::SchemaError>) -> u32 {
    r.expect_err("should fail").error_code()
}

#[tokio::test]
async fn ids_are_global_and_identical_schemas_are_not_registered_twice() {
    let (reg, _sim) = sim_registry().await;
    let r = reg.register("orders", &v1(), None).await.unwrap();
    assert_eq!((r.id, r.version, r.created), (1, 1, true));
    let generation = reg.generation();
    // The same schema laid out differently, with a doc and a redundant namespace: the same schema.
    let same = r#"{ "fields": [ {"type": {"type":"long"}, "name": "id", "doc": "the id"} ],
                   "name": "n.R", "type": "record" }"#;
    let r = reg.register("orders", same, Some("AVRO")).await.unwrap();
    assert_eq!((r.id, r.version, r.created), (1, 1, false));
    assert_eq!(reg.generation(), generation, "nothing changed");
    assert_eq!(reg.versions("orders", false).unwrap(), vec![1]);
    // Under another subject: the same id, that subject's version 1.
    let r = reg.register("payments", same, None).await.unwrap();
    assert_eq!((r.id, r.version, r.created), (1, 1, true));
    let r = reg.register("orders", &v2(), None).await.unwrap();
    assert_eq!((r.id, r.version), (2, 2));
    assert_eq!(reg.subjects(false), vec!["orders", "payments"]);
    assert_eq!(reg.versions_of(1, false).unwrap(), vec![("orders".to_string(), 1), ("payments".to_string(), 1)]);
    assert_eq!(reg.subjects_of(2, false).unwrap(), vec!["orders"]);
    assert_eq!(code(reg.versions_of(99, false)), 40403);
    // The text is kept as first registered, compacted.
    assert_eq!(reg.schema(1).unwrap().schema_text, v1());
    assert_eq!(
        reg.schema(1).unwrap().canonical,
        r#"{"name":"n.R","type":"record","fields":[{"name":"id","type":"long"}]}"#
    );
}

#[tokio::test]
async fn hot_path_reads_and_change_notifications() {
    let (reg, _sim) = sim_registry().await;
    let mut changes = reg.subscribe();
    assert!(reg.latest("orders").is_none());
    reg.register("orders", &v1(), None).await.unwrap();
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    reg.register("orders", &v2(), None).await.unwrap();
    assert_eq!(reg.latest("orders").unwrap().id, 2);
    assert_eq!(reg.version("orders", 1).unwrap().id, 1);
    assert!(reg.version("orders", 3).is_none());
    let s = reg.schema_by_id(2).unwrap();
    assert!(matches!(s.schema, apache_avro::Schema::Record(_)));
    assert!(changes.has_changed().unwrap());
    // A soft-deleted latest version is no longer "latest", but its id still resolves (old data stays readable).
    reg.delete_version("orders", VersionRef::Latest, false).await.unwrap();
    assert_eq!(reg.latest("orders").unwrap().id, 1);
    assert!(reg.version("orders", 2).is_none());
    assert!(reg.schema_by_id(2).is_some());
    // Hard-deleted: the id is gone.
    reg.delete_version("orders", VersionRef::Number(2), true).await.unwrap();
    assert!(reg.schema_by_id(2).is_none());
    assert_eq!(code(reg.schema(2)), 40403);
}

#[tokio::test]
async fn lookups_under_a_subject() {
    let (reg, _sim) = sim_registry().await;
    reg.register("orders", &v1(), None).await.unwrap();
    let found = reg.lookup("orders", &v1(), None, false).unwrap();
    assert_eq!((found.subject.as_str(), found.version, found.id(), found.deleted), ("orders", 1, 1, false));
    assert_eq!(code(reg.lookup("orders", &v2(), None, false)), 40403);
    assert_eq!(code(reg.lookup("nope", &v1(), None, false)), 40401);
    assert_eq!(code(reg.lookup("orders", "{", None, false)), 42201);
    assert_eq!(code(reg.lookup("orders", &v1(), Some("JSON"), false)), 42201);
    reg.delete_subject("orders", false).await.unwrap();
    assert_eq!(code(reg.lookup("orders", &v1(), None, false)), 40401);
    let found = reg.lookup("orders", &v1(), None, true).unwrap();
    assert!(found.deleted);
}

#[tokio::test]
async fn soft_and_hard_deletes_follow_confluent_rules() {
    let (reg, _sim) = sim_registry().await;
    reg.register("s", &v1(), None).await.unwrap();
    reg.register("s", &v2(), None).await.unwrap();
    assert_eq!(code(reg.delete_subject("nope", false).await), 40401);
    assert_eq!(code(reg.delete_version("s", VersionRef::Number(9), false).await), 40402);
    assert_eq!(code(reg.delete_version("s", VersionRef::Number(1), true).await), 40407);
    assert_eq!(reg.delete_version("s", VersionRef::Number(1), false).await.unwrap(), 1);
    assert_eq!(code(reg.delete_version("s", VersionRef::Number(1), false).await), 40406);
    assert_eq!(code(reg.get_version("s", VersionRef::Number(1), false)), 40402);
    assert!(reg.get_version("s", VersionRef::Number(1), true).unwrap().deleted);
    assert_eq!(reg.versions("s", false).unwrap(), vec![2]);
    assert_eq!(reg.versions("s", true).unwrap(), vec![1, 2]);
    assert_eq!(code(reg.delete_subject("s", true).await), 40405);
    assert_eq!(reg.delete_subject("s", false).await.unwrap(), vec![2]);
    assert_eq!(code(reg.delete_subject("s", false).await), 40404);
    assert_eq!(reg.subjects(false), Vec::<String>::new());
    assert_eq!(reg.subjects(true), vec!["s"]);
    assert_eq!(code(reg.versions("s", false)), 40401);
    assert_eq!(code(reg.get_version("s", VersionRef::Latest, false)), 40401);
    assert_eq!(reg.get_version("s", VersionRef::Latest, true).unwrap().version, 2);
    assert_eq!(reg.delete_subject("s", true).await.unwrap(), vec![1, 2]);
    assert_eq!(code(reg.versions("s", true)), 40401);
    assert_eq!(reg.subjects(true), Vec::<String>::new());
    assert!(reg.schema_by_id(1).is_none());

    // Version numbers and ids are never reused; the same schema gets its id back.
    let r = reg.register("s", &v2(), None).await.unwrap();
    assert_eq!((r.id, r.version), (2, 3));
    let r = reg.register("s", &record(r#"{"name":"other","type":"string","default":""}"#), None).await.unwrap();
    assert_eq!((r.id, r.version), (3, 4));
}

#[tokio::test]
async fn a_soft_deleted_schema_registered_again_is_a_new_version_with_the_same_id() {
    let (reg, _sim) = sim_registry().await;
    reg.register("s", &v1(), None).await.unwrap();
    reg.delete_version("s", VersionRef::Latest, false).await.unwrap();
    let r = reg.register("s", &v1(), None).await.unwrap();
    assert_eq!((r.id, r.version, r.created), (1, 2, true));
}

#[tokio::test]
async fn compatibility_levels() {
    let (reg, _sim) = sim_registry().await;
    assert_eq!(reg.global_level(), CompatibilityLevel::Backward);
    assert_eq!(reg.delete_global_level().await.unwrap(), CompatibilityLevel::Backward);
    reg.set_global_level(CompatibilityLevel::Full).await.unwrap();
    assert_eq!(reg.effective_level("s"), CompatibilityLevel::Full);
    assert_eq!(reg.subject_level("s"), None);
    assert_eq!(code(reg.delete_subject_level("s").await), 40408);
    reg.set_subject_level("s", CompatibilityLevel::None).await.unwrap();
    assert_eq!(reg.effective_level("s"), CompatibilityLevel::None);
    reg.register("s", &record(r#"{"name":"a","type":"int"}"#), None).await.unwrap();
    // NONE on the subject: anything goes there.
    reg.register("s", &record(r#"{"name":"b","type":"string"}"#), None).await.unwrap();
    assert_eq!(reg.delete_subject_level("s").await.unwrap(), CompatibilityLevel::None);
    assert_eq!(reg.effective_level("s"), CompatibilityLevel::Full);
    let e = reg.register("s", &record(r#"{"name":"c","type":"string"}"#), None).await.unwrap_err();
    assert_eq!(e.error_code(), 409);
    assert!(e.to_string().contains("FULL"), "{e}");
    assert_eq!(reg.delete_global_level().await.unwrap(), CompatibilityLevel::Full);
    assert_eq!(reg.global_level(), CompatibilityLevel::Backward);
}

#[tokio::test]
async fn invalid_schemas_are_refused_with_the_reason() {
    let (reg, _sim) = sim_registry().await;
    let e = reg.register("s", r#"{"type":"record","name":"R","fields":[{"name":"a","type":"Nope"}]}"#, None).await;
    let e = e.unwrap_err();
    assert_eq!((e.error_code(), e.http_status()), (42201, 422));
    assert!(e.to_string().contains("Nope"), "{e}");
    let e = reg.register("s", r#""string""#, Some("PROTOBUF")).await.unwrap_err();
    assert!(e.to_string().contains("only AVRO is supported"), "{e}");
    assert_eq!(reg.subjects(true), Vec::<String>::new());
}

#[tokio::test]
async fn every_avro_kind_registers() {
    let (reg, _sim) = sim_registry().await;
    let schema = r#"{"type":"record","name":"Everything","namespace":"t","fields":[
        {"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},{"name":"f","type":"float"},
        {"name":"d","type":"double"},{"name":"s","type":"string"},{"name":"by","type":"bytes"},
        {"name":"e","type":{"type":"enum","name":"Color","symbols":["RED","GREEN"],"default":"RED"}},
        {"name":"a","type":{"type":"array","items":"Color"}},
        {"name":"m","type":{"type":"map","values":["null","long"]}},
        {"name":"u","type":["null","string","t.Color"],"default":null},
        {"name":"fx","type":{"type":"fixed","name":"Md5","size":16}},
        {"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"}},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"id","type":{"type":"string","logicalType":"uuid"}},
        {"name":"next","type":["null","Everything"],"default":null}]}"#;
    let r = reg.register("all", schema, None).await.unwrap();
    assert_eq!(r.id, 1);
    for primitive in [r#""string""#, r#"{"type":"int"}"#, r#"["null","long"]"#] {
        reg.register(&format!("p-{primitive}"), primitive, None).await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_registrations_get_distinct_versions_and_ids() {
    let (reg, _sim) = sim_registry().await;
    reg.set_subject_level("s", CompatibilityLevel::None).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let reg = reg.clone();
            tokio::spawn(async move {
                let schema = record(&format!(r#"{{"name":"f{i}","type":"int"}}"#));
                reg.register("s", &schema, None).await.unwrap()
            })
        })
        .collect();
    let mut got: Vec<(u32, u32)> = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        got.push((r.version, r.id));
    }
    got.sort();
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    let mut ids: Vec<u32> = got.iter().map(|g| g.1).collect();
    ids.sort();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
}
