//! Schema registry (work in progress).
