// gate_backward: the gradient of a tanh gate g in y = x + tanh(g) * f,
// dg = (1 - tanh(g)^2) * sum(dy * f) over every element: one workgroup, a
// strided sum per thread, then a fixed tree.

struct Params {
    dy: RowMap,     // [m, n] gradient of the block output
    f: RowMap,      // [m, n] branch output before the gate
    m: u32,
    n: u32,
    gate_off: u32,  // the gate parameter
    grad_off: u32,  // where its gradient goes
}

@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> sh_s: array<f32, WG>;

@compute @workgroup_size(WG)
fn gate_backward(@builtin(local_invocation_index) lid: u32) {
    let n4 = p.n / 4u;
    var acc = 0.0;
    for (var i = lid; i < p.m * n4; i += WG) {
        let r = i / n4;
        let c4 = i % n4;
        acc += dot(ld4(row_at(p.dy, r) / 4u + c4), ld4(row_at(p.f, r) / 4u + c4));
    }
    sh_s[lid] = acc;
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        workgroupBarrier();
        if lid < width {
            sh_s[lid] += sh_s[lid + width];
        }
    }
    if lid == 0u {
        let t = tanh_safe(ld(p.gate_off));
        st(p.grad_off, (1.0 - t * t) * sh_s[0]);
    }
}
