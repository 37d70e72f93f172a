// The per-tensor approach the benchmark compares against: one sum-of-squares
// dispatch per tensor writing per-workgroup partials (summed on the host),
// then one scale dispatch per tensor. Scalar loads, plain fp32 squares.

struct Tensor {
    len: u32,
    partial_base: u32,
    n_workgroups: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> tensor: Tensor;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>; // [len]
@group(0) @binding(2) var<storage, read_write> partials: array<f32>; // [total workgroups]
@group(0) @binding(3) var<uniform> coefficient: vec4<f32>;

var<workgroup> sh_sum: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lix: u32) {
    var s = 0.0;
    for (var i = wg.x * 256u + lix; i < tensor.len; i += tensor.n_workgroups * 256u) {
        s += grad[i] * grad[i];
    }
    sh_sum[lix] = s;
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if (lix < stride) {
            sh_sum[lix] += sh_sum[lix + stride];
        }
    }
    if (lix == 0u) {
        partials[tensor.partial_base + wg.x] = sh_sum[0];
    }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lix: u32) {
    for (var i = wg.x * 256u + lix; i < tensor.len; i += tensor.n_workgroups * 256u) {
        grad[i] *= coefficient.x;
    }
}

// Floors: the least a shader pass can cost on this device. read_floor only
// sums vec4s (what any norm must do); scale_floor multiplies vec4s in place
// (what any scale pass must do). Each workgroup covers 4096 vec4s and walks
// them as the clipper does: WG / LANES teams, each over a contiguous share,
// LANES invocations side by side (see `team_walk` in clip_common.wgsl).
@group(0) @binding(0) var<storage, read_write> floor_data: array<vec4<f32>>; // [N / 4]
@group(0) @binding(1) var<storage, read_write> floor_out: array<vec4<f32>>; // [workgroups * WG]

override WG: u32 = 256u;
override LANES: u32 = 256u;

fn floor_share(wg: u32, lix: u32) -> vec2<u32> {
    let share = 4096u / (WG / LANES);
    let lo = wg * 4096u + (lix / LANES) * share;
    return vec2<u32>(lo + lix % LANES, min(lo + share, arrayLength(&floor_data)));
}

@compute @workgroup_size(WG)
fn read_floor(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lix: u32) {
    var s = vec4<f32>(0.0);
    let r = floor_share(wg.x, lix);
    for (var i = r.x; i < r.y; i += LANES) {
        let v = floor_data[i];
        s += v * v;
    }
    floor_out[wg.x * WG + lix] = s;
}

@compute @workgroup_size(WG)
fn scale_floor(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lix: u32) {
    let r = floor_share(wg.x, lix);
    for (var i = r.x; i < r.y; i += LANES) {
        floor_data[i] = floor_data[i] * 0.5;
    }
}
