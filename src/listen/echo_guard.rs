//! What keeps a UDP echo from becoming a weapon. A UDP source address is
//! whatever the sender wrote, so one spoofed datagram can name the listener
//! itself, or another echo service, as its source: answering it starts a loop
//! that never ends on its own. The guard refuses the sources that make such
//! loops, and gives every peer address a budget of replies per second, so
//! any loop that gets past the first rule dies out as soon as its budget is
//! spent. The budget is per address, not per address and port: a spoofer
//! naming one victim with thousands of source ports still gets it one
//! budget of replies, not one per port.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Replies per second to any one address unless told otherwise (`--echo-rate`).
pub const DEFAULT_ECHO_RATE: u32 = 200;

/// Source ports that are never answered: 0 is no port, and 7, 9, 13, 17, 19
/// and 37 are the small services (echo, discard, daytime, qotd, chargen,
/// time) that answer every datagram; replying to them is the classic loop.
/// inetd refuses the same ones.
const LOOPING_PORTS: [u16; 7] = [0, 7, 9, 13, 17, 19, 37];

/// Peers tracked at once; each slot is taken by whoever hashes to it, so
/// memory stays bounded whatever addresses a flood claims to come from.
const SLOTS: usize = 4096;

/// Why a reply was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// The source is this listener's own port, or a service port that answers everything.
    LoopingSource,
    /// The peer has had its replies for this second.
    OverBudget,
}

impl Withheld {
    /// The reason, as said once on stderr.
    pub fn describe(self) -> &'static str {
        match self {
            Withheld::LoopingSource => {
                "echo not sent: the source port is this listener's own or an echo-like service's (a spoofed loop)"
            }
            Withheld::OverBudget => "echo not sent: over the peer's --echo-rate budget",
        }
    }
}

/// A budget of `rate` a second, with a burst of as many: a token bucket.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    /// A full budget.
    pub fn full(rate: f64, now: Instant) -> Budget {
        Budget {
            tokens: rate,
            refilled: now,
        }
    }

    /// Takes one from the budget if there is one left now.
    pub fn take(&mut self, rate: f64, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled = now;
    }

    fn is_full(&self, rate: f64) -> bool {
        self.tokens >= rate
    }
}

#[derive(Clone, Copy)]
struct Slot {
    peer: IpAddr,
    budget: Budget,
}

/// The guard of one UDP socket (used by its one receiving thread).
pub struct EchoGuard {
    own_port: u16,
    rate: f64,
    slots: Vec<Option<Slot>>,
}

impl EchoGuard {
    /// A guard for a socket bound to `own_port` that answers each peer at
    /// most `rate` times a second (with a burst of as many).
    pub fn new(own_port: u16, rate: u32) -> EchoGuard {
        EchoGuard {
            own_port,
            rate: f64::from(rate.max(1)),
            slots: vec![None; SLOTS],
        }
    }

    /// May `peer` be answered now? Takes one reply from its address's budget if so.
    pub fn check(&mut self, peer: SocketAddr, now: Instant) -> Result<(), Withheld> {
        if loops_back(peer, self.own_port) {
            return Err(Withheld::LoopingSource);
        }
        let peer = peer.ip().to_canonical();
        let rate = self.rate;
        let slot = self.slots[slot_of(peer)].get_or_insert(Slot {
            peer,
            budget: Budget::full(rate, now),
        });
        // A slot whose peer has been quiet for a full second is free to
        // take; otherwise a newcomer shares the budget in it.
        if slot.peer != peer {
            slot.budget.refill(rate, now);
            if slot.budget.is_full(rate) {
                slot.peer = peer;
            }
        }
        match slot.budget.take(rate, now) {
            true => Ok(()),
            false => Err(Withheld::OverBudget),
        }
    }
}

/// Whether answering `peer` could start a loop: it claims to be a socket on
/// `own_port` (the answering socket itself, or its twin on another address)
/// or a small service that answers everything. (Also the UDP relay's rule
/// for opening a session: its replies go to the same source.)
pub fn loops_back(peer: SocketAddr, own_port: u16) -> bool {
    peer.port() == own_port || LOOPING_PORTS.contains(&peer.port())
}

fn slot_of(peer: IpAddr) -> usize {
    use std::hash::{BuildHasher, RandomState};
    // Seeded per process, so nobody can aim many addresses at one slot.
    thread_local!(static SEED: RandomState = RandomState::new());
    SEED.with(|seed| seed.hash_one(peer) as usize % SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn its_own_port_and_echo_services_are_never_answered() {
        let mut guard = EchoGuard::new(8888, 100);
        let now = Instant::now();
        for source in ["127.0.0.1:8888", "10.0.0.2:8888", "127.0.0.1:7", "[::1]:19"] {
            assert_eq!(
                guard.check(addr(source), now),
                Err(Withheld::LoopingSource),
                "{source}"
            );
        }
        assert_eq!(guard.check(addr("127.0.0.1:40000"), now), Ok(()));
    }

    #[test]
    fn every_port_of_an_address_shares_its_budget() {
        let mut guard = EchoGuard::new(8888, 10);
        let now = Instant::now();
        let sent = (40000..44096)
            .filter(|port| {
                guard
                    .check(SocketAddr::new([10, 0, 0, 9].into(), *port), now)
                    .is_ok()
            })
            .count();
        assert_eq!(sent, 10, "one budget for 4096 source ports");
        assert_eq!(guard.check(addr("10.0.0.10:40000"), now), Ok(()));
    }

    #[test]
    fn a_peer_gets_its_budget_then_waits_for_it_to_refill() {
        let mut guard = EchoGuard::new(8888, 10);
        let peer = addr("127.0.0.1:40000");
        let start = Instant::now();
        let sent = (0..100)
            .filter(|_| guard.check(peer, start).is_ok())
            .count();
        assert_eq!(sent, 10);
        assert_eq!(guard.check(peer, start), Err(Withheld::OverBudget));
        // Another address has a budget of its own.
        assert_eq!(guard.check(addr("127.0.0.2:40000"), start), Ok(()));
        let later = start + Duration::from_millis(500);
        let sent = (0..100)
            .filter(|_| guard.check(peer, later).is_ok())
            .count();
        assert_eq!(sent, 5);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_sources() {
        let mut guard = EchoGuard::new(8888, 1);
        let now = Instant::now();
        for n in 0..100_000u32 {
            let _ = guard.check(SocketAddr::from((n.to_be_bytes(), 40000)), now);
        }
        assert_eq!(guard.slots.len(), SLOTS);
    }
}
