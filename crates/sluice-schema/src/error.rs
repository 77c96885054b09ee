//! Errors of the registry, each with the Confluent Schema Registry `error_code` and HTTP status it answers with.

use sluice_log::LogError;

use crate::compat::CompatibilityLevel;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("Subject '{subject}' not found.")]
    SubjectNotFound { subject: String },
    #[error("Version {version} of subject '{subject}' not found.")]
    VersionNotFound { subject: String, version: String },
    #[error("Schema {id} not found")]
    SchemaNotFound { id: u32 },
    #[error("Schema not found under subject '{subject}'")]
    SchemaNotInSubject { subject: String },
    #[error("Subject '{subject}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted { subject: String },
    #[error("Subject '{subject}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted { subject: String },
    #[error("Version {version} of subject '{subject}' was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted { subject: String, version: u32 },
    #[error("Version {version} of subject '{subject}' was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted { subject: String, version: u32 },
    #[error("Subject '{subject}' does not have subject-level compatibility configured")]
    SubjectLevelNotConfigured { subject: String },
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\" (compatibility {level}), details: [{}]",
        messages.join("; ")
    )]
    Incompatible { subject: String, level: CompatibilityLevel, messages: Vec<String> },
    #[error("Invalid schema: {reason}")]
    InvalidSchema { reason: String },
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level `{0}`. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
    )]
    InvalidCompatibilityLevel(String),
    #[error(
        "Error while writing to the schema store; the change was not applied, but may reappear after a restart if the write reached the disk: {0}"
    )]
    Store(#[from] LogError),
    #[error("Error while reading the schema store: {0}")]
    Replay(String),
    #[error("Internal error in the schema registry: {0}")]
    Internal(String),
}

impl SchemaError {
    /// The Confluent Schema Registry `error_code` of this error.
    pub fn error_code(&self) -> u32 {
        match self {
            SchemaError::SubjectNotFound { .. } => 40401,
            SchemaError::VersionNotFound { .. } => 40402,
            SchemaError::SchemaNotFound { .. } | SchemaError::SchemaNotInSubject { .. } => 40403,
            SchemaError::SubjectSoftDeleted { .. } => 40404,
            SchemaError::SubjectNotSoftDeleted { .. } => 40405,
            SchemaError::VersionSoftDeleted { .. } => 40406,
            SchemaError::VersionNotSoftDeleted { .. } => 40407,
            SchemaError::SubjectLevelNotConfigured { .. } => 40408,
            SchemaError::Incompatible { .. } => 409,
            SchemaError::InvalidSchema { .. } => 42201,
            SchemaError::InvalidVersion(_) => 42202,
            SchemaError::InvalidCompatibilityLevel(_) => 42203,
            SchemaError::Store(_) | SchemaError::Replay(_) | SchemaError::Internal(_) => 50001,
        }
    }

    /// The HTTP status to answer with: the first three digits of the error code.
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            c if c >= 10_000 => (c / 100) as u16,
            c => c as u16,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        SchemaError::InvalidSchema { reason: reason.into() }
    }
}
