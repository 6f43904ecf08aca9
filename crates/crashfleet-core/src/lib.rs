//! crashfleet's pure core: what a crash table *is*, with no I/O, no async runtime, no database,
//! no HTTP and no Redis client in its dependency tree (CI checks the tree).
//!
//! - [`fairness`]: the secret hash chain a table commits to and the crash point of a round.
//! - [`engine`]: one round's timeline and its bet and cash-out decisions, the clock passed in.
//! - [`protocol`]: the messages players receive and send (REST bodies and WebSocket frames).
//! - [`error`]: the domain error with its stable `code`, which every edge and adapter shares.
//! - [`net`]: IP networks for trust lists; [`keys`]: the fleet's Redis key layout.
//! - [`merkle`]: RFC 6962 Merkle trees (roots, inclusion and consistency proofs) for verifiable
//!   settlement; [`settlement`]: the signed receipts' and the trees' canonical byte formats.
//!
//! The game node builds its adapters (SQL ledger, Redis bus and arbiter, HTTP and WebSocket
//! edges) around these; the operator uses [`fairness`] to create a table's chain and [`keys`] to
//! pause a Redis-elected table.
#![forbid(unsafe_code)]

pub mod chat;
pub mod engine;
pub mod error;
pub mod fairness;
pub mod keys;
pub mod merkle;
pub mod net;
pub mod protocol;
pub mod settlement;
