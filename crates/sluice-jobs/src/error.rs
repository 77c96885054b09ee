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
    #[error(
        "job {job}: window state of ~{used_mib} MiB ({entries} entries) puts all jobs over stream.state_memory \
         ({limit_mib} MiB); group by fewer keys, use shorter windows or less allowed_lateness, or raise the budget"
    )]
    StateMemory { job: String, used_mib: u64, entries: u64, limit_mib: u64 },
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
            JobError::StateMemory { .. } => "job_state_memory",
            JobError::Stopped => "job_stopped",
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        JobError::Io { path: path.display().to_string(), source }
    }
}
