//! The ledger and the fairness scheme below the edge: the ledger conformance suite (SQLite and
//! PostgreSQL), the round timeline under paused time, the known-answer vectors and the crash
//! point statistics. One test binary: each file of this folder is a module.

mod fairness_stats;
mod fairness_vectors;
mod ledger_conformance;
mod timeline;
