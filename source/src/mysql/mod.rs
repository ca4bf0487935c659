//! The MySQL / MariaDB row-binlog source. So far: connecting and `ferry check`'s prerequisites; reading the
//! binlog is the MySQL-source issue's remaining work.

mod catalog;
mod check;
pub mod decoder;
pub mod file;
mod jsonb;
mod layout;
mod mariadb;
mod rows;
mod statement;

use ferry_core::Error;

pub use check::check_prerequisites;

/// Parses a `mysql://` (or `mariadb://`) URL into connection options.
pub fn connection_options(url: &str) -> Result<mysql_async::Opts, Error> {
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    mysql_async::Opts::from_url(&url).map_err(|e| Error::fatal_from("MySQL source url", e))
}

/// Opens an ordinary connection.
pub async fn connect(url: &str) -> Result<mysql_async::Conn, Error> {
    mysql_async::Conn::new(connection_options(url)?)
        .await
        .map_err(|e| Error::transient("cannot connect to the MySQL source", e))
}
