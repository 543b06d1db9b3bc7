//! What the tests that run the `echo_server` example as a process share.

use std::path::PathBuf;

/// The built `echo_server` example, next to this test binary's directory
/// (`target/<profile>/deps/<test>` -> `target/<profile>/examples/echo_server`;
/// Cargo builds examples before integration tests).
pub fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/echo_server");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --example echo_server`",
        path.display()
    );
    path
}
