//! `frame_sharing --producer cuda`: CUDA is the exporter. (Part of that example, not of
//! `vkcuda-dev`: a module of it that uses the example's own helpers.)
//!
//! The producer allocates each frame with CUDA ([`VmmAllocation`]) and writes it as rows at
//! the pitch of a LINEAR RGBA8 image, its size and row pitch asked of the Vulkan driver up
//! front ([`ExternalImage::linear_requirements`]; the producer's Vulkan context names the
//! device and answers that question, nothing else). It sends the frames' fds and that
//! layout to the consumer, which imports each as a Vulkan buffer (NVIDIA's driver misreads
//! LINEAR images on such memory, so vkcuda refuses those imports there: see
//! [`ExternalImage::import_linear`]), creates two timeline semaphores, "ready" (CUDA signals
//! frame k + 1 written) and "done" (Vulkan signals frame k + 1 read), and sends their fds
//! back. Per frame k the producer's stream waits for done = k + 1 - N before it writes
//! slot k % N again, draws the scene into the rows with a kernel (`dev/shaders/scene.cu`)
//! and signals ready = k + 1; the consumer's submission waits for it, acquires the buffer
//! from `VK_QUEUE_FAMILY_EXTERNAL`, copies the rows out, releases it and signals
//! done = k + 1. The consumer hashes the rows it read; the producer compares with the CPU
//! reference of the scene and, after the last frame, reads every slot back through CUDA, so
//! a mismatch says on which side of the import a frame was lost.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg};
use vkcuda::ash::vk;
use vkcuda::cuda::{self, ExternalSemaphore, PitchedBuffer, VmmAllocation};
use vkcuda::external::{MemoryHandle, MemoryImport, SemaphoreHandle};
use vkcuda::ipc;
use vkcuda::util::{Commands, OneShot};
use vkcuda::vulkan::{self, BufferDesc, ExternalBuffer, ExternalImage, ImageDesc, Semaphore};
use vkcuda_dev::rows::tight_rows;
use vkcuda_dev::scene;
use vkcuda_dev::shaders::SCENE_CU;
use vkcuda_dev::sharing::{fnv1a, Header, Mode};

use super::{compare_hashes, producer_device, spawn_consumer, write_png, Options, TIMEOUT};

/// What every frame is: a LINEAR RGBA8 image that Vulkan copies out of.
fn frame_desc(width: u32, height: u32) -> ImageDesc {
    ImageDesc::d2(width, height, vk::Format::R8G8B8A8_UNORM)
        .tiling(vk::ImageTiling::LINEAR)
        .usage(vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST)
}

/// Waits (at most [`TIMEOUT`]) for everything enqueued on `stream` so far.
fn finish(stream: &CudaStream) -> Result<()> {
    let event = stream.record_event(None)?;
    let start = Instant::now();
    while !event.try_is_complete()? {
        ensure!(
            start.elapsed() < TIMEOUT,
            "the CUDA stream did not finish in {TIMEOUT:?} (is the consumer signalling done?)"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    Ok(())
}

pub(super) fn producer(o: &Options) -> Result<()> {
    let vk = vulkan::Context::new(&vulkan::ContextDesc::default())
        .context("no usable Vulkan device to name the GPU")?;
    let cu = cuda::Context::matching(vk.identity())
        .context("--producer cuda needs a CUDA device whose UUID matches the Vulkan device")?;
    println!(
        "producer: CUDA device #{} {} allocates and writes the frames",
        cu.ordinal(),
        cu.name()
    );
    let desc = frame_desc(o.width, o.height);
    let needs = ExternalImage::linear_requirements(&vk, &desc)?;
    println!(
        "producer: the Vulkan driver lays a {}x{} LINEAR frame out at offset {}, row pitch {} \
         ({} bytes of texels per row), in {} bytes",
        o.width, o.height, needs.layout.offset, needs.layout.row_pitch, needs.row_bytes, needs.size
    );
    let frames = (0..o.images)
        .map(|_| VmmAllocation::new(&cu, needs.size))
        .collect::<vkcuda::Result<Vec<_>>>()?;
    let mut exports: Vec<OwnedFd> = Vec::with_capacity(frames.len());
    for f in &frames {
        match f.export()?.handle {
            MemoryHandle::OpaqueFd(fd) => exports.push(fd),
            other => bail!("expected an opaque fd, got {:?}", other.handle_type()),
        }
    }
    let header = Header {
        mode: Mode::CudaProducer,
        device: vk.identity().clone(),
        frames: o.frames,
        desc,
        sizes: frames.iter().map(VmmAllocation::size).collect(),
        layout: Some(needs.layout),
        memory_type: None,
    };
    let (mut child, socket) = spawn_consumer(&o.out)?;
    let fds: Vec<_> = exports.iter().map(AsFd::as_fd).collect();
    ipc::send(&socket, &header.encode(), &fds)?;
    drop(fds);
    drop(exports); // the consumer holds its own
    let (message, mut sems) = ipc::recv(&socket, 2)?;
    ensure!(
        message == b"semaphores" && sems.len() == 2,
        "expected the consumer's two semaphores"
    );
    let done = sems.pop().context("done")?;
    let ready = sems.pop().context("ready")?;
    // SAFETY: both fds are exports of timeline semaphores made by the consumer (this same
    // program) with `Semaphore::timeline` on the device `cu` matched.
    let ready = unsafe { ExternalSemaphore::import(&cu, SemaphoreHandle::TimelineFd(ready)) }?;
    // SAFETY: as above.
    let done = unsafe { ExternalSemaphore::import(&cu, SemaphoreHandle::TimelineFd(done)) }?;
    println!(
        "producer: sent {} frame fds, got semaphores ready and done back",
        frames.len()
    );

    let kernel = cu
        .compile("scene.cu", SCENE_CU)?
        .load_function("render_rows")?;
    let rows = frames
        .iter()
        .map(|f| {
            let (l, bytes) = (needs.layout, needs.row_bytes);
            PitchedBuffer::new(f.map(0..f.size())?, l.offset, l.row_pitch, bytes, o.height)
        })
        .collect::<vkcuda::Result<Vec<_>>>()?;
    let stream = cu.new_stream()?;
    let config = LaunchConfig {
        grid_dim: (o.width.div_ceil(16), o.height.div_ceil(16), 1),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let n = frames.len() as u64;
    let start = Instant::now();
    for k in 0..o.frames {
        let value = u64::from(k) + 1;
        let slot = &rows[k as usize % rows.len()];
        if value > n {
            done.wait(&stream, value - n)?;
        }
        let pitch = slot.pitch();
        let mut launch = stream.launch_builder(&kernel);
        launch
            .arg(slot)
            .arg(&pitch)
            .arg(&k)
            .arg(&o.width)
            .arg(&o.height);
        // SAFETY: render_rows(uchar*, u64, u32, u32, u32) writes 4 bytes per texel at
        // `y * pitch + 4 * x` for x < width, y < height: inside the rows PitchedBuffer::new
        // checked against the mapping (row bytes = 4 * width).
        unsafe { launch.launch(config) }?;
        ready.signal(&stream, value)?;
    }
    finish(&stream)?;
    let (reply, _) = ipc::recv(&socket, 0)?;
    let elapsed = start.elapsed();
    let own = check_own_writes(&stream, &rows, o)?;
    let equal = compare_hashes(&reply, o.frames, o.width, o.height)?;
    let status = child.wait()?;
    ensure!(status.success(), "the consumer failed: {status}");
    ensure!(
        own,
        "CUDA's own reads of its frames differ from the CPU reference"
    );
    ensure!(equal, "frame hashes differ between producer and consumer");
    println!(
        "frame_sharing: {} frames of {}x{} written by CUDA into {} CUDA allocations, read by \
         Vulkan in another process in {:.3} s ({:.1} fps); hashes equal on both sides, no copy \
         between the processes",
        o.frames,
        o.width,
        o.height,
        frames.len(),
        elapsed.as_secs_f64(),
        f64::from(o.frames) / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Reads every slot back through CUDA (its own view, not the consumer's) and compares the
/// last frame written there with the CPU reference: when the consumer's hashes differ, this
/// says on which side of the import the frame went wrong.
fn check_own_writes(stream: &Arc<CudaStream>, rows: &[PitchedBuffer], o: &Options) -> Result<bool> {
    let n = rows.len() as u32;
    let mut equal = true;
    for (slot, r) in (0..n).zip(rows) {
        let Some(last) = (0..o.frames).rev().find(|k| k % n == slot) else {
            continue;
        };
        let bytes = stream.clone_dtoh(r.buffer())?;
        let start = usize::try_from(r.cu_device_ptr() - r.buffer().cu_device_ptr())?;
        let (pitch, row) = (usize::try_from(r.pitch())?, usize::try_from(r.row_bytes())?);
        let tight = tight_rows(&bytes, start, pitch, row, r.rows() as usize);
        let same = tight == scene::reference(last, o.width, o.height);
        println!(
            "producer: slot {slot} read back through CUDA holds frame {last}: {}",
            if same {
                "equal to the CPU reference"
            } else {
                "DIFFERS from the CPU reference"
            }
        );
        equal &= same;
    }
    Ok(equal)
}

pub(super) fn consumer(
    header: &Header,
    imports: Vec<MemoryImport>,
    socket: &UnixStream,
    out: &Path,
) -> Result<Vec<u64>> {
    let vk = producer_device(header)?;
    ensure!(
        vk.can_export_semaphore_fds(),
        "this Vulkan device cannot export semaphore fds for CUDA to signal"
    );
    let layout = header
        .layout
        .context("the header lacks the frames' layout")?;
    // Each frame's memory as a Vulkan buffer: NVIDIA's driver misreads LINEAR images on
    // memory not dedicated to them (vkcuda refuses those imports there, see
    // ExternalImage::import_linear), buffers over the same memory read it exactly.
    let mut frames = Vec::with_capacity(imports.len());
    for import in imports {
        let desc = BufferDesc::new(import.size);
        // SAFETY: the fd is an export of a CUDA (VMM) allocation of `import.size` bytes, not
        // dedicated, on the device with this context's UUID (checked above), imported into
        // the device-local type a buffer allows (as SharedBuffer::from_cuda does).
        let buffer = Arc::new(unsafe { ExternalBuffer::import(&vk, &desc, import) }?);
        // CUDA holds the contents: the buffer starts released, acquired per frame.
        vk.release_buffer(&buffer)?;
        frames.push(buffer);
    }
    let ready = Arc::new(Semaphore::timeline(&vk, 0)?);
    let done = Arc::new(Semaphore::timeline(&vk, 0)?);
    let mut fds = Vec::with_capacity(2);
    for s in [&ready, &done] {
        match s.export()? {
            SemaphoreHandle::TimelineFd(fd) => fds.push(fd),
            other => bail!("expected a timeline fd, got {:?}", other.handle_type()),
        }
    }
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    ipc::send(socket, b"semaphores", &borrowed)?;
    drop(borrowed);
    drop(fds);
    let e = header.desc.extent;
    let row = u64::from(e.width) * 4;
    // The rows' span, from the first row's start: what each frame copies out.
    let span = layout.row_pitch * (u64::from(e.height) - 1) + row;
    let (pitch, row) = (usize::try_from(layout.row_pitch)?, usize::try_from(row)?);
    let mut slots = Vec::with_capacity(frames.len());
    for frame in &frames {
        let readback = Arc::new(ExternalBuffer::new(&vk, &BufferDesc::new(span))?);
        slots.push((frame.clone(), readback, Commands::new(&vk)?));
    }
    let mut hashes = Vec::with_capacity(header.frames as usize);
    let mut last = Vec::new();
    for k in 0..header.frames {
        let value = u64::from(k) + 1;
        let (frame, readback, c) = &mut slots[k as usize % frames.len()];
        c.acquire_buffer(frame)?;
        c.copy_buffer(frame, layout.offset, readback, 0, span)?;
        c.release_buffer(frame)?;
        c.submit(0, &[(&ready, value)], &[(&done, value)], TIMEOUT)?;
        c.wait(TIMEOUT)
            .with_context(|| format!("frame {k}: is the CUDA producer signalling ready?"))?;
        last = tight_rows(
            &vk.read_buffer(readback, 0..span)?,
            0,
            pitch,
            row,
            e.height as usize,
        );
        hashes.push(fnv1a(&last));
    }
    println!(
        "consumer: {} frames read through Vulkan imports of CUDA's memory",
        hashes.len()
    );
    if header.frames > 0 {
        write_png(out, header, header.frames - 1, &last)?;
    }
    Ok(hashes)
}
