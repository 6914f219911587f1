//! Helpers shared by tether's fuzz targets: the round-trip check for wire
//! messages and a scratch directory tree with a root, something outside it
//! and symlinks pointing out, for the file targets.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_proto::{Encoding, decode, encode, encode_sized};

/// If `data` decodes as a `T` in `enc`, the message must survive being
/// encoded again (both encodings, and `encode_sized` must agree with
/// `encode`): what the daemon accepts it can also say back.
pub fn round_trip<T>(data: &[u8], enc: Encoding) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let msg = decode::<T>(data, enc).ok()?;
    for to in [Encoding::MsgPack, Encoding::Json] {
        let bytes = encode(&msg, to);
        assert_eq!(encode_sized(&msg, to, 7), bytes, "encode_sized differs from encode for {msg:?}");
        match decode::<T>(&bytes, to) {
            Ok(back) => assert_eq!(back, msg, "{to:?} round trip changed the message"),
            Err(e) => panic!("{msg:?} encoded as {to:?} does not decode: {e}"),
        }
    }
    Some(msg)
}

/// One entry of a tree snapshot: kind, permission bits, size, contents or
/// link target.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    /// `f`, `d`, `l` or `o`.
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    /// A file's bytes or a link's target.
    pub content: Vec<u8>,
}

/// Everything below `dir` (symlinks not followed), by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

fn walk(base: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let path = base.join(rel);
    let Ok(md) = std::fs::symlink_metadata(&path) else { return };
    let ft = md.file_type();
    let (kind, content) = if ft.is_symlink() {
        ('l', std::fs::read_link(&path).map(|t| t.into_os_string().into_encoded_bytes()).unwrap_or_default())
    } else if ft.is_file() {
        ('f', std::fs::read(&path).unwrap_or_default())
    } else if ft.is_dir() {
        ('d', Vec::new())
    } else {
        ('o', Vec::new())
    };
    out.insert(rel.to_owned(), Node { kind, mode: md.permissions().mode() & 0o7777, content });
    if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&path)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        for n in names {
            walk(base, &rel.join(n), out);
        }
    }
}

/// `(device, inode)` of everything below `dir`, `dir` included, symlinks
/// not followed.
pub fn inodes(dir: &Path) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        out.push((md.dev(), md.ino()));
        if md.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A scratch tree: `base/outside` (what must never be touched) and
/// `base/root` (where the files API is rooted), rebuilt for every input.
pub struct Sandbox {
    /// The scratch directory.
    pub base: PathBuf,
    /// The root handed to `Files`.
    pub root: PathBuf,
    /// The directory that stands for the rest of the machine.
    pub outside: PathBuf,
}

impl Sandbox {
    /// The tree for this process (one per fuzzing process, reused).
    pub fn new(tag: &str) -> Sandbox {
        let base = std::env::temp_dir().join(format!("tether-fuzz-{tag}-{}", std::process::id()));
        let base = {
            std::fs::create_dir_all(&base).expect("scratch directory");
            std::fs::canonicalize(&base).expect("scratch directory")
        };
        let outside = base.join("outside");
        let root = base.join("root");
        let s = Sandbox { base, root, outside };
        if !s.outside.exists() {
            std::fs::create_dir_all(s.outside.join("sub")).expect("outside");
            std::fs::write(s.outside.join("SECRET"), b"secret outside the root").expect("outside");
            std::fs::write(s.outside.join("sub/deeper"), b"also outside").expect("outside");
        }
        s
    }

    /// Empties the root and lays out its fixture: plain entries and
    /// symlinks that point out of it in every way.
    pub fn reset(&self) {
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root).expect("clear the root");
        }
        std::fs::create_dir_all(self.root.join("d/e")).expect("root");
        std::fs::write(self.root.join("f"), b"a file inside").expect("root");
        std::fs::write(self.root.join("d/g"), b"another").expect("root");
        let links: [(&str, PathBuf); 8] = [
            ("up", "..".into()),
            ("out", "../outside".into()),
            ("abs", self.outside.clone()),
            ("d/up2", "../../outside/SECRET".into()),
            ("self", ".".into()),
            ("loop", "loop".into()),
            ("slash", "/".into()),
            ("d/e/rootabs", self.root.clone()),
        ];
        for (name, target) in links {
            symlink(target, self.root.join(name)).expect("symlink");
        }
    }

    /// The part of the tree that must never change: everything but the
    /// root.
    pub fn outside_snapshot(&self) -> BTreeMap<PathBuf, Node> {
        let mut s = snapshot(&self.base);
        s.retain(|p, _| !p.starts_with("root") || p.as_os_str().is_empty());
        s
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
