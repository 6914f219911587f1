//! Golden bodies of the plain HTTP routes in `protocol/http/`: each body as
//! MessagePack (`<name>.msgpack`) and as JSON (`<name>.json`, exactly what
//! the daemon sends or accepts, compact). `UPDATE_VECTORS=1 cargo test -p
//! tether-proto --test http_vectors` rewrites them.
#![allow(clippy::unwrap_used)]

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tether_proto::{
    CodeRequest, CommandId, Encoding, ErrorCode, ExecRequest, ExecResponse, ExitReason, HttpError, Payload,
    RunOptions, TextEncoding, decode, encode,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol/http")
}

fn update() -> bool {
    std::env::var_os("UPDATE_VECTORS").is_some_and(|v| v == "1")
}

/// Checks (or writes) one body: MessagePack both ways, and JSON as `json`
/// renders it and `from_json` reads it.
fn case<T>(name: &str, want: &T, json: impl Fn(&T) -> Vec<u8>, from_json: impl Fn(&[u8]) -> T)
where
    T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let (mp, js) = (dir().join(format!("{name}.msgpack")), dir().join(format!("{name}.json")));
    if update() {
        fs::write(&mp, encode(want, Encoding::MsgPack)).unwrap();
        fs::write(&js, json(want)).unwrap();
    }
    let bytes = fs::read(&mp).unwrap();
    let got: T = decode(&bytes, Encoding::MsgPack).unwrap();
    assert_eq!(&got, want, "{name}.msgpack");
    assert_eq!(encode(&got, Encoding::MsgPack), bytes, "{name}.msgpack re-encodes");
    let text = fs::read(&js).unwrap();
    assert_eq!(json(want), text, "{name}.json is what the daemon writes");
    assert_eq!(&from_json(&text), want, "{name}.json reads back");
}

#[test]
fn http_bodies() {
    let options = RunOptions {
        cwd: Some("/srv/app".into()),
        env: [("LANG".to_owned(), "C.UTF-8".to_owned())].into(),
        stdin: Some(Payload::from(&b"\x00\xffdata"[..])),
        stdin_text: None,
        timeout_ms: Some(30_000),
        max_output_bytes: Some(1 << 20),
        kill_grace_ms: None,
        name: Some("build".into()),
        labels: Default::default(),
    };
    let plain = |v: &ExecRequest| encode(v, Encoding::Json);
    case(
        "exec_request",
        &ExecRequest {
            command: Some("make -j2 && ./test.sh".into()),
            options: options.clone(),
            ..Default::default()
        },
        plain,
        |b| decode(b, Encoding::Json).unwrap(),
    );
    let plain = |v: &CodeRequest| encode(v, Encoding::Json);
    let code = CodeRequest {
        language: "python3".into(),
        code: "import sys\nprint(\"it's\", sys.argv[1:])\n".into(),
        args: vec!["a b".into()],
        options: RunOptions { stdin_text: Some("line\n".into()), ..RunOptions::default() },
    };
    case("code_request", &code, plain, |b| decode(b, Encoding::Json).unwrap());
    // A response's JSON form has its text fields as text or base64, said by
    // `*_encoding` (absent in MessagePack, where they are `bin`).
    let response = ExecResponse {
        command: CommandId("c-5f0c9a7e21b34d08".into()),
        exit_code: Some(1),
        signal: None,
        reason: ExitReason::Exited,
        duration_ms: 1234,
        stdout: Payload::from(&b"ok\n"[..]),
        stderr: Payload::from(&b"\xff\xfe warning"[..]),
        stdout_encoding: None,
        stderr_encoding: None,
        truncated: true,
    };
    let read_json = |b: &[u8]| {
        let mut r = ExecResponse::from_json(b).unwrap();
        assert_eq!(
            (r.stdout_encoding, r.stderr_encoding),
            (Some(TextEncoding::Utf8), Some(TextEncoding::Base64))
        );
        (r.stdout_encoding, r.stderr_encoding) = (None, None);
        r
    };
    case("exec_response", &response, ExecResponse::to_json, read_json);
    let error = HttpError {
        code: ErrorCode::SpawnFailed,
        message: "cannot start \"/nope\": No such file or directory (os error 2)".into(),
        errno: Some(2),
    };
    let plain = |v: &HttpError| encode(v, Encoding::Json);
    case("error", &error, plain, |b| decode(b, Encoding::Json).unwrap());
}
