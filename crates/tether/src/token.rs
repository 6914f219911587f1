//! The bearer token: where it lives and how a new one is made.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The default token file: `$XDG_CONFIG_HOME/tether/token`, else
/// `~/.config/tether/token`.
pub(crate) fn default_path() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("tether/token"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".config/tether/token"))
}

/// Reads a token file.
pub(crate) fn read(path: &Path) -> Result<String> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("reading token file {}", path.display()))?;
    let t = s.trim().to_owned();
    anyhow::ensure!(!t.is_empty(), "token file {} is empty", path.display());
    Ok(t)
}

/// Reads the token file, or creates it (mode 0600, directory 0700) with a
/// new random token. Returns the token and whether it was created.
pub(crate) fn load_or_create(path: &Path) -> Result<(String, bool)> {
    if path.exists() {
        return Ok((read(path)?, false));
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating token file {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok((token, true))
}

/// Shorter tokens are refused unless `--allow-weak-token`: a token is the
/// only thing between the network and running commands on this host.
pub(crate) const MIN_LEN: usize = 16;

/// Why `token` (from `source`) is weak, if it is.
pub(crate) fn weakness(token: &str, source: &str) -> Option<String> {
    let n = token.chars().count();
    (n < MIN_LEN).then(|| format!("the token from {source} has {n} characters (fewer than {MIN_LEN})"))
}

/// Why the token file at `path` is exposed to other users, if it is: group
/// or others may read or write it.
pub(crate) fn exposure(path: &Path) -> Result<Option<String>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading token file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "token file {} has mode {mode:04o}: group or others can read or change it (chmod 600 it)",
            path.display()
        )
    }))
}
