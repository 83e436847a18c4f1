//! Secrets from files, the Docker and Kubernetes secrets convention: a variable `X_FILE` naming a
//! file stands for `X` set to the file's content (one trailing line break removed), so passwords
//! and URLs with passwords need not sit in the environment or on a command line, where `ps` and
//! crash reports show them.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The variables of edge-mes that carry secrets; each may come from `<name>_FILE`.
pub const SECRET_VARS: [&str; 5] = [
    "DATABASE_URL",
    "NATS_URL",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    // edge-mes-sim's bearer token for mes-api.
    "SIM_API_TOKEN",
];

#[derive(Debug, Error)]
pub enum SecretFileError {
    #[error("{var} and {var}_FILE are both set; set one")]
    Both { var: String },
    #[error("{var}_FILE: cannot read {path}: {source}")]
    Read {
        var: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{var}_FILE: {path} is empty")]
    Empty { var: String, path: PathBuf },
}

/// The values the `_FILE` variables stand for: `(name, value)` for each of `vars` whose `_FILE`
/// is set. `get` reads a variable, `read` a file (the process's own in [`load`]).
pub fn resolve(
    vars: &[&str],
    get: impl Fn(&str) -> Option<String>,
    read: impl Fn(&Path) -> std::io::Result<String>,
) -> Result<Vec<(String, String)>, SecretFileError> {
    let mut out = Vec::new();
    for var in vars {
        let Some(path) = get(&format!("{var}_FILE")).filter(|p| !p.is_empty()) else {
            continue;
        };
        if get(var).is_some() {
            return Err(SecretFileError::Both {
                var: (*var).to_owned(),
            });
        }
        let path = PathBuf::from(path);
        let text = read(&path).map_err(|source| SecretFileError::Read {
            var: (*var).to_owned(),
            path: path.clone(),
            source,
        })?;
        let value = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if value.is_empty() {
            return Err(SecretFileError::Empty {
                var: (*var).to_owned(),
                path,
            });
        }
        out.push(((*var).to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// A URL that may carry a password (`DATABASE_URL`): its `Debug` and `Display` hide the user
/// info, so a logged configuration or error never shows it; [`SecretUrl::expose`] hands the URL
/// to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SecretUrl").field(&redact(&self.0)).finish()
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

/// `scheme://user:password@host/...` without the user info (`scheme://***@host/...`).
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        (None, Some(at)) => format!("***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Sets each of [`SECRET_VARS`] from its `_FILE`, before the configuration is parsed. Call it
/// first thing in `main`, before other threads read the environment.
pub fn load() -> Result<(), SecretFileError> {
    let values = resolve(
        &SECRET_VARS,
        |v| std::env::var(v).ok(),
        |p| std::fs::read_to_string(p),
    )?;
    for (var, value) in values {
        std::env::set_var(var, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn secret_urls_show_no_user_info() {
        let url: SecretUrl = "postgres://mes_api:s3cret@db:5432/edge_mes"
            .parse()
            .unwrap();
        assert_eq!(url.expose(), "postgres://mes_api:s3cret@db:5432/edge_mes");
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("mes_api"),
                "{shown}"
            );
            assert!(shown.contains("***@db:5432/edge_mes"), "{shown}");
        }
        let plain = SecretUrl::new("postgres://db/edge_mes");
        assert_eq!(plain.to_string(), "postgres://db/edge_mes");
    }

    fn run(env: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), (*v).to_owned()))
            .collect();
        resolve(
            &SECRET_VARS,
            |v| env.get(v).cloned(),
            |p| {
                files
                    .get(p)
                    .cloned()
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            },
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_stands_for_its_variable() {
        assert_eq!(
            run(
                &[("DATABASE_URL_FILE", "/run/secrets/db")],
                &[("/run/secrets/db", "postgres://u:p@h/db\n")]
            ),
            Ok(vec![("DATABASE_URL".into(), "postgres://u:p@h/db".into())])
        );
        assert_eq!(
            run(&[("NATS_PASSWORD_FILE", "/s")], &[("/s", "pa ss\r\n")]),
            Ok(vec![("NATS_PASSWORD".into(), "pa ss".into())])
        );
        assert_eq!(run(&[], &[]), Ok(vec![]));
    }

    #[test]
    fn ambiguity_and_missing_files_are_errors_that_name_the_variable() {
        let both = run(
            &[("DATABASE_URL", "x"), ("DATABASE_URL_FILE", "/s")],
            &[("/s", "y")],
        )
        .unwrap_err();
        assert!(
            both.contains("DATABASE_URL and DATABASE_URL_FILE"),
            "{both}"
        );
        let missing = run(&[("NATS_TOKEN_FILE", "/nope")], &[]).unwrap_err();
        assert!(
            missing.starts_with("NATS_TOKEN_FILE: cannot read /nope"),
            "{missing}"
        );
        let empty = run(&[("NATS_TOKEN_FILE", "/e")], &[("/e", "\n")]).unwrap_err();
        assert!(empty.contains("is empty"), "{empty}");
        // The secret itself never appears in an error.
        let e = run(
            &[("NATS_URL", "nats://u:secret@h"), ("NATS_URL_FILE", "/s")],
            &[("/s", "x")],
        )
        .unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
}
