//! The confined path resolver (`Files` with `--files-root`): any path a
//! client can send, built from `.`, `..`, names of symlinks that point out
//! in every way, absolute forms and raw text, through every operation.
//! Whatever succeeds names something inside the root (an opened file's
//! inode, a listing, a stat), and nothing outside the root ever changes.
#![no_main]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tether_files::Files;
use tether_fuzz::{Sandbox, inodes};

/// Names in the fixture (see `Sandbox::reset`) and a few more.
const NAMES: [&str; 16] = [
    "f", "d", "e", "g", "up", "out", "abs", "up2", "self", "loop", "slash", "rootabs", "outside", "SECRET",
    "root", "new",
];

#[derive(Arbitrary, Debug)]
enum Comp {
    Dot,
    DotDot,
    Name(u8),
    Empty,
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct ClientPath {
    /// 0: relative, 1: under the root's absolute path, 2: under the
    /// scratch base, 3: `/`.
    anchor: u8,
    comps: Vec<Comp>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Stat(ClientPath),
    Read(ClientPath, bool),
    List(ClientPath),
    Write(ClientPath, bool, Option<u16>),
    Mkdir(ClientPath, bool),
    Remove(ClientPath, bool),
    Rename(ClientPath, ClientPath, bool),
    Tar(ClientPath),
}

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::new("path"))
}

fn render(s: &Sandbox, p: &ClientPath) -> String {
    let mut out = match p.anchor % 4 {
        0 => String::new(),
        1 => s.root.display().to_string(),
        2 => s.base.display().to_string(),
        _ => "/".to_owned(),
    };
    for (i, c) in p.comps.iter().take(12).enumerate() {
        if i > 0 || !out.is_empty() {
            out.push('/');
        }
        match c {
            Comp::Dot => out.push('.'),
            Comp::DotDot => out.push_str(".."),
            Comp::Name(n) => out.push_str(NAMES[usize::from(*n) % NAMES.len()]),
            Comp::Empty => {}
            Comp::Raw(r) => out.push_str(r),
        }
    }
    out
}

fuzz_target!(|ops: Vec<Op>| {
    let s = sandbox();
    s.reset();
    let before = s.outside_snapshot();
    let files = Files::new(&s.root, true).expect("a root");
    for op in ops.iter().take(16) {
        match op {
            Op::Stat(p) => {
                if let Ok(st) = files.stat(&render(s, p)) {
                    // Something of that name and kind exists under the root.
                    let names = names_under(s);
                    assert!(
                        st.name.is_empty() || names.contains(&st.name),
                        "stat of {:?} named {:?}, which is not under the root",
                        render(s, p),
                        st.name
                    );
                }
            }
            Op::Read(p, special) => {
                if let Ok(opened) = files.open_read(&render(s, p), *special) {
                    let md = opened.file.metadata().expect("fstat");
                    assert!(
                        inodes(&s.root).contains(&(md.dev(), md.ino())),
                        "{:?} opened a file outside the root",
                        render(s, p)
                    );
                }
            }
            Op::List(p) => {
                if let Ok(entries) = files.list(&render(s, p)) {
                    let got: Vec<String> = entries.into_iter().map(|e| e.name).collect();
                    assert!(
                        listings_under(s).contains(&got),
                        "{:?} listed {got:?}, no directory under the root",
                        render(s, p)
                    );
                }
            }
            Op::Write(p, parents, mode) => {
                let mode = mode.map(|m| u32::from(m) & 0o777 | 0o600);
                if let Ok(mut up) = files.create(&render(s, p), mode, *parents) {
                    if let Ok(mut f) = up.file() {
                        let _ = f.write_all(b"written by the fuzzer");
                    }
                    let _ = up.commit();
                }
            }
            Op::Mkdir(p, parents) => {
                let _ = files.mkdir(&render(s, p), *parents, 0o755);
            }
            Op::Remove(p, recursive) => {
                let _ = files.remove(&render(s, p), *recursive);
            }
            Op::Rename(a, b, overwrite) => {
                let _ = files.rename(&render(s, a), &render(s, b), *overwrite);
            }
            Op::Tar(p) => {
                let mut out = Vec::new();
                if files.tar_to(&render(s, p), &mut out).is_ok() {
                    let secret = b"secret outside the root";
                    assert!(
                        !out.windows(secret.len()).any(|w| w == secret),
                        "a tar of {:?} carried a file from outside the root",
                        render(s, p)
                    );
                }
            }
        }
        assert!(s.outside_snapshot() == before, "{op:?} changed something outside the root");
    }
});

fn names_under(s: &Sandbox) -> BTreeSet<String> {
    tether_fuzz::snapshot(&s.root)
        .keys()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect()
}

fn listings_under(s: &Sandbox) -> Vec<Vec<String>> {
    let snap = tether_fuzz::snapshot(&s.root);
    let mut out = Vec::new();
    for (p, node) in &snap {
        if node.kind == 'd' {
            let mut names: Vec<String> = snap
                .keys()
                .filter(|q| q.parent() == Some(p.as_path()) && q.as_path() != p.as_path())
                .filter_map(|q| q.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            names.sort();
            out.push(names);
        }
    }
    out
}
