//! The `raw` and `lines` formats, and the escaping that keeps a peer from
//! driving the terminal: no control byte from the network is ever written live.

use std::io::{self, Write};

/// What escaping keeps readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// For raw data on a terminal: `\n`, `\t` and `\r` pass, other controls are escaped.
    Terminal,
    /// For one-line text: every control, and `\` itself, is escaped, so the line decodes back.
    Line,
}

/// Writes `bytes` with controls (C0, DEL, C1) and invalid UTF-8 shown as escapes (`\x1b`).
pub fn write_escaped(out: &mut impl Write, bytes: &[u8], escape: Escape) -> io::Result<()> {
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        let mut clean_from = 0;
        for (at, c) in text.char_indices() {
            let replacement = match (c, escape) {
                ('\n' | '\t' | '\r', Escape::Terminal) => continue,
                ('\n', Escape::Line) => "\\n".into(),
                ('\t', Escape::Line) => "\\t".into(),
                ('\r', Escape::Line) => "\\r".into(),
                ('\\', Escape::Line) => "\\\\".into(),
                (c, _) if (c as u32) < 0x20 || c == '\x7f' => format!("\\x{:02x}", c as u32),
                (c, _) if c.is_control() => format!("\\u{{{:x}}}", c as u32),
                _ => continue,
            };
            out.write_all(&text.as_bytes()[clean_from..at])?;
            out.write_all(replacement.as_bytes())?;
            clean_from = at + c.len_utf8();
        }
        out.write_all(&text.as_bytes()[clean_from..])?;
        for byte in chunk.invalid() {
            write!(out, "\\x{byte:02x}")?;
        }
    }
    Ok(())
}

/// `raw`: the bytes as received, escaped only when they go to a terminal.
pub fn write_raw(out: &mut impl Write, data: &[u8], terminal: bool) -> io::Result<()> {
    // Plain printable ASCII, the common case, needs no escaping at all.
    let plain = |&byte: &u8| matches!(byte, 0x20..=0x7e | b'\n' | b'\t' | b'\r');
    if terminal && !data.iter().all(plain) {
        write_escaped(out, data, Escape::Terminal)
    } else {
        out.write_all(data)
    }
}

/// `lines`: `TIME PROTO PEER TEXT`, one line per message; the message's own
/// trailing newline ends the line, any other control is escaped. A piece of
/// a longer line (`cut`) ends in a lone `\`, which escaped text never does.
pub fn write_line(
    out: &mut impl Write,
    time: &str,
    proto: &str,
    peer: &str,
    data: &[u8],
    cut: bool,
) -> io::Result<()> {
    let text = data.strip_suffix(b"\n").unwrap_or(data);
    write_heading(out, time, proto, peer)?;
    out.write_all(b" ")?;
    write_escaped(out, text, Escape::Line)?;
    out.write_all(if cut { b"\\\n" } else { b"\n" })
}

/// `TIME PROTO PEER`, the start of a `lines` line and of a `hex` dump (`-` for no peer).
pub fn write_heading(out: &mut impl Write, time: &str, proto: &str, peer: &str) -> io::Result<()> {
    write!(out, "{time} {proto} {peer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8], escape: Escape) -> String {
        let mut out = Vec::new();
        write_escaped(&mut out, bytes, escape).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn terminal_escaping_defuses_control_sequences() {
        assert_eq!(
            escaped(b"\x1b[2Jhi\n\tok\r\x07", Escape::Terminal),
            "\\x1b[2Jhi\n\tok\r\\x07"
        );
        assert_eq!(
            escaped("\u{9b}31m".as_bytes(), Escape::Terminal),
            "\\u{9b}31m"
        );
        assert_eq!(escaped(b"\xff\xfeok", Escape::Terminal), "\\xff\\xfeok");
        assert_eq!(escaped("héllo €".as_bytes(), Escape::Terminal), "héllo €");
    }

    #[test]
    fn line_escaping_keeps_text_on_one_line() {
        assert_eq!(escaped(b"a\nb\\c\x00", Escape::Line), "a\\nb\\\\c\\x00");
    }

    #[test]
    fn lines_strip_one_newline_and_name_the_peer() {
        let mut out = Vec::new();
        let peer = "127.0.0.1:4000";
        write_line(&mut out, "T", "udp", peer, b"abcdefg!\n", false).unwrap();
        assert_eq!(out, b"T udp 127.0.0.1:4000 abcdefg!\n");
        out.clear();
        write_line(&mut out, "T", "tcp", peer, b"abc", true).unwrap();
        assert_eq!(out, b"T tcp 127.0.0.1:4000 abc\\\n");
    }
}
