//! Sundial: fires HTTP endpoints on schedules.
//!
//! This crate holds every piece of logic; the Lambda functions and the CLI
//! are thin shells that build dependencies once and call into it.

pub mod admin;
pub mod app;
pub mod backfill;
pub mod config;
pub mod dev;
pub mod fire;
pub mod firetime;
pub mod flow;
pub mod health;
pub mod ledger;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod notify;
pub mod pause;
pub mod process;
pub mod queue;
pub mod sanitise;
pub mod scan;
pub mod schedule;
pub mod store;
pub mod task;
pub mod trigger;
pub mod window;
pub mod worker;
