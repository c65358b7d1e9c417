//! Strict encodings: standard base64 with padding (no whitespace, no URL-safe alphabet, no
//! trailing bits), and lowercase hex.
use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::ProtocolError;

#[must_use]
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes strict base64.
///
/// # Errors
/// Anything but canonical padded standard base64.
pub fn unb64(text: &str, what: &'static str) -> Result<Vec<u8>, ProtocolError> {
    STANDARD.decode(text).map_err(|_| ProtocolError::Malformed(what))
}

#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase hex of exactly `N` bytes.
///
/// # Errors
/// Wrong length, uppercase, or a non-hex character.
pub fn unhex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], ProtocolError> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return Err(ProtocolError::Malformed(what));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(ProtocolError::Malformed(what)),
    };
    let mut out = [0; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_strict() {
        assert_eq!(unb64("Z2F0ZQ==", "x").unwrap(), b"gate");
        for bad in ["Z2F0ZQ", "Z2F0ZQ=", "Z2F0 ZQ==", "Z2F0ZR==", "Z2F0ZQ==\n", "_-__"] {
            assert!(unb64(bad, "x").is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn hex_is_lowercase_and_exact() {
        assert_eq!(unhex::<2>("0aff", "x").unwrap(), [0x0a, 0xff]);
        for bad in ["0AFF", "0af", "0aff00", "0agg"] {
            assert!(unhex::<2>(bad, "x").is_err(), "{bad:?} must be refused");
        }
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }
}
