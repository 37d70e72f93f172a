// linear_grad_weight: dW[n, k] = s * sum_m dy[m, n] * x[m, k], the weight
// gradient of y = x W^T, with s = tanh(gate) for a gated branch (else 1).
// Each invocation owns an 8 x 8 tile of dW in 16 vec4 registers: per input
// row it loads 8 dy and 8 x values and does 64 multiply-adds (loads bound
// CPU drivers). Rows are summed in order, so the result is deterministic.

struct Params {
    dy: RowMap,   // [m, n] output gradient, rows 4-aligned
    x: RowMap,    // [m, k] layer input, rows 4-aligned
    m: u32,
    n: u32,       // a multiple of 8
    k: u32,       // a multiple of 8
    dw_off: u32,  // [n, k], 4-aligned
    gate_off: u32, // NONE or the gate parameter
    accumulate: u32, // = ACCUMULATE
    _pad0: u32,
    _pad1: u32,
}

const LWG: u32 = 16u;

// = accumulate, fixed when the pipeline is built: CPU drivers run both
// sides of a branch on a uniform-buffer value.
override ACCUMULATE: u32 = 0u;

@group(1) @binding(0) var<uniform> p: Params;

// dw_off is 4-aligned and k, k0 multiples of 8: two whole vec4s per row.
fn store_row(n: u32, k0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    let base = (p.dw_off + n * p.k + k0) / 4u;
    var vl = lo;
    var vh = hi;
    if ACCUMULATE != 0u {
        vl += ld4(base);
        vh += ld4(base + 1u);
    }
    st4(base, vl);
    st4(base + 1u, vh);
}

@compute @workgroup_size(LWG)
fn linear_grad_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let kt = p.k / 8u;
    let n0 = (gid.x / kt) * 8u;
    let k0 = (gid.x % kt) * 8u;
    if n0 >= p.n {
        return;
    }
    var a0l = vec4<f32>(0.0);
    var a0h = vec4<f32>(0.0);
    var a1l = vec4<f32>(0.0);
    var a1h = vec4<f32>(0.0);
    var a2l = vec4<f32>(0.0);
    var a2h = vec4<f32>(0.0);
    var a3l = vec4<f32>(0.0);
    var a3h = vec4<f32>(0.0);
    var a4l = vec4<f32>(0.0);
    var a4h = vec4<f32>(0.0);
    var a5l = vec4<f32>(0.0);
    var a5h = vec4<f32>(0.0);
    var a6l = vec4<f32>(0.0);
    var a6h = vec4<f32>(0.0);
    var a7l = vec4<f32>(0.0);
    var a7h = vec4<f32>(0.0);
    for (var r = 0u; r < p.m; r++) {
        // Rows are 4-aligned and k0, n0 multiples of 8: whole vec4s.
        let xb = (row_at(p.x, r) + k0) / 4u;
        let db = (row_at(p.dy, r) + n0) / 4u;
        let xl = ld4(xb);
        let xh = ld4(xb + 1u);
        let dl = ld4(db);
        let dh = ld4(db + 1u);
        a0l += dl.x * xl;
        a0h += dl.x * xh;
        a1l += dl.y * xl;
        a1h += dl.y * xh;
        a2l += dl.z * xl;
        a2h += dl.z * xh;
        a3l += dl.w * xl;
        a3h += dl.w * xh;
        a4l += dh.x * xl;
        a4h += dh.x * xh;
        a5l += dh.y * xl;
        a5h += dh.y * xh;
        a6l += dh.z * xl;
        a6h += dh.z * xh;
        a7l += dh.w * xl;
        a7h += dh.w * xh;
    }
    let s = gate_scale(p.gate_off);
    store_row(n0 + 0u, k0, a0l * s, a0h * s);
    store_row(n0 + 1u, k0, a1l * s, a1h * s);
    store_row(n0 + 2u, k0, a2l * s, a2h * s);
    store_row(n0 + 3u, k0, a3l * s, a3h * s);
    store_row(n0 + 4u, k0, a4l * s, a4h * s);
    store_row(n0 + 5u, k0, a5l * s, a5h * s);
    store_row(n0 + 6u, k0, a6l * s, a6h * s);
    store_row(n0 + 7u, k0, a7l * s, a7h * s);
}
