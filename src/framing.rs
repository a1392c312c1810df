//! Framing: turns the reads of one TCP connection into messages.
//!
//! Lines are bounded (a peer that never sends `\n` cannot make us buffer
//! without limit) and are cut only between UTF-8 characters, so a character
//! split across two reads, or across a long-line cut, is never mangled.

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
}

impl Framer {
    /// A framer for one stream.
    pub fn new(framing: Framing) -> Self {
        Framer {
            framing,
            pending: BytesMut::new(),
            ready: None,
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
            Framing::Lines { .. } => self.pending.extend_from_slice(&chunk),
        }
    }

    /// The next complete message, if any.
    pub fn next_frame(&mut self) -> Option<Frame> {
        if let Some(ready) = self.ready.take() {
            return Some(Frame::whole(ready));
        }
        let Framing::Lines { max_line } = self.framing else {
            return None;
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
