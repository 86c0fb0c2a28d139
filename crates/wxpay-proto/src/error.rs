//! The one error type of the protocol crate. Messages never contain secrets.

/// Everything that can go wrong while building, signing, parsing or verifying a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A field is missing or has a value the protocol does not allow.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    /// Input could not be parsed (query string, XML, JSON, PEM, Base64, CSV, ...).
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// Text cannot be represented in the requested charset.
    #[error("text cannot be encoded as {charset}")]
    Unencodable { charset: &'static str },
    /// A signature did not verify; `what` says which one.
    #[error("signature mismatch: {what}")]
    BadSignature { what: &'static str },
    /// A key has the wrong form or length.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Encryption or decryption failed (wrong key, tampered ciphertext or tag).
    #[error("crypto failure: {0}")]
    Crypto(&'static str),
}

impl ProtoError {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProtoError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
    pub fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        ProtoError::Malformed {
            what,
            reason: reason.into(),
        }
    }
}
