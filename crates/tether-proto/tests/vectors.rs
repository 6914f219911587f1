//! Golden frames in `protocol/vectors/`.
//!
//! Every message kind (every variant of `ClientMsg` and `ServerMsg`) has one
//! frame, built in code below and stored twice: `<direction>_<type>.msgpack`
//! (the `tether.v1` encoding) and `<direction>_<type>.json` (the
//! `tether.v1.json` encoding, pretty-printed). Clients in other languages
//! decode the same files, so a change here is a wire change.
//!
//! `UPDATE_VECTORS=1 cargo test -p tether-proto --test vectors` rewrites the
//! files from the code; without it the test checks that the files decode to
//! the messages, re-encode to the same bytes, and that files and variants
//! match one to one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::value::MapDeserializer;
use serde::de::{self, DeserializeOwned};
use tether_proto::{
    ClientMsg, CommandId, CommandInfo, CommandState, Encoding, ErrorCode, ExitReason, ExitStatus,
    HistoryEntry, Limits, OutputLimitAction, Payload, PtySpec, ReqId, ServerMsg, ShellCloseReason,
    ShellClosed, ShellInfo, ShellRunSpec, ShellSpec, ShellState, StartSpec, Stream, StreamInfo, TermSize,
    decode, encode,
};

#[test]
fn golden_vectors() {
    let dir = vectors_dir();
    let cases = cases();
    if std::env::var_os("UPDATE_VECTORS").is_some_and(|v| v == "1") {
        write_all(&dir, &cases);
    }
    for case in &cases {
        match &case.msg {
            Msg::Client(m) => check(&dir, &case.stem(), m),
            Msg::Server(m) => check(&dir, &case.stem(), m),
        }
    }
    check_no_stray_files(&dir, &cases);
}

#[test]
fn every_variant_has_a_vector() {
    let cases = cases();
    let have = |direction: &str| -> BTreeSet<String> {
        cases.iter().filter(|c| c.direction() == direction).map(Case::kind).collect()
    };
    let want = |variants: &[&str]| -> BTreeSet<String> { variants.iter().map(|v| (*v).to_owned()).collect() };
    assert_eq!(have("client"), want(variant_names::<ClientMsg>()));
    assert_eq!(have("server"), want(variant_names::<ServerMsg>()));
    // One vector per kind, so file names are unique.
    let stems: BTreeSet<String> = cases.iter().map(Case::stem).collect();
    assert_eq!(stems.len(), cases.len(), "two cases share a file name");
}

/// A message of either direction.
enum Msg {
    Client(ClientMsg),
    Server(ServerMsg),
}

/// One golden frame.
struct Case {
    msg: Msg,
}

impl Case {
    fn direction(&self) -> &'static str {
        match self.msg {
            Msg::Client(_) => "client",
            Msg::Server(_) => "server",
        }
    }

    /// The message's `type` tag, read from its encoding so that it is the
    /// name on the wire and not a second list kept by hand.
    fn kind(&self) -> String {
        let value = match &self.msg {
            Msg::Client(m) => serde_json::to_value(m),
            Msg::Server(m) => serde_json::to_value(m),
        }
        .expect("message serializes");
        value["type"].as_str().expect("message has a string `type`").to_owned()
    }

    /// File name without extension: `<direction>_<type>`.
    fn stem(&self) -> String {
        format!("{}_{}", self.direction(), self.kind())
    }
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/vectors")
}

/// The JSON file contents: what serde_json pretty-prints, plus a newline.
fn pretty_json<T: Serialize>(msg: &T) -> String {
    let mut s = serde_json::to_string_pretty(msg).expect("message serializes");
    s.push('\n');
    s
}

fn write_all(dir: &Path, cases: &[Case]) {
    fs::create_dir_all(dir).expect("create protocol/vectors");
    // Remove old frames first so a renamed or removed variant leaves nothing
    // behind; the README and anything else stays.
    for path in frame_files(dir) {
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
    for case in cases {
        let (msgpack, json) = match &case.msg {
            Msg::Client(m) => (encode(m, Encoding::MsgPack), pretty_json(m)),
            Msg::Server(m) => (encode(m, Encoding::MsgPack), pretty_json(m)),
        };
        let stem = case.stem();
        write(&dir.join(format!("{stem}.msgpack")), &msgpack);
        write(&dir.join(format!("{stem}.json")), json.as_bytes());
    }
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path)
        .unwrap_or_else(|e| panic!("read {}: {e} (run with UPDATE_VECTORS=1 to create it)", path.display()))
}

fn check<T>(dir: &Path, stem: &str, want: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let msgpack = read(&dir.join(format!("{stem}.msgpack")));
    let got: T =
        decode(&msgpack, Encoding::MsgPack).unwrap_or_else(|e| panic!("{stem}.msgpack does not decode: {e}"));
    assert_eq!(&got, want, "{stem}.msgpack decodes to another message");
    assert!(
        encode(&got, Encoding::MsgPack) == msgpack,
        "{stem}.msgpack does not re-encode to the same bytes"
    );

    let json = read(&dir.join(format!("{stem}.json")));
    let got: T = decode(&json, Encoding::Json).unwrap_or_else(|e| panic!("{stem}.json does not decode: {e}"));
    assert_eq!(&got, want, "{stem}.json decodes to another message");
    assert!(
        pretty_json(&got).as_bytes() == json,
        "{stem}.json is not what serde_json produces for the message"
    );
    // The compact form `encode` puts on the wire is the same JSON value.
    let wire: serde_json::Value =
        serde_json::from_slice(&encode(want, Encoding::Json)).expect("wire JSON parses");
    let file: serde_json::Value = serde_json::from_slice(&json).expect("file JSON parses");
    assert_eq!(wire, file, "{stem}.json differs from the wire encoding");
}

/// Frame files (`.msgpack`, `.json`) in the directory.
fn frame_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("msgpack" | "json")) {
            out.push(path);
        }
    }
    out
}

fn check_no_stray_files(dir: &Path, cases: &[Case]) {
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for case in cases {
        expected.insert(format!("{}.msgpack", case.stem()));
        expected.insert(format!("{}.json", case.stem()));
    }
    expected.insert("README.md".to_owned());
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let found: BTreeSet<String> = entries
        .map(|e| e.expect("directory entry").file_name().into_string().expect("UTF-8 file name"))
        .collect();
    let stray: Vec<_> = found.difference(&expected).collect();
    assert!(stray.is_empty(), "files in protocol/vectors/ that no case covers: {stray:?}");
    let missing: Vec<_> = expected.difference(&found).collect();
    assert!(missing.is_empty(), "missing vectors: {missing:?}");
}

/// The `type` names of every variant of an internally tagged enum, as serde
/// derives them: decoding a map whose tag names no variant makes the derived
/// code report the full list through `de::Error::unknown_variant`, which
/// [`VariantList`] captures.
fn variant_names<T: DeserializeOwned + fmt::Debug>() -> &'static [&'static str] {
    let probe = MapDeserializer::<_, VariantList>::new([("type", "\u{0}no such type")].into_iter());
    match T::deserialize(probe) {
        Err(VariantList(Some(names))) => names,
        other => panic!("expected an unknown-variant error, got {other:?}"),
    }
}

/// A deserializer error that keeps the variant list of `unknown_variant`.
#[derive(Debug)]
struct VariantList(Option<&'static [&'static str]>);

impl fmt::Display for VariantList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for VariantList {}

impl de::Error for VariantList {
    fn custom<M: fmt::Display>(_msg: M) -> Self {
        VariantList(None)
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        VariantList(Some(expected))
    }
}

// The messages. Values are realistic and exercise the encodings: byte
// payloads that are not UTF-8, offsets past 2^32 (MessagePack uint64),
// negative integers, nulls, nested maps and arrays, optional fields both
// present and absent.

const CMD: &str = "c-5f0c9a7e21b34d08";

fn cmd() -> CommandId {
    CommandId::from(CMD)
}

fn cases() -> Vec<Case> {
    let client = [
        ClientMsg::Start { id: ReqId(1), spec: start_spec() },
        ClientMsg::Attach {
            id: ReqId(2),
            command: cmd(),
            stdout_offset: 0,
            stderr_offset: 0,
            tail_bytes: Some(65_536),
            pace: false,
            screen: true,
            size: Some(TermSize { rows: 50, cols: 200 }),
            window_bytes: Some(1_048_576),
            client: Some("7f3a9c21e0b54d6f".to_owned()),
        },
        ClientMsg::Resize { id: ReqId(12), command: cmd(), size: TermSize { rows: 43, cols: 132 } },
        ClientMsg::Detach { id: ReqId(3), command: cmd() },
        ClientMsg::Stdin {
            id: ReqId(4),
            command: cmd(),
            data: Payload::from(&b"yes\n\x00\xff\xfe\x1b[A"[..]),
            writer: Some("w-2c9e41f07a5b83d6".to_owned()),
            offset: Some(5_368_709_120),
        },
        ClientMsg::CloseStdin {
            id: ReqId(5),
            command: cmd(),
            writer: Some("w-2c9e41f07a5b83d6".to_owned()),
            offset: Some(5_368_709_130),
        },
        ClientMsg::Ack { id: ReqId(0), command: cmd(), stdout_offset: 5_368_709_151, stderr_offset: 4_096 },
        ClientMsg::Signal { id: ReqId(6), command: cmd(), signal: "SIGINT".to_owned() },
        ClientMsg::Kill { id: ReqId(7), command: cmd() },
        ClientMsg::List {
            id: ReqId(8),
            limit: Some(2),
            cursor: Some("1767225541250000000.c-09f8e7d6c5b4a321".to_owned()),
        },
        ClientMsg::Status { id: ReqId(9), command: cmd() },
        ClientMsg::Remove { id: ReqId(10), command: cmd() },
        ClientMsg::ShellCreate { id: ReqId(20), spec: shell_spec() },
        ClientMsg::ShellRun { id: ReqId(21), shell: SHELL.to_owned(), spec: shell_run_spec() },
        ClientMsg::ShellList { id: ReqId(22) },
        ClientMsg::ShellHistory { id: ReqId(23), shell: SHELL.to_owned() },
        ClientMsg::ShellClose { id: ReqId(24), shell: SHELL.to_owned() },
    ];
    let server = [
        ServerMsg::Hello {
            version: tether_proto::PROTOCOL_VERSION,
            server: "tether/0.1.0".to_owned(),
            limits: Limits {
                max_frame_bytes: 1_048_576,
                max_chunk_bytes: 65_536,
                max_commands: 1_024,
                default_ring_bytes: 1_048_576,
                max_ring_bytes: 67_108_864,
                stdin_window_bytes: 4_194_304,
            },
        },
        ServerMsg::Started { id: ReqId(1), command: cmd(), pid: 48_213 },
        ServerMsg::Attached {
            id: ReqId(2),
            command: cmd(),
            stdout_offset: 5_368_643_584,
            stderr_offset: 4_194_304,
        },
        ServerMsg::Output {
            command: cmd(),
            stream: Stream::Stdout,
            offset: 5_368_709_120,
            data: Payload::from(&b"step 3/7: ok\n\xff\x00\xfe\x1b[32mdone\x1b[0m\r\n"[..]),
        },
        ServerMsg::Screen {
            command: cmd(),
            offset: 5_368_709_120,
            size: TermSize { rows: 3, cols: 20 },
            data: Payload::from(
                &b"\x1b[?25h\x1b[H\x1b[J\x1b[1;32m$\x1b[m ls\r\nMakefile  src\r\n\x1b[1;32m$\x1b[m \x1b[3;3H"
                    [..],
            ),
        },
        ServerMsg::Resized { command: cmd(), size: TermSize { rows: 43, cols: 132 } },
        ServerMsg::Gap { command: cmd(), stream: Stream::Stderr, requested: 4_096, first_held: 65_536 },
        ServerMsg::Exit {
            command: cmd(),
            status: ExitStatus {
                code: None,
                signal: Some(15),
                core_dumped: false,
                reason: ExitReason::TimedOut,
                wall_ms: 3_600_012,
                user_us: 1_234_567_890,
                sys_us: 98_765_432,
                max_rss_kb: 524_288,
                stdout_bytes: 5_368_774_656,
                stderr_bytes: 4_259_840,
                truncated: false,
                cwd: None,
            },
        },
        ServerMsg::Ok { id: ReqId(5) },
        ServerMsg::List {
            id: ReqId(8),
            commands: vec![finished_info(), running_info()],
            next: Some("1767225600000000000.c-5f0c9a7e21b34d08".to_owned()),
        },
        ServerMsg::Status { id: ReqId(9), info: running_info() },
        ServerMsg::Shell { id: ReqId(20), info: new_shell(), created: true },
        ServerMsg::ShellList { id: ReqId(22), shells: vec![exited_shell(), busy_shell()] },
        ServerMsg::ShellHistory { id: ReqId(23), shell: SHELL.to_owned(), entries: history() },
        ServerMsg::Error {
            id: Some(ReqId(11)),
            code: ErrorCode::SpawnFailed,
            message: "cannot execute /opt/build/run.sh: No such file or directory (os error 2)".to_owned(),
            errno: Some(2),
        },
    ];
    client
        .into_iter()
        .map(Msg::Client)
        .chain(server.into_iter().map(Msg::Server))
        .map(|msg| Case { msg })
        .collect()
}

/// A `start` spec with nearly every field set (`shell` and
/// `shell_program` are exclusive with `argv`; `attach` keeps its default).
fn start_spec() -> StartSpec {
    StartSpec {
        argv: vec![
            "/usr/bin/make".to_owned(),
            "-C".to_owned(),
            "/srv/build/tether".to_owned(),
            "-j8".to_owned(),
            "test".to_owned(),
        ],
        shell: None,
        shell_program: None,
        cwd: Some("/srv/build".to_owned()),
        env: BTreeMap::from([
            ("CARGO_TERM_COLOR".to_owned(), "always".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ]),
        env_clear: true,
        stdin: Some(Payload::from(&b"y\n\x00\xff"[..])),
        close_stdin: true,
        name: Some("nightly tests".to_owned()),
        labels: BTreeMap::from([
            ("job".to_owned(), "ci-1842".to_owned()),
            ("owner".to_owned(), "build-bot".to_owned()),
        ]),
        timeout_ms: Some(3_600_000),
        idle_timeout_ms: Some(-1),
        ttl_ms: Some(86_400_000),
        kill_on_disconnect: true,
        max_output_bytes: Some(10_737_418_240),
        output_limit: Some(OutputLimitAction::Truncate),
        ring_bytes: Some(4_194_304),
        kill_grace_ms: Some(5_000),
        attach: true,
        pace: true,
        pty: Some(PtySpec { rows: 50, cols: 200, term: Some("xterm-256color".to_owned()) }),
        drain_grace_ms: Some(1_000),
        request_key: Some("k-7f3a9c21e0b54d6f-1".to_owned()),
        window_bytes: Some(1_048_576),
        client: Some("7f3a9c21e0b54d6f".to_owned()),
    }
}

fn running_info() -> CommandInfo {
    CommandInfo {
        command: cmd(),
        name: Some("nightly tests".to_owned()),
        labels: BTreeMap::from([
            ("job".to_owned(), "ci-1842".to_owned()),
            ("owner".to_owned(), "build-bot".to_owned()),
        ]),
        argv: vec![
            "/usr/bin/make".to_owned(),
            "-C".to_owned(),
            "/srv/build/tether".to_owned(),
            "-j8".to_owned(),
            "test".to_owned(),
        ],
        argv_truncated: false,
        pid: 48_213,
        state: CommandState::Running,
        started_at_ms: 1_767_225_600_000,
        exit: None,
        stdout: StreamInfo { first_held: 5_364_514_816, end: 5_368_709_120 },
        stderr: StreamInfo { first_held: 65_536, end: 4_259_840 },
        attached: 2,
        pty: Some(TermSize { rows: 50, cols: 200 }),
        shell: None,
    }
}

fn finished_info() -> CommandInfo {
    CommandInfo {
        command: CommandId::from("c-0a1b2c3d4e5f6071"),
        name: None,
        labels: BTreeMap::new(),
        argv: vec!["/bin/bash".to_owned(), "-c".to_owned(), "uname -a; date -u".to_owned()],
        argv_truncated: false,
        pid: 47_990,
        state: CommandState::Exited,
        started_at_ms: 1_767_225_541_250,
        exit: Some(ExitStatus {
            code: Some(0),
            signal: None,
            core_dumped: false,
            reason: ExitReason::Exited,
            wall_ms: 14,
            user_us: 2_104,
            sys_us: 3_877,
            max_rss_kb: 3_712,
            stdout_bytes: 138,
            stderr_bytes: 0,
            truncated: false,
            cwd: None,
        }),
        stdout: StreamInfo { first_held: 0, end: 138 },
        stderr: StreamInfo { first_held: 0, end: 0 },
        attached: 0,
        pty: None,
        shell: None,
    }
}

// Named shells.

const SHELL: &str = "build";

/// A `shell_create` spec with every field set.
fn shell_spec() -> ShellSpec {
    ShellSpec {
        name: Some(SHELL.to_owned()),
        cwd: Some("/srv/build".to_owned()),
        env: BTreeMap::from([
            ("CARGO_TERM_COLOR".to_owned(), "always".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ]),
        program: Some("/bin/bash".to_owned()),
        idle_ttl_ms: Some(-1),
    }
}

/// A multi-line script with a heredoc and a timeout; `attach` keeps its
/// default and `kill_on_disconnect` is unset, so both are absent.
fn shell_run_spec() -> ShellRunSpec {
    ShellRunSpec {
        script: "cd /srv/build/tether\ncat > .env <<'EOF'\nRUST_LOG=debug\nTARGET=$HOME/ci\nEOF\n\
                 cargo test --workspace 2>&1 | tail -n 50\n"
            .to_owned(),
        stdin: Some(Payload::from(&b"y\n\x00\xff"[..])),
        close_stdin: true,
        labels: BTreeMap::from([("job".to_owned(), "ci-1843".to_owned())]),
        timeout_ms: Some(1_800_000),
        idle_timeout_ms: Some(-1),
        ttl_ms: Some(86_400_000),
        kill_on_disconnect: false,
        max_output_bytes: Some(10_737_418_240),
        output_limit: Some(OutputLimitAction::Kill),
        ring_bytes: Some(4_194_304),
        kill_grace_ms: Some(5_000),
        attach: true,
        pace: true,
        drain_grace_ms: None,
        request_key: Some("k-7f3a9c21e0b54d6f-2".to_owned()),
        window_bytes: Some(1_048_576),
        client: Some("7f3a9c21e0b54d6f".to_owned()),
    }
}

/// The shell `shell_create` made: idle, nothing submitted yet.
fn new_shell() -> ShellInfo {
    ShellInfo {
        name: SHELL.to_owned(),
        program: "/bin/bash".to_owned(),
        pid: 51_007,
        state: ShellState::Idle,
        cwd: "/srv/build".to_owned(),
        queued: 0,
        running: None,
        commands: 0,
        created_at_ms: 1_767_225_700_000,
        last_used_ms: 1_767_225_700_000,
        closed: None,
    }
}

/// A shell with a generated name whose last command ran `exit 3`.
fn exited_shell() -> ShellInfo {
    ShellInfo {
        name: "sh-9f2c41d07be35a18".to_owned(),
        program: "bash".to_owned(),
        pid: 49_120,
        state: ShellState::Closed,
        cwd: "/home/ci/work dir".to_owned(),
        queued: 0,
        running: None,
        commands: 17,
        created_at_ms: 1_767_225_480_500,
        last_used_ms: 1_767_225_690_125,
        closed: Some(ShellClosed {
            reason: ShellCloseReason::Exited,
            code: Some(3),
            signal: None,
            message: "the shell exited with code 3".to_owned(),
        }),
    }
}

/// The `build` shell running a command, with one more queued.
fn busy_shell() -> ShellInfo {
    ShellInfo {
        state: ShellState::Busy,
        cwd: "/srv/build/tether".to_owned(),
        queued: 1,
        running: Some(CommandId::from("c-7d3e0f5a9b21c464")),
        commands: 3,
        last_used_ms: 1_767_225_712_750,
        ..new_shell()
    }
}

/// The `build` shell's history: one command exited, one running, one queued.
fn history() -> Vec<HistoryEntry> {
    vec![
        HistoryEntry {
            command: CommandId::from("c-2b8e4d6f1a3c5e70"),
            script: "cd tether && git log --oneline -n 3".to_owned(),
            script_truncated: false,
            state: CommandState::Exited,
            exit_code: Some(0),
            reason: Some(ExitReason::Exited),
            submitted_at_ms: 1_767_225_701_002,
            started_at_ms: Some(1_767_225_701_003),
            ended_at_ms: Some(1_767_225_701_019),
            cwd: Some("/srv/build/tether".to_owned()),
        },
        HistoryEntry {
            command: CommandId::from("c-7d3e0f5a9b21c464"),
            script: shell_run_spec().script,
            script_truncated: false,
            state: CommandState::Running,
            exit_code: None,
            reason: None,
            submitted_at_ms: 1_767_225_702_400,
            started_at_ms: Some(1_767_225_702_401),
            ended_at_ms: None,
            cwd: None,
        },
        HistoryEntry {
            command: CommandId::from("c-c1f09e8d7b6a5243"),
            script: "make -C docs html".to_owned(),
            script_truncated: false,
            state: CommandState::Queued,
            exit_code: None,
            reason: None,
            submitted_at_ms: 1_767_225_712_750,
            started_at_ms: None,
            ended_at_ms: None,
            cwd: None,
        },
    ]
}
