//! File operations against a real file system: confinement, atomic writes,
//! tar round trips.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use tether_files::{FileError, Files, Kind};
use tether_testkit::ScratchDir as Tmp;

/// A confined root `t/root` with a secret next to it, `t/secret`.
fn setup() -> (Tmp, Files) {
    let t = Tmp::new();
    std::fs::write(t.0.join("secret"), b"secret").unwrap();
    let f = Files::new(&t.root(), true).unwrap();
    (t, f)
}

fn write(f: &Files, path: &str, data: &[u8]) -> Result<(), FileError> {
    let mut up = f.create(path, None, true)?;
    up.file()?.write_all(data).unwrap();
    up.commit()
}

fn read(f: &Files, path: &str) -> Result<Vec<u8>, FileError> {
    let mut file = f.open_read(path, false)?.file;
    let mut out = Vec::new();
    file.read_to_end(&mut out).unwrap();
    Ok(out)
}

#[test]
fn confinement_refuses_every_escape() {
    let (t, f) = setup();
    let root = t.0.join("root");
    write(&f, "a/b.txt", b"inside").unwrap();
    symlink("../secret", root.join("up")).unwrap();
    symlink(t.0.join("secret"), root.join("abs")).unwrap();
    symlink(&t.0, root.join("outdir")).unwrap();
    symlink("a/b.txt", root.join("ok-link")).unwrap();
    for path in [
        "../secret",
        "a/../../secret",
        "up",
        "abs",
        "outdir/secret",
        "/etc/passwd",
        t.0.join("secret").to_str().unwrap(),
    ] {
        let e = read(&f, path).unwrap_err();
        assert!(matches!(e, FileError::Outside { .. }), "{path}: {e:?}");
        assert_eq!(e.status(), 403);
    }
    // Writes, through a symlinked directory or a `..`, are refused too.
    for path in ["outdir/new", "../new"] {
        assert!(write(&f, path, b"x").is_err(), "{path}");
    }
    assert!(!t.0.join("new").exists());
    // Writing to a name that is a symlink replaces the link, never what
    // it points to.
    write(&f, "abs", b"replaced").unwrap();
    assert_eq!(f.stat("abs").unwrap().kind, Kind::File);
    assert_eq!(std::fs::read(t.0.join("secret")).unwrap(), b"secret");
    // Inside is fine, by relative or absolute path, and through a link
    // that stays inside.
    assert_eq!(read(&f, "a/b.txt").unwrap(), b"inside");
    assert_eq!(read(&f, root.join("a/b.txt").to_str().unwrap()).unwrap(), b"inside");
    assert_eq!(read(&f, "ok-link").unwrap(), b"inside");
    // stat does not follow a final symlink, and shows its target.
    let st = f.stat("up").unwrap();
    assert_eq!((st.kind, st.target.as_deref()), (Kind::Symlink, Some("../secret")));
    // Renames and removals cannot reach outside either.
    assert!(f.rename("a/b.txt", "../stolen", false).is_err());
    assert!(f.remove("../secret", false).is_err());
    assert!(t.0.join("secret").exists());
}

#[test]
fn writes_are_atomic_and_keep_the_old_file_on_failure() {
    let (t, f) = setup();
    write(&f, "f", b"old contents").unwrap();
    // An upload dropped before commit leaves the old file and no temp file.
    let mut up = f.create("f", None, false).unwrap();
    up.file().unwrap().write_all(b"half").unwrap();
    drop(up);
    assert_eq!(read(&f, "f").unwrap(), b"old contents");
    let names: Vec<String> = f.list("").unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["f"]);
    // Mode: given, kept from the old file, or 0644.
    let mut up = f.create("f", Some(0o600), false).unwrap();
    up.file().unwrap().write_all(b"new").unwrap();
    up.commit().unwrap();
    assert_eq!(std::fs::metadata(t.0.join("root/f")).unwrap().permissions().mode() & 0o777, 0o600);
    write(&f, "f", b"newer").unwrap();
    assert_eq!(std::fs::metadata(t.0.join("root/f")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(f.stat("f").unwrap().size, 5);
    // Without parents, a missing directory is an error; a directory cannot
    // be overwritten by a file.
    assert!(matches!(f.create("x/y", None, false).unwrap_err(), FileError::NotFound { .. }));
    f.mkdir("d", false, 0o755).unwrap();
    assert!(matches!(f.create("d", None, false).unwrap_err(), FileError::IsADirectory { .. }));
    assert!(matches!(f.mkdir("d", false, 0o755).unwrap_err(), FileError::Exists { .. }));
    f.mkdir("d/e/g", true, 0o755).unwrap();
    // Special files are refused unless asked for.
    let fifo = t.0.join("root/fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    assert!(matches!(f.open_read("fifo", false).unwrap_err(), FileError::Special { .. }));
    assert!(f.open_read("fifo", true).is_ok());
    assert!(matches!(f.open_read("d", false).unwrap_err(), FileError::IsADirectory { .. }));
}

#[test]
fn rename_and_remove() {
    let (_t, f) = setup();
    write(&f, "a", b"1").unwrap();
    write(&f, "b", b"2").unwrap();
    assert!(matches!(f.rename("a", "b", false).unwrap_err(), FileError::Exists { .. }));
    f.rename("a", "b", true).unwrap();
    assert_eq!(read(&f, "b").unwrap(), b"1");
    write(&f, "t/u/v", b"deep").unwrap();
    assert!(matches!(f.remove("t", false).unwrap_err(), FileError::Exists { .. }));
    f.remove("t", true).unwrap();
    assert!(matches!(f.stat("t").unwrap_err(), FileError::NotFound { .. }));
}

#[test]
fn modes_and_owners_follow_links_inside_the_root_only() {
    use std::os::unix::fs::MetadataExt;
    let (t, f) = setup();
    let root = t.0.join("root");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    write(&f, "f", b"x").unwrap();
    f.mkdir("d", false, 0o755).unwrap();
    symlink("f", root.join("link")).unwrap();
    symlink(t.0.join("secret"), root.join("abs")).unwrap();
    f.set_mode("f", 0o640).unwrap();
    assert_eq!(mode(&root.join("f")), 0o640);
    // A directory, a mode no one may read, setuid: all as asked.
    f.set_mode("d", 0o700).unwrap();
    assert_eq!(mode(&root.join("d")), 0o700);
    f.set_mode("f", 0).unwrap();
    f.set_mode("link", 0o4755).unwrap();
    assert_eq!(mode(&root.join("f")), 0o4755);
    // A link out of the root is refused, and the secret is untouched.
    let before = mode(&t.0.join("secret"));
    assert!(matches!(f.set_mode("abs", 0o777).unwrap_err(), FileError::Outside { .. }));
    assert!(matches!(f.set_owner("abs", None, Some(0)).unwrap_err(), FileError::Outside { .. }));
    assert!(matches!(f.set_mode("../secret", 0o777).unwrap_err(), FileError::Outside { .. }));
    assert_eq!(mode(&t.0.join("secret")), before);
    assert!(matches!(f.set_mode("nope", 0o644).unwrap_err(), FileError::NotFound { .. }));
    assert!(matches!(f.set_mode("f", 0o10000).unwrap_err(), FileError::BadPath { .. }));
    // Owning it again as its owner is always allowed; `None` changes
    // nothing.
    let meta = std::fs::metadata(root.join("f")).unwrap();
    f.set_owner("f", Some(meta.uid()), Some(meta.gid())).unwrap();
    f.set_owner("link", None, None).unwrap();
    let after = std::fs::metadata(root.join("f")).unwrap();
    assert_eq!((after.uid(), after.gid()), (meta.uid(), meta.gid()));
}

#[test]
fn trees_round_trip_through_tar_with_modes_and_symlinks() {
    let (t, f) = setup();
    let src = t.0.join("root/src");
    std::fs::create_dir_all(src.join("sub/empty")).unwrap();
    std::fs::write(src.join("sub/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("sub/run.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
    std::fs::write(src.join("bin"), (0..=255u8).collect::<Vec<u8>>()).unwrap();
    std::fs::write(src.join("empty-file"), b"").unwrap();
    std::fs::set_permissions(src.join("sub/empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink("sub/run.sh", src.join("link")).unwrap();
    symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    let mut tar = Vec::new();
    let n = f.tar_to("src", &mut tar).unwrap();
    assert_eq!(n, 8, "src, sub, sub/empty, sub/run.sh, bin, empty-file, link, dangling");
    assert_eq!(f.untar_from("copy", &tar[..]).unwrap(), 8);
    let dst = t.0.join("root/copy/src");
    assert_eq!(std::fs::read(dst.join("bin")).unwrap(), std::fs::read(src.join("bin")).unwrap());
    assert_eq!(std::fs::read(dst.join("empty-file")).unwrap(), b"");
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dst.join("sub/run.sh")), 0o751);
    assert_eq!(mode(&dst.join("sub/empty")), 0o700);
    assert_eq!(std::fs::read_link(dst.join("link")).unwrap(), Path::new("sub/run.sh"));
    assert_eq!(std::fs::read_link(dst.join("dangling")).unwrap(), Path::new("/nowhere/at/all"));
    // A single file packs too.
    let mut one = Vec::new();
    assert_eq!(f.tar_to("src/bin", &mut one).unwrap(), 1);
}

#[test]
fn hostile_archives_cannot_escape() {
    let (t, f) = setup();
    // `..` in a name.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    // The builder refuses `..` itself: write the name into the header raw.
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escaped-it");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let bad = b.into_inner().unwrap();
    assert!(matches!(f.untar_from("x", &bad[..]).unwrap_err(), FileError::BadArchive(_)));
    assert!(!t.0.join("escaped-it").exists());
    // A symlink to the outside, then a file written through it.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "out", &t.0).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, "out/planted", &b"owned"[..]).unwrap();
    let bad = b.into_inner().unwrap();
    assert!(f.untar_from("y", &bad[..]).is_err());
    assert!(!t.0.join("planted").exists());
    // Even without confinement an archive cannot write through a symlink
    // it planted.
    let open = Files::new(&t.0.join("root"), false).unwrap();
    assert!(open.untar_from("z", &bad[..]).is_err());
    assert!(!t.0.join("planted").exists());
}

#[test]
fn walks_are_sorted_bounded_and_never_follow_symlinks() {
    use std::time::{Duration, Instant};
    use tether_files::{Step, WalkEnd, WalkLimit, WalkLimits};

    let (t, f) = setup();
    let root = t.0.join("root");
    write(&f, "a/b.txt", b"b").unwrap();
    write(&f, "a/c/d.txt", b"dd").unwrap();
    write(&f, "a-c", b"").unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink(&t.0, root.join("outdir")).unwrap();
    let open = WalkLimits { max_entries: 1000, max_depth: 64, deadline: None };
    let walk = |path: &str, limits: WalkLimits, prune: &str, stop_after: usize| {
        let mut seen = Vec::new();
        let end = f.walk(path, limits, |e| {
            seen.push((e.rel.to_str().unwrap().to_owned(), e.stat.kind, e.depth));
            if seen.len() == stop_after {
                Step::Stop
            } else if e.rel == Path::new(prune) {
                Step::Prune
            } else {
                Step::Continue
            }
        });
        (end, seen)
    };
    // Path order: a directory's contents right after it, names by bytes;
    // symlinks are entries of their own, never followed (nothing of the
    // parent, where `secret` is, shows up).
    let (end, seen) = walk("", open, "", 0);
    assert_eq!(end.unwrap(), WalkEnd::Complete);
    let want = [
        ("a", Kind::Dir, 1),
        ("a/b.txt", Kind::File, 2),
        ("a/c", Kind::Dir, 2),
        ("a/c/d.txt", Kind::File, 3),
        ("a-c", Kind::File, 1),
        ("outdir", Kind::Symlink, 1),
        ("up", Kind::Symlink, 1),
    ];
    let want: Vec<_> = want.iter().map(|(p, k, d)| (p.to_string(), *k, *d)).collect();
    assert_eq!(seen, want);
    // The same from an absolute path and from a subdirectory.
    assert_eq!(walk(root.to_str().unwrap(), open, "", 0).1, want);
    let (_, sub) = walk("a", open, "", 0);
    assert_eq!(sub.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["b.txt", "c", "c/d.txt"]);
    // Prune and stop.
    let (end, seen) = walk("", open, "a", 0);
    assert_eq!(end.unwrap(), WalkEnd::Complete);
    assert_eq!(seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["a", "a-c", "outdir", "up"]);
    let (end, seen) = walk("", open, "", 2);
    assert_eq!((end.unwrap(), seen.len()), (WalkEnd::Stopped, 2));
    // Limits: a prefix of the full walk, and which limit it was.
    let (end, seen) = walk("", WalkLimits { max_entries: 5, ..open }, "", 0);
    assert_eq!(end.unwrap(), WalkEnd::Truncated(WalkLimit::Entries));
    assert_eq!(seen, want[..1]);
    let (end, seen) = walk("", WalkLimits { max_depth: 1, ..open }, "", 0);
    assert_eq!(end.unwrap(), WalkEnd::Truncated(WalkLimit::Depth));
    assert!(seen.iter().all(|s| s.2 == 1) && seen.len() == 4, "{seen:?}");
    let past = Instant::now() - Duration::from_millis(1);
    let (end, seen) = walk("", WalkLimits { deadline: Some(past), ..open }, "", 0);
    assert_eq!((end.unwrap(), seen.len()), (WalkEnd::Truncated(WalkLimit::Deadline), 0));
    // Entries open as files, symlinks and directories do not.
    let mut opened = Vec::new();
    f.walk("", open, |e| {
        if let Ok(mut file) = e.open() {
            let mut s = String::new();
            file.read_to_string(&mut s).unwrap();
            opened.push((e.rel.to_str().unwrap().to_owned(), s));
        }
        Step::Continue
    })
    .unwrap();
    assert_eq!(
        opened,
        [("a/b.txt".into(), "b".into()), ("a/c/d.txt".into(), "dd".into()), ("a-c".into(), String::new())]
    );
    // The start is resolved like any path: confined, a file, missing.
    for (path, status) in
        [("..", 403), ("up", 403), ("outdir", 403), ("/etc", 403), ("a/b.txt", 400), ("nope", 404)]
    {
        let e = f.walk(path, open, |_| Step::Continue).unwrap_err();
        assert_eq!(e.status(), status, "{path}: {e:?}");
    }
    assert_eq!(f.absolute("./a/./c/"), root.join("a/c"));
    assert_eq!(f.absolute(root.join("a").to_str().unwrap()), root.join("a"));
}

/// A writer that calls `f` once, at the first write after `after` bytes.
struct Trigger<F: FnMut()> {
    f: Option<F>,
    after: usize,
    out: Vec<u8>,
}

impl<F: FnMut()> Write for Trigger<F> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.out.len() >= self.after
            && let Some(mut f) = self.f.take()
        {
            f();
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Entries removed while a tar walk is under way are left out (the walk
/// had already listed them): the archive is complete and valid.
#[test]
fn a_tar_of_a_tree_losing_entries_mid_walk_leaves_them_out() {
    let (t, f) = setup();
    let tree = t.0.join("root/tree");
    std::fs::create_dir_all(tree.join("b/deep")).unwrap();
    std::fs::write(tree.join("a"), vec![b'a'; 4000]).unwrap();
    std::fs::write(tree.join("b/deep/x"), b"x").unwrap();
    std::fs::write(tree.join("c"), b"c").unwrap();
    std::fs::write(tree.join("d"), b"d").unwrap();
    // After the directory's own entry (512 bytes), while `a` is written:
    // `tree` has been listed by then.
    let gone = tree.clone();
    let mut w = Trigger {
        f: Some(move || {
            std::fs::remove_dir_all(gone.join("b")).unwrap();
            std::fs::remove_file(gone.join("c")).unwrap();
        }),
        after: 512,
        out: Vec::new(),
    };
    let n = f.tar_to("tree", &mut w).unwrap();
    assert!(w.f.is_none(), "the trigger ran");
    let mut names = Vec::new();
    for e in tar::Archive::new(&w.out[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        names.push((e.path().unwrap().display().to_string(), data.len()));
    }
    assert_eq!(names, [("tree".to_owned(), 0), ("tree/a".to_owned(), 4000), ("tree/d".to_owned(), 1)]);
    assert_eq!(n, 3);
}

/// A file that shrinks while it is archived is padded with zeros to the
/// size its header gave, so the entries after it stay readable.
#[test]
fn a_tar_of_a_file_shrinking_mid_copy_stays_a_valid_archive() {
    let (t, f) = setup();
    let tree = t.0.join("root/tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("big"), vec![b'b'; 1 << 20]).unwrap();
    std::fs::write(tree.join("next"), b"next").unwrap();
    let big = tree.join("big");
    let mut w = Trigger {
        f: Some(move || std::fs::OpenOptions::new().write(true).open(&big).unwrap().set_len(10).unwrap()),
        after: 1024 + 64 * 1024,
        out: Vec::new(),
    };
    f.tar_to("tree", &mut w).unwrap();
    let mut seen = Vec::new();
    for e in tar::Archive::new(&w.out[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        seen.push((e.path().unwrap().display().to_string(), data));
    }
    assert_eq!(seen.len(), 3, "{:?}", seen.iter().map(|s| &s.0).collect::<Vec<_>>());
    assert_eq!(seen[1].0, "tree/big");
    assert_eq!(seen[1].1.len(), 1 << 20);
    assert!(seen[1].1[..10].iter().all(|b| *b == b'b'));
    assert!(seen[1].1[(1 << 20) - 10..].iter().all(|b| *b == 0), "padded with zeros");
    assert_eq!(seen[2], ("tree/next".to_owned(), b"next".to_vec()));
}

/// An upload in progress has no name in the directory: a daemon that
/// stops (or dies) during it leaves nothing behind.
#[test]
fn an_upload_in_progress_leaves_no_name_in_the_directory() {
    let (t, f) = setup();
    let root = t.0.join("root");
    let mut up = f.create("x", None, false).unwrap();
    let mut file = up.file().unwrap();
    file.write_all(b"partial").unwrap();
    let names = |_: ()| -> Vec<String> {
        std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(()), Vec::<String>::new(), "no temporary file is visible");
    drop(file);
    drop(up);
    assert_eq!(names(()), Vec::<String>::new());
    // Committed, it appears whole with its mode.
    let mut up = f.create("x", Some(0o640), false).unwrap();
    up.file().unwrap().write_all(b"whole").unwrap();
    up.commit().unwrap();
    assert_eq!(names(()), ["x"]);
    assert_eq!(std::fs::read(root.join("x")).unwrap(), b"whole");
    assert_eq!(std::fs::metadata(root.join("x")).unwrap().permissions().mode() & 0o7777, 0o640);
}
