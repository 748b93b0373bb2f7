//! Memory handles in and out of Vulkan: the fd taken out of an import's handle and checked
//! before the driver sees it ([`check_memory_fd`]), the fd an export makes
//! ([`export_handle`]), and the errors for both. What the fds are bound to is
//! [`super::memory`]'s.

#[cfg(unix)]
use std::os::fd::{FromRawFd, OwnedFd};

use ash::vk;

use super::capabilities::memory_handle_flags;
use super::Context;
use crate::error::{Error, Result};
use crate::external::{MemoryHandle, MemoryHandleType};

/// The error for a handle type vkcuda's Vulkan side cannot export or import here.
pub(crate) fn unsupported_type(t: MemoryHandleType) -> Error {
    Error::Unsupported {
        what: format!("{t} memory from Vulkan"),
        reason: if cfg!(unix) {
            "vkcuda exports and imports POSIX fds (OpaqueFd, DmaBufFd) on this platform".into()
        } else {
            "vkcuda's Vulkan side exports POSIX fds only; Win32 export is not implemented".into()
        },
    }
}

/// The error for a driver's refusal of an imported handle: `InvalidExternalHandle` when the
/// driver says so, else the plain Vulkan error.
pub(super) fn invalid_handle(call: &'static str, t: MemoryHandleType, r: vk::Result) -> Error {
    if r == vk::Result::ERROR_INVALID_EXTERNAL_HANDLE {
        Error::InvalidExternalHandle {
            call,
            handle_type: t.into(),
            detail: format!("{r}"),
        }
    } else {
        Error::vk(call, r)
    }
}

/// An fd being imported (uninhabited where vkcuda imports no fds).
#[cfg(unix)]
pub(crate) type ImportFd = OwnedFd;

/// Non-memory anonymous inodes, as `/proc/self/fd` names them.
#[cfg(unix)]
const NOT_MEMORY: [&str; 8] = [
    "[eventfd]",
    "[eventpoll]",
    "[signalfd]",
    "[timerfd]",
    "inotify",
    "[pidfd]",
    "[io_uring]",
    "[userfaultfd]",
];

/// Refuses, before the driver sees it, an fd that cannot be a memory object: lavapipe
/// `read()`s from a pipe or socket passed as memory and blocks for ever, and NVIDIA reports
/// such fds as out of memory. Refused: a closed fd, pipes, sockets, directories, block
/// devices, symlinks, regular files that are not shared memory (memfd, tmpfs), character
/// devices other than GPU ones (`/dev/nvidia*`, `/dev/dri/*`), and non-memory anonymous
/// inodes (eventfd, epoll, timerfd, ...). What passes may still be refused by the driver.
///
/// # Errors
/// [`Error::InvalidExternalHandle`] naming what the fd is. A closed fd is forgotten, not
/// closed (its number may belong to someone else by now); any other refused fd is closed.
#[cfg(unix)]
pub(super) fn check_memory_fd(fd: OwnedFd, handle_type: MemoryHandleType) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    let refuse = |detail: String| Error::InvalidExternalHandle {
        call: "vkcuda fd check (fstat)",
        handle_type: handle_type.into(),
        detail,
    };
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; fstat only inspects the fd.
    if unsafe { libc::fstat(raw, &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EBADF) {
            // Not open: closing the number could close an fd someone else opened since.
            std::mem::forget(fd);
            return Err(refuse(format!("fd {raw} is not open (EBADF)")));
        }
        return Err(refuse(format!("fstat of fd {raw} failed: {e}")));
    }
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = st.st_mode & libc::S_IFMT;
    let what = match kind {
        libc::S_IFIFO => Some("a pipe"),
        libc::S_IFSOCK => Some("a socket"),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFLNK => Some("a symbolic link"),
        libc::S_IFCHR => {
            let gpu = target.starts_with("/dev/nvidia") || target.starts_with("/dev/dri/");
            (!gpu).then_some("a character device that is not a GPU (/dev/nvidia*, /dev/dri/*)")
        }
        libc::S_IFREG => {
            // SAFETY: F_GET_SEALS only reads the fd's seals; it fails on non-shmem files.
            let shmem = unsafe { libc::fcntl(raw, libc::F_GET_SEALS) } >= 0;
            (!shmem).then_some("a regular file (not shared memory)")
        }
        _ => NOT_MEMORY
            .iter()
            .any(|n| target.contains(n))
            .then_some("an anonymous inode that is not memory"),
    };
    match what {
        Some(what) => Err(refuse(format!(
            "fd {raw} is {what} ({target}), not a memory object"
        ))),
        None => Ok(fd),
    }
}

#[cfg(not(unix))]
pub(super) fn check_memory_fd(fd: ImportFd, _: MemoryHandleType) -> Result<ImportFd> {
    match fd {}
}

/// Takes the fd out of an fd handle; other handle types are [`unsupported_type`].
#[cfg(unix)]
pub(crate) fn import_fd(handle: MemoryHandle) -> Result<OwnedFd> {
    match handle {
        MemoryHandle::OpaqueFd(fd) | MemoryHandle::DmaBufFd(fd) => Ok(fd),
        other => Err(unsupported_type(other.handle_type())),
    }
}

#[cfg(unix)]
pub(super) fn fd_raw(fd: &ImportFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

/// An fd being imported (uninhabited where vkcuda imports no fds).
#[cfg(not(unix))]
pub(crate) type ImportFd = std::convert::Infallible;

/// Takes the fd out of an fd handle; other handle types are [`unsupported_type`].
#[cfg(not(unix))]
pub(crate) fn import_fd(handle: MemoryHandle) -> Result<ImportFd> {
    Err(unsupported_type(handle.handle_type()))
}

#[cfg(not(unix))]
pub(super) fn fd_raw(fd: &ImportFd) -> i32 {
    match *fd {}
}

#[cfg(not(unix))]
pub(crate) fn lend_fd<T>(fd: ImportFd, _import: impl FnOnce(i32) -> Result<T>) -> Result<T> {
    match fd {}
}

/// `vkGetMemoryFdKHR`, wrapped into an owned handle at once.
#[cfg(unix)]
pub(crate) fn export_handle(
    ctx: &Context,
    memory: vk::DeviceMemory,
    t: MemoryHandleType,
) -> Result<MemoryHandle> {
    let flags = memory_handle_flags(t).ok_or_else(|| unsupported_type(t))?;
    let info = vk::MemoryGetFdInfoKHR::default()
        .memory(memory)
        .handle_type(flags);
    // SAFETY: `memory` is alive and was allocated exportable with this handle type.
    let raw = unsafe { ctx.memory_fd().get_memory_fd(&info) }
        .map_err(|r| Error::vk("vkGetMemoryFdKHR", r))?;
    // SAFETY: vkGetMemoryFdKHR returns a new fd that the caller owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    match t {
        MemoryHandleType::DmaBufFd => Ok(MemoryHandle::DmaBufFd(fd)),
        _ => Ok(MemoryHandle::OpaqueFd(fd)),
    }
}

/// `vkGetMemoryFdKHR`, wrapped into an owned handle at once.
#[cfg(not(unix))]
pub(crate) fn export_handle(
    _ctx: &Context,
    _memory: vk::DeviceMemory,
    t: MemoryHandleType,
) -> Result<MemoryHandle> {
    Err(unsupported_type(t))
}
