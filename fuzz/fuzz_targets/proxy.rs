//! The PROXY protocol header parser (versions 1 and 2), fed the first bytes
//! of a connection: never a panic; a header found fits the input and the
//! caps, reads the same alone, and every prefix of it is incomplete
//! (`socketserver::proxy::fuzz_parse` checks these).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    socketserver::proxy::fuzz_parse(data);
});
