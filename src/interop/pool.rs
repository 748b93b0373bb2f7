//! [`SharedPool`]: an [`ExportPool`] whose blocks are imported into CUDA once each, its
//! buffers mapped and its images' arrays made at their offsets.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{check_same_device, SharedBuffer, SharedImage};
use crate::cuda::{self, ExternalMemory, WeakExternalMemory};
use crate::error::{Error, Result};
use crate::vulkan::{self, ExportPool, ImageDesc, PoolBlock, PoolDesc};

/// Many [`SharedBuffer`]s and [`SharedImage`]s from a few exported blocks: each block of
/// the [`ExportPool`] is exported and imported into CUDA once, mapped whole once
/// (`cuExternalMemoryGetMappedBuffer` refuses non-zero offsets on NVIDIA driver 580), and
/// every buffer's CUDA pointer is the block's pointer plus the buffer's offset; every
/// image's mipmapped array is mapped from the block's import at the image's offset.
///
/// Alignment on both sides is the pool's (see [`vulkan::ExportPool`]): every buffer starts at
/// a multiple of its Vulkan `alignment` and of 256 bytes, so [`SharedBuffer::map`] at 0
/// gives a pointer aligned like a `cuMemAlloc` one.
///
/// A block's CUDA import holds the block; a buffer's [`cuda::MappedBuffer`]s hold the
/// import and the buffer (so its slot is not handed out again while CUDA maps it); an
/// image's array (and its levels, surfaces and textures) holds the import and the image.
/// The pool holds neither, so a block and its import are freed once its last resource and
/// mapping are gone.
///
/// ```no_run
/// # fn main() -> vkcuda::Result<()> {
/// use vkcuda::ash::vk;
/// use vkcuda::interop::SharedPool;
/// use vkcuda::{cuda, vulkan};
///
/// let vk = vulkan::Context::new(&vulkan::ContextDesc::default())?;
/// let cu = cuda::Context::matching(vk.identity())?;
/// let pool = SharedPool::new(&vk, &cu, &vulkan::PoolDesc::default())?;
/// // A ring of 8 frames and their 64 KiB parameter buffers: a few blocks, one import each.
/// let desc = vulkan::ImageDesc::d2(1920, 1080, vk::Format::R8G8B8A8_UNORM);
/// let frames = (0..8)
///     .map(|_| pool.allocate_image(&desc))
///     .collect::<vkcuda::Result<Vec<_>>>()?;
/// let params = (0..8)
///     .map(|_| pool.allocate(64 << 10))
///     .collect::<vkcuda::Result<Vec<_>>>()?;
/// let surface = frames[0].surface(0)?; // a cudaSurfaceObject_t at the frame's offset
/// let ptr = params[0].map(0..64 << 10)?; // a device pointer at the buffer's offset
/// println!("{} blocks, {} CUDA imports", pool.vulkan().live_blocks(), pool.live_imports());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedPool {
    pool: ExportPool,
    cu: cuda::Context,
    /// The live CUDA import of each block (weak both ways).
    imports: Arc<Mutex<Vec<BlockImport>>>,
}

/// The block and offset of a `what` the pool just made (always at a slot).
fn slot_of(slot: Option<(&Arc<PoolBlock>, u64)>, what: &str) -> Result<(Arc<PoolBlock>, u64)> {
    slot.map(|(block, offset)| (block.clone(), offset))
        .ok_or_else(|| Error::Unsupported {
            what: format!("sharing a pool {what}"),
            reason: format!("the {what} is not bound at a pool slot"),
        })
}

/// A block and its CUDA import, neither kept alive by the pool.
type BlockImport = (Weak<PoolBlock>, WeakExternalMemory);

impl std::fmt::Debug for SharedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPool")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl SharedPool {
    /// An empty pool on `vk` whose blocks are imported into `cu`.
    ///
    /// # Errors
    /// As [`ExportPool::new`]; [`crate::Error::InvalidArgument`] when `cu` is not on `vk`'s
    /// GPU.
    pub fn new(vk: &vulkan::Context, cu: &cuda::Context, desc: &PoolDesc) -> Result<Self> {
        check_same_device(vk, cu)?;
        Ok(Self {
            pool: ExportPool::new(vk, desc)?,
            cu: cu.clone(),
            imports: Arc::default(),
        })
    }

    /// A `size`-byte buffer from the pool, with its block imported into CUDA (once per
    /// block).
    ///
    /// # Errors
    /// As [`ExportPool::allocate`], and CUDA import failures for a new block.
    pub fn allocate(&self, size: u64) -> Result<SharedBuffer> {
        let buffer = Arc::new(self.pool.allocate(size)?);
        let (block, offset) = slot_of(buffer.pool_slot(), "buffer")?;
        let memory = self.import(&block)?;
        Ok(SharedBuffer::imported(memory, offset, buffer))
    }

    /// An image from the pool ([`ExportPool::allocate_image`]), with its block imported into
    /// CUDA (once per block) and the image mapped from it as a mipmapped array at its slot's
    /// offset (`CUDA_EXTERNAL_MEMORY_MIPMAPPED_ARRAY_DESC::offset`), laid out as
    /// [`cuda_array_desc`](super::cuda_array_desc) derives it.
    ///
    /// # Errors
    /// [`Error::Unsupported`] from [`cuda_array_desc`](super::cuda_array_desc) (checked
    /// before anything is created); as [`ExportPool::allocate_image`]; CUDA import and
    /// mapping failures (a driver that refuses an array at an offset of a shared block says
    /// so there).
    pub fn allocate_image(&self, desc: &ImageDesc) -> Result<SharedImage> {
        super::cuda_array_desc(desc)?;
        let image = Arc::new(self.pool.allocate_image(desc)?);
        let (block, offset) = slot_of(image.pool_slot(), "image")?;
        let memory = self.import(&block)?;
        SharedImage::pooled(image, &memory, offset)
    }

    /// The CUDA import of `block`, made if nothing holds one.
    fn import(&self, block: &Arc<PoolBlock>) -> Result<ExternalMemory> {
        let mut imports = self.imports.lock().unwrap_or_else(PoisonError::into_inner);
        imports.retain(|(_, memory)| memory.upgrade().is_some());
        let me = Arc::downgrade(block);
        if let Some(memory) = imports
            .iter()
            .find(|(b, _)| b.ptr_eq(&me))
            .and_then(|(_, memory)| memory.upgrade())
        {
            return Ok(memory);
        }
        let owner: Arc<dyn std::any::Any + Send + Sync> = block.clone();
        // SAFETY: the block's own export: `size` is its allocation size and it is shared
        // (not dedicated), as described; `owner` keeps the Vulkan memory alive until after
        // cuDestroyExternalMemory; the pool's context is on `cu`'s GPU (checked in `new`).
        let memory =
            unsafe { ExternalMemory::import_with_owner(&self.cu, block.export()?, owner) }?;
        imports.push((me, memory.downgrade()));
        Ok(memory)
    }

    /// The Vulkan pool.
    pub fn vulkan(&self) -> &ExportPool {
        &self.pool
    }

    /// CUDA imports alive now (one per live block that has been shared).
    pub fn live_imports(&self) -> usize {
        let imports = self.imports.lock().unwrap_or_else(PoisonError::into_inner);
        imports
            .iter()
            .filter(|(_, memory)| memory.upgrade().is_some())
            .count()
    }
}
