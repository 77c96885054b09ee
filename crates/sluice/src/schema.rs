//! `sluice schema`: the schema registry over its Confluent-compatible HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{ServerArg, call, http, url};

#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Register an Avro schema under a subject (a topic's values use the subject `{topic}-value`).
    #[command(after_help = "Examples:\n  sluice schema register http_requests-value --file http_request.avsc\n  \
        sluice schema register t-value --schema '{\"type\":\"record\",\"name\":\"T\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}'")]
    Register {
        subject: String,
        #[command(flatten)]
        source: SchemaSource,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List subjects with their latest version and schema id.
    #[command(after_help = "Example:\n  sluice schema list")]
    List {
        /// Include soft-deleted subjects.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Print a schema: a subject's version (default latest), or a schema by global id.
    #[command(after_help = "Examples:\n  sluice schema get http_requests-value\n  \
        sluice schema get http_requests-value --version 2\n  sluice schema get --id 7")]
    Get {
        /// The subject (not needed with --id).
        #[arg(required_unless_present = "id")]
        subject: Option<String>,
        /// A version number or `latest`.
        #[arg(long, default_value = "latest", conflicts_with = "id")]
        version: String,
        /// A global schema id.
        #[arg(long)]
        id: Option<u32>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Check whether a schema is compatible with a subject under its compatibility level; exits 1 if not.
    #[command(after_help = "Example:\n  sluice schema check http_requests-value --file http_request_v2.avsc")]
    Check {
        subject: String,
        #[command(flatten)]
        source: SchemaSource,
        /// The version to check against (`latest`, or a number).
        #[arg(long, default_value = "latest")]
        version: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct SchemaSource {
    /// Read the schema from this file (.avsc).
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// The schema as a JSON string.
    #[arg(long)]
    schema: Option<String>,
}

impl SchemaSource {
    fn text(&self) -> Result<String> {
        let text = match (&self.file, &self.schema) {
            (Some(f), _) => std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
            (None, Some(s)) => s.clone(),
            (None, None) => bail!("give --file or --schema"),
        };
        // Compact it; the registry compares schemas in canonical form anyway.
        let v: Value = serde_json::from_str(&text).context("the schema is not valid JSON")?;
        Ok(v.to_string())
    }
}

fn enc(s: &str) -> String {
    crate::client::urlencode(s)
}

pub async fn run(cmd: SchemaCommand) -> Result<ExitCode> {
    let c = http();
    match cmd {
        SchemaCommand::Register { subject, source, server } => {
            let s = &server.server;
            let body = json!({"schema": source.text()?});
            let path = format!("/subjects/{}/versions", enc(&subject));
            let (_, r) = call(c.post(url(s, &path)).json(&body), s).await?;
            let (_, v) = call(c.post(url(s, &format!("/subjects/{}", enc(&subject)))).json(&body), s).await?;
            println!("registered {subject} version {} (schema id {})", v["version"], r["id"]);
        }
        SchemaCommand::List { deleted, server } => {
            let s = &server.server;
            let (_, subjects) = call(c.get(url(s, &format!("/subjects?deleted={deleted}"))), s).await?;
            println!("{:<50} {:>8} {:>10}", "SUBJECT", "VERSION", "SCHEMA ID");
            for subject in subjects.as_array().map(Vec::as_slice).unwrap_or_default() {
                let name = subject.as_str().unwrap_or_default();
                let path = format!("/subjects/{}/versions/latest", enc(name));
                let (version, id) = match call(c.get(url(s, &path)), s).await {
                    Ok((_, v)) => (v["version"].to_string(), v["id"].to_string()),
                    Err(_) => ("deleted".into(), "-".into()),
                };
                println!("{name:<50} {version:>8} {id:>10}");
            }
        }
        SchemaCommand::Get { subject, version, id, server } => {
            let s = &server.server;
            let (meta, schema) = match (id, subject) {
                (Some(id), _) => {
                    let (_, v) = call(c.get(url(s, &format!("/schemas/ids/{id}"))), s).await?;
                    (format!("schema id {id}"), v["schema"].clone())
                }
                (None, Some(subject)) => {
                    let path = format!("/subjects/{}/versions/{}", enc(&subject), enc(&version));
                    let (_, v) = call(c.get(url(s, &path)), s).await?;
                    (format!("{subject} version {} (schema id {})", v["version"], v["id"]), v["schema"].clone())
                }
                (None, None) => bail!("give a subject or --id"),
            };
            // As registered (field order matters to readers; pipe to `jq` to indent).
            println!("# {meta}\n{}", schema.as_str().map_or_else(|| schema.to_string(), str::to_string));
        }
        SchemaCommand::Check { subject, source, version, server } => {
            let s = &server.server;
            let path = format!("/compatibility/subjects/{}/versions/{}?verbose=true", enc(&subject), enc(&version));
            let (_, r) = call(c.post(url(s, &path)).json(&json!({"schema": source.text()?})), s).await?;
            if r["is_compatible"].as_bool() == Some(true) {
                println!("compatible with {subject} version {version}");
            } else {
                println!("NOT compatible with {subject} version {version}:");
                for m in r["messages"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    println!("  - {}", m.as_str().unwrap_or_default());
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
