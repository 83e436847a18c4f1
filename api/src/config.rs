//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use protocol::OpRunNames;
use service::db::MigrateMode;
use service::nats::NatsArgs;

use crate::auth::jwks::{JwksSettings, JwksSource};
use crate::auth::jwt::{JwtSettings, RoleClaim};
use crate::auth::Role;
use crate::report_batch::ReportBatching;

pub use service::telemetry::LogFormat;

/// mes-api: the production-run REST API for the MES (start, report, pause, resume, complete),
/// run events on NATS JetStream through a transactional outbox, and OEE, SPC and traceability
/// queries over PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "mes-api", version, about, long_about = None)]
pub struct Config {
    /// What to do; serves the API when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "API_LISTEN",
        default_value = "0.0.0.0:8000",
        global = true
    )]
    pub listen: SocketAddr,

    /// PostgreSQL URL. The database is created if it does not exist; migrations are applied at
    /// start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/edge_mes",
        hide_env_values = true,
        global = true
    )]
    pub database_url: service::secrets::SecretUrl,

    /// Whether to apply the schema migrations at start: `auto` when the login may change the
    /// schema (its owner, a superuser; a least-privilege login only checks they were applied),
    /// `always`, or `never` (only check). `mes-api migrate` applies them and exits.
    #[arg(
        long,
        env = "DB_MIGRATE",
        value_enum,
        default_value_t = MigrateMode::Auto,
        global = true
    )]
    pub migrate: MigrateMode,

    /// `tokens`: every route but the probes (`/health`, `/ready`) and the board's sign-in needs
    /// `Authorization: Bearer <token>` with the route's role (`mes-api token create`); `off`:
    /// anyone who reaches the port may do anything (a warning at start says so; for a closed
    /// test bench only).
    #[arg(long, env = "API_AUTH", value_enum, default_value_t = AuthMode::Tokens, global = true)]
    pub auth: AuthMode,

    /// With `--auth tokens`: most writes per second per token (bursts up to twice that); over
    /// it, 429 with Retry-After. 0: unlimited.
    #[arg(
        long,
        env = "API_WRITE_RATE_PER_TOKEN",
        default_value_t = 500,
        global = true
    )]
    pub write_rate_per_token: u32,

    /// With `--auth tokens`: also accept JWTs of the plant's identity provider (OIDC client
    /// credentials: Keycloak, Entra ID), RS256 or ES256, verified with the keys of this JWKS: a
    /// file path or an `https://` URL (`http://` only on loopback). Needs --jwt-issuer and
    /// --jwt-audience.
    #[arg(long, env = "API_JWT_JWKS", requires_all = ["jwt_issuer", "jwt_audience"], global = true)]
    pub jwt_jwks: Option<JwksSource>,

    /// The `iss` every JWT must carry, exactly as the identity provider writes it.
    #[arg(long, env = "API_JWT_ISSUER", requires = "jwt_jwks", global = true)]
    pub jwt_issuer: Option<String>,

    /// Audiences (comma-separated) of which a JWT's `aud` must name one.
    #[arg(
        long,
        env = "API_JWT_AUDIENCE",
        value_delimiter = ',',
        requires = "jwt_jwks",
        global = true
    )]
    pub jwt_audience: Vec<String>,

    /// The JWT claim holding the caller's role: a name or a dotted path
    /// (`realm_access.roles`); a string (space-separated values) or an array of strings. Values
    /// `viewer`, `operator`, `admin` (after --jwt-role-prefix) count; the highest wins.
    #[arg(
        long,
        env = "API_JWT_ROLE_CLAIM",
        default_value = "roles",
        global = true
    )]
    pub jwt_role_claim: RoleClaim,

    /// Prefix of the role values in the role claim (`edge-mes-` reads `edge-mes-operator` as
    /// operator); values without it are ignored. Empty: the values are the role names.
    #[arg(long, env = "API_JWT_ROLE_PREFIX", default_value = "", global = true)]
    pub jwt_role_prefix: String,

    /// Clock skew tolerated on a JWT's `exp` and `nbf`, in seconds.
    #[arg(
        long,
        env = "API_JWT_LEEWAY_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=600),
        global = true
    )]
    pub jwt_leeway_seconds: u64,

    /// How often the JWKS is read again, in seconds (also at once for a token with an unknown
    /// key id, at most every 10 s).
    #[arg(
        long,
        env = "API_JWT_JWKS_REFRESH_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(10..=86_400),
        global = true
    )]
    pub jwt_jwks_refresh_seconds: u64,

    /// PEM file of the CA(s) that sign the JWKS URL's certificate, trusted instead of the
    /// system's roots (a plant CA).
    #[arg(long, env = "API_JWT_JWKS_CA", requires = "jwt_jwks", global = true)]
    pub jwt_jwks_ca: Option<PathBuf>,

    /// Address of a second listener serving only `GET /metrics`, without authentication (for
    /// Prometheus; keep it off the plant network). `off`: none (the main port's `/metrics`, which
    /// needs a viewer token with --auth tokens, remains).
    #[arg(
        long,
        env = "API_METRICS_LISTEN",
        default_value = "127.0.0.1:9103",
        global = true
    )]
    pub metrics_listen: MetricsListen,

    /// Most database connections in the pool.
    #[arg(
        long,
        env = "API_DB_MAX_CONNECTIONS",
        default_value_t = 16,
        global = true
    )]
    pub db_max_connections: u32,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub shutdown: service::shutdown::ShutdownArgs,

    /// Suffix for the OP_RUN stream name and the `mes.op_run` subject prefix (tests, several
    /// deployments on one NATS account). Empty: the standard names.
    #[arg(long, env = "EDGE_NAMESPACE", default_value = "", global = true)]
    pub namespace: String,

    /// Replicas of the OP_RUN stream (1 on a single server, 3 in a cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1, global = true)]
    pub stream_replicas: usize,

    /// Site of runs whose request names none and whose resource has none; created at start if
    /// missing.
    #[arg(long, env = "EDGE_SITE", default_value = "BKK", global = true)]
    pub default_site: String,

    /// IANA time zone given to the default site when it is created (an existing site keeps its
    /// own).
    #[arg(
        long,
        env = "EDGE_SITE_TIME_ZONE",
        default_value = "Asia/Bangkok",
        global = true
    )]
    pub default_site_time_zone: String,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "API_MAX_BODY_BYTES", default_value_t = 64 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Time limit of one request in milliseconds; slower requests get 408.
    #[arg(
        long,
        env = "API_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub request_timeout_ms: u64,

    /// How often the outbox relay looks for events committed by other mes-api instances, in
    /// milliseconds (this process's own commits wake it at once).
    #[arg(long, env = "API_RELAY_POLL_MS", default_value_t = 100, global = true)]
    pub relay_poll_ms: u64,

    /// How long the relay waits after a commit woke it, so one publish round carries the events
    /// of many commits, in milliseconds.
    #[arg(long, env = "API_RELAY_LINGER_MS", default_value_t = 5, global = true)]
    pub relay_linger_ms: u64,

    /// Most events the relay publishes per round trip (acks are awaited in order).
    #[arg(long, env = "API_RELAY_BATCH", default_value_t = 256, global = true)]
    pub relay_batch: i64,

    /// How long the relay waits for one PubAck before it retries the batch, in milliseconds.
    #[arg(
        long,
        env = "API_RELAY_ACK_TIMEOUT_MS",
        default_value_t = 5_000,
        global = true
    )]
    pub relay_ack_timeout_ms: u64,

    /// Run no outbox relay in this process (events wait in the outbox for another instance).
    #[arg(long, env = "API_NO_RELAY", global = true)]
    pub no_relay: bool,

    /// Lanes writing count reports sent without an Idempotency-Key: each lane writes the reports
    /// that queued while its previous statement ran in one statement (group commit); a run's
    /// reports always take the same lane. 0 writes every report with its own statement.
    #[arg(long, env = "API_REPORT_LANES", default_value_t = 4, global = true)]
    pub report_lanes: usize,

    /// Most reports one lane writes in one statement.
    #[arg(long, env = "API_REPORT_BATCH_MAX", default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..=10_000), global = true)]
    pub report_batch_max: u64,

    /// Hours an Idempotency-Key answer is kept; older keys are forgotten.
    #[arg(
        long,
        env = "API_IDEMPOTENCY_TTL_HOURS",
        default_value_t = 24,
        global = true
    )]
    pub idempotency_ttl_hours: u32,

    /// Days sent outbox rows are kept (for audit) before they are deleted; 0 keeps them.
    #[arg(
        long,
        env = "API_OUTBOX_RETENTION_DAYS",
        default_value_t = 7,
        global = true
    )]
    pub outbox_retention_days: u32,

    /// Seconds between the machine-state detector's passes over the resources that have a rule
    /// (docs/api.md, "Machine state"); 0 turns the detector off in this replica.
    #[arg(
        long,
        env = "API_MACHINE_STATE_INTERVAL_SECONDS",
        default_value_t = 10,
        global = true
    )]
    pub machine_state_interval_seconds: u64,

    /// Minutes of readings each detector pass judges again, so stops in readings that arrive
    /// this late are still found (a site whose boxes may be cut off for longer needs more).
    #[arg(
        long,
        env = "API_MACHINE_STATE_HORIZON_MINUTES",
        default_value_t = 120,
        value_parser = clap::value_parser!(u32).range(1..=10_080),
        global = true
    )]
    pub machine_state_horizon_minutes: u32,

    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "human",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Migrate, then create the seed's demo run (SMT01, WO123/OP10, 4 hours ending now, 780 good
    /// and 20 scrap, ideal cycle time 1.5 s) so OEE views show data at once, and exit.
    SeedDemo,
    /// Apply the schema migrations as the database's owner (a one-shot job before the services
    /// start with their least-privilege logins), and exit.
    Migrate,
    /// Manage the API's bearer tokens (stored as salted hashes in the database, so every
    /// replica sees a new or revoked token within seconds).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// Whether the API checks bearer tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Off,
    Tokens,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it once, as the last line of standard output.
    Create {
        /// viewer (reads, the board), operator (also the run lifecycle) or admin (also tokens
        /// and plant data).
        #[arg(long, value_enum)]
        role: Role,
        /// Who holds it (an HMI, a connector, a person): recorded with every write it makes. Not
        /// starting with `jwt:` (the actors of JWT callers).
        #[arg(long, value_parser = token_name)]
        name: String,
        /// Days until it expires; default never.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List the tokens (names, roles, dates; never the tokens themselves).
    List,
    /// Revoke the token with this name.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

/// `--metrics-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|_| format!("{s:?}: an address such as 127.0.0.1:9103, or off"))
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// A new token's name: not one a JWT caller's actor could have.
fn token_name(s: &str) -> Result<String, String> {
    let prefix = crate::auth::jwt::ACTOR_PREFIX;
    if s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    {
        return Err(format!(
            "{s:?}: names starting with {prefix:?} are the actors of JWT callers"
        ));
    }
    Ok(s.to_owned())
}

impl Config {
    pub fn op_run_names(&self) -> OpRunNames {
        OpRunNames::isolated(&self.namespace)
    }

    /// The machine-state detector's settings; `None` when it is off.
    pub fn machine_state(&self) -> Option<crate::machine_state::DetectorSettings> {
        (self.machine_state_interval_seconds > 0).then(|| crate::machine_state::DetectorSettings {
            interval: Duration::from_secs(self.machine_state_interval_seconds),
            window: crate::store::machine_state::PassWindow {
                horizon: chrono::TimeDelta::minutes(self.machine_state_horizon_minutes.into()),
                max_lookback: chrono::TimeDelta::days(7),
                max_readings: 200_000,
            },
        })
    }

    pub fn relay_poll(&self) -> Duration {
        Duration::from_millis(self.relay_poll_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn report_batching(&self) -> ReportBatching {
        ReportBatching {
            lanes: self.report_lanes,
            max_batch: usize::try_from(self.report_batch_max).unwrap_or(usize::MAX),
        }
    }

    /// What a JWT must carry, when `--jwt-jwks` is set.
    pub fn jwt_settings(&self) -> Option<(JwksSource, JwtSettings, JwksSettings)> {
        let source = self.jwt_jwks.clone()?;
        let settings = JwtSettings {
            issuer: self.jwt_issuer.clone().unwrap_or_default(),
            audiences: self.jwt_audience.clone(),
            role_claim: self.jwt_role_claim.clone(),
            role_prefix: self.jwt_role_prefix.clone(),
            leeway: Duration::from_secs(self.jwt_leeway_seconds),
        };
        let jwks = JwksSettings {
            refresh: Duration::from_secs(self.jwt_jwks_refresh_seconds),
            ..JwksSettings::default()
        };
        Some((source, settings, jwks))
    }

    /// A configuration with every default, for tests (and no metrics listener, so tests in
    /// parallel do not compete for its port).
    pub fn for_urls(nats_url: &str, database_url: &str) -> Self {
        let mut c = Self::parse_from(["mes-api"]);
        c.nats = NatsArgs::for_url(nats_url);
        c.database_url = service::secrets::SecretUrl::new(database_url);
        c.metrics_listen = MetricsListen(None);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_target_local_services() {
        let c = Config::parse_from(["mes-api"]);
        assert_eq!(c.listen.to_string(), "0.0.0.0:8000");
        assert_eq!(c.op_run_names(), OpRunNames::default());
        assert_eq!(c.default_site, "BKK");
        assert_eq!(c.command, None);
        assert_eq!(c.report_batching(), ReportBatching::default());
        let c = Config::parse_from(["mes-api", "--report-lanes", "0"]);
        assert_eq!(c.report_batching().lanes, 0);
        let c = Config::parse_from(["mes-api", "seed-demo", "--namespace", "t1"]);
        assert_eq!(c.command, Some(Command::SeedDemo));
        assert_eq!(c.op_run_names().stream, "OP_RUN_t1");
        assert_eq!(c.jwt_jwks, None);
        assert_eq!(
            Config::parse_from(["mes-api"]).metrics_listen.to_string(),
            "127.0.0.1:9103"
        );
    }

    #[test]
    fn the_metrics_listener_is_an_address_or_off() {
        let parse = |v: &str| Config::try_parse_from(["mes-api", "--metrics-listen", v]);
        assert_eq!(
            parse("0.0.0.0:9103").unwrap().metrics_listen.to_string(),
            "0.0.0.0:9103"
        );
        assert_eq!(parse("off").unwrap().metrics_listen, MetricsListen(None));
        assert_eq!(parse("OFF").unwrap().metrics_listen, MetricsListen(None));
        assert!(parse("9103").is_err());
    }

    #[test]
    fn jwts_need_an_issuer_and_an_audience() {
        let base = ["mes-api", "--auth", "tokens"];
        let with = |extra: &[&str]| {
            Config::try_parse_from(base.iter().chain(extra).copied()).map(|c| c.jwt_settings())
        };
        assert!(with(&["--jwt-jwks", "jwks.json"]).is_err());
        assert!(with(&["--jwt-jwks", "jwks.json", "--jwt-issuer", "https://idp"]).is_err());
        assert!(
            with(&["--jwt-issuer", "https://idp"]).is_err(),
            "an issuer alone"
        );
        assert!(
            with(&[
                "--jwt-jwks",
                "http://idp.plant/certs",
                "--jwt-issuer",
                "i",
                "--jwt-audience",
                "a"
            ])
            .is_err(),
            "http only on loopback"
        );
        let (source, jwt, jwks) = with(&[
            "--jwt-jwks",
            "https://idp.plant/realms/p/protocol/openid-connect/certs",
            "--jwt-issuer",
            "https://idp.plant/realms/p",
            "--jwt-audience",
            "mes-api,account",
            "--jwt-role-claim",
            "realm_access.roles",
        ])
        .unwrap()
        .unwrap();
        assert!(matches!(source, JwksSource::Url(_)));
        assert_eq!(jwt.audiences, ["mes-api", "account"]);
        assert_eq!(jwt.role_claim.to_string(), "realm_access.roles");
        assert_eq!(jwt.leeway, Duration::from_secs(60));
        assert_eq!(jwks.refresh, Duration::from_secs(300));
    }

    #[test]
    fn token_names_cannot_be_jwt_actors() {
        let create = |name: &str| {
            Config::try_parse_from([
                "mes-api", "token", "create", "--role", "viewer", "--name", name,
            ])
        };
        assert!(create("hmi-line-1").is_ok());
        assert!(create("jwt:someone").is_err());
        assert!(create("JWT:someone").is_err());
        assert!(create("my-jwt:x").is_ok());
    }
}
