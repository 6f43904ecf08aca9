//! crashfleet game node: provably fair multiplayer crash rounds.
//!
//! Layout (ports and adapters):
//! - [`fairness`], [`engine`], [`protocol`]: the pure core (the `crashfleet-core` crate).
//! - [`ports`]: the traits the node is built on: [`ports::Ledger`], [`ports::Bus`],
//!   [`ports::Arbiter`], [`ports::LeaderElector`], [`ports::FleetView`], [`ports::Clock`].
//! - [`game`]: the game service, bet and cash-out as players ask for them (no HTTP);
//!   [`runner`]: the round leader loop.
//! - Adapters: [`ledger`] (SQL ledger for SQLite and PostgreSQL), [`standalone`] (in-process bus
//!   and arbiter, always-leader, a fleet of one), [`fleet`] (Redis bus, arbiter, lock, presence;
//!   the Lease elector).
//! - The edge: [`api`] (REST, OpenAPI, pages), [`ws`] (WebSocket), [`state`] (what handlers
//!   hold), [`hub`] (per-player event routing), [`client_ip`] (the client address behind trusted
//!   proxies), [`listener`] (the accept loop, timeouts), [`limits`] (connection caps, frame
//!   budget, descriptor reserve).
//! - [`auth`] (tokens, sessions, argon2), [`password`] (the bounded password threads),
//!   [`login_throttle`] (per-username backoff after failed logins).
//! - [`public_url`]: the URL the lobby advertises, fixed or followed in a file.
//! - [`node`]: assembles all of it (the only module that names both adapter sets); `main.rs` is
//!   a thin CLI over [`node::run`] and [`verify`].
#![forbid(unsafe_code)]

// The pure core, under the paths the node has always used.
pub use crashfleet_core::{engine, fairness, protocol};

pub mod api;
pub mod auth;
pub mod chat;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod fanout;
pub mod feed;
pub mod fleet;
pub mod game;
pub mod hub;
pub mod ledger;
pub mod limits;
pub mod listener;
pub mod login_throttle;
pub mod node;
pub mod password;
pub mod ports;
pub mod public_url;
pub mod receipt_check;
pub mod receipts;
pub mod roundlog;
pub mod runner;
pub mod secret_file;

pub mod standalone;
pub mod state;
pub mod verify;
pub mod ws;
