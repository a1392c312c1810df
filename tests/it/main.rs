//! The integration tests: one binary, one module per area, each driving the
//! real `portier` binary (or the library in-process) over real sockets, with
//! real peers (nc, ncat, socat, openssl, the seed's Python programs).

mod common;

mod brokers;
mod check;
mod delivery;
mod errors;
mod exec;
mod handed_in;
mod hostile;
mod interop;
mod listen;
mod nc;
mod netns;
mod proxy;
mod reconnect;
mod relay;
mod send_connect;
mod server;
mod syslog;
mod tls;
mod tooling;
mod udp;
mod unix_listen;
mod web;
