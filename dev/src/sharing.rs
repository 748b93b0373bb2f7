//! What the frame-sharing producer tells its consumer alongside the fds
//! (`examples/frame_sharing/`): a small text header with the image description and the
//! allocation sizes, so the consumer can import exactly what was exported, and the hash
//! both sides print per frame.

use anyhow::{bail, ensure, Context as _, Result};
use vkcuda::ash::vk;
use vkcuda::external::{DeviceIdentity, MemoryHandleType, Uuid};
use vkcuda::vulkan::{ImageDesc, ImageKind, LinearLayout};

/// The first line of a header.
const MAGIC: &str = "vkcuda-frame-sharing 1";

/// Most images one header describes.
pub const MAX_IMAGES: usize = 16;

/// How the consumer reads the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// CUDA imports the images and the two timeline semaphores (fds: images, ready, done).
    Cuda,
    /// No CUDA or no semaphore fds here: the consumer imports the images back into Vulkan
    /// and reads each once (fds: images only).
    Vulkan,
    /// CUDA is the producer: the frames are CUDA (VMM) allocations, LINEAR images laid out
    /// as [`Header::layout`] says; the consumer imports them into Vulkan and sends back two
    /// timeline semaphores of its own, "ready" (CUDA signals) and "done" (Vulkan signals)
    /// (fds: frames; back: ready, done).
    CudaProducer,
}

/// Everything the consumer needs besides the fds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// How the consumer reads the frames.
    pub mode: Mode,
    /// The exporting device, for `cuda::Context::matching` or a UUID check.
    pub device: DeviceIdentity,
    /// Frames the producer renders.
    pub frames: u32,
    /// Every image's description (all images share it).
    pub desc: ImageDesc,
    /// Allocation size of each image's memory, in fd order (dedicated, except in
    /// [`Mode::CudaProducer`]).
    pub sizes: Vec<u64>,
    /// Where the texels lie in each frame's memory ([`Mode::CudaProducer`]: the layout the
    /// producer's CUDA kernel writes, which the consumer's import must match).
    pub layout: Option<LinearLayout>,
    /// The Vulkan memory type every image's memory was allocated from, where a Vulkan
    /// driver made it ([`vkcuda::external::MemoryImport::memory_type`]).
    pub memory_type: Option<u32>,
}

const MODES: [(Mode, &str); 3] = [
    (Mode::Cuda, "cuda"),
    (Mode::Vulkan, "vulkan"),
    (Mode::CudaProducer, "cuda-producer"),
];

impl Header {
    /// The header as text, one `key value` per line.
    pub fn encode(&self) -> Vec<u8> {
        let d = &self.desc;
        let uuid: String = self
            .device
            .uuid
            .0
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sizes: Vec<String> = self.sizes.iter().map(u64::to_string).collect();
        let mode = MODES
            .iter()
            .find(|(m, _)| *m == self.mode)
            .map_or("", |(_, n)| n);
        let layout = self.layout.map_or(String::new(), |l| {
            format!("layout {} {} {}\n", l.offset, l.row_pitch, l.size)
        });
        let memory_type = self
            .memory_type
            .map_or(String::new(), |t| format!("memory_type {t}\n"));
        format!(
            "{MAGIC}\nmode {}\nuuid {uuid}\nnode_mask {}\nname {}\nframes {}\nwidth {}\n\
             height {}\nlayers {}\nmip_levels {}\nformat {}\nusage {}\ntiling {}\nsizes {}\n\
             {layout}{memory_type}",
            mode,
            self.device.node_mask,
            self.device.name.replace('\n', " "),
            self.frames,
            d.extent.width,
            d.extent.height,
            d.layers,
            d.mip_levels,
            d.format.as_raw(),
            d.usage.as_raw(),
            d.tiling.as_raw(),
            sizes.join(" "),
        )
        .into_bytes()
    }

    /// Parses [`Header::encode`]'s text.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes).context("header is not UTF-8")?;
        let mut lines = text.lines();
        ensure!(lines.next() == Some(MAGIC), "not a frame-sharing header");
        let fields: std::collections::HashMap<&str, &str> =
            lines.filter_map(|l| l.split_once(' ')).collect();
        let field = |k: &str| {
            fields
                .get(k)
                .copied()
                .with_context(|| format!("header lacks `{k}`"))
        };
        let num = |k: &str| -> Result<u64> { field(k)?.parse().with_context(|| k.to_owned()) };
        let small = |k: &str| -> Result<u32> { Ok(u32::try_from(num(k)?)?) };
        let signed = |k: &str| -> Result<i32> { field(k)?.parse().with_context(|| k.to_owned()) };
        let name = field("mode")?;
        let Some(&(mode, _)) = MODES.iter().find(|(_, n)| *n == name) else {
            bail!("unknown mode {name}");
        };
        let hex = field("uuid")?;
        ensure!(hex.len() == 32, "uuid {hex:?} is not 32 hex digits");
        let mut uuid = [0u8; 16];
        for (i, b) in uuid.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).context("uuid")?;
        }
        let (layers, mip_levels) = (small("layers")?, small("mip_levels")?);
        ensure!(
            layers == 1 && mip_levels == 1,
            "only single-level 2D images are shared here ({layers} layers, {mip_levels} levels)"
        );
        let desc = ImageDesc {
            kind: ImageKind::D2,
            extent: vk::Extent3D {
                width: small("width")?,
                height: small("height")?,
                depth: 1,
            },
            layers,
            mip_levels,
            format: vk::Format::from_raw(signed("format")?),
            usage: vk::ImageUsageFlags::from_raw(small("usage")?),
            tiling: vk::ImageTiling::from_raw(signed("tiling")?),
            handle_type: MemoryHandleType::OpaqueFd,
        };
        let sizes = field("sizes")?
            .split(' ')
            .map(|s| s.parse().context("sizes"))
            .collect::<Result<Vec<u64>>>()?;
        ensure!(
            (1..=MAX_IMAGES).contains(&sizes.len()),
            "{} images (1 to {MAX_IMAGES})",
            sizes.len()
        );
        let layout = match fields.get("layout") {
            None => None,
            Some(v) => {
                let n: Vec<u64> = v
                    .split(' ')
                    .map(|s| s.parse().context("layout"))
                    .collect::<Result<_>>()?;
                ensure!(n.len() == 3, "layout needs offset, row pitch and size");
                Some(LinearLayout {
                    offset: n[0],
                    row_pitch: n[1],
                    size: n[2],
                })
            }
        };
        let memory_type = match fields.get("memory_type") {
            None => None,
            Some(v) => Some(v.parse().context("memory_type")?),
        };
        Ok(Self {
            mode,
            device: DeviceIdentity {
                name: field("name")?.to_owned(),
                uuid: Uuid(uuid),
                luid: None,
                node_mask: small("node_mask")?,
            },
            frames: small("frames")?,
            desc,
            sizes,
            layout,
            memory_type,
        })
    }
}

/// 64-bit FNV-1a of `bytes`: the frame hash both sides print.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
