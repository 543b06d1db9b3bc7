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

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

fn say(stream: &TcpStream, lines: &[String]) -> io::Result<()> {
    let mut out = stream;
    for line in lines {
        writeln!(out, "{line}")?;
    }
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: peer_client ADDR say LINE... | peer_client ADDR slow N");
        return ExitCode::from(2);
    }
    let result = TcpStream::connect(&args[0]).and_then(|stream| {
        println!("connected {}", stream.local_addr()?);
        match args[1].as_str() {
            "say" => say(&stream, &args[2..]),
            "slow" => slow(&stream, &args[2]),
            other => Err(io::Error::new(
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
