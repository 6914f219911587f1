//! Status records: what the shell's `PROMPT_COMMAND` hook reports on its
//! fd 3, NUL-terminated (`S N`, `E N RC CWD`, `R`), read from the status
//! pipe and parsed.

use std::io;

use tokio::net::unix::pipe;

/// Longest status record accepted.
const MAX_RECORD_BYTES: usize = 64 * 1024;

/// NUL-terminated records from the status pipe.
#[derive(Default)]
pub(super) struct Records {
    buf: Vec<u8>,
}

impl Records {
    /// Whether nothing (not even part of a record) is buffered.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next whole record if one is buffered.
    pub(super) fn pop(&mut self) -> Option<Vec<u8>> {
        let end = self.buf.iter().position(|&b| b == 0)?;
        let rec = self.buf[..end].to_vec();
        self.buf.drain(..=end);
        Some(rec)
    }

    /// Reads what the pipe has; `Ok(false)` at end of file.
    pub(super) fn fill(&mut self, p: &pipe::Receiver) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match p.try_read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    // Records are short (a cwd is at most PATH_MAX); only a
                    // broken shell writes more without a NUL.
                    if self.buf.len() > MAX_RECORD_BYTES && !self.buf.contains(&0) {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "status record too long"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next record, waiting for it; `None` at end of file.
    pub(super) async fn next(&mut self, p: &pipe::Receiver) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(r) = self.pop() {
                return Ok(Some(r));
            }
            p.readable().await?;
            if !self.fill(p)? {
                return Ok(self.pop());
            }
        }
    }
}

/// A status record.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record {
    Started(u64),
    Ended { n: u64, rc: i32, cwd: String },
    Ready,
    Unknown,
}

/// Parses one record (without its NUL).
pub(super) fn parse(rec: &[u8]) -> Record {
    let mut parts = rec.splitn(4, |&b| b == b' ');
    let num = |b: Option<&[u8]>| std::str::from_utf8(b?).ok()?.parse::<u64>().ok();
    match parts.next() {
        Some(b"R") => Record::Ready,
        Some(b"S") => num(parts.next()).map_or(Record::Unknown, Record::Started),
        Some(b"E") => {
            let (Some(n), Some(rc)) = (num(parts.next()), num(parts.next())) else {
                return Record::Unknown;
            };
            // The cwd is raw bytes and may hold spaces or newlines.
            let cwd = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            Record::Ended { n, rc: rc as i32, cwd }
        }
        _ => Record::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        assert_eq!(parse(b"R"), Record::Ready);
        assert_eq!(parse(b"S 12"), Record::Started(12));
        assert_eq!(parse(b"E 3 130 /tmp/a b\nc"), Record::Ended { n: 3, rc: 130, cwd: "/tmp/a b\nc".into() });
        assert_eq!(parse(b"E 3 0 "), Record::Ended { n: 3, rc: 0, cwd: String::new() });
        assert_eq!(parse(b"E x"), Record::Unknown);
        assert_eq!(parse(b"?"), Record::Unknown);
    }
}
