//! The `raw` and `lines` formats, and the escaping that keeps a peer from
//! driving the terminal: no control byte from the network is ever written
//! live, and no invisible formatting character (bidi overrides, zero-width
//! characters) can make text read other than it is.

use std::io::{self, Write};

use crate::message::{Addr, Message};

/// What escaping keeps readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// For raw data on a terminal: `\n`, `\t` and `\r` pass, other controls are escaped.
    Terminal,
    /// For one-line text: every control, and `\` itself, is escaped, so the line decodes back.
    Line,
    /// For an event line on stderr, made of our words and already escaped
    /// peer strings: every control is escaped, `\` is left as it is.
    Event,
}

/// Unicode formatting characters that change how the text around them is
/// shown without showing themselves: bidi embeddings, overrides and isolates
/// (`left\u{202e}right` displays reversed), zero-width characters, separators.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}' | '\u{e0001}' | '\u{e0020}'..='\u{e007f}')
}

/// Writes `bytes` with controls (C0, DEL, C1), invisible formatting
/// characters and invalid UTF-8 shown as escapes (`\x1b`, `\u{202e}`).
pub fn write_escaped(out: &mut impl Write, bytes: &[u8], escape: Escape) -> io::Result<()> {
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        let mut clean_from = 0;
        for (at, c) in text.char_indices() {
            let replacement = match (c, escape) {
                ('\n' | '\t' | '\r', Escape::Terminal) => continue,
                ('\n', _) => "\\n".into(),
                ('\t', _) => "\\t".into(),
                ('\r', _) => "\\r".into(),
                ('\\', Escape::Line) => "\\\\".into(),
                (c, _) if (c as u32) < 0x20 || c == '\x7f' => format!("\\x{:02x}", c as u32),
                (c, _) if c.is_control() || is_invisible_format(c) => {
                    format!("\\u{{{:x}}}", c as u32)
                }
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

/// The peer as shown in text: `127.0.0.1:40312`, `127.0.0.1:40312/CN=alice`
/// with a certificate, `-` for none. A UNIX sender's name and a subject are
/// the peer's own text: escaped like a `lines` line, spaces too (`\x20`), so
/// the label stays one field.
pub fn peer_label(message: &Message) -> String {
    let (Some(peer), subject) = (&message.peer, &message.subject) else {
        return "-".into();
    };
    let peer = match peer {
        Addr::Inet(addr) => addr.to_string(),
        Addr::Unix(_) => one_field(&peer.to_string()),
    };
    match subject {
        Some(subject) => format!("{peer}/{}", one_field(subject)),
        None => peer,
    }
}

/// `text` escaped for a one-word field of a `lines` line.
fn one_field(text: &str) -> String {
    let mut escaped = Vec::with_capacity(text.len());
    // Writing into a Vec cannot fail.
    let _ = write_escaped(&mut escaped, text.as_bytes(), Escape::Line);
    String::from_utf8_lossy(&escaped).replace(' ', "\\x20")
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
    fn bidi_and_invisible_characters_are_escaped() {
        assert_eq!(
            escaped(
                "left\u{202e}right\u{2066}\u{200b}".as_bytes(),
                Escape::Terminal
            ),
            "left\\u{202e}right\\u{2066}\\u{200b}"
        );
        assert_eq!(
            escaped("a\u{2069}b".as_bytes(), Escape::Line),
            "a\\u{2069}b"
        );
    }

    #[test]
    fn event_escaping_keeps_backslashes_and_defuses_the_rest() {
        assert_eq!(
            escaped(b"CN=evil\x1b]0;owned\x07\x1b[2J\r\\x20", Escape::Event),
            "CN=evil\\x1b]0;owned\\x07\\x1b[2J\\r\\x20"
        );
    }

    #[test]
    fn a_certificate_subject_cannot_drive_the_terminal() {
        let message = Message::new(
            crate::message::Proto::Tcp,
            "127.0.0.1:5"
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(Into::into),
            crate::message::Event::Connect,
        )
        .with_subject(Some("CN=evil\x1b]0;owned\x07\x1b[2J\r O=x".into()));
        assert_eq!(
            peer_label(&message),
            "127.0.0.1:5/CN=evil\\x1b]0;owned\\x07\\x1b[2J\\r\\x20O=x"
        );
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
