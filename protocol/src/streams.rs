//! JetStream streams and the shared consumer, as plain data.
//!
//! The binaries turn these into `async-nats` configurations; keeping them here means the shipper,
//! the worker, the API and the `nats/` configuration agree on names and subjects.

use std::time::Duration;

/// Stream of readings messages, `edge.readings.>`.
pub const READINGS_STREAM: &str = "READINGS";
pub const READINGS_SUBJECTS: &str = "edge.readings.>";
/// Messages the worker could never process, with the reason in a header.
pub const DLQ_STREAM: &str = "READINGS_DLQ";
pub const DLQ_SUBJECTS: &str = "edge.dlq.>";
/// Run events for the MES, `mes.op_run.>`.
pub const OP_RUN_STREAM: &str = "OP_RUN";
pub const OP_RUN_SUBJECTS: &str = "mes.op_run.>";

/// The one durable pull consumer all ingest workers share.
pub const INGEST_CONSUMER: &str = "ingest";

/// Deduplication window of the readings stream: a shipper that republishes after a lost PubAck
/// within this window is deduplicated by JetStream itself; later re-ships by the ingest ledger.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Default limits of the readings stream. It has work-queue retention (a message is removed once
/// the shared consumer acknowledged it), so these bound the backlog not yet loaded, not the traffic.
/// `discard new` makes a full stream refuse publishes, so shippers wait and retry instead of the
/// stream deleting unconsumed data. `max_age` deletes a message unloaded: the longest worker or
/// database outage that loses nothing.
pub const READINGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const READINGS_MAX_BYTES: i64 = 10 * 1024 * 1024 * 1024;
pub const DLQ_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The dead-letter stream drops its oldest messages beyond this (they are also database rows).
pub const DLQ_MAX_BYTES: i64 = 1024 * 1024 * 1024;
pub const OP_RUN_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Largest readings message payload a shipper builds by default (complete lines only).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Stream, subject and consumer names one deployment uses. [`Names::default`] is production;
/// [`Names::isolated`] gives a test or a benchmark its own set on a shared server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub readings_stream: String,
    pub dlq_stream: String,
    /// Readings subjects are `<readings_prefix>.<site>.<box>`.
    pub readings_prefix: String,
    /// Dead letters go to `<dlq_prefix>.<site>.<box>`.
    pub dlq_prefix: String,
    pub consumer: String,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            readings_stream: READINGS_STREAM.to_owned(),
            dlq_stream: DLQ_STREAM.to_owned(),
            readings_prefix: crate::subject::READINGS_PREFIX.to_owned(),
            dlq_prefix: crate::subject::DLQ_PREFIX.to_owned(),
            consumer: INGEST_CONSUMER.to_owned(),
        }
    }
}

impl Names {
    /// Names suffixed with `tag` (escaped), e.g. `READINGS_t42` on `edge.readings_t42.>`.
    pub fn isolated(tag: &str) -> Self {
        let t = crate::subject::escape_token(tag);
        Self {
            readings_stream: format!("{READINGS_STREAM}_{t}"),
            dlq_stream: format!("{DLQ_STREAM}_{t}"),
            readings_prefix: format!("{}_{t}", crate::subject::READINGS_PREFIX),
            dlq_prefix: format!("{}_{t}", crate::subject::DLQ_PREFIX),
            consumer: format!("{INGEST_CONSUMER}_{t}"),
        }
    }

    pub fn readings_filter(&self) -> String {
        format!("{}.>", self.readings_prefix)
    }

    pub fn dlq_filter(&self) -> String {
        format!("{}.>", self.dlq_prefix)
    }

    pub fn readings_subject(&self, site: &str, box_id: &str) -> String {
        format!(
            "{}.{}.{}",
            self.readings_prefix,
            crate::subject::escape_token(site),
            crate::subject::escape_token(box_id)
        )
    }

    pub fn dlq_subject(&self, site: &str, box_id: &str) -> String {
        format!(
            "{}.{}.{}",
            self.dlq_prefix,
            crate::subject::escape_token(site),
            crate::subject::escape_token(box_id)
        )
    }
}

/// Deduplication window of the `OP_RUN` stream. mes-api's outbox relay republishes an event whose
/// PubAck it got but could not record (crash, database outage); JetStream drops the copy when it
/// arrives within this window (the message id is the outbox id).
pub const OP_RUN_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// Stream name and subject prefix of run events. [`OpRunNames::default`] is production
/// (`OP_RUN` on `mes.op_run.>`); [`OpRunNames::isolated`] gives a test its own pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRunNames {
    pub stream: String,
    /// Run event subjects are `<prefix>.<site>.<resource>.<event>`.
    pub prefix: String,
}

impl Default for OpRunNames {
    fn default() -> Self {
        Self {
            stream: OP_RUN_STREAM.to_owned(),
            prefix: crate::subject::OP_RUN_PREFIX.to_owned(),
        }
    }
}

impl OpRunNames {
    /// Names suffixed with `tag` (escaped), e.g. `OP_RUN_t42` on `mes.op_run_t42.>`; an empty tag
    /// gives the standard names.
    pub fn isolated(tag: &str) -> Self {
        if tag.is_empty() {
            return Self::default();
        }
        let t = crate::subject::escape_token(tag);
        Self {
            stream: format!("{OP_RUN_STREAM}_{t}"),
            prefix: format!("{}_{t}", crate::subject::OP_RUN_PREFIX),
        }
    }

    pub fn filter(&self) -> String {
        format!("{}.>", self.prefix)
    }

    pub fn subject(&self, site: &str, resource_id: &str, event: &str) -> String {
        format!(
            "{}.{}.{}.{}",
            self.prefix,
            crate::subject::escape_token(site),
            crate::subject::escape_token(resource_id),
            crate::subject::escape_token(event)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_match_the_documented_subjects() {
        let n = Names::default();
        assert_eq!(n.readings_filter(), READINGS_SUBJECTS);
        assert_eq!(n.dlq_filter(), DLQ_SUBJECTS);
        assert_eq!(
            n.readings_subject("BKK", "b1"),
            crate::subject::readings_subject("BKK", "b1")
        );
        assert_eq!(
            n.dlq_subject("BKK", "b1"),
            crate::subject::dlq_subject("BKK", "b1")
        );
    }

    #[test]
    fn isolated_names_do_not_overlap_the_defaults() {
        let n = Names::isolated("t.1");
        assert_eq!(n.readings_stream, "READINGS_t_2E1");
        assert_eq!(n.readings_filter(), "edge.readings_t_2E1.>");
        assert!(!n.readings_subject("s", "b").starts_with("edge.readings."));
        assert_ne!(n.consumer, INGEST_CONSUMER);
    }

    #[test]
    fn op_run_names_match_the_documented_subjects() {
        let n = OpRunNames::default();
        assert_eq!(n.filter(), OP_RUN_SUBJECTS);
        assert_eq!(
            n.subject("BKK", "SMT 01", "started"),
            crate::subject::op_run_subject("BKK", "SMT 01", "started")
        );
        assert_eq!(OpRunNames::isolated(""), n);
        let t = OpRunNames::isolated("t.1");
        assert_eq!(t.stream, "OP_RUN_t_2E1");
        assert_eq!(
            t.subject("BKK", "R1", "reported"),
            "mes.op_run_t_2E1.BKK.R1.reported"
        );
    }
}
