//! The wxpay payment server: the app API, WeChat's notifications, health; configuration,
//! startup and telemetry kept apart.

pub mod auth;
pub mod configuration;
pub mod console;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod payments;
pub mod reconcile;
pub mod refunds;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod workers;
