// linear_grad_weight_subgroup: the weight gradient of linear_grad_weight.wgsl
// (whose uniform block, override and row store it shares) for CPU drivers
// that run 8 invocations as one SIMD batch and expose it as a subgroup
// (see linear_subgroup.wgsl for why loads, not arithmetic, decide there).
// The 8 lanes of a subgroup compute a 32 x 16 block of dW together: each
// lane owns 4 of its rows (n) and all 16 columns (k). Per two input rows
// a lane loads its own 4 dy values of each row and one vec4 of x, and
// takes the block's other x values from the other lanes with
// subgroupBroadcast: 3 loads per 128 multiply-adds instead of 8. Rows are
// still summed in order. Needs n to be a multiple of 32, k of 16, and
// subgroups of 8 consecutive invocations; the host picks this kernel only
// then.

const GSG_ROWS: u32 = 4u;
const GSG_COLS: u32 = 16u;

@compute @workgroup_size(LWG)
fn linear_grad_weight_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let kb = p.k / GSG_COLS;
    let block = gid.x / SG_LANES;
    let nb = (block / kb) * (SG_LANES * GSG_ROWS);
    // The same for every lane of a subgroup, so whole subgroups leave.
    if nb >= p.n {
        return;
    }
    let n0 = nb + lane * GSG_ROWS;
    let k0 = (block % kb) * GSG_COLS;
    // Lane j loads x row r + j / 4 at columns k0 + 4 (j % 4).
    let xr = lane / 4u;
    let xc = k0 + 4u * (lane % 4u);
    var a00 = vec4<f32>(0.0);
    var a01 = vec4<f32>(0.0);
    var a02 = vec4<f32>(0.0);
    var a03 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0);
    var a21 = vec4<f32>(0.0);
    var a22 = vec4<f32>(0.0);
    var a23 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0);
    var a31 = vec4<f32>(0.0);
    var a32 = vec4<f32>(0.0);
    var a33 = vec4<f32>(0.0);
    let last = p.m - 1u;
    for (var r = 0u; r < p.m; r += 2u) {
        // An odd last row pairs with a repeat of itself whose dy is zero.
        let r1 = min(r + 1u, last);
        let d0 = ld4((row_at(p.dy, r) + n0) / 4u);
        let d1 = select(vec4<f32>(0.0), ld4((row_at(p.dy, r1) + n0) / 4u), r + 1u < p.m);
        let xv = ld4((row_at(p.x, min(r + xr, last)) + xc) / 4u);
        let x00 = subgroupBroadcast(xv, 0u);
        let x01 = subgroupBroadcast(xv, 1u);
        let x02 = subgroupBroadcast(xv, 2u);
        let x03 = subgroupBroadcast(xv, 3u);
        let x10 = subgroupBroadcast(xv, 4u);
        let x11 = subgroupBroadcast(xv, 5u);
        let x12 = subgroupBroadcast(xv, 6u);
        let x13 = subgroupBroadcast(xv, 7u);
        a00 += d0.x * x00;
        a01 += d0.x * x01;
        a02 += d0.x * x02;
        a03 += d0.x * x03;
        a10 += d0.y * x00;
        a11 += d0.y * x01;
        a12 += d0.y * x02;
        a13 += d0.y * x03;
        a20 += d0.z * x00;
        a21 += d0.z * x01;
        a22 += d0.z * x02;
        a23 += d0.z * x03;
        a30 += d0.w * x00;
        a31 += d0.w * x01;
        a32 += d0.w * x02;
        a33 += d0.w * x03;
        a00 += d1.x * x10;
        a01 += d1.x * x11;
        a02 += d1.x * x12;
        a03 += d1.x * x13;
        a10 += d1.y * x10;
        a11 += d1.y * x11;
        a12 += d1.y * x12;
        a13 += d1.y * x13;
        a20 += d1.z * x10;
        a21 += d1.z * x11;
        a22 += d1.z * x12;
        a23 += d1.z * x13;
        a30 += d1.w * x10;
        a31 += d1.w * x11;
        a32 += d1.w * x12;
        a33 += d1.w * x13;
    }
    let s = gate_scale(p.gate_off);
    store_row(n0 + 0u, k0, a00 * s, a01 * s);
    store_row(n0 + 0u, k0 + 8u, a02 * s, a03 * s);
    store_row(n0 + 1u, k0, a10 * s, a11 * s);
    store_row(n0 + 1u, k0 + 8u, a12 * s, a13 * s);
    store_row(n0 + 2u, k0, a20 * s, a21 * s);
    store_row(n0 + 2u, k0 + 8u, a22 * s, a23 * s);
    store_row(n0 + 3u, k0, a30 * s, a31 * s);
    store_row(n0 + 3u, k0 + 8u, a32 * s, a33 * s);
}
