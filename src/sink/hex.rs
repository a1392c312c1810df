//! The `hex` format: a `hexdump -C` style dump per message, headed by proto and peer.

use std::io::{self, Write};

use super::text::write_heading;

/// Writes a header line, then `hexdump -C` lines (offset, 16 bytes, printable ASCII).
pub fn write_hex(
    out: &mut impl Write,
    time: &str,
    proto: &str,
    peer: &str,
    data: &[u8],
) -> io::Result<()> {
    write_heading(out, time, proto, peer)?;
    writeln!(out, " {} bytes", data.len())?;
    for (row, bytes) in data.chunks(16).enumerate() {
        write!(out, "{:08x}  ", row * 16)?;
        for column in 0..16 {
            match bytes.get(column) {
                Some(byte) => write!(out, "{byte:02x} ")?,
                None => out.write_all(b"   ")?,
            }
            if column == 7 {
                out.write_all(b" ")?;
            }
        }
        out.write_all(b" |")?;
        for &byte in bytes {
            let shown = if (0x20..0x7f).contains(&byte) {
                byte
            } else {
                b'.'
            };
            out.write_all(&[shown])?;
        }
        out.write_all(b"|\n")?;
    }
    writeln!(out, "{:08x}", data.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hexdump_c() {
        let mut out = Vec::new();
        write_hex(&mut out, "T", "tcp", "-", b"abcdefg!\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "T tcp - 9 bytes\n\
             00000000  61 62 63 64 65 66 67 21  0a                       |abcdefg!.|\n\
             00000009\n"
        );
    }
}
