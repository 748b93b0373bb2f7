//! The neutral vocabulary both sides speak: handle types, owned handles and import
//! descriptions for external memory and semaphores, and device identities.
//!
//! Nothing here knows Vulkan or CUDA. [`crate::vulkan`] produces these values when it
//! exports, [`crate::cuda`] consumes them when it imports, and any other exporter (D3D12,
//! another process, a wgpu build with export support) can build them by hand.
//!
//! # Ownership
//! * A POSIX fd is an [`OwnedFd`]. It moves into CUDA when an import **succeeds**; when the
//!   import fails the fd is closed by vkcuda, so it never leaks and can never be closed twice.
//!   Because the import takes the handle by value, reusing an fd after handing it over is a
//!   compile error. Export again to import the same memory a second time.
//! * Win32 handles ([`Win32Handle`]) are only borrowed: CUDA never takes them, and the
//!   caller (or the exporter's owned handle) closes them after the import.
//!
//! # Platforms
//! Every handle type that `cuImportExternalMemory` and `cuImportExternalSemaphore` accept
//! is modelled and compiles on every platform, so code written against them type-checks
//! here. Only the POSIX fd types are exercised by vkcuda's tests (on Linux). The Win32,
//! D3D11/D3D12 and NvSci types are **untested**: they are passed to the driver as the CUDA
//! documentation describes, and each variant says so.

use std::ffi::c_void;
use std::fmt;
#[cfg(unix)]
use std::os::fd::OwnedFd;

/// A 16-byte device UUID, printed the way `nvidia-smi -L` prints it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// Which physical GPU a resource lives on, as both APIs can name it.
///
/// CUDA picks its device by comparing [`DeviceIdentity::uuid`]; the LUID and node mask are
/// what Windows uses to name the same adapter (untested here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Human-readable device name (Vulkan `deviceName`).
    pub name: String,
    /// `VkPhysicalDeviceIDProperties::deviceUUID`, equal to `cuDeviceGetUuid` on the same GPU.
    pub uuid: Uuid,
    /// `deviceLUID` when the driver reports one as valid (Windows).
    pub luid: Option<[u8; 8]>,
    /// `deviceNodeMask` (meaningful only with a LUID).
    pub node_mask: u32,
}

/// A Win32 `HANDLE`, borrowed for the duration of an import.
///
/// CUDA does not take ownership of Win32 handles: whoever created the handle closes it,
/// after the import call returns. Untested: vkcuda's tests run on Linux.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Win32Handle(pub *mut c_void);

// SAFETY: a HANDLE is an opaque kernel object name, valid in any thread of the process.
unsafe impl Send for Win32Handle {}
// SAFETY: as above; a borrowed handle value is never dereferenced by vkcuda.
unsafe impl Sync for Win32Handle {}

/// A pointer to an NvSci object (`NvSciBufObj` / `NvSciSyncObj`), borrowed for an import.
/// Untested: NvSci exists on Tegra/DRIVE platforms only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvSciObject(pub *mut c_void);

// SAFETY: NvSci objects are process-wide handles; vkcuda never dereferences the pointer.
unsafe impl Send for NvSciObject {}
// SAFETY: as above.
unsafe impl Sync for NvSciObject {}

/// Every handle type `cuImportExternalMemory` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryHandleType {
    /// POSIX fd from `vkGetMemoryFdKHR` (`VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT`).
    /// Tested on Linux.
    OpaqueFd,
    /// NT handle from `vkGetMemoryWin32HandleKHR`. Untested (Windows only).
    OpaqueWin32,
    /// Global share (KMT) handle. Untested (Windows only).
    OpaqueWin32Kmt,
    /// Shared NT handle of an `ID3D12Heap`. Untested (Windows only).
    D3D12Heap,
    /// Shared NT handle of a committed `ID3D12Resource`; always dedicated. Untested.
    D3D12Resource,
    /// Shared NT handle of an `ID3D11Resource`; always dedicated. Untested.
    D3D11Resource,
    /// Global share handle of an `ID3D11Resource`; always dedicated. Untested.
    D3D11ResourceKmt,
    /// `NvSciBufObj`. Untested (Tegra/DRIVE only).
    NvSciBuf,
    /// Linux dma-buf fd (`VK_EXT_external_memory_dma_buf`); CUDA accepts it from 13.0 on,
    /// for buffers only. Untested on NVIDIA here: the opaque fd is the tested path.
    DmaBufFd,
}

impl MemoryHandleType {
    /// Every variant, for capability reports.
    pub const ALL: [Self; 9] = [
        Self::OpaqueFd,
        Self::OpaqueWin32,
        Self::OpaqueWin32Kmt,
        Self::D3D12Heap,
        Self::D3D12Resource,
        Self::D3D11Resource,
        Self::D3D11ResourceKmt,
        Self::NvSciBuf,
        Self::DmaBufFd,
    ];

    /// Whether the handle is a POSIX fd (moved into CUDA on import).
    pub fn is_fd(self) -> bool {
        matches!(self, Self::OpaqueFd | Self::DmaBufFd)
    }

    /// Whether CUDA requires the dedicated flag for this type whatever the exporter did.
    pub fn always_dedicated(self) -> bool {
        matches!(
            self,
            Self::D3D12Resource | Self::D3D11Resource | Self::D3D11ResourceKmt
        )
    }
}

impl fmt::Display for MemoryHandleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An external memory handle, owned where the platform transfers ownership.
#[derive(Debug)]
#[non_exhaustive]
pub enum MemoryHandle {
    /// See [`MemoryHandleType::OpaqueFd`].
    #[cfg(unix)]
    OpaqueFd(OwnedFd),
    /// See [`MemoryHandleType::DmaBufFd`].
    #[cfg(unix)]
    DmaBufFd(OwnedFd),
    /// See [`MemoryHandleType::OpaqueWin32`].
    OpaqueWin32(Win32Handle),
    /// See [`MemoryHandleType::OpaqueWin32Kmt`].
    OpaqueWin32Kmt(Win32Handle),
    /// See [`MemoryHandleType::D3D12Heap`].
    D3D12Heap(Win32Handle),
    /// See [`MemoryHandleType::D3D12Resource`].
    D3D12Resource(Win32Handle),
    /// See [`MemoryHandleType::D3D11Resource`].
    D3D11Resource(Win32Handle),
    /// See [`MemoryHandleType::D3D11ResourceKmt`].
    D3D11ResourceKmt(Win32Handle),
    /// See [`MemoryHandleType::NvSciBuf`].
    NvSciBuf(NvSciObject),
}

impl MemoryHandle {
    /// The type of this handle.
    pub fn handle_type(&self) -> MemoryHandleType {
        match self {
            #[cfg(unix)]
            Self::OpaqueFd(_) => MemoryHandleType::OpaqueFd,
            #[cfg(unix)]
            Self::DmaBufFd(_) => MemoryHandleType::DmaBufFd,
            Self::OpaqueWin32(_) => MemoryHandleType::OpaqueWin32,
            Self::OpaqueWin32Kmt(_) => MemoryHandleType::OpaqueWin32Kmt,
            Self::D3D12Heap(_) => MemoryHandleType::D3D12Heap,
            Self::D3D12Resource(_) => MemoryHandleType::D3D12Resource,
            Self::D3D11Resource(_) => MemoryHandleType::D3D11Resource,
            Self::D3D11ResourceKmt(_) => MemoryHandleType::D3D11ResourceKmt,
            Self::NvSciBuf(_) => MemoryHandleType::NvSciBuf,
        }
    }
}

/// What an importer (CUDA, or Vulkan again) needs to take a block of external memory.
///
/// Built by [`crate::vulkan`] from the allocation itself (size from
/// `VkMemoryRequirements`, dedicated flag from how it was allocated, memory type from the
/// allocation), by [`crate::cuda::VmmAllocation::export`], or by hand for another exporter.
#[derive(Debug)]
pub struct MemoryImport {
    /// The handle; moved into CUDA on success where it is an fd.
    pub handle: MemoryHandle,
    /// Size of the whole allocation in bytes (the allocation size, not the resource size).
    pub size: u64,
    /// Whether the memory is a dedicated allocation of one buffer or image
    /// (`CUDA_EXTERNAL_MEMORY_DEDICATED`). Must match how the exporter allocated it.
    pub dedicated: bool,
    /// The Vulkan memory type index the memory was allocated from, where a Vulkan driver
    /// made it (every vkcuda Vulkan export says). A Vulkan import of such an opaque fd must
    /// use that type (VUID-VkMemoryAllocateInfo-allocationSize-01742), and is refused when
    /// the importing buffer or image cannot live in it. `None` for memory another API made
    /// (CUDA's VMM memory): Vulkan then imports into the first device-local type the
    /// resource allows. CUDA ignores it.
    pub memory_type: Option<u32>,
}

/// Every handle type `cuImportExternalSemaphore` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SemaphoreHandleType {
    /// Binary Vulkan semaphore as a POSIX fd. Tested on Linux (GPU only: lavapipe cannot
    /// export semaphores).
    OpaqueFd,
    /// Binary semaphore as an NT handle. Untested (Windows only).
    OpaqueWin32,
    /// Binary semaphore as a KMT handle. Untested (Windows only).
    OpaqueWin32Kmt,
    /// `ID3D12Fence` shared handle. Untested (Windows only).
    D3D12Fence,
    /// `ID3D11Fence` shared handle. Untested (Windows only).
    D3D11Fence,
    /// `NvSciSyncObj`. Untested (Tegra/DRIVE only).
    NvSciSync,
    /// `IDXGIKeyedMutex` NT handle. Untested (Windows only).
    D3D11KeyedMutex,
    /// `IDXGIKeyedMutex` KMT handle. Untested (Windows only).
    D3D11KeyedMutexKmt,
    /// Vulkan timeline semaphore as a POSIX fd. Tested on Linux (GPU only).
    TimelineFd,
    /// Vulkan timeline semaphore as an NT handle. Untested (Windows only).
    TimelineWin32,
}

impl SemaphoreHandleType {
    /// Every variant, for capability reports.
    pub const ALL: [Self; 10] = [
        Self::OpaqueFd,
        Self::OpaqueWin32,
        Self::OpaqueWin32Kmt,
        Self::D3D12Fence,
        Self::D3D11Fence,
        Self::NvSciSync,
        Self::D3D11KeyedMutex,
        Self::D3D11KeyedMutexKmt,
        Self::TimelineFd,
        Self::TimelineWin32,
    ];

    /// Whether the semaphore carries a 64-bit counter (signal/wait take a value).
    pub fn is_timeline(self) -> bool {
        matches!(
            self,
            Self::TimelineFd
                | Self::TimelineWin32
                | Self::D3D12Fence
                | Self::D3D11Fence
                | Self::NvSciSync
        )
    }

    /// Whether the handle is a POSIX fd (moved into CUDA on import).
    pub fn is_fd(self) -> bool {
        matches!(self, Self::OpaqueFd | Self::TimelineFd)
    }
}

impl fmt::Display for SemaphoreHandleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An external semaphore handle, owned where the platform transfers ownership.
#[derive(Debug)]
#[non_exhaustive]
pub enum SemaphoreHandle {
    /// See [`SemaphoreHandleType::OpaqueFd`].
    #[cfg(unix)]
    OpaqueFd(OwnedFd),
    /// See [`SemaphoreHandleType::TimelineFd`].
    #[cfg(unix)]
    TimelineFd(OwnedFd),
    /// See [`SemaphoreHandleType::OpaqueWin32`].
    OpaqueWin32(Win32Handle),
    /// See [`SemaphoreHandleType::OpaqueWin32Kmt`].
    OpaqueWin32Kmt(Win32Handle),
    /// See [`SemaphoreHandleType::D3D12Fence`].
    D3D12Fence(Win32Handle),
    /// See [`SemaphoreHandleType::D3D11Fence`].
    D3D11Fence(Win32Handle),
    /// See [`SemaphoreHandleType::NvSciSync`].
    NvSciSync(NvSciObject),
    /// See [`SemaphoreHandleType::D3D11KeyedMutex`].
    D3D11KeyedMutex(Win32Handle),
    /// See [`SemaphoreHandleType::D3D11KeyedMutexKmt`].
    D3D11KeyedMutexKmt(Win32Handle),
    /// See [`SemaphoreHandleType::TimelineWin32`].
    TimelineWin32(Win32Handle),
}

impl SemaphoreHandle {
    /// The type of this handle.
    pub fn handle_type(&self) -> SemaphoreHandleType {
        match self {
            #[cfg(unix)]
            Self::OpaqueFd(_) => SemaphoreHandleType::OpaqueFd,
            #[cfg(unix)]
            Self::TimelineFd(_) => SemaphoreHandleType::TimelineFd,
            Self::OpaqueWin32(_) => SemaphoreHandleType::OpaqueWin32,
            Self::OpaqueWin32Kmt(_) => SemaphoreHandleType::OpaqueWin32Kmt,
            Self::D3D12Fence(_) => SemaphoreHandleType::D3D12Fence,
            Self::D3D11Fence(_) => SemaphoreHandleType::D3D11Fence,
            Self::NvSciSync(_) => SemaphoreHandleType::NvSciSync,
            Self::D3D11KeyedMutex(_) => SemaphoreHandleType::D3D11KeyedMutex,
            Self::D3D11KeyedMutexKmt(_) => SemaphoreHandleType::D3D11KeyedMutexKmt,
            Self::TimelineWin32(_) => SemaphoreHandleType::TimelineWin32,
        }
    }
}

/// Lends `fd` to a driver import call that takes ownership on success.
///
/// `import` receives a duplicate of `fd`. On success the driver owns the duplicate and `fd`
/// is closed. On failure the duplicate is closed too, unless the driver already closed it:
/// the spec leaves it to the caller, but some drivers (Mesa's lavapipe) close it anyway, and
/// closing it twice could close an unrelated fd that another thread opened meanwhile and
/// got the recycled number. Which happened is told by [`same_open_file`]: the duplicate is
/// closed only when its number still names the caller's open file description. When that
/// cannot be told, the number is left open (at worst one fd leaks; no unrelated fd is
/// closed). Either way the caller's fd is gone afterwards.
///
/// # Errors
/// [`crate::Error::Io`] (`fcntl(F_DUPFD_CLOEXEC)`) when `fd` cannot be duplicated (nothing
/// was imported; `fd` is closed); otherwise what `import` returns.
#[cfg(unix)]
pub(crate) fn lend_fd<T>(
    fd: OwnedFd,
    import: impl FnOnce(std::os::fd::RawFd) -> crate::Result<T>,
) -> crate::Result<T> {
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

    let dup = fd.try_clone().map_err(|source| crate::Error::Io {
        call: "fcntl(F_DUPFD_CLOEXEC)",
        source,
    })?;
    let raw = dup.into_raw_fd();
    let result = import(raw);
    if result.is_err() && same_open_file(raw, fd.as_raw_fd()) == Some(true) {
        // SAFETY: the driver refused the fd and left it open (the number still names our
        // open file description); it is ours to close, once.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    result
}

/// Whether fd number `a` names the same open file description as `b` (as a `dup` of it
/// does): `Some(false)` when `a` is closed or names another file, `None` when this cannot
/// be told (no `kcmp`, e.g. under a seccomp filter, and both are the same inode: every
/// `/dev/nvidia*` fd and every anon-inode fd such as an eventfd share one).
#[cfg(unix)]
fn same_open_file(a: std::os::fd::RawFd, b: std::os::fd::RawFd) -> Option<bool> {
    // SAFETY: F_GETFD only reads the fd flags of the number; any number is allowed.
    if unsafe { libc::fcntl(a, libc::F_GETFD) } == -1 {
        return Some(false);
    }
    #[cfg(target_os = "linux")]
    {
        /// `KCMP_FILE` of `<linux/kcmp.h>` (not in the `libc` crate).
        const KCMP_FILE: libc::c_long = 0;
        // SAFETY: getpid has no preconditions.
        let pid = libc::c_long::from(unsafe { libc::getpid() });
        // SAFETY: kcmp(pid, pid, KCMP_FILE, a, b) only compares two fd table entries of this
        // process; it takes no pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_kcmp,
                pid,
                pid,
                KCMP_FILE,
                libc::c_long::from(a),
                libc::c_long::from(b),
            )
        };
        match r {
            0 => return Some(true),
            1..=3 => return Some(false),
            _ => {} // kcmp unavailable: fall back to the inode
        }
    }
    let stat = |fd: std::os::fd::RawFd| {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is a writable stat buffer; fstat fills it on success.
        (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| {
            // SAFETY: fstat succeeded, so `st` is initialised.
            let st = unsafe { st.assume_init() };
            (st.st_dev, st.st_ino)
        })
    };
    match (stat(a), stat(b)) {
        (Some(x), Some(y)) if x == y => None,
        _ => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An eventfd stands for a driver fd: every eventfd shares one anon inode, as every
    /// `/dev/nvidia*` fd shares its device's.
    #[cfg(target_os = "linux")]
    fn eventfd() -> OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd takes no pointers.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: a new fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    #[cfg(target_os = "linux")]
    fn is_open(fd: std::os::fd::RawFd) -> bool {
        // SAFETY: F_GETFD only reads the fd's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags != -1
    }

    /// Issue 10 row 10: a driver that closes the fd it refused, while another thread opens
    /// a file of the same inode that gets the recycled number: `lend_fd` must not close
    /// the other thread's fd (comparing (dev, ino) did).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_recycled_fd_number_of_the_same_inode_is_not_closed() {
        use std::os::fd::AsRawFd;
        let mut other = None;
        let r: crate::Result<()> = lend_fd(eventfd(), |raw| {
            // The "driver" closes the fd and "another thread" opens an eventfd that gets
            // the same number. dup3 does both at once: left to the kernel, the lowest free
            // number could go to a test running on another thread.
            let fresh = eventfd();
            // SAFETY: dup3 atomically closes `raw` (the lent duplicate, the driver's to
            // close here) and makes it a second number for `fresh`'s open file.
            let at = unsafe { libc::dup3(fresh.as_raw_fd(), raw, libc::O_CLOEXEC) };
            assert_eq!(at, raw, "dup3: {}", std::io::Error::last_os_error());
            // SAFETY: `raw` now names a new open file that nothing else owns.
            other = Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
            Err(crate::Error::invalid("fd", "refused", "a memory fd"))
        });
        assert!(r.is_err());
        let other = other.unwrap();
        assert!(is_open(other.as_raw_fd()), "lend_fd closed an unrelated fd");
        drop(other);
    }

    /// The other half: a refused fd the driver left open is closed (no leak).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_refused_fd_left_open_is_closed() {
        use std::os::fd::AsRawFd;
        let fd = eventfd();
        // A second number for the same open file, to tell a leaked duplicate from a number
        // that a test on another thread reopened meanwhile.
        let witness = fd.try_clone().unwrap();
        let mut lent = -1;
        let r: crate::Result<()> = lend_fd(fd, |raw| {
            lent = raw;
            Err(crate::Error::invalid("fd", "refused", "a memory fd"))
        });
        assert!(r.is_err());
        assert_ne!(
            same_open_file(lent, witness.as_raw_fd()),
            Some(true),
            "the refused duplicate leaked"
        );
    }

    #[test]
    fn uuid_prints_like_nvidia_smi() {
        let u = Uuid([
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]);
        assert_eq!(u.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn only_fd_types_move_ownership() {
        let fds: Vec<_> = MemoryHandleType::ALL
            .into_iter()
            .filter(|t| t.is_fd())
            .collect();
        assert_eq!(
            fds,
            [MemoryHandleType::OpaqueFd, MemoryHandleType::DmaBufFd]
        );
        let fds: Vec<_> = SemaphoreHandleType::ALL
            .into_iter()
            .filter(|t| t.is_fd())
            .collect();
        assert_eq!(
            fds,
            [
                SemaphoreHandleType::OpaqueFd,
                SemaphoreHandleType::TimelineFd
            ]
        );
    }

    #[test]
    fn timeline_types_carry_values() {
        assert!(SemaphoreHandleType::TimelineFd.is_timeline());
        assert!(SemaphoreHandleType::D3D12Fence.is_timeline());
        assert!(!SemaphoreHandleType::OpaqueFd.is_timeline());
        assert!(!SemaphoreHandleType::D3D11KeyedMutex.is_timeline());
    }
}
