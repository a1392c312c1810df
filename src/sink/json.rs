//! The `json` format: one object per line, for jq and scripts.
//!
//! Payloads that are valid UTF-8 go in `text`, others in `data_b64`, so nothing
//! is lost; C1 controls and DEL, which JSON allows raw, are written as `\u`
//! escapes so the output is also safe to show on a terminal.

use std::io::{self, Write};

use base64::Engine;
use serde::Serialize;

use super::Parse;
use super::syslog::{NOT_SYSLOG, Syslog};
use super::text::is_invisible_format;
use crate::message::{Event, Message};

#[derive(Serialize)]
struct Record<'a> {
    ts: &'a str,
    proto: &'a str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cut: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_drops: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syslog: Option<Syslog<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    syslog_error: Option<&'static str>,
}

/// Writes `message` as one JSON line, its data parsed as `parse` says;
/// `scratch` is reused between calls.
pub fn write_json(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    ts: &str,
    message: &Message,
    parse: Option<Parse>,
) -> io::Result<()> {
    let credentials = message.peer.as_ref().and_then(|p| p.credentials());
    let mut record = Record {
        ts,
        proto: message.proto.as_str(),
        event: message.event.name(),
        peer: message.peer.as_ref().map(|p| p.to_string()),
        pid: credentials.and_then(|c| c.pid),
        uid: credentials.map(|c| c.uid),
        gid: credentials.map(|c| c.gid),
        subject: message.subject.as_deref(),
        local: None,
        len: None,
        cut: None,
        text: None,
        data_b64: None,
        bytes: None,
        duration_s: None,
        drops: None,
        new_drops: None,
        error: None,
        note: None,
        exit: None,
        syslog: None,
        syslog_error: None,
    };
    match &message.event {
        Event::Listening { local, note } => {
            record.local = Some(local.to_string());
            record.note = *note;
        }
        Event::Connect => {}
        Event::Data { bytes: data, cut } => {
            record.len = Some(data.len());
            record.cut = cut.then_some(true);
            match std::str::from_utf8(data) {
                Ok(text) => record.text = Some(text),
                Err(_) => {
                    record.data_b64 = Some(base64::engine::general_purpose::STANDARD.encode(data))
                }
            }
            if parse == Some(Parse::Syslog) {
                record.syslog = record
                    .text
                    .and_then(|t| super::syslog::parse(t, message.time));
                record.syslog_error = record.syslog.is_none().then_some(NOT_SYSLOG);
            }
        }
        Event::Disconnect {
            bytes,
            duration,
            exit,
        } => {
            record.bytes = Some(*bytes);
            record.duration_s = Some(duration.as_secs_f64());
            record.exit = exit.as_deref();
        }
        Event::Drops { new, total } => {
            record.drops = Some(*total);
            record.new_drops = Some(*new);
        }
        Event::Error(error) => record.error = Some(error),
        Event::Notice(notice) => record.note = Some(notice),
    }
    scratch.clear();
    serde_json::to_writer(&mut *scratch, &record)?;
    write_terminal_safe_json(out, scratch)?;
    out.write_all(b"\n")
}

/// Copies serialized JSON, replacing raw DEL, C1 controls (U+0080..U+009F)
/// and invisible formatting characters (bidi overrides, zero-width: see
/// [`is_invisible_format`]) by `\u` escapes, which JSON reads back as the same text.
fn write_terminal_safe_json(out: &mut impl Write, json: &[u8]) -> io::Result<()> {
    let Ok(text) = std::str::from_utf8(json) else {
        return out.write_all(json); // serde_json writes UTF-8; nothing else reaches here
    };
    let mut clean_from = 0;
    for (at, c) in text.char_indices() {
        let unsafe_on_a_terminal =
            c == '\x7f' || ('\u{80}'..='\u{9f}').contains(&c) || is_invisible_format(c);
        if !unsafe_on_a_terminal {
            continue;
        }
        out.write_all(&json[clean_from..at])?;
        for unit in c.encode_utf16(&mut [0u16; 2]) {
            write!(out, "\\u{unit:04x}")?;
        }
        clean_from = at + c.len_utf8();
    }
    out.write_all(&json[clean_from..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Proto;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn json_of(data: &[u8]) -> serde_json::Value {
        let message = Message::new(
            Proto::Tcp,
            "127.0.0.1:5"
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(Into::into),
            Event::data(Bytes::copy_from_slice(data)),
        );
        let mut out = Vec::new();
        write_json(&mut out, &mut Vec::new(), "T", &message, None).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(!out.iter().any(|&b| b < 0x20 && b != b'\n' || b == 0x7f));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn text_or_base64() {
        let v = json_of(b"hi\n");
        assert_eq!(v["text"], "hi\n");
        assert_eq!(v["len"], 3);
        assert_eq!(v["peer"], "127.0.0.1:5");
        assert_eq!(v["event"], "data");
        let v = json_of(b"\xff\x00");
        assert_eq!(v["data_b64"], "/wA=");
        assert!(v.get("text").is_none());
    }

    #[test]
    fn bidi_and_invisible_characters_are_escaped_and_decode_back() {
        let v = json_of("a\u{202e}b\u{2066}c\u{e0041}".as_bytes());
        assert_eq!(v["text"], "a\u{202e}b\u{2066}c\u{e0041}");
        let mut out = Vec::new();
        write_terminal_safe_json(&mut out, "\"a\u{202e}\u{e0041}\"".as_bytes()).unwrap();
        assert_eq!(out, b"\"a\\u202e\\udb40\\udc41\"");
    }

    #[test]
    fn c1_controls_are_escaped() {
        let mut out = Vec::new();
        write_terminal_safe_json(&mut out, "\"a\u{9b}b\u{7f}é\"".as_bytes()).unwrap();
        assert_eq!(out, "\"a\\u009bb\\u007fé\"".as_bytes());
    }

    proptest! {
        #[test]
        fn payload_decodes_back(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let v = json_of(&data);
            let decoded = match v.get("text") {
                Some(text) => text.as_str().unwrap().as_bytes().to_vec(),
                None => base64::engine::general_purpose::STANDARD
                    .decode(v["data_b64"].as_str().unwrap())
                    .unwrap(),
            };
            prop_assert_eq!(decoded, data);
        }
    }
}
