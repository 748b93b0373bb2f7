//! The library's one error type.
//!
//! Driver result codes are kept as data ([`Error::Vulkan`], [`Error::Cuda`]) together with
//! the name of the call that returned them. Codes a caller can act on get their own variant
//! instead of the catch-all:
//!
//! | driver code | variant |
//! |---|---|
//! | `VK_ERROR_OUT_OF_DEVICE_MEMORY`, `VK_ERROR_OUT_OF_HOST_MEMORY`, `CUDA_ERROR_OUT_OF_MEMORY` | [`Error::OutOfMemory`] |
//! | `VK_ERROR_INVALID_EXTERNAL_HANDLE` | [`Error::InvalidExternalHandle`] |
//! | `VK_ERROR_DEVICE_LOST`; CUDA's sticky errors that leave the context unusable (`CUDA_ERROR_ILLEGAL_ADDRESS`, `_LAUNCH_FAILED`, `_HARDWARE_STACK_ERROR`, `_ILLEGAL_INSTRUCTION`, `_MISALIGNED_ADDRESS`, `_INVALID_ADDRESS_SPACE`, `_INVALID_PC`, `_ECC_UNCORRECTABLE`) | [`Error::DeviceLost`] |
//! | `VK_ERROR_FEATURE_NOT_PRESENT`, `VK_ERROR_EXTENSION_NOT_PRESENT` | [`Error::Unsupported`] |
//! | `VK_TIMEOUT` from a bounded host wait | [`Error::Timeout`] |
//!
//! A device extension vkcuda knows it needs and finds missing is named in
//! [`Error::MissingExtension`]; operating-system failures (fds, sockets, threads) are
//! [`Error::Io`].
//!
//! Caller mistakes are caught before any driver call and reported as
//! [`Error::InvalidArgument`] (which argument, what is wrong, what was expected).

use ash::vk;
use cudarc::driver::sys::CUresult;

use crate::external::{MemoryHandleType, SemaphoreHandleType, Uuid};

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A CUDA device seen while looking for the one that matches a Vulkan device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDeviceSeen {
    /// CUDA ordinal (after `CUDA_VISIBLE_DEVICES` remapping).
    pub ordinal: usize,
    /// `cuDeviceGetName`.
    pub name: String,
    /// `cuDeviceGetUuid`.
    pub uuid: Uuid,
}

/// Everything that can go wrong in vkcuda.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Vulkan call failed with a code that has no dedicated variant.
    #[error("{call} failed: {result}")]
    Vulkan {
        /// The Vulkan entry point, e.g. `vkAllocateMemory`.
        call: &'static str,
        /// The code it returned.
        result: vk::Result,
    },
    /// A CUDA driver call failed with a code that has no dedicated variant.
    #[error("{call} failed: {result:?}")]
    Cuda {
        /// The CUDA driver entry point, e.g. `cuImportExternalMemory`.
        call: &'static str,
        /// The code it returned.
        result: CUresult,
    },
    /// A driver ran out of device or host memory.
    #[error("{call} is out of memory ({requested} bytes requested)")]
    OutOfMemory {
        /// The call that failed.
        call: &'static str,
        /// Bytes the failed call asked for (0 when not known).
        requested: u64,
    },
    /// The driver rejected an external handle (not a memory/semaphore handle, wrong type,
    /// or made by another device).
    #[error("{call} rejected the external handle ({handle_type}): {detail}")]
    InvalidExternalHandle {
        /// The call that failed.
        call: &'static str,
        /// The handle type the caller said the handle was.
        handle_type: HandleType,
        /// The driver code or what was checked.
        detail: String,
    },
    /// A caller-supplied value is wrong. Nothing was created and nothing leaked.
    #[error("invalid argument `{arg}`: {problem} (expected {expected})")]
    InvalidArgument {
        /// Path of the argument, e.g. `desc.size` or `range.end`.
        arg: &'static str,
        /// What is wrong, with the value passed.
        problem: String,
        /// What would have been accepted (a limit, a range, a list).
        expected: String,
    },
    /// The device was lost (`VK_ERROR_DEVICE_LOST`), or a CUDA error left the context
    /// unusable (an illegal address or instruction in a kernel, an uncorrectable ECC error,
    /// ...; see the module docs). Nothing on that device or context will work again:
    /// drop everything made on it and create new contexts.
    #[error("{call}: device lost{}", .cuda.map_or(String::new(), |r| format!(" ({r:?})")))]
    DeviceLost {
        /// The call that reported it.
        call: &'static str,
        /// The CUDA code, for a CUDA call (`None`: Vulkan's `VK_ERROR_DEVICE_LOST`).
        cuda: Option<CUresult>,
    },
    /// A device extension that what was asked needs is not enabled (or not available).
    #[error("{needed_for} needs {name}, which the device does not have enabled")]
    MissingExtension {
        /// The extension, e.g. `VK_KHR_external_semaphore_fd`.
        name: &'static str,
        /// What needed it, e.g. `export of a timeline semaphore as TimelineFd`.
        needed_for: String,
    },
    /// The device, driver or platform cannot do what was asked.
    #[error("unsupported: {what}: {reason}")]
    Unsupported {
        /// What was asked, e.g. `export of OPAQUE_FD buffer memory`.
        what: String,
        /// Why not, as the driver reported it.
        reason: String,
    },
    /// A runtime library (Vulkan loader, `libcuda`, NVRTC) could not be loaded, or no device
    /// was found.
    #[error("{library} is not available: {reason}")]
    Missing {
        /// `Vulkan loader`, `CUDA driver`, `NVRTC`, ...
        library: &'static str,
        /// What was tried.
        reason: String,
    },
    /// No CUDA device has the Vulkan device's UUID. Never falls back to another device.
    #[error("no CUDA device matches Vulkan device {vulkan_name:?} (UUID {vulkan_uuid}); CUDA devices seen: {}", list_seen(.cuda_seen))]
    NoMatchingCudaDevice {
        /// Vulkan `deviceName`.
        vulkan_name: String,
        /// `VkPhysicalDeviceIDProperties::deviceUUID`.
        vulkan_uuid: Uuid,
        /// Every CUDA device visible to this process.
        cuda_seen: Vec<CudaDeviceSeen>,
    },
    /// NVRTC could not compile a kernel; `log` is the compiler's log.
    #[error("NVRTC failed to compile {name}: {log}")]
    Compile {
        /// Name of the source.
        name: String,
        /// NVRTC log.
        log: String,
    },
    /// An operating-system call outside the drivers failed: passing fds over a socket
    /// ([`crate::ipc`]), a read or write of one, duplicating an fd for an import, or
    /// starting a thread.
    #[error("{call} failed: {source}")]
    Io {
        /// The call, e.g. `sendmsg` or `recvmsg`.
        call: &'static str,
        /// What the OS reported; `InvalidData` and `UnexpectedEof` kinds describe messages
        /// that do not fit what [`crate::ipc::recv`] expects.
        source: std::io::Error,
    },
    /// A [`crate::ipc`] connection lost its message framing (an error or timeout part-way
    /// through a message, or a length prefix that is not vkcuda's). The socket was shut
    /// down; open a new connection.
    #[error("the ipc connection is broken ({call}: {reason}); it was shut down, reconnect")]
    ConnectionBroken {
        /// The call that found it, e.g. `read` or `send`.
        call: &'static str,
        /// What happened.
        reason: String,
    },
    /// An object cannot be used any more after an earlier failure (which `reason` names):
    /// drop it and create a new one. Returned by [`crate::interop::FrameSync::begin`] once a
    /// frame's chain could not be finished.
    #[error("{what} is unusable after an earlier failure: {reason}; drop it and create a new one")]
    Unusable {
        /// The type, e.g. `FrameSync`.
        what: &'static str,
        /// The failure that made it so.
        reason: String,
    },
    /// A bounded wait ran out of time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: std::time::Duration,
    },
}

/// The type of an external handle, memory or semaphore, as carried by errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandleType {
    /// A memory handle type.
    Memory(MemoryHandleType),
    /// A semaphore handle type.
    Semaphore(SemaphoreHandleType),
}

impl std::fmt::Display for HandleType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory(t) => write!(f, "{t} memory"),
            Self::Semaphore(t) => write!(f, "{t} semaphore"),
        }
    }
}

impl From<MemoryHandleType> for HandleType {
    fn from(t: MemoryHandleType) -> Self {
        Self::Memory(t)
    }
}

impl From<SemaphoreHandleType> for HandleType {
    fn from(t: SemaphoreHandleType) -> Self {
        Self::Semaphore(t)
    }
}

fn list_seen(seen: &[CudaDeviceSeen]) -> String {
    if seen.is_empty() {
        return "none".to_owned();
    }
    let items: Vec<String> = seen
        .iter()
        .map(|d| format!("#{} {:?} {}", d.ordinal, d.name, d.uuid))
        .collect();
    items.join(", ")
}

impl Error {
    /// Maps a Vulkan result from `call` to the variant the module docs list.
    pub(crate) fn vk(call: &'static str, result: vk::Result) -> Self {
        Self::vk_sized(call, result, 0)
    }

    /// Like [`Error::vk`], recording how many bytes the call asked for.
    pub(crate) fn vk_sized(call: &'static str, result: vk::Result, requested: u64) -> Self {
        match result {
            vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY => {
                Self::OutOfMemory { call, requested }
            }
            vk::Result::ERROR_DEVICE_LOST => Self::DeviceLost { call, cuda: None },
            vk::Result::ERROR_FEATURE_NOT_PRESENT | vk::Result::ERROR_EXTENSION_NOT_PRESENT => {
                Self::Unsupported {
                    what: call.to_owned(),
                    reason: format!("{result}"),
                }
            }
            _ => Self::Vulkan { call, result },
        }
    }

    /// Maps a CUDA driver error from `call` to the variant the module docs list.
    pub(crate) fn cuda(call: &'static str, err: cudarc::driver::DriverError) -> Self {
        Self::cuda_sized(call, err, 0)
    }

    /// Like [`Error::cuda`], recording how many bytes the call asked for.
    pub(crate) fn cuda_sized(
        call: &'static str,
        err: cudarc::driver::DriverError,
        requested: u64,
    ) -> Self {
        match err.0 {
            CUresult::CUDA_ERROR_OUT_OF_MEMORY => Self::OutOfMemory { call, requested },
            result if is_sticky(result) => Self::DeviceLost {
                call,
                cuda: Some(result),
            },
            result => Self::Cuda { call, result },
        }
    }

    /// Shorthand for [`Error::MissingExtension`].
    pub(crate) fn missing_extension(name: &'static str, needed_for: impl Into<String>) -> Self {
        Self::MissingExtension {
            name,
            needed_for: needed_for.into(),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn invalid(
        arg: &'static str,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self::InvalidArgument {
            arg,
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}

/// CUDA's "sticky" errors: the context is unusable afterwards (CUDA driver API docs).
fn is_sticky(result: CUresult) -> bool {
    matches!(
        result,
        CUresult::CUDA_ERROR_ILLEGAL_ADDRESS
            | CUresult::CUDA_ERROR_LAUNCH_FAILED
            | CUresult::CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUresult::CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUresult::CUDA_ERROR_MISALIGNED_ADDRESS
            | CUresult::CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUresult::CUDA_ERROR_INVALID_PC
            | CUresult::CUDA_ERROR_ECC_UNCORRECTABLE
    )
}

/// Test helper: the argument, problem and expectation of an [`Error::InvalidArgument`];
/// panics on any other outcome.
#[cfg(test)]
pub(crate) fn invalid_arg<T: std::fmt::Debug>(result: Result<T>) -> (&'static str, String, String) {
    match result {
        Err(Error::InvalidArgument {
            arg,
            problem,
            expected,
        }) => (arg, problem, expected),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_match_lists_both_sides() {
        let e = Error::NoMatchingCudaDevice {
            vulkan_name: "llvmpipe".into(),
            vulkan_uuid: Uuid([1; 16]),
            cuda_seen: vec![CudaDeviceSeen {
                ordinal: 0,
                name: "H100".into(),
                uuid: Uuid([2; 16]),
            }],
        };
        let s = e.to_string();
        assert!(s.contains("01010101-0101"), "{s}");
        assert!(s.contains("#0 \"H100\" 02020202-0202"), "{s}");
    }

    #[test]
    fn out_of_memory_gets_its_own_variant() {
        let e = Error::vk_sized(
            "vkAllocateMemory",
            vk::Result::ERROR_OUT_OF_DEVICE_MEMORY,
            42,
        );
        assert!(matches!(e, Error::OutOfMemory { requested: 42, .. }));
        let e = Error::cuda(
            "cuMemAlloc",
            cudarc::driver::DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY),
        );
        assert!(matches!(e, Error::OutOfMemory { .. }));
    }

    #[test]
    fn device_loss_gets_its_own_variant_on_both_sides() {
        let e = Error::vk("vkQueueSubmit", vk::Result::ERROR_DEVICE_LOST);
        assert!(matches!(e, Error::DeviceLost { cuda: None, .. }), "{e}");
        for code in [
            CUresult::CUDA_ERROR_ILLEGAL_ADDRESS,
            CUresult::CUDA_ERROR_LAUNCH_FAILED,
            CUresult::CUDA_ERROR_ECC_UNCORRECTABLE,
        ] {
            let e = Error::cuda("cuStreamSynchronize", cudarc::driver::DriverError(code));
            assert!(
                matches!(e, Error::DeviceLost { cuda: Some(c), .. } if c == code),
                "{e}"
            );
        }
        let e = Error::cuda(
            "cuMemAlloc",
            cudarc::driver::DriverError(CUresult::CUDA_ERROR_INVALID_VALUE),
        );
        assert!(matches!(e, Error::Cuda { .. }), "{e}");
    }

    #[test]
    fn handle_types_print_their_kind() {
        let t: HandleType = MemoryHandleType::OpaqueFd.into();
        assert_eq!(t.to_string(), "OpaqueFd memory");
        let t: HandleType = SemaphoreHandleType::TimelineFd.into();
        assert_eq!(t.to_string(), "TimelineFd semaphore");
    }
}
