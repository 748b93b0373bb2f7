//! Texel blocks of Vulkan formats: the one table of how many bytes a texel (or a compressed
//! block of texels) takes. Staged copies size their regions with it, and the interop format
//! table ([`crate::interop::format`]) reads block sizes from it instead of keeping its own.

use ash::vk;

use super::ImageDesc;

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
pub(crate) fn level_bytes(desc: &ImageDesc, level: u32) -> Option<u64> {
    let block = texel_block(desc.format)?;
    let e = desc.level_extent(level);
    let blocks_x = u64::from(e.width.div_ceil(block.width));
    let blocks_y = u64::from(e.height.div_ceil(block.height));
    Some(blocks_x * blocks_y * u64::from(e.depth) * u64::from(block.bytes))
}

/// Formats the spec lists as needing a sampler Y'CbCr conversion: the 4:2:x packed and
/// multi-planar ones and the padded 10X6/12X4 formats with 3 or 4 components (the 1- and
/// 2-component ones, e.g. `R10X6_UNORM_PACK16`, do not).
pub(super) fn needs_ycbcr_conversion(format: vk::Format) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
