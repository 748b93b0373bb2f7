//! Passing exported handles to another process: owned fds plus a byte payload over a
//! Unix stream socket, with `SCM_RIGHTS`.
//!
//! An fd from [`crate::vulkan::ExternalImage::export`] or
//! [`crate::vulkan::Semaphore::export`] names the same memory or semaphore in
//! any process that receives it, so a producer can share frames with a consumer without
//! copying them: [`send`] the fds (borrowed: the sender keeps its own), [`recv`] them as
//! [`OwnedFd`]s on the other side, and import them there.
//!
//! # Wire format
//! One message is a 4-byte little-endian payload length, then the payload; the fds ride
//! on the first byte. The payload is at most [`MAX_PAYLOAD`] bytes and a message carries at
//! most [`MAX_FDS`] fds (Linux's `SCM_MAX_FD`).
//!
//! Received fds are close-on-exec (`MSG_CMSG_CLOEXEC`) and owned from the moment they
//! arrive: on any error every fd that arrived has been closed.
//!
//! # Framing errors
//! A stream socket has no message boundaries of its own, so an error part-way through a
//! message (a read or write timeout, a length prefix above [`MAX_PAYLOAD`], the peer
//! closing) leaves the two sides out of step: the next read would take payload bytes for a
//! length. vkcuda then **shuts the socket down** (both directions, for both peers) and
//! returns [`Error::ConnectionBroken`]; every later call on it fails. A timeout *before*
//! any byte of a message moved is an ordinary [`Error::Io`] (`WouldBlock`/`TimedOut`) and
//! the connection stays usable. Writes never raise `SIGPIPE` (`MSG_NOSIGNAL`).
//!
//! # Trust
//! Anything that can connect to the socket can send any payload and any fds. The receiver
//! must treat both as untrusted input: check what an fd is (vkcuda's imports refuse pipes,
//! sockets and other non-memory fds) and check every size and count in the payload before
//! using it. The unsafe imports (`ExternalMemory::import`, `ExternalImage::import`) trust
//! the sizes and descriptions they are given: before passing them a peer's word, check who
//! the peer is with [`peer_credentials`] (e.g. that it is the process you spawned).
//!
//! ```no_run
//! # fn main() -> vkcuda::Result<()> {
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//!
//! let (a, b) = UnixStream::pair().map_err(|e| vkcuda::Error::Io { call: "socketpair", source: e })?;
//! let file = std::fs::File::open("/dev/null").map_err(|e| vkcuda::Error::Io { call: "open", source: e })?;
//! vkcuda::ipc::send(&a, b"hello", &[file.as_fd()])?;
//! let (payload, fds) = vkcuda::ipc::recv(&b, 1)?;
//! assert_eq!((payload.as_slice(), fds.len()), (&b"hello"[..], 1));
//! # Ok(()) }
//! ```

use std::io::Read;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::{Error, Result};

/// Most fds one message carries (Linux `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// Largest payload one message carries, in bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;

const FD_BYTES: usize = size_of::<RawFd>();

/// Bytes of control buffer for `count` fds (`CMSG_SPACE`); `count` is at most [`MAX_FDS`].
fn control_space(count: usize) -> usize {
    // `count <= MAX_FDS`, so the product fits a u32.
    let data = (count * FD_BYTES) as u32;
    // SAFETY: CMSG_SPACE is arithmetic on its argument only.
    let space = unsafe { libc::CMSG_SPACE(data) };
    space as usize
}

/// A control buffer aligned for `cmsghdr`, at least `bytes` long.
fn control_buffer(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes.div_ceil(size_of::<u64>())]
}

/// Sends `payload` and duplicates of `fds` (the caller keeps its own) as one message.
///
/// # Errors
/// * [`Error::InvalidArgument`]: `payload` longer than [`MAX_PAYLOAD`], or more than
///   [`MAX_FDS`] fds.
/// * [`Error::Io`]: `sendmsg` failed before any byte was sent (the peer closed, a write
///   timeout, ...); the connection is still in step.
/// * [`Error::ConnectionBroken`]: the write of the rest of the message failed; the socket
///   was shut down (see the module docs).
pub fn send(stream: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Error::invalid(
            "payload",
            format!("{} bytes", payload.len()),
            format!("at most {MAX_PAYLOAD} bytes"),
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(Error::invalid(
            "fds",
            format!("{} fds", fds.len()),
            format!("at most {MAX_FDS} (SCM_MAX_FD)"),
        ));
    }
    // `payload.len() <= MAX_PAYLOAD`, which fits a u32.
    let mut message = (payload.len() as u32).to_le_bytes().to_vec();
    message.extend_from_slice(payload);
    let mut iov = libc::iovec {
        iov_base: message.as_mut_ptr().cast(),
        iov_len: message.len(),
    };
    let space = if fds.is_empty() {
        0
    } else {
        control_space(fds.len())
    };
    let mut control = control_buffer(space);
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at a control buffer of `space` bytes, enough for one header.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        // `fds.len() <= MAX_FDS`, so the byte count fits a u32.
        let data_len = (fds.len() * FD_BYTES) as u32;
        // SAFETY: CMSG_LEN is arithmetic on its argument only.
        let cmsg_len = unsafe { libc::CMSG_LEN(data_len) };
        let header = libc::cmsghdr {
            cmsg_len: cmsg_len as _,
            cmsg_level: libc::SOL_SOCKET,
            cmsg_type: libc::SCM_RIGHTS,
        };
        // SAFETY: `cmsg` is the first header of the aligned control buffer (non-null: the
        // buffer holds CMSG_SPACE bytes), valid for a `cmsghdr` write.
        unsafe { cmsg.write(header) };
        // SAFETY: `cmsg` is a valid header inside the buffer.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let raws: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        // SAFETY: the buffer holds CMSG_SPACE(data_len) bytes, so `data_len` bytes after
        // the header lie inside it; `raws` holds exactly `data_len` bytes; byte copies
        // need no alignment and the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(raws.as_ptr().cast::<u8>(), data, data_len as usize)
        };
    }
    let flags = libc::MSG_NOSIGNAL;
    // SAFETY: `msg` points at `message` and `control`, both alive for the call; the fds are
    // borrowed for the call and the kernel duplicates them.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, flags) };
    if sent < 0 {
        // Nothing was sent: the stream is still in step.
        return Err(Error::Io {
            call: "sendmsg",
            source: std::io::Error::last_os_error(),
        });
    }
    // A stream socket may take part of the message; the fds went with the first byte.
    let mut rest = &message[sent as usize..];
    while !rest.is_empty() {
        // SAFETY: `rest` is a live byte slice; MSG_NOSIGNAL: a closed peer gives EPIPE, not
        // SIGPIPE.
        let n = unsafe { libc::send(stream.as_raw_fd(), rest.as_ptr().cast(), rest.len(), flags) };
        if n < 0 {
            let source = std::io::Error::last_os_error();
            if source.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(broken(
                stream,
                "send",
                format!("writing the rest of a message: {source}"),
            ));
        }
        rest = &rest[n as usize..];
    }
    Ok(())
}

/// Shuts `stream` down (both directions) after it lost its message framing, and returns
/// the error that says so.
fn broken(stream: &UnixStream, call: &'static str, reason: String) -> Error {
    // An error here means the socket is already unusable, which is the goal.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Error::ConnectionBroken { call, reason }
}

/// Who is at the other end of a Unix socket, as the kernel recorded it when the connection
/// was made (`SO_PEERCRED`): it cannot be forged by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id of the peer (at connect time).
    pub pid: u32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// The credentials of `stream`'s peer (`getsockopt(SO_PEERCRED)`).
///
/// # Errors
/// [`Error::Io`] (`getsockopt(SO_PEERCRED)`) when the call fails.
#[cfg(target_os = "linux")]
pub fn peer_credentials(stream: &UnixStream) -> Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` its size, as SO_PEERCRED expects.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(Error::Io {
            call: "getsockopt(SO_PEERCRED)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(PeerCredentials {
        pid: cred.pid.unsigned_abs(),
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Receives one message sent by [`send`]: its payload and at most `max_fds` fds, each
/// owned (close-on-exec) from the moment it arrives.
///
/// # Errors
/// * [`Error::InvalidArgument`]: `max_fds` above [`MAX_FDS`].
/// * [`Error::Io`]: `recvmsg` failed before any byte of a message arrived (a read timeout
///   gives `WouldBlock`/`TimedOut`; the connection stays usable), the peer closed between
///   messages (`UnexpectedEof`), or the message carried more fds than `max_fds`
///   (`InvalidData`; the control data was truncated, `MSG_CTRUNC`): the rest of that
///   message is read and dropped, so the stream stays in step, and every fd that arrived
///   is closed.
/// * [`Error::ConnectionBroken`]: a read failed or timed out part-way through a message,
///   or its length prefix exceeds [`MAX_PAYLOAD`] (not a vkcuda message): the socket was
///   shut down, as the module docs say, and every fd that arrived is closed.
pub fn recv(stream: &UnixStream, max_fds: usize) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    if max_fds > MAX_FDS {
        return Err(Error::invalid(
            "max_fds",
            format!("{max_fds}"),
            format!("at most {MAX_FDS} (SCM_MAX_FD)"),
        ));
    }
    let mut prefix = [0u8; 4];
    let mut iov = libc::iovec {
        iov_base: prefix.as_mut_ptr().cast(),
        iov_len: prefix.len(),
    };
    // One fd more than allowed, so that a sender exceeding `max_fds` is seen even where
    // CMSG_SPACE rounding would leave room for it.
    let space = control_space(max_fds + 1);
    let mut control = control_buffer(space);
    // SAFETY: msghdr is a plain C struct for which all-zero is a valid (empty) value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `prefix` and `control`, both alive and writable for the call.
    let got = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(Error::Io {
            call: "recvmsg",
            source: std::io::Error::last_os_error(),
        });
    }
    let fds = take_fds(&msg);
    let truncated = msg.msg_flags & libc::MSG_CTRUNC != 0;
    if got == 0 {
        return Err(Error::Io {
            call: "recvmsg",
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    let mut reader = stream;
    let mid_message =
        |e: std::io::Error| broken(stream, "read", format!("part-way through a message: {e}"));
    reader
        .read_exact(&mut prefix[got as usize..])
        .map_err(mid_message)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_PAYLOAD {
        return Err(broken(
            stream,
            "recvmsg",
            format!("payload length {len} exceeds {MAX_PAYLOAD}: not a vkcuda::ipc message"),
        ));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(mid_message)?;
    if truncated || fds.len() > max_fds {
        let arrived = fds.len();
        drop(fds);
        return Err(Error::Io {
            call: "recvmsg",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the message carried more than max_fds = {max_fds} fds (control data \
                     truncated: {truncated}; {arrived} arrived and were closed)"
                ),
            ),
        });
    }
    Ok((payload, fds))
}

/// Wraps every fd of the `SCM_RIGHTS` headers of `msg` in an [`OwnedFd`].
fn take_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg; its control pointer and length describe the
    // received control data.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies inside the control
        // data the kernel wrote.
        let header = unsafe { cmsg.read_unaligned() };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is arithmetic on its argument only.
            let empty = unsafe { libc::CMSG_LEN(0) } as usize;
            let count = (header.cmsg_len as usize).saturating_sub(empty) / FD_BYTES;
            // SAFETY: `cmsg` is a valid header inside the control data.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let mut raws: Vec<RawFd> = vec![0; count];
            // SAFETY: the header's length covers `count` ints of data after it, inside the
            // control buffer; `raws` has room for them; byte copies need no alignment.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    data,
                    raws.as_mut_ptr().cast::<u8>(),
                    count * FD_BYTES,
                )
            };
            for raw in raws {
                // SAFETY: SCM_RIGHTS installed `raw` in this process as a new fd that
                // nothing else owns.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `msg` and `cmsg` are as above; CMSG_NXTHDR returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::fd::AsFd;

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("socketpair")
    }

    fn temp_file(content: &[u8]) -> File {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vkcuda-ipc-{}-{n}", std::process::id()));
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("temp file");
        std::fs::remove_file(&path).expect("unlink");
        f.write_all(content).expect("write");
        f
    }

    #[test]
    fn fds_and_payload_cross() {
        let (a, b) = pair();
        let one = temp_file(b"first file");
        let two = temp_file(b"the second file");
        send(&a, b"header 1 2", &[one.as_fd(), two.as_fd()]).expect("send");
        let (payload, fds) = recv(&b, 4).expect("recv");
        assert_eq!(payload, b"header 1 2");
        assert_eq!(fds.len(), 2);
        for (fd, want) in fds
            .into_iter()
            .zip([&b"first file"[..], b"the second file"])
        {
            assert_ne!(fd.as_raw_fd(), one.as_raw_fd());
            let mut f = File::from(fd);
            f.seek(SeekFrom::Start(0)).expect("seek");
            let mut got = Vec::new();
            f.read_to_end(&mut got).expect("read");
            assert_eq!(got, want);
        }
    }

    #[test]
    fn messages_stay_in_step() {
        let (a, b) = pair();
        let f = temp_file(b"x");
        send(&a, b"", &[]).expect("send empty");
        send(&a, &[7; 100_000], &[f.as_fd()]).expect("send big");
        send(&a, b"last", &[]).expect("send last");
        let reader = std::thread::spawn(move || {
            let first = recv(&b, 0).expect("recv empty");
            let second = recv(&b, 1).expect("recv big");
            let third = recv(&b, 1).expect("recv last");
            (first, second, third)
        });
        let (first, second, third) = reader.join().expect("reader");
        assert_eq!((first.0.len(), first.1.len()), (0, 0));
        assert_eq!((second.0, second.1.len()), (vec![7; 100_000], 1));
        assert_eq!((third.0.as_slice(), third.1.len()), (&b"last"[..], 0));
    }

    #[test]
    fn too_many_fds_are_refused_and_closed() {
        let (a, b) = pair();
        let f = temp_file(b"y");
        send(&a, b"three", &[f.as_fd(), f.as_fd(), f.as_fd()]).expect("send");
        send(&a, b"next", &[]).expect("send next");
        match recv(&b, 1) {
            Err(Error::Io { call, source }) => {
                assert_eq!(call, "recvmsg");
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidData, "{source}");
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
        let (payload, fds) = recv(&b, 1).expect("the stream stays in step");
        assert_eq!((payload.as_slice(), fds.len()), (&b"next"[..], 0));
    }

    #[test]
    fn limits_are_invalid_arguments() {
        let (a, b) = pair();
        let (arg, _, _) = crate::error::invalid_arg(recv(&b, MAX_FDS + 1));
        assert_eq!(arg, "max_fds");
        let (arg, _, _) = crate::error::invalid_arg(send(&a, &vec![0; MAX_PAYLOAD + 1], &[]));
        assert_eq!(arg, "payload");
        let f = temp_file(b"z");
        let many = vec![f.as_fd(); MAX_FDS + 1];
        let (arg, _, _) = crate::error::invalid_arg(send(&a, b"", &many));
        assert_eq!(arg, "fds");
    }

    /// Issue 10 row 13: a length prefix above the cap is not followed by a bogus empty
    /// message: the connection is broken, typed, and stays so.
    #[test]
    fn an_oversized_prefix_breaks_the_connection() {
        let (a, b) = pair();
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        (&a).write_all(&[1, 2, 3]).unwrap();
        send(&a, b"next", &[]).unwrap();
        match recv(&b, 1) {
            Err(Error::ConnectionBroken { reason, .. }) => {
                assert!(reason.contains("exceeds"), "{reason}")
            }
            other => panic!("expected ConnectionBroken, got {other:?}"),
        }
        let again = recv(&b, 1);
        assert!(again.is_err(), "a recv after the desync returned {again:?}");
        assert!(send(&a, b"x", &[]).is_err(), "the peer sees the shutdown");
    }

    /// Issue 10 row 13: a read timeout part-way through a message breaks the connection
    /// instead of leaving it mid-message; a timeout between messages does not.
    #[test]
    fn a_timeout_mid_message_breaks_the_connection() {
        let (a, b) = pair();
        b.set_read_timeout(Some(std::time::Duration::from_millis(30)))
            .unwrap();
        match recv(&b, 0) {
            Err(Error::Io { source, .. }) => assert!(
                matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{source}"
            ),
            other => panic!("expected a timeout, got {other:?}"),
        }
        send(&a, b"between", &[]).unwrap();
        assert_eq!(recv(&b, 0).unwrap().0, b"between", "still in step");
        (&a).write_all(&10u32.to_le_bytes()).unwrap();
        (&a).write_all(b"abc").unwrap();
        match recv(&b, 0) {
            Err(Error::ConnectionBroken { call, .. }) => assert_eq!(call, "read"),
            other => panic!("expected ConnectionBroken, got {other:?}"),
        }
        let _ = (&a).write_all(b"defghij");
        let _ = send(&a, b"after", &[]);
        let again = recv(&b, 0);
        assert!(again.is_err(), "read payload bytes as a message: {again:?}");
    }

    /// Issue 10 row 13: the tail of a message that did not fit the first `sendmsg` is
    /// written with MSG_NOSIGNAL: a peer that closes mid-message gives an error, not a
    /// SIGPIPE that kills the process (SIGPIPE is set to its default for this test).
    #[test]
    fn a_peer_closing_mid_message_is_an_error_not_sigpipe() {
        let (a, b) = pair();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(b);
        });
        // SAFETY: restores the default action; no handler function is installed.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let r = send(&a, &vec![0u8; MAX_PAYLOAD], &[]);
        // SAFETY: puts back the action that was there.
        unsafe { libc::signal(libc::SIGPIPE, old) };
        closer.join().unwrap();
        assert!(
            matches!(
                r,
                Err(Error::ConnectionBroken { .. }) | Err(Error::Io { .. })
            ),
            "{r:?}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peer_credentials_name_this_process_for_a_pair() {
        let (a, _b) = pair();
        let c = peer_credentials(&a).unwrap();
        assert_eq!(c.pid, std::process::id());
        // SAFETY: geteuid has no preconditions.
        assert_eq!(c.uid, unsafe { libc::geteuid() });
    }

    #[test]
    fn closed_peer_is_eof() {
        let (a, b) = pair();
        drop(a);
        match recv(&b, 1) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof)
            }
            other => panic!("expected EOF, got {other:?}"),
        }
    }
}
