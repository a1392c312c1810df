//! The only unsafe code in portier: the few system calls no maintained
//! crate offers safely, each behind a safe function with its `SAFETY:` reasons.
//! Everywhere else `unsafe_code` is denied (Cargo.toml, `[lints]`); splice,
//! pipes and poll come safe from rustix, socket options from socket2.
#![allow(unsafe_code)]

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod libm;
mod socket_info;
pub mod udp_batch;

pub use socket_info::{interface_index, kernel_drops, recv_from_whole, unacknowledged};
