//! Micro-benchmarks of the work done per message: framing, and writing each
//! output format. Run with `cargo bench`; results in BENCHMARKS.md.

use bytes::Bytes;
use divan::Bencher;
use divan::counter::BytesCount;
use portier::framing::{Framer, Framing};
use portier::message::{Event, Message, Proto};
use portier::sink::{write_hex, write_json, write_line, write_raw};

fn main() {
    divan::main();
}

/// 64 KiB of text in 80-byte lines, like a sensor log.
fn text() -> Vec<u8> {
    (0..64 * 1024)
        .map(|i| match i % 80 {
            79 => b'\n',
            n => b'a' + (n % 26) as u8,
        })
        .collect()
}

#[divan::bench]
fn frame_64k_into_lines(bencher: Bencher) {
    let data = Bytes::from(text());
    bencher.counter(BytesCount::new(data.len())).bench(|| {
        let mut framer = Framer::new(Framing::Lines {
            max_line: 64 * 1024,
        });
        framer.push(data.clone());
        let mut lines = 0;
        while framer.next_frame().is_some() {
            lines += 1;
        }
        lines
    });
}

#[divan::bench]
fn json_of_an_80_byte_line(bencher: Bencher) {
    let line = Bytes::from(text()[..80].to_vec());
    let message = Message::new(
        Proto::Tcp,
        "127.0.0.1:40312"
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(Into::into),
        Event::data(line),
    );
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    bencher.bench_local(|| {
        out.clear();
        write_json(
            &mut out,
            &mut scratch,
            "2026-11-26T19:49:58.348650Z",
            &message,
            None,
        )
    });
}

#[divan::bench]
fn lines_of_an_80_byte_line(bencher: Bencher) {
    let line = text()[..80].to_vec();
    let mut out = Vec::new();
    bencher.bench_local(|| {
        out.clear();
        write_line(
            &mut out,
            "2026-11-26T19:49:58.348650Z",
            "tcp",
            "127.0.0.1:40312",
            &line,
            false,
        )
    });
}

#[divan::bench]
fn hex_of_1k(bencher: Bencher) {
    let data = text()[..1024].to_vec();
    let mut out = Vec::new();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| {
            out.clear();
            write_hex(
                &mut out,
                "2026-11-26T19:49:58.348650Z",
                "udp",
                "127.0.0.1:40312",
                &data,
            )
        });
}

#[divan::bench]
fn raw_64k_escaped_for_a_terminal(bencher: Bencher) {
    let data = text();
    let mut out = Vec::new();
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| {
            out.clear();
            write_raw(&mut out, &data, true)
        });
}
