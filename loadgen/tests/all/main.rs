//! loadgen's end-to-end tests, one module per concern, in one test binary:
//! plain TCP and UDP runs (`loadgen`) and runs over TLS (`tls`).

mod loadgen;
mod tls;
