// attention_backward_subgroup: the attention gradients of
// attention_backward.wgsl (whose uniform block, overrides and helpers it
// shares) for CPU drivers that run 8 invocations as one SIMD batch and
// expose it as a subgroup; see attention_subgroup.wgsl for why. A
// subgroup's 8 lanes are 8 queries, or 8 keys, of one (sequence, head).
// Query lanes take turns loading the k and v rows of 8 keys and share them
// with subgroupShuffle; key lanes do the same with the q, O and dO rows
// of 8 queries. Sums keep the portable kernel's order. Needs tq and tk to
// be multiples of 8 and subgroups of 8 consecutive invocations; the host
// picks this kernel only then.

@compute @workgroup_size(AWG)
fn attention_backward_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // tq and tk are multiples of 8, so a subgroup's lanes share a head and
    // a kind of role, and whole subgroups leave together.
    if gid.x >= p.heads * (p.tq + p.tk) {
        return;
    }
    let rl = role_lane(gid);
    let b = rl.b;
    let r = rl.r;
    let hc = rl.hc;
    let p_base = rl.p_base;
    if r < p.tq {
        let t = r;
        let row = (b * p.tq + t);
        let g = out_grad(row, hc);
        var dq = mat4x4<f32>();
        for (var j0 = 0u; j0 < p.tk; j0 += SG_LANES) {
            let kr = key_row(p.k_rs, b, j0 + lane);
            let vr = key_row(p.v_rs, b, j0 + lane);
            let kl = row_or_zero(p.k_off + kr + hc, kr != NONE);
            let vl = row_or_zero(p.v_off + vr + hc, vr != NONE);
            for (var jj = 0u; jj < SG_LANES; jj++) {
                let k = shuffle_row(kl, jj);
                let v = shuffle_row(vl, jj);
                let pr = ld(p_base + t * p.tk + j0 + jj);
                if pr != 0.0 {
                    dq += k * (pr * (dot16(g.d_o, v) - g.rd));
                }
            }
        }
        store_row(p.dq_off + row * p.q_rs + hc, dq * p.scale);
        return;
    }
    let j = r - p.tq;
    let kr = key_row(p.k_rs, b, j);
    let vr = key_row(p.v_rs, b, j);
    let v = row_or_zero(p.v_off + vr + hc, vr != NONE);
    var dk = mat4x4<f32>();
    var dv = mat4x4<f32>();
    for (var t0 = 0u; t0 < p.tq; t0 += SG_LANES) {
        let row_l = b * p.tq + t0 + lane;
        let gl = out_grad(row_l, hc);
        let ql = head_row(p.q_off + row_l * p.q_rs + hc);
        for (var tt = 0u; tt < SG_LANES; tt++) {
            let d_o = shuffle_row(gl.d_o, tt);
            let q = shuffle_row(ql, tt);
            let rd = subgroupShuffle(gl.rd, tt);
            let pr = ld(p_base + (t0 + tt) * p.tk + j);
            if pr != 0.0 {
                dv += d_o * pr;
                dk += q * (pr * (dot16(d_o, v) - rd));
            }
        }
    }
    // A key in an empty media slot has no rows to write.
    if kr != NONE {
        store_row(p.dk_off + kr + hc, dk * p.scale);
        store_row(p.dv_off + vr + hc, dv);
    }
}
