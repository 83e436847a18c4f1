//! NATS flags and client options, the same for every binary.
//!
//! async-nats does not use credentials written into the server URL, although operators expect
//! `nats://user:password@host:4222` to work (the NATS CLI and other clients accept it). So the
//! URL's credentials are read here and handed to the client as options; explicit flags win.
//! Accepted, in this order: `--nats-creds` (JWT + NKey file), `--nats-nkey-file` (an nkey seed:
//! the identity of one edge box, see nats/production/), `--nats-token`, `--nats-user` +
//! `--nats-password`, `user:password@` or `token@` in the URL.
//!
//! TLS: `--nats-tls-ca` trusts that CA (instead of the system's), `--nats-tls-cert` +
//! `--nats-tls-key` present a client certificate; either makes TLS required. A `tls://` URL
//! requires TLS with the system's CAs.
//!
//! Replies: each binary receives its replies (PubAcks, JetStream API answers, pulled messages)
//! under its own inbox prefix, `_INBOX.<client name>` (e.g. `_INBOX.ingest-worker`), or with an
//! nkey `_INBOX.<public key>`, so the server can let each identity read its own replies and no
//! one else's (nats/production/).

use std::path::{Path, PathBuf};

use async_nats::{ConnectOptions, ServerAddr};
use clap::Args;
use thiserror::Error;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum NatsConfigError {
    #[error("invalid NATS URL {url:?}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no NATS URL given")]
    NoUrl,
    #[error("the NATS URLs carry different credentials; give them once with --nats-user/--nats-password")]
    MixedUrlCredentials,
    #[error("cannot read NATS credentials file {path}: {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the NATS nkey seed file {path}: {source}")]
    NKeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the NATS nkey seed file {path} does not hold a user seed (one line, `SU...`)")]
    NotAUserSeed { path: String },
    #[error("cannot read the NATS TLS {what} file {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the NATS TLS {what} file {path} holds no PEM block")]
    NotPem { what: &'static str, path: String },
}

/// The NATS connection flags. Flatten into a binary's configuration with `#[command(flatten)]`.
/// Its `Debug` hides the URL's user info, the password and the token.
#[derive(Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated. `nats://user:password@host:4222` and
    /// `nats://token@host:4222` are understood.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true,
        global = true
    )]
    pub url: String,

    /// NATS credentials file (JWT + NKey seed), for servers run in operator mode.
    #[arg(long = "nats-creds", env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,

    /// File holding the NATS user nkey seed (`SU...`) of this client, e.g. an edge box's own
    /// identity issued by `edge-mes-nats-admin add-box`.
    #[arg(
        long = "nats-nkey-file",
        env = "NATS_NKEY_FILE",
        global = true,
        conflicts_with_all = ["creds", "nats_token", "nats_user"]
    )]
    pub nkey_file: Option<PathBuf>,

    /// NATS user name (with --nats-password), for servers with `authorization { users = [...] }`.
    #[arg(
        long = "nats-user",
        env = "NATS_USER",
        global = true,
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,

    /// NATS password of --nats-user.
    #[arg(
        long = "nats-password",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        global = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,

    /// NATS authentication token, for servers with `authorization { token = ... }`.
    #[arg(
        long = "nats-token",
        env = "NATS_TOKEN",
        hide_env_values = true,
        global = true,
        conflicts_with = "nats_user"
    )]
    pub nats_token: Option<String>,

    /// PEM file of the CA that signed the NATS server's certificate; trusted instead of the
    /// system's CAs. Makes TLS required.
    #[arg(long = "nats-tls-ca", env = "NATS_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate presented to the NATS server (with --nats-tls-key), for servers
    /// that verify clients. Makes TLS required.
    #[arg(
        long = "nats-tls-cert",
        env = "NATS_TLS_CERT",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --nats-tls-cert.
    #[arg(
        long = "nats-tls-key",
        env = "NATS_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// How the client authenticates, as decided from the flags and the URL.
impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("NatsArgs")
            .field("url", &self.url_redacted())
            .field("creds", &self.creds)
            .field("nkey_file", &self.nkey_file)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &hidden(&self.nats_password))
            .field("nats_token", &hidden(&self.nats_token))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    CredsFile(PathBuf),
    NKeyFile(PathBuf),
    Token(String),
    UserPassword { user: String, password: String },
}

impl NatsArgs {
    /// Flags for a server at `url` with no authentication (tests, tools).
    pub fn for_url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            creds: None,
            nkey_file: None,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    /// The server addresses, in the order given.
    pub fn servers(&self) -> Result<Vec<ServerAddr>, NatsConfigError> {
        let servers = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<ServerAddr>()
                    .map_err(|source| NatsConfigError::InvalidUrl {
                        url: redact(u),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(NatsConfigError::NoUrl);
        }
        Ok(servers)
    }

    /// The authentication to use: flags first, then credentials in the URL(s).
    pub fn auth(&self) -> Result<Auth, NatsConfigError> {
        if let Some(path) = &self.creds {
            return Ok(Auth::CredsFile(path.clone()));
        }
        if let Some(path) = &self.nkey_file {
            return Ok(Auth::NKeyFile(path.clone()));
        }
        if let Some(token) = &self.nats_token {
            return Ok(Auth::Token(token.clone()));
        }
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            return Ok(Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            });
        }
        let mut found: Option<Auth> = None;
        for server in self.servers()? {
            let auth = match (server.username(), server.password()) {
                (Some(user), Some(password)) => Auth::UserPassword {
                    user: percent_decode(user),
                    password: percent_decode(password),
                },
                (Some(token), None) => Auth::Token(percent_decode(token)),
                _ => continue,
            };
            match &found {
                Some(earlier) if *earlier != auth => {
                    return Err(NatsConfigError::MixedUrlCredentials)
                }
                _ => found = Some(auth),
            }
        }
        Ok(found.unwrap_or(Auth::None))
    }

    /// The URL(s) with any password or token replaced by `***`, for logs.
    pub fn url_redacted(&self) -> String {
        self.url
            .split(',')
            .map(redact)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client options named `name` (shown by the server's connz), authenticated as configured,
    /// with TLS if configured, retrying the first connection and reconnecting forever: every
    /// edge-mes binary waits for NATS rather than exiting when it is briefly away. Replies come
    /// under `_INBOX.<public key>` for an nkey identity, `_INBOX.<name>` otherwise
    /// (`protocol::subject`), so the server can let each identity read its own replies only.
    /// Files named by the flags are read (or checked) here, so a missing or wrong one is an
    /// error at start, not a connection retried forever.
    pub async fn connect_options(&self, name: &str) -> Result<ConnectOptions, NatsConfigError> {
        self.connect_options_scoped(name, None).await
    }

    /// [`Self::connect_options`] for one deployment of a service (`scope`, e.g. the sites of an
    /// ingest-worker limited to some): replies under `_INBOX.<name>.<scope>` unless an nkey
    /// identity sets its own.
    pub async fn connect_options_scoped(
        &self,
        name: &str,
        scope: Option<&str>,
    ) -> Result<ConnectOptions, NatsConfigError> {
        let inbox = match scope {
            Some(scope) => protocol::subject::service_inbox_prefix_scoped(name, scope),
            None => protocol::subject::service_inbox_prefix(name),
        };
        let mut options = ConnectOptions::new()
            .name(name)
            .custom_inbox_prefix(inbox)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("connected to nats"),
                    async_nats::Event::Disconnected => {
                        warn!("disconnected from nats; reconnecting")
                    }
                    // E.g. "permissions violation for publish to ...": an identity used for the
                    // wrong site or box, or a server config that does not fit this binary.
                    async_nats::Event::ServerError(e) => warn!(error = %e, "nats server error"),
                    other => info!(event = %other, "nats event"),
                }
            });
        if let Some(ca) = &self.tls_ca {
            check_pem("CA", ca).await?;
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            check_pem("client certificate", cert).await?;
            check_pem("client key", key).await?;
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(match self.auth()? {
            Auth::None => options,
            Auth::CredsFile(path) => options.credentials_file(&path).await.map_err(|source| {
                NatsConfigError::Credentials {
                    path: path.display().to_string(),
                    source,
                }
            })?,
            Auth::NKeyFile(path) => {
                let (seed, public_key) = read_user_seed(&path).await?;
                options
                    .custom_inbox_prefix(protocol::subject::nkey_inbox_prefix(&public_key))
                    .nkey(seed)
            }
            Auth::Token(token) => options.token(token),
            Auth::UserPassword { user, password } => options.user_and_password(user, password),
        })
    }
}

/// The user nkey seed in `path` (surrounding white space ignored) and its public key. A file that
/// others may read is used but warned about: the seed is the box's identity.
async fn read_user_seed(path: &Path) -> Result<(String, String), NatsConfigError> {
    let shown = || path.display().to_string();
    let text =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| NatsConfigError::NKeyFile {
                path: shown(),
                source,
            })?;
    let seed = text.trim();
    let public_key = match nkeys::KeyPair::from_seed(seed) {
        Ok(k) if matches!(k.key_pair_type(), nkeys::KeyPairType::User) => k.public_key(),
        _ => return Err(NatsConfigError::NotAUserSeed { path: shown() }),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = tokio::fs::metadata(path).await {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "nats nkey seed file is readable by others; chmod 600 it");
            }
        }
    }
    Ok((seed.to_owned(), public_key))
}

/// Checks that a TLS file can be read and holds a PEM block (async-nats reads it again at
/// every connection attempt, where an error would only be retried).
async fn check_pem(what: &'static str, path: &Path) -> Result<(), NatsConfigError> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|source| NatsConfigError::TlsFile {
            what,
            path: path.display().to_string(),
            source,
        })?;
    if !text.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(NatsConfigError::NotPem {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(())
}

use crate::secrets::redact;

/// URL user info is percent-encoded (`p%40ss` for `p@ss`); invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn parse(args: &[&str]) -> Result<NatsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bin").chain(args.iter().copied())).map(|c| c.nats)
    }

    #[test]
    fn url_credentials_become_client_auth_and_are_redacted() {
        let a = parse(&[
            "--nats-url",
            "nats://ingest:p%40ss@h1:4222,nats://ingest:p%40ss@h2:4222",
        ])
        .unwrap();
        assert_eq!(
            a.auth().unwrap(),
            Auth::UserPassword {
                user: "ingest".into(),
                password: "p@ss".into()
            }
        );
        assert_eq!(a.url_redacted(), "nats://***@h1:4222,nats://***@h2:4222");
        assert_eq!(a.servers().unwrap().len(), 2);
        let t = parse(&["--nats-url", "nats://s3cr3t@h1:4222"]).unwrap();
        assert_eq!(t.auth().unwrap(), Auth::Token("s3cr3t".into()));
    }

    #[test]
    fn flags_win_over_the_url_and_plain_urls_need_no_auth() {
        let a = parse(&[
            "--nats-url",
            "nats://a:b@h1:4222",
            "--nats-user",
            "api",
            "--nats-password",
            "pw",
        ])
        .unwrap();
        assert_eq!(
            a.auth().unwrap(),
            Auth::UserPassword {
                user: "api".into(),
                password: "pw".into()
            }
        );
        assert_eq!(parse(&[]).unwrap().auth().unwrap(), Auth::None);
        let c = parse(&["--nats-creds", "/etc/x.creds", "--nats-url", "nats://a:b@h"]).unwrap();
        assert_eq!(c.auth().unwrap(), Auth::CredsFile("/etc/x.creds".into()));
    }

    #[test]
    fn bad_combinations_and_urls_are_refused() {
        assert!(
            parse(&["--nats-user", "u"]).is_err(),
            "user without password"
        );
        assert!(parse(&[
            "--nats-token",
            "t",
            "--nats-user",
            "u",
            "--nats-password",
            "p"
        ])
        .is_err());
        let mixed = parse(&["--nats-url", "nats://a:b@h1:4222,nats://c:d@h2:4222"]).unwrap();
        assert!(matches!(
            mixed.auth(),
            Err(NatsConfigError::MixedUrlCredentials)
        ));
        let bad = parse(&["--nats-url", "nats://h1:notaport"]).unwrap();
        assert!(matches!(
            bad.servers(),
            Err(NatsConfigError::InvalidUrl { .. })
        ));
        let empty = parse(&["--nats-url", " , "]).unwrap();
        assert!(matches!(empty.servers(), Err(NatsConfigError::NoUrl)));
    }

    #[test]
    fn nkey_and_tls_flags_parse_and_refuse_bad_combinations() {
        let a = parse(&[
            "--nats-nkey-file",
            "/etc/box.nk",
            "--nats-tls-ca",
            "/etc/ca.pem",
            "--nats-url",
            "nats://a:b@h1:4222",
        ])
        .unwrap();
        assert_eq!(a.auth().unwrap(), Auth::NKeyFile("/etc/box.nk".into()));
        assert_eq!(a.tls_ca, Some("/etc/ca.pem".into()));
        for bad in [
            &[
                "--nats-nkey-file",
                "k",
                "--nats-user",
                "u",
                "--nats-password",
                "p",
            ][..],
            &["--nats-nkey-file", "k", "--nats-token", "t"],
            &["--nats-nkey-file", "k", "--nats-creds", "c"],
            &["--nats-tls-cert", "c.pem"],
            &["--nats-tls-key", "k.pem"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[tokio::test]
    async fn nkey_and_tls_files_are_checked_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let user = file(
            "user.nk",
            &format!("{}\n", nkeys::KeyPair::new_user().seed().unwrap()),
        );
        let account = file("account.nk", &nkeys::KeyPair::new_account().seed().unwrap());
        let pem = file(
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let not_pem = file("ca.txt", "hello");
        let missing = dir.path().join("missing.pem").display().to_string();
        let options = |args: &[&str]| {
            let args = parse(args).unwrap();
            async move { args.connect_options("t").await }
        };

        assert!(options(&["--nats-nkey-file", &user]).await.is_ok());
        assert!(matches!(
            options(&["--nats-nkey-file", &account]).await,
            Err(NatsConfigError::NotAUserSeed { .. })
        ));
        assert!(matches!(
            options(&["--nats-nkey-file", &missing]).await,
            Err(NatsConfigError::NKeyFile { .. })
        ));
        assert!(options(&["--nats-tls-ca", &pem]).await.is_ok());
        assert!(matches!(
            options(&["--nats-tls-ca", &missing]).await,
            Err(NatsConfigError::TlsFile { what: "CA", .. })
        ));
        assert!(matches!(
            options(&["--nats-tls-ca", &not_pem]).await,
            Err(NatsConfigError::NotPem { what: "CA", .. })
        ));
        assert!(matches!(
            options(&["--nats-tls-cert", &pem, "--nats-tls-key", &not_pem]).await,
            Err(NatsConfigError::NotPem {
                what: "client key",
                ..
            })
        ));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
