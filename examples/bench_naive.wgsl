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
// (what any scale pass must do). One invocation per 4096 vec4 / 256.
@group(0) @binding(0) var<storage, read_write> floor_data: array<vec4<f32>>; // [N / 4]
@group(0) @binding(1) var<storage, read_write> floor_out: array<vec4<f32>>; // [workgroups * 256]

@compute @workgroup_size(256)
fn read_floor(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lix: u32) {
    var s = vec4<f32>(0.0);
    let base = wg.x * 4096u;
    let end = min(base + 4096u, arrayLength(&floor_data));
    for (var i = base + lix; i < end; i += 256u) {
        let v = floor_data[i];
        s += v * v;
    }
    floor_out[wg.x * 256u + lix] = s;
}

@compute @workgroup_size(256)
fn scale_floor(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lix: u32) {
    let base = wg.x * 4096u;
    let end = min(base + 4096u, arrayLength(&floor_data));
    for (var i = base + lix; i < end; i += 256u) {
        floor_data[i] = floor_data[i] * 0.5;
    }
}
