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
//! | `VK_ERROR_FEATURE_NOT_PRESENT`, `VK_ERROR_EXTENSION_NOT_PRESENT` | [`Error::Unsupported`] |
//! | `VK_TIMEOUT` from a bounded host wait | [`Error::Timeout`] |
//!
//! Caller mistakes are caught before any driver call and reported as
//! [`Error::InvalidArgument`] (which argument, what is wrong, what was expected).

use ash::vk;
use cudarc::driver::sys::CUresult;

use crate::external::Uuid;

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
        handle_type: String,
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
    /// The device, driver or platform cannot do what was asked.
    #[error("unsupported: {what}: {reason}")]
    Unsupported {
        /// What was asked, e.g. `export of OPAQUE_FD buffer memory`.
        what: String,
        /// Why not, as the driver reported it.
        reason: String,
    },
    /// A Vulkan device that another library created (a wgpu device) was created without an
    /// extension or feature vkcuda needs; vkcuda cannot enable it afterwards.
    #[error("Vulkan device {device:?} was created without {extension}: {hint}")]
    NotEnabled {
        /// The device's name.
        device: String,
        /// The extension or feature, e.g. `VK_KHR_external_memory_fd`.
        extension: &'static str,
        /// What to do instead.
        hint: &'static str,
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
    /// ([`crate::ipc`]), or a read or write of one.
    #[error("{call} failed: {source}")]
    Io {
        /// The call, e.g. `sendmsg` or `recvmsg`.
        call: &'static str,
        /// What the OS reported; `InvalidData` and `UnexpectedEof` kinds describe messages
        /// that do not fit what [`crate::ipc::recv`] expects.
        source: std::io::Error,
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
            result => Self::Cuda { call, result },
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
}
