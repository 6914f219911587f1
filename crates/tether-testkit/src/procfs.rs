//! What `/proc` says about a process, for tests that check that processes
//! end.

/// Whether process `pid` runs (a zombie counts as gone).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rfind(')').and_then(|i| s.get(i + 2..)).is_some_and(|r| !r.starts_with('Z')))
}
