//! Vulkan formats as CUDA array formats.
//!
//! An optimally tiled Vulkan image reaches CUDA as a mipmapped array
//! (`cuExternalMemoryGetMappedMipmappedArray`), and the array's `CUDA_ARRAY3D_DESCRIPTOR` names
//! an element format ([`CUarray_format`]) and a channel count. CUDA then reads the bytes Vulkan
//! wrote, so a Vulkan format can be shared exactly when a CUDA array format stores the same
//! bits per texel in the same places. One static table lists every such pair; [`cuda_format`],
//! [`vulkan_format`] and [`shareable_formats`] all read that one table, so the forward and the
//! reverse lookup cannot disagree. Texel block sizes are not repeated here: they come from the
//! Vulkan side's one table ([`vulkan::texel_block`](crate::vulkan::texel_block)).
//!
//! # Choices
//!
//! - **UNORM and SNORM use CUDA's plain integer formats.** `R8G8B8A8_UNORM` is
//!   `CU_AD_FORMAT_UNSIGNED_INT8` × 4, not CUDA 11.5's `CU_AD_FORMAT_UNORM_INT8X4`. Plain
//!   integer arrays work with surface objects (`surf2Dread`/`surf2Dwrite` move raw bits; this
//!   is the layout the raw probe verified: `UNSIGNED_INT8` × 4 with
//!   `CUDA_ARRAY3D_SURFACE_LDST`) and with texture objects in both read modes: without
//!   `CU_TRSF_READ_AS_INTEGER`, 8- and 16-bit channels read as normalized floats (\[0, 1\]
//!   unsigned, \[-1, 1\] signed) as Vulkan samples UNORM and SNORM; with it they read as the
//!   integers, as Vulkan reads UINT and SINT. The normalized CUDA formats fix the read mode in
//!   the array and are never used here. So UNORM, UINT, USCALED and SRGB of one layout share
//!   one CUDA format (SNORM, SINT and SSCALED another), and the read mode chosen when a
//!   texture object is made tells them apart.
//! - **CUDA's channels are in memory order.** CUDA's `x, y, z, w` are the channels from the
//!   lowest address (or, in a packed word, the lowest bits) up. `B8G8R8A8_*` map to
//!   4 × 8-bit like `R8G8B8A8_*`, so in CUDA `x` is blue and `z` is red; a kernel that needs
//!   RGB swaps them. `A2R10G10B10_UNORM_PACK32` is likewise shared with blue in `x`.
//!   `A8B8G8R8_*_PACK32` are `R8G8B8A8_*` in memory (red in `x`), and `A8_UNORM_KHR` is one
//!   byte (alpha in `x`).
//! - **sRGB is not decoded for you.** `R8_SRGB`, `R8G8_SRGB`, `R8G8B8A8_SRGB`,
//!   `B8G8R8A8_SRGB` and `A8B8G8R8_SRGB_PACK32` map to their UNORM twins: CUDA sees the
//!   encoded values. Surfaces never decode; a texture object decodes only if it is created
//!   with `CU_TRSF_SRGB`. The BC sRGB formats map to CUDA's own `BC*_UNORM_SRGB` twins, whose
//!   texture reads decode.
//! - **Packed formats map only where the bits match.** `A2B10G10R10_UNORM_PACK32` (red in
//!   bits 0..9, green 10..19, blue 20..29, alpha 30..31) is
//!   `CU_AD_FORMAT_UNORM_INT_101010_2` × 4, CUDA's 4-channel "R10G10B10A2" unsigned normalized
//!   format, named as DXGI names it (red in the lowest bits; the CUDA runtime describes it as
//!   10, 10, 10 and 2 bits in `x, y, z, w`). The 10- and 12-bit formats padded to 16-bit words
//!   (`R10X6_UNORM_PACK16`, `R12X4G12X4_UNORM_2PACK16`, ... in 1, 2 and 4 channels) are
//!   `CU_AD_FORMAT_UNSIGNED_INT16`: the value sits in the top bits of each word, so a
//!   normalized-float texture read returns `word / 65535`, not `value / 1023` (or `/ 4095`);
//!   scale in the kernel where that matters. No other packed format has a CUDA twin.
//! - **Block-compressed formats map to CUDA's BC twins** (CUDA 11.5+), with the channel counts
//!   the CUDA runtime gives them: BC1, BC2, BC3 and BC7 4, BC4 1, BC5 2, BC6H 3; BC6H's
//!   UFLOAT/SFLOAT are `BC6H_UF16`/`BC6H_SF16`. `BC1_RGB_*` share CUDA's BC1 (the blocks are
//!   the same; CUDA decodes BC1 with 1-bit alpha, so a punch-through texel reads alpha 0 where
//!   Vulkan reads 1). Blocks are 4 × 4 texels of 8 bytes (BC1, BC4) or 16 bytes.
//!
//! # Refused
//!
//! Every other format is an [`Error::Unsupported`] naming the format, with the reason for its
//! family: `UNDEFINED`; 3-channel formats (CUDA arrays hold 1, 2 or 4 channels); depth and
//! stencil formats; 64-bit channels; packed formats with 4-, 5- or 6-bit channels or 11/10-bit
//! floats or a shared exponent; the signed, scaled and integer 10:10:10:2 formats; ETC2, EAC,
//! ASTC and PVRTC compression; YCbCr formats (chroma-subsampled or multi-planar); the
//! fixed-point `R16G16_S10_5_NV`; and any value this table does not know.

use ash::vk;
use cudarc::driver::sys::CUarray_format;

use crate::{Error, Result};

/// A CUDA array element format: the `Format` and `NumChannels` of a `CUDA_ARRAY3D_DESCRIPTOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaFormat {
    /// Element format of each channel, or of the whole packed or compressed element.
    pub format: CUarray_format,
    /// Number of channels: 1, 2 or 4 (3 for BC6H, as CUDA counts it).
    pub channels: u32,
}

/// The canonical Vulkan format of a CUDA array format: the first row of the table that has it
/// (UNORM or SNORM for 8- and 16-bit integers, UINT or SINT for 32-bit integers, SFLOAT for
/// `HALF` and `FLOAT`, `A2B10G10R10_UNORM_PACK32` for `UNORM_INT_101010_2`, the RGBA variant
/// for BC1, and the exact twin for every other BC format).
///
/// # Errors
/// [`Error::Unsupported`] for a CUDA format no shareable Vulkan format maps to: CUDA's
/// normalized (`UNORM_INT8X4`, ...) and YUV formats, and 3-channel arrays other than BC6H.
pub fn vulkan_format(cuda: CudaFormat) -> Result<vk::Format> {
    TABLE
        .iter()
        .find(|row| row.cuda == cuda)
        .map(|row| row.vk)
        .ok_or_else(|| Error::Unsupported {
            what: format!(
                "CUDA array format {:?} x{} as a VkFormat",
                cuda.format, cuda.channels
            ),
            reason: "no shareable VkFormat has this layout (vkcuda maps UNORM/SNORM to the plain \
                     integer formats and never uses CUDA's normalized or YUV array formats)"
                .to_owned(),
        })
}

/// The CUDA array format that shares `format`'s bits; see the module docs for the choices.
///
/// # Errors
/// [`Error::Unsupported`] naming `format`, with the reason for its family (3-channel,
/// depth/stencil, 64-bit, packed without a CUDA twin, compressed other than BC, YCbCr, ...).
pub fn cuda_format(format: vk::Format) -> Result<CudaFormat> {
    row(format)
        .map(|row| row.cuda)
        .ok_or_else(|| Error::Unsupported {
            what: format!("VkFormat {format:?} as a CUDA array"),
            reason: refusal_reason(format).to_owned(),
        })
}

/// Every shareable Vulkan format with its CUDA array format, in table order (the canonical
/// format of each CUDA format, as [`vulkan_format`] returns it, comes first). Useful to test a
/// device over all of them.
pub fn shareable_formats() -> impl Iterator<Item = (vk::Format, CudaFormat)> {
    TABLE.iter().map(|row| (row.vk, row.cuda))
}

/// One shareable format: the Vulkan format and its CUDA twin.
struct Row {
    vk: vk::Format,
    cuda: CudaFormat,
}

fn row(format: vk::Format) -> Option<&'static Row> {
    TABLE.iter().find(|row| row.vk == format)
}

/// A row: `vk` shares its bits with `channels` channels of CUDA's `format`.
const fn pair(vk: vk::Format, format: CUarray_format, channels: u32) -> Row {
    Row {
        vk,
        cuda: CudaFormat { format, channels },
    }
}

const U8: CUarray_format = CUarray_format::CU_AD_FORMAT_UNSIGNED_INT8;
const S8: CUarray_format = CUarray_format::CU_AD_FORMAT_SIGNED_INT8;
const U16: CUarray_format = CUarray_format::CU_AD_FORMAT_UNSIGNED_INT16;
const S16: CUarray_format = CUarray_format::CU_AD_FORMAT_SIGNED_INT16;
const U32: CUarray_format = CUarray_format::CU_AD_FORMAT_UNSIGNED_INT32;
const S32: CUarray_format = CUarray_format::CU_AD_FORMAT_SIGNED_INT32;
const F16: CUarray_format = CUarray_format::CU_AD_FORMAT_HALF;
const F32: CUarray_format = CUarray_format::CU_AD_FORMAT_FLOAT;
const UNORM_1010102: CUarray_format = CUarray_format::CU_AD_FORMAT_UNORM_INT_101010_2;

/// The shareable formats. The first row of each CUDA format is its canonical Vulkan format.
static TABLE: &[Row] = {
    use vk::Format as F;
    use CUarray_format as C;
    &[
        // 8-bit, 1 channel.
        pair(F::R8_UNORM, U8, 1),
        pair(F::R8_USCALED, U8, 1),
        pair(F::R8_UINT, U8, 1),
        pair(F::R8_SRGB, U8, 1),
        pair(F::A8_UNORM_KHR, U8, 1),
        pair(F::R8_SNORM, S8, 1),
        pair(F::R8_SSCALED, S8, 1),
        pair(F::R8_SINT, S8, 1),
        // 8-bit, 2 channels.
        pair(F::R8G8_UNORM, U8, 2),
        pair(F::R8G8_USCALED, U8, 2),
        pair(F::R8G8_UINT, U8, 2),
        pair(F::R8G8_SRGB, U8, 2),
        pair(F::R8G8_SNORM, S8, 2),
        pair(F::R8G8_SSCALED, S8, 2),
        pair(F::R8G8_SINT, S8, 2),
        // 8-bit, 4 channels: RGBA, BGRA (blue in CUDA's x) and ABGR packed (RGBA in memory).
        pair(F::R8G8B8A8_UNORM, U8, 4),
        pair(F::R8G8B8A8_USCALED, U8, 4),
        pair(F::R8G8B8A8_UINT, U8, 4),
        pair(F::R8G8B8A8_SRGB, U8, 4),
        pair(F::B8G8R8A8_UNORM, U8, 4),
        pair(F::B8G8R8A8_USCALED, U8, 4),
        pair(F::B8G8R8A8_UINT, U8, 4),
        pair(F::B8G8R8A8_SRGB, U8, 4),
        pair(F::A8B8G8R8_UNORM_PACK32, U8, 4),
        pair(F::A8B8G8R8_USCALED_PACK32, U8, 4),
        pair(F::A8B8G8R8_UINT_PACK32, U8, 4),
        pair(F::A8B8G8R8_SRGB_PACK32, U8, 4),
        pair(F::R8G8B8A8_SNORM, S8, 4),
        pair(F::R8G8B8A8_SSCALED, S8, 4),
        pair(F::R8G8B8A8_SINT, S8, 4),
        pair(F::B8G8R8A8_SNORM, S8, 4),
        pair(F::B8G8R8A8_SSCALED, S8, 4),
        pair(F::B8G8R8A8_SINT, S8, 4),
        pair(F::A8B8G8R8_SNORM_PACK32, S8, 4),
        pair(F::A8B8G8R8_SSCALED_PACK32, S8, 4),
        pair(F::A8B8G8R8_SINT_PACK32, S8, 4),
        // 16-bit, 1 channel (10- and 12-bit values padded to 16-bit words included).
        pair(F::R16_UNORM, U16, 1),
        pair(F::R16_USCALED, U16, 1),
        pair(F::R16_UINT, U16, 1),
        pair(F::R10X6_UNORM_PACK16, U16, 1),
        pair(F::R12X4_UNORM_PACK16, U16, 1),
        pair(F::R16_SNORM, S16, 1),
        pair(F::R16_SSCALED, S16, 1),
        pair(F::R16_SINT, S16, 1),
        pair(F::R16_SFLOAT, F16, 1),
        // 16-bit, 2 channels.
        pair(F::R16G16_UNORM, U16, 2),
        pair(F::R16G16_USCALED, U16, 2),
        pair(F::R16G16_UINT, U16, 2),
        pair(F::R10X6G10X6_UNORM_2PACK16, U16, 2),
        pair(F::R12X4G12X4_UNORM_2PACK16, U16, 2),
        pair(F::R16G16_SNORM, S16, 2),
        pair(F::R16G16_SSCALED, S16, 2),
        pair(F::R16G16_SINT, S16, 2),
        pair(F::R16G16_SFLOAT, F16, 2),
        // 16-bit, 4 channels.
        pair(F::R16G16B16A16_UNORM, U16, 4),
        pair(F::R16G16B16A16_USCALED, U16, 4),
        pair(F::R16G16B16A16_UINT, U16, 4),
        pair(F::R10X6G10X6B10X6A10X6_UNORM_4PACK16, U16, 4),
        pair(F::R12X4G12X4B12X4A12X4_UNORM_4PACK16, U16, 4),
        pair(F::R16G16B16A16_SNORM, S16, 4),
        pair(F::R16G16B16A16_SSCALED, S16, 4),
        pair(F::R16G16B16A16_SINT, S16, 4),
        pair(F::R16G16B16A16_SFLOAT, F16, 4),
        // 32-bit, 1, 2 and 4 channels.
        pair(F::R32_UINT, U32, 1),
        pair(F::R32_SINT, S32, 1),
        pair(F::R32_SFLOAT, F32, 1),
        pair(F::R32G32_UINT, U32, 2),
        pair(F::R32G32_SINT, S32, 2),
        pair(F::R32G32_SFLOAT, F32, 2),
        pair(F::R32G32B32A32_UINT, U32, 4),
        pair(F::R32G32B32A32_SINT, S32, 4),
        pair(F::R32G32B32A32_SFLOAT, F32, 4),
        // Packed 10:10:10:2 unsigned normalized, red (or, second, blue) in the lowest bits.
        pair(F::A2B10G10R10_UNORM_PACK32, UNORM_1010102, 4),
        pair(F::A2R10G10B10_UNORM_PACK32, UNORM_1010102, 4),
        // Block compressed: 4 x 4 texels per block.
        pair(F::BC1_RGBA_UNORM_BLOCK, C::CU_AD_FORMAT_BC1_UNORM, 4),
        pair(F::BC1_RGB_UNORM_BLOCK, C::CU_AD_FORMAT_BC1_UNORM, 4),
        pair(F::BC1_RGBA_SRGB_BLOCK, C::CU_AD_FORMAT_BC1_UNORM_SRGB, 4),
        pair(F::BC1_RGB_SRGB_BLOCK, C::CU_AD_FORMAT_BC1_UNORM_SRGB, 4),
        pair(F::BC2_UNORM_BLOCK, C::CU_AD_FORMAT_BC2_UNORM, 4),
        pair(F::BC2_SRGB_BLOCK, C::CU_AD_FORMAT_BC2_UNORM_SRGB, 4),
        pair(F::BC3_UNORM_BLOCK, C::CU_AD_FORMAT_BC3_UNORM, 4),
        pair(F::BC3_SRGB_BLOCK, C::CU_AD_FORMAT_BC3_UNORM_SRGB, 4),
        pair(F::BC4_UNORM_BLOCK, C::CU_AD_FORMAT_BC4_UNORM, 1),
        pair(F::BC4_SNORM_BLOCK, C::CU_AD_FORMAT_BC4_SNORM, 1),
        pair(F::BC5_UNORM_BLOCK, C::CU_AD_FORMAT_BC5_UNORM, 2),
        pair(F::BC5_SNORM_BLOCK, C::CU_AD_FORMAT_BC5_SNORM, 2),
        pair(F::BC6H_UFLOAT_BLOCK, C::CU_AD_FORMAT_BC6H_UF16, 3),
        pair(F::BC6H_SFLOAT_BLOCK, C::CU_AD_FORMAT_BC6H_SF16, 3),
        pair(F::BC7_UNORM_BLOCK, C::CU_AD_FORMAT_BC7_UNORM, 4),
        pair(F::BC7_SRGB_BLOCK, C::CU_AD_FORMAT_BC7_UNORM_SRGB, 4),
    ]
};

const UNDEFINED: &str = "VK_FORMAT_UNDEFINED describes no texels; create the image with a \
                         concrete format";
const THREE_CHANNEL: &str = "3-channel formats have no CUDA array format (CUDA arrays hold 1, 2 \
                             or 4 channels); use the 4-channel twin";
const SMALL_PACKED: &str = "packed format with 1- to 6-bit channels: CUDA arrays have no such \
                            channels (their only packed format is UNORM_INT_101010_2); use \
                            R8G8B8A8_UNORM";
const PACKED_1010102: &str = "CUDA's only 10:10:10:2 array format is unsigned normalized \
                              (UNORM_INT_101010_2); signed, scaled and integer variants have no \
                              twin";
const SIXTY_FOUR_BIT: &str = "64-bit channels have no CUDA array format (at most 32 bits per \
                              channel); use a 32-bit format";
const PACKED_FLOAT: &str = "packed float format (11/10-bit floats or a shared exponent) has no \
                            CUDA array format; use R16G16B16A16_SFLOAT";
const DEPTH_STENCIL: &str = "depth/stencil images have a driver-private layout that CUDA arrays \
                             cannot describe; copy the values into a color image (e.g. \
                             R32_SFLOAT) to share them";
const OTHER_COMPRESSED: &str = "CUDA arrays hold only BC1-BC7 compressed blocks; ETC2, EAC, ASTC \
                                and PVRTC have no CUDA twin";
const YCBCR: &str = "YCbCr formats (chroma-subsampled or multi-planar) have no CUDA array twin; \
                     share each plane as its own R8/R8G8/R16/R16G16 image";
const FIXED_POINT: &str = "signed fixed-point format has no CUDA array format";
const UNKNOWN: &str = "not in vkcuda's format table, so no CUDA array format is known to match \
                       it";

/// The refused families, as inclusive ranges of format values (none overlaps the table).
static REFUSED: &[(vk::Format, vk::Format, &str)] = {
    use vk::Format as F;
    &[
        (F::UNDEFINED, F::UNDEFINED, UNDEFINED),
        (F::R4G4_UNORM_PACK8, F::A1R5G5B5_UNORM_PACK16, SMALL_PACKED),
        (F::R8G8B8_UNORM, F::B8G8R8_SRGB, THREE_CHANNEL),
        (
            F::A2R10G10B10_SNORM_PACK32,
            F::A2R10G10B10_SINT_PACK32,
            PACKED_1010102,
        ),
        (
            F::A2B10G10R10_SNORM_PACK32,
            F::A2B10G10R10_SINT_PACK32,
            PACKED_1010102,
        ),
        (F::R16G16B16_UNORM, F::R16G16B16_SFLOAT, THREE_CHANNEL),
        (F::R32G32B32_UINT, F::R32G32B32_SFLOAT, THREE_CHANNEL),
        (F::R64_UINT, F::R64G64B64A64_SFLOAT, SIXTY_FOUR_BIT),
        (
            F::B10G11R11_UFLOAT_PACK32,
            F::E5B9G9R9_UFLOAT_PACK32,
            PACKED_FLOAT,
        ),
        (F::D16_UNORM, F::D32_SFLOAT_S8_UINT, DEPTH_STENCIL),
        (
            F::ETC2_R8G8B8_UNORM_BLOCK,
            F::ASTC_12X12_SRGB_BLOCK,
            OTHER_COMPRESSED,
        ),
        (
            F::PVRTC1_2BPP_UNORM_BLOCK_IMG,
            F::PVRTC2_4BPP_SRGB_BLOCK_IMG,
            OTHER_COMPRESSED,
        ),
        (
            F::ASTC_4X4_SFLOAT_BLOCK,
            F::ASTC_12X12_SFLOAT_BLOCK,
            OTHER_COMPRESSED,
        ),
        (F::G8B8G8R8_422_UNORM, F::G8_B8_R8_3PLANE_444_UNORM, YCBCR),
        (
            F::G10X6B10X6G10X6R10X6_422_UNORM_4PACK16,
            F::G10X6_B10X6_R10X6_3PLANE_444_UNORM_3PACK16,
            YCBCR,
        ),
        (
            F::G12X4B12X4G12X4R12X4_422_UNORM_4PACK16,
            F::G16_B16_R16_3PLANE_444_UNORM,
            YCBCR,
        ),
        (
            F::G8_B8R8_2PLANE_444_UNORM,
            F::G16_B16R16_2PLANE_444_UNORM,
            YCBCR,
        ),
        (
            F::A4R4G4B4_UNORM_PACK16,
            F::A4B4G4R4_UNORM_PACK16,
            SMALL_PACKED,
        ),
        (F::R16G16_S10_5_NV, F::R16G16_S10_5_NV, FIXED_POINT),
        (
            F::A1B5G5R5_UNORM_PACK16_KHR,
            F::A1B5G5R5_UNORM_PACK16_KHR,
            SMALL_PACKED,
        ),
    ]
};

/// Why `format` (not in the table) cannot be shared.
fn refusal_reason(format: vk::Format) -> &'static str {
    let raw = format.as_raw();
    REFUSED
        .iter()
        .find(|(first, last, _)| (first.as_raw()..=last.as_raw()).contains(&raw))
        .map_or(UNKNOWN, |&(_, _, reason)| reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every format value the tests scan: all core formats (0..=184) and the extension
    /// ranges ash 0.38 names.
    fn scanned() -> impl Iterator<Item = vk::Format> {
        [
            (0, 184),
            (1_000_054_000, 1_000_054_007), // PVRTC
            (1_000_066_000, 1_000_066_013), // ASTC HDR
            (1_000_156_000, 1_000_156_033), // YCbCr and padded 10/12-bit
            (1_000_330_000, 1_000_330_003), // 2-plane 4:4:4
            (1_000_340_000, 1_000_340_001), // A4R4G4B4, A4B4G4R4
            (1_000_464_000, 1_000_464_000), // R16G16_S10_5_NV
            (1_000_470_000, 1_000_470_001), // A1B5G5R5, A8_UNORM
        ]
        .into_iter()
        .flat_map(|(first, last)| first..=last)
        .map(vk::Format::from_raw)
    }

    fn is_block_compressed(format: vk::Format) -> bool {
        format!("{format:?}").starts_with("BC")
    }

    /// Bit widths of each component in a Vulkan format's name (`R10X6G10X6` gives
    /// `[('R', 10), ('X', 6), ('G', 10), ('X', 6)]`), `None` if the name is not a list of
    /// components.
    fn components(name: &str) -> Option<Vec<(char, u32)>> {
        let mut out = Vec::new();
        let mut chars = name.chars().peekable();
        while let Some(letter) = chars.next() {
            let mut digits = String::new();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            out.push((letter, digits.parse().ok()?));
        }
        Some(out)
    }

    /// The CUDA twin a format's *name* calls for, worked out independently of the table:
    /// channels of 8, 16 or 32 bits (padding included) of one kind, or 10:10:10:2 UNORM, in
    /// 1, 2 or 4 channels; `None` for anything else. Not meant for BC formats.
    fn twin_from_name(format: vk::Format) -> Option<(CudaFormat, u32)> {
        let name = format!("{format:?}");
        let mut parts = name.split('_');
        let comps = components(parts.next()?)?;
        let numeric = parts.next()?;
        let packing_only = |rest: &str| {
            ["PACK8", "PACK16", "PACK32"]
                .iter()
                .any(|p| rest.ends_with(p))
                || rest == "KHR"
                || rest == "EXT"
        };
        if !parts.all(packing_only) {
            return None;
        }
        // Storage bits of each colour channel: its own bits plus the padding after it.
        let mut channels: Vec<u32> = Vec::new();
        for &(letter, bits) in &comps {
            match letter {
                'R' | 'G' | 'B' | 'A' => channels.push(bits),
                'X' => *channels.last_mut()? += bits,
                _ => return None,
            }
        }
        let bytes = comps.iter().map(|&(_, bits)| bits).sum::<u32>() / 8;
        let count = u32::try_from(channels.len()).ok()?;
        if !matches!(count, 1 | 2 | 4) {
            return None;
        }
        let mut sorted = channels.clone();
        sorted.sort_unstable();
        let unsigned = matches!(numeric, "UNORM" | "UINT" | "USCALED" | "SRGB");
        let signed = matches!(numeric, "SNORM" | "SINT" | "SSCALED");
        let float = numeric == "SFLOAT";
        let format = if sorted == [2, 10, 10, 10] && numeric == "UNORM" {
            UNORM_1010102
        } else if sorted.iter().all(|&b| b == sorted[0]) {
            match (sorted[0], unsigned, signed, float) {
                (8, true, _, _) => U8,
                (8, _, true, _) => S8,
                (16, true, _, _) => U16,
                (16, _, true, _) => S16,
                (16, _, _, true) => F16,
                (32, true, _, _) => U32,
                (32, _, true, _) => S32,
                (32, _, _, true) => F32,
                _ => return None,
            }
        } else {
            return None;
        };
        Some((
            CudaFormat {
                format,
                channels: count,
            },
            bytes,
        ))
    }

    /// `(bytes, width, height)` of `format`'s texel block, from the Vulkan side's table.
    fn block_size(format: vk::Format) -> Option<(u32, u32, u32)> {
        crate::vulkan::texel_block(format).map(|b| (b.bytes, b.width, b.height))
    }

    fn refusal(format: vk::Format) -> (String, String) {
        match cuda_format(format) {
            Err(Error::Unsupported { what, reason }) => (what, reason),
            other => panic!("{format:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn every_uncompressed_format_is_mapped_exactly_when_its_bits_match() {
        let mut mapped = 0;
        for format in scanned().filter(|&f| !is_block_compressed(f)) {
            let expected = twin_from_name(format);
            assert_eq!(
                cuda_format(format).ok(),
                expected.map(|(cuda, _)| cuda),
                "{format:?}"
            );
            if let Some((_, bytes)) = expected {
                assert_eq!(block_size(format), Some((bytes, 1, 1)), "{format:?}");
                mapped += 1;
            }
        }
        assert_eq!(
            mapped,
            TABLE.len() - 16,
            "every uncompressed row was scanned"
        );
    }

    #[test]
    fn block_compressed_formats_map_to_their_twins() {
        use vk::Format as F;
        use CUarray_format as C;
        let expected = [
            (F::BC1_RGB_UNORM_BLOCK, C::CU_AD_FORMAT_BC1_UNORM, 4, 8),
            (F::BC1_RGB_SRGB_BLOCK, C::CU_AD_FORMAT_BC1_UNORM_SRGB, 4, 8),
            (F::BC1_RGBA_UNORM_BLOCK, C::CU_AD_FORMAT_BC1_UNORM, 4, 8),
            (F::BC1_RGBA_SRGB_BLOCK, C::CU_AD_FORMAT_BC1_UNORM_SRGB, 4, 8),
            (F::BC2_UNORM_BLOCK, C::CU_AD_FORMAT_BC2_UNORM, 4, 16),
            (F::BC2_SRGB_BLOCK, C::CU_AD_FORMAT_BC2_UNORM_SRGB, 4, 16),
            (F::BC3_UNORM_BLOCK, C::CU_AD_FORMAT_BC3_UNORM, 4, 16),
            (F::BC3_SRGB_BLOCK, C::CU_AD_FORMAT_BC3_UNORM_SRGB, 4, 16),
            (F::BC4_UNORM_BLOCK, C::CU_AD_FORMAT_BC4_UNORM, 1, 8),
            (F::BC4_SNORM_BLOCK, C::CU_AD_FORMAT_BC4_SNORM, 1, 8),
            (F::BC5_UNORM_BLOCK, C::CU_AD_FORMAT_BC5_UNORM, 2, 16),
            (F::BC5_SNORM_BLOCK, C::CU_AD_FORMAT_BC5_SNORM, 2, 16),
            (F::BC6H_UFLOAT_BLOCK, C::CU_AD_FORMAT_BC6H_UF16, 3, 16),
            (F::BC6H_SFLOAT_BLOCK, C::CU_AD_FORMAT_BC6H_SF16, 3, 16),
            (F::BC7_UNORM_BLOCK, C::CU_AD_FORMAT_BC7_UNORM, 4, 16),
            (F::BC7_SRGB_BLOCK, C::CU_AD_FORMAT_BC7_UNORM_SRGB, 4, 16),
        ];
        assert_eq!(
            scanned().filter(|&f| is_block_compressed(f)).count(),
            expected.len()
        );
        for (vk_format, format, channels, bytes) in expected {
            let cuda = CudaFormat { format, channels };
            assert_eq!(cuda_format(vk_format).ok(), Some(cuda), "{vk_format:?}");
            assert_eq!(block_size(vk_format), Some((bytes, 4, 4)), "{vk_format:?}");
        }
    }

    #[test]
    fn representative_mappings() {
        use vk::Format as F;
        use CUarray_format as C;
        let cuda = |format, channels| Some(CudaFormat { format, channels });
        assert_eq!(cuda_format(F::R8G8B8A8_UNORM).ok(), cuda(U8, 4));
        assert_eq!(cuda_format(F::R8G8B8A8_SRGB).ok(), cuda(U8, 4));
        assert_eq!(cuda_format(F::B8G8R8A8_UNORM).ok(), cuda(U8, 4));
        assert_eq!(cuda_format(F::R8G8B8A8_SNORM).ok(), cuda(S8, 4));
        assert_eq!(cuda_format(F::R16G16B16A16_SFLOAT).ok(), cuda(F16, 4));
        assert_eq!(cuda_format(F::R32_SFLOAT).ok(), cuda(F32, 1));
        assert_eq!(cuda_format(F::R32G32_UINT).ok(), cuda(U32, 2));
        assert_eq!(cuda_format(F::R16_UNORM).ok(), cuda(U16, 1));
        assert_eq!(
            cuda_format(F::A2B10G10R10_UNORM_PACK32).ok(),
            cuda(UNORM_1010102, 4)
        );
        assert_eq!(
            cuda_format(F::BC7_UNORM_BLOCK).ok(),
            cuda(C::CU_AD_FORMAT_BC7_UNORM, 4)
        );
        assert_eq!(block_size(F::R8G8B8A8_UNORM), Some((4, 1, 1)));
        assert_eq!(block_size(F::R32G32B32A32_SFLOAT), Some((16, 1, 1)));
        assert_eq!(block_size(F::BC1_RGBA_UNORM_BLOCK), Some((8, 4, 4)));

        for (format, reason) in [
            (F::UNDEFINED, UNDEFINED),
            (F::R8G8B8_UNORM, THREE_CHANNEL),
            (F::R32G32B32_SFLOAT, THREE_CHANNEL),
            (F::D32_SFLOAT, DEPTH_STENCIL),
            (F::D24_UNORM_S8_UINT, DEPTH_STENCIL),
            (F::R64_SFLOAT, SIXTY_FOUR_BIT),
            (F::R5G6B5_UNORM_PACK16, SMALL_PACKED),
            (F::A2B10G10R10_UINT_PACK32, PACKED_1010102),
            (F::B10G11R11_UFLOAT_PACK32, PACKED_FLOAT),
            (F::ETC2_R8G8B8A8_UNORM_BLOCK, OTHER_COMPRESSED),
            (F::ASTC_4X4_SFLOAT_BLOCK, OTHER_COMPRESSED),
            (F::G8_B8R8_2PLANE_420_UNORM, YCBCR),
            (F::G8B8G8R8_422_UNORM, YCBCR),
        ] {
            let (what, got) = refusal(format);
            assert_eq!(got, reason, "{format:?}");
            assert!(what.contains(&format!("{format:?}")), "{what}");
        }
        assert!(refusal(F::R8G8B8_UNORM).0.contains("R8G8B8_UNORM"));
        assert!(refusal(F::R8G8B8_UNORM).1.contains("3-channel"));
    }

    #[test]
    fn refusals_name_the_format_and_its_family() {
        for format in scanned().filter(|&f| cuda_format(f).is_err()) {
            let (what, reason) = refusal(format);
            let name = format!("{format:?}");
            assert!(what.contains(&name), "{what}");
            // Every format ash names falls in a family with its own reason.
            assert_ne!(reason, UNKNOWN, "{name} has no family");
        }
        for raw in [185, -1, 1_000_999_999] {
            let (what, reason) = refusal(vk::Format::from_raw(raw));
            assert!(what.contains(&raw.to_string()), "{what}");
            assert_eq!(reason, UNKNOWN);
        }
    }

    #[test]
    fn reverse_lookup_round_trips() {
        for (vk_format, cuda) in shareable_formats() {
            let canonical = vulkan_format(cuda).expect("every CUDA format in the table");
            assert_eq!(cuda_format(canonical).ok(), Some(cuda), "{vk_format:?}");
            assert_eq!(
                block_size(canonical),
                block_size(vk_format),
                "{vk_format:?}"
            );
            let first = shareable_formats()
                .find(|&(_, c)| c == cuda)
                .map(|(f, _)| f);
            assert_eq!(Some(canonical), first);
        }
        use vk::Format as F;
        assert_eq!(
            vulkan_format(CudaFormat {
                format: U8,
                channels: 4
            })
            .ok(),
            Some(F::R8G8B8A8_UNORM)
        );
        assert_eq!(
            vulkan_format(CudaFormat {
                format: CUarray_format::CU_AD_FORMAT_BC1_UNORM,
                channels: 4
            })
            .ok(),
            Some(F::BC1_RGBA_UNORM_BLOCK)
        );
        for cuda in [
            CudaFormat {
                format: U8,
                channels: 3,
            },
            CudaFormat {
                format: CUarray_format::CU_AD_FORMAT_UNORM_INT8X4,
                channels: 4,
            },
        ] {
            let err = vulkan_format(cuda).expect_err("not shareable");
            assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        }
    }

    #[test]
    fn table_is_consistent() {
        for (i, row) in TABLE.iter().enumerate() {
            assert!(
                TABLE[..i].iter().all(|r| r.vk != row.vk),
                "{:?} listed twice",
                row.vk
            );
            let raw = row.vk.as_raw();
            assert!(
                REFUSED
                    .iter()
                    .all(|(first, last, _)| !(first.as_raw()..=last.as_raw()).contains(&raw)),
                "{:?} is both mapped and refused",
                row.vk
            );
            let (bytes, width, height) =
                block_size(row.vk).expect("every shareable format has a texel block");
            let channel_bytes = match row.cuda.format {
                f if f == U8 || f == S8 => Some(1),
                f if f == U16 || f == S16 || f == F16 => Some(2),
                f if f == U32 || f == S32 || f == F32 => Some(4),
                _ => None,
            };
            match (channel_bytes, width, height) {
                (Some(size), 1, 1) => assert_eq!(bytes, size * row.cuda.channels, "{:?}", row.vk),
                (None, 1, 1) => assert_eq!(row.cuda.format, UNORM_1010102),
                (None, 4, 4) => assert!(is_block_compressed(row.vk) && matches!(bytes, 8 | 16)),
                _ => panic!("{:?} has an impossible block", row.vk),
            }
        }
        for (first, last, _) in REFUSED {
            assert!(first.as_raw() <= last.as_raw(), "{first:?}..={last:?}");
        }
    }
}
