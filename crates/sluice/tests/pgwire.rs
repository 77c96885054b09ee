//! The PostgreSQL wire protocol on the embedded store: `psql` (Debian's postgresql-client; these tests skip
//! without it unless `SLUICE_TEST_PSQL` is set, as `.ci/run` does) and a real driver through the extended query
//! protocol answer the same rows as `POST /v1/query`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

async fn start() -> (TestServer, u16) {
    start_with(&[]).await
}

async fn start_with(env: &[(&str, &str)]) -> (TestServer, u16) {
    let pg = common::free_port();
    let listen = format!("127.0.0.1:{pg}");
    let mut all = vec![("SLUICE__POSTGRES__LISTEN", listen.as_str()), ("SLUICE__STORE__FLUSH_INTERVAL", "200ms")];
    all.extend_from_slice(env);
    let s = TestServer::start(&all).await;
    let (st, _) = s.post("/v1/topics", json!({"name": "http_requests", "partitions": 2})).await;
    assert_eq!(st, 201);
    let events: Vec<Value> = [("api", 500, 12.0), ("api", 200, 3.0), ("web", 503, 40.5)]
        .iter()
        .map(|(service, status, ms)| json!({"value": {"service": service, "status": status, "latency_ms": ms}}))
        .collect();
    s.produce("http_requests", events).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, v) = s.query("SELECT count(*) AS n FROM http_requests").await;
        if st == 200 && v["rows"][0]["n"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the store never had the events: {st} {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (s, pg)
}

fn psql_available() -> bool {
    let found = Command::new("psql").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("SLUICE_TEST_PSQL").is_none(), "SLUICE_TEST_PSQL is set but psql is not installed");
        eprintln!("psql is not installed: skipping");
    }
    found
}

/// `psql -c` with unaligned output; stdout, or the failure with stderr.
fn psql(port: u16, command: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "grafana", "-d", "sluice", "-X", "-A", "-c", command])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() { Ok(stdout) } else { Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))) }
}

const BY_SERVICE: &str =
    "SELECT service, count(*) AS n, max(latency_ms) AS worst FROM http_requests GROUP BY service ORDER BY service";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_queries_and_describes_the_store() {
    if !psql_available() {
        return;
    }
    let (s, pg) = start().await;
    let out = psql(pg, BY_SERVICE).unwrap();
    // (PostgreSQL itself prints a whole double as `12`; the encoder keeps the `.0`.)
    assert_eq!(out, "service|n|worst\napi|2|12.0\nweb|1|40.5\n(2 rows)\n", "{out}");
    // The same answer as the HTTP API.
    let (_, v) = s.query(BY_SERVICE).await;
    assert_eq!(
        v["rows"],
        json!([{"service": "api", "n": 2, "worst": 12.0}, {"service": "web", "n": 1, "worst": 40.5}])
    );

    let tables = psql(pg, "\\dt").unwrap();
    assert!(tables.contains("public|http_requests|table|"), "{tables}");
    let columns = psql(pg, "\\d http_requests").unwrap();
    for line in ["event_time|timestamp with time zone", "service|text", "latency_ms|double precision", "status|bigint"]
    {
        assert!(columns.contains(line), "{line} missing in {columns}");
    }
    // What drivers and Grafana send around queries is answered; several statements run in order.
    let out = psql(pg, "SET application_name = 'x'; SHOW server_version; BEGIN; SELECT 1 AS one; COMMIT").unwrap();
    assert!(out.contains("16.6") && out.contains("one\n1\n"), "{out}");
    // Errors are PostgreSQL errors with the store's message; the store stays read-only.
    let err = psql(pg, "SELECT nope FROM http_requests").unwrap_err();
    assert!(err.contains("ERROR") && err.contains("nope"), "{err}");
    let err = psql(pg, "DROP TABLE http_requests").unwrap_err();
    assert!(err.contains("ERROR"), "{err}");
    assert_eq!(psql(pg, "SELECT count(*) FROM http_requests").unwrap(), "count(*)\n3\n(1 row)\n");
}

/// PostgreSQL has no row limit, so an answer the store cut at its own says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_at_the_row_limit_says_so() {
    if !psql_available() {
        return;
    }
    let (_s, pg) = start_with(&[("SLUICE__STORE__QUERY_MAX_ROWS", "2")]).await;
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pg.to_string(), "-X", "-A", "-c", "SELECT service FROM http_requests"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("(2 rows)\n") && stderr.contains("NOTICE:  result cut at 2 rows"), "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_queries_through_the_extended_protocol() {
    let (_s, pg) = start().await;
    let conn = format!("host=127.0.0.1 port={pg} user=app dbname=sluice connect_timeout=10");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    // Prepared (Parse/Describe/Bind/Execute), with binary results as the driver asks.
    let statement = client.prepare(BY_SERVICE).await.unwrap();
    let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["service", "n", "worst"]);
    let rows = client.query(&statement, &[]).await.unwrap();
    let got: Vec<(String, i64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(got, [("api".to_string(), 2, 12.0), ("web".to_string(), 1, 40.5)]);
    // Executed again, it reads the store again.
    assert_eq!(client.query(&statement, &[]).await.unwrap().len(), 2);
    let err = client.query("SELECT nope FROM http_requests", &[]).await.unwrap_err();
    assert!(err.as_db_error().is_some_and(|e| e.message().contains("nope")), "{err}");
    // Parameters are refused with a clear message until they are supported.
    let err = client.query("SELECT service FROM http_requests WHERE status = $1", &[&500i64]).await.unwrap_err();
    assert!(err.to_string().contains("parameter") || err.as_db_error().is_some(), "{err}");
    let simple = client.simple_query("SELECT count(*) AS n FROM http_requests").await.unwrap();
    let n = simple.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(n.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_can_be_switched_off() {
    let pg = common::free_port();
    let listen = format!("127.0.0.1:{pg}");
    let _s =
        TestServer::start(&[("SLUICE__POSTGRES__LISTEN", listen.as_str()), ("SLUICE__POSTGRES__ENABLED", "false")])
            .await;
    assert!(std::net::TcpStream::connect(&listen).is_err(), "nothing listens on {listen}");
}
