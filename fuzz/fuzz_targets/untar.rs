//! Tar extraction (`PUT /v1/files/tar`): any archive, raw bytes or built
//! from entries with hostile names (`..`, absolute, through symlinks the
//! archive plants itself or the tree already has), hard links and odd
//! types, into a confined or an unconfined root. It answers `Ok` or a typed
//! error, never panics, and never changes anything outside the target
//! directory.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tether_files::Files;
use tether_fuzz::{Sandbox, snapshot};

/// Where the corpus's absolute entries and links aim (`/tmp/...`).
const ESCAPED: &str = "/tmp/tether-fuzz-escaped";

const NAMES: [&str; 9] = ["a", "b", "..", ".", "up", "out", "abs", "SECRET", "outside"];

#[derive(Arbitrary, Debug)]
struct Entry {
    /// Leading `/`.
    absolute: bool,
    name: Vec<u8>,
    /// 0 file, 1 dir, 2 symlink, 3 hard link, else that type byte.
    kind: u8,
    /// A symlink's or link's target, in the same vocabulary.
    link: Vec<u8>,
    mode: u16,
    data: Vec<u8>,
}

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| Sandbox::new("untar"))
}

/// A path from name indices (a byte past the table is taken as raw text).
fn path(s: &Sandbox, absolute: bool, parts: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if absolute {
        out.extend_from_slice(s.base.as_os_str().as_encoded_bytes());
    }
    for (i, &p) in parts.iter().take(8).enumerate() {
        if i > 0 || absolute {
            out.push(b'/');
        }
        match NAMES.get(usize::from(p)) {
            Some(n) => out.extend_from_slice(n.as_bytes()),
            None => out.push(p),
        }
    }
    out
}

fn build(s: &Sandbox, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries.iter().take(16) {
        let mut h = tar::Header::new_old();
        // Names go straight into the header, unchecked: the archive is
        // the attacker's.
        let name = path(s, e.absolute, &e.name);
        let link = path(s, e.link.first().is_some_and(|b| b & 1 == 1), &e.link);
        let old = h.as_old_mut();
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name[..n]);
        let n = link.len().min(old.linkname.len());
        old.linkname[..n].copy_from_slice(&link[..n]);
        h.set_entry_type(match e.kind {
            0 => tar::EntryType::Regular,
            1 => tar::EntryType::Directory,
            2 => tar::EntryType::Symlink,
            3 => tar::EntryType::Link,
            k => tar::EntryType::new(k),
        });
        h.set_mode(u32::from(e.mode) & 0o7777);
        let data = if e.kind == 0 { &e.data[..] } else { &[][..] };
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

// The first byte: bit 0 confines the root, bit 1 builds the archive from
// entries (the rest read as `Vec<Entry>`); else the rest is the archive
// itself (the corpus holds real ones).
fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let confine = flags & 1 == 1;
    let s = sandbox();
    s.reset();
    let bytes = if flags & 2 == 2 {
        match Vec::<Entry>::arbitrary(&mut Unstructured::new(rest)) {
            Ok(entries) => build(s, &entries),
            Err(_) => return,
        }
    } else {
        rest.to_vec()
    };
    let before = s.outside_snapshot();
    let mut root_before = snapshot(&s.root);
    let files = Files::new(&s.root, confine).expect("a root");
    let _ = files.untar_from("dest", &bytes[..]);
    // Outside the root: nothing changed. Inside it: nothing but `dest`.
    assert!(s.outside_snapshot() == before, "untar changed something outside the root");
    let mut root_after = snapshot(&s.root);
    root_after.retain(|p, _| !p.starts_with("dest"));
    root_before.retain(|p, _| !p.as_os_str().is_empty());
    root_after.retain(|p, _| !p.as_os_str().is_empty());
    assert!(root_after == root_before, "untar changed the root outside its target directory");
    // The absolute name the corpus's hostile archives aim at.
    assert!(!std::path::Path::new(ESCAPED).exists(), "untar wrote {ESCAPED}");
});
