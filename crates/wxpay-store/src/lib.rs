//! Persistence for wxpay: one `Store` over SQLite (the embedded default) or PostgreSQL.
//!
//! Every domain operation is one transaction with a name (`create_order`, `mark_paid`, ...).
//! Times are unix milliseconds, money is integer fen. SQL is written once, in the dialect both
//! databases share (`$n` placeholders, `RETURNING`, guarded `UPDATE ... WHERE state = ...`).

pub mod admin;
mod gauges;
pub mod idempotency;
mod model;
mod ops;
pub mod reconcile;
mod refunds;
pub mod testing;
mod webhooks;
mod work;

pub use gauges::Gauges;
pub use model::*;
pub use ops::*;
pub use refunds::*;
pub use webhooks::*;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors of the store. A `Conflict` or `NotFound` is a business answer, `Db` is infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Rejected(#[from] ops::Rejection),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database handle shared by every request and worker.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Connects to `sqlite://path`, `sqlite::memory:` or `postgres://...`, and runs migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        let store = Self::connect_no_migrate(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without running migrations.
    pub async fn connect_no_migrate(url: &str) -> Result<Store> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(format!(
                "database_url must start with sqlite: or postgres:// (got a url starting {:?})",
                url.split(':').next().unwrap_or("")
            )));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = sqlite_url_with_create(url);
                // SQLite has one writer: one connection serialises every transaction in this
                // process without SQLITE_BUSY upgrades, and no transaction ever spans a network
                // call, so the connection is only held for microseconds.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                // No ping before each checkout: it is a round trip per query on the hot path. A
                // connection that died (a restarted server) fails its next query, sqlx drops it,
                // and the request or job is retried like any failed one.
                AnyPoolOptions::new()
                    .max_connections(32)
                    .min_connections(1)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?
            }
        };
        Ok(Store { pool, backend })
    }

    /// Applies the schema migrations of this backend (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn sqlite_url_with_create(url: &str) -> String {
    if url.contains(":memory:") || url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}
