// linear_subgroup: the linear kernel of linear.wgsl (whose uniform block,
// overrides and epilogues it shares) for CPU drivers that run 8
// invocations as one SIMD batch and expose that batch as a subgroup.
// There, every memory read costs a scalar load per lane whatever its
// address, while taking a value from another lane is a register shuffle.
// So the 8 lanes of a subgroup compute a 32 x 16 block of y together: each
// lane loads its own 4 rows of x and one 8th of the block's weights, and
// takes the rest of the weights from the other lanes with
// subgroupBroadcast. Per 4 steps of k a lane loads 6 vectors instead of
// 16 for the same 256 multiply-adds. Needs n to be a multiple of 16 and
// subgroups of 8 consecutive invocations; the host picks this kernel only
// then.

const SG_ROWS: u32 = 4u;
const SG_COLS: u32 = 16u;

@compute @workgroup_size(LWG)
fn linear_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let ncb = p.n / SG_COLS;
    let block = gid.x / SG_LANES;
    let rb = (block / ncb) * (SG_LANES * SG_ROWS);
    // The same for every lane of a subgroup, so whole subgroups leave.
    if rb >= p.m {
        return;
    }
    let row0 = rb + lane * SG_ROWS;
    let col0 = (block % ncb) * SG_COLS;
    let last = p.m - 1u;
    // Rows past m repeat the last row; their results are not stored.
    let o0 = row_at(p.x, min(row0 + 0u, last)) / 4u;
    let o1 = row_at(p.x, min(row0 + 1u, last)) / 4u;
    let o2 = row_at(p.x, min(row0 + 2u, last)) / 4u;
    let o3 = row_at(p.x, min(row0 + 3u, last)) / 4u;
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
    let k4 = p.k / 4u;
    if W_T == 0u {
        // Lane j loads weight rows col0 + j and col0 + 8 + j; column c of
        // m0..m3 is weight row col0 + 4q + c, four k at a time.
        let wa = (p.w_off + (col0 + lane) * p.k) / 4u;
        let wb = (p.w_off + (col0 + SG_LANES + lane) * p.k) / 4u;
        for (var kk = 0u; kk < k4; kk++) {
            let va = ld4(wa + kk);
            let vb = ld4(wb + kk);
            let m0 = mat4x4<f32>(subgroupBroadcast(va, 0u), subgroupBroadcast(va, 1u),
                subgroupBroadcast(va, 2u), subgroupBroadcast(va, 3u));
            let m1 = mat4x4<f32>(subgroupBroadcast(va, 4u), subgroupBroadcast(va, 5u),
                subgroupBroadcast(va, 6u), subgroupBroadcast(va, 7u));
            let m2 = mat4x4<f32>(subgroupBroadcast(vb, 0u), subgroupBroadcast(vb, 1u),
                subgroupBroadcast(vb, 2u), subgroupBroadcast(vb, 3u));
            let m3 = mat4x4<f32>(subgroupBroadcast(vb, 4u), subgroupBroadcast(vb, 5u),
                subgroupBroadcast(vb, 6u), subgroupBroadcast(vb, 7u));
            let x0 = ld4(o0 + kk);
            a00 += x0 * m0;
            a01 += x0 * m1;
            a02 += x0 * m2;
            a03 += x0 * m3;
            let x1 = ld4(o1 + kk);
            a10 += x1 * m0;
            a11 += x1 * m1;
            a12 += x1 * m2;
            a13 += x1 * m3;
            let x2 = ld4(o2 + kk);
            a20 += x2 * m0;
            a21 += x2 * m1;
            a22 += x2 * m2;
            a23 += x2 * m3;
            let x3 = ld4(o3 + kk);
            a30 += x3 * m0;
            a31 += x3 * m1;
            a32 += x3 * m2;
            a33 += x3 * m3;
        }
    } else {
        // W is [k, n]. Lane j loads row 4kk + j % 4 at columns
        // col0 + 4 (j / 4) and col0 + 8 + 4 (j / 4); column c of mq is
        // row 4kk + c at columns col0 + 4q .. col0 + 4q + 3.
        let n4 = p.n / 4u;
        let wb = (p.w_off + col0) / 4u + (lane % 4u) * n4 + lane / 4u;
        for (var kk = 0u; kk < k4; kk++) {
            let b = wb + 4u * kk * n4;
            let va = ld4(b);
            let vb = ld4(b + 2u);
            let m0 = mat4x4<f32>(subgroupBroadcast(va, 0u), subgroupBroadcast(va, 1u),
                subgroupBroadcast(va, 2u), subgroupBroadcast(va, 3u));
            let m1 = mat4x4<f32>(subgroupBroadcast(va, 4u), subgroupBroadcast(va, 5u),
                subgroupBroadcast(va, 6u), subgroupBroadcast(va, 7u));
            let m2 = mat4x4<f32>(subgroupBroadcast(vb, 0u), subgroupBroadcast(vb, 1u),
                subgroupBroadcast(vb, 2u), subgroupBroadcast(vb, 3u));
            let m3 = mat4x4<f32>(subgroupBroadcast(vb, 4u), subgroupBroadcast(vb, 5u),
                subgroupBroadcast(vb, 6u), subgroupBroadcast(vb, 7u));
            let x0 = ld4(o0 + kk);
            a00 += m0 * x0;
            a01 += m1 * x0;
            a02 += m2 * x0;
            a03 += m3 * x0;
            let x1 = ld4(o1 + kk);
            a10 += m0 * x1;
            a11 += m1 * x1;
            a12 += m2 * x1;
            a13 += m3 * x1;
            let x2 = ld4(o2 + kk);
            a20 += m0 * x2;
            a21 += m1 * x2;
            a22 += m2 * x2;
            a23 += m3 * x2;
            let x3 = ld4(o3 + kk);
            a30 += m0 * x3;
            a31 += m1 * x3;
            a32 += m2 * x3;
            a33 += m3 * x3;
        }
    }
    let s = prologue_scale();
    let gate = residual_gate();
    epilogue(row0 + 0u, col0, a00 * s, a01 * s, gate);
    epilogue(row0 + 0u, col0 + 8u, a02 * s, a03 * s, gate);
    epilogue(row0 + 1u, col0, a10 * s, a11 * s, gate);
    epilogue(row0 + 1u, col0 + 8u, a12 * s, a13 * s, gate);
    epilogue(row0 + 2u, col0, a20 * s, a21 * s, gate);
    epilogue(row0 + 2u, col0 + 8u, a22 * s, a23 * s, gate);
    epilogue(row0 + 3u, col0, a30 * s, a31 * s, gate);
    epilogue(row0 + 3u, col0 + 8u, a32 * s, a33 * s, gate);
}
