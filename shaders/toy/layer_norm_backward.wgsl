// layer_norm_backward: the input gradient of y = LayerNorm(x) per row,
// dx = rstd * (g - mean(g) - xh * mean(g * xh)) with g = dy * gamma and xh
// the normalised input (recomputed from x and the saved mean and rstd),
// plus an optional residual gradient. One thread per row.

struct Params {
    dy: RowMap,     // [m, n] gradient of the LayerNorm output
    x: RowMap,      // [m, n] LayerNorm input
    dx: RowMap,     // [m, n] output
    res: RowMap,    // [m, n] added to dx, unless off is NONE
    m: u32,
    n: u32,
    gamma_off: u32, // [n]
    stats_off: u32, // [m, 2] (mean, rstd)
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn layer_norm_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if r >= p.m {
        return;
    }
    let n4 = p.n / 4u;
    let dyb = row_at(p.dy, r) / 4u;
    let xb = row_at(p.x, r) / 4u;
    let g0 = p.gamma_off / 4u;
    let mean = ld(p.stats_off + 2u * r);
    let rstd = ld(p.stats_off + 2u * r + 1u);
    var s1 = 0.0;
    var s2 = 0.0;
    for (var c = 0u; c < n4; c++) {
        let g = ld4(dyb + c) * ld4(g0 + c);
        s1 += dot(g, vec4<f32>(1.0));
        s2 += dot(g, (ld4(xb + c) - mean) * rstd);
    }
    let mg = s1 / f32(p.n);
    let mgx = s2 / f32(p.n);
    let ob = row_at(p.dx, r) / 4u;
    let has_res = p.res.off != NONE;
    let rb = row_at(p.res, r) / 4u;
    for (var c = 0u; c < n4; c++) {
        let g = ld4(dyb + c) * ld4(g0 + c);
        var dx = rstd * (g - mg - (ld4(xb + c) - mean) * rstd * mgx);
        if has_res {
            dx += ld4(rb + c);
        }
        st4(ob + c, dx);
    }
}
