//! The chunked transfer coding of a request body (RFC 9112 §7.1), decoded in place: data is
//! handed out as ranges of the input, never copied; the trailer section is scanned with the
//! head's rules and limits.

use super::head::{HeadScan, Scan, Section};
use crate::http::{reject, Limits, Reject, Trailer};
use std::ops::Range;

/// Most bytes of one chunk line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Where the decoder is in the chunked grammar (RFC 9112 §7.1, §7.1.1):
/// `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF`,
/// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`,
/// `chunk-ext-val = token / quoted-string`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In chunk-size (`digits` hex digits so far).
    Size { digits: u8 },
    /// BWS after the size or a value: only `;` (or more BWS) may follow.
    BeforeSemicolon,
    /// After `;`: BWS, then an extension name.
    BeforeName,
    /// In a chunk-ext-name.
    Name,
    /// BWS after a name: `=`, `;` or more BWS.
    AfterName,
    /// After `=`: BWS, then a token or a quoted-string.
    BeforeValue,
    /// In a token value.
    Token,
    /// In a quoted-string value.
    Quoted,
    /// After a backslash in a quoted-string.
    QuotedPair,
    /// After the closing quote.
    AfterQuoted,
    /// After the chunk line's CR.
    LineLf,
    /// In chunk-data.
    Data,
    /// After chunk-data: CR expected.
    DataCr,
    /// After chunk-data's CR: LF expected.
    DataLf,
    /// In the trailer section.
    Trailers,
    /// The body and its trailer section are complete.
    Done,
}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes at this range of the input.
    Data(Range<usize>),
    /// The input was used up without data (framing only): more is needed.
    NeedData,
    /// The last chunk and the trailer section were read.
    Done,
}

/// An incremental decoder for the chunked transfer coding, strict about framing: hex sizes
/// without sign or overflow, extensions exactly per the grammar (token names, token or
/// balanced quoted-string values, BWS only around `;` and `=`), CRLF line ends, chunk lines
/// of at most [`MAX_CHUNK_LINE`] bytes, trailers with the head's syntax and limits.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    line_len: usize,
    trailer_bytes: Vec<u8>,
    trailer_scan: HeadScan,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_bws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            line_len: 0,
            trailer_bytes: Vec::new(),
            trailer_scan: HeadScan::new(Section::Trailers),
        }
    }
}

impl ChunkedDecoder {
    /// Decodes from `input`: returns the bytes consumed (framing, and data up to the end of
    /// the returned range) and what was found. At most `max` data bytes are handed out at a
    /// time (`max` = 0 stops at the first data byte). Errors: 400 for malformed framing, 431
    /// for a trailer section over the head limits.
    pub fn decode(
        &mut self,
        input: &[u8],
        max: usize,
        limits: &Limits,
    ) -> Result<(usize, Decoded), Reject> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let n = (input.len() - i)
                        .min(max)
                        .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    if n == 0 {
                        return Ok((i, Decoded::NeedData));
                    }
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((i + n, Decoded::Data(i..i + n)));
                }
                State::Trailers => return self.collect_trailers(input, i, limits),
                _ => {
                    self.step(input[i])?;
                    i += 1;
                }
            }
        }
        let found = if self.state == State::Done {
            Decoded::Done
        } else {
            Decoded::NeedData
        };
        Ok((i, found))
    }

    /// The last chunk and the trailer section were read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The trailer section's fields, once [`Decoded::Done`] was returned. Errors: 400 for
    /// malformed field syntax.
    pub fn trailers(&self) -> Result<Vec<Trailer>, Reject> {
        if self.trailer_bytes.len() <= 2 {
            return Ok(Vec::new());
        }
        self.trailer_scan.parse_trailers(&self.trailer_bytes)
    }

    /// Collects trailer-section bytes from `input[from..]` until the section ends.
    fn collect_trailers(
        &mut self,
        input: &[u8],
        from: usize,
        limits: &Limits,
    ) -> Result<(usize, Decoded), Reject> {
        let before = self.trailer_bytes.len();
        self.trailer_bytes.extend_from_slice(&input[from..]);
        match self.trailer_scan.scan(&self.trailer_bytes, limits) {
            Scan::Partial => Ok((input.len(), Decoded::NeedData)),
            Scan::Complete { len } => {
                self.trailer_bytes.truncate(len);
                self.state = State::Done;
                Ok((from + len - before, Decoded::Done))
            }
            Scan::Invalid(r) => Err(r),
        }
    }

    fn step(&mut self, b: u8) -> Result<(), Reject> {
        use State::*;
        let bad = |why| Err(reject(400, why));
        if !matches!(self.state, DataCr | DataLf) {
            self.line_len += 1;
            if self.line_len > MAX_CHUNK_LINE {
                return bad("chunk line too long");
            }
        }
        self.state = match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                if digits >= 15 {
                    return bad("chunk-size too large");
                }
                let digit = (b as char).to_digit(16).unwrap_or(0);
                self.remaining = self.remaining << 4 | u64::from(digit);
                Size { digits: digits + 1 }
            }
            (Size { digits: 0 }, _) => return bad("chunk-size is not hexadecimal"),
            (Size { .. }, b'\r') => LineLf,
            (Size { .. } | BeforeSemicolon, _) if is_bws(b) => BeforeSemicolon,
            (Size { .. } | BeforeSemicolon | Name | AfterName | Token | AfterQuoted, b';') => {
                BeforeName
            }
            (Size { .. } | BeforeSemicolon, _) => return bad("invalid byte after chunk-size"),
            (BeforeName, _) if is_bws(b) => BeforeName,
            (BeforeName | Name, _) if is_tchar(b) => Name,
            (Name | Token | AfterQuoted, b'\r') => LineLf,
            (Name | AfterName, _) if is_bws(b) => AfterName,
            (Name | AfterName, b'=') => BeforeValue,
            (BeforeValue, _) if is_bws(b) => BeforeValue,
            (BeforeValue, b'"') => Quoted,
            (BeforeValue | Token, _) if is_tchar(b) => Token,
            (Token | AfterQuoted, _) if is_bws(b) => BeforeSemicolon,
            (Quoted, b'"') => AfterQuoted,
            (Quoted, b'\\') => QuotedPair,
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
            (Quoted, _) if b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80 => Quoted,
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            (QuotedPair, _) if b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80 => Quoted,
            (BeforeName | Name | AfterName | BeforeValue | Token, _) => {
                return bad("malformed chunk extension")
            }
            (Quoted | QuotedPair | AfterQuoted, _) => {
                return bad("malformed quoted chunk extension")
            }
            (LineLf, b'\n') => {
                self.line_len = 0;
                if self.remaining == 0 {
                    Trailers
                } else {
                    Data
                }
            }
            (LineLf, _) => return bad("chunk line without LF after CR"),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0 },
            (DataCr | DataLf, _) => return bad("chunk data not followed by CRLF"),
            (Data | Trailers | Done, _) => self.state,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 4094,
        fields: 10,
        field_size: 100,
        body: None,
        head: 1000,
    };

    /// Decodes `input` split into pieces of `split` bytes, `max` data bytes at a time.
    fn decode(input: &[u8], split: usize, max: usize) -> Result<(Vec<u8>, Vec<Trailer>), Reject> {
        let mut d = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(split.max(1)) {
            pending.extend_from_slice(piece);
            loop {
                let (used, found) = d.decode(&pending, max, &LIMITS)?;
                if let Decoded::Data(range) = &found {
                    body.extend_from_slice(&pending[range.clone()]);
                }
                pending.drain(..used);
                match found {
                    Decoded::Done => return Ok((body, d.trailers()?)),
                    Decoded::NeedData => break,
                    Decoded::Data(_) => {}
                }
            }
        }
        Err(reject(0, "incomplete"))
    }

    #[test]
    fn any_split_gives_the_same_body_and_trailers() {
        let input = b"5;ext=1\r\nhello\r\n6 ; q=\"a b\"\r\n world\r\n0\r\nX-T: 1\r\n\r\nnext";
        for split in 1..input.len() {
            for max in [1, 3, 4096] {
                let (body, trailers) = decode(input, split, max).unwrap();
                assert_eq!(body, b"hello world");
                assert_eq!(trailers, vec![(b"X-T".to_vec(), b"1".to_vec())]);
            }
        }
    }

    #[test]
    fn chunk_lines_follow_the_grammar() {
        let good: [&[u8]; 8] = [
            b"3\r\nabc\r\n0\r\n\r\n",
            b"003\r\nabc\r\n000\r\n\r\n",
            b"3;a\r\nabc\r\n0\r\n\r\n",
            b"3;a=b;c=d\r\nabc\r\n0\r\n\r\n",
            b"3 ;\ta = b\r\nabc\r\n0\r\n\r\n",
            b"3;a=\"b; c\"\r\nabc\r\n0\r\n\r\n",
            b"3;a=\"\\\"q\\\\\"\r\nabc\r\n0;last\r\n\r\n",
            b"3;a=\"\"\r\nabc\r\n0\r\n\r\n",
        ];
        for input in good {
            assert!(
                decode(input, 64, 64).is_ok(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let bad: [&[u8]; 18] = [
            b"2;\r\nab\r\n0\r\n\r\n",
            b"5;a=\"b; c\r\nhello\r\n0\r\n\r\n",
            b"a \r\n0123456789\r\n0\r\n\r\n",
            b"3;a \r\nabc\r\n0\r\n\r\n",
            b"3;a=\r\nabc\r\n0\r\n\r\n",
            b"3;a=b \r\nabc\r\n0\r\n\r\n",
            b"3;=b\r\nabc\r\n0\r\n\r\n",
            b"3;a@b\r\nabc\r\n0\r\n\r\n",
            b"3;a=\"b\"c\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"3\r\nabc\r\n0\r\nX: 1\n\r\n",
            b"3\r\nabc\r\n0\r\nX : 1\r\n\r\n",
            b"3;a=\"\x01\"\r\nabc\r\n0\r\n\r\n",
        ];
        for input in bad {
            let got = decode(input, 64, 64);
            assert!(
                matches!(got, Err(Reject { status: 400, .. })),
                "{:?}: {got:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_trailer = [b"0\r\nX: ".as_slice(), &[b'v'; 200], b"\r\n\r\n"].concat();
        assert_eq!(decode(&long_trailer, 64, 64).unwrap_err().status, 431);
    }
}
