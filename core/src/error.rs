//! Errors classified by what the runtime should do with them.

use std::fmt;

/// What the runtime does when a component fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, server restarting: reconnect with back-off and resume from the checkpoint.
    Transient,
    /// Retrying cannot help (slot gone, position gap, bad configuration): stop and tell the operator.
    Fatal,
    /// Another process runs this pipeline (it holds the lease): wait as a standby and take over when it stops.
    Standby,
    /// The target refused one row for the row's own sake (a constraint, a value out of range or too long): the
    /// pipeline's `on_error` policy decides ([`crate::dead_letter::OnError`]), once the row is found.
    Row,
    /// The pipeline cannot go on until an operator acts (`max_dead_letters` reached): it waits and looks again.
    Paused,
}

/// A component failure with the operator-facing context and the underlying cause.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub class: ErrorClass,
    /// What failed and, for fatal errors, what to do about it.
    pub message: String,
    /// The server's own code for the failure (SQLSTATE `23514`, a MySQL error number), where there is one.
    pub code: Option<String>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for Error {
    /// The message, then each cause in turn (a TLS failure inside a connection error, say); a cause whose text
    /// is already shown is skipped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.message.clone();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(c) = cause {
            let text = c.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cause = c.source();
        }
        // Some drivers repeat their own prefix in a wrapped cause ("Input/output error: Input/output error: …"):
        // each part is said once.
        let mut parts: Vec<&str> = Vec::new();
        for part in shown.split(": ") {
            if parts.last() != Some(&part) {
                parts.push(part);
            }
        }
        f.write_str(&parts.join(": "))
    }
}

impl Error {
    pub fn transient(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            class: ErrorClass::Transient,
            message: message.into(),
            code: None,
            source: Some(source.into()),
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Fatal,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    pub fn fatal_from(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            class: ErrorClass::Fatal,
            message: message.into(),
            code: None,
            source: Some(source.into()),
        }
    }

    /// Another process holds the pipeline's lease; `message` names the pipeline and that process.
    pub fn standby(message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Standby,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    /// A row the target refused (see [`ErrorClass::Row`]), with the target's `code` for it.
    pub fn row(
        message: impl Into<String>,
        code: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error {
            class: ErrorClass::Row,
            message: message.into(),
            code: Some(code.into()),
            source: Some(source.into()),
        }
    }

    /// The pipeline waits for an operator; `message` says what to do.
    pub fn paused(message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Paused,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    /// A connection to `what` that failed. `refused`: the server turned down the credentials or the database
    /// (retrying the same settings cannot help, so the error is fatal and says what to check); otherwise the
    /// failure is transient.
    pub fn connect_failed(
        what: &str,
        refused: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        if refused {
            Error::fatal_from(
                format!(
                    "{what} refused the connection: check the user, password and database in its URL, and what \
                     the server allows that user (pg_hba.conf, grants)"
                ),
                source,
            )
        } else {
            Error::transient(format!("cannot connect to {what}"), source)
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// MySQL / MariaDB server errors that refuse a connection for good: no access to the database (1044), wrong
/// credentials (1045), no such database (1049).
pub fn mysql_refuses(code: u16) -> bool {
    matches!(code, 1044 | 1045 | 1049)
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failure")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn display_walks_the_cause_chain() {
        let e = Error::transient(
            "connecting",
            Outer(std::io::Error::other("bad certificate")),
        );
        assert_eq!(e.to_string(), "connecting: outer failure: bad certificate");
    }

    #[test]
    fn each_cause_is_said_once() {
        #[derive(Debug)]
        struct Inner;
        impl fmt::Display for Inner {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Input/output error: Input/output error: Connection refused")
            }
        }
        impl std::error::Error for Inner {}
        let e = Error::transient("cannot connect to the MySQL target", Inner);
        assert_eq!(
            e.to_string(),
            "cannot connect to the MySQL target: Input/output error: Connection refused"
        );
    }
}
