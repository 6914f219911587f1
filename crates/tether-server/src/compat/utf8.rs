//! Bytes to text for the dialects whose wire carries output as strings
//! (LangSmith's WebSocket, Runloop's event streams) while counting
//! positions in raw bytes: a chunk's text stops before an incomplete
//! character, which goes with the next chunk, so offsets stay exact.

/// Decodes `bytes` with each invalid sequence as U+FFFD. Unless `at_end`, a
/// trailing incomplete sequence is left out. Returns the text and how many
/// bytes it stands for.
pub(crate) fn decode(bytes: &[u8], at_end: bool) -> (String, usize) {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match std::str::from_utf8(&bytes[i..]) {
            Ok(s) => {
                out.push_str(s);
                i = bytes.len();
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[i..i + good]).unwrap_or_default());
                i += good;
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        i += n;
                    }
                    None if at_end => {
                        out.push('\u{FFFD}');
                        i = bytes.len();
                    }
                    None => break,
                }
            }
        }
    }
    (out, i)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_holding_back_an_incomplete_character() {
        assert_eq!(decode(b"caf\xc3", false), ("caf".to_owned(), 3));
        assert_eq!(decode(b"\xc3\xa9!", false), ("é!".to_owned(), 3));
        assert_eq!(decode(b"a\xffb", false), ("a\u{FFFD}b".to_owned(), 3));
        assert_eq!(decode(b"x\xe2\x82", true), ("x\u{FFFD}".to_owned(), 3));
    }
}
