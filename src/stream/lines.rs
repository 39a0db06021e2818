//! NDJSON framing across arbitrary chunk boundaries, with a bound on line length.
//!
//! Only the unfinished last line is kept between chunks, so memory is bounded by the line limit
//! whatever the size of the stream. A line longer than the limit is reported once and skipped up
//! to its newline without being buffered.

use memchr::memchr;

/// One framed line (without its `\n`), or the report of a line that was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Complete(&'a [u8]),
    TooLong,
}

pub struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
    /// Inside an over-long line: drop bytes until the next newline.
    discarding: bool,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            max: max_line_bytes,
            discarding: false,
        }
    }

    /// Feeds a chunk, calling `f` for every line it completes.
    pub fn push(&mut self, mut chunk: &[u8], mut f: impl FnMut(Line<'_>)) {
        while !chunk.is_empty() {
            let Some(nl) = memchr(b'\n', chunk) else {
                self.keep(chunk, &mut f);
                return;
            };
            let (head, rest) = (&chunk[..nl], &chunk[nl + 1..]);
            if self.discarding {
                self.discarding = false;
            } else if self.partial.is_empty() {
                // The common case: a whole line inside one chunk, passed on without a copy.
                if head.len() > self.max {
                    f(Line::TooLong);
                } else {
                    f(Line::Complete(head));
                }
            } else if self.partial.len() + head.len() > self.max {
                self.partial.clear();
                f(Line::TooLong);
            } else {
                self.partial.extend_from_slice(head);
                f(Line::Complete(&self.partial));
                self.partial.clear();
            }
            chunk = rest;
        }
    }

    fn keep(&mut self, tail: &[u8], f: &mut impl FnMut(Line<'_>)) {
        if self.discarding {
            return;
        }
        if self.partial.len() + tail.len() > self.max {
            self.partial = Vec::new();
            self.discarding = true;
            f(Line::TooLong);
        } else {
            self.partial.extend_from_slice(tail);
        }
    }

    /// At a clean end of stream: a last line without `\n` is still a line.
    pub fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        if !self.discarding && !self.partial.is_empty() {
            f(Line::Complete(&self.partial));
        }
        self.partial = Vec::new();
        self.discarding = false;
    }

    /// Bytes held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Whether the bytes so far end inside a line (kept, or being skipped as too long).
    pub fn mid_line(&self) -> bool {
        self.discarding || !self.partial.is_empty()
    }
}

/// The `\n`-separated pieces of `text`, found with `memchr` (a per-byte `split` costs as much as
/// the parse): `n` newlines give `n + 1` lines, the last one empty when `text` ends with `\n`.
pub fn split_lines(text: &[u8]) -> SplitLines<'_> {
    SplitLines { rest: Some(text) }
}

pub struct SplitLines<'a> {
    rest: Option<&'a [u8]>,
}

impl SplitLines<'_> {
    /// No lines at all.
    pub const EMPTY: SplitLines<'static> = SplitLines { rest: None };
}

impl<'a> Iterator for SplitLines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let text = self.rest?;
        match memchr(b'\n', text) {
            Some(nl) => {
                self.rest = Some(&text[nl + 1..]);
                Some(&text[..nl])
            }
            None => {
                self.rest = None;
                Some(text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Option<Vec<u8>>> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut f = |l: Line<'_>| {
            out.push(match l {
                Line::Complete(b) => Some(b.to_vec()),
                Line::TooLong => None,
            })
        };
        for c in chunks {
            s.push(c, &mut f);
        }
        s.finish(&mut f);
        out
    }

    #[test]
    fn lines_across_chunks() {
        let got = split(&[b"ab", b"c\nde", b"f\n\ng"], 10);
        assert_eq!(
            got,
            vec![
                Some(b"abc".to_vec()),
                Some(b"def".to_vec()),
                Some(vec![]),
                Some(b"g".to_vec())
            ]
        );
    }

    #[test]
    fn over_long_lines_are_reported_once_and_skipped() {
        let got = split(&[b"12345", b"67890", b"abc\nok\n", b"0123456789012\nend"], 8);
        assert_eq!(got, vec![None, Some(b"ok".to_vec()), None, Some(b"end".to_vec())]);
    }

    #[test]
    fn inside_an_over_long_line_is_still_mid_line() {
        let mut s = LineSplitter::new(4);
        s.push(b"ok\n", |_| {});
        assert!(!s.mid_line());
        s.push(b"0123456789", |_| {});
        assert_eq!(s.buffered(), 0, "not buffered");
        assert!(s.mid_line(), "but the stream is inside a line");
        s.push(b"\n", |_| {});
        assert!(!s.mid_line());
    }

    #[test]
    fn buffer_stays_within_the_limit() {
        let mut s = LineSplitter::new(100);
        for _ in 0..1000 {
            s.push(&[b'x'; 7], |_| {});
            assert!(s.buffered() <= 100);
        }
    }

    proptest! {
        /// However the stream is cut into chunks, the lines are the same.
        #[test]
        fn chunking_does_not_change_lines(
            lines in proptest::collection::vec("[a-z{}\":,]{0,20}", 0..20),
            cuts in proptest::collection::vec(0usize..400, 0..10),
        ) {
            let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([text.len()]) {
                chunks.push(&text.as_bytes()[last..c]);
                last = c;
            }
            let got = split(&chunks, 1000);
            let want: Vec<_> = lines.iter().map(|l| Some(l.as_bytes().to_vec())).collect();
            prop_assert_eq!(got, want);
        }
    }
}
