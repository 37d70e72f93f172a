// linear_grad_weight: dW[n, k] = s * sum_m dy[m, n] * x[m, k], the weight
// gradient of y = x W^T, with s = tanh(gate) for a gated branch (else 1).
// Each thread owns a 4 x 4 tile of dW and walks every row in order, so the
// sum is deterministic.

struct Params {
    dy: RowMap,   // [m, n] output gradient
    x: RowMap,    // [m, k] layer input
    m: u32,
    n: u32,
    k: u32,
    dw_off: u32,  // [n, k]
    gate_off: u32, // NONE or the gate parameter
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn linear_grad_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;
    if gid.x >= n4 * k4 {
        return;
    }
    let nb = gid.x / k4;
    let kb = gid.x % k4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var r = 0u; r < p.m; r++) {
        let d = mem4[row_at(p.dy, r) / 4u + nb];
        let xv = mem4[row_at(p.x, r) / 4u + kb];
        a0 += d.x * xv;
        a1 += d.y * xv;
        a2 += d.z * xv;
        a3 += d.w * xv;
    }
    let s = gate_scale(p.gate_off);
    let base = p.dw_off / 4u + 4u * nb * k4 + kb;
    var out = array<vec4<f32>, 4>(a0 * s, a1 * s, a2 * s, a3 * s);
    for (var j = 0u; j < 4u; j++) {
        var v = out[j];
        if p.accumulate != 0u {
            v += mem4[base + j * k4];
        }
        mem4[base + j * k4] = v;
    }
}
