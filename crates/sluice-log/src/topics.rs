//! Names of the topics Sluice itself creates, in one place, so every reader of the log (jobs, the store and
//! search sinks, the schema registry, a Kafka adapter mapping them onto a shared cluster) agrees on them.
//!
//! - `_schemas`: the schema registry's changes (one partition), as Confluent's registry names it.
//! - `{job}.results`: a windowed job's changelog (its records are described in `sluice_jobs::runner`); the store keeps it as table `{job}`.
//! - `{job}.out`: a stateless job's output, an ordinary topic.
//! - `{job}.late`: events a job received after their window closed.
//! - `{topic}.dlq`: records of `{topic}` that could not be decoded.
//!
//! Names starting with `_` are internal: no sink reads them.

/// The schema registry's topic.
pub const SCHEMAS: &str = "_schemas";

const RESULTS_SUFFIX: &str = ".results";
const OUTPUT_SUFFIX: &str = ".out";
const LATE_SUFFIX: &str = ".late";
const DLQ_SUFFIX: &str = ".dlq";

/// The changelog of windowed job `job`.
pub fn results(job: &str) -> String {
    format!("{job}{RESULTS_SUFFIX}")
}

/// The output topic of stateless job `job`.
pub fn output(job: &str) -> String {
    format!("{job}{OUTPUT_SUFFIX}")
}

/// The default side output of job `job` for too-late events.
pub fn late(job: &str) -> String {
    format!("{job}{LATE_SUFFIX}")
}

/// The dead-letter topic of `topic`.
pub fn dead_letters(topic: &str) -> String {
    format!("{topic}{DLQ_SUFFIX}")
}

/// What a topic is to the sinks, from its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole<'a> {
    /// Written by Sluice for itself (`_schemas` and any other `_` name).
    Internal,
    /// Undecodable records of another topic.
    DeadLetters { of: &'a str },
    /// The changelog of a windowed job (when that job exists: a user may name a topic `x.results` too).
    Results { job: &'a str },
    /// Events: produced by clients, a stateless job's output or a job's late events.
    Events,
}

/// The role of `topic`.
pub fn role(topic: &str) -> TopicRole<'_> {
    // Dead letters first: those of an internal topic are dead letters too, never sent on again.
    if let Some(of) = topic.strip_suffix(DLQ_SUFFIX) {
        TopicRole::DeadLetters { of }
    } else if topic.starts_with('_') {
        TopicRole::Internal
    } else if let Some(job) = topic.strip_suffix(RESULTS_SUFFIX) {
        TopicRole::Results { job }
    } else {
        TopicRole::Events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_maps_back_to_its_role() {
        assert_eq!(role(SCHEMAS), TopicRole::Internal);
        assert_eq!(role(&results("errors_per_minute")), TopicRole::Results { job: "errors_per_minute" });
        assert_eq!(role(&dead_letters("app.logs")), TopicRole::DeadLetters { of: "app.logs" });
        assert_eq!(role(&dead_letters(SCHEMAS)), TopicRole::DeadLetters { of: SCHEMAS });
        assert_eq!(role(&output("clean")), TopicRole::Events);
        assert_eq!(role(&late("clean")), TopicRole::Events);
        assert_eq!(role("app.logs"), TopicRole::Events);
        for name in [results("j"), output("j"), late("j"), dead_letters("t")] {
            crate::validate_topic_name(&name).unwrap();
        }
    }
}
