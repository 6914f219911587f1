//! Entry points for the fuzz targets in `fuzz/` (not part of the API).
//!
//! The LangSmith dialect's frame parser and its output writer are private;
//! the fuzzer reaches them through these functions, which hand back plain
//! summaries it can check against an independent reading of the input.

use axum::extract::ws::Message;
use bytes::Bytes;
use tether_exec::Stream;

use crate::compat::langsmith::{self, ClientFrame};

/// What the LangSmith WebSocket made of one client frame.
#[derive(Debug, PartialEq, Eq)]
pub enum LangsmithFrame {
    /// `execute`.
    Execute,
    /// `reconnect` with the command's id and the two offsets.
    Reconnect {
        /// The command's id.
        command_id: String,
        /// Where stdout resumes.
        stdout_offset: i64,
        /// Where stderr resumes.
        stderr_offset: i64,
    },
    /// `input` with its text.
    Input {
        /// The text for stdin.
        data: String,
    },
    /// `close_stdin`.
    CloseStdin,
    /// `kill`.
    Kill,
    /// A well-formed frame of a type the dialect does not know.
    Unknown,
}

/// Parses a binary client frame as the LangSmith socket does; `None` for a
/// frame it refuses as malformed.
pub fn langsmith_parse(frame: &[u8]) -> Option<LangsmithFrame> {
    let f = langsmith::parse(&Message::Binary(Bytes::copy_from_slice(frame))).ok()??;
    Some(match f {
        ClientFrame::Execute(_) => LangsmithFrame::Execute,
        ClientFrame::Reconnect { command_id, stdout_offset, stderr_offset } => {
            LangsmithFrame::Reconnect { command_id, stdout_offset, stderr_offset }
        }
        ClientFrame::Input { data } => LangsmithFrame::Input { data },
        ClientFrame::CloseStdin => LangsmithFrame::CloseStdin,
        ClientFrame::Kill => LangsmithFrame::Kill,
        ClientFrame::Unknown => LangsmithFrame::Unknown,
    })
}

/// The LangSmith socket's output writer: raw output in, JSON text frames
/// (`{"type": "stdout"|"stderr", "data", "offset"}`) out.
pub struct LangsmithWriter(langsmith::Writer);

impl LangsmithWriter {
    /// A writer whose streams start at these raw offsets.
    pub fn new(from: [u64; 2]) -> LangsmithWriter {
        LangsmithWriter(langsmith::Writer::new(from))
    }

    /// The frames for `data` read at `offset` of stdout (or stderr).
    pub fn output(&mut self, stdout: bool, offset: u64, data: &[u8]) -> Vec<serde_json::Value> {
        let stream = if stdout { Stream::Stdout } else { Stream::Stderr };
        self.0.output(stream, offset, data)
    }

    /// The frames for what is held back at the end.
    pub fn flush(&mut self) -> Vec<serde_json::Value> {
        self.0.flush()
    }
}
