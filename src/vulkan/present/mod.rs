//! [`Presenter`] (feature `window`): shows an [`ExternalImage`] on a window's surface (or a
//! headless one) through a swapchain, as one more Vulkan submission at the end of a frame.

mod blit;
mod ring;
mod surface;
mod swapchain;

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use ash::vk;
use raw_window_handle::{HasDisplayHandle, HasWindowHandle};

use self::ring::{Pending, Ring};
use self::surface::Surface;
use self::swapchain::{Request, Swapchain};
use super::image::{Barrier, Step};
use super::{Context, ExternalImage, ImageState, QueueUse, Semaphore, SemaphoreKind, Submission};
use crate::error::{Error, Result};

pub(crate) use self::surface::instance_extensions;
pub use self::surface::PresentTarget;

/// When presented images reach the screen (`VkPresentModeKHR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PresentMode {
    /// Queued, one per vertical blank, never torn; every surface has it.
    #[default]
    Fifo,
    /// The newest image replaces a queued one at the vertical blank: no tearing, no
    /// waiting for the display.
    Mailbox,
    /// At once, possibly torn.
    Immediate,
}

impl From<PresentMode> for vk::PresentModeKHR {
    fn from(m: PresentMode) -> Self {
        match m {
            PresentMode::Fifo => vk::PresentModeKHR::FIFO,
            PresentMode::Mailbox => vk::PresentModeKHR::MAILBOX,
            PresentMode::Immediate => vk::PresentModeKHR::IMMEDIATE,
        }
    }
}

/// How a [`Presenter`] sets up its swapchain.
#[derive(Debug, Clone)]
pub struct PresenterDesc {
    /// Present mode ([`PresentMode::Fifo`] by default). A mode the surface lacks is an
    /// [`Error::Unsupported`] listing those it has ([`Presenter::present_modes`]): fall
    /// back to FIFO, which every surface has.
    pub mode: PresentMode,
    /// Swapchain formats in order of preference, taken in the sRGB non-linear colour space;
    /// the surface's first format when it offers none of them. Default `B8G8R8A8_UNORM`,
    /// `R8G8B8A8_UNORM`: UNORM, so texels are shown as they are, with no sRGB encoding
    /// added by the blit.
    pub formats: Vec<vk::Format>,
    /// Swapchain extent where the surface leaves it to the swapchain (Wayland, headless);
    /// elsewhere the window's size is used. [`Presenter::resize`] changes it.
    pub extent: vk::Extent2D,
    /// Submissions in flight before [`Presenter::present`] waits for the oldest (1 to
    /// [`Presenter::MAX_IN_FLIGHT`], default 2).
    pub in_flight: usize,
    /// Bound on every host wait: an image to acquire, a submission slot, a drain.
    pub timeout: Duration,
}

impl PresenterDesc {
    /// Defaults for a `width` x `height` window.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            mode: PresentMode::Fifo,
            formats: vec![vk::Format::B8G8R8A8_UNORM, vk::Format::R8G8B8A8_UNORM],
            extent: vk::Extent2D { width, height },
            in_flight: 2,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the present mode.
    pub fn mode(mut self, mode: PresentMode) -> Self {
        self.mode = mode;
        self
    }
}

/// What [`Presenter::present`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentOutcome {
    /// Queued for presentation.
    Presented,
    /// Queued, but the swapchain no longer matches the surface exactly (`SUBOPTIMAL`, e.g.
    /// after a resize): it is recreated before the next present.
    Suboptimal,
    /// Nothing shown: the surface has a zero extent (a minimised window), or the swapchain
    /// went out of date again right after being recreated. Present again later.
    Skipped,
}

/// The source image's barriers around the transfer, and its state after them.
struct SourcePlan {
    before: Option<Barrier>,
    after: Option<Barrier>,
    next: ImageState,
}

/// Plans `image`'s barriers from `state` with its tracker, narrowed to the transfer: before
/// it, every earlier command's writes are made visible to the transfer read; after it, the
/// image goes back to its layout (`GENERAL` if it had none), with nothing written, so no
/// access to make available.
///
/// # Errors
/// [`Error::InvalidArgument`] (`image`) when the state does not allow it (released to CUDA).
fn plan_source(image: &ExternalImage, state: ImageState) -> Result<SourcePlan> {
    let back = if state.layout == vk::ImageLayout::UNDEFINED {
        vk::ImageLayout::GENERAL
    } else {
        state.layout
    };
    let (mut before, during) = image.plan(
        state,
        Step::Transition(vk::ImageLayout::TRANSFER_SRC_OPTIMAL),
    )?;
    let (mut after, next) = image.plan(during, Step::Transition(back))?;
    if let Some(b) = before.as_mut() {
        b.dst_stage = vk::PipelineStageFlags::TRANSFER;
        b.dst_access = vk::AccessFlags::TRANSFER_READ;
    }
    if let Some(b) = after.as_mut() {
        b.src_stage = vk::PipelineStageFlags::TRANSFER;
        b.src_access = vk::AccessFlags::empty();
    }
    Ok(SourcePlan {
        before,
        after,
        next,
    })
}

/// Whether one acquire → submit → present went through or met an out-of-date swapchain.
enum Attempt {
    Done(PresentOutcome),
    OutOfDate,
}

/// What the presenter owns, in drop order: submissions, then the swapchain, then the
/// surface (and the window it keeps alive).
struct Live {
    ring: Ring,
    swapchain: Option<Swapchain>,
    surface: Surface,
}

/// A swapchain on a window's surface that shows an [`ExternalImage`] per call.
///
/// # One present
/// [`Presenter::present`] is one Vulkan submission plus `vkQueuePresentKHR`:
/// 1. waits (bounded) for its oldest submission in flight, if
///    [`PresenterDesc::in_flight`] are pending;
/// 2. `vkAcquireNextImageKHR` (bounded by [`PresenterDesc::timeout`]) signalling that
///    slot's binary "acquired" semaphore (the semaphores are cycled with the slots, each
///    reused only after the submission that waited on it has completed);
/// 3. records the source image's move to `TRANSFER_SRC_OPTIMAL` and back to the layout it
///    had, planned by the image's tracker exactly as vkcuda's own copies are (the image
///    must be owned by Vulkan: acquire it from CUDA first), a copy where format and extent
///    match, else a blit (`BLIT_SRC`/`BLIT_DST` format features checked; RGBA8 → BGRA8 converts,
///    a different extent stretches) into the swapchain image, which goes
///    `UNDEFINED` → `TRANSFER_DST_OPTIMAL` → `PRESENT_SRC_KHR`;
/// 4. submits it on the caller's queue, waiting on the acquire semaphore (at `TRANSFER`)
///    and on the caller's timeline values, and signalling the swapchain **image's** own
///    binary "rendered" semaphore: one per image, reused only once that image is acquired
///    again, so a semaphore a present still waits on is never signalled again
///    (slang-rhi#777);
/// 5. presents that image, waiting on its "rendered" semaphore.
///
/// # With FrameSync
/// Presenting is one more Vulkan step after a frame's consuming batch (which acquires the
/// image back from CUDA): call `present` after
/// [`crate::interop::Frame::submit_commands_after_cuda`], on the queue that runs all the
/// image's Vulkan work, i.e. a FrameSync with [`crate::interop::QueueLayout::Single`]
/// (queue 0). The image's tracker plans its barriers in submission order, which is
/// execution order on one queue: the blit runs after the acquire barrier, and the next
/// render of the slot after the blit. (With `Split` or `PerSlot` lanes the next frame's
/// render, on another queue, would not wait for the blit, so vkcuda refuses it: see
/// [`ExternalImage`]'s "Queues".) `waits` adds Vulkan timeline
/// values to wait on. The host never waits on CUDA.
///
/// # Resizing and out-of-date swapchains
/// The swapchain is recreated (with `oldSwapchain`, after the presenter's submissions and
/// presents have drained, bounded) before the next acquire when [`Presenter::resize`] was
/// called, when an acquire or present returned `SUBOPTIMAL` ([`PresentOutcome::Suboptimal`]),
/// or when one returned `OUT_OF_DATE` (the present is retried once on the new swapchain).
/// A zero extent (minimised) skips presenting ([`PresentOutcome::Skipped`]).
///
/// # Drop
/// Waits (bounded) for its submissions and presents, then destroys the swapchain, then
/// the surface, then releases the window. If that wait fails it prints the error and leaks
/// them rather than destroy objects in use.
pub struct Presenter {
    live: ManuallyDrop<Live>,
    loader: ash::khr::swapchain::Device,
    desc: PresenterDesc,
    /// Recreate the swapchain before the next acquire.
    stale: bool,
    /// Queues presented on (drained before a recreation and on drop).
    queues: Vec<usize>,
    recreations: u64,
    ctx: Context,
}

impl std::fmt::Debug for Presenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presenter")
            .field("extent", &self.extent())
            .field("format", &self.format())
            .field("mode", &self.desc.mode)
            .field("recreations", &self.recreations)
            .finish_non_exhaustive()
    }
}

impl Drop for Presenter {
    fn drop(&mut self) {
        match self.live.ring.idle(&self.queues, self.desc.timeout) {
            // SAFETY: dropped once, here; nothing in flight uses it any more.
            Ok(()) => unsafe { ManuallyDrop::drop(&mut self.live) },
            Err(e) => log::error!(
                "dropping a Presenter whose presents did not finish ({e}); leaking its \
                 swapchain and surface"
            ),
        }
    }
}

impl Presenter {
    /// Most submissions in flight ([`PresenterDesc::in_flight`]).
    pub const MAX_IN_FLIGHT: usize = 8;

    /// A presenter for `window` (e.g. an `Arc<winit::window::Window>`), which it keeps
    /// alive until its surface is destroyed.
    ///
    /// # Errors
    /// * [`Error::Unsupported`]: `ctx` was not created with
    ///   [`PresentTarget::Display`] for the window's display (its instance lacks the surface
    ///   extension), its queue family cannot present to the surface, the window has no
    ///   handle yet, or the swapchain cannot be made as `desc` asks (see [`PresenterDesc`]).
    /// * [`Error::MissingExtension`]: its device has no `VK_KHR_swapchain` (the device
    ///   lacks it, or the context was not created with `ContextDesc::present`).
    /// * [`Error::InvalidArgument`] (`desc.in_flight`) outside `1..=MAX_IN_FLIGHT`.
    /// * Driver errors creating the surface, swapchain or sync objects.
    pub fn new<W>(ctx: &Context, window: Arc<W>, desc: &PresenterDesc) -> Result<Self>
    where
        W: HasWindowHandle + HasDisplayHandle + Send + Sync + 'static,
    {
        Self::check_desc(ctx, desc)?;
        Self::on(ctx, Surface::of_window(ctx, window)?, desc)
    }

    /// A presenter on a `VK_EXT_headless_surface` surface: acquire, blit and present run as
    /// with a window, on a GPU with no display. The context must be created with
    /// [`PresentTarget::Headless`].
    ///
    /// # Errors
    /// As [`Presenter::new`] ([`Error::Unsupported`] also when no driver offers the
    /// extension: `vulkan::enumerate_devices` says which devices can).
    pub fn headless(ctx: &Context, desc: &PresenterDesc) -> Result<Self> {
        Self::check_desc(ctx, desc)?;
        Self::on(ctx, Surface::headless(ctx)?, desc)
    }

    fn check_desc(ctx: &Context, desc: &PresenterDesc) -> Result<()> {
        if !(1..=Self::MAX_IN_FLIGHT).contains(&desc.in_flight) {
            return Err(Error::invalid(
                "desc.in_flight",
                format!("{}", desc.in_flight),
                format!("1..={}", Self::MAX_IN_FLIGHT),
            ));
        }
        if !ctx.swapchain_enabled() {
            return Err(Error::missing_extension(
                "VK_KHR_swapchain",
                format!(
                    "a Presenter on {} (made with ContextDesc::present)",
                    ctx.identity().name
                ),
            ));
        }
        Ok(())
    }

    fn on(ctx: &Context, surface: Surface, desc: &PresenterDesc) -> Result<Self> {
        surface.check_family(ctx.queue_family_index())?;
        let ring = Ring::new(ctx, desc.in_flight)?;
        let mut presenter = Self {
            live: ManuallyDrop::new(Live {
                ring,
                swapchain: None,
                surface,
            }),
            loader: ash::khr::swapchain::Device::new(ctx.instance(), ctx.device()),
            desc: desc.clone(),
            stale: true,
            queues: Vec::new(),
            recreations: 0,
            ctx: ctx.clone(),
        };
        presenter.recreate()?;
        Ok(presenter)
    }

    /// The swapchain's extent, or `None` while there is none (zero-sized surface).
    pub fn extent(&self) -> Option<vk::Extent2D> {
        self.live.swapchain.as_ref().map(|c| c.extent)
    }

    /// The swapchain's format, or `None` while there is none.
    pub fn format(&self) -> Option<vk::SurfaceFormatKHR> {
        self.live.swapchain.as_ref().map(|c| c.format)
    }

    /// How many times the swapchain was created (1 after construction, unless the surface
    /// had a zero extent).
    pub fn recreations(&self) -> u64 {
        self.recreations
    }

    /// The present modes the surface offers (of those [`PresentMode`] names).
    ///
    /// # Errors
    /// `vkGetPhysicalDeviceSurfacePresentModesKHR` errors.
    pub fn present_modes(&self) -> Result<Vec<PresentMode>> {
        let surface = &self.live.surface;
        // SAFETY: valid physical device and surface of one instance.
        let raw = unsafe {
            surface
                .loader
                .get_physical_device_surface_present_modes(self.ctx.physical_device(), surface.raw)
        }
        .map_err(|r| Error::vk("vkGetPhysicalDeviceSurfacePresentModesKHR", r))?;
        Ok([
            PresentMode::Fifo,
            PresentMode::Mailbox,
            PresentMode::Immediate,
        ]
        .into_iter()
        .filter(|&m| raw.contains(&m.into()))
        .collect())
    }

    /// Asks for a swapchain of `width` x `height` (where the surface lets the swapchain
    /// choose) and recreates it before the next present: call it when the window resizes.
    pub fn resize(&mut self, width: u32, height: u32) {
        self.desc.extent = vk::Extent2D { width, height };
        self.stale = true;
    }

    /// Shows mip level 0, layer 0 of `image` (see [`Presenter`] for the steps): submitted on
    /// queue `queue` of the context after waiting on `waits` (timeline semaphores and
    /// values, all stages wait), then presented from that queue. `image` and the semaphores
    /// are kept alive until the submission completes.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `image` is of another device, not 2D, lacks
    ///   `TRANSFER_SRC` usage, or is released to `VK_QUEUE_FAMILY_EXTERNAL` (`image`); a
    ///   binary semaphore or a value check of [`Context::submit_to`] fails (`waits`);
    ///   `queue` is not below [`Context::queue_count`]. Nothing was submitted.
    /// * [`Error::Unsupported`]: the copy needs a blit the formats do not support.
    /// * [`Error::Timeout`]: no swapchain image, or no free submission slot, within
    ///   [`PresenterDesc::timeout`].
    /// * Driver errors (surface lost, device lost, ...).
    pub fn present(
        &mut self,
        image: &Arc<ExternalImage>,
        queue: usize,
        waits: &[(&Arc<Semaphore>, u64)],
    ) -> Result<PresentOutcome> {
        self.check_source(image)?;
        for (sem, _) in waits {
            self.ctx.check_owns("waits", sem.context())?;
        }
        if let Some(i) = waits
            .iter()
            .position(|(s, _)| s.kind() != SemaphoreKind::Timeline)
        {
            return Err(Error::invalid(
                "waits",
                format!("entry {i} is a binary semaphore"),
                "timeline semaphores",
            ));
        }
        if queue >= self.ctx.queue_count() {
            return Err(Error::invalid(
                "queue",
                format!("queue index {queue}"),
                format!("an index below queue_count() = {}", self.ctx.queue_count()),
            ));
        }
        if !self.queues.contains(&queue) {
            self.queues.push(queue);
        }
        for _ in 0..2 {
            if self.stale || self.live.swapchain.is_none() {
                self.recreate()?;
            }
            if self.live.swapchain.is_none() {
                return Ok(PresentOutcome::Skipped);
            }
            match self.present_once(image, queue, waits)? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::OutOfDate => self.stale = true,
            }
        }
        Ok(PresentOutcome::Skipped)
    }

    /// Waits (at most `timeout`) until every present so far has been submitted, executed
    /// and handed to the presentation engine.
    ///
    /// # Errors
    /// [`Error::Timeout`]; driver errors.
    pub fn wait_idle(&mut self, timeout: Duration) -> Result<()> {
        self.live.ring.idle(&self.queues, timeout)
    }

    fn check_source(&self, image: &ExternalImage) -> Result<()> {
        self.ctx.check_owns("image", image.context())?;
        let desc = image.desc();
        let problem = if desc.kind.image_type() != vk::ImageType::TYPE_2D {
            Some(format!("is a {:?} image", desc.kind))
        } else if !desc.usage.contains(vk::ImageUsageFlags::TRANSFER_SRC) {
            Some(format!("usage {:?} lacks TRANSFER_SRC", desc.usage))
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::invalid(
                "image",
                p,
                "a 2D image of this context with TRANSFER_SRC usage",
            )),
            None => Ok(()),
        }
    }

    /// Drains, then replaces the swapchain (`None` for a zero-sized surface).
    fn recreate(&mut self) -> Result<()> {
        self.live.ring.idle(&self.queues, self.desc.timeout)?;
        let old = self.live.swapchain.take();
        self.stale = true;
        let request = Request {
            mode: self.desc.mode,
            formats: &self.desc.formats,
            extent: self.desc.extent,
            old: old.as_ref().map_or(vk::SwapchainKHR::null(), |c| c.raw),
        };
        let new = Swapchain::new(&self.ctx, &self.loader, &self.live.surface, &request);
        // The old swapchain is retired by the creation (successful or not); nothing of it is
        // in flight (drained above).
        drop(old);
        self.live.swapchain = new?;
        self.stale = false;
        if self.live.swapchain.is_some() {
            self.recreations += 1;
        }
        Ok(())
    }

    fn features(&self, format: vk::Format, tiling: vk::ImageTiling) -> vk::FormatFeatureFlags {
        // SAFETY: valid physical device of the context's instance.
        let props = unsafe {
            self.ctx
                .instance()
                .get_physical_device_format_properties(self.ctx.physical_device(), format)
        };
        if tiling == vk::ImageTiling::LINEAR {
            props.linear_tiling_features
        } else {
            props.optimal_tiling_features
        }
    }

    fn present_once(
        &mut self,
        image: &Arc<ExternalImage>,
        queue: usize,
        waits: &[(&Arc<Semaphore>, u64)],
    ) -> Result<Attempt> {
        let timeout = self.desc.timeout;
        let Some((chain_format, chain_extent)) = self
            .live
            .swapchain
            .as_ref()
            .map(|c| (c.format.format, c.extent))
        else {
            return Ok(Attempt::Done(PresentOutcome::Skipped));
        };
        let desc = image.desc();
        let src_extent = vk::Extent2D {
            width: desc.extent.width,
            height: desc.extent.height,
        };
        let transfer = blit::choose(
            blit::Side {
                format: desc.format,
                features: self.features(desc.format, desc.tiling),
                extent: src_extent,
            },
            blit::Side {
                format: chain_format,
                features: self.features(chain_format, vk::ImageTiling::OPTIMAL),
                extent: chain_extent,
            },
        )?;
        let s = self.live.ring.next(timeout)?;
        // Checked before acquiring (a source CUDA owns fails here, with no swapchain image
        // taken), and planned again below under the lock held up to the submission.
        let after: Vec<_> = waits.iter().map(|(sem, v)| (sem.raw(), *v)).collect();
        let order = Submission {
            queue,
            after: &after,
        };
        {
            let state = image.lock_state();
            state.check_order("image", &order)?;
            plan_source(image, state.now)?;
        }

        let Live {
            ring, swapchain, ..
        } = &mut *self.live;
        let Some(chain) = swapchain.as_ref() else {
            return Ok(Attempt::Done(PresentOutcome::Skipped));
        };
        let slot = &ring.slots[s];
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        // No lock is held across this bounded wait (the context's lock order).
        // SAFETY: the swapchain and semaphore belong to this device; the semaphore is
        // unsignalled with no pending operation (its last waiter's submission completed:
        // `ring.next` waited for the slot's fence).
        let acquired = unsafe {
            self.loader
                .acquire_next_image(chain.raw, nanos, slot.acquire.raw(), vk::Fence::null())
        };
        let (index, acquire_suboptimal) = match acquired {
            Ok(v) => v,
            Err(vk::Result::ERROR_OUT_OF_DATE_KHR) => return Ok(Attempt::OutOfDate),
            Err(vk::Result::TIMEOUT | vk::Result::NOT_READY) => {
                return Err(Error::Timeout {
                    what: "a swapchain image (vkAcquireNextImageKHR)".into(),
                    waited: timeout,
                })
            }
            Err(r) => return Err(Error::vk("vkAcquireNextImageKHR", r)),
        };
        let i = index as usize;
        let (dst, rendered) = (chain.images[i], &chain.rendered[i]);

        // The source's state is locked from planning up to the submission (lock order:
        // image state, then the queue inside `submit_to`), as `util::Commands` does, and
        // committed only if the submission went through.
        let mut state = image.lock_state();
        let d = self.ctx.device();
        let cmd = slot.cmd;
        let record = |plan: &SourcePlan| -> Result<()> {
            // SAFETY: the slot's buffer is not pending (`ring.next` waited); its pool
            // allows resetting single buffers.
            unsafe { d.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty()) }
                .map_err(|r| Error::vk("vkResetCommandBuffer", r))?;
            let begin = vk::CommandBufferBeginInfo::default()
                .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
            // SAFETY: reset above.
            unsafe { d.begin_command_buffer(cmd, &begin) }
                .map_err(|r| Error::vk("vkBeginCommandBuffer", r))?;
            if let Some(b) = plan.before {
                // SAFETY: recording, on the image's device (checked).
                unsafe { image.record_barrier(cmd, &b) };
            }
            let transfer_write = (
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            );
            // SAFETY: (for the three blocks below) recording on this device; `dst` is a
            // swapchain image of it, acquired by this frame; the source is in
            // TRANSFER_SRC_OPTIMAL after `before`, kept alive with the slot, and `transfer`
            // was chosen for both. The first barrier chains with the acquire wait (at
            // TRANSFER) and discards the old contents; after the second, the "rendered"
            // semaphore signal makes the write available to the present.
            unsafe {
                blit::record_swapchain_barrier(
                    d,
                    cmd,
                    dst,
                    (
                        vk::ImageLayout::UNDEFINED,
                        vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                    ),
                    (vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::empty()),
                    transfer_write,
                )
            };
            // SAFETY: as above.
            unsafe {
                blit::record(
                    d,
                    cmd,
                    transfer,
                    (image.raw(), src_extent),
                    (dst, chain_extent),
                )
            };
            // SAFETY: as above.
            unsafe {
                blit::record_swapchain_barrier(
                    d,
                    cmd,
                    dst,
                    (
                        vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                        vk::ImageLayout::PRESENT_SRC_KHR,
                    ),
                    transfer_write,
                    (
                        vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                        vk::AccessFlags::empty(),
                    ),
                )
            };
            if let Some(b) = plan.after {
                // SAFETY: as for `before`.
                unsafe { image.record_barrier(cmd, &b) };
            }
            // SAFETY: recording began above.
            unsafe { d.end_command_buffer(cmd) }.map_err(|r| Error::vk("vkEndCommandBuffer", r))?;
            let mut wait_list = vec![(&slot.acquire, 0, vk::PipelineStageFlags::TRANSFER)];
            wait_list.extend(
                waits
                    .iter()
                    .map(|(sem, v)| (sem.as_ref(), *v, vk::PipelineStageFlags::ALL_COMMANDS)),
            );
            // SAFETY: `cmd` was recorded above for the context's family and what it uses is
            // kept alive with the slot until its fence signals; the fence is unsignalled
            // (reset by `ring.next`) and only this slot's; the acquire semaphore has its
            // signal pending from the acquire above and no other waiter; `rendered` is
            // unsignalled (its last present executed its wait: that image was acquired
            // again); the caller's waits are timelines, kept alive with the slot.
            unsafe {
                self.ctx
                    .submit_to(queue, &[cmd], &wait_list, &[(rendered, 0)], slot.fence)
            }
        };
        let submitted = state
            .check_order("image", &order)
            .and_then(|()| plan_source(image, state.now))
            .and_then(|plan| {
                record(&plan)?;
                Ok(plan.next)
            });
        match submitted {
            Ok(next) => {
                state.now = next;
                state.used(QueueUse::new(queue, Vec::new()));
            }
            Err(e) => {
                // The image stays acquired and the acquire semaphore signalled with no
                // waiter: replace both (a new swapchain, a new semaphore) before the next
                // present.
                drop(state);
                self.stale = true;
                ring.renew_acquire(s)?;
                return Err(e);
            }
        }
        drop(state);
        ring.slots[s].pending = Some(Pending {
            _image: image.clone(),
            _waits: waits.iter().map(|(sem, _)| (*sem).clone()).collect(),
        });

        let semaphores = [rendered.raw()];
        let swapchains = [chain.raw];
        let indices = [index];
        let info = vk::PresentInfoKHR::default()
            .wait_semaphores(&semaphores)
            .swapchains(&swapchains)
            .image_indices(&indices);
        let q = self.ctx.queue_at(queue)?;
        // SAFETY: the queue is locked and can present to the surface (checked at creation);
        // the image was acquired and its "rendered" semaphore has a signal submitted above.
        let presented = unsafe { self.loader.queue_present(*q, &info) };
        drop(q);
        match presented {
            Ok(suboptimal) if suboptimal || acquire_suboptimal => {
                self.stale = true;
                Ok(Attempt::Done(PresentOutcome::Suboptimal))
            }
            Ok(_) => Ok(Attempt::Done(PresentOutcome::Presented)),
            // The present's semaphore wait still executes: nothing leaks.
            Err(vk::Result::ERROR_OUT_OF_DATE_KHR) => {
                self.stale = true;
                Ok(Attempt::Done(PresentOutcome::Skipped))
            }
            Err(r) => Err(Error::vk("vkQueuePresentKHR", r)),
        }
    }
}
