//! The library's process tests: each drives the `echo_server` example (or
//! `haproxy`, `systemd-socket-activate` in front of it) as processes of
//! their own, so they share this one test binary, one module per concern
//! (one file each), and run side by side. Run one concern with a filter on
//! its module name: `cargo test -p socketserver --test all -- reload::`.
//! Cargo builds the example before the tests; with `--test all` alone it
//! does not, so build it after changing the library:
//! `cargo build -p socketserver --example echo_server`.
//!
//! A test that needs this process to itself (forking from it, signal
//! handlers, limits, counting its threads or descriptors) gets a binary of
//! its own, `socketserver/tests/NAME.rs`; anything else goes here (a `mod`
//! line below).

#[path = "../common/mod.rs"]
mod common;

mod echo_server_example;
mod forking_drain;
mod haproxy;
mod reload;
mod systemd_activation;
mod upgrade_prefork;
mod upgrade_stop_signal;
mod upgrade_without_thread;
