//! Scratch files and directories removed on drop, and random test data.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// A scratch directory with an empty `root/` inside, removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new() -> ScratchDir {
        let p = std::env::temp_dir().join(format!("tether-scratch-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(p.join("root")).unwrap();
        ScratchDir(p)
    }

    /// The `root/` inside.
    pub fn root(&self) -> PathBuf {
        self.0.join("root")
    }
}

impl Default for ScratchDir {
    fn default() -> ScratchDir {
        ScratchDir::new()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temp file removed on drop (enough for tests; no extra crate).
pub struct TempPath(pub PathBuf);

impl TempPath {
    pub fn new() -> TempPath {
        let p = std::env::temp_dir().join(format!("tether-test-{:016x}", rand::random::<u64>()));
        TempPath(p)
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Default for TempPath {
    fn default() -> Self {
        TempPath::new()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `len` random bytes to a new temp file; returns its path and hash.
pub fn random_file(len: usize) -> (TempPath, [u8; 32]) {
    let path = TempPath::new();
    let data = random_bytes(len);
    std::fs::write(&path.0, &data).unwrap();
    (path, Sha256::digest(&data).into())
}

/// `len` random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::fill(&mut data[..]);
    data
}

/// Lower-case hex, as `sha256sum` prints it.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A random number for unique names (tokens, sockets, directories).
pub fn rand_u64() -> u64 {
    rand::random::<u64>()
}
