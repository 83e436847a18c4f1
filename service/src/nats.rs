//! NATS flags and client options, the same for every binary.
//!
//! async-nats does not use credentials written into the server URL, although operators expect
//! `nats://user:password@host:4222` to work (the NATS CLI and other clients accept it). So the
//! URL's credentials are read here and handed to the client as options; explicit flags win.
//! Accepted, in this order: `--nats-creds` (JWT + NKey file), `--nats-token`, `--nats-user` +
//! `--nats-password`, `user:password@` or `token@` in the URL.

use std::path::PathBuf;

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
}

/// The NATS connection flags. Flatten into a binary's configuration with `#[command(flatten)]`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated. `nats://user:password@host:4222` and
    /// `nats://token@host:4222` are understood.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub url: String,

    /// NATS credentials file (JWT + NKey seed), for servers run in operator mode.
    #[arg(long = "nats-creds", env = "NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,

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
}

/// How the client authenticates, as decided from the flags and the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    CredsFile(PathBuf),
    Token(String),
    UserPassword { user: String, password: String },
}

impl NatsArgs {
    /// Flags for a server at `url` with no authentication (tests, tools).
    pub fn for_url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            creds: None,
            nats_user: None,
            nats_password: None,
            nats_token: None,
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
    /// retrying the first connection and reconnecting forever: every edge-mes binary waits for
    /// NATS rather than exiting when it is briefly away.
    pub async fn connect_options(&self, name: &str) -> Result<ConnectOptions, NatsConfigError> {
        let options = ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("connected to nats"),
                    async_nats::Event::Disconnected => {
                        warn!("disconnected from nats; reconnecting")
                    }
                    other => info!(event = %other, "nats event"),
                }
            });
        Ok(match self.auth()? {
            Auth::None => options,
            Auth::CredsFile(path) => options.credentials_file(&path).await.map_err(|source| {
                NatsConfigError::Credentials {
                    path: path.display().to_string(),
                    source,
                }
            })?,
            Auth::Token(token) => options.token(token),
            Auth::UserPassword { user, password } => options.user_and_password(user, password),
        })
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

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
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
