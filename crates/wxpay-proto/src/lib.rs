//! Pure WeChat Pay protocol: money, signatures, verification and message types for the legacy
//! 2014 APP payment, APIv2 signing and APIv3. No I/O, no async, no clock reads: times and nonces
//! are arguments. See `CONTRACT.md` beside this crate for the public API.

pub mod bill;
pub mod error;
pub mod form;
pub mod legacy;
pub mod money;
pub mod v2;
pub mod v3;

pub use error::ProtoError;
pub use form::Charset;
pub use money::{Fen, MoneyError};
pub use secrecy::{ExposeSecret, SecretString};
