//! What an image is: its kind, its description (with the checks against the device limits
//! and the driver's format limits) and the aspects a whole-image barrier names.

use ash::vk;

use crate::error::{Error, Result};
use crate::external::MemoryHandleType;
use crate::vulkan::format::needs_ycbcr_conversion;
use crate::vulkan::{Context, ImageSupport};

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

/// What [`ExternalImage::new`](crate::vulkan::ExternalImage::new) creates, and what an importer needs to lay out the same
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
pub(super) fn aspect_of(format: vk::Format) -> vk::ImageAspectFlags {
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

/// Checks that `format` is a `VkFormat` value the device may be asked about: a core 1.0
/// format, a Y'CbCr format (core in 1.1), or a 1.3 core format on a 1.3 device. Anything
/// else (e.g. `Format::from_raw(123456)`, or an extension's format) would be invalid usage
/// at the first query (VUID-VkPhysicalDeviceImageFormatInfo2-format-parameter).
fn check_format_value(ctx: &Context, format: vk::Format) -> Result<()> {
    let raw = format.as_raw();
    let v13 = ctx.properties().api_version >= vk::API_VERSION_1_3;
    let known = (1..=184).contains(&raw)
        || (1_000_156_000..=1_000_156_033).contains(&raw)
        || (v13
            && ((1_000_066_000..=1_000_066_013).contains(&raw)
                || (1_000_330_000..=1_000_330_003).contains(&raw)
                || (1_000_340_000..=1_000_340_001).contains(&raw)));
    if known {
        return Ok(());
    }
    Err(Error::invalid(
        "desc.format",
        format!("VkFormat {raw} ({format:?})"),
        "a core VkFormat (1.0, the 1.1 Y'CbCr formats, or 1.3 formats on a 1.3 device)",
    ))
}

/// A transient attachment is only an attachment (VUID-VkImageCreateInfo-usage-00963 and
/// -00966): with `TRANSIENT_ATTACHMENT`, the other bits must be attachment bits, and one at
/// least.
fn check_transient_usage(usage: vk::ImageUsageFlags) -> Result<()> {
    use vk::ImageUsageFlags as U;
    let attachments = U::COLOR_ATTACHMENT | U::DEPTH_STENCIL_ATTACHMENT | U::INPUT_ATTACHMENT;
    if !usage.contains(U::TRANSIENT_ATTACHMENT)
        || ((attachments | U::TRANSIENT_ATTACHMENT).contains(usage)
            && usage.intersects(attachments))
    {
        return Ok(());
    }
    Err(Error::invalid(
        "desc.usage",
        format!("{usage:?}"),
        "TRANSIENT_ATTACHMENT only with COLOR, DEPTH_STENCIL or INPUT_ATTACHMENT (one at \
         least, nothing else)",
    ))
}

/// Checks `desc` against the rules and device limits that need no format query.
pub(super) fn check_desc(ctx: &Context, desc: &ImageDesc) -> Result<()> {
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
        return Err(Error::missing_extension(
            "VK_KHR_maintenance5",
            format!("VkFormat {:?}", desc.format),
        ));
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
    check_format_value(ctx, desc.format)?;
    if desc.usage.is_empty() {
        return Err(Error::invalid(
            "desc.usage",
            "no usage flags",
            "at least one VkImageUsageFlags bit",
        ));
    }
    // The Vulkan 1.0 bits (TRANSFER_SRC ..= INPUT_ATTACHMENT); the others need extensions
    // vkcuda does not enable.
    let known = vk::ImageUsageFlags::from_raw(0xff);
    if !known.contains(desc.usage) {
        return Err(Error::invalid(
            "desc.usage",
            format!("{:?} has bits outside {known:?}", desc.usage),
            "core VkImageUsageFlags bits (TRANSFER_SRC ..= INPUT_ATTACHMENT)",
        ));
    }
    check_transient_usage(desc.usage)?;
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

/// Extent, levels and layers against what the driver allows for this format.
pub(super) fn check_format_limits(desc: &ImageDesc, support: &ImageSupport) -> Result<()> {
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
    fn transient_usage_is_only_attachments() {
        use vk::ImageUsageFlags as U;
        for ok in [
            U::STORAGE | U::TRANSFER_SRC,
            U::TRANSIENT_ATTACHMENT | U::COLOR_ATTACHMENT,
            U::TRANSIENT_ATTACHMENT | U::DEPTH_STENCIL_ATTACHMENT | U::INPUT_ATTACHMENT,
        ] {
            assert!(check_transient_usage(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            U::TRANSIENT_ATTACHMENT,
            U::TRANSIENT_ATTACHMENT | U::COLOR_ATTACHMENT | U::SAMPLED,
            U::TRANSIENT_ATTACHMENT | U::TRANSFER_DST,
        ] {
            let (arg, _, expected) = crate::error::invalid_arg(check_transient_usage(bad));
            assert_eq!(arg, "desc.usage");
            assert!(expected.contains("TRANSIENT"), "{expected}");
        }
    }

    #[test]
    fn level_extents_halve_down_to_one() {
        let d = ImageDesc::d3(16, 5, 2, vk::Format::R8_UINT).mips(5);
        assert_eq!(d.level_extent(0), extent(16, 5, 2));
        assert_eq!(d.level_extent(1), extent(8, 2, 1));
        assert_eq!(d.level_extent(4), extent(1, 1, 1));
        assert_eq!(d.level_extent(40), extent(1, 1, 1));
    }
}
