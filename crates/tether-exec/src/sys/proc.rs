//! Reading `/proc`: who a process's children are, the one tree walker built
//! on that, sessions, process groups, environments, signal dispositions.

use std::collections::{HashMap, HashSet};

/// Every pid in `/proc`.
pub(crate) fn all_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
}

/// The fields of `/proc/PID/stat` tether looks at.
pub(super) struct ProcStat {
    pub(super) zombie: bool,
    pub(super) ppid: u32,
    session: u32,
}

pub(super) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces
    // or parentheses itself: parse from the last ')'. Then: state ppid
    // pgrp session ...
    let mut f = stat[stat.rfind(')')? + 1..].split_whitespace();
    let zombie = f.next()? == "Z";
    let ppid = f.next()?.parse().ok()?;
    let session = f.nth(1)?.parse().ok()?;
    Some(ProcStat { zombie, ppid, session })
}

/// The children of `pid`, from `/proc/PID/task/*/children` (a few small
/// reads), or, on a kernel without those files, from a scan of `/proc`.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    static HAVE_CHILDREN_FILES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let have = *HAVE_CHILDREN_FILES.get_or_init(|| {
        let me = std::process::id();
        std::path::Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    });
    if !have {
        return by_parent().remove(&pid).unwrap_or_default();
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(list.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
        }
    }
    out
}

/// Every process's children, from one pass over `/proc`.
fn by_parent() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(s) = proc_stat(pid) {
            children.entry(s.ppid).or_default().push(pid);
        }
    }
    children
}

/// The tree walker: every process below `roots` (not the roots
/// themselves), each once, going down only into processes `enter` accepts,
/// at most `max` of them. `children_of` says where the children of a
/// process are found.
fn walk(
    roots: &[u32],
    mut children_of: impl FnMut(u32) -> Vec<u32>,
    enter: impl Fn(u32) -> bool,
    max: usize,
) -> Vec<u32> {
    let mut out = Vec::new();
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    let mut stack = roots.to_vec();
    while let Some(p) = stack.pop() {
        for c in children_of(p) {
            if out.len() < max && enter(c) && seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// The descendants of `root`, walking down into the processes `enter`
/// accepts only, at most `max`. A few small reads per process of the tree,
/// not a scan of every process on the host. A process reparented away from
/// the tree (its parent died) is not found.
pub(crate) fn descendants_where(root: u32, enter: impl Fn(u32) -> bool, max: usize) -> Vec<u32> {
    walk(&[root], children, enter, max)
}

/// These processes and every process whose parent chain leads to one of
/// them, from one pass over `/proc` (each once): the whole host is read
/// once, instead of a few files per process of possibly many trees.
pub(super) fn trees(roots: &[u32]) -> Vec<u32> {
    let mut by_parent = by_parent();
    let mut out: Vec<u32> = Vec::with_capacity(roots.len());
    for &r in roots {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    let below = walk(&out, |p| by_parent.remove(&p).unwrap_or_default(), |_| true, usize::MAX);
    out.extend(below);
    out
}

/// Every live (not zombie) process of session `sid`, from `/proc`.
pub(crate) fn session_members(sid: u32) -> Vec<u32> {
    all_pids().filter(|&p| proc_stat(p).is_some_and(|s| s.session == sid && !s.zombie)).collect()
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| !s.zombie)
}

/// The process group of `pid`.
pub(crate) fn pgid_of(pid: u32) -> Option<u32> {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).ok()?)?;
    rustix::process::getpgid(Some(pid)).ok().map(|g| g.as_raw_nonzero().get() as u32)
}

/// `/proc/PID/environ` (empty if it cannot be read: another user's process,
/// or gone).
pub(crate) fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()
}

/// Whether an environment block (as read by [`environ`]) holds exactly
/// `entry` (`NAME=value`).
pub(crate) fn env_has(env: &[u8], entry: &str) -> bool {
    env.split(|&b| b == 0).any(|e| e == entry.as_bytes())
}

/// The value of `name` in an environment block (as read by [`environ`]),
/// if it holds one.
pub(crate) fn env_value<'a>(env: &'a [u8], name: &str) -> Option<&'a [u8]> {
    env.split(|&b| b == 0).find_map(|e| e.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
}

/// Whether `pid` has SIGINT at its default action (neither caught nor
/// ignored): such a process dies of a SIGINT it receives.
pub(crate) fn sigint_default(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    let bit = 1u64 << (libc::SIGINT - 1);
    (mask("SigCgt:") | mask("SigIgn:")) & bit == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_of_self_is_parent() {
        let me = std::process::id();
        let s = proc_stat(me).expect("our own stat");
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(!s.zombie);
    }

    #[test]
    fn both_ways_of_finding_children_walk_the_same_tree() {
        // sh -> sleep, and a second sleep in the background of sh.
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30; wait"])
            .spawn()
            .expect("sh");
        let sh = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut by_files = Vec::new();
        while by_files.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            by_files = descendants_where(sh, |_| true, usize::MAX);
        }
        let mut by_scan = trees(&[sh, sh]);
        assert_eq!(by_scan.iter().filter(|&&p| p == sh).count(), 1, "a root is listed once");
        by_scan.retain(|&p| p != sh);
        by_files.sort_unstable();
        by_scan.sort_unstable();
        let _ = child.kill();
        for p in &by_files {
            let _ = std::process::Command::new("kill").arg(p.to_string()).status();
        }
        let _ = child.wait();
        assert_eq!(by_files.len(), 2, "{by_files:?}");
        assert_eq!(by_files, by_scan);
        assert!(descendants_where(sh, |_| false, usize::MAX).is_empty());
    }
}
