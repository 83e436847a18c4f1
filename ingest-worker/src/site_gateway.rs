//! Site gateways as sources of the central `READINGS` stream (`--site-gateway BKK,BER`).
//!
//! A site gateway (nats/production/leafnode-site.conf) is a leaf node with its own JetStream
//! domain holding the site's readings in a work-queue stream; the central `READINGS` takes them
//! by *sourcing* that stream across the leaf-node link. The convention, one entry per site:
//!
//! | entry        | JetStream domain | sourced stream                  | filter subject              |
//! | ------------ | ---------------- | ------------------------------- | --------------------------- |
//! | `BKK`        | `bkk`            | `READINGS` (the central name)   | `edge.readings.BKK.>`       |
//! | `BKK=gw-bkk` | `gw-bkk`         | `READINGS`                      | `edge.readings.BKK.>`       |
//!
//! The site is written as the shippers send it (`--site`, case kept); the domain defaults to it
//! in lowercase (the gateway's `NATS_SITE`). The sourced stream has the central stream's name
//! (with `--namespace`, both carry the suffix). The filter keeps a gateway from forwarding
//! another site's readings.
//!
//! Applied every time the worker sets up its stream, merged into the sources already there: a
//! site whose domain is already sourced is left as the operator set it (start sequence, filter,
//! transforms), other sources are kept, nothing is removed (take a site out with
//! `nats stream edit` after removing it from the flag).

use std::fmt;

use async_nats::jetstream::stream::{External, Source};
use protocol::Names;
use thiserror::Error;

use crate::site_filter::is_token;

/// One `--site-gateway` entry: a site and the JetStream domain of its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteGateway {
    site: String,
    domain: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SiteGatewayError {
    #[error("empty site gateway entry")]
    Empty,
    #[error("site gateway {0:?}: a site or domain may hold only letters, digits, '-' and '_'")]
    Forbidden(String),
}

impl SiteGateway {
    /// `SITE` or `SITE=domain`.
    pub fn parse(entry: &str) -> Result<Self, SiteGatewayError> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(SiteGatewayError::Empty);
        }
        let (site, domain) = match entry.split_once('=') {
            Some((site, domain)) => (site.trim(), domain.trim().to_owned()),
            None => (entry, entry.to_ascii_lowercase()),
        };
        if !is_token(site) || !is_token(&domain) {
            return Err(SiteGatewayError::Forbidden(entry.to_owned()));
        }
        Ok(Self {
            site: site.to_owned(),
            domain,
        })
    }

    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `$JS.<domain>.API`: how the central servers reach the gateway's JetStream.
    pub fn api_prefix(&self) -> String {
        format!("$JS.{}.API", self.domain)
    }

    /// The source the central `READINGS` gets for this site.
    pub fn source(&self, names: &Names) -> Source {
        Source {
            name: names.readings_stream.clone(),
            filter_subject: Some(format!(
                "{}.{}.>",
                names.readings_prefix,
                protocol::subject::escape_token(&self.site)
            )),
            external: Some(External {
                api_prefix: self.api_prefix(),
                delivery_prefix: None,
            }),
            ..Default::default()
        }
    }

    /// True when `source` already sources this site's gateway (same stream, same domain).
    fn is_sourced_by(&self, source: &Source, names: &Names) -> bool {
        source.name == names.readings_stream
            && source
                .external
                .as_ref()
                .is_some_and(|e| e.api_prefix == self.api_prefix())
    }
}

impl fmt::Display for SiteGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.site, self.domain)
    }
}

impl std::str::FromStr for SiteGateway {
    type Err = SiteGatewayError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `existing` sources with a source added for every site of `sites` not sourced yet; `None` when
/// there are none at all. Existing entries are kept as they are, in their order.
pub fn merge_sources(
    existing: Option<Vec<Source>>,
    sites: &[SiteGateway],
    names: &Names,
) -> Option<Vec<Source>> {
    let mut sources = existing.unwrap_or_default();
    for site in sites {
        if !sources.iter().any(|s| site.is_sourced_by(s, names)) {
            tracing::info!(site = %site.site, domain = %site.domain, stream = %names.readings_stream, "adding the site gateway as a source");
            sources.push(site.source(names));
        }
    }
    (!sources.is_empty()).then_some(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_names_a_site_and_defaults_the_domain_to_it_in_lowercase() {
        let g = SiteGateway::parse(" BKK ").unwrap();
        assert_eq!((g.site(), g.domain()), ("BKK", "bkk"));
        assert_eq!(g.api_prefix(), "$JS.bkk.API");
        let g = SiteGateway::parse("BER=gw-ber").unwrap();
        assert_eq!((g.site(), g.domain()), ("BER", "gw-ber"));
        assert_eq!(g.to_string(), "BER=gw-ber");
    }

    #[test]
    fn entries_with_subject_or_api_characters_are_refused() {
        assert_eq!(SiteGateway::parse(""), Err(SiteGatewayError::Empty));
        for bad in ["B.K", "BKK=a.b", "B*", "B>", "=bkk", "BKK=", "B K"] {
            assert!(
                matches!(SiteGateway::parse(bad), Err(SiteGatewayError::Forbidden(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_source_reads_the_gateways_stream_of_the_same_name_filtered_to_the_site() {
        let s = SiteGateway::parse("BKK")
            .unwrap()
            .source(&Names::isolated("t1"));
        assert_eq!(s.name, "READINGS_t1");
        assert_eq!(s.filter_subject.as_deref(), Some("edge.readings_t1.BKK.>"));
        assert_eq!(s.external.unwrap().api_prefix, "$JS.bkk.API");
    }

    #[test]
    fn merging_adds_missing_sites_once_and_keeps_what_operators_set() {
        let names = Names::default();
        let sites = [
            SiteGateway::parse("BKK").unwrap(),
            SiteGateway::parse("BER").unwrap(),
        ];
        // An operator's own source, and BKK sourced by hand from sequence 42 without a filter.
        let other = Source {
            name: "ARCHIVE_FEED".into(),
            ..Default::default()
        };
        let by_hand = Source {
            name: "READINGS".into(),
            start_sequence: Some(42),
            external: Some(External {
                api_prefix: "$JS.bkk.API".into(),
                delivery_prefix: None,
            }),
            ..Default::default()
        };
        let merged =
            merge_sources(Some(vec![other.clone(), by_hand.clone()]), &sites, &names).unwrap();
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0], other);
        assert_eq!(merged[1], by_hand);
        assert_eq!(merged[2], sites[1].source(&names));
        // Idempotent.
        assert_eq!(
            merge_sources(Some(merged.clone()), &sites, &names),
            Some(merged)
        );
        assert_eq!(merge_sources(None, &[], &names), None);
        assert_eq!(merge_sources(Some(vec![]), &[], &names), None);
    }
}
