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


// The head row at `off` (tensor offset plus head column), or zeros when
// `ok` is false, read from a safe address so every lane can load
// unconditionally.
fn row_or_zero(off: u32, ok: bool) -> mat4x4<f32> {
    let m = head_row(select(0u, off, ok));
    let z = vec4<f32>(0.0);
    return mat4x4<f32>(select(z, m[0], ok), select(z, m[1], ok), select(z, m[2], ok),
        select(z, m[3], ok));
}

@compute @workgroup_size(AWG)
fn attention_backward_subgroup(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    // x: head and role of sequence y; roles 0..tq are queries, then keys.
    // tq and tk are multiples of 8, so a subgroup's lanes share a head and
    // a kind of role, and whole subgroups leave together.
    let roles = p.tq + p.tk;
    if gid.x >= p.heads * roles {
        return;
    }
    let b = gid.y;
    let h = gid.x / roles;
    let r = gid.x % roles;
    let hc = h * p.dh;
    let p_base = p.p_off + (b * p.heads + h) * p.tq * p.tk;
    if r < p.tq {
        let t = r;
        let row = (b * p.tq + t);
        let d_o = head_row(p.do_off + row * p.o_rs + hc);
        // sum_j P[t, j] dP[t, j] equals dO[t] . O[t].
        let rd = dot16(d_o, head_row(p.o_off + row * p.o_rs + hc));
        var dq = mat4x4<f32>();
        for (var j0 = 0u; j0 < p.tk; j0 += SG_LANES) {
            let kr = key_row(p.k_rs, b, j0 + lane);
            let vr = key_row(p.v_rs, b, j0 + lane);
            let kl = row_or_zero(p.k_off + kr + hc, kr != NONE);
            let vl = row_or_zero(p.v_off + vr + hc, vr != NONE);
            for (var jj = 0u; jj < SG_LANES; jj++) {
                let k = mat4x4<f32>(subgroupShuffle(kl[0], jj), subgroupShuffle(kl[1], jj),
                    subgroupShuffle(kl[2], jj), subgroupShuffle(kl[3], jj));
                let v = mat4x4<f32>(subgroupShuffle(vl[0], jj), subgroupShuffle(vl[1], jj),
                    subgroupShuffle(vl[2], jj), subgroupShuffle(vl[3], jj));
                let pr = ld(p_base + t * p.tk + j0 + jj);
                if pr != 0.0 {
                    dq += k * (pr * (dot16(d_o, v) - rd));
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
        let dol = head_row(p.do_off + row_l * p.o_rs + hc);
        let rdl = dot16(dol, head_row(p.o_off + row_l * p.o_rs + hc));
        let ql = head_row(p.q_off + row_l * p.q_rs + hc);
        for (var tt = 0u; tt < SG_LANES; tt++) {
            let d_o = mat4x4<f32>(subgroupShuffle(dol[0], tt), subgroupShuffle(dol[1], tt),
                subgroupShuffle(dol[2], tt), subgroupShuffle(dol[3], tt));
            let q = mat4x4<f32>(subgroupShuffle(ql[0], tt), subgroupShuffle(ql[1], tt),
                subgroupShuffle(ql[2], tt), subgroupShuffle(ql[3], tt));
            let rd = subgroupShuffle(rdl, tt);
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
