//! The import rule of the code base: no file imports a file that imports it, directly or through
//! others, in the module (`rust/`), the userspace crates (`userspace/*/src`) and xtask
//! (`xtask/src`). Imports are read as text: `use` trees and `crate::`/`super::` paths in code
//! (comments left out), resolved to the file of the longest module path that has one.
//! `cargo xtask imports` prints the file graph's circles; a host test keeps them at none.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One crate: its source directory and root file.
struct Krate {
    dir: PathBuf,
    root: PathBuf,
}

/// The crates of the repository whose files the rule covers.
fn krates(repo: &Path) -> Vec<Krate> {
    let mut out = vec![
        Krate { dir: repo.join("rust"), root: repo.join("rust/peerflash_main.rs") },
        Krate { dir: repo.join("xtask/src"), root: repo.join("xtask/src/main.rs") },
    ];
    for name in ["core", "lease", "peerflash"] {
        let dir = repo.join("userspace").join(name).join("src");
        let root = if dir.join("lib.rs").exists() { dir.join("lib.rs") } else { dir.join("main.rs") };
        out.push(Krate { dir, root });
    }
    out
}

/// The module path of `file` in its crate (the root is `[]`; `a/mod.rs` is `[a]`).
fn module_path(k: &Krate, file: &Path) -> Vec<String> {
    if file == k.root {
        return Vec::new();
    }
    let rel = file.strip_prefix(&k.dir).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The file of the longest prefix of `path` that is a module with a file of its own; an item of
/// the crate root (`crate::NAME`, or a module declared inline there) is the root's.
fn resolve(k: &Krate, path: &[String]) -> Option<PathBuf> {
    if path.is_empty() {
        return Some(k.root.clone());
    }
    for n in (1..=path.len()).rev() {
        let rel: PathBuf = path[..n].iter().collect();
        for cand in [k.dir.join(&rel).with_extension("rs"), k.dir.join(&rel).join("mod.rs")] {
            if cand.exists() {
                return Some(cand);
            }
        }
    }
    // Not a module file: an item of the root, or of a module declared inline in it.
    Some(k.root.clone())
}

/// The text of `src` without comments (line and block comments) and string literals.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if let Some(r) = rest.strip_prefix("'\"'") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('"') {
            // To the closing quote, over escapes.
            let mut end = r.len();
            let mut esc = false;
            for (i, c) in r.char_indices() {
                match c {
                    '\\' if !esc => esc = true,
                    '"' if !esc => {
                        end = i + 1;
                        break;
                    }
                    _ => esc = false,
                }
            }
            out.push_str("\"\"");
            rest = &r[end.min(r.len())..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(tree).trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = tree[open + 1..].trim_end().strip_suffix('}').unwrap_or(&tree[open + 1..]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p).into_iter().map(|s| format!("{prefix}{s}")))
        .collect()
}

/// The module paths `file` refers to, absolute in its crate.
fn references(k: &Krate, file: &Path, src: &str, root_mods: &BTreeSet<String>) -> Vec<Vec<String>> {
    let me = module_path(k, file);
    let child_of = |me: &[String], name: &str| -> bool {
        let dir: PathBuf = me.iter().collect();
        let d = k.dir.join(dir);
        d.join(format!("{name}.rs")).exists() || d.join(name).join("mod.rs").exists()
    };
    // A file `a/b.rs` is module `a::b`; `super` in it is `a`.
    let absolute = |path: &str| -> Option<Vec<String>> {
        let segs: Vec<&str> = path.split("::").map(str::trim).filter(|s| !s.is_empty()).collect();
        let (mut base, rest) = match segs.first().copied() {
            Some("crate") => (Vec::new(), &segs[1..]),
            Some("super") => {
                let mut b = me.clone();
                let mut i = 0;
                while segs.get(i) == Some(&"super") {
                    b.pop();
                    i += 1;
                }
                (b, &segs[i..])
            }
            Some("self") => (me.clone(), &segs[1..]),
            Some(first) if me.is_empty() && root_mods.contains(first) => (Vec::new(), &segs[..]),
            // A child module of this one, named without `self::`.
            Some(first) if child_of(&me, first) => (me.clone(), &segs[..]),
            _ => return None,
        };
        base.extend(rest.iter().map(|s| s.to_string()));
        Some(base)
    };
    let text = strip_comments(src);
    let mut out = Vec::new();
    // `use` trees.
    let mut rest = text.as_str();
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        for p in expand(&rest[..end]) {
            // `use super::*` is an inline test module's view of its file.
            if p.trim() == "super::*" {
                continue;
            }
            out.extend(absolute(&p));
        }
        rest = &rest[end..];
    }
    // Paths in code: `crate::a::b`, `super::a` (and a root's own modules: `a::b`).
    let bytes = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !(word(bytes[i - 1]) || bytes[i - 1] == b':')) {
            let mut j = i;
            while j < bytes.len() && (word(bytes[j]) || (bytes[j] == b':' && bytes.get(j + 1) == Some(&b':'))) {
                j += if bytes[j] == b':' { 2 } else { 1 };
            }
            let path = &text[i..j];
            // A path with nothing after its last `::` goes on in a `{...}` or `*` of a `use`
            // tree, which the `use` pass has read.
            if path.contains("::") && !path.ends_with("::") {
                out.extend(absolute(path));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The import graph: file -> files it imports (paths relative to `repo`).
pub fn graph(repo: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut g = BTreeMap::new();
    let rel = |p: &Path| p.strip_prefix(repo).unwrap_or(p).display().to_string();
    for k in krates(repo) {
        let mut files = Vec::new();
        rust_files(&k.dir, &mut files)?;
        let root_src = std::fs::read_to_string(&k.root).with_context(|| format!("cannot read {}", k.root.display()))?;
        let root_mods: BTreeSet<String> = strip_comments(&root_src)
            .lines()
            .filter_map(|l| {
                let l = l.trim().trim_start_matches("pub ").trim_start_matches("pub(crate) ");
                l.strip_prefix("mod ")?.strip_suffix(';').map(|m| m.trim().to_string())
            })
            .collect();
        for f in files {
            let src = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
            let to: BTreeSet<String> = references(&k, &f, &src, &root_mods)
                .iter()
                .filter_map(|p| resolve(&k, p))
                .filter(|t| *t != f)
                .map(|t| rel(&t))
                .collect();
            g.insert(rel(&f), to);
        }
    }
    Ok(g)
}

/// The circles of the graph: its strongly connected parts of more than one file.
pub fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two files are in one circle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (k, r) in &reaches {
        if done.contains(*k) || !r.contains(*k) {
            continue;
        }
        let circle: Vec<String> = r.iter().filter(|m| reaches.get(m).is_some_and(|mr| mr.contains(*k))).cloned().collect();
        done.extend(circle.iter().cloned());
        out.push(circle);
    }
    out
}

/// `cargo xtask imports`: prints the circles (none: the rule holds) and fails if there are any.
pub fn run(verbose: bool, repo: Option<PathBuf>) -> Result<()> {
    let repo = repo.unwrap_or_else(crate::env::repo_root);
    let g = graph(&repo)?;
    if verbose {
        for (f, to) in &g {
            println!("{f} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
        }
    }
    let c = circles(&g);
    let edges: usize = g.values().map(BTreeSet::len).sum();
    println!("{} files, {edges} imports between files, {} circle(s)", g.len(), c.len());
    for circle in &c {
        println!("circle: {}", circle.join(" <-> "));
    }
    if !c.is_empty() {
        bail!("{} import circle(s)", c.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_expand() {
        assert_eq!(expand("super::{a::{B, C}, d}"), ["super::a::B", "super::a::C", "super::d"]);
        assert_eq!(expand("crate::x as y"), ["crate::x"]);
    }

    #[test]
    fn a_circle_is_found() {
        let mut g = BTreeMap::new();
        g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
        g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
        g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
        g.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
        assert_eq!(circles(&g), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
        g.get_mut("c").unwrap().clear();
        assert!(circles(&g).is_empty());
    }

    /// The repository keeps the rule: imports run one way.
    #[test]
    fn imports_run_one_way() {
        let repo = crate::env::repo_root();
        let g = graph(&repo).unwrap();
        assert!(g.len() > 50, "the graph covers the code base ({} files)", g.len());
        // The graph sees the layering it checks (control -> volume -> cache -> blk).
        assert!(g["rust/control/volume.rs"].contains("rust/volume.rs"));
        assert!(g["rust/control/attrs.rs"].contains("rust/control/volume.rs"));
        assert!(g["rust/volume.rs"].contains("rust/cache/mod.rs") || g["rust/volume.rs"].contains("rust/cache/cache.rs"));
        assert!(g["rust/cache/write.rs"].contains("rust/cache/cache.rs"));
        let c = circles(&g);
        assert!(c.is_empty(), "import circles: {c:?}");
    }
}
