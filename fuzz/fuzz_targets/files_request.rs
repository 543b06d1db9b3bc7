//! The files demo's request header (the JSON of its first frame): any bytes
//! parse to a request or an error message, never a panic; a request parsed
//! serializes and parses back equal; its file name is checked (refused or
//! accepted, never a panic), and a name accepted is a plain file name.
#![no_main]

use demos::files::{check_name, is_sha256_hex, Request, REQUEST_FRAMING};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As the server reads it: one frame, then the JSON inside.
    let mut input = data;
    if let Ok(Some(header)) = REQUEST_FRAMING.read_frame(&mut input) {
        check(&header);
    }
    check(data);
});

fn check(header: &[u8]) {
    let Ok(request) = Request::parse(header) else {
        return;
    };
    let json = serde_json::to_vec(&request).unwrap();
    assert_eq!(Request::parse(&json).unwrap(), request);
    let name = match &request {
        Request::Put { name, sha256, .. } => {
            let _ = is_sha256_hex(sha256);
            name
        }
        Request::Get { name } => name,
        Request::List => return,
    };
    if check_name(name).is_ok() {
        assert!(!name.is_empty() && name != "." && name != "..");
        assert!(!name.contains(['/', '\\', '\0']));
        assert!(!name.chars().any(char::is_control));
    }
}
