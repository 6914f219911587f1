//! The bearer token: where it lives and how a new one is made.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
