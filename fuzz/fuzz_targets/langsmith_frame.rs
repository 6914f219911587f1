//! The LangSmith dialect's JSON frames, both ways.
//!
//! In: a client frame is either ignored or parsed into exactly what an
//! independent JSON reading of it says (its `type`, the `input` text, the
//! `reconnect` id and offsets). Out: the same bytes, cut into chunks of
//! stdout and stderr, become text frames whose texts join up to the lossy
//! UTF-8 decoding of each stream and whose `offset + len(data)` is the raw
//! end of each frame, rising to the stream's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tether_server::fuzzing::{LangsmithFrame, LangsmithWriter, langsmith_parse};

const KNOWN: [&str; 5] = ["execute", "reconnect", "input", "close_stdin", "kill"];

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    check_writer(data);
});

fn check_parse(data: &[u8]) {
    let parsed = langsmith_parse(data);
    let value: Option<Value> = serde_json::from_slice(data).ok();
    let ty = value.as_ref().and_then(|v| field(v, "type", 0)).and_then(Value::as_str).map(str::to_owned);
    let Some(frame) = parsed else {
        // A bare `kill` or `close_stdin` carries nothing that could be wrong.
        if let (Some(v @ Value::Object(_)), Some(t @ ("kill" | "close_stdin"))) = (&value, ty.as_deref()) {
            panic!("a well-formed {t} frame was ignored: {v}");
        }
        return;
    };
    let v = value.unwrap_or_else(|| panic!("parsed {frame:?} from invalid JSON"));
    let t = ty.as_deref().unwrap_or_else(|| panic!("parsed {frame:?} from a frame without a type: {v}"));
    match frame {
        LangsmithFrame::Execute => {
            assert_eq!(t, "execute");
            assert!(
                field(&v, "command", 1).is_some_and(Value::is_string),
                "execute without a command string: {v}"
            );
        }
        LangsmithFrame::Reconnect { command_id, stdout_offset, stderr_offset } => {
            assert_eq!(t, "reconnect");
            assert_eq!(field(&v, "command_id", 1).and_then(Value::as_str), Some(command_id.as_str()));
            assert_eq!(field(&v, "stdout_offset", 2).map_or(Some(0), Value::as_i64), Some(stdout_offset));
            assert_eq!(field(&v, "stderr_offset", 3).map_or(Some(0), Value::as_i64), Some(stderr_offset));
        }
        LangsmithFrame::Input { data } => {
            assert_eq!(t, "input");
            assert_eq!(field(&v, "data", 1).and_then(Value::as_str), Some(data.as_str()));
        }
        LangsmithFrame::CloseStdin => assert_eq!(t, "close_stdin"),
        LangsmithFrame::Kill => assert_eq!(t, "kill"),
        LangsmithFrame::Unknown => assert!(!KNOWN.contains(&t), "a known type {t} parsed as unknown: {v}"),
    }
}

/// A frame's field by name, or, for the array form serde also accepts for
/// an internally tagged enum (`["input", "text"]`: the tag, then the
/// fields in declaration order), by position.
fn field<'a>(v: &'a Value, name: &str, pos: usize) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(name),
        Value::Array(a) => a.get(pos),
        _ => None,
    }
}

fn check_writer(data: &[u8]) {
    let mut w = LangsmithWriter::new([0, 0]);
    let mut raw: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut frames = Vec::new();
    // Chunk sizes and streams from a small generator seeded by the input.
    let mut state = data.len() as u32 ^ 0x9e37_79b9;
    let mut rest = data;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((state >> 16) as usize % 7 + 1).min(rest.len());
        let stdout = state & 0x8000 != 0;
        let i = usize::from(!stdout);
        let (chunk, tail) = rest.split_at(n);
        frames.extend(w.output(stdout, raw[i].len() as u64, chunk));
        raw[i].extend_from_slice(chunk);
        rest = tail;
    }
    frames.extend(w.flush());
    let mut text = [String::new(), String::new()];
    let mut end = [0u64; 2];
    for f in &frames {
        let i = match f["type"].as_str() {
            Some("stdout") => 0,
            Some("stderr") => 1,
            _ => panic!("not an output frame: {f}"),
        };
        let d = f["data"].as_str().unwrap_or_else(|| panic!("frame without text: {f}"));
        let offset = f["offset"].as_i64().unwrap_or_else(|| panic!("frame without offset: {f}"));
        assert!(!d.is_empty(), "empty frame {f}");
        let frame_end = offset + d.len() as i64;
        assert!(frame_end > end[i] as i64, "frame {f} does not move past raw offset {}", end[i]);
        end[i] = frame_end as u64;
        text[i].push_str(d);
    }
    for i in 0..2 {
        assert_eq!(end[i], raw[i].len() as u64, "stream {i} ends short of its bytes");
        assert_eq!(text[i], String::from_utf8_lossy(&raw[i]), "stream {i} text differs");
    }
}
