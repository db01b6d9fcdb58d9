//! Why a message, or a query parameter, was refused.

/// Why a message (or a query parameter) was refused. Every variant maps to HTTP 400 and names
/// the first field at fault, as a dotted path such as `metadata.messageNumber`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The body is not a JSON document, or not an object.
    #[error("{detail}")]
    Malformed { field: &'static str, detail: String },
    /// A required field is absent or null.
    #[error("{field} is required")]
    Missing { field: &'static str },
    /// A field holds the wrong JSON type.
    #[error("{field} must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    /// A field has the right type but a value outside its domain.
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ValidationError {
    /// Stable machine-readable code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "malformed_body",
            Self::Missing { .. } => "missing_field",
            Self::WrongType { .. } => "invalid_type",
            Self::Invalid { .. } => "invalid_value",
        }
    }

    /// The dotted path of the offending field (`body` for the body as a whole).
    pub fn field(&self) -> &'static str {
        match self {
            Self::Malformed { field, .. }
            | Self::Missing { field }
            | Self::WrongType { field, .. }
            | Self::Invalid { field, .. } => field,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}
