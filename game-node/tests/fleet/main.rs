//! Fleets of real game-node processes on a real Redis and PostgreSQL (the rig is
//! `crashfleet_tests::fleet`): failover under both election backends, the Redis arbiter, and the
//! chaos and soak runs. One test binary: each file of this folder is a module.

mod arbiter;
mod chaos;
mod failover;
mod prometheus;
