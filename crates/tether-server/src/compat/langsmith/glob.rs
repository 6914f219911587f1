//! The glob matcher of the search routes (`/glob`, and `/grep`'s `glob`
//! filter), and the pruning question the walk asks of it.
//!
//! It is written here rather than taken from `globset`: the client's
//! language is a small segment-wise one (`**` as a whole segment, `*`, `?`,
//! `[...]` within one), and the walk needs "can anything below this
//! directory match?" to prune, which `globset` does not answer. The
//! matching is the classic wildcard loop with one backtrack point, once
//! over the characters of a name and once over the segments of a path.

use std::borrow::Cow;

/// grep's `glob`: a bare pattern (no `/`, no `**`) matches the file's name
/// at any depth, any other the path relative to the search's `path`.
#[derive(Debug)]
pub(crate) enum Filter {
    /// Matches the file's name.
    Name(Pattern),
    /// Matches the path relative to the search's `path`.
    Path(Pattern),
}

impl Filter {
    pub(super) fn parse(glob: &str) -> Option<Filter> {
        let p = Pattern::parse(glob)?;
        Some(if glob.contains('/') || glob.contains("**") { Filter::Path(p) } else { Filter::Name(p) })
    }

    pub(super) fn matches(&self, segs: &[Cow<'_, str>]) -> bool {
        match self {
            Filter::Name(p) => segs.last().is_some_and(|n| p.matches(std::slice::from_ref(n), false)),
            Filter::Path(p) => p.matches(segs, false),
        }
    }

    pub(super) fn may_match_below(&self, dir: &[Cow<'_, str>]) -> bool {
        match self {
            Filter::Name(_) => true,
            Filter::Path(p) => p.may_match_below(dir),
        }
    }
}

/// A glob over `/`-separated paths: `**` as a whole segment is any number
/// of segments (none included); within a segment, `*` is any run of
/// characters, `?` one character, `[...]` one of a set (`[!...]` or
/// `[^...]` one not in it, `a-z` a range), `\` makes the next character
/// literal. `*` and `?` match a leading `.` too. Empty and `.` segments
/// are ignored; a trailing `/` matches directories only.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// Never empty.
    segs: Vec<Seg>,
    /// The pattern ended in `/`.
    dirs_only: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Seg {
    /// `**`.
    AnyDepth,
    /// One name.
    Name(Vec<Tok>),
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    /// Itself.
    Char(char),
    /// `*`.
    Any,
    /// `?`.
    One,
    /// `[...]`: inclusive ranges (a single character is a range of one).
    Class {
        /// `[!...]` or `[^...]`: any character not in the ranges.
        negated: bool,
        /// The members.
        ranges: Vec<(char, char)>,
    },
}

impl Pattern {
    /// `None` when nothing is left to match (empty, or only `/` and `.`).
    pub(crate) fn parse(p: &str) -> Option<Pattern> {
        let segs: Vec<Seg> = p
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(|s| if s == "**" { Seg::AnyDepth } else { Seg::Name(parse_name(s)) })
            .collect();
        if segs.is_empty() {
            return None;
        }
        Some(Pattern { segs, dirs_only: p.ends_with('/') })
    }

    /// Whether the relative path `segs` (of a directory when `is_dir`)
    /// matches.
    pub(super) fn matches<S: AsRef<str>>(&self, segs: &[S], is_dir: bool) -> bool {
        if self.dirs_only && !is_dir {
            return false;
        }
        // The wildcard loop over segments: `**` is the star.
        let (mut p, mut s) = (0, 0);
        let mut retry: Option<(usize, usize)> = None;
        while s < segs.len() {
            match self.segs.get(p) {
                Some(Seg::AnyDepth) => {
                    retry = Some((p + 1, s));
                    p += 1;
                }
                Some(Seg::Name(toks)) if name_matches(toks, segs[s].as_ref()) => {
                    p += 1;
                    s += 1;
                }
                _ => match retry {
                    // Let the last `**` take one more segment.
                    Some((rp, rs)) => {
                        retry = Some((rp, rs + 1));
                        p = rp;
                        s = rs + 1;
                    }
                    None => return false,
                },
            }
        }
        self.segs[p..].iter().all(|s| *s == Seg::AnyDepth)
    }

    /// Whether some path below directory `dir` could match (false means
    /// the walk need not enter it). Before the first `**` segments pair up
    /// one to one; from there on anything could.
    pub(super) fn may_match_below<S: AsRef<str>>(&self, dir: &[S]) -> bool {
        for (i, name) in dir.iter().enumerate() {
            match self.segs.get(i) {
                Some(Seg::AnyDepth) => return true,
                Some(Seg::Name(toks)) if name_matches(toks, name.as_ref()) => {}
                _ => return false,
            }
        }
        self.segs.len() > dir.len()
    }
}

/// One segment's tokens. An unclosed `[` is a literal `[`.
fn parse_name(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => toks.push(Tok::Any),
            '?' => toks.push(Tok::One),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                toks.push(Tok::Char(chars[i]));
            }
            '[' => match parse_class(&chars[i + 1..]) {
                Some((tok, used)) => {
                    toks.push(tok);
                    i += used;
                }
                None => toks.push(Tok::Char('[')),
            },
            c => toks.push(Tok::Char(c)),
        }
        i += 1;
    }
    toks
}

/// A class after its `[`: the token and how many characters it used (the
/// closing `]` included); `None` when it is not closed. A `]` right after
/// `[`, `[!` or `[^` is a member, as is a `-` at either end.
fn parse_class(chars: &[char]) -> Option<(Tok, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    loop {
        let mut c = *chars.get(i)?;
        if c == ']' && i > first {
            return Some((Tok::Class { negated, ranges }, i + 1));
        }
        if c == '\\' && i + 1 < chars.len() {
            i += 1;
            c = chars[i];
        }
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

/// The wildcard loop over one name's characters: `*` is the star.
fn name_matches(toks: &[Tok], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    let (mut t, mut n) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match toks.get(t) {
            Some(Tok::Any) => {
                retry = Some((t + 1, n));
                t += 1;
                continue;
            }
            Some(Tok::Char(c)) => *c == name[n],
            Some(Tok::One) => true,
            Some(Tok::Class { negated, ranges }) => {
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&name[n])) != *negated
            }
            None => false,
        };
        if step {
            t += 1;
            n += 1;
        } else if let Some((rt, rn)) = retry {
            retry = Some((rt, rn + 1));
            t = rt;
            n = rn + 1;
        } else {
            return false;
        }
    }
    toks[t..].iter().all(|t| *t == Tok::Any)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').collect();
        Pattern::parse(pattern).unwrap().matches(&segs, false)
    }

    #[test]
    fn names() {
        assert!(m("*.rs", "main.rs"));
        assert!(m("*.rs", ".rs"));
        assert!(m("*", ".hidden"));
        assert!(!m("*.rs", "main.rsx"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("?.txt", "a.txt") && !m("?.txt", "ab.txt") && !m("?.txt", ".txt"));
        assert!(m("é?", "éü"));
        assert!(m("[abc].py", "b.py") && !m("[abc].py", "d.py"));
        assert!(m("[a-c][0-9]", "b7") && !m("[a-c][0-9]", "d7"));
        assert!(m("[!a-c]x", "dx") && !m("[!a-c]x", "ax"));
        assert!(m("[^a-c]x", "dx") && !m("[^a-c]x", "bx"));
        assert!(m("[]]", "]") && m("[!]]", "a") && !m("[!]]", "]"));
        assert!(m("[a-]", "-") && m("[-a]", "-") && !m("[a-]", "b"));
        assert!(m("[", "[") && m("a[b", "a[b"));
        assert!(m(r"\*", "*") && !m(r"\*", "a") && m(r"[\]]", "]"));
    }

    #[test]
    fn segments_and_double_star() {
        assert!(m("**", "a") && m("**", "a/b/c"));
        assert!(m("**/*.rs", "x.rs") && m("**/*.rs", "a/b/x.rs") && !m("**/*.rs", "a/b/x.py"));
        assert!(m("src/**", "src") && m("src/**", "src/a/b") && !m("src/**", "lib/a"));
        assert!(m("a/**/z", "a/z") && m("a/**/z", "a/b/c/z") && !m("a/**/z", "a/b/c/y"));
        assert!(m("**/b/**/d", "a/b/c/d") && m("**/b/**/d", "b/d") && !m("**/b/**/d", "a/c/d"));
        // `*` never crosses a `/`.
        assert!(m("*", "a") && !m("*", "a/b") && !m("a*", "ab/c"));
        assert!(m("*/*.py", "pkg/m.py") && !m("*/*.py", "m.py") && !m("*/*.py", "a/b/m.py"));
        // Empty and `.` segments are ignored; a trailing `/` is directories only.
        assert!(m("./a//b", "a/b") && m("/a", "a"));
        let dirs = Pattern::parse("**/").unwrap();
        assert!(dirs.matches(&["a", "b"], true) && !dirs.matches(&["a", "b"], false));
        assert!(Pattern::parse("").is_none() && Pattern::parse("/./").is_none());
    }

    #[test]
    fn pruning() {
        let below = |pattern: &str, dir: &str| {
            let segs: Vec<&str> = dir.split('/').collect();
            Pattern::parse(pattern).unwrap().may_match_below(&segs)
        };
        assert!(below("src/*.rs", "src") && !below("src/*.rs", "lib") && !below("src/*.rs", "src/x"));
        assert!(!below("*", "a"));
        assert!(below("*/b/**", "a") && below("*/b/**", "a/b") && below("*/b/**", "a/b/c"));
        assert!(!below("*/b/**", "a/c"));
        assert!(below("**/x", "a/b/c"));
    }

    #[test]
    fn grep_filters() {
        let f = Filter::parse("*.py").unwrap();
        assert!(f.matches(&["a".into(), "b".into(), "m.py".into()]) && f.may_match_below(&["x".into()]));
        let f = Filter::parse("src/*.py").unwrap();
        assert!(f.matches(&["src".into(), "m.py".into()]));
        assert!(!f.matches(&["a".into(), "src".into(), "m.py".into()]) && !f.may_match_below(&["a".into()]));
        let f = Filter::parse("**/t_*.py").unwrap();
        assert!(f.matches(&["t_a.py".into()]) && f.matches(&["x".into(), "t_a.py".into()]));
    }
}
