//! Topic name rules, as Kafka: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`, and
//! not colliding with an existing name once `.` and `_` are treated alike (they map to the
//! same metric name).

use crate::error::{ControllerError, Result};

/// Longest legal topic name (Kafka's limit, from the file-name limit minus partition suffix).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Checks a topic name's characters and length.
pub fn validate(name: &str) -> Result<()> {
    let bad = |why: &str| Err(ControllerError::InvalidTopic(format!("{name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return bad(&format!("is longer than {TOPIC_NAME_BYTES_MAX} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("contains characters other than ASCII alphanumerics, '.', '_' and '-'");
    }
    Ok(())
}

/// The name with `.` folded to `_`: two topics with the same folded name collide.
pub fn folded(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_legal_and_refuses_illegal_names() {
        assert!(validate("orders.eu_1-x").is_ok());
        assert!(validate(&"a".repeat(249)).is_ok());
        assert!(validate(&"a".repeat(250)).is_err());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(folded("a.b_c"), folded("a_b.c"));
    }
}
