//! The wxpay payment server: the app API, WeChat's notifications, health; configuration,
//! startup and telemetry kept apart.

pub mod auth;
pub mod configuration;
pub mod error;
pub mod payments;
pub mod refunds;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod workers;
