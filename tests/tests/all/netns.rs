//! The separate-hosts rig (`socketserver_tests::netns`): a namespace is
//! reachable over its link, a cut link passes nothing until restored, and
//! everything made is removed when the host is dropped, also after a panic.
//! Skips, saying why, where namespaces cannot be made.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use socketserver_tests::netns::{host_or_skip, Host, Process};

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A client in `host` that connects to `addr` and says one line.
fn client(host: &Host, addr: SocketAddr) -> Process {
    let mut cmd = host.command(env!("CARGO_BIN_EXE_peer_client"));
    cmd.args([addr.to_string().as_str(), "say", "hello"]);
    Process::start(cmd)
}

#[test]
fn a_cut_link_passes_nothing_until_it_is_restored() {
    let Some(host) = host_or_skip("a_cut_link_passes_nothing_until_it_is_restored") else {
        return;
    };
    assert!(host.here().octets()[..2] == [198, 18] || host.here().octets()[..2] == [198, 19]);
    let listener = TcpListener::bind((host.here(), 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = client(&host, addr);
    let line = c.wait_line(Duration::from_secs(10), |l| l.starts_with("connected "));
    assert!(line.contains(&host.there().to_string()), "{line}");
    let (_conn, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), host.there());
    drop(c);

    host.cut();
    listener.set_nonblocking(true).unwrap();
    let mut cut = client(&host, addr);
    std::thread::sleep(Duration::from_secs(1));
    // Nothing arrives (from the cut side the network is unreachable).
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    assert!(
        !cut.lines().iter().any(|l| l.starts_with("connected")),
        "{:?}",
        cut.lines()
    );
    drop(cut);

    host.restore();
    let mut c = client(&host, addr);
    c.wait_line(Duration::from_secs(10), |l| l.starts_with("connected "));
}

#[test]
fn a_dropped_host_leaves_nothing_behind_even_after_a_panic() {
    let Some(host) = host_or_skip("a_dropped_host_leaves_nothing_behind_even_after_a_panic") else {
        return;
    };
    let name = host.name().to_owned();
    assert!(namespaces().contains(&name));
    let outcome = std::panic::catch_unwind(move || {
        let _host = host;
        panic!("a test failing with its host alive");
    });
    assert!(outcome.is_err());
    assert!(!namespaces().contains(&name), "{name} remains");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let suffix = name.trim_start_matches("sst-").replace('-', "_");
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&format!("sh{suffix}")),
        "the host end of the pair remains"
    );
}

#[test]
fn hosts_made_at_once_get_subnets_of_their_own() {
    let hosts: Vec<Host> = (0..4)
        .filter_map(|_| host_or_skip("hosts_made_at_once_get_subnets_of_their_own"))
        .collect();
    if hosts.len() < 4 {
        return;
    }
    let mut subnets: Vec<u32> = hosts.iter().map(|h| u32::from(h.here()) / 4).collect();
    subnets.sort_unstable();
    subnets.dedup();
    assert_eq!(subnets.len(), 4);
}
