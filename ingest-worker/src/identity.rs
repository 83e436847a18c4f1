//! The worker trusts the subject, not the box.
//!
//! A readings message names its sender twice: in its subject `edge.readings.<site>.<box>`, which
//! the NATS server accepted only because the box's own identity may publish there (one nkey per
//! box, nats/production/), and in the headers `Edge-Site`, `Edge-Box` and `Edge-Source`
//! (`<box>/<fingerprint>`), which the box writes itself. A message whose headers disagree with
//! its subject is refused and dead-lettered with the reason, rather than stored under either
//! name:
//!
//! - storing it under the headers' names would let a box write readings as another box or site;
//! - storing it under the subject's names but with the headers' source would put a range of
//!   *another box's* source into the ingest ledger, and that box's real lines in that range would
//!   then be skipped as already loaded;
//! - rewriting the headers silently would hide a misconfigured box, or an attack, that an operator
//!   should see (the dead letter is in `READINGS_DLQ` and `ingest_dead_letters`, reason
//!   `identity: ...`).
//!
//! An honest shipper always writes the same identity into both, so nothing it sends is refused.

use protocol::framing::{HDR_BOX, HDR_SITE, HDR_SOURCE};
use protocol::subject::parse_readings_subject;
use protocol::BatchMeta;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("subject {subject} is not <prefix>.<site>.<box> of this deployment ({prefix}.>)")]
    NotAReadingsSubject { subject: String, prefix: String },
    #[error(
        "header {header} {claimed:?} disagrees with the subject {subject}, whose {what} is \
         {actual:?}; the server accepted the message from that {what} only"
    )]
    Mismatch {
        header: &'static str,
        what: &'static str,
        claimed: String,
        actual: String,
        subject: String,
    },
}

/// `Ok` if the headers name the site and box of `subject` (a readings subject under `prefix`),
/// and the source is one of that box's.
pub fn check(meta: &BatchMeta, subject: &str, prefix: &str) -> Result<(), IdentityError> {
    let (site, box_id) = parse_readings_subject(prefix, subject).ok_or_else(|| {
        IdentityError::NotAReadingsSubject {
            subject: subject.to_owned(),
            prefix: prefix.to_owned(),
        }
    })?;
    let mismatch = |header, what, claimed: &str, actual: &str| IdentityError::Mismatch {
        header,
        what,
        claimed: claimed.to_owned(),
        actual: actual.to_owned(),
        subject: subject.to_owned(),
    };
    if meta.site != site {
        return Err(mismatch(HDR_SITE, "site", &meta.site, &site));
    }
    if meta.box_id != box_id {
        return Err(mismatch(HDR_BOX, "box", &meta.box_id, &box_id));
    }
    // `<box>/<crc>-<len>`: the fingerprint has no `/`, a box id may.
    let source = meta.source.as_str();
    if source.rsplit_once('/').map(|(b, _)| b) != Some(box_id.as_str()) {
        return Err(mismatch(HDR_SOURCE, "box", source, &box_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use protocol::{BatchKind, ByteRange, Fingerprint, Names, SourceKey};

    fn meta(site: &str, box_id: &str, source_box: &str) -> BatchMeta {
        BatchMeta {
            site: site.into(),
            box_id: box_id.into(),
            source: SourceKey::new(source_box, Fingerprint { crc: 7, len: 3 }),
            path: "/data/a.jsonl".into(),
            range: ByteRange::new(0, 10).unwrap(),
            lines: 1,
            kind: BatchKind::Lines,
        }
    }

    #[test]
    fn headers_that_match_the_subject_pass() {
        let names = Names::default();
        for (site, box_id) in [("BKK", "edge-01"), ("s.1 ü", "a/b_c")] {
            let subject = names.readings_subject(site, box_id);
            check(
                &meta(site, box_id, box_id),
                &subject,
                &names.readings_prefix,
            )
            .unwrap();
        }
        let isolated = Names::isolated("t1");
        check(
            &meta("BKK", "b", "b"),
            &isolated.readings_subject("BKK", "b"),
            &isolated.readings_prefix,
        )
        .unwrap();
    }

    #[test]
    fn another_box_site_or_source_in_the_headers_is_refused() {
        let prefix = protocol::subject::READINGS_PREFIX;
        let subject = "edge.readings.BKK.edge-01";
        let refused = |m: BatchMeta| check(&m, subject, prefix).unwrap_err().to_string();
        let e = refused(meta("BKK", "edge-02", "edge-02"));
        assert!(e.contains("Edge-Box \"edge-02\""), "{e}");
        assert!(e.contains("box is \"edge-01\""), "{e}");
        let e = refused(meta("HAM", "edge-01", "edge-01"));
        assert!(e.contains("Edge-Site \"HAM\""), "{e}");
        // The right box, but a range of another box's source: would poison that box's ledger.
        let e = refused(meta("BKK", "edge-01", "edge-02"));
        assert!(e.contains("Edge-Source \"edge-02/"), "{e}");
    }

    #[test]
    fn a_subject_outside_the_readings_prefix_is_refused() {
        let e = check(
            &meta("BKK", "b", "b"),
            "edge.readings.BKK.b.x",
            "edge.readings",
        );
        assert!(matches!(e, Err(IdentityError::NotAReadingsSubject { .. })));
    }
}
