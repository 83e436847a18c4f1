//! A worker deployment limited to some sites (`--sites BKK,BER`): one database per plant from one
//! central stream.
//!
//! The worker's consumer then takes only `edge.readings.<site>.>` of its sites and has a durable
//! name of its own (`ingest_BKK_BER`), so each plant's workers share their consumer and load into
//! their plant's database. `READINGS` is a work queue: the filters of its consumers must not
//! overlap, so either every deployment names its sites, or one unfiltered deployment (no
//! `--sites`, durable `ingest`) loads all of them (docs/scaling.md).

use async_nats::jetstream::consumer::pull;
use protocol::Names;
use thiserror::Error;

/// 1 to 64 bytes of letters, digits, `-` and `_`: safe as a subject token, a durable name's part
/// and a JetStream domain.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The sites of `--sites`, as their shippers send them (`--site`); each a subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("site {0:?}: a site may hold only letters, digits, '-' and '_' (1 to 64 bytes)")]
pub struct InvalidSite(String);

impl Site {
    pub fn parse(s: &str) -> Result<Self, InvalidSite> {
        let s = s.trim();
        if is_token(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidSite(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Site {
    type Err = InvalidSite;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The sites as their shippers' subjects carry them (escaped tokens: a site `PLANT_1` is
/// `PLANT__1` there), sorted, without repeats: the same set gives the same durable name, and the
/// one site `A_B` (`A__B`) another than the two sites `A` and `B` (`A_B`).
fn normalized(sites: &[Site]) -> Vec<String> {
    let mut v: Vec<String> = sites
        .iter()
        .map(|s| protocol::subject::escape_token(s.as_str()))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The reply inbox scope of a worker limited to `sites`: its durable name's suffix (`BKK`,
/// `BER_BKK`), so its replies, among them the readings it pulls, arrive under
/// `_INBOX.ingest-worker.<scope>` and a plant's worker identity may be allowed its own subtree
/// only (nats/production/nats-server.conf, "plant worker"). `None` without sites.
pub fn inbox_scope(sites: &[Site]) -> Option<String> {
    let sites = normalized(sites);
    (!sites.is_empty()).then(|| sites.join("_"))
}

/// `names` with the consumer's durable name suffixed by the sites (`ingest_BER_BKK`); unchanged
/// without sites.
pub fn limit_names(mut names: Names, sites: &[Site]) -> Names {
    if let Some(suffix) = inbox_scope(sites) {
        names.consumer = format!("{}_{suffix}", names.consumer);
    }
    names
}

/// A consumer config holding only the filter of `sites` (one subject in `filter_subject`, which
/// every nats-server takes; several in `filter_subjects`, nats-server >= 2.10).
pub fn consumer_filter(names: &Names, sites: &[Site]) -> pull::Config {
    let mut subjects = filter_subjects(names, sites);
    if subjects.len() == 1 {
        pull::Config {
            filter_subject: subjects.remove(0),
            ..Default::default()
        }
    } else {
        pull::Config {
            filter_subjects: subjects,
            ..Default::default()
        }
    }
}

/// The consumer's filter subjects: `<readings prefix>.<site>.>` per site; empty without sites.
pub fn filter_subjects(names: &Names, sites: &[Site]) -> Vec<String> {
    normalized(sites)
        .into_iter()
        .map(|s| format!("{}.{s}.>", names.readings_prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(list: &[&str]) -> Vec<Site> {
        list.iter().map(|s| Site::parse(s).unwrap()).collect()
    }

    #[test]
    fn a_site_is_one_subject_token() {
        assert_eq!(Site::parse(" BKK ").unwrap().as_str(), "BKK");
        for bad in ["", "B.K", "B*", ">", "B K", &"x".repeat(65)] {
            assert!(Site::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sites_give_a_durable_name_of_their_own_and_one_filter_each() {
        let names = Names::default();
        let s = sites(&["BKK", "BER", "BKK"]);
        assert_eq!(limit_names(names.clone(), &s).consumer, "ingest_BER_BKK");
        assert_eq!(
            filter_subjects(&names, &s),
            ["edge.readings.BER.>", "edge.readings.BKK.>"]
        );
        assert_eq!(limit_names(names.clone(), &[]), names);
        assert!(filter_subjects(&names, &[]).is_empty());
        let isolated = Names::isolated("t1");
        assert_eq!(
            filter_subjects(&isolated, &sites(&["BKK"])),
            ["edge.readings_t1.BKK.>"]
        );
        assert_eq!(
            limit_names(isolated, &sites(&["BKK"])).consumer,
            "ingest_t1_BKK"
        );
        assert_eq!(inbox_scope(&[]), None);
        assert_eq!(inbox_scope(&s).as_deref(), Some("BER_BKK"));
    }

    #[test]
    fn a_site_with_an_underscore_is_filtered_as_its_shippers_publish_it() {
        let names = Names::default();
        let plant = sites(&["PLANT_1"]);
        let published = protocol::subject::readings_subject("PLANT_1", "edge-01");
        let filter = filter_subjects(&names, &plant).remove(0);
        assert_eq!(filter, "edge.readings.PLANT__1.>");
        assert!(
            published.starts_with(filter.trim_end_matches('>')),
            "{published}"
        );
        // One site `A_B` and the two sites `A` and `B` never share a durable consumer.
        assert_ne!(
            limit_names(names.clone(), &sites(&["A_B"])).consumer,
            limit_names(names, &sites(&["A", "B"])).consumer
        );
    }
}
