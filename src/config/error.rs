//! Configuration errors, worded so that an operator can fix the file without reading code:
//! every message names the file, and where it applies the service and the field.

use std::fmt;

/// Where in the file a problem sits: the service (by name, or by position when it has no
/// usable name) and, when known, the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub service: String,
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service '{}'", self.service)?;
        if let Some(field) = &self.field {
            write!(f, ", field '{field}'")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// The document parses but its top level is not `{"services": [...]}` or `{"services": {...}}`.
    #[error("{file}: {message}")]
    Structure { file: String, message: String },

    #[error("{file}: {at}: {message}")]
    Service {
        file: String,
        at: Location,
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn service(
        file: &str,
        service: &str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Service {
            file: file.to_owned(),
            at: Location {
                service: service.to_owned(),
                field: field.map(str::to_owned),
            },
            message: message.into(),
        }
    }
}
