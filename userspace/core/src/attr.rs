//! Parsing of the values written to the control interface (configfs attributes).
//!
//! A write to an attribute file arrives as the raw bytes of the write, usually with a trailing
//! newline from `echo`. These functions decide what is acceptable, identically in the kernel and
//! in the helper, so the helper can refuse bad input before it reaches the kernel.

/// Longest accepted device path (the kernel's `PATH_MAX` is larger; device paths are short).
pub const MAX_PATH_LEN: usize = 255;

/// Why an attribute value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrError {
    /// The value is empty after trimming.
    Empty,
    /// The value is not valid UTF-8 or holds a control character.
    NotText,
    /// A boolean value that is not one of 0/1/y/n/yes/no/on/off/true/false.
    NotBool,
    /// A path that is not absolute.
    NotAbsolute,
    /// A path longer than [`MAX_PATH_LEN`].
    TooLong,
    /// A number that does not parse or overflows.
    NotNumber,
}

impl AttrError {
    /// A short human explanation.
    pub fn describe(&self) -> &'static str {
        match self {
            AttrError::Empty => "the value is empty",
            AttrError::NotText => "the value is not printable text",
            AttrError::NotBool => "expected one of 0, 1, y, n, yes, no, on, off, true, false",
            AttrError::NotAbsolute => "the path must be absolute",
            AttrError::TooLong => "the path is longer than 255 bytes",
            AttrError::NotNumber => "expected a decimal number",
        }
    }
}

/// Strips one trailing newline (as `echo` adds) and surrounding blanks.
pub fn trim(value: &[u8]) -> &[u8] {
    let mut v = value;
    while let [rest @ .., last] = v {
        if last.is_ascii_whitespace() {
            v = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = v {
        if first.is_ascii_whitespace() {
            v = rest;
        } else {
            break;
        }
    }
    v
}

fn text(value: &[u8]) -> Result<&str, AttrError> {
    let v = trim(value);
    if v.is_empty() {
        return Err(AttrError::Empty);
    }
    if v.iter().any(|b| b.is_ascii_control()) {
        return Err(AttrError::NotText);
    }
    core::str::from_utf8(v).map_err(|_| AttrError::NotText)
}

/// Parses a boolean attribute value.
pub fn parse_bool(value: &[u8]) -> Result<bool, AttrError> {
    let t = text(value)?;
    const TRUE: [&str; 5] = ["1", "y", "yes", "on", "true"];
    const FALSE: [&str; 5] = ["0", "n", "no", "off", "false"];
    if TRUE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(true)
    } else if FALSE.iter().any(|w| w.eq_ignore_ascii_case(t)) {
        Ok(false)
    } else {
        Err(AttrError::NotBool)
    }
}

/// Parses an unsigned decimal attribute value.
pub fn parse_u64(value: &[u8]) -> Result<u64, AttrError> {
    let t = text(value)?;
    if !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AttrError::NotNumber);
    }
    t.parse::<u64>().map_err(|_| AttrError::NotNumber)
}

/// Parses a device path: absolute, printable, at most [`MAX_PATH_LEN`] bytes.
pub fn parse_path(value: &[u8]) -> Result<&str, AttrError> {
    let t = text(value)?;
    if t.len() > MAX_PATH_LEN {
        return Err(AttrError::TooLong);
    }
    if !t.starts_with('/') {
        return Err(AttrError::NotAbsolute);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools() {
        assert_eq!(parse_bool(b"1\n"), Ok(true));
        assert_eq!(parse_bool(b" On "), Ok(true));
        assert_eq!(parse_bool(b"0"), Ok(false));
        assert_eq!(parse_bool(b"false\n"), Ok(false));
        assert_eq!(parse_bool(b"2"), Err(AttrError::NotBool));
        assert_eq!(parse_bool(b"\n"), Err(AttrError::Empty));
        assert_eq!(parse_bool(b"\xff"), Err(AttrError::NotText));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"4096\n"), Ok(4096));
        assert_eq!(parse_u64(b"-1"), Err(AttrError::NotNumber));
        assert_eq!(parse_u64(b"+1"), Err(AttrError::NotNumber));
        assert_eq!(
            parse_u64(b"99999999999999999999999"),
            Err(AttrError::NotNumber)
        );
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path(b"/dev/vda\n"), Ok("/dev/vda"));
        assert_eq!(parse_path(b"dev/vda"), Err(AttrError::NotAbsolute));
        assert_eq!(parse_path(b"/dev/v\tda"), Err(AttrError::NotText));
        let long = [b'/'; 300];
        assert_eq!(parse_path(&long), Err(AttrError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(v in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_bool(&v);
            let _ = parse_u64(&v);
            if let Ok(p) = parse_path(&v) {
                proptest::prop_assert!(p.starts_with('/') && p.len() <= MAX_PATH_LEN);
            }
        }

        #[test]
        fn u64_roundtrip(n in proptest::num::u64::ANY) {
            let s = n.to_string();
            proptest::prop_assert_eq!(parse_u64(s.as_bytes()), Ok(n));
        }
    }
}
