//! One edge box's NATS identity: a user nkey, and the line that lets it publish its own readings
//! subject and read its own replies, nothing else.

use chrono::{DateTime, SecondsFormat, Utc};
use protocol::subject::{escape_token, nkey_inbox_prefix, readings_subject};
use serde_json::json;

use crate::AdminError;

/// A box as its edge-shipper names itself: `--site` and `--box-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxId {
    site: String,
    box_id: String,
}

impl BoxId {
    /// Both ids as the shipper has them; they are escaped into subject tokens, as the shipper
    /// does, so any text is allowed except an empty one.
    pub fn new(site: &str, box_id: &str) -> Result<Self, AdminError> {
        if site.is_empty() || box_id.is_empty() {
            return Err(AdminError::EmptyId);
        }
        Ok(Self {
            site: site.to_owned(),
            box_id: box_id.to_owned(),
        })
    }

    /// The only subject the box may publish: `edge.readings.<site>.<box>`.
    pub fn subject(&self) -> String {
        readings_subject(&self.site, &self.box_id)
    }

    /// `box <box> of site <site>`, with both ids escaped: safe inside a config comment.
    pub fn label(&self) -> String {
        format!(
            "box {} of site {}",
            escape_token(&self.box_id),
            escape_token(&self.site)
        )
    }
}

/// A new user nkey: the seed (the box's secret) and its public key (the server's side).
pub struct Issued {
    pub public_key: String,
    pub seed: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("public_key", &self.public_key)
            .field("seed", &"***")
            .finish()
    }
}

/// Generates a user nkey (ed25519, from the operating system's random source).
pub fn issue() -> Result<Issued, AdminError> {
    let pair = nkeys::KeyPair::new_user();
    let seed = pair
        .seed()
        .map_err(|e| AdminError::KeyGeneration(e.to_string()))?;
    Ok(Issued {
        public_key: pair.public_key(),
        seed,
    })
}

/// The box's entry of account `BOXES`'s users list, on one line: JSON (valid NATS config and
/// valid YAML, for the Helm values) followed by a comment naming the box.
pub fn entry(id: &BoxId, public_key: &str, issued_at: DateTime<Utc>) -> String {
    let user = json!({
        "nkey": public_key,
        "permissions": {
            "publish": { "allow": [id.subject()] },
            "subscribe": { "allow": [format!("{}.>", nkey_inbox_prefix(public_key))] },
        }
    });
    format!(
        "{user}  # {}, issued {} by edge-mes-nats-admin",
        id.label(),
        issued_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entry_allows_the_own_subject_and_inbox_only() {
        let id = BoxId::new("BKK", "edge-01").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let line = entry(&id, "UKEY", at);
        let (json, comment) = line.split_once("  # ").unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["nkey"], "UKEY");
        assert_eq!(
            v["permissions"]["publish"]["allow"],
            json!(["edge.readings.BKK.edge-01"])
        );
        assert_eq!(
            v["permissions"]["subscribe"]["allow"],
            json!(["_INBOX.UKEY.>"])
        );
        assert_eq!(
            comment,
            "box edge-01 of site BKK, issued 2026-01-02T03:04:05Z by edge-mes-nats-admin"
        );
    }

    #[test]
    fn ids_cannot_break_out_of_the_line_or_the_subject() {
        let id = BoxId::new("s.*", "b\n]\n{x").unwrap();
        assert_eq!(id.subject(), "edge.readings.s_2E_2A.b_0A_5D_0A_7Bx");
        let line = entry(&id, "UKEY", Utc::now());
        assert!(!line.contains('\n'), "{line}");
        assert!(BoxId::new("", "b").is_err());
        assert!(BoxId::new("s", "").is_err());
    }

    #[test]
    fn issued_keys_are_user_keys_and_their_seed_is_not_printed() {
        let issued = issue().unwrap();
        assert!(issued.public_key.starts_with('U'));
        assert!(issued.seed.starts_with("SU"));
        let pair = nkeys::KeyPair::from_seed(&issued.seed).unwrap();
        assert_eq!(pair.public_key(), issued.public_key);
        assert!(!format!("{issued:?}").contains(&issued.seed));
    }
}
