//! Where `tether serve` takes its settings from: flags, then `TETHER_*`
//! environment variables, then a TOML file (`--config FILE` or
//! `TETHER_CONFIG`), then the built-in defaults. The file's keys are the
//! long flags' names (`listen = "0.0.0.0:7070"`, `allow-host = ["a", "b"]`),
//! every flag of `tether serve` has its variable (`--max-commands` is
//! `TETHER_MAX_COMMANDS`), and `tether serve --print-config` shows the
//! result, the token redacted.
//!
//! The file's values become the flags' defaults (clap's own precedence then
//! does the rest), so a value from the file is checked by the same parser
//! as the flag, and a restart (SIGUSR2), which runs the binary again with
//! the same arguments, reads the file again.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// Flags of `tether serve` that are no settings: neither the file nor the
/// environment sets them (`config` has its own variable).
const NOT_SETTINGS: &[&str] = &["config", "print-config", "probe-handover", "help", "version"];

/// The daemon-wide flag the file may set besides `tether serve`'s own.
const GLOBAL_SETTINGS: &[&str] = &["token-file"];

/// The parsed command line, and for `tether serve` where its settings came
/// from.
pub(crate) struct Parsed {
    /// The command line, file and environment applied.
    pub(crate) cli: Cli,
    /// clap's matches (for [`print`]: each value's source).
    matches: ArgMatches,
    /// The configuration file read, and its keys.
    file: Option<(PathBuf, Vec<String>)>,
}

/// Parses the command line; for `tether serve --config FILE` (or
/// `TETHER_CONFIG`), with the file's settings under the flags and the
/// environment. Help, version and usage errors exit as clap makes them.
pub(crate) fn parse(args: Vec<OsString>) -> Result<Parsed> {
    let cmd = command();
    let matches = cmd.clone().try_get_matches_from(&args).unwrap_or_else(|e| e.exit());
    let path = match matches.subcommand() {
        Some(("serve", serve)) => serve.get_one::<PathBuf>("config").cloned(),
        _ => None,
    };
    let Some(path) = path else {
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        return Ok(Parsed { cli, matches, file: None });
    };
    let table = read(&path)?;
    let keys = table.keys().cloned().collect();
    let cmd = with_file(cmd, table).with_context(|| format!("config file {}", path.display()))?;
    let with_path = |e: clap::Error| -> ! {
        use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
        if !matches!(e.kind(), DisplayHelp | DisplayVersion) {
            eprintln!("tether: (with the settings of config file {})", path.display());
        }
        e.exit()
    };
    let matches = cmd.try_get_matches_from(&args).unwrap_or_else(|e| with_path(e));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| with_path(e));
    Ok(Parsed { cli, matches, file: Some((path, keys)) })
}

/// The CLI, with a `TETHER_*` variable for every setting of `tether serve`
/// that has none yet. The lists of origins and host names are
/// comma-separated in theirs (neither can hold a comma); an interpreter's
/// command line can, so its variable holds one.
fn command() -> Command {
    Cli::command().mut_subcommand("serve", |mut serve| {
        let ids: Vec<_> = serve
            .get_arguments()
            .filter(|a| a.get_env().is_none())
            .filter(|a| a.get_long().is_some_and(|l| !NOT_SETTINGS.contains(&l)))
            .map(|a| a.get_id().clone())
            .collect();
        for id in ids {
            serve = serve.mut_arg(id, |a| {
                let var =
                    format!("TETHER_{}", a.get_long().unwrap_or_default().replace('-', "_").to_uppercase());
                let commas = matches!(a.get_long(), Some("allow-origin" | "allow-host"));
                let a = a.env(var);
                if commas { a.value_delimiter(',') } else { a }
            });
        }
        serve
    })
}

/// Reads the file as a TOML table.
fn read(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("config file {}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// `cmd` with the file's values as the defaults of their flags. Unknown
/// keys, nested tables and lists for single-valued flags are refused.
fn with_file(mut cmd: Command, table: toml::Table) -> Result<Command> {
    let serve = cmd.find_subcommand("serve").context("no serve subcommand")?.clone();
    let settings: Vec<&str> = serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_SETTINGS.contains(l))
        .chain(GLOBAL_SETTINGS.iter().copied())
        .collect();
    for (key, value) in table {
        if key == "token" {
            bail!("`token`: a configuration file is no place for the token; use token-file or TETHER_TOKEN");
        }
        let in_serve = serve.get_arguments().find(|a| a.get_long() == Some(key.as_str()));
        let arg = match in_serve {
            Some(a) if !NOT_SETTINGS.contains(&key.as_str()) => a.clone(),
            _ if GLOBAL_SETTINGS.contains(&key.as_str()) => cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .context("a global setting without its flag")?
                .clone(),
            _ => {
                let hint =
                    closest(&key, &settings).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
                bail!(
                    "unknown key `{key}`{hint}; the keys are the long flags of `tether serve` (`tether serve --help`)"
                );
            }
        };
        let list = matches!(arg.get_action(), ArgAction::Append);
        let values = match value {
            toml::Value::Array(items) if list => {
                items.into_iter().map(|v| scalar(&key, v)).collect::<Result<Vec<_>>>()?
            }
            toml::Value::Array(_) => bail!("`{key}`: takes one value, not a list"),
            v => vec![scalar(&key, v)?],
        };
        let id = arg.get_id().clone();
        let global = in_serve.is_none();
        let set = move |a: clap::Arg| {
            if list { a.default_values(values) } else { a.default_value(values[0].clone()) }
        };
        if global {
            cmd = cmd.mut_arg(id, set);
        } else {
            cmd = cmd.mut_subcommand("serve", |s| s.mut_arg(id, set));
        }
    }
    Ok(cmd)
}

/// A string, number or boolean as the flag's text.
fn scalar(key: &str, v: toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("`{key}`: expected a string, a number or a boolean, not a {}", other.type_str()),
    })
}

/// The known key nearest to a misspelt one (at most two edits away).
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    };
    let key = key.replace('_', "-");
    known.iter().map(|k| (distance(&key, k), *k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k)
}

/// `tether serve --print-config`: every setting as a TOML line, with where
/// its value came from; the token is never shown.
pub(crate) fn print(p: &Parsed) -> String {
    let mut out = String::from(
        "# tether serve: the effective configuration\n\
         # (precedence: flags > TETHER_* environment > configuration file > defaults)\n",
    );
    if let Some((path, _)) = &p.file {
        out.push_str(&format!("# configuration file: {}\n", path.display()));
    }
    let Some(("serve", serve)) = p.matches.subcommand() else { return out };
    let serve_cmd = command();
    let Some(serve_def) = serve_cmd.find_subcommand("serve") else { return out };
    let from_file = |key: &str| p.file.as_ref().is_some_and(|(_, keys)| keys.iter().any(|k| k == key));
    let source = |m: &ArgMatches, id: &str, key: &str| match m.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "environment",
        Some(ValueSource::DefaultValue) if from_file(key) => "file",
        Some(ValueSource::DefaultValue) => "default",
        _ => "not set",
    };
    let token_source = source(&p.matches, "token", "token");
    out.push_str(&match token_source {
        "not set" => "# token: from the token file\n".to_owned(),
        s => format!("token = \"<redacted>\"  # {s}\n"),
    });
    let root = serve_cmd.get_arguments().find(|a| a.get_long() == Some("token-file"));
    let lines = root
        .map(|a| (&p.matches, a))
        .into_iter()
        .chain(serve_def.get_arguments().map(|a| (serve, a)))
        .filter(|(_, a)| !a.is_hide_set() && a.get_long().is_some_and(|l| !NOT_SETTINGS.contains(&l)));
    for (m, a) in lines {
        let key = a.get_long().unwrap_or_default();
        let id = a.get_id().as_str();
        let raw: Vec<String> = m
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let src = source(m, id, key);
        let line = match a.get_action() {
            ArgAction::Append => {
                let items: Vec<toml::Value> = raw.into_iter().map(toml::Value::String).collect();
                format!("{key} = {}", toml::Value::Array(items))
            }
            ArgAction::SetTrue => format!("{key} = {}", m.get_flag(id)),
            _ if raw.is_empty() => {
                out.push_str(&format!("# {key}: not set\n"));
                continue;
            }
            _ => format!("{key} = {}", toml_value(&raw[0])),
        };
        out.push_str(&format!("{line}  # {src}\n"));
    }
    out
}

/// A flag's text as a TOML value: a number where it reads as one, else a
/// string.
fn toml_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() && raw.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-') => {
            toml::Value::Float(f)
        }
        _ => toml::Value::String(raw.to_owned()),
    }
}
