// attention_subgroup: the forward attention of attention.wgsl (whose
// uniform block, overrides and helpers it shares) for CPU drivers that run
// 8 invocations as one SIMD batch and expose it as a subgroup. The lanes
// of a subgroup are 8 queries of one (sequence, head), which read the same
// key and value rows; there every read costs a scalar load per lane
// whatever its address, while taking a value from another lane is a
// register shuffle. So for each 8 keys, each lane loads one key's k and v
// rows and takes the other seven from its neighbours with
// subgroupShuffle: 8 row loads per 8 keys instead of 64. Needs tq to be
// a multiple of 8 and subgroups of 8 consecutive invocations; the host
// picks this kernel only then.

// Head column hc of key row j of sequence b in the tensor at `off`, or
// zeros past tk and for an empty media slot.
fn key_row_or_zero(off: u32, rs: u32, b: u32, j: u32, hc: u32) -> mat4x4<f32> {
    var row = NONE;
    if j < p.tk {
        row = key_row(off, rs, b, j);
    }
    return row_or_zero(row + hc, row != NONE);
}

@compute @workgroup_size(AWG)
fn attention_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // heads * tq is a multiple of 8: whole subgroups leave together.
    if gid.x >= p.heads * p.tq {
        return;
    }
    let ql = query_lane(gid);
    let b = ql.b;
    let t = ql.t;
    var acc = online_new();
    // Every lane runs every chunk, live or not, so the shuffles see all
    // eight lanes.
    for (var j0 = 0u; j0 < p.tk; j0 += SG_LANES) {
        let kl = key_row_or_zero(p.k_off, p.k_rs, b, j0 + lane, ql.hc);
        let vl = key_row_or_zero(p.v_off, p.v_rs, b, j0 + lane, ql.hc);
        for (var jj = 0u; jj < SG_LANES; jj++) {
            let k = shuffle_row(kl, jj);
            let v = shuffle_row(vl, jj);
            let j = j0 + jj;
            if ql.live && j < p.tk && allowed(b, t, j) {
                online_add(&acc, dot16(ql.q, k) * p.scale, v);
            }
        }
    }
    let inv = online_inv(acc);
    for (var j0 = 0u; j0 < p.tk; j0 += SG_LANES) {
        let kl = key_row_or_zero(p.k_off, p.k_rs, b, j0 + lane, ql.hc);
        for (var jj = 0u; jj < SG_LANES; jj++) {
            let k = shuffle_row(kl, jj);
            let j = j0 + jj;
            if j < p.tk {
                var pr = 0.0;
                if ql.live && allowed(b, t, j) {
                    pr = exp(dot16(ql.q, k) * p.scale - acc.mx) * inv;
                }
                st(ql.p_base + j, pr);
            }
        }
    }
    store_row(ql.o_ix, acc.o * inv);
}
