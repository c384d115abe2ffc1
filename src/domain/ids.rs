//! Identifiers made from random bytes (and a time) the caller supplies.

/// Formats 16 random bytes as a UUID version 4 (RFC 9562): the version and
/// variant bits are set, the rest is the caller's randomness.
pub fn uuid_v4(b: [u8; 16]) -> String {
    with_version(b, 4)
}

/// Formats a UUID version 7 (RFC 9562): `unix_ms`, the milliseconds since
/// the Unix epoch, in its first 48 bits, so that ids made later sort after
/// (and land at the end of an index keyed by them, not on a page at
/// random); then the version and variant bits and the caller's randomness
/// (74 bits of `random` are used).
pub fn uuid_v7(unix_ms: u64, random: [u8; 10]) -> String {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
    b[6..].copy_from_slice(&random);
    with_version(b, 7)
}

/// Sets the version and the variant bits of `b` and formats it.
fn with_version(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_version_and_variant() {
        let u = super::uuid_v4([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let z = super::uuid_v4([0; 16]);
        assert_eq!(z, "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn a_v7_starts_with_its_time_and_sorts_by_it() {
        // 2026-12-02T07:00:00Z.
        let ms = 1_796_194_800_000_u64;
        let u = super::uuid_v7(ms, [0xff; 10]);
        assert_eq!(
            u,
            format!(
                "{:08x}-{:04x}-7fff-bfff-ffffffffffff",
                ms >> 16,
                ms & 0xffff
            )
        );
        assert_eq!(
            super::uuid_v7(ms, [0; 10]),
            format!(
                "{:08x}-{:04x}-7000-8000-000000000000",
                ms >> 16,
                ms & 0xffff
            )
        );
        // A millisecond later sorts after, whatever the randomness.
        assert!(super::uuid_v7(ms + 1, [0; 10]) > u);
    }
}
