//! A minimal MessagePack codec, enough for the tether protocol (maps with
//! named fields, integers, strings, `bin`, arrays, booleans, nil; no
//! floats, no extensions), for the bare protocol client of `tetherws`.
//!
//! The bench depends on neither `tether-proto` nor `rmp-serde` (its
//! dependency set is fixed by the workspace lock file), and a bare client
//! should not pay for a generic serde layer anyway: `bin` payloads are
//! sliced out of the received frame without a copy. The tests check it
//! against every golden frame in `protocol/vectors/`.

use anyhow::{Result, bail};
use bytes::Bytes;

/// A decoded MessagePack value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// A UTF-8 string.
    Str(String),
    /// A byte string, a slice of the frame it came from.
    Bin(Bytes),
    /// An array.
    Array(Vec<Value>),
    /// A map, in wire order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// A map with string keys, in the given order.
    pub(crate) fn map<const N: usize>(fields: [(&str, Value); N]) -> Value {
        Value::Map(fields.into_iter().map(|(k, v)| (Value::Str(k.to_owned()), v)).collect())
    }

    /// A string value.
    pub(crate) fn str(s: &str) -> Value {
        Value::Str(s.to_owned())
    }

    /// The value of a string key of a map.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative one.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Uint(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes, if this is a `bin`.
    pub(crate) fn as_bin(&self) -> Option<&Bytes> {
        match self {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }
}

/// Encodes a value in the smallest form of each type, as `rmp-serde` (the
/// daemon's encoder) does.
pub(crate) fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Uint(n) => write_uint(*n, out),
        Value::Int(n) if *n >= 0 => write_uint(*n as u64, out),
        Value::Int(n) => write_neg(*n, out),
        Value::Str(s) => {
            let n = s.len();
            if n < 32 {
                out.push(0xa0 | n as u8);
            } else {
                write_len(n, [0xd9, 0xda, 0xdb], out);
            }
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bin(b) => {
            write_len(b.len(), [0xc4, 0xc5, 0xc6], out);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            if items.len() < 16 {
                out.push(0x90 | items.len() as u8);
            } else {
                write_len16(items.len(), [0xdc, 0xdd], out);
            }
            for i in items {
                write(i, out);
            }
        }
        Value::Map(entries) => {
            if entries.len() < 16 {
                out.push(0x80 | entries.len() as u8);
            } else {
                write_len16(entries.len(), [0xde, 0xdf], out);
            }
            for (k, v) in entries {
                write(k, out);
                write(v, out);
            }
        }
    }
}

fn write_uint(n: u64, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn write_neg(n: i64, out: &mut Vec<u8>) {
    if n >= -32 {
        out.push(n as i8 as u8);
    } else if n >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, n as i8 as u8]);
    } else if n >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// A length with 8-, 16- and 32-bit forms (`str`, `bin`).
fn write_len(n: usize, tags: [u8; 3], out: &mut Vec<u8>) {
    if n <= u8::MAX as usize {
        out.extend_from_slice(&[tags[0], n as u8]);
    } else {
        write_len16(n, [tags[1], tags[2]], out);
    }
}

/// A length with 16- and 32-bit forms.
fn write_len16(n: usize, tags: [u8; 2], out: &mut Vec<u8>) {
    if n <= u16::MAX as usize {
        out.push(tags[0]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(tags[1]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Decodes one value that fills `frame` exactly.
pub(crate) fn decode(frame: &Bytes) -> Result<Value> {
    let mut r = Reader { buf: frame, pos: 0 };
    let v = r.value(0)?;
    if r.pos != frame.len() {
        bail!("{} trailing bytes after the MessagePack value", frame.len() - r.pos);
    }
    Ok(v)
}

/// Nesting deeper than this is refused (the protocol nests three levels).
const MAX_DEPTH: usize = 32;

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let Some(end) = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) else {
            bail!("truncated MessagePack value");
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &b| acc << 8 | b as u64))
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            bail!("MessagePack value nested too deeply");
        }
        let tag = self.take(1)?[0];
        Ok(match tag {
            0x00..=0x7f => Value::Uint(tag as u64),
            0x80..=0x8f => self.map((tag & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((tag & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.str((tag & 0x1f) as usize)?,
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (tag - 0xc4))? as usize;
                let start = self.pos;
                self.take(n)?;
                Value::Bin(self.buf.slice(start..start + n))
            }
            0xcc..=0xcf => Value::Uint(self.be(1 << (tag - 0xcc))?),
            0xd0 => Value::Int(self.be(1)? as u8 as i8 as i64),
            0xd1 => Value::Int(self.be(2)? as u16 as i16 as i64),
            0xd2 => Value::Int(self.be(4)? as u32 as i32 as i64),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xd9..=0xdb => {
                let n = self.be(1 << (tag - 0xd9))? as usize;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.be(2 << (tag - 0xdc))? as usize;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.be(2 << (tag - 0xde))? as usize;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::Int(tag as i8 as i64),
            other => bail!("unsupported MessagePack type 0x{other:02x} (float or extension)"),
        })
    }

    fn str(&mut self, n: usize) -> Result<Value> {
        let s = std::str::from_utf8(self.take(n)?)?;
        Ok(Value::Str(s.to_owned()))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value> {
        // Every element takes at least one byte: a bogus length fails here
        // instead of reserving memory for it.
        let mut items = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value> {
        let mut entries = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../protocol/vectors");

    fn base64(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = c.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (x as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    /// The JSON form of a value, `bin` as base64 (the `tether.v1.json` rule).
    fn to_json(v: &Value) -> serde_json::Value {
        match v {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Uint(n) => (*n).into(),
            Value::Int(n) => (*n).into(),
            Value::Str(s) => s.clone().into(),
            Value::Bin(b) => base64(b).into(),
            Value::Array(items) => items.iter().map(to_json).collect(),
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    #[test]
    fn every_golden_frame_decodes_to_its_json_and_reencodes_byte_for_byte() {
        let mut seen = 0;
        for entry in std::fs::read_dir(VECTORS).expect("vectors directory") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("msgpack") {
                continue;
            }
            let frame = Bytes::from(std::fs::read(&path).expect("read vector"));
            let v = decode(&frame).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert_eq!(encode(&v), frame.to_vec(), "{} re-encodes", path.display());
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path.with_extension("json")).expect("read json"))
                    .expect("valid json");
            assert_eq!(to_json(&v), json, "{} matches its JSON", path.display());
            seen += 1;
        }
        assert!(seen >= 20, "only {seen} vectors found");
    }

    #[test]
    fn integers_use_their_smallest_form() {
        for (n, len) in [(0u64, 1), (127, 1), (128, 2), (255, 2), (256, 3), (65536, 5), (1 << 32, 9)] {
            let b = encode(&Value::Uint(n));
            assert_eq!(b.len(), len, "{n}");
            assert_eq!(decode(&Bytes::from(b)).expect("decodes"), Value::Uint(n));
        }
        for n in [-1i64, -32, -33, -128, -129, -32769, i64::MIN] {
            assert_eq!(decode(&Bytes::from(encode(&Value::Int(n)))).expect("decodes"), Value::Int(n));
        }
    }

    #[test]
    fn truncated_and_trailing_input_is_refused() {
        let b = encode(&Value::map([("type", Value::str("ok")), ("id", Value::Uint(5))]));
        assert!(decode(&Bytes::copy_from_slice(&b[..b.len() - 1])).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(decode(&Bytes::from(long)).is_err());
        assert!(decode(&Bytes::from_static(&[0xdd, 0xff, 0xff, 0xff, 0xff])).is_err());
    }
}
