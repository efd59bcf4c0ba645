//! The sysfs table: one entry per file in [`Attr`] order, stores checked against it, and
//! Documentation/control-interface.md held to it (names, order, access, ranges, defaults, the
//! first words of each meaning).

use peerflash_core::sysfs::{Access, Attr, StoreError, ATTRS, COUNT, FILES};

#[test]
fn table_is_in_attr_order() {
    for (i, s) in ATTRS.iter().enumerate() {
        assert_eq!(s.attr as usize, i, "{:?} is at {i}", s.attr);
        assert_eq!(Attr::from_index(i), Some(s.attr));
        assert_eq!(FILES[i], (s.name, s.access.writable()));
        assert_eq!(s.attr.name(), s.name.to_str().unwrap());
    }
    assert_eq!(Attr::from_index(COUNT), None);
    let mut names: Vec<_> = ATTRS.iter().map(|s| s.attr.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), COUNT, "file names are unique");
}

#[test]
fn stores_follow_the_access() {
    for s in ATTRS.iter() {
        let a = s.attr;
        match s.access {
            Access::Read => assert_eq!(a.parse_store(b"1\n"), Err(StoreError::ReadOnly)),
            Access::Trigger => {
                assert_eq!(a.parse_store(b"1\n"), Ok(1));
                assert_eq!(a.parse_store(b"0"), Err(StoreError::NotValid));
            }
            Access::Tunable { min, max, default } => {
                assert!((min..=max).contains(&default), "{a:?} default in range");
                assert_eq!(a.parse_store(format!("{min}\n").as_bytes()), Ok(min));
                assert_eq!(a.parse_store(max.to_string().as_bytes()), Ok(max));
                assert_eq!(a.parse_store((max + 1).to_string().as_bytes()), Err(StoreError::OutOfRange));
                if min > 0 {
                    assert_eq!(a.parse_store((min - 1).to_string().as_bytes()), Err(StoreError::OutOfRange));
                }
                assert_eq!(a.parse_store(b"ten"), Err(StoreError::NotValid));
                assert_eq!(a.default_value(), default);
            }
        }
    }
}

/// The rows of the sysfs table of control-interface.md: (first cell, meaning).
fn doc_rows() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Documentation/control-interface.md");
    let doc = std::fs::read_to_string(path).expect("control-interface.md");
    let start = doc.find("## sysfs: the cache's state and tunables").expect("the sysfs section");
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].to_string(), cells[1..].join(" | "))
        })
        .collect()
}

#[test]
fn documentation_matches_the_table() {
    let rows = doc_rows();
    let names: Vec<&str> = ATTRS.iter().map(|s| s.attr.name()).collect();
    let documented: Vec<String> = rows.iter().map(|(c, _)| c.split('`').nth(1).unwrap_or("").to_string()).collect();
    assert_eq!(documented, names, "control-interface.md lists the files of the table, in its order");
    for ((cell, meaning), s) in rows.iter().zip(ATTRS.iter()) {
        let want = match s.access {
            Access::Read => format!("`{}`", s.attr.name()),
            Access::Trigger => format!("`{}` (w: 1)", s.attr.name()),
            Access::Tunable { min, max, default } => format!("`{}` (rw: {min}..{max}, default {default})", s.attr.name()),
        };
        assert_eq!(cell, &want, "the access of {}", s.attr.name());
        assert!(meaning.starts_with(s.doc), "the meaning of {} starts with {:?}: {meaning:?}", s.attr.name(), s.doc);
    }
}
