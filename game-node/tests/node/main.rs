//! One game node in this process (`common::TestServer`), or a process of the built binary, tested
//! through its HTTP and WebSocket edge. One test binary for all of them: each file of this folder
//! is a module, so the suite links one executable where it linked eleven.

#[path = "../common/mod.rs"]
mod common;

mod bad_input;
mod chat;
mod config_errors;
mod crash_recovery;
mod money;
mod openapi;
mod ops;
mod pages;
mod proxy;
mod receipts;
mod roundlog;
mod secrets_at_rest;
mod sessions;
mod settlement;
mod websocket;
