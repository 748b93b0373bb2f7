//! [`ExportPool`]: many exportable buffers and images in a few exported blocks.
//!
//! A dedicated export costs one `VkDeviceMemory`, one fd and (on the CUDA side) one import
//! per resource. The pool instead allocates one exportable block per size class and binds
//! resources into it at offsets (`vkBind{Buffer,Image}Memory` with a non-zero offset, one
//! `VkBuffer` or `VkImage` per sub-allocation), so a block is exported and imported once for
//! all of them.
//!
//! # Size classes and alignment
//! A request is served from the class of the smallest power of two that is at least
//! [`MIN_SLOT`] bytes, the resource's `VkMemoryRequirements::size` and its `alignment`. Each
//! block holds equal slots of its class, so a slot's offset is a multiple of the class size
//! and therefore of:
//! * the resource's `VkMemoryRequirements::alignment` (a power of two;
//!   VUID-vkBindBufferMemory-memoryOffset-01036, VUID-vkBindImageMemory-memoryOffset-01048);
//! * [`MIN_SLOT`] = 256 bytes, CUDA's own allocation alignment (what `cuMemAlloc` returns,
//!   CUDA Programming Guide "Device Memory Accesses"), and the rule of
//!   [`crate::cuda::MAP_OFFSET_ALIGNMENT`], so a CUDA pointer at a slot's offset is as
//!   aligned as a `cuMemAlloc` pointer.
//!
//! A class is also keyed by memory type and by tiling:
//! * **Memory type.** Buffers live in the type the pool chose at creation; an image in the
//!   first device-local type its requirements allow, which drivers may keep apart from
//!   buffers' (a block's export names its type: [`MemoryImport::memory_type`]).
//! * **Tiling.** `bufferImageGranularity` (Vulkan spec, "Buffer-Image Granularity") keeps
//!   linear resources (buffers, LINEAR images) and OPTIMAL images out of one granule of the
//!   same allocation. OPTIMAL images get blocks of their own, so no block mixes the two and
//!   the rule holds whatever the granularity.
//!
//! Images whose export the driver allows only as a dedicated allocation
//! (`VK_EXTERNAL_MEMORY_FEATURE_DEDICATED_ONLY_BIT`, or
//! `VkMemoryDedicatedRequirements::requiresDedicatedAllocation`) are refused: create them
//! with [`ExternalImage::new`]. `nonCoherentAtomSize` only matters for host-mapped
//! non-coherent memory; blocks are device-local.
//!
//! # Lifetime
//! Each buffer holds its block ([`PoolBlock`], an `Arc`); dropping the buffer returns its
//! slot. The pool holds blocks weakly, so a block's memory is freed when its last buffer
//! (and the last importer holding it, e.g. a CUDA import) is gone, and the next request of
//! that class allocates a new block.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ash::vk;

use super::buffer::{check_size, create_buffer, exportable_flags};
use super::image::create_exportable;
use super::memory::{allocate_exportable_block, check_handle_type, choose_memory_type};
use super::memory_fd::export_handle;
use super::{BufferDesc, Context, ExternalBuffer, ExternalImage, ImageDesc};
use crate::error::{Error, Result};
use crate::external::{MemoryHandleType, MemoryImport};

/// The smallest slot, and the alignment of every slot's offset: CUDA's allocation
/// alignment (256 bytes).
pub const MIN_SLOT: u64 = 256;

/// What an [`ExportPool`] is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDesc {
    /// Usage of every buffer in the pool.
    pub usage: vk::BufferUsageFlags,
    /// How blocks are exported.
    pub handle_type: MemoryHandleType,
    /// Size of a block in bytes; a class larger than this gets blocks of one slot.
    pub block_size: u64,
}

impl Default for PoolDesc {
    /// Transfer and storage usage (as [`BufferDesc::new`]), opaque fds, 64 MiB blocks.
    fn default() -> Self {
        let buffer = BufferDesc::new(1);
        Self {
            usage: buffer.usage,
            handle_type: buffer.handle_type,
            block_size: 64 << 20,
        }
    }
}

/// A pool of exportable buffers, sub-allocated from one exported block per size class.
/// Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct ExportPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    ctx: Context,
    desc: PoolDesc,
    flags: vk::ExternalMemoryHandleTypeFlags,
    memory_type: u32,
    /// Blocks by class, held weakly (a block lives while its resources do).
    classes: Mutex<BTreeMap<Class, Vec<Weak<PoolBlock>>>>,
}

/// What may share a block: resources of one tiling kind, memory type and slot size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Class {
    /// OPTIMAL images (which `bufferImageGranularity` keeps apart from linear resources).
    optimal: bool,
    memory_type: u32,
    slot_size: u64,
}

impl std::fmt::Debug for ExportPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportPool")
            .field("desc", &self.inner.desc)
            .field("memory_type", &self.inner.memory_type)
            .field("live_blocks", &self.live_blocks())
            .finish()
    }
}

/// The slot size for a buffer of these requirements, or `None` when it overflows.
fn slot_size(requirements: &vk::MemoryRequirements) -> Option<u64> {
    requirements
        .size
        .max(requirements.alignment)
        .max(MIN_SLOT)
        .checked_next_power_of_two()
}

/// The block size for a class: the pool's block size rounded down to whole slots, or one
/// slot when the class is larger.
fn block_size(pool_block: u64, slot: u64) -> u64 {
    (pool_block / slot).max(1) * slot
}

impl ExportPool {
    /// Makes an empty pool; blocks are allocated on demand.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] (`desc.block_size`): below [`MIN_SLOT`] or above
    ///   `maxMemoryAllocationSize`.
    /// * [`Error::Unsupported`]: the handle type cannot be exported for `desc.usage` (as
    ///   [`ExternalBuffer::new`]).
    pub fn new(ctx: &Context, desc: &PoolDesc) -> Result<Self> {
        if desc.block_size < MIN_SLOT {
            return Err(Error::invalid(
                "desc.block_size",
                format!("{} bytes", desc.block_size),
                format!("at least MIN_SLOT ({MIN_SLOT}) bytes"),
            ));
        }
        check_size(ctx, desc.block_size).map_err(|_| {
            Error::invalid(
                "desc.block_size",
                format!("{} bytes", desc.block_size),
                format!(
                    "at most maxMemoryAllocationSize ({})",
                    ctx.max_allocation_size()
                ),
            )
        })?;
        let probe = BufferDesc {
            size: MIN_SLOT,
            usage: desc.usage,
            handle_type: desc.handle_type,
        };
        let flags = exportable_flags(ctx, &probe)?;
        let requirements = create_buffer(ctx.device(), &probe, flags)?.requirements();
        let memory_type = choose_memory_type(ctx, requirements.memory_type_bits)?;
        Ok(Self {
            inner: Arc::new(PoolInner {
                ctx: ctx.clone(),
                desc: desc.clone(),
                flags,
                memory_type,
                classes: Mutex::default(),
            }),
        })
    }

    /// A `size`-byte buffer bound at a slot of a block of its size class (see the module
    /// docs for classes and alignment). It cannot be exported on its own:
    /// [`ExternalBuffer::pool_slot`] gives its block (to export once) and its offset.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] (`size`): 0, above `maxMemoryAllocationSize`, or a slot
    ///   that would not fit one allocation.
    /// * [`Error::Unsupported`]: the buffer's memory types exclude the pool's, or the driver
    ///   requires a dedicated allocation for it.
    /// * [`Error::OutOfMemory`] when a new block cannot be allocated.
    pub fn allocate(&self, size: u64) -> Result<ExternalBuffer> {
        let ctx = &self.inner.ctx;
        check_size(ctx, size).map_err(|e| match e {
            Error::InvalidArgument {
                problem, expected, ..
            } => Error::InvalidArgument {
                arg: "size",
                problem,
                expected,
            },
            other => other,
        })?;
        let desc = BufferDesc {
            size,
            usage: self.inner.desc.usage,
            handle_type: self.inner.desc.handle_type,
        };
        let buffer = create_buffer(ctx.device(), &desc, self.inner.flags)?;
        buffer.check_shareable("a pool block", || format!("a {size}-byte buffer"))?;
        let requirements = buffer.requirements();
        if requirements.memory_type_bits & (1 << self.inner.memory_type) == 0 {
            return Err(Error::Unsupported {
                what: format!("a {size}-byte buffer in this pool"),
                reason: format!(
                    "its memoryTypeBits {:#b} exclude the pool's memory type {}",
                    requirements.memory_type_bits, self.inner.memory_type
                ),
            });
        }
        let slot_size = self.slot_size_for(&requirements, "size", || format!("{size} bytes"))?;
        let slot = self.take_slot(Class {
            optimal: false,
            memory_type: self.inner.memory_type,
            slot_size,
        })?;
        // SAFETY: `buffer` was made by `create_buffer` with the pool's handle type; it may
        // share memory and its memory types allow the block's (checked above); the slot's
        // offset is a
        // multiple of its power-of-two size, which covers the requirements' size and
        // alignment (`slot_size`); the block holds linear resources only (its class).
        unsafe { ExternalBuffer::pooled(ctx, buffer, slot, &desc) }
    }

    /// An image of `desc` bound at a slot of a block of its class (see the module docs:
    /// OPTIMAL images never share a block with linear resources), checked as
    /// [`ExternalImage::new`] checks it. It starts owned by Vulkan in `UNDEFINED` layout and
    /// cannot be exported on its own: [`ExternalImage::pool_slot`] gives its block and
    /// offset.
    ///
    /// # Errors
    /// * Every error of [`ExternalImage::new`] for `desc`.
    /// * [`Error::InvalidArgument`]: `desc.handle_type` is not the pool's
    ///   (`desc.handle_type`), or the image needs a slot larger than one allocation may be
    ///   (`desc`).
    /// * [`Error::Unsupported`]: the driver exports such an image only as a dedicated
    ///   allocation.
    /// * [`Error::OutOfMemory`] when a new block cannot be allocated.
    pub fn allocate_image(&self, desc: &ImageDesc) -> Result<ExternalImage> {
        let ctx = &self.inner.ctx;
        check_handle_type(desc.handle_type, self.inner.desc.handle_type, "the pool")?;
        let (image, _, external) = create_exportable(ctx, desc)?;
        let what = || {
            format!(
                "a {}x{}x{} {:?} {:?} image with {} levels and {} layers",
                desc.extent.width,
                desc.extent.height,
                desc.extent.depth,
                desc.format,
                desc.tiling,
                desc.mip_levels,
                desc.layers
            )
        };
        if external.dedicated_only {
            return Err(Error::Unsupported {
                what: format!("{} in a pool block", what()),
                reason: "the driver exports it only as a dedicated allocation \
                         (VK_EXTERNAL_MEMORY_FEATURE_DEDICATED_ONLY_BIT): create it with \
                         ExternalImage::new"
                    .into(),
            });
        }
        image.check_shareable("a pool block", what)?;
        let requirements = image.requirements();
        let memory_type = choose_memory_type(ctx, requirements.memory_type_bits)?;
        let slot_size = self.slot_size_for(&requirements, "desc", what)?;
        let slot = self.take_slot(Class {
            optimal: desc.tiling == vk::ImageTiling::OPTIMAL,
            memory_type,
            slot_size,
        })?;
        // SAFETY: `image` was made by `create_exportable` for `desc` with the pool's handle
        // type and may share memory (both checked above); the block is of the type chosen
        // from its memoryTypeBits, and
        // the slot's offset is a multiple of its power-of-two size, which covers the
        // requirements' size and alignment (`slot_size`); an OPTIMAL image's block holds
        // OPTIMAL images only (its class).
        unsafe { ExternalImage::pooled(ctx, image, slot, desc) }
    }

    /// The slot size for a resource of `requirements`, or `InvalidArgument` naming `arg`
    /// when it does not fit one allocation.
    fn slot_size_for(
        &self,
        requirements: &vk::MemoryRequirements,
        arg: &'static str,
        what: impl FnOnce() -> String,
    ) -> Result<u64> {
        let max = self.inner.ctx.max_allocation_size();
        slot_size(requirements)
            .filter(|&s| s <= max)
            .ok_or_else(|| {
                Error::invalid(
                    arg,
                    format!(
                        "{} need a slot of {} bytes aligned to {}",
                        what(),
                        requirements.size,
                        requirements.alignment
                    ),
                    format!("a power-of-two slot within maxMemoryAllocationSize ({max})"),
                )
            })
    }

    /// A free slot of `class`, from a live block of that class or a new one.
    fn take_slot(&self, class: Class) -> Result<PoolSlot> {
        let mut classes = self
            .inner
            .classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let blocks = classes.entry(class).or_default();
        blocks.retain(|b| b.strong_count() > 0);
        for block in blocks.iter().filter_map(Weak::upgrade) {
            if let Some(slot) = PoolBlock::take(&block) {
                return Ok(slot);
            }
        }
        let block = Arc::new(self.new_block(class)?);
        blocks.push(Arc::downgrade(&block));
        PoolBlock::take(&block).ok_or_else(|| Error::Unsupported {
            what: "a slot in a new pool block".into(),
            reason: "the new block has no slots".into(),
        })
    }

    fn new_block(&self, class: Class) -> Result<PoolBlock> {
        let inner = &self.inner;
        let size = block_size(inner.desc.block_size, class.slot_size);
        let memory = allocate_exportable_block(&inner.ctx, size, class.memory_type, inner.flags)?;
        let slots = u32::try_from(size / class.slot_size).unwrap_or(u32::MAX);
        Ok(PoolBlock {
            ctx: inner.ctx.clone(),
            memory,
            memory_type: class.memory_type,
            size,
            slot_size: class.slot_size,
            handle_type: inner.desc.handle_type,
            free: Mutex::new((0..slots).rev().collect()),
        })
    }

    /// Blocks alive now (each is one `VkDeviceMemory` and one export).
    pub fn live_blocks(&self) -> usize {
        let classes = self
            .inner
            .classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        classes
            .values()
            .flatten()
            .filter(|b| b.strong_count() > 0)
            .count()
    }

    /// The description the pool was made with.
    pub fn desc(&self) -> &PoolDesc {
        &self.inner.desc
    }
}

/// One exportable block of an [`ExportPool`], divided into equal slots. Freed when the
/// last buffer bound into it and the last importer holding it are gone.
pub struct PoolBlock {
    ctx: Context,
    memory: vk::DeviceMemory,
    memory_type: u32,
    size: u64,
    slot_size: u64,
    handle_type: MemoryHandleType,
    /// Free slot indices (taken from the end).
    free: Mutex<Vec<u32>>,
}

impl std::fmt::Debug for PoolBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBlock")
            .field("size", &self.size)
            .field("slot_size", &self.slot_size)
            .field("free_slots", &self.free_slots())
            .finish_non_exhaustive()
    }
}

impl Drop for PoolBlock {
    fn drop(&mut self) {
        // SAFETY: every buffer bound into the block holds it, so none is left; freed once.
        unsafe { self.ctx.device().free_memory(self.memory, None) };
    }
}

impl PoolBlock {
    fn take(block: &Arc<Self>) -> Option<PoolSlot> {
        let index = block
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        Some(PoolSlot {
            block: block.clone(),
            index,
        })
    }

    /// Exports the whole block as a new handle (each call makes a new fd), described as a
    /// shared (not dedicated) allocation of [`PoolBlock::size`] bytes. Import it once and
    /// address each buffer at its [`ExternalBuffer::pool_slot`] offset.
    ///
    /// # Errors
    /// [`Error::Vulkan`] when `vkGetMemoryFdKHR` fails.
    pub fn export(&self) -> Result<MemoryImport> {
        Ok(MemoryImport {
            handle: export_handle(&self.ctx, self.memory, self.handle_type)?,
            size: self.size,
            dedicated: false,
            memory_type: Some(self.memory_type),
        })
    }

    /// Size of the block's allocation in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Size of each slot (the size class).
    pub fn slot_size(&self) -> u64 {
        self.slot_size
    }

    /// Slots not in use.
    pub fn free_slots(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The raw memory. Valid while `self` lives.
    pub fn memory(&self) -> vk::DeviceMemory {
        self.memory
    }

    /// The Vulkan memory type index of the block's memory.
    pub fn memory_type(&self) -> u32 {
        self.memory_type
    }
}

/// One slot of a [`PoolBlock`], held by the buffer bound at it; returned when dropped.
pub(crate) struct PoolSlot {
    block: Arc<PoolBlock>,
    index: u32,
}

impl PoolSlot {
    pub(crate) fn block(&self) -> &Arc<PoolBlock> {
        &self.block
    }

    pub(crate) fn offset(&self) -> u64 {
        u64::from(self.index) * self.block.slot_size
    }

    pub(crate) fn len(&self) -> u64 {
        self.block.slot_size
    }
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        self.block
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(size: u64, alignment: u64) -> vk::MemoryRequirements {
        vk::MemoryRequirements {
            size,
            alignment,
            memory_type_bits: 1,
        }
    }

    #[test]
    fn slots_are_powers_of_two_covering_size_alignment_and_cuda() {
        assert_eq!(slot_size(&req(1, 4)), Some(256));
        assert_eq!(slot_size(&req(257, 4)), Some(512));
        assert_eq!(slot_size(&req(65_536, 16)), Some(65_536));
        assert_eq!(slot_size(&req(100, 4096)), Some(4096));
        assert_eq!(slot_size(&req(u64::MAX, 1)), None);
    }

    #[test]
    fn blocks_hold_whole_slots_or_one_large_one() {
        assert_eq!(block_size(64 << 20, 65_536), 64 << 20);
        assert_eq!(block_size(1000, 256), 768);
        assert_eq!(block_size(64 << 20, 128 << 20), 128 << 20);
    }
}
