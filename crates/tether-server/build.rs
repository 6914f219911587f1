//! Builds the browser terminal page (`web/`, see `web/package.json`) into
//! `$OUT_DIR/web`, where `src/web.rs` embeds it with `include_bytes!`.
//!
//! The page needs Node.js and npm. A missing npm or a failed build never
//! fails `cargo build`: the daemon then serves a small page that says why,
//! and cargo prints a warning. `TETHER_SKIP_WEB=1` skips npm on purpose.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The files the daemon serves; the fallback writes all of them so the
/// `include_bytes!` in `src/web.rs` always finds them.
const ASSETS: [&str; 3] = ["index.html", "app.js", "app.css"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let web = manifest_dir.join("../../web");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("web");

    for input in ["src", "build.mjs", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=TETHER_SKIP_WEB");

    let result = if std::env::var("TETHER_SKIP_WEB").is_ok_and(|v| v == "1") {
        Err("TETHER_SKIP_WEB=1 was set when the daemon was built".to_owned())
    } else {
        build_page(&web, &out)
    };
    if let Err(why) = result {
        println!("cargo:warning=the browser terminal page was not built: {why}");
        if let Err(e) = write_fallback(&out, &why) {
            // Without these files the crate cannot compile; say why loudly.
            panic!("cannot write the fallback page to {}: {e}", out.display());
        }
    }
}

/// `npm ci` if the installed packages are missing or older than the lock
/// file, then `npm run build` into `out`.
fn build_page(web: &Path, out: &Path) -> Result<(), String> {
    let lock = web.join("package-lock.json");
    if !lock.exists() {
        return Err(format!("{} is missing", lock.display()));
    }
    // npm rewrites node_modules/.package-lock.json on every install.
    let installed = modified(&web.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&lock) {
        run("npm ci", Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(web))?;
    }
    // Start empty so a stale file cannot pass for a fresh one.
    let _ = fs::remove_dir_all(out);
    run(
        "npm run build",
        Command::new("npm").args(["run", "build"]).current_dir(web).env("TETHER_WEB_OUT", out),
    )?;
    match ASSETS.iter().find(|a| !out.join(a).exists()) {
        Some(missing) => Err(format!("the build did not produce {missing}")),
        None => Ok(()),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Runs a command with its output captured: a build script's stdout is read
/// by cargo as instructions, so npm must not write there.
fn run(shown: &str, cmd: &mut Command) -> Result<(), String> {
    let output = cmd.output().map_err(|e| format!("cannot run {shown}: {e} (is Node.js/npm installed?)"))?;
    if output.status.success() {
        return Ok(());
    }
    // Shown by cargo when the build script's output is displayed (-vv).
    eprintln!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let last = String::from_utf8_lossy(&output.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned();
    Err(format!("{shown} failed ({}): {last}", output.status))
}

fn write_fallback(out: &Path, why: &str) -> std::io::Result<()> {
    fs::create_dir_all(out)?;
    let why = why.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tether</title></head>\n\
         <body><h1>tether</h1>\n<p>The browser terminal page was not built into this daemon: {why}.</p>\n\
         <p>Install Node.js and npm and rebuild (<code>cargo build -p tether</code>), \
         or build it by hand: <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>.</p>\n\
         <p>The WebSocket API at <code>/v1/ws</code> works regardless.</p></body></html>\n"
    );
    fs::write(out.join("index.html"), html)?;
    fs::write(out.join("app.js"), "")?;
    fs::write(out.join("app.css"), "")?;
    Ok(())
}
