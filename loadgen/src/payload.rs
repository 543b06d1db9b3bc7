//! Request payloads: each request sends a different window of one pseudo-random byte
//! string, so an echo of stale, foreign or shifted bytes does not match.

/// Number of distinct windows (a prime, so that stepping by [`SEQ_STEP`] visits them all
/// before repeating).
const PERIOD: u64 = 65_521;

/// Offset step between consecutive requests of one connection; coprime with [`PERIOD`],
/// so a connection's last 65,521 requests all used different windows.
const SEQ_STEP: u64 = 7_919;

/// The shared byte string requests are cut from.
pub(crate) struct Pattern {
    bytes: Vec<u8>,
    size: usize,
}

impl Pattern {
    /// A pattern for requests of `size` bytes.
    pub fn new(size: usize) -> Pattern {
        // xorshift64*: cheap, deterministic, no runs of equal bytes to speak of.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let len = PERIOD as usize + size;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            let take = (len - bytes.len()).min(v.len());
            bytes.extend_from_slice(&v[..take]);
        }
        Pattern { bytes, size }
    }

    /// The payload of request `seq` on connection `conn`.
    pub fn request(&self, conn: usize, seq: u64) -> &[u8] {
        let base = (conn as u64).wrapping_mul(0x9E37_79B9);
        let off = (base.wrapping_add(seq.wrapping_mul(SEQ_STEP)) % PERIOD) as usize;
        &self.bytes[off..off + self.size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_requests_differ() {
        let p = Pattern::new(16);
        for conn in [0usize, 1, 7, 4999] {
            for seq in 0..2000u64 {
                assert_eq!(p.request(conn, seq).len(), 16);
                assert_ne!(p.request(conn, seq), p.request(conn, seq + 1));
            }
        }
        assert_ne!(p.request(0, 5), p.request(1, 5));
        // Large sizes work too.
        assert_eq!(Pattern::new(70_000).request(3, u64::MAX).len(), 70_000);
    }
}
