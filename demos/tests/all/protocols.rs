//! docs/protocols.md is true: each Python snippet there runs (with python3)
//! against the real servers and prints exactly the output shown under it,
//! and each hex dump there is byte for byte what our code sends. Without
//! python3 the snippet runs are skipped, each with a printed reason.

use crate::common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{within, DEADLINE};
use demos::files::{FileServer, FilesConfig, Request};
use demos::service::{stream_service, Running, DEFAULT_DRAIN};
use demos::shell::{Reply, Shell, ShellConfig};
use demos::strategy::StrategyName;
use socketserver::auth::Key;
use socketserver::{framing, Address, Server};
use socketserver_tests::python3_available;

const DOC: &str = include_str!("../../../docs/protocols.md");

/// A Python snippet of the doc (a ```python block whose first line is
/// `# NAME`) and the ```text block right after it, if any.
struct Snippet {
    code: String,
    output: Option<String>,
}

fn snippets() -> HashMap<String, Snippet> {
    let mut found = HashMap::new();
    let lines: Vec<&str> = DOC.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] != "```python" {
            i += 1;
            continue;
        }
        let name = lines[i + 1]
            .strip_prefix("# ")
            .unwrap_or_else(|| panic!("a python block without a `# NAME` line at {}", i + 2))
            .to_owned();
        let end = i + 1 + lines[i + 1..].iter().position(|l| *l == "```").unwrap();
        let code = lines[i + 1..end].join("\n") + "\n";
        // The output block, if the next non-blank line opens one.
        let mut j = end + 1;
        while j < lines.len() && lines[j].trim().is_empty() {
            j += 1;
        }
        let output = (j < lines.len() && lines[j] == "```text").then(|| {
            let stop = j + 1 + lines[j + 1..].iter().position(|l| *l == "```").unwrap();
            lines[j + 1..stop].join("\n") + "\n"
        });
        found.insert(name, Snippet { code, output });
        i = end + 1;
    }
    found
}

fn snippet(name: &str) -> Snippet {
    snippets()
        .remove(name)
        .unwrap_or_else(|| panic!("docs/protocols.md has no python block `# {name}`"))
}

/// Runs `code` with python3 in `dir`; returns stdout, panicking with
/// stderr if it fails. At most DEADLINE.
fn python(code: String, dir: &Path) -> String {
    let dir = dir.to_path_buf();
    within(DEADLINE, "python3", move || {
        let mut child = match Command::new("python3")
            .arg("-")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start python3: {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(code.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "python3 failed ({}):\n{}\n--- stdout:\n{stdout}\n--- code:\n{code}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    })
}

/// Replaces the doc's example port with the real one.
fn with_port(code: &str, doc_port: u16, addr: &Address) -> String {
    let from = format!("(\"127.0.0.1\", {doc_port})");
    assert!(code.contains(&from), "the snippet connects to {from}");
    let port = addr.as_inet().unwrap().port();
    code.replace(&from, &format!("(\"127.0.0.1\", {port})"))
}

fn loopback() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn the_sticky_packet_example_sticks() {
    if !python3_available("the_sticky_packet_example_sticks") {
        return;
    }
    let s = snippet("sticky.py");
    assert!(s.code.lines().count() <= 14, "a short example");
    let dir = tempfile::tempdir().unwrap();
    let out = python(s.code, dir.path());
    assert_eq!(out, s.output.unwrap());
    assert_eq!(out, "b'helloworld' b''\n");
}

#[test]
fn the_python_shell_client_prints_what_the_doc_shows() {
    if !python3_available("the_python_shell_client_prints_what_the_doc_shows") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shell.key"), "a key for the docs\n").unwrap();
    let key = Key::from_file(dir.path().join("shell.key")).unwrap();
    let mut config = ShellConfig::new(key).unwrap();
    config.start_dir = dir.path().to_path_buf();
    let builder = Server::builder().strategy(StrategyName::Threading.build(None));
    let service = stream_service(builder, &loopback(), Shell::new(config), None).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();

    let client = snippet("shell_client.py");
    let code = snippet("frames.py").code + &with_port(&client.code, 7003, running.address(0));
    let out = python(code, dir.path());
    assert_eq!(out, client.output.unwrap());
    running.stop(DEADLINE).unwrap();
}

#[test]
fn the_python_files_client_prints_what_the_doc_shows() {
    if !python3_available("the_python_files_client_prints_what_the_doc_shows") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shared");
    std::fs::create_dir(&root).unwrap();
    let handler = FileServer::new(FilesConfig::new(&root)).unwrap();
    let builder = Server::builder().strategy(StrategyName::Threading.build(None));
    let service = stream_service(builder, &loopback(), handler, None).unwrap();
    let running = Running::start(vec![service], DEFAULT_DRAIN).unwrap();

    let client = snippet("files_client.py");
    let code = snippet("frames.py").code + &with_port(&client.code, 7004, running.address(0));
    let out = python(code, dir.path());
    assert_eq!(out, client.output.unwrap());
    assert_eq!(
        std::fs::read_to_string(root.join("hello.txt")).unwrap(),
        "你好, files\n"
    );
    running.stop(DEADLINE).unwrap();
}

/// `hexdump -C`, without the final offset line.
fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (n, line) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for i in 0..16 {
            match line.get(i) {
                Some(b) => {
                    let _ = write!(hex, "{b:02x} ");
                }
                None => hex.push_str("   "),
            }
            if i == 7 {
                hex.push(' ');
            }
        }
        let ascii: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, "{:08x}  {hex} |{ascii}|", n * 16);
    }
    out
}

#[test]
fn the_hex_dumps_are_the_bytes_we_send() {
    // Section 3: the put request for the six bytes "hello\n".
    let data = b"hello\n";
    let sha = demos::files::hex(&<sha2::Sha256 as sha2::Digest>::digest(data));
    let mut wire = Vec::new();
    framing::write_json(&mut wire, &Request::put("hello.txt", 6, &sha)).unwrap();
    wire.extend_from_slice(data);
    let dump = hexdump(&wire);
    assert!(DOC.contains(&dump), "section 3 should show:\n{dump}");

    // Section 5: the reply to `echo hi`.
    let mut wire = Vec::new();
    Reply::new(Some(0), b"hi\n".to_vec(), Vec::new(), false, false)
        .write_to(&mut wire)
        .unwrap();
    let dump = hexdump(&wire);
    assert!(DOC.contains(&dump), "section 5 should show:\n{dump}");

    // Section 2: "hello" in both header layouts.
    let mut wire = Vec::new();
    framing::write_frame(&mut wire, b"hello").unwrap();
    assert_eq!(wire, b"\x00\x00\x00\x05hello");
    assert!(DOC.contains("00 00 00 05  68 65 6c 6c 6f"));
    let python = framing::Framing::new().with_header(framing::Header::I32Le);
    let mut wire = Vec::new();
    python.write_frame(&mut wire, b"hello").unwrap();
    assert_eq!(wire, b"\x05\x00\x00\x00hello");
    assert!(DOC.contains("05 00 00 00  68 65 6c 6c 6f"));
}

#[test]
fn every_python_block_is_checked() {
    let mut names: Vec<String> = snippets().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "files_client.py",
            "frames.py",
            "shell_client.py",
            "sticky.py"
        ]
    );
}
