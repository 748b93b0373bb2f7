//! Staged transfers between host memory and external buffers: one-shot command buffers
//! on the context's queue, waited with a fence. For tests, examples, readback and the
//! staged-copy baselines; not for per-frame work.

use std::ops::Range;
use std::time::Duration;

use ash::vk;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme};
use gpu_allocator::MemoryLocation as GpuLocation;

use super::{Context, ExternalBuffer};
use crate::error::{Error, Result};

/// How long a one-shot transfer may take before it is reported as hung.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// Command pool, command buffer and fence reused by every one-shot transfer.
pub(crate) struct Transfer {
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
}

impl Transfer {
    pub(crate) fn new(device: &ash::Device, family: u32) -> Result<Self> {
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(family)
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: valid device and create info.
        let pool = unsafe { device.create_command_pool(&info, None) }
            .map_err(|r| Error::vk("vkCreateCommandPool", r))?;
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: `pool` was just created from `device`.
        let cmd = match unsafe { device.allocate_command_buffers(&alloc) } {
            Ok(v) => v[0],
            Err(r) => {
                // SAFETY: the pool is unused.
                unsafe { device.destroy_command_pool(pool, None) };
                return Err(Error::vk("vkAllocateCommandBuffers", r));
            }
        };
        // SAFETY: valid device and create info.
        let fence = match unsafe { device.create_fence(&vk::FenceCreateInfo::default(), None) } {
            Ok(f) => f,
            Err(r) => {
                // SAFETY: the pool (and its command buffer) is unused.
                unsafe { device.destroy_command_pool(pool, None) };
                return Err(Error::vk("vkCreateFence", r));
            }
        };
        Ok(Self { pool, cmd, fence })
    }

    /// Destroys the Vulkan objects; called once by the context before the device goes.
    pub(crate) fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: `run` always waits for its submission, so nothing is pending; the objects
        // were made from `device` and are destroyed once.
        unsafe { device.destroy_fence(self.fence, None) };
        // SAFETY: as above.
        unsafe { device.destroy_command_pool(self.pool, None) };
    }
}

/// A host-visible staging buffer from gpu-allocator, freed on drop. Shared by the buffer
/// and image transfers.
pub(crate) struct Staging<'a> {
    ctx: &'a Context,
    pub(crate) buffer: vk::Buffer,
    allocation: Option<Allocation>,
    /// Bytes asked for; the allocation may be larger.
    size: usize,
}

impl<'a> Staging<'a> {
    pub(crate) fn new(ctx: &'a Context, size: u64, location: GpuLocation) -> Result<Self> {
        let device = ctx.device();
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device and create info.
        let buffer = unsafe { device.create_buffer(&info, None) }
            .map_err(|r| Error::vk_sized("vkCreateBuffer", r, size))?;
        let mut staging = Self {
            ctx,
            buffer,
            allocation: None,
            size: usize::try_from(size).map_err(|_| {
                Error::invalid(
                    "size",
                    format!("{size} bytes"),
                    "a size this host can address",
                )
            })?,
        };
        // SAFETY: `buffer` was just created from `device`.
        let requirements = unsafe { device.get_buffer_memory_requirements(buffer) };
        let allocation = ctx
            .allocator()
            .allocate(&AllocationCreateDesc {
                name: "vkcuda staging",
                requirements,
                location,
                linear: true,
                allocation_scheme: AllocationScheme::DedicatedBuffer(buffer),
            })
            .map_err(|e| match e {
                gpu_allocator::AllocationError::OutOfMemory => Error::OutOfMemory {
                    call: "gpu-allocator staging allocation",
                    requested: size,
                },
                other => Error::Unsupported {
                    what: format!("a {size}-byte host-visible staging buffer"),
                    reason: other.to_string(),
                },
            })?;
        // SAFETY: the handle is only passed to the bind below, while the allocation lives.
        let memory = unsafe { allocation.memory() };
        let offset = allocation.offset();
        // Owned by `staging` from here, so a failed bind frees it too.
        staging.allocation = Some(allocation);
        // SAFETY: the allocation was made for this buffer's requirements; bound once.
        unsafe { device.bind_buffer_memory(buffer, memory, offset) }
            .map_err(|r| Error::vk("vkBindBufferMemory", r))?;
        Ok(staging)
    }

    /// The `size` bytes asked for, mapped.
    pub(crate) fn bytes(&mut self) -> Result<&mut [u8]> {
        let size = self.size;
        self.allocation
            .as_mut()
            .and_then(|a| a.mapped_slice_mut())
            .and_then(|s| s.get_mut(..size))
            .ok_or_else(|| Error::Unsupported {
                what: "host access to staging memory".into(),
                reason: "gpu-allocator returned unmapped host-visible memory".into(),
            })
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        // SAFETY: transfers using the buffer have completed (`submit_and_wait` waits).
        unsafe { self.ctx.device().destroy_buffer(self.buffer, None) };
        if let Some(a) = self.allocation.take() {
            if let Err(e) = self.ctx.allocator().free(a) {
                eprintln!("vkcuda: freeing staging memory failed: {e}");
            }
        }
    }
}

impl Context {
    /// Records commands with `record`, submits them on the context's queue and waits.
    pub(crate) fn submit_and_wait(&self, record: impl FnOnce(vk::CommandBuffer)) -> Result<()> {
        // Refused before `record` runs, so no tracked image state moves.
        if self.queue_count() == 0 {
            return Err(super::context::no_queue());
        }
        let device = self.device();
        let t = self.transfer();
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the command buffer is not pending (every submission below is waited for,
        // under the transfer lock held here) and was allocated with RESET_COMMAND_BUFFER.
        unsafe { device.begin_command_buffer(t.cmd, &begin) }
            .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
        record(t.cmd);
        // SAFETY: recording began above.
        unsafe { device.end_command_buffer(t.cmd) }
            .map_err(|r| Error::vk("vkEndCommandBuffer", r))?;
        let cmds = [t.cmd];
        let submit = vk::SubmitInfo::default().command_buffers(&cmds);
        {
            let queue = self.queue()?;
            // SAFETY: the queue is locked; the fence is unsignalled (reset after each wait).
            unsafe { device.queue_submit(*queue, &[submit], t.fence) }
                .map_err(|r| Error::vk("vkQueueSubmit", r))?;
        }
        let timeout = u64::try_from(TRANSFER_TIMEOUT.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: the fence belongs to this device.
        let waited = unsafe { device.wait_for_fences(&[t.fence], true, timeout) };
        match waited {
            Ok(()) => {}
            Err(vk::Result::TIMEOUT) => {
                return Err(Error::Timeout {
                    what: "a one-shot Vulkan transfer".into(),
                    waited: TRANSFER_TIMEOUT,
                })
            }
            Err(r) => return Err(Error::vk("vkWaitForFences", r)),
        }
        // SAFETY: the fence is signalled and no longer in use.
        unsafe { device.reset_fences(&[t.fence]) }.map_err(|r| Error::vk("vkResetFences", r))
    }

    /// Copies `range` of `buffer` to the host (`vkCmdCopyBuffer` into a staging buffer).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range is empty or past the buffer's end, or the
    /// buffer lacks `TRANSFER_SRC` usage.
    pub fn read_buffer(&self, buffer: &ExternalBuffer, range: Range<u64>) -> Result<Vec<u8>> {
        buffer.check_range("range", &range)?;
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_SRC)?;
        let len = range.end - range.start;
        let mut staging = Staging::new(self, len, GpuLocation::GpuToCpu)?;
        self.submit_and_wait(|cmd| {
            let region = vk::BufferCopy::default().src_offset(range.start).size(len);
            // SAFETY: both buffers are alive for the submission; the region was checked.
            unsafe {
                self.device()
                    .cmd_copy_buffer(cmd, buffer.raw(), staging.buffer, &[region])
            };
        })?;
        Ok(staging.bytes()?.to_vec())
    }

    /// Copies `data` into `buffer` at `offset` through a staging buffer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data` is empty or does not fit, or the buffer lacks
    /// `TRANSFER_DST` usage.
    pub fn write_buffer(&self, buffer: &ExternalBuffer, offset: u64, data: &[u8]) -> Result<()> {
        let range = offset..offset.saturating_add(data.len() as u64);
        buffer.check_range("data", &range)?;
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_DST)?;
        let mut staging = Staging::new(self, data.len() as u64, GpuLocation::CpuToGpu)?;
        staging.bytes()?.copy_from_slice(data);
        self.submit_and_wait(|cmd| {
            let region = vk::BufferCopy::default()
                .dst_offset(offset)
                .size(data.len() as u64);
            // SAFETY: both buffers are alive for the submission; the region was checked.
            unsafe {
                self.device()
                    .cmd_copy_buffer(cmd, staging.buffer, buffer.raw(), &[region])
            };
        })
    }

    /// Fills `range` of `buffer` with the 32-bit `value` on the GPU (`vkCmdFillBuffer`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range is empty, past the end, or its start or
    /// length is not a multiple of 4 (the command's rule), or the buffer lacks
    /// `TRANSFER_DST` usage.
    pub fn fill_buffer(
        &self,
        buffer: &ExternalBuffer,
        range: Range<u64>,
        value: u32,
    ) -> Result<()> {
        buffer.check_range("range", &range)?;
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_DST)?;
        if !range.start.is_multiple_of(4) || !(range.end - range.start).is_multiple_of(4) {
            return Err(Error::invalid(
                "range",
                format!("{range:?} is not 4-byte aligned"),
                "start and length multiples of 4 (vkCmdFillBuffer)",
            ));
        }
        self.submit_and_wait(|cmd| {
            // SAFETY: the buffer is alive for the submission; the range was checked.
            unsafe {
                self.device().cmd_fill_buffer(
                    cmd,
                    buffer.raw(),
                    range.start,
                    range.end - range.start,
                    value,
                )
            };
        })
    }
}
