//! A plain std thread-per-connection TCP echo server, for trying the load generator.
//!
//! `cargo run --release --example std_echo [127.0.0.1:PORT]` (default port 0: any
//! free port). Prints `listening on tcp://ADDR` first, then serves until killed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let addr: SocketAddr = match arg.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("std_echo: bad address {arg:?}: {e}");
            std::process::exit(2);
        }
    };
    if !loadgen::is_loopback(addr.ip()) {
        eprintln!("std_echo: {addr} is not a loopback address");
        std::process::exit(2);
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("std_echo: bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on tcp://{a}"),
        Err(e) => eprintln!("std_echo: local_addr: {e}"),
    }
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                if let Err(e) = thread::Builder::new().spawn(move || serve(s)) {
                    eprintln!("std_echo: spawn: {e}");
                }
            }
            Err(e) => {
                eprintln!("std_echo: accept: {e}");
                thread::sleep(std::time::Duration::from_millis(10)); // e.g. EMFILE: no spin
            }
        }
    }
}
