//! The demos' tests that can share one process: one module per concern (one
//! file each), linked into one test binary so that the build links once
//! and the concerns run side by side. Most drive the built `demos` binary
//! as a child process; the rest start servers in this process through the
//! library API. Run one concern with a filter on its module name:
//! `cargo test -p demos --test all -- shell::`.
//!
//! Two files keep a binary of their own (`demos/tests/*.rs`):
//! `chat_green.rs` raises this process's descriptor limit and counts its
//! threads, and `client_errors_log.rs` asserts that nothing in the whole
//! process logged at error level. A new file goes here (a `mod` line below)
//! unless it, too, needs the process to itself.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod files;
mod files_green_nested_json;
mod forking_threads;
mod handshake;
mod inprocess;
mod log_targets;
mod metrics;
mod pid_file;
mod privilege;
mod protocols;
mod shell;
mod shutdown;
mod slow_clients;
mod spoofing;
mod tls;
mod udp_chat_limits;
mod upgrade;
