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

use std::io::{Read, Write};
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

fn io(call: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { call, source }
}

/// Sends `payload` and duplicates of `fds` (the caller keeps its own) as one message.
///
/// # Errors
/// * [`Error::InvalidArgument`]: `payload` longer than [`MAX_PAYLOAD`], or more than
///   [`MAX_FDS`] fds.
/// * [`Error::Io`]: `sendmsg` or the write of the rest of the payload failed (the peer
///   closed, ...).
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
        return Err(Error::Io {
            call: "sendmsg",
            source: std::io::Error::last_os_error(),
        });
    }
    // A stream socket may take part of the message; the fds went with the first byte.
    let rest = &message[sent as usize..];
    let mut writer = stream;
    writer.write_all(rest).map_err(io("write"))?;
    Ok(())
}

/// Receives one message sent by [`send`]: its payload and at most `max_fds` fds, each
/// owned (close-on-exec) from the moment it arrives.
///
/// # Errors
/// * [`Error::InvalidArgument`]: `max_fds` above [`MAX_FDS`].
/// * [`Error::Io`]: `recvmsg` or a read failed, the peer closed before a whole message
///   arrived (`UnexpectedEof`), the length prefix exceeds [`MAX_PAYLOAD`] (`InvalidData`),
///   or the message carried more fds than `max_fds` (`InvalidData`; the control data was
///   truncated, `MSG_CTRUNC`). In the last case the rest of the message is read and
///   dropped, so the stream stays in step, and every fd that arrived is closed.
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
    reader
        .read_exact(&mut prefix[got as usize..])
        .map_err(io("read"))?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_PAYLOAD {
        return Err(Error::Io {
            call: "recvmsg",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("payload length {len} exceeds {MAX_PAYLOAD}: not a vkcuda::ipc message"),
            ),
        });
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).map_err(io("read"))?;
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
    use std::io::{Seek, SeekFrom};
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
