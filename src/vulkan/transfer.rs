//! The machinery of one-shot transfers: the context's reusable command buffer and fence
//! ([`FencedCommandBuffer`]), host-visible staging buffers ([`Staging`]), and the submission that
//! records, submits on queue 0 and waits ([`Context::submit_and_wait`]). The one-shot
//! operations built on it are in [`crate::util::OneShot`].

use std::time::Duration;

use ash::vk;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme};
use gpu_allocator::MemoryLocation as GpuLocation;

use super::Context;
use crate::error::{Error, Result};

/// How long a one-shot transfer may take before it is reported as hung.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// A command pool with one resettable primary command buffer and a fence: the context's
/// one-shot transfers reuse one, and each [`crate::util::Commands`] owns one.
pub(crate) struct FencedCommandBuffer {
    pool: vk::CommandPool,
    pub(crate) cmd: vk::CommandBuffer,
    pub(crate) fence: vk::Fence,
}

impl FencedCommandBuffer {
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

    /// Waits (at most `timeout`) for the fence, then resets it for the next submission.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming `what` when the submission has not finished in time (the
    /// fence stays unreset); driver errors.
    pub(crate) fn wait(&self, device: &ash::Device, timeout: Duration, what: &str) -> Result<()> {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: the fence belongs to `device` (the owner's).
        match unsafe { device.wait_for_fences(&[self.fence], true, nanos) } {
            Ok(()) => {}
            Err(vk::Result::TIMEOUT) => {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    waited: timeout,
                })
            }
            Err(r) => return Err(Error::vk("vkWaitForFences", r)),
        }
        // SAFETY: the fence is signalled and no longer in use.
        unsafe { device.reset_fences(&[self.fence]) }.map_err(|r| Error::vk("vkResetFences", r))
    }

    /// Destroys the Vulkan objects; called once by the owner before the device goes.
    ///
    /// # Safety
    /// 1. Nothing submitted with the command buffer or fence is pending; called once.
    pub(crate) unsafe fn destroy(&mut self, device: &ash::Device) {
        // SAFETY: precondition 1; the objects were made from `device`.
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
                log::warn!("freeing staging memory failed: {e}");
            }
        }
    }
}

impl Context {
    /// Records commands with `record`, submits them on the context's queue and waits.
    pub(crate) fn submit_and_wait(&self, record: impl FnOnce(vk::CommandBuffer)) -> Result<()> {
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
            let queue = self.queue();
            // SAFETY: the queue is locked; the fence is unsignalled (reset after each wait).
            unsafe { device.queue_submit(*queue, &[submit], t.fence) }
                .map_err(|r| Error::vk("vkQueueSubmit", r))?;
        }
        t.wait(device, TRANSFER_TIMEOUT, "a one-shot Vulkan transfer")
    }
}
