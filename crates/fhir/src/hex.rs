//! Lower-case hexadecimal, as `sha256sum` prints digests: ids, keys,
//! digests and the anonymizer's cryptoHash all use it.

/// The bytes as lower-case hex, two characters each.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from_digit((b >> 4) as u32, 16).expect("nibble"));
        out.push(char::from_digit((b & 15) as u32, 16).expect("nibble"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn lower_case_two_per_byte() {
        assert_eq!(super::encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::encode(&[]), "");
    }
}
