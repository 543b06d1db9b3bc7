//! # demos
//!
//! Programs built on [`socketserver`], one module per demo, all behind one
//! command-line tool, `demos` (see `demos --help` and `docs/demos.md`):
//!
//! * [`echo`]: the classic echo server over TCP, UDP or Unix sockets, under
//!   any of the six strategies, with `--upper`;
//! * [`chat`]: a TCP chat room where a slow member never blocks the others,
//!   and the classic two-person UDP chat made into a relay between many peers;
//! * [`shell`]: a remote command runner, behind HMAC
//!   authentication, with a timeout that kills the command's process
//!   group, an output cap, and stdout and stderr kept apart;
//! * [`files`]: a file upload and download (JSON header + raw bytes) with
//!   sha256 checks both ways, atomic uploads, and file names that cannot
//!   leave the root;
//! * [`showcase`]: starts each demo in this process, drives it with real
//!   sockets and reports.
//!
//! The measurements (every strategy side by side with a plain std echo,
//! tokio and Python's socketserver) live in the workspace's `bench` crate:
//! `cargo run --release -p bench -- --quick`.
//!
//! What every demo shares, one module per job: [`cli`] (the options every
//! server takes, parsing flags, the one error type), [`strategy`] (the
//! strategy names), [`service`] (a server's life: serving, signals, the
//! graceful close), [`listening`] (the `listening on` lines), [`net`]
//! (client sockets), [`ops`] (pid file, privileges, metrics, log target), [`tls`] (the TLS flags, the client side of TLS,
//! `demos tls gen`), [`logging`] and [`text`] (what may reach a
//! terminal). [`showcase::drive`] holds the clients that check the
//! servers, for the showcase and the tests.
//!
//! Every demo server is a handler value handed to
//! `socketserver::Server::builder()`; for instance, the echo server under
//! a pool of 4 workers:
//!
//! ```
//! use demos::echo::Echo;
//! use socketserver::{Pool, Server};
//!
//! let server = Server::builder()
//!     .strategy(Pool::new(4))
//!     .tcp("127.0.0.1:0", Echo { upper: true })?;
//! println!("listening on {}", server.url());
//! # Ok::<(), std::io::Error>(())
//! ```

#![warn(missing_docs, rust_2018_idioms)]

pub mod chat;
pub mod cli;
pub mod echo;
pub mod files;
pub mod listening;
pub mod logging;
pub mod net;
pub mod ops;
pub mod serve;
pub mod service;
pub mod shell;
pub mod showcase;
pub mod strategy;
pub mod text;
pub mod tls;
