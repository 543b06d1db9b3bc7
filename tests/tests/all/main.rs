//! The behaviour tests of socketserver that can share one process: one
//! module per concern (one file each, as before), linked into one test
//! binary so that the build links once and the tests of every concern run
//! side by side. Run one concern with a filter on its module name:
//! `cargo test -p socketserver-tests --test all -- framing::`.
//!
//! What cannot share a process has a binary of its own next to this
//! directory (`tests/tests/*.rs`): tests that count this process's threads
//! or descriptors or measure its memory (`threading`, `lifecycle`,
//! `volume`, `green_maps`, `green_stack`), raise its limits (`green_maps`),
//! assert on a log line throttled for the whole process (`tls_names`), count
//! log lines that name only a client's address, which other tests' clients
//! reuse (`tls_failure_logs`), or
//! run as a step of their own in `.ci/run` (`partition`). A new file goes
//! here (a `mod` line below) unless it is one of those.

mod access_lists;
mod auth;
mod burst;
mod doc_links;
mod echo_matrix;
mod errors;
mod forking;
mod framing;
mod framing_properties;
mod graceful;
mod green;
mod green_blocking_detector;
mod green_companion_overflow;
mod green_loop_fairness;
mod green_overflow;
mod green_spawn;
mod green_worker_gone;
mod inline_deadline;
mod keepalive;
mod limits;
mod log_volume;
mod matrix;
mod message_deadline;
mod metrics;
mod netns;
mod per_ip_release;
mod pid_file;
mod pre_handler_budget;
mod prefork;
mod prefork_limits;
mod prefork_recycling;
mod privilege;
mod proxy_protocol;
mod several_sockets;
mod stream_io;
mod timeouts;
mod tls;
mod tls_expired;
mod tls_mutual;
mod tls_processes;
mod udp;
mod verify_request;
mod write_deadline;
