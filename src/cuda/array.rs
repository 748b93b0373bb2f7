//! CUDA mipmapped arrays, imported ([`ExternalMemory::map_mipmapped_array`]) or native
//! ([`MipmappedArray::new`]), and what kernels use them through: [`ArrayLevel`]s
//! (`cuMipmappedArrayGetLevel`), [`SurfaceObject`]s (`surf*read`/`surf*write`) and
//! [`TextureObject`]s (`tex*`, per level or over the whole mip chain).
//!
//! Every level, surface and texture holds (a clone of) its [`MipmappedArray`], and an
//! imported array holds the [`ExternalMemory`] it maps, so `cuSurfObjectDestroy` /
//! `cuTexObjectDestroy` -> `cuMipmappedArrayDestroy` -> `cuDestroyExternalMemory` -> the
//! exporter's free run in that order by construction.

use std::fmt;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaStream, LaunchArgs, PushKernelArg};

use super::context::bind;
use super::{raw, Context, ExternalMemory};
use crate::external::MemoryHandleType;
use crate::{Error, Result};

/// Layout of an image in CUDA's terms (`CUDA_ARRAY3D_DESCRIPTOR` plus a level count and,
/// for imports, the offset of `CUDA_EXTERNAL_MEMORY_MIPMAPPED_ARRAY_DESC`).
///
/// # Shapes
/// An [`ArrayDesc`] says which of CUDA's array shapes the memory holds, by its `height`,
/// `depth` and `flags`:
///
/// | shape | `height` | `depth` | flags |
/// |---|---|---|---|
/// | 2D | > 0 | 0 | |
/// | 2D layered | > 0 | layers | `CUDA_ARRAY3D_LAYERED` |
/// | cube map | = width | 6 | `CUDA_ARRAY3D_CUBEMAP` |
/// | cube map array | = width | 6 × cubes | `CUBEMAP \| LAYERED` |
/// | 3D | > 0 | depth | |
///
/// Kernels address them with the matching functions (`surf2DLayeredwrite`,
/// `surfCubemapwrite`, `surf3Dwrite`, `tex2DLayeredLod`, `texCubemapLod`, `tex3DLod`, ...);
/// surface x coordinates are in bytes.
///
/// # Block-compressed formats
/// BC arrays (`CU_AD_FORMAT_BC*`) can be sampled by texture objects only: CUDA refuses
/// `CUDA_ARRAY3D_SURFACE_LDST` for them, so a description with that flag and a BC format is
/// rejected before the driver, and staged host copies ([`ArrayLevel::copy_from_host`]) do not
/// take them either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayDesc {
    /// Byte offset of level 0 in the import (0 for a dedicated image and for native arrays).
    pub offset: u64,
    /// Width of level 0 in elements.
    pub width: usize,
    /// Height of level 0 in elements; 0 for a 1D image.
    pub height: usize,
    /// Depth of level 0 for a 3D image, or the layer count with
    /// `CUDA_ARRAY3D_LAYERED` / `CUDA_ARRAY3D_CUBEMAP`; 0 for a 1D or 2D image.
    pub depth: usize,
    /// Format of each channel.
    pub format: sys::CUarray_format,
    /// Channels per element: 1, 2 or 4 (3 for BC6H, as CUDA counts it).
    pub channels: u32,
    /// Number of mip levels, at least 1.
    pub levels: u32,
    /// `CUDA_ARRAY3D_*` flags: `SURFACE_LDST` to create surfaces (never with a BC format),
    /// `LAYERED`, `CUBEMAP`, `COLOR_ATTACHMENT` when the exporter renders to the image.
    pub flags: u32,
}

impl ArrayDesc {
    /// Whether `depth` counts layers (or cube faces) rather than a third dimension.
    pub fn depth_is_layers(&self) -> bool {
        self.flags & (sys::CUDA_ARRAY3D_LAYERED | sys::CUDA_ARRAY3D_CUBEMAP) != 0
    }

    /// Whether the format is one of CUDA's block-compressed (`BC1`..`BC7`) formats.
    pub fn is_block_compressed(&self) -> bool {
        use sys::CUarray_format as F;
        matches!(
            self.format,
            F::CU_AD_FORMAT_BC1_UNORM
                | F::CU_AD_FORMAT_BC1_UNORM_SRGB
                | F::CU_AD_FORMAT_BC2_UNORM
                | F::CU_AD_FORMAT_BC2_UNORM_SRGB
                | F::CU_AD_FORMAT_BC3_UNORM
                | F::CU_AD_FORMAT_BC3_UNORM_SRGB
                | F::CU_AD_FORMAT_BC4_UNORM
                | F::CU_AD_FORMAT_BC4_SNORM
                | F::CU_AD_FORMAT_BC5_UNORM
                | F::CU_AD_FORMAT_BC5_SNORM
                | F::CU_AD_FORMAT_BC6H_UF16
                | F::CU_AD_FORMAT_BC6H_SF16
                | F::CU_AD_FORMAT_BC7_UNORM
                | F::CU_AD_FORMAT_BC7_UNORM_SRGB
        )
    }

    /// Bytes of one element (all channels): what a surface x coordinate steps by. `None`
    /// for block-compressed and the other formats vkcuda does not copy (YUV, CUDA's
    /// normalized `*X1`/`*X2`/`*X4` formats).
    pub fn element_bytes(&self) -> Option<u32> {
        use sys::CUarray_format as F;
        let channel = match self.format {
            F::CU_AD_FORMAT_UNSIGNED_INT8 | F::CU_AD_FORMAT_SIGNED_INT8 => 1,
            F::CU_AD_FORMAT_UNSIGNED_INT16
            | F::CU_AD_FORMAT_SIGNED_INT16
            | F::CU_AD_FORMAT_HALF => 2,
            F::CU_AD_FORMAT_UNSIGNED_INT32
            | F::CU_AD_FORMAT_SIGNED_INT32
            | F::CU_AD_FORMAT_FLOAT => 4,
            F::CU_AD_FORMAT_UNORM_INT_101010_2 => return Some(4),
            _ => return None,
        };
        Some(channel * self.channels)
    }

    /// Bytes of all levels tightly packed (no row or level alignment): a lower bound on
    /// what any layout of the array occupies. `Some(0)` for formats without a fixed
    /// element size (no bound known), `None` when the count overflows a u64.
    fn packed_bytes(&self) -> Option<u64> {
        let Some(element) = self.element_bytes() else {
            return Some(0);
        };
        (0..self.levels).try_fold(0u64, |sum, level| {
            let [w, h, d] = self.level_extent(level);
            let texels = (w as u64)
                .checked_mul(h.max(1) as u64)?
                .checked_mul(d.max(1) as u64)?;
            sum.checked_add(texels.checked_mul(u64::from(element))?)
        })
    }

    /// The most mip levels the extent allows.
    fn max_levels(&self) -> u32 {
        let depth = if self.depth_is_layers() {
            0
        } else {
            self.depth
        };
        let largest = self.width.max(self.height).max(depth).max(1);
        usize::BITS - largest.leading_zeros()
    }

    /// Extent `[width, height, depth]` of `level` (0 stays 0; layers are not halved).
    pub fn level_extent(&self, level: u32) -> [usize; 3] {
        let halve = |n: usize| {
            if n == 0 {
                0
            } else {
                n.checked_shr(level).unwrap_or(0).max(1)
            }
        };
        let depth = if self.depth_is_layers() {
            self.depth
        } else {
            halve(self.depth)
        };
        [halve(self.width), halve(self.height), depth]
    }

    /// The driver's descriptor of level 0.
    fn to_raw(self) -> sys::CUDA_ARRAY3D_DESCRIPTOR {
        sys::CUDA_ARRAY3D_DESCRIPTOR {
            Width: self.width,
            Height: self.height,
            Depth: self.depth,
            Format: self.format,
            NumChannels: self.channels,
            Flags: self.flags,
        }
    }
}

/// Checks what every array needs, imported or native, before any driver call.
fn validate_shape(desc: &ArrayDesc) -> Result<()> {
    if desc.width == 0 {
        return Err(Error::invalid("desc.width", "0", "at least 1"));
    }
    let bc6h = matches!(
        desc.format,
        sys::CUarray_format::CU_AD_FORMAT_BC6H_UF16 | sys::CUarray_format::CU_AD_FORMAT_BC6H_SF16
    );
    let channels_ok = if bc6h {
        desc.channels == 3
    } else {
        matches!(desc.channels, 1 | 2 | 4)
    };
    if !channels_ok {
        return Err(Error::invalid(
            "desc.channels",
            format!("{} for {:?}", desc.channels, desc.format),
            if bc6h { "3 for BC6H" } else { "1, 2 or 4" },
        ));
    }
    let max_levels = desc.max_levels();
    if desc.levels == 0 || desc.levels > max_levels {
        return Err(Error::invalid(
            "desc.levels",
            format!(
                "{} for a {}x{}x{} image",
                desc.levels, desc.width, desc.height, desc.depth
            ),
            format!("1..={max_levels}"),
        ));
    }
    if desc.flags & sys::CUDA_ARRAY3D_SURFACE_LDST != 0 && desc.is_block_compressed() {
        return Err(Error::invalid(
            "desc.flags",
            format!(
                "CUDA_ARRAY3D_SURFACE_LDST with the block-compressed {:?}",
                desc.format
            ),
            "no SURFACE_LDST for BC formats (CUDA samples them through textures only)",
        ));
    }
    Ok(())
}

/// Checks an [`ArrayDesc`] against the import before any driver call.
fn validate_import_desc(desc: &ArrayDesc, size: u64, handle_type: MemoryHandleType) -> Result<()> {
    if handle_type == MemoryHandleType::DmaBufFd {
        return Err(Error::Unsupported {
            what: "mipmapped array from a DmaBufFd import".to_owned(),
            reason: "CUDA maps dma-buf imports as buffers only".to_owned(),
        });
    }
    validate_shape(desc)?;
    if handle_type == MemoryHandleType::NvSciBuf && desc.levels != 1 {
        return Err(Error::invalid(
            "desc.levels",
            format!("{}, but NvSciBuf imports map one level", desc.levels),
            "1",
        ));
    }
    if desc.offset >= size {
        return Err(Error::invalid(
            "desc.offset",
            format!("{} is past the end of the {size}-byte import", desc.offset),
            format!("< {size}"),
        ));
    }
    // A lower bound only: the driver's layout adds alignment and padding, which the caller
    // vouches for (`map_mipmapped_array`'s safety contract).
    let room = size - desc.offset;
    match desc.packed_bytes() {
        Some(need) if need <= room => Ok(()),
        need => Err(Error::invalid(
            "desc",
            format!(
                "a {}x{}x{} {:?} x{} array of {} levels needs at least {} bytes, but only \
                 {room} bytes of the {size}-byte import lie after offset {}",
                desc.width,
                desc.height,
                desc.depth,
                desc.format,
                desc.channels,
                desc.levels,
                need.map_or("more than 2^64".to_owned(), |n| n.to_string()),
                desc.offset
            ),
            format!("an array that fits in {room} bytes"),
        )),
    }
}

impl ExternalMemory {
    /// Maps an image stored in the import as a CUDA mipmapped array
    /// (`cuExternalMemoryGetMappedMipmappedArray`).
    ///
    /// The layout in `desc` must be the exporter's: for a Vulkan image, derive it from the
    /// image's create info (as [`crate::interop::SharedImage`] does) rather than writing it
    /// by hand.
    ///
    /// # Safety
    /// 1. `desc` (with its offset) describes an image the exporter laid out inside this
    ///    import: CUDA reads and writes every byte of its own layout of `desc` (safe
    ///    methods such as [`ArrayLevel::copy_from_host`] included) without checking it
    ///    against the import's size. vkcuda checks only a lower bound (the levels tightly
    ///    packed must fit after `desc.offset`); row and level padding is the caller's to
    ///    vouch for. A description derived from the exporter's create info and memory
    ///    requirements ([`crate::interop::SharedImage`]) meets this.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] for a zero width, a channel count other than 1, 2 or 4
    ///   (3 for BC6H), a level count of 0 or more than the extent allows, `SURFACE_LDST`
    ///   with a BC format, an offset past the import, or (`desc`) levels that, tightly
    ///   packed, do not fit in the import after the offset.
    /// * [`Error::Unsupported`] for a `DmaBufFd` import (CUDA maps those as buffers only).
    /// * [`Error::OutOfMemory`] or [`Error::Cuda`] when the driver call fails.
    pub unsafe fn map_mipmapped_array(&self, desc: &ArrayDesc) -> Result<MipmappedArray> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.map_mipmapped_array_gated(desc, None) }
    }

    /// [`ExternalMemory::map_mipmapped_array`] whose levels' host copies first ask `gate`
    /// whether the exporter has handed the memory over (see [`HostCopyGate`]).
    ///
    /// # Safety
    /// As [`ExternalMemory::map_mipmapped_array`].
    pub(crate) unsafe fn map_mipmapped_array_gated(
        &self,
        desc: &ArrayDesc,
        gate: Option<HostCopyGate>,
    ) -> Result<MipmappedArray> {
        validate_import_desc(desc, self.size(), self.handle_type())?;
        let ctx = self.context();
        bind(ctx)?;
        let raw_desc = sys::CUDA_EXTERNAL_MEMORY_MIPMAPPED_ARRAY_DESC {
            offset: desc.offset,
            arrayDesc: desc.to_raw(),
            numLevels: desc.levels,
            reserved: [0; 16],
        };
        // SAFETY: the context is current, the import is alive (held by `self`), the
        // description lies inside it (checked lower bound, and precondition 1), and the
        // array is destroyed by `ArrayInner::drop` while it still holds the import.
        let raw = unsafe {
            raw::external_memory_get_mapped_mipmapped_array(self.cu_external_memory(), &raw_desc)
        }
        .map_err(|e| Error::cuda("cuExternalMemoryGetMappedMipmappedArray", e))?;
        Ok(MipmappedArray {
            inner: Arc::new(ArrayInner {
                raw,
                desc: *desc,
                ctx: ctx.clone(),
                gate,
                memory: Some(self.clone()),
            }),
        })
    }
}

/// A CUDA mipmapped array: mapped onto an [`ExternalMemory`]
/// ([`ExternalMemory::map_mipmapped_array`]) or allocated by CUDA ([`MipmappedArray::new`]).
/// Destroyed with `cuMipmappedArrayDestroy` when the last clone, level, surface and texture
/// made from it are gone, before the import it maps.
///
/// Dropping does not wait for GPU work: finish the kernels that use it first.
#[derive(Clone)]
pub struct MipmappedArray {
    inner: Arc<ArrayInner>,
}

/// Asked before every host copy of an imported array: `Err` when the exporter has not
/// handed the memory to CUDA (e.g. a Vulkan image not released to
/// `VK_QUEUE_FAMILY_EXTERNAL`). Set by [`crate::interop::SharedImage`]; the CUDA side knows
/// nothing of what it checks.
pub(crate) type HostCopyGate = Arc<dyn Fn() -> Result<()> + Send + Sync>;

struct ArrayInner {
    raw: sys::CUmipmappedArray,
    desc: ArrayDesc,
    ctx: Arc<CudaContext>,
    /// Checked before host copies (`None`: native arrays and plain imports).
    gate: Option<HostCopyGate>,
    /// The import it maps (`None` for a native array). Declared last: the import outlives
    /// the `cuMipmappedArrayDestroy` in `Drop`.
    memory: Option<ExternalMemory>,
}

// SAFETY: `CUmipmappedArray` is an opaque driver handle usable from any thread once its
// context is bound, which every use here does first.
unsafe impl Send for ArrayInner {}
// SAFETY: as above; shared access only reads the handle.
unsafe impl Sync for ArrayInner {}

impl Drop for ArrayInner {
    fn drop(&mut self) {
        self.ctx.record_err(self.ctx.bind_to_thread());
        // SAFETY: levels, surfaces and textures hold a clone of the array, so none is left;
        // an import is still held by `self.memory`; destroyed only here, once.
        self.ctx
            .record_err(unsafe { raw::mipmapped_array_destroy(self.raw) });
    }
}

impl fmt::Debug for MipmappedArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MipmappedArray")
            .field("desc", &self.inner.desc)
            .field("memory", &self.inner.memory)
            .finish()
    }
}

impl MipmappedArray {
    /// Allocates a native CUDA mipmapped array (`cuMipmappedArrayCreate`) of the shape in
    /// `desc`: the baseline an imported array is compared with, or CUDA-only scratch space
    /// of the same layout. `desc.offset` must be 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for the shape errors of
    /// [`ExternalMemory::map_mipmapped_array`] and a non-zero `desc.offset`;
    /// [`Error::OutOfMemory`] or [`Error::Cuda`] when the driver call fails.
    pub fn new(ctx: &Context, desc: &ArrayDesc) -> Result<Self> {
        validate_shape(desc)?;
        if desc.offset != 0 {
            return Err(Error::invalid(
                "desc.offset",
                format!("{} for a native array", desc.offset),
                "0 (offsets locate images inside imports)",
            ));
        }
        let cuda = ctx.cuda();
        bind(cuda)?;
        // SAFETY: the context is current; the array is destroyed by `ArrayInner::drop`.
        let raw = unsafe { raw::mipmapped_array_create(&desc.to_raw(), desc.levels) }
            .map_err(|e| Error::cuda("cuMipmappedArrayCreate", e))?;
        Ok(Self {
            inner: Arc::new(ArrayInner {
                raw,
                desc: *desc,
                ctx: cuda.clone(),
                gate: None,
                memory: None,
            }),
        })
    }

    /// The layout it was made with.
    pub fn desc(&self) -> &ArrayDesc {
        &self.inner.desc
    }

    /// The import it maps; `None` for a native array.
    pub fn memory(&self) -> Option<&ExternalMemory> {
        self.inner.memory.as_ref()
    }

    /// The CUDA context it lives in.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// The raw handle, for driver calls vkcuda does not wrap. Do not destroy it.
    pub fn cu_mipmapped_array(&self) -> sys::CUmipmappedArray {
        self.inner.raw
    }

    /// Mip level `level` as a CUDA array (`cuMipmappedArrayGetLevel`), for surfaces,
    /// per-level textures and copies.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `level` is not below the level count;
    /// [`Error::Cuda`] when the driver call fails.
    pub fn level(&self, level: u32) -> Result<ArrayLevel> {
        let levels = self.inner.desc.levels;
        if level >= levels {
            return Err(Error::invalid(
                "level",
                format!("{level} of a {levels}-level array"),
                format!("0..{levels}"),
            ));
        }
        bind(self.context())?;
        // SAFETY: the context is current, the array is alive (held by `self`) and `level`
        // is below its level count (checked above).
        let raw = unsafe { raw::mipmapped_array_get_level(self.inner.raw, level) }
            .map_err(|e| Error::cuda("cuMipmappedArrayGetLevel", e))?;
        Ok(ArrayLevel {
            raw,
            level,
            array: self.clone(),
        })
    }

    /// A texture object sampling the whole mip chain (`cuTexObjectCreate` on the mipmapped
    /// array): `tex2DLod(tex, u, v, lod)` and friends pick the level. Coordinates must be
    /// normalized (`[0, 1)` across every level), as CUDA samples mipmapped arrays no other
    /// way; `desc.filter` also filters between levels.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`desc.normalized_coords`) when it is false;
    /// [`Error::Cuda`] when the driver call fails.
    pub fn texture(&self, desc: &TextureDesc) -> Result<TextureObject> {
        if !desc.normalized_coords {
            return Err(Error::invalid(
                "desc.normalized_coords",
                "false for a texture over a whole mip chain",
                "true, or a per-level texture (ArrayLevel::texture) for texel coordinates",
            ));
        }
        let mut res = resource_desc(sys::CUresourcetype::CU_RESOURCE_TYPE_MIPMAPPED_ARRAY);
        res.res.mipmap = sys::CUDA_RESOURCE_DESC_st__bindgen_ty_1__bindgen_ty_2 {
            hMipmappedArray: self.inner.raw,
        };
        TextureObject::create(&res, desc.to_raw(self.inner.desc.levels), self, None)
    }
}

/// An empty resource descriptor of type `kind`, every byte initialised.
fn resource_desc(kind: sys::CUresourcetype) -> sys::CUDA_RESOURCE_DESC {
    sys::CUDA_RESOURCE_DESC {
        resType: kind,
        res: sys::CUDA_RESOURCE_DESC_st__bindgen_ty_1 {
            reserved: sys::CUDA_RESOURCE_DESC_st__bindgen_ty_1__bindgen_ty_5 { reserved: [0; 32] },
        },
        flags: 0,
    }
}

/// One mip level of a [`MipmappedArray`]. The CUDA array belongs to the mipmapped array,
/// which this keeps alive.
#[derive(Debug, Clone)]
pub struct ArrayLevel {
    raw: sys::CUarray,
    level: u32,
    array: MipmappedArray,
}

// SAFETY: `CUarray` is an opaque driver handle usable from any thread once its context is
// bound; it is never destroyed through this type.
unsafe impl Send for ArrayLevel {}
// SAFETY: as above; shared access only reads the handle.
unsafe impl Sync for ArrayLevel {}

impl ArrayLevel {
    /// The raw CUDA array, for copies (`cuMemcpy2D`/`3D`). Do not destroy it.
    pub fn cu_array(&self) -> sys::CUarray {
        self.raw
    }

    /// Which level this is.
    pub fn level(&self) -> u32 {
        self.level
    }

    /// `[width, height, depth]` of this level in elements (0 for absent dimensions; layers
    /// are not halved).
    pub fn extent(&self) -> [usize; 3] {
        self.array.desc().level_extent(self.level)
    }

    /// The mipmapped array this level belongs to.
    pub fn array(&self) -> &MipmappedArray {
        &self.array
    }

    /// A surface object for `surf*read`/`surf*write` on this level (`cuSurfObjectCreate`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the array was made without
    /// `CUDA_ARRAY3D_SURFACE_LDST`; [`Error::Cuda`] when the driver call fails.
    pub fn surface(&self) -> Result<SurfaceObject> {
        if self.array.desc().flags & sys::CUDA_ARRAY3D_SURFACE_LDST == 0 {
            return Err(Error::invalid(
                "desc.flags",
                "the array was made without CUDA_ARRAY3D_SURFACE_LDST",
                "flags including CUDA_ARRAY3D_SURFACE_LDST to create surfaces",
            ));
        }
        let mut res = resource_desc(sys::CUresourcetype::CU_RESOURCE_TYPE_ARRAY);
        res.res.array = sys::CUDA_RESOURCE_DESC_st__bindgen_ty_1__bindgen_ty_1 { hArray: self.raw };
        bind(self.array.context())?;
        // SAFETY: the context is current and `res` names this level of a live array made
        // with SURFACE_LDST (checked above); the `SurfaceObject` keeps the level alive.
        let raw = unsafe { raw::surf_object_create(&res) }
            .map_err(|e| Error::cuda("cuSurfObjectCreate", e))?;
        Ok(SurfaceObject {
            raw,
            level: self.clone(),
        })
    }

    /// A texture object sampling this level only (`cuTexObjectCreate` on the level's
    /// array), with normalized or texel coordinates as `desc` says.
    ///
    /// # Errors
    /// [`Error::Cuda`] when the driver call fails.
    pub fn texture(&self, desc: &TextureDesc) -> Result<TextureObject> {
        let mut res = resource_desc(sys::CUresourcetype::CU_RESOURCE_TYPE_ARRAY);
        res.res.array = sys::CUDA_RESOURCE_DESC_st__bindgen_ty_1__bindgen_ty_1 { hArray: self.raw };
        TextureObject::create(&res, desc.to_raw(1), &self.array, Some(self.level))
    }

    /// Bytes of this level: rows of `width` elements, then `height` rows, then the depth
    /// slices or layers, tightly packed.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for formats without a fixed element size (BC, YUV).
    pub fn byte_len(&self) -> Result<usize> {
        Ok(self.copy_shape()?.iter().product())
    }

    /// `[row bytes, rows, slices or layers]` of a tightly packed host copy.
    fn copy_shape(&self) -> Result<[usize; 3]> {
        let desc = self.array.desc();
        let bytes = desc.element_bytes().ok_or_else(|| Error::Unsupported {
            what: format!("host copies of a {:?} array", desc.format),
            reason: "vkcuda copies only formats with a fixed element size (not BC or YUV)"
                .to_owned(),
        })?;
        let [w, h, d] = self.extent();
        Ok([w * bytes as usize, h.max(1), d.max(1)])
    }

    /// Copies `data` (laid out as [`ArrayLevel::byte_len`] says) into this level with
    /// `cuMemcpy3DAsync` on `stream`, and returns once the copy has completed.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `data` is not exactly the level's size, `stream`
    ///   belongs to another context, or (`image`) the level belongs to a
    ///   [`crate::interop::SharedImage`] that Vulkan owns (not released to CUDA).
    /// * [`Error::Unsupported`] for formats without a fixed element size (BC, YUV).
    /// * [`Error::Cuda`] when the copy fails.
    pub fn copy_from_host(&self, stream: &CudaStream, data: &[u8]) -> Result<()> {
        let shape = self.check_host_copy(stream, data.len())?;
        let copy = memcpy_3d(
            shape,
            Endpoint::Host(data.as_ptr().cast()),
            Endpoint::Array(self.raw),
        );
        // SAFETY: the stream's context is current (checked and bound), the level is alive
        // (held by `self`) and `data` holds exactly the region (checked); the copy is
        // complete before `data`'s borrow ends (synchronised below).
        let result = unsafe { raw::memcpy_3d_async(&copy, stream.cu_stream()) };
        finish_copy(stream, result)
    }

    /// Copies this level into `out` (laid out as [`ArrayLevel::byte_len`] says) with
    /// `cuMemcpy3DAsync` on `stream`, and returns once the copy has completed.
    ///
    /// # Errors
    /// As [`ArrayLevel::copy_from_host`], for `out`.
    pub fn copy_to_host(&self, stream: &CudaStream, out: &mut [u8]) -> Result<()> {
        let shape = self.check_host_copy(stream, out.len())?;
        let copy = memcpy_3d(
            shape,
            Endpoint::Array(self.raw),
            Endpoint::HostMut(out.as_mut_ptr().cast()),
        );
        // SAFETY: as in `copy_from_host`, with `out` written instead of `data` read.
        let result = unsafe { raw::memcpy_3d_async(&copy, stream.cu_stream()) };
        finish_copy(stream, result)
    }

    /// Checks a host copy's gate, length and stream; binds the context; returns the shape.
    fn check_host_copy(&self, stream: &CudaStream, len: usize) -> Result<[usize; 3]> {
        if let Some(gate) = &self.array.inner.gate {
            gate()?;
        }
        let shape = self.copy_shape()?;
        let want: usize = shape.iter().product();
        if len != want {
            let [w, h, d] = self.extent();
            return Err(Error::invalid(
                "data",
                format!("{len} bytes"),
                format!(
                    "exactly {want} bytes: level {} ({w}x{h}x{d}), tightly packed",
                    self.level
                ),
            ));
        }
        if !Arc::ptr_eq(stream.context(), self.array.context()) {
            return Err(Error::invalid(
                "stream",
                "belongs to another CUDA context",
                "a stream of the array's context",
            ));
        }
        bind(self.array.context())?;
        Ok(shape)
    }
}

/// One side of a [`memcpy_3d`].
enum Endpoint {
    Host(*const std::ffi::c_void),
    HostMut(*mut std::ffi::c_void),
    Array(sys::CUarray),
}

/// A whole-region `CUDA_MEMCPY3D` between tightly packed host memory and an array, built
/// field by field (it has enum fields).
fn memcpy_3d([row, rows, slices]: [usize; 3], src: Endpoint, dst: Endpoint) -> sys::CUDA_MEMCPY3D {
    use sys::CUmemorytype as M;
    let mut copy = sys::CUDA_MEMCPY3D {
        srcXInBytes: 0,
        srcY: 0,
        srcZ: 0,
        srcLOD: 0,
        srcMemoryType: M::CU_MEMORYTYPE_HOST,
        srcHost: std::ptr::null(),
        srcDevice: 0,
        srcArray: std::ptr::null_mut(),
        reserved0: std::ptr::null_mut(),
        srcPitch: row,
        srcHeight: rows,
        dstXInBytes: 0,
        dstY: 0,
        dstZ: 0,
        dstLOD: 0,
        dstMemoryType: M::CU_MEMORYTYPE_HOST,
        dstHost: std::ptr::null_mut(),
        dstDevice: 0,
        dstArray: std::ptr::null_mut(),
        reserved1: std::ptr::null_mut(),
        dstPitch: row,
        dstHeight: rows,
        WidthInBytes: row,
        Height: rows,
        Depth: slices,
    };
    match src {
        Endpoint::Host(p) => copy.srcHost = p,
        Endpoint::HostMut(p) => copy.srcHost = p.cast_const(),
        Endpoint::Array(a) => {
            copy.srcMemoryType = M::CU_MEMORYTYPE_ARRAY;
            copy.srcArray = a;
        }
    }
    match dst {
        Endpoint::Host(p) => copy.dstHost = p.cast_mut(),
        Endpoint::HostMut(p) => copy.dstHost = p,
        Endpoint::Array(a) => {
            copy.dstMemoryType = M::CU_MEMORYTYPE_ARRAY;
            copy.dstArray = a;
        }
    }
    copy
}

/// Maps the copy's result and waits for it to complete.
fn finish_copy(
    stream: &CudaStream,
    result: std::result::Result<(), cudarc::driver::DriverError>,
) -> Result<()> {
    result.map_err(|e| Error::cuda("cuMemcpy3DAsync", e))?;
    stream
        .synchronize()
        .map_err(|e| Error::cuda("cuStreamSynchronize", e))
}

/// A surface object on one [`ArrayLevel`] (`cuSurfObjectCreate`), destroyed on drop.
///
/// Pass it to a kernel with `launch_builder(..).arg(&surface)` (a `cudaSurfaceObject_t`
/// parameter). Dropping does not wait for kernels that use it.
#[derive(Debug)]
pub struct SurfaceObject {
    raw: sys::CUsurfObject,
    /// Declared last: the level outlives the `cuSurfObjectDestroy` in `Drop`.
    level: ArrayLevel,
}

impl Drop for SurfaceObject {
    fn drop(&mut self) {
        let ctx = self.level.array().context();
        ctx.record_err(ctx.bind_to_thread());
        // SAFETY: created by `cuSurfObjectCreate`, destroyed only here, once.
        ctx.record_err(unsafe { raw::surf_object_destroy(self.raw) });
    }
}

impl SurfaceObject {
    /// The raw `CUsurfObject` (a `cudaSurfaceObject_t` in kernels). Do not destroy it.
    pub fn cu_surf_object(&self) -> sys::CUsurfObject {
        self.raw
    }

    /// The level it reads and writes.
    pub fn level(&self) -> &ArrayLevel {
        &self.level
    }
}

// SAFETY: pushes the address of the 64-bit handle field, borrowed for `'b`, which outlives
// the launch builder `'a`; kernels take `cudaSurfaceObject_t` (64 bits) by value.
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b SurfaceObject> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b SurfaceObject) -> &mut Self {
        <Self as PushKernelArg<&'b sys::CUsurfObject>>::arg(self, &arg.raw)
    }
}

/// How a [`TextureObject`] samples (`CUDA_TEXTURE_DESC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextureDesc {
    /// What out-of-range coordinates read, in every dimension.
    pub address_mode: sys::CUaddress_mode,
    /// Filtering between texels and, over a mip chain, between levels. Linear filtering
    /// needs a float read (`read_as_integer` false) and uses 8-bit fractional weights.
    pub filter: sys::CUfilter_mode,
    /// Return 8- and 16-bit integer formats as integers (`CU_TRSF_READ_AS_INTEGER`)
    /// instead of floats in `[0, 1]` (unsigned) or `[-1, 1]` (signed). Must be false for
    /// float formats.
    pub read_as_integer: bool,
    /// Coordinates in `[0, 1)` across the level (`CU_TRSF_NORMALIZED_COORDINATES`) instead
    /// of texel units. Textures over a whole mip chain must use them.
    pub normalized_coords: bool,
    /// Decode sRGB-encoded 8-bit channels to linear on read (`CU_TRSF_SRGB`).
    pub srgb: bool,
}

impl Default for TextureDesc {
    /// Clamped, point-sampled, normalized coordinates, integers promoted to floats, no sRGB
    /// decoding.
    fn default() -> Self {
        Self {
            address_mode: sys::CUaddress_mode::CU_TR_ADDRESS_MODE_CLAMP,
            filter: sys::CUfilter_mode::CU_TR_FILTER_MODE_POINT,
            read_as_integer: false,
            normalized_coords: true,
            srgb: false,
        }
    }
}

impl TextureDesc {
    /// The driver's descriptor for `levels` levels, built field by field (it has enum
    /// fields).
    fn to_raw(self, levels: u32) -> sys::CUDA_TEXTURE_DESC {
        let mut flags = 0;
        if self.normalized_coords {
            flags |= sys::CU_TRSF_NORMALIZED_COORDINATES;
        }
        if self.read_as_integer {
            flags |= sys::CU_TRSF_READ_AS_INTEGER;
        }
        if self.srgb {
            flags |= sys::CU_TRSF_SRGB;
        }
        sys::CUDA_TEXTURE_DESC {
            addressMode: [self.address_mode; 3],
            filterMode: self.filter,
            flags,
            maxAnisotropy: 0,
            mipmapFilterMode: self.filter,
            mipmapLevelBias: 0.0,
            minMipmapLevelClamp: 0.0,
            maxMipmapLevelClamp: levels.saturating_sub(1) as f32,
            borderColor: [0.0; 4],
            reserved: [0; 12],
        }
    }
}

/// A texture object sampling a [`MipmappedArray`] or one of its levels
/// (`cuTexObjectCreate`), destroyed on drop.
///
/// Pass it to a kernel with `launch_builder(..).arg(&texture)` (a `cudaTextureObject_t`
/// parameter). Dropping does not wait for kernels that use it.
#[derive(Debug)]
pub struct TextureObject {
    raw: sys::CUtexObject,
    level: Option<u32>,
    /// Declared last: the array outlives the `cuTexObjectDestroy` in `Drop`.
    array: MipmappedArray,
}

impl Drop for TextureObject {
    fn drop(&mut self) {
        let ctx = self.array.context();
        ctx.record_err(ctx.bind_to_thread());
        // SAFETY: created by `cuTexObjectCreate`, destroyed only here, once.
        ctx.record_err(unsafe { raw::tex_object_destroy(self.raw) });
    }
}

impl TextureObject {
    /// `cuTexObjectCreate` on `res`, a resource of `array` (the array itself, or its
    /// `level`), which the texture keeps alive.
    fn create(
        res: &sys::CUDA_RESOURCE_DESC,
        tex: sys::CUDA_TEXTURE_DESC,
        array: &MipmappedArray,
        level: Option<u32>,
    ) -> Result<Self> {
        bind(array.context())?;
        // SAFETY: the context is current and `res` names `array` or one of its levels,
        // alive while the `TextureObject` holds `array`.
        let raw = unsafe { raw::tex_object_create(res, &tex) }
            .map_err(|e| Error::cuda("cuTexObjectCreate", e))?;
        Ok(Self {
            raw,
            level,
            array: array.clone(),
        })
    }

    /// The raw `CUtexObject` (a `cudaTextureObject_t` in kernels). Do not destroy it.
    pub fn cu_tex_object(&self) -> sys::CUtexObject {
        self.raw
    }

    /// The level it samples, or `None` for the whole mip chain.
    pub fn level(&self) -> Option<u32> {
        self.level
    }

    /// The array it samples.
    pub fn array(&self) -> &MipmappedArray {
        &self.array
    }
}

// SAFETY: pushes the address of the 64-bit handle field, borrowed for `'b`, which outlives
// the launch builder `'a`; kernels take `cudaTextureObject_t` (64 bits) by value.
unsafe impl<'a, 'b: 'a> PushKernelArg<&'b TextureObject> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b TextureObject) -> &mut Self {
        <Self as PushKernelArg<&'b sys::CUtexObject>>::arg(self, &arg.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::invalid_arg;

    fn rgba8(width: usize, height: usize, levels: u32) -> ArrayDesc {
        ArrayDesc {
            offset: 0,
            width,
            height,
            depth: 0,
            format: sys::CUarray_format::CU_AD_FORMAT_UNSIGNED_INT8,
            channels: 4,
            levels,
            flags: sys::CUDA_ARRAY3D_SURFACE_LDST,
        }
    }

    #[test]
    fn array_desc_levels_follow_the_extent() {
        let desc = rgba8(1024, 1024, 11);
        assert_eq!(desc.max_levels(), 11);
        assert_eq!(desc.level_extent(0), [1024, 1024, 0]);
        assert_eq!(desc.level_extent(3), [128, 128, 0]);
        assert_eq!(desc.level_extent(10), [1, 1, 0]);
        let layered = ArrayDesc {
            depth: 6,
            flags: sys::CUDA_ARRAY3D_LAYERED,
            ..rgba8(16, 8, 5)
        };
        assert_eq!(layered.max_levels(), 5);
        assert_eq!(layered.level_extent(4), [1, 1, 6]);
        let volume = ArrayDesc {
            depth: 32,
            ..rgba8(4, 4, 6)
        };
        assert_eq!(volume.max_levels(), 6);
        assert_eq!(volume.level_extent(3), [1, 1, 4]);
        let ok = validate_import_desc(&desc, 8 << 20, MemoryHandleType::OpaqueFd);
        assert!(ok.is_ok());
    }

    #[test]
    fn array_desc_is_checked_before_the_driver() {
        let size = 8 << 20;
        let fd = MemoryHandleType::OpaqueFd;
        let (arg, _, expected) =
            invalid_arg(validate_import_desc(&rgba8(1024, 1024, 12), size, fd));
        assert_eq!((arg, expected.as_str()), ("desc.levels", "1..=11"));
        let (arg, _, _) = invalid_arg(validate_import_desc(&rgba8(0, 4, 1), size, fd));
        assert_eq!(arg, "desc.width");
        let three = ArrayDesc {
            channels: 3,
            ..rgba8(4, 4, 1)
        };
        let (arg, _, _) = invalid_arg(validate_import_desc(&three, size, fd));
        assert_eq!(arg, "desc.channels");
        let past = ArrayDesc {
            offset: size,
            ..rgba8(4, 4, 1)
        };
        let (arg, _, _) = invalid_arg(validate_import_desc(&past, size, fd));
        assert_eq!(arg, "desc.offset");
        let dmabuf = validate_import_desc(&rgba8(4, 4, 1), size, MemoryHandleType::DmaBufFd);
        assert!(matches!(dmabuf, Err(Error::Unsupported { .. })));
    }

    /// Issue 10 row 8: an array larger than the import is refused before the driver maps
    /// it (a safe `copy_from_host` would then write past the import).
    #[test]
    fn an_array_larger_than_the_import_is_refused() {
        let fd = MemoryHandleType::OpaqueFd;
        // 1024x1024 RGBA8, one level: 4 MiB packed.
        let desc = rgba8(1024, 1024, 1);
        assert!(validate_import_desc(&desc, 4 << 20, fd).is_ok());
        let (arg, problem, _) = invalid_arg(validate_import_desc(&desc, (4 << 20) - 1, fd));
        assert_eq!(arg, "desc");
        assert!(problem.contains("4194304 bytes"), "{problem}");
        // Every level counts: 11 levels need 5,592,404 bytes.
        let mips = rgba8(1024, 1024, 11);
        assert_eq!(mips.packed_bytes(), Some(5_592_404));
        assert!(validate_import_desc(&mips, 4 << 20, fd).is_err());
        // The offset leaves less room.
        let shifted = ArrayDesc {
            offset: 1 << 20,
            ..desc
        };
        assert!(validate_import_desc(&shifted, 4 << 20, fd).is_err());
        // An extent whose size overflows a u64 is refused, not wrapped.
        let huge = ArrayDesc {
            depth: usize::MAX,
            ..rgba8(usize::MAX, usize::MAX, 1)
        };
        assert_eq!(huge.packed_bytes(), None);
        assert_eq!(
            invalid_arg(validate_import_desc(&huge, u64::MAX, fd)).0,
            "desc"
        );
    }

    #[test]
    fn block_compressed_arrays_have_no_surfaces() {
        let bc7 = ArrayDesc {
            format: sys::CUarray_format::CU_AD_FORMAT_BC7_UNORM,
            ..rgba8(16, 16, 1)
        };
        assert!(bc7.is_block_compressed());
        assert_eq!(bc7.element_bytes(), None);
        let (arg, problem, _) = invalid_arg(validate_shape(&bc7));
        assert_eq!(arg, "desc.flags");
        assert!(problem.contains("BC7"), "{problem}");
        let sampled = ArrayDesc { flags: 0, ..bc7 };
        assert!(validate_shape(&sampled).is_ok());
        let bc6h = ArrayDesc {
            format: sys::CUarray_format::CU_AD_FORMAT_BC6H_UF16,
            channels: 3,
            ..sampled
        };
        assert!(validate_shape(&bc6h).is_ok());
        let (arg, _, _) = invalid_arg(validate_shape(&ArrayDesc {
            channels: 4,
            ..bc6h
        }));
        assert_eq!(arg, "desc.channels");
    }

    #[test]
    fn element_bytes_count_every_channel() {
        use sys::CUarray_format as F;
        let with = |format, channels| ArrayDesc {
            format,
            channels,
            ..rgba8(4, 4, 1)
        };
        assert_eq!(rgba8(4, 4, 1).element_bytes(), Some(4));
        assert_eq!(with(F::CU_AD_FORMAT_HALF, 4).element_bytes(), Some(8));
        assert_eq!(with(F::CU_AD_FORMAT_FLOAT, 4).element_bytes(), Some(16));
        assert_eq!(
            with(F::CU_AD_FORMAT_SIGNED_INT16, 1).element_bytes(),
            Some(2)
        );
        assert_eq!(
            with(F::CU_AD_FORMAT_UNORM_INT_101010_2, 4).element_bytes(),
            Some(4)
        );
        assert_eq!(with(F::CU_AD_FORMAT_NV12, 1).element_bytes(), None);
    }

    #[test]
    fn host_copies_are_whole_regions() {
        let copy = memcpy_3d(
            [64, 8, 3],
            Endpoint::Host(std::ptr::null()),
            Endpoint::Array(std::ptr::null_mut()),
        );
        assert_eq!(copy.srcMemoryType, sys::CUmemorytype::CU_MEMORYTYPE_HOST);
        assert_eq!(copy.dstMemoryType, sys::CUmemorytype::CU_MEMORYTYPE_ARRAY);
        assert_eq!((copy.srcPitch, copy.srcHeight), (64, 8));
        assert_eq!((copy.WidthInBytes, copy.Height, copy.Depth), (64, 8, 3));
    }

    #[test]
    fn texture_desc_flags() {
        let raw = TextureDesc::default().to_raw(4);
        assert_eq!(raw.flags, sys::CU_TRSF_NORMALIZED_COORDINATES);
        assert_eq!(raw.maxMipmapLevelClamp, 3.0);
        let texels = TextureDesc {
            read_as_integer: true,
            normalized_coords: false,
            srgb: true,
            ..TextureDesc::default()
        };
        assert_eq!(
            texels.to_raw(1).flags,
            sys::CU_TRSF_READ_AS_INTEGER | sys::CU_TRSF_SRGB
        );
        assert_eq!(texels.to_raw(1).maxMipmapLevelClamp, 0.0);
    }
}
