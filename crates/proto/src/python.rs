//! Python versions and serialized functions: which code loads only on the Python it was
//! serialized on, and whether two versions are the same for it.
//!
//! A function serialized as Python bytecode (the `01` and `02` strategies, `dill.dumps`
//! of the function) loads only on the Python major.minor that made it: bytecode changes
//! between minor versions, and loading it elsewhere fails or, worse, misbehaves. A
//! function serialized as source (`03`, `04`, `st`, `sd`) runs on any. A packed buffer
//! of alternatives (bare, or `12`) runs anywhere when one of them is source.
//!
//! ```
//! use ferry_proto::python::{bytecode_only, same_minor};
//! assert!(bytecode_only(b"01\nABC"));
//! assert!(!bytecode_only(b"04\nABC"));
//! assert!(!bytecode_only(b"7\n01\nABC8\n04\nABCD")); // packed: one is source
//! assert!(same_minor("3.11.7", "3.11"));
//! assert!(!same_minor("3.12.1", "3.11.7"));
//! ```

/// Whether a serialized Python function (as registered) loads only on the Python
/// version that serialized it. Code Ferry cannot read (not the serializer's format) is
/// not called bound: the worker's own error says what is wrong with it.
pub fn bytecode_only(code: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(code) else {
        return false;
    };
    let strategies = match unpack(text) {
        Some(buffers) => buffers,
        None => vec![text],
    };
    let mut bound = false;
    for buffer in strategies {
        match strategy(buffer) {
            Some("01" | "02") => bound = true,
            Some("03" | "04" | "st" | "sd") => return false,
            Some("12") => match unpack(&buffer[3..]) {
                Some(inner)
                    if inner
                        .iter()
                        .any(|b| matches!(strategy(b), Some("03" | "04" | "st" | "sd"))) =>
                {
                    return false;
                }
                Some(inner) if inner.iter().any(|b| matches!(strategy(b), Some("01" | "02"))) => bound = true,
                _ => {}
            },
            _ => {}
        }
    }
    bound
}

/// The two-character strategy id of a buffer (`"01\n..."`), if it has one.
fn strategy(buffer: &str) -> Option<&str> {
    (buffer.len() >= 3 && buffer.as_bytes()[2] == b'\n').then(|| &buffer[..2])
}

/// The buffers of a packed string (`"<len>\n<buffer>"` each, lengths in characters, as
/// the Python SDKs write them); `None` when it is not one.
fn unpack(packed: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut rest = packed;
    while !rest.is_empty() {
        let (head, tail) = rest.split_once('\n')?;
        if head.is_empty() || !head.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let chars: usize = head.parse().ok()?;
        let end = tail.char_indices().nth(chars).map_or(tail.len(), |(i, _)| i);
        if tail[..end].chars().count() != chars {
            return None;
        }
        out.push(&tail[..end]);
        rest = &tail[end..];
    }
    (!out.is_empty()).then_some(out)
}

/// `major.minor` of a version (`3.12.1`, `3.12`, `3.13.0rc1`).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor.parse().ok()?))
}

/// Whether two versions share major.minor (what bytecode needs). Unreadable: `true`,
/// nothing is refused on a guess.
pub fn same_minor(a: &str, b: &str) -> bool {
    match (major_minor(a), major_minor(b)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether `version` reads as a Python version (`3.12` or `3.12.1`; what registration
/// takes).
pub fn is_version(version: &str) -> bool {
    version.len() <= 32
        && major_minor(version).is_some()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytecode_bare_or_packed_is_bound_and_any_source_alternative_frees_it() {
        assert!(bytecode_only(b"01\nAAAA"));
        assert!(bytecode_only(b"02\nAAAA"));
        assert!(bytecode_only(b"7\n01\nAAAA"));
        assert!(!bytecode_only(b"st\nf:def f(): pass"));
        assert!(!bytecode_only(b"7\n01\nAAAA7\nsd\nf:xx"));
        // The Globus Compute serializer's packed alternatives (12).
        assert!(bytecode_only(b"12\n7\n01\nAAAA"));
        assert!(!bytecode_only(b"12\n7\n01\nAAAA7\n04\nAAAA"));
        // Not the format: not called bound.
        assert!(!bytecode_only(b"echo hello"));
        assert!(!bytecode_only(b"\xff\xfe"));
        assert!(!bytecode_only(b"9\n01\nAA"));
    }

    #[test]
    fn packed_lengths_count_characters_not_bytes() {
        let source = "sd\nf:def f(): return 'é'";
        let packed = format!("{}\n{source}7\n01\nAAAA", source.chars().count());
        assert!(!bytecode_only(packed.as_bytes()));
        assert_eq!(unpack(&packed).unwrap().len(), 2);
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert_eq!(major_minor("3.12.1"), Some((3, 12)));
        assert_eq!(major_minor("3.13rc1"), Some((3, 13)));
        assert_eq!(major_minor("3"), None);
        assert!(same_minor("3.11.7", "3.11.2"));
        assert!(!same_minor("3.10.0", "3.11.0"));
        assert!(same_minor("unknown", "3.11.0"));
        assert!(is_version("3.12.1") && is_version("3.12"));
        assert!(
            !is_version("3") && !is_version("3..1") && !is_version("three.12") && !is_version("3.12; rm")
        );
    }
}
