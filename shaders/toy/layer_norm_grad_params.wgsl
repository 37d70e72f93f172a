// layer_norm_grad_params: the LayerNorm weight and bias gradients,
// dgamma[c] = sum_r dy[r, c] * xh[r, c] and dbeta[c] = sum_r dy[r, c], with
// xh recomputed from the saved input and (mean, rstd). A workgroup covers
// 64 columns with 4 row partitions reduced in a fixed order.

struct Params {
    dy: RowMap,     // [m, n] gradient of the LayerNorm output
    x: RowMap,      // [m, n] LayerNorm input
    m: u32,
    n: u32,
    stats_off: u32, // [m, 2]
    dgamma_off: u32, // [n]
    dbeta_off: u32,  // [n]
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> sh_g: array<f32, WG>;
var<workgroup> sh_b: array<f32, WG>;

@compute @workgroup_size(WG)
fn layer_norm_grad_params(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let c = wg.x * 64u + lid % 64u;
    let part = lid / 64u;
    var g = 0.0;
    var bsum = 0.0;
    if c < p.n {
        for (var r = part; r < p.m; r += 4u) {
            let dy = ld(row_at(p.dy, r) + c);
            let xh = (ld(row_at(p.x, r) + c) - ld(p.stats_off + 2u * r))
                * ld(p.stats_off + 2u * r + 1u);
            g += dy * xh;
            bsum += dy;
        }
    }
    sh_g[lid] = g;
    sh_b[lid] = bsum;
    workgroupBarrier();
    if part == 0u && c < p.n {
        g = (sh_g[lid] + sh_g[lid + 64u]) + (sh_g[lid + 128u] + sh_g[lid + 192u]);
        bsum = (sh_b[lid] + sh_b[lid + 64u]) + (sh_b[lid + 128u] + sh_b[lid + 192u]);
        if p.accumulate != 0u {
            g += ld(p.dgamma_off + c);
            bsum += ld(p.dbeta_off + c);
        }
        st(p.dgamma_off + c, g);
        st(p.dbeta_off + c, bsum);
    }
}
