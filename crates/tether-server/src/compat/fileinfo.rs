//! What the dialects say about a file that the file layer does not: Go's
//! `FileMode.String()` (Daytona's `mode`, E2B's `permissions`) and the
//! names of owners and groups.

use std::collections::HashMap;
use std::io::Read;

use tether_files::Kind;

/// Most bytes of `/etc/passwd` or `/etc/group` read.
const MAX_ID_DB: u64 = 16 << 20;

/// Go's `FileMode.String()`: the type and special letters in Go's order
/// (`dalTLDpSugct?`, `-` when none), then `rwxrwxrwx`.
pub(crate) fn go_mode(kind: Kind, mode: u32) -> String {
    let mut s = String::with_capacity(12);
    match kind {
        Kind::Dir => s.push('d'),
        Kind::Symlink => s.push('L'),
        Kind::BlockDevice | Kind::CharDevice => s.push('D'),
        Kind::Fifo => s.push('p'),
        Kind::Socket => s.push('S'),
        Kind::File => {}
    }
    if mode & 0o4000 != 0 {
        s.push('u');
    }
    if mode & 0o2000 != 0 {
        s.push('g');
    }
    if kind == Kind::CharDevice {
        s.push('c');
    }
    if mode & 0o1000 != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    s
}

/// User and group names, from `/etc/passwd` and `/etc/group` (no NSS: a
/// user only a directory service knows shows as its number).
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Users.
    pub(crate) users: IdTable,
    /// Groups.
    pub(crate) groups: IdTable,
}

/// Names by id and ids by name; the first line wins, as for `getpwuid`.
#[derive(Debug, Default)]
pub(crate) struct IdTable {
    /// Names by id.
    by_id: HashMap<u32, String>,
    /// Ids by name.
    by_name: HashMap<String, u32>,
}

impl Names {
    pub(crate) fn load() -> Names {
        Names {
            users: IdTable::parse(&read_db("/etc/passwd")),
            groups: IdTable::parse(&read_db("/etc/group")),
        }
    }
}

impl IdTable {
    /// `name:password:id:...` lines (both files have the id third).
    pub(crate) fn parse(text: &str) -> IdTable {
        let mut t = IdTable::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split(':');
            let (Some(name), Some(id)) = (fields.next(), fields.nth(1)) else { continue };
            let Ok(id) = id.trim().parse::<u32>() else { continue };
            if name.is_empty() {
                continue;
            }
            t.by_id.entry(id).or_insert_with(|| name.to_owned());
            t.by_name.entry(name.to_owned()).or_insert(id);
        }
        t
    }

    /// The name of `id`, else the number.
    pub(crate) fn name(&self, id: u32) -> String {
        self.by_id.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }

    /// The id named `name`, else `name` as a number.
    pub(crate) fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied().or_else(|| name.parse().ok())
    }
}

/// A user or group database's text (empty when unreadable).
fn read_db(path: &str) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_ID_DB).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
