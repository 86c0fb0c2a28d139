//! APIv3 (PROTOCOL.md B): RSA keys and certificates, request signing and `Authorization`
//! parsing, response/callback verification, AEAD_AES_256_GCM resources, RSA-OAEP sensitive
//! fields and the JSON bodies.

pub mod aead;
pub mod auth;
pub mod model;
pub mod oaep;
pub mod rsa;
pub mod verify;
