//! A PostgreSQL database of its own for each test, on the server tests/pg/pg.sh starts: tests run
//! in parallel and leave nothing behind in one another's way.

use sqlx::Connection;

/// A fresh database; [`TestDb::drop_now`] removes it after a passing test (a failing test keeps
/// its database for inspection; `pg.sh stop` removes everything).
pub struct TestDb {
    /// The database's URL, for the node or ledger under test.
    pub url: String,
    admin: String,
    name: String,
}

impl TestDb {
    /// Creates `cf_<test>_<uuid>` through `admin` (a user with CREATEDB). The name is lower case
    /// and at most 63 bytes, unique across parallel tests and repeated runs.
    pub async fn create(admin: &str, test: &str) -> TestDb {
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(30)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!("cf_{short}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE (the user needs CREATEDB)");
        conn.close().await.ok();
        TestDb {
            url: with_database(admin, &name),
            admin: admin.to_string(),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same database through another loopback port (a fault proxy in front of the server).
    pub fn url_via_port(&self, port: u16) -> String {
        let (creds, rest) = self.url.rsplit_once('@').expect("a URL with credentials");
        let (_, db) = rest.split_once('/').expect("a database");
        format!("{creds}@127.0.0.1:{port}/{db}")
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        let (_, rest) = self.url.rsplit_once('@').expect("a URL with credentials");
        let (hostport, _) = rest.split_once('/').expect("a database");
        hostport
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("a port")
    }

    /// Drops the database, cutting its connections. Best effort, three tries: a passing test
    /// does not fail over its clean-up.
    pub async fn drop_now(&self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        for _ in 0..3 {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
                let done = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut conn)
                    .await;
                conn.close().await.ok();
                if done.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        eprintln!("warning: could not drop the test database {}", self.name);
    }
}

/// `postgres://u:p@h:port/db?x=y` with `db` replaced (the query, if any, kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "cf_x"),
            "postgres://u:p@127.0.0.1:5432/cf_x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/postgres?sslmode=disable", "cf_x"),
            "postgres://u:p@h:1/cf_x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:1", "cf_x"),
            "postgres://h:1/cf_x"
        );
    }
}
