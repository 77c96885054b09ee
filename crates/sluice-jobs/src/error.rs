//! Errors of the job runner and manager.

use sluice_log::LogError;
use sluice_stream::sql::SqlError;

use crate::checkpoint::CheckpointError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {name} not found")]
    NotFound { name: String },
    #[error("job {name} already exists")]
    AlreadyExists { name: String },
    #[error("invalid job definition: {0}")]
    Sql(#[from] SqlError),
    #[error("invalid job: {0}")]
    Invalid(String),
    #[error("job {name} is {state}: {action} is not possible")]
    WrongState { name: String, state: &'static str, action: &'static str },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("job state at {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("corrupt job state: {0}")]
    Corrupt(String),
    #[error("job runner stopped")]
    Stopped,
}

impl JobError {
    /// A stable machine-readable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::NotFound { .. } => "job_not_found",
            JobError::AlreadyExists { .. } => "job_exists",
            JobError::Sql(_) => "invalid_sql",
            JobError::Invalid(_) => "invalid_job",
            JobError::WrongState { .. } => "job_state",
            JobError::Log(_) => "log_error",
            JobError::Checkpoint(_) | JobError::Io { .. } | JobError::Corrupt(_) => "job_storage",
            JobError::Stopped => "job_stopped",
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        JobError::Io { path: path.display().to_string(), source }
    }
}
