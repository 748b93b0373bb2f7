//! Images bound to their own dedicated, external-capable `VkDeviceMemory`; their hand-off to
//! and from `VK_QUEUE_FAMILY_EXTERNAL`; staged transfers for tests and readback.
//!
//! The contract (checks, ownership, memory ordering) is documented on [`ExternalImage`].

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use ash::vk;
use gpu_allocator::MemoryLocation as GpuLocation;

use super::capabilities::{memory_handle_flags, memory_support, ExternalSupport};
use super::memory::{
    allocate_exportable, check_import_size, export_handle, import_fd, import_memory,
    unsupported_type, Dedicated,
};
use super::transfer::Staging;
use super::Context;
use crate::error::{Error, Result};
use crate::external::{MemoryHandleType, MemoryImport};

// ---------------------------------------------------------------------------------------
// Description
// ---------------------------------------------------------------------------------------

/// The shape of an image: what `VkImageType`, create flags and array layers it has, and how
/// an importer lays it out (a CUDA mipmapped array is 2D, layered, cubemap, layered cubemap
/// or 3D in exactly these five cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageKind {
    /// One 2D image: `VK_IMAGE_TYPE_2D`, 1 layer.
    D2,
    /// An array of 2D images: `VK_IMAGE_TYPE_2D`, 1 or more layers.
    D2Array,
    /// A cube map: `VK_IMAGE_TYPE_2D` with `CUBE_COMPATIBLE`, square faces, 6 layers
    /// (+X, -X, +Y, -Y, +Z, -Z).
    Cube,
    /// An array of cube maps: `VK_IMAGE_TYPE_2D` with `CUBE_COMPATIBLE`, square faces,
    /// 6 layers per cube, cube after cube.
    CubeArray,
    /// A 3D image: `VK_IMAGE_TYPE_3D`, `depth` slices, 1 layer.
    D3,
}

impl ImageKind {
    /// The `VkImageType` images of this kind are created with.
    pub fn image_type(self) -> vk::ImageType {
        match self {
            Self::D3 => vk::ImageType::TYPE_3D,
            _ => vk::ImageType::TYPE_2D,
        }
    }

    /// The `VkImageViewType` that sees the whole image.
    pub fn view_type(self) -> vk::ImageViewType {
        match self {
            Self::D2 => vk::ImageViewType::TYPE_2D,
            Self::D2Array => vk::ImageViewType::TYPE_2D_ARRAY,
            Self::Cube => vk::ImageViewType::CUBE,
            Self::CubeArray => vk::ImageViewType::CUBE_ARRAY,
            Self::D3 => vk::ImageViewType::TYPE_3D,
        }
    }

    /// The create flags the kind needs (`CUBE_COMPATIBLE` for cubes).
    pub fn create_flags(self) -> vk::ImageCreateFlags {
        if self.is_cube() {
            vk::ImageCreateFlags::CUBE_COMPATIBLE
        } else {
            vk::ImageCreateFlags::empty()
        }
    }

    /// `Cube` or `CubeArray`.
    pub fn is_cube(self) -> bool {
        matches!(self, Self::Cube | Self::CubeArray)
    }

    /// `D2Array` or `CubeArray`: an importer sees layers (CUDA: `CUDA_ARRAY3D_LAYERED`).
    pub fn is_layered(self) -> bool {
        matches!(self, Self::D2Array | Self::CubeArray)
    }
}

/// What [`ExternalImage::new`] creates, and what an importer needs to lay out the same
/// memory: every field is public so the CUDA side can derive its mipmapped-array
/// descriptor from it.
///
/// Built with a constructor per [`ImageKind`] and the builder methods:
/// ```
/// use vkcuda::ash::vk;
/// use vkcuda::vulkan::ImageDesc;
/// let desc = ImageDesc::d2(1024, 1024, vk::Format::R8G8B8A8_UNORM).mips(4);
/// assert_eq!(desc.level_extent(3).width, 128);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDesc {
    /// 2D, 2D array, cube, cube array or 3D.
    pub kind: ImageKind,
    /// Width, height and depth of level 0 in texels; `depth` is 1 except for
    /// [`ImageKind::D3`].
    pub extent: vk::Extent3D,
    /// Array layers (`arrayLayers`): 1 for `D2` and `D3`, 6 per cube for cube kinds.
    pub layers: u32,
    /// Mip levels (`mipLevels`), at least 1.
    pub mip_levels: u32,
    /// Texel format.
    pub format: vk::Format,
    /// Image usage; by default `STORAGE | SAMPLED | TRANSFER_SRC | TRANSFER_DST`.
    pub usage: vk::ImageUsageFlags,
    /// `OPTIMAL` (default) or `LINEAR` where the device allows it for the format.
    pub tiling: vk::ImageTiling,
    /// How the memory is exported.
    pub handle_type: MemoryHandleType,
}

impl ImageDesc {
    /// The usage every constructor starts with: storage (CUDA surfaces, compute shaders),
    /// sampling, and transfers both ways.
    pub const DEFAULT_USAGE: vk::ImageUsageFlags = vk::ImageUsageFlags::from_raw(
        vk::ImageUsageFlags::STORAGE.as_raw()
            | vk::ImageUsageFlags::SAMPLED.as_raw()
            | vk::ImageUsageFlags::TRANSFER_SRC.as_raw()
            | vk::ImageUsageFlags::TRANSFER_DST.as_raw(),
    );

    fn with(kind: ImageKind, extent: vk::Extent3D, layers: u32, format: vk::Format) -> Self {
        Self {
            kind,
            extent,
            layers,
            mip_levels: 1,
            format,
            usage: Self::DEFAULT_USAGE,
            tiling: vk::ImageTiling::OPTIMAL,
            handle_type: MemoryHandleType::OpaqueFd,
        }
    }

    /// A `width` × `height` 2D image, 1 level, optimal tiling, exported as an opaque fd.
    pub fn d2(width: u32, height: u32, format: vk::Format) -> Self {
        Self::with(ImageKind::D2, extent(width, height, 1), 1, format)
    }

    /// An array of `layers` 2D images.
    pub fn d2_array(width: u32, height: u32, layers: u32, format: vk::Format) -> Self {
        Self::with(ImageKind::D2Array, extent(width, height, 1), layers, format)
    }

    /// A cube map with `size` × `size` faces (6 layers).
    pub fn cube(size: u32, format: vk::Format) -> Self {
        Self::with(ImageKind::Cube, extent(size, size, 1), 6, format)
    }

    /// An array of `cubes` cube maps with `size` × `size` faces (`6 * cubes` layers).
    pub fn cube_array(size: u32, cubes: u32, format: vk::Format) -> Self {
        let layers = cubes.saturating_mul(6);
        Self::with(ImageKind::CubeArray, extent(size, size, 1), layers, format)
    }

    /// A `width` × `height` × `depth` 3D image.
    pub fn d3(width: u32, height: u32, depth: u32, format: vk::Format) -> Self {
        Self::with(ImageKind::D3, extent(width, height, depth), 1, format)
    }

    /// Sets the number of mip levels (see [`ImageDesc::max_mip_levels`]).
    pub fn mips(mut self, levels: u32) -> Self {
        self.mip_levels = levels;
        self
    }

    /// Sets the number of mip levels to the full chain down to 1 × 1 (× 1).
    pub fn full_mip_chain(mut self) -> Self {
        self.mip_levels = self.max_mip_levels();
        self
    }

    /// Replaces the usage flags (add `COLOR_ATTACHMENT` to render into it).
    pub fn usage(mut self, usage: vk::ImageUsageFlags) -> Self {
        self.usage = usage;
        self
    }

    /// Replaces the tiling: `OPTIMAL` or `LINEAR`.
    pub fn tiling(mut self, tiling: vk::ImageTiling) -> Self {
        self.tiling = tiling;
        self
    }

    /// Replaces the export handle type.
    pub fn handle_type(mut self, handle_type: MemoryHandleType) -> Self {
        self.handle_type = handle_type;
        self
    }

    /// The longest mip chain this extent has: `floor(log2(largest dimension)) + 1` (depth
    /// counts for 3D images only).
    pub fn max_mip_levels(&self) -> u32 {
        let e = self.extent;
        let depth = if self.kind == ImageKind::D3 {
            e.depth
        } else {
            1
        };
        e.width.max(e.height).max(depth).max(1).ilog2() + 1
    }

    /// Extent of mip `level`: each dimension halved per level, at least 1.
    pub fn level_extent(&self, level: u32) -> vk::Extent3D {
        let e = self.extent;
        let shrink = |d: u32| d.checked_shr(level).unwrap_or(0).max(1);
        extent(shrink(e.width), shrink(e.height), shrink(e.depth))
    }

    /// Every level and layer of the image, for barriers and views.
    pub fn subresource_range(&self) -> vk::ImageSubresourceRange {
        vk::ImageSubresourceRange {
            aspect_mask: aspect_of(self.format),
            base_mip_level: 0,
            level_count: self.mip_levels,
            base_array_layer: 0,
            layer_count: self.layers,
        }
    }

    /// The `VkImageCreateInfo` (without its `pNext` chain) this description creates.
    pub fn create_info<'a>(&self) -> vk::ImageCreateInfo<'a> {
        vk::ImageCreateInfo::default()
            .flags(self.kind.create_flags())
            .image_type(self.kind.image_type())
            .format(self.format)
            .extent(self.extent)
            .mip_levels(self.mip_levels)
            .array_layers(self.layers)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(self.tiling)
            .usage(self.usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .initial_layout(vk::ImageLayout::UNDEFINED)
    }
}

fn extent(width: u32, height: u32, depth: u32) -> vk::Extent3D {
    vk::Extent3D {
        width,
        height,
        depth,
    }
}

/// The aspects a whole-image barrier names for `format`.
fn aspect_of(format: vk::Format) -> vk::ImageAspectFlags {
    use vk::Format as F;
    match format {
        F::D16_UNORM | F::X8_D24_UNORM_PACK32 | F::D32_SFLOAT => vk::ImageAspectFlags::DEPTH,
        F::S8_UINT => vk::ImageAspectFlags::STENCIL,
        F::D16_UNORM_S8_UINT | F::D24_UNORM_S8_UINT | F::D32_SFLOAT_S8_UINT => {
            vk::ImageAspectFlags::DEPTH | vk::ImageAspectFlags::STENCIL
        }
        _ => vk::ImageAspectFlags::COLOR,
    }
}

// ---------------------------------------------------------------------------------------
// Texel sizes
// ---------------------------------------------------------------------------------------

/// The unit a format is stored in: one texel, or one compressed block of texels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TexelBlock {
    /// Bytes per block.
    pub bytes: u32,
    /// Block width in texels (1 for uncompressed formats).
    pub width: u32,
    /// Block height in texels (1 for uncompressed formats).
    pub height: u32,
}

/// The texel block of a single-plane color `format`: every uncompressed core format, the
/// 10X6/12X4 padded formats, A4R4G4B4/A4B4G4R4, A8, A1B5G5R5, and the BC, ETC2/EAC and
/// LDR ASTC block formats. `None` for depth/stencil (copied per aspect), multi-planar and
/// subsampled YCbCr formats and anything else (staged copies refuse those).
pub fn texel_block(format: vk::Format) -> Option<TexelBlock> {
    let raw = format.as_raw();
    BLOCKS
        .iter()
        .find(|(first, last, _)| (first.as_raw()..=last.as_raw()).contains(&raw))
        .map(|&(_, _, (bytes, width, height))| TexelBlock {
            bytes,
            width,
            height,
        })
}

/// `(first, last, (bytes, block width, block height))`: inclusive runs of format values.
static BLOCKS: &[(vk::Format, vk::Format, (u32, u32, u32))] = {
    use vk::Format as F;
    &[
        (F::R4G4_UNORM_PACK8, F::R4G4_UNORM_PACK8, (1, 1, 1)),
        (
            F::R4G4B4A4_UNORM_PACK16,
            F::A1R5G5B5_UNORM_PACK16,
            (2, 1, 1),
        ),
        (F::R8_UNORM, F::R8_SRGB, (1, 1, 1)),
        (F::R8G8_UNORM, F::R8G8_SRGB, (2, 1, 1)),
        (F::R8G8B8_UNORM, F::B8G8R8_SRGB, (3, 1, 1)),
        (F::R8G8B8A8_UNORM, F::A8B8G8R8_SRGB_PACK32, (4, 1, 1)),
        (
            F::A2R10G10B10_UNORM_PACK32,
            F::A2B10G10R10_SINT_PACK32,
            (4, 1, 1),
        ),
        (F::R16_UNORM, F::R16_SFLOAT, (2, 1, 1)),
        (F::R16G16_UNORM, F::R16G16_SFLOAT, (4, 1, 1)),
        (F::R16G16B16_UNORM, F::R16G16B16_SFLOAT, (6, 1, 1)),
        (F::R16G16B16A16_UNORM, F::R16G16B16A16_SFLOAT, (8, 1, 1)),
        (F::R32_UINT, F::R32_SFLOAT, (4, 1, 1)),
        (F::R32G32_UINT, F::R32G32_SFLOAT, (8, 1, 1)),
        (F::R32G32B32_UINT, F::R32G32B32_SFLOAT, (12, 1, 1)),
        (F::R32G32B32A32_UINT, F::R32G32B32A32_SFLOAT, (16, 1, 1)),
        (F::R64_UINT, F::R64_SFLOAT, (8, 1, 1)),
        (F::R64G64_UINT, F::R64G64_SFLOAT, (16, 1, 1)),
        (F::R64G64B64_UINT, F::R64G64B64_SFLOAT, (24, 1, 1)),
        (F::R64G64B64A64_UINT, F::R64G64B64A64_SFLOAT, (32, 1, 1)),
        (
            F::B10G11R11_UFLOAT_PACK32,
            F::E5B9G9R9_UFLOAT_PACK32,
            (4, 1, 1),
        ),
        (F::BC1_RGB_UNORM_BLOCK, F::BC1_RGBA_SRGB_BLOCK, (8, 4, 4)),
        (F::BC2_UNORM_BLOCK, F::BC3_SRGB_BLOCK, (16, 4, 4)),
        (F::BC4_UNORM_BLOCK, F::BC4_SNORM_BLOCK, (8, 4, 4)),
        (F::BC5_UNORM_BLOCK, F::BC7_SRGB_BLOCK, (16, 4, 4)),
        (
            F::ETC2_R8G8B8_UNORM_BLOCK,
            F::ETC2_R8G8B8A1_SRGB_BLOCK,
            (8, 4, 4),
        ),
        (
            F::ETC2_R8G8B8A8_UNORM_BLOCK,
            F::ETC2_R8G8B8A8_SRGB_BLOCK,
            (16, 4, 4),
        ),
        (F::EAC_R11_UNORM_BLOCK, F::EAC_R11_SNORM_BLOCK, (8, 4, 4)),
        (
            F::EAC_R11G11_UNORM_BLOCK,
            F::EAC_R11G11_SNORM_BLOCK,
            (16, 4, 4),
        ),
        (F::ASTC_4X4_UNORM_BLOCK, F::ASTC_4X4_SRGB_BLOCK, (16, 4, 4)),
        (F::ASTC_5X4_UNORM_BLOCK, F::ASTC_5X4_SRGB_BLOCK, (16, 5, 4)),
        (F::ASTC_5X5_UNORM_BLOCK, F::ASTC_5X5_SRGB_BLOCK, (16, 5, 5)),
        (F::ASTC_6X5_UNORM_BLOCK, F::ASTC_6X5_SRGB_BLOCK, (16, 6, 5)),
        (F::ASTC_6X6_UNORM_BLOCK, F::ASTC_6X6_SRGB_BLOCK, (16, 6, 6)),
        (F::ASTC_8X5_UNORM_BLOCK, F::ASTC_8X5_SRGB_BLOCK, (16, 8, 5)),
        (F::ASTC_8X6_UNORM_BLOCK, F::ASTC_8X6_SRGB_BLOCK, (16, 8, 6)),
        (F::ASTC_8X8_UNORM_BLOCK, F::ASTC_8X8_SRGB_BLOCK, (16, 8, 8)),
        (
            F::ASTC_10X5_UNORM_BLOCK,
            F::ASTC_10X5_SRGB_BLOCK,
            (16, 10, 5),
        ),
        (
            F::ASTC_10X6_UNORM_BLOCK,
            F::ASTC_10X6_SRGB_BLOCK,
            (16, 10, 6),
        ),
        (
            F::ASTC_10X8_UNORM_BLOCK,
            F::ASTC_10X8_SRGB_BLOCK,
            (16, 10, 8),
        ),
        (
            F::ASTC_10X10_UNORM_BLOCK,
            F::ASTC_10X10_SRGB_BLOCK,
            (16, 10, 10),
        ),
        (
            F::ASTC_12X10_UNORM_BLOCK,
            F::ASTC_12X10_SRGB_BLOCK,
            (16, 12, 10),
        ),
        (
            F::ASTC_12X12_UNORM_BLOCK,
            F::ASTC_12X12_SRGB_BLOCK,
            (16, 12, 12),
        ),
        (F::R10X6_UNORM_PACK16, F::R10X6_UNORM_PACK16, (2, 1, 1)),
        (
            F::R10X6G10X6_UNORM_2PACK16,
            F::R10X6G10X6_UNORM_2PACK16,
            (4, 1, 1),
        ),
        (
            F::R10X6G10X6B10X6A10X6_UNORM_4PACK16,
            F::R10X6G10X6B10X6A10X6_UNORM_4PACK16,
            (8, 1, 1),
        ),
        (F::R12X4_UNORM_PACK16, F::R12X4_UNORM_PACK16, (2, 1, 1)),
        (
            F::R12X4G12X4_UNORM_2PACK16,
            F::R12X4G12X4_UNORM_2PACK16,
            (4, 1, 1),
        ),
        (
            F::R12X4G12X4B12X4A12X4_UNORM_4PACK16,
            F::R12X4G12X4B12X4A12X4_UNORM_4PACK16,
            (8, 1, 1),
        ),
        (
            F::A4R4G4B4_UNORM_PACK16,
            F::A4B4G4R4_UNORM_PACK16,
            (2, 1, 1),
        ),
        (
            F::A1B5G5R5_UNORM_PACK16_KHR,
            F::A1B5G5R5_UNORM_PACK16_KHR,
            (2, 1, 1),
        ),
        (F::A8_UNORM_KHR, F::A8_UNORM_KHR, (1, 1, 1)),
    ]
};

/// Bytes of one layer of mip `level` of `desc`, tightly packed (whole blocks).
pub(super) fn level_bytes(desc: &ImageDesc, level: u32) -> Option<u64> {
    let block = texel_block(desc.format)?;
    let e = desc.level_extent(level);
    let blocks_x = u64::from(e.width.div_ceil(block.width));
    let blocks_y = u64::from(e.height.div_ceil(block.height));
    Some(blocks_x * blocks_y * u64::from(e.depth) * u64::from(block.bytes))
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

/// Rules and device limits that need no format query.
/// Formats the spec lists as needing a sampler Y'CbCr conversion: the 4:2:x packed and
/// multi-planar ones and the padded 10X6/12X4 formats with 3 or 4 components (the 1- and
/// 2-component ones, e.g. `R10X6_UNORM_PACK16`, do not).
fn needs_ycbcr_conversion(format: vk::Format) -> bool {
    let raw = format.as_raw();
    // VK_KHR_sampler_ycbcr_conversion's block, minus R10X6/R10X6G10X6/R12X4/R12X4G12X4.
    let ycbcr_block = (1_000_156_000..=1_000_156_033).contains(&raw)
        && !matches!(
            format,
            vk::Format::R10X6_UNORM_PACK16
                | vk::Format::R10X6G10X6_UNORM_2PACK16
                | vk::Format::R12X4_UNORM_PACK16
                | vk::Format::R12X4G12X4_UNORM_2PACK16
        );
    // VK_EXT_ycbcr_2plane_444_formats (core 1.3).
    let two_plane_444 = (1_000_330_000..=1_000_330_003).contains(&raw);
    ycbcr_block || two_plane_444
}

fn check_desc(ctx: &Context, desc: &ImageDesc) -> Result<()> {
    let kind = desc.kind;
    if desc.format == vk::Format::UNDEFINED {
        return Err(Error::invalid(
            "desc.format",
            "VK_FORMAT_UNDEFINED",
            "a concrete format",
        ));
    }
    // Formats from VK_KHR_maintenance5, which vkcuda does not enable: querying them at all
    // is invalid (VUID-VkPhysicalDeviceImageFormatInfo2-format-parameter).
    if matches!(
        desc.format,
        vk::Format::A8_UNORM_KHR | vk::Format::A1B5G5R5_UNORM_PACK16_KHR
    ) {
        return Err(Error::Unsupported {
            what: format!("VkFormat {:?}", desc.format),
            reason: "it needs VK_KHR_maintenance5, which the context does not enable".into(),
        });
    }
    // Formats that need a sampler Y'CbCr conversion have one mip level
    // (VUID-VkImageCreateInfo-format-06410).
    if desc.mip_levels > 1 && needs_ycbcr_conversion(desc.format) {
        return Err(Error::invalid(
            "desc.mip_levels",
            format!("{} for {:?}", desc.mip_levels, desc.format),
            "1: formats that need a sampler Y'CbCr conversion have no mip chain",
        ));
    }
    if desc.usage.is_empty() {
        return Err(Error::invalid(
            "desc.usage",
            "no usage flags",
            "at least one VkImageUsageFlags bit",
        ));
    }
    if !matches!(
        desc.tiling,
        vk::ImageTiling::OPTIMAL | vk::ImageTiling::LINEAR
    ) {
        return Err(Error::invalid(
            "desc.tiling",
            format!("{:?}", desc.tiling),
            "OPTIMAL or LINEAR (DRM format modifiers are not supported)",
        ));
    }
    let limits = &ctx.properties().limits;
    let (max_dim, limit) = match kind {
        ImageKind::D2 | ImageKind::D2Array => {
            (limits.max_image_dimension2_d, "maxImageDimension2D")
        }
        ImageKind::Cube | ImageKind::CubeArray => {
            (limits.max_image_dimension_cube, "maxImageDimensionCube")
        }
        ImageKind::D3 => (limits.max_image_dimension3_d, "maxImageDimension3D"),
    };
    let e = desc.extent;
    let mut dims = vec![
        ("desc.extent.width", e.width),
        ("desc.extent.height", e.height),
    ];
    if kind == ImageKind::D3 {
        dims.push(("desc.extent.depth", e.depth));
    } else if e.depth != 1 {
        return Err(Error::invalid(
            "desc.extent.depth",
            format!("{} for a {kind:?} image", e.depth),
            "1 (only ImageKind::D3 has depth; layers go in desc.layers)",
        ));
    }
    for (arg, value) in dims {
        if value == 0 {
            return Err(Error::invalid(arg, "0", "at least 1"));
        }
        if value > max_dim {
            return Err(Error::invalid(
                arg,
                format!("{value} is above this device's {limit}"),
                format!("at most {max_dim}"),
            ));
        }
    }
    if kind.is_cube() && e.width != e.height {
        return Err(Error::invalid(
            "desc.extent.height",
            format!("cube faces must be square, got {}x{}", e.width, e.height),
            format!("height == width ({})", e.width),
        ));
    }
    let layers = desc.layers;
    let expected = match kind {
        ImageKind::D2 if layers != 1 => Some("1 (use ImageKind::D2Array for layers)"),
        ImageKind::D3 if layers != 1 => Some("1 (3D images have depth slices, not layers)"),
        ImageKind::D2Array if layers == 0 => Some("at least 1"),
        ImageKind::Cube if layers != 6 => Some("6, one per face (ImageKind::CubeArray for more)"),
        ImageKind::CubeArray if layers == 0 || !layers.is_multiple_of(6) => {
            Some("a non-zero multiple of 6 (6 faces per cube)")
        }
        _ => None,
    };
    if let Some(expected) = expected {
        return Err(Error::invalid(
            "desc.layers",
            format!("{layers} layers for a {kind:?} image"),
            expected,
        ));
    }
    if layers > limits.max_image_array_layers {
        return Err(Error::invalid(
            "desc.layers",
            format!("{layers} is above this device's maxImageArrayLayers"),
            format!("at most {}", limits.max_image_array_layers),
        ));
    }
    let max_mips = desc.max_mip_levels();
    if desc.mip_levels == 0 || desc.mip_levels > max_mips {
        return Err(Error::invalid(
            "desc.mip_levels",
            format!(
                "{} levels for a {}x{}x{} image",
                desc.mip_levels, e.width, e.height, e.depth
            ),
            format!("1 to {max_mips} (floor(log2(largest dimension)) + 1)"),
        ));
    }
    Ok(())
}

/// The Vulkan flag of `desc.handle_type`, after the platform and extension checks.
fn external_flags(ctx: &Context, t: MemoryHandleType) -> Result<vk::ExternalMemoryHandleTypeFlags> {
    if !t.is_fd() || !cfg!(unix) {
        return Err(unsupported_type(t));
    }
    if t == MemoryHandleType::DmaBufFd && !ctx.can_export_dma_buf() {
        return Err(Error::Unsupported {
            what: "DmaBufFd memory from Vulkan".into(),
            reason: "the device does not have VK_EXT_external_memory_dma_buf".into(),
        });
    }
    memory_handle_flags(t).ok_or_else(|| unsupported_type(t))
}

/// What the driver allows for one [`ImageDesc`] (`vkGetPhysicalDeviceImageFormatProperties2`
/// with `VkPhysicalDeviceExternalImageFormatInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSupport {
    /// Export/import of `desc.handle_type` for such an image.
    pub external: ExternalSupport,
    /// Largest extent of this format, type, usage and tiling.
    pub max_extent: vk::Extent3D,
    /// Most mip levels.
    pub max_mip_levels: u32,
    /// Most array layers.
    pub max_array_layers: u32,
    /// Largest total size in bytes (at least 2^31).
    pub max_resource_size: u64,
}

impl Context {
    /// Asks the driver whether an image of `desc` (format, kind, usage, tiling, cube flag)
    /// can be created with `desc.handle_type` external memory, and within which limits.
    /// `desc`'s extent, levels and layers are not looked at: compare them with the result.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when Vulkan has no such handle type, or the driver refuses the
    /// combination; the reason says why (missing format feature for a usage bit, tiling,
    /// image type, or the handle type).
    pub fn image_support(&self, desc: &ImageDesc) -> Result<ImageSupport> {
        let t = desc.handle_type;
        let flags = memory_handle_flags(t).ok_or_else(|| Error::Unsupported {
            what: format!("{t} image memory in Vulkan"),
            reason: "Vulkan has no such external memory handle type".into(),
        })?;
        let mut props = vk::ExternalImageFormatProperties::default();
        let result = self.image_format_properties(desc, Some(flags), Some(&mut props));
        match result {
            Ok(p) => Ok(ImageSupport {
                external: memory_support(props.external_memory_properties),
                max_extent: p.max_extent,
                max_mip_levels: p.max_mip_levels,
                max_array_layers: p.max_array_layers,
                max_resource_size: p.max_resource_size,
            }),
            Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED) => Err(self.explain_refusal(desc)),
            Err(r) => Err(Error::vk("vkGetPhysicalDeviceImageFormatProperties2", r)),
        }
    }

    /// `vkGetPhysicalDeviceImageFormatProperties2`, with the external-memory query when
    /// `external` is given.
    fn image_format_properties(
        &self,
        desc: &ImageDesc,
        external: Option<vk::ExternalMemoryHandleTypeFlags>,
        props: Option<&mut vk::ExternalImageFormatProperties<'_>>,
    ) -> std::result::Result<vk::ImageFormatProperties, vk::Result> {
        let mut external_info = external
            .map(|flags| vk::PhysicalDeviceExternalImageFormatInfo::default().handle_type(flags));
        let mut info = vk::PhysicalDeviceImageFormatInfo2::default()
            .format(desc.format)
            .ty(desc.kind.image_type())
            .tiling(desc.tiling)
            .usage(desc.usage)
            .flags(desc.kind.create_flags());
        if let Some(e) = external_info.as_mut() {
            info = info.push_next(e);
        }
        let mut out = vk::ImageFormatProperties2::default();
        if let Some(p) = props {
            out = out.push_next(p);
        }
        // SAFETY: valid physical device of this instance (Vulkan >= 1.1); both chains point
        // at live structs of the types the call accepts.
        unsafe {
            self.instance()
                .get_physical_device_image_format_properties2(
                    self.physical_device(),
                    &info,
                    &mut out,
                )
        }?;
        Ok(out.image_format_properties)
    }

    /// Why `desc` was refused: the external handle type, or a format feature a usage bit
    /// needs, or the combination as a whole.
    fn explain_refusal(&self, desc: &ImageDesc) -> Error {
        let what = format!(
            "{:?} {:?} image with usage {:?}, tiling {:?}, exported as {}",
            desc.format, desc.kind, desc.usage, desc.tiling, desc.handle_type
        );
        let call = "vkGetPhysicalDeviceImageFormatProperties2 returned ERROR_FORMAT_NOT_SUPPORTED";
        if self.image_format_properties(desc, None, None).is_ok() {
            return Error::Unsupported {
                what,
                reason: format!(
                    "the device supports this image, but not with {} external memory ({call} \
                     once VkPhysicalDeviceExternalImageFormatInfo is added)",
                    desc.handle_type
                ),
            };
        }
        // SAFETY: valid physical device of this instance.
        let format_props = unsafe {
            self.instance()
                .get_physical_device_format_properties(self.physical_device(), desc.format)
        };
        let features = if desc.tiling == vk::ImageTiling::LINEAR {
            format_props.linear_tiling_features
        } else {
            format_props.optimal_tiling_features
        };
        use vk::FormatFeatureFlags as Ff;
        use vk::ImageUsageFlags as U;
        let needs = [
            (U::STORAGE, Ff::STORAGE_IMAGE, "STORAGE_IMAGE"),
            (U::SAMPLED, Ff::SAMPLED_IMAGE, "SAMPLED_IMAGE"),
            (
                U::COLOR_ATTACHMENT,
                Ff::COLOR_ATTACHMENT,
                "COLOR_ATTACHMENT",
            ),
            (
                U::DEPTH_STENCIL_ATTACHMENT,
                Ff::DEPTH_STENCIL_ATTACHMENT,
                "DEPTH_STENCIL_ATTACHMENT",
            ),
            (U::TRANSFER_SRC, Ff::TRANSFER_SRC, "TRANSFER_SRC"),
            (U::TRANSFER_DST, Ff::TRANSFER_DST, "TRANSFER_DST"),
        ];
        let missing: Vec<String> = needs
            .iter()
            .filter(|(usage, feature, _)| {
                desc.usage.contains(*usage) && !features.contains(*feature)
            })
            .map(|(usage, _, name)| format!("{name} (for usage {usage:?})"))
            .collect();
        let reason = if features.is_empty() {
            format!(
                "the device has no {:?}-tiling support for {:?} at all (no format features)",
                desc.tiling, desc.format
            )
        } else if !missing.is_empty() {
            format!(
                "{:?} with {:?} tiling lacks the format feature(s) {}; drop those usage bits or \
                 pick another format",
                desc.format,
                desc.tiling,
                missing.join(", ")
            )
        } else {
            format!(
                "the format features allow the usage, but not as a {:?} image with flags {:?} \
                 ({call}; LINEAR tiling is often limited to one-level 2D images)",
                desc.kind.image_type(),
                desc.kind.create_flags()
            )
        };
        Error::Unsupported { what, reason }
    }
}

/// Extent, levels and layers against what the driver allows for this format.
fn check_format_limits(desc: &ImageDesc, support: &ImageSupport) -> Result<()> {
    let which = || {
        format!(
            "for {:?} {:?} images with {:?} tiling on this device",
            desc.format, desc.kind, desc.tiling
        )
    };
    let e = desc.extent;
    let m = support.max_extent;
    for (arg, value, max) in [
        ("desc.extent.width", e.width, m.width),
        ("desc.extent.height", e.height, m.height),
        ("desc.extent.depth", e.depth, m.depth),
    ] {
        if value > max {
            return Err(Error::invalid(
                arg,
                format!("{value} is above the format's maximum"),
                format!("at most {max} {}", which()),
            ));
        }
    }
    if desc.mip_levels > support.max_mip_levels {
        return Err(Error::invalid(
            "desc.mip_levels",
            format!("{} levels is above the format's maximum", desc.mip_levels),
            format!("at most {} {}", support.max_mip_levels, which()),
        ));
    }
    if desc.layers > support.max_array_layers {
        return Err(Error::invalid(
            "desc.layers",
            format!("{} layers is above the format's maximum", desc.layers),
            format!("at most {} {}", support.max_array_layers, which()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------------------

/// Which queue family may use an image's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageOwner {
    /// The context's queue family ([`Context::queue_family_index`]): Vulkan may use it.
    Vulkan,
    /// Released to `VK_QUEUE_FAMILY_EXTERNAL`: CUDA (or whoever imported the memory) may
    /// use it; Vulkan must acquire it first.
    External,
}

/// An image's owner and the layout of its contents, as tracked in recording order (see
/// [`ExternalImage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageState {
    /// Who may use it.
    pub owner: ImageOwner,
    /// The layout of all its levels and layers.
    pub layout: vk::ImageLayout,
}

/// A `VkImage` bound to a dedicated `VkDeviceMemory` that was allocated exportable
/// ([`ExternalImage::new`]) or imported from an external handle ([`ExternalImage::import`]),
/// with its queue-family owner and layout tracked ([`ImageState`]). Destroys the image and
/// frees the memory on drop; GPU work that uses it (on either API) must have finished by
/// then.
///
/// # Describing an image
/// [`ImageDesc`] names everything the image is created with, and everything an importer
/// (CUDA's `cuExternalMemoryGetMappedMipmappedArray`, another Vulkan device) must be told to
/// lay the memory out the same way: [`ImageKind`], extent, array layers, mip levels, format,
/// usage, tiling. [`ExternalImage::new`] checks it in two steps before creating anything:
/// 1. against the rules and the device limits (`maxImageDimension*`,
///    `maxImageArrayLayers`, the full mip chain), as [`Error::InvalidArgument`] naming the
///    field (`desc.mip_levels`, ...) and the limit;
/// 2. against the driver, with `vkGetPhysicalDeviceImageFormatProperties2` and
///    `VkPhysicalDeviceExternalImageFormatInfo`: a refused combination is an
///    [`Error::Unsupported`] naming format, usage and tiling and saying which format feature
///    is missing; a handle type that cannot be exported is an [`Error::Unsupported`]; an
///    extent, level count or layer count above what this format allows is an
///    [`Error::InvalidArgument`] naming the field and the format's limit.
///
/// # Ownership and layout
/// An image shared with another API belongs either to the context's queue family
/// ([`ImageOwner::Vulkan`]) or to `VK_QUEUE_FAMILY_EXTERNAL` ([`ImageOwner::External`]), and
/// its contents are in one layout. [`ExternalImage`] tracks both ([`ImageState`]) and
/// records the barriers that change them, so nobody writes them by hand:
///
/// | helper | barrier over all levels and layers | state after |
/// |---|---|---|
/// | [`record_initialize`](ExternalImage::record_initialize) | `UNDEFINED` → `GENERAL` (contents discarded) | Vulkan, `GENERAL` |
/// | [`record_transition`](ExternalImage::record_transition) | current → `layout` | Vulkan, `layout` |
/// | [`record_release`](ExternalImage::record_release) | current → `GENERAL`, queue family → `EXTERNAL` | External, `GENERAL` |
/// | [`record_acquire`](ExternalImage::record_acquire) | `EXTERNAL` → queue family, `GENERAL` → `layout` | Vulkan, `layout` |
///
/// [`Context::release_image`] and [`Context::acquire_image`] do the same as one-shot
/// submissions that wait for completion (setup and tests, not per-frame work).
///
/// A new exportable image starts as (Vulkan, `UNDEFINED`). An **imported** image starts as
/// (External, `GENERAL`): its contents were written by the exporter, which released them,
/// so the first Vulkan use is an acquire, which keeps them.
///
/// The state is tracked **in recording order**: after a `record_*` call it is the state
/// the image will be in once that command buffer has executed. Command buffers that record
/// these barriers must therefore be submitted (to a queue of
/// [`Context::queue_family_index`]) in the order they were recorded, and each exactly once;
/// this is what the `# Safety` sections of the `record_*` methods ask. A caller that moves
/// the image with its own barriers says so with [`ExternalImage::assume_state`].
///
/// # Memory ordering with the other API
/// * **Release** (Vulkan → CUDA): the barrier's first scope is every earlier command on the
///   queue (`ALL_COMMANDS`, `MEMORY_WRITE`), so their writes are made available before the
///   release. The submission that contains it must signal a semaphore that CUDA waits on
///   (or the host must wait for its fence) before CUDA touches the memory. From then until
///   the acquire, Vulkan must not use the image: vkcuda's own helpers refuse to.
/// * **Acquire** (CUDA → Vulkan): the submission that contains it must wait for a semaphore
///   CUDA signalled after its last access (any wait stage: the barrier's source stage is
///   `ALL_COMMANDS`, so it chains with the wait), or the host must have synchronised CUDA's
///   stream before submitting.
///   The barrier's second scope is `ALL_COMMANDS` with `MEMORY_READ | MEMORY_WRITE`, so any
///   later command sees CUDA's writes.
/// * [`record_transition`](ExternalImage::record_transition) and
///   [`record_initialize`](ExternalImage::record_initialize) are full barriers
///   (`ALL_COMMANDS` both sides): simple rather than fine-grained.
pub struct ExternalImage {
    ctx: Context,
    image: vk::Image,
    memory: vk::DeviceMemory,
    desc: ImageDesc,
    allocation_size: u64,
    exportable: bool,
    state: Mutex<ImageState>,
}

impl std::fmt::Debug for ExternalImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalImage")
            .field("desc", &self.desc)
            .field("allocation_size", &self.allocation_size)
            .field("exportable", &self.exportable)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Drop for ExternalImage {
    fn drop(&mut self) {
        let device = self.ctx.device();
        // SAFETY: the image was made from this device and is destroyed once; every CUDA
        // import of the memory holds this image alive until it is destroyed.
        unsafe { device.destroy_image(self.image, None) };
        // SAFETY: as above; the image bound to the memory is gone.
        unsafe { device.free_memory(self.memory, None) };
    }
}

/// Owns an image handle until it is bound into an [`ExternalImage`].
struct ImageGuard<'a> {
    device: &'a ash::Device,
    image: vk::Image,
}

impl ImageGuard<'_> {
    fn release(self) -> vk::Image {
        let image = self.image;
        std::mem::forget(self);
        image
    }
}

impl Drop for ImageGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the image was created from `device` and never bound or used.
        unsafe { self.device.destroy_image(self.image, None) };
    }
}

fn create_image<'a>(
    device: &'a ash::Device,
    desc: &ImageDesc,
    flags: vk::ExternalMemoryHandleTypeFlags,
) -> Result<ImageGuard<'a>> {
    let mut external = vk::ExternalMemoryImageCreateInfo::default().handle_types(flags);
    let info = desc.create_info().push_next(&mut external);
    // SAFETY: `info`'s chain points at live structs; `desc` was checked against the device
    // limits and the driver's format properties.
    let image =
        unsafe { device.create_image(&info, None) }.map_err(|r| Error::vk("vkCreateImage", r))?;
    Ok(ImageGuard { device, image })
}

impl ExternalImage {
    /// Creates an image with its own exportable dedicated allocation, after checking the
    /// description against the device limits and the driver (see [`ExternalImage`]).
    /// The image starts owned by Vulkan in `UNDEFINED` layout.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] naming the field: zero or too large extent, non-square
    ///   cube, wrong layer count for the kind, 0 or too many mip levels, empty usage,
    ///   tiling other than `OPTIMAL`/`LINEAR`, or a value above the format's limits.
    /// * [`Error::Unsupported`]: the format cannot be used with this usage and tiling, or
    ///   the handle type cannot be exported here (Win32 types on non-Windows platforms,
    ///   missing extension, refused by the driver).
    /// * [`Error::OutOfMemory`].
    pub fn new(ctx: &Context, desc: &ImageDesc) -> Result<Self> {
        check_desc(ctx, desc)?;
        let t = desc.handle_type;
        let flags = external_flags(ctx, t)?;
        let support = ctx.image_support(desc)?;
        support.external.require_export(|| {
            format!(
                "export of {t} memory for a {:?} {:?} image with usage {:?}, tiling {:?}",
                desc.format, desc.kind, desc.usage, desc.tiling
            )
        })?;
        check_format_limits(desc, &support)?;
        let device = ctx.device();
        let image = create_image(device, desc, flags)?;
        // SAFETY: `image.image` was just created from `device`.
        let requirements = unsafe { device.get_image_memory_requirements(image.image) };
        // SAFETY: the image was created from `ctx`'s device with `flags`, is unbound, and
        // `requirements` are its own.
        let memory = unsafe {
            allocate_exportable(ctx, &requirements, flags, Dedicated::Image(image.image))
        }?;
        let state = ImageState {
            owner: ImageOwner::Vulkan,
            layout: vk::ImageLayout::UNDEFINED,
        };
        Self::bind(ctx, image, memory, desc, requirements.size, true, state)
    }

    /// Creates an image bound to memory imported from `import` (another device's or
    /// process's export, or [`ExternalImage::export`] of this device). `desc` must describe
    /// the image exactly as the exporter created it (kind, extent, layers, levels, format,
    /// usage, tiling), so the driver lays the memory out the same way.
    ///
    /// The image starts as (External, `GENERAL`): the exporter owns the contents until
    /// [`record_acquire`](Self::record_acquire) or [`Context::acquire_image`], which keep
    /// them.
    ///
    /// # Errors
    /// * Every error of [`ExternalImage::new`] for `desc` (the driver must allow importing).
    /// * [`Error::InvalidArgument`]: `desc.handle_type` differs from the handle's type,
    ///   `import.size` is not the image's `VkMemoryRequirements::size` (dedicated) or smaller
    ///   than it (not dedicated), or `import.dedicated` is false where the driver requires
    ///   dedicated memory.
    /// * [`Error::InvalidExternalHandle`]: the driver rejected the handle.
    ///
    /// On success the fd belongs to Vulkan; on failure vkcuda has closed it.
    ///
    /// # Safety
    /// 1. `import.handle` is an export of memory allocated by a device with this context's
    ///    UUID for an image created with `desc` (as [`ExternalImage::new`] does), of exactly
    ///    `import.size` bytes, dedicated as `import.dedicated` says. Vulkan requires the
    ///    allocation size, memory type and image layout to match the payload
    ///    (VUID-VkMemoryAllocateInfo-allocationSize-01742); a mismatch the driver does not
    ///    catch is undefined behaviour. [`ExternalImage::alias`] is the safe loopback.
    pub unsafe fn import(ctx: &Context, desc: &ImageDesc, import: MemoryImport) -> Result<Self> {
        let handle_type = import.handle.handle_type();
        if handle_type != desc.handle_type {
            return Err(Error::invalid(
                "desc.handle_type",
                format!("{} but the handle is {handle_type}", desc.handle_type),
                "the type of the handle being imported",
            ));
        }
        check_desc(ctx, desc)?;
        let flags = external_flags(ctx, handle_type)?;
        let fd = import_fd(import.handle)?;
        let support = ctx.image_support(desc)?;
        if !support.external.importable {
            return Err(Error::Unsupported {
                what: format!(
                    "import of {handle_type} memory for a {:?} {:?} image with usage {:?}, \
                     tiling {:?}",
                    desc.format, desc.kind, desc.usage, desc.tiling
                ),
                reason: "the driver reports the handle type as not importable for this use".into(),
            });
        }
        check_format_limits(desc, &support)?;
        if support.external.dedicated_only && !import.dedicated {
            return Err(Error::invalid(
                "import.dedicated",
                "false, but the driver only imports this image as a dedicated allocation",
                "true",
            ));
        }
        let device = ctx.device();
        let image = create_image(device, desc, flags)?;
        // SAFETY: `image.image` was just created from `device`.
        let requirements = unsafe { device.get_image_memory_requirements(image.image) };
        check_import_size(import.size, import.dedicated, requirements.size, || {
            "this image".to_owned()
        })?;
        let dedicated = import.dedicated.then_some(Dedicated::Image(image.image));
        // SAFETY: the image was created from `ctx`'s device with `flags` for this handle
        // type and is unbound.
        let memory = unsafe {
            import_memory(
                ctx,
                handle_type,
                fd,
                requirements.memory_type_bits,
                import.size,
                dedicated,
            )
        }?;
        let state = ImageState {
            owner: ImageOwner::External,
            layout: vk::ImageLayout::GENERAL,
        };
        Self::bind(ctx, image, memory, desc, import.size, false, state)
    }

    /// Binds `memory` to the guarded image and assembles the result; frees both on error.
    fn bind(
        ctx: &Context,
        image: ImageGuard<'_>,
        memory: vk::DeviceMemory,
        desc: &ImageDesc,
        allocation_size: u64,
        exportable: bool,
        state: ImageState,
    ) -> Result<Self> {
        let device = ctx.device();
        // SAFETY: memory was allocated for this image (dedicated, or an import at least
        // `requirements.size` long); bound once.
        if let Err(r) = unsafe { device.bind_image_memory(image.image, memory, 0) } {
            // SAFETY: the memory is unbound and unused.
            unsafe { device.free_memory(memory, None) };
            return Err(Error::vk("vkBindImageMemory", r));
        }
        Ok(Self {
            ctx: ctx.clone(),
            image: image.release(),
            memory,
            desc: desc.clone(),
            allocation_size,
            exportable,
            state: Mutex::new(state),
        })
    }

    /// Exports the memory as a new handle (each call makes a new fd), described so an
    /// importer takes exactly this allocation: size from `VkMemoryRequirements`, dedicated.
    /// The importer also needs [`ExternalImage::desc`] to lay the memory out.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the image was imported rather than allocated exportable;
    /// [`Error::Vulkan`] when `vkGetMemoryFdKHR` fails.
    pub fn export(&self) -> Result<MemoryImport> {
        if !self.exportable {
            return Err(Error::Unsupported {
                what: "export of an imported image".into(),
                reason: "only images created by ExternalImage::new are exportable".into(),
            });
        }
        Ok(MemoryImport {
            handle: export_handle(&self.ctx, self.memory, self.desc.handle_type)?,
            size: self.allocation_size,
            dedicated: true,
        })
    }

    /// A second image on the same memory: exports this one and imports the handle back
    /// into the same context with the same description. The alias starts released to
    /// `VK_QUEUE_FAMILY_EXTERNAL`, as every import does.
    ///
    /// # Errors
    /// As [`ExternalImage::export`] and [`ExternalImage::import`].
    pub fn alias(&self) -> Result<Self> {
        // SAFETY: the handle is this image's own export, described by its own allocation
        // size and dedication, on the same device, with the description that made it.
        unsafe { Self::import(&self.ctx, &self.desc, self.export()?) }
    }

    /// The raw image, for recording commands and creating views. Valid while `self` lives.
    pub fn raw(&self) -> vk::Image {
        self.image
    }

    /// The raw memory. Valid while `self` lives.
    pub fn memory(&self) -> vk::DeviceMemory {
        self.memory
    }

    /// What the image was created with.
    pub fn desc(&self) -> &ImageDesc {
        &self.desc
    }

    /// Size of its allocation (`VkMemoryRequirements::size`), what CUDA imports.
    pub fn allocation_size(&self) -> u64 {
        self.allocation_size
    }

    /// The export handle type.
    pub fn handle_type(&self) -> MemoryHandleType {
        self.desc.handle_type
    }

    /// Whether [`ExternalImage::export`] works (created by [`ExternalImage::new`]).
    pub fn is_exportable(&self) -> bool {
        self.exportable
    }

    /// The context it was made on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Owner and layout once every barrier recorded so far has executed.
    pub fn state(&self) -> ImageState {
        *self.lock_state()
    }

    /// Tells the tracker the image's state after barriers the caller recorded itself.
    ///
    /// # Safety
    /// 1. Once the caller's commands recorded so far execute, the image is owned and laid
    ///    out as `state` says, for all levels and layers.
    pub unsafe fn assume_state(&self, state: ImageState) {
        *self.lock_state() = state;
    }

    /// Records `UNDEFINED` → `GENERAL` over the whole image, **discarding** its contents:
    /// the first use of a new image that nobody has written.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`image`) when the image is released to
    /// `VK_QUEUE_FAMILY_EXTERNAL` (acquire it instead).
    ///
    /// # Safety
    /// See [`ExternalImage::record_release`].
    pub unsafe fn record_initialize(&self, cmd: vk::CommandBuffer) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Initialize) }
    }

    /// Records a layout transition of the whole image from its tracked layout to `layout`
    /// (a full `ALL_COMMANDS` barrier); nothing is recorded if it is already there.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: `layout` is `UNDEFINED`/`PREINITIALIZED` or needs a usage
    /// the image lacks (`layout`), or the image is released to `VK_QUEUE_FAMILY_EXTERNAL`
    /// (`image`).
    ///
    /// # Safety
    /// See [`ExternalImage::record_release`].
    pub unsafe fn record_transition(
        &self,
        cmd: vk::CommandBuffer,
        layout: vk::ImageLayout,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Transition(layout)) }
    }

    /// Records the release of the whole image to `VK_QUEUE_FAMILY_EXTERNAL` in `GENERAL`
    /// layout, for CUDA (or another importer) to use it. See
    /// [`ExternalImage`](ExternalImage#memory-ordering-with-the-other-api) for
    /// the semaphore the submission must signal.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`image`) when it is already released.
    ///
    /// # Safety
    /// 1. `cmd` is in the recording state and was allocated from a pool of this image's
    ///    device for [`Context::queue_family_index`].
    /// 2. Command buffers recorded with the `record_*` methods of this image are submitted
    ///    in the order they were recorded, each exactly once (the tracked state assumes so).
    pub unsafe fn record_release(&self, cmd: vk::CommandBuffer) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Release) }
    }

    /// Records the acquire of the whole image from `VK_QUEUE_FAMILY_EXTERNAL` (in
    /// `GENERAL`, as released), transitioning it to `layout` (`GENERAL` to keep it as CUDA
    /// left it). See
    /// [`ExternalImage`](ExternalImage#memory-ordering-with-the-other-api) for the semaphore
    /// the submission must wait on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`]: the image is not released (`image`), or `layout` is
    /// `UNDEFINED`/`PREINITIALIZED` or needs a usage the image lacks (`layout`).
    ///
    /// # Safety
    /// See [`ExternalImage::record_release`].
    pub unsafe fn record_acquire(
        &self,
        cmd: vk::CommandBuffer,
        layout: vk::ImageLayout,
    ) -> Result<()> {
        // SAFETY: forwarded to the caller.
        unsafe { self.record(cmd, Step::Acquire(layout)) }
    }

    /// # Safety
    /// As [`ExternalImage::record_release`].
    unsafe fn record(&self, cmd: vk::CommandBuffer, step: Step) -> Result<()> {
        let mut state = self.lock_state();
        let (barrier, next) = self.plan(*state, step)?;
        if let Some(b) = barrier {
            // SAFETY: forwarded to the caller (precondition 1 of `record_release`).
            unsafe { self.record_barrier(cmd, &b) };
        }
        *state = next;
        Ok(())
    }

    pub(super) fn lock_state(&self) -> MutexGuard<'_, ImageState> {
        // An ImageState is a plain value: a panic cannot leave it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The barrier that takes the image from `state` through `step`, and the state after.
    pub(super) fn plan(
        &self,
        state: ImageState,
        step: Step,
    ) -> Result<(Option<Barrier>, ImageState)> {
        let family = self.ctx.queue_family_index();
        let vulkan = |layout| ImageState {
            owner: ImageOwner::Vulkan,
            layout,
        };
        let full = |old, new| Barrier {
            old,
            new,
            src_family: vk::QUEUE_FAMILY_IGNORED,
            dst_family: vk::QUEUE_FAMILY_IGNORED,
            src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
            src_access: vk::AccessFlags::MEMORY_WRITE,
            dst_stage: vk::PipelineStageFlags::ALL_COMMANDS,
            dst_access: vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
        };
        match step {
            Step::Initialize => {
                self.require_owned(state)?;
                let b = full(vk::ImageLayout::UNDEFINED, vk::ImageLayout::GENERAL);
                Ok((Some(b), vulkan(vk::ImageLayout::GENERAL)))
            }
            Step::Transition(layout) => {
                self.require_owned(state)?;
                self.check_target(layout)?;
                let b = (state.layout != layout).then(|| full(state.layout, layout));
                Ok((b, vulkan(layout)))
            }
            Step::Release => {
                self.require_owned(state)?;
                let b = Barrier {
                    old: state.layout,
                    new: vk::ImageLayout::GENERAL,
                    src_family: family,
                    dst_family: vk::QUEUE_FAMILY_EXTERNAL,
                    src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                    src_access: vk::AccessFlags::MEMORY_WRITE,
                    // Ignored for a release: the semaphore signal that follows orders it.
                    dst_stage: vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                    dst_access: vk::AccessFlags::empty(),
                };
                let next = ImageState {
                    owner: ImageOwner::External,
                    layout: vk::ImageLayout::GENERAL,
                };
                Ok((Some(b), next))
            }
            Step::Acquire(layout) => {
                if state.owner != ImageOwner::External {
                    return Err(Error::invalid(
                        "image",
                        "is owned by the context's queue family, not released",
                        "an image released to VK_QUEUE_FAMILY_EXTERNAL (or imported)",
                    ));
                }
                self.check_target(layout)?;
                let b = Barrier {
                    old: vk::ImageLayout::GENERAL,
                    new: layout,
                    src_family: vk::QUEUE_FAMILY_EXTERNAL,
                    dst_family: family,
                    // Chains with the semaphore wait whatever its stage mask; no access (the
                    // other API's writes were made available by its signal).
                    src_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                    src_access: vk::AccessFlags::empty(),
                    dst_stage: vk::PipelineStageFlags::ALL_COMMANDS,
                    dst_access: vk::AccessFlags::MEMORY_READ | vk::AccessFlags::MEMORY_WRITE,
                };
                Ok((Some(b), vulkan(layout)))
            }
        }
    }

    fn require_owned(&self, state: ImageState) -> Result<()> {
        if state.owner == ImageOwner::Vulkan {
            Ok(())
        } else {
            Err(Error::invalid(
                "image",
                "is released to VK_QUEUE_FAMILY_EXTERNAL (CUDA or another importer owns it)",
                "an image owned by the context's queue family: acquire it first \
                 (record_acquire or Context::acquire_image)",
            ))
        }
    }

    /// A layout the image can be moved to, given its usage.
    fn check_target(&self, layout: vk::ImageLayout) -> Result<()> {
        use vk::ImageLayout as L;
        use vk::ImageUsageFlags as U;
        let needs = match layout {
            L::UNDEFINED | L::PREINITIALIZED => {
                return Err(Error::invalid(
                    "layout",
                    format!("{layout:?}"),
                    "a layout images can be transitioned to (GENERAL, *_OPTIMAL, ...)",
                ))
            }
            L::TRANSFER_SRC_OPTIMAL => U::TRANSFER_SRC,
            L::TRANSFER_DST_OPTIMAL => U::TRANSFER_DST,
            L::SHADER_READ_ONLY_OPTIMAL => U::SAMPLED | U::INPUT_ATTACHMENT,
            L::COLOR_ATTACHMENT_OPTIMAL => U::COLOR_ATTACHMENT,
            _ => return Ok(()),
        };
        if self.desc.usage.intersects(needs) {
            Ok(())
        } else {
            Err(Error::invalid(
                "layout",
                format!(
                    "{layout:?} but the image's usage {:?} lacks {needs:?}",
                    self.desc.usage
                ),
                format!("GENERAL, or an image created with {needs:?}"),
            ))
        }
    }

    /// # Safety
    /// `cmd` is recording and belongs to this image's device.
    pub(super) unsafe fn record_barrier(&self, cmd: vk::CommandBuffer, b: &Barrier) {
        let barrier = vk::ImageMemoryBarrier::default()
            .src_access_mask(b.src_access)
            .dst_access_mask(b.dst_access)
            .old_layout(b.old)
            .new_layout(b.new)
            .src_queue_family_index(b.src_family)
            .dst_queue_family_index(b.dst_family)
            .image(self.image)
            .subresource_range(self.desc.subresource_range());
        // SAFETY: `cmd` is recording on this device (caller); the image is alive.
        unsafe {
            self.ctx.device().cmd_pipeline_barrier(
                cmd,
                b.src_stage,
                b.dst_stage,
                vk::DependencyFlags::empty(),
                &[],
                &[],
                &[barrier],
            )
        };
    }
}

/// One tracked change of owner or layout.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Initialize,
    Transition(vk::ImageLayout),
    Release,
    Acquire(vk::ImageLayout),
}

/// The parameters of one whole-image `VkImageMemoryBarrier`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Barrier {
    old: vk::ImageLayout,
    new: vk::ImageLayout,
    src_family: u32,
    dst_family: u32,
    pub(super) src_stage: vk::PipelineStageFlags,
    pub(super) src_access: vk::AccessFlags,
    pub(super) dst_stage: vk::PipelineStageFlags,
    pub(super) dst_access: vk::AccessFlags,
}

// ---------------------------------------------------------------------------------------
// One-shot hand-offs and staged transfers
// ---------------------------------------------------------------------------------------

impl Context {
    /// Releases `image` to `VK_QUEUE_FAMILY_EXTERNAL` (in `GENERAL`) as a one-shot
    /// submission on the context's queue, and waits for it: when this returns, every
    /// earlier Vulkan write to the image is complete and CUDA may use it. For setup and
    /// tests; per frame, record [`ExternalImage::record_release`] and signal a semaphore.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is already released or belongs to another
    /// context; [`Error::Timeout`] if the submission hangs.
    pub fn release_image(&self, image: &ExternalImage) -> Result<()> {
        self.one_shot(image, Step::Release)
    }

    /// Acquires `image` from `VK_QUEUE_FAMILY_EXTERNAL` into `layout` as a one-shot
    /// submission, and waits for it. CUDA's work on the image must have completed (its
    /// stream synchronised) before this is called. For setup and tests; per frame, record
    /// [`ExternalImage::record_acquire`] and wait on CUDA's semaphore.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the image is not released, belongs to another
    /// context, or `layout` is not one it can take; [`Error::Timeout`] if it hangs.
    pub fn acquire_image(&self, image: &ExternalImage, layout: vk::ImageLayout) -> Result<()> {
        self.one_shot(image, Step::Acquire(layout))
    }

    fn one_shot(&self, image: &ExternalImage, step: Step) -> Result<()> {
        self.check_same_device(image)?;
        let mut state = image.lock_state();
        let (barrier, next) = image.plan(*state, step)?;
        if let Some(b) = barrier {
            self.submit_and_wait(|cmd| {
                // SAFETY: `cmd` is the context's recording transfer command buffer.
                unsafe { image.record_barrier(cmd, &b) };
            })?;
        }
        *state = next;
        Ok(())
    }

    fn check_same_device(&self, image: &ExternalImage) -> Result<()> {
        if image.ctx.device().handle() == self.device().handle() {
            Ok(())
        } else {
            Err(Error::invalid(
                "image",
                "was made on another context's device",
                "an image of this context",
            ))
        }
    }

    /// Copies mip `level` of array `layers` of `image` to the host through a staging
    /// buffer (`vkCmdCopyImageToBuffer`). The bytes are tightly packed: texel (or block)
    /// rows of the level, then its depth slices, then the next layer. The image must be
    /// owned by Vulkan; it is left in `GENERAL` layout.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`]: `level` or `layers` out of range or empty, the image
    ///   lacks `TRANSFER_SRC` usage, is released to `VK_QUEUE_FAMILY_EXTERNAL`, or belongs
    ///   to another context.
    /// * [`Error::Unsupported`]: a format [`texel_block`] does not know (depth/stencil,
    ///   multi-planar).
    pub fn read_image(
        &self,
        image: &ExternalImage,
        level: u32,
        layers: Range<u32>,
    ) -> Result<Vec<u8>> {
        let len = self.check_copy(image, level, &layers, vk::ImageUsageFlags::TRANSFER_SRC)?;
        let mut staging = Staging::new(self, len, GpuLocation::GpuToCpu)?;
        self.copy_image(image, vk::ImageLayout::TRANSFER_SRC_OPTIMAL, |cmd| {
            let region = copy_region(image.desc(), level, &layers);
            // SAFETY: image and staging buffer are alive for the submission; the region was
            // checked against the image and the buffer was sized for it.
            unsafe {
                self.device().cmd_copy_image_to_buffer(
                    cmd,
                    image.raw(),
                    vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                    staging.buffer,
                    &[region],
                )
            };
        })?;
        Ok(staging.bytes()?.to_vec())
    }

    /// Copies `data` (laid out as [`Context::read_image`] returns it) into mip `level` of
    /// array `layers` of `image` through a staging buffer (`vkCmdCopyBufferToImage`). The
    /// image must be owned by Vulkan; it is left in `GENERAL` layout (contents of other
    /// levels and layers kept, unless it was `UNDEFINED`).
    ///
    /// # Errors
    /// As [`Context::read_image`] (with `TRANSFER_DST`), and [`Error::InvalidArgument`]
    /// (`data`) when `data.len()` is not exactly the size of the region.
    pub fn write_image(
        &self,
        image: &ExternalImage,
        level: u32,
        layers: Range<u32>,
        data: &[u8],
    ) -> Result<()> {
        let len = self.check_copy(image, level, &layers, vk::ImageUsageFlags::TRANSFER_DST)?;
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
        let mut staging = Staging::new(self, len, GpuLocation::CpuToGpu)?;
        staging.bytes()?.copy_from_slice(data);
        self.copy_image(image, vk::ImageLayout::TRANSFER_DST_OPTIMAL, |cmd| {
            let region = copy_region(image.desc(), level, &layers);
            // SAFETY: image and staging buffer are alive for the submission; the region was
            // checked against the image and the buffer was sized for it.
            unsafe {
                self.device().cmd_copy_buffer_to_image(
                    cmd,
                    staging.buffer,
                    image.raw(),
                    vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                    &[region],
                )
            };
        })
    }

    /// Checks a staged copy and returns its size in bytes.
    fn check_copy(
        &self,
        image: &ExternalImage,
        level: u32,
        layers: &Range<u32>,
        usage: vk::ImageUsageFlags,
    ) -> Result<u64> {
        self.check_same_device(image)?;
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
    /// to later commands) and the transfer's writes visible to the host; submits and waits.
    fn copy_image(
        &self,
        image: &ExternalImage,
        layout: vk::ImageLayout,
        copy: impl FnOnce(vk::CommandBuffer),
    ) -> Result<()> {
        let mut state = image.lock_state();
        let (mut before, during) = image.plan(*state, Step::Transition(layout))?;
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
        self.submit_and_wait(|cmd| {
            if let Some(b) = before {
                // SAFETY: `cmd` is the context's recording transfer command buffer.
                unsafe { image.record_barrier(cmd, &b) };
            }
            copy(cmd);
            if let Some(b) = after {
                // SAFETY: as above.
                unsafe { image.record_barrier(cmd, &b) };
            }
            let to_host = vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::HOST_READ);
            // SAFETY: `cmd` is recording on this device.
            unsafe {
                self.device().cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::HOST,
                    vk::DependencyFlags::empty(),
                    &[to_host],
                    &[],
                    &[],
                )
            };
        })?;
        *state = next;
        Ok(())
    }
}

/// The whole of mip `level` of `layers`, from offset 0 of a tightly packed buffer.
pub(super) fn copy_region(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_fill_kind_layers_and_defaults() {
        let f = vk::Format::R8G8B8A8_UNORM;
        let d = ImageDesc::cube_array(64, 2, f).mips(3);
        assert_eq!(
            (d.kind, d.layers, d.mip_levels),
            (ImageKind::CubeArray, 12, 3)
        );
        assert_eq!(d.extent, extent(64, 64, 1));
        assert!(d
            .kind
            .create_flags()
            .contains(vk::ImageCreateFlags::CUBE_COMPATIBLE));
        assert_eq!(d.usage, ImageDesc::DEFAULT_USAGE);
        assert!(!d.usage.contains(vk::ImageUsageFlags::COLOR_ATTACHMENT));
        let d = ImageDesc::d3(8, 4, 16, f);
        assert_eq!((d.kind.image_type(), d.layers), (vk::ImageType::TYPE_3D, 1));
        assert_eq!(d.max_mip_levels(), 5);
        assert_eq!(ImageDesc::d2(1, 1, f).max_mip_levels(), 1);
        assert_eq!(ImageDesc::d2(1024, 3, f).full_mip_chain().mip_levels, 11);
        // Depth does not count for 2D kinds.
        let mut d = ImageDesc::d2(4, 4, f);
        d.extent.depth = 64;
        assert_eq!(d.max_mip_levels(), 3);
    }

    #[test]
    fn images_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<ExternalImage>();
        send_sync::<ImageDesc>();
    }

    #[test]
    fn level_extents_halve_down_to_one() {
        let d = ImageDesc::d3(16, 5, 2, vk::Format::R8_UINT).mips(5);
        assert_eq!(d.level_extent(0), extent(16, 5, 2));
        assert_eq!(d.level_extent(1), extent(8, 2, 1));
        assert_eq!(d.level_extent(4), extent(1, 1, 1));
        assert_eq!(d.level_extent(40), extent(1, 1, 1));
    }

    #[test]
    fn texel_blocks() {
        use vk::Format as F;
        let t = |f| texel_block(f).map(|b| (b.bytes, b.width, b.height));
        assert_eq!(t(F::R8G8B8A8_UNORM), Some((4, 1, 1)));
        assert_eq!(t(F::R16G16B16A16_SFLOAT), Some((8, 1, 1)));
        assert_eq!(t(F::R32_SFLOAT), Some((4, 1, 1)));
        assert_eq!(t(F::R8_UINT), Some((1, 1, 1)));
        assert_eq!(t(F::R16G16_SINT), Some((4, 1, 1)));
        assert_eq!(t(F::R8G8B8_UNORM), Some((3, 1, 1)));
        assert_eq!(t(F::A2B10G10R10_UNORM_PACK32), Some((4, 1, 1)));
        assert_eq!(t(F::BC1_RGBA_UNORM_BLOCK), Some((8, 4, 4)));
        assert_eq!(t(F::BC6H_SFLOAT_BLOCK), Some((16, 4, 4)));
        assert_eq!(t(F::ASTC_10X8_SRGB_BLOCK), Some((16, 10, 8)));
        assert_eq!(t(F::R12X4G12X4_UNORM_2PACK16), Some((4, 1, 1)));
        assert_eq!(t(F::D32_SFLOAT), None);
        assert_eq!(t(F::G8_B8R8_2PLANE_420_UNORM), None);
        assert_eq!(t(F::UNDEFINED), None);
        for (i, (first, last, _)) in BLOCKS.iter().enumerate() {
            assert!(first.as_raw() <= last.as_raw(), "{first:?}..={last:?}");
            for (other, other_last, _) in &BLOCKS[..i] {
                let disjoint =
                    last.as_raw() < other.as_raw() || first.as_raw() > other_last.as_raw();
                assert!(disjoint, "{first:?}..={last:?} overlaps {other:?}");
            }
        }
    }

    #[test]
    fn level_bytes_round_blocks_up() {
        let d = ImageDesc::d2(10, 6, vk::Format::BC1_RGBA_UNORM_BLOCK).mips(2);
        assert_eq!(level_bytes(&d, 0), Some(3 * 2 * 8));
        assert_eq!(level_bytes(&d, 1), Some(2 * 8));
        let d = ImageDesc::d3(4, 4, 4, vk::Format::R16G16_SINT);
        assert_eq!(level_bytes(&d, 0), Some(4 * 4 * 4 * 4));
    }
}
