//! Compiles the demo's Vulkan shaders in `shaders/*.wgsl` to SPIR-V with naga, so no SDK
//! tool (glslc, dxc) is needed, and vkcuda itself builds no shader (its users never compile
//! naga). Each `NAME.wgsl` becomes `$OUT_DIR/NAME.spv`, one compute entry
//! point named `main`; code embeds it with
//! `include_bytes!(concat!(env!("OUT_DIR"), "/NAME.spv"))`.

use std::path::Path;

fn compile(path: &Path, out: &Path) -> Result<(), String> {
    let source = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let module = naga::front::wgsl::parse_str(&source).map_err(|e| e.emit_to_string(&source))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::IMMEDIATES,
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(&source))?;
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    let words = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    std::fs::write(out, bytes).map_err(|e| e.to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=shaders");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let entries = std::fs::read_dir("shaders").expect("shaders/ exists");
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "wgsl") {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("shader");
            let out = Path::new(&out_dir).join(format!("{stem}.spv"));
            if let Err(e) = compile(&path, &out) {
                panic!("shader {} failed to compile:\n{e}", path.display());
            }
        }
    }
}
