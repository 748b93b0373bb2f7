//! Dedicated, external-capable `VkDeviceMemory`, shared by buffers and images: allocation
//! for export, allocation from an imported handle, and export as an owned handle.

#[cfg(unix)]
use std::os::fd::{FromRawFd, OwnedFd};

use ash::vk;

use super::capabilities::memory_handle_flags;
use super::Context;
use crate::error::{Error, Result};
#[cfg(unix)]
pub(crate) use crate::external::lend_fd;
use crate::external::{MemoryHandle, MemoryHandleType};

/// The one resource a dedicated allocation is made for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dedicated {
    Buffer(vk::Buffer),
    Image(vk::Image),
}

impl Dedicated {
    fn info(self) -> vk::MemoryDedicatedAllocateInfo<'static> {
        match self {
            Self::Buffer(b) => vk::MemoryDedicatedAllocateInfo::default().buffer(b),
            Self::Image(i) => vk::MemoryDedicatedAllocateInfo::default().image(i),
        }
    }
}

/// Allocates memory for `to`, exportable as `flags`, dedicated to `to`.
///
/// # Safety
/// 1. `to` was created from `ctx.device()` with `VkExternalMemory{Buffer,Image}CreateInfo`
///    naming `flags`, is alive and has no memory bound.
/// 2. `requirements` are `to`'s memory requirements.
pub(crate) unsafe fn allocate_exportable(
    ctx: &Context,
    requirements: &vk::MemoryRequirements,
    flags: vk::ExternalMemoryHandleTypeFlags,
    to: Dedicated,
) -> Result<vk::DeviceMemory> {
    let memory_type = choose_memory_type(ctx, requirements.memory_type_bits)?;
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(flags);
    let mut dedicated = to.info();
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(requirements.size)
        .memory_type_index(memory_type)
        .push_next(&mut export)
        .push_next(&mut dedicated);
    // SAFETY: `info`'s chain points at live structs; the resource it dedicates to is alive
    // and unbound (precondition 1).
    unsafe { ctx.device().allocate_memory(&info, None) }
        .map_err(|r| Error::vk_sized("vkAllocateMemory", r, requirements.size))
}

/// Allocates `size` bytes of `memory_type`, exportable as `flags`, for no resource in
/// particular (a pool block that buffers are bound into at offsets).
pub(crate) fn allocate_exportable_block(
    ctx: &Context,
    size: u64,
    memory_type: u32,
    flags: vk::ExternalMemoryHandleTypeFlags,
) -> Result<vk::DeviceMemory> {
    let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(flags);
    let info = vk::MemoryAllocateInfo::default()
        .allocation_size(size)
        .memory_type_index(memory_type)
        .push_next(&mut export);
    // SAFETY: `info`'s chain points at a live struct; no resource is named.
    unsafe { ctx.device().allocate_memory(&info, None) }
        .map_err(|r| Error::vk_sized("vkAllocateMemory", r, size))
}

/// Allocates `size` bytes from the imported `fd` of `handle_type`, restricted to the memory
/// types in `allowed` (the resource's `memoryTypeBits`), dedicated to `dedicated` if given.
///
/// On success Vulkan owns the fd; on failure it has been closed (see [`lend_fd`]).
///
/// # Safety
/// 1. `dedicated`, if given, was created from `ctx.device()` with external-memory create info
///    naming `handle_type`, is alive and has no memory bound.
pub(crate) unsafe fn import_memory(
    ctx: &Context,
    handle_type: MemoryHandleType,
    fd: ImportFd,
    allowed: u32,
    size: u64,
    dedicated: Option<Dedicated>,
) -> Result<vk::DeviceMemory> {
    let flags = memory_handle_flags(handle_type).ok_or_else(|| unsupported_type(handle_type))?;
    let allowed = if handle_type == MemoryHandleType::OpaqueFd {
        // Opaque fds must use the exporter's memory type (not queryable): the same
        // choice the exporting constructor makes for the same description.
        allowed
    } else {
        let mut props = vk::MemoryFdPropertiesKHR::default();
        // SAFETY: `fd` is a live fd; the handle type is not OPAQUE_FD.
        unsafe {
            ctx.memory_fd()
                .get_memory_fd_properties(flags, fd_raw(&fd), &mut props)
        }
        .map_err(|r| invalid_handle("vkGetMemoryFdPropertiesKHR", handle_type, r))?;
        allowed & props.memory_type_bits
    };
    let memory_type = choose_memory_type(ctx, allowed)?;
    lend_fd(fd, |raw| {
        let mut fd_info = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(flags)
            .fd(raw);
        let mut dedicated_info = dedicated.map(Dedicated::info);
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(memory_type)
            .push_next(&mut fd_info);
        if let Some(d) = dedicated_info.as_mut() {
            info = info.push_next(d);
        }
        // SAFETY: the chain points at live structs; `raw` is open for the call and Vulkan
        // owns it on success; the dedicated resource is alive and unbound (precondition 1).
        unsafe { ctx.device().allocate_memory(&info, None) }
            .map_err(|r| invalid_handle("vkAllocateMemory", handle_type, r))
    })
}

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

/// The first `DEVICE_LOCAL` type in `allowed`, else the first allowed type.
pub(crate) fn choose_memory_type(ctx: &Context, allowed: u32) -> Result<u32> {
    let props = ctx.memory_properties();
    let types = &props.memory_types[..props.memory_type_count as usize];
    let pick = |want: vk::MemoryPropertyFlags| {
        (0..types.len() as u32)
            .find(|&i| allowed & (1 << i) != 0 && types[i as usize].property_flags.contains(want))
    };
    pick(vk::MemoryPropertyFlags::DEVICE_LOCAL)
        .or_else(|| pick(vk::MemoryPropertyFlags::empty()))
        .ok_or_else(|| Error::Unsupported {
            what: "a memory type for external memory".into(),
            reason: format!("no memory type in the allowed mask {allowed:#b}"),
        })
}

fn invalid_handle(call: &'static str, t: MemoryHandleType, r: vk::Result) -> Error {
    if r == vk::Result::ERROR_INVALID_EXTERNAL_HANDLE {
        Error::InvalidExternalHandle {
            call,
            handle_type: t.to_string(),
            detail: format!("{r}"),
        }
    } else {
        Error::vk(call, r)
    }
}

/// An fd being imported (uninhabited where vkcuda imports no fds).
#[cfg(unix)]
pub(crate) type ImportFd = OwnedFd;

/// Takes the fd out of an fd handle; other handle types are [`unsupported_type`].
#[cfg(unix)]
pub(crate) fn import_fd(handle: MemoryHandle) -> Result<OwnedFd> {
    match handle {
        MemoryHandle::OpaqueFd(fd) | MemoryHandle::DmaBufFd(fd) => Ok(fd),
        other => Err(unsupported_type(other.handle_type())),
    }
}

#[cfg(unix)]
fn fd_raw(fd: &ImportFd) -> i32 {
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
fn fd_raw(fd: &ImportFd) -> i32 {
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

/// Checks an import's `size` against the resource's `VkMemoryRequirements::size`: a
/// dedicated allocation must be exactly that size (VUID-VkMemoryDedicatedAllocateInfo-
/// buffer-01435 / image-01433), a shared one at least that size. `resource` names what
/// the memory is for in the error.
pub(crate) fn check_import_size(
    size: u64,
    dedicated: bool,
    required: u64,
    resource: impl FnOnce() -> String,
) -> Result<()> {
    let fits = if dedicated {
        size == required
    } else {
        size >= required
    };
    if fits {
        return Ok(());
    }
    Err(Error::invalid(
        "import.size",
        format!(
            "{size} bytes, but {} needs {required} (VkMemoryRequirements::size)",
            resource()
        ),
        if dedicated {
            format!("exactly {required} for a dedicated allocation")
        } else {
            format!("at least {required}")
        },
    ))
}
