//! The compatibility matrix: schema changes that each of the 7 levels must accept or refuse, checked both with
//! `compat::check` and through a registry (register the old schema, then the new one), plus the case only the
//! transitive levels catch.

mod common;

use apache_avro::Schema;
use common::{record, sim_registry};
use sluice_schema::CompatibilityLevel;
use sluice_schema::compat::{self, Previous};
use sluice_schema::{Registry, VersionRef};

struct Case {
    name: &'static str,
    old: String,
    new: String,
    /// The new schema reads the old one's data.
    backward: bool,
    /// The old schema reads the new one's data.
    forward: bool,
    /// The field every refusal must name (alternatives separated by `|`).
    field: &'static str,
}

impl Case {
    fn names_field(&self, message: &str) -> bool {
        self.field.split('|').any(|f| message.contains(&format!("`{f}`")))
    }
}

fn case(name: &'static str, old: String, new: String, backward: bool, forward: bool, field: &'static str) -> Case {
    Case { name, old, new, backward, forward, field }
}

fn enum_field(symbols: &str, default: Option<&str>) -> String {
    let default = default.map_or(String::new(), |d| format!(r#","default":"{d}""#));
    record(&format!(r#"{{"name":"status","type":{{"type":"enum","name":"Status","symbols":[{symbols}]{default}}}}}"#))
}

fn cases() -> Vec<Case> {
    let a = r#"{"name":"a","type":"int"}"#;
    vec![
        case(
            "add field with default",
            record(a),
            record(&format!(r#"{a},{{"name":"b","type":"string","default":"x"}}"#)),
            true,
            true,
            "b",
        ),
        case(
            "add field without default",
            record(a),
            record(&format!(r#"{a},{{"name":"b","type":"string"}}"#)),
            false,
            true,
            "b",
        ),
        case(
            "remove field that had a default",
            record(&format!(r#"{a},{{"name":"b","type":"string","default":"x"}}"#)),
            record(a),
            true,
            true,
            "b",
        ),
        case(
            "remove field without default",
            record(&format!(r#"{a},{{"name":"b","type":"string"}}"#)),
            record(a),
            true,
            false,
            "b",
        ),
        case(
            "rename via alias",
            record(&format!(r#"{a},{{"name":"name","type":"string"}}"#)),
            record(&format!(r#"{a},{{"name":"full_name","type":"string","aliases":["name"]}}"#)),
            true,
            false,
            "name",
        ),
        case(
            "rename without alias",
            record(&format!(r#"{a},{{"name":"name","type":"string"}}"#)),
            record(&format!(r#"{a},{{"name":"full_name","type":"string"}}"#)),
            false,
            false,
            "full_name|name",
        ),
        case(
            "widen int to long",
            record(r#"{"name":"n","type":"int"}"#),
            record(r#"{"name":"n","type":"long"}"#),
            true,
            false,
            "n",
        ),
        case(
            "narrow long to int",
            record(r#"{"name":"n","type":"long"}"#),
            record(r#"{"name":"n","type":"int"}"#),
            false,
            true,
            "n",
        ),
        case(
            "widen float to double",
            record(r#"{"name":"n","type":"float"}"#),
            record(r#"{"name":"n","type":"double"}"#),
            true,
            false,
            "n",
        ),
        case(
            "string to bytes",
            record(r#"{"name":"n","type":"string"}"#),
            record(r#"{"name":"n","type":"bytes"}"#),
            true,
            true,
            "n",
        ),
        case(
            "string to int",
            record(r#"{"name":"n","type":"string"}"#),
            record(r#"{"name":"n","type":"int"}"#),
            false,
            false,
            "n",
        ),
        case(
            "add enum symbol, no enum default",
            enum_field(r#""A","B""#, None),
            enum_field(r#""A","B","C""#, None),
            true,
            false,
            "status",
        ),
        case(
            "add enum symbol, enum default",
            enum_field(r#""A","B""#, Some("A")),
            enum_field(r#""A","B","C""#, Some("A")),
            true,
            true,
            "status",
        ),
        case(
            "remove enum symbol, no enum default",
            enum_field(r#""A","B","C""#, None),
            enum_field(r#""A","B""#, None),
            false,
            true,
            "status",
        ),
        case(
            "remove enum symbol, enum default",
            enum_field(r#""A","B","C""#, Some("A")),
            enum_field(r#""A","B""#, Some("A")),
            true,
            true,
            "status",
        ),
        case(
            "union: add a branch",
            record(r#"{"name":"u","type":["null","string"]}"#),
            record(r#"{"name":"u","type":["null","string","int"]}"#),
            true,
            false,
            "u",
        ),
        case(
            "union: remove a branch",
            record(r#"{"name":"u","type":["null","string","int"]}"#),
            record(r#"{"name":"u","type":["null","string"]}"#),
            false,
            true,
            "u",
        ),
        case(
            "make a field nullable",
            record(r#"{"name":"email","type":"string"}"#),
            record(r#"{"name":"email","type":["null","string"],"default":null}"#),
            true,
            false,
            "email",
        ),
        case(
            "make a nullable field required",
            record(r#"{"name":"email","type":["null","string"],"default":null}"#),
            record(r#"{"name":"email","type":"string"}"#),
            false,
            true,
            "email",
        ),
        case(
            "widen array items",
            record(r#"{"name":"tags","type":{"type":"array","items":"int"}}"#),
            record(r#"{"name":"tags","type":{"type":"array","items":"long"}}"#),
            true,
            false,
            "tags[]",
        ),
        case(
            "nested record gains a required field",
            record(
                r#"{"name":"addr","type":{"type":"record","name":"Addr","fields":[{"name":"city","type":"string"}]}}"#,
            ),
            record(
                r#"{"name":"addr","type":{"type":"record","name":"Addr","fields":[{"name":"city","type":"string"},{"name":"zip","type":"string"}]}}"#,
            ),
            false,
            true,
            "addr.zip",
        ),
        case(
            "fixed size change",
            record(r#"{"name":"h","type":{"type":"fixed","name":"H","size":8}}"#),
            record(r#"{"name":"h","type":{"type":"fixed","name":"H","size":16}}"#),
            false,
            false,
            "h",
        ),
        case(
            "add a logical type",
            record(r#"{"name":"ts","type":"long"}"#),
            record(r#"{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}"#),
            true,
            true,
            "ts",
        ),
    ]
}

fn expected(level: CompatibilityLevel, c: &Case) -> bool {
    match level {
        CompatibilityLevel::None => true,
        CompatibilityLevel::Backward | CompatibilityLevel::BackwardTransitive => c.backward,
        CompatibilityLevel::Forward | CompatibilityLevel::ForwardTransitive => c.forward,
        CompatibilityLevel::Full | CompatibilityLevel::FullTransitive => c.backward && c.forward,
    }
}

fn parse(text: &str) -> Schema {
    Schema::parse_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn matrix_with_the_checker() {
    for c in cases() {
        let (old, new) = (parse(&c.old), parse(&c.new));
        for level in CompatibilityLevel::ALL {
            let messages = compat::check(level, &new, &[Previous { version: 1, schema: &old }]);
            let want = expected(level, &c);
            assert_eq!(messages.is_empty(), want, "{} under {level}: {messages:?}", c.name);
            for m in &messages {
                assert!(c.names_field(m), "{} under {level}: {m:?} should name `{}`", c.name, c.field);
                assert!(m.contains("version 1"), "{m}");
            }
        }
    }
}

#[tokio::test]
async fn matrix_through_the_registry() {
    let (reg, _sim) = sim_registry().await;
    for (i, c) in cases().iter().enumerate() {
        for level in CompatibilityLevel::ALL {
            let subject = format!("case{i}-{level}");
            reg.set_subject_level(&subject, level).await.unwrap();
            let first = reg.register(&subject, &c.old, None).await.unwrap();
            assert_eq!(first.version, 1);
            let result = reg.register(&subject, &c.new, None).await;
            match (expected(level, c), result) {
                (true, Ok(r)) => assert_eq!(r.version, 2, "{}", c.name),
                (false, Err(e)) => {
                    assert_eq!((e.error_code(), e.http_status()), (409, 409), "{} under {level}: {e}", c.name);
                    let msg = e.to_string();
                    assert!(c.names_field(&msg), "{} under {level}: {msg}", c.name);
                    assert!(msg.contains(level.as_str()), "{msg}");
                    assert_eq!(reg.versions(&subject, true).unwrap(), vec![1], "a refused schema creates no version");
                }
                (want, got) => panic!("{} under {level}: expected compatible={want}, got {got:?}", c.name),
            }
        }
    }
}

/// v1 -> v2 -> v3 where v3 is compatible with v2 but not with v1: only the transitive levels refuse v3.
fn transitive_versions() -> [String; 3] {
    let a = r#"{"name":"a","type":"int"}"#;
    [
        record(&format!(r#"{a},{{"name":"b","type":"string","default":"x"}}"#)),
        record(a),
        record(&format!(r#"{a},{{"name":"b","type":"int","default":0}}"#)),
    ]
}

async fn register_chain(reg: &Registry, subject: &str, level: CompatibilityLevel) -> Result<u32, String> {
    let [v1, v2, v3] = transitive_versions();
    reg.set_subject_level(subject, level).await.unwrap();
    assert_eq!(reg.register(subject, &v1, None).await.unwrap().version, 1);
    assert_eq!(reg.register(subject, &v2, None).await.unwrap().version, 2, "v2 passes {level}");
    reg.register(subject, &v3, None).await.map(|r| r.version).map_err(|e| e.to_string())
}

#[tokio::test]
async fn only_transitive_levels_catch_a_break_with_an_older_version() {
    let (reg, _sim) = sim_registry().await;
    for level in CompatibilityLevel::ALL {
        let subject = format!("chain-{level}");
        let result = register_chain(&reg, &subject, level).await;
        if level.is_transitive() {
            let msg = result.expect_err(&format!("{level} must refuse v3"));
            assert!(msg.contains("field `b`"), "{msg}");
            assert!(msg.contains("version 1"), "the message names the version it breaks: {msg}");
            assert!(!msg.contains("version 2"), "v3 is compatible with v2: {msg}");
        } else {
            assert_eq!(result, Ok(3), "{level} checks only against the latest version");
        }
    }
    // The compatibility test endpoint, as Confluent's: without a version (`/versions`) against what the level says,
    // as registration would; against a version (`latest` or a number) only that one.
    let [_, _, v3] = transitive_versions();
    let report = reg.test_compatibility("chain-BACKWARD_TRANSITIVE", None, &v3, None).unwrap();
    assert!(!report.is_compatible);
    assert_eq!(report.messages.len(), 1, "{:?}", report.messages);
    let report = reg.test_compatibility("chain-BACKWARD_TRANSITIVE", Some(VersionRef::Latest), &v3, None).unwrap();
    assert!(report.is_compatible, "v3 is compatible with the latest, v2: {:?}", report.messages);
    let report = reg.test_compatibility("chain-BACKWARD_TRANSITIVE", Some(VersionRef::Number(2)), &v3, None).unwrap();
    assert!(report.is_compatible, "{:?}", report.messages);
}

#[tokio::test]
async fn soft_deleted_versions_are_left_out_of_transitive_checks() {
    let (reg, _sim) = sim_registry().await;
    let subject = "chain";
    assert!(register_chain(&reg, subject, CompatibilityLevel::BackwardTransitive).await.is_err());
    reg.delete_version(subject, VersionRef::Number(1), false).await.unwrap();
    let [_, _, v3] = transitive_versions();
    let r = reg.register(subject, &v3, None).await.unwrap();
    assert_eq!(r.version, 3);
}

/// Types referenced many times are checked once per pair: a 4 KB schema with 36 types that each use the
/// previous one twice must not take 2^35 record checks.
#[test]
fn shared_types_are_checked_once() {
    let mut fields = vec![r#"{"name":"T0","type":"record","fields":[{"name":"x","type":"int"}]}"#.to_string()];
    for i in 1..36 {
        fields.push(format!(
            r#"{{"name":"T{i}","type":"record","fields":[{{"name":"a","type":{prev}}},{{"name":"b","type":"T{p}"}}]}}"#,
            prev = fields[i - 1],
            p = i - 1
        ));
    }
    let top = fields.last().unwrap();
    let v1 = format!(r#"{{"type":"record","name":"Top","fields":[{{"name":"t","type":{top}}}]}}"#);
    let v2 = format!(
        r#"{{"type":"record","name":"Top","fields":[{{"name":"t","type":{top}}},{{"name":"n","type":"int","default":0}}]}}"#
    );
    let w = apache_avro::Schema::parse_str(&v1).unwrap();
    let r = apache_avro::Schema::parse_str(&v2).unwrap();
    let started = std::time::Instant::now();
    assert!(sluice_schema::compat::can_read(&w, &r).is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
}
