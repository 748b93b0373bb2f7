//! The presenter's submissions in flight: per slot a command buffer, a fence and the binary
//! semaphore its acquire signals, reused round-robin once the slot's fence has signalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ash::vk;

use crate::error::{Error, Result};
use crate::vulkan::{Context, ExternalImage, Semaphore, SemaphoreKind};

/// What a pending submission uses, kept alive until its fence signals.
pub(super) struct Pending {
    pub(super) _image: Arc<ExternalImage>,
    pub(super) _waits: Vec<Arc<Semaphore>>,
}

/// One submission in flight.
pub(super) struct Slot {
    pub(super) cmd: vk::CommandBuffer,
    pub(super) fence: vk::Fence,
    /// Signalled by `vkAcquireNextImageKHR`, waited on by this slot's submission: free
    /// again once the fence has signalled (the wait has executed).
    pub(super) acquire: Semaphore,
    pub(super) pending: Option<Pending>,
}

/// The slots, their command pool, and a fence for draining queues.
pub(super) struct Ring {
    pub(super) slots: Vec<Slot>,
    next: usize,
    pool: vk::CommandPool,
    drain_fence: vk::Fence,
    /// A drain was submitted and its wait timed out: wait on it before the next.
    drain_pending: bool,
    ctx: Context,
}

impl Drop for Ring {
    fn drop(&mut self) {
        let d = self.ctx.device();
        // The presenter waited for every slot's fence and drained its queues before
        // dropping the ring (or leaked it); all objects were made from `d`.
        for s in &self.slots {
            // SAFETY: as above.
            unsafe { d.destroy_fence(s.fence, None) };
        }
        // SAFETY: as above.
        unsafe { d.destroy_fence(self.drain_fence, None) };
        // SAFETY: as above; destroying the pool frees its command buffers.
        unsafe { d.destroy_command_pool(self.pool, None) };
    }
}

fn fence(ctx: &Context) -> Result<vk::Fence> {
    // SAFETY: valid device and create info.
    unsafe {
        ctx.device()
            .create_fence(&vk::FenceCreateInfo::default(), None)
    }
    .map_err(|r| Error::vk("vkCreateFence", r))
}

/// Waits (at most `timeout`) for `fence` and resets it.
fn wait_and_reset(ctx: &Context, fence: vk::Fence, timeout: Duration, what: &str) -> Result<()> {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: a fence of this device.
    match unsafe { ctx.device().wait_for_fences(&[fence], true, nanos) } {
        Ok(()) => {}
        Err(vk::Result::TIMEOUT) => {
            return Err(Error::Timeout {
                what: what.into(),
                waited: timeout,
            })
        }
        Err(r) => return Err(Error::vk("vkWaitForFences", r)),
    }
    // SAFETY: signalled, so no pending submission uses it.
    unsafe { ctx.device().reset_fences(&[fence]) }.map_err(|r| Error::vk("vkResetFences", r))
}

impl Ring {
    /// `n` slots on `ctx`'s queue family.
    pub(super) fn new(ctx: &Context, n: usize) -> Result<Self> {
        let d = ctx.device();
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(ctx.queue_family_index())
            .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER);
        // SAFETY: valid device and create info.
        let pool = unsafe { d.create_command_pool(&info, None) }
            .map_err(|r| Error::vk("vkCreateCommandPool", r))?;
        let drain_fence = match fence(ctx) {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: the pool is unused.
                unsafe { d.destroy_command_pool(pool, None) };
                return Err(e);
            }
        };
        // From here on, dropping `ring` frees what was made.
        let mut ring = Self {
            slots: Vec::with_capacity(n),
            next: 0,
            pool,
            drain_fence,
            drain_pending: false,
            ctx: ctx.clone(),
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(u32::try_from(n).unwrap_or(1));
        // SAFETY: valid device; the pool was made above.
        let cmds = unsafe { d.allocate_command_buffers(&alloc) }
            .map_err(|r| Error::vk("vkAllocateCommandBuffers", r))?;
        for cmd in cmds {
            let acquire = Semaphore::local(ctx, SemaphoreKind::Binary, 0)?;
            let fence = fence(ctx)?;
            ring.slots.push(Slot {
                cmd,
                fence,
                acquire,
                pending: None,
            });
        }
        Ok(ring)
    }

    /// The next slot, once its previous submission has finished (waited at most `timeout`).
    pub(super) fn next(&mut self, timeout: Duration) -> Result<usize> {
        let i = self.next;
        self.wait(i, timeout)?;
        self.next = (i + 1) % self.slots.len();
        Ok(i)
    }

    fn wait(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let slot = &mut self.slots[i];
        if slot.pending.is_some() {
            wait_and_reset(&self.ctx, slot.fence, timeout, "a present submission")?;
            slot.pending = None;
        }
        Ok(())
    }

    /// Waits (at most `timeout` in all) for every slot, then drains each of `queues` with an
    /// empty batch and a fence, so that the presents queued after the slots' submissions
    /// have executed their semaphore waits too.
    pub(super) fn idle(&mut self, queues: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.slots.len() {
            self.wait(i, deadline.saturating_duration_since(Instant::now()))?;
        }
        let what = "the presenter's queue to drain";
        for &q in queues {
            if self.drain_pending {
                let left = deadline.saturating_duration_since(Instant::now());
                wait_and_reset(&self.ctx, self.drain_fence, left, what)?;
                self.drain_pending = false;
            }
            // SAFETY: an empty batch; the drain fence is unsignalled (reset after each wait,
            // and no drain is pending) and used by nothing else.
            unsafe { self.ctx.submit_to(q, &[], &[], &[], self.drain_fence) }?;
            self.drain_pending = true;
            let left = deadline.saturating_duration_since(Instant::now());
            wait_and_reset(&self.ctx, self.drain_fence, left, what)?;
            self.drain_pending = false;
        }
        Ok(())
    }

    /// Replaces slot `i`'s acquire semaphore: after an acquire whose submission failed it
    /// is signalled with no waiter, and must not be signalled again.
    pub(super) fn renew_acquire(&mut self, i: usize) -> Result<()> {
        self.slots[i].acquire = Semaphore::local(&self.ctx, SemaphoreKind::Binary, 0)?;
        Ok(())
    }
}
