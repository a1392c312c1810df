//! UDP datagrams in batches. Receiving on a blocking socket: one `recvmmsg(2)`
//! call waits for a datagram, then takes up to [`BATCH`] of those queued
//! (Linux; elsewhere one at a time, behind the same interface). On a steady
//! trickle that is one call per datagram, where waiting for readiness first
//! (epoll, poll) and reading until the queue is empty takes three. Sending:
//! [`send_batch`], with `sendmmsg(2)`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;

#[cfg(target_os = "linux")]
use socket2::{SockAddr, SockAddrStorage};

/// Datagrams taken per call.
pub const BATCH: usize = 32;
/// Each slot fits the largest UDP datagram, so none is ever cut.
const SLOT: usize = 65_536;

/// Buffers for one batch: the payloads, their source addresses, and the
/// headers recvmmsg fills in. Allocated once per socket.
#[cfg(target_os = "linux")]
pub struct Batch {
    payloads: Vec<u8>,
    addresses: Vec<libc::sockaddr_storage>,
    lengths: Vec<usize>,
    count: usize,
}

#[cfg(target_os = "linux")]
impl Batch {
    pub fn new() -> Batch {
        Batch {
            payloads: vec![0; BATCH * SLOT],
            // SAFETY: all zeros is a valid sockaddr_storage.
            addresses: vec![unsafe { std::mem::zeroed() }; BATCH],
            lengths: vec![0; BATCH],
            count: 0,
        }
    }

    /// Waits for datagrams, then takes as many as are queued (up to
    /// [`BATCH`]). 0 once the socket is shut for reading and its queue is empty.
    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        // On the stack: no allocation per call. The pointers set below point
        // into `self`, which outlives the recvmmsg call.
        // SAFETY: all zeros is a valid iovec (null base, zero length).
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: all zeros is a valid mmsghdr (null pointers, zero lengths).
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let slots = self.payloads.chunks_mut(SLOT);
        for (((iovec, header), slot), address) in iovecs
            .iter_mut()
            .zip(headers.iter_mut())
            .zip(slots)
            .zip(self.addresses.iter_mut())
        {
            iovec.iov_base = slot.as_mut_ptr().cast();
            iovec.iov_len = slot.len();
            header.msg_hdr.msg_name = (address as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `headers` points at BATCH valid headers, each at its own
        // slot and address; the kernel writes within their lengths.
        let taken = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as _,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if taken < 0 {
            return Err(io::Error::last_os_error());
        }
        // A socket shut for reading answers with one entry of no source address.
        let taken = &headers[..taken as usize];
        self.count = taken
            .iter()
            .take_while(|h| h.msg_hdr.msg_namelen > 0)
            .count();
        for (length, header) in self.lengths.iter_mut().zip(taken).take(self.count) {
            *length = header.msg_len as usize;
        }
        Ok(self.count)
    }

    /// The bytes of the `i`th datagram of the last batch (empty past its end).
    pub fn payload(&self, i: usize) -> &[u8] {
        if i >= self.count {
            return &[];
        }
        &self.payloads[i * SLOT..i * SLOT + self.lengths[i]]
    }

    /// Where the `i`th datagram of the last batch came from.
    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        if i >= self.count {
            return None;
        }
        let mut storage = SockAddrStorage::zeroed();
        // SAFETY: the storage is a sockaddr_storage; the kernel filled it in.
        unsafe { *storage.view_as::<libc::sockaddr_storage>() = self.addresses[i] };
        let size = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the storage holds an address of `size` bytes at most.
        unsafe { SockAddr::new(storage, size) }.as_socket()
    }
}

/// Sends `payloads` on a connected socket, as many per call as the system
/// takes (up to [`BATCH`] with sendmmsg on Linux; one elsewhere): how many
/// went. An error means the first did not.
#[cfg(target_os = "linux")]
pub fn send_batch(socket: socket2::SockRef<'_>, payloads: &[&[u8]]) -> io::Result<usize> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg};
    use std::io::IoSlice;
    let payloads = &payloads[..payloads.len().min(BATCH)];
    let slices: Vec<[IoSlice; 1]> = payloads.iter().map(|p| [IoSlice::new(p)]).collect();
    let mut controls: Vec<SendAncillaryBuffer> = payloads
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut messages: Vec<MMsgHdr> = slices
        .iter()
        .zip(controls.iter_mut())
        .map(|(slice, control)| MMsgHdr::new(slice, control))
        .collect();
    Ok(sendmmsg(&*socket, &mut messages, SendFlags::DONTWAIT)?)
}

/// One datagram per call, where sendmmsg does not exist.
#[cfg(not(target_os = "linux"))]
pub fn send_batch(socket: socket2::SockRef<'_>, payloads: &[&[u8]]) -> io::Result<usize> {
    match payloads.first() {
        Some(payload) => socket.send(payload).map(|_| 1),
        None => Ok(0),
    }
}

/// The same on every system, from `payload` and `source`.
impl Batch {
    /// The `i`th datagram of the last batch and where it came from.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        Some((self.payload(i), self.source(i)?))
    }
}

/// One datagram per call, where recvmmsg does not exist.
#[cfg(not(target_os = "linux"))]
pub struct Batch {
    payload: Vec<u8>,
    last: Option<(usize, SocketAddr)>,
}

#[cfg(not(target_os = "linux"))]
impl Batch {
    pub fn new() -> Batch {
        Batch {
            payload: vec![0; SLOT],
            last: None,
        }
    }

    pub fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.last = Some(socket.recv_from(&mut self.payload)?);
        Ok(1)
    }

    pub fn payload(&self, i: usize) -> &[u8] {
        match self.last.filter(|_| i == 0) {
            Some((len, _)) => &self.payload[..len],
            None => &[],
        }
    }

    pub fn source(&self, i: usize) -> Option<SocketAddr> {
        self.last.filter(|_| i == 0).map(|(_, from)| from)
    }
}
