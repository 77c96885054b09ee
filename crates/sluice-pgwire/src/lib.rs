//! The PostgreSQL wire protocol listener: `psql`, Grafana's PostgreSQL data source, BI tools and any PostgreSQL
//! driver query the store with the same SQL as `POST /v1/query`.
//!
//! It speaks the protocol with `pgwire` (simple and extended query; no TLS and no authentication yet: it listens
//! on loopback by default) and asks the store port ([`TimeSeriesStore::query_postgres`]) for every statement, so
//! it knows nothing of the engine; Arrow answers are encoded with `arrow-pg`. What drivers send around their
//! queries (`SET`, `SHOW`, `BEGIN`/`COMMIT`/`ROLLBACK`, `DISCARD`) is answered here: the store is read-only.
//!
//! Main types: [`serve`] (the accept loop) and [`Session`] (the handlers of one connection).

use std::fmt::Debug;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use sluice_sink::output::QueryOutput;
use sluice_sink::store::TimeSeriesStore;
use sluice_sink::{PortError, PortErrorKind};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use tokio::net::TcpListener;

/// Accepts connections until the task is dropped; each runs on its own task.
pub async fn serve(listener: TcpListener, store: Arc<dyn TimeSeriesStore>) {
    // No state per connection: one set of handlers serves them all.
    let session = Arc::new(Session { parser: Arc::new(Parser { store: store.clone() }), store });
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "postgres listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handlers = Handlers(session.clone());
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
            }
        });
    }
}

/// The handlers of every connection.
pub struct Session {
    store: Arc<dyn TimeSeriesStore>,
    parser: Arc<Parser>,
}

struct Handlers(Arc<Session>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.0.clone()
    }
}

impl NoopStartupHandler for Session {}

/// What one statement is: answered here, or a query for the store.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// `SET x = y`: accepted and ignored (the store has no session settings).
    Set,
    /// `SHOW x`.
    Show(String),
    Begin,
    Commit,
    Rollback,
    Discard,
    /// Anything else, as the text to hand to the store.
    Query(String),
}

/// Splits `sql` into statements. A single statement keeps its original text (the store's rewrites of known client
/// catalog queries match on it); text that does not parse goes to the store whole, which reports the error.
fn pieces(sql: &str) -> Vec<Piece> {
    let Ok(statements) = sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return vec![Piece::Query(sql.to_string())];
    };
    let single = statements.len() == 1;
    statements
        .into_iter()
        .map(|s| match s {
            Statement::Set(_) => Piece::Set,
            Statement::ShowVariable { variable } => {
                Piece::Show(variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(" "))
            }
            Statement::StartTransaction { .. } => Piece::Begin,
            Statement::Commit { .. } => Piece::Commit,
            Statement::Rollback { .. } => Piece::Rollback,
            Statement::Discard { .. } => Piece::Discard,
            _ if single => Piece::Query(sql.to_string()),
            other => Piece::Query(other.to_string()),
        })
        .collect()
}

/// The value of a `SHOW` variable drivers ask for.
fn show_value(name: &str) -> Option<&'static str> {
    Some(match name {
        "server_version" => "16.6",
        "server_encoding" | "client_encoding" => "UTF8",
        "transaction isolation level" | "transaction_isolation" => "read committed",
        "timezone" | "time zone" => "UTC",
        "datestyle" => "ISO, YMD",
        "search_path" => "public",
        "standard_conforming_strings" => "on",
        "statement_timeout" | "lock_timeout" => "0",
        "max_identifier_length" => "63",
        "integer_datetimes" => "on",
        _ => return None,
    })
}

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

/// The SQLSTATE of a store error.
fn port_error(e: PortError) -> PgWireError {
    let code = match e.kind {
        PortErrorKind::InvalidArgument => "42601",
        PortErrorKind::NotFound => "42P01",
        PortErrorKind::Conflict => "40001",
        PortErrorKind::Timeout => "57014",
        PortErrorKind::ResourceExhausted => "53200",
        PortErrorKind::Unavailable => "57P03",
        PortErrorKind::Internal => "XX000",
    };
    user_error(code, e.message)
}

fn show(name: &str) -> PgWireResult<Response> {
    let value = show_value(name)
        .ok_or_else(|| user_error("42704", format!("unrecognized configuration parameter \"{name}\"")))?;
    let fields = Arc::new(vec![FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&value)?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter(vec![Ok(row)]))))
}

/// A notice for an answer the store cut at its row limit (PostgreSQL has no such limit, so say it).
fn truncation_notice(output: &QueryOutput) -> Option<PgWireBackendMessage> {
    output.truncated.then(|| {
        let message = format!(
            "result cut at {} rows: the store answers at most [store] query_max_rows rows; add a LIMIT or aggregate",
            output.stats.rows
        );
        PgWireBackendMessage::NoticeResponse(ErrorInfo::new("NOTICE".into(), "01000".into(), message).into())
    })
}

/// Rows of a store answer in the wire format the client asked for.
fn rows(output: QueryOutput, format: &Format) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(&output.schema, format, None)?);
    let mut rows = Vec::new();
    for batch in output.batches {
        rows.extend(encode_recordbatch(fields.clone(), batch));
    }
    Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter(rows))))
}

impl Session {
    /// The answer to one statement, after telling the client if the store cut it.
    async fn answer<C>(&self, client: &mut C, piece: Piece, format: &Format) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(match piece {
            Piece::Set => Response::Execution(Tag::new("SET")),
            Piece::Show(name) => show(&name)?,
            Piece::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Piece::Commit => Response::TransactionEnd(Tag::new("COMMIT")),
            Piece::Rollback => Response::TransactionEnd(Tag::new("ROLLBACK")),
            Piece::Discard => Response::Execution(Tag::new("DISCARD ALL")),
            Piece::Query(sql) => {
                let output = self.store.query_postgres(&sql, false).await.map_err(port_error)?;
                if let Some(notice) = truncation_notice(&output) {
                    client.feed(notice).await?;
                }
                rows(output, format)?
            }
        })
    }
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut out = Vec::new();
        for piece in pieces(query) {
            // Like PostgreSQL, the first failing statement ends the batch.
            match self.answer(client, piece, &Format::UnifiedText).await {
                Ok(r) => out.push(r),
                Err(PgWireError::UserError(info)) => {
                    out.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// A prepared statement: what it is and the schema of its answer (planned when the client parsed it).
#[derive(Debug, Clone)]
pub struct Prepared {
    piece: Piece,
    schema: Option<SchemaRef>,
}

/// Plans prepared statements through the store, so a client can describe them before executing.
pub struct Parser {
    store: Arc<dyn TimeSeriesStore>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut pieces = pieces(sql);
        if pieces.len() > 1 {
            return Err(user_error("42601", "a prepared statement holds one statement"));
        }
        let Some(piece) = pieces.pop() else { return Ok(None) };
        let schema = match &piece {
            Piece::Query(sql) => Some(self.store.query_postgres(sql, true).await.map_err(port_error)?.schema),
            _ => None,
        };
        Ok(Some(Prepared { piece, schema }))
    }

    fn get_parameter_types(&self, _stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(&self, stmt: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match &stmt.schema {
            Some(schema) => arrow_schema_to_pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if portal.parameter_len() > 0 {
            return Err(user_error(
                "0A000",
                "query parameters ($1, ...) are not supported yet: put the values in the SQL",
            ));
        }
        self.answer(client, portal.statement.statement.piece.clone(), &portal.result_column_format).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_driver_chatter_is_answered_here() {
        assert_eq!(pieces("SELECT 1"), vec![Piece::Query("SELECT 1".into())]);
        // A single statement keeps its text byte for byte.
        let psql = "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default";
        assert_eq!(pieces(psql), vec![Piece::Query(psql.into())]);
        assert_eq!(
            pieces("SET extra_float_digits = 3; SHOW TRANSACTION ISOLATION LEVEL; BEGIN; SELECT 2; COMMIT"),
            vec![
                Piece::Set,
                Piece::Show("transaction isolation level".into()),
                Piece::Begin,
                Piece::Query("SELECT 2".into()),
                Piece::Commit
            ]
        );
        assert_eq!(pieces("SELEC oops"), vec![Piece::Query("SELEC oops".into())]);
        assert!(pieces("").is_empty());
        assert!(show_value("server_version").is_some() && show_value("nope").is_none());
    }
}
