//! Chunked transfer coding (RFC 9112 §7.1), read strictly as it streams past.
//!
//! The gateway forwards chunked bodies as they arrive (validated byte for byte) and needs to
//! know exactly where a message ends, so a request cannot smuggle a second one inside its
//! body. Anything loose that some servers tolerate and others do not (a bare LF, a size
//! that overflows, junk after the size, an unterminated chunk) is an error here, never a
//! guess. For HTTP/1.0 clients, which cannot read chunked coding, the same parser hands out
//! the data so the gateway can send it decoded.

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The bytes are not chunked coding.
    Malformed,
    /// A size line or the trailers are too long.
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size.
    Size {
        digits: u8,
    },
    /// After the size: optional whitespace, then `;` or the CR.
    AfterSize,
    /// Inside extensions, up to the CR.
    Extension,
    /// The LF closing the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line, or the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Where a chunked message is, between calls.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    /// Size of the current chunk, then what is left of its data.
    remaining: u64,
    /// Bytes of the current size line, or of the whole trailer section.
    line_len: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Chunked {
            state: State::Size { digits: 0 },
            remaining: 0,
            line_len: 0,
        }
    }

    /// The whole message, through its final CRLF, has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Read `input`, handing each piece of chunk data to `data`. Returns how many bytes
    /// belong to this message: all of `input`, or fewer when the message ended inside it
    /// (the rest is the next message).
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(v) = hex(b) {
                        // 15 hex digits are far beyond any real body and cannot overflow.
                        if digits >= 15 {
                            return Err(ChunkError::Malformed);
                        }
                        self.remaining = self.remaining * 16 + u64::from(v);
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError::Malformed);
                    } else {
                        self.state = State::AfterSize;
                        continue;
                    }
                    self.count_line(1)?;
                }
                State::AfterSize => {
                    self.count_line(1)?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b' ' | b'\t' => {}
                        b';' => self.state = State::Extension,
                        _ => return Err(ChunkError::Malformed),
                    }
                }
                State::Extension => {
                    self.count_line(1)?;
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(ChunkError::Malformed),
                        // Extensions (`;name=value`, optional whitespace) are passed on
                        // untouched; only visible characters and blanks are allowed.
                        b'\t' | b' '..=b'~' | 0x80..=0xff => {}
                        _ => return Err(ChunkError::Malformed),
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.line_len = 0;
                    self.state = if self.remaining == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::Data => {
                    let take = (input.len() - i)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    data(&input[i..i + take]);
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerStart => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::EndLf,
                        b'\n' => return Err(ChunkError::Malformed),
                        _ => self.state = State::TrailerLine,
                    }
                }
                State::TrailerLine => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.state = State::TrailerLf,
                        b'\n' => return Err(ChunkError::Malformed),
                        _ => {}
                    }
                }
                State::TrailerLf => {
                    self.count_trailer()?;
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::TrailerStart;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_line(&mut self, n: usize) -> Result<(), ChunkError> {
        self.line_len += n;
        if self.line_len > MAX_SIZE_LINE {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_TRAILERS {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes; returns (bytes used, decoded data, done).
    fn run(input: &[u8], step: usize) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = c.feed(piece, |d| out.extend_from_slice(d))?;
            used += n;
            if c.is_done() {
                break;
            }
        }
        Ok((used, out, c.is_done()))
    }

    #[test]
    fn decodes_in_any_split_and_stops_at_the_end() {
        let msg =
            b"5\r\nhello\r\n1;ext=\"v\"\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        for step in [1, 2, 3, 7, 64, msg.len()] {
            let (used, data, done) = run(msg, step).unwrap();
            assert!(done, "step {step}");
            assert_eq!(data, b"hello 0123456789");
            assert_eq!(&msg[used..], b"GET /next", "step {step}");
        }
    }

    #[test]
    fn empty_body_and_uppercase_sizes() {
        assert_eq!(run(b"0\r\n\r\n", 1).unwrap(), (5, vec![], true));
        let (_, data, done) =
            run(b"1F\r\n0123456789012345678901234567890\r\n0\r\n\r\n", 5).unwrap();
        assert!(done);
        assert_eq!(data.len(), 31);
    }

    #[test]
    fn incomplete_is_not_done() {
        let (used, _, done) = run(b"5\r\nhel", 2).unwrap();
        assert_eq!(used, 6);
        assert!(!done);
    }

    #[test]
    fn refuses_loose_framing() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after size
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after data
            b"\r\n",                       // no size
            b"-1\r\n",                     // sign
            b"0x5\r\nhello\r\n",           // prefix
            b"1000000000000000\r\n",       // 16 hex digits: overflow territory
            b"0\r\n\n",                    // bare LF at the end
            b"0\r\nX: 1\n\r\n",            // bare LF in trailers
            b"5\x00\r\n",                  // control byte after the size
            b"5 x\r\nhello\r\n",           // junk after the size
            b"5;a\x01\r\n",                // control byte in an extension
        ] {
            assert_eq!(
                run(bad, 1).map(|r| r.2),
                Err(ChunkError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long = b"5;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert_eq!(run(&long, 100).map(|r| r.2), Err(ChunkError::TooLong));
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-T: 12345\r\n");
        }
        assert_eq!(run(&trailers, 100).map(|r| r.2), Err(ChunkError::TooLong));
    }
}
