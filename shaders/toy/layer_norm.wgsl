// layer_norm: y = (x - mean) * rstd * gamma + beta over each row of width n,
// saving (mean, rstd) per row. One thread per row: rows are short here.

struct Params {
    x: RowMap,      // [m, n] input rows
    y: RowMap,      // [m, n] output rows
    m: u32,
    n: u32,
    gamma_off: u32, // [n]
    beta_off: u32,  // [n]
    stats_off: u32, // [m, 2] (mean, rstd)
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn layer_norm(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if r >= p.m {
        return;
    }
    let n4 = p.n / 4u;
    let xb = row_at(p.x, r) / 4u;
    let yb = row_at(p.y, r) / 4u;
    var s = 0.0;
    for (var c = 0u; c < n4; c++) {
        s += dot(ld4(xb + c), vec4<f32>(1.0));
    }
    let mean = s / f32(p.n);
    var q = 0.0;
    for (var c = 0u; c < n4; c++) {
        let d = ld4(xb + c) - mean;
        q += dot(d, d);
    }
    let rstd = inverseSqrt(q / f32(p.n) + p.eps);
    st(p.stats_off + 2u * r, mean);
    st(p.stats_off + 2u * r + 1u, rstd);
    for (var c = 0u; c < n4; c++) {
        st4(yb + c, (ld4(xb + c) - mean) * rstd * ld4(p.gamma_off / 4u + c)
            + ld4(p.beta_off / 4u + c));
    }
}
