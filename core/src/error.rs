//! Errors classified by what the runtime should do with them.

use std::fmt;

/// What the runtime does when a component fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection lost, server restarting: reconnect with back-off and resume from the checkpoint.
    Transient,
    /// Retrying cannot help (slot gone, position gap, bad configuration): stop and tell the operator.
    Fatal,
}

/// A component failure with the operator-facing context and the underlying cause.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub class: ErrorClass,
    /// What failed and, for fatal errors, what to do about it.
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
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
            source: Some(source.into()),
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Error {
            class: ErrorClass::Fatal,
            message: message.into(),
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
            source: Some(source.into()),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
