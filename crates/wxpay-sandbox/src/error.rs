//! The sandbox's error type.

/// Everything that can go wrong when building, configuring or driving the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The configuration is invalid (bad TOML, missing key file, inconsistent merchant, ...).
    #[error("sandbox configuration: {0}")]
    Config(String),
    /// Reading a file or binding a socket failed.
    #[error("sandbox i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A protocol-level operation (key parsing, signing, encryption) failed.
    #[error("sandbox protocol: {0}")]
    Proto(#[from] wxpay_proto::ProtoError),
    /// The thing asked for (order, merchant, prepay id, ...) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with the current state (already paid, closed, expired, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl SandboxError {
    /// The HTTP status the control API answers for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            SandboxError::NotFound(_) => 404,
            SandboxError::Conflict(_) => 409,
            SandboxError::BadRequest(_) | SandboxError::Config(_) => 400,
            SandboxError::Io(_) | SandboxError::Proto(_) => 500,
        }
    }
}
