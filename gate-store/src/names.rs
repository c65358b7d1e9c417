use crate::StoreError;

/// Client names: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `-` or `.`, so they are safe
/// in file names, logs and command lines.
///
/// # Errors
/// [`StoreError::Invalid`] saying what is wrong.
pub fn validate_client_name(name: &str) -> Result<(), StoreError> {
    let fine = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['-', '.']);
    if fine {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "client name {name:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with - or .)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["alice", "a", "laptop-2.home_x", &"x".repeat(64)] {
            assert!(validate_client_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-rf", ".hidden", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(validate_client_name(bad).is_err(), "{bad}");
        }
    }
}
