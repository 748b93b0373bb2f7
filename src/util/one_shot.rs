//! One-shot submissions that wait: staged copies between host memory and buffers or
//! images, fills, image hand-offs and compute dispatches, each recorded into the context's
//! one-shot command buffer, submitted on queue 0 and waited with a fence. For tests,
//! examples, setup, readback and the staged-copy baselines; per-frame work records into its
//! own command buffers ([`Commands`](super::Commands)).

use std::ops::Range;
use std::sync::MutexGuard;

use ash::vk;

use super::{ComputePass, ComputeTarget};
use crate::error::{Error, Result};
use crate::vulkan::{
    level_bytes, require_buffer_owned, BufferStep, Context, Direction, ExternalBuffer,
    ExternalImage, ImageDesc, OneShotLock, QueueUse, Step, Submission, Tracked,
};

/// What every one-shot submission is: on queue 0, after no wait.
const ONE_SHOT: Submission<'static> = Submission {
    queue: 0,
    after: &[],
};

/// One-shot operations on a [`vulkan::Context`](Context): each records one command buffer,
/// submits it on queue 0 and waits for it before returning. Import the trait to call them
/// (`use vkcuda::util::OneShot;`), as `wgpu::util::DeviceExt` is imported.
///
/// Every resource passed must belong to the context (same `VkDevice`); another context's is
/// an [`Error::InvalidArgument`] naming the argument.
pub trait OneShot {
    /// Copies `range` of `buffer` to the host (`vkCmdCopyBuffer` into a staging buffer).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the buffer belongs to another context (`buffer`), the
    /// range is empty or past the buffer's end, or the buffer lacks `TRANSFER_SRC` usage.
    fn read_buffer(&self, buffer: &ExternalBuffer, range: Range<u64>) -> Result<Vec<u8>>;

    /// Copies `data` into `buffer` at `offset` through a staging buffer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the buffer belongs to another context (`buffer`),
    /// `data` is empty or does not fit, or the buffer lacks `TRANSFER_DST` usage.
    fn write_buffer(&self, buffer: &ExternalBuffer, offset: u64, data: &[u8]) -> Result<()>;

    /// Fills `range` of `buffer` with the 32-bit `value` on the GPU (`vkCmdFillBuffer`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the buffer belongs to another context (`buffer`), the
    /// range is empty, past the end, or its start or length is not a multiple of 4 (the
    /// command's rule), or the buffer lacks `TRANSFER_DST` usage.
    fn fill_buffer(&self, buffer: &ExternalBuffer, range: Range<u64>, value: u32) -> Result<()>;

    /// Releases `buffer` to `VK_QUEUE_FAMILY_EXTERNAL` as a one-shot submission, and waits
    /// for it: when this returns, every earlier Vulkan write to it is complete and CUDA may
    /// use it (see [`ExternalBuffer`]'s ownership). For setup and tests; per frame, use
    /// [`Commands::release_buffer`](super::Commands::release_buffer) and signal a semaphore.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the buffer is already released, belongs to another
    /// context, or was last used on another queue by a submission not known to be complete;
    /// [`Error::Timeout`] if the submission hangs.
    fn release_buffer(&self, buffer: &ExternalBuffer) -> Result<()>;

    /// Acquires `buffer` back from `VK_QUEUE_FAMILY_EXTERNAL` as a one-shot submission, and
    /// waits for it. CUDA's work on it must have completed (its stream synchronised) before
    /// this is called.
    ///
    /// # Errors
    /// As [`OneShot::release_buffer`], when the buffer is not released.
    fn acquire_buffer(&self, buffer: &ExternalBuffer) -> Result<()>;

    /// Releases `image` to `VK_QUEUE_FAMILY_EXTERNAL` (in `GENERAL`) as a one-shot
    /// submission on the context's queue, and waits for it: when this returns, every
    /// earlier Vulkan write to the image is complete and CUDA may use it. For setup and
    /// tests; per frame, record [`ExternalImage::record_release`] and signal a semaphore.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is already released or belongs to another
    /// context; [`Error::Timeout`] if the submission hangs.
    fn release_image(&self, image: &ExternalImage) -> Result<()>;

    /// Acquires `image` from `VK_QUEUE_FAMILY_EXTERNAL` into `layout` as a one-shot
    /// submission, and waits for it. CUDA's work on the image must have completed (its
    /// stream synchronised) before this is called. For setup and tests; per frame, record
    /// [`ExternalImage::record_acquire`] and wait on CUDA's semaphore.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is not released, belongs to another
    /// context, or `layout` is not one it can take; [`Error::Timeout`] if it hangs.
    fn acquire_image(&self, image: &ExternalImage, layout: vk::ImageLayout) -> Result<()>;

    /// Copies mip `level` of array `layers` of `image` to the host through a staging
    /// buffer (`vkCmdCopyImageToBuffer`). The bytes are tightly packed: texel (or block)
    /// rows of the level, then its depth slices, then the next layer. The image must be
    /// owned by Vulkan; it is left in `GENERAL` layout.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `level` or `layers` out of range or empty, the image
    ///   lacks `TRANSFER_SRC` usage, is released to `VK_QUEUE_FAMILY_EXTERNAL`, or belongs
    ///   to another context.
    /// * [`Error::Unsupported`]: a format [`texel_block`](crate::vulkan::texel_block) does not know (depth/stencil,
    ///   multi-planar).
    fn read_image(&self, image: &ExternalImage, level: u32, layers: Range<u32>) -> Result<Vec<u8>>;

    /// Copies `data` (laid out as [`OneShot::read_image`] returns it) into mip `level` of
    /// array `layers` of `image` through a staging buffer (`vkCmdCopyBufferToImage`). The
    /// image must be owned by Vulkan; it is left in `GENERAL` layout (contents of other
    /// levels and layers kept, unless it was `UNDEFINED`).
    ///
    /// # Errors
    /// As [`OneShot::read_image`] (with `TRANSFER_DST`), and [`Error::InvalidArgument`]
    /// (`data`) when `data.len()` is not exactly the size of the region.
    fn write_image(
        &self,
        image: &ExternalImage,
        level: u32,
        layers: Range<u32>,
        data: &[u8],
    ) -> Result<()>;

    /// Runs `pass` over `target` once with `push` constants and waits for it: a one-shot
    /// submission for setup, tests and host-paced demos (not for a per-frame loop, where
    /// [`ComputePass::record`] goes into the frame's own command buffer).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `pass` or `target` belongs to another context; as
    /// [`ComputePass::record`]; submission failures.
    fn dispatch(&self, pass: &ComputePass, target: &ComputeTarget, push: &[u8]) -> Result<()>;
}

impl OneShot for Context {
    fn read_buffer(&self, buffer: &ExternalBuffer, range: Range<u64>) -> Result<Vec<u8>> {
        self.check_owns("buffer", buffer.context())?;
        buffer.check_range("range", &range)?;
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_SRC)?;
        let len = range.end - range.start;
        let mut lock = self.one_shot_lock();
        let staging = lock.staging(len, Direction::Download)?.buffer;
        buffer_use(self, &mut lock, buffer, |cmd| {
            let region = vk::BufferCopy::default().src_offset(range.start).size(len);
            // SAFETY: both buffers are alive for the submission (the staging one until it
            // is seen complete); the region was checked.
            unsafe {
                self.device()
                    .cmd_copy_buffer(cmd, buffer.raw(), staging, &[region])
            };
        })?;
        staged_bytes(&mut lock, len, Direction::Download)
    }

    fn write_buffer(&self, buffer: &ExternalBuffer, offset: u64, data: &[u8]) -> Result<()> {
        self.check_owns("buffer", buffer.context())?;
        let range = offset..offset.saturating_add(data.len() as u64);
        buffer.check_range("data", &range)?;
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_DST)?;
        let len = data.len() as u64;
        let mut lock = self.one_shot_lock();
        let staging = lock.staging(len, Direction::Upload)?;
        staging.bytes(len)?.copy_from_slice(data);
        let staging = staging.buffer;
        buffer_use(self, &mut lock, buffer, |cmd| {
            let region = vk::BufferCopy::default().dst_offset(offset).size(len);
            // SAFETY: both buffers are alive for the submission (the staging one until it
            // is seen complete); the region was checked.
            unsafe {
                self.device()
                    .cmd_copy_buffer(cmd, staging, buffer.raw(), &[region])
            };
        })
    }

    fn fill_buffer(&self, buffer: &ExternalBuffer, range: Range<u64>, value: u32) -> Result<()> {
        self.check_owns("buffer", buffer.context())?;
        buffer.check_range("range", &range)?;
        buffer.check_usage(vk::BufferUsageFlags::TRANSFER_DST)?;
        if !range.start.is_multiple_of(4) || !(range.end - range.start).is_multiple_of(4) {
            return Err(Error::invalid(
                "range",
                format!("{range:?} is not 4-byte aligned"),
                "start and length multiples of 4 (vkCmdFillBuffer)",
            ));
        }
        let mut lock = self.one_shot_lock();
        buffer_use(self, &mut lock, buffer, |cmd| {
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

    fn release_buffer(&self, buffer: &ExternalBuffer) -> Result<()> {
        buffer_hand_off(self, buffer, BufferStep::Release)
    }

    fn acquire_buffer(&self, buffer: &ExternalBuffer) -> Result<()> {
        buffer_hand_off(self, buffer, BufferStep::Acquire)
    }

    fn release_image(&self, image: &ExternalImage) -> Result<()> {
        one_shot(self, image, Step::Release)
    }

    fn acquire_image(&self, image: &ExternalImage, layout: vk::ImageLayout) -> Result<()> {
        one_shot(self, image, Step::Acquire(layout))
    }

    fn read_image(&self, image: &ExternalImage, level: u32, layers: Range<u32>) -> Result<Vec<u8>> {
        let len = check_copy(
            self,
            image,
            level,
            &layers,
            vk::ImageUsageFlags::TRANSFER_SRC,
        )?;
        let mut lock = self.one_shot_lock();
        let staging = lock.staging(len, Direction::Download)?.buffer;
        copy_image(
            self,
            &mut lock,
            image,
            vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
            |cmd| {
                let region = copy_region(image.desc(), level, &layers);
                // SAFETY: image and staging buffer are alive for the submission; the region
                // was checked against the image and the buffer was sized for it.
                unsafe {
                    self.device().cmd_copy_image_to_buffer(
                        cmd,
                        image.raw(),
                        vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                        staging,
                        &[region],
                    )
                };
            },
        )?;
        staged_bytes(&mut lock, len, Direction::Download)
    }

    fn write_image(
        &self,
        image: &ExternalImage,
        level: u32,
        layers: Range<u32>,
        data: &[u8],
    ) -> Result<()> {
        let len = check_copy(
            self,
            image,
            level,
            &layers,
            vk::ImageUsageFlags::TRANSFER_DST,
        )?;
        if data.len() as u64 != len {
            let e = image.desc().level_extent(level);
            return Err(Error::invalid(
                "data",
                format!("{} bytes", data.len()),
                format!(
                    "exactly {len} bytes: level {level} ({}x{}x{}) x {} layers, tightly packed",
                    e.width,
                    e.height,
                    e.depth,
                    layers.len()
                ),
            ));
        }
        let mut lock = self.one_shot_lock();
        let staging = lock.staging(len, Direction::Upload)?;
        staging.bytes(len)?.copy_from_slice(data);
        let staging = staging.buffer;
        copy_image(
            self,
            &mut lock,
            image,
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
            |cmd| {
                let region = copy_region(image.desc(), level, &layers);
                // SAFETY: image and staging buffer are alive for the submission; the region
                // was checked against the image and the buffer was sized for it.
                unsafe {
                    self.device().cmd_copy_buffer_to_image(
                        cmd,
                        staging,
                        image.raw(),
                        vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                        &[region],
                    )
                };
            },
        )
    }

    fn dispatch(&self, pass: &ComputePass, target: &ComputeTarget, push: &[u8]) -> Result<()> {
        self.check_owns("pass", pass.context())?;
        let image = target.image();
        self.check_owns("target", image.context())?;
        pass.check_push(push)?;
        // Lock order: the one-shot state, then the image's state (see `Context`).
        let mut lock = self.one_shot_lock();
        let state = image.lock_state();
        let (barrier, next) = image.plan(state.now, Step::Transition(vk::ImageLayout::GENERAL))?;
        let mut recorded = Ok(());
        let id = submit_use(&mut lock, state, "target", next, |cmd| {
            if let Some(b) = barrier {
                // SAFETY: `cmd` is the context's recording one-shot command buffer.
                unsafe { image.record_barrier(cmd, &b) };
            }
            // SAFETY: `cmd` is recording, for this queue family; the transfer stays
            // pending (so `target` must outlive it, as `finish` waits below, and on a
            // timeout the caller still holds it); the image is in GENERAL at this point.
            recorded = unsafe { pass.record_dispatch(cmd, target, push) };
        })?;
        lock.finish()?;
        image.lock_state().complete(id);
        recorded
    }
}

/// The first `len` bytes of the staging buffer a completed readback filled.
fn staged_bytes(lock: &mut OneShotLock<'_>, len: u64, direction: Direction) -> Result<Vec<u8>> {
    let staging = lock
        .staged(len, direction)
        .ok_or_else(|| Error::Unsupported {
            what: "reading back a staged copy".into(),
            reason: "its staging buffer is gone".into(),
        })?;
    Ok(staging.bytes(len)?.to_vec())
}

fn one_shot(ctx: &Context, image: &ExternalImage, step: Step) -> Result<()> {
    ctx.check_owns("image", image.context())?;
    // Lock order: the one-shot state, then the image's state (see `Context`).
    let mut lock = ctx.one_shot_lock();
    let state = image.lock_state();
    let (barrier, next) = image.plan(state.now, step)?;
    let id = submit_use(&mut lock, state, "image", next, |cmd| {
        if let Some(b) = barrier {
            // SAFETY: `cmd` is the context's recording one-shot command buffer.
            unsafe { image.record_barrier(cmd, &b) };
        }
    })?;
    lock.finish()?;
    image.lock_state().complete(id);
    Ok(())
}

/// Submits `record` as a one-shot use of a tracked resource (named `arg` in errors)
/// whose state becomes `next` with it, after checking that queue 0 may use it now. Once
/// submitted, the barriers will run, so the tracked state follows them even if the wait
/// that follows times out; the lock on the state is released before that wait. Returns
/// the use's id, for [`Tracked::complete`] once the wait has seen it finish.
fn submit_use<S>(
    lock: &mut OneShotLock<'_>,
    mut tracked: MutexGuard<'_, Tracked<S>>,
    arg: &'static str,
    next: S,
    record: impl FnOnce(vk::CommandBuffer),
) -> Result<u64> {
    tracked.check_order(arg, &ONE_SHOT)?;
    lock.submit(record)?;
    let queue_use = QueueUse::new(ONE_SHOT.queue, Vec::new());
    let id = queue_use.id();
    tracked.now = next;
    tracked.used(queue_use);
    Ok(id)
}

/// Submits `record`, a one-shot use of `buffer`, which must be owned by Vulkan, and waits.
fn buffer_use(
    ctx: &Context,
    lock: &mut OneShotLock<'_>,
    buffer: &ExternalBuffer,
    record: impl FnOnce(vk::CommandBuffer),
) -> Result<()> {
    // Lock order: the one-shot state, then the buffer's owner (see `Context`).
    let owner = buffer.lock_owner();
    require_buffer_owned(owner.now)?;
    let now = owner.now;
    let id = submit_use(lock, owner, "buffer", now, |cmd| {
        record(cmd);
        // SAFETY: `cmd` is the context's recording one-shot command buffer.
        unsafe { super::record_transfer_writes_visible(ctx.device(), cmd) };
    })?;
    lock.finish()?;
    buffer.lock_owner().complete(id);
    Ok(())
}

/// Releases or acquires `buffer` as a one-shot, and waits.
fn buffer_hand_off(ctx: &Context, buffer: &ExternalBuffer, step: BufferStep) -> Result<()> {
    ctx.check_owns("buffer", buffer.context())?;
    let mut lock = ctx.one_shot_lock();
    let owner = buffer.lock_owner();
    let (barrier, next) = buffer.plan(owner.now, step)?;
    let id = submit_use(&mut lock, owner, "buffer", next, |cmd| {
        // SAFETY: `cmd` is the context's recording one-shot command buffer.
        unsafe { buffer.record_barrier(cmd, &barrier) };
    })?;
    lock.finish()?;
    buffer.lock_owner().complete(id);
    Ok(())
}

/// Checks a staged copy and returns its size in bytes.
fn check_copy(
    ctx: &Context,
    image: &ExternalImage,
    level: u32,
    layers: &Range<u32>,
    usage: vk::ImageUsageFlags,
) -> Result<u64> {
    ctx.check_owns("image", image.context())?;
    let desc = image.desc();
    if !desc.usage.contains(usage) {
        return Err(Error::invalid(
            "image",
            format!("usage {:?} lacks {usage:?}", desc.usage),
            format!("an image created with {usage:?}"),
        ));
    }
    if level >= desc.mip_levels {
        return Err(Error::invalid(
            "level",
            format!("{level}"),
            format!("below the image's {} mip levels", desc.mip_levels),
        ));
    }
    if layers.start >= layers.end || layers.end > desc.layers {
        return Err(Error::invalid(
            "layers",
            format!("{layers:?}"),
            format!("a non-empty range within 0..{}", desc.layers),
        ));
    }
    let bytes = level_bytes(desc, level).ok_or_else(|| Error::Unsupported {
        what: format!("staged copy of a {:?} image", desc.format),
        reason: "vkcuda knows no texel size for this format (depth/stencil, multi-planar \
                 or subsampled formats are not copied)"
            .into(),
    })?;
    let len = bytes * u64::from(layers.end - layers.start);
    if usize::try_from(len).is_err() {
        return Err(Error::invalid(
            "layers",
            format!("{len} bytes to copy"),
            "a region that fits in host memory",
        ));
    }
    Ok(len)
}

/// Moves the image to `layout` (`TRANSFER_SRC_OPTIMAL` or `TRANSFER_DST_OPTIMAL`),
/// records `copy` in it, moves the image to `GENERAL` (making the copy's writes visible
/// to later commands) and the transfer's writes visible to the host; submits, commits the
/// image's state and waits.
fn copy_image(
    ctx: &Context,
    lock: &mut OneShotLock<'_>,
    image: &ExternalImage,
    layout: vk::ImageLayout,
    copy: impl FnOnce(vk::CommandBuffer),
) -> Result<()> {
    let state = image.lock_state();
    let (mut before, during) = image.plan(state.now, Step::Transition(layout))?;
    let (mut after, next) = image.plan(during, Step::Transition(vk::ImageLayout::GENERAL))?;
    // Narrow the copy's side of both barriers to the transfer stage and its access.
    let copy_access = if layout == vk::ImageLayout::TRANSFER_SRC_OPTIMAL {
        vk::AccessFlags::TRANSFER_READ
    } else {
        vk::AccessFlags::TRANSFER_WRITE
    };
    if let Some(b) = before.as_mut() {
        b.dst_stage = vk::PipelineStageFlags::TRANSFER;
        b.dst_access = copy_access;
    }
    if let Some(b) = after.as_mut() {
        b.src_stage = vk::PipelineStageFlags::TRANSFER;
        b.src_access = copy_access & vk::AccessFlags::TRANSFER_WRITE;
    }
    let id = submit_use(lock, state, "image", next, |cmd| {
        if let Some(b) = before {
            // SAFETY: `cmd` is the context's recording one-shot command buffer.
            unsafe { image.record_barrier(cmd, &b) };
        }
        copy(cmd);
        if let Some(b) = after {
            // SAFETY: as above.
            unsafe { image.record_barrier(cmd, &b) };
        }
        // SAFETY: `cmd` is the context's recording one-shot command buffer.
        unsafe { super::record_transfer_writes_visible(ctx.device(), cmd) };
    })?;
    lock.finish()?;
    image.lock_state().complete(id);
    Ok(())
}

/// The whole of mip `level` of `layers`, from offset 0 of a tightly packed buffer.
pub(crate) fn copy_region(
    desc: &ImageDesc,
    level: u32,
    layers: &Range<u32>,
) -> vk::BufferImageCopy {
    vk::BufferImageCopy {
        buffer_offset: 0,
        buffer_row_length: 0,
        buffer_image_height: 0,
        image_subresource: vk::ImageSubresourceLayers {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            mip_level: level,
            base_array_layer: layers.start,
            layer_count: layers.end - layers.start,
        },
        image_offset: vk::Offset3D::default(),
        image_extent: desc.level_extent(level),
    }
}
