//! The daemon-owned schema: versioned migrations applied at open, and the identity check that
//! comes before them.
//!
//! `schema_migrations` lists the versions applied. At open, one transaction takes an advisory
//! lock (two nodes starting together migrate once; the second waits and finds nothing to
//! do), refuses a database whose newest version this build does not know, compares the
//! recorded identity recipient with ours (before any DDL), applies what is missing in order,
//! records the recipient in a new database, and commits. A failure anywhere leaves the
//! database as it was.

use tokio_postgres::GenericClient;

use super::{Error, Result};

/// The migrations, in order: `MIGRATIONS[i]` is version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_waiting_buckets.sql"),
    include_str!("migrations/0003_ordered_count_locks.sql"),
    include_str!("migrations/0004_flush_marks.sql"),
];

/// The newest schema version this build knows.
pub const PG_SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock key that serializes migrations (any constant distinct from the
/// leadership key; "boa-migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x626f_612d_6d69_6772;

/// Meta key of the identity's recipient (the sled store's name, so backups skip it alike).
pub(super) const META_RECIPIENT: &str = "vault_recipient";

/// The recipient the database records, when it has a meta table and the row.
///
/// # Errors
/// [`Error::Unavailable`], [`Error::Db`].
pub(super) async fn recorded_recipient(c: &impl GenericClient) -> Result<Option<String>> {
    let has_meta: bool = c
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !has_meta {
        return Ok(None);
    }
    let row = c
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&META_RECIPIENT])
        .await?;
    Ok(row.map(|r| String::from_utf8_lossy(r.get::<_, &[u8]>(0)).into_owned()))
}

/// The newest version applied (0 for a database never migrated).
async fn applied(c: &impl GenericClient) -> Result<i32> {
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = c
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Checks and migrates (see the module docs).
///
/// # Errors
/// [`Error::NewerSchema`], [`Error::IdentityMismatch`], [`Error::Unavailable`], [`Error::Db`].
pub(super) async fn prepare(client: &mut deadpool_postgres::Object, recipient: &str) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let found = applied(&*tx).await?;
    if found > PG_SCHEMA_VERSION {
        return Err(Error::NewerSchema {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    if let Some(expected) = recorded_recipient(&*tx).await? {
        if expected != recipient {
            return Err(Error::IdentityMismatch {
                expected,
                found: recipient.to_string(),
            });
        }
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= found {
            continue;
        }
        tracing::info!(version, "applying postgres migration");
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        &[&META_RECIPIENT, &recipient.as_bytes()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_the_files() {
        assert_eq!(PG_SCHEMA_VERSION, 4);
        assert!(MIGRATIONS[0].contains("CREATE TABLE companies"));
        assert!(MIGRATIONS[1].contains("CREATE TABLE company_waiting"));
        assert!(MIGRATIONS[2].contains("ORDER BY name"));
        assert!(MIGRATIONS[3].contains("CREATE TABLE flush_marks"));
    }
}
