//! Databases for tests: a fresh SQLite file, and — when `WXPAY_TEST_DATABASE_URL` is set — a
//! fresh PostgreSQL database with a random name, dropped when the handle is dropped.

use crate::{Result, Store};
use sqlx::{AnyConnection, Connection, Executor};

/// The variable that points the suites at a real PostgreSQL server.
pub const DATABASE_ENV: &str = "WXPAY_TEST_DATABASE_URL";

/// A throw-away database. Dropping it deletes the SQLite file or drops the PostgreSQL database.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Postgres { admin_url: String, name: String },
}

fn random_suffix() -> String {
    crate::new_id("").to_lowercase()
}

impl TestDb {
    /// A new SQLite database in a temporary file.
    pub async fn sqlite() -> Result<TestDb> {
        let path = std::env::temp_dir().join(format!("wxpay-test-{}.db", random_suffix()));
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url).await?;
        Ok(TestDb {
            store,
            url,
            cleanup: Cleanup::File(path),
        })
    }

    /// A new PostgreSQL database next to the one `admin_url` points at.
    pub async fn postgres(admin_url: &str) -> Result<TestDb> {
        sqlx::any::install_default_drivers();
        let name = format!("wxpay_t_{}", random_suffix());
        let mut admin = AnyConnection::connect(admin_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        admin.close().await?;
        let url = replace_db_name(admin_url, &name);
        let store = Store::connect(&url).await?;
        Ok(TestDb {
            store,
            url,
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_string(),
                name,
            },
        })
    }

    /// SQLite always; PostgreSQL too when `WXPAY_TEST_DATABASE_URL` is set (a reason is printed
    /// when it is not).
    pub async fn all() -> Result<Vec<TestDb>> {
        let mut dbs = vec![TestDb::sqlite().await?];
        match std::env::var(DATABASE_ENV) {
            Ok(url) if !url.is_empty() => dbs.push(TestDb::postgres(&url).await?),
            _ => eprintln!(
                "note: {DATABASE_ENV} is not set; skipping the PostgreSQL run of this test"
            ),
        }
        Ok(dbs)
    }

    /// PostgreSQL only, when configured; `None` (with a printed reason) otherwise.
    pub async fn postgres_from_env() -> Result<Option<TestDb>> {
        match std::env::var(DATABASE_ENV) {
            Ok(url) if !url.is_empty() => Ok(Some(TestDb::postgres(&url).await?)),
            _ => {
                eprintln!("skipped: {DATABASE_ENV} is not set");
                Ok(None)
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self.store.backend() {
            crate::Backend::Sqlite => "sqlite",
            crate::Backend::Postgres => "postgres",
        }
    }
}

/// `postgres://u@h:5432/test?x` with the database name replaced.
pub fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host = match path_start {
        Some(i) => &base[..i],
        None => base,
    };
    match query {
        Some(q) => format!("{host}/{name}?{q}"),
        None => format!("{host}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Postgres { admin_url, name } => {
                let admin_url = admin_url.clone();
                let name = name.clone();
                // Drop runs inside the test's runtime, which is blocked while we wait: do the
                // cleanup on a thread with its own runtime, and let the server cut our connections
                // (WITH (FORCE)) rather than closing a pool that the blocked runtime drives.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut admin) = AnyConnection::connect(&admin_url).await {
                            let _ = admin
                                .execute(sqlx::AssertSqlSafe(format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                )))
                                .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::replace_db_name;

    #[test]
    fn replaces_the_database_name_only() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://u@h/test?sslmode=disable", "y"),
            "postgres://u@h/y?sslmode=disable"
        );
        assert_eq!(
            replace_db_name("postgres://u@h:1", "z"),
            "postgres://u@h:1/z"
        );
    }
}
