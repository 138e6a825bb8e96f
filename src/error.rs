//! The error every RPC returns: a gRPC status code plus the exact message SPIRE shows.
//! Kept free of grpcio so the key manager core builds and tests without the transport.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    Aborted,
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct PluginError {
    pub code: Code,
    pub message: String,
}

impl PluginError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        PluginError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// The same code with `prefix: ` in front of the message, as the reference wraps errors.
    pub fn context(self, prefix: &str) -> Self {
        PluginError {
            code: self.code,
            message: format!("{prefix}: {}", self.message),
        }
    }
}
