//! The machinery of one-shot transfers: the context's reusable command buffer and fence
//! ([`FencedCommandBuffer`]), its reusable host-visible staging buffers ([`Staging`]), and
//! the locked state that records, submits on queue 0 and waits ([`OneShotLock`]). The
//! one-shot operations built on it are in [`crate::util::OneShot`].
//!
//! # What stays alive after a submission
//! Once `vkQueueSubmit` has succeeded, the command buffer, the fence and the staging
//! buffer belong to the GPU until the fence is seen signalled. A wait that times out (or a
//! device error after the submit) leaves the transfer *pending*: nothing is freed, reset or
//! re-recorded; the next one-shot first waits (bounded) for it, and dropping the context
//! waits (bounded) too and leaks the objects if they are still in use.

use std::sync::MutexGuard;
use std::time::Duration;

use ash::vk;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme, Allocator};
use gpu_allocator::MemoryLocation as GpuLocation;

use super::Context;
use crate::error::{Error, Result};

/// How long dropping the context waits for a pending one-shot before leaking its objects.
pub(crate) const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest staging buffer kept between one-shots (per direction); a larger copy makes a
/// one-off buffer, freed once its submission has completed.
const STAGING_KEEP: u64 = 256 << 20;

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

/// Which way a staging buffer carries bytes; each direction keeps its own buffer (upload
/// memory is write-combined, readback memory cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Host to device (`CpuToGpu`).
    Upload,
    /// Device to host (`GpuToCpu`).
    Download,
}

impl Direction {
    fn location(self) -> GpuLocation {
        match self {
            Direction::Upload => GpuLocation::CpuToGpu,
            Direction::Download => GpuLocation::GpuToCpu,
        }
    }
}

/// A host-visible, mapped staging buffer from gpu-allocator. Owned by the context's
/// one-shot state and destroyed explicitly ([`Staging::destroy`]), since the allocator and
/// device are the context's own.
pub(crate) struct Staging {
    pub(crate) buffer: vk::Buffer,
    allocation: Allocation,
    /// Bytes the buffer holds (the allocation may be larger).
    capacity: u64,
}

impl Staging {
    fn new(ctx: &Context, size: u64, direction: Direction) -> Result<Self> {
        // Checked first, so the error path below has nothing to free.
        let host_size = usize::try_from(size);
        if host_size.is_err() {
            return Err(Error::invalid(
                "size",
                format!("{size} bytes"),
                "a size this host can address",
            ));
        }
        let device = ctx.device();
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device and create info.
        let buffer = unsafe { device.create_buffer(&info, None) }
            .map_err(|r| Error::vk_sized("vkCreateBuffer", r, size))?;
        // SAFETY: `buffer` was just created from `device`.
        let requirements = unsafe { device.get_buffer_memory_requirements(buffer) };
        let allocated = ctx.allocator().allocate(&AllocationCreateDesc {
            name: "vkcuda staging",
            requirements,
            location: direction.location(),
            linear: true,
            allocation_scheme: AllocationScheme::DedicatedBuffer(buffer),
        });
        let allocation = match allocated {
            Ok(a) => a,
            Err(e) => {
                // SAFETY: the buffer is unbound and unused.
                unsafe { device.destroy_buffer(buffer, None) };
                return Err(match e {
                    gpu_allocator::AllocationError::OutOfMemory => Error::OutOfMemory {
                        call: "gpu-allocator staging allocation",
                        requested: size,
                    },
                    other => Error::Unsupported {
                        what: format!("a {size}-byte host-visible staging buffer"),
                        reason: other.to_string(),
                    },
                });
            }
        };
        let staging = Self {
            buffer,
            allocation,
            capacity: size,
        };
        // SAFETY: the handle is only passed to the bind below, while the allocation lives.
        let memory = unsafe { staging.allocation.memory() };
        // SAFETY: the allocation was made for this buffer's requirements; bound once.
        let bound =
            unsafe { device.bind_buffer_memory(buffer, memory, staging.allocation.offset()) };
        if let Err(r) = bound {
            // SAFETY: nothing was submitted with the buffer.
            unsafe { staging.destroy(device, &mut ctx.allocator()) };
            return Err(Error::vk("vkBindBufferMemory", r));
        }
        Ok(staging)
    }

    /// The first `len` bytes, mapped.
    pub(crate) fn bytes(&mut self, len: u64) -> Result<&mut [u8]> {
        let len = usize::try_from(len.min(self.capacity)).unwrap_or(usize::MAX);
        self.allocation
            .mapped_slice_mut()
            .and_then(|s| s.get_mut(..len))
            .ok_or_else(|| Error::Unsupported {
                what: "host access to staging memory".into(),
                reason: "gpu-allocator returned unmapped host-visible memory".into(),
            })
    }

    /// Destroys the buffer and frees its memory.
    ///
    /// # Safety
    /// 1. No pending submission uses the buffer; `device` and `allocator` made it.
    unsafe fn destroy(self, device: &ash::Device, allocator: &mut Allocator) {
        // SAFETY: precondition 1.
        unsafe { device.destroy_buffer(self.buffer, None) };
        if let Err(e) = allocator.free(self.allocation) {
            log::warn!("freeing staging memory failed: {e}");
        }
    }
}

/// The context's one-shot transfer state, behind its transfer lock (see
/// [`Context`]'s lock order).
pub(crate) struct OneShotState {
    cb: FencedCommandBuffer,
    /// Reusable staging buffers, by [`Direction`] (upload, download).
    kept: [Option<Staging>; 2],
    /// A one-off staging buffer above [`STAGING_KEEP`], alive until the next one-shot asks
    /// for staging (its readback reads it after the submission is done).
    oversized: Option<Staging>,
    /// A submission has been made whose fence has not been seen signalled.
    pending: bool,
}

impl OneShotState {
    pub(crate) fn new(device: &ash::Device, family: u32) -> Result<Self> {
        Ok(Self {
            cb: FencedCommandBuffer::new(device, family)?,
            kept: [None, None],
            oversized: None,
            pending: false,
        })
    }

    /// Waits (at most `timeout`) for a pending submission.
    ///
    /// # Errors
    /// [`Error::Timeout`]: it is still running (and stays pending); driver errors.
    pub(crate) fn settle(&mut self, ctx: &Context, timeout: Duration) -> Result<()> {
        if !self.pending {
            return Ok(());
        }
        self.cb
            .wait(ctx.device(), timeout, "an earlier one-shot Vulkan transfer")?;
        self.pending = false;
        Ok(())
    }

    /// Destroys everything and returns true, or, when a submission is still pending
    /// after a bounded wait, leaks it all and returns false (the caller must then leak the
    /// allocator too: its memory may still be in use). Called once, by the context's drop,
    /// before the device goes.
    pub(crate) fn teardown(&mut self, device: &ash::Device, allocator: &mut Allocator) -> bool {
        if self.pending {
            if let Err(e) = self
                .cb
                .wait(device, DROP_TIMEOUT, "a one-shot Vulkan transfer")
            {
                log::error!(
                    "a one-shot transfer is still pending at context drop ({e}); leaking its \
                     command pool, fence and staging memory"
                );
                return false;
            }
            self.pending = false;
        }
        let [a, b] = &mut self.kept;
        for s in [a, b, &mut self.oversized] {
            if let Some(s) = s.take() {
                // SAFETY: nothing is pending (above); made by this device and allocator.
                unsafe { s.destroy(device, allocator) };
            }
        }
        // SAFETY: nothing is pending (checked above); destroyed once, here.
        unsafe { self.cb.destroy(device) };
        true
    }
}

/// The context's one-shot state, locked (see [`Context::one_shot_lock`]).
pub(crate) struct OneShotLock<'a> {
    ctx: &'a Context,
    state: MutexGuard<'a, OneShotState>,
}

impl<'a> OneShotLock<'a> {
    pub(crate) fn new(ctx: &'a Context, state: MutexGuard<'a, OneShotState>) -> Self {
        Self { ctx, state }
    }

    /// A staging buffer of at least `len` bytes for `direction`, once the previous
    /// submission (which may use it) has completed: the kept one, grown if needed, or a
    /// one-off one above [`STAGING_KEEP`].
    ///
    /// # Errors
    /// [`Error::Timeout`] when an earlier one-shot is still running; allocation errors.
    pub(crate) fn staging(&mut self, len: u64, direction: Direction) -> Result<&mut Staging> {
        self.state.settle(self.ctx, self.ctx.one_shot_timeout())?;
        let ctx = self.ctx;
        let state = &mut *self.state;
        // The last one-off buffer stayed alive for its readback; its submission is done.
        if let Some(s) = state.oversized.take() {
            // SAFETY: its submission has completed (settled above).
            unsafe { s.destroy(ctx.device(), &mut ctx.allocator()) };
        }
        let slot = if len > STAGING_KEEP {
            &mut state.oversized
        } else {
            &mut state.kept[direction as usize]
        };
        if slot.as_ref().is_some_and(|s| s.capacity < len) {
            if let Some(old) = slot.take() {
                // SAFETY: the previous submission has completed (settled above).
                unsafe { old.destroy(ctx.device(), &mut ctx.allocator()) };
            }
        }
        if slot.is_none() {
            let size = if len > STAGING_KEEP {
                len
            } else {
                len.next_power_of_two().min(STAGING_KEEP)
            };
            *slot = Some(Staging::new(ctx, size, direction)?);
        }
        slot.as_mut().ok_or_else(|| Error::Unsupported {
            what: "a staging buffer".into(),
            reason: "none was kept".into(),
        })
    }

    /// The staging buffer [`OneShotLock::staging`] last handed out for `len` bytes.
    pub(crate) fn staged(&mut self, len: u64, direction: Direction) -> Option<&mut Staging> {
        let state = &mut *self.state;
        if len > STAGING_KEEP {
            state.oversized.as_mut()
        } else {
            state.kept[direction as usize].as_mut()
        }
    }

    /// Records commands with `record` and submits them on queue 0. After a successful
    /// submit the transfer is pending until [`OneShotLock::finish`] sees it complete.
    ///
    /// # Errors
    /// [`Error::Timeout`] when an earlier one-shot is still running or queue 0 stays
    /// locked; [`Error::InvalidArgument`] (`queue`) when this thread holds queue 0's lock;
    /// driver errors. On an error nothing was submitted.
    pub(crate) fn submit(&mut self, record: impl FnOnce(vk::CommandBuffer)) -> Result<()> {
        self.state.settle(self.ctx, self.ctx.one_shot_timeout())?;
        let device = self.ctx.device();
        let cmd = self.state.cb.cmd;
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the command buffer is not pending (settled above) and was allocated with
        // RESET_COMMAND_BUFFER.
        unsafe { device.begin_command_buffer(cmd, &begin) }
            .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
        record(cmd);
        // SAFETY: recording began above.
        unsafe { device.end_command_buffer(cmd) }
            .map_err(|r| Error::vk("vkEndCommandBuffer", r))?;
        let cmds = [cmd];
        let submit = vk::SubmitInfo::default().command_buffers(&cmds);
        let queue = self.ctx.queue_at(0)?;
        // SAFETY: the queue is locked; the fence is unsignalled (reset after each wait)
        // and only ours; the command buffer is executable and not pending.
        unsafe { device.queue_submit(*queue, &[submit], self.state.cb.fence) }
            .map_err(|r| Error::vk("vkQueueSubmit", r))?;
        self.state.pending = true;
        Ok(())
    }

    /// Waits (bounded) for the submission made by [`OneShotLock::submit`].
    ///
    /// # Errors
    /// [`Error::Timeout`] when it has not completed: it stays pending, and what it uses
    /// stays alive; driver errors (device lost).
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.state.settle(self.ctx, self.ctx.one_shot_timeout())
    }
}
