//! `cargo run --release --example frame_sharing`: zero-copy frame sharing between two
//! processes.
//!
//! The producer (this program, run without `--consumer`) renders frames of the demo scene
//! with a Vulkan compute shader into N exportable images and starts itself again as the
//! consumer. Over a Unix socket it sends, once, a text header (size, format, allocation
//! sizes) with the images' memory fds and the fds of two exported timeline semaphores,
//! "ready" (producer -> consumer) and "done" (consumer -> producer), passed with
//! `SCM_RIGHTS` ([`vkcuda::ipc`]). From then on no frame crosses the socket: per frame k
//! the producer renders into image k % N and releases it to `VK_QUEUE_FAMILY_EXTERNAL`,
//! signalling ready = k + 1 (the same submission first waits for done = k + 1 - N and
//! acquires the image back before rendering into it again); the consumer's CUDA stream
//! waits for ready = k + 1, reads the frame straight out of the producer's memory, and
//! signals done = k + 1.
//!
//! Both sides hash every frame (FNV-1a): the producer the CPU reference of the scene, the
//! consumer the texels CUDA read from the shared image (copied to the host for hashing
//! only). The consumer sends its hashes back at the end and writes the last frame as a PNG;
//! the producer compares them.
//!
//! Without a CUDA device matching the Vulkan device, or without semaphore fds (lavapipe),
//! the producer renders one frame into each image, sends only the image fds, and the
//! consumer imports them back into Vulkan and reads them: the same zero-copy hand-over, with
//! host waits instead of semaphores, and no CUDA.
//!
//! With `--producer cuda` the roles turn around: CUDA allocates the frames (VMM memory laid
//! out as LINEAR images), writes them with a kernel and exports them; the consumer imports
//! them into Vulkan, sends back two timeline semaphores for CUDA to wait on and signal, and
//! reads every frame with Vulkan (see `cuda_producer.rs` beside this file). It needs a CUDA
//! device matching the Vulkan device and semaphore fds.
//!
//! Options: `--frames N` (default 240), `--size WxH` (default 640x360), `--images N`
//! (default 3), `--out DIR` (default `frame-sharing-out`), `--producer vulkan|cuda`
//! (default vulkan).

mod cuda_producer;

use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use vkcuda::ash::vk;
use vkcuda::external::{MemoryHandle, MemoryImport, SemaphoreHandle};
use vkcuda::interop::cuda_array_desc;
use vkcuda::util::{Commands, ComputeTarget, OneShot};
use vkcuda::vulkan::{ExternalImage, ImageDesc, Semaphore};
use vkcuda::{cuda, ipc, vulkan, Error};
use vkcuda_dev::sharing::{fnv1a, Header, Mode, MAX_IMAGES};
use vkcuda_dev::{png, scene};

/// Bound on every wait of either side.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    frames: u32,
    width: u32,
    height: u32,
    images: usize,
    out: PathBuf,
    /// `--producer cuda`: CUDA allocates and writes the frames.
    cuda_producer: bool,
}

enum Role {
    Producer(Options),
    Consumer { socket: PathBuf, out: PathBuf },
}

fn parse() -> Result<Role> {
    let mut o = Options {
        frames: 240,
        width: 640,
        height: 360,
        images: 3,
        out: PathBuf::from("frame-sharing-out"),
        cuda_producer: false,
    };
    let mut consumer = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--consumer" => consumer = Some(PathBuf::from(value()?)),
            "--frames" => o.frames = value()?.parse().context("--frames")?,
            "--size" => (o.width, o.height) = vkcuda_dev::parse_size(&value()?)?,
            "--images" => o.images = value()?.parse().context("--images")?,
            "--out" => o.out = PathBuf::from(value()?),
            "--producer" => {
                o.cuda_producer = match value()?.as_str() {
                    "cuda" => true,
                    "vulkan" => false,
                    other => bail!("--producer {other}: use vulkan or cuda"),
                }
            }
            // cargo test / bundle runners pass these to every executable.
            "--bench" | "--nocapture" => {}
            other => {
                bail!(
                    "unknown option {other}; use --frames N, --size WxH, --images N, --out DIR, \
                     --producer vulkan|cuda"
                )
            }
        }
    }
    if let Some(socket) = consumer {
        return Ok(Role::Consumer { socket, out: o.out });
    }
    if o.frames == 0 || o.width < 2 || o.height < 2 {
        bail!("need at least 1 frame of at least 2x2 pixels");
    }
    if !(1..=MAX_IMAGES).contains(&o.images) {
        bail!("--images must be 1 to {MAX_IMAGES}");
    }
    Ok(Role::Producer(o))
}

fn main() -> Result<()> {
    match parse()? {
        Role::Producer(o) if o.cuda_producer => cuda_producer::producer(&o),
        Role::Producer(o) => producer(&o),
        Role::Consumer { socket, out } => consumer(&socket, &out),
    }
}

// ---------------------------------------------------------------- producer

/// Starts this program as the consumer and accepts its connection.
fn spawn_consumer(out: &Path) -> Result<(Child, UnixStream)> {
    let dir = std::env::temp_dir().join(format!("vkcuda-frame-sharing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("socket");
    let _ = std::fs::remove_file(&path); // a stale socket of an earlier run with our pid
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    listener.set_nonblocking(true)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--consumer")
        .arg(&path)
        .arg("--out")
        .arg(out)
        .spawn()
        .context("starting the consumer")?;
    let start = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait()? {
                    bail!("the consumer exited before connecting: {status}");
                }
                ensure!(start.elapsed() < TIMEOUT, "the consumer did not connect");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    stream.set_nonblocking(false)?;
    std::fs::remove_dir_all(&dir)?;
    // Any local process that can reach the socket could have connected first.
    let peer = ipc::peer_credentials(&stream)?;
    ensure!(
        peer.pid == child.id(),
        "the connection came from process {}, not the consumer {} we started",
        peer.pid,
        child.id()
    );
    Ok((child, stream))
}

fn producer(o: &Options) -> Result<()> {
    let vk = vulkan::Context::new(&vulkan::ContextDesc::default()).context(
        "no usable Vulkan device (Debian: apt-get install mesa-vulkan-drivers libvulkan1)",
    )?;
    println!(
        "producer: Vulkan {} ({})",
        vk.identity().name,
        vk.identity().uuid
    );
    let mode = match cuda::Context::matching(vk.identity()) {
        Ok(_) if vk.can_export_semaphore_fds() => Mode::Cuda,
        Ok(_) => {
            println!("producer: this Vulkan device cannot export semaphore fds");
            Mode::Vulkan
        }
        Err(e @ (Error::Missing { .. } | Error::NoMatchingCudaDevice { .. })) => {
            println!("producer: CUDA not available ({e})");
            Mode::Vulkan
        }
        Err(e) => return Err(e.into()),
    };
    if mode == Mode::Vulkan {
        println!(
            "producer: cannot run the CUDA consumer here (needs an NVIDIA GPU whose UUID \
             matches the Vulkan device, and semaphore fds). Sharing {} images with a Vulkan \
             consumer instead, one frame each, with host waits.",
            o.images
        );
    }
    let frames = match mode {
        Mode::Cuda => o.frames,
        _ => o.frames.min(o.images as u32),
    };
    let desc = ImageDesc::d2(o.width, o.height, vk::Format::R8G8B8A8_UNORM);
    let pass = scene::render_pass(&vk)?;
    let mut images = Vec::with_capacity(o.images);
    let mut targets = Vec::with_capacity(o.images);
    let mut cmds = Vec::with_capacity(o.images);
    for _ in 0..o.images {
        let image = Arc::new(ExternalImage::new(&vk, &desc)?);
        targets.push(Arc::new(ComputeTarget::new(&pass, image.clone())?));
        images.push(image);
        cmds.push(Commands::new(&vk)?);
    }
    let mut exports = Vec::with_capacity(o.images + 2);
    let mut memory_type = None;
    for image in &images {
        let export = image.export()?;
        // One description, so one memory type for every image.
        memory_type = export.memory_type;
        match export.handle {
            MemoryHandle::OpaqueFd(fd) => exports.push(fd),
            other => bail!("expected an opaque fd, got {:?}", other.handle_type()),
        }
    }
    let header = Header {
        mode,
        device: vk.identity().clone(),
        frames,
        desc: desc.clone(),
        sizes: images.iter().map(|i| i.allocation_size()).collect(),
        layout: None,
        memory_type,
    };
    let (ready, done) = match mode {
        Mode::Cuda => {
            let ready = Arc::new(Semaphore::timeline(&vk, 0)?);
            let done = Arc::new(Semaphore::timeline(&vk, 0)?);
            for s in [&ready, &done] {
                match s.export()? {
                    SemaphoreHandle::TimelineFd(fd) => exports.push(fd),
                    other => bail!("expected a timeline fd, got {:?}", other.handle_type()),
                }
            }
            (Some(ready), Some(done))
        }
        _ => (None, None),
    };

    let (mut child, stream) = spawn_consumer(&o.out)?;
    let fds: Vec<_> = exports.iter().map(AsFd::as_fd).collect();
    ipc::send(&stream, &header.encode(), &fds)?;
    println!(
        "producer: sent {} fds ({} images of {}x{}{}) and nothing else: frames stay in place",
        fds.len(),
        o.images,
        o.width,
        o.height,
        if mode == Mode::Cuda {
            ", semaphores ready and done"
        } else {
            ""
        }
    );
    drop(fds);
    drop(exports); // the consumer holds its own copies now

    let start = Instant::now();
    match (&ready, &done) {
        (Some(ready), Some(done)) => {
            let n = o.images as u64;
            for k in 0..frames {
                let slot = k as usize % o.images;
                let c = &mut cmds[slot];
                let reuse = u64::from(k) >= n;
                if reuse {
                    c.acquire_image(&images[slot], vk::ImageLayout::GENERAL)?;
                }
                c.dispatch(&targets[slot], &scene::push_constants(k, o.width, o.height))?;
                c.release_image(&images[slot])?;
                let waits: &[(&Arc<Semaphore>, u64)] = if reuse {
                    &[(done, u64::from(k) + 1 - n)]
                } else {
                    &[]
                };
                c.submit(0, waits, &[(ready, u64::from(k) + 1)], TIMEOUT)?;
            }
            done.wait(u64::from(frames), TIMEOUT)
                .context("waiting for the consumer's last frame")?;
        }
        _ => {
            for k in 0..frames {
                let slot = k as usize;
                let c = &mut cmds[slot];
                c.dispatch(&targets[slot], &scene::push_constants(k, o.width, o.height))?;
                c.release_image(&images[slot])?;
                c.submit(0, &[], &[], TIMEOUT)?;
                c.wait(TIMEOUT)?;
            }
            // The consumer may read the images now.
            ipc::send(&stream, b"rendered", &[])?;
        }
    }
    for c in &mut cmds {
        c.wait(TIMEOUT)?;
    }
    let (reply, _) = ipc::recv(&stream, 0)?;
    let elapsed = start.elapsed();
    let equal = compare_hashes(&reply, frames, o.width, o.height)?;
    let status = child.wait()?;
    ensure!(status.success(), "the consumer failed: {status}");
    ensure!(equal, "frame hashes differ between producer and consumer");
    let how = match mode {
        Mode::Cuda => "CUDA in another process",
        _ => "Vulkan in another process (no CUDA here)",
    };
    println!(
        "frame_sharing: {frames} frames of {}x{} through {} shared images read by {how} in \
         {:.3} s ({:.1} fps); hashes equal on both sides, no copy",
        o.width,
        o.height,
        o.images,
        elapsed.as_secs_f64(),
        f64::from(frames) / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Compares the consumer's hashes (its reply) with the CPU reference of each frame, printing
/// the first, the last and any that differ; whether all are equal.
fn compare_hashes(reply: &[u8], frames: u32, width: u32, height: u32) -> Result<bool> {
    let theirs = parse_hashes(reply)?;
    ensure!(
        theirs.len() == frames as usize,
        "the consumer hashed {} frames of {frames}",
        theirs.len()
    );
    let mut equal = true;
    for (k, theirs) in theirs.iter().enumerate() {
        let ours = fnv1a(&scene::reference(k as u32, width, height));
        if k < 4 || k + 2 > frames as usize || ours != *theirs {
            println!("producer: frame {k:4} hash {ours:016x}, consumer {theirs:016x}");
        }
        equal &= ours == *theirs;
    }
    Ok(equal)
}

fn parse_hashes(reply: &[u8]) -> Result<Vec<u64>> {
    let text = std::str::from_utf8(reply).context("consumer reply is not UTF-8")?;
    let mut words = text.split_whitespace();
    ensure!(words.next() == Some("hashes"), "unexpected consumer reply");
    words
        .map(|w| u64::from_str_radix(w, 16).context("hash"))
        .collect()
}

// ---------------------------------------------------------------- consumer

fn consumer(socket: &Path, out: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    // The imports below trust the sizes and descriptions the peer sends: make sure the
    // peer is the producer that started us (the kernel's record, not the peer's word).
    let peer = ipc::peer_credentials(&stream)?;
    ensure!(
        peer.pid == std::os::unix::process::parent_id(),
        "the socket's listener is process {}, not our parent (the producer)",
        peer.pid
    );
    let (payload, fds) = ipc::recv(&stream, MAX_IMAGES + 2)?;
    let header = Header::decode(&payload)?;
    let n = header.sizes.len();
    let want = match header.mode {
        Mode::Cuda => n + 2,
        Mode::Vulkan | Mode::CudaProducer => n,
    };
    ensure!(
        fds.len() == want,
        "received {} fds, expected {want}",
        fds.len()
    );
    println!(
        "consumer: received {} fds for {n} images of {}x{} from {}",
        fds.len(),
        header.desc.extent.width,
        header.desc.extent.height,
        header.device.name
    );
    let mut fds = fds.into_iter();
    let image_fds: Vec<OwnedFd> = fds.by_ref().take(n).collect();
    let imports = image_fds
        .into_iter()
        .zip(&header.sizes)
        .map(|(fd, &size)| MemoryImport {
            handle: MemoryHandle::OpaqueFd(fd),
            size,
            // CUDA's VMM memory was made for no image in particular.
            dedicated: header.mode != Mode::CudaProducer,
            memory_type: header.memory_type,
        });
    let hashes = match header.mode {
        Mode::Cuda => {
            let (ready, done) = match (fds.next(), fds.next()) {
                (Some(r), Some(d)) => (r, d),
                _ => bail!("semaphore fds missing"),
            };
            cuda_consumer(&header, imports.collect(), ready, done, out)?
        }
        Mode::Vulkan => vulkan_consumer(&header, imports.collect(), &stream, out)?,
        Mode::CudaProducer => cuda_producer::consumer(&header, imports.collect(), &stream, out)?,
    };
    let text: Vec<String> = hashes.iter().map(|h| format!("{h:016x}")).collect();
    ipc::send(
        &stream,
        format!("hashes {}", text.join(" ")).as_bytes(),
        &[],
    )?;
    Ok(())
}

fn write_png(out: &Path, header: &Header, frame: u32, texels: &[u8]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("frame-{frame:04}.png"));
    let e = &header.desc.extent;
    png::write(&path, e.width, e.height, texels)?;
    println!("consumer: wrote {}", path.display());
    Ok(())
}

fn cuda_consumer(
    header: &Header,
    imports: Vec<MemoryImport>,
    ready: OwnedFd,
    done: OwnedFd,
    out: &Path,
) -> Result<Vec<u64>> {
    let cu = cuda::Context::matching(&header.device)?;
    println!(
        "consumer: CUDA device #{} {} matches by UUID",
        cu.ordinal(),
        cu.name()
    );
    let array_desc = cuda_array_desc(&header.desc)?;
    let mut levels = Vec::with_capacity(imports.len());
    for import in imports {
        // SAFETY: the peer was checked (SO_PEERCRED) to be our parent, the producer (this
        // same program), so the fd is an export of a dedicated allocation of exactly
        // `import.size` bytes (its `allocation_size`) made by the device with the UUID that
        // `cu` matched; the fd keeps the memory alive.
        let memory = unsafe { cuda::ExternalMemory::import(&cu, import) }?;
        // SAFETY: as above, the producer exported images created with `header.desc`, and
        // `array_desc` is derived from that description as the producer's SharedImage does.
        let array = unsafe { memory.map_mipmapped_array(&array_desc) }?;
        levels.push(array.level(0)?);
    }
    // SAFETY: both fds are exports of timeline semaphores of the device `cu` matched, made
    // by the producer (our parent, checked with SO_PEERCRED) with `Semaphore::timeline`.
    let ready =
        unsafe { cuda::ExternalSemaphore::import(&cu, SemaphoreHandle::TimelineFd(ready)) }?;
    // SAFETY: as above.
    let done = unsafe { cuda::ExternalSemaphore::import(&cu, SemaphoreHandle::TimelineFd(done)) }?;
    let stream = cu.new_stream()?;
    let mut texels = vec![0u8; levels[0].byte_len()?];
    let mut hashes = Vec::with_capacity(header.frames as usize);
    for k in 0..header.frames {
        let value = u64::from(k) + 1;
        ready.wait(&stream, value)?;
        // Read straight out of the producer's image (for hashing on the host only).
        levels[k as usize % levels.len()].copy_to_host(&stream, &mut texels)?;
        done.signal(&stream, value)?;
        hashes.push(fnv1a(&texels));
    }
    stream.synchronize()?;
    if let Some(&last) = hashes.last() {
        println!(
            "consumer: {} frames read through CUDA, last hash {last:016x}",
            hashes.len()
        );
        write_png(out, header, header.frames - 1, &texels)?;
    }
    Ok(hashes)
}

/// A Vulkan context on the producer's GPU (the one `header` names), or an error saying
/// which two devices differ.
fn producer_device(header: &Header) -> Result<vulkan::Context> {
    let vk = vulkan::Context::new(&vulkan::ContextDesc::default())?;
    ensure!(
        vk.identity().uuid == header.device.uuid,
        "this process's Vulkan device {} is not the producer's {}",
        vk.identity().uuid,
        header.device.uuid
    );
    Ok(vk)
}

fn vulkan_consumer(
    header: &Header,
    imports: Vec<MemoryImport>,
    stream: &UnixStream,
    out: &Path,
) -> Result<Vec<u64>> {
    let vk = producer_device(header)?;
    let mut images = Vec::with_capacity(imports.len());
    for import in imports {
        // SAFETY: the peer was checked (SO_PEERCRED) to be our parent, the producer (this
        // same program), so the fd is an export of a dedicated allocation of `import.size`
        // bytes made by the device with this context's UUID for an image created with
        // `header.desc` with `ExternalImage::new`.
        images.push(unsafe { ExternalImage::import(&vk, &header.desc, import) }?);
    }
    let (go, _) = ipc::recv(stream, 0)?;
    ensure!(go == b"rendered", "unexpected message from the producer");
    let mut hashes = Vec::with_capacity(header.frames as usize);
    let mut last = Vec::new();
    for image in images.iter().take(header.frames as usize) {
        vk.acquire_image(image, vk::ImageLayout::GENERAL)?;
        last = vk.read_image(image, 0, 0..1)?;
        hashes.push(fnv1a(&last));
    }
    println!(
        "consumer: {} frames read through Vulkan imports of the producer's memory",
        hashes.len()
    );
    if header.frames > 0 {
        write_png(out, header, hashes.len() as u32 - 1, &last)?;
    }
    Ok(hashes)
}
