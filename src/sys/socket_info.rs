//! Facts about sockets and interfaces that socket2 and rustix do not give
//! safely: the kernel's count of datagrams dropped on a socket, the bytes its
//! peer has not acknowledged, an interface's index; and a receive that says
//! when a datagram was cut.

/// The index of the network interface `name` (`eth0`), which IPv6 multicast
/// needs; `None` when there is no such interface.
#[cfg(unix)]
pub fn interface_index(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call,
    // which only reads it.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => None,
        index => Some(index),
    }
}

/// Interface names are not looked up here.
#[cfg(not(unix))]
pub fn interface_index(_name: &str) -> Option<u32> {
    None
}

/// How many datagrams the kernel has dropped on this socket because its
/// receive buffer was full; `None` where the system does not say.
#[cfg(target_os = "linux")]
pub fn kernel_drops(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    // 55 in asm-generic/socket.h; the few architectures that number it otherwise are left out.
    if cfg!(any(
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )) {
        return None;
    }
    const SO_MEMINFO: libc::c_int = 55;
    const SK_MEMINFO_VARS: usize = 9;
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes, the
    // descriptor is borrowed for the call, and the kernel writes at most
    // `len` bytes and updates `len`.
    let status = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let drops = libc::SK_MEMINFO_DROPS as usize;
    (status == 0 && len as usize > drops * 4).then(|| u64::from(info[drops]))
}

#[cfg(not(target_os = "linux"))]
pub fn kernel_drops<S>(_socket: &S) -> Option<u64> {
    None
}

/// How many bytes written to this TCP socket its peer has not acknowledged
/// (`SIOCOUTQ`); after the connection broke, what never reached the peer.
#[cfg(target_os = "linux")]
pub fn unacknowledged(socket: &impl std::os::fd::AsRawFd) -> Option<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int through the pointer, which
    // is valid for that write; the descriptor is borrowed for the call.
    let status = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    (status == 0).then(|| usize::try_from(queued).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
pub fn unacknowledged<S>(_socket: &S) -> Option<usize> {
    None
}

/// Receives one datagram into `buf`: its length, whether it was longer than
/// `buf` (then the rest is lost), and its sender's address.
pub fn recv_from_whole(
    socket: &impl std::os::fd::AsFd,
    buf: &mut [u8],
) -> std::io::Result<(usize, bool, socket2::SockAddr)> {
    let socket = socket2::SockRef::from(socket);
    // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and socket2
    // guarantees it writes only initialized bytes into the buffer, so `buf`
    // stays initialized; the borrow ends before `buf` is used again.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    let mut bufs = [socket2::MaybeUninitSlice::new(uninit)];
    let (len, flags, from) = socket.recv_from_vectored(&mut bufs)?;
    Ok((len, flags.is_truncated(), from))
}
