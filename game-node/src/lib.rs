//! crashfleet game node: provably fair multiplayer crash rounds.
//!
//! Layout (ports and adapters):
//! - [`fairness`]: the hash chain and the crash-point formula (pure).
//! - [`engine`]: one round's timeline and its bet/cash-out decisions (pure, clock passed in).
//! - [`ports`]: the traits the node is built on: [`ports::Ledger`], [`ports::Bus`],
//!   [`ports::Arbiter`], [`ports::LeaderElector`], [`ports::Clock`].
//! - Adapters: [`ledger`] (SQL ledger for SQLite and PostgreSQL), [`standalone`] (in-process bus
//!   and arbiter, always-leader).
//! - [`runner`]: the round leader loop; [`service`]: bet and cash-out as players ask for them.
//! - [`api`] (REST, OpenAPI, pages), [`ws`] (WebSocket), [`hub`] (per-player event routing),
//!   [`protocol`] (the wire messages), [`client_ip`] (the client address behind trusted proxies).
//! - [`auth`] (tokens, sessions, argon2), [`password`] (the bounded password threads),
//!   [`login_throttle`] (per-username backoff after failed logins).
//! - [`listener`] (the accept loop, timeouts) and [`limits`] (connection caps, frame budget,
//!   descriptor reserve).
//! - [`node`]: assembles all of it; `main.rs` is a thin CLI over [`node::run`] and [`verify`].
#![forbid(unsafe_code)]

// The pure core, under the paths the node has always used.
pub use crashfleet_core::{engine, fairness, protocol};

pub mod api;
pub mod auth;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod feed;
pub mod fleet;
pub mod hub;
pub mod ledger;
pub mod limits;
pub mod listener;
pub mod login_throttle;
pub mod node;
pub mod password;
pub mod ports;
pub mod runner;
pub mod service;
pub mod standalone;
pub mod verify;
pub mod ws;
