//! A client for the tests of vanished peers (`tests/tests/partition.rs`),
//! run as a process of its own inside a network namespace, to be killed
//! there once its link is cut.
//!
//! ```text
//! peer_client ADDR say LINE...   sends each LINE, then prints every line it
//!                                receives, until end-of-file or killed
//! peer_client ADDR slow N        sends `big N`, then reads slowly (16 KiB
//!                                every 20 ms), printing `reading` after the
//!                                first chunk and `eof` at the end
//! ```
//!
//! Prints `connected LOCAL_ADDR` first. Output is flushed line by line.
//! With `--tls-ca=PEM` (anywhere) the connection speaks TLS to a server
//! named `localhost` signed by that CA.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

fn say(mut stream: impl Read + Write, lines: &[String]) -> io::Result<()> {
    for line in lines {
        writeln!(stream, "{line}")?;
    }
    stream.flush()?;
    let mut stdout = io::stdout().lock();
    for line in BufReader::new(stream).lines() {
        writeln!(stdout, "{}", line?)?;
        stdout.flush()?;
    }
    writeln!(stdout, "eof")?;
    stdout.flush()
}

fn slow(mut stream: &TcpStream, n: &str) -> io::Result<()> {
    writeln!(stream, "big {n}")?;
    let mut buf = vec![0; 16 * 1024];
    let mut first = true;
    loop {
        let got = stream.read(&mut buf)?;
        if got == 0 {
            println!("eof");
            return Ok(());
        }
        if first {
            println!("reading");
            first = false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let tls_ca = all
        .iter()
        .find_map(|a| a.strip_prefix("--tls-ca="))
        .map(str::to_owned);
    let args: Vec<String> = all
        .into_iter()
        .filter(|a| !a.starts_with("--tls-ca="))
        .collect();
    if args.len() < 3 {
        eprintln!("usage: peer_client ADDR say LINE... | peer_client ADDR slow N");
        return ExitCode::from(2);
    }
    let result = TcpStream::connect(&args[0]).and_then(|stream| {
        println!("connected {}", stream.local_addr()?);
        match (args[1].as_str(), &tls_ca) {
            ("say", Some(ca)) => {
                let config = socketserver_tests::tls::client_config(std::path::Path::new(ca), None);
                let name = "localhost".try_into().expect("a server name");
                let conn = socketserver::tls::rustls::ClientConnection::new(config, name)
                    .map_err(io::Error::other)?;
                say(
                    socketserver::tls::rustls::StreamOwned::new(conn, stream),
                    &args[2..],
                )
            }
            ("say", None) => say(&stream, &args[2..]),
            (_, Some(_)) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--tls-ca goes with `say` only",
            )),
            ("slow", None) => slow(&stream, &args[2]),
            (other, None) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown mode {other}"),
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer_client: {e}");
            ExitCode::FAILURE
        }
    }
}
