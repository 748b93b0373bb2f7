//! How frames cross between Vulkan and CUDA: [`Crossing`], one variant per [`SyncMode`],
//! each owning the objects its mode needs, so no mode can meet another mode's objects (or
//! their absence) at run time. Adding a mode means adding a variant.

use std::sync::Arc;

use ash::vk;
use cudarc::driver::CudaStream;

use super::relay::Relay;
use super::SyncMode;
use crate::cuda::memops;
use crate::cuda::{self, MappedBuffer};
use crate::error::{Error, Result};
use crate::interop::{SharedBuffer, SharedSemaphore};
use crate::util::OneShot;
use crate::vulkan::{self, BufferDesc, Semaphore};

/// The crossing objects of every slot, for one mode.
pub(super) enum Crossing {
    /// Per slot, two exported timelines imported into CUDA.
    Semaphores(Vec<SemaphorePair>),
    /// A mailbox word per slot that Vulkan writes and CUDA waits on, the per-slot command
    /// buffers that write it, and the relay that carries CUDA's signal back to Vulkan.
    LowLatency {
        fills: Vec<FillCommands>,
        mailbox: Mailbox,
        relay: Relay,
    },
}

/// One slot's semaphores in [`SyncMode::Semaphores`].
pub(super) struct SemaphorePair {
    /// Vulkan signals, CUDA waits.
    to_cuda: SharedSemaphore,
    /// CUDA signals, Vulkan waits.
    to_vulkan: SharedSemaphore,
}

/// What the crossing adds to a slot's producing batch (step 1).
pub(super) struct Produce<'a> {
    /// Runs after the caller's command buffers: the mailbox write.
    pub(super) command_buffer: Option<vk::CommandBuffer>,
    /// Signalled with the frame value: the semaphore CUDA waits on.
    pub(super) signal: Option<&'a Semaphore>,
}

impl Crossing {
    /// The objects of `mode` for `slots` slots.
    pub(super) fn new(
        mode: SyncMode,
        vk: &vulkan::Context,
        cu: &cuda::Context,
        slots: usize,
    ) -> Result<Self> {
        match mode {
            SyncMode::Semaphores => {
                let pairs = (0..slots)
                    .map(|_| {
                        Ok(SemaphorePair {
                            to_cuda: SharedSemaphore::timeline(vk, cu, 0)?,
                            to_vulkan: SharedSemaphore::timeline(vk, cu, 0)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Ok(Self::Semaphores(pairs))
            }
            SyncMode::LowLatency => {
                let buffer = SharedBuffer::new(vk, cu, &BufferDesc::new(4 * slots as u64))?;
                vk.fill_buffer(buffer.vulkan(), 0..buffer.size(), 0)?;
                let words = buffer.map(0..buffer.size())?;
                let mailbox = Mailbox { words, buffer };
                let relay = Relay::new(vk, cu, slots)?;
                let fills = (0..slots)
                    .map(|_| FillCommands::new(vk))
                    .collect::<Result<_>>()?;
                Ok(Self::LowLatency {
                    fills,
                    mailbox,
                    relay,
                })
            }
        }
    }

    /// The mode these objects serve.
    pub(super) fn mode(&self) -> SyncMode {
        match self {
            Self::Semaphores(_) => SyncMode::Semaphores,
            Self::LowLatency { .. } => SyncMode::LowLatency,
        }
    }

    /// The relay's failure, once (the semaphore mode has none).
    pub(super) fn take_error(&self) -> Result<()> {
        match self {
            Self::Semaphores(_) => Ok(()),
            Self::LowLatency { relay, .. } => relay.take_error(),
        }
    }

    /// Step 1: what `slot`'s producing batch adds for the frame with `value`. In the
    /// low-latency mode this records the slot's mailbox write.
    ///
    /// # Safety
    /// 1. The slot's previous frame has finished (its command buffer is not pending).
    pub(super) unsafe fn produce(&self, slot: usize, value: u64) -> Result<Produce<'_>> {
        match self {
            Self::Semaphores(pairs) => Ok(Produce {
                command_buffer: None,
                signal: Some(pairs[slot].to_cuda.vulkan().as_ref()),
            }),
            Self::LowLatency { fills, mailbox, .. } => {
                let fill = &fills[slot];
                // SAFETY: precondition 1; the mailbox has a word per slot and TRANSFER_DST
                // usage (BufferDesc::new).
                unsafe {
                    fill.record(
                        mailbox.buffer.vulkan().raw(),
                        Mailbox::offset(slot),
                        value as u32,
                    )
                }?;
                Ok(Produce {
                    command_buffer: Some(fill.cmd),
                    signal: None,
                })
            }
        }
    }

    /// Step 2: `stream` waits for `slot`'s crossing of `value`.
    ///
    /// # Safety
    /// 1. Step 1 of the frame with `value` was submitted.
    /// 2. `self` outlives the stream's work (the FrameSync synchronises its streams before
    ///    dropping it).
    pub(super) unsafe fn wait(
        &self,
        slot: usize,
        stream: &Arc<CudaStream>,
        value: u64,
    ) -> Result<()> {
        match self {
            Self::Semaphores(pairs) => pairs[slot].to_cuda.cuda().wait(stream, value),
            Self::LowLatency { mailbox, .. } => {
                let addr = mailbox.words.cu_device_ptr() + Mailbox::offset(slot);
                // SAFETY: the word lies in the live mapping (precondition 2); step 1
                // submitted the batch that writes `value` there (precondition 1).
                unsafe { memops::wait_geq(stream, addr, value as u32) }
            }
        }
    }

    /// Step 3: the crossing back to Vulkan of `value`, after `stream`'s work.
    ///
    /// # Safety
    /// 1. `self` outlives the stream's work (as [`Crossing::wait`] precondition 2).
    pub(super) unsafe fn signal(
        &self,
        slot: usize,
        stream: &Arc<CudaStream>,
        value: u64,
    ) -> Result<()> {
        match self {
            Self::Semaphores(pairs) => pairs[slot].to_vulkan.cuda().signal(stream, value),
            Self::LowLatency { relay, .. } => {
                let addr = relay.word(slot)?;
                // SAFETY: the word lies in the host allocation the relay keeps
                // (precondition 1).
                unsafe { memops::write(stream, addr, value as u32) }?;
                relay.expect(slot, value);
                relay.kick_after(stream);
                Ok(())
            }
        }
    }

    /// Whether step 3 of `value` was enqueued, even if it then returned an error (a failed
    /// `cuEventRecord` after the semaphore signal): it must not be enqueued again.
    pub(super) fn signalled(&self, slot: usize, value: u64) -> bool {
        match self {
            Self::Semaphores(pairs) => pairs[slot].to_vulkan.cuda().highest_signalled() >= value,
            // The relay is told only after the write was enqueued without error.
            Self::LowLatency { .. } => false,
        }
    }

    /// Step 4: the Vulkan semaphore that `slot`'s consuming batch waits on.
    pub(super) fn to_vulkan(&self, slot: usize) -> &Semaphore {
        match self {
            Self::Semaphores(pairs) => pairs[slot].to_vulkan.vulkan().as_ref(),
            Self::LowLatency { relay, .. } => relay.semaphore(slot),
        }
    }

    /// Stops the relay thread, if any, before the objects are leaked.
    pub(super) fn stop(&mut self) {
        if let Self::LowLatency { relay, .. } = self {
            relay.stop();
        }
    }
}

/// The per-slot command buffer that writes the frame value into the mailbox
/// ([`SyncMode::LowLatency`]), re-recorded every frame.
pub(super) struct FillCommands {
    vk: vulkan::Context,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
}

impl Drop for FillCommands {
    fn drop(&mut self) {
        // SAFETY: made from this device; FrameSync drops slots only after draining every
        // queue it submitted to, so the command buffer is not pending.
        unsafe { self.vk.device().destroy_command_pool(self.pool, None) };
    }
}

impl FillCommands {
    fn new(vk: &vulkan::Context) -> Result<Self> {
        let info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(vk.queue_family_index())
            .flags(vk::CommandPoolCreateFlags::TRANSIENT);
        // SAFETY: valid device and create info.
        let pool = unsafe { vk.device().create_command_pool(&info, None) }
            .map_err(|r| Error::vk("vkCreateCommandPool", r))?;
        let mut fill = Self {
            vk: vk.clone(),
            pool,
            cmd: vk::CommandBuffer::null(),
        };
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: `pool` was just created from this device (and is destroyed by `fill`).
        let cmds = unsafe { vk.device().allocate_command_buffers(&alloc) }
            .map_err(|r| Error::vk("vkAllocateCommandBuffers", r))?;
        fill.cmd = cmds.first().copied().ok_or(Error::Vulkan {
            call: "vkAllocateCommandBuffers",
            result: vk::Result::ERROR_UNKNOWN,
        })?;
        Ok(fill)
    }

    /// Records "barrier after everything earlier, then write `value` at `offset` of
    /// `mailbox`".
    ///
    /// # Safety
    /// 1. The command buffer is not pending (the slot's previous frame has finished).
    /// 2. `mailbox` is a live buffer of this device with `TRANSFER_DST` usage and
    ///    `offset + 4` bytes or more; `offset` is a multiple of 4.
    unsafe fn record(&self, mailbox: vk::Buffer, offset: u64, value: u32) -> Result<()> {
        let device = self.vk.device();
        // SAFETY: precondition 1: nothing allocated from the pool is pending.
        unsafe { device.reset_command_pool(self.pool, vk::CommandPoolResetFlags::empty()) }
            .map_err(|r| Error::vk("vkResetCommandPool", r))?;
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: the buffer was just reset (initial state).
        unsafe { device.begin_command_buffer(self.cmd, &begin) }
            .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::MEMORY_WRITE)
            .dst_access_mask(vk::AccessFlags::TRANSFER_WRITE);
        // SAFETY: recording; a global memory barrier with valid stage and access masks.
        unsafe {
            device.cmd_pipeline_barrier(
                self.cmd,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::PipelineStageFlags::TRANSFER,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            )
        };
        // SAFETY: recording; precondition 2 covers the buffer, offset and size.
        unsafe { device.cmd_fill_buffer(self.cmd, mailbox, offset, 4, value) };
        // SAFETY: recording began above.
        unsafe { device.end_command_buffer(self.cmd) }
            .map_err(|r| Error::vk("vkEndCommandBuffer", r))
    }
}

/// The mailbox of [`SyncMode::LowLatency`]: one 32-bit word per slot that Vulkan writes and
/// CUDA waits on.
pub(super) struct Mailbox {
    /// Declared first: the CUDA mapping goes before the buffer it maps.
    words: MappedBuffer,
    buffer: SharedBuffer,
}

impl Mailbox {
    fn offset(slot: usize) -> u64 {
        4 * slot as u64
    }
}
