//! `--parse syslog`: RFC 5424 and RFC 3164 messages (as `logger`, rsyslog and
//! most devices send them) split into fields for the JSON record, by
//! syslog_loose (the parser Vector uses). A message that does not parse is
//! kept whole and flagged, never dropped.

use std::collections::BTreeMap;
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use syslog_loose::{Protocol, Variant};

/// The fields of one syslog message, borrowed from its text.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct Syslog<'a> {
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    facility: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    procid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msgid: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    structured_data: BTreeMap<&'a str, BTreeMap<&'a str, String>>,
    message: &'a str,
}

/// Why a message was kept unparsed.
pub(super) const NOT_SYSLOG: &str = "not a syslog message (RFC 5424 or 3164)";

/// Parses `text`, received at `received` (which gives RFC 3164's missing year).
pub(super) fn parse(text: &str, received: SystemTime) -> Option<Syslog<'_>> {
    let year = DateTime::<Utc>::from(received).year();
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let parsed =
        syslog_loose::parse_message_with_year_exact(text, |_| year, Variant::Either).ok()?;
    // A priority is what every syslog message starts with; without one it is
    // free text that happened to get through the loose parser.
    parsed.facility?;
    let structured_data = parsed
        .structured_data
        .iter()
        .map(|element| {
            let params = element
                .params()
                .map(|(name, value)| (*name, value))
                .collect();
            (element.id, params)
        })
        .collect();
    Some(Syslog {
        protocol: match parsed.protocol {
            Protocol::RFC3164 => "rfc3164",
            Protocol::RFC5424(_) => "rfc5424",
        },
        facility: parsed.facility.map(|f| f.as_str()),
        severity: parsed.severity.map(|s| s.as_str()),
        timestamp: parsed.timestamp.map(|t| t.to_rfc3339()),
        host: parsed.hostname,
        app: parsed.appname,
        procid: parsed.procid.map(|p| p.to_string()),
        msgid: parsed.msgid,
        structured_data,
        message: parsed.msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_structured_data() {
        let text = r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application"] An application event log entry"#;
        let s = parse(text, SystemTime::now()).unwrap();
        assert_eq!(s.protocol, "rfc5424");
        assert_eq!((s.facility, s.severity), (Some("local4"), Some("notice")));
        assert_eq!(s.host, Some("mymachine.example.com"));
        assert_eq!((s.app, s.msgid), (Some("evntslog"), Some("ID47")));
        assert_eq!(
            s.timestamp.as_deref(),
            Some("2003-10-11T22:14:15.003+00:00")
        );
        assert_eq!(s.structured_data["exampleSDID@32473"]["iut"], "3");
        assert_eq!(s.message, "An application event log entry");
    }

    #[test]
    fn rfc3164_takes_its_year_from_when_it_came() {
        let text =
            "<34>Oct 11 22:14:15 mymachine su[42]: 'su root' failed for lonvick on /dev/pts/8\n";
        let received = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let s = parse(text, received).unwrap();
        assert_eq!(s.protocol, "rfc3164");
        assert_eq!((s.facility, s.severity), (Some("auth"), Some("crit")));
        assert_eq!((s.host, s.app), (Some("mymachine"), Some("su")));
        assert_eq!(s.procid.as_deref(), Some("42"));
        assert!(s.timestamp.unwrap().starts_with("2023-10-11T22:14:15"));
        assert_eq!(s.message, "'su root' failed for lonvick on /dev/pts/8");
    }

    #[test]
    fn free_text_is_not_syslog() {
        assert_eq!(parse("hello world", SystemTime::now()), None);
        assert_eq!(parse("", SystemTime::now()), None);
    }
}
