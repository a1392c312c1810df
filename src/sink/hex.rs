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
        out.write_all(&dump_line(row * 16, bytes))?;
    }
    writeln!(out, "{:08x}", data.len())
}

/// One `hexdump -C` line, built in place: `00000010  61 62 ... 70  |ab...p|\n`.
fn dump_line(offset: usize, bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut line = Vec::with_capacity(80);
    line.extend_from_slice(format!("{offset:08x}  ").as_bytes());
    for column in 0..16 {
        match bytes.get(column) {
            Some(&byte) => line.extend_from_slice(&[
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
                b' ',
            ]),
            None => line.extend_from_slice(b"   "),
        }
        if column == 7 {
            line.push(b' ');
        }
    }
    line.extend_from_slice(b" |");
    line.extend(bytes.iter().map(|&byte| {
        if (0x20..0x7f).contains(&byte) {
            byte
        } else {
            b'.'
        }
    }));
    line.extend_from_slice(b"|\n");
    line
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
