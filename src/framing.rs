//! Framing: turns the reads of one TCP connection into messages.
//!
//! Lines are bounded (a peer that never sends `\n` cannot make us buffer
//! without limit) and are cut only between UTF-8 characters, so a character
//! split across two reads, or across a long-line cut, is never mangled.
//!
//! The framings devices use (`--frame`): NUL-ended messages, a 2- or 4-byte
//! big-endian length before each, and syslog's octet counting (RFC 6587:
//! `LEN SP MSG`, or a line where a message does not start with a count).
//! Their messages are the payload alone; one longer than the limit comes out
//! in pieces flagged `cut`, so no peer makes us buffer without limit either.

use bytes::{Buf, Bytes, BytesMut};

/// Frames this long or longer are copied out of the pending buffer ([`Framer::take`]).
const COPY_FROM: usize = 4096;

/// How a byte stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Each read as it came: prompt and byte-exact.
    Raw,
    /// Each read, except that a UTF-8 character cut at the end of a read
    /// waits for its rest; used when escaping for a terminal.
    RawWholeChars,
    /// One message per line, `\n` included; a line of up to `max_line`
    /// bytes (its newline not counted) is one message, a longer one comes
    /// out in pieces of at most `max_line` bytes.
    Lines {
        /// The longest line kept whole, its newline not counted.
        max_line: usize,
    },
    /// One message per NUL-ended run of bytes, the NUL left out.
    Nul {
        /// The longest message kept whole.
        max_line: usize,
    },
    /// Each message after its length: 2 or 4 bytes, big-endian.
    LengthPrefixed {
        /// The length's width in bytes: 2 or 4.
        width: usize,
        /// The longest message kept whole.
        max_line: usize,
    },
    /// Syslog over TCP (RFC 6587): `LEN SP MSG`; a message that does not
    /// start with a count runs to the end of its line instead.
    OctetCount {
        /// The longest message kept whole.
        max_line: usize,
    },
}

/// One message cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message's bytes.
    pub bytes: Bytes,
    /// A piece of a line longer than `max_line`: the rest of the line follows
    /// (never set on the last bytes of a stream, nor on a line of exactly `max_line`).
    pub cut: bool,
}

impl Frame {
    fn whole(bytes: Bytes) -> Frame {
        Frame { bytes, cut: false }
    }
}

/// The framing state of one stream.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    pending: BytesMut,
    ready: Option<Bytes>,
    /// Counted framings: the bytes of the current message still to come,
    /// once its length has been read.
    remaining: Option<usize>,
}

impl Framer {
    /// A framer for one stream.
    pub fn new(framing: Framing) -> Self {
        Framer {
            framing,
            pending: BytesMut::new(),
            ready: None,
            remaining: None,
        }
    }

    /// Feeds one read; take the messages out with [`Framer::next_frame`] before pushing again.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match self.framing {
            Framing::Raw => self.ready = Some(chunk),
            Framing::RawWholeChars => {
                self.pending.extend_from_slice(&chunk);
                let whole = self.pending.len() - incomplete_char_len(&self.pending);
                if whole > 0 {
                    self.ready = Some(self.pending.split_to(whole).freeze());
                }
            }
            _ => self.pending.extend_from_slice(&chunk),
        }
    }

    /// The next complete message, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if let Some(ready) = self.ready.take() {
            return Some(Frame::whole(ready));
        }
        let max_line = match self.framing {
            Framing::Raw | Framing::RawWholeChars => return None,
            Framing::Lines { max_line } => max_line,
            Framing::Nul { max_line } => return self.next_ended(0, max_line),
            Framing::LengthPrefixed { width, max_line } => {
                return self.next_counted(max_line, |pending| length_prefix(pending, width));
            }
            Framing::OctetCount { max_line } => {
                if self.remaining.is_none() && !self.pending.first()?.is_ascii_digit() {
                    return self.next_ended(b'\n', max_line); // a plain line
                }
                return self.next_counted(max_line, octet_count);
            }
        };
        let newline = self.pending.iter().position(|&b| b == b'\n');
        if let Some(end) = newline.filter(|&at| at <= max_line) {
            return Some(Frame::whole(self.take(end + 1)));
        }
        // Exactly `max_line` bytes may still be a whole line: its newline may come next.
        if self.pending.len() > max_line {
            let cut = max_line - incomplete_char_len(&self.pending[..max_line]);
            let cut = if cut == 0 { max_line } else { cut };
            let bytes = self.take(cut);
            return Some(Frame { bytes, cut: true });
        }
        None
    }

    /// The next message ended by `end`, which is left out.
    fn next_ended(&mut self, end: u8, max_line: usize) -> Option<Frame> {
        match self.pending.iter().position(|&b| b == end) {
            Some(at) if at <= max_line => {
                let bytes = self.take(at);
                self.pending.advance(1);
                Some(Frame::whole(bytes))
            }
            _ if self.pending.len() > max_line => Some(Frame {
                bytes: self.take(max_line),
                cut: true,
            }),
            _ => None,
        }
    }

    /// The next message of a counted framing: `header` reads the count
    /// (its bytes, the count), or says it has not all come yet.
    fn next_counted(
        &mut self,
        max_line: usize,
        header: impl Fn(&[u8]) -> Option<(usize, usize)>,
    ) -> Option<Frame> {
        let remaining = match self.remaining {
            Some(remaining) => remaining,
            None => {
                let (header_len, count) = header(&self.pending)?;
                self.pending.advance(header_len);
                count
            }
        };
        if remaining == 0 {
            self.remaining = None;
            return self.next_frame(); // an empty message: nothing to deliver
        }
        let piece = remaining.min(max_line);
        if self.pending.len() < piece {
            self.remaining = Some(remaining);
            return None;
        }
        let bytes = self.take(piece);
        let left = remaining - piece;
        self.remaining = (left > 0).then_some(left);
        Some(Frame {
            bytes,
            cut: left > 0,
        })
    }

    /// The first `len` pending bytes. A long one is copied out: sharing the
    /// pending buffer, it would keep all of it alive while it waits for the
    /// writer, and the buffer's next growth would allocate anew, so a queue of
    /// long lines grew memory by whole buffers (a 200 MiB line peaked at
    /// 46-63 MiB, 36-39 with the copy). Short ones share it: a copy each would
    /// cost an allocation per line (framing 80-byte lines ran at half speed).
    #[inline]
    fn take(&mut self, len: usize) -> Bytes {
        if len < COPY_FROM {
            return self.pending.split_to(len).freeze();
        }
        let bytes = Bytes::copy_from_slice(&self.pending[..len]);
        self.pending.advance(len);
        bytes
    }

    /// What is left when the stream ends: an unterminated last line, or a cut character.
    pub fn finish(&mut self) -> Option<Frame> {
        let rest = self.pending.split().freeze();
        (!rest.is_empty()).then(|| Frame::whole(rest))
    }
}

/// A 2- or 4-byte big-endian length: (its width, the length).
fn length_prefix(pending: &[u8], width: usize) -> Option<(usize, usize)> {
    let bytes = pending.get(..width)?;
    let length = bytes
        .iter()
        .fold(0usize, |length, &b| length << 8 | usize::from(b));
    Some((width, length))
}

/// RFC 6587's `LEN SP`: (its width, the length). Not a count (too long, or
/// not followed by a space) is taken as a count of what is there, so the
/// bytes still come out rather than stall.
fn octet_count(pending: &[u8]) -> Option<(usize, usize)> {
    const MAX_DIGITS: usize = 10;
    let digits = pending.iter().take_while(|b| b.is_ascii_digit()).count();
    match pending.get(digits) {
        None if digits <= MAX_DIGITS => None, // the count may go on
        Some(b' ') if (1..=MAX_DIGITS).contains(&digits) => {
            let count = std::str::from_utf8(&pending[..digits]).ok()?.parse().ok()?;
            Some((digits + 1, count))
        }
        _ => Some((0, digits.max(1))), // not a count: those bytes, as a message
    }
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character
/// whose remaining bytes have not arrived yet (0 to 3).
pub fn incomplete_char_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead byte is further back
        }
        let width = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if width > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `data` to a framer in reads cut at `cuts`, returning every message.
    fn frame(framing: Framing, data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        frames(framing, data, cuts)
            .into_iter()
            .map(|f| f.bytes)
            .collect()
    }

    fn frames(framing: Framing, data: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut framer = Framer::new(framing);
        let mut frames = Vec::new();
        let mut start = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        ends.push(data.len());
        ends.sort();
        for end in ends {
            framer.push(Bytes::copy_from_slice(&data[start..end]));
            frames.extend(std::iter::from_fn(|| framer.next_frame()));
            start = end;
        }
        frames.extend(framer.finish());
        frames
    }

    #[test]
    fn lines_keep_their_newline() {
        let frames = frame(Framing::Lines { max_line: 64 }, b"ab\ncd\nef", &[1, 4]);
        assert_eq!(frames, vec![&b"ab\n"[..], b"cd\n", b"ef"]);
    }

    #[test]
    fn pieces_of_long_lines_are_flagged() {
        let flags: Vec<bool> = frames(Framing::Lines { max_line: 4 }, b"abcdefg\nhi\n", &[])
            .iter()
            .map(|f| f.cut)
            .collect();
        assert_eq!(flags, [true, false, false]);
    }

    #[test]
    fn a_line_of_exactly_max_line_bytes_is_one_message() {
        let frames = frames(Framing::Lines { max_line: 4 }, b"abcd\nefgh", &[2, 4, 5]);
        let got: Vec<(&[u8], bool)> = frames.iter().map(|f| (&f.bytes[..], f.cut)).collect();
        assert_eq!(got, [(&b"abcd\n"[..], false), (&b"efgh"[..], false)]);
    }

    #[test]
    fn the_last_piece_of_a_stream_is_never_flagged_cut() {
        let frames = frames(Framing::Lines { max_line: 4 }, b"abcdefgh", &[]);
        let got: Vec<(&[u8], bool)> = frames.iter().map(|f| (&f.bytes[..], f.cut)).collect();
        assert_eq!(got, [(&b"abcd"[..], true), (&b"efgh"[..], false)]);
    }

    #[test]
    fn long_lines_are_cut_between_characters() {
        // "é" is two bytes; a cut at 3 would split the second one.
        let frames = frame(Framing::Lines { max_line: 3 }, "éé\n".as_bytes(), &[]);
        assert_eq!(frames, vec!["é".as_bytes(), "é\n".as_bytes()]);
    }

    #[test]
    fn device_framings_give_the_payloads() {
        let nul = frame(Framing::Nul { max_line: 64 }, b"ab\0cd\0ef", &[1, 4]);
        assert_eq!(nul, vec![&b"ab"[..], b"cd", b"ef"]);
        let u16 = Framing::LengthPrefixed {
            width: 2,
            max_line: 64,
        };
        assert_eq!(
            frame(u16, b"\0\x02hi\0\x03abc", &[1, 3, 5]),
            vec![&b"hi"[..], b"abc"]
        );
        let u32 = Framing::LengthPrefixed {
            width: 4,
            max_line: 64,
        };
        assert_eq!(frame(u32, b"\0\0\0\x01x", &[2]), vec![&b"x"[..]]);
        let octets = Framing::OctetCount { max_line: 64 };
        let got = frame(
            octets,
            b"5 hello12 <13>1 a b\nc\nplain line\n3 end",
            &[3, 9],
        );
        assert_eq!(
            got,
            vec![&b"hello"[..], b"<13>1 a b\nc\n", b"plain line", b"end"]
        );
    }

    #[test]
    fn a_counted_message_over_the_limit_comes_in_flagged_pieces() {
        let framing = Framing::LengthPrefixed {
            width: 2,
            max_line: 4,
        };
        let got: Vec<(Vec<u8>, bool)> = frames(framing, b"\0\x0aabcdefghij\0\x01z", &[3])
            .into_iter()
            .map(|f| (f.bytes.to_vec(), f.cut))
            .collect();
        let expected = [("abcd", true), ("efgh", true), ("ij", false), ("z", false)];
        let expected: Vec<(Vec<u8>, bool)> = expected
            .iter()
            .map(|(b, c)| (b.as_bytes().to_vec(), *c))
            .collect();
        assert_eq!(got, expected);
    }

    /// How a test writes one message in a framing.
    type Encode = fn(&[u8]) -> Vec<u8>;

    /// The messages `encode`d one after another, framed in reads cut at
    /// `cuts`, with each message's cut pieces joined again.
    fn round_trip(
        framing: Framing,
        messages: &[Vec<u8>],
        cuts: &[usize],
        encode: Encode,
    ) -> Vec<Vec<u8>> {
        let stream: Vec<u8> = messages.iter().flat_map(|m| encode(m)).collect();
        let mut joined = Vec::new();
        let mut current = Vec::new();
        for frame in frames(framing, &stream, cuts) {
            current.extend_from_slice(&frame.bytes);
            if !frame.cut {
                joined.push(std::mem::take(&mut current));
            }
        }
        joined
    }

    #[test]
    fn incomplete_characters_are_detected() {
        assert_eq!(incomplete_char_len(b"abc"), 0);
        assert_eq!(incomplete_char_len(&"é".as_bytes()[..1]), 1);
        assert_eq!(incomplete_char_len(&"€".as_bytes()[..2]), 2);
        assert_eq!(incomplete_char_len("€".as_bytes()), 0);
        assert_eq!(incomplete_char_len(&"😀".as_bytes()[..3]), 3);
        assert_eq!(incomplete_char_len(b"\xff"), 0);
    }

    proptest! {
        #[test]
        fn every_framing_keeps_every_byte(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max_line in 1usize..64,
        ) {
            for framing in [Framing::Raw, Framing::RawWholeChars, Framing::Lines { max_line }] {
                let frames = frame(framing, &data, &cuts);
                prop_assert_eq!(frames.concat(), data.clone());
                prop_assert!(frames.iter().all(|f| !f.is_empty()));
            }
        }

        #[test]
        fn device_framings_give_back_every_message(
            messages in proptest::collection::vec(proptest::collection::vec(1u8..=255, 1..80), 0..12),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max_line in 1usize..100,
        ) {
            let nul = |m: &[u8]| [m, b"\0"].concat();
            let u16 = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
            let u32 = |m: &[u8]| [&(m.len() as u32).to_be_bytes()[..], m].concat();
            let octets = |m: &[u8]| [format!("{} ", m.len()).as_bytes(), m].concat();
            let cases: [(Framing, Encode); 4] = [
                (Framing::Nul { max_line }, nul),
                (Framing::LengthPrefixed { width: 2, max_line }, u16),
                (Framing::LengthPrefixed { width: 4, max_line }, u32),
                (Framing::OctetCount { max_line }, octets),
            ];
            for (framing, encode) in cases {
                let got = round_trip(framing, &messages, &cuts, encode);
                // A NUL-ended message over the limit is cut where it stands: its pieces rejoin too.
                prop_assert_eq!(&got, &messages, "{:?}", framing);
            }
        }

        #[test]
        fn lines_never_split_a_character(
            text in "[a-zé€😀\n]{0,80}",
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            max_line in 4usize..16,
        ) {
            for framing in [Framing::RawWholeChars, Framing::Lines { max_line }] {
                for frame in frame(framing, text.as_bytes(), &cuts) {
                    prop_assert!(std::str::from_utf8(&frame).is_ok());
                    let limit = max_line + usize::from(frame.ends_with(b"\n"));
                    prop_assert!(frame.len() <= limit || framing == Framing::RawWholeChars);
                }
            }
        }
    }
}
