//! PostgreSQL set-up shared by ingest-worker and mes-api: both own the schema in
//! `db/migrations`, either may start first, and several replicas may start at once.
//!
//! # The legacy migration history
//! Until issue 12, `db/migrations` held eight files (`0001_readings` … `0008_outbox_no_notify`)
//! that mixed concerns and seeded plant data. They were rewritten as files with one concern each
//! (versions 1..=[`REBASELINED_THROUGH`]) whose result is the same schema, object by object (the
//! service crate's `migrations` test compares them). A database created by an earlier release
//! records versions 1..=8 with the old files' checksums, which sqlx would refuse. [`migrate`]
//! recognises exactly that history and rebaselines it: under sqlx's migration lock, in one
//! transaction, it removes the eight old records and records the new versions as applied, then
//! migrates as usual. Any other history this release cannot continue from is refused with
//! [`UnknownHistory`], never rebaselined by guess.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use thiserror::Error;
use tracing::{info, instrument, warn};

/// The migrations in `db/migrations`, embedded at build time (tests compare against it).
pub static MIGRATOR: Migrator = sqlx::migrate!("../db/migrations");

/// The history a database created before issue 12 records: version and checksum of each
/// migration file of that layout. The checksum is what sqlx stores in `_sqlx_migrations`, the
/// SHA-384 of the file's bytes, here in hex: `sha384sum` of the files as released (the last
/// commit before the split, afef5a1), which are kept unchanged only as a test fixture in
/// `service/tests/fixtures/legacy-migrations/` (a test checks these constants against them).
/// Never edit: they identify databases in the field.
pub const LEGACY_HISTORY: [(i64, &str); 8] = [
    (1, "92647451899d8bca963756f73fdb32fc6a366bb76fb1fa75093f2c30c08de1da67e10d07c3ec5c6fc2e2cfb2fdc8044e"),
    (2, "baf0720e94bee6f21a7ffb21a51f821fc66c2b980c18bc11eafc6023c9c912341d522b26764850a7dd91abec66273aa7"),
    (3, "c432a0eb8642b479af9480072fb859d33fe995d47c726c379d558f491d7314216922169d46db6dc2ea1c381fd5adfdfd"),
    (4, "2fa151e69bafc96f102f610eecd776e9816668d43277c95441dcdd7bf7658e4c30d61133c24086591ad92c3718ec0f00"),
    (5, "47bb78f3dfe8e8b5b1ce19bb2713c46fb9b733a8cbeb52969dbc4f3bf5dd11001f1803e0a1eec8bb345f0dba4173dd3f"),
    (6, "8f99745e18a7e5429a342a13d035b995c6aca6336979c23d88fc53d01b8e4d14a53bdf218dacecbdfb3f7186a0f03864"),
    (7, "5fa412ee8cb24a93cfd4b59dc9dd1ed30dcc4f302e01162317255ebbfc1988aa8efbd86581f81573527095775b5bf745"),
    (8, "008013ee704f8ccc62cb74d7872045e9ed2d651c3777e471a53850df1b137de161e3bca2b19ec96c496f60fe60b52e8e"),
];

/// The current migrations 1..=this produce the schema of the legacy history: a rebaselined
/// database records exactly these as applied and gets every later one applied as usual. Never
/// change it when adding a migration.
pub const REBASELINED_THROUGH: i64 = 10;

#[derive(Debug, Error)]
pub enum DbSetupError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create database {name}: {source}")]
    CreateDatabase {
        name: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot read or rebaseline the migration history: {0}")]
    History(#[source] sqlx::Error),
    #[error(transparent)]
    UnknownHistory(#[from] UnknownHistory),
    /// The login may not change the schema and the schema is behind this release.
    #[error(
        "the database lacks migrations {missing:?} of this release, and login {login:?} may not \
         apply them (it runs with least privilege): apply them as the schema's owner first, \
         e.g. `mes-api migrate` with the owner's DATABASE_URL"
    )]
    NotMigrated { login: String, missing: Vec<i64> },
    #[error("cannot check the migration state: {0}")]
    Check(#[source] sqlx::Error),
}

/// Whether a service applies the migrations at start (`--migrate`, `DB_MIGRATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MigrateMode {
    /// Apply them when the login may change the schema (the owner, a superuser); a
    /// least-privilege login only checks that they were applied.
    #[default]
    Auto,
    /// Apply them; fail if the login may not.
    Always,
    /// Only check that every migration of this release was applied.
    Never,
}

/// Prepares the schema at a service's start according to `mode`: migrate (as the owner), or,
/// for a least-privilege run-time login, check that the owner already did.
#[instrument(skip(pool), err)]
pub async fn prepare(pool: &PgPool, mode: MigrateMode) -> Result<(), DbSetupError> {
    let may_migrate = match mode {
        MigrateMode::Always => true,
        MigrateMode::Never => false,
        MigrateMode::Auto => may_change_schema(pool).await?,
    };
    if may_migrate {
        return migrate(pool).await;
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .or_else(|e| match &e {
                // No history table at all: nothing applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    Ok(Vec::new())
                }
                _ => Err(e),
            })
            .map_err(DbSetupError::Check)?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        info!("schema is current; this login does not migrate");
        return Ok(());
    }
    let login: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(pool)
        .await
        .map_err(DbSetupError::Check)?;
    Err(DbSetupError::NotMigrated { login, missing })
}

/// The login may change the schema: a superuser, or the owner of the migration history (or,
/// on an empty database, one that may create in schema `public`).
async fn may_change_schema(pool: &PgPool) -> Result<bool, DbSetupError> {
    sqlx::query_scalar(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
             OR CASE WHEN to_regclass('_sqlx_migrations') IS NULL
                     THEN has_schema_privilege('public', 'CREATE')
                     ELSE pg_has_role((SELECT relowner FROM pg_class
                                       WHERE oid = to_regclass('_sqlx_migrations')), 'USAGE')
                END",
    )
    .fetch_one(pool)
    .await
    .map_err(DbSetupError::Check)
}

/// A `_sqlx_migrations` history this release cannot continue from. Nothing was changed: the
/// database needs a person, not a guess.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnknownHistory {
    /// Migrations of the layout before issue 12 are applied, but not exactly versions 1..=8,
    /// the only legacy history whose schema is known.
    #[error(
        "the database has the migration history of a release before the migrations were split \
         by concern, but not exactly versions 1..=8 all applied (found {versions:?}); only that \
         history can be rebaselined: complete it with the release that created the database, \
         then start this one"
    )]
    IncompleteLegacy { versions: Vec<i64> },
    /// A migration was applied from a file that is neither this release's nor the legacy one.
    #[error(
        "migration {version} was applied from a file with checksum {checksum:.16}…, which is \
         neither this release's nor the legacy layout's; refusing to guess the schema"
    )]
    ChecksumMismatch { version: i64, checksum: String },
    /// The legacy records changed between reading and rebaselining them (a migrator that does
    /// not take sqlx's lock?); the rebaseline was rolled back.
    #[error("the legacy migration history changed while it was being rebaselined; rolled back")]
    ChangedDuringRebaseline,
}

/// Pool settings of a binary.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: &'static str,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// `None`: sqlx's default, a ping before every acquire. `Some(d)`: ping only a connection
    /// idle for longer than `d` — a busy pool then costs no extra round trip per use, and a
    /// connection broken by a database restart within `d` fails the one use that gets it.
    pub ping_if_idle_for: Option<Duration>,
}

/// Opens a pool, creating the database first if the server says it does not exist.
#[instrument(skip_all, fields(app = settings.application_name), err)]
pub async fn connect(url: &str, settings: &PoolSettings) -> Result<PgPool, DbSetupError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(DbSetupError::InvalidUrl)?
        .application_name(settings.application_name)
        // No JIT: the services' statements are short, and the planner's estimates for the
        // calendar functions (plpgsql calls, a row per site) pass jit_optimize_above_cost, so
        // PostgreSQL spent ~300 ms compiling a board snapshot that runs in 7 ms.
        .options([("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Trace);
    let mut pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        // Every connection checks, when it opens, that the storage engine the database was
        // created with is loaded (crate::storage).
        .after_connect(|conn, _| Box::pin(crate::storage::check(conn)));
    if let Some(idle) = settings.ping_if_idle_for {
        pool_options = pool_options
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > idle {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            });
    }
    match pool_options.clone().connect_with(options.clone()).await {
        Ok(pool) => Ok(pool),
        Err(e) if is_missing_database(&e) => {
            create_database(&options).await?;
            pool_options
                .connect_with(options)
                .await
                .map_err(DbSetupError::Connect)
        }
        Err(e) => Err(DbSetupError::Connect(e)),
    }
}

fn is_missing_database(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000"))
}

async fn create_database(options: &PgConnectOptions) -> Result<(), DbSetupError> {
    let name = options.get_database().unwrap_or("edge_mes").to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(DbSetupError::Connect)?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&sql).execute(&mut admin).await {
        Ok(_) => info!(database = %name, "created database"),
        // Another replica won the race.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
        Err(source) => return Err(DbSetupError::CreateDatabase { name, source }),
    }
    let _ = admin.close().await;
    Ok(())
}

/// Applies pending migrations of `db/migrations` (embedded at build time), after rebaselining a
/// database at the legacy history (see the module docs). It holds sqlx's migration lock
/// meanwhile, so replicas starting together rebaseline and apply once. Migrations this binary
/// does not know (applied by a newer binary during a rolling upgrade) are tolerated.
#[instrument(skip_all, err)]
pub async fn migrate(pool: &PgPool) -> Result<(), DbSetupError> {
    let mut conn = pool.acquire().await.map_err(DbSetupError::Connect)?;
    // The lock sqlx's migrator takes (an advisory lock keyed on the database name), taken here so
    // that reading, rebaselining and migrating are one critical section on one session.
    conn.lock().await?;
    let result = migrate_locked(&mut conn).await;
    if let Err(e) = conn.unlock().await {
        // Closing the session releases the lock; never hand it back to the pool holding it.
        warn!(error = %e, "cannot release the migration lock; closing the connection");
        let _ = conn.detach().close().await;
        result?;
        return Err(e.into());
    }
    result
}

async fn migrate_locked(conn: &mut PgConnection) -> Result<(), DbSetupError> {
    conn.ensure_migrations_table().await?;
    let applied = applied_history(conn).await?;
    let current: Vec<(i64, String)> = MIGRATOR
        .iter()
        .map(|m| (m.version, hex(&m.checksum)))
        .collect();
    if classify(&applied, &current)? == History::Legacy {
        rebaseline(conn).await?;
    }
    let mut migrator = sqlx::migrate!("../db/migrations");
    migrator.set_ignore_missing(true);
    // `migrate` holds the lock.
    migrator.set_locking(false);
    // `run_direct`, not `run`: `run` takes an `Acquire`, whose lifetime bound makes the future of
    // `migrate` not `Send` (sqlx marks `run_direct` as the way around that).
    migrator.run_direct(conn).await?;
    Ok(())
}

/// One row of `_sqlx_migrations`, checksum in hex.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct AppliedMigration {
    version: i64,
    checksum: String,
    success: bool,
}

async fn applied_history(conn: &mut PgConnection) -> Result<Vec<AppliedMigration>, DbSetupError> {
    sqlx::query_as(
        "SELECT version, encode(checksum, 'hex') AS checksum, success \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(conn)
    .await
    .map_err(DbSetupError::History)
}

#[derive(Debug, PartialEq, Eq)]
enum History {
    /// Empty, or a prefix of the current migrations (plus a newer binary's): sqlx continues.
    Continue,
    /// Exactly the legacy versions 1..=8: rebaseline, then continue.
    Legacy,
}

/// What `applied` (ordered by version) is, given the `current` migrations' versions and hex
/// checksums.
fn classify(
    applied: &[AppliedMigration],
    current: &[(i64, String)],
) -> Result<History, UnknownHistory> {
    let is_legacy = applied.len() == LEGACY_HISTORY.len()
        && applied
            .iter()
            .zip(LEGACY_HISTORY)
            .all(|(a, (version, checksum))| {
                a.success && a.version == version && a.checksum == checksum
            });
    if is_legacy {
        return Ok(History::Legacy);
    }
    let current: HashMap<i64, &str> = current.iter().map(|(v, c)| (*v, c.as_str())).collect();
    for a in applied {
        match current.get(&a.version) {
            // A newer binary's migration, or one of ours as this release has it.
            None => {}
            Some(expected) if *expected == a.checksum => {}
            Some(_) if legacy_checksum(a.version) == Some(a.checksum.as_str()) => {
                return Err(UnknownHistory::IncompleteLegacy {
                    versions: applied.iter().map(|a| a.version).collect(),
                })
            }
            Some(_) => {
                return Err(UnknownHistory::ChecksumMismatch {
                    version: a.version,
                    checksum: a.checksum.clone(),
                })
            }
        }
    }
    Ok(History::Continue)
}

fn legacy_checksum(version: i64) -> Option<&'static str> {
    LEGACY_HISTORY
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, c)| *c)
}

/// Replaces the legacy records by the current migrations 1..=[`REBASELINED_THROUGH`], recorded as
/// sqlx records an applied migration (description, checksum, success), in one transaction.
async fn rebaseline(conn: &mut PgConnection) -> Result<(), DbSetupError> {
    let mut tx = conn.begin().await.map_err(DbSetupError::History)?;
    let (versions, checksums): (Vec<i64>, Vec<&str>) = LEGACY_HISTORY.iter().copied().unzip();
    let removed = sqlx::query(
        "DELETE FROM _sqlx_migrations m \
         USING unnest($1::int8[], $2::text[]) AS legacy (version, checksum) \
         WHERE m.version = legacy.version AND m.checksum = decode(legacy.checksum, 'hex') \
           AND m.success",
    )
    .bind(&versions)
    .bind(&checksums)
    .execute(&mut *tx)
    .await
    .map_err(DbSetupError::History)?
    .rows_affected();
    if removed != LEGACY_HISTORY.len() as u64 {
        return Err(UnknownHistory::ChangedDuringRebaseline.into());
    }
    for m in MIGRATOR
        .iter()
        .filter(|m| m.version <= REBASELINED_THROUGH && !m.migration_type.is_down_migration())
    {
        // Nothing was executed: execution_time (nanoseconds) 0.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, 0)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .execute(&mut *tx)
        .await
        .map_err(DbSetupError::History)?;
    }
    tx.commit().await.map_err(DbSetupError::History)?;
    info!(
        legacy_versions = LEGACY_HISTORY.len(),
        recorded_through = REBASELINED_THROUGH,
        "rebaselined the legacy migration history"
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn row(version: i64, checksum: &str) -> AppliedMigration {
        AppliedMigration {
            version,
            checksum: checksum.to_owned(),
            success: true,
        }
    }

    fn legacy(versions: std::ops::RangeInclusive<i64>) -> Vec<AppliedMigration> {
        LEGACY_HISTORY
            .iter()
            .filter(|(v, _)| versions.contains(v))
            .map(|(v, c)| row(*v, c))
            .collect()
    }

    fn current() -> Vec<(i64, String)> {
        MIGRATOR
            .iter()
            .map(|m| (m.version, hex(&m.checksum)))
            .collect()
    }

    fn current_rows(versions: std::ops::RangeInclusive<i64>) -> Vec<AppliedMigration> {
        current()
            .into_iter()
            .filter(|(v, _)| versions.contains(v))
            .map(|(v, c)| row(v, &c))
            .collect()
    }

    #[test]
    fn the_current_migrations_cover_the_rebaselined_versions_without_gaps() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(
            versions[..REBASELINED_THROUGH as usize],
            (1..=REBASELINED_THROUGH).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_empty_history_continues() {
        assert_eq!(classify(&[], &current()), Ok(History::Continue));
    }

    #[test]
    fn exactly_the_legacy_history_is_rebaselined() {
        assert_eq!(classify(&legacy(1..=8), &current()), Ok(History::Legacy));
    }

    #[test]
    fn a_current_history_continues_also_with_a_newer_binarys_migrations() {
        let mut applied = current_rows(1..=REBASELINED_THROUGH);
        assert_eq!(classify(&applied, &current()), Ok(History::Continue));
        applied.push(row(REBASELINED_THROUGH + 100, "ab"));
        assert_eq!(classify(&applied, &current()), Ok(History::Continue));
        assert_eq!(
            classify(&current_rows(1..=4), &current()),
            Ok(History::Continue)
        );
    }

    #[test]
    fn a_partly_applied_legacy_history_is_refused() {
        assert_eq!(
            classify(&legacy(1..=5), &current()),
            Err(UnknownHistory::IncompleteLegacy {
                versions: vec![1, 2, 3, 4, 5]
            })
        );
    }

    #[test]
    fn a_legacy_history_of_only_the_unchanged_files_continues() {
        // 0001 and 0002 kept their bytes, so legacy 1..=2 is also a current history.
        assert_eq!(classify(&legacy(1..=2), &current()), Ok(History::Continue));
    }

    #[test]
    fn a_legacy_history_with_a_failed_migration_is_refused() {
        let mut applied = legacy(1..=8);
        applied[5].success = false;
        assert!(matches!(
            classify(&applied, &current()),
            Err(UnknownHistory::IncompleteLegacy { .. })
        ));
    }

    #[test]
    fn a_legacy_history_with_more_versions_is_refused() {
        let mut applied = legacy(1..=8);
        applied.push(row(9, &current()[8].1));
        assert!(matches!(
            classify(&applied, &current()),
            Err(UnknownHistory::IncompleteLegacy { .. })
        ));
    }

    #[test]
    fn a_checksum_of_neither_layout_is_refused() {
        let mut applied = current_rows(1..=REBASELINED_THROUGH);
        applied[6].checksum = "00".repeat(48);
        assert_eq!(
            classify(&applied, &current()),
            Err(UnknownHistory::ChecksumMismatch {
                version: 7,
                checksum: "00".repeat(48)
            })
        );
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
