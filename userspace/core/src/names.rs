//! Volume names and the block device names derived from them.

/// Prefix of every peerflash block device: volume `vm1` is exposed as `/dev/pf-vm1`.
pub const DISK_PREFIX: &str = "pf-";

/// Longest volume name. The kernel's `DISK_NAME_LEN` is 32 bytes including the terminating NUL,
/// and the prefix takes 3 of them.
pub const MAX_NAME_LEN: usize = 28;

/// Why a volume name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// The name holds a byte outside `[A-Za-z0-9_.-]`.
    BadChar(u8),
    /// The name starts with `.` or `-`.
    BadStart,
}

impl NameError {
    /// A short human explanation, shared by the kernel log and the helper's messages.
    pub fn describe(&self) -> &'static str {
        match self {
            NameError::Empty => "the name is empty",
            NameError::TooLong => "the name is longer than 28 bytes",
            NameError::BadChar(_) => "the name may only hold letters, digits, '_', '.' and '-'",
            NameError::BadStart => "the name may not start with '.' or '-'",
        }
    }
}

/// Checks that `name` may name a volume.
pub fn validate_volume_name(name: &[u8]) -> Result<(), NameError> {
    let first = *name.first().ok_or(NameError::Empty)?;
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if first == b'.' || first == b'-' {
        return Err(NameError::BadStart);
    }
    match name
        .iter()
        .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    {
        Some(&b) => Err(NameError::BadChar(b)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["vm1", "a", "db-01.disk_0", "0123456789012345678901234567"] {
            assert_eq!(validate_volume_name(n.as_bytes()), Ok(()), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_volume_name(b""), Err(NameError::Empty));
        assert_eq!(
            validate_volume_name(b"01234567890123456789012345678"),
            Err(NameError::TooLong)
        );
        assert_eq!(validate_volume_name(b"-x"), Err(NameError::BadStart));
        assert_eq!(validate_volume_name(b".x"), Err(NameError::BadStart));
        assert_eq!(validate_volume_name(b"a/b"), Err(NameError::BadChar(b'/')));
        assert_eq!(validate_volume_name(b"a b"), Err(NameError::BadChar(b' ')));
        assert_eq!(validate_volume_name(b"a\n"), Err(NameError::BadChar(b'\n')));
    }

    proptest::proptest! {
        #[test]
        fn valid_names_fit_a_disk_name(name in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            if validate_volume_name(&name).is_ok() {
                // "pf-" + name + NUL must fit DISK_NAME_LEN (32).
                proptest::prop_assert!(DISK_PREFIX.len() + name.len() < 32);
                proptest::prop_assert!(name.iter().all(|b| b.is_ascii_graphic()));
                proptest::prop_assert!(!name.contains(&b'/'));
            }
        }
    }
}
