// The demo scene, rendered by a Vulkan compute shader into an RGBA8 storage image:
// a gradient background with a disc that moves with the frame number. Deliberately simple
// arithmetic so tests can recompute every texel on the CPU (examples/render/scene.rs).

struct Params {
    frame: u32,
    width: u32,
    height: u32,
}

var<immediate> params: Params;
@group(0) @binding(0) var frame_image: texture_storage_2d<rgba8unorm, write>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= params.width || id.y >= params.height) {
        return;
    }
    // Integer scene: background gradient, disc of radius h/4 moving right 7 px per frame.
    let r = (id.x * 255u) / max(params.width - 1u, 1u);
    let g = (id.y * 255u) / max(params.height - 1u, 1u);
    let cx = i32((params.frame * 7u) % params.width);
    let cy = i32(params.height / 2u);
    let rad = i32(params.height / 4u);
    let dx = i32(id.x) - cx;
    let dy = i32(id.y) - cy;
    var rgb = vec3<u32>(r, g, 96u);
    if (dx * dx + dy * dy <= rad * rad) {
        rgb = vec3<u32>(255u, 224u, 32u);
    }
    textureStore(frame_image, vec2<i32>(id.xy), vec4<f32>(vec3<f32>(rgb) / 255.0, 1.0));
}
